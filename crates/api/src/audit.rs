//! The audit log's recording side: a route layer that writes one entry for every change an
//! account made (and every log-in, whether it succeeded or not) before the answer leaves.
//!
//! What was done is the route's (its action in [`action_of`]); who did it is filled in by whatever
//! authenticated the request ([`AuditActor`], set by the `Caller` extractor, a log-in with the
//! name it tried, an edge's join); what it was done to is the route's path parameter, or what a
//! handler names on its `Answer` ([`Audited`]: a created account's or domain's name). Task
//! submissions write their entry in the task's own transaction. Nothing else of the request is
//! read, so no password, token, key or credential can reach an entry.

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use precache_model::time::now_millis;
use precache_model::AccountId;
use precache_store::NewAuditEntry;
use serde_json::Value;

use crate::client_address::ClientAddress;
use crate::envelope::Audited;
use crate::state::AppState;

/// The action of a change made through `method` on `route` (the route's template), or `None`
/// for requests that change nothing worth recording (reads, heartbeats, checks).
pub(crate) fn action_of(method: &Method, route: &str) -> Option<&'static str> {
    let action = match (method.as_str(), route) {
        ("POST", "/cdn_api/auth/tokens") => "login",
        ("DELETE", "/cdn_api/auth/tokens") => "logout",
        ("POST", "/console/login") => "login",
        ("POST", "/console/logout") => "logout",
        ("POST", "/cdn_api/users") => "account.create",
        ("PUT", "/cdn_api/users/{name}") => "account.update",
        ("DELETE", "/cdn_api/users/{name}") => "account.delete",
        ("POST", "/cdn_api/users/{name}/webhook_secret") => "account.webhook_secret",
        ("POST", "/cdn_api/domains") => "domain.create",
        ("DELETE", "/cdn_api/domains/{domain}") => "domain.delete",
        ("PUT", "/cdn_api/domains/{domain}/cache") => "domain.cache",
        ("PUT", "/cdn_api/domains/{domain}/origin_limits") => "domain.origin_limits",
        ("PUT", "/cdn_api/domains/{domain}/backends") => "domain.backends",
        ("PUT", "/cdn_api/domains/{domain}/certificate") => "domain.certificate",
        ("DELETE", "/cdn_api/domains/{domain}/certificate") => "domain.certificate_delete",
        ("POST", "/cdn_api/backends") => "backend.create",
        ("DELETE", "/cdn_api/backends/{name}") => "backend.delete",
        ("POST", "/cdn_api/edges") => "edge.create",
        ("POST", "/cdn_api/edges/{name}/join_token") => "edge.join_token",
        ("POST", "/cdn_api/edges/{name}/revoke") => "edge.revoke",
        ("POST", precache_model::edge_protocol::JOIN_PATH) => "edge.join",
        ("PUT", "/cdn_api/quota/{user}") => "quota.set",
        ("POST", "/cdn_api/prefetch") => "task.prefetch",
        ("DELETE", "/cdn_api/prefetch/{req_id}") => "task.cancel",
        ("POST", "/cdn_api/refresh") => "task.refresh",
        ("DELETE", "/cdn_api/refresh/{req_id}") => "task.cancel",
        _ => return None,
    };
    Some(action)
}

/// Who the request acts as, once something authenticated it: shared between the layer (which
/// puts it in the request) and the extractors that fill it in; with the client's address, so
/// that a handler writing its entry in its own transaction has everything the layer would.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditActor {
    actor: Arc<Mutex<Option<Actor>>>,
    client: Option<String>,
}

/// An account's id (when the actor is one) and the actor's name.
type Actor = (Option<AccountId>, String);

impl AuditActor {
    /// The account (or, without one, the name) the request acts as.
    pub(crate) fn set(&self, account: Option<AccountId>, name: &str) {
        let mut actor = self
            .actor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *actor = Some((account, name.to_string()));
    }

    fn get(&self) -> Option<Actor> {
        self.actor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The entry of `action` on `target` by this request's actor, now.
    pub(crate) fn entry(
        &self,
        action: &str,
        target: Option<String>,
        detail: Option<&Value>,
    ) -> NewAuditEntry {
        let (actor_id, actor) = self.get().unwrap_or((None, String::new()));
        NewAuditEntry {
            at: now_millis(),
            actor_id: actor_id.map(|id| id.0),
            actor,
            client: self.client.clone(),
            request_id: crate::observe::current_request_id(),
            action: action.to_string(),
            target,
            detail: detail.map(Value::to_string),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditActor {
    type Rejection = std::convert::Infallible;

    /// The request's slot, or a slot nobody reads on a route the layer does not record.
    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<AuditActor, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<AuditActor>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The layer: records the change once the handler has answered, before the answer leaves. A
/// change that failed is not recorded, except a log-in (`login_failed`, with its `ret`). An entry
/// that cannot be written is logged and counted; the change it describes stands.
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    // Reads change nothing; every request that may change something gets an actor slot, also
    // on routes whose handlers write their entries themselves (submissions, from the API or
    // the console).
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    let action = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| action_of(request.method(), route.as_str()));
    let (mut parts, body) = request.into_parts();
    let path_target = match RawPathParams::from_request_parts(&mut parts, &state).await {
        Ok(params) => params.iter().next().map(|(_, value)| value.to_string()),
        Err(_) => None,
    };
    let client = ClientAddress::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .map(|ClientAddress(address)| address.to_string());
    let actor = AuditActor {
        actor: Arc::default(),
        client,
    };
    parts.extensions.insert(actor.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    let Some(action) = action else {
        return response;
    };

    // The console answers a change with a redirect to the page that shows it.
    let succeeded = response.status().is_success() || response.status().is_redirection();
    let action = match (action, succeeded) {
        (_, true) => action,
        ("login", false) => "login_failed",
        (_, false) => return response,
    };
    let audited = response
        .extensions()
        .get::<Audited>()
        .cloned()
        .unwrap_or_default();
    if audited.recorded {
        return response;
    }
    let mut detail = audited.detail;
    if !succeeded {
        let ret = response
            .extensions()
            .get::<crate::envelope::RetCode>()
            .map(|ret| ret.0);
        detail = Some(serde_json::json!({ "ret": ret }));
    }
    if actor.get().is_none() {
        // Nobody was named: the request never got as far as a credential or a log-in's name
        // (a console form posted without a session, a log-in refused as cross-site).
        return response;
    }
    let entry = actor.entry(action, audited.target.or(path_target), detail.as_ref());
    // A task of its own: a client hanging up drops this future, and the change it made stands.
    let store = state.inner.store.clone();
    let written = tokio::spawn(async move { store.record_audit(entry).await }).await;
    let failure = match written {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(error) => Some(error.to_string()),
    };
    if let Some(error) = failure {
        metrics::counter!("precache_audit_write_failures_total").increment(1);
        tracing::error!(%error, action, "could not write the audit log entry of a change");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_heartbeats_and_checks_are_not_recorded() {
        assert_eq!(action_of(&Method::GET, "/cdn_api/domains"), None);
        assert_eq!(
            action_of(&Method::POST, "/cdn_api/backends/{name}/check"),
            None
        );
        assert_eq!(
            action_of(&Method::POST, precache_model::edge_protocol::HELLO_PATH),
            None
        );
        assert_eq!(
            action_of(&Method::POST, "/cdn_api/domains"),
            Some("domain.create")
        );
    }
}
