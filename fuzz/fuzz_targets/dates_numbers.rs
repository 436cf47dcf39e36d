#![no_main]
//! The `date` and `number` rules over arbitrary text, with options from the first byte and an
//! optional date output format after a NUL: numbers are finite, dates have four-digit years,
//! and a date output that `validate` accepts formats every date the rule reads.
//!
//! Input: `flags text [NUL output]`, flags bit 0 = day first, bit 1 = decimal comma,
//! bits 2-5 = round (0-12; above is none).

use chrono::Datelike;
use libfuzzer_sys::fuzz_target;
use quire::domain::policy;
use serde_json::{json, Value};

fn none(_: &str) -> Value {
    Value::Null
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let day_first = flags & 1 != 0;
    let decimal = if flags & 2 != 0 { "," } else { "." };
    let round = match (flags >> 2) & 0x0f {
        r @ 0..=12 => json!(r),
        _ => Value::Null,
    };
    let (text, output) = match rest.split_once('\0') {
        Some((t, o)) => (t, Some(o)),
        None => (rest, None),
    };
    let current = json!(text);

    // Numbers.
    let number = policy::compile(
        "number",
        &json!({ "decimal_separator": decimal, "round": round }),
    )
    .expect("a valid number configuration compiles");
    if let Ok(v) = policy::apply(&number, &current, &none) {
        assert!(
            v.as_f64().is_some_and(f64::is_finite),
            "{text:?} read as {v}"
        );
    }

    // Dates, in the default output.
    let parsed = policy::parse_date(text, day_first);
    if let Ok(d) = parsed {
        assert!((1000..=9999).contains(&d.year()), "{text:?} read as {d}");
    }
    let date = policy::compile("date", &json!({ "day_first": day_first }))
        .expect("a valid date configuration compiles");
    let got = policy::apply(&date, &current, &none);
    assert_eq!(got.is_ok(), parsed.is_ok(), "{text:?}: {got:?}");
    if let (Ok(v), Ok(d)) = (&got, &parsed) {
        assert_eq!(v, &json!(d.to_string()), "{text:?}");
    }

    // Dates, in a given output format.
    if let Some(output) = output {
        let config = json!({ "day_first": day_first, "output": output });
        if let Ok(rule) = policy::compile("date", &config) {
            let got = policy::apply(&rule, &current, &none);
            assert_eq!(policy::apply(&rule, &Value::Null, &none), Ok(Value::Null));
            if policy::validate("date", &config).is_ok() && parsed.is_ok() {
                assert!(
                    got.is_ok(),
                    "{output:?} was saved but fails on {text:?}: {got:?}"
                );
            }
        } else {
            assert!(policy::validate("date", &config).is_err());
        }
    }
});
