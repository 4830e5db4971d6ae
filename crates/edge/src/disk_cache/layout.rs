//! Where the disk cache keeps its files, and how file names are parsed back at startup.
//!
//! ```text
//! <root>/objects/<c0c1c2>/<combined>.meta                 the published meta
//! <root>/objects/<c0c1c2>/<combined>.<generation>.body    the body it points at
//! <root>/tmp/<combined>.<id>.body                         a fill in progress
//! ```
//!
//! `tmp/` and `objects/` share a file system so publishing is a `rename`. Bodies carry their
//! generation in the name so a new fill never overwrites the body an older meta (or an open
//! reader) still points at.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Hex characters of the `combined` hash that name an entry's shard directory.
const SHARD_CHARS: usize = 3;
/// Shard directories: 16 ^ SHARD_CHARS.
const SHARDS: usize = 4096;

/// Length of the hex `combined` hash pingora uses to name an entry.
const COMBINED_LEN: usize = 32;

/// The paths of one cache directory.
#[derive(Debug)]
pub(super) struct Layout {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    /// Which shard directories are known to exist, so each is created at most once.
    shards_made: Box<[AtomicBool]>,
}

/// A file found under `objects/`, recognised by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ObjectFile {
    /// `<combined>.meta`
    Meta { combined: String },
    /// `<combined>.<generation>.body`
    Body { combined: String, generation: u64 },
}

impl Layout {
    /// The layout rooted at `root`.
    pub(super) fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
            objects: root.join("objects"),
            tmp: root.join("tmp"),
            shards_made: (0..SHARDS).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The cache directory itself.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding every published object.
    pub(super) fn objects_dir(&self) -> &Path {
        &self.objects
    }

    /// The directory holding files that are not published (yet).
    pub(super) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// The shard directory of an entry: one level of 4,096 (10 million objects are ~2,500 per
    /// directory). One level, not nginx's two, because every directory is an inode allocation,
    /// which is slow on ext4 without a journal.
    pub(super) fn shard_dir(&self, combined: &str) -> PathBuf {
        self.objects
            .join(combined.get(0..SHARD_CHARS).unwrap_or("___"))
    }

    /// Makes sure the shard directory of `combined` exists; only the first call per shard and
    /// process touches the file system.
    pub(super) fn ensure_shard(&self, combined: &str) -> std::io::Result<()> {
        let made = combined
            .get(0..SHARD_CHARS)
            .and_then(|prefix| usize::from_str_radix(prefix, 16).ok())
            .and_then(|index| self.shards_made.get(index));
        if made.is_some_and(|made| made.load(Ordering::Relaxed)) {
            return Ok(());
        }
        std::fs::create_dir_all(self.shard_dir(combined))?;
        if let Some(made) = made {
            made.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The published meta of an entry.
    pub(super) fn meta_path(&self, combined: &str) -> PathBuf {
        self.shard_dir(combined).join(format!("{combined}.meta"))
    }

    /// The published body of one generation of an entry.
    pub(super) fn body_path(&self, combined: &str, generation: u64) -> PathBuf {
        self.shard_dir(combined)
            .join(format!("{combined}.{generation:016x}.body"))
    }

    /// The body file a fill streams into before it is published.
    pub(super) fn temp_body_path(&self, combined: &str, id: u64) -> PathBuf {
        self.tmp.join(format!("{combined}.{id:016x}.body"))
    }
}

/// Parses the name of a file under `objects/`; `None` for anything this cache did not write.
pub(super) fn parse_object_file_name(name: &str) -> Option<ObjectFile> {
    if let Some(combined) = name.strip_suffix(".meta") {
        return is_combined(combined).then(|| ObjectFile::Meta {
            combined: combined.to_owned(),
        });
    }
    let stem = name.strip_suffix(".body")?;
    let (combined, generation) = stem.split_once('.')?;
    if !is_combined(combined) || generation.len() != 16 {
        return None;
    }
    let generation = u64::from_str_radix(generation, 16).ok()?;
    Some(ObjectFile::Body {
        combined: combined.to_owned(),
        generation,
    })
}

fn is_combined(s: &str) -> bool {
    s.len() == COMBINED_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn names_round_trip() {
        let layout = Layout::new(Path::new("/c"));
        let body = layout.body_path(HASH, 42);
        let meta = layout.meta_path(HASH);
        assert_eq!(body.parent(), Some(Path::new("/c/objects/012")));
        let body_name = body.file_name().and_then(|n| n.to_str());
        let meta_name = meta.file_name().and_then(|n| n.to_str());
        assert_eq!(
            body_name.and_then(parse_object_file_name),
            Some(ObjectFile::Body {
                combined: HASH.to_owned(),
                generation: 42
            })
        );
        assert_eq!(
            meta_name.and_then(parse_object_file_name),
            Some(ObjectFile::Meta {
                combined: HASH.to_owned()
            })
        );
    }

    #[test]
    fn foreign_names_are_ignored() {
        for name in [
            "x.meta",
            "README",
            "0123456789ABCDEF0123456789abcdef.meta",
            "0123456789abcdef0123456789abcdef.12.body",
            "0123456789abcdef0123456789abcdef.000000000000002a.tmp",
        ] {
            assert_eq!(parse_object_file_name(name), None, "{name}");
        }
    }
}
