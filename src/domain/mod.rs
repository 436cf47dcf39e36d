//! Pure types and rules: no I/O, no HTTP, no SQL.

pub mod canonical;
pub mod documents;
pub mod ids;
pub mod keys;
pub mod schema;
