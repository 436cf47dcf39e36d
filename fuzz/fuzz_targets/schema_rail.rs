#![no_main]
//! The configuration readers over arbitrary JSON: schema field input and JSON Schema
//! definitions, gate mechanisms (and judging a field with what compiled), policy rules (each
//! rule type, a stored rule list, applying what compiled) and rails. They answer `Ok` or a
//! message, never a panic.

use libfuzzer_sys::fuzz_target;
use quire::domain::{gate, policy, rail, schema};
use serde_json::{json, Value};

const GATE_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
const POLICY_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8058";

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn schema_fields(v: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for candidate in [v, &v["fields"]] {
        for parsed in [
            schema::fields_from_input(candidate),
            schema::fields_from_definition(candidate),
        ] {
            let Ok(fields) = parsed else { continue };
            let Ok(fields) = schema::validate_fields(fields) else {
                continue;
            };
            let def = schema::to_definition(&fields);
            if let Ok(again) = schema::fields_from_definition(&def) {
                let _ = schema::validate_fields(again);
            }
            if names.is_empty() {
                names = fields.into_iter().map(|f| f.field_name).collect();
            }
        }
    }
    if names.is_empty() {
        names = ["net", "tax", "total", "issue_date"]
            .map(String::from)
            .to_vec();
    }
    names
}

fn gates(v: &Value, fields: &[String]) {
    let severity = v["severity"].as_str().unwrap_or("blocking");
    let scope = strings(v.get("field_scope"));
    let wrapped = json!([v]);
    let tries = [
        (severity, scope.as_slice(), v.get("mechanisms").unwrap_or(v)),
        ("warning", &[][..], v),
        ("info", fields, &wrapped),
    ];
    let lookup = |name: &str| (v.get(name).cloned().unwrap_or(Value::Null), false);
    let folded = gate::fold_text(&v.to_string());
    for (severity, scope, mechanisms) in tries {
        let Ok(g) = gate::compile(severity, scope, mechanisms, fields) else {
            continue;
        };
        for field in fields {
            let value = v.get(field.as_str()).unwrap_or(&Value::Null);
            let ev = gate::Evidence {
                value,
                source: v["source"].as_str(),
                rule_type: v["rule_type"].as_str(),
                confidence: v["confidence"].as_f64(),
                extracted: v.get("extracted"),
                samples: v["samples"]
                    .as_array()
                    .and_then(|s| Some((s.first()?.as_u64()? as u32, s.get(1)?.as_u64()? as u32))),
            };
            let j = gate::judge(&g, field, &ev, &lookup, &folded);
            // What the executor stores (a template and its values) must read back as the JSON
            // object whose reasoning is the text people read, whatever the values hold.
            for m in &j.mechanisms {
                let (template, fragments) = gate::mechanism_template(m);
                let filled = gate::fill(&template, &fragments).expect("a template fits its values");
                let object: Value =
                    serde_json::from_str(&filled).expect("the filled template is JSON");
                assert_eq!(object["reasoning"], m.reasoning.text(), "{filled}");
            }
        }
    }
}

fn policies(v: &Value, fields: &[String]) {
    let input = |name: &str| v.get(name).cloned().unwrap_or(Value::Null);
    let config = v.get("config").unwrap_or(v);
    for rule_type in policy::RULE_TYPES {
        let _ = policy::validate(rule_type, config);
        let Ok(rule) = policy::compile(rule_type, config) else {
            continue;
        };
        let _ = rule.inputs();
        for current in [v, &json!("12,5"), &Value::Null] {
            let _ = policy::apply_within(&rule, current, &input, 4096);
        }
    }
    let rules = v.get("rules").unwrap_or(v).clone();
    if let Ok(rules) = serde_json::from_value::<Vec<policy::RuleDef>>(rules) {
        let _ = policy::compiled_order(fields, &rules);
    }
}

fn rails(v: &Value, fields: &[String]) {
    let policy = |id: &str| {
        (id == POLICY_ID).then(|| rail::PolicyInfo {
            name: "p".into(),
            active: true,
            fields: fields.iter().take(2).cloned().collect(),
        })
    };
    let gates = [rail::GateInfo {
        id: GATE_ID.into(),
        name: "g".into(),
    }];
    let models = ["local-qwen".to_string()];
    for stages in [v, v.get("rail").unwrap_or(&Value::Null), &json!([v])] {
        if let Ok(stages) = rail::parse_stages(stages) {
            if let Ok(phases) = rail::compile(&stages, fields, &policy, &gates, &models) {
                for p in &phases {
                    let _ = p.preview();
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let fields = schema_fields(&v);
    gates(&v, &fields);
    policies(&v, &fields);
    rails(&v, &fields);
});
