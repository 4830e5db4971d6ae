//! Tests of the disk cache driven through pingora's `Storage` trait, as the proxy uses it.

use super::hit::READ_CHUNK;
use super::*;
use bytes::Bytes;
use futures_util::FutureExt;
use pingora::cache::key::CacheHashKey;
use pingora::cache::storage::MissFinishType;
use pingora::cache::trace::Span;
use pingora::cache::CacheEntryId;
use pingora::http::ResponseHeader;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

fn span() -> SpanHandle {
    Span::inactive().handle()
}

const UNLIMITED: CacheLimits = CacheLimits {
    size: u64::MAX,
    max_object: u64::MAX,
    min_free: 0,
};

fn open(dir: &Path) -> &'static DiskCache {
    open_limited(dir, UNLIMITED)
}

fn open_limited(dir: &Path, limits: CacheLimits) -> &'static DiskCache {
    Box::leak(Box::new(DiskCache::open(dir, limits).expect("open cache")))
}

/// Bytes of every file under `objects/`: what the budget must bound.
fn bytes_on_disk(dir: &Path) -> u64 {
    files_under(&dir.join("objects"))
        .iter()
        .map(|path| std::fs::metadata(path).map_or(0, |m| m.len()))
        .sum()
}

fn key(primary: &str) -> CacheKey {
    CacheKey::new(primary, "")
}

/// The stats of an empty cache opened with [`UNLIMITED`].
fn empty_stats() -> CacheStats {
    CacheStats {
        budget: u64::MAX,
        ..CacheStats::default()
    }
}

fn primary_of(key: &CacheKey) -> &str {
    std::str::from_utf8(key.primary_key()).expect("utf-8 primary")
}

/// Whole seconds, because pingora stores meta times at second resolution.
fn secs_from_now(secs: u64) -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(now + secs)
}

fn meta_with(fresh_for: u64, stale_while_revalidate: u32, tag: &str) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).expect("header");
    header
        .append_header("content-type", "image/jpeg")
        .expect("content-type");
    header.append_header("x-tag", tag).expect("x-tag");
    CacheMeta::new(
        secs_from_now(fresh_for),
        secs_from_now(0),
        stale_while_revalidate,
        0,
        header,
    )
}

fn meta() -> CacheMeta {
    meta_with(3600, 0, "v1")
}

fn same_meta(a: &CacheMeta, b: &CacheMeta) -> bool {
    a.serialize().expect("serialize") == b.serialize().expect("serialize")
}

/// A body whose bytes depend on their position, so misplaced chunks are caught.
fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

async fn fill(
    cache: &'static DiskCache,
    key: &CacheKey,
    meta: &CacheMeta,
    body: &[u8],
    chunk: usize,
) {
    let mut miss = cache
        .get_miss_handler(key, meta, &span())
        .await
        .expect("miss handler");
    for part in body.chunks(chunk) {
        miss.write_body(Bytes::copy_from_slice(part), false)
            .await
            .expect("write body");
    }
    match miss.finish().await.expect("finish") {
        MissFinishType::Created(size) => assert_eq!(size, body.len()),
        MissFinishType::Appended(..) => panic!("unexpected append"),
    }
}

