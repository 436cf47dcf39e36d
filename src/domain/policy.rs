//! Data-policy rules: validation of their configuration, compiled order, and application.

use super::expr::{self, round_to, Expr};
use chrono::NaiveDate;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};

pub const RULE_TYPES: [&str; 10] = [
    "direct",
    "format",
    "date",
    "number",
    "currency",
    "lookup",
    "regex_replace",
    "default",
    "compute",
    "unit",
];

/// A rule as stored: the raw configuration is kept, the compiled form is rebuilt when needed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleDef {
    pub id: String,
    pub field_key: String,
    pub rule_type: String,
    pub config: Value,
    pub order: i64,
}

#[derive(Debug, Clone)]
pub enum Rule {
    Direct {
        from: String,
    },
    Format {
        op: String,
    },
    Date {
        day_first: bool,
        output: String,
    },
    Number {
        decimal: char,
        round: Option<i32>,
    },
    Currency {
        default: Option<String>,
    },
    Lookup {
        table: Vec<(String, Value)>,
        case_insensitive: bool,
        null_fallback: bool,
    },
    RegexReplace {
        re: Regex,
        replacement: String,
    },
    Default {
        value: Value,
    },
    Compute {
        expr: Expr,
    },
    Unit {
        factor: f64,
    },
}

fn cfg_str<'a>(c: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, String> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("config.{k} must be a string")),
    }
}

fn cfg_bool(c: &Map<String, Value>, k: &str, default: bool) -> Result<bool, String> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("config.{k} must be a boolean")),
    }
}

/// Units by dimension, as a factor to the dimension's base unit.
fn unit_factor(u: &str) -> Option<(&'static str, f64)> {
    Some(match u.to_ascii_lowercase().as_str() {
        "mg" => ("mass", 1e-6),
        "g" => ("mass", 1e-3),
        "kg" => ("mass", 1.0),
        "t" => ("mass", 1000.0),
        "lb" => ("mass", 0.453_592_37),
        "oz" => ("mass", 0.028_349_523_125),
        "mm" => ("length", 1e-3),
        "cm" => ("length", 1e-2),
        "m" => ("length", 1.0),
        "km" => ("length", 1000.0),
        "in" => ("length", 0.0254),
        "ft" => ("length", 0.3048),
        "yd" => ("length", 0.9144),
        "mi" => ("length", 1609.344),
        "ml" => ("volume", 1e-3),
        "cl" => ("volume", 1e-2),
        "dl" => ("volume", 0.1),
        "l" => ("volume", 1.0),
        "m3" => ("volume", 1000.0),
        "gal" => ("volume", 3.785_411_784),
        _ => return None,
    })
}

fn check_strftime(fmt: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if fmt.is_empty() || StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "config.output '{fmt}' is not a valid strftime format"
        ));
    }
    Ok(())
}

