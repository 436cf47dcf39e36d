//! Validation gates: configuration, checks and verdicts.

use super::path;
use super::policy::as_number;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Blocking,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "blocking" => Severity::Blocking,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Blocking => "blocking",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Operand {
    Field(String),
    Literal(f64),
}

#[derive(Debug, Clone)]
pub enum Check {
    Required {
        field: String,
    },
    Enum {
        field: String,
        values: Vec<Value>,
    },
    Regex {
        field: String,
        re: Regex,
    },
    Range {
        field: String,
        min: Option<Value>,
        max: Option<Value>,
    },
    Length {
        field: String,
        min: Option<usize>,
        max: Option<usize>,
    },
    Compare {
        left: String,
        op: String,
        right: Operand,
    },
    Sum {
        fields: Vec<String>,
        equals: Operand,
        tolerance: f64,
    },
}

impl Check {
    /// The field a failure holds: an element path's array field (`lines` for
    /// `lines[].amount`).
    pub fn failing_field(&self) -> &str {
        path::base(self.failing_path())
    }

    /// The single-field checks' field, as written (a field name or a path into elements).
    fn single(&self) -> Option<&str> {
        match self {
            Check::Required { field }
            | Check::Enum { field, .. }
            | Check::Regex { field, .. }
            | Check::Range { field, .. }
            | Check::Length { field, .. } => Some(field),
            _ => None,
        }
    }

    fn failing_path(&self) -> &str {
        match self {
            Check::Required { field }
            | Check::Enum { field, .. }
            | Check::Regex { field, .. }
            | Check::Range { field, .. }
            | Check::Length { field, .. } => field,
            Check::Compare { left, .. } => left,
            Check::Sum {
                equals: Operand::Field(f),
                ..
            } => f,
            Check::Sum { fields, .. } => fields.first().map(String::as_str).unwrap_or(""),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Check::Required { .. } => "required",
            Check::Enum { .. } => "enum",
            Check::Regex { .. } => "regex",
            Check::Range { .. } => "range",
            Check::Length { .. } => "length",
            Check::Compare { .. } => "compare",
            Check::Sum { .. } => "sum",
        }
    }
    /// The names it reads, as written (fields or paths into elements).
    fn referenced(&self) -> Vec<&str> {
        match self {
            Check::Compare { left, right, .. } => {
                let mut v = vec![left.as_str()];
                if let Operand::Field(f) = right {
                    v.push(f);
                }
                v
            }
            Check::Sum { fields, equals, .. } => {
                let mut v: Vec<&str> = fields.iter().map(String::as_str).collect();
                if let Operand::Field(f) = equals {
                    v.push(f);
                }
                v
            }
            other => vec![other.failing_path()],
        }
    }

    /// Whether a name may be a path to every element here: a single-field check runs on each
    /// element, a sum adds them; anything else compares one value.
    fn takes_every(&self, name: &str) -> bool {
        match self {
            Check::Sum { fields, .. } => fields.iter().any(|f| f == name),
            other => other.single() == Some(name),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Mechanism {
    BusinessRules(Vec<Check>),
    Evidence,
    MinConfidence(f64),
    NShot(u32),
}

/// A gate compiled from its stored configuration.
#[derive(Debug, Clone)]
pub struct Gate {
    pub severity: Severity,
    pub field_scope: Vec<String>,
    pub mechanisms: Vec<Mechanism>,
}

impl Gate {
    /// The paths into array fields its checks name (`lines[].amount`), to be checked against
    /// the schema's sub-fields.
    pub fn paths(&self) -> Vec<&str> {
        self.mechanisms
            .iter()
            .filter_map(|m| match m {
                Mechanism::BusinessRules(checks) => Some(checks),
                _ => None,
            })
            .flatten()
            .flat_map(Check::referenced)
            .filter(|n| path::is_path(n))
            .collect()
    }

    /// Whether judging reads the document's text (only the evidence check does): the text is
    /// folded for such gates alone.
    pub fn reads_text(&self) -> bool {
        self.mechanisms
            .iter()
            .any(|m| matches!(m, Mechanism::Evidence))
    }
}

fn operand(v: Option<&Value>, what: &str) -> Result<Operand, String> {
    match v {
        Some(Value::String(s)) => Ok(Operand::Field(s.clone())),
        Some(Value::Number(n)) => Ok(Operand::Literal(n.as_f64().unwrap_or(0.0))),
        _ => Err(format!("{what} must be a field name or a number")),
    }
}

fn field_of(r: &Map<String, Value>, at: &str) -> Result<String, String> {
    r.get("field")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{at}.field is required"))
}

fn bound(r: &Map<String, Value>, k: &str, at: &str) -> Result<Option<Value>, String> {
    match r.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
        Some(Value::String(s)) if super::policy::parse_date(s, false).is_ok() && s.len() == 10 => {
            Ok(Some(json!(s)))
        }
        Some(_) => Err(format!("{at}.{k} must be a number or an ISO date")),
    }
}

fn size(r: &Map<String, Value>, k: &str, at: &str) -> Result<Option<usize>, String> {
    match r.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("{at}.{k} must be a non-negative integer")),
    }
}

