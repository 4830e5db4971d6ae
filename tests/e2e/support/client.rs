//! A client of the API and of the edge, with the setup steps most tests share.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use super::server::{Server, ADMIN_PASSWORD};

/// An answer of the API.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// The body's bytes.
    pub raw: Bytes,
    /// The body parsed (`Null` when it is not JSON).
    pub body: Value,
}

impl Reply {
    /// `zt_api.ret`.
    pub fn ret(&self) -> i64 {
        self.body["zt_api"]["ret"].as_i64().unwrap_or(-1)
    }

    /// `zt_api.msg`.
    pub fn msg(&self) -> &str {
        self.body["zt_api"]["msg"].as_str().unwrap_or("")
    }

    /// A field of `zt_api`.
    pub fn get(&self, field: &str) -> &Value {
        &self.body["zt_api"][field]
    }

    /// The body as text, for failure messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// Checks the HTTP status, `zt_api.ret` and `Content-Type: application/json`; the error
    /// shows the whole answer.
    pub fn expect(&self, status: u16, ret: i64) -> Result<&Reply, Error> {
        let content_type = self
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if self.status == status && self.ret() == ret && content_type == "application/json" {
            Ok(self)
        } else {
            Err(format!(
                "expected HTTP {status} with ret {ret} as application/json, got HTTP {} with ret {} as {content_type:?}: {}",
                self.status,
                self.ret(),
                self.text()
            )
            .into())
        }
    }
}

