//! Domains' TLS certificates on the control plane (issue 14, API.md §13 "Certificates"): an
//! admin uploads a chain and key, checked to match and to name the domain; the domain's answer
//! shows the facts, never the key; the edge is pushed the certificate and presents it to
//! players; expiry is a metric and a warning; the key is in no answer and no log line; the CLI
//! does the same.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::client::Reply;
use crate::support::server::{Options, ADMIN_PASSWORD};
use crate::support::{Api, Origin, Server, TestResult};

const HOST: &str = "secure.example.com";
/// A domain whose certificate is about to expire.
const SOON: &str = "soon.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A private CA.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// A leaf, its key and what its answer should say.
struct Leaf {
    /// Leaf then CA.
    cert_pem: String,
    key_pem: String,
    sha256: String,
    /// `YYYY-MM-DD` of its end.
    not_after_day: String,
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

    /// A leaf naming `names`, valid until `days` days from today.
    fn leaf(&self, names: &[&str], days: i64) -> Result<Leaf, Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
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
            sha256: hex::encode(Sha256::digest(cert.der())),
            not_after_day: until.to_string(),
        })
    }
}

/// Whether `text` holds any line of the key's body (a line is 64 characters of it).
fn leaks(text: &str, key_pem: &str) -> bool {
    key_pem
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .any(|line| text.contains(line))
}

