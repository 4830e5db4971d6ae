//! What the vendor CDN tests share: `precache serve` with one user's domain, an admin token,
//! and every answer kept, so that a test can show a secret appears in none of them.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::support::client::Reply;
use crate::support::server::Options;
use crate::support::{Api, Server};

/// The domain the tests' tasks are on.
pub const HOST: &str = "patch.example.com";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A server, its admin and a user owning [`HOST`].
pub struct Fixture {
    /// The server's data dir (and its database file, on SQLite).
    pub dir: tempfile::TempDir,
    /// The server.
    pub server: Server,
    /// A client of its API.
    pub api: Api,
    /// An admin token.
    pub admin: String,
    /// The user's token.
    pub token: String,
    /// Every answer's text, to look for secrets in.
    pub answers: Vec<String>,
}

impl Fixture {
    /// A server taking up to 100 URLs per request.
    pub async fn start() -> Result<Fixture, Error> {
        let dir = tempfile::tempdir()?;
        let server = Server::start_with(
            dir.path(),
            Options {
                args: vec!["--max-urls-per-request".into(), "100".into()],
                ..Options::default()
            },
        )?;
        let api = Api::new(&server);
        let token = api
            .user_with_domain("studio", HOST, "http://127.0.0.1:9")
            .await?;
        let admin = api.admin().await?;
        Ok(Fixture {
            dir,
            server,
            api,
            admin,
            token,
            answers: Vec::new(),
        })
    }

    /// A call with the admin token; its answer is kept.
    pub async fn admin_call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, Error> {
        let reply = self.api.call(method, path, Some(&self.admin), body).await?;
        self.answers.push(reply.text());
        Ok(reply)
    }

    /// Submits a task of `kind` (`prefetch`, `refresh`) as the user and waits for its end; the
    /// answers are kept.
    pub async fn task(&mut self, kind: &str, body: Value) -> Result<Value, Error> {
        let reply = self
            .api
            .call(
                Method::POST,
                &format!("/cdn_api/{kind}"),
                Some(&self.token),
                Some(body),
            )
            .await?;
        self.answers.push(reply.text());
        reply.expect(200, 0)?;
        let req_id = reply.get("reqId").as_str().unwrap_or("").to_string();
        let task = self
            .api
            .wait_final_of(kind, &self.token, &req_id, Duration::from_secs(90))
            .await?;
        self.answers.push(task.to_string());
        Ok(task)
    }

    /// `Err` naming where `secret` shows: in an answer, the server's log, or the database file.
    pub fn secret_is_nowhere(&self, secret: &str) -> Result<(), String> {
        if let Some(answer) = self.answers.iter().find(|answer| answer.contains(secret)) {
            return Err(format!("an answer shows the secret: {answer}"));
        }
        if self.server.log().contains(secret) {
            return Err("the server's log shows the secret".into());
        }
        for file in ["precache.db", "precache.db-wal"] {
            if let Ok(bytes) = std::fs::read(self.dir.path().join(file)) {
                if bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes())
                {
                    return Err(format!("{file} holds the secret in clear"));
                }
            }
        }
        Ok(())
    }
}

/// Every (URL, target) entry of a task's status.
pub fn pairs(task: &Value) -> Vec<Value> {
    task["urls"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|url| url["edges"].as_array().cloned().unwrap_or_default())
        .collect()
}