/// The directives of a format chrono accepts, each as written (`%d`, `%-d`, `%.3f`, `%::z`).
/// chrono reads a directive as far as it must, so the shortest prefix it accepts is the one.
fn directives(fmt: &str) -> Vec<&str> {
    use chrono::format::{Item, StrftimeItems};
    let mut out = Vec::new();
    let mut rest = fmt;
    while let Some(at) = rest.find('%') {
        rest = &rest[at..];
        let ends: Vec<usize> = rest
            .char_indices()
            .skip(1)
            .map(|(i, c)| i + c.len_utf8())
            .take(5)
            .collect();
        let Some(end) = ends
            .into_iter()
            .find(|&e| !StrftimeItems::new(&rest[..e]).any(|i| matches!(i, Item::Error)))
        else {
            break;
        };
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// Checks a date rule's output as it is saved: chrono formats a date alone only with date
/// directives, and any other (`%H`, `%z`, `%s`, `%c`, `%+`, ...) fails every document.
fn check_date_output(fmt: &str) -> Result<(), String> {
    check_strftime(fmt)?;
    let sample = NaiveDate::from_ymd_opt(2024, 9, 14).ok_or("no sample date")?;
    for d in directives(fmt) {
        if format_date(sample, d).is_err() {
            return Err(format!(
                "config.output: '{d}' needs a time or a time zone, and a date rule formats dates only"
            ));
        }
    }
    format_date(sample, fmt)
        .map(|_| ())
        .map_err(|_| format!("config.output '{fmt}' cannot format a date"))
}

/// Formats a date; a directive that needs what a date does not have is an error, not a panic
/// (`to_string` on chrono's formatter panics on it).
fn format_date(d: NaiveDate, fmt: &str) -> Result<String, String> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", d.format(fmt))
        .map_err(|_| format!("output format '{fmt}' cannot format a date alone"))?;
    Ok(out)
}

/// Compiles a rule's configuration; the error names what is wrong (the caller names the rule).
pub fn compile(rule_type: &str, config: &Value) -> Result<Rule, String> {
    let empty = Map::new();
    let c = match config {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => return Err("config must be an object".into()),
    };
    Ok(match rule_type {
        "direct" => Rule::Direct {
            from: cfg_str(c, "from")?
                .ok_or("config.from is required")?
                .to_string(),
        },
        "format" => {
            let op = cfg_str(c, "op")?.ok_or("config.op is required")?;
            if ![
                "trim",
                "lowercase",
                "uppercase",
                "titlecase",
                "collapse_whitespace",
            ]
            .contains(&op)
            {
                return Err("config.op must be one of trim, lowercase, uppercase, titlecase, collapse_whitespace".into());
            }
            Rule::Format { op: op.to_string() }
        }
        "date" => {
            let output = cfg_str(c, "output")?.unwrap_or("%Y-%m-%d").to_string();
            check_strftime(&output)?;
            Rule::Date {
                day_first: cfg_bool(c, "day_first", false)?,
                output,
            }
        }
        "number" => {
            let decimal = match cfg_str(c, "decimal_separator")? {
                None | Some(".") => '.',
                Some(",") => ',',
                Some(_) => return Err("config.decimal_separator must be \".\" or \",\"".into()),
            };
            let round = match c.get("round") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_i64() {
                    Some(n) if (0..=12).contains(&n) => Some(n as i32),
                    _ => return Err("config.round must be an integer from 0 to 12".into()),
                },
            };
            Rule::Number { decimal, round }
        }
        "currency" => {
            let default = cfg_str(c, "default")?.map(|d| d.to_ascii_uppercase());
            if let Some(d) = &default {
                if d.len() != 3 || !d.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err("config.default must be a three-letter currency code".into());
                }
            }
            Rule::Currency { default }
        }
        "lookup" => {
            let table = match c.get("table") {
                Some(Value::Object(t)) => t.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                _ => return Err("config.table must be an object of raw: canonical".into()),
            };
            let null_fallback = match cfg_str(c, "fallback")? {
                None | Some("keep") => false,
                Some("null") => true,
                Some(_) => return Err("config.fallback must be \"keep\" or \"null\"".into()),
            };
            Rule::Lookup {
                table,
                case_insensitive: cfg_bool(c, "case_insensitive", false)?,
                null_fallback,
            }
        }
        "regex_replace" => {
            let pattern = cfg_str(c, "pattern")?.ok_or("config.pattern is required")?;
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("config.pattern is not a valid regular expression: {e}"))?;
            let replacement = cfg_str(c, "replacement")?
                .ok_or("config.replacement is required")?
                .to_string();
            Rule::RegexReplace { re, replacement }
        }
        "default" => Rule::Default {
            value: c.get("value").cloned().ok_or("config.value is required")?,
        },
        "compute" => {
            let src = cfg_str(c, "expr")?.ok_or("config.expr is required")?;
            Rule::Compute {
                expr: expr::parse(src).map_err(|e| format!("config.expr: {e}"))?,
            }
        }
        "unit" => {
            let from = cfg_str(c, "from")?.ok_or("config.from is required")?;
            let to = cfg_str(c, "to")?.ok_or("config.to is required")?;
            let (df, ff) = unit_factor(from).ok_or_else(|| format!("unknown unit '{from}'"))?;
            let (dt, ft) = unit_factor(to).ok_or_else(|| format!("unknown unit '{to}'"))?;
            if df != dt {
                return Err(format!("cannot convert {df} ('{from}') to {dt} ('{to}')"));
            }
            Rule::Unit { factor: ff / ft }
        }
        other => {
            return Err(format!(
                "rule_type '{other}' is unknown (use one of {})",
                RULE_TYPES.join(", ")
            ))
        }
    })
}

/// Compiles a rule as it is saved: `compile`, and the checks that refuse a configuration that
/// could only fail at run time. `compile` alone stays lenient about these so that a rule stored
/// before a check existed still runs (and writes a note per document) instead of failing the run.
pub fn validate(rule_type: &str, config: &Value) -> Result<Rule, String> {
    let rule = compile(rule_type, config)?;
    match &rule {
        Rule::Date { output, .. } => check_date_output(output)?,
        Rule::Compute { expr } => expr.check().map_err(|e| format!("config.expr: {e}"))?,
        _ => {}
    }
    Ok(rule)
}

impl Rule {
    /// The fields this rule reads besides the chain's own value.
    pub fn inputs(&self) -> BTreeSet<String> {
        match self {
            Rule::Direct { from } => BTreeSet::from([from.clone()]),
            Rule::Compute { expr } => expr.vars(),
            _ => BTreeSet::new(),
        }
    }

