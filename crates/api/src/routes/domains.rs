//! `/cdn_api/domains`: registration (备案) of domains, with their origin.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use precache_model::edge_protocol::{CachePolicy, OriginLimits};
use precache_model::time::rfc3339_millis;
use precache_model::{DomainName, Origin, Role};
use precache_store::Domain;
use serde_json::{json, Value};

use crate::envelope::schemas::{Empty, Envelope};
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, ADMIN, BODY, TOKEN};
use crate::request_body::{json_object, optional_str, required_str};
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::Caller;

fn domain_json(domain: &Domain) -> Value {
    json!({
        "domain": domain.name.as_str(),
        "owner": domain.owner_name,
        "origin": domain.origin.to_string(),
        "origin_host": domain.origin_host,
        "cache": policy_json(&domain.cache),
        "origin_limits": {
            "max_concurrent_fetches": domain.origin_limits.max_concurrent_fetches,
            "max_bandwidth": domain.origin_limits.max_bandwidth,
        },
        "backends": domain.backends,
        "created_at": rfc3339_millis(domain.created_at),
        "certificate": domain.certificate.as_ref().map(crate::routes::certificates::facts_json),
    })
}

fn policy_json(policy: &CachePolicy) -> Value {
    json!({
        "default_ttl": policy.default_ttl_secs,
        "ignore_origin_no_cache": policy.ignore_origin_no_cache,
        "cache_query_string": policy.cache_query_string,
    })
}

/// Reads the `cache` object of a domain registration (absent: the defaults). Unknown keys are
/// errors, so a misspelt override is not silently ignored.
fn parse_policy(value: Option<&Value>) -> Result<CachePolicy, ApiError> {
    let mut policy = CachePolicy::default();
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(policy);
    };
    let bad = |msg: String| ApiError::new(Ret::BadField, msg);
    let Some(object) = value.as_object() else {
        return Err(bad("cache must be an object".into()));
    };
    for (key, value) in object {
        match key.as_str() {
            "default_ttl" => {
                policy.default_ttl_secs = match value {
                    Value::Null => None,
                    _ => Some(value.as_u64().ok_or_else(|| {
                        bad(format!(
                            "cache.default_ttl must be a whole number of seconds, not {value}"
                        ))
                    })?),
                }
            }
            "ignore_origin_no_cache" => {
                policy.ignore_origin_no_cache = value.as_bool().ok_or_else(|| {
                    bad(format!("cache.ignore_origin_no_cache must be true or false, not {value}"))
                })?
            }
            "cache_query_string" => {
                policy.cache_query_string = value.as_bool().ok_or_else(|| {
                    bad(format!("cache.cache_query_string must be true or false, not {value}"))
                })?
            }
            other => {
                return Err(bad(format!(
                    "unknown cache setting {other:?} (known: default_ttl, ignore_origin_no_cache, cache_query_string)"
                )))
            }
        }
    }
    Ok(policy)
}

/// Reads a list of backend names (absent: `["edges"]`): at least one, no repeats. Whether each
/// exists is the store's to say (`3002`).
fn parse_backends(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(vec![precache_store::EDGES_BACKEND.to_string()]);
    };
    let bad = |msg: String| ApiError::new(Ret::BadField, msg);
    let names = value.as_array().ok_or_else(|| {
        bad(format!(
            "backends must be a list of backend names, not {value}"
        ))
    })?;
    let mut backends: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = name
            .as_str()
            .ok_or_else(|| bad(format!("backends must hold names (strings), not {name}")))?;
        if backends.iter().any(|seen| seen == name) {
            return Err(bad(format!("backend {name:?} is listed twice")));
        }
        backends.push(name.to_string());
    }
    if backends.is_empty() {
        return Err(bad(
            "backends must name at least one backend (\"edges\" is precache's own)".into(),
        ));
    }
    Ok(backends)
}

/// The answer for a domain the caller may not see: the same whether it exists or not.
pub(crate) fn not_yours(domain: &str) -> ApiError {
    ApiError::new(
        Ret::DomainNotYours,
        format!("domain {domain} is not registered to your account"),
    )
}

/// Pushes the registry to the edges before answering, so a domain that was just registered is
/// served (and can be prefetched) as soon as the client hears back. An edge that is down gets
/// it from the background sync when it returns.
async fn sync_edges(state: &AppState) {
    if let Err(error) = state.inner.edges.sync_now().await {
        tracing::warn!(%error, "could not push the domain table to the edges now; the background sync retries");
    }
}

