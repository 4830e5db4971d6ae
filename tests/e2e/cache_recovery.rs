//! An edge restarted on a cache directory whose files were damaged or replaced while it was down
//! (issue 13, "Fuzzing"; docs/fuzzing.md): it starts, indexes only the objects whose meta is
//! intact and whose body has the length the meta says, deletes the rest, answers every damaged
//! object with a miss carrying the origin's bytes, and is whole again after the misses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::json;

use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The objects, each damaged in its own way while the server is down.
const PATHS: [&str; 8] = [
    "/intact.bin",
    "/short.bin",
    "/long.bin",
    "/no-body.bin",
    "/flipped-meta.bin",
    "/cut-meta.bin",
    "/empty-meta.bin",
    "/foreign-meta.bin",
];

fn body_of(path: &str) -> Bytes {
    // Distinct bytes per object, so an answer from another object's file would show.
    let seed = path
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    Bytes::from(
        (0..20_000u32)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect::<Vec<u8>>(),
    )
}

/// One published object's files, found from its meta (`disk_cache/meta_file.rs`'s format).
struct Files {
    meta: PathBuf,
    body: PathBuf,
}

/// (combined, generation, primary key) of a meta: magic, version, generation, body length,
/// then length-prefixed fields, the combined hash and the primary key first.
fn decode(bytes: &[u8]) -> Option<(String, u64, String)> {
    let generation = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?);
    let field = |at: usize| -> Option<(String, usize)> {
        let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let text = String::from_utf8(bytes.get(at + 4..at + 4 + len)?.to_vec()).ok()?;
        Some((text, at + 4 + len))
    };
    let (combined, next) = field(28)?;
    let (primary, _) = field(next)?;
    Some((combined, generation, primary))
}

/// The meta and body of every object under `cache/objects`, by primary key.
fn object_files(cache: &Path) -> Result<HashMap<String, Files>, Error> {
    let mut found = HashMap::new();
    for shard in std::fs::read_dir(cache.join("objects"))? {
        let shard = shard?.path();
        if !shard.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&shard)? {
            let meta = file?.path();
            if meta.extension().and_then(|e| e.to_str()) != Some("meta") {
                continue;
            }
            let bytes = std::fs::read(&meta)?;
            // A file that is no meta (a foreign one) is skipped.
            let Some((combined, generation, primary)) = decode(&bytes) else {
                continue;
            };
            let body = shard.join(format!("{combined}.{generation:016x}.body"));
            found.insert(primary, Files { meta, body });
        }
    }
    Ok(found)
}

fn primary(path: &str) -> String {
    format!("{}:{HOST}{path}", HOST.len())
}

fn metas_on_disk(cache: &Path) -> Result<usize, Error> {
    Ok(object_files(cache)?.len())
}

async fn get(api: &Api, path: &str) -> Result<(String, Bytes), Error> {
    let response = api.edge_get(HOST, path).await?;
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let x_cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((x_cache, response.bytes().await?))
}

async fn wait_for_objects(api: &Api, count: u64) -> Result<(), Error> {
    for _ in 0..250 {
        if api.edge_status().await?["objects"].as_u64() == Some(count) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("the edge never held {count} objects").into())
}

