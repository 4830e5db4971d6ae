//! https origins (issue 14, API.md §13): the edge fetches over TLS, verifying the origin's
//! certificate against the system's roots plus `--origin-ca-file`, with `origin_host` (or the
//! origin's host) as SNI and `Host`, on pooled connections; an untrusted certificate fails the
//! pair with that reason and players get 502.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client::url;
use crate::support::server::Options;
use crate::support::tls_origin::{TestCa, TlsOrigin};
use crate::support::{Api, Behavior, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HOST: &str = "game.example.com";
/// The DNS name on the origin's certificate.
const ORIGIN_NAME: &str = "origin.test";
const WAIT: Duration = Duration::from_secs(30);

/// A server (with these extra flags) where alice owns `HOST`, whose origin is `origin` named
/// `origin_host`.
struct Fixture {
    _dir: tempfile::TempDir,
    server: Server,
    api: Api,
    admin: String,
    token: String,
}

async fn setup(
    dir: tempfile::TempDir,
    args: Vec<String>,
    origin: &TlsOrigin,
    origin_host: Option<&str>,
) -> Result<Fixture, Error> {
    let server = Server::start_with(
        dir.path(),
        Options {
            args,
            ..Options::default()
        },
    )?;
    let api = Api::new(&server);
    let admin = api.admin().await?;
    let token = api.create_user(&admin, "alice").await?;
    register(&api, &admin, HOST, &origin.url(), origin_host).await?;
    Ok(Fixture {
        _dir: dir,
        server,
        api,
        admin,
        token,
    })
}

async fn register(
    api: &Api,
    admin: &str,
    domain: &str,
    origin: &str,
    origin_host: Option<&str>,
) -> Result<(), Error> {
    api.call(
        Method::POST,
        "/cdn_api/domains",
        Some(admin),
        Some(json!({"domain": domain, "origin": origin, "owner": "alice", "origin_host": origin_host})),
    )
    .await?
    .expect(201, 0)?;
    Ok(())
}

/// `--origin-ca-file` naming `ca`'s certificate, written in `dir`.
fn ca_flag(ca: &TestCa, dir: &std::path::Path) -> Result<Vec<String>, Error> {
    let path = ca.write_ca(dir, "origin-ca.pem")?;
    Ok(vec!["--origin-ca-file".into(), path.display().to_string()])
}

async fn get(api: &Api, path: &str) -> Result<(u16, String, Bytes), Error> {
    let response = api.edge_get(HOST, path).await?;
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((status, cache, response.bytes().await?))
}

/// One player connection, kept alive, for requests whose answers carry a `Content-Length`.
struct KeptAlive {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl KeptAlive {
    async fn connect(edge: &str) -> Result<KeptAlive, Error> {
        let stream = tokio::net::TcpStream::connect(edge).await?;
        Ok(KeptAlive {
            stream: tokio::io::BufReader::new(stream),
        })
    }

    /// The answer's head and body.
    async fn get(&mut self, host: &str, path: &str) -> Result<(String, Vec<u8>), Error> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err("the edge closed the connection".into());
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((head, body))
    }
}

#[tokio::test]
async fn prefetch_over_tls_then_hits_misses_and_a_refresh_share_one_verified_connection(
) -> TestResult {
    let ca = TestCa::new(&[ORIGIN_NAME])?;
    let origin = TlsOrigin::start(&ca).await?;
    let dir = tempfile::tempdir()?;
    let args = ca_flag(&ca, dir.path())?;
    let f = setup(dir, args, &origin, Some(ORIGIN_NAME)).await?;
    let body = Bytes::from((0..300_000u32).map(|n| (n % 253) as u8).collect::<Vec<_>>());
    origin
        .origin
        .set("/patch/v3.pak", Behavior::Body(body.clone()));

    let req_id = f
        .api
        .prefetch_ok(&f.token, &[url(HOST, "/patch/v3.pak")])
        .await?;
    let status = f.api.wait_final(&f.token, &req_id, WAIT).await?;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["urls"][0]["bytes"], 300_000, "{status}");
    assert_eq!(origin.origin.count("/patch/v3.pak"), 1);

    let (code, cache, got) = get(&f.api, "/patch/v3.pak").await?;
    assert_eq!((code, cache.as_str()), (200, "HIT"));
    assert_eq!(got, body, "the bytes the origin sent over TLS");
    assert_eq!(
        origin.origin.count("/patch/v3.pak"),
        1,
        "a hit, no origin request"
    );

    // SNI and Host are `origin_host`, and the certificate was verified for that name.
    assert_eq!(origin.server_names(), vec![Some(ORIGIN_NAME.to_string())]);
    assert_eq!(origin.hosts(), vec![ORIGIN_NAME.to_string()]);

    // Sequential misses reuse the pooled connection: no new TCP connection, no new handshake.
    // They go over one kept-alive connection, so each starts after the edge has put the origin
    // connection back: a player whose client opened a new connection for the next request
    // could arrive on another thread in the moment between the last byte it read and that.
    let mut player = KeptAlive::connect(&f.api.edge).await?;
    for n in 0..4 {
        let path = format!("/miss-{n}.bin");
        origin
            .origin
            .set(&path, Behavior::Body(Bytes::from(format!("object {n}"))));
        let (head, got) = player.get(HOST, &path).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("x-cache: miss"),
            "{head}"
        );
        assert_eq!(got, format!("object {n}").into_bytes());
    }
    assert_eq!(origin.origin.total(), 5);
    assert_eq!(
        (origin.connections(), origin.handshakes()),
        (1, 1),
        "one connection, one handshake for the prefetch and four misses"
    );

    // A refresh removes the object; the next player's request fetches it again over TLS.
    let reply = f
        .api
        .call(
            Method::POST,
            "/cdn_api/refresh",
            Some(&f.token),
            Some(json!({"urls": [url(HOST, "/patch/v3.pak")]})),
        )
        .await?;
    reply.expect(200, 0)?;
    let refresh_id = reply.get("reqId").as_str().unwrap_or_default().to_string();
    let task = f
        .api
        .wait_final_of("refresh", &f.token, &refresh_id, WAIT)
        .await?;
    assert_eq!(task["status"], "done", "{task}");
    let (code, cache, got) = get(&f.api, "/patch/v3.pak").await?;
    assert_eq!((code, cache.as_str()), (200, "MISS"));
    assert_eq!(got, body);
    assert_eq!(
        origin.origin.count("/patch/v3.pak"),
        2,
        "refetched after the refresh"
    );
    assert_eq!(origin.failed_handshakes(), 0);
    assert!(origin.hosts().iter().all(|host| host == ORIGIN_NAME));
    drop(f.server);
    Ok(())
}

