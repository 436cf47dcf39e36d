//! Quire's integration tests, in one binary: every module starts the real service (in process
//! or as the built `quire` binary) and speaks to it as a client would. One binary links once and
//! runs every module's tests in one pool of threads.
//!
//! `cargo test --test it MODULE::` runs one module (e.g. `cargo test --test it soak::`);
//! `TEST_LOG=debug` shows the in-process servers' logs.

mod common;

mod api_bounds;
mod api_conventions;
mod api_engine;
mod api_exact_review;
mod api_hardening;
mod api_rerun;
mod api_resources;
mod api_review;
mod backup;
mod browser;
mod budgets;
mod cli;
mod crash;
mod hygiene;
mod intake;
mod isolation;
mod layering;
mod line_items;
mod load;
mod memory;
mod models;
mod nodes;
mod prop_http;
mod prop_parsers;
mod prop_rerun;
mod prop_tables;
mod quick;
mod real_invoices;
mod soak;
mod storage_faults;
mod webhooks;
