//! The data plane's access log: one JSON object per line for every request it answers.
//!
//! A request formats its line and appends it to one shared buffer (a short lock, a copy); a
//! thread of its own wakes every [`FLUSH_EVERY`], takes the whole buffer and writes it with one
//! call. Nobody wakes the writer per line: on a busy edge that wake-up (and a write per line)
//! cost a third of the hit rate. When [`MAX_BUFFERED`] bytes wait (the disk cannot keep up),
//! new lines are dropped and counted in `precache_edge_access_log_dropped_total` rather than
//! slowing players down. [`AccessLog::reopen`] (SIGHUP) makes the writer write what it holds,
//! then reopen the path: logrotate's rename-then-HUP loses and tears nothing.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use parking_lot::Mutex;
use serde::Serialize;

/// Bytes of lines that may wait for the writer before new ones are dropped: seconds of a
/// saturated edge.
const MAX_BUFFERED: usize = 16 * 1024 * 1024;
/// How often the writer takes what the requests buffered.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Appended to this file, reopened on [`AccessLog::reopen`].
    File(PathBuf),
    /// Standard output (`-`), for containers.
    Stdout,
}

/// A request's `time` and `ms` fields from how long ago it arrived: RFC 3339 UTC with
/// milliseconds, and milliseconds with three decimals.
pub(crate) fn arrival(elapsed: Duration) -> (String, f64) {
    let now = jiff::Timestamp::now();
    let arrived = now
        .checked_sub(jiff::SignedDuration::try_from(elapsed).unwrap_or_default())
        .unwrap_or(now);
    let ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    (format!("{arrived:.3}"), ms)
}

impl AccessLogTarget {
    /// `-` is standard output; anything else a file path.
    pub fn parse(text: &str) -> AccessLogTarget {
        if text == "-" {
            AccessLogTarget::Stdout
        } else {
            AccessLogTarget::File(PathBuf::from(text))
        }
    }
}

/// One answered request, as written.
#[derive(Debug, Serialize)]
pub(crate) struct AccessRecord<'a> {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub client: String,
    /// `https` for a request that came over the TLS listener, `http` otherwise.
    pub scheme: &'static str,
    /// `HTTP/1.1`, `HTTP/2` or `HTTP/1.0`, as the player spoke it.
    pub protocol: &'static str,
    pub host: &'a str,
    pub method: &'a str,
    /// Path with the query, as the client sent it.
    pub path: &'a str,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: usize,
    /// `HIT`, `MISS`, `EXPIRED`, `REVALIDATED`, `STALE`, `PASS` or `NONE` (never reached the cache).
    pub cache: &'static str,
    /// From the request's arrival to the last byte sent.
    pub ms: f64,
    pub request_id: &'a str,
    /// The origin's (or the parent edge's) status, when the request went upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// From sending the request upstream to its response header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    /// The `Range` header the client sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<&'a str>,
}

/// The handle requests log through. Cloning it is cheap.
#[derive(Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
    dropped: Counter,
}

struct Shared {
    buffer: Mutex<Vec<u8>>,
    reopen: AtomicBool,
    stop: AtomicBool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub fn start(target: AccessLogTarget) -> std::io::Result<AccessLog> {
        let sink = Sink::open(&target)?;
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(64 * 1024)),
            reopen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(target, sink, &writer_shared))?;
        *shared.writer.lock() = Some(writer);
        Ok(AccessLog {
            shared,
            dropped: metrics::counter!("precache_edge_access_log_dropped_total"),
        })
    }

    /// Buffers one record; drops (and counts) it when the writer is that far behind.
    pub(crate) fn record(&self, record: &AccessRecord<'_>) {
        let mut line = Vec::with_capacity(320);
        if serde_json::to_writer(&mut line, record).is_err() {
            self.dropped.increment(1);
            return;
        }
        line.push(b'\n');
        let mut buffer = self.shared.buffer.lock();
        if buffer.len() + line.len() > MAX_BUFFERED {
            drop(buffer);
            self.dropped.increment(1);
            return;
        }
        buffer.extend_from_slice(&line);
    }

    /// Asks the writer to reopen the file (after logrotate moved it away).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// Writes what is buffered and stops the writer (at the edge's stop).
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let writer = self.shared.writer.lock().take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

