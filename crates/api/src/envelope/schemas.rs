//! The envelope as the OpenAPI description shows it: `{"zt_api": {"ret", "msg", ...fields}}`.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the answers themselves are built as JSON"
)]

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::envelope::Ret;

/// A successful answer: `fields` inside the `zt_api` envelope, with `ret` 0 and `msg` "OK".
///
/// `T` must not be generic itself: the component is named after `T`'s outer name only, so two
/// answers `Envelope<A<B>>` and `Envelope<A<C>>` would overwrite each other.
#[derive(ToSchema)]
pub(crate) struct Envelope<T> {
    /// The answer; keys are sorted on the wire.
    zt_api: Success<T>,
}

/// `ret` 0, `msg` "OK" and the answer's own fields.
#[derive(ToSchema)]
pub(crate) struct Success<T> {
    #[schema(schema_with = zero)]
    ret: i64,
    #[schema(schema_with = ok)]
    msg: String,
    #[serde(flatten)]
    fields: T,
}

/// An answer with no fields besides `ret` and `msg`.
#[derive(ToSchema)]
pub(crate) struct Empty {}

/// A failed answer: its `ret` code and a message naming what was wrong.
#[derive(ToSchema)]
pub(crate) struct ErrorEnvelope {
    zt_api: Failure,
}

/// The code and the reason.
#[derive(ToSchema)]
pub(crate) struct Failure {
    #[schema(schema_with = error_codes)]
    ret: i64,
    /// Human-readable: names the field, URL, domain or limit at fault.
    msg: String,
}

fn zero() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .enum_values(Some([0]))
        .description(Some("0: success."))
}

fn ok() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["OK"]))
}

/// Every non-zero code of [`Ret::ALL`]: the list cannot fall behind the enum's.
fn error_codes() -> impl Into<RefOr<Schema>> {
    let codes: Vec<i64> = Ret::ALL
        .into_iter()
        .filter(|ret| *ret != Ret::Ok)
        .map(|ret| ret as i64)
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .enum_values(Some(codes))
        .description(Some(
            "The error code; see the table of `ret` codes in the API's description.",
        ))
}
