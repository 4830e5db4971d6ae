//! Players over HTTPS (issue 14, API.md §13 "To players"): the edge's TLS listener presents the
//! certificate of the domain named by SNI, speaks HTTP/2 or HTTP/1.1 as ALPN settles, refuses
//! a name without a certificate in the handshake, takes a replaced certificate for new
//! connections while open ones go on, and serves the same cache as over plain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Request};
use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::support::client::url;
use crate::support::server::{Options, EDGE_ADMIN_SECRET};
use crate::support::{Api, Behavior, Origin, Server, TestResult};

/// A domain with a certificate.
const HOST: &str = "secure.example.com";
/// A domain registered without one.
const PLAIN: &str = "plain.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A private CA, as a studio's test setup would have.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// A leaf certificate and its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Result<Pki, Error> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "precache test CA");
        let ca = params.self_signed(&ca_key)?;
        Ok(Pki { ca, ca_key })
    }

    /// A leaf for `domain` with this serial, valid until `days` days from today; the chain is
    /// the leaf then the CA.
    fn leaf(&self, domain: &str, serial: u64, days: i64) -> Result<Leaf, Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let until = jiff::Zoned::now()
            .with_time_zone(jiff::tz::TimeZone::UTC)
            .date()
            .checked_add(jiff::Span::new().days(days))?;
        params.not_after = rcgen::date_time_ymd(
            i32::from(until.year()),
            until.month().try_into()?,
            until.day().try_into()?,
        );
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        Ok(Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.ca.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        })
    }

    fn roots(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone())?;
        Ok(roots)
    }
}

/// A server with an HTTPS listener, `HOST` and `PLAIN` registered against one origin.
struct Fixture {
    _dir: tempfile::TempDir,
    server: Server,
    api: Api,
    origin: Origin,
    admin: String,
    token: String,
    tls_addr: SocketAddr,
    pki: Pki,
}

