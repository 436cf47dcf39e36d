//! `quire backup` copies a live database; a service started on the copy gives the same answers.

use crate::common::*;
use serde_json::json;

#[test]
fn a_backup_taken_while_the_service_runs_answers_the_same() {
    let api = start();
    let s = api.create_schema(&json!({"name": "b", "fields": {"net": "number"}}));
    let sid = s["id"].as_str().unwrap().to_string();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let docs: Vec<_> = (0..20)
        .map(|i| json!({"filename": format!("{i}.txt"), "content": format!("Net: {i}")}))
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    let pid = r.body["id"].as_str().unwrap().to_string();
    wait_for(30, || {
        (api.get(&format!("/v1/pipelines/{pid}")).body["status"] == "completed").then_some(())
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy.db");
    if on_postgres() {
        // PostgreSQL is backed up by its own tools: the command says which, writes nothing, and
        // shows the URL without its password (the test server trusts, so any password does).
        let url = api
            .srv
            .db_arg()
            .replacen("://postgres@", "://postgres:s3cret-pw@", 1);
        assert!(url.contains("s3cret-pw"), "{url}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quire"))
            .args(["--db", &url, "backup", dest.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("pg_dump"), "{err}");
        assert!(!err.contains("s3cret-pw"), "{err}");
        assert!(!dest.exists());
        return;
    }
    let out = api.cli(&["backup", dest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !api.cli(&["backup", dest.to_str().unwrap()])
            .status
            .success(),
        "an existing file is never overwritten"
    );
    let copy = start_with(|c| c.db = dest.to_string_lossy().into_owned());
    // The copy's own bootstrap key belongs to the same `default` organization.
    for path in [
        format!("/v1/schemas/{sid}"),
        format!("/v1/pipelines/{pid}"),
        format!("/v1/pipelines/{pid}/results?limit=100"),
    ] {
        let (a, b) = (api.get(&path), copy.get(&path));
        assert_eq!(b.status, 200, "{}", b.text);
        let strip = |mut v: serde_json::Value| {
            v.as_object_mut().unwrap().remove("generated_at");
            v
        };
        assert_eq!(strip(a.body), strip(b.body), "{path}");
    }
}
