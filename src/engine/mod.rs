//! The engine: phase semantics, the executor, pipelines, rerun and review.

pub mod documents;
pub mod events;
pub mod executor;
pub mod gates;
pub mod pipelines;
pub mod policies;
pub mod quick;
pub mod rerun;
pub mod retention;
pub mod review;
pub mod runner;
pub mod spec;
pub mod views;

use crate::store::StoreError;

/// What engine operations report, in the domain's terms; `http/error.rs` alone maps it to
/// statuses.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The command cannot apply as given (a bad value, a rule that does not compile, a run
    /// still going).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Something stored breaks an invariant (a run without its snapshots): a fault, not the
    /// caller's.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a committed command asks of the world outside its transaction. The caller applies it
/// after the commit, never before (a rolled-back command has none), and an idempotent replay
/// applies nothing again.
#[derive(Debug, Default)]
pub struct Effects {
    /// Work was queued: the executor should look.
    pub wake: bool,
    /// Engine events, logged with the request's id.
    pub events: Vec<String>,
    /// Reruns started, for the metrics.
    pub reruns: u64,
    /// Review decisions recorded, by action, for the metrics.
    pub decisions: Vec<&'static str>,
}

impl Effects {
    pub fn event(mut self, line: String) -> Self {
        self.events.push(line);
        self
    }

    pub fn wake_if(mut self, wake: bool) -> Self {
        self.wake |= wake;
        self
    }
}

#[cfg(test)]
mod tests;
