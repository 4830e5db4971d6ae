//! TLS to players: the certificate of the domain a handshake names (SNI), among the domains of
//! the table that carry one, swapped in when a new table is installed.
//!
//! Handshakes read the current map under a read lock held for a hash lookup; installing a table
//! replaces the whole map, so connections already established keep the key they were given and
//! the next handshake sees the new one. An SNI with no certificate (or no SNI at all) gets
//! `None`, which makes rustls refuse the handshake: nothing of the request is read, so no origin
//! is contacted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::Gauge;
use parking_lot::{Mutex, RwLock};
use precache_model::edge_protocol::DomainCertificate;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// A certificate closer than this to its end is warned about in the log.
const WARN_BEFORE_EXPIRY: Duration = Duration::from_secs(14 * 24 * 3600);
/// How often the warning is repeated while a certificate stays close to its end.
const WARN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Why a domain's certificate could not be installed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertificateError {
    /// The chain is not PEM certificates.
    #[error("the certificate chain is not PEM: {0}")]
    Chain(rustls::pki_types::pem::Error),
    /// The chain holds no certificate.
    #[error("the certificate chain holds no certificate")]
    NoCertificate,
    /// The key is not a PEM private key.
    #[error("the private key is not a PEM private key: {0}")]
    Key(rustls::pki_types::pem::Error),
    /// The key is of a kind rustls cannot sign with, or does not match the leaf.
    #[error("the key cannot be used with the leaf certificate: {0}")]
    Unusable(rustls::Error),
    /// The leaf is not an X.509 certificate we can read.
    #[error("the leaf certificate cannot be read: {0}")]
    Leaf(String),
}

/// One domain's certificate, ready for handshakes.
pub(crate) struct PlayerCertificate {
    key: Arc<CertifiedKey>,
    /// The leaf's `notAfter`, in seconds since the Unix epoch.
    not_after: i64,
}

impl PlayerCertificate {
    /// Parses `certificate` (chain leaf first, key in PKCS#8, PKCS#1 or SEC1) and checks that
    /// the key is the leaf's.
    pub(crate) fn parse(
        certificate: &DomainCertificate,
    ) -> Result<PlayerCertificate, CertificateError> {
        let chain = CertificateDer::pem_slice_iter(certificate.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(CertificateError::Chain)?;
        let leaf = chain.first().ok_or(CertificateError::NoCertificate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|error| CertificateError::Leaf(error.to_string()))?;
        let not_after = parsed.validity().not_after.timestamp();
        let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes())
            .map_err(CertificateError::Key)?;
        let key = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
            .map_err(CertificateError::Unusable)?;
        Ok(PlayerCertificate {
            key: Arc::new(key),
            not_after,
        })
    }
}

/// A certificate being served, with what its expiry watch needs.
struct Installed {
    key: Arc<CertifiedKey>,
    not_after: i64,
    days_left: Gauge,
    /// When the log last warned that it expires soon; kept across tables while the leaf is
    /// the same, so a table push for another domain does not repeat the warning.
    warned_at: Mutex<Option<Instant>>,
}

/// The players' certificates by domain: rustls's certificate resolver for the TLS listener.
pub(crate) struct PlayerCertificates {
    by_domain: RwLock<Arc<HashMap<String, Arc<Installed>>>>,
}

impl std::fmt::Debug for PlayerCertificates {
    // Names only: a `{:?}` must never reach key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by_domain = Arc::clone(&self.by_domain.read());
        f.debug_set().entries(by_domain.keys()).finish()
    }
}

impl PlayerCertificates {
    /// No certificate: every handshake is refused until a table brings some.
    pub(crate) fn new() -> PlayerCertificates {
        PlayerCertificates {
            by_domain: RwLock::new(Arc::new(HashMap::new())),
        }
    }

    /// Serves exactly `certificates` from the next handshake on, and sets their gauges (and
    /// warns of those close to their end). A domain that loses its certificate has its gauge
    /// set to NaN, since a series cannot be removed.
    pub(crate) fn replace(&self, certificates: HashMap<String, PlayerCertificate>) {
        let previous = Arc::clone(&self.by_domain.read());
        let mut next = HashMap::with_capacity(certificates.len());
        for (domain, certificate) in certificates {
            let same_leaf = previous
                .get(&domain)
                .filter(|installed| installed.key.cert.first() == certificate.key.cert.first());
            let warned_at = same_leaf.and_then(|installed| *installed.warned_at.lock());
            let days_left =
                metrics::gauge!("precache_edge_certificate_days_left", "domain" => domain.clone());
            next.insert(
                domain,
                Arc::new(Installed {
                    key: certificate.key,
                    not_after: certificate.not_after,
                    days_left,
                    warned_at: Mutex::new(warned_at),
                }),
            );
        }
        for (domain, installed) in previous.iter() {
            if !next.contains_key(domain) {
                installed.days_left.set(f64::NAN);
            }
        }
        *self.by_domain.write() = Arc::new(next);
        self.watch_expiry(SystemTime::now(), Instant::now());
    }