async fn read_all(hit: &mut HitHandler) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = hit.read_body().await? {
        assert!(chunk.len() as u64 <= READ_CHUNK, "chunk of {}", chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn lookup(cache: &'static DiskCache, key: &CacheKey) -> Option<(CacheMeta, HitHandler)> {
    cache.lookup(key, &span()).await.expect("lookup")
}

async fn read_object(cache: &'static DiskCache, key: &CacheKey) -> Option<(CacheMeta, Vec<u8>)> {
    let (meta, mut hit) = lookup(cache, key).await?;
    Some((meta, read_all(&mut hit).await.expect("read body")))
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for item in std::fs::read_dir(&d).expect("read dir") {
            let path = item.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Files of one entry; polls because replaced and purged bodies are deleted in the background.
async fn wait_for_files(dir: &Path, combined: &str, expected: usize) -> Vec<std::path::PathBuf> {
    for _ in 0..200 {
        let files: Vec<_> = files_under(dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(combined))
            })
            .collect();
        if files.len() == expected {
            return files;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {expected} files for {combined} under {}",
        dir.display()
    );
}

#[tokio::test]
async fn miss_write_finish_then_hit_returns_identical_bytes_and_meta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("15:hewenchina.com/static/a.jpg?x=1");
    assert!(lookup(cache, &key).await.is_none());

    let meta = meta();
    let body = body(100_000, 1);
    fill(cache, &key, &meta, &body, 7_000).await;

    let (got_meta, mut hit) = lookup(cache, &key).await.expect("hit");
    assert!(same_meta(&meta, &got_meta));
    assert!(hit.can_seek());
    assert!(hit.should_count_access());
    assert_eq!(hit.get_eviction_weight(), body.len());
    assert_eq!(read_all(&mut hit).await.expect("read"), body);
    assert!(hit.read_body().await.expect("read after end").is_none());
    hit.finish(cache, &key, &span()).await.expect("finish hit");

    let info = cache.object_info(primary_of(&key)).expect("object info");
    assert_eq!(
        info,
        ObjectInfo {
            body_bytes: body.len() as u64,
            fresh_until: meta.fresh_until(),
            status: 200,
        }
    );
    assert_eq!(
        cache.stats(),
        CacheStats {
            stored_bytes: cache.stats().stored_bytes,
            budget: u64::MAX,
            evictions: 0,
            objects: 1,
            bytes: body.len() as u64,
            fills_in_progress: 0,
        }
    );
    assert!(files_under(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn empty_body_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/empty");
    let mut miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    miss.write_body(Bytes::new(), true).await.expect("eof");
    miss.finish().await.expect("finish");
    let (_, body) = read_object(cache, &key).await.expect("hit");
    assert!(body.is_empty());
    assert_eq!(
        cache.object_info(primary_of(&key)).map(|i| i.body_bytes),
        Some(0)
    );
}

#[tokio::test]
async fn partial_reader_started_mid_fill_gets_the_whole_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/partial");
    let meta = meta();
    let body = body(700_000, 2);
    let (first, rest) = body.split_at(100_000);

    let mut miss = cache
        .get_miss_handler(&key, &meta, &span())
        .await
        .expect("miss");
    // The request that started the fill reads its own write through the tag.
    let (own_meta, mut own) = cache
        .lookup_streaming_write(&key, miss.streaming_write_tag(), &span())
        .await
        .expect("lookup own write")
        .expect("own write found");
    assert!(same_meta(&meta, &own_meta));
    assert!(
        own.read_body().now_or_never().is_none(),
        "nothing written yet"
    );

    miss.write_body(Bytes::copy_from_slice(first), false)
        .await
        .expect("write");
    assert_eq!(cache.stats().fills_in_progress, 1);
    let (partial_meta, partial) = lookup(cache, &key).await.expect("partial hit");
    assert!(same_meta(&meta, &partial_meta));
    assert!(
        partial.can_seek(),
        "ranges of a fill are answered (issue 16)"
    );
    assert!(!partial.should_count_access());
    assert_eq!(partial.get_eviction_weight(), 0);

    let readers =
        [own, partial].map(|mut hit| tokio::spawn(async move { read_all(&mut hit).await }));
    for part in rest.chunks(30_000) {
        miss.write_body(Bytes::copy_from_slice(part), false)
            .await
            .expect("write");
        tokio::task::yield_now().await;
    }
    // pingora may finish without ever sending an explicit end of body.
    miss.finish().await.expect("finish");
    for reader in readers {
        assert_eq!(reader.await.expect("join").expect("read"), body);
    }
    assert_eq!(cache.stats().fills_in_progress, 0);
    let (_, stored) = read_object(cache, &key).await.expect("hit");
    assert_eq!(stored, body);
}

/// Issue 16: a range of a fill in progress gets its bytes as they arrive, including a range ahead
/// of the writer, which waits for them.
#[tokio::test]
async fn partial_reader_serves_ranges_of_a_fill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/ranged-fill");
    let body = body(700_000, 3);
    let mut miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    miss.write_body(Bytes::copy_from_slice(&body[..300_000]), false)
        .await
        .expect("write");

    let (_, mut behind) = lookup(cache, &key).await.expect("partial hit");
    behind
        .seek(1_000, Some(2_000))
        .expect("seek behind the writer");
    assert_eq!(
        read_all(&mut behind).await.expect("read"),
        body[1_000..2_000]
    );

    let (_, mut ahead) = lookup(cache, &key).await.expect("partial hit");
    ahead.seek(650_000, None).expect("seek ahead of the writer");
    assert!(
        ahead.read_body().now_or_never().is_none(),
        "a range ahead of the writer waits"
    );
    let (_, mut across) = lookup(cache, &key).await.expect("partial hit");
    across
        .seek(250_000, Some(400_000))
        .expect("seek across the writer");
    let readers =
        [ahead, across].map(|mut hit| tokio::spawn(async move { read_all(&mut hit).await }));
    for part in body[300_000..].chunks(50_000) {
        miss.write_body(Bytes::copy_from_slice(part), false)
            .await
            .expect("write");
        tokio::task::yield_now().await;
    }
    miss.finish().await.expect("finish");
    let [ahead, across] = readers;
    assert_eq!(ahead.await.expect("join").expect("read"), body[650_000..]);
    assert_eq!(
        across.await.expect("join").expect("read"),
        body[250_000..400_000]
    );
}

#[tokio::test]
async fn partial_reader_fails_when_the_writer_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/dropped");
    let mut miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    miss.write_body(Bytes::from_static(b"first part"), false)
        .await
        .expect("write");
    let (_, mut hit) = lookup(cache, &key).await.expect("partial hit");
    let reader = tokio::spawn(async move { read_all(&mut hit).await });
    tokio::task::yield_now().await;
    drop(miss);

    assert!(
        reader.await.expect("join").is_err(),
        "a truncated body must not end cleanly"
    );
    assert!(lookup(cache, &key).await.is_none());
    assert!(cache.object_info(primary_of(&key)).is_none());
    assert_eq!(cache.stats(), empty_stats());
    wait_for_files(dir.path(), &key.combined(), 0).await;
}

#[tokio::test]
async fn a_fill_dropped_after_its_last_chunk_but_before_finish_is_never_complete() {
    // pingora always calls finish() right after the last chunk; without it the fill failed,
    // and the last bytes (written by finish) are not in the file: readers must see an error.
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/eof-then-drop");
    let mut miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    let (_, mut hit) = lookup(cache, &key).await.expect("partial hit");
    miss.write_body(Bytes::from_static(b"whole body"), true)
        .await
        .expect("write");
    drop(miss);
    assert!(read_all(&mut hit).await.is_err());
    assert!(
        lookup(cache, &key).await.is_none(),
        "never finished, never published"
    );
}

#[tokio::test]
async fn small_writes_are_batched_and_a_reader_tails_each_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/batched");
    let mut miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    let (_, mut hit) = lookup(cache, &key).await.expect("partial hit");
    // Two batches' worth in 64 KiB chunks: the reader gets the first batch before the end.
    let chunk = vec![9u8; 64 * 1024];
    for _ in 0..4 {
        miss.write_body(Bytes::copy_from_slice(&chunk), false)
            .await
            .expect("write");
    }
    let first = hit.read_body().await.expect("read").expect("data");
    assert!(
        !first.is_empty(),
        "the first 256 KiB are readable before the fill ends"
    );
    for n in 0..4 {
        miss.write_body(Bytes::copy_from_slice(&chunk), n == 3)
            .await
            .expect("write");
    }
    miss.finish().await.expect("finish");
    let rest = read_all(&mut hit).await.expect("rest");
    assert_eq!(first.len() + rest.len(), 8 * 64 * 1024);
    assert_eq!(
        cache
            .object_info(primary_of(&key))
            .map(|info| info.body_bytes),
        Some(8 * 64 * 1024)
    );
}

