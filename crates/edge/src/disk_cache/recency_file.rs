//! The saved least-recently-used order, so eviction keeps its memory across restarts.
//!
//! One line per object, least recently used first: its combined hash. Written whole to a temp
//! file and renamed over the old one, so a crash leaves the previous order, never a torn one.
//! Objects published after the last save are missing from it; recovery ranks them as the most
//! recent, by the age of their meta files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "recency";

fn path(root: &Path) -> PathBuf {
    root.join(FILE_NAME)
}

/// Saves `order` (least recently used first).
pub(super) fn save<'a>(root: &Path, order: impl Iterator<Item = &'a String>) -> io::Result<()> {
    let final_path = path(root);
    let temp_path = root.join(format!("{FILE_NAME}.new"));
    let mut out = BufWriter::new(File::create(&temp_path)?);
    for combined in order {
        out.write_all(combined.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    fs::rename(&temp_path, &final_path)
}

/// The saved rank of each object (0 = least recently used); empty when nothing was saved.
pub(super) fn load(root: &Path) -> io::Result<HashMap<String, usize>> {
    let file = match File::open(path(root)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    // The order only ranks objects for eviction: a line that is no object's name (the file was
    // damaged, or is not ours) ranks nothing, and must not keep the cache from opening.
    let mut ranks = HashMap::new();
    for (rank, line) in BufReader::new(file).split(b'\n').enumerate() {
        if let Ok(combined) = String::from_utf8(line?) {
            ranks.insert(combined, rank);
        }
    }
    Ok(ranks)
}
