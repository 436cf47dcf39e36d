//! What a model extractor is asked and how its answer is read: the messages, the JSON Schema of
//! the answer built from the Spec's fields, the answer's checks, and where a quoted source
//! stands in the document's text. Pure: the call itself is `models`.

use super::extract::{typed_value_in, Extracted, FieldSpec};
use super::schema::FieldDef;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Bumped whenever the messages or the answer's schema change: it is part of the response
/// cache's key, so a new prompt never reads an old prompt's answers.
pub const PROMPT_VERSION: u32 = 2;

/// How much document text one request carries (characters; about a quarter as many tokens).
pub const CHUNK_CHARS: usize = 24_000;

fn json_type(f: &FieldDef) -> Value {
    let base = match f.data_type.as_str() {
        "number" => json!({"type": ["number", "null"]}),
        "integer" => json!({"type": ["integer", "null"]}),
        "boolean" => json!({"type": ["boolean", "null"]}),
        "array" => match &f.items {
            // A table: each row an object of its columns and the row's own quote.
            Some(items) => {
                let mut props: Map<String, Value> = items
                    .iter()
                    .map(|s| (s.field_name.clone(), json_type(s)))
                    .collect();
                props.insert("quote".into(), json!({"type": ["string", "null"]}));
                let names: Vec<&String> = props.keys().collect();
                json!({"type": ["array", "null"], "items": {
                    "type": "object",
                    "properties": props,
                    "required": names,
                    "additionalProperties": false
                }})
            }
            None => json!({"type": ["array", "null"]}),
        },
        "object" => json!({"type": ["object", "null"]}),
        _ => json!({"type": ["string", "null"]}),
    };
    match &f.enum_values {
        Some(values) => {
            let mut e = values.clone();
            e.push(Value::Null);
            json!({"enum": e})
        }
        None => base,
    }
}

/// The JSON Schema the answer must follow: every field, each with its value and the exact
/// text it was read from.
pub fn answer_schema(fields: &[FieldDef]) -> Value {
    let mut props = Map::new();
    for f in fields {
        props.insert(
            f.field_name.clone(),
            json!({
                "type": "object",
                "properties": {
                    "value": json_type(f),
                    "quote": {"type": ["string", "null"]}
                },
                "required": ["value", "quote"],
                "additionalProperties": false
            }),
        );
    }
    let names: Vec<&str> = fields.iter().map(|f| f.field_name.as_str()).collect();
    json!({
        "type": "object",
        "properties": {"fields": {
            "type": "object",
            "properties": props,
            "required": names,
            "additionalProperties": false
        }},
        "required": ["fields"],
        "additionalProperties": false
    })
}

fn expected_format(f: &FieldDef) -> &'static str {
    match f.data_type.as_str() {
        "date" => "a date as YYYY-MM-DD",
        "number" => "a JSON number (no thousands separators, a point for decimals)",
        "integer" => "a JSON integer",
        "boolean" => "true or false",
        "currency" => "an ISO 4217 currency code such as EUR or USD",
        "array" => "a JSON array",
        "object" => "a JSON object",
        _ => "text as printed",
    }
}

/// The chat messages for one chunk of a document's text.
pub fn messages(fields: &[FieldDef], text: &str) -> Vec<Value> {
    // `total (Total): a JSON number`
    let named = |f: &FieldDef| {
        format!(
            "{} ({}): {}",
            f.field_name,
            f.display_name,
            expected_format(f)
        )
    };
    let mut spec = String::new();
    for f in fields {
        spec.push_str(&format!("- {}", named(f)));
        if let Some(d) = &f.description {
            spec.push_str(&format!("; {d}"));
        }
        if !f.synonyms.is_empty() {
            spec.push_str(&format!("; also labelled {}", f.synonyms.join(", ")));
        }
        if let Some(e) = &f.enum_values {
            spec.push_str(&format!("; one of {}", Value::Array(e.clone())));
        }
        if let Some(items) = &f.items {
            spec.push_str("; a table, one object per row, with");
            for s in items {
                spec.push_str(&format!(" {};", named(s)));
            }
            spec.push_str(" and quote: the row's exact text");
        }
        spec.push('\n');
    }
    vec![
        json!({"role": "system", "content":
            "You extract fields from a business document. Answer with JSON only: \
             {\"fields\": {<field>: {\"value\": ..., \"quote\": ...}}} with every field listed. \
             \"quote\" is the exact text of the document the value was read from, copied \
             character for character; when the document does not give a field, its value and \
             quote are null. Never guess."}),
        json!({"role": "user", "content": format!(
            "Fields:\n{spec}\nDocument:\n<<<\n{text}\n>>>"
        )}),
    ]
}