#[tokio::test]
async fn lookup_prefers_the_fill_over_the_stored_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/refresh");
    let old = body(1000, 3);
    let new = body(2000, 4);
    fill(cache, &key, &meta_with(0, 0, "old"), &old, 100).await;
    let (_, mut old_hit) = lookup(cache, &key).await.expect("old hit");

    let new_meta = meta_with(3600, 0, "new");
    let mut miss = cache
        .get_miss_handler(&key, &new_meta, &span())
        .await
        .expect("miss");
    miss.write_body(Bytes::copy_from_slice(&new), true)
        .await
        .expect("write");
    let (meta, mut partial) = lookup(cache, &key).await.expect("partial hit");
    assert!(same_meta(&meta, &new_meta));
    // The reader follows the fill, whose last batch is written by finish().
    let reader = tokio::spawn(async move { read_all(&mut partial).await });
    miss.finish().await.expect("finish");
    assert_eq!(reader.await.expect("join").expect("read"), new);

    let (meta, stored) = read_object(cache, &key).await.expect("hit");
    assert!(same_meta(&meta, &new_meta));
    assert_eq!(stored, new);
    // The replaced body is deleted, but a reader that opened it still gets all of it.
    wait_for_files(dir.path(), &key.combined(), 2).await;
    assert_eq!(read_all(&mut old_hit).await.expect("read old"), old);
    assert_eq!(cache.stats().bytes, new.len() as u64);
}