async fn put_certificate(
    api: &Api,
    token: &str,
    domain: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Reply, Error> {
    api.call(
        Method::PUT,
        &format!("/cdn_api/domains/{domain}/certificate"),
        Some(token),
        Some(json!({"cert_pem": cert_pem, "key_pem": key_pem})),
    )
    .await
}

/// The SHA-256 of the leaf the edge's TLS listener presents for `domain` (trusting only the
/// test's CA), or `None` when it refuses the handshake.
async fn served_leaf(
    tls_addr: SocketAddr,
    ca: &rcgen::Certificate,
    domain: &str,
) -> Result<Option<String>, Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_der(ca.der())?)
        .resolve(domain, tls_addr)
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("https://{domain}:{}/", tls_addr.port());
    match client.get(url).send().await {
        Ok(response) => Ok(response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .map(|der| hex::encode(Sha256::digest(der)))),
        Err(error) if error.is_connect() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Waits until the edge presents `expected` for `domain` (`None`: refuses its handshakes).
async fn wait_served(
    tls_addr: SocketAddr,
    ca: &rcgen::Certificate,
    domain: &str,
    expected: Option<&str>,
) -> TestResult {
    let started = Instant::now();
    loop {
        let served = served_leaf(tls_addr, ca, domain).await?;
        if served.as_deref() == expected {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("{domain}: the edge presents {served:?}, not {expected:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_admin_sets_a_checked_certificate_that_edges_get_and_nobody_reads_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options {
            args: vec!["--edge-tls-listen".into(), "127.0.0.1:0".into()],
            ..Options::default()
        },
    )?;
    let tls_addr: SocketAddr = server
        .edge_tls
        .as_deref()
        .ok_or("the start line names no TLS listener")?
        .parse()?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let admin = api.admin().await?;
    let alice = api.create_user(&admin, "alice").await?;
    for domain in [HOST, SOON] {
        api.register_domain(&admin, domain, &origin.url(), "alice")
            .await?;
    }
    let pki = Pki::new()?;
    let leaf = pki.leaf(&[HOST], 90)?;
    let mut answers = Vec::new();

    // Refused, each with a message naming the problem; nothing stored.
    let reply = put_certificate(&api, &alice, HOST, &leaf.cert_pem, &leaf.key_pem).await?;
    reply.expect(403, 1004)?;
    answers.push(reply.text());
    let other = pki.leaf(&[HOST], 90)?;
    let reply = put_certificate(&api, &admin, HOST, &leaf.cert_pem, &other.key_pem).await?;
    reply.expect(400, 2002)?;
    assert!(reply.msg().contains("does not match"), "{}", reply.text());
    answers.push(reply.text());
    let elsewhere = pki.leaf(&["other.example.com", "*.secure.example.com"], 90)?;
    let reply =
        put_certificate(&api, &admin, HOST, &elsewhere.cert_pem, &elsewhere.key_pem).await?;
    reply.expect(400, 2002)?;
    assert!(
        reply.msg().contains("does not name secure.example.com"),
        "{}",
        reply.text()
    );
    answers.push(reply.text());
    let reply = put_certificate(&api, &admin, HOST, "not a certificate", &leaf.key_pem).await?;
    reply.expect(400, 2002)?;
    assert!(reply.msg().contains("no certificate"), "{}", reply.text());
    answers.push(reply.text());
    let reply = put_certificate(&api, &admin, HOST, &leaf.cert_pem, "not a key").await?;
    reply.expect(400, 2002)?;
    assert!(reply.msg().contains("no private key"), "{}", reply.text());
    let reply = put_certificate(
        &api,
        &admin,
        "unregistered.example.com",
        &leaf.cert_pem,
        &leaf.key_pem,
    )
    .await?;
    reply.expect(404, 3002)?;
    answers.push(reply.text());
    let reply = api
        .call(
            Method::GET,
            &format!("/cdn_api/domains/{HOST}"),
            Some(&alice),
            None,
        )
        .await?;
    reply.expect(200, 0)?;
    assert_eq!(
        reply.get("domain")["certificate"],
        Value::Null,
        "{}",
        reply.text()
    );

    // Set: the answer, the domain's owner and the list show the facts.
    let reply = put_certificate(&api, &admin, HOST, &leaf.cert_pem, &leaf.key_pem).await?;
    reply.expect(200, 0)?;
    answers.push(reply.text());
    let facts = reply.get("domain")["certificate"].clone();
    assert_eq!(facts["sans"], json!([HOST]), "{}", reply.text());
    assert_eq!(facts["sha256"], leaf.sha256, "{}", reply.text());
    assert_eq!(facts["subject"], format!("CN={HOST}"), "{}", reply.text());
    assert!(
        facts["not_after"]
            .as_str()
            .is_some_and(|at| at.starts_with(&leaf.not_after_day)),
        "not_after {} for a leaf ending {}",
        facts["not_after"],
        leaf.not_after_day
    );
    let shown = api
        .call(
            Method::GET,
            &format!("/cdn_api/domains/{HOST}"),
            Some(&alice),
            None,
        )
        .await?;
    shown.expect(200, 0)?;
    assert_eq!(shown.get("domain")["certificate"], facts);
    answers.push(shown.text());
    let listed = api
        .call(Method::GET, "/cdn_api/domains", Some(&admin), None)
        .await?;
    listed.expect(200, 0)?;
    answers.push(listed.text());
    assert!(listed
        .get("domains")
        .as_array()
        .is_some_and(|domains| domains
            .iter()
            .any(|domain| domain["domain"] == HOST && domain["certificate"] == facts)));

    // The edge is pushed the chain and the key: its TLS listener presents the leaf for the
    // domain, and still refuses a domain without a certificate.
    wait_served(tls_addr, &pki.ca, HOST, Some(&leaf.sha256)).await?;
    assert_eq!(served_leaf(tls_addr, &pki.ca, SOON).await?, None);

    // Expiry: a gauge per domain with a certificate, and a warning for one that ends soon.
    let soon = pki.leaf(&[SOON], 5)?;
    put_certificate(&api, &admin, SOON, &soon.cert_pem, &soon.key_pem)
        .await?
        .expect(200, 0)?;
    let metrics = api.send(Method::GET, "/metrics", None, None).await?;
    let metrics = metrics.text();
    let days_left = |domain: &str| -> Option<f64> {
        let prefix = format!("precache_certificate_days_left{{domain=\"{domain}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.parse().ok())
    };
    let host_days = days_left(HOST).ok_or(format!("no gauge for {HOST}:\n{metrics}"))?;
    assert!((89.0..=90.0).contains(&host_days), "{host_days}");
    let soon_days = days_left(SOON).ok_or(format!("no gauge for {SOON}:\n{metrics}"))?;
    assert!((4.0..=5.0).contains(&soon_days), "{soon_days}");
    let log = server.log();
    assert!(
        log.lines()
            .any(|line| line.contains("less than 14 days") && line.contains(SOON)),
        "no warning for {SOON}:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|line| line.contains("less than 14 days") && line.contains(HOST)),
        "a warning for {HOST}, 90 days from its end:\n{log}"
    );

    // Removed: gone from the answer, the edge's table and the metrics; a second time is 3002.
    let reply = api
        .call(
            Method::DELETE,
            &format!("/cdn_api/domains/{HOST}/certificate"),
            Some(&admin),
            None,
        )
        .await?;
    reply.expect(200, 0)?;
    assert_eq!(
        reply.get("domain")["certificate"],
        Value::Null,
        "{}",
        reply.text()
    );
    wait_served(tls_addr, &pki.ca, HOST, None).await?;
    let metrics = api.send(Method::GET, "/metrics", None, None).await?.text();
    assert!(
        !metrics.contains(&format!(
            "precache_certificate_days_left{{domain=\"{HOST}\"}}"
        )),
        "{metrics}"
    );
    let reply = api
        .call(
            Method::DELETE,
            &format!("/cdn_api/domains/{HOST}/certificate"),
            Some(&admin),
            None,
        )
        .await?;
    reply.expect(404, 3002)?;
    let reply = api
        .call(
            Method::DELETE,
            &format!("/cdn_api/domains/{SOON}/certificate"),
            Some(&alice),
            None,
        )
        .await?;
    reply.expect(403, 1004)?;

    // The key is in no answer and no line of the server's log.
    for text in &answers {
        assert!(!leaks(text, &leaf.key_pem), "the key in an answer: {text}");
        assert!(!leaks(text, &other.key_pem), "a key in an answer: {text}");
    }
    let log = server.log();
    for key in [&leaf.key_pem, &other.key_pem, &soon.key_pem] {
        assert!(!leaks(&log, key), "a key in the log:\n{log}");
    }
    Ok(())
}

#[tokio::test]
async fn the_cli_sets_and_removes_a_certificate() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let admin = api.admin().await?;
    api.create_user(&admin, "alice").await?;
    api.register_domain(&admin, HOST, &origin.url(), "alice")
        .await?;
    let pki = Pki::new()?;
    let leaf = pki.leaf(&[HOST], 30)?;
    let files = tempfile::tempdir()?;
    let (cert_file, key_file) = (files.path().join("chain.pem"), files.path().join("key.pem"));
    std::fs::write(&cert_file, &leaf.cert_pem)?;
    std::fs::write(&key_file, &leaf.key_pem)?;
    let other = pki.leaf(&[HOST], 30)?;
    let other_key_file = files.path().join("other.pem");
    std::fs::write(&other_key_file, &other.key_pem)?;
    let home = tempfile::tempdir()?;
    let precache = |args: Vec<String>, stdin: String| {
        let home = home.path().to_path_buf();
        async move {
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_precache"));
            command
                .args(&args)
                .env("XDG_CONFIG_HOME", &home)
                .env_remove("PRECACHE_CONTROL")
                .env_remove("PRECACHE_TOKEN")
                .env_remove("PRECACHE_PASSWORD")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = command.spawn()?;
            if let Some(mut input) = child.stdin.take() {
                tokio::io::AsyncWriteExt::write_all(&mut input, stdin.as_bytes()).await?;
            }
            let output =
                tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
            let text = format!(
                "status {:?}\nstdout:\n{}\nstderr:\n{}",
                output.status.code(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            Ok::<_, Error>((output, text))
        }
    };
    let path = |file: &Path| file.display().to_string();
    let (login, text) = precache(
        [
            "login",
            "--control",
            &api.base,
            "--user",
            "admin",
            "--password-stdin",
        ]
        .map(String::from)
        .to_vec(),
        format!("{ADMIN_PASSWORD}\n"),
    )
    .await?;
    assert!(login.status.success(), "{text}");

    let cert_args = |key: &Path| {
        vec![
            "admin".to_string(),
            "domain".into(),
            "cert".into(),
            HOST.into(),
            "--cert".into(),
            path(&cert_file),
            "--key".into(),
            path(key),
        ]
    };
    let (refused, text) = precache(cert_args(&other_key_file), String::new()).await?;
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("does not match"), "{text}");
    let (set, text) = precache(cert_args(&key_file), String::new()).await?;
    assert!(set.status.success(), "{text}");
    assert!(text.contains(&leaf.sha256), "{text}");
    assert!(text.contains(&leaf.not_after_day), "{text}");
    assert!(!leaks(&text, &leaf.key_pem), "{text}");
    let shown = api
        .call(
            Method::GET,
            &format!("/cdn_api/domains/{HOST}"),
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(shown.get("domain")["certificate"]["sha256"], leaf.sha256);

    let (removed, text) = precache(
        ["admin", "domain", "cert", HOST, "--remove"]
            .map(String::from)
            .to_vec(),
        String::new(),
    )
    .await?;
    assert!(removed.status.success(), "{text}");
    assert!(text.contains("no certificate"), "{text}");
    let shown = api
        .call(
            Method::GET,
            &format!("/cdn_api/domains/{HOST}"),
            Some(&admin),
            None,
        )
        .await?;
    assert_eq!(shown.get("domain")["certificate"], Value::Null);
    let (neither, text) = precache(
        ["admin", "domain", "cert", HOST].map(String::from).to_vec(),
        String::new(),
    )
    .await?;
    assert!(!neither.status.success(), "{text}");
    assert!(!leaks(&server.log(), &leaf.key_pem));
    Ok(())
}
