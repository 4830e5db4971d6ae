//! Entry points for the fuzz targets in `fuzz/` (docs/fuzzing.md): the meta format and the file
//! names of a cache directory, so a target can lay out directories that recovery must repair.

use std::io;
use std::path::{Path, PathBuf};

use super::layout::Layout;
use super::meta_file::{MetaRecord, SerializedMeta};

/// A meta file's bytes as the cache writes them (checksum included).
pub fn encode_meta(
    combined: &str,
    primary: &[u8],
    generation: u64,
    body_len: u64,
    meta: (Vec<u8>, Vec<u8>),
) -> io::Result<Vec<u8>> {
    MetaRecord {
        combined: combined.to_owned(),
        primary: primary.to_vec(),
        generation,
        body_len,
        meta: SerializedMeta {
            internal: meta.0,
            header: meta.1,
        },
    }
    .encode()
}

/// Whether `bytes` decode as a meta file, and if so its (combined, generation, body length).
pub fn decode_meta(bytes: &[u8]) -> Option<(String, u64, u64)> {
    MetaRecord::decode(bytes)
        .ok()
        .map(|record| (record.combined, record.generation, record.body_len))
}

/// Where the meta of `combined` lives in the cache directory `root`.
pub fn meta_path(root: &Path, combined: &str) -> PathBuf {
    Layout::new(root).meta_path(combined)
}

/// Where one generation of the body of `combined` lives in the cache directory `root`.
pub fn body_path(root: &Path, combined: &str, generation: u64) -> PathBuf {
    Layout::new(root).body_path(combined, generation)
}