#[tokio::test]
async fn reopen_finds_the_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key("5:a.com/persist");
    let meta = meta();
    let body = body(300_000, 5);
    fill(open(dir.path()), &key, &meta, &body, 65_536).await;

    let reopened = open(dir.path());
    let (got_meta, got_body) = read_object(reopened, &key).await.expect("hit after reopen");
    assert!(same_meta(&meta, &got_meta));
    assert_eq!(got_body, body);
    assert_eq!(reopened.stats().objects, 1);
    assert_eq!(reopened.stats().bytes, body.len() as u64);
    // The primary key string survives a restart, so purges by primary still work.
    assert_eq!(
        reopened
            .purge_objects("5:a.com/persist", false, PurgeAction::Delete)
            .expect("purge"),
        Removed {
            objects: 1,
            bytes: body.len() as u64,
            fills_stopped: 0,
        }
    );
}

#[tokio::test]
async fn open_cleans_up_temp_files_orphans_and_corrupt_metas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = key("5:a.com/good");
    let truncated = key("5:a.com/truncated");
    let body = body(5000, 6);
    {
        let cache = open(dir.path());
        fill(cache, &good, &meta(), &body, 1000).await;
        fill(cache, &truncated, &meta(), &body, 1000).await;
    }
    let layout = layout::Layout::new(dir.path());
    // Leftovers of an interrupted fill and meta rewrite.
    std::fs::write(layout.temp_body_path(&good.combined(), 999), b"partial").expect("write");
    std::fs::create_dir_all(dir.path().join("tmp/stray")).expect("mkdir");
    std::fs::write(dir.path().join("tmp/stray/file"), b"x").expect("write");
    // A body published just before a crash, before its meta.
    let orphan = layout.body_path(&good.combined(), 1_000_000);
    std::fs::write(&orphan, b"orphan").expect("write");
    // A meta that is not one.
    let garbage = "ffffffffffffffffffffffffffffffff";
    std::fs::create_dir_all(layout.shard_dir(garbage)).expect("mkdir");
    std::fs::write(layout.meta_path(garbage), b"garbage").expect("write");
    // A body damaged behind the cache's back.
    let damaged = files_under(&layout.shard_dir(&truncated.combined()))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "body"))
        .expect("truncated body");
    std::fs::write(&damaged, b"short").expect("truncate");

    let cache = open(dir.path());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    assert!(!dir.path().join("tmp/stray").exists());
    assert!(!orphan.exists());
    assert!(!layout.meta_path(garbage).exists());
    assert!(!damaged.exists());
    assert!(!layout.meta_path(&truncated.combined()).exists());
    assert!(lookup(cache, &truncated).await.is_none());
    assert_eq!(read_object(cache, &good).await.expect("good hit").1, body);
    assert_eq!(cache.stats().objects, 1);

    // New fills take generations above every one a meta claims; the orphan's went with it.
    fill(cache, &good, &meta(), &body, 1000).await;
    let files = wait_for_files(dir.path(), &good.combined(), 2).await;
    assert!(files.iter().all(|f| f != &orphan));
}

#[tokio::test]
async fn seek_serves_single_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/range");
    let body = body(600_000, 7);
    fill(cache, &key, &meta(), &body, 100_000).await;
    let (_, mut hit) = lookup(cache, &key).await.expect("hit");

    assert!(hit.seek(body.len(), None).is_err(), "start at the end");
    assert!(hit.seek(10_000_000, None).is_err(), "start past the end");
    assert!(hit.seek(10, Some(5)).is_err(), "end before start");

    hit.seek(5, None).expect("seek");
    assert_eq!(read_all(&mut hit).await.expect("read"), &body[5..]);
    hit.seek(4, Some(5)).expect("seek");
    assert_eq!(read_all(&mut hit).await.expect("read"), &body[4..5]);
    // `None` after a bounded seek means the end of the body again.
    hit.seek(300_000, None).expect("seek");
    assert_eq!(read_all(&mut hit).await.expect("read"), &body[300_000..]);
    hit.seek(599_990, Some(700_000))
        .expect("seek past end is clamped");
    assert_eq!(read_all(&mut hit).await.expect("read"), &body[599_990..]);
    hit.seek(100, Some(100)).expect("empty range");
    assert!(read_all(&mut hit).await.expect("read").is_empty());
    // Multipart uses the same seek.
    assert!(hit.can_seek_multipart());
    hit.seek_multipart(262_000, Some(263_000)).expect("seek");
    assert_eq!(
        read_all(&mut hit).await.expect("read"),
        &body[262_000..263_000]
    );
}

