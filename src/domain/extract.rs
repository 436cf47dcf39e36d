//! The built-in `rules` extractor: labelled values in text and Markdown, CSV, and JSON.

use serde_json::Value;
use std::collections::HashMap;

/// What the extractor needs to know of a field.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub display_name: String,
    pub data_type: String,
    pub synonyms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub value: Value,
    pub confidence: f64,
    pub source_text: String,
}

const MAX_LABEL: usize = 80;

/// Lower case, only `[a-z0-9]`.
pub fn fold_label(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// 1 − edit distance / the longer length, in characters.
fn similarity(a: &str, b: &str) -> f64 {
    strsim::normalized_levenshtein(a, b)
}

/// Label lookup for a field list, built once per run.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// (folded label, field index, confidence)
    exact: HashMap<String, (usize, f64)>,
    names: Vec<(String, usize)>,
}

impl Matcher {
    pub fn new(fields: &[FieldSpec]) -> Self {
        let mut exact = HashMap::new();
        let mut names = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            for s in &f.synonyms {
                exact.entry(fold_label(s)).or_insert((i, 0.85));
            }
        }
        for (i, f) in fields.iter().enumerate() {
            for n in [&f.name, &f.display_name] {
                let folded = fold_label(n);
                exact.insert(folded.clone(), (i, 0.95));
                names.push((folded, i));
            }
        }
        Matcher { exact, names }
    }

    fn best(&self, label: &str) -> Option<(usize, f64)> {
        let folded = fold_label(label);
        if folded.is_empty() || folded.len() > MAX_LABEL {
            return None;
        }
        if let Some(hit) = self.exact.get(&folded) {
            return Some(*hit);
        }
        self.names
            .iter()
            .map(|(n, i)| (similarity(&folded, n), *i))
            .filter(|(s, _)| *s >= 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| (i, 0.6))
    }
}

/// Types a textual value: numbers, integers and booleans when unambiguous, else the string.
pub fn typed_value(raw: &str, data_type: &str) -> Value {
    let t = raw.trim();
    let plain_number = |s: &str| {
        let body = s.strip_prefix('-').unwrap_or(s);
        let mut parts = body.split('.');
        let int = parts.next().unwrap_or("");
        let frac = parts.next();
        parts.next().is_none()
            && !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    };
    match data_type {
        // Enough digits read as infinity, which JSON cannot hold: such text stays text.
        "number" if plain_number(t) => t
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(super::policy::number_value)
            .unwrap_or_else(|| Value::String(t.into())),
        "integer" if plain_number(t) && !t.contains('.') => t
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(t.into())),
        "boolean" if t.eq_ignore_ascii_case("true") => Value::Bool(true),
        "boolean" if t.eq_ignore_ascii_case("false") => Value::Bool(false),
        _ => Value::String(t.to_string()),
    }
}

fn clean_label(s: &str) -> &str {
    s.trim()
        .trim_start_matches(['#', '-', '*', '>', ' '])
        .trim_matches(['*', '_', ' ', '\t'])
}

fn clean_value(s: &str) -> &str {
    s.trim().trim_matches(['*', '_']).trim()
}

/// The (label, value) pairs of a line. A line of a document's text layer keeps cells that
/// stand apart on the page apart with ` | ` (`Invoice number | 30064443`, or two columns
/// `Date: 14.09.2024 | Total: 5.00`): each cell is a labelled form of its own, or a label whose
/// value is the next cell.
fn pairs(line: &str) -> Vec<(&str, &str)> {
    let t = line.trim();
    if t.starts_with('|') || !t.contains(" | ") {
        return labelled(t).into_iter().collect();
    }
    let cells: Vec<&str> = t.split(" | ").map(str::trim).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cells.len() {
        match labelled(cells[i]) {
            Some((l, v)) if !v.is_empty() => {
                out.push((l, v));
                i += 1;
            }
            _ if i + 1 < cells.len() => {
                out.push((
                    clean_label(cells[i].trim_end_matches(':')),
                    clean_value(cells[i + 1]),
                ));
                i += 2;
            }
            _ => i += 1,
        }
    }
    out
}

/// Splits a line into (label, value) when it has one of the labelled forms.
fn labelled(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    if t.starts_with('|') {
        let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() >= 2
            && !cells[0].is_empty()
            && !cells[0].chars().all(|c| c == '-' || c == ':')
        {
            return Some((clean_label(cells[0]), clean_value(cells[1])));
        }
        return None;
    }
    if let Some((l, v)) = t.split_once(':') {
        return Some((clean_label(l), clean_value(v)));
    }
    if let Some((l, v)) = t.split_once(" - ") {
        return Some((clean_label(l), clean_value(v)));
    }
    None
}

