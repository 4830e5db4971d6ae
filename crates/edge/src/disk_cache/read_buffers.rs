//! The buffers hits read whole chunks of large bodies into, reused. Safe Rust cannot read a
//! file into uninitialised memory, so a new buffer is zeroed before `preadv2` overwrites it, and
//! a freed 256 KiB buffer goes back to the system: each chunk of a large hit paid for fresh pages
//! and a zeroing pass. A pooled buffer goes back to the pool when the last `Bytes` made from it
//! is dropped (after pingora wrote it to the player). Smaller reads are not pooled: for them a
//! new buffer costs less than the pool's lock and the shared owner `Bytes` needs (measured:
//! 1 KiB and 100 KiB hits were slower through the pool).
//!
//! Only the bytes a read filled are ever visible through the `Bytes`, so a reused buffer's old
//! content never leaves the process.

use super::hit::READ_CHUNK;
use super::sync::lock;
use bytes::Bytes;
use std::sync::Mutex;

/// The pooled size: a whole read chunk.
const POOLED: usize = READ_CHUNK as usize;

/// Free buffers kept at most: 16 MiB, what some sixty players streaming large objects at the
/// same moment use.
const KEEP: usize = 64;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of exactly `len` bytes, from the pool when `len` is a whole chunk.
pub(super) fn take(len: usize) -> Vec<u8> {
    if len != POOLED {
        return vec![0; len];
    }
    lock(&FREE).pop().unwrap_or_else(|| vec![0; POOLED])
}

/// `buffer`, whole, as `Bytes`; a pooled one returns to the pool with the last clone.
pub(super) fn freeze(buffer: Vec<u8>) -> Bytes {
    if buffer.len() != POOLED {
        return Bytes::from(buffer);
    }
    Bytes::from_owner(Pooled { buffer })
}

struct Pooled {
    buffer: Vec<u8>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut free = lock(&FREE);
        if free.len() < KEEP {
            free.push(std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_chunks_are_reused_once_every_clone_is_gone() {
        let mut buffer = take(POOLED);
        buffer[..5].copy_from_slice(b"hello");
        let address = buffer.as_ptr();
        let bytes = freeze(buffer);
        let clone = bytes.slice(0..5);
        drop(bytes);
        assert_eq!(&clone[..], b"hello");
        drop(clone);
        // Tests run in parallel and share the pool, so another test may have taken it.
        let taken: Vec<Vec<u8>> = (0..KEEP).map(|_| take(POOLED)).collect();
        assert!(
            taken.iter().any(|b| b.as_ptr() == address),
            "back in the pool"
        );
        assert!(taken.iter().all(|b| b.len() == POOLED));
    }

    #[test]
    fn smaller_reads_get_buffers_of_their_own_size() {
        assert_eq!(take(1).len(), 1);
        assert_eq!(freeze(take(100)).len(), 100);
    }
}
