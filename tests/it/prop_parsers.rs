//! Generated bad input for the pure readers: the extractor and document readers, the expression
//! parser, the rail, gate, policy and schema compilers. Whatever arrives, they answer `Ok` or a
//! message — never a panic. The number, date and expression readers and the date formatter are
//! also held to what their answers mean: numbers read as Rust's own `str::parse::<f64>` reads
//! them (an independent oracle), dates have four-digit years, results are finite.

use chrono::{Datelike, NaiveDate};
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
            items: Vec::new(),
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
            let _ = rail::compile(&stages, &fields, &policy, &[], &[]);
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
    fn the_number_rule_reads_any_text_as_a_finite_number_or_a_note(
        s in prop_oneof![text(), number_text()], comma in any::<bool>()) {
        let v = number_rule(comma, &s);
        prop_assert!(
            v.as_ref().map_or(true, |v| v.as_f64().is_some_and(f64::is_finite)),
            "{s:?} read as {v:?}"
        );
    }

    #[test]
    fn scientific_numbers_read_as_rust_reads_them(
        neg in any::<bool>(), int in "[0-9]{1,25}", frac in "[0-9]{0,25}",
        exp in prop::option::of(("[eE]", prop::sample::select(vec!["", "+", "-"]), 0u32..400)),
        comma in any::<bool>(), grouped in any::<bool>(),
        prefix in prop::sample::select(vec!["", "EUR ", "€", "ca. "]),
        suffix in prop::sample::select(vec!["", " kg", "EUR", " €"]),
    ) {
        let mut plain = format!("{}{int}", if neg { "-" } else { "" });
        let mut written = format!("{prefix}{}{}", if neg { "-" } else { "" }, group(&int, comma, grouped));
        if !frac.is_empty() {
            plain += &format!(".{frac}");
            written += &format!("{}{frac}", if comma { ',' } else { '.' });
        }
        if let Some((e, sign, n)) = exp {
            plain += &format!("e{sign}{n}");
            written += &format!("{e}{sign}{n}");
        }
        written += suffix;
        let oracle: f64 = plain.parse().unwrap();
        let got = number_rule(comma, &written);
        if oracle.is_finite() {
            prop_assert_eq!(got.map(|v| v.as_f64()), Ok(Some(oracle)), "{}", written);
        } else {
            prop_assert!(got.is_err(), "{} read as {:?}", written, got);
        }
    }

    #[test]
    fn any_f64_written_out_reads_back_exactly(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        for written in [format!("{x:e}"), format!("{x:E}"), format!("{x}")] {
            prop_assert_eq!(number_rule(false, &written).map(|v| v.as_f64()), Ok(Some(x)), "{}", written);
        }
    }

    #[test]
    fn dates_are_read_with_four_digit_years_or_refused(
        s in prop_oneof![text(), date_text()], day_first in any::<bool>(),
        day in 0..=span_days(), form in 0usize..6) {
        if let Ok(d) = policy::parse_date(&s, day_first) {
            prop_assert!((1000..=9999).contains(&d.year()), "{s:?} read as {d}");
        }
        // Every day from 1000-01-01 to 9999-12-31, written in each form, reads back as itself.
        let date = first_day() + chrono::Days::new(day);
        let fmt = ["%Y-%m-%d", "%d.%m.%Y", "%-d/%-m/%Y", "%d %B %Y", "%B %d, %Y", "%e %b %Y"][form];
        let written = date.format(fmt).to_string();
        prop_assert_eq!(policy::parse_date(&written, true), Ok(date), "{}", written);
    }

    #[test]
    fn date_outputs_are_refused_when_saved_or_format_every_date(
        fmt in prop_oneof![date_format(), text()], day in 0..=span_days()) {
        let date = first_day() + chrono::Days::new(day);
        let input = json!(date.format("%Y-%m-%d").to_string());
        let config = json!({ "output": fmt });
        let saved = save_rule("date", config.clone());
        // What a stored rule runs as, saved or not: an answer, never a panic.
        let ran = policy::compile("date", &config)
            .map(|r| policy::apply(&r, &input, &|_| Value::Null));
        if saved.is_ok() {
            prop_assert!(matches!(ran, Ok(Ok(Value::String(_)))), "{fmt:?}: {ran:?}");
        }
    }

    #[test]
    fn expressions_evaluate_to_finite_numbers_or_notes(
        src in prop_oneof![text(), "[()a-z0-9+*/ ,.-]{0,60}", expr_text()],
        vals in prop::collection::vec(prop_oneof![any::<f64>(), -1e6f64..1e6, Just(0.0)], 3)) {
        let Ok(e) = expr::parse(&src) else { return Ok(()) };
        let saved = save_rule("compute", json!({ "expr": src }));
        let got = e.eval(&|name| match name {
            "net" => Ok(vals[0]),
            "tax" => Ok(vals[1]),
            "rate" => Ok(vals[2]),
            other => Err(format!("no {other}")),
        });
        if let Ok(x) = got {
            prop_assert!(x.is_finite(), "{src}: {x}");
        }
        // Round digits are integers from -15 to 15; a literal outside is refused when saved.
        if let Some(d) = literal_round_digits(&src) {
            let valid = d.fract() == 0.0 && (-15.0..=15.0).contains(&d);
            if !valid {
                prop_assert!(got.is_err(), "{src} gave {got:?}");
                prop_assert!(saved.is_err(), "{src} was saved");
            }
        }
    }
}

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(1000, 1, 1).unwrap()
}