    /// The paths into array fields it reads (a compute's `sum(lines[].amount)`).
    pub fn paths(&self) -> BTreeSet<String> {
        match self {
            Rule::Compute { expr } => expr.paths(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether values written by this rule are exempt from the evidence check.
    pub fn not_from_text(rule_type: &str) -> bool {
        matches!(rule_type, "default" | "compute" | "lookup" | "direct")
    }
}

/// Validates a policy's whole rule set against its fields (each rule with `validate`, as it is
/// saved) and returns the rule ids in compiled order: fields topologically (a field's chain after
/// the chains it reads), each chain by `order`.
pub fn compiled_order(fields: &[String], rules: &[RuleDef]) -> Result<Vec<String>, String> {
    let mut by_field: Vec<(String, Vec<&RuleDef>)> = Vec::new();
    let mut reads: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut sorted: Vec<&RuleDef> = rules.iter().collect();
    sorted.sort_by_key(|r| r.order);
    for r in &sorted {
        let name = format!("rule {} ({} on {})", r.id, r.rule_type, r.field_key);
        // `lines[].amount`: the rule runs on that sub-field of every element of `lines`.
        let target = super::path::base(&r.field_key).to_string();
        if super::path::is_path(&r.field_key) {
            let p = super::path::parse(&r.field_key).map_err(|e| format!("{name}: {e}"))?;
            if !p.each() || p.sub.is_none() {
                return Err(format!(
                    "{name}: a rule on elements names a sub-field of every element, as {}[].amount",
                    p.field
                ));
            }
        }
        if !fields.contains(&target) {
            return Err(format!(
                "{name}: field '{target}' is not a field of this policy"
            ));
        }
        let compiled = validate(&r.rule_type, &r.config).map_err(|e| format!("{name}: {e}"))?;
        for input in compiled.inputs() {
            if !fields.contains(&input) {
                return Err(format!(
                    "{name}: input '{input}' is not a field of this policy"
                ));
            }
            if input != target {
                reads.entry(target.clone()).or_default().insert(input);
            }
        }
        match by_field.iter_mut().find(|(f, _)| f == &r.field_key) {
            Some((_, list)) => list.push(r),
            None => by_field.push((r.field_key.clone(), vec![r])),
        }
    }
    // Depth-first topological sort over the fields that have rules, in first-rule order.
    let mut out = Vec::new();
    let mut state: HashMap<String, u8> = HashMap::new();
    fn visit(
        f: &str,
        by_field: &[(String, Vec<&RuleDef>)],
        reads: &HashMap<String, BTreeSet<String>>,
        state: &mut HashMap<String, u8>,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        match state.get(f).copied() {
            Some(2) => return Ok(()),
            Some(1) => return Err(f.to_string()),
            _ => {}
        }
        state.insert(f.to_string(), 1);
        if let Some(deps) = reads.get(f) {
            for d in deps {
                visit(d, by_field, reads, state, out)?;
            }
        }
        state.insert(f.to_string(), 2);
        // The field's own chain, then those on its elements' sub-fields, in first-rule order.
        let own = by_field.iter().filter(|(key, _)| key == f);
        let elements = by_field
            .iter()
            .filter(|(key, _)| key != f && super::path::base(key) == f);
        for (_, list) in own.chain(elements) {
            out.extend(list.iter().map(|r| r.id.clone()));
        }
        Ok(())
    }
    for (f, _) in &by_field {
        let f = super::path::base(f);
        visit(f, &by_field, &reads, &mut state, &mut out).map_err(|at| {
            let rule = by_field
                .iter()
                .find(|(name, _)| super::path::base(name) == at)
                .and_then(|(_, l)| l.first())
                .map(|r| format!("rule {} ({} on {})", r.id, r.rule_type, r.field_key))
                .unwrap_or_else(|| format!("field '{at}'"));
            format!("{rule}: its inputs form a cycle through field '{at}'")
        })?;
    }
    Ok(out)
}

/// A value as numbers are read: JSON numbers, or strings that are plain decimal numbers.
pub fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
            {
                return None;
            }
            // Digits enough to overflow would read as infinity, which JSON cannot hold.
            t.parse().ok().filter(|x: &f64| x.is_finite())
        }
        _ => None,
    }
}

/// A JSON number from an f64, as an integer when it is one.
pub fn number_value(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Whether two values are the same for "did the rule change it" (numbers compare numerically).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn titlecase(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const CURRENCY_MARKS: &str = "€$£¥₹";

/// Reads a written number: digits with the decimal separator, grouping (the other separator, a
/// space or an apostrophe) only between digits of the integer part, an optional exponent
/// (`1.5e-3`), and around them only words, currency marks, spaces, a dot ending a word (`Fr.`)
/// and one sign before the digits (`EUR -1.234,50`, `12 kg`). Anything else is refused, never
/// skipped: a character dropped from a number changes it (`1e308` is not 1308).
pub(crate) fn parse_number(s: &str, decimal: char) -> Result<f64, String> {
    let bad = || format!("'{s}' is not a number");
    let group = if decimal == '.' { ',' } else { '.' };
    let chars: Vec<char> = s.trim().chars().collect();
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let after_letter = |i: usize| i > 0 && chars[i - 1].is_alphabetic();
    let around = |i: usize| {
        let c = chars[i];
        c.is_alphabetic()
            || c.is_whitespace()
            || CURRENCY_MARKS.contains(c)
            || (c == '.' && after_letter(i))
    };
    let mut i = 0;
    let mut signs = 0;
    let mut num = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || (c == decimal && digit_at(i + 1) && !after_letter(i)) {
            break;
        }
        if c == '-' || c == '+' {
            signs += 1;
            if c == '-' {
                num.push('-');
            }
        } else if !around(i) {
            return Err(bad());
        }
        i += 1;
    }
    if signs > 1 || i == chars.len() {
        return Err(bad());
    }
    let mut seen_decimal = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            num.push(c);
        } else if c == decimal {
            if seen_decimal {
                return Err(bad());
            }
            seen_decimal = true;
            num.push('.');
        } else if !seen_decimal && (c == group || c == '\'' || c.is_whitespace()) && digit_at(i + 1)
        {
            // grouping between digits
        } else if c == 'e' || c == 'E' {
            let sign = usize::from(matches!(chars.get(i + 1), Some('-' | '+')));
            if !digit_at(i + 1 + sign) {
                break;
            }
            num.push('e');
            num.extend(chars[i + 1..i + 1 + sign].iter());
            i += 1 + sign;
            while digit_at(i) {
                num.push(chars[i]);
                i += 1;
            }
            break;
        } else {
            break;
        }
        i += 1;
    }
    if (i..chars.len()).any(|j| !around(j)) {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    if !n.is_finite() {
        return Err(format!("'{s}' is beyond the range of a number"));
    }
    Ok(n)
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn month_of(word: &str) -> Option<u32> {
    let w = word.to_ascii_lowercase();
    if w.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| w.starts_with(m))
        .map(|i| i as u32 + 1)
}

