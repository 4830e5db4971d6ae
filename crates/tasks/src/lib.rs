//! The task engine: carries out every (URL, edge) pair of every task, durably.
//!
//! - [`backends`] is what a pair runs on: the [`backends::Backend`] interface, precache's
//!   edges as its built-in implementation, and the cache kinds an admin can register.
//! - [`edge_client`] speaks the edge protocol to one edge's admin listener.
//! - [`edge_directory`] knows the edges, keeps each one's domain table current and watches
//!   whether it is up.
//! - [`engine`] queues pairs per origin, runs them with bounded concurrency (global and per
//!   origin, so a release cannot flood an origin), retries what may succeed on a retry, and
//!   records every outcome in the store.
//! - [`lease`] keeps this engine's lease and takes over the pairs of engines that died.

pub mod backends;
pub mod certificate_expiry;
pub mod edge_client;
pub mod edge_directory;
pub mod engine;
pub mod lease;
mod pair_runner;
pub mod progress;
mod purge_order;
mod queues;
pub mod retention;

pub use edge_client::{EdgeCallError, EdgeClient, EdgeTarget};
pub use edge_directory::{EdgeDirectory, EdgeHealth};
pub use engine::{Admission, Engine, EngineConfig, EngineHandle, PairJob};
pub use lease::{keep_lease, LeaseLost};
pub use progress::ProgressBoard;
