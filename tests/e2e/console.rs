//! The web console (`/console/`) over plain HTTP, without a browser: its session cookie, its
//! CSRF and same-origin checks, its security headers, escaping, and that a submission through
//! it is an ordinary task. `console_browser.rs` drives it in Chromium.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Method, StatusCode};

use crate::support::client::url;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HOST: &str = "game.example.com";

/// A client that shows redirects instead of following them.
fn browserless() -> Result<reqwest::Client, Error> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// The hidden form proof on a console page.
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
        .to_string()
}

fn location(headers: &HeaderMap) -> String {
    headers
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Everything the console promises a browser, checked on the wire.
#[tokio::test]
async fn the_console_keeps_its_session_in_a_strict_cookie_and_refuses_forged_forms() -> TestResult {
    let origin = Origin::start().await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"release 1")));
    origin.set("/b.pak", Behavior::Body(Bytes::from_static(b"release 1b")));
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path())?;
    let api = Api::new(&server);
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    let http = browserless()?;
    let page = |path: &str| format!("{}{path}", api.base);

    // Signed out: every page leads to the log-in form, and every answer carries the policy.
    let home = http.get(page("/console/")).send().await?;
    assert_eq!(home.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(home.headers()), "/console/login");
    let form = http.get(page("/console/login")).send().await?;
    let policy = form.headers()["content-security-policy"]
        .to_str()?
        .to_string();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    assert_eq!(form.headers()["x-content-type-options"], "nosniff");
    assert_eq!(form.headers()["x-frame-options"], "DENY");

    let log_in = |password: &'static str, origin_header: Option<&'static str>| {
        let mut request = http
            .post(page("/console/login"))
            .form(&[("username", "alice"), ("password", password)]);
        if let Some(value) = origin_header {
            request = request.header(ORIGIN, value);
        }
        request.send()
    };
    let wrong = log_in("not-it", None).await?;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await?.contains("wrong user name or password"));
    let forged = log_in("alice-password", Some("http://evil.example")).await?;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get(SET_COOKIE).is_none());

    // Behind a TLS proxy the browser's Origin is https, and the cookie is Secure.
    let behind_tls = http
        .post(page("/console/login"))
        .header(ORIGIN, api.base.replace("http://", "https://"))
        .form(&[("username", "alice"), ("password", "alice-password")])
        .send()
        .await?;
    assert_eq!(behind_tls.status(), StatusCode::SEE_OTHER);
    let secure_cookie = behind_tls.headers()[SET_COOKIE].to_str()?.to_string();
    assert!(secure_cookie.ends_with("; Secure"), "{secure_cookie}");

    let signed_in = log_in("alice-password", None).await?;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let set_cookie = signed_in.headers()[SET_COOKIE].to_str()?.to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_string();
    let get = |path: &str| http.get(page(path)).header(COOKIE, cookie.clone()).send();

    let list = get("/console/").await?;
    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(list.headers()["cache-control"], "no-store");
    let list = list.text().await?;
    assert!(
        list.contains("alice") && list.contains("No tasks yet"),
        "{list}"
    );
    let csrf = csrf_of(&list);
    assert_eq!(csrf.len(), 64, "{list}");
    // The cookie is the console's only: the API reads X-Auth-Token and nothing else.
    let reply = http
        .get(page("/cdn_api/tasks"))
        .header(COOKIE, cookie.clone())
        .send()
        .await?;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);

    let submit = |csrf: String, urls: String| {
        http.post(page("/console/submit"))
            .header(COOKIE, cookie.clone())
            .form(&[
                ("csrf", csrf),
                ("kind", "prefetch".to_string()),
                ("urls", urls),
            ])
            .send()
    };
    let two = format!("{}\n\n{}\n", url(HOST, "/a.pak"), url(HOST, "/b.pak"));
    let forged = submit("0".repeat(64), two.clone()).await?;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Text that is not a URL comes back escaped, never as markup.
    let refused = submit(csrf.clone(), "not a URL <script>alert(1)</script>".into()).await?;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let refused = refused.text().await?;
    assert!(!refused.contains("<script>alert"), "{refused}");
    assert!(refused.contains("&#60;script&#62;alert"), "{refused}");
    let listed = api
        .call(Method::GET, "/cdn_api/tasks", Some(&token), None)
        .await?;
    assert_eq!(listed.get("tasks").as_array().map(Vec::len), Some(0));

    let accepted = submit(csrf.clone(), two).await?;
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    let task_page = location(accepted.headers());
    let req_id = task_page.trim_start_matches("/console/tasks/").to_string();
    let task = api
        .wait_final(&token, &req_id, Duration::from_secs(30))
        .await?;
    assert_eq!(
        (&task["status"], &task["urls_total"]),
        (&serde_json::json!("done"), &serde_json::json!(2)),
        "{task}"
    );
    let shown = get(&task_page).await?.text().await?;
    assert_eq!(shown.matches(">success<").count(), 2, "{shown}");
    let events = get(&format!("{task_page}/events")).await?;
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    assert!(events.text().await?.contains("event: end"));

    // More URLs than one request takes become several tasks.
    let twelve: String = (0..12)
        .map(|n| format!("{}\n", url(HOST, &format!("/many-{n}.pak"))))
        .collect();
    let several = submit(csrf.clone(), twelve).await?;
    assert_eq!(location(several.headers()), "/console/");
    let listed = api
        .call(Method::GET, "/cdn_api/tasks", Some(&token), None)
        .await?;
    assert_eq!(listed.get("tasks").as_array().map(Vec::len), Some(3));

    // The list page: today's quota (14 prefetch URLs used), and filters.
    let list = get("/console/").await?.text().await?;
    let prefetch_row = list
        .split("id=\"quota-prefetch_urls_per_day\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or("")
        .to_string();
    assert!(prefetch_row.contains("<td>14</td>"), "{prefetch_row}");
    let done = get("/console/?kind=prefetch&status=done")
        .await?
        .text()
        .await?;
    assert!(done.contains(&req_id), "{done}");
    let elsewhere = get("/console/?domain=other.example").await?.text().await?;
    assert!(elsewhere.contains("No tasks yet") && !elsewhere.contains(&req_id));
    // The edges page is the admins'.
    assert_eq!(get("/console/edges").await?.status(), StatusCode::FORBIDDEN);

    // Logging out revokes the session's token and drops the cookie.
    let out = http
        .post(page("/console/logout"))
        .header(COOKIE, cookie.clone())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[SET_COOKIE].to_str()?.contains("Max-Age=0"));
    let after = get("/console/").await?;
    assert_eq!(location(after.headers()), "/console/login");
    // A form posted without a session changes nothing and is nobody's entry in the audit log.
    let stray = http
        .post(page("/console/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    assert_eq!(location(stray.headers()), "/console/login");
    // An admin sees the edges: the embedded one is up.
    let admin_in = http
        .post(page("/console/login"))
        .form(&[
            ("username", "admin"),
            ("password", crate::support::server::ADMIN_PASSWORD),
        ])
        .send()
        .await?;
    let admin_cookie = admin_in.headers()[SET_COOKIE]
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let edges = http
        .get(page("/console/edges"))
        .header(COOKIE, admin_cookie)
        .send()
        .await?
        .text()
        .await?;
    let local = edges
        .split("id=\"edge-local\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or("")
        .to_string();
    assert!(local.contains("class=\"state up\""), "{edges}");

    // Both log-ins and the log-out are in the audit log, with the failed one.
    let admin = api.admin().await?;
    let unnamed = api
        .call(Method::GET, "/cdn_api/audit?actor=", Some(&admin), None)
        .await?;
    assert!(
        unnamed
            .get("entries")
            .as_array()
            .is_some_and(|entries| entries.iter().all(|e| e["actor"] != "")),
        "{}",
        unnamed.text()
    );
    let audit = api
        .call(
            Method::GET,
            "/cdn_api/audit?actor=alice",
            Some(&admin),
            None,
        )
        .await?;
    let actions: Vec<&str> = audit
        .get("entries")
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["action"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        actions,
        [
            "logout",
            "task.prefetch",
            "task.prefetch",
            "task.prefetch",
            "login",
            "login",
            "login_failed",
            "login"
        ],
        "{}",
        audit.text()
    );
    Ok(())
}