/// Parses the common written date forms. Ambiguous day/month order follows `day_first`, unless
/// one of the two numbers is above 12. A year is four digits (1000 to 9999) or two (20yy); a day
/// or month one or two digits. The text starts and ends with a letter or a digit, so a sign is
/// never read as a separator (`-0001-01-01` is refused, not read as year 1).
pub fn parse_date(s: &str, day_first: bool) -> Result<NaiveDate, String> {
    let bad = || format!("'{s}' is not a recognizable date");
    let t = s.trim();
    let edge_ok = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    if !edge_ok(t.chars().next()) || !edge_ok(t.chars().next_back()) {
        return Err(bad());
    }
    let parts: Vec<&str> = t
        .split(['-', '.', '/', ' ', ','])
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let digits = |p: &str, lens: &[usize]| -> Option<i64> {
        if lens.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    let day_or_month = |p: &str| digits(p, &[1, 2]);
    let year = |p: &str| match p.len() {
        2 => digits(p, &[2]).map(|y| 2000 + y),
        _ => digits(p, &[4]).filter(|y| (1000..=9999).contains(y)),
    };
    let (y, m, d) = if parts[0].len() == 4 && parts[0].bytes().all(|b| b.is_ascii_digit()) {
        (
            year(parts[0]).ok_or_else(bad)?,
            day_or_month(parts[1]).ok_or_else(bad)?,
            day_or_month(parts[2]).ok_or_else(bad)?,
        )
    } else if let (Some(a), Some(b)) = (day_or_month(parts[0]), day_or_month(parts[1])) {
        let year = year(parts[2]).ok_or_else(bad)?;
        let (day, month) = if a > 12 {
            (a, b)
        } else if b > 12 {
            (b, a)
        } else if day_first {
            (a, b)
        } else {
            (b, a)
        };
        (year, month, day)
    } else if let Some(m) = month_of(parts[1]) {
        // 14 September 2024
        (
            year(parts[2]).ok_or_else(bad)?,
            m as i64,
            day_or_month(parts[0]).ok_or_else(bad)?,
        )
    } else if let Some(m) = month_of(parts[0]) {
        // September 14, 2024
        (
            year(parts[2]).ok_or_else(bad)?,
            m as i64,
            day_or_month(parts[1]).ok_or_else(bad)?,
        )
    } else {
        return Err(bad());
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32).ok_or_else(bad)
}

/// Applies one rule. `current` is the chain's value so far; `input` reads other fields.
/// An `Err` is a note: the rule could not produce a value for this document.
/// The approximate size of a value as stored: its strings' bytes plus a little per scalar,
/// container and key. Cheap enough to take for every cell.
pub fn value_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(value_size).sum::<usize>(),
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, x)| k.len() + 3 + value_size(x))
                .sum::<usize>()
        }
        _ => 8,
    }
}

/// A rule's output past `limit` bytes is refused with a note, and a `regex_replace` stops
/// building it as soon as it passes the limit: an empty pattern with a long replacement would
/// otherwise multiply a value's size before anything could look at it.
pub fn apply_within(
    rule: &Rule,
    current: &Value,
    input: &dyn Fn(&str) -> Value,
    limit: usize,
) -> Result<Value, String> {
    let out = match (rule, current) {
        (Rule::RegexReplace { re, replacement }, Value::String(s)) => {
            let mut out = String::new();
            let mut last = 0;
            for caps in re.captures_iter(s) {
                let m = caps.get(0).expect("group 0 is the match");
                out.push_str(&s[last..m.start()]);
                caps.expand(replacement, &mut out);
                last = m.end();
                if out.len() > limit {
                    return Err(over_budget(out.len(), limit));
                }
            }
            out.push_str(&s[last..]);
            Value::String(out)
        }
        _ => apply(rule, current, input)?,
    };
    let size = value_size(&out);
    if size > limit {
        return Err(over_budget(size, limit));
    }
    Ok(out)
}

pub fn over_budget(size: usize, limit: usize) -> String {
    format!("the value would be {size} bytes, over the budget of {limit} bytes per value")
}

/// A compute rule's inputs: fields' values, and through paths their elements'.
struct Inputs<'a>(&'a dyn Fn(&str) -> Value);

