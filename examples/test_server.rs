//! A real, disposable Quire inside a Rust test suite: `quire::testing::TestServer` runs the
//! whole service in-process on a temporary database and an ephemeral port until dropped.
//!
//!     cargo run --example test_server

use quire::testing::TestServer;
use quire::tools::client::Client;
use serde_json::json;

fn main() -> Result<(), String> {
    let srv = TestServer::start();
    println!(
        "a fresh Quire at {} (database {})",
        srv.url,
        srv.db_path.display()
    );
    let api = Client::new(&srv.url, &srv.api_key);
    let schema = api.post(
        "/v1/schemas",
        &json!({"name": "Fixture", "fields": {"invoice_number": "string", "total": "number"}}),
    )?;
    println!(
        "created schema {} with {} fields",
        schema["id"], schema["field_count"]
    );
    let listed = api.get("/v1/schemas")?;
    assert_eq!(listed["pagination"]["total"], 1);
    // Dropping the server stops it and deletes the database.
    Ok(())
}
