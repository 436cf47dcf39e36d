//! Schemas, the Field Registry and documents (API.md §2, §4) over HTTP.

use crate::common::*;
use serde_json::json;

#[test]
fn schemas_accept_all_three_input_forms_and_normalize_them_alike() {
    let api = start();
    let by_map = api.create_schema(
        &json!({"name": "map", "fields": {"invoice_number": "string", "total": "number"}}),
    );
    let by_list = api.create_schema(&json!({"name": "list", "fields": [
        {"field_name": "invoice_number", "data_type": "string"},
        {"field_name": "total", "data_type": "number"}]}));
    let by_def = api.create_schema(
        &json!({"name": "def", "definition": {"type": "object", "properties": {
        "invoice_number": {"type": "string"}, "total": {"type": "number"}}}}),
    );
    assert_eq!(by_map["fields"], by_list["fields"]);
    assert_eq!(by_list["definition"], by_def["definition"]);
    for s in [&by_map, &by_list, &by_def] {
        assert_eq!(s["version"], 1);
        assert_eq!(s["rail"], json!([]));
        assert_eq!(s["field_count"], 2);
        let short = s["short_id"].as_str().unwrap();
        assert!(
            short.len() == 12
                && short.starts_with("SCH-")
                && short[4..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
            "{short}"
        );
        assert_eq!(
            s["links"]["self"],
            format!("/v1/schemas/{}", s["id"].as_str().unwrap())
        );
    }
}

#[test]
fn json_schema_extensions_round_trip() {
    let api = start();
    let s = api.create_schema(&json!({"name": "ext", "definition": {"type": "object", "properties": {
        "net": {"type": "number", "description": "before tax", "x-synonyms": ["subtotal"]},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "issued": {"type": "string", "format": "date", "x-display-name": "Issue date", "x-requires-review": true},
        "total": {"type": "number", "x-depends-on": ["net"]}},
        "required": ["total"]}}));
    let f = &s["fields"];
    assert_eq!(f[0]["synonyms"], json!(["subtotal"]));
    assert_eq!(f[1]["enum"], json!(["EUR", "USD"]));
    assert_eq!(f[2]["data_type"], "date");
    assert_eq!(f[2]["display_name"], "Issue date");
    assert_eq!(f[2]["requires_review"], true);
    assert_eq!(f[3]["depends_on"], json!(["net"]));
    assert_eq!(f[3]["is_required"], true);
    assert_eq!(s["definition"]["properties"]["issued"]["format"], "date");
    assert_eq!(s["definition"]["required"], json!(["total"]));
}

#[test]
fn invalid_schemas_are_refused_and_nothing_is_stored() {
    let api = start();
    let cases = [
        json!({"name": "x", "fields": {}}),
        json!({"name": "", "fields": {"a": "string"}}),
        json!({"name": "x".repeat(101), "fields": {"a": "string"}}),
        json!({"name": "x", "fields": {"a": "string"}, "definition": {"properties": {"b": {"type": "string"}}}}),
        json!({"name": "x", "fields": [{"field_name": "Bad Name"}]}),
        json!({"name": "x", "fields": [{"field_name": "a"}, {"field_name": "a"}]}),
        json!({"name": "x", "fields": [{"field_name": "a", "depends_on": ["zz"]}]}),
        json!({"name": "x", "fields": [{"field_name": "a", "depends_on": ["b"]}, {"field_name": "b", "depends_on": ["a"]}]}),
        json!({"name": "x"}),
    ];
    for c in &cases {
        assert_envelope(&api.post("/v1/schemas", c), 400, "bad_request");
    }
    let r = api.post("/v1/schemas", &cases[0]);
    assert_eq!(r.body["message"], "Schema definition produced no fields");
    assert_eq!(api.get("/v1/schemas").body["pagination"]["total"], 0);
    assert_eq!(api.get("/v1/fields").body["pagination"]["total"], 0);
}

#[test]
fn put_replaces_patch_merges_both_bump_the_version_and_delete_is_soft() {
    let api = start();
    let s = api.create_schema(
        &json!({"name": "v", "description": "d", "fields": {"a": "string", "b": "number"}}),
    );
    let path = format!("/v1/schemas/{}", s["id"].as_str().unwrap());
    let r = api.patch(&path, &json!({"fields": {"b": "integer", "c": "date"}}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["description"], "d");
    let names: Vec<_> = r.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field_name"].clone(), f["data_type"].clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            (json!("a"), json!("string")),
            (json!("b"), json!("integer")),
            (json!("c"), json!("date"))
        ]
    );
    let r = api.put(&path, &json!({"name": "v2", "fields": {"z": "boolean"}}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 3);
    assert_eq!(r.body["name"], "v2");
    // PUT replaces what it names and keeps what it leaves out (Talonic's clients rename so).
    assert_eq!(r.body["description"], "d");
    assert_eq!(r.body["field_count"], 1);
    let r = api.put(&path, &json!({"name": "v3"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["name"].clone(), r.body["field_count"].clone()),
        (json!("v3"), json!(1))
    );
    assert_eq!(r.body["version"], 4);
    let r = api.put(&path, &json!({"fields": {"y": "number"}}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["name"].clone(), r.body["field_count"].clone()),
        (json!("v3"), json!(1))
    );
    assert_eq!(
        r.body["fields"][0]["field_name"], "y",
        "a PUT's fields replace, not merge"
    );
    assert_envelope(&api.put(&path, &json!({})), 400, "bad_request");
    let r = api.delete(&path);
    assert_eq!(r.body, json!({"deleted": true, "id": s["id"]}));
    assert_envelope(&api.get(&path), 404, "not_found");
    assert_eq!(api.get("/v1/schemas").body["pagination"]["total"], 0);
    assert_envelope(&api.delete(&path), 404, "not_found");
}

#[test]
fn every_schema_field_is_registered_in_the_field_registry() {
    let api = start();
    api.create_schema(&json!({"name": "a", "fields": [{"field_name": "total", "data_type": "number", "synonyms": ["amount"]}, {"field_name": "vendor"}]}));
    let s2 = api.create_schema(&json!({"name": "b", "fields": [{"field_name": "total", "data_type": "number", "synonyms": ["sum"]}]}));
    let r = api.get("/v1/fields");
    assert_eq!(r.body["pagination"]["total"], 2);
    let total = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["canonical_name"] == "total")
        .unwrap()
        .clone();
    assert_eq!(total["occurrence_count"], 2);
    assert_eq!(total["synonyms"], json!(["amount", "sum"]));
    assert_eq!(total["data_type"], "number");
    assert_eq!(total["display_name"], "Total");
    assert!(total["id"].is_string() && total["created_at"].is_string());
    api.delete(&format!("/v1/schemas/{}", s2["id"].as_str().unwrap()));
    let r = api.get("/v1/fields");
    let total = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["canonical_name"] == "total")
        .unwrap()
        .clone();
    assert_eq!(total["occurrence_count"], 1);
}