#[tokio::test]
async fn update_meta_persists_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/update");
    let body = body(1234, 8);
    fill(cache, &key, &meta_with(10, 0, "before"), &body, 100).await;

    let updated = meta_with(7200, 30, "after");
    assert!(cache
        .update_meta(&key, &updated, &span())
        .await
        .expect("update"));
    let (got, got_body) = read_object(cache, &key).await.expect("hit");
    assert!(same_meta(&got, &updated));
    assert_eq!(got_body, body);

    let reopened = open(dir.path());
    let (got, got_body) = read_object(reopened, &key).await.expect("hit after reopen");
    assert!(same_meta(&got, &updated));
    assert_eq!(got_body, body);
    assert_eq!(
        reopened
            .object_info(primary_of(&key))
            .map(|i| i.fresh_until),
        Some(updated.fresh_until())
    );

    let absent = super::tests::key("5:a.com/absent");
    assert!(!cache
        .update_meta(&absent, &updated, &span())
        .await
        .expect("update absent"));
}

#[tokio::test]
async fn purge_removes_the_object_and_its_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/purge");
    fill(cache, &key, &meta(), &body(4096, 9), 1000).await;
    let compact = key.to_compact();

    // This storage issues no entry ids, so an identified target is never one of its entries.
    let identified = CacheEntryKey::identified(compact.clone(), CacheEntryId::new(1));
    let outcome = cache
        .purge(
            PurgeTarget::Exact(&identified),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::NotFound);
    assert!(cache.object_info(primary_of(&key)).is_some());

    let outcome = cache
        .purge(
            PurgeTarget::Active(&compact),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::Purged(None));
    assert!(lookup(cache, &key).await.is_none());
    assert_eq!(cache.stats(), empty_stats());
    wait_for_files(dir.path(), &key.combined(), 0).await;

    let outcome = cache
        .purge(PurgeTarget::Active(&compact), PurgeType::Eviction, &span())
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::NotFound);
    assert!(
        lookup(open(dir.path()), &key).await.is_none(),
        "gone after reopen too"
    );
}

#[tokio::test]
async fn purge_during_a_fill_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/purge-mid-fill");
    let body = body(50_000, 10);
    let mut miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    miss.write_body(Bytes::copy_from_slice(&body[..20_000]), false)
        .await
        .expect("write");
    let outcome = cache
        .purge(
            PurgeTarget::Active(&key.to_compact()),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::Purged(None));
    assert!(
        lookup(cache, &key).await.is_none(),
        "the fill is no longer offered"
    );
    // The request that started the fill still streams its response to the end.
    let (_, mut own) = cache
        .lookup_streaming_write(&key, miss.streaming_write_tag(), &span())
        .await
        .expect("lookup own write")
        .expect("own write still found");
    miss.write_body(Bytes::copy_from_slice(&body[20_000..]), true)
        .await
        .expect("write");
    assert!(matches!(
        miss.finish().await.expect("finish"),
        MissFinishType::Created(0)
    ));
    assert_eq!(read_all(&mut own).await.expect("read"), body);
    assert!(
        lookup(cache, &key).await.is_none(),
        "a purged fill is not published"
    );
    assert_eq!(cache.stats(), empty_stats());
    wait_for_files(dir.path(), &key.combined(), 0).await;
}

#[tokio::test]
async fn purge_primary_removes_every_variant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let primary = "15:hewenchina.com/static/a.jpg?x=1";
    let plain = key(primary);
    let mut variant = key(primary);
    variant.set_variance_key(*b"gzip-variance-16");
    let other = key("15:hewenchina.com/static/a.jpg?x=10");
    assert_ne!(plain.combined(), variant.combined());
    fill(cache, &plain, &meta(), &body(1000, 11), 300).await;
    fill(cache, &variant, &meta(), &body(2000, 12), 300).await;
    fill(cache, &other, &meta(), &body(4000, 13), 300).await;

    assert_eq!(
        cache
            .purge_objects(primary, false, PurgeAction::Delete)
            .expect("purge"),
        Removed {
            objects: 2,
            bytes: 3000,
            fills_stopped: 0,
        }
    );
    assert!(lookup(cache, &plain).await.is_none());
    assert!(lookup(cache, &variant).await.is_none());
    assert!(lookup(cache, &other).await.is_some());
    wait_for_files(dir.path(), &plain.combined(), 0).await;
    wait_for_files(dir.path(), &variant.combined(), 0).await;
    assert_eq!(
        cache
            .purge_objects(primary, false, PurgeAction::Delete)
            .expect("purge"),
        Removed::default()
    );
    assert_eq!(cache.stats().objects, 1);
}

