//! The disk cache's recovery (`crates/edge/src/disk_cache/recovery.rs`): a cache directory
//! holding valid, corrupted, truncated, mismatched and foreign files (meta files, bodies, the
//! recency file, stray names) must open without a panic or an error, index exactly the objects
//! whose meta is intact and whose body has the length the meta says, and delete the rest.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pingora::cache::key::CacheHashKey;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use precache_edge::disk_cache::fuzzing::{body_path, decode_meta, encode_meta, meta_path};
use precache_edge::disk_cache::DiskCache;
use precache_edge::CacheLimits;

#[derive(Arbitrary, Debug)]
struct Input {
    objects: Vec<Object>,
    /// Files laid over the objects' (any name under a shard directory, under `objects/`, `tmp/`
    /// or the root).
    foreign: Vec<Foreign>,
    recency: Option<Recency>,
    /// A budget in bytes, else unlimited.
    budget: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct Object {
    /// Index into a few primary keys, so objects collide and replace each other.
    primary: u8,
    generation: u64,
    status: u16,
    fresh_secs: u32,
    body: Vec<u8>,
    /// Added to the body length the meta claims.
    claimed_delta: i8,
    /// A different generation for the body file than the meta names.
    body_generation: Option<u64>,
    meta: MetaDamage,
}

#[derive(Arbitrary, Debug)]
enum MetaDamage {
    Intact,
    Missing,
    Truncated(u16),
    Flipped(u16, u8),
    /// Named after another object's hash.
    ForAnother(u8),
    /// Valid framing and checksum around bytes that are no pingora meta.
    BadInner(Vec<u8>, Vec<u8>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Foreign {
    place: Place,
    name: String,
    contents: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Place {
    Shard(u8),
    Objects,
    Tmp,
    Root,
}

#[derive(Arbitrary, Debug)]
enum Recency {
    Lines(Vec<u8>),
    Raw(Vec<u8>),
}

fn primary(index: u8) -> String {
    format!("example.com/object/{}", index % 8)
}

fn combined(primary: &str) -> String {
    CacheKey::new(primary, "").combined()
}

fn pingora_meta(status: u16, fresh_secs: u32) -> Option<(Vec<u8>, Vec<u8>)> {
    let header = ResponseHeader::build(status, None).ok()?;
    let now = SystemTime::now();
    CacheMeta::new(
        now + Duration::from_secs(u64::from(fresh_secs)),
        now,
        0,
        0,
        header,
    )
    .serialize()
    .ok()
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let _ = fs::write(path, bytes);
}

fn lay_out(root: &Path, input: &Input) {
    for object in &input.objects {
        let primary = primary(object.primary);
        let hash = combined(&primary);
        let body_generation = object.body_generation.unwrap_or(object.generation);
        write(&body_path(root, &hash, body_generation), &object.body);
        let claimed =
            (object.body.len() as u64).wrapping_add_signed(i64::from(object.claimed_delta));
        let Some(inner) = pingora_meta(object.status, object.fresh_secs) else {
            continue;
        };
        let encoded = |hash: &str, inner| {
            encode_meta(hash, primary.as_bytes(), object.generation, claimed, inner).ok()
        };
        let (path, bytes) = match &object.meta {
            MetaDamage::Intact => (meta_path(root, &hash), encoded(&hash, inner)),
            MetaDamage::Missing => continue,
            MetaDamage::Truncated(len) => (
                meta_path(root, &hash),
                encoded(&hash, inner).map(|mut b| {
                    b.truncate(usize::from(*len) % (b.len() + 1));
                    b
                }),
            ),
            MetaDamage::Flipped(at, bits) => (
                meta_path(root, &hash),
                encoded(&hash, inner).map(|mut b| {
                    let at = usize::from(*at) % b.len();
                    b[at] ^= bits | 1;
                    b
                }),
            ),
            MetaDamage::ForAnother(other) => (
                meta_path(root, &combined(&crate::primary(*other))),
                encoded(&hash, inner),
            ),
            MetaDamage::BadInner(internal, header) => (
                meta_path(root, &hash),
                encoded(&hash, (internal.clone(), header.clone())),
            ),
            MetaDamage::Raw(raw) => (meta_path(root, &hash), Some(raw.clone())),
        };
        if let Some(bytes) = bytes {
            write(&path, &bytes);
        }
    }
    for file in &input.foreign {
        let name: String = file
            .name
            .chars()
            .filter(|c| *c != '/' && *c != '\0')
            .collect();
        if name.is_empty() || name == "." || name == ".." {
            continue;
        }
        let dir = match file.place {
            Place::Shard(shard) => root
                .join("objects")
                .join(format!("{:03x}", u16::from(shard) * 16)),
            Place::Objects => root.join("objects"),
            Place::Tmp => root.join("tmp"),
            Place::Root => root.to_path_buf(),
        };
        // Never over the cache's own directories: a file where a directory must be is an
        // operator's mistake that opening rightly refuses, not damage to recover from.
        let path = dir.join(&name);
        if path == root.join("objects") || path == root.join("tmp") {
            continue;
        }
        write(&path, &file.contents);
    }
    match &input.recency {
        Some(Recency::Lines(picks)) => {
            let lines: String = picks
                .iter()
                .map(|p| combined(&primary(*p)) + "\n")
                .collect();
            write(&root.join("recency"), lines.as_bytes());
        }
        Some(Recency::Raw(raw)) => write(&root.join("recency"), raw),
        None => {}
    }
}

/// The objects the directory holds intact, by meta path: (primary, body path, body length).
fn intact_objects(root: &Path) -> BTreeMap<PathBuf, (String, PathBuf, u64)> {
    let mut intact = BTreeMap::new();
    for index in 0..8 {
        let primary = primary(index);
        let hash = combined(&primary);
        let path = meta_path(root, &hash);
        let Ok(bytes) = fs::read(&path) else { continue };
        let Some((meta_hash, generation, body_len)) = decode_meta(&bytes) else {
            continue;
        };
        if meta_hash != hash {
            continue;
        }
        let body = body_path(root, &hash, generation);
        if fs::metadata(&body).is_ok_and(|m| m.is_file() && m.len() == body_len) {
            intact.insert(path, (primary, body, body_len));
        }
    }
    intact
}

fn files_under(dir: &Path, into: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, into);
        } else {
            into.insert(path);
        }
    }
}

fuzz_target!(|input: Input| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let root = dir.path().join("cache");
    lay_out(&root, &input);
    // Which objects are intact before opening; a BadInner meta is intact by this measure but
    // no pingora meta, so it is left out of what must be indexed.
    let intact = intact_objects(&root);
    let limits = CacheLimits {
        size: input.budget.map_or(u64::MAX, u64::from),
        max_object: u64::MAX,
        min_free: 0,
    };
    let cache = DiskCache::open(&root, limits)
        .unwrap_or_else(|e| panic!("a damaged cache directory does not open: {e}"));
    let stats = cache.stats();

    let mut remaining = BTreeSet::new();
    files_under(&root.join("objects"), &mut remaining);
    let mut remaining_tmp = BTreeSet::new();
    files_under(&root.join("tmp"), &mut remaining_tmp);
    assert!(
        remaining_tmp.is_empty(),
        "tmp/ not cleared: {remaining_tmp:?}"
    );

    // What is indexed is intact, and is exactly what is left of objects on disk.
    let mut indexed = 0;
    let mut indexed_bytes = 0;
    for (meta, (primary, body, body_len)) in &intact {
        if !remaining.contains(meta) {
            continue;
        }
        assert!(
            remaining.contains(body),
            "meta {meta:?} kept without its body"
        );
        let info = cache
            .object_info(primary)
            .unwrap_or_else(|| panic!("meta {meta:?} kept on disk but not indexed"));
        assert_eq!(
            info.body_bytes, *body_len,
            "indexed with a length its body does not have"
        );
        indexed += 1;
        indexed_bytes += body_len;
    }
    assert_eq!(
        stats.objects, indexed,
        "indexed objects that are not intact"
    );
    assert_eq!(stats.bytes, indexed_bytes);
    for path in &remaining {
        // A meta where the cache would look for it (foreign names elsewhere are left alone).
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(hash) = name.strip_suffix(".meta") else {
            continue;
        };
        let own_name =
            hash.len() == 32 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if own_name && meta_path(&root, hash) == *path {
            assert!(intact.contains_key(path), "damaged meta {path:?} kept");
        }
    }
    if input.budget.is_none() {
        // Unlimited: every intact object whose meta pingora can read is kept.
        for (meta, (primary, _, _)) in &intact {
            if cache.object_info(primary).is_none() {
                let bytes = fs::read(meta).ok();
                assert!(
                    bytes.is_none(),
                    "intact meta {meta:?} neither indexed nor deleted"
                );
            }
        }
    } else {
        assert!(stats.stored_bytes <= limits.size, "over budget after open");
    }
    drop(cache);
});