/// The document's text in chunks of whole pages (a page longer than a chunk is cut), so that
/// each request fits the model's context.
pub fn chunks(pages: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, p) in pages.iter().enumerate() {
        let page = format!("--- page {} ---\n{p}\n", i + 1);
        if !current.is_empty() && current.len() + page.len() > CHUNK_CHARS {
            out.push(std::mem::take(&mut current));
        }
        if page.len() > CHUNK_CHARS {
            let mut cut = CHUNK_CHARS;
            while !page.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push(page[..cut].to_string());
        } else {
            current.push_str(&page);
        }
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

/// One field as the model answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnsweredField {
    pub value: Value,
    pub quote: Option<String>,
}

/// A model's answer for a document (chunks merged), as the response cache keeps it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Answer {
    pub fields: Map<String, Value>,
    /// exp(mean token log-probability) of the completions, where the server gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_confidence: Option<f64>,
    /// Why some of the answer was unusable (a field's wrong type), per field.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub notes: Map<String, Value>,
    /// Per field, `[agreeing, taken]`: how many of the extra samples an `n_shot` gate asked
    /// for (and the answer itself) gave the same value.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub samples: Map<String, Value>,
}

impl Answer {
    pub fn field(&self, name: &str) -> Option<AnsweredField> {
        serde_json::from_value(self.fields.get(name)?.clone()).ok()
    }

    /// `(agreeing, taken)` samples for a field, where samples were taken.
    pub fn agreement(&self, name: &str) -> Option<(u32, u32)> {
        let pair: (u32, u32) = serde_json::from_value(self.samples.get(name)?.clone()).ok()?;
        Some(pair)
    }

    /// Counts, per field, the samples that gave the answer's value (the answer counts as one).
    pub fn tally(&mut self, samples: &[Answer]) {
        let names: Vec<String> = self.fields.keys().cloned().collect();
        for name in names {
            let mine = self.field(&name).map(|f| f.value);
            let agree = samples
                .iter()
                .filter(|s| s.field(&name).map(|f| f.value) == mine)
                .count() as u32;
            self.samples
                .insert(name, json!([agree + 1, samples.len() as u32 + 1]));
        }
    }
}

fn type_fits(f: &FieldDef, v: &Value) -> bool {
    match f.data_type.as_str() {
        _ if v.is_null() => true,
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "array" if f.items.is_some() => v
            .as_array()
            .is_some_and(|rows| rows.iter().all(Value::is_object)),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => v.is_string(),
    }
}

/// Reads one completion's content. Not JSON, not the shape asked, or an unknown field is an
/// error (the call is retried once with it); a field of the wrong type is dropped with a note.
pub fn parse(content: &str, fields: &[FieldDef]) -> Result<Answer, String> {
    let v: Value = serde_json::from_str(content.trim())
        .map_err(|e| format!("the answer is not JSON ({e})"))?;
    let got = v
        .get("fields")
        .and_then(Value::as_object)
        .ok_or("the answer has no \"fields\" object")?;
    let mut answer = Answer::default();
    for (name, item) in got {
        let Some(f) = fields.iter().find(|f| &f.field_name == name) else {
            return Err(format!("the answer names an unknown field '{name}'"));
        };
        let field: AnsweredField = serde_json::from_value(item.clone())
            .map_err(|e| format!("field '{name}' is not {{\"value\": …, \"quote\": …}} ({e})"))?;
        if !type_fits(f, &field.value) {
            answer.notes.insert(
                name.clone(),
                json!(format!(
                    "the model answered {} for a {} field",
                    field.value, f.data_type
                )),
            );
            continue;
        }
        if field.value.is_null() {
            continue;
        }
        answer.fields.insert(name.clone(), item.clone());
    }
    Ok(answer)
}

