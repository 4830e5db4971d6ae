//! `/cdn_api/backends` (admin): the caches an operator already runs, registered so that tasks
//! run on them too (API.md §11). What each kind can do is in `precache_tasks::backends`.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use precache_model::time::rfc3339_millis;
use precache_store::{BackendRecord, NewBackend, EDGES_BACKEND};
use precache_tasks::backends::{self, Credentials, KINDS};
use serde_json::{json, Value};

use crate::envelope::schemas::{Empty, Envelope};
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, ADMIN, BODY, TOKEN};
use crate::request_body::{json_object, required_str};
use crate::routes::edges::check_name;
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::Caller;

/// Most targets in one backend: a fleet, not a CDN's node list.
const MAX_TARGETS: usize = 64;

fn backend_json(backend: &BackendRecord) -> Value {
    let capabilities = backend
        .credentials
        .as_ref()
        .ok()
        .and_then(|credentials| backends::build(&backend.kind, &backend.settings, credentials).ok())
        .map(|implementation| implementation.capabilities());
    // Never a credential: at most its last four characters, so an admin can tell which it is.
    let credentials = match &backend.credentials {
        Ok(credentials) => json!(credentials
            .iter()
            .map(|(name, value)| (name.clone(), json!(hint(value))))
            .collect::<serde_json::Map<_, _>>()),
        Err(_) => Value::Null,
    };
    json!({
        "name": backend.name,
        "kind": backend.kind,
        "targets": backend.targets.iter().map(|(_, url)| url).collect::<Vec<_>>(),
        "settings": backend.settings,
        "credentials": credentials,
        "credentials_error": backend.credentials.as_ref().err(),
        "capabilities": capabilities.map(|c| json!({
            "prefetch": c.prefetch,
            "url_purge": c.url_purge,
            "dir_purge": c.dir_purge,
            "invalidate": c.invalidate,
            "was_cached": c.reports_was_cached,
            "confirmed": c.confirms,
            "dry_run": c.dry_run,
        })),
        "created_at": rfc3339_millis(backend.created_at),
    })
}

/// `…` and the last four characters of a secret long enough to keep most of it hidden.
fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 16 {
        return "…".into();
    }
    format!("…{}", chars[chars.len() - 4..].iter().collect::<String>())
}

