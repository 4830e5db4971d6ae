//! Reading request bodies: size limit (`4002`), JSON (`2001`), and typed fields (`2002`).

use axum::body::Body;
use serde_json::{Map, Value};

use crate::envelope::{ApiError, Ret};
use crate::lenient_json;

/// Reads the body as a JSON object, at most `limit` bytes.
pub(crate) async fn json_object(body: Body, limit: usize) -> Result<Map<String, Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        // `to_bytes` fails for an over-long body or a broken connection; only the first is ours.
        let too_large = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                Ret::TooLarge,
                format!("request body is larger than {limit} bytes"),
            )
        } else {
            ApiError::new(
                Ret::NotJson,
                format!("could not read the request body: {error}"),
            )
        }
    })?;
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