/// Merges the answers of a document's chunks: the first chunk that gives a field gives it.
pub fn merge(parts: Vec<Answer>) -> Answer {
    let mut out = Answer::default();
    let mut confidences = Vec::new();
    for p in parts {
        for (k, v) in p.fields {
            out.fields.entry(k).or_insert(v);
        }
        for (k, v) in p.notes {
            out.notes.entry(k).or_insert(v);
        }
        for (k, v) in p.samples {
            out.samples.entry(k).or_insert(v);
        }
        confidences.extend(p.token_confidence);
    }
    out.notes.retain(|k, _| !out.fields.contains_key(k));
    if !confidences.is_empty() {
        out.token_confidence = Some(confidences.iter().sum::<f64>() / confidences.len() as f64);
    }
    out
}

/// How a quote was found in the text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuoteMatch {
    Exact,
    /// Found once runs of whitespace count as one space.
    Spaced,
    /// A line that is like it (similarity at least 0.8).
    Fuzzy(f64),
    Missing,
}

impl QuoteMatch {
    /// How much the match leaves of the value's confidence.
    pub fn factor(self) -> f64 {
        match self {
            QuoteMatch::Exact => 1.0,
            QuoteMatch::Spaced => 0.95,
            QuoteMatch::Fuzzy(s) => 0.8 * s,
            QuoteMatch::Missing => 0.5,
        }
    }
}

