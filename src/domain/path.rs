//! Paths into array fields, as rules, expressions, gates and corrections name them:
//! `lines` (the field), `lines[3]` (its element 3, from 0), `lines[3].amount` (that element's
//! sub-field) and `lines[].amount` (the sub-field of every element).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// `[]`: every element.
    Every,
    /// `[n]`: element n, from 0.
    At(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub field: String,
    pub index: Option<Index>,
    pub sub: Option<String>,
}

/// The field a path starts at: `lines` for `lines[].amount`, the name itself for a field.
pub fn base(path: &str) -> &str {
    path.split_once('[').map_or(path, |(f, _)| f)
}

/// Whether a name is a path into elements rather than a plain field name.
pub fn is_path(name: &str) -> bool {
    name.contains('[')
}

/// The path `name` is when it names every element (`lines[].amount`), else `None`. A plain
/// field name is told apart without parsing (the common case, on every check a gate runs).
pub fn every(name: &str) -> Option<Path> {
    if !is_path(name) {
        return None;
    }
    parse(name).ok().filter(Path::each)
}

/// Reads `field`, `field[]`, `field[n]`, `field[].sub` or `field[n].sub`.
pub fn parse(s: &str) -> Result<Path, String> {
    let bad = |why: &str| {
        format!("'{s}' is not a path ({why}; write lines[].amount, lines[2].amount or lines[2])")
    };
    let Some((field, rest)) = s.split_once('[') else {
        return Ok(Path {
            field: s.to_string(),
            index: None,
            sub: None,
        });
    };
    let (inside, after) = rest.split_once(']').ok_or_else(|| bad("no ']'"))?;
    let index = match inside.trim() {
        "" => Index::Every,
        n => Index::At(
            n.parse()
                .map_err(|_| bad("the index is not a whole number"))?,
        ),
    };
    let sub = match after {
        "" => None,
        a => Some(
            a.strip_prefix('.')
                .filter(|x| !x.is_empty() && !x.contains(['.', '[', ']']))
                .ok_or_else(|| bad("after ']' comes '.' and one sub-field name"))?
                .to_string(),
        ),
    };
    if field.is_empty() {
        return Err(bad("no field before '['"));
    }
    Ok(Path {
        field: field.to_string(),
        index: Some(index),
        sub,
    })
}

impl Path {
    /// Whether it names every element (`lines[].amount`).
    pub fn each(&self) -> bool {
        self.index == Some(Index::Every)
    }

    /// The values it names in a field's value: one per element for `[]`, the one element's (or
    /// null, past the end) for `[n]`, the value itself for a plain field. A sub-field an
    /// element lacks is null.
    pub fn values(&self, field_value: &Value) -> Vec<Value> {
        let of = |e: &Value| match &self.sub {
            Some(k) => e.get(k).cloned().unwrap_or(Value::Null),
            None => e.clone(),
        };
        match self.index {
            None => vec![field_value.clone()],
            Some(Index::Every) => field_value
                .as_array()
                .map(|l| l.iter().map(of).collect())
                .unwrap_or_default(),
            Some(Index::At(n)) => vec![field_value
                .as_array()
                .and_then(|l| l.get(n))
                .map(of)
                .unwrap_or(Value::Null)],
        }
    }

    /// Element `i`'s path as people read it: `lines[2].amount`.
    pub fn at(&self, i: usize) -> String {
        match &self.sub {
            Some(k) => format!("{}[{i}].{k}", self.field),
            None => format!("{}[{i}]", self.field),
        }
    }
}

/// Sets what a path to one element names (`lines[3].amount`, `lines[3]`) in a field's value;
/// `false` when the value has no such element (or the path names no one element).
pub fn set(field_value: &mut Value, p: &Path, x: Value) -> bool {
    let Some(Index::At(n)) = p.index else {
        return false;
    };
    let Some(element) = field_value.as_array_mut().and_then(|l| l.get_mut(n)) else {
        return false;
    };
    match (&p.sub, element) {
        (None, e) => *e = x,
        (Some(k), Value::Object(obj)) => {
            obj.insert(k.clone(), x);
        }
        (Some(_), _) => return false,
    }
    true
}

/// A field's value with a reviewer's element pins put back over it, in the order they were
/// set; the pins whose element the value does not have.
pub fn apply_pins(field_value: &Value, pins: &[(String, Value)]) -> (Value, Vec<String>) {
    let mut out = field_value.clone();
    let mut missing = Vec::new();
    for (at, x) in pins {
        let applied = parse(at).is_ok_and(|p| set(&mut out, &p, x.clone()));
        if !applied {
            missing.push(at.clone());
        }
    }
    (out, missing)
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.field)?;
        match self.index {
            None => return Ok(()),
            Some(Index::Every) => write!(f, "[]")?,
            Some(Index::At(n)) => write!(f, "[{n}]")?,
        }
        match &self.sub {
            Some(k) => write!(f, ".{k}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_read_and_print_back() {
        for s in [
            "lines",
            "lines[]",
            "lines[3]",
            "lines[].amount",
            "lines[0].amount",
        ] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            parse("lines[].amount").unwrap().sub.as_deref(),
            Some("amount")
        );
        assert!(parse("lines[].amount").unwrap().each());
        assert_eq!(parse("lines[2]").unwrap().index, Some(Index::At(2)));
        for bad in [
            "lines[",
            "lines[x]",
            "lines[].",
            "lines[]amount",
            "[1].a",
            "lines[].a.b",
            "lines[-1]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(base("lines[].amount"), "lines");
        assert_eq!(base("total"), "total");
    }

    #[test]
    fn pins_are_put_back_over_a_new_value_and_missing_elements_named() {
        let new = json!([{"amount": 1, "d": "a"}, {"amount": 2, "d": "b"}]);
        let pins = vec![
            ("lines[1].amount".to_string(), json!(20)),
            ("lines[0]".to_string(), json!({"amount": 10, "d": "A"})),
            ("lines[5].amount".to_string(), json!(9)),
        ];
        let (v, missing) = apply_pins(&new, &pins);
        assert_eq!(
            v,
            json!([{"amount": 10, "d": "A"}, {"amount": 20, "d": "b"}])
        );
        assert_eq!(missing, vec!["lines[5].amount"]);
        assert_eq!(apply_pins(&json!(null), &pins[..1]).1.len(), 1);
    }

    #[test]
    fn values_of_every_element_one_element_or_past_the_end() {
        let v = json!([{"amount": 1}, {"amount": null}, {"x": 2}]);
        let p = parse("lines[].amount").unwrap();
        assert_eq!(p.values(&v), vec![json!(1), json!(null), json!(null)]);
        assert_eq!(parse("lines[0].amount").unwrap().values(&v), vec![json!(1)]);
        assert_eq!(
            parse("lines[9].amount").unwrap().values(&v),
            vec![json!(null)]
        );
        assert_eq!(parse("lines[2]").unwrap().values(&v), vec![json!({"x": 2})]);
        assert!(p.values(&json!(null)).is_empty());
        assert_eq!(p.at(1), "lines[1].amount");
    }
}
