//! The edge protocol's bodies as the OpenAPI description shows them. The handlers read and write
//! the types of `precache_model::edge_protocol`; these mirror them, and the tests below check
//! the model's JSON against this description.
#![allow(
    dead_code,
    reason = "wire shapes for the OpenAPI description; the handlers use the model's types"
)]

use utoipa::ToSchema;

/// An edge's first call: trade a one-time join token for its credential.
#[derive(ToSchema)]
pub(crate) struct JoinRequest {
    /// The name an admin created the edge with.
    name: String,
    /// The one-time token the admin got for it.
    join_token: String,
    /// Where the edge's admin listener is reached: an `http://` or `https://` base URL.
    admin_url: String,
    /// Where its data plane is reached (by players and by its children).
    data_url: String,
}

/// The edge's credential.
#[derive(ToSchema)]
pub(crate) struct JoinAnswer {
    /// The bearer secret of the edge's calls, and of the control plane's calls to its admin
    /// listener.
    credential: String,
    /// The data plane of the edge's parent (its origin shield), as a hello answers it.
    #[schema(required = true)]
    parent_data_url: Option<String>,
}

/// An edge's heartbeat, every second.
#[derive(ToSchema)]
pub(crate) struct Hello {
    /// The edge's name.
    name: String,
    /// Where its admin listener is reached.
    admin_url: String,
    /// Where its data plane is reached.
    data_url: String,
    /// The edge is not serving from its cache (it just started, or lost touch): the answer
    /// lists every purge it may have missed.
    catch_up: bool,
}

/// The answer to a hello.
#[derive(ToSchema)]
pub(crate) struct HelloAnswer {
    /// The data plane of the edge's parent (its origin shield), when it has one that said where
    /// it is.
    #[schema(required = true)]
    parent_data_url: Option<String>,
    /// With `catch_up`: the purges the edge may not have applied, oldest first, at most 1,000.
    owed: Vec<OwedPurge>,
    /// More purges are owed than listed: apply these, confirm them and ask again.
    more: bool,
    /// Without `catch_up`: a purge has been owed to the edge for over 5 s (pushes do not reach
    /// it); it should catch up on its own.
    behind: bool,
}

/// A purge an edge may have missed.
#[derive(ToSchema)]
pub(crate) struct OwedPurge {
    /// The refresh task's `reqId`.
    task_id: String,
    /// The target's index in the task.
    url_idx: i64,
    /// What to purge.
    command: PurgeCommand,
}

/// What to purge: exactly one of `url` and `prefix`.
#[derive(ToSchema)]
pub(crate) struct PurgeCommand {
    /// Every cached variant of this absolute URL.
    #[schema(nullable = false)]
    url: Option<String>,
    /// Every cached object whose URL starts with this absolute URL (a directory, ending in `/`).
    #[schema(nullable = false)]
    prefix: Option<String>,
    /// What to do with them.
    mode: PurgeMode,
    /// Only count what would be affected.
    dry_run: bool,
}

/// What a purge does to the objects it applies to.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PurgeMode {
    /// Removed from the cache; downloads in progress are not stored.
    Delete,
    /// Kept but stale: the next request revalidates with the origin.
    Invalidate,
}

/// Purges the edge applied on its own after a catch-up.
#[derive(ToSchema)]
pub(crate) struct CaughtUp {
    /// The edge's name.
    name: String,
    /// What each purge did.
    applied: Vec<AppliedPurge>,
}

/// One purge applied during a catch-up.
#[derive(ToSchema)]
pub(crate) struct AppliedPurge {
    /// The refresh task's `reqId` (`2002` when it is not a UUID).
    task_id: String,
    /// The target's index in the task.
    url_idx: i64,
    /// What it affected.
    outcome: PurgeOutcome,
}

/// What a purge affected on one edge.
#[derive(ToSchema)]
pub(crate) struct PurgeOutcome {
    /// Complete objects removed or marked stale.
    objects: u64,
    /// Sum of their body lengths.
    bytes: u64,
    /// Downloads into the cache that were running and will not be stored.
    fills_stopped: u64,
}

#[cfg(test)]
mod tests {
    use precache_model::edge_protocol::{
        AppliedPurge, CaughtUp, Hello, HelloAnswer, JoinAnswer, JoinRequest, OwedPurge,
        PurgeCommand, PurgeMode, PurgeOutcome, PurgeTarget,
    };
    use serde_json::Value;

    use crate::openapi::schema_check::check;

    /// The model's JSON for `value` fits the component `name` of the description.
    fn fits(name: &str, value: impl serde::Serialize) {
        let doc = serde_json::to_value(crate::openapi::document()).expect("document");
        let schema = serde_json::json!({"$ref": format!("#/components/schemas/{name}")});
        let value = serde_json::to_value(value).expect("model JSON");
        if let Err(error) = check(&doc, &schema, &value) {
            panic!("{name} does not describe {value}: {error}");
        }
    }

    fn owed(target: PurgeTarget, mode: PurgeMode) -> OwedPurge {
        OwedPurge {
            task_id: "0b7c4bb2-6d0e-4d5c-9b1f-0c8a4c1e2f3a".into(),
            url_idx: 1,
            command: PurgeCommand {
                target,
                mode,
                dry_run: false,
            },
        }
    }

    #[test]
    fn the_models_bodies_fit_their_description() {
        let address = |path: &str| format!("http://127.0.0.1:9000{path}");
        fits(
            "JoinRequest",
            JoinRequest {
                name: "edge-1".into(),
                join_token: "pcj_x".into(),
                admin_url: address("/admin"),
                data_url: address(""),
            },
        );
        fits(
            "JoinAnswer",
            JoinAnswer {
                credential: "secret".into(),
                parent_data_url: Some(address("")),
            },
        );
        fits(
            "Hello",
            Hello {
                name: "edge-1".into(),
                admin_url: address("/admin"),
                data_url: address(""),
                catch_up: true,
            },
        );
        fits("HelloAnswer", HelloAnswer::default());
        fits(
            "HelloAnswer",
            HelloAnswer {
                parent_data_url: Some(address("")),
                owed: vec![
                    owed(PurgeTarget::Url(address("/a.pak")), PurgeMode::Delete),
                    owed(PurgeTarget::Prefix(address("/dir/")), PurgeMode::Invalidate),
                ],
                more: true,
                behind: false,
            },
        );
        fits(
            "CaughtUp",
            CaughtUp {
                name: "edge-1".into(),
                applied: vec![AppliedPurge {
                    task_id: "0b7c4bb2-6d0e-4d5c-9b1f-0c8a4c1e2f3a".into(),
                    url_idx: 0,
                    outcome: PurgeOutcome {
                        objects: 2,
                        bytes: 10,
                        fills_stopped: 0,
                    },
                }],
            },
        );
        // A key the description does not name is caught.
        let doc = serde_json::to_value(crate::openapi::document()).expect("document");
        let schema = serde_json::json!({"$ref": "#/components/schemas/JoinAnswer"});
        let extra = serde_json::json!({"credential": "x", "other": 1});
        assert!(check(&doc, &schema, &extra).is_err());
        assert!(check(&doc, &schema, &Value::Null).is_err());
    }
}
