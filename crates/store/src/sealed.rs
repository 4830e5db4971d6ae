//! Secrets sealed at rest: what the database holds of a backend's credentials is
//! XChaCha20-Poly1305 ciphertext under a key that lives outside the database (a file, see
//! docs/backends.md), so a copy of the database alone reveals nothing.
//!
//! A sealed value is `xc1.<key id>.<base64(nonce ‖ ciphertext)>`: the key id (the first bytes of
//! the key's SHA-256) says which key opens it, so a previous key can still open what it sealed
//! while everything is sealed again under the new one ([`crate::Store::reseal_credentials`]).
//! The row's name is the associated data: a sealed value copied to another row does not open.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: &str = "xc1";

/// A 32-byte key and its id.
#[derive(Clone)]
pub struct SecretKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> SecretKey {
        SecretKey {
            id: hex::encode(&Sha256::digest(bytes)[..6]),
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    /// A key file's text: 32 bytes in base64 (what [`SecretKey::generate`] writes).
    pub fn from_text(text: &str) -> Result<SecretKey, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|bytes: Vec<u8>| format!("{} bytes, not 32", bytes.len()))?;
        Ok(SecretKey::from_bytes(&bytes))
    }

    /// A new random key, as the text of a key file.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Which key this is (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The key that seals, and the previous one during a rotation.
#[derive(Debug, Clone)]
pub struct SecretKeys {
    /// Seals everything new, opens what it sealed.
    pub primary: SecretKey,
    /// Only opens (what was sealed before the rotation).
    pub previous: Option<SecretKey>,
}

impl SecretKeys {
    /// Seals `plaintext`, bound to `context` (the row it belongs to).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .primary
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!(
            "{VERSION}.{}.{}",
            self.primary.id,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// Opens what [`SecretKeys::seal`] sealed for `context`, with whichever key sealed it.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, String> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("not a sealed value".into());
        };
        let key = std::iter::once(&self.primary)
            .chain(self.previous.as_ref())
            .find(|key| key.id == id)
            .ok_or_else(|| {
                format!(
                    "sealed with key {id}, but the configured keys are {}{}: give the key it was \
                     sealed with (as the previous key while rotating)",
                    self.primary.id,
                    self.previous
                        .as_ref()
                        .map(|key| format!(" and {}", key.id))
                        .unwrap_or_default()
                )
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| "a sealed value that is not base64".to_string())?;
        if bytes.len() < 24 {
            return Err("a sealed value too short".into());
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                "a sealed value that does not open (altered, or moved from another row)".into()
            })
    }

    /// Whether `sealed` was sealed by the primary key.
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed
            .split('.')
            .nth(1)
            .is_some_and(|id| id == self.primary.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let keys = SecretKeys {
            primary: key(1),
            previous: None,
        };
        let sealed = keys.seal("cf", b"token-1234").expect("seal");
        assert!(!sealed.contains("token"));
        assert_eq!(keys.open("cf", &sealed).expect("open"), b"token-1234");
        assert!(keys.open("other-row", &sealed).is_err());
        let stranger = SecretKeys {
            primary: key(2),
            previous: None,
        };
        let error = stranger.open("cf", &sealed).expect_err("another key");
        assert!(error.contains(keys.primary.id()), "{error}");
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.open("cf", &altered).is_err());
    }

    #[test]
    fn a_rotation_opens_old_values_and_seals_new_ones_under_the_new_key() {
        let old = SecretKeys {
            primary: key(1),
            previous: None,
        };
        let sealed = old.seal("cf", b"secret").expect("seal");
        let rotating = SecretKeys {
            primary: key(2),
            previous: Some(key(1)),
        };
        assert!(!rotating.is_current(&sealed));
        assert_eq!(rotating.open("cf", &sealed).expect("open"), b"secret");
        let resealed = rotating.seal("cf", b"secret").expect("seal");
        assert!(rotating.is_current(&resealed));
    }

    #[test]
    fn key_files_are_32_bytes_of_base64() {
        let text = SecretKey::generate();
        assert!(SecretKey::from_text(&text).is_ok());
        assert!(SecretKey::from_text("c2hvcnQ=").is_err());
        assert!(SecretKey::from_text("not base64!").is_err());
    }
}
