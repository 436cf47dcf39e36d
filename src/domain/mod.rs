//! Pure types and rules: no I/O, no HTTP, no SQL.

pub mod ids;
pub mod keys;
pub mod schema;
pub mod canonical;
pub mod documents;