enum Sink {
    File(BufWriter<File>),
    Stdout(BufWriter<std::io::Stdout>),
}

impl Sink {
    fn open(target: &AccessLogTarget) -> std::io::Result<Sink> {
        Ok(match target {
            AccessLogTarget::File(path) => Sink::File(BufWriter::with_capacity(
                256 * 1024,
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
            AccessLogTarget::Stdout => {
                Sink::Stdout(BufWriter::with_capacity(256 * 1024, std::io::stdout()))
            }
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::File(file) => file,
            Sink::Stdout(out) => out,
        }
    }
}

fn write_lines(target: AccessLogTarget, mut sink: Sink, shared: &Shared) {
    let mut failing = false;
    // Two buffers swapped in turn, so neither side allocates in the steady state.
    let mut taken: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        if !stopping {
            std::thread::sleep(FLUSH_EVERY);
        }
        std::mem::swap(&mut *shared.buffer.lock(), &mut taken);
        if !taken.is_empty() {
            if let Err(error) = sink.writer().write_all(&taken) {
                warn_once(&mut failing, &error);
            }
            taken.clear();
            if taken.capacity() > 4 * 1024 * 1024 {
                // A burst's buffer is given back rather than kept for ever.
                taken.shrink_to(64 * 1024);
            }
        }
        if let Err(error) = sink.writer().flush() {
            warn_once(&mut failing, &error);
        }
        if stopping {
            return;
        }
        if shared.reopen.swap(false, Ordering::AcqRel) {
            match Sink::open(&target) {
                Ok(reopened) => {
                    sink = reopened;
                    failing = false;
                    tracing::info!(?target, "access log reopened");
                }
                Err(error) => tracing::error!(?target, %error, "could not reopen the access log"),
            }
        }
    }
}

/// A full or broken disk would otherwise log an error per flush.
fn warn_once(failing: &mut bool, error: &std::io::Error) {
    if !*failing {
        *failing = true;
        tracing::error!(%error, "writing the access log failed; lines are lost until it works again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(path: &'a str) -> AccessRecord<'a> {
        AccessRecord {
            time: "2026-12-04T00:00:00.000Z".into(),
            client: "127.0.0.1:5000".into(),
            scheme: "https",
            protocol: "HTTP/2",
            host: "game.example.com",
            method: "GET",
            path,
            status: 200,
            bytes: 10,
            cache: "HIT",
            ms: 0.5,
            request_id: "r1",
            upstream_status: None,
            upstream_ms: None,
            range: None,
            user_agent: Some("launcher/1.0 \"quoted\""),
        }
    }

    fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is one JSON object"))
            .collect()
    }

    fn wait_for(path: &std::path::Path, count: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let lines = read_lines(path);
            if lines.len() >= count {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        read_lines(path)
    }

    #[test]
    fn lines_are_json_and_a_reopen_starts_the_new_file_without_losing_any() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        let log = AccessLog::start(AccessLogTarget::File(path.clone())).expect("start");
        log.record(&record("/a?x=1"));
        let first = wait_for(&path, 1);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["path"], "/a?x=1");
        assert_eq!(first[0]["user_agent"], "launcher/1.0 \"quoted\"");
        assert!(first[0].get("upstream_status").is_none());

        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).expect("rotate");
        log.record(&record("/b"));
        log.reopen();
        // Lines written before the reopen went to the renamed file; later ones to the new path.
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        log.record(&record("/c"));
        let new = wait_for(&path, 1);
        let old = read_lines(&rotated);
        let all: Vec<_> = old.iter().chain(&new).map(|l| l["path"].clone()).collect();
        assert_eq!(all, ["/a?x=1", "/b", "/c"]);
    }
}
