//! What `/cdn_api/users` reads and answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers read and build them as JSON"
)]

use utoipa::ToSchema;

use crate::routes::tokens::schemas::RoleName;

/// A new account.
#[derive(ToSchema)]
pub(crate) struct NewUser {
    /// 1–64 of `a-z 0-9 . _ -`.
    #[schema(example = "alice", pattern = "^[a-z0-9._-]{1,64}$")]
    name: String,
    /// At least 8 characters.
    #[schema(min_length = 8)]
    password: String,
    /// `user` when absent.
    role: Option<RoleName>,
}

/// A change to an account: at least one of the two.
#[derive(ToSchema)]
pub(crate) struct UserChange {
    /// A new password, at least 8 characters.
    #[schema(min_length = 8)]
    password: Option<String>,
    /// A new role (the last admin cannot be demoted: `2007`).
    role: Option<RoleName>,
}

/// An account.
#[derive(ToSchema)]
pub(crate) struct User {
    /// Its name.
    name: String,
    /// Its role.
    role: RoleName,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
}

/// One account.
#[derive(ToSchema)]
pub(crate) struct OneUser {
    user: User,
}

/// Every account.
#[derive(ToSchema)]
pub(crate) struct Users {
    users: Vec<User>,
}

/// The secret an account's completion callbacks are signed with.
#[derive(ToSchema)]
pub(crate) struct WebhookSecret {
    /// The HMAC-SHA256 key of `X-Precache-Signature`.
    webhook_secret: String,
}
