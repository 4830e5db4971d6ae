//! The cache key of an object: host and path with query, framed so they cannot run together.

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
    fn the_query_is_dropped_only_when_the_domain_says_so() {
        assert_eq!(keyed_path("/a.pak?v=2", true), "/a.pak?v=2");
        assert_eq!(keyed_path("/a.pak?v=2", false), "/a.pak");
        assert_eq!(keyed_path("/a.pak", false), "/a.pak");
    }
}
