//! Trust for https origins: the system's root certificates plus the operator's
//! `--origin-ca-file`, and the name an origin's certificate is checked against.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::utils::tls::WrappedX509;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::RootCertStore;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why `--origin-ca-file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OriginCaError {
    /// The file could not be read, or is not PEM.
    #[error("origin CA file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file holds no `CERTIFICATE` block.
    #[error("origin CA file {0} holds no PEM certificate")]
    Empty(PathBuf),
    /// A certificate cannot be a trust anchor.
    #[error("origin CA file {path}: certificate {index} cannot be used: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Its place in the file, from 1.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The system's roots could not be read.
    #[error("reading the system's CA certificates: {0}")]
    SystemRoots(std::io::Error),
}

/// The roots an https origin's certificate may chain to when the operator gave
/// `--origin-ca-file`: the system's (as pingora loads them: `SSL_CERT_FILE`, `SSL_CERT_DIR`, or
/// the distribution's bundle) and the file's. Without the file an edge needs none of this:
/// pingora's connector verifies against the system's roots by itself.
///
/// Pingora takes a peer's CA list *instead of* its connector's roots, which is why the system's
/// are loaded here too. The list is built once and shared by every peer; pingora reads it only
/// when it opens a new connection.
#[derive(Clone)]
pub struct OriginCa {
    roots: Arc<CaType>,
    from_file: usize,
}

impl OriginCa {
    /// Reads the system's roots and the PEM certificates of `path` (one or more). A file that
    /// cannot be read, holds no certificate or one that is no usable CA certificate is an error,
    /// so that the process refuses to start rather than fail every https origin later.
    pub fn load(path: &Path) -> Result<OriginCa, OriginCaError> {
        let unreadable = |reason: String| OriginCaError::Unreadable {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|error| unreadable(error.to_string()))?;
        let from_file: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|error| unreadable(format!("not PEM: {error}")))?;
        if from_file.is_empty() {
            return Err(OriginCaError::Empty(path.to_path_buf()));
        }
        let mut roots = Vec::new();
        for (index, certificate) in from_file.iter().enumerate() {
            let wrapped =
                usable_root(certificate).map_err(|reason| OriginCaError::BadCertificate {
                    path: path.to_path_buf(),
                    index: index + 1,
                    reason,
                })?;
            roots.push(wrapped);
        }
        let from_file = roots.len();
        let system = pingora::tls::load_native_certs().map_err(OriginCaError::SystemRoots)?;
        let mut skipped = 0usize;
        for certificate in &system {
            // A bundle may carry a certificate rustls cannot use; pingora's own loading would
            // fail on it at every connection, so it is left out here, once.
            match usable_root(certificate) {
                Ok(wrapped) => roots.push(wrapped),
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "system CA certificates rustls cannot use are not trusted for https origins"
            );
        }
        Ok(OriginCa {
            roots: Arc::from(roots),
            from_file,
        })
    }

    /// The roots, for `PeerOptions::ca`.
    pub(crate) fn roots(&self) -> Arc<CaType> {
        Arc::clone(&self.roots)
    }
}

impl fmt::Debug for OriginCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginCa")
            .field("from_file", &self.from_file)
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// `certificate` as pingora holds a CA, if rustls can use it as a trust anchor (pingora adds each
/// to a `RootCertStore` when it connects) and x509-parser can read it (pingora parses each).
fn usable_root(certificate: &CertificateDer<'static>) -> Result<WrappedX509, String> {
    RootCertStore::empty()
        .add(certificate.clone())
        .map_err(|error| error.to_string())?;
    WrappedX509::try_new(certificate.to_vec(), |raw| {
        X509Certificate::from_der(raw)
            .map(|(_, parsed)| parsed)
            .map_err(|error| error.to_string())
    })
}

/// The name an https origin's certificate must carry, sent as SNI: the host of the `Host` field
/// sent to it (`origin_host` or the origin's own host), without a port or IPv6 brackets. An IP
/// address is checked against the certificate's IP addresses (and sent without SNI, as TLS has
/// no SNI for addresses).
pub(crate) fn server_name(host_field: &str) -> String {
    let host = match host_field.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => match host_field.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => host_field,
        },
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_is_the_host_without_port_or_brackets() {
        assert_eq!(server_name("Origin.Example.com"), "origin.example.com");
        assert_eq!(server_name("origin.example.com:8443"), "origin.example.com");
        assert_eq!(server_name("origin.example.com."), "origin.example.com");
        assert_eq!(server_name("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(server_name("[::1]:8443"), "::1");
        assert_eq!(server_name("[::1]"), "::1");
    }

    #[test]
    fn a_ca_file_loads_beside_the_system_roots() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key)?;
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, format!("{}{}", ca.pem(), ca.pem()))?;
        let loaded = OriginCa::load(&file)?;
        assert_eq!(loaded.from_file, 2);
        assert!(loaded.roots().len() >= 2);
        Ok(())
    }

    #[test]
    fn unusable_files_are_refused_with_the_reason() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("missing.pem");
        let error = OriginCa::load(&missing).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("missing.pem")),
            "{error:?}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n")?;
        assert!(matches!(
            OriginCa::load(&empty),
            Err(OriginCaError::Empty(_))
        ));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )?;
        assert!(matches!(
            OriginCa::load(&garbage),
            Err(OriginCaError::BadCertificate { index: 1, .. })
        ));
        Ok(())
    }
}
