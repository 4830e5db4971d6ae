//! Where the disk cache keeps its files, and how file names are parsed back at startup.
//!
//! ```text
//! <root>/objects/<c0c1>/<c2c3>/<combined>.meta                 the published meta
//! <root>/objects/<c0c1>/<c2c3>/<combined>.<generation>.body    the body it points at
//! <root>/tmp/<combined>.<id>.body                              a fill in progress
//! <root>/tmp/<combined>.<id>.meta                              a meta about to be renamed
//! ```
//!
//! `tmp/` and `objects/` share a file system so publishing is a `rename`. Bodies carry their
//! generation in the name so a new fill never overwrites the body an older meta (or an open
//! reader) still points at.

use std::path::{Path, PathBuf};

/// Length of the hex `combined` hash pingora uses to name an entry.
const COMBINED_LEN: usize = 32;

/// The paths of one cache directory.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    objects: PathBuf,
    tmp: PathBuf,
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
            objects: root.join("objects"),
            tmp: root.join("tmp"),
        }
    }

    /// The directory holding every published object.
    pub(super) fn objects_dir(&self) -> &Path {
        &self.objects
    }

    /// The directory holding files that are not published (yet).
    pub(super) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// The two-level shard directory of an entry; sharding keeps directories small enough that
    /// lookups and renames stay fast with millions of objects.
    pub(super) fn shard_dir(&self, combined: &str) -> PathBuf {
        let first = combined.get(0..2).unwrap_or("__");
        let second = combined.get(2..4).unwrap_or("__");
        self.objects.join(first).join(second)
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

    /// A meta file being written before it is renamed over the published one.
    pub(super) fn temp_meta_path(&self, combined: &str, id: u64) -> PathBuf {
        self.tmp.join(format!("{combined}.{id:016x}.meta"))
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
        assert_eq!(body.parent(), Some(Path::new("/c/objects/01/23")));
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
