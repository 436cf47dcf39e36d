//! One organization's complete set of resources — a Spec, documents, a finished run with a
//! field held for review, a data product — and a way to fill any route template with its ids.

use super::*;
use serde_json::json;

pub struct World {
    pub schema: String,
    pub stage: String,
    pub policy: String,
    pub rule: String,
    pub policy_field: String,
    pub documents: Vec<String>,
    /// An image document (its page image is the upload itself).
    pub image: String,
    pub pipeline: String,
    pub held_pd: String,
    pub held_field: String,
    pub data_product: String,
    /// A quick-tier extraction of the first document, a job over the third, a registry field.
    pub extraction: String,
    pub job: String,
    pub field: String,
    /// A webhook (to an unroutable documentation address) and the delivery of its test event.
    pub webhook: String,
    pub delivery: String,
}

pub const WORLD_DOCS: [(&str, &str); 3] = [
    ("a.txt", "Invoice Number: INV-1\nNet: 50\nTax: 5"),
    ("b.txt", "Invoice Number: INV-2\nNet: 600\nTax: 6"),
    ("c.txt", "Invoice Number: INV-3\nNet: 70\nTax: 7"),
];

fn id(r: &Resp) -> String {
    assert!(r.status == 200 || r.status == 201, "{}", r.text);
    r.body["id"].as_str().expect("an id").to_string()
}

impl World {
    /// Builds everything with `api`'s key; one document (b.txt, net 600) is held at the gate.
    pub fn build(api: &Api) -> World {
        let s = api.create_schema(&json!({"name": "inv", "fields": [
            {"field_name": "invoice_number"}, {"field_name": "net", "data_type": "number"},
            {"field_name": "tax", "data_type": "number"}, {"field_name": "total", "data_type": "number"}]}));
        let schema = s["id"].as_str().unwrap().to_string();
        let policy = id(&api.post("/v1/data-policies", &json!({"name": "sum"})));
        for f in ["net", "tax", "total"] {
            let r = api.post(
                &format!("/v1/data-policies/{policy}/fields"),
                &json!({"field_key": f, "type": "number"}),
            );
            assert!(r.status < 300, "{}", r.text);
        }
        let rule = id(&api.post(
            &format!("/v1/data-policies/{policy}/rules"),
            &json!({"field_key": "total", "rule_type": "compute", "config": {"expr": "net + tax"}}),
        ));
        let stage = id(&api.post(
            &format!("/v1/schemas/{schema}/validation-stages"),
            &json!({"name": "Checks", "severity": "blocking", "mechanisms": [
                {"type": "business_rules", "rules": [{"field": "net", "check": "range", "max": 100}]}]}),
        ));
        let rail = json!({"rail": [{"type": "schema"}, {"type": "resolve", "json": {"policy_ids": [policy]}},
            {"type": "valid", "json": {"stage_ids": [stage]}}]});
        let r = api.put(&format!("/v1/schemas/{schema}/rail"), &rail);
        assert_eq!(r.status, 200, "{}", r.text);
        let documents: Vec<String> = WORLD_DOCS
            .iter()
            .map(|(n, c)| id(&api.post("/v1/documents", &json!({"filename": n, "content": c}))))
            .collect();
        let image = id(&upload_bytes(api, "blank.png", &blank_png(64, 64), None));
        let pipeline = id(&api.post(
            "/v1/pipelines",
            &json!({"schema_id": schema, "document_ids": documents}),
        ));
        wait_settled(api, &pipeline);
        let queue = api.get(&format!("/v1/field-reviews?pipeline_id={pipeline}"));
        let item = queue.body["data"][0].clone();
        assert!(item.is_object(), "nothing held: {}", queue.text);
        let dp = api.post(
            &format!("/v1/pipelines/{pipeline}/data-product"),
            &json!({}),
        );
        assert_eq!(dp.status, 201, "{}", dp.text);
        let extraction = id(&api.post(
            "/v1/extract",
            &json!({"document_id": documents[0], "schema_id": schema}),
        ));
        let job = id(&api.post(
            "/v1/jobs",
            &json!({"schema_id": schema, "document_ids": [documents[2]]}),
        ));
        wait_settled(api, &job);
        let field = api.get("/v1/fields").body["data"][0]["id"]
            .as_str()
            .expect("a registry field")
            .to_string();
        let webhook = id(&api.post(
            "/v1/webhooks",
            &json!({"url": "https://192.0.2.1/quire", "events": ["*"]}),
        ));
        let test = api.post(&format!("/v1/webhooks/{webhook}/test"), &json!({}));
        assert_eq!(test.status, 202, "{}", test.text);
        let delivery = test.body["id"].as_str().expect("a delivery id").to_string();
        World {
            webhook,
            delivery,
            extraction,
            job,
            field,
            schema,
            stage,
            policy,
            rule,
            policy_field: "net".into(),
            documents,
            image,
            pipeline,
            held_pd: item["pipeline_document_id"].as_str().unwrap().to_string(),
            held_field: item["field_key"].as_str().unwrap().to_string(),
            data_product: dp.body["dataProduct"]["id"].as_str().unwrap().to_string(),
        }
    }

