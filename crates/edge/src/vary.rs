//! `Vary` (RFC 9111 §4.1): which stored variant of a URL answers a request.
//!
//! The variance of a request is a hash of the values of the request headers the response's
//! `Vary` names. `Accept-Encoding` is normalised to the codings a cache can tell apart (`br`,
//! `gzip`, `zstd`, `deflate`), so that the thousands of browser spellings of "gzip, deflate,
//! br" share one variant instead of splitting the cache.

use pingora::cache::key::HashBinary;
use pingora::cache::VarianceBuilder;
use pingora::http::RequestHeader;

/// Codings told apart in `Accept-Encoding`, in a fixed order.
const CODINGS: [&str; 4] = ["br", "deflate", "gzip", "zstd"];

/// The variance key of `request` against a response with `response_headers`, or `None` when
/// the response does not vary.
pub(crate) fn variance(
    response_headers: &http::HeaderMap,
    request: &RequestHeader,
) -> Option<HashBinary> {
    let mut builder = VarianceBuilder::new();
    for name in vary_names(response_headers) {
        let value = request_value(request, &name);
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

/// The header names a response varies on, lowercased, without duplicates.
fn vary_names(response_headers: &http::HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = response_headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty() && name != "*")
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The request's value for one varied header, normalised; empty when the header is absent.
fn request_value(request: &RequestHeader, name: &str) -> Vec<u8> {
    let values = request.headers.get_all(name);
    if name == "accept-encoding" {
        let accepted: Vec<&str> = CODINGS
            .into_iter()
            .filter(|coding| {
                values.iter().any(|value| {
                    value
                        .to_str()
                        .unwrap_or("")
                        .split(',')
                        .any(|item| accepts(item, coding))
                })
            })
            .collect();
        return accepted.join(",").into_bytes();
    }
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Whether one `Accept-Encoding` item accepts `coding` (a `q=0` refuses it).
fn accepts(item: &str, coding: &str) -> bool {
    let mut parts = item.split(';');
    let name = parts.next().unwrap_or("").trim();
    if !name.eq_ignore_ascii_case(coding) {
        return false;
    }
    !parts.any(|param| {
        let param = param.trim().to_ascii_lowercase();
        param
            .strip_prefix("q=")
            .and_then(|q| q.parse::<f32>().ok())
            .is_some_and(|q| q == 0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).expect("request");
        for (name, value) in headers {
            request
                .append_header(name.to_string(), *value)
                .expect("header");
        }
        request
    }

    fn vary(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::VARY, value.parse().expect("vary"));
        headers
    }

    #[test]
    fn no_vary_means_no_variance() {
        assert_eq!(variance(&http::HeaderMap::new(), &request(&[])), None);
    }

    #[test]
    fn accept_encoding_spellings_of_the_same_codings_share_a_variant() {
        let v = vary("Accept-Encoding");
        let chrome = variance(&v, &request(&[("accept-encoding", "gzip, deflate, br")]));
        let other = variance(
            &v,
            &request(&[("accept-encoding", "br;q=1.0, gzip, deflate")]),
        );
        let plain = variance(&v, &request(&[]));
        let refused = variance(&v, &request(&[("accept-encoding", "gzip;q=0")]));
        assert!(chrome.is_some());
        assert_eq!(chrome, other);
        assert_ne!(chrome, plain);
        assert_eq!(refused, plain);
    }

    #[test]
    fn other_headers_vary_on_their_exact_value() {
        let v = vary("accept-encoding, X-Client-Version");
        let a = variance(&v, &request(&[("x-client-version", "1.2")]));
        let b = variance(&v, &request(&[("x-client-version", "1.3")]));
        let a_again = variance(&v, &request(&[("x-client-version", "1.2")]));
        assert_ne!(a, b);
        assert_eq!(a, a_again);
    }
}
