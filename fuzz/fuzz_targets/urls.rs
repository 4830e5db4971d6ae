//! URL, domain and origin validation (`precache_model::{ObjectUrl, DomainName, Origin}`): no
//! panic, and whatever is accepted obeys the documented rules and re-parses to itself, since the
//! accepted form is what is stored, sent to edges and parsed again there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use precache_model::object_url::MAX_URL_BYTES;
use precache_model::{DomainName, ObjectUrl, Origin};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = ObjectUrl::parse(text) {
        check_object_url(text, &url);
    }
    if let Ok(domain) = DomainName::parse(text) {
        check_domain(&domain);
    }
    if let Ok(origin) = Origin::parse(text) {
        let again = Origin::parse(&origin.to_string());
        assert_eq!(
            again.as_ref(),
            Ok(&origin),
            "origin {origin} does not re-parse"
        );
        assert!(!origin.host().is_empty());
        assert!(!origin.host().contains(['@', '/', '?', '#']));
    }
});

fn check_object_url(text: &str, url: &ObjectUrl) {
    assert!(text.len() <= MAX_URL_BYTES);
    assert!(!text.chars().any(char::is_control) && !text.contains(' '));
    let normalized = url.as_str();
    assert!(
        normalized.len() <= MAX_URL_BYTES,
        "accepted URL normalises to {} bytes",
        normalized.len()
    );
    assert!(!normalized.chars().any(char::is_control) && !normalized.contains(' '));
    assert!(normalized.starts_with("http://") || normalized.starts_with("https://"));
    assert!(!normalized.contains('#'), "fragment kept in {normalized}");
    let again = ObjectUrl::parse(normalized)
        .unwrap_or_else(|e| panic!("{normalized:?} (from {text:?}) does not re-parse: {e}"));
    assert_eq!(&again, url, "{text:?} re-parses differently");
    let host = url.host();
    assert!(!host.is_empty() && !host.ends_with('.'));
    assert_eq!(host, host.to_ascii_lowercase());
    assert!(!host.contains(['@', ':', '/']), "host {host:?}");
    assert!(url.path_and_query().starts_with('/'));
    assert!(!url.path_and_query().contains('#'));
}

fn check_domain(domain: &DomainName) {
    let name = domain.as_str();
    assert!(!name.is_empty() && name.len() <= 253);
    assert_eq!(name, name.to_ascii_lowercase());
    let labels: Vec<&str> = name.split('.').collect();
    assert!(labels.len() >= 2);
    for label in &labels {
        assert!((1..=63).contains(&label.len()));
        assert!(label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert!(!label.starts_with('-') && !label.ends_with('-'));
    }
    assert!(!labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())));
    assert_eq!(DomainName::parse(name).as_ref(), Ok(domain));
    // Serde goes through the same validation (the domain table is JSON).
    let json = serde_json::to_string(domain).expect("a domain serialises");
    assert_eq!(
        serde_json::from_str::<DomainName>(&json).ok().as_ref(),
        Some(domain)
    );
}