    /// The route with this world's ids in place of its parameters.
    pub fn fill(&self, template: &str) -> String {
        let id = if template.starts_with("/v1/schemas/") {
            &self.schema
        } else if template.starts_with("/v1/data-policies/") {
            &self.policy
        } else if template.starts_with("/v1/pipelines/") {
            &self.pipeline
        } else if template.starts_with("/v1/data-products/") {
            &self.data_product
        } else if template.ends_with("/image") {
            &self.image
        } else if template.starts_with("/v1/extractions/") {
            &self.extraction
        } else if template.starts_with("/v1/jobs/") {
            &self.job
        } else if template.starts_with("/v1/fields/") {
            &self.field
        } else if template.starts_with("/v1/webhooks/") {
            &self.webhook
        } else {
            &self.documents[0]
        };
        let field = if template.starts_with("/v1/data-policies/") {
            &self.policy_field
        } else {
            &self.held_field
        };
        template
            .replace("{id}", id)
            .replace("{stage_id}", &self.stage)
            .replace("{rule_id}", &self.rule)
            .replace("{pd_id}", &self.held_pd)
            .replace("{field_key}", field)
            .replace("{delivery_id}", &self.delivery)
            .replace("{page}", "1")
    }

    /// The route with ids that exist nowhere (a field key no resource has).
    pub fn fill_missing(template: &str) -> String {
        template
            .replace("{id}", "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d01")
            .replace("{stage_id}", "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d02")
            .replace("{rule_id}", "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d03")
            .replace("{pd_id}", "0192f0c0-e0b0-7c3a-8d4e-5f6a7b8c9d04")
            .replace("{field_key}", "no_such_field")
            .replace("{delivery_id}", "dlv_00000000000000000000000000000000")
            .replace("{page}", "1")
    }

    /// Every id of this world, to check nothing leaks where it should not appear.
    pub fn ids(&self) -> Vec<&str> {
        let mut v = vec![
            self.schema.as_str(),
            &self.stage,
            &self.policy,
            &self.rule,
            &self.pipeline,
            &self.held_pd,
            &self.data_product,
            &self.extraction,
            &self.job,
            &self.field,
            &self.webhook,
            &self.delivery,
        ];
        v.extend(self.documents.iter().map(String::as_str));
        v.push(&self.image);
        v
    }
}

pub fn wait_settled(api: &Api, pid: &str) -> Value {
    wait_for(60, || {
        let p = api.get(&format!("/v1/pipelines/{pid}/progress")).body;
        let done = p["completedDocuments"].as_i64().unwrap_or(0)
            + p["errorDocuments"].as_i64().unwrap_or(0);
        (p["status"] != "active" && Some(done) == p["totalDocuments"].as_i64()).then_some(p)
    })
}
