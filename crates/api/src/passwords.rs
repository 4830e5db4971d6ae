//! Password hashing with argon2id, off the async workers and bounded in parallelism.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher as _, PasswordVerifier};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

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
        self.run(move || hash_now(&password)).await
    }

    /// Whether `password` matches `hash` (`None`: compare against a decoy and say no).
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        match self.permit().await {
            Some(permit) => self.verify_holding(&permit, password, hash).await,
            None => false,
        }
    }

    /// Waits for a turn to verify. A caller that holds it can check, just before the argon2
    /// work and with no other verification of its own process in between, whether it should
    /// run at all (login throttling does).
    pub(crate) async fn permit(&self) -> Option<VerifyPermit> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .ok()
            .map(|held| VerifyPermit { _held: held })
    }

    /// [`PasswordHasher::verify`] in a turn already taken.
    pub(crate) async fn verify_holding(
        &self,
        _turn: &VerifyPermit,
        password: &str,
        hash: Option<&str>,
    ) -> bool {
        let password = password.to_string();
        let (hash, real) = match hash {
            Some(hash) => (hash.to_string(), true),
            None => {
                let decoy = self
                    .decoy
                    .get_or_try_init(|| async {
                        let decoy_password = uuid::Uuid::new_v4().to_string();
                        spawn_blocking(move || hash_now(&decoy_password)).await
                    })
                    .await;
                match decoy {
                    Ok(decoy) => (decoy.clone(), false),
                    Err(_) => return false,
                }
            }
        };
        let matched = spawn_blocking(move || {
            metrics::counter!("precache_password_verifications_total").increment(1);
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
        spawn_blocking(work).await
    }
}

/// A turn to verify a password (see [`PasswordHasher::permit`]).
pub(crate) struct VerifyPermit {
    _held: OwnedSemaphorePermit,
}

fn hash_now(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

async fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())?
}

impl Default for PasswordHasher {
    fn default() -> PasswordHasher {
        PasswordHasher::new()
    }
}