/// After a change to domain `name`: the registry pushed to the edges, and the domain as it is now.
pub(crate) async fn changed(state: &AppState, name: &str) -> Result<Answer, ApiError> {
    sync_edges(state).await;
    let domain = state.inner.store.domain(name).await.map_err(from_store)?;
    Ok(Answer::ok(
        json!({"domain": domain.as_ref().map(domain_json)}),
    ))
}

/// `POST /cdn_api/domains`.
#[utoipa::path(
    post,
    path = "/cdn_api/domains",
    tag = "domains",
    operation_id = "domain_create",
    summary = "Register a domain (admin)",
    description = "Answers once the domain table was pushed to every reachable edge, so the \
                   domain is served at once. A registered domain is `2007`, an unknown owner \
                   `3002`.",
    request_body = schemas::NewDomain,
    responses((status = 201, description = "Registered.", body = Envelope<schemas::OneDomain>)),
    security(("token" = [])),
    extensions((
        "x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::Conflict, Ret::NotFound]]))
    )),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let name = DomainName::parse(required_str(&body, "domain")?)
        .map_err(|reason| ApiError::new(Ret::BadField, reason))?;
    let origin = Origin::parse(required_str(&body, "origin")?)
        .map_err(|reason| ApiError::new(Ret::BadField, reason))?;
    let owner = required_str(&body, "owner")?;
    let origin_host = match optional_str(&body, "origin_host")? {
        Some(host) => Some(
            DomainName::parse(host)
                .map(String::from)
                .or_else(|_| {
                    Origin::parse(&format!("http://{host}")).map(|_| host.to_ascii_lowercase())
                })
                .map_err(|_| {
                    ApiError::new(
                        Ret::BadField,
                        format!("origin_host {host:?} is not a host name"),
                    )
                })?,
        ),
        None => None,
    };
    let cache = parse_policy(body.get("cache"))?;
    let backends = parse_backends(body.get("backends"))?;
    let domain = state
        .inner
        .store
        .create_domain(name, owner, origin, origin_host, cache, backends)
        .await
        .map_err(from_store)?;
    sync_edges(&state).await;
    Ok(Answer::ok(json!({"domain": domain_json(&domain)}))
        .with_status(StatusCode::CREATED)
        .with_audit(domain.name.as_str().to_string(), None))
}