#[tokio::test]
async fn purge_prefix_removes_matching_objects_and_fills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let a = key("15:hewenchina.com/static/a.jpg");
    let b = key("15:hewenchina.com/static/b.jpg?v=2");
    let outside = key("15:hewenchina.com/staticx.jpg");
    let other_host = key("9:other.com/static/a.jpg");
    let filling = key("15:hewenchina.com/static/c.jpg");
    for (k, len) in [(&a, 100), (&b, 200), (&outside, 400), (&other_host, 800)] {
        fill(cache, k, &meta(), &body(len, 14), 64).await;
    }
    let mut miss = cache
        .get_miss_handler(&filling, &meta(), &span())
        .await
        .expect("miss");
    miss.write_body(Bytes::from_static(b"partial"), true)
        .await
        .expect("write");

    assert_eq!(
        cache
            .purge_objects("15:hewenchina.com/static/", true, PurgeAction::Delete)
            .expect("purge"),
        Removed {
            objects: 2,
            bytes: 300,
            fills_stopped: 1,
        }
    );
    assert!(matches!(
        miss.finish().await.expect("finish"),
        MissFinishType::Created(0)
    ));
    for gone in [&a, &b, &filling] {
        assert!(lookup(cache, gone).await.is_none());
        wait_for_files(dir.path(), &gone.combined(), 0).await;
    }
    assert!(lookup(cache, &outside).await.is_some());
    assert!(lookup(cache, &other_host).await.is_some());
    assert_eq!(
        cache
            .purge_objects("", true, PurgeAction::Delete)
            .expect("purge all"),
        Removed {
            objects: 2,
            bytes: 1200,
            fills_stopped: 0,
        }
    );
}

#[tokio::test]
async fn expire_makes_the_object_stale_but_keeps_the_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/expire");
    let body = body(10_000, 15);
    fill(cache, &key, &meta_with(3600, 60, "fresh"), &body, 1000).await;
    let compact = key.to_compact();

    let outcome = cache
        .expire(PurgeTarget::Active(&compact), &span())
        .await
        .expect("expire");
    assert_eq!(outcome, PurgeOutcome::Expired);
    let later = SystemTime::now() + Duration::from_secs(1);
    let (meta, stored) = read_object(cache, &key).await.expect("still stored");
    assert!(!meta.is_fresh(later));
    assert!(meta.serve_stale_while_revalidate(SystemTime::now()));
    assert_eq!(stored, body);

    let (meta, stored) = read_object(open(dir.path()), &key)
        .await
        .expect("after reopen");
    assert!(!meta.is_fresh(later), "expiry persists");
    assert_eq!(stored, body);

    let absent = super::tests::key("5:a.com/not-there").to_compact();
    let outcome = cache
        .expire(PurgeTarget::Active(&absent), &span())
        .await
        .expect("expire");
    assert_eq!(outcome, PurgeOutcome::NotFound);
}

#[tokio::test]
async fn multi_mib_object_streams_in_bounded_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/large.bin");
    let body = body(9 * 1024 * 1024 + 123, 16);

    let mut miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    let (_, mut follower) = lookup(cache, &key).await.expect("partial hit");
    let follower = tokio::spawn(async move { read_all(&mut follower).await });
    for part in body.chunks(50_000) {
        miss.write_body(Bytes::copy_from_slice(part), false)
            .await
            .expect("write");
    }
    miss.write_body(Bytes::new(), true).await.expect("eof");
    miss.finish().await.expect("finish");
    assert_eq!(follower.await.expect("join").expect("follow"), body);

    // read_all asserts every chunk is at most READ_CHUNK.
    let (_, stored) = read_object(cache, &key).await.expect("hit");
    assert_eq!(stored, body);
    assert_eq!(cache.stats().bytes, body.len() as u64);
}

#[tokio::test]
async fn writes_after_the_end_of_body_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/late");
    let mut miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    miss.write_body(Bytes::from_static(b"body"), true)
        .await
        .expect("write");
    assert!(miss
        .write_body(Bytes::from_static(b"late"), false)
        .await
        .is_err());
    miss.finish().await.expect("finish");
    assert_eq!(read_object(cache, &key).await.expect("hit").1, b"body");
}

#[tokio::test]
async fn unknown_streaming_write_tag_finds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/tag");
    let other = super::tests::key("5:a.com/other");
    let miss = cache
        .get_miss_handler(&key, &meta(), &span())
        .await
        .expect("miss");
    let tag = miss.streaming_write_tag().map(<[u8]>::to_vec);
    for (k, t) in [
        (&key, &b"bogus"[..]),
        (&other, tag.as_deref().unwrap_or_default()),
    ] {
        let found = cache
            .lookup_streaming_write(k, Some(t), &span())
            .await
            .expect("lookup");
        assert!(found.is_none());
    }
}

