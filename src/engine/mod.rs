//! The engine: phase semantics, the executor, pipelines, rerun and review.

pub mod executor;
pub mod pipelines;
pub mod rerun;
pub mod review;
pub mod runner;
pub mod spec;
pub mod views;

use crate::store::StoreError;

/// What engine operations report; the HTTP layer maps it to answers in one place.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
