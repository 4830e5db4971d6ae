//! The CLI's HTTP client: calls in the `zt_api` envelope, failures with their `ret`.

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

/// A control-plane answer that was not `ret` 0, or no answer at all.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status (0 without an answer).
    pub status: u16,
    /// The `ret` code (0 when the answer was not an envelope).
    pub ret: i64,
    /// Its message.
    pub msg: String,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ret != 0 {
            write!(f, "{} (ret {})", self.msg, self.ret)
        } else {
            write!(f, "{}", self.msg)
        }
    }
}

impl std::error::Error for Refused {}

/// Talks to one control plane with one token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL of the control plane.
    pub control: String,
    token: Option<String>,
}

impl Client {
    /// A client for `control`, authenticated by `token` when given.
    pub fn new(control: &str, token: Option<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            control: control.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.control));
        if let Some(token) = &self.token {
            request = request.header("X-Auth-Token", token);
        }
        request
    }

    /// Calls `path` and answers the `zt_api` object of a `ret` 0 answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refused> {
        self.call_with(method, path, body, None).await
    }

    /// [`Client::call`] with an `Idempotency-Key`, so a retry after a lost answer creates
    /// nothing twice.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Refused> {
        let mut request = self.request(method, path).timeout(Duration::from_secs(60));
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|error| Refused {
            status: 0,
            ret: 0,
            msg: format!("{}: {error}", self.control),
            retry_after: None,
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let fields = body.get("zt_api").cloned().unwrap_or(Value::Null);
        match fields.get("ret").and_then(Value::as_i64) {
            Some(0) => Ok(fields),
            ret => Err(Refused {
                status,
                ret: ret.unwrap_or(0),
                msg: fields.get("msg").and_then(Value::as_str).map_or_else(
                    || format!("HTTP {status} without an answer"),
                    str::to_string,
                ),
                retry_after,
            }),
        }
    }

    /// Opens a task's event stream (`text/event-stream`).
    pub async fn events(&self, kind: &str, req_id: &str) -> Result<reqwest::Response, Refused> {
        let response = self
            .request(Method::GET, &format!("/cdn_api/{kind}/{req_id}/events"))
            .send()
            .await
            .map_err(|error| Refused {
                status: 0,
                ret: 0,
                msg: error.to_string(),
                retry_after: None,
            })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(Refused {
                status: response.status().as_u16(),
                ret: 0,
                msg: format!("the event stream answered {}", response.status()),
                retry_after: None,
            })
        }
    }
}