/// The line of `text` a quote stands on (exact, then with whitespace normalized, then the most
/// similar line), and how it was found.
pub fn find_quote(text: &str, quote: &str) -> (QuoteMatch, Option<String>) {
    let q = quote.trim();
    if q.is_empty() {
        return (QuoteMatch::Missing, None);
    }
    if let Some(line) = text.lines().find(|l| l.contains(q)) {
        return (QuoteMatch::Exact, Some(line.to_string()));
    }
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let sq = squash(q);
    if let Some(line) = text.lines().find(|l| squash(l).contains(&sq)) {
        return (QuoteMatch::Spaced, Some(line.to_string()));
    }
    // The quote against each line, and against each line's cells (a layout line joins cells
    // with ` | `, a quote usually is one of them).
    let best = text
        .lines()
        .flat_map(|l| std::iter::once((l, l)).chain(l.split(" | ").map(move |cell| (l, cell))))
        .map(|(line, part)| (line, strsim::normalized_levenshtein(&squash(part), &sq)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        Some((line, s)) if s >= 0.8 => (QuoteMatch::Fuzzy(s), Some(line.to_string())),
        _ => (QuoteMatch::Missing, None),
    }
}

/// A model's answer as extracted values: typed like the rules' (a date the model printed as
/// `14.09.2024` becomes `2024-09-14`), each with the line its quote stands on. Confidence is the
/// completion's token confidence (0.9 where the server gave no log-probabilities) times how
/// well the quote was found; a quote not found in the text halves it and leaves a note.
pub fn extracted(
    answer: &Answer,
    fields: &[FieldSpec],
    text: &str,
    day_first: bool,
) -> HashMap<String, Extracted> {
    let base = answer.token_confidence.unwrap_or(0.9);
    let mut out = HashMap::new();
    for f in fields {
        let Some(a) = answer.field(&f.name) else {
            continue;
        };
        let (value, rows) = match &a.value {
            Value::Array(list) if f.is_table() => table(list, f, text, day_first),
            Value::String(s) => (typed_value_in(s, &f.data_type, day_first), Vec::new()),
            other => (other.clone(), Vec::new()),
        };
        // A table's quote is its first row's where the model gave none for the whole.
        let quote = a
            .quote
            .clone()
            .or_else(|| rows.first().cloned())
            .unwrap_or_default();
        let (found, line) = find_quote(text, &quote);
        let note = (found == QuoteMatch::Missing).then(|| {
            if quote.is_empty() {
                "the model gave no quote for this value".to_string()
            } else {
                format!("the model's quote was not found in the document: {quote:?}")
            }
        });
        out.insert(
            f.name.clone(),
            Extracted {
                value,
                confidence: (base * found.factor() * 1000.0).round() / 1000.0,
                source_text: line.unwrap_or(quote.clone()).chars().take(500).collect(),
                printed: quote,
                note,
                rows,
            },
        );
    }
    out
}

/// A model's table: each row typed like the rules' (sub-fields it did not give are null, keys
/// it made up are dropped), and the line each row's quote stands on (the quote itself where
/// the text does not have it).
fn table(list: &[Value], f: &FieldSpec, text: &str, day_first: bool) -> (Value, Vec<String>) {
    let mut rows = Vec::with_capacity(list.len());
    let elements = list
        .iter()
        .take(super::tables::MAX_ROWS)
        .map(|row| {
            let quote = row.get("quote").and_then(Value::as_str).unwrap_or_default();
            let line = find_quote(text, quote)
                .1
                .unwrap_or_else(|| quote.to_string());
            rows.push(line.trim().chars().take(500).collect());
            let obj: Map<String, Value> = f
                .items
                .iter()
                .map(|s| {
                    let v = match row.get(&s.name) {
                        Some(Value::String(x)) => typed_value_in(x, &s.data_type, day_first),
                        Some(v) => v.clone(),
                        None => Value::Null,
                    };
                    (s.name.clone(), v)
                })
                .collect();
            Value::Object(obj)
        })
        .collect();
    (Value::Array(elements), rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<FieldDef> {
        let f = |n: &str, t: &str| FieldDef {
            field_name: n.into(),
            display_name: n.into(),
            data_type: t.into(),
            description: None,
            is_required: false,
            requires_review: false,
            synonyms: vec![],
            depends_on: vec![],
            enum_values: None,
            format: None,
            title: None,
            items: None,
        };
        vec![f("invoice_number", "string"), f("total", "number")]
    }

    #[test]
    fn the_schema_asks_every_field_with_its_quote() {
        let s = answer_schema(&fields());
        let props = &s["properties"]["fields"]["properties"];
        assert_eq!(
            props["total"]["properties"]["value"]["type"],
            json!(["number", "null"])
        );
        assert_eq!(
            s["properties"]["fields"]["required"],
            json!(["invoice_number", "total"])
        );
        let m = messages(&fields(), "Total: 5");
        assert!(m[1]["content"]
            .as_str()
            .unwrap()
            .contains("total (total): a JSON number"));
    }

    #[test]
    fn answers_are_checked_and_wrong_types_become_notes() {
        let ok = parse(
            r#"{"fields": {"invoice_number": {"value": "A-1", "quote": "No. A-1"}, "total": {"value": "12", "quote": "12"}}}"#,
            &fields(),
        )
        .unwrap();
        assert_eq!(ok.field("invoice_number").unwrap().value, json!("A-1"));
        assert!(ok.field("total").is_none());
        assert!(ok.notes["total"].as_str().unwrap().contains("number field"));
        assert!(parse("not json", &fields()).is_err());
        assert!(parse(
            r#"{"fields": {"colour": {"value": 1, "quote": null}}}"#,
            &fields()
        )
        .is_err());
        assert!(parse(r#"{"total": 5}"#, &fields()).is_err());
    }

    #[test]
    fn quotes_are_found_exactly_then_spaced_then_fuzzily() {
        let text = "ACME GmbH\nInvoice number | 30064443\nTotal  due | € 4.904,94";
        assert_eq!(find_quote(text, "30064443").0, QuoteMatch::Exact);
        let (m, line) = find_quote(text, "Total due | € 4.904,94");
        assert_eq!(
            (m, line.as_deref()),
            (QuoteMatch::Spaced, Some("Total  due | € 4.904,94"))
        );
        assert!(matches!(
            find_quote(text, "Invoice numbr 30064443").0,
            QuoteMatch::Fuzzy(_)
        ));
        assert_eq!(find_quote(text, "nowhere at all").0, QuoteMatch::Missing);
    }

    #[test]
    fn long_documents_are_cut_into_chunks_of_whole_pages() {
        let page = "x".repeat(CHUNK_CHARS / 2 - 100);
        let c = chunks(&[page.clone(), page.clone(), page.clone()]);
        assert_eq!(c.len(), 2);
        assert!(c[0].contains("--- page 1 ---") && c[0].contains("--- page 2 ---"));
        assert!(c[1].contains("--- page 3 ---"));
        let merged = merge(vec![
            parse(r#"{"fields": {"total": {"value": 1, "quote": "1"}}}"#, &fields()).unwrap(),
            parse(r#"{"fields": {"total": {"value": 2, "quote": "2"}, "invoice_number": {"value": "B", "quote": "B"}}}"#, &fields()).unwrap(),
        ]);
        assert_eq!(merged.field("total").unwrap().value, json!(1));
        assert_eq!(merged.field("invoice_number").unwrap().value, json!("B"));
    }
}
