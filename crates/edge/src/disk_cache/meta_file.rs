//! The on-disk meta format: a small versioned binary record describing one published object.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "PCDCMETA"
//! 8       4     format version (u32 LE), currently 1
//! 12      8     generation (u64 LE): names the body file this meta points at
//! 20      8     body length in bytes (u64 LE)
//! 28      ...   four fields, each a u32 LE length followed by that many bytes:
//!               combined hash (hex), primary key, CacheMeta internal, CacheMeta header
//! end-8   8     FNV-1a 64 checksum (u64 LE) of every byte before it
//! ```
//!
//! All integers are little endian. Metas are replaced by write-to-temp, fsync, rename, so a
//! reader never sees a torn record; the checksum catches media corruption and foreign files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"PCDCMETA";
const VERSION: u32 = 1;
const FIXED_HEADER: usize = 8 + 4 + 8 + 8;
const CHECKSUM: usize = 8;
/// Upper bound on a meta file; real ones are a few hundred bytes (response headers), so
/// anything larger is garbage and must not make startup allocate without bound.
pub(super) const MAX_META_FILE: u64 = 4 * 1024 * 1024;

/// The two byte strings produced by `CacheMeta::serialize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SerializedMeta {
    /// pingora's internal meta (freshness, variance, ...).
    pub internal: Vec<u8>,
    /// The serialized response header.
    pub header: Vec<u8>,
}

/// One decoded meta file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MetaRecord {
    /// The entry's combined hash; must match the file name.
    pub combined: String,
    /// The primary key bytes given to `CacheKey::new`.
    pub primary: Vec<u8>,
    /// Which body file belongs to this meta.
    pub generation: u64,
    /// Exact length of that body file.
    pub body_len: u64,
    /// The pingora cache meta.
    pub meta: SerializedMeta,
}

impl MetaRecord {
    /// Encodes the record in the on-disk format.
    pub(super) fn encode(&self) -> io::Result<Vec<u8>> {
        let fields: [&[u8]; 4] = [
            self.combined.as_bytes(),
            &self.primary,
            &self.meta.internal,
            &self.meta.header,
        ];
        let len = FIXED_HEADER + fields.iter().map(|f| 4 + f.len()).sum::<usize>() + CHECKSUM;
        if len as u64 > MAX_META_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cache meta of {len} bytes is too large"),
            ));
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        for field in fields {
            // Cannot truncate: the whole record was checked against MAX_META_FILE above.
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field);
        }
        let sum = fnv1a64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// Decodes a record, rejecting anything that is not a complete, intact version-1 meta.
    pub(super) fn decode(bytes: &[u8]) -> io::Result<MetaRecord> {
        let body_end = bytes
            .len()
            .checked_sub(CHECKSUM)
            .filter(|end| *end >= FIXED_HEADER)
            .ok_or_else(|| invalid("meta file too short"))?;
        let (payload, sum) = bytes.split_at(body_end);
        if fnv1a64(payload).to_le_bytes() != sum {
            return Err(invalid("meta file checksum mismatch"));
        }
        let mut r = Reader(payload);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(invalid("not a disk cache meta file"));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(invalid(format!(
                "unsupported meta format version {version}"
            )));
        }
        let generation = r.u64()?;
        let body_len = r.u64()?;
        let combined = String::from_utf8(r.field()?.to_vec())
            .map_err(|_| invalid("combined hash is not UTF-8"))?;
        let primary = r.field()?.to_vec();
        let internal = r.field()?.to_vec();
        let header = r.field()?.to_vec();
        if !r.0.is_empty() {
            return Err(invalid("trailing bytes in meta file"));
        }
        Ok(MetaRecord {
            combined,
            primary,
            generation,
            body_len,
            meta: SerializedMeta { internal, header },
        })
    }
}

/// Reads and decodes a meta file.
pub(super) fn read(path: &Path) -> io::Result<MetaRecord> {
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells "exactly at the limit" from "over it".
    file.take(MAX_META_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_META_FILE {
        return Err(invalid("meta file too large"));
    }
    MetaRecord::decode(&bytes)
}

/// Writes a meta file in place. Not atomic and not fsynced on purpose: a meta is trusted only
/// after its checksum and its body's length check out (see `Store::publish`).
pub(super) fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(bytes)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// FNV-1a: tiny, dependency free, and plenty to detect corruption of a few hundred bytes.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(invalid("meta file truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn field(&mut self) -> io::Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> MetaRecord {
        MetaRecord {
            combined: "0123456789abcdef0123456789abcdef".into(),
            primary: b"15:hewenchina.com/static/a.jpg?x=1".to_vec(),
            generation: 7,
            body_len: 1 << 33,
            meta: SerializedMeta {
                internal: vec![1, 2, 3],
                header: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
            },
        }
    }

    #[test]
    fn round_trips() -> io::Result<()> {
        let bytes = record().encode()?;
        assert_eq!(MetaRecord::decode(&bytes)?, record());
        Ok(())
    }

    #[test]
    fn rejects_every_truncation_and_any_flipped_byte() -> io::Result<()> {
        let bytes = record().encode()?;
        for len in 0..bytes.len() {
            assert!(MetaRecord::decode(&bytes[..len]).is_err(), "len {len}");
        }
        for i in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 0x40;
            assert!(MetaRecord::decode(&corrupt).is_err(), "byte {i}");
        }
        Ok(())
    }
}
