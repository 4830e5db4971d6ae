//! What `/cdn_api/auth/tokens` reads and answers.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers read and build them as JSON"
)]

use utoipa::ToSchema;

/// Either body of API.md §4: a plain user name and password, or the Keystone v3 password body.
/// A body with an `auth` key is read as the second.
#[derive(ToSchema)]
#[serde(untagged)]
pub(crate) enum Login {
    /// `{"username", "password"}`.
    Plain(PlainLogin),
    /// `{"auth": {"identity": {"password": {"user": {"name", "password"}}}}}`.
    Keystone(KeystoneLogin),
}

/// A user name and password.
#[derive(ToSchema)]
pub(crate) struct PlainLogin {
    /// The account's name.
    #[schema(example = "alice")]
    username: String,
    /// Its password.
    password: String,
}

/// The Keystone v3 password body; other keys (`methods`, `scope`) are ignored.
#[derive(ToSchema)]
pub(crate) struct KeystoneLogin {
    auth: KeystoneAuth,
}

/// `auth`.
#[derive(ToSchema)]
pub(crate) struct KeystoneAuth {
    identity: KeystoneIdentity,
}

/// `auth.identity`.
#[derive(ToSchema)]
pub(crate) struct KeystoneIdentity {
    password: KeystonePassword,
}

/// `auth.identity.password`.
#[derive(ToSchema)]
pub(crate) struct KeystonePassword {
    user: KeystoneUser,
}

/// `auth.identity.password.user`.
#[derive(ToSchema)]
pub(crate) struct KeystoneUser {
    /// The account's name.
    name: String,
    /// Its password.
    password: String,
}

/// An account's role.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RoleName {
    /// May create users, register domains and see every edge.
    Admin,
    /// May prefetch and refresh the domains registered to it.
    User,
}

/// A token just issued.
#[derive(ToSchema)]
pub(crate) struct Issued {
    token: NewToken,
}

/// The token and what it grants.
#[derive(ToSchema)]
pub(crate) struct NewToken {
    /// The token: send it as `X-Auth-Token` (also in the `X-Subject-Token` header).
    id: String,
    /// When it expires (`--token-ttl` after issue, 24 h by default).
    #[schema(format = DateTime)]
    expires_at: String,
    /// The account's name.
    user: String,
    /// The account's role.
    role: RoleName,
}

/// The token of the call.
#[derive(ToSchema)]
pub(crate) struct Current {
    token: TokenInfo,
}

/// Whose token it is and until when.
#[derive(ToSchema)]
pub(crate) struct TokenInfo {
    /// When it expires.
    #[schema(format = DateTime)]
    expires_at: String,
    /// The account's name.
    user: String,
    /// The account's role.
    role: RoleName,
}

#[cfg(test)]
mod tests {
    use precache_model::Role;

    #[test]
    fn role_names_are_the_models() {
        for name in ["admin", "user"] {
            assert!(name.parse::<Role>().is_ok(), "{name}");
        }
    }
}
