//! `/cdn_api/domains/{domain}/certificate`: the TLS certificate edges present to players who
//! name the domain (API.md §13). The key is sealed at rest by the store and never answered back.

pub(crate) mod schemas;

use axum::body::Body;
use axum::extract::{Path, State};
use precache_model::time::rfc3339_millis;
use precache_store::CertificateFacts;
use precache_tasks::certificate_expiry;
use serde_json::{json, Value};

use crate::certificate_check;
use crate::envelope::schemas::Envelope;
use crate::envelope::{Answer, ApiError, Ret};
use crate::openapi::{ret_codes, ADMIN, BODY, TOKEN};
use crate::request_body::{json_object, required_str};
use crate::routes::domains::{changed, schemas::ChangedDomain};
use crate::state::AppState;
use crate::store_errors::from_store;
use crate::token_auth::Caller;

/// A chain of a few certificates and a key fit in this, whatever `--max-urls` makes of the
/// general body limit.
const MIN_BODY_BYTES: usize = 256 * 1024;

/// A certificate's facts on the wire.
pub(crate) fn facts_json(facts: &CertificateFacts) -> Value {
    json!({
        "subject": facts.subject,
        "sans": facts.sans,
        "not_after": rfc3339_millis(facts.not_after.saturating_mul(1000)),
        "sha256": facts.sha256,
    })
}

/// `PUT /cdn_api/domains/{domain}/certificate` (admin).
#[utoipa::path(
    put,
    path = "/cdn_api/domains/{domain}/certificate",
    tag = "domains",
    operation_id = "domain_set_certificate",
    summary = "Give a domain its TLS certificate (admin)",
    description = "Replaces any certificate the domain had. `2002` when the PEM does not \
                   parse, holds no certificate or no key, the key is not the leaf's, or the \
                   leaf does not name the domain (DNS subject alternative names; `*.example.com` \
                   matches one label); the message says which. The key is sealed at rest and \
                   never answered back. Answers once the domain table was pushed to every \
                   reachable edge.",
    params(("domain" = String, Path, description = "The domain's host name (any case).")),
    request_body = schemas::CertificateUpload,
    responses((
        status = 200,
        description = "The domain with its certificate's facts.",
        body = Envelope<ChangedDomain>
    )),
    security(("token" = [])),
    extensions((
        "x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, BODY, &[Ret::NotFound, Ret::Conflict]]))
    )),
)]
pub(crate) async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let limit = state.inner.config.max_body_bytes.max(MIN_BODY_BYTES);
    let body = json_object(body, limit).await?;
    if let Some(other) = body
        .keys()
        .find(|key| !matches!(key.as_str(), "cert_pem" | "key_pem"))
    {
        return Err(ApiError::new(
            Ret::BadField,
            format!(
                "unknown field {other:?} (the body is {{\"cert_pem\": ..., \"key_pem\": ...}})"
            ),
        ));
    }
    let cert_pem = required_str(&body, "cert_pem")?;
    let key_pem = required_str(&body, "key_pem")?;
    let name = name.to_ascii_lowercase();
    if state
        .inner
        .store
        .domain(&name)
        .await
        .map_err(from_store)?
        .is_none()
    {
        return Err(ApiError::new(
            Ret::NotFound,
            format!("domain {name} is not registered"),
        ));
    }
    let facts = certificate_check::check(&name, cert_pem, key_pem)
        .map_err(|reason| ApiError::new(Ret::BadField, reason))?;
    state
        .inner
        .store
        .set_domain_certificate(
            &name,
            precache_store::NewCertificate {
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
                facts: facts.clone(),
            },
        )
        .await
        .map_err(from_store)?;
    tracing::info!(domain = %name, sha256 = %facts.sha256, "certificate set");
    certificate_expiry::warn_if_expiring(&name, &facts);
    changed(&state, &name).await
}

/// `DELETE /cdn_api/domains/{domain}/certificate` (admin).
#[utoipa::path(
    delete,
    path = "/cdn_api/domains/{domain}/certificate",
    tag = "domains",
    operation_id = "domain_delete_certificate",
    summary = "Remove a domain's TLS certificate (admin)",
    description = "Edges stop serving the domain over TLS once the domain table reaches them \
                   (it is pushed before the answer). `3002` when the domain is not registered \
                   or has no certificate.",
    params(("domain" = String, Path, description = "The domain's host name (any case).")),
    responses((
        status = 200,
        description = "The domain, without a certificate.",
        body = Envelope<ChangedDomain>
    )),
    security(("token" = [])),
    extensions(("x-ret-codes" = json!(ret_codes(&[TOKEN, ADMIN, &[Ret::NotFound]])))),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Answer, ApiError> {
    caller.require_admin()?;
    let name = name.to_ascii_lowercase();
    state
        .inner
        .store
        .delete_domain_certificate(&name)
        .await
        .map_err(from_store)?;
    tracing::info!(domain = %name, "certificate removed");
    changed(&state, &name).await
}
