//! Hit handlers: stream a body from disk, either a published object or a fill in progress.
//!
//! Bodies are read in fixed-size positional reads (see `read_chunk`), so memory per reader
//! stays at one chunk whatever the object size.

use super::fill::{FillState, FillStatus};
use super::read_buffers;
use super::sync::blocking_io;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::storage::{HandleHit, Storage};
use pingora::cache::trace::SpanHandle;
use pingora::cache::CacheKey;
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::watch;

/// Bytes per read. Large enough that the per-chunk cost (a blocking-pool hop and a syscall)
/// is amortised, small enough that thousands of concurrent readers stay cheap. Measured from
/// page cache on the 2-core dev box: 64 KiB ~1.3 GiB/s, 256 KiB ~3 GiB/s, 512 KiB to 4 MiB no
/// clear gain over 256 KiB.
pub(super) const READ_CHUNK: u64 = 256 * 1024;

/// The disk cache's [`HandleHit`].
pub(super) enum DiskHit {
    /// A published object.
    Complete(CompleteHit),
    /// A fill still being written.
    Partial(PartialHit),
}

/// Reads a published body, optionally restricted to a range.
pub(super) struct CompleteHit {
    file: Arc<File>,
    body_len: u64,
    pos: u64,
    end: u64,
}

impl CompleteHit {
    /// Reads the whole of `file`, which holds exactly `body_len` bytes.
    pub(super) fn new(file: Arc<File>, body_len: u64) -> Self {
        CompleteHit {
            file,
            body_len,
            pos: 0,
            end: body_len,
        }
    }

    async fn read(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let len = (self.end - self.pos).min(READ_CHUNK);
        let chunk = read_chunk(self.file.clone(), self.pos, len).await?;
        self.pos += len;
        Ok(Some(chunk))
    }

    /// `end` is exclusive; `None` means to the end of the body, and an `end` past the body is
    /// clamped (as in pingora's reference storage) because range requests may overshoot.
    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let start = start as u64;
        if start >= self.body_len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start out of range {start} >= {}", self.body_len),
            );
        }
        let end = end.map_or(self.body_len, |end| (end as u64).min(self.body_len));
        if end < start {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek range ends before it starts: {start}..{end}"),
            );
        }
        self.pos = start;
        self.end = end;
        Ok(())
    }
}

/// Follows a fill in progress, from the start of its body or from where a range asks.
pub(super) struct PartialHit {
    file: Arc<File>,
    state: watch::Receiver<FillState>,
    pos: u64,
    /// Exclusive end of a range; `None` reads until the fill is done.
    end: Option<u64>,
}

impl PartialHit {
    /// Reads the fill writing into `file`, whose progress `state` reports.
    pub(super) fn new(file: Arc<File>, state: watch::Receiver<FillState>) -> Self {
        PartialHit {
            file,
            state,
            pos: 0,
            end: None,
        }
    }

    /// A range of a body still arriving: pingora checked it against the stored
    /// `Content-Length` (it only ranges responses that have one), so the start is not checked
    /// here. A range ahead of the writer waits for the fill to reach it (`read`), like the
    /// readers before it: asking the origin for the range would cost a second fetch of bytes
    /// that are on their way anyway.
    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let start = start as u64;
        let end = end.map(|end| end as u64);
        if end.is_some_and(|end| end < start) {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek range ends before it starts: {start}..{end:?}"),
            );
        }
        self.pos = start;
        self.end = end;
        Ok(())
    }

    async fn read(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.end.is_some_and(|end| self.pos >= end) {
                return Ok(None);
            }
            let state = *self.state.borrow_and_update();
            if state.status == FillStatus::Failed {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "cache fill failed before the body was complete",
                );
            }
            if state.written > self.pos {
                let readable = self.end.unwrap_or(u64::MAX).min(state.written);
                let len = (readable - self.pos).min(READ_CHUNK);
                let chunk = read_chunk(self.file.clone(), self.pos, len).await?;
                self.pos += len;
                return Ok(Some(chunk));
            }
            if state.status == FillStatus::Done {
                return Ok(None);
            }
            if self.state.changed().await.is_err() {
                // The writer is gone; the channel still holds its last word. Only a completed
                // body may be read to the end, anything else is truncated.
                if self.state.borrow().status == FillStatus::Writing {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "cache fill ended without completing the body",
                    );
                }
            }
        }
    }
}

/// Reads `len` bytes at `offset`. Bytes in the page cache (hot objects, the usual case for a
/// cache) are read right here with `RWF_NOWAIT`, which never waits for the disk; whatever is
/// not is read on the blocking pool, so a cold read never stalls a worker thread. This is what
/// nginx's thread pools do too, minus the hop for the hot case.
async fn read_chunk(file: Arc<File>, offset: u64, len: u64) -> Result<Bytes> {
    // `len` is at most READ_CHUNK, so this never truncates.
    let len = len as usize;
    let mut buf = read_buffers::take(len);
    let hot = read_hot(&file, &mut buf, offset);
    if hot == len {
        return Ok(read_buffers::freeze(buf));
    }
    blocking_io("read cache body", move || {
        file.read_exact_at(&mut buf[hot..], offset + hot as u64)?;
        Ok(read_buffers::freeze(buf))
    })
    .await
}

/// How much of `buf` the page cache filled from `offset` right now: `RWF_NOWAIT` never waits
/// for the disk, so the caller reads the rest (if any) off the worker thread.
pub(super) fn read_hot(file: &File, buf: &mut [u8], offset: u64) -> usize {
    rustix::io::preadv2(
        file,
        &mut [std::io::IoSliceMut::new(buf)],
        offset,
        rustix::io::ReadWriteFlags::NOWAIT,
    )
    .unwrap_or(0)
}

#[async_trait]
impl HandleHit for DiskHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            DiskHit::Complete(hit) => hit.read().await,
            DiskHit::Partial(hit) => hit.read().await,
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        // Pingora answers a range only from a hit handler that can seek; a fill in progress
        // must answer ranges too (issue 16: segmented downloads of a cold object), and so must
        // the request that fetches it, which reads its own fill through this handler.
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        match self {
            DiskHit::Complete(hit) => hit.seek(start, end),
            DiskHit::Partial(hit) => hit.seek(start, end),
        }
    }

    fn should_count_access(&self) -> bool {
        // A partial read is of an object the eviction manager has not admitted yet.
        matches!(self, DiskHit::Complete(_))
    }

    fn get_eviction_weight(&self) -> usize {
        match self {
            DiskHit::Complete(hit) => usize::try_from(hit.body_len).unwrap_or(usize::MAX),
            // The final size is not known yet.
            DiskHit::Partial(_) => 0,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}