#[tokio::test]
async fn failed_write_fails_readers_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let key = key("5:a.com/disk-full");
    let (internal, header) = meta().serialize().expect("serialize");
    let store = cache.store.clone();
    let fill = store
        .start_fill(
            key.combined(),
            Arc::from("5:a.com/disk-full"),
            SerializedMeta { internal, header },
        )
        .expect("start fill");
    // Stand in for a full disk: the same fill, but its descriptor refuses writes.
    let read_only = Arc::new(fill::FillShared {
        id: fill.id,
        combined: fill.combined.clone(),
        primary: fill.primary.clone(),
        file: Arc::new(std::fs::File::open(&fill.temp_path).expect("open read-only")),
        temp_path: fill.temp_path.clone(),
        meta: fill.meta.clone(),
        state: fill.state.clone(),
    });
    lock(&store.index).add_fill(read_only.clone());
    drop(fill);
    let mut miss: MissHandler = Box::new(FillHandler::new(store, read_only));

    let (_, mut hit) = lookup(cache, &key).await.expect("partial hit");
    let reader = tokio::spawn(async move { read_all(&mut hit).await });
    // Small writes are batched, so the failure surfaces when the batch is written: here at
    // finish(), which writes the last batch and publishes.
    miss.write_body(Bytes::from_static(b"data"), false)
        .await
        .expect("buffered");
    miss.write_body(Bytes::from_static(b"more"), true)
        .await
        .expect("buffered");
    assert!(miss.finish().await.is_err());
    assert!(
        reader.await.expect("join").is_err(),
        "readers must see the failure"
    );
    assert!(lookup(cache, &key).await.is_none());
    assert_eq!(cache.stats(), empty_stats());
    wait_for_files(dir.path(), &key.combined(), 0).await;
}

#[tokio::test]
async fn the_least_recently_used_object_is_evicted_to_stay_within_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for three 100 KiB objects and their metas, not four.
    let limits = CacheLimits {
        size: 350 * 1024,
        max_object: 350 * 1024,
        min_free: 0,
    };
    let cache = open_limited(dir.path(), limits);
    let object = body(100 * 1024, 1);
    for name in ["a", "b", "c"] {
        fill(cache, &key(name), &meta(), &object, 64 * 1024).await;
    }
    // "a" is used, so "b" is now the least recently used.
    assert!(read_object(cache, &key("a")).await.is_some());
    fill(cache, &key("d"), &meta(), &object, 64 * 1024).await;

    assert!(lookup(cache, &key("b")).await.is_none(), "b was evicted");
    for name in ["a", "c", "d"] {
        assert!(lookup(cache, &key(name)).await.is_some(), "{name} stays");
    }
    let stats = cache.stats();
    assert_eq!(stats.objects, 3);
    assert_eq!(stats.evictions, 1);
    assert!(stats.stored_bytes <= limits.size, "{stats:?}");
    // Evicted bodies are deleted right away, so the files agree with the books.
    assert_eq!(bytes_on_disk(dir.path()), stats.stored_bytes);
}

#[tokio::test]
async fn the_recency_order_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let object = body(100 * 1024, 2);
    {
        let cache = open(dir.path());
        for name in ["a", "b", "c"] {
            fill(cache, &key(name), &meta(), &object, 64 * 1024).await;
        }
        assert!(read_object(cache, &key("a")).await.is_some());
        cache.save_recency().expect("save recency");
        // Published after the save: ranked by its meta file's age, as the newest.
        fill(cache, &key("d"), &meta(), &object, 64 * 1024).await;
    }
    // A smaller budget at the next start evicts in the saved order: b, then c.
    let stored_per_object = bytes_on_disk(dir.path()) / 4;
    let cache = open_limited(
        dir.path(),
        CacheLimits {
            size: stored_per_object * 2,
            max_object: stored_per_object,
            min_free: 0,
        },
    );
    assert!(
        lookup(cache, &key("b")).await.is_none(),
        "b was least recent"
    );
    assert!(lookup(cache, &key("c")).await.is_none(), "c was next");
    assert!(
        lookup(cache, &key("a")).await.is_some(),
        "a was used last before the save"
    );
    assert!(
        lookup(cache, &key("d")).await.is_some(),
        "d was published last"
    );
}

