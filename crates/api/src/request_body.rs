//! Reading request bodies: size limit (`4002`), JSON (`2001`), and typed fields (`2002`).

use axum::body::Body;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::envelope::{ApiError, Ret};
use crate::lenient_json;

/// How much of an over-long body is still read (and thrown away) before the `4002` answer, so
/// the client, still sending, reads the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// How long that draining may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the body as a JSON object, at most `limit` bytes.
pub(crate) async fn json_object(body: Body, limit: usize) -> Result<Map<String, Value>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut bytes: Vec<u8> = Vec::new();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::new(
                Ret::NotJson,
                format!("could not read the request body: {error}"),
            )
        })?;
        received += chunk.len();
        if received > limit {
            // Drain what is still coming (bounded), then answer.
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while received <= DRAIN_LIMIT {
                    match stream.next().await {
                        Some(Ok(chunk)) => received += chunk.len(),
                        _ => break,
                    }
                }
            })
            .await;
            return Err(ApiError::new(
                Ret::TooLarge,
                format!("request body is larger than {limit} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    let value = lenient_json::parse(&bytes).map_err(|error| {
        ApiError::new(
            Ret::NotJson,
            format!("request body is not valid JSON: {error}"),
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::new(
            Ret::BadField,
            format!(
                "request body must be a JSON object, got {}",
                kind_of(&other)
            ),
        )),
    }
}

/// The JSON type name of a value, for messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A required string field.
pub(crate) fn required_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a str, ApiError> {
    match object.get(field) {
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(ApiError::new(
            Ret::BadField,
            format!("field {field:?} must be a string, got {}", kind_of(other)),
        )),
        None => Err(ApiError::new(
            Ret::BadField,
            format!("field {field:?} is required"),
        )),
    }
}

/// An optional string field (`null` counts as absent).
pub(crate) fn optional_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(ApiError::new(
            Ret::BadField,
            format!("field {field:?} must be a string, got {}", kind_of(other)),
        )),
    }
}