#[tokio::test]
async fn concurrent_misses_on_an_https_origin_make_one_origin_request() -> TestResult {
    let ca = TestCa::new(&[ORIGIN_NAME])?;
    let origin = TlsOrigin::start(&ca).await?;
    let dir = tempfile::tempdir()?;
    let args = ca_flag(&ca, dir.path())?;
    let f = setup(dir, args, &origin, Some(ORIGIN_NAME)).await?;
    let body = Bytes::from(vec![7u8; 100_000]);
    origin.origin.set(
        "/hot.bin",
        Behavior::Slow(Duration::from_millis(500), body.clone()),
    );
    let requests = (0..8).map(|_| get(&f.api, "/hot.bin"));
    let answers = futures_util::future::join_all(requests).await;
    for answer in answers {
        let (code, _, got) = answer?;
        assert_eq!(code, 200);
        assert_eq!(got, body);
    }
    assert_eq!(
        origin.origin.count("/hot.bin"),
        1,
        "collapsed into one fetch"
    );
    assert_eq!(origin.handshakes(), 1);
    Ok(())
}

#[tokio::test]
async fn an_origin_certificate_from_an_untrusted_ca_fails_the_pair_and_players_get_502(
) -> TestResult {
    let ca = TestCa::new(&[ORIGIN_NAME])?;
    let origin = TlsOrigin::start(&ca).await?;
    // No --origin-ca-file: the private CA is not among the system's roots.
    let f = setup(tempfile::tempdir()?, Vec::new(), &origin, Some(ORIGIN_NAME)).await?;
    origin
        .origin
        .set("/secret.bin", Behavior::Body(Bytes::from_static(b"never")));

    let req_id = f
        .api
        .prefetch_ok(&f.token, &[url(HOST, "/secret.bin")])
        .await?;
    let status = f.api.wait_final(&f.token, &req_id, WAIT).await?;
    assert_eq!(status["status"], "failed", "{status}");
    let error = status["urls"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("origin certificate not trusted") && error.contains("UnknownIssuer"),
        "the reason names the certificate: {error:?}"
    );

    let response = f.api.edge_get(HOST, "/secret.bin").await?;
    assert_eq!(response.status(), 502);
    let reason = response
        .headers()
        .get("x-precache-upstream-error")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("origin certificate not trusted"),
        "{reason:?}"
    );
    assert_eq!(origin.origin.total(), 0, "no request was sent unverified");
    assert_eq!(origin.handshakes(), 0);
    assert!(origin.failed_handshakes() >= 1, "the edge did try TLS");
    Ok(())
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_and_the_origins_own_ip_is_its_default_name(
) -> TestResult {
    // The leaf names ORIGIN_NAME and 127.0.0.1.
    let ca = TestCa::new(&[ORIGIN_NAME, "127.0.0.1"])?;
    let origin = TlsOrigin::start(&ca).await?;
    let dir = tempfile::tempdir()?;
    let args = ca_flag(&ca, dir.path())?;
    // HOST's origin_host is not on the certificate.
    let f = setup(dir, args, &origin, Some("elsewhere.test")).await?;
    origin
        .origin
        .set("/a.bin", Behavior::Body(Bytes::from_static(b"by address")));
    let response = f.api.edge_get(HOST, "/a.bin").await?;
    assert_eq!(response.status(), 502);
    let reason = response
        .headers()
        .get("x-precache-upstream-error")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("origin certificate not trusted") && reason.contains("not valid for name"),
        "{reason:?}"
    );
    assert_eq!(origin.origin.total(), 0);

    // Without origin_host, the origin's own host (an address here) is the name checked, and
    // `Host` carries it with its port.
    register(&f.api, &f.admin, "by-ip.example.com", &origin.url(), None).await?;
    let response = f.api.edge_get("by-ip.example.com", "/a.bin").await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await?, Bytes::from_static(b"by address"));
    assert_eq!(origin.hosts(), vec![format!("127.0.0.1:{}", origin.port())]);
    assert_eq!(
        origin.server_names(),
        vec![None],
        "TLS sends no SNI for an address"
    );
    Ok(())
}

