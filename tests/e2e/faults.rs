//! Fault injection (issue 13): a full disk under the data dir, PostgreSQL restarted under load,
//! cache files damaged behind the edge's back, and origins that trickle or never finish.
//! `docs/reliability.md` says what precache does in each case.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;

use crate::support::client::url;
use crate::support::origin::large_bytes;
use crate::support::pg_cluster::PgCluster;
use crate::support::server::Options;
use crate::support::stalling_origin::{body_byte, StallingOrigin, ANNOUNCED_LEN};
use crate::support::{Api, Behavior, Origin, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HOST: &str = "faults.example.com";

/// How one `GET` through the edge ended.
#[derive(Debug)]
enum Fetched {
    /// The whole body, as announced, with this `X-Cache`.
    Complete(String, Bytes),
    /// The response failed or was cut short: an error the player can see.
    #[allow(dead_code)] // Read only when a failure message shows it.
    Failed(String),
}

/// `GET` on the edge, read to the end within `limit` (a hang fails the test).
async fn fetch(api: &Api, path: &str, limit: Duration) -> Result<Fetched, Error> {
    let attempt = async {
        let response = match api.edge_get(HOST, path).await {
            Ok(response) => response,
            Err(error) => return Fetched::Failed(error.to_string()),
        };
        let status = response.status().as_u16();
        let x_cache = response
            .headers()
            .get("x-cache")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        let announced = response.content_length();
        match response.bytes().await {
            Ok(body) if status == 200 && announced.is_none_or(|len| len == body.len() as u64) => {
                Fetched::Complete(x_cache, body)
            }
            Ok(body) => Fetched::Failed(format!("HTTP {status} with {} bytes", body.len())),
            Err(error) => Fetched::Failed(error.to_string()),
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| format!("GET {path} still running after {limit:?}").into())
}

/// Fails unless `fetched` is an error or exactly `expected`.
fn never_wrong(path: &str, fetched: &Fetched, expected: &[u8]) -> Result<(), Error> {
    match fetched {
        Fetched::Complete(x_cache, body) if body.as_ref() != expected => Err(format!(
            "GET {path} answered {} wrong bytes ({x_cache}); expected {}",
            body.len(),
            expected.len()
        )
        .into()),
        _ => Ok(()),
    }
}

/// Fetches until a `HIT` with exactly `expected` (the index repaired), within `limit`.
async fn until_hit(api: &Api, path: &str, expected: &[u8], limit: Duration) -> TestResult {
    let deadline = Instant::now() + limit;
    loop {
        let fetched = fetch(api, path, Duration::from_secs(20)).await?;
        never_wrong(path, &fetched, expected)?;
        if matches!(&fetched, Fetched::Complete(x_cache, _) if x_cache.starts_with("HIT")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("GET {path} never became a right HIT: {fetched:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every regular file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(path),
                Ok(kind) if kind.is_file() => found.push(path),
                _ => {}
            }
        }
    }
    found
}

/// The published body file holding exactly `body`, and its meta file beside it.
fn object_files(data_dir: &Path, body: &[u8]) -> Result<(PathBuf, PathBuf), Error> {
    for path in files_below(data_dir) {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("")
            .to_string();
        let unpublished = path
            .strip_prefix(data_dir)
            .is_ok_and(|inside| inside.components().any(|part| part.as_os_str() == "tmp"));
        if !name.ends_with(".body") || unpublished {
            continue;
        }
        if std::fs::read(&path)? == body {
            let combined = name.split('.').next().unwrap_or("");
            let meta = path.with_file_name(format!("{combined}.meta"));
            return Ok((path, meta));
        }
    }
    Err(format!("no body file of {} bytes found", body.len()).into())
}

/// (c) Files of the edge's cache are truncated, overwritten, deleted or replaced while it serves:
/// every answer is the origin's bytes or an error, and the object is fetched again and served
/// as a hit.
#[tokio::test]
async fn cache_files_damaged_behind_the_edge_are_never_served() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    let damages = ["truncated", "overwritten", "deleted", "bad-meta"];
    let mut bodies = Vec::new();
    for (n, damage) in damages.iter().enumerate() {
        let body = Bytes::from(large_bytes(n as u64 * 7_919, 200_000));
        origin.set(&format!("/{damage}.bin"), Behavior::Body(body.clone()));
        bodies.push(body);
    }
    let urls: Vec<String> = damages
        .iter()
        .map(|damage| url(HOST, &format!("/{damage}.bin")))
        .collect();
    let req_id = api.prefetch_ok(&token, &urls).await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(status["status"], "done", "{status}");
    // Each object is served once, so the edge holds its body open (a hit's later reads use
    // that descriptor, which outlives the damage).
    for (damage, body) in damages.iter().zip(&bodies) {
        until_hit(
            &api,
            &format!("/{damage}.bin"),
            body,
            Duration::from_secs(5),
        )
        .await?;
    }

    for (damage, body) in damages.iter().zip(&bodies) {
        let (body_file, meta_file) = object_files(dir.path(), body)?;
        match *damage {
            "truncated" => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&body_file)?
                    .set_len(body.len() as u64 / 2)?;
            }
            "overwritten" => {
                use std::os::unix::fs::FileExt;
                let file = std::fs::OpenOptions::new().write(true).open(&body_file)?;
                file.write_all_at(&[0x5a; 4096], 100_000)?;
            }
            "deleted" => std::fs::remove_file(&body_file)?,
            _ => std::fs::write(&meta_file, b"not a meta file at all")?,
        }
    }

    for (damage, body) in damages.iter().zip(&bodies) {
        let path = format!("/{damage}.bin");
        let first = fetch(&api, &path, Duration::from_secs(20)).await?;
        never_wrong(&path, &first, body)?;
        until_hit(&api, &path, body, Duration::from_secs(10)).await?;
        let fetches = origin.count(&path);
        if *damage == "bad-meta" {
            // The running edge answers from its index, whose copy of the meta is intact.
            assert_eq!(fetches, 1, "{path}: the body was fine");
        } else {
            assert_eq!(fetches, 2, "{path}: fetched again once, after the damage");
        }
    }

    // At the next start, the garbage meta is dropped (its object fetched again); everything
    // else is served as it is now.
    server.kill9();
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    for (damage, body) in damages.iter().zip(&bodies) {
        let path = format!("/{damage}.bin");
        let fetched = fetch(&api, &path, Duration::from_secs(20)).await?;
        never_wrong(&path, &fetched, body)?;
        until_hit(&api, &path, body, Duration::from_secs(10)).await?;
    }
    assert_eq!(
        origin.count("/bad-meta.bin"),
        2,
        "refetched after a restart"
    );
    assert_eq!(
        origin.count("/truncated.bin"),
        2,
        "served from the repaired cache"
    );
    Ok(())
}

