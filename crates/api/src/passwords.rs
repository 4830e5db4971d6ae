//! Password hashing with argon2id, off the async workers and bounded in parallelism.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher as _, PasswordVerifier};
use tokio::sync::{OnceCell, Semaphore};

/// Hashes and verifies passwords. Each hash costs tens of milliseconds and ~19 MiB by design
/// (argon2id's defaults), so at most one per core runs at a time: a login storm neither starves
/// the other endpoints nor multiplies memory.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// A hash of a random password nobody knows, verified against when the user does not exist
    /// so a wrong user name costs the same time as a wrong password.
    decoy: Arc<OnceCell<String>>,
}

impl PasswordHasher {
    /// A hasher with one permit per available core.
    pub fn new() -> PasswordHasher {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        PasswordHasher {
            permits: Arc::new(Semaphore::new(cores)),
            decoy: Arc::new(OnceCell::new()),
        }
    }

    /// The PHC string of a fresh argon2id hash.
    pub async fn hash(&self, password: &str) -> Result<String, String> {
        let password = password.to_string();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Whether `password` matches `hash` (`None`: compare against a decoy and say no).
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        let password = password.to_string();
        let (hash, real) = match hash {
            Some(hash) => (hash.to_string(), true),
            None => {
                let decoy = self
                    .decoy
                    .get_or_try_init(|| async {
                        self.hash(&uuid::Uuid::new_v4().to_string()).await
                    })
                    .await;
                match decoy {
                    Ok(decoy) => (decoy.clone(), false),
                    Err(_) => return false,
                }
            }
        };
        let matched = self
            .run(move || {
                let parsed = PasswordHash::new(&hash).map_err(|e| e.to_string())?;
                Ok(Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok())
            })
            .await;
        real && matched.unwrap_or(false)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| e.to_string())?
    }
}

impl Default for PasswordHasher {
    fn default() -> PasswordHasher {
        PasswordHasher::new()
    }
}