#[test]
fn documents_upload_as_json_and_multipart_with_duplicates_detected() {
    let api = start();
    let r = api.post("/v1/documents", &json!({"filename": "inv.txt", "content": "Invoice Number: INV-1\nTotal: 10", "metadata": {"vendor": "Acme"}}));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["mime_type"], "text/plain");
    assert_eq!(r.body["size_bytes"], 31);
    assert_eq!(r.body["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r.body["metadata"], json!({"vendor": "Acme"}));
    let dup = api.post("/v1/documents", &json!({"filename": "other-name.txt", "content": "Invoice Number: INV-1\nTotal: 10", "metadata": {"vendor": "Acme"}}));
    assert_eq!(dup.status, 200);
    assert_eq!(dup.body["duplicate"], true);
    assert_eq!(dup.body["id"], id.as_str());
    let other_meta = api.post("/v1/documents", &json!({"filename": "inv.txt", "content": "Invoice Number: INV-1\nTotal: 10", "metadata": {"vendor": "Other"}}));
    assert_eq!(other_meta.status, 201);
    let b64 = api.post(
        "/v1/documents",
        &json!({"filename": "data.json", "content_base64": "eyJ0b3RhbCI6IDV9"}),
    );
    assert_eq!(b64.status, 201, "{}", b64.text);
    assert_eq!(b64.body["mime_type"], "application/json");

    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(b"a,b\n1,2\n".to_vec())
                .file_name("rows.csv")
                .mime_str("application/octet-stream")
                .unwrap(),
        )
        .text("metadata", r#"{"source": "scanner"}"#);
    let r = send(
        api.http
            .post(api.url("/v1/documents"))
            .bearer_auth(api.key())
            .multipart(form),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["mime_type"], "text/csv");
    assert_eq!(r.body["filename"], "rows.csv");
    assert_eq!(r.body["metadata"], json!({"source": "scanner"}));

    let got = api.get(&format!("/v1/documents/{id}?include=text"));
    assert_eq!(got.body["text"], "Invoice Number: INV-1\nTotal: 10");
    assert!(api
        .get(&format!("/v1/documents/{id}"))
        .body
        .get("text")
        .is_none());
    assert_eq!(api.get("/v1/documents").body["pagination"]["total"], 4);
}

#[test]
fn bad_documents_get_415_400_and_413() {
    let api = start_with(|c| c.max_upload = 1000);
    let r = api.post(
        "/v1/documents",
        &json!({"filename": "scan.pdf", "content": "x"}),
    );
    assert_envelope(&r, 415, "unsupported_media_type");
    let r = api.post(
        "/v1/documents",
        &json!({"filename": "a.txt", "content": "x", "mime_type": "image/png"}),
    );
    assert_envelope(&r, 415, "unsupported_media_type");
    assert_envelope(
        &api.post(
            "/v1/documents",
            &json!({"filename": "a.txt", "content": ""}),
        ),
        400,
        "missing_document",
    );
    assert_envelope(
        &api.post("/v1/documents", &json!({"filename": "a.txt"})),
        400,
        "missing_document",
    );
    let r = api.post(
        "/v1/documents",
        &json!({"filename": "a.txt", "content": "x".repeat(1001)}),
    );
    assert_envelope(&r, 413, "payload_too_large");
    let r = api.post(
        "/v1/documents",
        &json!({"filename": "a.txt", "content": "x", "metadata": {"nested": {"a": 1}}}),
    );
    assert_envelope(&r, 400, "bad_request");
    let r = api.post(
        "/v1/documents",
        &json!({"filename": "a.txt", "content_base64": "***"}),
    );
    assert_envelope(&r, 400, "bad_request");
    let form = reqwest::blocking::multipart::Form::new().text("metadata", "{}");
    let r = send(
        api.http
            .post(api.url("/v1/documents"))
            .bearer_auth(api.key())
            .multipart(form),
    );
    assert_envelope(&r, 400, "missing_document");
    let form = reqwest::blocking::multipart::Form::new().part(
        "file",
        reqwest::blocking::multipart::Part::bytes(vec![b'a'; 2000]).file_name("big.txt"),
    );
    let r = send(
        api.http
            .post(api.url("/v1/documents"))
            .bearer_auth(api.key())
            .multipart(form),
    );
    assert_envelope(&r, 413, "payload_too_large");
    let r = send(
        api.http
            .post(api.url("/v1/documents"))
            .bearer_auth(api.key())
            .header("content-type", "text/plain")
            .body("hello"),
    );
    assert_envelope(&r, 415, "unsupported_media_type");
    assert_eq!(api.get("/v1/documents").body["pagination"]["total"], 0);
}

#[test]
fn deleted_documents_disappear_from_lists_and_reads() {
    let api = start();
    let r = api.post(
        "/v1/documents",
        &json!({"filename": "a.md", "content": "# hi"}),
    );
    let path = format!("/v1/documents/{}", r.body["id"].as_str().unwrap());
    assert_eq!(api.delete(&path).body["deleted"], true);
    assert_envelope(&api.get(&path), 404, "not_found");
    assert_eq!(api.get("/v1/documents").body["pagination"]["total"], 0);
    // The same bytes can be uploaded again as a new document.
    assert_eq!(
        api.post(
            "/v1/documents",
            &json!({"filename": "a.md", "content": "# hi"})
        )
        .status,
        201
    );
}
