//! `/cdn_api/users`: accounts, administered by admins.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use precache_model::time::rfc3339_millis;
use precache_model::Role;
use precache_store::Account;
use serde_json::{json, Value};

use crate::envelope::schemas::{Empty, Envelope};
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, ADMIN, BODY, TOKEN};
use crate::request_body::{json_object, optional_str, required_str};
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::Caller;

/// Shortest password accepted.
const MIN_PASSWORD_CHARS: usize = 8;

fn user_json(account: &Account) -> Value {
    json!({"name": account.name, "role": account.role.as_str(), "created_at": rfc3339_millis(account.created_at)})
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            Ret::BadField,
            format!("user name {name:?} must be 1-64 of a-z, 0-9, '.', '_', '-'"),
        ))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::new(
            Ret::BadField,
            format!("password must have at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    text.parse()
        .map_err(|reason: String| ApiError::new(Ret::BadField, reason))
}

/// `POST /cdn_api/users`.
#[utoipa::path(
    post,
    path = "/cdn_api/users",
    tag = "users",
    operation_id = "user_create",
    summary = "Create an account (admin)",
    request_body = schemas::NewUser,
    responses((status = 201, description = "Created.", body = Envelope<schemas::OneUser>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::Conflict]])))),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let name = required_str(&body, "name")?;
    let password = required_str(&body, "password")?;
    let role = optional_str(&body, "role")?
        .map(parse_role)
        .transpose()?
        .unwrap_or(Role::User);
    check_name(name)?;
    check_password(password)?;
    let hash = state
        .inner
        .hasher
        .hash(password)
        .await
        .map_err(ApiError::internal)?;
    let account = state
        .inner
        .store
        .create_account(name, &hash, role)
        .await
        .map_err(from_store)?;
    Ok(Answer::ok(json!({"user": user_json(&account)}))
        .with_status(StatusCode::CREATED)
        .with_audit(account.name.clone(), None))
}

/// `GET /cdn_api/users`.
#[utoipa::path(
    get,
    path = "/cdn_api/users",
    tag = "users",
    operation_id = "user_list",
    summary = "List the accounts (admin)",
    responses((status = 200, description = "Every account.", body = Envelope<schemas::Users>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN])))),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let accounts = state
        .inner
        .store
        .list_accounts()
        .await
        .map_err(from_store)?;
    Ok(Answer::ok(
        json!({"users": accounts.iter().map(user_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /cdn_api/users/{name}`.
#[utoipa::path(
    get,
    path = "/cdn_api/users/{name}",
    tag = "users",
    operation_id = "user_show",
    summary = "Show an account (admin)",
    params(("name" = String, Path, description = "The account's name.")),
    responses((status = 200, description = "The account.", body = Envelope<schemas::OneUser>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    match state
        .inner
        .store
        .account_by_name(&name)
        .await
        .map_err(from_store)?
    {
        Some(account) => Ok(Answer::ok(json!({"user": user_json(&account)}))),
        None => Err(ApiError::new(Ret::NotFound, format!("no user {name:?}"))),
    }
}

/// `PUT /cdn_api/users/{name}`: new password and/or role.
#[utoipa::path(
    put,
    path = "/cdn_api/users/{name}",
    tag = "users",
    operation_id = "user_update",
    summary = "Change an account's password and/or role (admin)",
    description = "The account's tokens are dropped from the grant cache, so a new role applies \
                   at once on this process and within 5 s on others.",
    params(("name" = String, Path, description = "The account's name.")),
    request_body = schemas::UserChange,
    responses((
        status = 200,
        description = "The account as changed.",
        body = Envelope<schemas::OneUser>
    )),
    security(("token" = [])),
    extensions((
        "x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::NotFound, Ret::Conflict]]))
    )),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let role = optional_str(&body, "role")?.map(parse_role).transpose()?;
    let password_hash = match optional_str(&body, "password")? {
        Some(password) => {
            check_password(password)?;
            Some(
                state
                    .inner
                    .hasher
                    .hash(password)
                    .await
                    .map_err(ApiError::internal)?,
            )
        }
        None => None,
    };
    if role.is_none() && password_hash.is_none() {
        return Err(ApiError::new(
            Ret::BadField,
            "nothing to change: give \"password\" and/or \"role\"",
        ));
    }
    let account = state
        .inner
        .store
        .update_account(&name, password_hash, role)
        .await
        .map_err(from_store)?;
    state.inner.tokens.forget_account(account.id);
    Ok(Answer::ok(json!({"user": user_json(&account)})))
}

/// `DELETE /cdn_api/users/{name}`.
#[utoipa::path(
    delete,
    path = "/cdn_api/users/{name}",
    tag = "users",
    operation_id = "user_delete",
    summary = "Delete an account (admin)",
    description = "Its tokens are revoked; its tasks stay. Refused (`2007`) for the last admin \
                   and for an account that still owns domains.",
    params(("name" = String, Path, description = "The account's name.")),
    responses((status = 200, description = "Deleted.", body = Envelope<Empty>)),
    security(("token" = [])),
    extensions((
        "x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound, Ret::Conflict]]))
    )),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let account = state
        .inner
        .store
        .account_by_name(&name)
        .await
        .map_err(from_store)?;
    state
        .inner
        .store
        .delete_account(&name)
        .await
        .map_err(from_store)?;
    if let Some(account) = account {
        state.inner.tokens.forget_account(account.id);
    }
    Ok(Answer::ok(json!({})))
}

/// `GET /cdn_api/users/{name}/webhook_secret` (the account itself, or an admin): the secret
/// its completion callbacks are signed with (created on first use).
#[utoipa::path(
    get,
    path = "/cdn_api/users/{name}/webhook_secret",
    tag = "users",
    operation_id = "webhook_secret_show",
    summary = "Show an account's webhook signing secret",
    description = "The account itself or an admin (`1004` for anyone else). The secret is created \
                   on first use.",
    params(("name" = String, Path, description = "The account's name.")),
    responses((status = 200, description = "The secret.", body = Envelope<schemas::WebhookSecret>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    if caller.name != name {
        caller.require_admin()?;
    }
    let account = state
        .inner
        .store
        .account_by_name(&name)
        .await
        .map_err(from_store)?
        .ok_or_else(|| ApiError::new(Ret::NotFound, format!("no user {name:?}")))?;
    let (fresh, _) = crate::token_auth::new_secret("pcw_");
    let secret = state
        .inner
        .store
        .webhook_secret(account.id, fresh)
        .await
        .map_err(from_store)?;
    Ok(Answer::ok(json!({"webhook_secret": secret})))
}

/// `POST /cdn_api/users/{name}/webhook_secret` (admin): a new signing secret; deliveries from
/// now on are signed with it.
#[utoipa::path(
    post,
    path = "/cdn_api/users/{name}/webhook_secret",
    tag = "users",
    operation_id = "webhook_secret_rotate",
    summary = "Replace an account's webhook signing secret (admin)",
    description = "Deliveries from now on are signed with the new secret.",
    params(("name" = String, Path, description = "The account's name.")),
    responses((
        status = 200,
        description = "The new secret.",
        body = Envelope<schemas::WebhookSecret>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn rotate_webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let (fresh, _) = crate::token_auth::new_secret("pcw_");
    state
        .inner
        .store
        .rotate_webhook_secret(&name, fresh.clone())
        .await
        .map_err(from_store)?;
    tracing::info!(user = %name, "webhook secret rotated");
    Ok(Answer::ok(json!({"webhook_secret": fresh})))
}
