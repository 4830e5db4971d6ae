//! The `{"zt_api": {...}}` envelope, its `ret` codes, and how it is written on the wire.
//!
//! The original service was a Flask app, whose `jsonify` wrote sorted keys, a two-space indent,
//! Python 2's `", "` item separator (so a space before each line break) and ASCII-only strings.
//! The seed's sample answer is exactly that form: its `Content-Length: 134` matches it byte for
//! byte (see docs/api.md). Every answer is written the same way, so clients that compared bytes
//! or lengths against the old service keep working.

pub(crate) mod schemas;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// A `ret` code of API.md §3 (plus the two this implementation adds, see docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// Success.
    Ok = 0,
    /// No `X-Auth-Token` header.
    NoToken = 1001,
    /// Token unknown, expired or revoked.
    BadToken = 1002,
    /// Wrong user name or password.
    BadCredentials = 1003,
    /// The account's role does not allow this.
    Forbidden = 1004,
    /// The body is not JSON.
    NotJson = 2001,
    /// A required field is missing or has the wrong type.
    BadField = 2002,
    /// More URLs than allowed in one request.
    TooManyUrls = 2003,
    /// URLs on more than one domain.
    MixedDomains = 2004,
    /// A URL is invalid.
    BadUrl = 2005,
    /// The domain is not registered to the caller.
    DomainNotYours = 2006,
    /// The change conflicts with what exists (a name taken, a rule that would break).
    Conflict = 2007,
    /// No such `reqId` for the caller.
    NoSuchTask = 3001,
    /// No such user, domain or route.
    NotFound = 3002,
    /// A rate limit or daily quota.
    Limited = 4001,
    /// The body is too large.
    TooLarge = 4002,
    /// An internal error; the message carries an id found in the log.
    Internal = 5000,
    /// Storage unavailable or overloaded; nothing was accepted.
    Unavailable = 5003,
}

impl Ret {
    /// Every code, in numeric order: the API's reference (`GET /cdn_api/openapi.json`) lists
    /// them from here, so a new code must be added here too.
    pub const ALL: [Ret; 18] = [
        Ret::Ok,
        Ret::NoToken,
        Ret::BadToken,
        Ret::BadCredentials,
        Ret::Forbidden,
        Ret::NotJson,
        Ret::BadField,
        Ret::TooManyUrls,
        Ret::MixedDomains,
        Ret::BadUrl,
        Ret::DomainNotYours,
        Ret::Conflict,
        Ret::NoSuchTask,
        Ret::NotFound,
        Ret::Limited,
        Ret::TooLarge,
        Ret::Internal,
        Ret::Unavailable,
    ];

    /// The code with this number.
    pub fn from_code(code: i64) -> Option<Ret> {
        Ret::ALL.into_iter().find(|ret| *ret as i64 == code)
    }

