//! Rerun a finished pipeline from a chosen phase: every sentence of the contract, over HTTP.

use crate::common::*;
use serde_json::{json, Value};

struct Run {
    sid: String,
    pid: String,
    policy: String,
}

fn policy(api: &Api, name: &str, fields: &[&str], rules: &[(&str, &str, Value)]) -> String {
    let p = api.post("/v1/data-policies", &json!({"name": name}));
    let id = p.body["id"].as_str().unwrap().to_string();
    for f in fields {
        assert_eq!(
            api.post(
                &format!("/v1/data-policies/{id}/fields"),
                &json!({"field_key": f, "type": "string"})
            )
            .status,
            201
        );
    }
    for (f, t, c) in rules {
        let r = api.post(
            &format!("/v1/data-policies/{id}/rules"),
            &json!({"field_key": f, "rule_type": t, "config": c}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    id
}

fn gate(api: &Api, sid: &str, name: &str, severity: &str, rules: Value) -> String {
    let r = api.post(
        &format!("/v1/schemas/{sid}/validation-stages"),
        &json!({"name": name, "severity": severity,
        "mechanisms": [{"type": "business_rules", "rules": rules}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

fn wait_done(api: &Api, pid: &str) -> Value {
    wait_for(60, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        let total = p["totalDocuments"].as_i64().unwrap();
        let done =
            p["completedDocuments"].as_i64().unwrap() + p["errorDocuments"].as_i64().unwrap();
        (p["status"] != "active" && done == total).then_some(p)
    })
}

fn start_run(api: &Api, sid: &str, docs: &[String]) -> String {
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "document_ids": docs}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let pid = r.body["id"].as_str().unwrap().to_string();
    wait_done(api, &pid);
    pid
}

/// Schema {issued, net, tax, total}, policy (date + compute total), warning gate on total.
fn standard(api: &Api, n: usize) -> Run {
    let s = api.create_schema(&json!({"name": "inv", "fields": [
        {"field_name": "issued", "data_type": "date"}, {"field_name": "net", "data_type": "number"},
        {"field_name": "tax", "data_type": "number"}, {"field_name": "total", "data_type": "number"}]}));
    let sid = s["id"].as_str().unwrap().to_string();
    let pol = policy(
        api,
        "norm",
        &["issued", "net", "tax", "total"],
        &[
            ("issued", "date", json!({"day_first": true})),
            ("total", "compute", json!({"expr": "net + tax"})),
        ],
    );
    let g = gate(
        api,
        &sid,
        "small totals",
        "warning",
        json!([{"field": "total", "check": "range", "max": 150}]),
    );
    let rail = json!({"rail": [{"type": "registry"}, {"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [pol]}}, {"type": "valid", "json": {"stage_ids": [g]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let docs: Vec<String> = (0..n)
        .map(|i| {
            upload(
                api,
                &format!("d{i}.txt"),
                &format!(
                    "Issued: 0{}.02.2024\nNet: {}\nTax: 10",
                    1 + i % 9,
                    100 + i * 10
                ),
            )
        })
        .collect();
    let pid = start_run(api, &sid, &docs);
    Run {
        sid,
        pid,
        policy: pol,
    }
}

fn rerun(api: &Api, pid: &str, body: Value) -> Resp {
    api.post(&format!("/v1/pipelines/{pid}/rerun"), &body)
}

fn results(api: &Api, pid: &str) -> Vec<Value> {
    api.get(&format!("/v1/pipelines/{pid}/results?limit=200"))
        .body["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn all_cells(api: &Api, pid: &str) -> Vec<Value> {
    results(api, pid)
        .iter()
        .map(|r| {
            api.get(&format!(
                "/v1/pipelines/{pid}/documents/{}/cells",
                r["pipeline_document_id"].as_str().unwrap()
            ))
            .body
        })
        .collect()
}

fn versions_where(cells: &Value, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    cells["fields"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f["versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| pred(v))
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn rerun_answers_enqueued_and_the_first_index_of_the_phase_type() {
    let api = start();
    let run = standard(&api, 3);
    for (phase, index) in [
        ("transfer", 0),
        ("extraction", 1),
        ("resolution", 2),
        ("validation", 3),
    ] {
        let r = rerun(&api, &run.pid, json!({"from_phase": phase}));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.body,
            json!({"enqueued": 3, "fromPhaseIndex": index}),
            "exactly these keys"
        );
        wait_done(&api, &run.pid);
    }
    let p = api.get(&format!("/v1/pipelines/{}", run.pid)).body;
    assert_eq!(p["generation"], 5);
    assert_eq!(p["status"], "completed");
    let history = api.get(&format!("/v1/pipelines/{}/reruns", run.pid)).body;
    let h = history["data"].as_array().unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(h[0]["from_phase"], "validation");
    assert_eq!(h[0]["generation"], 5);
    assert_eq!(h[0]["document_ids"], Value::Null);
    assert!(h[0]["finished_at"].is_string());
    assert_eq!(h[0]["outcome"]["errors"], 0);
    assert!(
        h[3]["outcome"]["versions_written"].as_i64().unwrap() > 0,
        "{}",
        h[3]
    );
}

#[test]
fn rerun_on_a_rail_with_two_resolution_phases_and_two_gates_and_an_interleaved_rail() {
    let api = start();
    let s = api.create_schema(
        &json!({"name": "x", "fields": {"net": "number", "tax": "number", "total": "number"}}),
    );
    let sid = s["id"].as_str().unwrap().to_string();
    let p1 = policy(&api, "p1", &["net"], &[("net", "number", json!({}))]);
    let p2 = policy(
        &api,
        "p2",
        &["net", "tax", "total"],
        &[("total", "compute", json!({"expr": "net + tax"}))],
    );
    let g1 = gate(
        &api,
        &sid,
        "g1",
        "info",
        json!([{"field": "net", "check": "required"}]),
    );
    let g2 = gate(
        &api,
        &sid,
        "g2",
        "info",
        json!([{"field": "total", "check": "required"}]),
    );
    let doc = upload(&api, "a.txt", "Net: 5\nTax: 1");
    let rail = json!({"rail": [{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [p1, p2]}}, {"type": "valid", "json": {"stage_ids": [g1, g2]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let pid = start_run(&api, &sid, std::slice::from_ref(&doc));
    assert_eq!(
        rerun(&api, &pid, json!({"from_phase": "resolution"})).body["fromPhaseIndex"],
        1
    );
    wait_done(&api, &pid);
    assert_eq!(
        rerun(&api, &pid, json!({"from_phase": "validation"})).body["fromPhaseIndex"],
        3
    );
    wait_done(&api, &pid);
    assert_envelope(
        &rerun(&api, &pid, json!({"from_phase": "transfer"})),
        400,
        "bad_request",
    );

    // Interleaved: schema, valid(g1), resolve(p2), valid(g2): from validation re-executes the
    // resolution phase after the first gate too.
    let rail = json!({"rail": [{"type": "schema"}, {"type": "valid", "json": {"stage_ids": [g1]}}, {"type": "resolve", "json": {"policy_ids": [p2]}}, {"type": "valid", "json": {"stage_ids": [g2]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let pid = start_run(&api, &sid, &[doc]);
    let r = rerun(&api, &pid, json!({"from_phase": "validation"}));
    assert_eq!(r.body, json!({"enqueued": 1, "fromPhaseIndex": 1}));
    wait_done(&api, &pid);
    let cells = all_cells(&api, &pid);
    let gen2_resolution = versions_where(&cells[0], |v| {
        v["generation"] == 2 && v["phase_id"] == "resolution"
    });
    assert_eq!(gen2_resolution.len(), 1, "{cells:?}");
    assert_eq!(gen2_resolution[0]["value"], 6);
    let verdicts = api
        .get(&format!(
            "/v1/pipelines/{pid}/documents/{}/verdicts",
            results(&api, &pid)[0]["pipeline_document_id"]
                .as_str()
                .unwrap()
        ))
        .body;
    let gen2: Vec<_> = verdicts["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["generation"] == 2)
        .map(|v| v["phaseId"].clone())
        .collect();
    assert!(
        gen2.contains(&json!("validation")) && gen2.contains(&json!("validation_2")),
        "{gen2:?}"
    );
}

#[test]
fn invalid_rerun_bodies_are_400() {
    let api = start();
    let run = standard(&api, 1);
    let path = api.url(&format!("/v1/pipelines/{}/rerun", run.pid));
    for body in [
        json!({}),
        json!({"from_phase": "extracton"}),
        json!({"from_phase": "Extraction"}),
        json!({"from_phase": "assembly"}),
        json!({"from_phase": 2}),
        json!({"from_phase": null}),
        json!({"from_phase": "resolution", "dry_runn": true}),
        json!({"from_phase": "resolution", "dry_run": "yes"}),
        json!({"from_phase": "resolution", "document_ids": []}),
        json!({"from_phase": "resolution", "document_ids": ["0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d0e"]}),
    ] {
        assert_envelope(&rerun(&api, &run.pid, body.clone()), 400, "bad_request");
    }
    let r = send(
        api.http
            .post(&path)
            .bearer_auth(api.key())
            .header("content-type", "application/json")
            .body("{\"from_phase\": "),
    );
    assert_envelope(&r, 400, "bad_request");
    let r = send(api.http.post(&path).bearer_auth(api.key()));
    assert_envelope(&r, 400, "bad_request");
    // A rail without a registry stage has no transfer phase.
    let s = api.create_schema(&json!({"name": "y", "fields": {"a": "string"}}));
    let sid = s["id"].as_str().unwrap();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let pid = start_run(&api, sid, &[upload(&api, "y.txt", "A: 1")]);
    let r = rerun(&api, &pid, json!({"from_phase": "transfer"}));
    assert_envelope(&r, 400, "bad_request");
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("no transfer phase"));
    assert!(
        api.get(&format!("/v1/pipelines/{}/reruns", run.pid)).body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.get(&format!("/v1/pipelines/{}", run.pid)).body["generation"],
        1
    );
}

#[test]
fn rerun_while_documents_are_queued_or_processing_is_400_and_changes_nothing() {
    let api = start();
    // Held in `queued` so the rerun certainly meets unfinished documents.
    api.srv.pause_executor();
    let s = api.create_schema(&json!({"name": "big", "fields": {"net": "number"}}));
    let sid = s["id"].as_str().unwrap().to_string();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let docs: Vec<Value> = (0..50)
        .map(|i| json!({"filename": format!("{i}.txt"), "content": format!("Net: {i}")}))
        .collect();
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "documents": docs}),
    );
    let pid = r.body["id"].as_str().unwrap().to_string();
    let r = rerun(&api, &pid, json!({"from_phase": "extraction"}));
    assert_envelope(&r, 400, "bad_request");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("queued or processing"),
        "{}",
        r.text
    );
    assert_eq!(
        api.get(&format!("/v1/pipelines/{pid}")).body["generation"],
        1
    );
    assert!(api.get(&format!("/v1/pipelines/{pid}/reruns")).body["data"]
        .as_array()
        .unwrap()
        .is_empty());
    api.srv.resume_executor();
    let p = wait_done(&api, &pid);
    assert_eq!(p["completedDocuments"], 50);
    let docs = api
        .get(&format!("/v1/pipelines/{pid}/documents?limit=100"))
        .body;
    assert!(docs["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["generation"] == 1));
}

#[test]
fn versions_before_the_start_are_identical_and_later_ones_stop_being_live_but_stay_in_history() {
    let api = start();
    let run = standard(&api, 2);
    let before = all_cells(&api, &run.pid);
    let r = rerun(&api, &run.pid, json!({"from_phase": "resolution"}));
    assert_eq!(r.status, 200);
    // At once, before the executor runs again: resolution versions of generation 1 are not live.
    let during = all_cells(&api, &run.pid);
    for cells in &during {
        for v in versions_where(cells, |v| {
            v["phase_index"].as_i64().unwrap() >= 2 && v["generation"] == 1
        }) {
            assert_eq!(v["live"], false, "{v}");
        }
    }
    wait_done(&api, &run.pid);
    let after = all_cells(&api, &run.pid);
    for (b, a) in before.iter().zip(&after) {
        let early = |c: &Value| versions_where(c, |v| v["phase_index"].as_i64().unwrap() < 2);
        assert_eq!(
            early(b),
            early(a),
            "versions of phases before the start are untouched"
        );
        let old_later = versions_where(a, |v| {
            v["phase_index"].as_i64().unwrap() >= 2 && v["generation"] == 1
        });
        assert_eq!(
            old_later.len(),
            versions_where(b, |v| v["phase_index"].as_i64().unwrap() >= 2).len(),
            "still in history"
        );
        assert!(old_later.iter().all(|v| v["live"] == false));
    }
}

#[test]
fn a_tuned_policy_rerun_from_resolution_changes_results_without_re_extracting_and_stacks_nothing() {
    let api = start();
    let run = standard(&api, 3);
    let first = results(&api, &run.pid);
    assert_eq!(first[0]["fields"]["issued"], "2024-02-01");
    assert_eq!(first[0]["fields"]["total"], 110);
    let rules = api
        .get(&format!("/v1/data-policies/{}/rules", run.policy))
        .body;
    let date_rule = rules["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_type"] == "date")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api.patch(
        &format!("/v1/data-policies/{}/rules/{date_rule}", run.policy),
        &json!({"config": {"day_first": true, "output": "%d/%m/%Y"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let extraction_before: usize = all_cells(&api, &run.pid)
        .iter()
        .map(|c| versions_where(c, |v| v["source"] == "rules_extraction").len())
        .sum();
    let mut snapshots = Vec::new();
    for _ in 0..3 {
        assert_eq!(
            rerun(&api, &run.pid, json!({"from_phase": "resolution"})).status,
            200
        );
        wait_done(&api, &run.pid);
        snapshots.push(
            results(&api, &run.pid)
                .iter()
                .map(|r| r["fields"].clone())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(snapshots[0][0]["issued"], "01/02/2024");
    assert_eq!(
        snapshots[0][0]["total"], 110,
        "compute reads extraction's inputs, not its own output"
    );
    assert_eq!(snapshots[0], snapshots[1]);
    assert_eq!(snapshots[1], snapshots[2]);
    let extraction_after: usize = all_cells(&api, &run.pid)
        .iter()
        .map(|c| versions_where(c, |v| v["source"] == "rules_extraction").len())
        .sum();
    assert_eq!(
        extraction_before, extraction_after,
        "no new extraction versions"
    );
}

#[test]
fn a_tuned_gate_rerun_from_validation_blocks_the_newly_failing_fields() {
    let api = start();
    let run = standard(&api, 4);
    // totals are 110, 120, 130, 140: below the warning's 150, so nothing is flagged or held.
    assert!(results(&api, &run.pid)
        .iter()
        .all(|r| r["status"] == "complete"));
    let gates = api
        .get(&format!("/v1/schemas/{}/validation-stages", run.sid))
        .body;
    let gid = gates["data"][0]["id"].as_str().unwrap().to_string();
    let r = api.patch(&format!("/v1/schemas/{}/validation-stages/{gid}", run.sid), &json!({"severity": "blocking",
        "mechanisms": [{"type": "business_rules", "rules": [{"field": "total", "check": "range", "max": 125}]}]}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        rerun(&api, &run.pid, json!({"from_phase": "validation"})).body["fromPhaseIndex"],
        3
    );
    wait_done(&api, &run.pid);
    let rows = results(&api, &run.pid);
    let statuses: Vec<_> = rows
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, vec!["complete", "complete", "partial", "partial"]);
    assert_eq!(rows[2]["fields"]["total"], Value::Null);
    assert_eq!(rows[0]["fields"]["total"], 110);
}

#[test]
fn a_run_whose_documents_all_errored_has_no_record_set() {
    let api = start();
    let s = api.create_schema(&json!({"name": "j", "fields": {"a": "string"}}));
    let sid = s["id"].as_str().unwrap();
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}]}),
    );
    let r = api.post(
        "/v1/documents",
        &json!({"filename": "bad.json", "content": "{oops"}),
    );
    let pid = start_run(&api, sid, &[r.body["id"].as_str().unwrap().to_string()]);
    assert_eq!(
        api.get(&format!("/v1/pipelines/{pid}")).body["status"],
        "failed"
    );
    let r = rerun(&api, &pid, json!({"from_phase": "extraction"}));
    assert_envelope(&r, 400, "bad_request");
    assert!(r.body["message"].as_str().unwrap().contains("record set"));
}

#[test]
fn eight_concurrent_reruns_exactly_one_succeeds_and_access_rules_hold() {
    let api = start();
    let run = standard(&api, 40);
    // The winner's rerun must still be unfinished when the seven others are decided, whatever
    // the scheduling: hold its documents in `queued` until all eight have answered.
    api.srv.pause_executor();
    let start_line = std::sync::Barrier::new(8);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    start_line.wait();
                    rerun(&api, &run.pid, json!({"from_phase": "resolution"})).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        api.get(&format!("/v1/pipelines/{}", run.pid)).body["status"],
        "active"
    );
    api.srv.resume_executor();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        7,
        "{statuses:?}"
    );
    wait_done(&api, &run.pid);
    assert_eq!(
        api.get(&format!("/v1/pipelines/{}", run.pid)).body["generation"],
        2
    );
    let other = api.new_org_key("other", "read,write", &[]);
    assert_envelope(
        &api.post_as(
            &other,
            &format!("/v1/pipelines/{}/rerun", run.pid),
            &json!({"from_phase": "resolution"}),
        ),
        404,
        "not_found",
    );
    let reader = api.new_org_key("readers", "read", &[]);
    assert_envelope(
        &api.post_as(
            &reader,
            &format!("/v1/pipelines/{}/rerun", run.pid),
            &json!({"from_phase": "resolution"}),
        ),
        403,
        "insufficient_scope",
    );
    let idem = |k: &str| {
        send(
            api.http
                .post(api.url(&format!("/v1/pipelines/{}/rerun", run.pid)))
                .bearer_auth(api.key())
                .header("Idempotency-Key", k)
                .json(&json!({"from_phase": "validation"})),
        )
    };
    let a = idem("rr-1");
    assert_eq!(a.status, 200);
    wait_done(&api, &run.pid);
    let b = idem("rr-1");
    assert_eq!(b.status, 200);
    assert_eq!(b.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(a.body, b.body);
    assert_eq!(
        api.get(&format!("/v1/pipelines/{}/reruns", run.pid)).body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn dry_run_changes_nothing_and_document_ids_leave_other_documents_untouched() {
    let api = start();
    let run = standard(&api, 3);
    let before = all_cells(&api, &run.pid);
    let r = rerun(
        &api,
        &run.pid,
        json!({"from_phase": "resolution", "dryRun": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["dryRun"], true);
    assert_eq!(r.body["enqueued"], 3);
    assert_eq!(r.body["fromPhaseIndex"], 2);
    assert_eq!(
        r.body["plan"],
        json!({"phases": ["resolution", "validation"], "documents": 3, "keptBlockedFields": 0, "preservedDecisions": 0})
    );
    assert_eq!(all_cells(&api, &run.pid), before);
    assert_eq!(
        api.get(&format!("/v1/pipelines/{}", run.pid)).body["generation"],
        1
    );
    assert!(
        api.get(&format!("/v1/pipelines/{}/reruns", run.pid)).body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A subset: only the named pipeline document runs again.
    let rows = results(&api, &run.pid);
    let target = rows[1]["pipeline_document_id"]
        .as_str()
        .unwrap()
        .to_string();
    let plan = rerun(
        &api,
        &run.pid,
        json!({"from_phase": "extraction", "document_ids": [target], "dry_run": true}),
    )
    .body;
    let r = rerun(
        &api,
        &run.pid,
        json!({"from_phase": "extraction", "documentIds": [target]}),
    );
    assert_eq!(r.body, json!({"enqueued": 1, "fromPhaseIndex": 1}));
    assert_eq!(plan["enqueued"], 1);
    assert_eq!(
        plan["plan"]["phases"],
        json!(["extraction", "resolution", "validation"])
    );
    wait_done(&api, &run.pid);
    let after = all_cells(&api, &run.pid);
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
    assert_ne!(after[1], before[1]);
    let docs = api
        .get(&format!("/v1/pipelines/{}/documents", run.pid))
        .body;
    let gens: Vec<_> = docs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["generation"].clone())
        .collect();
    assert_eq!(gens, vec![json!(1), json!(2), json!(1)]);
    let history = api.get(&format!("/v1/pipelines/{}/reruns", run.pid)).body;
    assert_eq!(history["data"][0]["document_ids"], json!([target]));
}

#[test]
fn a_field_blocked_by_a_gate_before_the_start_stays_blocked_with_its_waiting_dependents() {
    let api = start();
    let s = api.create_schema(&json!({"name": "k", "fields": [{"field_name": "net", "data_type": "number"},
        {"field_name": "tax", "data_type": "number"}, {"field_name": "total", "data_type": "number"}]}));
    let sid = s["id"].as_str().unwrap().to_string();
    let g1 = gate(
        &api,
        &sid,
        "net small",
        "blocking",
        json!([{"field": "net", "check": "range", "max": 100}]),
    );
    let pol = policy(
        &api,
        "sum",
        &["net", "tax", "total"],
        &[("total", "compute", json!({"expr": "net + tax"}))],
    );
    let rail = json!({"rail": [{"type": "schema"}, {"type": "valid", "json": {"stage_ids": [g1]}}, {"type": "resolve", "json": {"policy_ids": [pol]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let pid = start_run(
        &api,
        &sid,
        &[
            upload(&api, "a.txt", "Net: 500\nTax: 5"),
            upload(&api, "b.txt", "Net: 50\nTax: 5"),
        ],
    );
    let before = results(&api, &pid);
    assert_eq!(before[0]["status"], "partial");
    let queue_before = api
        .get(&format!("/v1/pipelines/{pid}/results?include=cells"))
        .body;
    assert_eq!(
        queue_before["data"][0]["cells"]["total"]["status"],
        "waiting"
    );
    let dry = rerun(
        &api,
        &pid,
        json!({"from_phase": "resolution", "dry_run": true}),
    );
    assert_eq!(dry.body["plan"]["keptBlockedFields"], 1);
    assert_eq!(
        rerun(&api, &pid, json!({"from_phase": "resolution"})).status,
        200
    );
    wait_done(&api, &pid);
    let after = api
        .get(&format!("/v1/pipelines/{pid}/results?include=cells"))
        .body;
    assert_eq!(after["data"][0]["status"], "partial");
    assert_eq!(after["data"][0]["cells"]["net"]["status"], "blocked");
    assert_eq!(after["data"][0]["cells"]["total"]["status"], "waiting");
    assert_eq!(after["data"][1]["fields"]["total"], 55);
    assert_eq!(after["pending_review_count"], 1, "the review item stands");
}

/// schema → valid(blocking: net <= 100) with docs of net 500 (a), 600 (b), 700 (c).
fn reviewed_run(api: &Api) -> (String, Vec<String>) {
    let s = api.create_schema(&json!({"name": "rv", "fields": [{"field_name": "net", "data_type": "number"}, {"field_name": "tax", "data_type": "number"}]}));
    let sid = s["id"].as_str().unwrap().to_string();
    let g = gate(
        api,
        &sid,
        "net small",
        "blocking",
        json!([{"field": "net", "check": "range", "max": 100}]),
    );
    api.put(
        &format!("/v1/schemas/{sid}/rail"),
        &json!({"rail": [{"type": "schema"}, {"type": "valid", "json": {"stage_ids": [g]}}]}),
    );
    let docs: Vec<String> = [500, 600, 700]
        .iter()
        .map(|n| upload(api, &format!("{n}.txt"), &format!("Net: {n}\nTax: 1")))
        .collect();
    let pid = start_run(api, &sid, &docs);
    let pds: Vec<String> = results(api, &pid)
        .iter()
        .map(|r| r["pipeline_document_id"].as_str().unwrap().to_string())
        .collect();
    (pid, pds)
}

fn resolve(api: &Api, pd: &str, body: Value) -> Resp {
    api.post(&format!("/v1/field-reviews/{pd}/net/resolve"), &body)
}

#[test]
fn prior_human_decisions_survive_a_rerun() {
    let api = start();
    let (pid, pds) = reviewed_run(&api);
    assert_eq!(
        resolve(&api, &pds[0], json!({"action": "approve"})).status,
        200
    );
    assert_eq!(
        resolve(
            &api,
            &pds[1],
            json!({"action": "override", "corrected_value": 650})
        )
        .status,
        200
    );
    assert_eq!(
        resolve(
            &api,
            &pds[2],
            json!({"action": "correct", "corrected_value": 300})
        )
        .status,
        200
    );
    wait_done(&api, &pid);
    let log_before = api
        .get(&format!("/v1/field-reviews/decisions?pipeline_id={pid}"))
        .body["entries"]
        .clone();
    let dry = rerun(
        &api,
        &pid,
        json!({"from_phase": "validation", "dry_run": true}),
    );
    assert_eq!(dry.body["plan"]["preservedDecisions"], 3);
    assert_eq!(
        rerun(&api, &pid, json!({"from_phase": "validation"})).status,
        200
    );
    wait_done(&api, &pid);
    let rows = api
        .get(&format!("/v1/pipelines/{pid}/results?include=cells"))
        .body["data"]
        .as_array()
        .unwrap()
        .clone();
    // An approved or overridden field is not re-blocked by that gate.
    assert_eq!(rows[0]["status"], "complete");
    assert_eq!(rows[0]["fields"]["net"], 500);
    assert_eq!(rows[1]["status"], "complete");
    assert_eq!(rows[1]["fields"]["net"], 650);
    // A corrected (not overridden) value that still fails is blocked again as a new review item.
    assert_eq!(rows[2]["status"], "partial");
    assert_eq!(rows[2]["cells"]["net"]["status"], "blocked");
    let items = api.get("/v1/field-reviews").body["data"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["current_value"], 300);
    // A corrected value stays the canonical value after a rerun from extraction.
    assert_eq!(
        rerun(&api, &pid, json!({"from_phase": "extraction"})).status,
        200
    );
    wait_done(&api, &pid);
    let cells = api
        .get(&format!("/v1/pipelines/{pid}/documents/{}/cells", pds[1]))
        .body;
    let net = cells["fields"][0].clone();
    assert_eq!(net["pinned"], true);
    let canon = net["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["canonical"] == true)
        .unwrap()
        .clone();
    assert_eq!(
        (canon["value"].clone(), canon["source"].clone()),
        (json!(650), json!("human_review"))
    );
    assert_eq!(results(&api, &pid)[1]["fields"]["net"], 650);
    // The decision log is unchanged, row for row.
    let log_after = api
        .get(&format!("/v1/field-reviews/decisions?pipeline_id={pid}"))
        .body["entries"]
        .clone();
    assert_eq!(log_before, log_after);
}

/// Every version of every field of every document, as `(field, version, generation, phase,
/// source)`.
fn version_keys(cells: &[Value]) -> Vec<(String, i64, i64, i64, String)> {
    let mut out = Vec::new();
    for (d, c) in cells.iter().enumerate() {
        for v in versions_where(c, |_| true) {
            out.push((
                format!("{d}/{}", v["field_key"].as_str().unwrap_or_default()),
                v["version"].as_i64().unwrap(),
                v["generation"].as_i64().unwrap(),
                v["phase_index"].as_i64().unwrap(),
                v["source"].as_str().unwrap().to_string(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn retention_purges_only_superseded_machine_versions_and_changes_nothing_a_reader_shows() {
    let api = start();
    let run = standard(&api, 6);
    let pid = &run.pid;
    // A person's decision in the history: the gate turned blocking holds the one total over 150.
    let stages = api.get(&format!("/v1/schemas/{}/validation-stages", run.sid));
    let gid = stages.body["data"][0]["id"].as_str().unwrap().to_string();
    let r = api.patch(
        &format!("/v1/schemas/{}/validation-stages/{gid}", run.sid),
        &json!({"severity": "blocking"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        rerun(&api, pid, json!({"from_phase": "validation"})).status,
        200
    );
    wait_done(&api, pid);
    let queue = api.get(&format!("/v1/field-reviews?pipeline_id={pid}"));
    let item = &queue.body["data"][0];
    assert_eq!(item["field_key"], "total", "{}", queue.text);
    let pd = item["pipeline_document_id"].as_str().unwrap().to_string();
    let r = api.post(
        &format!("/v1/field-reviews/{pd}/total/resolve"),
        &json!({"action": "override", "corrected_value": 149, "reason": "agreed with the supplier"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    wait_done(&api, pid);
    assert_eq!(
        rerun(&api, pid, json!({"from_phase": "resolution"})).status,
        200
    );
    wait_done(&api, pid);
    let dp = api.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}));
    assert_eq!(dp.status, 201, "{}", dp.text);
    let dp = dp.body["dataProduct"]["id"].as_str().unwrap().to_string();
    wait_done(&api, pid);

    let shown = |api: &Api| {
        (
            results(api, pid),
            api.get(&format!("/v1/data-products/{dp}/results?limit=100"))
                .body["data"]
                .clone(),
            api.get(&format!("/v1/field-reviews/decisions?pipeline_id={pid}"))
                .body["data"]
                .clone(),
            api.get(&format!("/v1/data-products/{dp}/export/audit"))
                .text,
        )
    };
    let before = shown(&api);
    let versions = version_keys(&all_cells(&api, pid));
    // The oracle: a machine version of generation g at phase p is superseded when a later
    // generation restarted at or before p (every rerun here covers every document).
    let restarts: Vec<(i64, i64)> = api.get(&format!("/v1/pipelines/{pid}/reruns")).body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["generation"].as_i64().unwrap(),
                r["from_phase_index"].as_i64().unwrap(),
            )
        })
        .collect();
    let superseded = |v: &(String, i64, i64, i64, String)| {
        v.4 != "human_review" && restarts.iter().any(|(g, s)| *g > v.2 && v.3 >= *s)
    };
    // Kept however superseded: a field's highest version (its number is never handed out
    // again) and its newest extracted version (the review detail places values through it).
    let extracted = |v: &(String, i64, i64, i64, String)| {
        v.4 == "rules_extraction" || v.4 == "model_extraction"
    };
    let highest = |field: &str, only_extracted: bool| {
        versions
            .iter()
            .filter(|w| w.0 == field && (!only_extracted || extracted(w)))
            .map(|w| w.1)
            .max()
    };
    let purged = |v: &(String, i64, i64, i64, String)| {
        superseded(v)
            && Some(v.1) != highest(&v.0, false)
            && !(extracted(v) && Some(v.1) == highest(&v.0, true))
    };
    let kept: Vec<_> = versions.iter().filter(|v| !purged(v)).cloned().collect();
    assert!(
        kept.len() < versions.len(),
        "the reruns superseded something"
    );
    assert!(
        versions
            .iter()
            .any(|v| v.4 == "human_review" && restarts.iter().any(|(g, s)| *g > v.2 && v.3 >= *s)),
        "a person's version a rerun restarted past is in the history"
    );

    // The operator's purge, beside the running service: nothing is old enough yet.
    let out = api.cli(&["purge", "--older-than", "90d"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.starts_with("purged 0 superseded version(s) and 0 verdict(s)"),
        "{said}"
    );
    assert_eq!(version_keys(&all_cells(&api, pid)), versions);

    // The organization's setting: applied at once by the service.
    assert_eq!(
        api.get("/v1/settings/retention").body["superseded_versions_days"],
        Value::Null
    );
    let r = api.put(
        "/v1/settings/retention",
        &json!({"superseded_versions_days": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["superseded_versions_days"], 0);
    let after = wait_for(30, || {
        let now = version_keys(&all_cells(&api, pid));
        (now.len() == kept.len()).then_some(now)
    });
    assert_eq!(after, kept, "exactly the superseded machine versions went");
    assert_eq!(
        shown(&api),
        before,
        "results, data product, decisions and audit export unchanged"
    );

    // Bad settings are refused and change nothing.
    for bad in [
        json!({}),
        json!({"superseded_versions_days": -1}),
        json!({"superseded_versions_days": 36501}),
        json!({"superseded_versions_days": "90"}),
        json!({"superseded_versions_days": 1, "keep": true}),
    ] {
        let r = api.put("/v1/settings/retention", &bad);
        assert_envelope(&r, 400, "bad_request");
    }
    assert_eq!(
        api.get("/v1/settings/retention").body["superseded_versions_days"],
        0
    );
    let r = api.put(
        "/v1/settings/retention",
        &json!({"superseded_versions_days": null}),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    // Another rerun supersedes more; the operator's purge takes it, and readers see no change.
    assert_eq!(
        rerun(&api, pid, json!({"from_phase": "resolution"})).status,
        200
    );
    wait_done(&api, pid);
    let before = shown(&api);
    let grown = version_keys(&all_cells(&api, pid)).len();
    let out = api.cli(&["purge", "--older-than", "0s"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{said}");
    assert!(!said.starts_with("purged 0 "), "{said}");
    assert!(version_keys(&all_cells(&api, pid)).len() < grown);
    assert_eq!(shown(&api), before);
    // An unknown organization or an unreadable age is refused.
    assert!(!api
        .cli(&["purge", "--older-than", "1d", "--org", "nosuch"])
        .status
        .success());
    assert!(!api.cli(&["purge", "--older-than", "soon"]).status.success());
}