impl expr::Env for Inputs<'_> {
    fn number(&self, name: &str) -> Result<f64, String> {
        let val = if super::path::is_path(name) {
            let p = super::path::parse(name)?;
            p.values(&(self.0)(&p.field)).pop().unwrap_or(Value::Null)
        } else {
            (self.0)(name)
        };
        if val.is_null() {
            return Err(format!("input '{name}' has no value"));
        }
        as_number(&val).ok_or_else(|| format!("input '{name}' is not a number ({val})"))
    }

    fn values(&self, path: &str) -> Result<Vec<Value>, String> {
        let p = super::path::parse(path)?;
        match (self.0)(&p.field) {
            Value::Null => Err(format!("input '{}' has no value", p.field)),
            v @ Value::Array(_) => Ok(p.values(&v)),
            other => Err(format!("input '{}' is not an array ({other})", p.field)),
        }
    }
}

pub fn apply(rule: &Rule, current: &Value, input: &dyn Fn(&str) -> Value) -> Result<Value, String> {
    match rule {
        Rule::Direct { from } => Ok(input(from)),
        Rule::Format { op } => Ok(match current {
            Value::String(s) => Value::String(match op.as_str() {
                "trim" => s.trim().to_string(),
                "lowercase" => s.to_lowercase(),
                "uppercase" => s.to_uppercase(),
                "titlecase" => titlecase(s),
                _ => s.split_whitespace().collect::<Vec<_>>().join(" "),
            }),
            other => other.clone(),
        }),
        Rule::Date { day_first, output } => match current {
            Value::Null => Ok(Value::Null),
            Value::String(s) => Ok(Value::String(format_date(
                parse_date(s, *day_first)?,
                output,
            )?)),
            other => Err(format!("{other} is not a date")),
        },
        Rule::Number { decimal, round } => match current {
            Value::Null => Ok(Value::Null),
            Value::Number(_) => Ok(current.clone()),
            Value::String(s) => {
                let mut n = parse_number(s, *decimal)?;
                if let Some(r) = round {
                    n = round_to(n, *r)?;
                }
                Ok(number_value(n))
            }
            other => Err(format!("{other} is not a number")),
        },
        Rule::Currency { default } => match current {
            Value::Null => Ok(default.as_ref().map(|d| json!(d)).unwrap_or(Value::Null)),
            Value::String(s) if s.trim().is_empty() => {
                Ok(default.as_ref().map(|d| json!(d)).unwrap_or(Value::Null))
            }
            Value::String(s) => {
                if let Some(code) = super::reading::currency_code(s) {
                    return Ok(json!(code));
                }
                let t = s.trim();
                if t.len() == 3 && t.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Ok(json!(t.to_ascii_uppercase()));
                }
                match default {
                    Some(d) => Ok(json!(d)),
                    None => Err(format!("'{s}' is not a known currency")),
                }
            }
            other => Err(format!("{other} is not a currency")),
        },
        Rule::Lookup {
            table,
            case_insensitive,
            null_fallback,
        } => {
            let key = match current {
                Value::String(s) => s.clone(),
                Value::Null => return Ok(Value::Null),
                other => other.to_string(),
            };
            let hit = table.iter().find(|(k, _)| {
                if *case_insensitive {
                    k.to_lowercase() == key.to_lowercase()
                } else {
                    *k == key
                }
            });
            Ok(match hit {
                Some((_, v)) => v.clone(),
                None if *null_fallback => Value::Null,
                None => current.clone(),
            })
        }
        Rule::RegexReplace { re, replacement } => Ok(match current {
            Value::String(s) => Value::String(re.replace_all(s, replacement.as_str()).into_owned()),
            other => other.clone(),
        }),
        Rule::Default { value } => Ok(match current {
            Value::Null => value.clone(),
            Value::String(s) if s.trim().is_empty() => value.clone(),
            other => other.clone(),
        }),
        Rule::Compute { expr } => {
            let v = expr.eval_in(&Inputs(input))?;
            Ok(number_value(round_to(v, 10)?))
        }
        Rule::Unit { factor } => match current {
            Value::Null => Ok(Value::Null),
            other => {
                let n = as_number(other).ok_or_else(|| format!("{other} is not a number"))?;
                let converted = n * factor;
                if !converted.is_finite() {
                    return Err(format!("{other} converted is beyond the range of a number"));
                }
                Ok(number_value(round_to(converted, 10)?))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule_type: &str, config: Value, current: Value) -> Result<Value, String> {
        let r = compile(rule_type, &config)?;
        apply(&r, &current, &|f| match f {
            "net" => json!(100),
            "tax" => json!("19.5"),
            "zero" => json!(0),
            "name" => json!("Acme"),
            _ => Value::Null,
        })
    }

    #[test]
    fn compute_sums_counts_and_names_the_element_that_is_not_a_number() {
        let lines =
            json!([{"amount": 10, "qty": 2}, {"amount": "2.5", "qty": null}, {"amount": null}]);
        let with = |src: &str, lines: &Value| {
            let r = compile("compute", &json!({ "expr": src }))?;
            apply(&r, &Value::Null, &|f| match f {
                "lines" => lines.clone(),
                "net" => json!(12.5),
                _ => Value::Null,
            })
        };
        assert_eq!(with("sum(lines[].amount)", &lines), Ok(json!(12.5)));
        assert_eq!(with("count(lines)", &lines), Ok(json!(3)));
        assert_eq!(with("count(lines[].qty)", &lines), Ok(json!(1)));
        assert_eq!(with("net - sum(lines[].amount)", &lines), Ok(json!(0)));
        assert_eq!(
            with("lines[0].amount * lines[0].qty", &lines),
            Ok(json!(20))
        );
        assert_eq!(with("max(lines[].amount)", &lines), Ok(json!(10)));
        assert_eq!(with("avg(lines[].amount)", &lines), Ok(json!(6.25)));
        let bad = json!([{"amount": 1}, {"amount": "ten"}]);
        assert_eq!(
            with("sum(lines[].amount)", &bad).unwrap_err(),
            "lines[1].amount is not a number (\"ten\")"
        );
        assert!(with("sum(lines[].amount)", &json!("x"))
            .unwrap_err()
            .contains("not an array"));
        assert!(with("lines[5].amount", &lines)
            .unwrap_err()
            .contains("no value"));
        assert_eq!(with("sum(lines[].amount)", &json!([])), Ok(json!(0)));
        for wrong in [
            "lines[].amount + 1",
            "round(lines[].amount)",
            "sum(lines[].amount, net)",
            "count(1)",
        ] {
            assert!(
                compile("compute", &json!({ "expr": wrong })).is_err(),
                "{wrong}"
            );
        }
        let r = compile("compute", &json!({"expr": "sum(lines[].amount) + net"})).unwrap();
        assert_eq!(
            r.inputs().into_iter().collect::<Vec<_>>(),
            vec!["lines", "net"]
        );
    }

    #[test]
    fn numbers_with_either_separator() {
        assert_eq!(
            run(
                "number",
                json!({"decimal_separator": ","}),
                json!("1.000,50")
            )
            .unwrap(),
            json!(1000.5)
        );
        assert_eq!(
            run("number", json!({}), json!("1,000.50")).unwrap(),
            json!(1000.5)
        );
        assert_eq!(
            run("number", json!({}), json!("€ 12 345")).unwrap(),
            json!(12345)
        );
        assert_eq!(
            run("number", json!({"round": 1}), json!("2.25")).unwrap(),
            json!(2.3)
        );
        // A typed number passes through unchanged, even when it looks like the other convention.
        assert_eq!(
            run("number", json!({"decimal_separator": ","}), json!(1000.5)).unwrap(),
            json!(1000.5)
        );
        assert!(run("number", json!({}), json!("n/a")).is_err());
        assert!(run("number", json!({"decimal_separator": ";"}), json!("1")).is_err());
    }

    #[test]
    fn dates_in_common_forms_and_ambiguity() {
        assert_eq!(
            run("date", json!({}), json!("14.09.2024")).unwrap(),
            json!("2024-09-14")
        );
        assert_eq!(
            run("date", json!({"day_first": true}), json!("03/04/2024")).unwrap(),
            json!("2024-04-03")
        );
        assert_eq!(
            run("date", json!({"day_first": false}), json!("03/04/2024")).unwrap(),
            json!("2024-03-04")
        );
        assert_eq!(
            run("date", json!({}), json!("September 14, 2024")).unwrap(),
            json!("2024-09-14")
        );
        assert_eq!(
            run("date", json!({}), json!("14 Sep 2024")).unwrap(),
            json!("2024-09-14")
        );
        assert_eq!(
            run("date", json!({}), json!("2024-09-14")).unwrap(),
            json!("2024-09-14")
        );
        assert_eq!(
            run("date", json!({"output": "%d/%m/%Y"}), json!("2024-09-14")).unwrap(),
            json!("14/09/2024")
        );
        assert!(run("date", json!({}), json!("31.02.2024")).is_err());
        assert!(run("date", json!({}), json!("soon")).is_err());
        assert!(compile("date", &json!({"output": "%Q"})).is_err());
    }

    #[test]
    fn currencies_known_unknown_and_defaulted() {
        assert_eq!(
            run("currency", json!({}), json!("€")).unwrap(),
            json!("EUR")
        );
        assert_eq!(
            run("currency", json!({}), json!("eur")).unwrap(),
            json!("EUR")
        );
        assert_eq!(
            run("currency", json!({}), json!("Euro")).unwrap(),
            json!("EUR")
        );
        assert_eq!(
            run("currency", json!({}), json!("nok")).unwrap(),
            json!("NOK")
        );
        assert!(run("currency", json!({}), json!("shells")).is_err());
        assert_eq!(
            run("currency", json!({"default": "usd"}), json!("shells")).unwrap(),
            json!("USD")
        );
        assert_eq!(
            run("currency", json!({"default": "EUR"}), Value::Null).unwrap(),
            json!("EUR")
        );
    }

    #[test]
    fn compute_lookup_format_default_unit_regex_direct() {
        assert_eq!(
            run("compute", json!({"expr": "net + tax"}), Value::Null).unwrap(),
            json!(119.5)
        );
        assert_eq!(
            run("compute", json!({"expr": "net / zero"}), Value::Null).unwrap_err(),
            "division by zero"
        );
        assert!(
            run("compute", json!({"expr": "net + missing"}), Value::Null)
                .unwrap_err()
                .contains("no value")
        );
        assert!(compile("compute", &json!({"expr": "net +"})).is_err());
        let table = json!({"table": {"ACME GmbH": "Acme"}, "case_insensitive": true});
        assert_eq!(
            run("lookup", table.clone(), json!("acme gmbh")).unwrap(),
            json!("Acme")
        );
        assert_eq!(
            run("lookup", table, json!("Other")).unwrap(),
            json!("Other")
        );
        assert_eq!(
            run(
                "lookup",
                json!({"table": {}, "fallback": "null"}),
                json!("x")
            )
            .unwrap(),
            Value::Null
        );
        assert_eq!(
            run("format", json!({"op": "titlecase"}), json!("hello WORLD")).unwrap(),
            json!("Hello World")
        );
        assert_eq!(
            run(
                "format",
                json!({"op": "collapse_whitespace"}),
                json!(" a  b ")
            )
            .unwrap(),
            json!("a b")
        );
        assert_eq!(
            run("default", json!({"value": "EUR"}), json!("")).unwrap(),
            json!("EUR")
        );
        assert_eq!(
            run("default", json!({"value": "EUR"}), json!("USD")).unwrap(),
            json!("USD")
        );
        assert_eq!(
            run("unit", json!({"from": "g", "to": "kg"}), json!(1500)).unwrap(),
            json!(1.5)
        );
        assert!(compile("unit", &json!({"from": "g", "to": "m"})).is_err());
        assert_eq!(
            run(
                "regex_replace",
                json!({"pattern": "^INV", "replacement": "R"}),
                json!("INV-1")
            )
            .unwrap(),
            json!("R-1")
        );
        assert!(compile("regex_replace", &json!({"pattern": "(", "replacement": ""})).is_err());
        assert_eq!(
            run("direct", json!({"from": "name"}), Value::Null).unwrap(),
            json!("Acme")
        );
    }

    #[test]
    fn scientific_notation_is_read_exactly_or_refused() {
        let num = |s: &str| run("number", json!({}), json!(s));
        assert_eq!(num("1e308").unwrap(), json!(1e308));
        assert_eq!(num("2.5E-3").unwrap(), json!(0.0025));
        assert_eq!(num("-1.5e+3 kg").unwrap(), json!(-1500));
        assert_eq!(
            run(
                "number",
                json!({"decimal_separator": ","}),
                json!("1.234,5e2")
            )
            .unwrap(),
            json!(123450)
        );
        // Rounding a number too large to have decimals leaves it as it is.
        assert_eq!(
            run(
                "number",
                json!({"round": 2}),
                json!("1.7976931348623157e308")
            )
            .unwrap(),
            json!(f64::MAX)
        );
        // Beyond f64: a note, not infinity (which JSON writes as null).
        for s in ["1e309", "-1e309", &"9".repeat(400)] {
            assert!(num(s).unwrap_err().contains("range"), "{s}");
        }
        // An 'e' that does not start an exponent is a word around the number, as before.
        assert_eq!(num("12 EUR").unwrap(), json!(12));
        assert_eq!(num("12EUR").unwrap(), json!(12));
    }

    #[test]
    fn characters_inside_a_number_are_refused_not_dropped() {
        for s in [
            "12abc34", "1+2", "12 kg 5", "--5", "-+5", "1.5 e3", "1e5e5", "1e5.5", "1.2.3",
            "1.5,3", "Nr 1/2", "12%",
        ] {
            assert!(run("number", json!({}), json!(s)).is_err(), "{s}");
        }
        // Words, currency marks, abbreviations and one sign around the digits are still read.
        for (s, want) in [
            ("EUR -1,234.50", json!(-1234.5)),
            ("- € 12", json!(-12)),
            ("Fr. 12.50", json!(12.5)),
            ("1'000", json!(1000)),
            (".5", json!(0.5)),
        ] {
            assert_eq!(run("number", json!({}), json!(s)).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn conversions_and_numbers_beyond_f64_are_notes_not_nulls() {
        let huge = "9".repeat(400);
        assert_eq!(as_number(&json!(huge)), None);
        assert!(run("unit", json!({"from": "g", "to": "kg"}), json!(huge)).is_err());
        assert!(run("unit", json!({"from": "t", "to": "mg"}), json!(1e300)).is_err());
    }

    #[test]
    fn dates_need_a_four_or_two_digit_year_and_no_sign() {
        for (s, day_first) in [
            ("-0001-01-01", false),
            ("1.1.1", true),
            ("0001-01-01", false),
            ("0999-12-31", false),
            ("+2024-01-01", false),
            ("2024-01-01-", false),
            ("2024-+1-01", false),
            ("01.01.001", true),
            ("1.1.12345", true),
            ("14 Sep 202", false),
            ("001.01.2024", true),
        ] {
            assert!(parse_date(s, day_first).is_err(), "{s}");
            assert!(
                run("date", json!({"day_first": day_first}), json!(s)).is_err(),
                "{s}"
            );
        }
        for (s, want) in [
            ("1000-01-01", "1000-01-01"),
            ("9999-12-31", "9999-12-31"),
            ("14.09.24", "2024-09-14"),
            ("14 Sep 24", "2024-09-14"),
            ("1.2.2024", "2024-02-01"),
        ] {
            assert_eq!(
                run("date", json!({"day_first": true}), json!(s)).unwrap(),
                json!(want),
                "{s}"
            );
        }
    }

    fn save(rule_type: &str, config: Value) -> Result<Vec<String>, String> {
        let fields = vec!["net".to_string(), "when".to_string()];
        compiled_order(&fields, &[rule("r", "when", rule_type, config, 1)])
    }

    #[test]
    fn date_outputs_that_need_a_time_or_zone_are_refused_when_saved() {
        for d in [
            "%H", "%M", "%S", "%z", "%Z", "%s", "%T", "%R", "%c", "%+", "%I", "%p", "%P", "%f",
            "%.3f", "%3f", "%:z", "%::z", "%#z", "%r", "%X", "%-H", "%k", "%l",
        ] {
            let err = save("date", json!({"output": format!("%d.%m.%Y {d}!")})).unwrap_err();
            assert!(
                err.contains("rule r") && err.contains(&format!("'{d}'")),
                "{d}: {err}"
            );
        }
        for ok in [
            "%Y-%m-%d",
            "%d %B %Y",
            "%a, %e %b %y",
            "%F",
            "%D",
            "%x",
            "%v",
            "%j %U %W %V %G %g %u %w %C %q",
            "%-d.%-m.%Y %%",
            "week %V",
        ] {
            assert!(save("date", json!({"output": ok})).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_stored_date_output_that_cannot_format_a_date_writes_a_note() {
        // Saved before the check existed: it still compiles, and formats to an error.
        let stored = compile("date", &json!({"output": "%Y-%m-%d %H:%M"})).unwrap();
        let err = apply(&stored, &json!("14.09.2024"), &|_| Value::Null).unwrap_err();
        assert!(err.contains("%H:%M"), "{err}");
        for f in ["%s", "%c", "%+", "%z"] {
            let r = compile("date", &json!({ "output": f })).unwrap();
            assert!(apply(&r, &json!("2024-09-14"), &|_| Value::Null).is_err());
        }
    }

    #[test]
    fn round_digits_given_as_literals_are_checked_when_saved() {
        for expr in [
            "round(net, -1000)",
            "round(net, 16)",
            "round(net, 2.5)",
            "round(net, 1 / 0)",
            "abs(round(net, -16))",
        ] {
            let err = save("compute", json!({ "expr": expr })).unwrap_err();
            assert!(err.contains("config.expr"), "{expr}: {err}");
        }
        for expr in [
            "round(net, -2)",
            "round(net, 15)",
            "round(net, net)",
            "round(net)",
        ] {
            assert!(save("compute", json!({ "expr": expr })).is_ok(), "{expr}");
        }
        // Digits read from a field are checked per document.
        assert!(
            run("compute", json!({"expr": "round(tax, net)"}), Value::Null)
                .unwrap_err()
                .contains("digits")
        );
    }

    fn rule(id: &str, field: &str, t: &str, config: Value, order: i64) -> RuleDef {
        RuleDef {
            id: id.into(),
            field_key: field.into(),
            rule_type: t.into(),
            config,
            order,
        }
    }

    #[test]
    fn rules_on_elements_order_with_their_array_field_and_must_name_every_element() {
        let fields: Vec<String> = ["lines", "net"].iter().map(|s| s.to_string()).collect();
        let rules = vec![
            rule(
                "sum",
                "net",
                "compute",
                json!({"expr": "sum(lines[].amount)"}),
                1,
            ),
            rule("unit", "lines[].amount", "number", json!({}), 2),
            rule("own", "lines", "default", json!({"value": []}), 3),
            rule(
                "desc",
                "lines[].description",
                "format",
                json!({"op": "trim"}),
                4,
            ),
        ];
        assert_eq!(
            compiled_order(&fields, &rules).unwrap(),
            vec!["own", "unit", "desc", "sum"],
            "the array's own chain, its elements' chains, then what reads it"
        );
        for bad in ["lines[0].amount", "lines[]", "rows[].amount", "lines[].a.b"] {
            let r = vec![rule("x", bad, "format", json!({"op": "trim"}), 1)];
            assert!(compiled_order(&fields, &r).is_err(), "{bad}");
        }
    }

    #[test]
    fn compiled_order_is_topological_and_cycles_name_the_rule() {
        let fields: Vec<String> = ["net", "tax", "total"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rules = vec![
            rule("r1", "total", "compute", json!({"expr": "net + tax"}), 1),
            rule("r2", "net", "number", json!({}), 2),
            rule("r3", "tax", "number", json!({}), 3),
            rule("r4", "total", "number", json!({"round": 2}), 4),
        ];
        assert_eq!(
            compiled_order(&fields, &rules).unwrap(),
            vec!["r2", "r3", "r1", "r4"]
        );
        let cyc = vec![
            rule("a", "net", "compute", json!({"expr": "tax * 2"}), 1),
            rule("b", "tax", "compute", json!({"expr": "net / 2"}), 2),
        ];
        assert!(compiled_order(&fields, &cyc).unwrap_err().contains("cycle"));
        let unknown = vec![rule("c", "net", "compute", json!({"expr": "gross"}), 1)];
        let err = compiled_order(&fields, &unknown).unwrap_err();
        assert!(err.contains("rule c") && err.contains("gross"), "{err}");
        // A field may read its own input.
        let own = vec![rule(
            "d",
            "net",
            "compute",
            json!({"expr": "net * 1.19"}),
            1,
        )];
        assert!(compiled_order(&fields, &own).is_ok());
    }
}
