//! The states of tasks and of their (URL, edge) pairs.

use std::fmt;
use std::str::FromStr;

/// What a task does on the edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Pull objects from the origin into every edge's cache.
    Prefetch,
    /// Remove objects from every edge's cache.
    Refresh,
}

/// Where a task is in its life. A task ends `Done`, `Failed` or `Cancelled`, never stays
/// running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Accepted and persisted; no pair has started.
    Waiting,
    /// At least one pair has started and not every pair has finished.
    Running,
    /// Every pair finished and at least one succeeded.
    Done,
    /// Every pair finished and none succeeded.
    Failed,
    /// Cancelled by its owner: pairs not started then were cancelled, the others finished.
    Cancelled,
}

/// The state of one (URL, edge) pair of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairStatus {
    /// Not started yet (or handed back after a restart).
    Waiting,
    /// An attempt is in flight.
    Running,
    /// The edge confirmed the work.
    Success,
    /// Every attempt failed; the pair carries the reason.
    Failed,
    /// Its task was cancelled before it started.
    Cancelled,
    /// Waits for the task's earlier phase (a warm after a refresh) before it may start.
    Held,
    /// Its target cannot do this (a prefetch on a cache kind without one, a directory purge
    /// on nginx): finished, with the reason, and left out of `success_rate`.
    Unsupported,
}

impl TaskStatus {
    /// Whether the task can change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl PairStatus {
    /// Whether the pair can change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PairStatus::Success
                | PairStatus::Failed
                | PairStatus::Cancelled
                | PairStatus::Unsupported
        )
    }
}

macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name used on the wire and in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(text: &str) -> Result<$ty, String> {
                match text {
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?} (expected one of: {})",
                        stringify!($ty),
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}

wire_names!(TaskKind { Prefetch => "prefetch", Refresh => "refresh" });
wire_names!(TaskStatus { Waiting => "waiting", Running => "running", Done => "done", Failed => "failed", Cancelled => "cancelled" });
wire_names!(PairStatus { Waiting => "waiting", Running => "running", Success => "success", Failed => "failed", Cancelled => "cancelled", Held => "held", Unsupported => "unsupported" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in [
            TaskStatus::Waiting,
            TaskStatus::Running,
            TaskStatus::Done,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ] {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
        }
        assert!("finished".parse::<TaskStatus>().is_err());
    }
}
