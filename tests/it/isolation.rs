//! The isolation matrix, generated from the router's own route table: organizations never see
//! each other's data, read-only keys never write, nothing answers without a key but the
//! public routes, and no metric label names a tenant.

use crate::common::world::World;
use crate::common::*;
use quire::http::{PUBLIC_ROUTES, ROUTES};
use serde_json::{json, Value};

fn call(api: &Api, method: &str, path: &str, key: Option<&str>) -> Resp {
    let url = api.url(path);
    let rb = match method {
        "GET" => api.http.get(url),
        "POST" => api.http.post(url).json(&json!({})),
        "PUT" => api.http.put(url).json(&json!({})),
        "PATCH" => api.http.patch(url).json(&json!({})),
        "DELETE" => api.http.delete(url),
        other => panic!("unexpected method {other}"),
    };
    send(match key {
        Some(k) => rb.bearer_auth(k),
        None => rb,
    })
}

/// The parts of an answer a client could tell apart, with ids taken out of the message.
fn shape(r: &Resp, ids: &[&str]) -> (u16, Value, String) {
    let mut message = r.body["message"].as_str().unwrap_or_default().to_string();
    for id in ids {
        message = message.replace(id, "<id>");
    }
    (r.status, r.body["code"].clone(), message)
}

#[test]
fn every_route_keeps_organizations_apart_and_read_keys_read_only() {
    let api = start();
    let world = World::build(&api);
    let other = api.new_org_key("other", "read,write", &[]);
    let reader = api.new_org_key("default", "read", &[]);
    let missing_ids = [
        "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01",
        "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d02",
        "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d03",
        "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d04",
        "no_such_field",
    ];
    let mut world_ids = world.ids();
    world_ids.push(&world.held_field);
    world_ids.push(&world.policy_field);
    let mut checked = 0;
    for (template, methods) in ROUTES {
        for method in *methods {
            let path = world.fill(template);
            let what = format!("{method} {template}");
            // No key.
            let anonymous = call(&api, method, &path, None);
            if PUBLIC_ROUTES.contains(template) {
                assert!(
                    anonymous.status < 400,
                    "{what} must be public: {}",
                    anonymous.text
                );
                continue;
            }
            assert_envelope(&anonymous, 401, "unauthorized");
            // A read-only key of the owner.
            let read = call(&api, method, &path, Some(&reader));
            // A filter is a query sent as a POST: it reads.
            if *method == "GET" || *template == "/v1/documents/filter" {
                assert!(read.status < 400, "{what} with a read key: {}", read.text);
            } else {
                assert_envelope(&read, 403, "insufficient_scope");
            }
            // Another organization sees exactly what the owner sees for ids that do not exist.
            if template.contains('{') {
                let foreign = call(&api, method, &path, Some(&other));
                let absent = call(
                    &api,
                    method,
                    &World::fill_missing(template),
                    Some(api.key()),
                );
                assert_envelope(&foreign, 404, "not_found");
                assert_eq!(
                    shape(&foreign, &world_ids),
                    shape(&absent, &missing_ids),
                    "{what}: another organization must see the 404 of a missing id"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} route/method pairs checked");
    println!("isolation: {checked} route/method pairs checked");
    // Nothing the other organization tried changed the owner's resources.
    for (template, methods) in ROUTES {
        if methods.contains(&"GET") && template.contains('{') {
            let r = api.get(&world.fill(template));
            assert_eq!(r.status, 200, "GET {template} after the matrix: {}", r.text);
        }
    }
    // And the other organization's lists are empty of the owner's data.
    for list in [
        "/v1/schemas",
        "/v1/documents",
        "/v1/pipelines",
        "/v1/data-policies",
        "/v1/data-products",
        "/v1/field-reviews",
        "/v1/field-reviews/decisions",
        "/v1/extractions",
        "/v1/jobs",
        "/v1/fields",
        "/v1/search?q=INV",
        "/v1/usage",
    ] {
        let r = api.get_as(&other, list);
        assert_eq!(r.status, 200, "{list}: {}", r.text);
        for id in world.ids() {
            assert!(
                !r.text.contains(id),
                "{list} shows another organization's {id}"
            );
        }
    }
    let filtered = api.post_as(&other, "/v1/documents/filter", &json!({}));
    assert_eq!(filtered.body["total"], 0, "{}", filtered.text);
    assert_eq!(
        api.get_as(&other, "/v1/usage").body["by_function"],
        json!([]),
        "the other organization started nothing"
    );
    // The owner's ids inside a body are missing ones to anyone else.
    let (doc, schema) = (&world.documents[0], &world.schema);
    for (path, body) in [
        (
            "/v1/extract",
            json!({"document_id": doc, "schema": {"a": "string"}}),
        ),
        (
            "/v1/extract",
            json!({"filename": "x.txt", "content": "a", "schema_id": schema}),
        ),
        ("/v1/jobs", json!({"schema_id": schema})),
        (
            "/v1/pipelines",
            json!({"schema_id": schema, "document_ids": [doc]}),
        ),
    ] {
        assert_envelope(&api.post_as(&other, path, &body), 404, "not_found");
    }
    let mine = api.new_org_key("other", "read,write", &[]);
    let own_schema = api.post_as(
        &mine,
        "/v1/schemas",
        &json!({"name": "s", "fields": {"a": "string"}}),
    );
    let own = own_schema.body["id"].as_str().unwrap();
    assert_envelope(
        &api.post_as(
            &other,
            "/v1/jobs",
            &json!({"schema_id": own, "document_ids": [doc]}),
        ),
        404,
        "not_found",
    );
    assert_envelope(
        &api.get_as(&other, &format!("/v1/extractions?document_id={doc}")),
        404,
        "not_found",
    );
}

#[test]
fn metrics_name_no_tenant_and_the_token_guards_them() {
    let api = start_with(|c| c.metrics_token = Some("scrape-me".into()));
    let world = World::build(&api);
    let r = send(
        api.http
            .post(api.url(&format!(
                "/v1/field-reviews/{}/{}/resolve",
                world.held_pd, world.held_field
            )))
            .bearer_auth(api.key())
            .json(&json!({"action": "approve"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(
        &send(api.http.get(api.url("/metrics"))),
        401,
        "unauthorized",
    );
    assert_envelope(
        &send(api.http.get(api.url("/metrics")).bearer_auth(api.key())),
        401,
        "unauthorized",
    );
    // The approved document resumes on the executor; wait until its commit is counted.
    let m = wait_for(30, || {
        let m = send(api.http.get(api.url("/metrics")).bearer_auth("scrape-me"));
        // The world's run (three documents, one resumed after approval), its extraction and job.
        (m.text.contains("quire_documents_finished_total 6\n")
            && m.text.contains("quire_documents{status=\"complete\"} 5"))
        .then_some(m)
    });
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = &m.text;
    for id in world.ids() {
        assert!(!text.contains(id), "metrics name {id}");
    }
    assert!(!text.contains(api.key()) && !text.contains("tlnc_"));
    // Route templates, not paths.
    assert!(text.contains(
        "quire_http_requests_total{route=\"/v1/pipelines/{id}/progress\",method=\"GET\",status=\"200\"}"
    ));
    assert!(text.contains("quire_review_decisions_total{action=\"approve\"} 1"));
    assert!(
        text.contains("quire_documents{status=\"complete\"} 5"),
        "{text}"
    );
    // Three documents, and the approved one resumed once more from resolution.
    assert!(text.contains("quire_phase_duration_seconds_count{phase=\"resolution\"} 4"));
    assert!(text.contains("quire_documents_finished_total 6"));
    // Three extracted and one computed version per document of the run, the resumed total
    // again, and three extracted versions each for the extraction and the job.
    assert!(
        text.contains("quire_cell_versions_written_total 19"),
        "{text}"
    );
}