/// (d) An origin that trickles a byte a second and one that stops after a few bytes without
/// closing: prefetch pairs fail at the deadline with a reason, players' responses are cut
/// within a bound, and nothing is cached truncated.
#[tokio::test]
async fn trickling_and_silent_origins_fail_at_their_deadlines() -> TestResult {
    let dir = tempfile::tempdir()?;
    let args = [
        "--origin-first-byte-timeout",
        "2s",
        "--origin-idle-timeout",
        "2s",
        "--origin-fetch-deadline",
        "4s",
        "--task-attempts",
        "2",
    ];
    let server = Server::start_with(dir.path(), Options::with_args(&args))?;
    let api = Api::new(&server);
    let origin = StallingOrigin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;

    let started = Instant::now();
    let req_id = api
        .prefetch_ok(
            &token,
            &[
                url(HOST, "/trickle/task.bin"),
                url(HOST, "/silent/task.bin"),
            ],
        )
        .await?;
    let status = api
        .wait_final(&token, &req_id, Duration::from_secs(60))
        .await?;
    assert_eq!(status["status"], "failed", "{status}");
    let error_of = |path: &str| {
        status["urls"]
            .as_array()
            .and_then(|urls| urls.iter().find(|entry| entry["url"] == url(HOST, path)))
            .and_then(|entry| entry["error"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let trickle_error = error_of("/trickle/task.bin");
    assert!(
        trickle_error.contains("fetch deadline of 4s") && trickle_error.contains("2 attempts"),
        "{trickle_error:?} in {status}"
    );
    let silent_error = error_of("/silent/task.bin");
    assert!(
        // The proxy's read timeout cuts the fetch, or the prefetch's own idle timer: either way
        // at the idle timeout, with a reason.
        (silent_error.contains("sent nothing for 2s") || silent_error.contains("broke after"))
            && silent_error.contains("2 attempts"),
        "{silent_error:?} in {status}"
    );
    // Two attempts of at most the deadline each, a backoff, and the bookkeeping.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(origin.count("/trickle/task.bin"), 2);
    assert_eq!(origin.count("/silent/task.bin"), 2);

    // Players: the response starts, then is cut within the deadline (or the idle timeout).
    for (path, bound) in [("/trickle/player.bin", 12), ("/silent/player.bin", 10)] {
        for round in 1..=2 {
            let asked = Instant::now();
            let fetched = fetch(&api, path, Duration::from_secs(bound)).await?;
            assert!(
                matches!(fetched, Fetched::Failed(_)),
                "GET {path}: {fetched:?}"
            );
            assert!(
                asked.elapsed() >= Duration::from_secs(1),
                "{path} cut early"
            );
            // Nothing truncated was cached: the second request goes to the origin again.
            assert_eq!(origin.count(path), round, "{path}: fetched again");
        }
    }
    // The prefetched paths were not cached either.
    let fetched = fetch(&api, "/trickle/task.bin", Duration::from_secs(12)).await?;
    assert!(matches!(fetched, Fetched::Failed(_)), "{fetched:?}");
    assert_eq!(origin.count("/trickle/task.bin"), 3);
    let expected: Vec<u8> = (0..ANNOUNCED_LEN).map(body_byte).collect();
    assert!(!expected.is_empty());
    Ok(())
}

/// Runs the server in a mount namespace of its own, with its data dir on a `size` tmpfs that
/// vanishes with it. `None` (with the reason printed) when this machine does not allow it.
fn on_small_tmpfs(dir: &Path, size: &str) -> Option<Vec<String>> {
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m tmpfs '{}'",
            dir.display()
        ))
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs in a mount namespace here ({}); the disk-full test needs root or CAP_SYS_ADMIN",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        Err(error) => {
            eprintln!("SKIPPED: cannot run unshare(1) ({error}); the disk-full test needs it");
            return None;
        }
    }
    Some(vec![
        "unshare".into(),
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        format!("mount -t tmpfs -o size={size} tmpfs \"$0\" && exec \"$@\""),
        dir.display().to_string(),
    ])
}

