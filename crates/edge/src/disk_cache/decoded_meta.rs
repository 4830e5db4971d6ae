//! Metas of hot objects kept decoded, so that a hit does not decompress and parse the stored
//! response header again (pingora keeps it zstd-compressed; decoding it was a tenth of a
//! small hit's CPU).
//!
//! `CacheMeta` cannot be cloned, so a hit rebuilds one: pingora's small internal record
//! (freshness, variance, times) is decoded as stored, and the kept response header is cloned
//! into it in place of an empty one.

use super::meta_file::SerializedMeta;
use super::ready_head::ReadyHead;
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// The response header of one stored meta, decoded.
pub(super) struct DecodedMeta {
    /// The stored meta this was decoded from: while the index holds this very `Arc`, the
    /// object's meta has not been rewritten (a revalidation or expiry installs a new one).
    serialized: Arc<SerializedMeta>,
    header: ResponseHeader,
    /// The head the edge's own hit path writes, when the response is plain enough for it.
    pub(super) ready: Option<Arc<ReadyHead>>,
}

impl DecodedMeta {
    /// Decodes `serialized` in full, once.
    pub(super) fn decode(serialized: &Arc<SerializedMeta>) -> Result<DecodedMeta> {
        let meta = CacheMeta::deserialize(&serialized.internal, &serialized.header)?;
        Ok(DecodedMeta {
            serialized: serialized.clone(),
            header: meta.response_header_copy(),
            ready: ReadyHead::of(&meta).map(Arc::new),
        })
    }

    /// Whether this is the decoding of `serialized`.
    pub(super) fn is_of(&self, serialized: &Arc<SerializedMeta>) -> bool {
        Arc::ptr_eq(&self.serialized, serialized)
    }

    /// A `CacheMeta` equal to a full decoding of the stored meta.
    pub(super) fn to_meta(&self) -> Result<CacheMeta> {
        let mut meta = CacheMeta::deserialize(&self.serialized.internal, empty_header()?)?;
        *meta.response_header_mut() = self.header.clone();
        Ok(meta)
    }
}

/// A serialized header with no fields, cheap to decode.
fn empty_header() -> Result<&'static [u8]> {
    static EMPTY: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    let empty = EMPTY.get_or_init(|| {
        let header = ResponseHeader::build(200, Some(0)).ok()?;
        let meta = CacheMeta::new(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, 0, 0, header);
        meta.serialize().ok().map(|(_, header)| header)
    });
    match empty {
        Some(bytes) => Ok(bytes),
        None => Error::e_explain(
            ErrorType::InternalError,
            "an empty header did not serialize",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_rebuilt_meta_equals_the_stored_one() {
        let mut header = ResponseHeader::build(200, None).expect("header");
        header.append_header("ETag", "\"v1\"").expect("field");
        header.append_header("x-Mixed-Case", "kept").expect("field");
        header.append_header("set-cookie", "a=1").expect("field");
        header.append_header("set-cookie", "b=2").expect("field");
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut meta = CacheMeta::new(created + Duration::from_secs(60), created, 5, 7, header);
        meta.set_variance([3; 16]);
        let (internal, header) = meta.serialize().expect("serialize");
        let serialized = Arc::new(SerializedMeta { internal, header });

        let first = CacheMeta::deserialize(&serialized.internal, &serialized.header).expect("full");
        let decoded = DecodedMeta::decode(&serialized).expect("decode");
        let rebuilt = decoded.to_meta().expect("rebuild");
        assert!(decoded.is_of(&serialized));
        assert!(!decoded.is_of(&Arc::new(SerializedMeta::clone(&serialized))));
        for meta in [&first, &rebuilt] {
            let (internal, header) = meta.serialize().expect("serialize");
            assert_eq!(internal, serialized.internal);
            assert_eq!(header, serialized.header);
            assert_eq!(meta.fresh_until(), created + Duration::from_secs(60));
            assert_eq!(meta.stale_if_error_sec(), 7);
            assert_eq!(meta.variance(), Some([3; 16]));
        }
        let wire = |meta: &CacheMeta| {
            let mut bytes = Vec::new();
            meta.response_header().header_to_h1_wire(&mut bytes);
            bytes
        };
        assert_eq!(wire(&rebuilt), wire(&first));
        let text = String::from_utf8(wire(&rebuilt)).expect("ascii");
        assert!(text.contains("x-Mixed-Case: kept"), "{text}");
    }
}
