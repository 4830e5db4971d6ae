//! The origin a registered domain is fetched from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An origin server: scheme, host and port, nothing else. Only an admin sets it (when registering
/// a domain), so this is the only place an edge ever connects to for that domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin {
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `http://host[:port]` (a trailing `/` is allowed; paths, queries and user info are not).
    pub fn parse(text: &str) -> Result<Origin, String> {
        let parsed =
            url::Url::parse(text).map_err(|e| format!("origin {text:?} is not a URL: {e}"))?;
        match parsed.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "origin {text:?}: https origins are not supported yet, use http://"
                ))
            }
            other => {
                return Err(format!(
                    "origin {text:?} has scheme {other:?}, expected http"
                ))
            }
        }
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
        let port = parsed.port_or_known_default().unwrap_or(80);
        Ok(Origin { host, port })
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
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
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
    fn rejects_paths_user_info_and_other_schemes() {
        for bad in [
            "ftp://a.com",
            "http://u:p@a.com",
            "http://a.com/x",
            "a.com",
            "http://a.com/?q",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