/// Writes `path` until the file system is full; the bytes written.
fn fill_disk(path: &Path) -> Result<u64, Error> {
    use std::io::Write;
    let mut ballast = std::fs::File::create(path)?;
    let chunk = vec![0xb5u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        match ballast.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(written)
}

/// (a) The data dir's disk fills while submissions arrive: they are refused with `5003` saying
/// so, what was accepted stays, the edge serves no truncated object, and once space returns the
/// server takes submissions again and finishes every task, without a restart.
#[tokio::test]
async fn a_full_disk_refuses_submissions_and_recovers_by_itself() -> TestResult {
    let dir = tempfile::tempdir()?;
    let Some(wrapper) = on_small_tmpfs(dir.path(), "48m") else {
        return Ok(());
    };
    let server = Server::start_with(
        dir.path(),
        Options {
            // SQLite in the data dir, whatever backend the rest of the suite runs on.
            database_url: Some(format!(
                "sqlite://{}",
                dir.path().join("precache.db").display()
            )),
            args: vec!["--cache-min-free".into(), "0".into()],
            wrapper,
            ..Options::default()
        },
    )?;
    // The tmpfs is visible through the server's own root.
    let inside = PathBuf::from(format!("/proc/{}/root", server.pid())).join(
        dir.path()
            .strip_prefix("/")
            .map_err(|_| "the temp dir is not absolute")?,
    );
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    const BIG: usize = 6 * 1024 * 1024;
    origin.set("/big.bin", Behavior::Large(BIG as u64));
    let mut accepted = Vec::new();
    let small_urls = |batch: usize| -> Vec<String> {
        (0..10)
            .map(|n| url(HOST, &format!("/small/{batch}/{n}.txt")))
            .collect()
    };
    for n in 0..3 {
        origin.set(
            &format!("/small/{n}/0.txt"),
            Behavior::Body(Bytes::from_static(b"small")),
        );
        accepted.push(api.prefetch_ok(&token, &small_urls(n)).await?);
    }

    let ballast = inside.join("ballast");
    let written = fill_disk(&ballast)?;
    assert!(written > 0, "nothing written before the disk was full");

    // The edge: a fill that runs out of space is not published; the player gets the origin's
    // bytes or an error, never a short object as complete.
    let big = large_bytes(0, BIG);
    for _ in 0..2 {
        let fetched = fetch(&api, "/big.bin", Duration::from_secs(30)).await?;
        never_wrong("/big.bin", &fetched, &big)?;
        assert!(
            !matches!(&fetched, Fetched::Complete(x_cache, _) if x_cache.starts_with("HIT")),
            "a hit on a disk too full to hold the object: {fetched:?}"
        );
    }

    // Submissions until the database cannot take more: each is answered in time, ret 0 or
    // 5003 saying the disk is full.
    let mut refused = None;
    for batch in 3..2_000 {
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            api.prefetch(&token, &small_urls(batch)),
        )
        .await
        .map_err(|_| "a submission hung on a full disk")??;
        match reply.ret() {
            0 => accepted.push(reply.get("reqId").as_str().unwrap_or("").to_string()),
            5003 => {
                reply.expect(503, 5003)?;
                refused = Some(reply.msg().to_string());
                break;
            }
            _ => return Err(format!("a submission on a full disk: {}", reply.text()).into()),
        }
    }
    let refused = refused.ok_or("the database never reported the full disk")?;
    assert!(refused.contains("full"), "{refused:?}");
    // Reads still work: every accepted task is there.
    for req_id in &accepted {
        let reply = api
            .call(
                Method::GET,
                &format!("/cdn_api/prefetch/{req_id}"),
                Some(&token),
                None,
            )
            .await?;
        reply.expect(200, 0)?;
    }

    // Space comes back: no restart, the next submissions are taken and every task ends.
    std::fs::remove_file(&ballast)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let reply = api.prefetch(&token, &small_urls(5_000)).await?;
        if reply.ret() == 0 {
            break reply.get("reqId").as_str().unwrap_or("").to_string();
        }
        if Instant::now() > deadline {
            return Err(format!("still refused with space back: {}", reply.text()).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    accepted.push(after);
    for req_id in &accepted {
        api.wait_final(&token, req_id, Duration::from_secs(60))
            .await?;
    }
    until_hit(&api, "/big.bin", &big, Duration::from_secs(30)).await?;
    Ok(())
}

/// What the load sent and heard while PostgreSQL restarted.
#[derive(Default)]
struct LoadLog {
    /// (reqId, URL paths) of every submission answered ret 0, and when.
    accepted: Vec<(String, Vec<String>, Instant)>,
    /// URL paths of every submission answered 5003.
    refused: Vec<Vec<String>>,
}

/// (b) PostgreSQL is restarted while clients submit: answers are ret 0 or `5003` in time, the
/// control plane reconnects by itself, every accepted task ends `done`, and no (URL, edge) pair
/// runs twice: each URL of an accepted task reaches the origin exactly once (a second run would
/// revalidate the cached copy, which the origin counts too).
#[tokio::test]
async fn postgres_restarted_under_load_loses_and_repeats_nothing() -> TestResult {
    if !std::env::var("PRECACHE_TEST_BACKEND").is_ok_and(|backend| backend == "postgres") {
        eprintln!("SKIPPED: needs PRECACHE_TEST_BACKEND=postgres");
        return Ok(());
    }
    let Some(cluster) = PgCluster::start() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options {
            database_url: Some(cluster.url()),
            ..Options::default()
        },
    )?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;

    for n in 0..1_000 {
        for part in 0..3 {
            origin.set(
                &format!("/pg/{n}/{part}.bin"),
                Behavior::Body(Bytes::from(format!("object {n}/{part}"))),
            );
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(LoadLog::default()));
    let load = {
        let (api, token, stop, log) = (api.clone(), token.clone(), stop.clone(), log.clone());
        tokio::spawn(async move {
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                batch += 1;
                let paths: Vec<String> = (0..3).map(|n| format!("/pg/{batch}/{n}.bin")).collect();
                let urls: Vec<String> = paths.iter().map(|path| url(HOST, path)).collect();
                let reply =
                    tokio::time::timeout(Duration::from_secs(15), api.prefetch(&token, &urls))
                        .await
                        .map_err(|_| format!("submission {batch} hung"))?
                        .map_err(|error| format!("submission {batch}: {error}"))?;
                {
                    let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    match reply.ret() {
                        0 => {
                            let req_id = reply.get("reqId").as_str().unwrap_or("").to_string();
                            log.accepted.push((req_id, paths, Instant::now()));
                        }
                        5003 if reply.status == 503 => log.refused.push(paths),
                        _ => return Err(format!("submission {batch}: {}", reply.text())),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(), String>(())
        })
    };

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.stop_server();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_server();
    let restarted = Instant::now();
    // The load goes on until submissions are accepted again.
    let deadline = restarted + Duration::from_secs(30);
    loop {
        let back = log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .accepted
            .iter()
            .any(|(_, _, at)| *at > restarted);
        if back {
            break;
        }
        if Instant::now() > deadline || load.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await??;

    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    assert!(
        log.accepted.iter().any(|(_, _, at)| *at > restarted),
        "no submission was accepted after PostgreSQL came back"
    );
    assert!(
        !log.refused.is_empty(),
        "no submission was refused while PostgreSQL was down"
    );
    for (req_id, paths, _) in &log.accepted {
        let status = api
            .wait_final(&token, req_id, Duration::from_secs(60))
            .await?;
        assert_eq!(status["status"], "done", "{status}");
        for path in paths {
            assert_eq!(origin.count(path), 1, "{path} of {req_id}");
        }
    }
    // A refused submission may have committed just as the connection broke (its answer lost);
    // even then it runs once.
    for path in log.refused.iter().flatten() {
        assert!(origin.count(path) <= 1, "{path} fetched twice");
    }
    Ok(())
}
