//! `/cdn_api/auth/tokens`: log in (both body forms), inspect and revoke a token.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use precache_model::time::{now_millis, rfc3339_millis};
use serde_json::{json, Map, Value};

use crate::audit::AuditActor;
use crate::client_address::ClientAddress;
use crate::envelope::schemas::{Empty, Envelope};
use crate::envelope::{Answer, ApiError, Ret};
use crate::login_throttle::{LoginThrottle, Subjects};
use crate::openapi::{ret_codes, BODY, STORE, TOKEN};
use crate::request_body::{json_object, kind_of};
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::{new_token, Caller};

/// Header carrying the new token, as in OpenStack Keystone.
const SUBJECT_TOKEN: &str = "x-subject-token";

/// The user name and password of either body form.
fn credentials(body: &Map<String, Value>) -> Result<(String, String), ApiError> {
    let missing = || {
        ApiError::new(
            Ret::BadField,
            "expected {\"username\", \"password\"} or a Keystone v3 password body",
        )
    };
    let as_string = |value: Option<&Value>, field: &str| -> Result<String, ApiError> {
        match value {
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(ApiError::new(
                Ret::BadField,
                format!("field {field:?} must be a string, got {}", kind_of(other)),
            )),
            None => Err(missing()),
        }
    };
    if body.contains_key("auth") {
        let user = body
            .get("auth")
            .and_then(|auth| auth.get("identity"))
            .and_then(|identity| identity.get("password"))
            .and_then(|password| password.get("user"));
        let Some(user) = user else {
            return Err(missing());
        };
        return Ok((
            as_string(user.get("name"), "name")?,
            as_string(user.get("password"), "password")?,
        ));
    }
    Ok((
        as_string(body.get("username"), "username")?,
        as_string(body.get("password"), "password")?,
    ))
}

/// `POST`: issue a token.
#[utoipa::path(
    post,
    path = "/cdn_api/auth/tokens",
    tag = "auth",
    operation_id = "login",
    summary = "Log in: issue a token",
    description = "Takes either body of API.md §4. Wrong user and wrong password answer the same \
                   `1003` after the same work. The token is valid for `--token-ttl` (24 h by \
                   default). After `--login-failures-per-account` (5) failures of one name, or \
                   `--login-failures-per-address` (20) from one client address, each within \
                   `--login-failure-window` (15 min) of the previous one, logins of that name \
                   or from that address answer `4001` (HTTP 429, `Retry-After`) without \
                   checking the password until the window has passed since the last failure.",
    request_body = schemas::Login,
    responses((
        status = 201,
        description = "The token; also in the `X-Subject-Token` header.",
        body = Envelope<schemas::Issued>,
        headers(("X-Subject-Token" = String, description = "The new token."))
    )),
    extensions(("x-ret-codes" = json!(ret_codes(&[BODY, STORE, &[Ret::BadCredentials, Ret::Limited]])))),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    actor: AuditActor,
    body: Body,
) -> Result<Answer, ApiError> {
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let (username, password) = credentials(&body)?;
    let issued = log_in(&state, &username, &password, client, &actor).await?;
    let header_value = HeaderValue::from_str(&issued.token).map_err(ApiError::internal)?;
    Ok(Answer::ok(json!({"token": {
        "id": issued.token,
        "expires_at": rfc3339_millis(issued.expires_at),
        "user": issued.account.name,
        "role": issued.account.role.as_str(),
    }}))
    .with_status(StatusCode::CREATED)
    .with_header(HeaderName::from_static(SUBJECT_TOKEN), header_value))
}

/// A token issued by a log-in.
pub(crate) struct Issued {
    /// The token (shown once; stored hashed).
    pub(crate) token: String,
    /// Its end, ms since the epoch.
    pub(crate) expires_at: i64,
    /// Whose it is.
    pub(crate) account: precache_store::Account,
}

/// Checks a name and password from `client` (throttled as the API's log-in is, whatever asks:
/// the API or the console) and issues a token; names the actor in the request's audit entry.
pub(crate) async fn log_in(
    state: &AppState,
    username: &str,
    password: &str,
    client: std::net::IpAddr,
    actor: &AuditActor,
) -> Result<Issued, ApiError> {
    actor.set(None, username);
    let throttle = LoginThrottle {
        store: &state.inner.store,
        limits: state.inner.config.login_limits,
    };
    let subjects = Subjects::new(username, client);
    // A locked name or address is refused before it waits for a turn to verify.
    throttle.check(&subjects, now_millis()).await?;
    let account = state
        .inner
        .store
        .account_by_name(username)
        .await
        .map_err(from_store)?;
    let Some(turn) = state.inner.hasher.permit().await else {
        return Err(ApiError::internal("the password hasher is closed"));
    };
    // Checked again in our turn: attempts that queued together behind the verifications of a
    // burst see the failures those recorded.
    let checked = throttle.check(&subjects, now_millis()).await?;
    let verified = state
        .inner
        .hasher
        .verify_holding(
            &turn,
            password,
            account
                .as_ref()
                .map(|account| account.password_hash.as_str()),
        )
        .await;
    if let Some(account) = &account {
        actor.set(Some(account.id), &account.name);
    }
    let Some(account) = account.filter(|_| verified) else {
        // Recorded before the turn is given back, so the next attempt's check sees it.
        throttle.failed(&subjects, now_millis()).await?;
        drop(turn);
        return Err(ApiError::new(
            Ret::BadCredentials,
            "wrong user name or password",
        ));
    };
    drop(turn);
    throttle.succeeded(&subjects, &checked).await?;
    let (token, hash) = new_token();
    let now = now_millis();
    let expires_at = now + state.inner.config.token_ttl.as_millis() as i64;
    state
        .inner
        .store
        .insert_token(&hash, account.id, now, expires_at)
        .await
        .map_err(from_store)?;
    Ok(Issued {
        token,
        expires_at,
        account,
    })
}

/// `GET`: who the token belongs to and until when.
#[utoipa::path(
    get,
    path = "/cdn_api/auth/tokens",
    tag = "auth",
    operation_id = "token_show",
    summary = "Whose token this is, and until when",
    responses((
        status = 200,
        description = "The token's account and expiry.",
        body = Envelope<schemas::Current>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN])))),
)]
pub(crate) async fn show(caller: Caller) -> Answer {
    Answer::ok(json!({"token": {
        "expires_at": rfc3339_millis(caller.expires_at),
        "user": caller.name,
        "role": caller.role.as_str(),
    }}))
}

/// `DELETE`: revoke the token used for this call.
#[utoipa::path(
    delete,
    path = "/cdn_api/auth/tokens",
    tag = "auth",
    operation_id = "token_revoke",
    summary = "Revoke the token of this call",
    description = "It stops working at once on this process, within 5 s on other control-plane \
                   processes.",
    responses((status = 200, description = "Revoked.", body = Envelope<Empty>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN])))),
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    state
        .inner
        .store
        .revoke_token(&caller.token_hash, now_millis())
        .await
        .map_err(from_store)?;
    state.inner.tokens.forget(&caller.token_hash);
    Ok(Answer::ok(json!({})))
}