    /// Sets each certificate's days-left gauge and warns, at most once every [`WARN_EVERY`],
    /// of each one within [`WARN_BEFORE_EXPIRY`] of its end (or past it).
    pub(crate) fn watch_expiry(&self, now: SystemTime, now_instant: Instant) {
        let now_secs = match now.duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => since_epoch.as_secs_f64(),
            Err(_) => return,
        };
        let by_domain = Arc::clone(&self.by_domain.read());
        for (domain, installed) in by_domain.iter() {
            let seconds_left = installed.not_after as f64 - now_secs;
            let days_left = seconds_left / 86_400.0;
            installed.days_left.set(days_left);
            if seconds_left >= WARN_BEFORE_EXPIRY.as_secs_f64() {
                continue;
            }
            let mut warned_at = installed.warned_at.lock();
            if warned_at.is_some_and(|at| now_instant.duration_since(at) < WARN_EVERY) {
                continue;
            }
            *warned_at = Some(now_instant);
            let not_after = jiff::Timestamp::from_second(installed.not_after)
                .map(|at| at.to_string())
                .unwrap_or_else(|_| installed.not_after.to_string());
            if seconds_left <= 0.0 {
                tracing::warn!(%domain, %not_after, "the domain's certificate has expired: players' TLS clients will refuse it");
            } else {
                tracing::warn!(%domain, %not_after, days_left = format!("{days_left:.1}"), "the domain's certificate expires in less than 14 days");
            }
        }
    }

    /// The key for a server name, if its domain has a certificate.
    fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let server_name = server_name.strip_suffix('.').unwrap_or(server_name);
        let by_domain = self.by_domain.read();
        let installed = if server_name.bytes().any(|byte| byte.is_ascii_uppercase()) {
            by_domain.get(&server_name.to_ascii_lowercase())
        } else {
            by_domain.get(server_name)
        };
        installed.map(|installed| Arc::clone(&installed.key))
    }
}

impl ResolvesServerCert for PlayerCertificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(client_hello.server_name()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn certificate(domain: &str) -> Result<DomainCertificate, rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
        let cert = params.self_signed(&key)?;
        Ok(DomainCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    #[test]
    fn picks_the_certificate_of_the_named_domain_only() -> TestResult {
        let certificates = PlayerCertificates::new();
        let mut installed = HashMap::new();
        for domain in ["a.example.com", "b.example.com"] {
            let parsed = PlayerCertificate::parse(&certificate(domain)?)?;
            installed.insert(domain.to_string(), parsed);
        }
        certificates.replace(installed);
        let a = certificates.lookup("a.example.com").ok_or("a")?;
        let b = certificates.lookup("B.Example.com.").ok_or("b")?;
        assert_ne!(a.cert[0], b.cert[0]);
        assert!(certificates.lookup("c.example.com").is_none());

        certificates.replace(HashMap::new());
        assert!(certificates.lookup("a.example.com").is_none());
        Ok(())
    }

    #[test]
    fn refuses_a_key_that_is_not_the_leafs() -> TestResult {
        let mut mismatched = certificate("a.example.com")?;
        mismatched.key_pem = certificate("a.example.com")?.key_pem;
        assert!(matches!(
            PlayerCertificate::parse(&mismatched),
            Err(CertificateError::Unusable(_))
        ));
        let mut no_chain = certificate("a.example.com")?;
        no_chain.cert_pem = String::new();
        assert!(matches!(
            PlayerCertificate::parse(&no_chain),
            Err(CertificateError::NoCertificate)
        ));
        Ok(())
    }

    #[test]
    fn reads_not_after_from_the_leaf() -> TestResult {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()])?;
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&key)?;
        let parsed = PlayerCertificate::parse(&DomainCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })?;
        let expected = jiff::civil::date(2031, 5, 17)
            .to_zoned(jiff::tz::TimeZone::UTC)?
            .timestamp();
        assert_eq!(parsed.not_after, expected.as_second());
        Ok(())
    }
}
