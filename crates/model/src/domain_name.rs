//! Registered domain names (备案域名): the only hosts precache serves, prefetches and refreshes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A lower-case DNS host name, validated: labels of letters, digits and hyphens, at least two
/// labels, not an IP address. Registration is per exact host name: `www.a.com` and `a.com` are two
/// registrations, because an edge selects the origin by the exact `Host` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    /// Validates and normalises (lower case, no trailing dot) a host name.
    pub fn parse(text: &str) -> Result<DomainName, String> {
        let lowered = text.trim_end_matches('.').to_ascii_lowercase();
        if lowered.is_empty() {
            return Err("domain name is empty".into());
        }
        if lowered.len() > 253 {
            return Err(format!(
                "domain name {text:?} is longer than 253 characters"
            ));
        }
        let labels: Vec<&str> = lowered.split('.').collect();
        if labels.len() < 2 {
            return Err(format!(
                "domain name {text:?} needs at least two labels, e.g. example.com"
            ));
        }
        for label in &labels {
            let valid_chars = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if label.is_empty() || label.len() > 63 || !valid_chars {
                return Err(format!(
                    "domain name {text:?} has an invalid label {label:?} (letters, digits and hyphens, 1-63 long)"
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!(
                    "domain name {text:?} has a label starting or ending with '-'"
                ));
            }
        }
        if labels
            .iter()
            .all(|label| label.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("{text:?} is an IP address, not a domain name"));
        }
        Ok(DomainName(lowered))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DomainName {
    type Error = String;

    fn try_from(text: String) -> Result<DomainName, String> {
        DomainName::parse(&text)
    }
}

impl From<DomainName> for String {
    fn from(name: DomainName) -> String {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(
            DomainName::parse("HewenChina.com.").map(|d| d.0),
            Ok("hewenchina.com".into())
        );
        assert!(DomainName::parse("cdn-1.game.example.com").is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "127.0.0.1",
            "a b.com",
        ] {
            assert!(
                DomainName::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
