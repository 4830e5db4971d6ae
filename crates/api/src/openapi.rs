//! The OpenAPI 3 description of the control-plane API, served at `GET /cdn_api/openapi.json`.
//!
//! It is generated from the code: each handler carries a `#[utoipa::path]` attribute, the wire
//! shapes it reads and writes are described by the `schemas` module beside it, and the `ret`
//! codes it can answer are listed in its `x-ret-codes` extension. [`Reference`] turns those codes
//! into one response per HTTP status (the status comes from [`Ret::http_status`], so the two
//! cannot disagree) and writes the table of every code into the description. Its tests fail
//! when a route of the router is missing here, or when `docs/openapi.json` is out of date.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::envelope::{ApiError, Ret};
use crate::routes;

#[cfg(test)]
pub(crate) mod schema_check;

/// What any call that reads or writes the store can answer.
pub(crate) const STORE: &[Ret] = &[Ret::Internal, Ret::Unavailable];
/// What any call with `X-Auth-Token` can answer: the token is looked up in the store, and a
/// non-admin account may be over its request rate.
pub(crate) const TOKEN: &[Ret] = &[
    Ret::NoToken,
    Ret::BadToken,
    Ret::Limited,
    Ret::Internal,
    Ret::Unavailable,
];
/// What a call reserved to admins adds.
pub(crate) const ADMIN: &[Ret] = &[Ret::Forbidden];
/// What reading a JSON body can answer: not JSON, not an object or a bad field, too large.
pub(crate) const BODY: &[Ret] = &[Ret::NotJson, Ret::BadField, Ret::TooLarge];

/// The value of an operation's `x-ret-codes`: 0 and every code of `groups`, each once, in order.
pub(crate) fn ret_codes(groups: &[&[Ret]]) -> Vec<i64> {
    let mut codes: Vec<i64> = std::iter::once(Ret::Ok)
        .chain(groups.iter().flat_map(|group| group.iter().copied()))
        .map(|ret| ret as i64)
        .collect();
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// The extension every operation lists its `ret` codes in.
const RET_CODES: &str = "x-ret-codes";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "precache control-plane API",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    servers((
        url = "http://{listen}",
        description = "A control-plane API listener",
        variables(("listen" = (
            default = "127.0.0.1:8080",
            description = "Its address: `--api-listen` (`PRECACHE_API_LISTEN`)"
        )))
    )),
    paths(
        routes::health::health,
        routes::tokens::create,
        routes::tokens::show,
        routes::tokens::revoke,
        routes::users::create,
        routes::users::list,
        routes::users::show,
        routes::users::update,
        routes::users::delete,
        routes::users::webhook_secret,
        routes::users::rotate_webhook_secret,
        routes::domains::create,
        routes::domains::list,
        routes::domains::show,
        routes::domains::delete,
        routes::domains::set_cache,
        routes::domains::set_origin_limits,
        routes::domains::set_backends,
        routes::certificates::set,
        routes::certificates::delete,
        routes::backends::create,
        routes::backends::list,
        routes::backends::show,
        routes::backends::delete,
        routes::backends::check,
        routes::edges::create,
        routes::edges::list,
        routes::edges::renew_token,
        routes::edges::revoke,
        routes::edge_protocol::join,
        routes::edge_protocol::hello,
        routes::edge_protocol::caught_up,
        routes::quota::mine,
        routes::quota::of_user,
        routes::quota::set,
        routes::prefetch::submit,
        routes::prefetch::list,
        routes::prefetch::status,
        routes::prefetch::cancel,
        routes::events::prefetch,
        routes::refresh::submit,
        routes::refresh::list,
        routes::refresh::status,
        routes::refresh::cancel,
        routes::events::refresh,
        routes::tasks::list_all,
        routes::audit::list,
        crate::observe::metrics,
        serve,
    ),
    components(schemas(crate::envelope::schemas::ErrorEnvelope)),
    modifiers(&Reference),
    tags(
        (name = "health", description = "Whether the control plane accepts work."),
        (name = "auth", description = "Tokens: log in, inspect, revoke."),
        (name = "users", description = "Accounts (admin), and each account's webhook signing secret."),
        (name = "domains", description = "Registered domains (备案), their origin and caching overrides."),
        (name = "edges", description = "Edge nodes (admin): creation, join tokens, revocation, state."),
        (name = "backends", description = "Backends (admin): cache fleets the operator already runs, where tasks also run."),
        (name = "edge protocol", description = "The calls a standalone edge makes to the control plane."),
        (name = "quota", description = "Daily quotas and the request rate limit."),
        (name = "audit", description = "The audit log (admin): who did what and when."),
        (name = "prefetch", description = "Prefetch (预缓存) tasks: put URLs into every edge's cache."),
        (name = "refresh", description = "Refresh (刷新) tasks: remove or mark stale cached URLs and directories on every edge."),
        (name = "tasks", description = "Every task of the caller, of both kinds."),
        (name = "meta", description = "This document and the Prometheus metrics."),
    )
)]
struct ApiDoc;

