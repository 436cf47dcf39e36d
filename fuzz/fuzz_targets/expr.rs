#![no_main]
//! The `compute` expression language over arbitrary text: parsing answers `Ok` or a message,
//! evaluation with fixed inputs gives a finite number or a message, and `check` refuses only
//! expressions that fail whatever the inputs.

use libfuzzer_sys::fuzz_target;
use quire::domain::{expr, policy};
use serde_json::{json, Value};

fn input(name: &str) -> Value {
    match name {
        "net" => json!(100),
        "tax" => json!("19,5"),
        "rate" => json!(0.19),
        "zero" => json!(0),
        "neg" => json!(-3.5),
        "big" => json!(1e300),
        "tiny" => json!(5e-324),
        "text" => json!("n/a"),
        _ => Value::Null,
    }
}

fn number(name: &str) -> Result<f64, String> {
    policy::as_number(&input(name)).ok_or_else(|| format!("no number for '{name}'"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = expr::parse(src);
    // The same text as a saved `compute` rule: compiled exactly when it parses.
    let rule = policy::compile("compute", &json!({ "expr": src }));
    assert_eq!(rule.is_ok(), parsed.is_ok(), "{src:?}");
    let Ok(e) = parsed else {
        return;
    };
    assert!(src.len() <= expr::MAX_LEN);
    let _ = e.vars();
    let checked = e.check();
    let with_inputs = e.eval(&number);
    let without = e.eval(&|name| Err(format!("'{name}' has no value")));
    for v in [&with_inputs, &without].into_iter().flatten() {
        assert!(v.is_finite(), "{src:?} gave {v}");
    }
    if checked.is_err() {
        assert!(
            with_inputs.is_err() && without.is_err(),
            "{src:?}: refused by check ({checked:?}) but evaluates"
        );
    }
    if let Ok(rule) = rule {
        if let Ok(v) = policy::apply(&rule, &Value::Null, &input) {
            assert!(v.as_f64().is_some_and(f64::is_finite), "{src:?} gave {v}");
        }
    }
});
