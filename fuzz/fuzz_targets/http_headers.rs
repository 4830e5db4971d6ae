//! What the edge reads from origins' and players' headers: `Vary` (`vary.rs`), the freshness
//! directives of `Cache-Control`/`CDN-Cache-Control` (`cache_control.rs`) and the storability and
//! freshness decision with its HTTP dates (`freshness.rs`). No panic; a variance does not depend
//! on how `Vary` spells or orders its names; a stored meta reads back as written.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pingora::cache::CacheMeta;
use pingora::http::{RequestHeader, ResponseHeader};
use precache_model::edge_protocol::CachePolicy;

/// The input is text shaped like a response and a request, so real headers are seeds:
///
/// ```text
/// 200 [auth] [ignore] [ttl=SECONDS]
/// Response-Field: value
/// ...
/// (empty line)
/// Request-Field: value
/// ```
struct Input {
    status: u16,
    response: Vec<(HeaderName, HeaderValue)>,
    request: Vec<(HeaderName, HeaderValue)>,
    authorization: bool,
    default_ttl_secs: Option<u64>,
    ignore_origin_no_cache: bool,
}

fn field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|b| *b == b':')?;
    let value = &line[colon + 1..];
    let value = value.strip_prefix(b" ").unwrap_or(value);
    Some((
        HeaderName::from_bytes(&line[..colon]).ok()?,
        HeaderValue::from_bytes(value.strip_suffix(b"\r").unwrap_or(value)).ok()?,
    ))
}

fn read(data: &[u8]) -> Input {
    let mut lines = data.split(|b| *b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut words = first.split_whitespace();
    let status = words.next().and_then(|w| w.parse().ok()).unwrap_or(200);
    let mut input = Input {
        status,
        response: Vec::new(),
        request: Vec::new(),
        authorization: false,
        default_ttl_secs: None,
        ignore_origin_no_cache: false,
    };
    for word in words {
        match word {
            "auth" => input.authorization = true,
            "ignore" => input.ignore_origin_no_cache = true,
            _ => input.default_ttl_secs = word.strip_prefix("ttl=").and_then(|t| t.parse().ok()),
        }
    }
    let mut in_request = false;
    for line in lines {
        if line.is_empty() || line == b"\r" {
            in_request = true;
            continue;
        }
        let target = if in_request {
            &mut input.request
        } else {
            &mut input.response
        };
        target.extend(field(line));
    }
    input
}

fuzz_target!(|data: &[u8]| {
    let input = read(data);
    let Ok(mut response) = ResponseHeader::build(input.status, None) else {
        return;
    };
    for (name, value) in input.response {
        let _ = response.append_header(name, value);
    }
    let Ok(mut request) = RequestHeader::build("GET", b"/x", None) else {
        return;
    };
    for (name, value) in input.request {
        let _ = request.append_header(name, value);
    }

    // Vary: the same names in another order and case select the same variant.
    let variance = precache_edge::fuzzing::vary_variance(&response.headers, &request);
    let mut respelled = http::HeaderMap::new();
    for value in response.headers.get_all(http::header::VARY).iter().rev() {
        let Ok(text) = value.to_str() else { continue };
        let names: Vec<String> = text
            .split(',')
            .rev()
            .map(|n| n.to_ascii_uppercase())
            .collect();
        if let Ok(value) = HeaderValue::from_str(&names.join(" ,")) {
            respelled.append(http::header::VARY, value);
        }
    }
    if response
        .headers
        .get_all(http::header::VARY)
        .iter()
        .all(|v| v.to_str().is_ok())
    {
        assert_eq!(
            precache_edge::fuzzing::vary_variance(&respelled, &request),
            variance,
            "Vary respelled changes the variant"
        );
    }

    // The strict directive reader: a lifetime it reads is digits only in the field.
    for field in ["cache-control", "cdn-cache-control"] {
        let lines: Vec<HeaderValue> = response.headers.get_all(field).iter().cloned().collect();
        if let Some(Some(seconds)) = precache_edge::fuzzing::shared_max_age(&lines) {
            let text = lines
                .iter()
                .filter_map(|l| l.to_str().ok())
                .collect::<Vec<_>>()
                .join(",")
                .to_ascii_lowercase();
            assert!(
                text.contains("max-age=") || text.contains("s-maxage="),
                "lifetime {seconds} read from {text:?}"
            );
        }
    }

    let policy = CachePolicy {
        default_ttl_secs: input.default_ttl_secs,
        ignore_origin_no_cache: input.ignore_origin_no_cache,
        ..CachePolicy::default()
    };
    if let Some(meta) =
        precache_edge::fuzzing::decide_freshness(&response, input.authorization, &policy)
    {
        // What the disk cache writes must read back, or every lookup of the object fails.
        let (internal, header) = meta.serialize().expect("a decided meta serialises");
        let again = CacheMeta::deserialize(&internal, &header).expect("a stored meta reads back");
        assert_eq!(again.fresh_until(), meta.fresh_until());
        assert_eq!(
            again.response_header().status,
            meta.response_header().status
        );
    }
});
