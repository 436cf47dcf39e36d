//! The statuses a document and a run move through, as types: stored and answered as their
//! lowercase names, compared as values.

use serde::Serialize;
use std::fmt;

/// A document of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocStatus {
    Queued,
    Processing,
    Complete,
    Partial,
    Error,
}

/// A run (pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Active,
    Completed,
    Failed,
    Cancelled,
}

impl DocStatus {
    pub const ALL: [DocStatus; 5] = [
        DocStatus::Queued,
        DocStatus::Processing,
        DocStatus::Complete,
        DocStatus::Partial,
        DocStatus::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DocStatus::Queued => "queued",
            DocStatus::Processing => "processing",
            DocStatus::Complete => "complete",
            DocStatus::Partial => "partial",
            DocStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Finished with values to deliver: `complete` or `partial`.
    pub fn delivered(self) -> bool {
        matches!(self, DocStatus::Complete | DocStatus::Partial)
    }
}

impl RunStatus {
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Active,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Active => "active",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for DocStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_serialize_as_stored() {
        for s in DocStatus::ALL {
            assert_eq!(DocStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(DocStatus::parse("done"), None);
    }
}