fn parse_check(v: &Value, at: &str) -> Result<Check, String> {
    let r = v
        .as_object()
        .ok_or_else(|| format!("{at} must be an object"))?;
    let kind = r
        .get("check")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.check is required"))?;
    Ok(match kind {
        "required" => Check::Required { field: field_of(r, at)? },
        "enum" => Check::Enum {
            field: field_of(r, at)?,
            values: r.get("values").and_then(Value::as_array).cloned().ok_or_else(|| format!("{at}.values must be an array"))?,
        },
        "regex" => {
            let p = r.get("pattern").and_then(Value::as_str).ok_or_else(|| format!("{at}.pattern is required"))?;
            let re = regex::RegexBuilder::new(p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{at}.pattern is not a valid regular expression: {e}"))?;
            Check::Regex { field: field_of(r, at)?, re }
        }
        "range" => {
            let (min, max) = (bound(r, "min", at)?, bound(r, "max", at)?);
            if min.is_none() && max.is_none() {
                return Err(format!("{at} needs min and/or max"));
            }
            Check::Range { field: field_of(r, at)?, min, max }
        }
        "length" => {
            let (min, max) = (size(r, "min", at)?, size(r, "max", at)?);
            if min.is_none() && max.is_none() {
                return Err(format!("{at} needs min and/or max"));
            }
            Check::Length { field: field_of(r, at)?, min, max }
        }
        "compare" => {
            let op = r.get("op").and_then(Value::as_str).unwrap_or("");
            if !["<", "<=", ">", ">=", "==", "!="].contains(&op) {
                return Err(format!("{at}.op must be one of <, <=, >, >=, ==, !="));
            }
            Check::Compare {
                left: r.get("left").and_then(Value::as_str).ok_or_else(|| format!("{at}.left is required"))?.to_string(),
                op: op.to_string(),
                right: operand(r.get("right"), &format!("{at}.right"))?,
            }
        }
        "sum" => {
            let fields: Vec<String> = r
                .get("fields")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
                .filter(|f: &Vec<String>| !f.is_empty())
                .ok_or_else(|| format!("{at}.fields must be a non-empty array of field names"))?;
            let tolerance = match r.get("tolerance") {
                None | Some(Value::Null) => 0.01,
                Some(t) => t.as_f64().filter(|t| *t >= 0.0).ok_or_else(|| format!("{at}.tolerance must be a non-negative number"))?,
            };
            Check::Sum { fields, equals: operand(r.get("equals"), &format!("{at}.equals"))?, tolerance }
        }
        other => return Err(format!("{at}.check '{other}' is unknown (use required, enum, regex, range, length, compare, sum)")),
    })
}

/// Compiles and validates a gate's mechanisms against the schema's fields and the scope.
pub fn compile(
    severity: &str,
    field_scope: &[String],
    mechanisms: &Value,
    schema_fields: &[String],
) -> Result<Gate, String> {
    let severity =
        Severity::parse(severity).ok_or("severity must be one of info, warning, blocking")?;
    for f in field_scope {
        if !schema_fields.contains(f) {
            return Err(format!(
                "field_scope names '{f}', which is not a field of the schema"
            ));
        }
    }
    let list = mechanisms.as_array().ok_or("mechanisms must be an array")?;
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("mechanisms[{i}]");
        let obj = m
            .as_object()
            .ok_or_else(|| format!("{at} must be an object"))?;
        let t = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}.type is required"))?;
        out.push(match t {
            "business_rules" => {
                let rules = obj.get("rules").and_then(Value::as_array).ok_or_else(|| format!("{at}.rules must be an array"))?;
                let mut checks = Vec::new();
                for (j, r) in rules.iter().enumerate() {
                    let rat = format!("{at}.rules[{j}]");
                    let c = parse_check(r, &rat)?;
                    for f in c.referenced() {
                        let p = path::parse(f).map_err(|e| format!("{rat}: {e}"))?;
                        if !schema_fields.contains(&p.field) {
                            return Err(format!("{rat} names '{}', which is not a field of the schema", p.field));
                        }
                        if p.each() && !c.takes_every(f) {
                            return Err(format!("{rat}: '{f}' names a value per element; compare one (lines[2].amount) or their sum"));
                        }
                    }
                    let ff = c.failing_field();
                    if !field_scope.is_empty() && !field_scope.iter().any(|s| s == ff) {
                        return Err(format!("{rat}: its failing field '{ff}' is outside the field_scope"));
                    }
                    checks.push(c);
                }
                Mechanism::BusinessRules(checks)
            }
            "evidence" => Mechanism::Evidence,
            "min_confidence" => {
                let th = obj
                    .get("threshold")
                    .and_then(Value::as_f64)
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| format!("{at}.threshold must be a number from 0 to 1"))?;
                Mechanism::MinConfidence(th)
            }
            "n_shot" => {
                let n = obj.get("n").and_then(Value::as_u64).filter(|n| (1..=10).contains(n)).ok_or_else(|| format!("{at}.n must be an integer from 1 to 10"))?;
                Mechanism::NShot(n as u32)
            }
            other => return Err(format!("{at}.type '{other}' is unknown (use business_rules, evidence, min_confidence, n_shot)")),
        });
    }
    Ok(Gate {
        severity,
        field_scope: field_scope.to_vec(),
        mechanisms: out,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

/// What a gate sees of one field's canonical version.
pub struct Evidence<'a> {
    pub value: &'a Value,
    pub source: Option<&'a str>,
    pub rule_type: Option<&'a str>,
    pub confidence: Option<f64>,
    /// The value as extraction found it, when one exists.
    pub extracted: Option<&'a Value>,
    /// For a model extractor's value: how many of the samples it took agree with it, of how
    /// many (`n_shot`); none for a deterministic extractor.
    pub samples: Option<(u32, u32)>,
}

pub struct Judgement {
    pub outcome: Outcome,
    pub reason: Option<&'static str>,
    /// `[{ validatorType, verdict, confidence, reasoning }]`
    pub mechanisms: Vec<MechanismResult>,
}

fn fold(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Folds the document text once per document for the evidence check.
pub fn fold_text(text: &str) -> String {
    fold(text)
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn compare_values(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (as_number(a), as_number(b)) {
        return x.partial_cmp(&y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// `lookup(name)` gives a field's canonical value and whether it is held. A single-field check
/// on every element (`lines[].amount`) judges each element, fails when any fails, and names
/// each failing element; a path to one element reads that element's value.
fn run_check(
    c: &Check,
    lookup: &dyn Fn(&str) -> (Value, bool),
) -> (Outcome, Reasoning, Vec<usize>) {
    let one = |name: &str| -> (Value, bool) {
        if !path::is_path(name) {
            return lookup(name);
        }
        match path::parse(name) {
            Ok(p) if p.index.is_some() && !p.each() => {
                let (v, held) = lookup(&p.field);
                (p.values(&v).pop().unwrap_or(Value::Null), held)
            }
            _ => lookup(name),
        }
    };
    let every = c.single().and_then(path::every);
    let Some(p) = every else {
        let (o, r) = run_scalar(c, &one);
        return (o, r, Vec::new());
    };
    let name = c.name();
    let (v, held) = lookup(&p.field);
    if held {
        let why = Reasoning::fixed(format!("{name}: input held"));
        return (Outcome::Skip, why, Vec::new());
    }
    let Some(list) = v.as_array() else {
        let (o, why) = match v {
            Value::Null => (Outcome::Skip, Reasoning::fixed(format!("{name}: no value"))),
            other => (
                Outcome::Fail,
                Reasoning::new(
                    format!("{name}: {VALUE} is not a list"),
                    vec![display(&other)],
                ),
            ),
        };
        return (o, why, Vec::new());
    };
    let mut failing = Vec::new();
    let mut notes = Vec::new();
    for (i, x) in p.values(&v).into_iter().enumerate() {
        let (o, r) = run_scalar(c, &|_| (x.clone(), false));
        if o == Outcome::Fail {
            failing.push(i);
            notes.push(r.after(&format!("{}: ", p.at(i))));
        }
    }
    if failing.is_empty() {
        let n = list.len();
        let why = Reasoning::fixed(format!("{name}: every element passes ({n})"));
        return (Outcome::Pass, why, failing);
    }
    (Outcome::Fail, Reasoning::join(notes, "; "), failing)
}

fn run_scalar(c: &Check, lookup: &dyn Fn(&str) -> (Value, bool)) -> (Outcome, Reasoning) {
    let get = |f: &str| -> Option<Value> {
        let (v, held) = lookup(f);
        (!held && !v.is_null()).then_some(v)
    };
    let name = c.name();
    let verdict = |ok: bool, msg: Reasoning| {
        (
            if ok { Outcome::Pass } else { Outcome::Fail },
            msg.after(&format!("{name}: ")),
        )
    };
    let skip = |why: &str| (Outcome::Skip, Reasoning::fixed(format!("{name}: {why}")));
    match c {
        Check::Required { field } => {
            let (v, held) = lookup(field);
            if held {
                return skip("input held");
            }
            let present = !(v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()));
            verdict(
                present,
                Reasoning::fixed(if present { "present" } else { "no value" }),
            )
        }
        Check::Enum { field, values } => match get(field) {
            None => skip("no value"),
            Some(v) => {
                let ok = values.iter().any(|a| super::policy::same_value(a, &v));
                verdict(
                    ok,
                    Reasoning::new(
                        format!("{VALUE} {} allowed", if ok { "is" } else { "is not" }),
                        vec![display(&v)],
                    ),
                )
            }
        },
        Check::Regex { field, re } => match get(field) {
            None => skip("no value"),
            Some(v) => {
                let ok = re.is_match(&display(&v));
                verdict(
                    ok,
                    Reasoning::new(
                        format!(
                            "{VALUE} {} the pattern",
                            if ok { "matches" } else { "does not match" }
                        ),
                        vec![display(&v)],
                    ),
                )
            }
        },
        Check::Range { field, min, max } => match get(field) {
            None => skip("no value"),
            Some(v) => {
                let dates = [min, max]
                    .iter()
                    .any(|b| b.as_ref().is_some_and(Value::is_string));
                let ok = if dates {
                    v.is_string()
                        && min
                            .as_ref()
                            .is_none_or(|m| compare_values(&v, m).is_some_and(|o| o.is_ge()))
                        && max
                            .as_ref()
                            .is_none_or(|m| compare_values(&v, m).is_some_and(|o| o.is_le()))
                } else {
                    match as_number(&v) {
                        None => false,
                        Some(n) => {
                            min.as_ref().and_then(Value::as_f64).is_none_or(|m| n >= m)
                                && max.as_ref().and_then(Value::as_f64).is_none_or(|m| n <= m)
                        }
                    }
                };
                verdict(
                    ok,
                    Reasoning::new(
                        format!("{VALUE} {} in range", if ok { "is" } else { "is not" }),
                        vec![display(&v)],
                    ),
                )
            }
        },
        Check::Length { field, min, max } => match get(field) {
            None => skip("no value"),
            Some(v) => {
                let len = match &v {
                    Value::String(s) => Some(s.chars().count()),
                    Value::Number(_) => Some(v.to_string().len()),
                    _ => None,
                };
                let ok =
                    len.is_some_and(|l| min.is_none_or(|m| l >= m) && max.is_none_or(|m| l <= m));
                verdict(
                    ok,
                    Reasoning::new(
                        format!(
                            "length {VALUE} {} allowed",
                            if ok { "is" } else { "is not" }
                        ),
                        vec![len.map(|l| l.to_string()).unwrap_or("-".into())],
                    ),
                )
            }
        },
        Check::Compare { left, op, right } => {
            let Some(l) = get(left) else {
                return skip("no value");
            };
            let r = match right {
                Operand::Literal(n) => json!(n),
                Operand::Field(f) => match get(f) {
                    Some(v) => v,
                    None => return skip("no value to compare with"),
                },
            };
            let ord = compare_values(&l, &r);
            let ok = match (op.as_str(), ord) {
                ("==", _) => ord.is_some_and(|o| o.is_eq()) || l == r,
                ("!=", _) => !(ord.is_some_and(|o| o.is_eq()) || l == r),
                (_, None) => false,
                ("<", Some(o)) => o.is_lt(),
                ("<=", Some(o)) => o.is_le(),
                (">", Some(o)) => o.is_gt(),
                (_, Some(o)) => o.is_ge(),
            };
            verdict(
                ok,
                Reasoning::new(
                    format!("{VALUE} {op} {VALUE}"),
                    vec![display(&l), display(&r)],
                ),
            )
        }
        Check::Sum {
            fields,
            equals,
            tolerance,
        } => {
            let mut total = 0.0;
            for f in fields {
                if let Some(p) = path::every(f) {
                    // Every element's value; an element without one adds nothing.
                    let (v, held) = lookup(&p.field);
                    if held || !v.is_array() {
                        return skip("an input has no value");
                    }
                    for (i, x) in p.values(&v).iter().enumerate() {
                        match (x, as_number(x)) {
                            (Value::Null, _) => {}
                            (_, Some(n)) => total += n,
                            (_, None) => {
                                return verdict(
                                    false,
                                    not_a_number(x).after(&format!("{}: ", p.at(i))),
                                )
                            }
                        }
                    }
                    continue;
                }
                match get(f) {
                    None => return skip("an input has no value"),
                    Some(v) => match as_number(&v) {
                        Some(n) => total += n,
                        None => return verdict(false, not_a_number(&v)),
                    },
                }
            }
            let target = match equals {
                Operand::Literal(n) => *n,
                Operand::Field(f) => match get(f) {
                    None => return skip("no value to compare with"),
                    Some(v) => match as_number(&v) {
                        Some(n) => n,
                        None => return verdict(false, not_a_number(&v)),
                    },
                },
            };
            let ok = (total - target).abs() <= *tolerance + 1e-9;
            verdict(
                ok,
                Reasoning::new(
                    format!("sum {VALUE} vs {VALUE}"),
                    vec![total.to_string(), target.to_string()],
                ),
            )
        }
    }
}

/// One mechanism's result: `{ validatorType, verdict, confidence, reasoning }` on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct MechanismResult {
    pub kind: &'static str,
    pub outcome: Outcome,
    pub confidence: Option<f64>,
    pub reasoning: Reasoning,
    /// The elements of an array field that failed a check on every element, by index
    /// (`failingElements` on the wire, absent when none did).
    pub elements: Vec<usize>,
}

impl MechanismResult {
    pub fn verdict(&self) -> &'static str {
        self.outcome.as_str()
    }
}

/// Where a value goes in a template. A template is built from this module's own words (and a
/// spec's validated operator and numbers), never from a value, so it holds no other `VALUE`.
const VALUE: char = '\u{1}';

/// A mechanism's reasoning: its words, with the values it judged kept apart ("regex: {} matches
/// the pattern" and "INV-8046"). The words come again with every document, so they are stored
/// once (`store::intern`); a verdict keeps only the values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reasoning {
    template: String,
    values: Vec<String>,
}

impl Reasoning {
    fn fixed(words: impl Into<String>) -> Self {
        let template: String = words.into();
        Reasoning {
            template: template.replace(VALUE, ""),
            values: Vec::new(),
        }
    }

    fn new(template: String, values: Vec<String>) -> Self {
        debug_assert_eq!(template.matches(VALUE).count(), values.len());
        Reasoning { template, values }
    }

    fn after(mut self, prefix: &str) -> Self {
        self.template.insert_str(0, &prefix.replace(VALUE, ""));
        self
    }

    fn join(parts: Vec<Reasoning>, sep: &str) -> Self {
        let mut out = Reasoning::default();
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                out.template.push_str(sep);
            }
            out.template.push_str(&p.template);
            out.values.extend(p.values);
        }
        out
    }

    /// The text as people read it.
    pub fn text(&self) -> String {
        interleave(&self.template, &self.values)
    }
}

