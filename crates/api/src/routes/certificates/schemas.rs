//! What `/cdn_api/domains/{domain}/certificate` reads and answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers read and build them as JSON"
)]

use utoipa::ToSchema;

/// A domain's certificate chain and private key.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateUpload {
    /// The chain in PEM, leaf first (intermediates after it).
    #[schema(example = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n")]
    cert_pem: String,
    /// The leaf's private key in PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    #[schema(example = "-----BEGIN PRIVATE KEY-----\nMIGH...\n-----END PRIVATE KEY-----\n")]
    key_pem: String,
}

/// What a domain's certificate says (never its key).
#[derive(ToSchema)]
pub(crate) struct CertificateFacts {
    /// The leaf's subject, a distinguished name.
    #[schema(example = "CN=game.example.com")]
    subject: String,
    /// The leaf's DNS subject alternative names: the names it is valid for.
    #[schema(example = json!(["game.example.com", "*.game.example.com"]))]
    sans: Vec<String>,
    /// The end of the leaf's validity.
    #[schema(format = DateTime)]
    not_after: String,
    /// SHA-256 of the leaf's DER, lowercase hex (its fingerprint).
    sha256: String,
}
