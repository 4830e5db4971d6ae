//! An https test origin on 127.0.0.1: the answers of [`Origin`] over TLS, with a certificate
//! from a private CA made for the test, counting the connections it accepts and the TLS
//! handshakes that succeed or fail, and recording the SNI and `Host` it is sent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::origin::Origin;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A private CA (written as PEM for `--origin-ca-file`) and a leaf certificate it signed.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The leaf's chain (leaf, then the CA).
    chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    key: PrivatePkcs8KeyDer<'static>,
}

impl TestCa {
    /// A new CA and a leaf for these DNS names and IP addresses.
    pub fn new(names: &[&str]) -> Result<TestCa, Error> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "precache test origin CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?
            .signed_by(&leaf_key, &ca, &ca_key)?;
        Ok(TestCa {
            ca_pem: ca.pem(),
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        })
    }

    /// Writes the CA certificate to `dir/name`; returns the path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem)?;
        Ok(path)
    }
}

#[derive(Default)]
struct Seen {
    connections: usize,
    handshakes: usize,
    failed_handshakes: usize,
    server_names: Vec<Option<String>>,
    hosts: Vec<String>,
}

/// A running https origin.
#[derive(Clone)]
pub struct TlsOrigin {
    /// Its answers and request counts (program it with [`Origin::set`]).
    pub origin: Origin,
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl TlsOrigin {
    /// Starts an https origin on a free loopback port with `ca`'s leaf certificate.
    pub async fn start(ca: &TestCa) -> Result<TlsOrigin, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(ca.chain.clone(), PrivateKeyDer::Pkcs8(ca.key.clone_key()))?;
        let tls_origin = TlsOrigin {
            origin: Origin::serving_at(addr),
            addr,
            seen: Arc::new(Mutex::new(Seen::default())),
        };
        let seen = Arc::clone(&tls_origin.seen);
        let app = tls_origin.origin.app().layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let seen = Arc::clone(&seen);
                async move {
                    let host = request
                        .headers()
                        .get(axum::http::header::HOST)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    lock(&seen).hosts.push(host);
                    next.run(request).await
                }
            },
        ));
        let listener = Listener {
            tcp: listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            seen: Arc::clone(&tls_origin.seen),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(tls_origin)
    }

    /// `https://127.0.0.1:PORT`, for registering a domain.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.seen).connections
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        lock(&self.seen).handshakes
    }

    /// TLS handshakes the client broke off or that failed.
    pub fn failed_handshakes(&self) -> usize {
        lock(&self.seen).failed_handshakes
    }

    /// The SNI of every completed handshake (`None`: the client sent none).
    pub fn server_names(&self) -> Vec<Option<String>> {
        lock(&self.seen).server_names.clone()
    }

    /// The `Host` of every request.
    pub fn hosts(&self) -> Vec<String> {
        lock(&self.seen).hosts.clone()
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Listener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    seen: Arc<Mutex<Seen>>,
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            lock(&self.seen).connections += 1;
            let handshake = self.acceptor.accept(stream);
            match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                Ok(Ok(tls)) => {
                    let name = tls.get_ref().1.server_name().map(str::to_string);
                    let mut seen = lock(&self.seen);
                    seen.handshakes += 1;
                    seen.server_names.push(name);
                    return (tls, peer);
                }
                _ => lock(&self.seen).failed_handshakes += 1,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
