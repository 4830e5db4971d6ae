//! Completion callbacks: signed, retried after a failure, every attempt in the status; private
//! addresses refused unless allowed; the signing secret per account, rotated by an admin.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::client::url;
use crate::support::server::Options;
use crate::support::{Api, Behavior, Origin, Server, TestResult};

const HOST: &str = "game.example.com";

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver on loopback that answers 500 to the first delivery and 200 to the others.
async fn receiver() -> std::io::Result<(String, Received)> {
    let received: Received = Arc::default();
    let log = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let log = Arc::clone(&log);
            async move {
                let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                log.push((headers, body));
                if log.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{address}/hook"), received))
}

fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut parts = header.split(',');
    let (Some(t), Some(v1)) = (
        parts.next().and_then(|p| p.strip_prefix("t=")),
        parts.next().and_then(|p| p.strip_prefix("v1=")),
    ) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

#[tokio::test]
async fn a_finished_task_is_posted_signed_and_retried_until_delivered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(
        dir.path(),
        Options {
            args: [
                "--callback-allow-hosts",
                "127.0.0.1",
                "--callback-backoff",
                "200ms",
            ]
            .map(String::from)
            .to_vec(),
            ..Options::default()
        },
    )?;
    let api = Api::new(&server);
    let origin = Origin::start().await?;
    let token = api.user_with_domain("alice", HOST, &origin.url()).await?;
    origin.set("/a.pak", Behavior::Body(Bytes::from_static(b"a")));
    let (hook, received) = receiver().await?;

    let secret_reply = api
        .call(
            Method::GET,
            "/cdn_api/users/alice/webhook_secret",
            Some(&token),
            None,
        )
        .await?;
    secret_reply.expect(200, 0)?;
    let secret = secret_reply
        .get("webhook_secret")
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(secret.len() >= 32, "{secret:?}");

    let reply = api
        .call(
            Method::POST,
            "/cdn_api/prefetch",
            Some(&token),
            Some(json!({"urls": [url(HOST, "/a.pak")], "callback_url": hook})),
        )
        .await?;
    reply.expect(200, 0)?;
    let req_id = reply.get("reqId").as_str().unwrap_or("").to_string();

    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().map(|log| log.len()).unwrap_or(0) < 2 {
        if Instant::now() > deadline {
            return Err("the callback was not retried after a 500".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries = received.lock().map(|log| log.clone()).unwrap_or_default();
    for (headers, body) in &deliveries {
        let signature = headers["x-precache-signature"].to_str()?;
        assert!(verify(&secret, signature, body), "{signature}");
        assert_eq!(headers["x-precache-event"], "task.finished");
        let task: Value = serde_json::from_slice(body)?;
        assert_eq!(task["zt_api"]["reqId"], req_id.as_str());
        assert_eq!(task["zt_api"]["status"], "done");
    }

    // Every attempt shows in the status.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = api
            .call(
                Method::GET,
                &format!("/cdn_api/prefetch/{req_id}"),
                Some(&token),
                None,
            )
            .await?;
        if status.get("callback")["state"] == "delivered" || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let callback = status.get("callback");
    assert_eq!(callback["state"], "delivered", "{callback}");
    assert_eq!(callback["attempts"][0]["http_status"], 500, "{callback}");
    assert!(callback["attempts"][0]["error"].is_string(), "{callback}");
    assert_eq!(callback["attempts"][1]["http_status"], 200, "{callback}");
    assert_eq!(callback["attempts"].as_array().map(Vec::len), Some(2));

    // Non-public and non-HTTP callback URLs are refused at submission; nothing is accepted.
    for bad in [
        "http://10.0.0.1/hook",
        "http://[::1]:9/hook",
        "ftp://example.com/hook",
    ] {
        let refused = api
            .call(
                Method::POST,
                "/cdn_api/prefetch",
                Some(&token),
                Some(json!({"urls": [url(HOST, "/a.pak")], "callback_url": bad})),
            )
            .await?;
        refused.expect(400, 2002)?;
    }

    // An admin rotates the secret; another user cannot read it.
    let admin = api.admin().await?;
    let rotated = api
        .call(
            Method::POST,
            "/cdn_api/users/alice/webhook_secret",
            Some(&admin),
            None,
        )
        .await?;
    rotated.expect(200, 0)?;
    let fresh = rotated.get("webhook_secret").as_str().unwrap_or("");
    assert_ne!(fresh, secret);
    let seen = api
        .call(
            Method::GET,
            "/cdn_api/users/alice/webhook_secret",
            Some(&token),
            None,
        )
        .await?;
    assert_eq!(seen.get("webhook_secret"), fresh);
    let bob = api.create_user(&admin, "bob").await?;
    api.call(
        Method::GET,
        "/cdn_api/users/alice/webhook_secret",
        Some(&bob),
        None,
    )
    .await?
    .expect(403, 1004)?;
    api.call(
        Method::POST,
        "/cdn_api/users/alice/webhook_secret",
        Some(&token),
        None,
    )
    .await?
    .expect(403, 1004)?;
    Ok(())
}
