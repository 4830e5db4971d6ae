//! What a body file looked like when the cache published or recovered it, so that a file
//! changed behind the cache's back (truncated, overwritten, replaced) is noticed before it is
//! served.
//!
//! Any write, truncation or replacement changes the inode's change time (`ctime`), which no
//! program can set back, or its inode number; the length catches the rest. Media corruption
//! that bypasses the file system is not seen here.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// Identity and last change of one body file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BodyStamp {
    inode: u64,
    len: u64,
    changed_secs: i64,
    changed_nanos: i64,
}

impl BodyStamp {
    /// The stamp of a file as `metadata` describes it.
    pub(super) fn of(metadata: &Metadata) -> BodyStamp {
        BodyStamp {
            inode: metadata.ino(),
            len: metadata.len(),
            changed_secs: metadata.ctime(),
            changed_nanos: metadata.ctime_nsec(),
        }
    }

    /// The file's length.
    pub(super) fn len(&self) -> u64 {
        self.len
    }
}
