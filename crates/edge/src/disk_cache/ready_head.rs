//! A stored response's head, ready for the wire, for the edge's own hit path (`hit_path.rs`):
//! built once per stored meta, beside its decoded header, so that a hit on a hot object writes
//! bytes instead of copying, filtering and serialising a `ResponseHeader`.
//!
//! Only the plainest stored responses get one: `200` with a `Content-Length` and a `Date`, no
//! `Vary` (variants need the request's fields) and no fields the edge sets per answer. Anything
//! else is answered by pingora's proxy, as before.

use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use pingora::cache::CacheMeta;

/// Fields the answer sets itself (pingora's hit path inserts or removes them, whatever the
/// origin sent): they are left out of the stored part.
const SET_PER_ANSWER: [&str; 6] = [
    "age",
    // pingora answers every 200 it could serve in ranges with `Accept-Ranges: bytes`.
    "accept-ranges",
    "x-cache",
    "x-request-id",
    "connection",
    // Binds CDN tiers only; players never see it (see `proxy.rs`).
    crate::freshness::CDN_CACHE_CONTROL,
];

/// The stored part of a `200` answer and what decides whether it may be used.
pub(crate) struct ReadyHead {
    /// `HTTP/1.1 200 OK` and the stored fields, each line ending in CRLF; the answer's own
    /// fields and the blank line follow.
    pub(crate) head: Bytes,
    /// The body's length as `Content-Length` says it.
    pub(crate) content_length: u64,
    fresh_until: SystemTime,
    /// What `Age` counts from (pingora's `CacheMeta::epoch`).
    epoch: SystemTime,
}

impl ReadyHead {
    /// The ready head of `meta`, if its response is one the hit path may answer.
    pub(crate) fn of(meta: &CacheMeta) -> Option<ReadyHead> {
        let header = meta.response_header();
        let headers = &header.headers;
        if header.status != http::StatusCode::OK
            || meta.variance().is_some()
            || headers.contains_key(http::header::VARY)
            || headers.contains_key(http::header::TRANSFER_ENCODING)
            || !headers.contains_key(http::header::DATE)
        {
            return None;
        }
        let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
        let content_length = match (lengths.next(), lengths.next()) {
            (Some(value), None) => {
                let digits = value.as_bytes().trim_ascii();
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?
            }
            _ => return None,
        };
        let mut stored = header.clone();
        for name in SET_PER_ANSWER {
            stored.remove_header(name);
        }
        let mut head = BytesMut::with_capacity(512);
        head.put_slice(b"HTTP/1.1 200 OK\r\n");
        stored.header_to_h1_wire(&mut head);
        head.put_slice(b"Accept-Ranges: bytes\r\n");
        Some(ReadyHead {
            head: head.freeze(),
            content_length,
            fresh_until: meta.fresh_until(),
            epoch: meta.epoch(),
        })
    }

    /// Whether the stored response is fresh at `now` (pingora's `CacheMeta::is_fresh`).
    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
        self.fresh_until >= now
    }

    /// The `Age` to send at `now`, in whole seconds (pingora's `CacheMeta::age`).
    pub(crate) fn age_secs(&self, now: SystemTime) -> u64 {
        now.duration_since(self.epoch).unwrap_or_default().as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;
    use std::time::Duration;

    fn meta(fields: &[(&str, &str)], status: u16) -> CacheMeta {
        let mut header = ResponseHeader::build(status, None).expect("header");
        for (name, value) in fields {
            header
                .append_header(name.to_string(), *value)
                .expect("field");
        }
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    #[test]
    fn a_plain_200_gets_a_head_without_the_fields_set_per_answer() {
        let meta = meta(
            &[
                ("Date", "Fri, 04 Dec 2026 22:20:45 GMT"),
                ("Content-Length", "1024"),
                ("X-Cache", "MISS from elsewhere"),
                ("Age", "7"),
                ("CDN-Cache-Control", "max-age=60"),
                ("ETag", "\"v1\""),
            ],
            200,
        );
        let ready = ReadyHead::of(&meta).expect("eligible");
        let text = String::from_utf8_lossy(&ready.head).to_string();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Date: Fri, 04 Dec 2026 22:20:45 GMT\r\n"),
            "{text}"
        );
        assert!(text.contains("ETag: \"v1\"\r\n"), "{text}");
        assert!(text.ends_with("Accept-Ranges: bytes\r\n"), "{text}");
        for gone in ["X-Cache", "Age", "CDN-Cache-Control"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert!(text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"));
        assert_eq!(ready.content_length, 1024);
        assert!(ready.is_fresh(SystemTime::now()));
        assert!(!ready.is_fresh(SystemTime::now() + Duration::from_secs(120)));
    }

    #[test]
    fn other_answers_are_left_to_the_proxy() {
        let date = ("Date", "Fri, 04 Dec 2026 22:20:45 GMT");
        let length = ("Content-Length", "3");
        for (fields, status) in [
            (vec![date, length], 404),
            (vec![date, length, ("Vary", "Accept-Encoding")], 200),
            (vec![date], 200),
            (vec![length], 200),
            (vec![date, ("Transfer-Encoding", "chunked")], 200),
            (vec![date, length, ("Content-Length", "4")], 200),
            (vec![date, ("Content-Length", "+3")], 200),
            (vec![date, ("Content-Length", "")], 200),
        ] {
            assert!(
                ReadyHead::of(&meta(&fields, status)).is_none(),
                "{status} {fields:?}"
            );
        }
    }
}