/// The description of the API as this build implements it.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The description as the JSON that is served and committed as `docs/openapi.json`.
pub(crate) fn document_json() -> Result<String, serde_json::Error> {
    // Through a `Value`, whose maps are sorted: the same document always has the same bytes.
    let value = serde_json::to_value(document())?;
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    Ok(text)
}

/// This OpenAPI description of the API.
///
/// Not in the `zt_api` envelope: it is a document. No token is needed.
#[utoipa::path(
    get,
    path = "/cdn_api/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)),
    extensions(("x-ret-codes" = json!(ret_codes(&[&[Ret::Internal]])))),
)]
pub(crate) async fn serve() -> Result<Response, ApiError> {
    let body = document_json().map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Completes the generated document: the description with the table of `ret` codes, the
/// security schemes, and the error responses of every operation from its `x-ret-codes`.
struct Reference;

impl Modify for Reference {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.info.description = Some(description());
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Auth-Token",
                "The `token.id` answered by `POST /cdn_api/auth/tokens`.",
            ))),
        );
        components.add_security_scheme(
            "edge_credential",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The edge's credential, answered by `POST /cdn_api/edge_protocol/join`.",
                    ))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_error_responses(operation);
                add_framework_rejections(operation);
                // No requirement at all would leave readers to guess; an empty list says that
                // the operation needs no credential.
                operation.security.get_or_insert_with(Vec::new);
            }
        }
    }
}

/// The codes of an operation's `x-ret-codes` (none when it has no such extension).
fn declared_rets(extensions: Option<&Extensions>) -> Vec<Ret> {
    extensions
        .and_then(|extensions| extensions.get(RET_CODES))
        .and_then(|codes| codes.as_array())
        .into_iter()
        .flatten()
        .filter_map(|code| code.as_i64().and_then(Ret::from_code))
        .collect()
}

/// One response per HTTP status the operation's error codes map to, naming the codes.
fn add_error_responses(operation: &mut Operation) {
    let mut by_status: std::collections::BTreeMap<u16, Vec<Ret>> = Default::default();
    for ret in declared_rets(operation.extensions.as_ref()) {
        if ret != Ret::Ok {
            by_status
                .entry(ret.http_status().as_u16())
                .or_default()
                .push(ret);
        }
    }
    for (status, rets) in by_status {
        let description = rets
            .iter()
            .map(|ret| format!("`ret` {}: {}", *ret as i64, ret.meaning()))
            .collect::<Vec<_>>()
            .join("; ");
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorEnvelope"))),
        );
        if rets.contains(&Ret::Limited) {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some(
                        "Seconds until the request may succeed: until the quota day turns, or \
                         until the rate limit allows another request.",
                    ))
                    .build(),
            );
        }
        if rets.contains(&Ret::TooLarge) {
            response = response.header(
                "Connection",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some(
                        "`close`: the rest of the body is not read, so the connection ends.",
                    ))
                    .build(),
            );
        }
        operation
            .responses
            .responses
            .insert(status.to_string(), response.build().into());
    }
}

