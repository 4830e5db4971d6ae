//! Account roles.

use std::fmt;
use std::str::FromStr;

/// What an account may do: users manage their own domains' tasks, admins also administer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// May create users, register domains and see every edge.
    Admin,
    /// May prefetch and refresh the domains registered to it.
    User,
}

impl Role {
    /// The name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            other => Err(format!(
                "unknown role {other:?} (expected \"admin\" or \"user\")"
            )),
        }
    }
}
