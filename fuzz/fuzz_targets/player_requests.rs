//! What the edge's own hit path (`crates/edge/src/hit_path.rs`) reads and writes: any bytes as a
//! player's request head, and the head it writes for a stored response. No panic; a request it
//! takes is a complete `GET`/`HEAD` head over HTTP/1.1 (ending in a blank line) with one visible-ASCII `Host` and an
//! origin-form target, read the same from its own bytes; a ready head is a valid `200` response
//! head whose `Content-Length` is the one it states.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;

fuzz_target!(|data: &[u8]| {
    // The request: the bytes as they came off a connection.
    if let Some((head_len, head_only, host, target)) = precache_edge::fuzzing::plain_request(data) {
        assert!(head_len <= data.len());
        let head = &data[..head_len];
        // A blank line ends it; httparse (pingora's parser too) takes a bare LF for CRLF.
        assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"));
        // Empty lines before the request line are skipped (RFC 9112 §2.2).
        let request_line = &head[head.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count()..];
        assert!(request_line.starts_with(if head_only { b"HEAD " as &[u8] } else { b"GET " }));
        assert!(target.starts_with('/'));
        assert!(host.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
        let again = precache_edge::fuzzing::plain_request(head);
        assert_eq!(again, Some((head_len, head_only, host, target)));
    }

    // The response: the same bytes as header lines of a stored 200.
    let Ok(mut header) = ResponseHeader::build(200, None) else {
        return;
    };
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(name),
            http::header::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if header.append_header(name, value).is_err() {
            return;
        }
    }
    let now = std::time::SystemTime::now();
    let meta = CacheMeta::new(now, now, 0, 0, header);
    if let Some((head, content_length)) = precache_edge::fuzzing::ready_head(&meta) {
        let mut wire = head.clone();
        wire.extend_from_slice(b"\r\n");
        let lines = wire.iter().filter(|b| **b == b'\n').count();
        let mut fields = vec![httparse::EMPTY_HEADER; lines + 1];
        let mut response = httparse::Response::new(&mut fields);
        match response.parse(&wire) {
            Ok(httparse::Status::Complete(len)) => assert_eq!(len, wire.len()),
            other => panic!("a ready head that does not parse: {other:?}"),
        }
        assert_eq!(response.code, Some(200));
        let lengths: Vec<Option<u64>> = response
            .headers
            .iter()
            .filter(|field| field.name.eq_ignore_ascii_case("content-length"))
            .map(|field| std::str::from_utf8(field.value).ok()?.trim().parse().ok())
            .collect();
        assert_eq!(lengths, vec![Some(content_length)]);
    }
});
