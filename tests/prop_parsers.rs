//! Generated bad input for the pure readers: the extractor and document readers, the expression
//! parser, the rail, gate, policy and schema compilers. Whatever arrives, they answer `Ok` or a
//! message — never a panic.

use proptest::prelude::*;
use quire::domain::{expr, extract, gate, policy, rail, schema};
use serde_json::{json, Value};

/// Keys the compilers look for, so generated objects reach past the first check.
const KEYS: &[&str] = &[
    "type",
    "json",
    "policy_ids",
    "stage_ids",
    "field_key",
    "fields",
    "field_name",
    "data_type",
    "rule_type",
    "config",
    "expr",
    "name",
    "mechanisms",
    "rules",
    "check",
    "field",
    "min",
    "max",
    "pattern",
    "equals",
    "severity",
    "values",
    "synonyms",
    "day_first",
    "decimal_separator",
    "threshold",
    "is_required",
    "x-display",
    "properties",
    "items",
    "",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,12}",
        "\\PC{0,40}",
        ".{0,40}",
        Just("\u{0}".to_string()),
        Just("😀 مرحبا e\u{301} \u{202e}".to_string()),
        "[0-9.,-]{0,12}",
        "[a-z]+ [+*/-] [a-z0-9(). ]{0,20}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
        prop::sample::select(KEYS).prop_map(|k| Value::String(k.to_string())),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(KEYS).prop_map(str::to_string), text()],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn field_specs() -> Vec<extract::FieldSpec> {
    ["invoice_number", "net", "issue_date", "currency"]
        .iter()
        .zip(["string", "number", "date", "string"])
        .map(|(n, t)| extract::FieldSpec {
            name: n.to_string(),
            display_name: schema::default_display_name(n),
            data_type: t.to_string(),
            synonyms: vec!["Amount due".into()],
        })
        .collect()
}

const MIMES: [&str; 4] = [
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn the_extractor_reads_any_bytes_in_any_format(bytes in prop::collection::vec(any::<u8>(), 0..400),
                                                  words in prop::collection::vec(text(), 0..12),
                                                  mime in 0usize..4) {
        let specs = field_specs();
        let _ = extract::extract(&bytes, MIMES[mime], &specs);
        let joined = words.join(if mime == 2 { "," } else { ": " });
        let _ = extract::extract(joined.as_bytes(), MIMES[mime], &specs);
        for t in ["string", "number", "date", "boolean", "integer", "array", "object"] {
            let _ = extract::typed_value(&joined, t);
        }
    }

    #[test]
    fn the_expression_parser_answers_any_text(src in prop_oneof![text(), "[()a-z0-9+*/ ,.<>=!&|?:-]{0,80}"]) {
        let _ = expr::parse(&src);
    }

    #[test]
    fn the_rail_compiler_answers_any_json(v in json_value()) {
        if let Ok(stages) = rail::parse_stages(&v) {
            let fields = vec!["net".to_string(), "total".to_string()];
            let policy = |_: &str| Some(rail::PolicyInfo { name: "p".into(), active: true, fields: fields.clone() });
            let _ = rail::compile(&stages, &fields, &policy, &[]);
        }
        let _ = rail::parse_stages(&json!([v]));
    }

    #[test]
    fn gates_policies_and_schemas_answer_any_json(v in json_value(), kind in prop::sample::select(vec![
        "compute", "number", "date", "currency", "map", "default", "regex", "trim", "case", "lookup", "nope"]),
        severity in prop::sample::select(vec!["info", "warning", "blocking", "x"])) {
        let fields = vec!["net".to_string(), "total".to_string()];
        let _ = gate::compile(severity, &[], &v, &fields);
        let _ = gate::compile(severity, &fields, &json!([v]), &fields);
        if let Ok(rule) = policy::compile(kind, &v) {
            let input = |_: &str| json!("12,5");
            let _ = policy::apply(&rule, &v, &input);
        }
        let _ = schema::fields_from_input(&v);
        let _ = schema::fields_from_definition(&v);
    }

    #[test]
    fn dates_in_any_shape(s in text(), day_first in any::<bool>()) {
        let _ = policy::parse_date(&s, day_first);
    }
}

#[test]
fn pathological_nesting_and_size_are_refused_or_read_without_overflow() {
    let deep = "(".repeat(100_000) + "1" + &")".repeat(100_000);
    assert!(expr::parse(&deep).is_err());
    let deep_json = "[".repeat(100_000) + &"]".repeat(100_000);
    assert!(extract::extract(deep_json.as_bytes(), "application/json", &field_specs()).is_err());
    let line = format!("Net: 12.50 {}", "x".repeat(10 * 1024 * 1024));
    for mime in MIMES {
        let _ = extract::extract(line.as_bytes(), mime, &field_specs());
    }
    let invalid = [0xff, 0xfe, 0x00, b'N', b'e', b't'];
    assert!(extract::extract(&invalid, "text/plain", &field_specs()).is_err());
    let many: Vec<Value> = (0..10_000)
        .map(|i| json!({"field_name": format!("f{i}")}))
        .collect();
    let _ = schema::fields_from_input(&json!(many));
}
