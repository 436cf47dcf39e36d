//! What ships in the `quire` binary beside the service: `quire bench`, `quire demo`, the
//! invoice fixtures they (and the tests) feed the service, and the small blocking client they
//! drive it with. Nothing in the service (`http`, `engine`, `store`, `domain`) uses this module.

pub mod bench;
pub mod bench_model;
pub mod client;
pub mod demo;
pub mod fixtures;
pub mod model_stub;
pub mod pdf_writer;
pub mod webhook_sink;
