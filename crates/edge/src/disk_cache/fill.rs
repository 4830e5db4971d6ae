//! A fill: the miss handler that streams a response body into a temp file and publishes it.
//!
//! Readers follow a fill through a `watch` channel carrying how many bytes are in the file and
//! whether the body is complete or the fill failed. They share the writer's file descriptor,
//! which stays valid after the file is renamed into place or unlinked, so a reader never has to
//! find the file again by name.

use super::meta_file::SerializedMeta;
use super::store::{Publish, Store};
use super::sync::{blocking, blocking_io, io_error, remove_in_background};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::storage::streaming_write::U64WriteId;
use pingora::cache::storage::{HandleMiss, MissFinishType};
use pingora::{Error, ErrorType, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Whether more body bytes may still arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FillStatus {
    /// The writer is still receiving the body.
    Writing,
    /// The body is complete: `written` is its length.
    Done,
    /// The writer gave up; what was written is not the whole body.
    Failed,
}

/// What readers of a fill are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FillState {
    /// Bytes readable from the start of the file.
    pub written: u64,
    /// Whether more may come.
    pub status: FillStatus,
}

/// The part of a fill that the index and readers share.
#[derive(Debug)]
pub(super) struct FillShared {
    /// Write id: the streaming write tag, and the generation the body is published under.
    pub id: u64,
    /// The entry's combined hash.
    pub combined: String,
    /// The entry's primary key string.
    pub primary: Arc<str>,
    /// The temp body file, open for reading and writing.
    pub file: Arc<File>,
    /// Where the temp body file lives until it is published.
    pub temp_path: PathBuf,
    /// The serialized `CacheMeta` given when the fill started.
    pub meta: Arc<SerializedMeta>,
    /// Progress for readers.
    pub state: watch::Sender<FillState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepting body chunks.
    Writing,
    /// The end of the body was seen; only `finish` may follow.
    Ended,
    /// A write failed, was cancelled midway, or publishing failed: the fill is unusable.
    Broken,
    /// Published (or deliberately discarded); nothing left to clean up.
    Finished,
}

/// Body bytes gathered before they are written to the temp file. Every write is a hop to the
/// blocking pool and back, and on a small machine those context switches, not the bytes, were
/// the cost of small fills: a small object is now written (and published) in one hop, a large
/// one in 256 KiB steps that readers tailing the fill follow.
const WRITE_BATCH: usize = 256 * 1024;

/// The disk cache's [`HandleMiss`].
pub(super) struct FillHandler {
    store: Arc<Store>,
    shared: Arc<FillShared>,
    tag: U64WriteId,
    /// Bytes in the file.
    written: u64,
    /// Bytes received but not written yet.
    pending: Vec<Bytes>,
    pending_len: usize,
    phase: Phase,
    abandoned: bool,
}

impl FillHandler {
    /// Wraps a fill the store has just registered.
    pub(super) fn new(store: Arc<Store>, shared: Arc<FillShared>) -> Self {
        FillHandler {
            tag: U64WriteId::from(shared.id),
            store,
            shared,
            written: 0,
            pending: Vec::new(),
            pending_len: 0,
            phase: Phase::Writing,
            abandoned: false,
        }
    }

    /// Gives up on the fill: readers still waiting learn the body will never be complete, the
    /// index forgets the fill, and the temp file goes away.
    fn abandon(&mut self) {
        if std::mem::replace(&mut self.abandoned, true) {
            return;
        }
        // Readers that were already told the body is complete keep that answer: the bytes in
        // the file are the whole body even though it will not be published.
        self.shared.state.send_if_modified(|state| {
            let writing = state.status == FillStatus::Writing;
            if writing {
                state.status = FillStatus::Failed;
            }
            writing
        });
        self.store
            .forget_fill(&self.shared.combined, self.shared.id);
        remove_in_background(self.shared.temp_path.clone());
    }

    fn mark_done(&self) {
        mark_done(&self.shared, self.written);
    }