/// A target is the base URL of one cache server: `http(s)://host[:port]`, nothing after.
fn check_target(value: &Value) -> Result<String, ApiError> {
    let bad = |msg: String| ApiError::new(Ret::BadField, msg);
    let text = value
        .as_str()
        .ok_or_else(|| bad(format!("targets must hold URLs (strings), not {value}")))?;
    let url = url::Url::parse(text).map_err(|e| bad(format!("target {text:?}: {e}")))?;
    let bare = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !bare {
        return Err(bad(format!(
            "target {text:?} must be http://host[:port] (or https), with no path or credentials"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `POST /cdn_api/backends`.
#[utoipa::path(
    post,
    path = "/cdn_api/backends",
    tag = "backends",
    operation_id = "backend_create",
    summary = "Register a backend: a cache fleet tasks also run on (admin)",
    description = "`kind` is one of `varnish`, `nginx`, `trafficserver`, `cloudflare` (else \
                   `2002`); for a cache, `targets` the base URLs of its servers (1 to 64), for a \
                   CDN none (its API is the target); `settings` what the kind takes (unknown \
                   keys are `2002`); `credentials` a CDN's secrets, sealed at rest and never \
                   answered back (caches take none). A taken name is `2007`. See \
                   docs/backends.md.",
    request_body = schemas::NewBackend,
    responses((status = 201, description = "Registered.", body = Envelope<schemas::OneBackend>)),
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
    let bad = |msg: String| ApiError::new(Ret::BadField, msg);
    if let Some(other) = body
        .keys()
        .find(|key| !["name", "kind", "targets", "settings", "credentials"].contains(&key.as_str()))
    {
        return Err(bad(format!("unknown field {other:?}")));
    }
    let name = required_str(&body, "name")?;
    check_name(name)?;
    if name == EDGES_BACKEND {
        return Err(ApiError::new(
            Ret::Conflict,
            "\"edges\" is the built-in backend (precache's own edges)",
        ));
    }
    let kind = required_str(&body, "kind")?;
    if !KINDS.contains(&kind) {
        return Err(bad(format!(
            "unknown backend kind {kind:?} (expected one of: {})",
            KINDS.join(", ")
        )));
    }
    let settings = body.get("settings").cloned().unwrap_or(Value::Null);
    let settings = match settings {
        Value::Null => json!({}),
        Value::Object(_) => settings,
        other => return Err(bad(format!("settings must be an object, not {other}"))),
    };
    let credentials: Credentials = match body.get("credentials") {
        None | Some(Value::Null) => Credentials::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, value)| match value.as_str() {
                Some(text) => Ok((name.clone(), text.to_string())),
                None => Err(bad(format!("credentials.{name} must be a string"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("credentials must be an object of strings".into())),
    };
    let targets = match backends::implicit_targets(kind, &settings) {
        // A CDN's target is its API, from the settings.
        Some(implicit) => {
            if body.get("targets").is_some_and(|targets| !targets.is_null()) {
                return Err(bad(format!(
                    "{kind} takes no targets: its API is the target (settings.endpoint overrides it)"
                )));
            }
            implicit.map_err(bad)?
        }
        None => match body.get("targets") {
            Some(Value::Array(targets)) if !targets.is_empty() && targets.len() <= MAX_TARGETS => {
                targets.iter().map(check_target).collect::<Result<Vec<_>, _>>()?
            }
            Some(Value::Array(targets)) if !targets.is_empty() => {
                return Err(bad(format!("at most {MAX_TARGETS} targets per backend")))
            }
            _ => {
                return Err(bad(
                    "targets is required: the base URLs of the cache servers, e.g. [\"http://10.1.2.3:6081\"]".into(),
                ))
            }
        },
    };
    if let Some(twice) = targets
        .iter()
        .enumerate()
        .find_map(|(n, target)| targets[..n].contains(target).then_some(target))
    {
        return Err(bad(format!("target {twice} is listed twice")));
    }
    backends::build(kind, &settings, &credentials).map_err(bad)?;
    let backend = state
        .inner
        .store
        .create_backend(NewBackend {
            name: name.to_string(),
            kind: kind.to_string(),
            settings,
            targets,
            credentials,
        })
        .await
        .map_err(from_store)?;
    tracing::info!(backend = %backend.name, kind = %backend.kind, targets = backend.targets.len(), "backend registered");
    Ok(Answer::ok(json!({"backend": backend_json(&backend)}))
        .with_status(StatusCode::CREATED)
        .with_audit(backend.name.clone(), None))
}

/// `GET /cdn_api/backends`.
#[utoipa::path(
    get,
    path = "/cdn_api/backends",
    tag = "backends",
    operation_id = "backend_list",
    summary = "List the backends (admin)",
    responses((status = 200, description = "Every registered backend.", body = Envelope<schemas::Backends>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN])))),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let backends = state
        .inner
        .store
        .list_backends()
        .await
        .map_err(from_store)?;
    Ok(Answer::ok(
        json!({"backends": backends.iter().map(backend_json).collect::<Vec<_>>()}),
    ))
}

fn no_such_backend(name: &str) -> ApiError {
    ApiError::new(Ret::NotFound, format!("no backend named {name:?}"))
}

/// `GET /cdn_api/backends/{name}`.
#[utoipa::path(
    get,
    path = "/cdn_api/backends/{name}",
    tag = "backends",
    operation_id = "backend_show",
    summary = "Show a backend (admin)",
    params(("name" = String, Path, description = "The backend's name.")),
    responses((status = 200, description = "The backend.", body = Envelope<schemas::OneBackend>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let backend = state
        .inner
        .store
        .backend_named(&name)
        .await
        .map_err(from_store)?
        .ok_or_else(|| no_such_backend(&name))?;
    Ok(Answer::ok(json!({"backend": backend_json(&backend)})))
}

/// `DELETE /cdn_api/backends/{name}`.
#[utoipa::path(
    delete,
    path = "/cdn_api/backends/{name}",
    tag = "backends",
    operation_id = "backend_delete",
    summary = "Delete a backend (admin)",
    description = "`2007` while a domain names it (change the domain's backends first). Its \
                   pairs not yet run fail; finished tasks keep saying where they ran.",
    params(("name" = String, Path, description = "The backend's name.")),
    responses((status = 200, description = "Deleted.", body = Envelope<Empty>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound, Ret::Conflict]])))),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    state
        .inner
        .store
        .delete_backend(&name)
        .await
        .map_err(from_store)?;
    tracing::info!(backend = %name, "backend deleted");
    Ok(Answer::ok(json!({})))
}

/// `POST /cdn_api/backends/{name}/check`: reaches every target now.
#[utoipa::path(
    post,
    path = "/cdn_api/backends/{name}/check",
    tag = "backends",
    operation_id = "backend_check",
    summary = "Reach every target of a backend now (admin)",
    description = "Sends each target a purge of a URL no cache holds (host \
                   `precache-check.invalid`): a \"not cached\" answer shows the target is \
                   reached and allows this control plane's purges. `ok` is true when every \
                   target is.",
    params(("name" = String, Path, description = "The backend's name.")),
    responses((status = 200, description = "What each target answered.", body = Envelope<schemas::CheckResult>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let (backend, targets) = state
        .inner
        .edges
        .backend(&name)
        .await
        .map_err(from_store)?
        .ok_or_else(|| no_such_backend(&name))?;
    let checks =
        futures_util::future::join_all(targets.iter().map(|target| backend.check(target))).await;
    let results: Vec<Value> = targets
        .iter()
        .zip(&checks)
        .map(|(target, checked)| match checked {
            Ok(said) => json!({"target": target.url, "ok": true, "reason": said}),
            Err(reason) => json!({"target": target.url, "ok": false, "reason": reason}),
        })
        .collect();
    let ok = checks.iter().all(Result::is_ok);
    Ok(Answer::ok(
        json!({"backend": name, "ok": ok, "targets": results}),
    ))
}
