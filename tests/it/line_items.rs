//! Fields that hold tables (issue 21): array fields with sub-fields in the three schema forms,
//! described by the schema, the Field Registry and the OpenAPI document; tables read from a PDF,
//! Markdown and CSV with each row's place; the line-items export; corrections checked element
//! by element.

use crate::common::*;
use quire::tools::pdf_writer::{pdf, Line};
use serde_json::{json, Value};

/// An invoice number and a table of positions.
fn fields() -> Value {
    json!([
        {"field_name": "invoice_number", "synonyms": ["Invoice number"]},
        {"field_name": "lines", "data_type": "array", "items": [
            {"field_name": "description", "synonyms": ["Item"]},
            {"field_name": "quantity", "data_type": "number", "synonyms": ["Qty"]},
            {"field_name": "unit_price", "data_type": "number"},
            {"field_name": "amount", "data_type": "number"}
        ]}
    ])
}

fn invoice_pdf() -> Vec<u8> {
    let row = |y: f32, cells: [&'static str; 4]| -> Vec<Line> {
        [50.0, 250.0, 320.0, 450.0]
            .into_iter()
            .zip(cells)
            .map(|(x, t)| Line::at(x, y, t))
            .collect()
    };
    let mut page = vec![
        Line::at(50.0, 50.0, "ACME Supplies GmbH"),
        Line::at(50.0, 80.0, "Invoice number"),
        Line::at(380.0, 80.0, "INV-77"),
    ];
    page.extend(row(120.0, ["Description", "Qty", "Unit price", "Amount"]));
    page.extend(row(136.0, ["Consulting services", "3", "100.00", "300.00"]));
    page.extend(row(152.0, ["Travel", "1", "80.00", "80.00"]));
    page.push(Line::at(320.0, 190.0, "Total"));
    page.push(Line::at(450.0, 190.0, "380.00"));
    pdf(&[page])
}

const MARKDOWN: &str = "# Invoice\n\nInvoice number: INV-78\n\n\
    | Item | Qty | Unit price | Amount |\n|---|---|---|---|\n\
    | Widget | 2 | 12.50 | 25.00 |\n| Gadget | 1 | 1.234,50 | 1.234,50 |\n\
    | | | Total | 1.259,50 |\n";

const CSV: &str = "Invoice number,Item,Qty,Amount\nINV-79,=1+2,4,10.00\nINV-79,Bolt,1,2.50\n";

fn rows_of(row: &Value) -> Value {
    row["fields"]["lines"].clone()
}