    /// What the code tells a client, for the API's reference.
    pub fn meaning(self) -> &'static str {
        match self {
            Ret::Ok => "success",
            Ret::NoToken => "no `X-Auth-Token` header (or, on the edge protocol, no edge credential)",
            Ret::BadToken => "token (or edge credential) unknown, expired or revoked",
            Ret::BadCredentials => "wrong user name or password (or a wrong, spent or expired join token)",
            Ret::Forbidden => "the account's role does not allow this",
            Ret::NotJson => "the body is not JSON",
            Ret::BadField => "a field is missing, has the wrong type or an invalid value",
            Ret::TooManyUrls => "more URLs than allowed in one request",
            Ret::MixedDomains => "URLs on more than one domain",
            Ret::BadUrl => "a URL is invalid",
            Ret::DomainNotYours => "the domain is not registered to the caller",
            Ret::Conflict => "the change conflicts with what exists (a name taken, an `Idempotency-Key` reused for another request, a rule that would break)",
            Ret::NoSuchTask => "no such `reqId` for the caller",
            Ret::NotFound => "no such user, domain, edge or route",
            Ret::Limited => "over a daily quota or the request rate limit, or too many failed logins (`Retry-After` says when to retry)",
            Ret::TooLarge => "the body is too large",
            Ret::Internal => "an internal error; the message carries the request id found in the log",
            Ret::Unavailable => "storage unavailable or overloaded, or no edge up to run a task; nothing was accepted",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Ret::Ok => StatusCode::OK,
            Ret::NoToken | Ret::BadToken | Ret::BadCredentials => StatusCode::UNAUTHORIZED,
            Ret::Forbidden | Ret::DomainNotYours => StatusCode::FORBIDDEN,
            Ret::NotJson | Ret::BadField | Ret::TooManyUrls | Ret::MixedDomains | Ret::BadUrl => {
                StatusCode::BAD_REQUEST
            }
            Ret::Conflict => StatusCode::CONFLICT,
            Ret::NoSuchTask | Ret::NotFound => StatusCode::NOT_FOUND,
            Ret::Limited => StatusCode::TOO_MANY_REQUESTS,
            Ret::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Ret::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Ret::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What a handler adds to its answer for the audit log: the target when the path does not name
/// it, and a few facts (never a secret).
#[derive(Debug, Clone, Default)]
pub(crate) struct Audited {
    /// What the change was made to.
    pub(crate) target: Option<String>,
    /// A small JSON object.
    pub(crate) detail: Option<Value>,
    /// The handler wrote the entry itself, in the change's own transaction.
    pub(crate) recorded: bool,
}

/// A successful answer: `ret` 0, `msg` "OK", plus `fields`.
pub struct Answer {
    status: StatusCode,
    fields: Map<String, Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    audited: Option<Audited>,
}

impl Answer {
    /// `200` with the given fields.
    pub fn ok(fields: Value) -> Answer {
        let fields = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Answer {
            status: StatusCode::OK,
            fields,
            headers: Vec::new(),
            audited: None,
        }
    }

    /// Answer with another success status (`201 Created`).
    pub fn with_status(mut self, status: StatusCode) -> Answer {
        self.status = status;
        self
    }

    /// Names what the change was made to, and a few facts, for the audit log.
    pub(crate) fn with_audit(mut self, target: String, detail: Option<Value>) -> Answer {
        self.audited = Some(Audited {
            target: Some(target),
            detail,
            recorded: false,
        });
        self
    }

    /// Says the audit log's entry of this change was written with it.
    pub(crate) fn audit_recorded(mut self) -> Answer {
        self.audited = Some(Audited {
            recorded: true,
            ..Audited::default()
        });
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Answer {
        self.headers.push((name, value));
        self
    }
}

impl Answer {
    /// The body this answer is written as.
    pub fn body(&self) -> Bytes {
        let mut fields = self.fields.clone();
        fields.insert("ret".into(), Value::from(Ret::Ok as i64));
        fields.insert("msg".into(), Value::from("OK"));
        envelope_body(fields)
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut fields = self.fields;
        fields.insert("ret".into(), Value::from(Ret::Ok as i64));
        fields.insert("msg".into(), Value::from("OK"));
        let mut response = envelope_response(self.status, fields);
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if let Some(audited) = self.audited {
            response.extensions_mut().insert(audited);
        }
        response
    }
}

/// A failed answer: a `ret` code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code.
    pub ret: Ret,
    /// The human-readable reason.
    pub msg: String,
    /// Seconds for `Retry-After` (with `4001`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(ret: Ret, msg: impl Into<String>) -> ApiError {
        ApiError {
            ret,
            msg: msg.into(),
            retry_after: None,
        }
    }

    /// An internal error: logs `detail` under a fresh id and tells the client only the id.
    /// The id is the request's (`X-Request-Id`), so the log line is found by it.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        let id = crate::observe::current_request_id()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
        tracing::error!(error_id = %id, %detail, "internal error");
        ApiError::new(
            Ret::Internal,
            format!("internal error (request id {id}; quote it when reporting)"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut fields = Map::new();
        fields.insert("ret".into(), Value::from(self.ret as i64));
        fields.insert("msg".into(), Value::from(self.msg));
        let mut response = envelope_response(self.ret.http_status(), fields);
        response.extensions_mut().insert(RetCode(self.ret as i64));
        if self.ret == Ret::TooLarge {
            // The rest of the body stays unread, so the server cannot go on with this connection;
            // saying so keeps clients from sending their next request on a socket being closed.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn envelope_body(fields: Map<String, Value>) -> Bytes {
    let mut envelope = Map::new();
    envelope.insert("zt_api".into(), Value::Object(fields));
    Bytes::from(to_flask_json(&Value::Object(envelope)))
}

fn envelope_response(status: StatusCode, fields: Map<String, Value>) -> Response {
    json_response(status, envelope_body(fields))
}

/// The `ret` of an answer, kept beside it (not sent) for the request's metrics and log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetCode(pub(crate) i64);

/// A JSON response with a body already written as an envelope (a successful one, unless an
/// error's [`RetCode`] replaces it).
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.extensions_mut().insert(RetCode(Ret::Ok as i64));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Writes `value` the way Flask's `jsonify` did under Python 2: sorted keys (serde_json's map is
/// ordered), two-space indent, `", "` between items, `": "` after keys, ASCII only.
pub fn to_flask_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut out, FlaskFormatter::default());
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde::Serialize::serialize(value, &mut serializer);
    out
}

#[derive(Default)]
struct FlaskFormatter {
    depth: usize,
    has_value: bool,
}

impl FlaskFormatter {
    fn newline<W: ?Sized + std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b"\n")?;
        for _ in 0..self.depth {
            writer.write_all(b"  ")?;
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        writer.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(writer)?;
        }
        self.has_value = true;
        writer.write_all(bracket)
    }

