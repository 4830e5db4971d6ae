//! Domains' TLS certificates: the chain, the key sealed at rest (like backends' credentials, see
//! [`crate::sealed`]) and the facts answered back. Setting or removing one bumps the domain
//! registry's revision, so every edge is pushed the new table.

use precache_model::edge_protocol::DomainCertificate;
use precache_model::time::now_millis;
use precache_model::DomainName;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::domains::bump_domains_revision;
use crate::sealed::SecretKeys;
use crate::{CertificateFacts, Error, NewCertificate, Result, Store};

/// The row a sealed key belongs to: a key copied to another domain's row (or to a backend's
/// credentials) does not open.
fn seal_context(domain: &str) -> String {
    format!("certificate {domain}")
}

/// The certificate columns of [`crate::domains`]' select (`cert_*`, NULL without one).
pub(crate) fn decode_facts(row: &AnyRow) -> Result<Option<CertificateFacts>> {
    let Some(sha256) = row.try_get::<Option<String>, _>("cert_sha256")? else {
        return Ok(None);
    };
    let sans: String = row
        .try_get::<Option<String>, _>("cert_sans")?
        .unwrap_or_default();
    Ok(Some(CertificateFacts {
        subject: row
            .try_get::<Option<String>, _>("cert_subject")?
            .unwrap_or_default(),
        sans: serde_json::from_str(&sans)
            .map_err(|e| Error::Corrupt(format!("certificate names {sans:?}: {e}")))?,
        not_after: row
            .try_get::<Option<i64>, _>("cert_not_after")?
            .unwrap_or_default(),
        sha256,
    }))
}

/// A domain's certificate as edges need it, or why its key could not be opened.
#[derive(Debug)]
pub struct CertificateForEdges {
    /// The domain.
    pub domain: DomainName,
    /// Chain and opened key, or why the key does not open (no key configured, another key).
    pub certificate: std::result::Result<DomainCertificate, String>,
}

fn open_key(keys: Option<&SecretKeys>, domain: &str, sealed: &str) -> Result<String, String> {
    let keys = keys.ok_or("no secret key is configured to open the certificate's key")?;
    let opened = keys.open(&seal_context(domain), sealed)?;
    String::from_utf8(opened).map_err(|_| "a certificate key that is not text".to_string())
}

impl Store {
    /// Gives domain `name` this certificate, replacing any it had. `NotFound` when the domain
    /// is not registered, `Refused` when no secret key is configured to seal the key.
    pub async fn set_domain_certificate(
        &self,
        name: &str,
        certificate: NewCertificate,
    ) -> Result<()> {
        let keys = self.keys.clone().ok_or_else(|| {
            Error::Refused("no secret key is configured to seal the certificate's key".into())
        })?;
        let sealed = keys
            .seal(&seal_context(name), certificate.key_pem.as_bytes())
            .map_err(Error::Corrupt)?;
        let sans = serde_json::to_string(&certificate.facts.sans)
            .map_err(|e| Error::Corrupt(format!("encode certificate names: {e}")))?;
        let name = name.to_string();
        let updated_at = now_millis();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let found = sqlx::query("SELECT 1 AS one FROM domains WHERE name = $1")
                        .bind(&name)
                        .fetch_optional(&mut *connection)
                        .await?;
                    if found.is_none() {
                        return Err(Error::NotFound(format!("domain {name:?}")));
                    }
                    sqlx::query("DELETE FROM domain_certificates WHERE domain = $1")
                        .bind(&name)
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query(
                        "INSERT INTO domain_certificates \
                         (domain, cert_pem, key_sealed, subject, sans, not_after, sha256, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&name)
                    .bind(&certificate.cert_pem)
                    .bind(&sealed)
                    .bind(&certificate.facts.subject)
                    .bind(&sans)
                    .bind(certificate.facts.not_after)
                    .bind(&certificate.facts.sha256)
                    .bind(updated_at)
                    .execute(&mut *connection)
                    .await?;
                    bump_domains_revision(connection).await
                })
            })
            .await
    }

    /// Removes domain `name`'s certificate. `NotFound` when the domain is not registered or has
    /// no certificate.
    pub async fn delete_domain_certificate(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    let found = sqlx::query("SELECT 1 AS one FROM domains WHERE name = $1")
                        .bind(&name)
                        .fetch_optional(&mut *connection)
                        .await?;
                    if found.is_none() {
                        return Err(Error::NotFound(format!("domain {name:?}")));
                    }
                    let deleted = sqlx::query("DELETE FROM domain_certificates WHERE domain = $1")
                        .bind(&name)
                        .execute(&mut *connection)
                        .await?;
                    if deleted.rows_affected() == 0 {
                        return Err(Error::NotFound(format!("a certificate of domain {name:?}")));
                    }
                    bump_domains_revision(connection).await
                })
            })
            .await
    }

    /// Every domain's certificate with its key opened, by domain, for the table pushed to
    /// edges. A key that does not open is reported in its entry, not as an error of the call.
    pub async fn certificates_for_edges(&self) -> Result<Vec<CertificateForEdges>> {
        let rows = sqlx::query(
            "SELECT domain, cert_pem, key_sealed FROM domain_certificates ORDER BY domain",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut certificates = Vec::with_capacity(rows.len());
        for row in &rows {
            let domain: String = row.try_get("domain")?;
            let cert_pem: String = row.try_get("cert_pem")?;
            let sealed: String = row.try_get("key_sealed")?;
            certificates.push(CertificateForEdges {
                domain: DomainName::parse(&domain).map_err(Error::Corrupt)?,
                certificate: open_key(self.keys.as_deref(), &domain, &sealed)
                    .map(|key_pem| DomainCertificate { cert_pem, key_pem }),
            });
        }
        Ok(certificates)
    }

    /// Seals again, under the primary key, every certificate key sealed by the previous one;
    /// answers how many. Keys that open with neither key are left as they are.
    pub(crate) async fn reseal_certificate_keys(&self) -> Result<usize> {
        let Some(keys) = self.keys.clone() else {
            return Ok(0);
        };
        let rows = sqlx::query("SELECT domain, key_sealed FROM domain_certificates")
            .fetch_all(&self.pool)
            .await?;
        let mut resealed = Vec::new();
        for row in &rows {
            let sealed: String = row.try_get("key_sealed")?;
            if keys.is_current(&sealed) {
                continue;
            }
            let domain: String = row.try_get("domain")?;
            let context = seal_context(&domain);
            if let Ok(plain) = keys.open(&context, &sealed) {
                let again = keys.seal(&context, &plain).map_err(Error::Corrupt)?;
                resealed.push((domain, sealed, again));
            }
        }
        let count = resealed.len();
        if count == 0 {
            return Ok(0);
        }
        self.writer
            .run(move |connection| {
                Box::pin(async move {
                    // Only a row still holding what was read: a certificate replaced meanwhile
                    // is already sealed under the primary key.
                    for (domain, old, again) in &resealed {
                        sqlx::query(
                            "UPDATE domain_certificates SET key_sealed = $1 \
                             WHERE domain = $2 AND key_sealed = $3",
                        )
                        .bind(again)
                        .bind(domain)
                        .bind(old)
                        .execute(&mut *connection)
                        .await?;
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(count)
    }
}