    /// Writes the pending bytes to the file, on the blocking pool.
    async fn flush(&mut self) -> Result<()> {
        let chunks = std::mem::take(&mut self.pending);
        let len = std::mem::take(&mut self.pending_len) as u64;
        // Stays Broken if this future is dropped mid-write: the blocking write may still land,
        // so the offset is no longer known and the fill cannot continue.
        self.phase = Phase::Broken;
        let file = self.shared.file.clone();
        let offset = self.written;
        let result = blocking_io("write cache temp file", move || {
            write_chunks(&file, offset, &chunks)
        })
        .await;
        if let Err(e) = result {
            // Typically ENOSPC: drop the partial file now rather than when pingora drops us, and
            // stop admitting new objects for a while.
            if let Some(io_error) = e.root_cause().downcast_ref::<std::io::Error>() {
                self.store.free_space.write_failed(io_error);
            }
            self.abandon();
            return Err(e);
        }
        self.phase = Phase::Writing;
        self.written += len;
        self.shared.state.send_replace(FillState {
            written: self.written,
            status: FillStatus::Writing,
        });
        Ok(())
    }
}

/// Tells readers the body is complete at `written` bytes (unless the fill already failed).
fn mark_done(shared: &FillShared, written: u64) {
    shared.state.send_if_modified(|state| {
        let writing = state.status == FillStatus::Writing;
        if writing {
            *state = FillState {
                written,
                status: FillStatus::Done,
            };
        }
        writing
    });
}

fn write_chunks(file: &File, mut offset: u64, chunks: &[Bytes]) -> std::io::Result<()> {
    for chunk in chunks {
        file.write_all_at(chunk, offset)?;
        offset += chunk.len() as u64;
    }
    Ok(())
}

#[async_trait]
impl HandleMiss for FillHandler {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        match self.phase {
            Phase::Writing => {}
            Phase::Ended => {
                return Error::e_explain(
                    ErrorType::InternalError,
                    "cache fill: body written after its end",
                )
            }
            Phase::Broken | Phase::Finished => {
                return Error::e_explain(ErrorType::InternalError, "cache fill already failed")
            }
        }
        if !data.is_empty() {
            self.pending_len += data.len();
            self.pending.push(data);
        }
        if eof {
            // The last bytes are written by `finish`, together with the publish.
            self.phase = Phase::Ended;
            if self.pending.is_empty() {
                self.mark_done();
            }
        } else if self.pending_len >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if matches!(self.phase, Phase::Broken | Phase::Finished) {
            return Error::e_explain(ErrorType::InternalError, "cache fill failed before finish");
        }
        // Until the publish succeeds, dropping `self` must clean up.
        self.phase = Phase::Broken;
        let store = self.store.clone();
        let shared = self.shared.clone();
        let chunks = std::mem::take(&mut self.pending);
        let written = self.written + std::mem::take(&mut self.pending_len) as u64;
        self.written = written;
        let offset = written - chunks.iter().map(|chunk| chunk.len() as u64).sum::<u64>();
        let outcome = blocking(move || {
            write_chunks(&shared.file, offset, &chunks)
                .map_err(|e| io_error("write cache temp file", e))?;
            // pingora finishes a fill only once the upstream body is complete (it may never
            // send an explicit end of body), so readers may take the file as the whole body now,
            // while the publish below (fsync, renames) runs.
            mark_done(&shared, written);
            store
                .publish(&shared, written)
                .map_err(|e| io_error("publish cache object", e))
        })
        .await?;
        self.phase = Phase::Finished;
        Ok(match outcome {
            Publish::Published => {
                MissFinishType::Created(usize::try_from(written).unwrap_or(usize::MAX))
            }
            // A purge arrived during the fill and won. This is not an error: the request that
            // started the fill is still streaming its (complete) body from the file, and an
            // error here would make pingora cut that response short. Nothing was stored, so
            // nothing is admitted for eviction.
            Publish::Discarded => MissFinishType::Created(0),
        })
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(self.tag.as_bytes())
    }
}

impl Drop for FillHandler {
    fn drop(&mut self) {
        if self.phase != Phase::Finished {
            self.abandon();
        }
    }
}