    fn item<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if !first {
            writer.write_all(b", ")?;
        }
        self.newline(writer)
    }
}

impl serde_json::ser::Formatter for FlaskFormatter {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.open(writer, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.close(writer, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(writer, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        _writer: &mut W,
    ) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.open(writer, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.close(writer, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        _writer: &mut W,
    ) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for character in fragment.chars() {
            if character.is_ascii() {
                writer.write_all(&[character as u8])?;
            } else {
                for unit in character.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_sample_answer_is_byte_identical() {
        let answer = serde_json::json!({"zt_api": {
            "msg": "OK", "reqId": "fa97b5d1-929f-11e5-b504-e03f4978b2ff", "ret": 0, "success_rate": 100.0
        }});
        let expected = "{\n  \"zt_api\": {\n    \"msg\": \"OK\", \n    \"reqId\": \"fa97b5d1-929f-11e5-b504-e03f4978b2ff\", \n    \"ret\": 0, \n    \"success_rate\": 100.0\n  }\n}";
        let written = to_flask_json(&answer);
        assert_eq!(String::from_utf8_lossy(&written), expected);
        assert_eq!(written.len(), 134, "the seed's Content-Length");
    }

    #[test]
    fn every_code_is_listed_once_in_order() {
        let codes: Vec<i64> = Ret::ALL.iter().map(|ret| *ret as i64).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
        for ret in Ret::ALL {
            assert_eq!(Ret::from_code(ret as i64), Some(ret));
        }
        assert_eq!(Ret::from_code(42), None);
    }

    #[test]
    fn empty_containers_and_non_ascii() {
        let value = serde_json::json!({"a": [], "b": {}, "c": "预缓存 😀"});
        let written = String::from_utf8(to_flask_json(&value)).expect("ascii");
        assert_eq!(
            written,
            "{\n  \"a\": [], \n  \"b\": {}, \n  \"c\": \"\\u9884\\u7f13\\u5b58 \\ud83d\\ude00\"\n}"
        );
        assert_eq!(serde_json::from_str::<Value>(&written).ok(), Some(value));
    }
}