/// The answers axum's extractors give before a handler runs, outside the envelope: a query
/// string they cannot parse (a filter given twice) or a path segment that is not UTF-8 once
/// percent-decoded. Described rather than changed, since clients may rely on them.
fn add_framework_rejections(operation: &mut Operation) {
    let placed = |place: ParameterIn| {
        let mut parameters = operation.parameters.iter().flatten();
        parameters.any(|parameter| parameter.parameter_in == place)
    };
    let reason = match (placed(ParameterIn::Query), placed(ParameterIn::Path)) {
        (false, false) => return,
        (true, false) => "a query string it cannot parse, such as a filter given twice",
        (false, true) => "a path parameter that is not UTF-8 once percent-decoded",
        (true, true) => {
            "a query string it cannot parse, or a path parameter that is not UTF-8 once \
             percent-decoded"
        }
    };
    let note =
        format!("`text/plain` reason from the HTTP framework, outside the envelope: {reason}");
    let text = Content::new(Some(ObjectBuilder::new().schema_type(Type::String)));
    let responses = &mut operation.responses.responses;
    match responses.get_mut("400") {
        Some(utoipa::openapi::RefOr::T(response)) => {
            response.description = format!("{}; or a {note}", response.description);
            response
                .content
                .insert("text/plain; charset=utf-8".to_string(), text);
        }
        _ => {
            let response = ResponseBuilder::new()
                .description(format!("A {note}"))
                .content("text/plain; charset=utf-8", text);
            responses.insert("400".to_string(), response.build().into());
        }
    }
}

/// The document's description: the conventions every operation shares and the `ret` codes.
fn description() -> String {
    let mut text = String::from(
        "The control plane of precache: accounts and tokens, registered domains, edges, and the \
         prefetch (预缓存) and refresh (刷新) tasks, each known by its `reqId`. This document is \
         generated from the code; `docs/api.md` explains the decisions behind it.\n\n\
         **Envelope.** Every answer under `/cdn_api`, except this document and the task event \
         streams, is `Content-Type: application/json` in the envelope of the original service: \
         `{\"zt_api\": {\"ret\": 0, \"msg\": \"OK\", ...fields}}`, written as its Flask app \
         wrote JSON (keys sorted, a two-space indent, `\", \"` between items, non-ASCII as \
         `\\uXXXX`). A failure is `{\"zt_api\": {\"ret\": code, \"msg\": reason}}` with the HTTP \
         status of its code (table below). Each operation lists the codes it can answer in \
         `x-ret-codes`, and its responses name them by HTTP status.\n\n\
         **Requests.** Bodies are JSON objects (`Content-Type` is not checked; a comma before a \
         closing `]` or `}` is tolerated); a larger body than the configured limit is `4002`.\n\n\
         **Authentication.** `X-Auth-Token: <token>`, from `POST /cdn_api/auth/tokens`; \
         logging in, `GET /cdn_api/health`, this document and `GET /metrics` need none. The \
         `/cdn_api/edge_protocol/*` calls are made by edges, with `Authorization: Bearer \
         <credential>` (the join needs none). Beyond `--rate-limit-per-account`, a non-admin \
         account's call is `4001` (HTTP 429) with `Retry-After`, before it does anything.\n\n\
         **Any path.** Every answer carries `X-Request-Id`: the client's own when it sent one \
         of at most 64 of `A-Z a-z 0-9 - _ . :`, otherwise a fresh one; log lines and `5000` \
         messages quote it. A path that is not listed here is \
         `3002` with HTTP 404; a listed path with a method it does not list is `3002` with HTTP \
         405. A query string or path parameter the HTTP framework cannot parse (a filter given \
         twice, a path segment that is not UTF-8) is HTTP 400 with a `text/plain` reason, \
         outside the envelope.\n\n\
         | `ret` | HTTP | meaning |\n|---|---|---|\n",
    );
    for ret in Ret::ALL {
        let status = match ret {
            Ret::Ok => "200 (201 when something was created)".to_string(),
            other => other.http_status().as_u16().to_string(),
        };
        text.push_str(&format!(
            "| {} | {status} | {} |\n",
            ret as i64,
            ret.meaning()
        ));
    }
    text
}

#[cfg(test)]
mod tests;