/// Damages the files of every object but the first, and lays foreign files beside them.
fn damage(cache: &Path) -> Result<(), Error> {
    let files = object_files(cache)?;
    let of = |path: &str| {
        files
            .get(&primary(path))
            .ok_or(format!("no files for {path}"))
    };
    let body = std::fs::read(&of("/short.bin")?.body)?;
    std::fs::write(&of("/short.bin")?.body, &body[..body.len() - 1])?;
    let mut body = std::fs::read(&of("/long.bin")?.body)?;
    body.extend_from_slice(b"appended");
    std::fs::write(&of("/long.bin")?.body, body)?;
    std::fs::remove_file(&of("/no-body.bin")?.body)?;
    let mut meta = std::fs::read(&of("/flipped-meta.bin")?.meta)?;
    let middle = meta.len() / 2;
    meta[middle] ^= 0x20;
    std::fs::write(&of("/flipped-meta.bin")?.meta, meta)?;
    let meta = std::fs::read(&of("/cut-meta.bin")?.meta)?;
    std::fs::write(&of("/cut-meta.bin")?.meta, &meta[..meta.len() / 2])?;
    std::fs::write(&of("/empty-meta.bin")?.meta, b"")?;
    // An intact meta of another object under this one's name.
    std::fs::copy(&of("/intact.bin")?.meta, &of("/foreign-meta.bin")?.meta)?;

    // Foreign files: a stray file, a meta-named file in a directory that is no shard, a body
    // of the highest generation that no meta claims, junk in tmp/ and a recency order that is
    // not text.
    let objects = cache.join("objects");
    std::fs::write(objects.join("README"), b"not the cache's")?;
    std::fs::create_dir_all(objects.join("zzz"))?;
    std::fs::write(
        objects.join("zzz/0123456789abcdef0123456789abcdef.meta"),
        b"x",
    )?;
    std::fs::create_dir_all(objects.join("fff"))?;
    let orphan = "f".repeat(32);
    std::fs::write(
        objects.join(format!("fff/{orphan}.ffffffffffffffff.body")),
        b"orphan",
    )?;
    std::fs::write(cache.join("tmp/junk.body"), b"junk")?;
    let mut recency = b"\xff\xfe not utf-8\n".to_vec();
    recency.extend_from_slice(format!("{orphan}\n").as_bytes());
    std::fs::write(cache.join("recency"), recency)?;
    Ok(())
}

#[tokio::test]
async fn a_damaged_cache_directory_is_repaired_and_never_serves_wrong_bytes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("edge/cache");
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let admin = api.admin().await?;
    api.create_user(&admin, "alice").await?;
    api.call(
        Method::POST,
        "/cdn_api/domains",
        Some(&admin),
        Some(json!({"domain": HOST, "origin": origin.url(), "owner": "alice"})),
    )
    .await?
    .expect(201, 0)?;
    for path in PATHS {
        origin.set(path, Behavior::Body(body_of(path)));
        let (x_cache, bytes) = get(&api, path).await?;
        assert_eq!((x_cache.as_str(), bytes), ("MISS", body_of(path)));
    }
    wait_for_objects(&api, PATHS.len() as u64).await?;
    server.terminate()?;

    damage(&cache)?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    // Indexed at start: the intact object only; the damaged ones' files are gone.
    assert_eq!(api.edge_status().await?["objects"], 1);
    assert_eq!(metas_on_disk(&cache)?, 1);
    assert!(std::fs::read_dir(cache.join("tmp"))?.next().is_none());
    let orphans = std::fs::read_dir(cache.join("objects/fff"))?.count();
    assert_eq!(orphans, 0, "the unclaimed body is deleted");

    let (x_cache, bytes) = get(&api, "/intact.bin").await?;
    assert_eq!((x_cache.as_str(), bytes), ("HIT", body_of("/intact.bin")));
    for path in &PATHS[1..] {
        let (x_cache, bytes) = get(&api, path).await?;
        assert_eq!(x_cache, "MISS", "{path} was damaged");
        assert!(bytes == body_of(path), "{path}: wrong bytes served");
        assert_eq!(origin.count(path), 2, "{path}");
    }
    assert_eq!(origin.count("/intact.bin"), 1);
    wait_for_objects(&api, PATHS.len() as u64).await?;

    // Repaired for good: after another restart every object is a hit with its own bytes.
    server.terminate()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    assert_eq!(api.edge_status().await?["objects"], PATHS.len());
    for path in PATHS {
        let (x_cache, bytes) = get(&api, path).await?;
        assert_eq!(x_cache, "HIT", "{path}");
        assert!(bytes == body_of(path), "{path}: wrong bytes served");
    }
    Ok(())
}