/// `template` with each `VALUE` replaced by the next of `values` (as many as it has places).
fn interleave(template: &str, values: &[String]) -> String {
    let mut out = String::with_capacity(template.len() + 16 * values.len());
    let mut values = values.iter();
    for (i, piece) in template.split(VALUE).enumerate() {
        if i > 0 {
            out.push_str(values.next().map_or("", String::as_str));
        }
        out.push_str(piece);
    }
    out
}

/// One mechanism's JSON object as a template and the fragments that fill it: the template is
/// the object's text with each value cut out (the reasoning's values, and the confidence), the
/// fragments are those values as JSON text. `fill` puts them back. Verdicts are the executor's
/// most frequent rows: the template is interned, the row keeps the fragments.
pub fn mechanism_template(m: &MechanismResult) -> (String, Vec<String>) {
    let mut t = String::with_capacity(96 + m.reasoning.template.len());
    let mut fragments = Vec::with_capacity(m.reasoning.values.len() + 1);
    t.push_str("{\"validatorType\":\"");
    t.push_str(m.kind);
    t.push_str("\",\"verdict\":\"");
    t.push_str(m.outcome.as_str());
    t.push_str("\",\"confidence\":");
    match m.confidence {
        Some(c) if c.is_finite() => {
            t.push(VALUE);
            fragments.push(c.to_string());
        }
        _ => t.push_str("null"),
    }
    t.push_str(",\"reasoning\":\"");
    let mut values = m.reasoning.values.iter();
    for (i, piece) in m.reasoning.template.split(VALUE).enumerate() {
        if i > 0 {
            t.push(VALUE);
            let mut f = String::new();
            push_json_escaped(&mut f, values.next().map_or("", String::as_str));
            fragments.push(f);
        }
        push_json_escaped(&mut t, piece);
    }
    t.push('"');
    if !m.elements.is_empty() {
        t.push_str(",\"failingElements\":[");
        t.push(VALUE);
        t.push(']');
        let list: Vec<String> = m.elements.iter().map(usize::to_string).collect();
        fragments.push(list.join(","));
    }
    t.push('}');
    (t, fragments)
}

