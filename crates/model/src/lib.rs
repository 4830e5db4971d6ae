//! Types shared by every part of precache: ids, names, URLs, task states and the edge protocol.
//!
//! Nothing here does IO, so every other crate can depend on it and it can be tested in isolation.

pub mod domain_name;
pub mod edge_protocol;
pub mod ids;
pub mod object_url;
pub mod origin;
pub mod quota;
pub mod role;
pub mod task_state;
pub mod time;

pub use domain_name::DomainName;
pub use ids::{AccountId, EdgeId, TaskId};
pub use object_url::{ObjectUrl, UrlError};
pub use origin::{Origin, OriginScheme};
pub use quota::QuotaKind;
pub use role::Role;
pub use task_state::{PairStatus, TaskKind, TaskStatus};
