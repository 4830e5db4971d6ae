//! Serves the control-plane API over HTTP/1.1 with limits on each connection (issue 13): how
//! long a request header may take once it has begun, how long a connection may wait for its
//! next request, and how large a header may be. `axum::serve` has none of these knobs, so the
//! accept loop is ours, on hyper's connection builder; it also hands handlers the TCP peer
//! (`ConnectInfo<SocketAddr>`, which login throttling counts) and shuts down as `axum::serve`
//! did: stop accepting, let in-flight requests finish, close idle connections.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;

/// Limits on every connection to the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiConnectionLimits {
    /// A request header must be complete this long after its first byte arrived.
    pub header: Duration,
    /// A connection may wait this long for a request (its first, or its next).
    pub idle: Duration,
    /// Largest request header (request line and fields), in bytes; larger is `431`.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more is `431`.
    pub max_headers: usize,
}

/// Serves `router` on `listener` until `stopped` turns true, then waits for the connections'
/// in-flight requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ApiConnectionLimits,
    mut stopped: watch::Receiver<bool>,
) -> io::Result<()> {
    // Every connection holds a receiver; `closed()` resolves once they are all gone.
    let (shutdown, shutdown_seen) = watch::channel(());
    let (done, done_seen) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                wait_after_accept_error(error).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            tcp,
            peer,
            router.clone(),
            limits,
            shutdown_seen.clone(),
            done_seen.clone(),
        ));
    }
    drop(listener);
    drop(shutdown_seen);
    drop(done_seen);
    // Tells every connection to finish its request in flight and close.
    drop(shutdown);
    done.closed().await;
    Ok(())
}

/// A failed accept that is about one connection is nothing; anything else (out of file
/// descriptors, most likely) is logged and waited out, so the loop does not spin on it.
async fn wait_after_accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "the API could not accept a connection");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: ApiConnectionLimits,
    mut shutdown: watch::Receiver<()>,
    done: watch::Receiver<()>,
) {
    let bytes_read = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(CountingStream {
        inner: tcp,
        bytes_read: Arc::clone(&bytes_read),
    });
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(HeaderClock {
            bytes_read,
            header: limits.header,
        })
        // hyper's header timer runs from the moment the connection waits for a request;
        // `HeaderClock` shortens it to `header` once the first byte is in.
        .header_read_timeout(limits.idle)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "API connection ended");
                }
                break;
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    drop(done);
}

/// The connection's socket, counting the bytes read so [`HeaderClock`] knows when a request
/// has begun.
struct CountingStream {
    inner: TcpStream,
    bytes_read: Arc<AtomicU64>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection. hyper (1.x, HTTP/1 server) uses its timer only for the
/// header read timeout, which it starts when the connection begins to wait for a request: an
/// idle connection and a slow header are one timeout to it. This clock tells them apart: a
/// wait ends at hyper's deadline (the idle timeout) while no byte has arrived, and `header`
/// after the first byte once one has.
#[derive(Clone)]
struct HeaderClock {
    bytes_read: Arc<AtomicU64>,
    header: Duration,
}

impl hyper::rt::Timer for HeaderClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeaderSleep {
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
            bytes_read: Arc::clone(&self.bytes_read),
            bytes_at_start: self.bytes_read.load(Ordering::Relaxed),
            header: self.header,
            header_begun: false,
        })
    }
}

/// One wait for a request (see [`HeaderClock`]).
struct HeaderSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    bytes_read: Arc<AtomicU64>,
    bytes_at_start: u64,
    header: Duration,
    header_begun: bool,
}

impl Future for HeaderSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this right after each read that left the header incomplete, so the
        // first poll that sees new bytes is within a scheduling delay of their arrival.
        if !self.header_begun && self.bytes_read.load(Ordering::Relaxed) > self.bytes_at_start {
            self.header_begun = true;
            let deadline = tokio::time::Instant::now() + self.header;
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeaderSleep {}