/// Found by the `disk_cache_recovery` fuzz target (docs/fuzzing.md): a body file named with the
/// last generation made the next id overflow at start (a panic with overflow checks, ids wrapping
/// to 0 without), and a meta claiming it would have done the same.
#[tokio::test]
async fn a_body_or_meta_of_the_last_generation_does_not_stop_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kept = key("5:a.com/kept");
    let object = body(3000, 4);
    {
        let cache = open(dir.path());
        fill(cache, &kept, &meta(), &object, 1000).await;
    }
    let layout = layout::Layout::new(dir.path());
    let orphan_hash = "ffffffffffffffffffffffffffffffff";
    std::fs::create_dir_all(layout.shard_dir(orphan_hash)).expect("mkdir");
    let orphan = layout.body_path(orphan_hash, u64::MAX);
    std::fs::write(&orphan, b"orphan").expect("write");
    let claimed = key("5:a.com/claimed");
    let (internal, header) = meta().serialize().expect("serialize");
    let record = meta_file::MetaRecord {
        combined: claimed.combined(),
        primary: b"5:a.com/claimed".to_vec(),
        generation: u64::MAX,
        body_len: 5,
        meta: SerializedMeta { internal, header },
    };
    layout.ensure_shard(&claimed.combined()).expect("shard");
    let claimed_body = layout.body_path(&claimed.combined(), u64::MAX);
    std::fs::write(&claimed_body, b"12345").expect("write");
    std::fs::write(
        layout.meta_path(&claimed.combined()),
        record.encode().expect("encode"),
    )
    .expect("write");

    let cache = open(dir.path());
    assert!(!orphan.exists() && !claimed_body.exists());
    assert!(!layout.meta_path(&claimed.combined()).exists());
    assert_eq!(cache.stats().objects, 1);
    assert_eq!(read_object(cache, &kept).await.expect("kept").1, object);
    // Fills go on under new names.
    fill(cache, &claimed, &meta(), b"fresh", 5).await;
    assert_eq!(read_object(cache, &claimed).await.expect("hit").1, b"fresh");
}

/// Found by the `disk_cache_recovery` fuzz target: a recency file with a line that is not UTF-8
/// (damage, or a file that is not ours) made opening the cache fail, so the edge did not start.
#[tokio::test]
async fn a_recency_file_that_is_not_text_does_not_stop_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let object = body(100 * 1024, 3);
    {
        let cache = open(dir.path());
        for name in ["a", "b"] {
            fill(cache, &key(name), &meta(), &object, 64 * 1024).await;
        }
    }
    // The fuzzer's file (8a f6 b3 f6 b3 b3 f6 ff fe 5d b3), then the order "b" before "a".
    let mut recency = b"\x8a\xf6\xb3\xf6\xb3\xb3\xf6\xff\xfe\x5d\xb3\n".to_vec();
    for name in ["b", "a"] {
        recency.extend_from_slice(key(name).combined().as_bytes());
        recency.push(b'\n');
    }
    std::fs::write(dir.path().join("recency"), recency).expect("write");
    let stored_per_object = bytes_on_disk(dir.path()) / 2;
    let cache = open_limited(
        dir.path(),
        CacheLimits {
            size: stored_per_object,
            max_object: stored_per_object,
            min_free: 0,
        },
    );
    // The readable lines still rank: "b" was the least recently used.
    assert!(lookup(cache, &key("b")).await.is_none(), "b evicted first");
    assert!(lookup(cache, &key("a")).await.is_some(), "a kept");
}

/// A reader that opened a body just before a purge deleted it does not keep the descriptor
/// (which would hold the deleted file's blocks until the LRU dropped it): the purge's forget
/// came before the reader's insert, so the insert checks the index again.
#[tokio::test]
async fn a_body_purged_while_a_reader_opened_it_is_not_kept_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(dir.path());
    let object = key("raced");
    fill(cache, &object, &meta(), &body(64 * 1024, 9), 64 * 1024).await;
    let combined = object.combined();
    let (opened, _) = cache
        .store
        .open_decoded(&combined)
        .expect("open")
        .expect("stored");
    assert!(cache.store.holds_open(&combined), "a hit keeps it open");
    // The purge runs between the reader's look at the index and its insert.
    cache.store.remove_key(&combined).expect("purge");
    assert!(!cache.store.holds_open(&combined));
    cache.store.remember_open(&combined, opened);
    assert!(
        !cache.store.holds_open(&combined),
        "the purged body's descriptor was kept"
    );
    // A current object is kept as before.
    fill(cache, &object, &meta(), &body(64 * 1024, 10), 64 * 1024).await;
    cache
        .store
        .open_decoded(&combined)
        .expect("open")
        .expect("stored");
    assert!(cache.store.holds_open(&combined));
}
