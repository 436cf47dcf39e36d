//! Conditions on extracted values (`POST /v1/documents/filter`): which operators there are and
//! what each means for numbers, dates and text. Pure: the values come from the caller.

use serde_json::Value;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Between,
    Contains,
    IsEmpty,
    IsNotEmpty,
}

pub const OPERATORS: &str = "eq, neq, gt, gte, lt, lte, between, contains, is_empty, is_not_empty";

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "between" => Op::Between,
            "contains" => Op::Contains,
            "is_empty" => Op::IsEmpty,
            "is_not_empty" => Op::IsNotEmpty,
            _ => return None,
        })
    }

    /// Whether the operator needs a `value` (and `between` a `valueTo` too).
    pub fn operands(self) -> usize {
        match self {
            Op::IsEmpty | Op::IsNotEmpty => 0,
            Op::Between => 2,
            _ => 1,
        }
    }

    /// Whether it orders values (and so needs numbers or dates to mean anything).
    pub fn orders(self) -> bool {
        matches!(self, Op::Gt | Op::Gte | Op::Lt | Op::Lte | Op::Between)
    }
}

/// A value read as a number: a JSON number, or text that is one.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Two values compared as numbers when both are numbers, else as text (ISO dates order as
/// text); `None` when either is missing.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y),
        _ => Some(text(a)?.cmp(&text(b)?)),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Whether `v` (a document's value of the field) satisfies `op` with `value` and `value_to`.
/// Equality of text ignores case; `contains` is a case-insensitive substring test.
pub fn matches(op: Op, v: &Value, value: &Value, value_to: &Value) -> bool {
    match op {
        Op::IsEmpty => is_empty(v),
        Op::IsNotEmpty => !is_empty(v),
        _ if v.is_null() => false,
        Op::Eq => equal(v, value),
        Op::Neq => !equal(v, value),
        Op::Gt => compare(v, value) == Some(Ordering::Greater),
        Op::Gte => matches!(compare(v, value), Some(Ordering::Greater | Ordering::Equal)),
        Op::Lt => compare(v, value) == Some(Ordering::Less),
        Op::Lte => matches!(compare(v, value), Some(Ordering::Less | Ordering::Equal)),
        Op::Between => {
            matches!(compare(v, value), Some(Ordering::Greater | Ordering::Equal))
                && matches!(compare(v, value_to), Some(Ordering::Less | Ordering::Equal))
        }
        Op::Contains => match (text(v), text(value)) {
            (Some(hay), Some(needle)) => hay.to_lowercase().contains(&needle.to_lowercase()),
            _ => false,
        },
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (text(a), text(b)) {
            (Some(x), Some(y)) => x.to_lowercase() == y.to_lowercase(),
            _ => false,
        },
    }
}

/// Whether an ordering operator on a field of `data_type` can mean anything.
pub fn orders_meaningfully(data_type: &str) -> bool {
    matches!(data_type, "number" | "integer" | "date")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_operator_means_what_its_name_says() {
        let n = Value::Null;
        assert!(matches(Op::Eq, &json!(12.5), &json!("12.5"), &n));
        assert!(matches(
            Op::Eq,
            &json!("ACME Corp"),
            &json!("acme corp"),
            &n
        ));
        assert!(matches(Op::Neq, &json!("a"), &json!("b"), &n));
        assert!(matches(Op::Gt, &json!(10), &json!(9.99), &n));
        assert!(!matches(Op::Gt, &json!(10), &json!(10), &n));
        assert!(matches(Op::Gte, &json!(10), &json!(10), &n));
        assert!(matches(
            Op::Lt,
            &json!("2024-01-31"),
            &json!("2024-02-01"),
            &n
        ));
        assert!(matches(Op::Lte, &json!(3), &json!(3), &n));
        assert!(matches(Op::Between, &json!(5), &json!(1), &json!(5)));
        assert!(!matches(Op::Between, &json!(6), &json!(1), &json!(5)));
        assert!(matches(
            Op::Contains,
            &json!("Acme Corporation"),
            &json!("CORP"),
            &n
        ));
        assert!(matches(Op::IsEmpty, &json!(""), &n, &n));
        assert!(matches(Op::IsEmpty, &n, &n, &n));
        assert!(matches(Op::IsNotEmpty, &json!(0), &n, &n));
        // A missing value satisfies no comparison, not even `neq`.
        assert!(!matches(Op::Neq, &n, &json!("x"), &n));
        assert!(!matches(Op::Lt, &n, &json!(1), &n));
    }

    #[test]
    fn operators_parse_and_know_their_operands() {
        for name in OPERATORS.split(", ") {
            assert!(Op::parse(name).is_some(), "{name}");
        }
        assert_eq!(Op::parse("like"), None);
        assert_eq!(Op::parse("between").unwrap().operands(), 2);
        assert_eq!(Op::parse("is_empty").unwrap().operands(), 0);
        assert!(Op::Gt.orders() && !Op::Contains.orders());
    }
}
