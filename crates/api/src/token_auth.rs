//! Tokens: issuing them, and turning `X-Auth-Token` into the calling account.
//!
//! A token is `pct_` and 256 random bits, base64url. Only its SHA-256 is stored, and lookups are by that
//! hash, so comparing secrets never happens byte by byte against client input. Grants are cached
//! for a few seconds because every API call checks one; revoking through this process drops the
//! cached grant at once (other control-plane processes notice within [`CACHE_TTL`]).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use precache_model::time::now_millis;
use precache_model::{AccountId, Role};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::envelope::{ApiError, Ret};
use crate::state::AppState;
use crate::store_errors::from_store;

/// The header a client sends its token in.
pub const TOKEN_HEADER: &str = "x-auth-token";
/// How long a looked-up grant is trusted without asking the store again.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Cached grants beyond this are dropped wholesale (a flood of distinct tokens cannot grow it).
const CACHE_CAPACITY: usize = 100_000;

/// A fresh secret and the hash to store: `prefix` (which names what it is, for people and secret
/// scanners, and keeps it from starting with `-`, which a command line would take for a flag)
/// and 256 random bits, base64url.
pub(crate) fn new_secret(prefix: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = token_hash(&token);
    (token, hash)
}

/// A fresh API token and the hash to store.
pub(crate) fn new_token() -> (String, String) {
    new_secret("pct_")
}

/// The stored form of a token.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated account behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Account id.
    pub account_id: AccountId,
    /// Account name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Hash of the token used.
    pub token_hash: String,
    /// Token expiry, ms since the epoch.
    pub expires_at: i64,
    /// The account's own request rate limit, when an admin set one (per second; 0: none).
    pub rate_limit: Option<u32>,
}

impl Caller {
    /// `1004` unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::User => Err(ApiError::new(
                Ret::Forbidden,
                format!("account {:?} is not an admin", self.name),
            )),
        }
    }
}

#[derive(Clone)]
struct CachedGrant {
    caller: Caller,
    fetched: Instant,
}

/// Recently validated grants, by token hash.
#[derive(Default)]
pub(crate) struct TokenCache {
    grants: RwLock<HashMap<String, CachedGrant>>,
}

impl TokenCache {
    fn get(&self, hash: &str) -> Option<Caller> {
        let grants = self
            .grants
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let grant = grants.get(hash)?;
        (grant.fetched.elapsed() < CACHE_TTL && grant.caller.expires_at > now_millis())
            .then(|| grant.caller.clone())
    }

    fn put(&self, caller: Caller) {
        let mut grants = self
            .grants
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if grants.len() >= CACHE_CAPACITY {
            grants.clear();
        }
        grants.insert(
            caller.token_hash.clone(),
            CachedGrant {
                caller,
                fetched: Instant::now(),
            },
        );
    }

    /// Forgets one token.
    pub(crate) fn forget(&self, hash: &str) {
        self.grants
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(hash);
    }

    /// Forgets every token of one account (its role changed, or it was deleted).
    pub(crate) fn forget_account(&self, account_id: AccountId) {
        self.grants
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|_, grant| grant.caller.account_id != account_id);
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let Some(token) = parts.headers.get(TOKEN_HEADER) else {
            return Err(ApiError::new(
                Ret::NoToken,
                "X-Auth-Token header is missing",
            ));
        };
        let token = token
            .to_str()
            .map_err(|_| ApiError::new(Ret::BadToken, "token unknown, expired or revoked"))?;
        let caller = caller_of(state, token).await?;
        audit_as(parts, &caller);
        within_rate_limit(state, caller)
    }
}

/// The account behind `token` (from the token cache, or the store), without the rate limit.
pub(crate) async fn caller_of(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let hash = token_hash(token.trim());
    if let Some(caller) = state.inner.tokens.get(&hash) {
        return Ok(caller);
    }
    let grant = state
        .inner
        .store
        .token_grant(&hash)
        .await
        .map_err(from_store)?;
    let now = now_millis();
    let Some(grant) = grant.filter(|grant| !grant.revoked && grant.expires_at > now) else {
        return Err(ApiError::new(
            Ret::BadToken,
            "token unknown, expired or revoked",
        ));
    };
    let caller = Caller {
        account_id: grant.account.id,
        name: grant.account.name,
        role: grant.account.role,
        token_hash: hash,
        expires_at: grant.expires_at,
        rate_limit: grant
            .rate_limit
            .map(|limit| u32::try_from(limit.max(0)).unwrap_or(u32::MAX)),
    };
    state.inner.tokens.put(caller.clone());
    Ok(caller)
}

/// Names the caller in the request's audit entry, if the request is one that is recorded.
pub(crate) fn audit_as(parts: &Parts, caller: &Caller) {
    if let Some(actor) = parts.extensions.get::<crate::audit::AuditActor>() {
        actor.set(Some(caller.account_id), &caller.name);
    }
}

/// Refuses the request (`4001`, `Retry-After`) when the account is over its rate; admins are not
/// limited, so a tenant's limit can never lock out the people who manage it.
pub(crate) fn within_rate_limit(state: &AppState, caller: Caller) -> Result<Caller, ApiError> {
    if caller.role == Role::Admin {
        return Ok(caller);
    }
    let per_second = caller
        .rate_limit
        .unwrap_or(state.inner.config.rate_limit_per_account);
    match state.inner.rate_limits.take(caller.account_id, per_second) {
        Ok(()) => Ok(caller),
        Err(wait) => {
            metrics::counter!("precache_quota_rejections_total", "reason" => "rate_limit")
                .increment(1);
            let mut error = ApiError::new(
                Ret::Limited,
                format!(
                    "account {} is over its rate limit of {per_second} requests per second; retry in {wait} s",
                    caller.name
                ),
            );
            error.retry_after = Some(wait);
            Err(error)
        }
    }
}