/// Talks to one server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// Base URL of the API.
    pub base: String,
    /// Address of the edge.
    pub edge: String,
    /// Base URL of the edge's admin protocol.
    pub edge_admin: String,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Api {
    /// A client for `server`.
    pub fn new(server: &Server) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Api {
            http,
            base: server.api.clone(),
            edge: server.edge.clone(),
            edge_admin: server.edge_admin.clone(),
        }
    }

    /// The same client aimed at another edge's data plane (`host:port`).
    pub fn at_edge(&self, edge: &str) -> Api {
        Api {
            edge: edge.to_string(),
            ..self.clone()
        }
    }

    /// Sends a raw body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.bytes().await?;
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            raw,
            body,
        })
    }

    /// Sends JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Reply, Error> {
        let body = body.map(|value| serde_json::to_vec(&value)).transpose()?;
        self.send(method, path, token, body).await
    }

    /// Logs in and returns the token.
    pub async fn login(&self, user: &str, password: &str) -> Result<String, Error> {
        let reply = self
            .call(
                Method::POST,
                "/cdn_api/auth/tokens",
                None,
                Some(json!({"username": user, "password": password})),
            )
            .await?;
        match reply.get("token")["id"].as_str() {
            Some(token) if reply.status == 201 => Ok(token.to_string()),
            _ => Err(format!(
                "login as {user} failed: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.raw)
            )
            .into()),
        }
    }

    /// The bootstrap admin's token.
    pub async fn admin(&self) -> Result<String, Error> {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates `user` (password `<user>-password`) and logs in as them.
    pub async fn create_user(&self, admin: &str, user: &str) -> Result<String, Error> {
        let password = format!("{user}-password");
        let reply = self
            .call(
                Method::POST,
                "/cdn_api/users",
                Some(admin),
                Some(json!({"name": user, "password": password})),
            )
            .await?;
        if reply.status != 201 {
            return Err(format!("create user {user}: {} {}", reply.status, reply.msg()).into());
        }
        self.login(user, &password).await
    }

    /// Registers `domain` with `origin` for `owner`.
    pub async fn register_domain(
        &self,
        admin: &str,
        domain: &str,
        origin: &str,
        owner: &str,
    ) -> Result<(), Error> {
        let reply = self
            .call(
                Method::POST,
                "/cdn_api/domains",
                Some(admin),
                Some(json!({"domain": domain, "origin": origin, "owner": owner})),
            )
            .await?;
        if reply.status != 201 {
            return Err(format!("register {domain}: {} {}", reply.status, reply.msg()).into());
        }
        Ok(())
    }

    /// Creates `user`, registers `domain` to it, and returns the user's token.
    pub async fn user_with_domain(
        &self,
        user: &str,
        domain: &str,
        origin: &str,
    ) -> Result<String, Error> {
        let admin = self.admin().await?;
        let token = self.create_user(&admin, user).await?;
        self.register_domain(&admin, domain, origin, user).await?;
        Ok(token)
    }

    /// Submits a prefetch.
    pub async fn prefetch(&self, token: &str, urls: &[String]) -> Result<Reply, Error> {
        self.call(
            Method::POST,
            "/cdn_api/prefetch",
            Some(token),
            Some(json!({"urls": urls})),
        )
        .await
    }

    /// Submits a prefetch that must be accepted; returns the `reqId`.
    pub async fn prefetch_ok(&self, token: &str, urls: &[String]) -> Result<String, Error> {
        let reply = self.prefetch(token, urls).await?;
        match reply.get("reqId").as_str() {
            Some(id) if reply.status == 200 && reply.ret() == 0 => Ok(id.to_string()),
            _ => Err(format!(
                "prefetch rejected: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.raw)
            )
            .into()),
        }
    }

    /// Submits a refresh (`body` as `POST /cdn_api/refresh` takes it) that must be accepted;
    /// returns the `reqId`.
    pub async fn refresh_ok(&self, token: &str, body: Value) -> Result<String, Error> {
        let reply = self
            .call(Method::POST, "/cdn_api/refresh", Some(token), Some(body))
            .await?;
        reply.expect(200, 0)?;
        Ok(reply.get("reqId").as_str().unwrap_or("").to_string())
    }

    /// Polls the status of a task until it is `done` or `failed`; returns `zt_api`.
    pub async fn wait_final(
        &self,
        token: &str,
        req_id: &str,
        limit: Duration,
    ) -> Result<Value, Error> {
        self.wait_final_of("prefetch", token, req_id, limit).await
    }

    /// Polls a task of `kind` (`prefetch` or `refresh`) until it is `done` or `failed`.
    pub async fn wait_final_of(
        &self,
        kind: &str,
        token: &str,
        req_id: &str,
        limit: Duration,
    ) -> Result<Value, Error> {
        let started = Instant::now();
        loop {
            let reply = self
                .call(
                    Method::GET,
                    &format!("/cdn_api/{kind}/{req_id}"),
                    Some(token),
                    None,
                )
                .await?;
            let status = reply.get("status").as_str().unwrap_or("").to_string();
            if matches!(status.as_str(), "done" | "failed" | "cancelled") {
                return Ok(reply.body["zt_api"].clone());
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "task {req_id} still {status:?} after {limit:?}: {}",
                    reply.body
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET` on the edge with this `Host` and extra request headers.
    pub async fn edge_get_with(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response, Error> {
        let mut request = self
            .http
            .get(format!("http://{}{path}", self.edge))
            .header("Host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Ok(request.send().await?)
    }

    /// Sends a purge command to the edge's admin protocol; returns the HTTP status and answer.
    pub async fn edge_purge(&self, command: Value) -> Result<(u16, Value), Error> {
        let response = self
            .http
            .post(format!("{}/edge/v1/purge", self.edge_admin))
            .bearer_auth(super::server::EDGE_ADMIN_SECRET)
            .json(&command)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// The edge's status from its admin protocol.
    pub async fn edge_status(&self) -> Result<Value, Error> {
        Ok(self
            .http
            .get(format!("{}/edge/v1/status", self.edge_admin))
            .bearer_auth(super::server::EDGE_ADMIN_SECRET)
            .send()
            .await?
            .error_for_status()?
            .json::<Value>()
            .await?)
    }

    /// `GET` on the edge with this `Host`.
    pub async fn edge_get(&self, host: &str, path: &str) -> Result<reqwest::Response, Error> {
        Ok(self
            .http
            .get(format!("http://{}{path}", self.edge))
            .header("Host", host)
            .send()
            .await?)
    }
}

/// `http://<domain><path>`.
pub fn url(domain: &str, path: &str) -> String {
    format!("http://{domain}{path}")
}
