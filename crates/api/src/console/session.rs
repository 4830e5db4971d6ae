//! The console's session: an API token in an `HttpOnly`, `SameSite=Strict` cookie scoped to
//! `/console`, never seen by scripts; a CSRF proof derived from it for every form that changes
//! something; and the same-origin check browsers give us for free.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::AppState;
use crate::token_auth::{audit_as, caller_of, Caller};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "precache_console";

/// A signed-in console user: the account behind the session cookie, and the form proof of that
/// session.
pub(crate) struct Session {
    pub(crate) caller: Caller,
    pub(crate) csrf: String,
}

/// Why a console request has no session: it goes to the log-in form.
pub(crate) struct NoSession;

impl axum::response::IntoResponse for NoSession {
    fn into_response(self) -> axum::response::Response {
        axum::response::Redirect::to("/console/login").into_response()
    }
}

/// The session cookie's token, if the request carries one.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, token)| token.to_string())
        .filter(|token| !token.is_empty())
}

/// The form proof of the session whose token is `token`: a hash of it under a label, so it
/// names the session without revealing the token, and a page of another session cannot post.
pub(crate) fn csrf_of(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("precache-console-csrf:{token}").as_bytes(),
    ))
}

/// Whether a posted form's proof is this session's.
pub(crate) fn csrf_matches(session: &Session, posted: &str) -> bool {
    bool::from(session.csrf.as_bytes().ct_eq(posted.as_bytes()))
}

/// Whether a request that changes something comes from a page of this console: browsers say
/// where a request comes from in `Sec-Fetch-Site` (or `Origin`); a request that says neither
/// comes from no browser page and cannot carry a victim's cookie for an attacker.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            let host = host.to_str().unwrap_or("");
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority == host)
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The `Set-Cookie` of a new session (`max_age` seconds; 0 ends it).
pub(crate) fn set_cookie(token: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("precache_console=; Path=/console; Max-Age=0"))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Session, NoSession> {
        let token = cookie_token(&parts.headers).ok_or(NoSession)?;
        let caller = caller_of(state, &token).await.map_err(|_| NoSession)?;
        audit_as(parts, &caller);
        Ok(Session {
            caller,
            csrf: csrf_of(&token),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; precache_console=pct_abc; b=2"),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some("pct_abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("precache_console="),
        );
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn only_same_origin_pages_may_post() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers), "no browser page");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&headers));
    }
}
