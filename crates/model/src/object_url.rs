//! URLs of objects to prefetch or refresh, validated once at the API boundary.

use std::fmt;

/// The longest URL accepted, in bytes (API.md §3, `2005`).
pub const MAX_URL_BYTES: usize = 2048;

/// Why a URL was rejected. The message names the URL, so it can go straight into a `msg`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URL {url:?}: {reason}")]
pub struct UrlError {
    /// The URL as the client sent it (shortened when very long).
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// An absolute `http`/`https` URL of an object on some host. The host only *selects* a
/// registered domain; the edge never connects to it (it fetches from the domain's origin).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    normalized: String,
    host: String,
    path_and_query: String,
}

impl ObjectUrl {
    /// Validates a client-supplied URL: absolute `http`/`https`, no user info, no control
    /// characters, at most [`MAX_URL_BYTES`] bytes, with a host. The fragment is dropped.
    pub fn parse(text: &str) -> Result<ObjectUrl, UrlError> {
        let reject = |reason: &str| UrlError {
            url: shorten(text),
            reason: reason.to_string(),
        };
        if text.len() > MAX_URL_BYTES {
            return Err(reject(&format!("longer than {MAX_URL_BYTES} bytes")));
        }
        // Checked on the raw text: the URL parser silently strips tabs and newlines.
        if text.chars().any(char::is_control) {
            return Err(reject("contains control characters"));
        }
        if text.contains(' ') {
            return Err(reject("contains a space (percent-encode it as %20)"));
        }
        let parsed =
            url::Url::parse(text).map_err(|e| reject(&format!("not an absolute URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(reject("scheme must be http or https"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(reject("must not contain user info"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_)) => {
                return Err(reject(
                    "host must be a registered domain name, not an IP address",
                ))
            }
            None => return Err(reject("has no host")),
        };
        // `http://./x` has a host the parser accepts that is nothing once its dots are gone.
        if host.is_empty() {
            return Err(reject("has no host"));
        }
        let mut path_and_query = parsed.path().to_string();
        if let Some(query) = parsed.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        let mut without_fragment = parsed.clone();
        without_fragment.set_fragment(None);
        let normalized = without_fragment.to_string();
        // Percent-encoding grows non-ASCII text up to threefold, and the normalised form is what
        // is stored and sent to edges, which check the limit again.
        if normalized.len() > MAX_URL_BYTES {
            return Err(reject(&format!(
                "longer than {MAX_URL_BYTES} bytes once percent-encoded"
            )));
        }
        Ok(ObjectUrl {
            normalized,
            host,
            path_and_query,
        })
    }

    /// The URL as normalised by the parser (no fragment); duplicates are detected on this form.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// Lower-case host, which selects the registered domain.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Path and query, exactly what an edge is asked for and caches under.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

fn shorten(text: &str) -> String {
    const KEEP: usize = 120;
    if text.len() <= KEEP {
        return text.to_string();
    }
    let mut end = KEEP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_and_path() {
        let url = ObjectUrl::parse("http://HewenChina.com/static/images/news1.jpg?v=2#top")
            .expect("valid URL");
        assert_eq!(url.host(), "hewenchina.com");
        assert_eq!(url.path_and_query(), "/static/images/news1.jpg?v=2");
        assert_eq!(
            url.as_str(),
            "http://hewenchina.com/static/images/news1.jpg?v=2"
        );
    }

    #[test]
    fn rejects_what_api_md_lists() {
        let long = format!("http://a.com/{}", "x".repeat(MAX_URL_BYTES));
        for bad in [
            "ftp://a.com/x",
            "/relative/path",
            "http://user:pw@a.com/x",
            "http://a.com/x\ny",
            "http://a.com/\u{7f}",
            "http://10.0.0.1/x",
            "http://a.com/a b",
            long.as_str(),
        ] {
            assert!(ObjectUrl::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    /// Found by the `urls` fuzz target (docs/fuzzing.md): accepted, then stored and sent to
    /// edges in forms they could not use.
    #[test]
    fn rejects_what_the_fuzzer_found() {
        // A host of dots only: nothing once normalised.
        assert!(ObjectUrl::parse("https://./a/b?x=1&y=%20#frag").is_err());
        assert!(ObjectUrl::parse("http://../x").is_err());
        // 2,024 bytes as sent, 6,024 once percent-encoded: too long for the edge to re-parse.
        let long = format!("http://game.example.com/{}", "\u{e9}".repeat(1000));
        assert!(long.len() <= MAX_URL_BYTES);
        assert!(ObjectUrl::parse(&long).is_err());
        let fits = format!("http://game.example.com/{}", "\u{e9}".repeat(300));
        let url = ObjectUrl::parse(&fits).expect("1,824 bytes encoded");
        assert_eq!(ObjectUrl::parse(url.as_str()), Ok(url));
    }

    #[test]
    fn error_names_the_url() {
        let error = ObjectUrl::parse("ftp://a.com/x").expect_err("ftp is rejected");
        assert!(error.to_string().contains("ftp://a.com/x"));
    }
}
