//! Startup: bring a cache directory back to a consistent state and rebuild the index from it.
//!
//! Whatever a crash interrupted is undone here: unpublished temp files are deleted, metas that
//! cannot be read or whose body is missing or of the wrong size are deleted, and bodies no meta
//! points at are deleted. What remains is exactly the set of complete objects.

use super::body_stamp::BodyStamp;
use super::index::{Entry, Index};
use super::layout::{parse_object_file_name, Layout, ObjectFile};
use super::meta_file;
use super::recency_file;
use super::store::Store;
use super::sync::remove_if_exists;
use super::CacheLimits;
use pingora::cache::CacheMeta;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Opens the cache directory at `root`, creating it if needed, and evicts down to the budget.
pub(super) fn recover(root: &Path, limits: CacheLimits) -> io::Result<Store> {
    let layout = Layout::new(root);
    fs::create_dir_all(layout.objects_dir())?;
    fs::create_dir_all(layout.tmp_dir())?;
    clear_dir(layout.tmp_dir())?;

    // (combined, path, modified)
    let mut metas: Vec<(String, PathBuf, SystemTime)> = Vec::new();
    // (combined, generation) -> (path, stamp)
    let mut bodies: HashMap<(String, u64), (PathBuf, BodyStamp)> = HashMap::new();
    let mut max_generation = 0;
    for (file, metadata) in object_files(layout.objects_dir())? {
        let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        match parse_object_file_name(name) {
            Some(ObjectFile::Meta { combined }) if file == layout.meta_path(&combined) => {
                let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                metas.push((combined, file, modified));
            }
            Some(ObjectFile::Body {
                combined,
                generation,
            }) if file == layout.body_path(&combined, generation) => {
                // Only generations a meta claims count (below): an unclaimed body is deleted,
                // and a foreign one named `ffffffffffffffff` would overflow the next id.
                bodies.insert((combined, generation), (file, BodyStamp::of(&metadata)));
            }
            _ => tracing::warn!(path = %file.display(), "disk cache: ignoring unknown file"),
        }
    }

    // Least recently used first: the saved order, then what was published after it was saved.
    let ranks = recency_file::load(root)?;
    metas.sort_by_key(|(combined, _, modified)| match ranks.get(combined) {
        Some(rank) => (0, *rank, SystemTime::UNIX_EPOCH),
        None => (1, 0, *modified),
    });
    let mut index = Index::default();
    for (combined, path, _) in metas {
        match load_entry(&combined, &path, &mut bodies) {
            Ok(entry) => {
                max_generation = max_generation.max(entry.generation);
                index.insert(combined, entry);
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "disk cache: dropping unusable meta");
                remove_if_exists(&path)?;
            }
        }
    }
    // Whatever load_entry did not claim is an orphan: a fill that crashed between publishing
    // its body and its meta, an object replaced just before a crash, or a broken meta's body.
    for (path, _) in bodies.into_values() {
        tracing::info!(path = %path.display(), "disk cache: deleting unreferenced body");
        remove_if_exists(&path)?;
    }
    let store = Store::new(layout, index, max_generation, limits.size, limits.min_free);
    // The budget may have been lowered since the last run.
    store.evict_to_budget()?;
    Ok(store)
}

/// Reads one meta and claims its body from `bodies`.
fn load_entry(
    combined: &str,
    path: &Path,
    bodies: &mut HashMap<(String, u64), (PathBuf, BodyStamp)>,
) -> Result<Entry, String> {
    let record = meta_file::read(path).map_err(|e| e.to_string())?;
    let meta_len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if record.combined != combined {
        return Err(format!("meta is for {}", record.combined));
    }
    // New fills take ids above every generation in use; the last one leaves none.
    if record.generation == u64::MAX {
        return Err("generation out of range".into());
    }
    // A meta pingora can no longer parse would fail every lookup; better a miss.
    CacheMeta::deserialize(&record.meta.internal, &record.meta.header)
        .map_err(|e| e.to_string())?;
    let body_key = (combined.to_owned(), record.generation);
    let body_stamp = match bodies.get(&body_key) {
        Some((_, stamp)) if stamp.len() == record.body_len => {
            let stamp = *stamp;
            bodies.remove(&body_key);
            stamp
        }
        Some((_, stamp)) => {
            return Err(format!(
                "body has {} bytes, meta says {}",
                stamp.len(),
                record.body_len
            ))
        }
        None => return Err("body file missing".into()),
    };
    Ok(Entry {
        primary: Arc::from(String::from_utf8_lossy(&record.primary)),
        generation: record.generation,
        body_len: record.body_len,
        body_stamp,
        meta_len,
        meta: Arc::new(record.meta),
    })
}

/// Every file in the shard directories below `objects`, with its metadata.
fn object_files(objects: &Path) -> io::Result<Vec<(PathBuf, fs::Metadata)>> {
    let mut files = Vec::new();
    for shard in fs::read_dir(objects)? {
        let shard = shard?;
        if !shard.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(shard.path())? {
            let file = file?;
            let metadata = file.metadata()?;
            if metadata.is_file() {
                files.push((file.path(), metadata));
            }
        }
    }
    Ok(files)
}

/// Deletes everything inside `dir`.
fn clear_dir(dir: &Path) -> io::Result<()> {
    for item in fs::read_dir(dir)? {
        let item = item?;
        if item.file_type()?.is_dir() {
            fs::remove_dir_all(item.path())?;
        } else {
            remove_if_exists(&item.path())?;
        }
    }
    Ok(())
}