struct Collector<'a> {
    fields: &'a [FieldSpec],
    matcher: &'a Matcher,
    out: HashMap<String, Extracted>,
}

impl Collector<'_> {
    fn offer(&mut self, label: &str, value: Value, line: &str) {
        if value.is_null() || value.as_str().is_some_and(|s| s.is_empty()) {
            return;
        }
        if let Some((i, conf)) = self.matcher.best(label) {
            let f = &self.fields[i];
            if self.out.contains_key(&f.name) {
                return;
            }
            let value = match value {
                Value::String(s) => typed_value(&s, &f.data_type),
                other => other,
            };
            let source_text: String = line.trim().chars().take(500).collect();
            self.out.insert(
                f.name.clone(),
                Extracted {
                    value,
                    confidence: conf,
                    source_text,
                },
            );
        }
    }
}

/// Extracts what it can; `Err` when the document cannot be read at all.
pub fn extract(
    content: &[u8],
    mime: &str,
    fields: &[FieldSpec],
) -> Result<HashMap<String, Extracted>, String> {
    extract_with(content, mime, fields, &Matcher::new(fields))
}

/// `extract` with a matcher built beforehand for these fields.
pub fn extract_with(
    content: &[u8],
    mime: &str,
    fields: &[FieldSpec],
    matcher: &Matcher,
) -> Result<HashMap<String, Extracted>, String> {
    let text = std::str::from_utf8(content)
        .map_err(|e| format!("the document is not valid UTF-8 ({e})"))?;
    let mut c = Collector {
        fields,
        matcher,
        out: HashMap::new(),
    };
    match mime {
        "application/json" => {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| format!("the document is not valid JSON ({e})"))?;
            let obj = match &v {
                Value::Object(o) => o,
                Value::Array(a) => match a.first() {
                    Some(Value::Object(o)) => o,
                    _ => return Ok(c.out),
                },
                _ => return Ok(c.out),
            };
            for (k, val) in obj {
                let line = format!("\"{k}\": {val}");
                match val {
                    Value::Object(_) | Value::Array(_) => {}
                    Value::Number(_) | Value::Bool(_) => c.offer(k, val.clone(), &line),
                    Value::String(s) => c.offer(k, Value::String(s.trim().to_string()), &line),
                    Value::Null => {}
                }
            }
            // One level down, for documents that group their fields.
            for val in obj.values() {
                if let Value::Object(inner) = val {
                    for (k, v) in inner {
                        let line = format!("\"{k}\": {v}");
                        match v {
                            Value::String(s) => {
                                c.offer(k, Value::String(s.trim().to_string()), &line)
                            }
                            Value::Number(_) | Value::Bool(_) => c.offer(k, v.clone(), &line),
                            _ => {}
                        }
                    }
                }
            }
        }
        "text/csv" => {
            // The csv reader accepts an unterminated quote silently; an odd count of quote marks
            // can only come from one.
            if text.bytes().filter(|b| *b == b'"').count() % 2 == 1 {
                return Err("the document is not valid CSV (an unterminated quoted field)".into());
            }
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(text.as_bytes());
            let mut rows = Vec::new();
            for rec in rdr.records().take(100_000) {
                let rec = rec.map_err(|e| format!("the document is not valid CSV ({e})"))?;
                rows.push(rec.iter().map(str::to_string).collect::<Vec<_>>());
            }
            let key_value = rows.iter().all(|r| r.len() <= 2)
                && rows
                    .iter()
                    .any(|r| r.len() == 2 && c.matcher.best(&r[0]).is_some());
            if key_value {
                for r in &rows {
                    if r.len() == 2 {
                        c.offer(&r[0], Value::String(r[1].trim().to_string()), &r.join(","));
                    }
                }
            } else if rows.len() >= 2 {
                let (header, first) = (&rows[0], &rows[1]);
                let line = first.join(",");
                for (h, v) in header.iter().zip(first.iter()) {
                    c.offer(h, Value::String(v.trim().to_string()), &line);
                }
            }
        }
        _ => {
            for line in text.lines() {
                for (label, value) in pairs(line) {
                    c.offer(label, Value::String(value.to_string()), line);
                }
            }
        }
    }
    Ok(c.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs() -> Vec<FieldSpec> {
        let f = |n: &str, d: &str, t: &str, syn: &[&str]| FieldSpec {
            name: n.into(),
            display_name: d.into(),
            data_type: t.into(),
            synonyms: syn.iter().map(|s| s.to_string()).collect(),
        };
        vec![
            f(
                "invoice_number",
                "Invoice Number",
                "string",
                &["Invoice No"],
            ),
            f("total", "Total", "number", &["Amount due"]),
            f("issue_date", "Issue Date", "date", &[]),
            f("paid", "Paid", "boolean", &[]),
        ]
    }

    #[test]
    fn text_with_colons_dashes_and_first_occurrence_winning() {
        let doc = "ACME\nInvoice Number: INV-42\nTotal - 1,234.50\nIssue Date: 14.09.2024\nTotal: 99\nPaid: true\n";
        let out = extract(doc.as_bytes(), "text/plain", &specs()).unwrap();
        assert_eq!(out["invoice_number"].value, json!("INV-42"));
        assert_eq!(out["invoice_number"].confidence, 0.95);
        assert_eq!(out["invoice_number"].source_text, "Invoice Number: INV-42");
        assert_eq!(
            out["total"].value,
            json!("1,234.50"),
            "grouped numbers stay strings"
        );
        assert_eq!(out["paid"].value, json!(true));
    }

    #[test]
    fn cells_of_a_layout_line_pair_up_as_labels_and_values() {
        let doc = "ACME GmbH | Invoice\nInvoice number | 30064443\nIssue Date: 2024-09-14 | Total: 12.50\nPaid: | true\n";
        let out = extract(doc.as_bytes(), "text/plain", &specs()).unwrap();
        assert_eq!(out["invoice_number"].value, json!("30064443"));
        assert_eq!(
            out["invoice_number"].source_text,
            "Invoice number | 30064443"
        );
        assert_eq!(out["issue_date"].value, json!("2024-09-14"));
        assert_eq!(out["total"].value, json!(12.5));
        assert_eq!(out["paid"].value, json!(true));
    }

    #[test]
    fn markdown_tables_synonyms_and_fuzzy_labels() {
        let doc = "# Invoice\n| Field | Value |\n|---|---|\n| **Invoice No** | INV-7 |\n| Amount due | 120.5 |\n\n- Isue Date: 2024-01-02\n";
        let out = extract(doc.as_bytes(), "text/markdown", &specs()).unwrap();
        assert_eq!(out["invoice_number"].value, json!("INV-7"));
        assert_eq!(out["invoice_number"].confidence, 0.85);
        assert_eq!(out["total"].value, json!(120.5));
        assert_eq!(out["issue_date"].value, json!("2024-01-02"));
        assert_eq!(out["issue_date"].confidence, 0.6);
    }

    #[test]
    fn csv_key_value_and_header_forms() {
        let kv = "invoice_number,INV-1\ntotal,10\n";
        let out = extract(kv.as_bytes(), "text/csv", &specs()).unwrap();
        assert_eq!(out["total"].value, json!(10));
        let table = "Invoice Number,Total,Paid\nINV-2,\"1,000.00\",false\nINV-3,5,true\n";
        let out = extract(table.as_bytes(), "text/csv", &specs()).unwrap();
        assert_eq!(out["invoice_number"].value, json!("INV-2"));
        assert_eq!(out["total"].value, json!("1,000.00"));
        assert_eq!(out["paid"].value, json!(false));
    }

    #[test]
    fn json_by_name_or_synonym_and_unreadable_documents() {
        let doc = r#"{"invoiceNumber": "INV-9", "amount_due": 12.5, "meta": {"paid": true}}"#;
        let out = extract(doc.as_bytes(), "application/json", &specs()).unwrap();
        assert_eq!(out["invoice_number"].value, json!("INV-9"));
        assert_eq!(out["total"].value, json!(12.5));
        assert_eq!(out["paid"].value, json!(true));
        assert!(extract(b"{not json", "application/json", &specs()).is_err());
        assert!(extract(&[0xff, 0xfe, 0x00], "text/plain", &specs()).is_err());
        assert!(extract(b"a,\"b\nc", "text/csv", &specs()).is_err());
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(extract(deep.as_bytes(), "application/json", &specs()).is_err());
    }

    #[test]
    fn typing_is_unambiguous_only() {
        assert_eq!(typed_value("12", "integer"), json!(12));
        assert_eq!(typed_value("12.5", "integer"), json!("12.5"));
        assert_eq!(typed_value("-3.25", "number"), json!(-3.25));
        assert_eq!(typed_value("1,5", "number"), json!("1,5"));
        assert_eq!(typed_value("yes", "boolean"), json!("yes"));
        assert_eq!(typed_value("12", "string"), json!("12"));
    }

    #[test]
    fn numbers_too_large_for_f64_stay_text_instead_of_null() {
        let huge = "9".repeat(400);
        assert_eq!(typed_value(&huge, "number"), json!(huge));
        let doc = format!("Total: {huge}\n");
        let out = extract(doc.as_bytes(), "text/plain", &specs()).unwrap();
        assert_eq!(out["total"].value, json!(huge));
    }
}