/// Days from the first to the last date a four-digit year can have.
fn span_days() -> u64 {
    let last = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
    (last - first_day()).num_days() as u64
}

/// The `number` rule applied to `s`, with `,` as decimal separator when `comma`.
fn number_rule(comma: bool, s: &str) -> Result<Value, String> {
    let sep = if comma { "," } else { "." };
    let rule = policy::compile("number", &json!({ "decimal_separator": sep }))?;
    policy::apply(&rule, &json!(s), &|_| Value::Null)
}

/// Digits grouped in threes with the separator that is not the decimal one, when `on`.
fn group(int: &str, comma: bool, on: bool) -> String {
    if !on {
        return int.to_string();
    }
    let sep = if comma { '.' } else { ',' };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

/// Saves one rule on field `net` of a policy with fields `net`, `tax`, `rate`.
fn save_rule(rule_type: &str, config: Value) -> Result<Vec<String>, String> {
    let fields: Vec<String> = ["net", "tax", "rate"].map(String::from).to_vec();
    let rule = policy::RuleDef {
        id: "r".into(),
        field_key: "net".into(),
        rule_type: rule_type.into(),
        config,
        order: 1,
    };
    policy::compiled_order(&fields, &[rule])
}

/// The digits of `round(x, <literal>)` when the expression is exactly that.
fn literal_round_digits(src: &str) -> Option<f64> {
    let inner = src.strip_prefix("round(")?.strip_suffix(')')?;
    let (_, d) = inner.rsplit_once(", ")?;
    d.trim().parse().ok()
}

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{300,400}",
        "[-+]?[0-9]{1,4}([.,][0-9]{0,4})?[eE][-+]?[0-9]{1,5}",
        "[-+ €$a-zA-Z]{0,4}[0-9.,' ]{1,12}[eE]?[-+]?[0-9]{0,4}[ a-zA-Z€.%]{0,4}",
        "[0-9]{1,3}([., '][0-9]{3}){0,4}([.,][0-9]{1,3})?",
    ]
}

fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-+]?[0-9]{1,5}-[01]?[0-9]-[0-3]?[0-9]",
        "[0-3]?[0-9][./ ][01]?[0-9][./ ][0-9]{1,5}",
        "[-+ ]?[0-9]{0,5}[-./ ,]{1,2}[0-9]{0,5}[-./ ,]{1,2}[0-9]{0,5}[-. ]?",
        "[0-9]{1,3} [A-Za-z]{3,9},? [0-9]{0,5}",
        "[A-Za-z]{3,9} [0-9]{1,3},? [0-9]{0,5}",
    ]
}

fn date_format() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "%[-_0#]?[a-zA-Z%+]",
            "%[.]?[369]?f",
            "%:{1,3}z",
            "[ a-z/.:,-]{1,3}",
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

fn expr_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "net", "tax", "rate", "0", "1", "2.5", "1000000", "0.001"
        ])
        .prop_map(str::to_string),
        "[0-9]{1,20}(\\.[0-9]{1,5})?",
        "[0-9]{300,320}",
    ];
    let e = leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!['+', '-', '*', '/']),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("-{a}")),
            prop::collection::vec(inner.clone(), 1..4)
                .prop_map(|xs| format!("max({})", xs.join(", "))),
            inner.clone().prop_map(|a| format!("abs({a})")),
            (
                inner,
                prop_oneof![-20i32..20, -2000i32..2000].prop_map(|d| d.to_string())
            )
                .prop_map(|(a, d)| format!("round({a}, {d})")),
        ]
    });
    prop_oneof![
        e.clone(),
        (
            e,
            prop_oneof![
                (-20i32..20).prop_map(|d| d.to_string()),
                (-2000i32..2000).prop_map(|d| d.to_string()),
                (-20.0f64..20.0).prop_map(|d| format!("{d:.1}")),
            ]
        )
            .prop_map(|(a, d)| format!("round({a}, {d})")),
    ]
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
