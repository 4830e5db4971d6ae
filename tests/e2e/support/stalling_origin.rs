//! Origins that misbehave after their headers, on raw sockets: one trickles its body a byte a
//! second, one announces a length, sends a few bytes and then nothing, never closing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes every response announces in `Content-Length`.
pub const ANNOUNCED_LEN: usize = 1_000;
/// Bytes the silent origin sends before it stops.
pub const SILENT_SENT: usize = 10;

/// What the origin does after the headers, chosen by the request path's first segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// `/trickle/...`: one body byte a second.
    Trickle,
    /// `/silent/...`: [`SILENT_SENT`] bytes, then nothing, the connection held open.
    Silent,
}

/// A running origin; counts requests per path.
#[derive(Clone)]
pub struct StallingOrigin {
    addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl StallingOrigin {
    /// Starts the origin on a free loopback port (in the calling test's runtime).
    pub async fn start() -> std::io::Result<StallingOrigin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let origin = StallingOrigin {
            addr: listener.local_addr()?,
            counts: Arc::default(),
        };
        let counts = Arc::clone(&origin.counts);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&counts)));
            }
        });
        Ok(origin)
    }

    /// `http://127.0.0.1:PORT`, for registering a domain.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen for `path`.
    pub fn count(&self, path: &str) -> usize {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.get(path).copied().unwrap_or(0)
    }
}

/// The body byte at `offset`.
pub fn body_byte(offset: usize) -> u8 {
    b'a' + (offset % 26) as u8
}

async fn serve(mut stream: TcpStream, counts: Arc<Mutex<HashMap<String, usize>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    *counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(path.clone())
        .or_default() += 1;
    let stall = if path.starts_with("/trickle/") {
        Stall::Trickle
    } else {
        Stall::Silent
    };
    let headers = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {ANNOUNCED_LEN}\r\nCache-Control: max-age=3600\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    if stream.write_all(headers.as_bytes()).await.is_err() {
        return;
    }
    match stall {
        Stall::Trickle => {
            for offset in 0..ANNOUNCED_LEN {
                if stream.write_all(&[body_byte(offset)]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Stall::Silent => {
            let first: Vec<u8> = (0..SILENT_SENT).map(body_byte).collect();
            if stream.write_all(&first).await.is_err() {
                return;
            }
            // Held open until the client gives up; whatever it sends is ignored.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        }
    }
}
