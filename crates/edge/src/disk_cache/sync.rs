//! Small helpers for locks, blocking file IO and error mapping shared by the disk cache.

use pingora::{Error, ErrorType, Result};
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering from poisoning.
///
/// Every critical section in the disk cache leaves its data consistent between statements (no
/// IO happens under the index lock), so a panic elsewhere must not take the whole cache down.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wraps an IO error into a pingora error carrying `context`.
pub(super) fn io_error(context: impl Into<String>, err: io::Error) -> Box<Error> {
    Error::because(ErrorType::InternalError, context.into(), err)
}

/// Runs blocking file IO on tokio's blocking pool, mapping IO errors to pingora errors.
pub(super) async fn blocking_io<T, F>(context: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    blocking(move || f().map_err(|e| io_error(context, e))).await
}

/// Runs a blocking closure that already reports pingora errors on tokio's blocking pool.
pub(super) async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Error::e_because(ErrorType::InternalError, "disk cache blocking task", e),
    }
}

/// Removes a file, treating "already gone" as success.
pub(super) fn remove_if_exists(path: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a file in the background when possible, so that unlinking a GiB file (which frees
/// all its extents) never stalls an async worker thread; falls back to inline removal outside
/// a runtime.
pub(super) fn remove_in_background(path: std::path::PathBuf) {
    let remove = move || {
        if let Err(e) = remove_if_exists(&path) {
            tracing::warn!(path = %path.display(), error = %e, "disk cache: cannot remove file");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(remove);
        }
        Err(_) => remove(),
    }
}
