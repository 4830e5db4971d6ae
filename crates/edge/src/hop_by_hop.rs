//! Hop-by-hop header fields (RFC 9110 §7.6.1): they describe one connection, so the edge
//! neither stores them with a cached response nor passes them from the origin to a player.

use http::header::{HeaderMap, HeaderName};
use pingora::http::ResponseHeader;

/// Fields that are hop-by-hop whatever `Connection` says. `Connection` and `Transfer-Encoding`
/// are not in it: pingora frames each downstream message itself and rewrites both.
const ALWAYS: [&str; 4] = ["keep-alive", "proxy-connection", "te", "upgrade"];

/// Every field `Connection` names, lower-cased.
fn named_by_connection(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Whether `name` is a hop-by-hop field of a message with these headers (`Connection`,
/// `Transfer-Encoding` and the fields they name included).
pub(crate) fn is_hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    name == http::header::CONNECTION
        || name == http::header::TRANSFER_ENCODING
        || ALWAYS.contains(&name.as_str())
        || named_by_connection(headers).contains(name)
}

/// Removes what must not reach the player from an origin's response; `Connection` and
/// `Transfer-Encoding` stay for pingora, which replaces them with its own framing.
pub(crate) fn strip_for_forwarding(response: &mut ResponseHeader) {
    for name in named_by_connection(&response.headers) {
        if name != http::header::TRANSFER_ENCODING {
            response.remove_header(&name);
        }
    }
    for name in ALWAYS {
        response.remove_header(name);
    }
}

/// Removes every hop-by-hop field from a response about to be stored: a hit replays none.
pub(crate) fn strip_for_storage(response: &mut ResponseHeader) {
    strip_for_forwarding(response);
    response.remove_header(&http::header::CONNECTION);
    response.remove_header(&http::header::TRANSFER_ENCODING);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(200, None).expect("response");
        for (name, value) in headers {
            response
                .append_header(name.to_string(), *value)
                .expect("header");
        }
        response
    }

    const ORIGIN: [(&str, &str); 9] = [
        ("connection", "X-Secret, close"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=77"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("upgrade", "h2c"),
        ("transfer-encoding", "chunked"),
        ("etag", "\"v1\""),
        ("cache-control", "max-age=60"),
    ];

    #[test]
    fn storage_keeps_only_end_to_end_fields() {
        let mut r = response(&ORIGIN);
        strip_for_storage(&mut r);
        let left: Vec<&str> = r.headers.keys().map(|name| name.as_str()).collect();
        assert_eq!(left, ["etag", "cache-control"]);
    }

    #[test]
    fn forwarding_leaves_framing_to_pingora() {
        let mut r = response(&ORIGIN);
        strip_for_forwarding(&mut r);
        assert!(r.headers.get("x-secret").is_none());
        assert!(r.headers.get("keep-alive").is_none());
        assert!(r.headers.get("transfer-encoding").is_some());
        assert!(is_hop_by_hop(
            &HeaderName::from_static("x-secret"),
            &response(&ORIGIN).headers
        ));
        assert!(!is_hop_by_hop(
            &HeaderName::from_static("etag"),
            &response(&ORIGIN).headers
        ));
    }
}
