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
}