#[test]
fn an_array_field_is_accepted_in_the_three_forms_and_described_everywhere() {
    let api = start();
    let list = api.create_schema(&json!({"name": "List", "fields": fields()}));
    let map = api.create_schema(&json!({"name": "Map", "fields": {
        "invoice_number": "string",
        "lines": [{"description": "string", "quantity": "number", "unit_price": "number", "amount": "number"}]}}));
    let def = api.create_schema(
        &json!({"name": "Definition", "definition": {"type": "object", "properties": {
        "invoice_number": {"type": "string"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {
            "description": {"type": "string"}, "quantity": {"type": "number"},
            "unit_price": {"type": "number"}, "amount": {"type": "number"}}}}}}}),
    );
    let items = |s: &Value| -> Vec<(String, String)> {
        let lines = s["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field_name"] == "lines")
            .unwrap();
        assert_eq!(lines["data_type"], "array", "{s}");
        lines["items"]
            .as_array()
            .unwrap_or_else(|| panic!("items in {s}"))
            .iter()
            .map(|i| {
                (
                    i["field_name"].as_str().unwrap().to_string(),
                    i["data_type"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let want = vec![
        ("description".to_string(), "string".to_string()),
        ("quantity".into(), "number".into()),
        ("unit_price".into(), "number".into()),
        ("amount".into(), "number".into()),
    ];
    for s in [&list, &map, &def] {
        assert_eq!(items(s), want);
        assert_eq!(
            s["definition"]["properties"]["lines"]["items"]["properties"]["quantity"]["type"],
            "number",
            "{s}"
        );
    }
    let read = api.get(&format!("/v1/schemas/{}", list["id"].as_str().unwrap()));
    assert_eq!(items(&read.body), want);
    let registry = api.get("/v1/fields?search=lines").body;
    let lines = registry["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["canonical_name"] == "lines")
        .unwrap_or_else(|| panic!("lines in {registry}"));
    assert_eq!(lines["items"][1]["field_name"], "quantity", "{lines}");
    let openapi = api.get("/openapi.json").body;
    let field_def = &openapi["components"]["schemas"]["FieldDef"]["properties"];
    assert!(field_def.get("items").is_some(), "{field_def}");
    assert!(
        openapi["paths"]
            .get("/v1/data-products/{id}/export/lines")
            .is_some(),
        "the line-items export is described"
    );
}

#[test]
fn bad_items_are_refused_with_the_reason_and_nothing_is_created() {
    let api = start();
    let count = |api: &Api| api.get("/v1/schemas").body["pagination"]["total"].clone();
    let before = count(&api);
    for (fields, says) in [
        (
            json!({"lines": [{"nested": "array"}]}),
            "must be of a scalar type",
        ),
        (
            json!([{"field_name": "total", "data_type": "number", "items": {"a": "string"}}]),
            "only an array field has items",
        ),
        (json!({"lines": [{"Amount": "number"}]}), "sub-field name"),
        (json!({"lines": [{"a": "money"}]}), "fields.lines[0]"),
    ] {
        let r = api.post("/v1/schemas", &json!({"name": "Bad", "fields": fields}));
        assert_envelope(&r, 400, "bad_request");
        assert!(r.text.contains(says), "{says}: {}", r.text);
    }
    assert_eq!(count(&api), before);
}

#[test]
fn tables_in_a_pdf_markdown_and_csv_become_arrays_and_each_row_keeps_its_place() {
    let api = start();
    let pdf_doc = upload_bytes(&api, "invoice.pdf", &invoice_pdf(), None);
    assert_eq!(pdf_doc.status, 201, "{}", pdf_doc.text);
    let pdf_doc = pdf_doc.body["id"].as_str().unwrap().to_string();
    let md_doc = upload(&api, "invoice.md", MARKDOWN);
    let csv_doc = upload(&api, "invoice.csv", CSV);
    let (pid, rows) = run_rules(&api, fields(), &[pdf_doc.clone(), md_doc, csv_doc]);
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r["filename"] == n)
            .unwrap_or_else(|| panic!("{n} in {rows:?}"))
            .clone()
    };
    let pdf_row = by_name("invoice.pdf");
    assert_eq!(pdf_row["fields"]["invoice_number"], "INV-77", "{pdf_row}");
    assert_eq!(
        rows_of(&pdf_row),
        json!([
            {"description": "Consulting services", "quantity": 3, "unit_price": 100, "amount": 300},
            {"description": "Travel", "quantity": 1, "unit_price": 80, "amount": 80}
        ]),
        "the total beneath the table is not a position"
    );
    assert_eq!(
        rows_of(&by_name("invoice.md")),
        json!([
            {"description": "Widget", "quantity": 2, "unit_price": 12.5, "amount": 25},
            {"description": "Gadget", "quantity": 1, "unit_price": 1234.5, "amount": 1234.5}
        ])
    );
    let csv_row = by_name("invoice.csv");
    assert_eq!(csv_row["fields"]["invoice_number"], "INV-79");
    assert_eq!(
        rows_of(&csv_row),
        json!([
            {"description": "=1+2", "quantity": 4, "unit_price": null, "amount": 10},
            {"description": "Bolt", "quantity": 1, "unit_price": null, "amount": 2.5}
        ]),
        "every record under the header, a column the table lacks null"
    );

    // Each row of the PDF's table: its text, page, span and box.
    let pd = pdf_row["pipeline_document_id"].as_str().unwrap();
    let cell = field_cells(&api, &pid, pd, "lines");
    let version = cell["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["source"] == "rules_extraction")
        .unwrap_or_else(|| panic!("an extracted version: {cell}"))
        .clone();
    let page: Vec<char> = api.get(&format!("/v1/documents/{pdf_doc}/pages/1")).body["text"]
        .as_str()
        .unwrap()
        .chars()
        .collect();
    let placed = version["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{version}"));
    assert_eq!(placed.len(), 2, "{version}");
    let mut tops = Vec::new();
    for (r, starts) in placed.iter().zip(["Consulting services", "Travel"]) {
        let text = r["source_text"].as_str().unwrap();
        assert!(text.starts_with(starts), "{r}");
        let p = &r["provenance"];
        assert_eq!(p["page"], 1, "{r}");
        let (s, e) = (
            p["start"].as_u64().unwrap() as usize,
            p["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(page[s..e].iter().collect::<String>(), text, "{r}");
        let bbox = p["bbox"].as_array().unwrap_or_else(|| panic!("a box: {r}"));
        assert!(
            bbox[0].as_f64().unwrap() < 60.0,
            "the row starts at its first cell: {r}"
        );
        assert!(
            bbox[2].as_f64().unwrap() > 450.0,
            "and ends at its last: {r}"
        );
        tops.push(bbox[1].as_f64().unwrap());
    }
    assert!(
        tops[0] < tops[1],
        "the second row stands below the first: {tops:?}"
    );
    // The Markdown rows keep their text (a text format has no page).
    let md = by_name("invoice.md");
    let md_cell = field_cells(
        &api,
        &pid,
        md["pipeline_document_id"].as_str().unwrap(),
        "lines",
    );
    let md_rows = &md_cell["versions"][0]["rows"];
    assert_eq!(
        md_rows[0]["source_text"], "| Widget | 2 | 12.50 | 25.00 |",
        "{md_cell}"
    );
    assert!(md_rows[0].get("provenance").is_none(), "{md_cell}");
}

#[test]
fn the_line_items_export_has_a_row_per_element_and_the_plain_export_stays_scalar() {
    let api = start();
    let docs = [
        upload(&api, "invoice.csv", CSV),
        upload(&api, "invoice.md", MARKDOWN),
    ];
    let (pid, _) = run_rules(&api, fields(), &docs);
    let dp = api.post(&format!("/v1/pipelines/{pid}/data-product"), &json!({}));
    assert!(dp.status == 201 || dp.status == 200, "{}", dp.text);
    let dpid = dp.body["dataProduct"]["id"].as_str().unwrap().to_string();
    let results = api.get(&format!("/v1/data-products/{dpid}/results")).body;
    assert_eq!(
        results["data"][0]["fields"]["lines"][1]["description"], "Bolt",
        "{results}"
    );

    let r = api.get(&format!("/v1/data-products/{dpid}/export/lines"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    let text = r.text.trim_start_matches('\u{feff}');
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "document_id",
            "filename",
            "field",
            "index",
            "description",
            "quantity",
            "unit_price",
            "amount"
        ]
    );
    let lines: Vec<Vec<String>> = rdr
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(lines.len(), 4, "two elements of each document: {text}");
    assert_eq!(lines[0][0], docs[0]);
    assert_eq!(
        lines[0][2..],
        ["lines", "0", "'=1+2", "4", "", "10"].map(String::from)
    );
    assert_eq!(lines[1][3..5], ["1".to_string(), "Bolt".to_string()]);
    assert_eq!(
        lines[3][..4],
        [
            docs[1].clone(),
            "invoice.md".into(),
            "lines".into(),
            "1".into()
        ]
    );
    assert_eq!(lines[3][7], "1234.5");

    let plain = api
        .get(&format!("/v1/data-products/{dpid}/export/plain"))
        .text;
    let first = plain.trim_start_matches('\u{feff}').lines().next().unwrap();
    assert_eq!(
        first, "invoice_number",
        "arrays are the line-items export's"
    );
    let audit = api
        .get(&format!("/v1/data-products/{dpid}/export/audit"))
        .text;
    assert!(!audit.contains("lines"), "{audit}");
}

#[test]
fn a_held_table_is_corrected_whole_and_a_bad_element_is_refused_by_its_index() {
    let api = start();
    let mut f = fields();
    f[1]["requires_review"] = json!(true);
    let (pid, rows) = run_rules(&api, f, &[upload(&api, "invoice.md", MARKDOWN)]);
    let row = &rows[0];
    assert_eq!(
        row["fields"]["lines"],
        Value::Null,
        "held for review: {row}"
    );
    let pd = row["pipeline_document_id"].as_str().unwrap();
    let resolve = |body: Value| resolve(&api, pd, "lines", body);
    for (bad, says) in [
        (
            json!([{"description": "A", "amount": "ten"}]),
            "element 0: 'amount' must be JSON of type number",
        ),
        (
            json!([{"description": "A"}, {"colour": "red"}]),
            "element 1 names an unknown sub-field 'colour'",
        ),
        (
            json!([{"description": "A"}, 7]),
            "element 1 must be an object",
        ),
        (json!({"description": "A"}), "must be JSON of type array"),
    ] {
        let r = resolve(json!({"action": "correct", "corrected_value": bad}));
        assert_envelope(&r, 400, "bad_request");
        assert!(r.text.contains(says), "{says}: {}", r.text);
    }
    let fixed = json!([
        {"description": "Widget", "quantity": 2, "unit_price": 12.5, "amount": 25},
        {"description": "Gadget", "quantity": 1, "unit_price": 1234.5, "amount": 1234.5},
        {"description": "Freight", "quantity": null, "unit_price": null, "amount": 9.9}
    ]);
    let r = resolve(json!({"action": "correct", "corrected_value": fixed}));
    assert_eq!(r.status, 200, "{}", r.text);
    let row = wait_for(30, || {
        let rows = api.get(&format!("/v1/pipelines/{pid}/results")).body;
        let row = rows["data"][0].clone();
        (row["status"] == "complete").then_some(row)
    });
    assert_eq!(row["fields"]["lines"], fixed, "{row}");
}

/// A Spec over `lines`, `net` and `line_count` (computed from the table), judged by a blocking
/// gate on every element and on their sum.
fn gated_spec(api: &Api) -> String {
    let schema = api.create_schema(&json!({"name": "Gated", "fields": [
        {"field_name": "net", "data_type": "number"},
        {"field_name": "line_count", "data_type": "number"},
        {"field_name": "lines", "data_type": "array", "items": [
            {"field_name": "description"}, {"field_name": "amount", "data_type": "number"}]}
    ]}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let p = api.post("/v1/data-policies", &json!({"name": "Counts"}));
    assert_eq!(p.status, 201, "{}", p.text);
    let policy = p.body["id"].as_str().unwrap().to_string();
    for (f, t) in [("lines", "array"), ("line_count", "number")] {
        let r = api.post(
            &format!("/v1/data-policies/{policy}/fields"),
            &json!({"field_key": f, "type": t}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = api.post(
        &format!("/v1/data-policies/{policy}/rules"),
        &json!({"field_key": "line_count", "rule_type": "compute", "config": {"expr": "count(lines) + 0 * sum(lines[].amount)"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let g = api.post(
        &format!("/v1/schemas/{sid}/validation-stages"),
        &json!({"name": "Lines", "severity": "blocking", "mechanisms": [
        {"type": "business_rules", "rules": [
            {"check": "range", "field": "lines[].amount", "min": 0},
            {"check": "sum", "fields": ["lines[].amount"], "equals": "net", "tolerance": 0.01}]}]}),
    );
    assert_eq!(g.status, 201, "{}", g.text);
    let gate = g.body["id"].as_str().unwrap().to_string();
    let rail = json!({"rail": [{"type": "schema"}, {"type": "valid", "json": {"stage_ids": [gate]}},
        {"type": "resolve", "json": {"policy_ids": [policy]}}]});
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &rail);
    assert_eq!(r.status, 200, "{}", r.text);
    sid
}

#[test]
fn a_failing_element_holds_the_table_and_its_dependents_and_the_review_names_it() {
    let api = start();
    let sid = gated_spec(&api);
    let good = "Net: 30\n\n| Description | Amount |\n|---|---|\n| A | 10 |\n| B | 20 |\n";
    let bad = "Net: 30\n\n| Description | Amount |\n|---|---|\n| A | 40 |\n| B | -10 |\n";
    let ids = [upload(&api, "good.md", good), upload(&api, "bad.md", bad)];
    let pid = run_pipeline(&api, &sid, &ids);
    let rows = api
        .get(&format!("/v1/pipelines/{pid}/results?include=cells"))
        .body;
    let row = |n: &str| {
        rows["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["filename"] == n)
            .unwrap()
            .clone()
    };
    let good = row("good.md");
    assert_eq!(good["status"], "complete", "{good}");
    assert_eq!(good["fields"]["line_count"], 2, "count(lines): {good}");
    let bad = row("bad.md");
    assert_eq!(bad["cells"]["lines"]["status"], "blocked", "{bad}");
    assert_eq!(
        bad["cells"]["line_count"]["status"], "waiting",
        "a dependent waits: {bad}"
    );
    assert_eq!(bad["fields"]["line_count"], Value::Null);
    let queue = api
        .get(&format!("/v1/field-reviews?pipeline_id={pid}"))
        .body;
    let item = &queue["data"][0];
    assert_eq!(item["field_key"], "lines", "{queue}");
    let pd = item["pipeline_document_id"].as_str().unwrap();
    let detail = api.get(&format!("/v1/field-reviews/{pd}/lines")).body;
    let failing = &detail["failingElements"];
    assert_eq!(failing.as_array().map(Vec::len), Some(1), "{detail}");
    assert_eq!(failing[0]["index"], 1);
    assert_eq!(
        failing[0]["value"],
        json!({"description": "B", "amount": -10})
    );
    assert_eq!(failing[0]["row"]["source_text"], "| B | -10 |", "{detail}");
    let said = detail["verdicts"].to_string();
    assert!(
        said.contains("lines[1].amount: range: -10 is not in range"),
        "{said}"
    );
    assert!(
        !said.contains("lines[0].amount: range"),
        "only the failing element: {said}"
    );
}

#[test]
fn rules_on_every_element_normalize_the_table_before_what_reads_it_is_computed() {
    let api = start();
    let schema = api.create_schema(&json!({"name": "Cents", "fields": [
        {"field_name": "net", "data_type": "number"},
        {"field_name": "lines", "data_type": "array", "items": [
            {"field_name": "description"}, {"field_name": "amount", "data_type": "number"}]}
    ]}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let p = api.post("/v1/data-policies", &json!({"name": "Cents"}));
    let policy = p.body["id"].as_str().unwrap().to_string();
    for (f, t) in [("lines", "array"), ("net", "number")] {
        let r = api.post(
            &format!("/v1/data-policies/{policy}/fields"),
            &json!({"field_key": f, "type": t}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // Added in this order on purpose: the compute comes first, yet it runs after the rules
    // on the elements of the array it reads.
    for (key, rule_type, config) in [
        ("net", "compute", json!({"expr": "sum(lines[].amount)"})),
        ("lines[].amount", "unit", json!({"from": "m", "to": "cm"})),
        ("lines[].description", "format", json!({"op": "uppercase"})),
    ] {
        let r = api.post(
            &format!("/v1/data-policies/{policy}/rules"),
            &json!({"field_key": key, "rule_type": rule_type, "config": config}),
        );
        assert_eq!(r.status, 201, "{key}: {}", r.text);
    }
    for bad in ["lines[0].amount", "lines[]", "rows[].amount"] {
        let r = api.post(
            &format!("/v1/data-policies/{policy}/rules"),
            &json!({"field_key": bad, "rule_type": "format", "config": {"op": "trim"}}),
        );
        assert_envelope(&r, 400, "bad_request");
    }
    let rail = json!({"rail": [{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [policy]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let doc = upload(
        &api,
        "a.md",
        "| Description | Amount |\n|---|---|\n| tea | 1.25 |\n| cake | 2.5 |\n",
    );
    let pid = run_pipeline(&api, &sid, &[doc]);
    let row = &api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0];
    assert_eq!(
        row["fields"]["lines"],
        json!([{"description": "TEA", "amount": 125}, {"description": "CAKE", "amount": 250}]),
        "{row}"
    );
    assert_eq!(
        row["fields"]["net"], 375,
        "summed after the amounts were converted: {row}"
    );
}

#[test]
fn correcting_one_element_pins_only_it_is_logged_by_its_path_and_survives_a_rerun() {
    // The receiver of decisions below listens on this machine.
    let api = start_with(|c| c.webhooks.allow_private = true);
    let sid = gated_spec(&api);
    let doc = "Net: 30\n\n| Description | Amount |\n|---|---|\n| A | 40 |\n| B | -10 |\n";
    let pid = run_pipeline(&api, &sid, &[upload(&api, "a.md", doc)]);
    let row = api
        .get(&format!("/v1/pipelines/{pid}/results?include=cells"))
        .body["data"][0]
        .clone();
    assert_eq!(row["cells"]["lines"]["status"], "blocked", "{row}");
    let pd = row["pipeline_document_id"].as_str().unwrap().to_string();

    for (addressed, body, says) in [
        (
            "lines[5].amount",
            json!({"action": "correct", "corrected_value": 1}),
            "has 2 elements",
        ),
        (
            "lines[0].colour",
            json!({"action": "correct", "corrected_value": 1}),
            "not a sub-field",
        ),
        (
            "lines[1].amount",
            json!({"action": "correct", "corrected_value": "ten"}),
            "must be JSON of type number",
        ),
        (
            "lines[1]",
            json!({"action": "correct", "corrected_value": {"amount": "x"}}),
            "the element: 'amount'",
        ),
        (
            "lines[0]",
            json!({"action": "approve"}),
            "applies to the whole field",
        ),
        (
            "lines[].amount",
            json!({"action": "correct", "corrected_value": 1}),
            "one element",
        ),
        (
            "lines[1].amount",
            json!({"action": "correct"}),
            "needs corrected_value",
        ),
    ] {
        let r = resolve(&api, &pd, addressed, body);
        assert_envelope(&r, 400, "bad_request");
        assert!(r.text.contains(says), "{addressed}: {says}: {}", r.text);
    }
    // A receiver of decisions learns which element was corrected.
    let rx = crate::common::receiver::Receiver::start();
    let hook = api.post(
        "/v1/webhooks",
        &json!({"url": rx.url("/"), "events": ["review.decision_made"]}),
    );
    assert_eq!(hook.status, 201, "{}", hook.text);
    // Brackets percent-encoded, as a browser's fetch may send them.
    let r = resolve(
        &api,
        &pd,
        "lines%5B1%5D.amount",
        json!({"action": "correct", "corrected_value": 10, "reason": "sign misread"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let done = wait_for(30, || {
        let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
        (row["status"] == "complete").then_some(row)
    });
    let corrected = json!([{"description": "A", "amount": 40}, {"description": "B", "amount": 10}]);
    assert_eq!(done["fields"]["lines"], corrected, "{done}");
    assert_eq!(
        done["fields"]["line_count"], 2,
        "the dependent computed from the decision: {done}"
    );

    let log = api
        .get(&format!("/v1/field-reviews/decisions?pipeline_id={pid}"))
        .body;
    let d = &log["entries"][0];
    assert_eq!(d["fieldKey"], "lines", "{log}");
    assert_eq!(d["element"], "lines[1].amount", "{log}");
    assert_eq!(d["finalValue"], corrected);
    assert_eq!(d["priorValue"][1]["amount"], -10);
    let sent = wait_for(30, || rx.accepted().first().map(|r| r.json()));
    assert_eq!(sent["data"]["element"], "lines[1].amount", "{sent}");
    assert_eq!(sent["data"]["field_key"], "lines", "{sent}");
    let csv = api
        .get(&format!(
            "/v1/field-reviews/decisions/export?pipeline_id={pid}"
        ))
        .text;
    let head = csv.trim_start_matches('\u{feff}').lines().next().unwrap();
    assert!(head.ends_with(",element"), "{head}");
    assert!(
        csv.lines().nth(1).unwrap().ends_with(",lines[1].amount"),
        "{csv}"
    );

    // A rerun from extraction reads the table again: element 1 keeps the reviewer's amount,
    // the rest comes from the document.
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "extraction"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    settle(&api, &pid);
    let after = api
        .get(&format!("/v1/pipelines/{pid}/results?include=cells"))
        .body["data"][0]
        .clone();
    assert_eq!(after["fields"]["lines"], corrected, "{after}");
    assert_eq!(after["cells"]["lines"]["status"], "completed", "{after}");
    // The gate judged again what the reviewer decided: the amounts now add up to 50, not to
    // the invoice's net of 30, so the net is held.
    assert_eq!(after["cells"]["net"]["status"], "blocked", "{after}");
    let net = api.get(&format!("/v1/field-reviews/{pd}/net")).body;
    assert!(
        net["verdicts"].to_string().contains("sum: sum 50 vs 30"),
        "{net}"
    );
    let cell = field_cells(&api, &pid, &pd, "lines");
    let newest = cell["versions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(newest["source"], "rules_extraction", "re-extracted: {cell}");
    assert_eq!(newest["generation"], 2, "{cell}");
    assert_eq!(
        newest["value"], corrected,
        "the pin put back over the new reading: {cell}"
    );
    let log = api
        .get(&format!("/v1/field-reviews/decisions?pipeline_id={pid}"))
        .body;
    assert_eq!(log["entries"].as_array().unwrap().len(), 1, "{log}");
}

#[test]
fn a_patch_of_the_quick_tier_corrects_one_element_by_its_path() {
    let api = start();
    let doc = upload(&api, "t.md", MARKDOWN);
    let schema = json!({"type": "object", "properties": {"lines": {"type": "array", "items": {
        "type": "object", "properties": {"description": {"type": "string", "x-synonyms": ["Item"]},
            "amount": {"type": "number"}}}}}});
    let x = api.post(
        "/v1/extract",
        &json!({"document_id": doc, "schema": schema}),
    );
    assert!(x.status == 200 || x.status == 201, "{}", x.text);
    let id = x.body["id"].as_str().unwrap().to_string();
    assert_eq!(x.body["data"]["lines"][1]["amount"], 1234.5, "{}", x.text);
    let r = api.patch(
        &format!("/v1/extractions/{id}/data"),
        &json!({"corrections": [{"path": "lines[9].amount", "value": 1}]}),
    );
    assert_envelope(&r, 400, "bad_request");
    assert!(r.text.contains("has 2 elements"), "{}", r.text);
    let r = api.patch(
        &format!("/v1/extractions/{id}/data"),
        &json!({"corrections": [{"path": "lines[1].amount", "value": 1200, "reason": "discount"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["data"]["lines"],
        json!([{"description": "Widget", "amount": 25}, {"description": "Gadget", "amount": 1200}])
    );
    let log = api.get("/v1/field-reviews/decisions").body;
    let d = &log["entries"][0];
    assert_eq!(
        (&d["fieldKey"], &d["element"]),
        (&json!("lines"), &json!("lines[1].amount")),
        "{log}"
    );
    assert_eq!(d["triggerType"], "correction");
}

#[test]
fn paths_are_checked_against_the_sub_fields_and_a_schema_using_them_stays_editable() {
    let api = start();
    let sid = gated_spec(&api);
    // A gate naming a sub-field the table does not have is refused when it is saved.
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "Typo", "severity": "blocking",
        "mechanisms": [{"type": "business_rules", "rules": [{"check": "range", "field": "lines[].amout", "min": 0}]}]}));
    assert_envelope(&g, 400, "bad_request");
    assert!(
        g.text.contains("'amout' is not a sub-field of 'lines'"),
        "{}",
        g.text
    );
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "Scalar", "severity": "blocking",
        "mechanisms": [{"type": "business_rules", "rules": [{"check": "range", "field": "net[].x", "min": 0}]}]}));
    assert_envelope(&g, 400, "bad_request");
    assert!(g.text.contains("not an array field"), "{}", g.text);
    // A policy whose element rule names an unknown sub-field cannot join the rail.
    let p = api.post("/v1/data-policies", &json!({"name": "Typo"}));
    let policy = p.body["id"].as_str().unwrap().to_string();
    api.post(
        &format!("/v1/data-policies/{policy}/fields"),
        &json!({"field_key": "lines", "type": "array"}),
    );
    let r = api.post(
        &format!("/v1/data-policies/{policy}/rules"),
        &json!({"field_key": "lines[].amout", "rule_type": "format", "config": {"op": "trim"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let rail = json!({"rail": [{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [policy]}}]});
    let r = api.put(&format!("/v1/schemas/{sid}/rail"), &rail);
    assert_envelope(&r, 400, "bad_request");
    assert!(r.text.contains("'amout' is not a sub-field"), "{}", r.text);
    // The gate on `lines[].amount` uses `lines`: the schema can still be edited, not lose it.
    let r = api.patch(
        &format!("/v1/schemas/{sid}"),
        &json!({"fields": [{"field_name": "vendor"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let fields = api.get(&format!("/v1/schemas/{sid}")).body["fields"].clone();
    let without = fields
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["field_name"] != "lines")
        .cloned()
        .collect::<Vec<_>>();
    let r = api.put(&format!("/v1/schemas/{sid}"), &json!({"fields": without}));
    assert_envelope(&r, 400, "bad_request");
    assert!(r.text.contains("lines"), "{}", r.text);
}

#[test]
fn after_a_rule_is_tuned_the_table_is_what_the_phases_compute_now_with_the_persons_element() {
    let api = start();
    let schema = api.create_schema(&json!({"name": "Tuned", "fields": {
        "lines": [{"description": "string", "amount": "number"}]}}));
    let sid = schema["id"].as_str().unwrap().to_string();
    let p = api.post("/v1/data-policies", &json!({"name": "Units"}));
    let policy = p.body["id"].as_str().unwrap().to_string();
    api.post(
        &format!("/v1/data-policies/{policy}/fields"),
        &json!({"field_key": "lines", "type": "array"}),
    );
    let rule = api.post(
        &format!("/v1/data-policies/{policy}/rules"),
        &json!({"field_key": "lines[].amount", "rule_type": "unit", "config": {"from": "m", "to": "cm"}}),
    );
    let rule = rule.body["id"].as_str().unwrap().to_string();
    let g = api.post(&format!("/v1/schemas/{sid}/validation-stages"), &json!({"name": "Cap", "severity": "blocking",
        "mechanisms": [{"type": "business_rules", "rules": [{"check": "range", "field": "lines[].amount", "max": 1000}]}]}));
    let gate = g.body["id"].as_str().unwrap().to_string();
    let rail = json!({"rail": [{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [policy]}},
        {"type": "valid", "json": {"stage_ids": [gate]}}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let doc = upload(
        &api,
        "t.md",
        "| Description | Amount |\n|---|---|\n| A | 5 |\n| B | 20 |\n",
    );
    let pid = run_pipeline(&api, &sid, &[doc]);
    let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
    let pd = row["pipeline_document_id"].as_str().unwrap().to_string();
    let r = resolve(
        &api,
        &pd,
        "lines[1].amount",
        json!({"action": "correct", "corrected_value": 900}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = resolve(
        &api,
        &pd,
        "lines[1].amount",
        json!({"action": "override", "corrected_value": 900}),
    );
    assert_envelope(&r, 400, "bad_request");
    settle(&api, &pid);
    let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
    assert_eq!(
        row["fields"]["lines"],
        json!([{"description": "A", "amount": 500}, {"description": "B", "amount": 900}]),
        "{row}"
    );
    // The conversion is tuned away (metres stay metres): rerun from resolution. Nothing there
    // changes the table now, so it is what extraction read, with the person's element.
    let r = api.patch(
        &format!("/v1/data-policies/{policy}/rules/{rule}"),
        &json!({"config": {"from": "m", "to": "m"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api.post(
        &format!("/v1/pipelines/{pid}/rerun"),
        &json!({"from_phase": "resolution"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    settle(&api, &pid);
    let row = api.get(&format!("/v1/pipelines/{pid}/results")).body["data"][0].clone();
    assert_eq!(row["status"], "complete", "{row}");
    assert_eq!(
        row["fields"]["lines"],
        json!([{"description": "A", "amount": 5}, {"description": "B", "amount": 900}]),
        "{row}"
    );
}
