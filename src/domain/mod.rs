//! Pure types and rules: no I/O, no HTTP, no SQL.

pub mod canonical;
pub mod cells;
pub mod csv_out;
pub mod documents;
pub mod expr;
pub mod extract;
pub mod gate;
pub mod ids;
pub mod keys;
pub mod labels;
pub mod path;
pub mod policy;
pub mod prompt;
pub mod query;
pub mod rail;
pub mod reading;
pub mod schema;
pub mod state;
pub mod status;
pub mod tables;
pub mod webhooks;
