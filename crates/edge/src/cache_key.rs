//! The cache key of an object: host and path with query, framed so they cannot run together.

use pingora::cache::key::CacheHashKey;
use pingora::cache::CacheKey;

/// The primary key string: `"<host length>:<host><path and query>"`. The length prefix keeps
/// `a.com` + `b.com/x` and `a.comb.com` + `/x` apart, and the string starts with the host so a
/// path-prefix purge is a range scan.
pub fn primary_key(host: &str, path_and_query: &str) -> String {
    format!("{}:{host}{path_and_query}", host.len())
}

/// The cache key pingora-cache and the disk cache use for an object.
pub fn cache_key(host: &str, path_and_query: &str) -> CacheKey {
    CacheKey::new(primary_key(host, path_and_query), "")
}

/// `key.combined()` (the lower-case hex of its combined hash, which the disk cache's index is
/// keyed by), written from a table: pingora's formats byte by byte, a percent of a small hit.
pub fn combined_hex(key: &impl CacheHashKey) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(32);
    for byte in key.combined_bin() {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    text
}

/// What of a request's path and query goes into the key: the query only when the domain
/// caches by query string.
pub fn keyed_path(path_and_query: &str, cache_query_string: bool) -> &str {
    if cache_query_string {
        path_and_query
    } else {
        path_and_query
            .split_once('?')
            .map_or(path_and_query, |(path, _)| path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_boundary_is_unambiguous() {
        assert_ne!(
            primary_key("a.com", "b.com/x"),
            primary_key("a.comb.com", "/x")
        );
        assert_eq!(primary_key("a.com", "/x?y=1"), "5:a.com/x?y=1");
    }

    #[test]
    fn the_combined_hex_is_pingora_s() {
        for (host, path) in [
            ("a.com", "/x"),
            ("game.example.com", "/patch/v2/data.pak?v=1"),
        ] {
            let key = cache_key(host, path);
            assert_eq!(combined_hex(&key), key.combined());
        }
        let mut varied = cache_key("a.com", "/x");
        varied.set_variance_key([7; 16]);
        assert_eq!(combined_hex(&varied), varied.combined());
    }

    #[test]
    fn the_query_is_dropped_only_when_the_domain_says_so() {
        assert_eq!(keyed_path("/a.pak?v=2", true), "/a.pak?v=2");
        assert_eq!(keyed_path("/a.pak?v=2", false), "/a.pak");
        assert_eq!(keyed_path("/a.pak", false), "/a.pak");
    }
}