async fn setup() -> Result<Fixture, Error> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options {
            args: vec![
                "--edge-tls-listen".into(),
                "127.0.0.1:0".into(),
                "--edge-access-log".into(),
                dir.path().join("access.log").display().to_string(),
            ],
            ..Options::default()
        },
    )?;
    let tls_addr = server
        .edge_tls
        .as_deref()
        .ok_or("the start line names no TLS listener")?
        .parse()?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let admin = api.admin().await?;
    let token = api.create_user(&admin, "alice").await?;
    for domain in [HOST, PLAIN] {
        api.register_domain(&admin, domain, &origin.url(), "alice")
            .await?;
    }
    // Both domains are in the edge's table once an unknown path answers the origin's 404.
    origin.set("/ready", Behavior::Status(204));
    for domain in [HOST, PLAIN] {
        let started = Instant::now();
        while api.edge_get(domain, "/ready").await?.status() != 204 {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("{domain} never reached the edge").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(Fixture {
        _dir: dir,
        server,
        api,
        origin,
        admin,
        token,
        tls_addr,
        pki: Pki::new()?,
    })
}

impl Fixture {
    /// Sets `domain`'s certificate through the API and waits until the edge presents it.
    async fn set_certificate(&self, domain: &str, leaf: &Leaf) -> Result<(), Error> {
        self.api
            .call(
                Method::PUT,
                &format!("/cdn_api/domains/{domain}/certificate"),
                Some(&self.admin),
                Some(json!({"cert_pem": leaf.cert_pem, "key_pem": leaf.key_pem})),
            )
            .await?
            .expect(200, 0)?;
        self.wait_for_certificate(domain, leaf).await
    }

    /// Removes `domain`'s certificate through the API and waits until the edge refuses its
    /// handshakes.
    async fn remove_certificate(&self, domain: &str) -> Result<(), Error> {
        self.api
            .call(
                Method::DELETE,
                &format!("/cdn_api/domains/{domain}/certificate"),
                Some(&self.admin),
                None,
            )
            .await?
            .expect(200, 0)?;
        let started = Instant::now();
        while self.connect(domain, &[b"http/1.1"]).await.is_ok() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("the edge still presents a certificate for {domain}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Hands the embedded edge a table with these certificates directly over its admin
    /// protocol, at the revision it holds (so the control plane does not push over it): the
    /// edge's side alone, as a standalone edge gets it.
    async fn push_certificates(&self, certificates: &[(&str, &Leaf)]) -> Result<(), Error> {
        let revision = self.api.edge_status().await?["domains_revision"].clone();
        let domains: Vec<Value> = [HOST, PLAIN]
            .iter()
            .map(|domain| {
                let mut route =
                    json!({"domain": domain, "origin": self.origin.url(), "origin_host": null});
                if let Some((_, leaf)) = certificates.iter().find(|(name, _)| name == domain) {
                    route["certificate"] =
                        json!({"cert_pem": leaf.cert_pem, "key_pem": leaf.key_pem});
                }
                route
            })
            .collect();
        let response = reqwest::Client::new()
            .put(format!("{}/edge/v1/domains", self.api.edge_admin))
            .bearer_auth(EDGE_ADMIN_SECRET)
            .json(&json!({"revision": revision, "domains": domains}))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("the edge refused the table: {}", response.status()).into());
        }
        for (domain, leaf) in certificates {
            self.wait_for_certificate(domain, leaf).await?;
        }
        Ok(())
    }

    async fn wait_for_certificate(&self, domain: &str, leaf: &Leaf) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            if let Ok(stream) = self.connect(domain, &[b"http/1.1"]).await {
                if peer_certificate(&stream).as_ref() == Some(&leaf.der) {
                    return Ok(());
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(
                    format!("the edge never presented the new certificate of {domain}").into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A TLS connection to the edge with this SNI (none for an IP address), trusting the CA,
    /// offering these ALPN protocols.
    async fn connect(
        &self,
        server_name: &str,
        alpn: &[&[u8]],
    ) -> Result<TlsStream<TcpStream>, Error> {
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(self.pki.roots()?)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let tcp = TcpStream::connect(self.tls_addr).await?;
        let name = ServerName::try_from(server_name.to_string())?;
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await??;
        Ok(stream)
    }

    /// An HTTP/2 connection to the edge for `domain`; fails unless ALPN settles on h2.
    async fn h2(&self, domain: &str) -> Result<h2::client::SendRequest<Bytes>, Error> {
        let stream = self.connect(domain, &[b"h2", b"http/1.1"]).await?;
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() != Some(b"h2") {
            return Err(format!("ALPN settled on {alpn:?}, not h2").into());
        }
        let (send, connection) = h2::client::handshake(stream).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(send)
    }

    /// A reqwest client (HTTP/1.1 only: it offers no h2) that resolves both domains to the TLS
    /// listener and trusts the CA; a new client opens new connections.
    fn https_client(&self) -> Result<reqwest::Client, Error> {
        Ok(reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_der(self.pki.ca.der())?)
            .resolve(HOST, self.tls_addr)
            .resolve(PLAIN, self.tls_addr)
            .tls_info(true)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// `https://<domain>:<the TLS listener's port><path>`.
    fn https_url(&self, domain: &str, path: &str) -> String {
        format!("https://{domain}:{}{path}", self.tls_addr.port())
    }
}

fn peer_certificate(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.clone().into_owned())
}

/// The certificate the connection that answered `response` was given.
fn served_certificate(response: &reqwest::Response) -> Option<Vec<u8>> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
}

/// `GET https://<domain><path>` on an HTTP/2 connection: status, headers, body.
async fn h2_get(
    connection: &h2::client::SendRequest<Bytes>,
    domain: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, HeaderMap, Bytes), Error> {
    let mut send = connection.clone().ready().await?;
    let mut request = Request::get(format!("https://{domain}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, _) = send.send_request(request.body(())?, true)?;
    let response = tokio::time::timeout(Duration::from_secs(30), response).await??;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, headers, Bytes::from(bytes)))
}

fn x_cache(headers: &HeaderMap) -> &str {
    headers
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

/// The access log's lines for `path`, once there are at least `count` of them (lines are
/// written every 100 ms).
async fn access_lines(
    dir: &std::path::Path,
    path: &str,
    count: usize,
) -> Result<Vec<Value>, Error> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["path"] == path)
            .collect();
        if lines.len() >= count {
            return Ok(lines);
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("{} access log lines for {path}, not {count}", lines.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn days_left_gauge(api: &Api, domain: &str) -> Result<Option<f64>, Error> {
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await?
        .text()
        .await?;
    let series = format!("precache_edge_certificate_days_left{{domain=\"{domain}\"}} ");
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok()))
}

#[tokio::test]
async fn https_misses_then_hits_over_h2_and_http1_with_the_domains_certificate() -> TestResult {
    let fixture = setup().await?;
    let Fixture { api, origin, .. } = &fixture;
    // Ten days left: the edge warns and its gauge says so.
    let leaf = fixture.pki.leaf(HOST, 1, 10)?;
    fixture.set_certificate(HOST, &leaf).await?;
    let body = Bytes::from_static(b"0123456789 the patch over https\n");
    origin.set("/patch.bin", Behavior::Body(body.clone()));

    // HTTP/2 by ALPN: a miss, then a hit on the same connection.
    let connection = fixture.h2(HOST).await?;
    let (status, headers, got) = h2_get(&connection, HOST, "/patch.bin", &[]).await?;
    assert_eq!((status, x_cache(&headers), &got), (200, "MISS", &body));
    let (status, headers, got) = h2_get(&connection, HOST, "/patch.bin", &[]).await?;
    assert_eq!((status, x_cache(&headers), &got), (200, "HIT", &body));

    // HTTP/1.1 for a client that offers only it, with the domain's certificate.
    let client = fixture.https_client()?;
    let response = client
        .get(fixture.https_url(HOST, "/patch.bin"))
        .send()
        .await?;
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(
        served_certificate(&response).as_deref(),
        Some(leaf.der.as_ref())
    );
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-cache"].to_str()?,
        "HIT",
        "the TLS listener serves the same cache"
    );
    assert_eq!(response.bytes().await?, body);
    // Plain HTTP too: one cache whatever the scheme.
    let plain = api.edge_get(HOST, "/patch.bin").await?;
    assert_eq!(plain.headers()["x-cache"].to_str()?, "HIT");
    assert_eq!(origin.count("/patch.bin"), 1, "one origin request in all");
    // The access log says how each player came.
    let lines = access_lines(fixture._dir.path(), "/patch.bin", 4).await?;
    // A line is written when its request ends, after the player has its answer, so the next
    // request (on another thread) may write its line first: compare without the order.
    let mut came: Vec<(&str, &str, &str, &str)> = lines
        .iter()
        .map(|line| {
            (
                line["scheme"].as_str().unwrap_or(""),
                line["protocol"].as_str().unwrap_or(""),
                line["cache"].as_str().unwrap_or(""),
                line["host"].as_str().unwrap_or(""),
            )
        })
        .collect();
    came.sort_unstable();
    let mut expected = [
        ("https", "HTTP/2", "MISS", HOST),
        ("https", "HTTP/2", "HIT", HOST),
        ("https", "HTTP/1.1", "HIT", HOST),
        ("http", "HTTP/1.1", "HIT", HOST),
    ];
    expected.sort_unstable();
    assert_eq!(came, expected);
    assert!(lines.iter().all(|line| line["client"] == "127.0.0.1"));

    // A range of a cached object over TLS.
    let (status, headers, got) =
        h2_get(&connection, HOST, "/patch.bin", &[("range", "bytes=2-5")]).await?;
    assert_eq!((status, &got[..]), (206, &b"2345"[..]));
    assert_eq!(headers["content-range"].to_str()?, "bytes 2-5/32");

    // Expiry: the gauge, and a warning in the log.
    let days_left = days_left_gauge(api, HOST)
        .await?
        .ok_or("no days-left series for the domain")?;
    assert!((9.0..=10.0).contains(&days_left), "{days_left}");
    let log = fixture.server.log();
    assert!(
        log.lines()
            .any(|line| line.contains("expires in less than 14 days") && line.contains(HOST)),
        "{log}"
    );
    assert!(!log.contains("PRIVATE KEY"), "no key material in the log");
    // The table on disk holds the key: the owner's only.
    let table = fixture._dir.path().join("edge").join("domains.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&table)?.permissions());
    assert_eq!(mode & 0o777, 0o600);

    // A refresh through the API empties the cache for HTTPS players too.
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&fixture.token),
            Some(json!({"urls": [url(HOST, "/patch.bin")]})),
        )
        .await?;
    let req_id = reply.get("reqId").as_str().ok_or("no reqId")?.to_string();
    let task = api
        .wait_final_of("refresh", &fixture.token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    let (status, headers, got) = h2_get(&connection, HOST, "/patch.bin", &[]).await?;
    assert_eq!((status, x_cache(&headers), &got), (200, "MISS", &body));
    assert_eq!(origin.count("/patch.bin"), 2);
    Ok(())
}

#[tokio::test]
async fn a_name_without_a_certificate_is_refused_in_the_handshake() -> TestResult {
    let fixture = setup().await?;
    let leaf = fixture.pki.leaf(HOST, 1, 90)?;
    fixture.push_certificates(&[(HOST, &leaf)]).await?;
    fixture
        .origin
        .set("/any", Behavior::Body(Bytes::from_static(b"origin bytes")));
    let before = fixture.origin.total();

    // A registered domain without a certificate, an unknown name, and no SNI at all.
    for name in [PLAIN, "unknown.example.com", "127.0.0.1"] {
        let refused = fixture.connect(name, &[b"h2", b"http/1.1"]).await;
        assert!(refused.is_err(), "{name}: the handshake must fail");
    }
    let refused = fixture
        .https_client()?
        .get(fixture.https_url(PLAIN, "/any"))
        .send()
        .await;
    assert!(refused.is_err(), "a client naming {PLAIN} gets no answer");
    assert_eq!(fixture.origin.total(), before, "no origin contact");

    // The domain with a certificate is served, and the other one still over plain HTTP.
    let connection = fixture.h2(HOST).await?;
    let (status, _, got) = h2_get(&connection, HOST, "/any", &[]).await?;
    assert_eq!((status, &got[..]), (200, &b"origin bytes"[..]));
    let plain = fixture.api.edge_get(PLAIN, "/any").await?;
    assert_eq!(plain.status(), 200);
    Ok(())
}

#[tokio::test]
async fn a_replaced_certificate_reaches_new_connections_while_open_ones_go_on() -> TestResult {
    let fixture = setup().await?;
    let first = fixture.pki.leaf(HOST, 1, 90)?;
    fixture.set_certificate(HOST, &first).await?;
    fixture
        .origin
        .set("/file", Behavior::Body(Bytes::from_static(b"same bytes")));

    // A kept-alive HTTP/1.1 connection and an HTTP/2 one, both given the first certificate.
    let kept = fixture.https_client()?;
    let response = kept.get(fixture.https_url(HOST, "/file")).send().await?;
    assert_eq!(
        served_certificate(&response).as_deref(),
        Some(first.der.as_ref())
    );
    response.bytes().await?;
    let connection = fixture.h2(HOST).await?;
    h2_get(&connection, HOST, "/file", &[]).await?;

    let second = fixture.pki.leaf(HOST, 2, 90)?;
    fixture.set_certificate(HOST, &second).await?;

    // The open connections go on answering (on the certificate they were given) ...
    let (status, headers, got) = h2_get(&connection, HOST, "/file", &[]).await?;
    assert_eq!(
        (status, x_cache(&headers), &got[..]),
        (200, "HIT", &b"same bytes"[..])
    );
    let response = kept.get(fixture.https_url(HOST, "/file")).send().await?;
    assert_eq!(
        served_certificate(&response).as_deref(),
        Some(first.der.as_ref()),
        "the kept-alive connection was not closed"
    );
    assert_eq!(response.bytes().await?, &b"same bytes"[..]);

    // ... and a new connection gets the new one.
    let fresh = fixture.https_client()?;
    let response = fresh.get(fixture.https_url(HOST, "/file")).send().await?;
    assert_eq!(
        served_certificate(&response).as_deref(),
        Some(second.der.as_ref())
    );
    assert_eq!(response.status(), 200);
    assert_eq!(fixture.origin.count("/file"), 1);

    // A certificate removed: new handshakes are refused, plain HTTP goes on.
    fixture.remove_certificate(HOST).await?;
    assert_eq!(fixture.api.edge_get(HOST, "/file").await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn concurrent_https_requests_for_one_object_make_one_origin_fetch() -> TestResult {
    let fixture = setup().await?;
    let leaf = fixture.pki.leaf(HOST, 1, 90)?;
    fixture.push_certificates(&[(HOST, &leaf)]).await?;
    let body = Bytes::from(vec![b'x'; 256 * 1024]);
    fixture.origin.set(
        "/slow.pak",
        Behavior::Slow(Duration::from_millis(500), body.clone()),
    );
    // Twenty streams on one HTTP/2 connection and five HTTP/1.1 connections, all at once.
    let connection = fixture.h2(HOST).await?;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let connection = connection.clone();
        requests.spawn(async move {
            let (status, _, got) = h2_get(&connection, HOST, "/slow.pak", &[]).await?;
            Ok::<_, Error>((status, got))
        });
    }
    for _ in 0..5 {
        let client = fixture.https_client()?;
        let url = fixture.https_url(HOST, "/slow.pak");
        requests.spawn(async move {
            let response = client.get(url).send().await?;
            Ok::<_, Error>((response.status().as_u16(), response.bytes().await?))
        });
    }
    while let Some(joined) = requests.join_next().await {
        let (status, got) = joined??;
        assert_eq!(status, 200);
        assert!(got == body, "every player gets the origin's bytes");
    }
    assert_eq!(fixture.origin.count("/slow.pak"), 1);
    Ok(())
}