/// `GET /cdn_api/domains`: admins see every domain, users their own.
#[utoipa::path(
    get,
    path = "/cdn_api/domains",
    tag = "domains",
    operation_id = "domain_list",
    summary = "List domains",
    description = "Admins see every domain, users their own.",
    responses((status = 200, description = "The domains.", body = Envelope<schemas::Domains>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN])))),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    let owner = (caller.role != Role::Admin).then_some(caller.account_id);
    let domains = state
        .inner
        .store
        .list_domains(owner)
        .await
        .map_err(from_store)?;
    Ok(Answer::ok(
        json!({"domains": domains.iter().map(domain_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /cdn_api/domains/{domain}`.
#[utoipa::path(
    get,
    path = "/cdn_api/domains/{domain}",
    tag = "domains",
    operation_id = "domain_show",
    summary = "Show a domain",
    description = "A domain that is not the caller's is `2006` whether it exists or not; only \
                   admins get `3002` for an unregistered domain.",
    params(("domain" = String, Path, description = "The domain's host name (any case).")),
    responses((status = 200, description = "The domain.", body = Envelope<schemas::OneDomain>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, &[Ret::DomainNotYours, Ret::NotFound]])))),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    let name = name.to_ascii_lowercase();
    let domain = state.inner.store.domain(&name).await.map_err(from_store)?;
    match domain {
        Some(domain) if caller.role == Role::Admin || domain.owner_id == caller.account_id => {
            Ok(Answer::ok(json!({"domain": domain_json(&domain)})))
        }
        None if caller.role == Role::Admin => Err(ApiError::new(
            Ret::NotFound,
            format!("domain {name} is not registered"),
        )),
        _ => Err(not_yours(&name)),
    }
}

/// `PUT /cdn_api/domains/{domain}/cache`: replaces the domain's caching overrides (the body
/// is the `cache` object of a registration). Objects already cached keep the freshness they
/// were stored with until they are refreshed.
#[utoipa::path(
    put,
    path = "/cdn_api/domains/{domain}/cache",
    tag = "domains",
    operation_id = "domain_set_cache",
    summary = "Replace a domain's caching overrides (admin)",
    description = "The body is the `cache` object of a registration; absent keys take their \
                   defaults. Objects already cached keep the freshness they were stored with \
                   until they are refreshed.",
    params(("domain" = String, Path, description = "The domain's host name (any case).")),
    request_body = schemas::CacheSettings,
    responses((
        status = 200,
        description = "The domain as changed.",
        body = Envelope<schemas::ChangedDomain>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::NotFound]])))),
)]
pub(crate) async fn set_cache(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let policy = parse_policy(Some(&Value::Object(body)))?;
    let name = name.to_ascii_lowercase();
    state
        .inner
        .store
        .set_domain_cache_policy(&name, policy)
        .await
        .map_err(from_store)?;
    changed(&state, &name).await
}

/// Reads an origin-limits object; unknown keys are errors, `null` removes a limit.
fn parse_origin_limits(object: &serde_json::Map<String, Value>) -> Result<OriginLimits, ApiError> {
    let mut limits = OriginLimits::default();
    for (key, value) in object {
        let positive = |what: &str| match value {
            Value::Null => Ok(None),
            _ => value.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| {
                ApiError::new(
                    Ret::BadField,
                    format!("{key} must be a positive whole number of {what} or null, not {value}"),
                )
            }),
        };
        match key.as_str() {
            "max_concurrent_fetches" => {
                limits.max_concurrent_fetches =
                    positive("fetches")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            }
            "max_bandwidth" => limits.max_bandwidth = positive("bytes per second")?,
            other => {
                return Err(ApiError::new(
                    Ret::BadField,
                    format!(
                        "unknown origin limit {other:?} (max_concurrent_fetches, max_bandwidth)"
                    ),
                ))
            }
        }
    }
    Ok(limits)
}

/// `PUT /cdn_api/domains/{domain}/origin_limits` (admin): how hard prefetching may press the
/// domain's origin: `max_concurrent_fetches` (pairs fetching at once) and `max_bandwidth`
/// (bytes per second, shared by those fetches). Applies to pairs queued from then on.
#[utoipa::path(
    put,
    path = "/cdn_api/domains/{domain}/origin_limits",
    tag = "domains",
    operation_id = "domain_set_origin_limits",
    summary = "Set how hard prefetching may press a domain's origin (admin)",
    description = "Applies to pairs queued from then on, per control-plane process.",
    params(("domain" = String, Path, description = "The domain's host name (any case).")),
    request_body = schemas::OriginLimitsChange,
    responses((
        status = 200,
        description = "The domain as changed.",
        body = Envelope<schemas::ChangedDomain>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::NotFound]])))),
)]
pub(crate) async fn set_origin_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    let limits = parse_origin_limits(&body)?;
    let name = name.to_ascii_lowercase();
    state
        .inner
        .store
        .set_domain_origin_limits(&name, limits)
        .await
        .map_err(from_store)?;
    changed(&state, &name).await
}

/// `PUT /cdn_api/domains/{domain}/backends` (admin): the backends the domain's tasks run on
/// from now on (tasks already accepted keep theirs).
#[utoipa::path(
    put,
    path = "/cdn_api/domains/{domain}/backends",
    tag = "domains",
    operation_id = "domain_set_backends",
    summary = "Set the backends a domain's tasks run on (admin)",
    description = "`edges` is precache's own edges; other names are backends registered with \
                   `POST /cdn_api/backends` (`3002` for one that is not). Tasks already \
                   accepted keep the targets they had.",
    params(("domain" = String, Path, description = "The domain's host name (any case).")),
    request_body = schemas::BackendsChange,
    responses((
        status = 200,
        description = "The domain as changed.",
        body = Envelope<schemas::ChangedDomain>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::NotFound]])))),
)]
pub(crate) async fn set_backends(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let body = json_object(body, state.inner.config.max_body_bytes).await?;
    if let Some(other) = body.keys().find(|key| *key != "backends") {
        return Err(ApiError::new(
            Ret::BadField,
            format!("unknown field {other:?} (the body is {{\"backends\": [...]}})"),
        ));
    }
    let backends = match body.get("backends") {
        Some(value) if !value.is_null() => parse_backends(Some(value))?,
        _ => {
            return Err(ApiError::new(
                Ret::BadField,
                "backends is required: a list of backend names",
            ))
        }
    };
    let name = name.to_ascii_lowercase();
    state
        .inner
        .store
        .set_domain_backends(&name, backends)
        .await
        .map_err(from_store)?;
    changed(&state, &name).await
}

/// `DELETE /cdn_api/domains/{domain}`.
#[utoipa::path(
    delete,
    path = "/cdn_api/domains/{domain}",
    tag = "domains",
    operation_id = "domain_delete",
    summary = "Unregister a domain (admin)",
    params(("domain" = String, Path, description = "The domain's host name (any case).")),
    responses((status = 200, description = "Unregistered.", body = Envelope<Empty>)),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
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
        .delete_domain(&name.to_ascii_lowercase())
        .await
        .map_err(from_store)?;
    sync_edges(&state).await;
    Ok(Answer::ok(json!({})))
}