/// Appends `s` escaped as the inside of a JSON string (the escapes serde_json writes).
pub fn push_json_escaped(out: &mut String, s: &str) {
    let plain = |c: char| c != '"' && c != '\\' && c >= ' ';
    if s.chars().all(plain) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// A template with its fragments put back: the JSON text of the mechanism. A template carries
/// no `VALUE` of its own (its text is JSON, which escapes control characters), so each `VALUE`
/// is a place cut out by `mechanism_template`. `None` when the fragments do not fit the places.
pub fn fill(template: &str, fragments: &[String]) -> Option<String> {
    (template.matches(VALUE).count() == fragments.len()).then(|| interleave(template, fragments))
}

#[cfg(test)]
fn mechanism_json(m: &MechanismResult) -> String {
    let (t, f) = mechanism_template(m);
    fill(&t, &f).expect("a template fits its own fragments")
}

fn not_a_number(v: &Value) -> Reasoning {
    Reasoning::new(format!("{VALUE} is not a number"), vec![display(v)])
}

fn mech(
    kind: &'static str,
    outcome: Outcome,
    confidence: Option<f64>,
    reasoning: Reasoning,
) -> MechanismResult {
    MechanismResult {
        kind,
        outcome,
        confidence,
        reasoning,
        elements: Vec::new(),
    }
}

/// Judges one field at a gate.
pub fn judge(
    gate: &Gate,
    field: &str,
    ev: &Evidence,
    lookup: &dyn Fn(&str) -> (Value, bool),
    folded_text: &str,
) -> Judgement {
    let mut mechanisms = Vec::new();
    let mut failed_required = false;
    let mut low_conf = false;
    let mut any_fail = false;
    let mut any_pass = false;
    for m in &gate.mechanisms {
        let mut elements: Vec<usize> = Vec::new();
        let (outcome, confidence, reasoning, kind) = match m {
            Mechanism::BusinessRules(checks) => {
                let mine: Vec<&Check> = checks
                    .iter()
                    .filter(|c| c.failing_field() == field)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let mut out = Outcome::Skip;
                let mut notes = Vec::new();
                for c in mine {
                    let (o, note, failing) = run_check(c, lookup);
                    elements.extend(failing);
                    if o == Outcome::Fail {
                        out = Outcome::Fail;
                        if matches!(c, Check::Required { .. }) {
                            failed_required = true;
                        }
                    } else if o == Outcome::Pass && out == Outcome::Skip {
                        out = Outcome::Pass;
                    }
                    notes.push(note);
                }
                elements.sort_unstable();
                elements.dedup();
                (out, None, Reasoning::join(notes, "; "), "business_rules")
            }
            Mechanism::Evidence => {
                let exempt = matches!(ev.source, Some("registry_transfer") | Some("human_review"))
                    || ev.rule_type.is_some_and(super::policy::Rule::not_from_text);
                if ev.value.is_null() {
                    (
                        Outcome::Skip,
                        None,
                        Reasoning::fixed("no value"),
                        "evidence",
                    )
                } else if ev.value.is_array() || ev.value.is_object() {
                    // A table is never printed as its JSON: its rows are judged by checks on
                    // its elements, and each keeps the row it was read from.
                    (
                        Outcome::Skip,
                        None,
                        Reasoning::fixed("a table or object is not looked for as one value"),
                        "evidence",
                    )
                } else if exempt {
                    (
                        Outcome::Skip,
                        None,
                        Reasoning::fixed("value does not come from the document text"),
                        "evidence",
                    )
                } else {
                    let found = [Some(ev.value), ev.extracted]
                        .into_iter()
                        .flatten()
                        .any(|v| !v.is_null() && folded_text.contains(&fold(&display(v))));
                    let o = if found { Outcome::Pass } else { Outcome::Fail };
                    (
                        o,
                        None,
                        Reasoning::fixed(if found {
                            "found in the document"
                        } else {
                            "not found in the document"
                        }),
                        "evidence",
                    )
                }
            }
            Mechanism::MinConfidence(th) => match ev.confidence {
                None => (
                    Outcome::Skip,
                    None,
                    Reasoning::fixed("no confidence"),
                    "min_confidence",
                ),
                Some(c) => {
                    let ok = c >= *th;
                    if !ok {
                        low_conf = true;
                    }
                    (
                        if ok { Outcome::Pass } else { Outcome::Fail },
                        Some(c),
                        Reasoning::new(
                            format!("confidence {VALUE} vs threshold {th}"),
                            vec![c.to_string()],
                        ),
                        "min_confidence",
                    )
                }
            },
            Mechanism::NShot(n) => match ev.samples {
                Some((agree, total)) => (
                    if agree == total && total >= *n {
                        Outcome::Pass
                    } else {
                        Outcome::Fail
                    },
                    Some(f64::from(agree) / f64::from(total.max(1))),
                    Reasoning::new(
                        format!("{VALUE} of {VALUE} samples of the model agree (n = {n})"),
                        vec![agree.to_string(), total.to_string()],
                    ),
                    "n_shot",
                ),
                None => (
                    Outcome::Pass,
                    Some(1.0),
                    Reasoning::fixed(format!("deterministic extractor: {n} runs agree")),
                    "n_shot",
                ),
            },
        };
        match outcome {
            Outcome::Fail => any_fail = true,
            Outcome::Pass => any_pass = true,
            Outcome::Skip => {}
        }
        let mut result = mech(kind, outcome, confidence, reasoning);
        result.elements = elements;
        mechanisms.push(result);
    }
    let outcome = if any_fail {
        Outcome::Fail
    } else if any_pass {
        Outcome::Pass
    } else {
        Outcome::Skip
    };
    let reason = if outcome != Outcome::Fail {
        None
    } else if failed_required {
        Some("missing_value")
    } else if low_conf {
        Some("low_confidence")
    } else {
        Some("failed_check")
    };
    Judgement {
        outcome,
        reason,
        mechanisms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<String> {
        [
            "total",
            "net",
            "tax",
            "currency",
            "invoice_number",
            "supplier",
            "issued",
            "lines",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn gate(rules: Value) -> Gate {
        compile(
            "blocking",
            &[],
            &json!([{ "type": "business_rules", "rules": rules }]),
            &fields(),
        )
        .unwrap()
    }

    fn judge_with(g: &Gate, field: &str, vals: &[(&str, Value)], held: &[&str]) -> Judgement {
        let lookup = |f: &str| -> (Value, bool) {
            (
                vals.iter()
                    .find(|(k, _)| *k == f)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null),
                held.contains(&f),
            )
        };
        let v = lookup(field).0;
        let ev = Evidence {
            value: &v,
            source: Some("rules_extraction"),
            rule_type: None,
            confidence: Some(0.95),
            extracted: None,
            samples: None,
        };
        judge(g, field, &ev, &lookup, "")
    }

    #[test]
    fn each_check_passes_fails_and_skips_on_null() {
        let g = gate(json!([
            {"field": "total", "check": "required"},
            {"field": "currency", "check": "enum", "values": ["EUR", "USD"]},
            {"field": "invoice_number", "check": "regex", "pattern": "^INV-\\d+$"},
            {"field": "net", "check": "range", "min": 0, "max": 100},
            {"field": "supplier", "check": "length", "min": 2, "max": 5},
            {"field": "issued", "check": "range", "min": "2024-01-01", "max": "2024-12-31"},
            {"check": "compare", "left": "tax", "op": "<=", "right": "net"},
        ]));
        let j = judge_with(&g, "total", &[], &[]);
        assert_eq!(
            (j.outcome, j.reason),
            (Outcome::Fail, Some("missing_value"))
        );
        assert_eq!(
            judge_with(&g, "total", &[("total", json!(5))], &[]).outcome,
            Outcome::Pass
        );
        for (f, good, bad) in [
            ("currency", json!("EUR"), json!("GBP")),
            ("invoice_number", json!("INV-12"), json!("X-12")),
            ("net", json!(50), json!(150)),
            ("supplier", json!("Acme"), json!("A")),
            ("issued", json!("2024-06-01"), json!("2025-01-01")),
        ] {
            assert_eq!(
                judge_with(&g, f, &[(f, good)], &[]).outcome,
                Outcome::Pass,
                "{f}"
            );
            let j = judge_with(&g, f, &[(f, bad)], &[]);
            assert_eq!(
                (j.outcome, j.reason),
                (Outcome::Fail, Some("failed_check")),
                "{f}"
            );
            assert_eq!(
                judge_with(&g, f, &[], &[]).outcome,
                Outcome::Skip,
                "{f} on null"
            );
        }
        assert_eq!(
            judge_with(&g, "net", &[("net", json!("abc"))], &[]).outcome,
            Outcome::Fail,
            "non-number in a numeric check"
        );
        assert_eq!(
            judge_with(&g, "tax", &[("tax", json!(5)), ("net", json!(10))], &[]).outcome,
            Outcome::Pass
        );
        assert_eq!(
            judge_with(&g, "tax", &[("tax", json!(50)), ("net", json!(10))], &[]).outcome,
            Outcome::Fail
        );
        assert_eq!(
            judge_with(
                &g,
                "tax",
                &[("tax", json!(50)), ("net", json!(10))],
                &["net"]
            )
            .outcome,
            Outcome::Skip,
            "held input"
        );
    }

    #[test]
    fn a_mechanism_template_repeats_across_values_and_fills_back_to_the_same_json() {
        let g = gate(json!([
            {"field": "invoice_number", "check": "regex", "pattern": "^INV"},
            {"check": "compare", "left": "tax", "op": "<=", "right": "net"},
        ]));
        let cases = [
            json!("INV-1"),
            json!("INV-2 \"quoted\" \\ back\u{1}slash ünïcode\n"),
            json!("INV-3"),
        ];
        let mut templates = Vec::new();
        for v in &cases {
            let j = judge_with(&g, "invoice_number", &[("invoice_number", v.clone())], &[]);
            let (t, fragments) = mechanism_template(&j.mechanisms[0]);
            let text = fill(&t, &fragments).unwrap();
            let wire: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                wire,
                json!({"validatorType": "business_rules", "verdict": j.mechanisms[0].verdict(),
                       "confidence": null,
                       "reasoning": format!("regex: {} the pattern", v.as_str().unwrap())
                           .replace(" the", if j.outcome == Outcome::Pass { " matches the" } else { " does not match the" })}),
            );
            assert_eq!(text, mechanism_json(&j.mechanisms[0]));
            templates.push((j.outcome, t));
        }
        assert_eq!(
            templates[0], templates[2],
            "one template for every passing value"
        );
        for tricky in [
            "",
            "plain",
            "a\"b\\c",
            "tab\tnl\ncr\r\u{1}\u{8}\u{c}\u{1f}",
            "ünï €",
        ] {
            let mut mine = String::new();
            push_json_escaped(&mut mine, tricky);
            assert_eq!(
                format!("\"{mine}\""),
                Value::from(tricky).to_string(),
                "{tricky:?}"
            );
        }
        // Two values in one reasoning, and a confidence cut out of the object too.
        let j = judge_with(&g, "tax", &[("tax", json!(19)), ("net", json!(100))], &[]);
        let (t, f) = mechanism_template(&j.mechanisms[0]);
        assert_eq!(f, vec!["19".to_string(), "100".to_string()]);
        assert_eq!(
            serde_json::from_str::<Value>(&fill(&t, &f).unwrap()).unwrap()["reasoning"],
            "compare: 19 <= 100"
        );
        let m = MechanismResult {
            kind: "min_confidence",
            outcome: Outcome::Pass,
            confidence: Some(0.87),
            reasoning: Reasoning::new(
                format!("confidence {VALUE} vs threshold 0.5"),
                vec!["0.87".into()],
            ),
            elements: Vec::new(),
        };
        let (t, f) = mechanism_template(&m);
        assert!(!t.contains("0.87"), "{t}");
        assert_eq!(
            serde_json::from_str::<Value>(&fill(&t, &f).unwrap()).unwrap(),
            json!({"validatorType": "min_confidence", "verdict": "pass", "confidence": 0.87,
                   "reasoning": "confidence 0.87 vs threshold 0.5"})
        );
    }

    #[test]
    fn sum_with_tolerance() {
        let g = gate(
            json!([{"check": "sum", "fields": ["net", "tax"], "equals": "total", "tolerance": 0.01}]),
        );
        let ok = judge_with(
            &g,
            "total",
            &[
                ("net", json!(100)),
                ("tax", json!(19)),
                ("total", json!(119.005)),
            ],
            &[],
        );
        assert_eq!(ok.outcome, Outcome::Pass);
        let bad = judge_with(
            &g,
            "total",
            &[
                ("net", json!(100)),
                ("tax", json!(19)),
                ("total", json!(120)),
            ],
            &[],
        );
        assert_eq!(bad.outcome, Outcome::Fail);
        let skip = judge_with(
            &g,
            "total",
            &[("net", json!(100)), ("total", json!(120))],
            &[],
        );
        assert_eq!(skip.outcome, Outcome::Skip);
    }

    #[test]
    fn checks_on_every_element_name_each_failing_element_and_a_sum_adds_them() {
        let lines = json!([{"amount": 10}, {"amount": -5}, {"amount": null}, {"amount": 300}]);
        let g = gate(json!([{"check": "range", "field": "lines[].amount", "min": 0, "max": 100}]));
        assert_eq!(g.mechanisms.len(), 1);
        let j = judge_with(&g, "lines", &[("lines", lines.clone())], &[]);
        assert_eq!(j.outcome, Outcome::Fail);
        let why = j.mechanisms[0].reasoning.text();
        assert_eq!(j.mechanisms[0].elements, vec![1, 3]);
        let (t, f) = mechanism_template(&j.mechanisms[0]);
        let stored: Value = serde_json::from_str(&fill(&t, &f).unwrap()).unwrap();
        assert_eq!(stored["failingElements"], json!([1, 3]), "{stored}");
        assert!(
            why.contains("lines[1].amount: range: -5 is not in range"),
            "{why}"
        );
        assert!(
            why.contains("lines[3].amount: range: 300 is not in range"),
            "{why}"
        );
        assert!(
            !why.contains("lines[0]") && !why.contains("lines[2]"),
            "{why}"
        );
        let fine = json!([{"amount": 10}, {"amount": null}]);
        let j = judge_with(&g, "lines", &[("lines", fine)], &[]);
        assert_eq!(
            j.outcome,
            Outcome::Pass,
            "an element without a value is not judged"
        );
        let held = judge_with(&g, "lines", &[("lines", lines.clone())], &["lines"]);
        assert_eq!(held.outcome, Outcome::Skip);

        let sum = gate(
            json!([{"check": "sum", "fields": ["lines[].amount"], "equals": "net", "tolerance": 0.01}]),
        );
        let with =
            |net: Value| judge_with(&sum, "net", &[("lines", lines.clone()), ("net", net)], &[]);
        assert_eq!(with(json!(305)).outcome, Outcome::Pass);
        assert_eq!(with(json!(306)).outcome, Outcome::Fail);
        let one =
            gate(json!([{"check": "compare", "left": "lines[0].amount", "op": "==", "right": 10}]));
        assert_eq!(
            judge_with(&one, "lines", &[("lines", lines)], &[]).outcome,
            Outcome::Pass
        );
        let refuse = |rules: Value| {
            compile(
                "blocking",
                &[],
                &json!([{"type": "business_rules", "rules": rules}]),
                &fields(),
            )
            .unwrap_err()
        };
        assert!(refuse(
            json!([{"check": "compare", "left": "lines[].amount", "op": "<", "right": 1}])
        )
        .contains("per element"));
        assert!(
            refuse(json!([{"check": "range", "field": "rows[].amount", "max": 1}]))
                .contains("'rows', which is not a field")
        );
        assert!(
            refuse(json!([{"check": "range", "field": "lines[x].amount", "max": 1}]))
                .contains("not a path")
        );
    }

    #[test]
    fn the_evidence_check_passes_over_a_table_instead_of_failing_it() {
        let g = compile("blocking", &[], &json!([{"type": "evidence"}]), &fields()).unwrap();
        let table = json!([{"amount": 1234.5}]);
        let ev = Evidence {
            value: &table,
            source: Some("rules_extraction"),
            rule_type: None,
            confidence: Some(0.95),
            extracted: Some(&table),
            samples: None,
        };
        let j = judge(
            &g,
            "lines",
            &ev,
            &|_| (Value::Null, false),
            &fold_text("| Widget | 1.234,50 |"),
        );
        assert_eq!(
            j.outcome,
            Outcome::Skip,
            "{}",
            j.mechanisms[0].reasoning.text()
        );
    }

    #[test]
    fn evidence_and_confidence_mechanisms() {
        let g = compile("warning", &[], &json!([{"type": "evidence"}, {"type": "min_confidence", "threshold": 0.8}, {"type": "n_shot", "n": 3}]), &fields()).unwrap();
        let v = json!(1000.5);
        let raw = json!("1.000,50");
        let lookup = |_: &str| (Value::Null, false);
        let text = fold_text("Total:   1.000,50 EUR");
        let ev = Evidence {
            value: &v,
            source: Some("policy_resolution"),
            rule_type: Some("number"),
            confidence: Some(0.6),
            extracted: Some(&raw),
            samples: None,
        };
        assert!(g.reads_text());
        let without = compile(
            "warning",
            &[],
            &json!([{"type": "min_confidence", "threshold": 0.8}]),
            &fields(),
        )
        .unwrap();
        assert!(
            !without.reads_text(),
            "only the evidence check reads the text"
        );
        let j = judge(&g, "total", &ev, &lookup, &text);
        assert_eq!(
            (j.outcome, j.reason),
            (Outcome::Fail, Some("low_confidence"))
        );
        assert_eq!(j.mechanisms[0].verdict(), "pass");
        assert_eq!(j.mechanisms[2].verdict(), "pass");
        // A model's samples: all three agreeing pass, two of three fail.
        for (samples, verdict) in [((3, 3), "pass"), ((2, 3), "fail"), ((2, 2), "fail")] {
            let ev = Evidence {
                samples: Some(samples),
                ..ev
            };
            let j = judge(&g, "total", &ev, &lookup, &text);
            assert_eq!(j.mechanisms[2].verdict(), verdict, "{samples:?}");
        }
        let wire: Value = serde_json::from_str(&mechanism_json(&j.mechanisms[1])).unwrap();
        assert_eq!(
            wire,
            json!({"validatorType": "min_confidence", "verdict": "fail", "confidence": 0.6, "reasoning": "confidence 0.6 vs threshold 0.8"})
        );
        let ev = Evidence {
            value: &v,
            source: Some("policy_resolution"),
            rule_type: Some("compute"),
            confidence: Some(0.9),
            extracted: None,
            samples: None,
        };
        assert_eq!(
            judge(&g, "total", &ev, &lookup, &text).mechanisms[0].verdict(),
            "skip"
        );
        let s = json!("Globex");
        let ev = Evidence {
            value: &s,
            source: Some("rules_extraction"),
            rule_type: None,
            confidence: Some(0.9),
            extracted: Some(&s),
            samples: None,
        };
        assert_eq!(
            judge(&g, "total", &ev, &lookup, &text).mechanisms[0].verdict(),
            "fail"
        );
    }

    #[test]
    fn configuration_errors_name_the_problem() {
        let f = fields();
        assert!(compile("fatal", &[], &json!([]), &f).is_err());
        assert!(compile("info", &["nope".into()], &json!([]), &f)
            .unwrap_err()
            .contains("nope"));
        let out_of_scope =
            json!([{"type": "business_rules", "rules": [{"field": "net", "check": "required"}]}]);
        assert!(compile("info", &["total".into()], &out_of_scope, &f)
            .unwrap_err()
            .contains("outside"));
        let unknown =
            json!([{"type": "business_rules", "rules": [{"field": "ghost", "check": "required"}]}]);
        assert!(compile("info", &[], &unknown, &f)
            .unwrap_err()
            .contains("ghost"));
        let bad_re = json!([{"type": "business_rules", "rules": [{"field": "net", "check": "regex", "pattern": "("}]}]);
        assert!(compile("info", &[], &bad_re, &f).is_err());
        assert!(compile("info", &[], &json!([{"type": "magic"}]), &f).is_err());
        assert!(compile(
            "info",
            &[],
            &json!([{"type": "min_confidence", "threshold": 2}]),
            &f
        )
        .is_err());
    }
}
