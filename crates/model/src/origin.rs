//! The origin a registered domain is fetched from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An origin server: scheme, host and port, nothing else. Only an admin sets it (when registering
/// a domain), so this is the only place an edge ever connects to for that domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin {
    scheme: OriginScheme,
    host: String,
    port: u16,
}

/// How an edge talks to an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OriginScheme {
    /// Plain HTTP/1.1 over TCP (default port 80).
    Http,
    /// HTTP/1.1 over TLS, the origin's certificate verified (default port 443).
    Https,
}

impl OriginScheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginScheme::Http => "http",
            OriginScheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            OriginScheme::Http => 80,
            OriginScheme::Https => 443,
        }
    }
}

impl Origin {
    /// Parses `http://host[:port]` or `https://host[:port]` (a trailing `/` is allowed; paths,
    /// queries and user info are not).
    pub fn parse(text: &str) -> Result<Origin, String> {
        let parsed =
            url::Url::parse(text).map_err(|e| format!("origin {text:?} is not a URL: {e}"))?;
        let scheme = match parsed.scheme() {
            "http" => OriginScheme::Http,
            "https" => OriginScheme::Https,
            other => {
                return Err(format!(
                    "origin {text:?} has scheme {other:?}, expected http or https"
                ))
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!("origin {text:?} must not contain user info"));
        }
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "origin {text:?} must be scheme://host[:port] without a path"
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.to_string(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            Some(url::Host::Ipv6(address)) => format!("[{address}]"),
            None => return Err(format!("origin {text:?} has no host")),
        };
        let port = parsed.port().unwrap_or(scheme.default_port());
        Ok(Origin { scheme, host, port })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> OriginScheme {
        self.scheme
    }

    /// Whether the origin is reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == OriginScheme::Https
    }

    /// Host name or IP literal (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, ready for a resolver.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The origin's own name as a `Host` field: the host, and the port unless it is the
    /// scheme's default.
    pub fn host_field(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.clone()
        } else {
            self.authority()
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl TryFrom<String> for Origin {
    type Error = String;

    fn try_from(text: String) -> Result<Origin, String> {
        Origin::parse(&text)
    }
}

impl From<Origin> for String {
    fn from(origin: Origin) -> String {
        origin.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() {
        let origin = Origin::parse("http://127.0.0.1:9000").expect("valid origin");
        assert_eq!(origin.authority(), "127.0.0.1:9000");
        assert_eq!(origin.to_string(), "http://127.0.0.1:9000");
        assert_eq!(
            Origin::parse("http://origin.example.com/").map(|o| o.port()),
            Ok(80)
        );
    }

    #[test]
    fn parses_https_with_its_default_port() {
        let origin = Origin::parse("https://bucket.oss.example.com/").expect("valid origin");
        assert!(origin.is_tls());
        assert_eq!(origin.scheme(), OriginScheme::Https);
        assert_eq!(origin.authority(), "bucket.oss.example.com:443");
        assert_eq!(origin.host_field(), "bucket.oss.example.com");
        assert_eq!(origin.to_string(), "https://bucket.oss.example.com:443");
        assert_eq!(Origin::parse(&origin.to_string()), Ok(origin));

        let origin = Origin::parse("https://127.0.0.1:8443").expect("valid origin");
        assert_eq!(origin.port(), 8443);
        assert_eq!(origin.host_field(), "127.0.0.1:8443");
        assert_eq!(
            Origin::parse("https://[::1]").map(|o| o.authority()),
            Ok("[::1]:443".to_string())
        );
        // The scheme's default port is its own: 80 on https is a port like any other.
        let origin = Origin::parse("https://a.com:80").expect("valid origin");
        assert_eq!(
            (origin.port(), origin.host_field()),
            (80, "a.com:80".into())
        );
        let plain = Origin::parse("http://a.com:443").expect("valid origin");
        assert!(!plain.is_tls());
        assert_eq!(plain.to_string(), "http://a.com:443");
    }

    #[test]
    fn rejects_paths_user_info_and_other_schemes() {
        for bad in [
            "ftp://a.com",
            "http://u:p@a.com",
            "http://a.com/x",
            "a.com",
            "http://a.com/?q",
            "https://u@a.com",
            "https://a.com/bucket/",
            "https://a.com?q",
            "https://",
            "wss://a.com",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