#[tokio::test]
async fn an_unusable_origin_ca_file_stops_the_server_at_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n")?;
    for (path, expected) in [
        (dir.path().join("missing.pem"), "missing.pem"),
        (empty, "holds no PEM certificate"),
    ] {
        let data = tempfile::tempdir()?;
        let started = Server::start_with(
            data.path(),
            Options {
                args: vec!["--origin-ca-file".into(), path.display().to_string()],
                ..Options::default()
            },
        );
        match started {
            Ok(_) => return Err(format!("started with {}", path.display()).into()),
            Err(error) => {
                let error = error.to_string();
                assert!(
                    error.contains("origin CA file") && error.contains(expected),
                    "{error}"
                );
            }
        }
    }
    Ok(())
}

/// A child edge whose domain has an https origin still fetches through its parent (plain HTTP
/// between edges), and the parent fetches over TLS with its own `--origin-ca-file`. The child has
/// no CA file: had it gone to the origin itself, verification would have failed.
#[tokio::test]
async fn a_child_edge_goes_through_its_parent_which_fetches_over_tls() -> TestResult {
    let ca = TestCa::new(&[ORIGIN_NAME])?;
    let origin = TlsOrigin::start(&ca).await?;
    let (api_dir, parent_dir, child_dir) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let control = Server::start_with(
        api_dir.path(),
        Options {
            role: "api",
            ..Options::default()
        },
    )?;
    let api = Api::new(&control);
    let admin = api.admin().await?;
    api.create_user(&admin, "alice").await?;
    let parent_token = create_edge(&api, &admin, "shield", Value::Null).await?;
    let child_token = create_edge(&api, &admin, "child", json!("shield")).await?;
    let mut parent_args = edge_args(&control.api, "shield", &parent_token);
    parent_args.extend(ca_flag(&ca, parent_dir.path())?);
    let parent = Server::start_with(
        parent_dir.path(),
        Options {
            role: "edge",
            args: parent_args,
            ..Options::default()
        },
    )?;
    let child = Server::start_with(
        child_dir.path(),
        Options {
            role: "edge",
            args: edge_args(&control.api, "child", &child_token),
            ..Options::default()
        },
    )?;
    wait_edges_up(&api, &admin, &["shield", "child"]).await?;
    register(&api, &admin, HOST, &origin.url(), Some(ORIGIN_NAME)).await?;
    let body = Bytes::from_static(b"shielded over tls");
    origin.origin.set("/s.bin", Behavior::Body(body.clone()));

    let child_api = api.at_edge(&child.edge);
    let deadline = Instant::now() + WAIT;
    let (code, got, upstream_error) = loop {
        // The domain table reaches the child with the registration; until then it is 404.
        let response = child_api.edge_get(HOST, "/s.bin").await?;
        let code = response.status().as_u16();
        let upstream_error = response.headers().get("x-precache-upstream-error").cloned();
        let got = response.bytes().await?;
        if code != 404 || Instant::now() > deadline {
            break (code, got, upstream_error);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (code, got),
        (200, body.clone()),
        "{upstream_error:?}; the child's log:\n{}",
        child.log()
    );
    assert_eq!(origin.origin.count("/s.bin"), 1);
    assert_eq!(origin.server_names(), vec![Some(ORIGIN_NAME.to_string())]);
    // The parent holds it now: its own players are served without the origin.
    let (code, cache, got) = get(&api.at_edge(&parent.edge), "/s.bin").await?;
    assert_eq!((code, cache.as_str(), got), (200, "HIT", body));
    assert_eq!(origin.origin.count("/s.bin"), 1);
    Ok(())
}

fn edge_args(control: &str, name: &str, join_token: &str) -> Vec<String> {
    vec![
        "--control".into(),
        control.into(),
        "--name".into(),
        name.into(),
        "--join-token".into(),
        join_token.into(),
    ]
}

async fn create_edge(api: &Api, admin: &str, name: &str, parent: Value) -> Result<String, Error> {
    let reply = api
        .call(
            Method::POST,
            "/cdn_api/edges",
            Some(admin),
            Some(json!({"name": name, "parent": parent})),
        )
        .await?;
    reply.expect(201, 0)?;
    Ok(reply.get("join_token").as_str().unwrap_or("").to_string())
}

async fn wait_edges_up(api: &Api, admin: &str, names: &[&str]) -> Result<(), Error> {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = api
            .call(Method::GET, "/cdn_api/edges", Some(admin), None)
            .await?;
        let edges = reply.get("edges");
        let up = |name: &str| {
            edges.as_array().is_some_and(|list| {
                list.iter()
                    .any(|edge| edge["name"] == name && edge["state"] == "up")
            })
        };
        if names.iter().all(|name| up(name)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("edges not all up: {edges}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
