//! Checking an uploaded certificate before it is stored: the chain and key parse, the key is the
//! leaf's, the leaf names the domain; and what the leaf says (subject, names, expiry, digest).
//!
//! No message here quotes the key or a parser's error about it: what an admin pasted as a key
//! may be a real key in the wrong format, and messages reach answers and logs.

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

use precache_store::CertificateFacts;

/// The facts of `cert_pem`'s leaf, once the chain and `key_pem` are fit to serve `domain`; or
/// what is wrong, in a sentence for the admin.
pub(crate) fn check(
    domain: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<CertificateFacts, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("cert_pem is not readable PEM: {error}"))?;
    let Some(leaf) = chain.first() else {
        return Err("cert_pem holds no certificate (a PEM \"CERTIFICATE\" block)".into());
    };
    let facts = leaf_facts(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        "key_pem holds no private key (a PEM block of PKCS#8, PKCS#1 or SEC1)".to_string()
    })?;
    let signing_key = any_supported_type(&key).map_err(|_| {
        "key_pem is not a key TLS can use (RSA, ECDSA P-256 or P-384, Ed25519)".to_string()
    })?;
    CertifiedKey::new(chain.clone(), signing_key)
        .keys_match()
        .map_err(|_| {
            "the private key does not match the certificate (the first certificate of cert_pem \
             must be the leaf, the one the key belongs to)"
                .to_string()
        })?;
    let server_name = ServerName::try_from(domain)
        .map_err(|_| format!("{domain} is not a name a certificate can hold"))?;
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|error| format!("the leaf certificate is not usable: {error}"))?;
    rustls::client::verify_server_name(&parsed, &server_name).map_err(|_| {
        format!(
            "the certificate does not name {domain}: its names are {}",
            match facts.sans.is_empty() {
                true => "none (no DNS subject alternative names)".to_string(),
                false => facts.sans.join(", "),
            }
        )
    })?;
    Ok(facts)
}

fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<CertificateFacts, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|error| format!("the first certificate of cert_pem does not parse: {error}"))?;
    let sans = match parsed.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(error) => {
            return Err(format!(
                "the certificate's alternative names do not parse: {error}"
            ))
        }
    };
    Ok(CertificateFacts {
        subject: parsed.subject().to_string(),
        sans,
        not_after: parsed.validity().not_after.timestamp(),
        sha256: hex::encode(Sha256::digest(leaf.as_ref())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(names: &[&str]) -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .expect("certificate");
        (certified.cert.pem(), certified.key_pair.serialize_pem())
    }

    #[test]
    fn a_wildcard_names_one_label_only() {
        let (cert, key) = leaf(&["*.example.com"]);
        let facts = check("game.example.com", &cert, &key).expect("one label");
        assert_eq!(facts.sans, ["*.example.com"]);
        assert_eq!(facts.sha256.len(), 64);
        let error = check("a.game.example.com", &cert, &key).expect_err("two labels");
        assert!(
            error.contains("does not name a.game.example.com"),
            "{error}"
        );
        assert!(check("example.com", &cert, &key).is_err());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_without_quoting_it() {
        let (cert, _) = leaf(&["game.example.com"]);
        let (_, other_key) = leaf(&["game.example.com"]);
        let error = check("game.example.com", &cert, &other_key).expect_err("mismatch");
        assert!(error.contains("does not match"), "{error}");
        let error = check(
            "game.example.com",
            &cert,
            "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        )
        .expect_err("garbage key");
        assert!(!error.contains("not base64"), "{error}");
        let error = check("game.example.com", "garbage", &other_key).expect_err("no certificate");
        assert!(error.contains("no certificate"), "{error}");
    }
}
