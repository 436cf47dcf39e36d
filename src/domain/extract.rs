//! The built-in `rules` extractor: labelled values in text and Markdown, CSV, and JSON.

use super::labels::{self, fold_caption};
use super::reading;
use super::schema::FieldDef;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// What the extractor needs to know of a field.
#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub display_name: String,
    pub data_type: String,
    pub synonyms: Vec<String>,
    /// An array field's sub-fields: the columns of the table it is read from.
    pub items: Vec<FieldSpec>,
}

impl From<&FieldDef> for FieldSpec {
    fn from(f: &FieldDef) -> Self {
        FieldSpec {
            name: f.field_name.clone(),
            display_name: f.display_name.clone(),
            data_type: f.data_type.clone(),
            synonyms: f.synonyms.clone(),
            items: f.items.iter().flatten().map(FieldSpec::from).collect(),
        }
    }
}

impl FieldSpec {
    /// A table's field: an array whose elements have sub-fields.
    pub fn is_table(&self) -> bool {
        self.data_type == "array" && !self.items.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub value: Value,
    pub confidence: f64,
    /// The line it was read from.
    pub source_text: String,
    /// The value as the document prints it (`€ 4.904,94` for 4904.94).
    pub printed: String,
    /// What a reviewer should know of how it was read.
    pub note: Option<String>,
    /// An array read from a table: each element's row as the text gives it, in order.
    pub rows: Vec<String>,
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
    /// folded label → (field index, confidence)
    exact: HashMap<String, (usize, f64)>,
    /// Labels the lexicon knows for things no field asks for (`Net total` when only a total
    /// is wanted): a label that is one of these is not read as a field's.
    other: HashSet<String>,
    names: Vec<(String, usize)>,
    /// Per table field (by index), the matcher of its columns.
    tables: Vec<(usize, Matcher)>,
}

/// Bare document-type words that label an invoice's number (`Invoice 2024-001`,
/// `Rechnung: 17`) but also stand as the document's title: they count only beside a value
/// with a digit in it.
const TITLE_WORDS: [&str; 4] = ["invoice", "rechnung", "facture", "factuur"];

/// Most words a label has.
const LABEL_WORDS: usize = 8;

/// A label found in the text.
#[derive(Debug, Clone, Copy)]
struct Hit {
    field: usize,
    confidence: f64,
    /// A title word: its value must hold a digit.
    title: bool,
}

/// What a label names.
enum Named {
    Field(Hit),
    /// Something the lexicon knows that no field asks for.
    Other,
    Unknown,
}

impl Matcher {
    pub fn new(fields: &[FieldSpec]) -> Self {
        let mut exact = HashMap::new();
        let mut names = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            for s in &f.synonyms {
                exact.entry(fold_caption(s)).or_insert((i, 0.85));
            }
        }
        // Labels of the same meaning in other words and languages: after the Spec's own
        // synonyms, before its names, never displacing either.
        for (i, f) in fields.iter().enumerate() {
            let mut own = vec![f.name.replace('_', " "), f.display_name.clone()];
            own.extend(f.synonyms.iter().cloned());
            for l in labels::related(&own) {
                exact.entry(l).or_insert((i, 0.8));
            }
        }
        for (i, f) in fields.iter().enumerate() {
            for n in [&f.name, &f.display_name] {
                let folded = fold_caption(n);
                exact.insert(folded.clone(), (i, 0.95));
                names.push((folded, i));
            }
        }
        let other = labels::all().filter(|l| !exact.contains_key(l)).collect();
        let tables = fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_table())
            .map(|(i, f)| (i, Matcher::new(&f.items)))
            .collect();
        Matcher {
            exact,
            other,
            names,
            tables,
        }
    }

    pub(super) fn best(&self, label: &str) -> Option<(usize, f64)> {
        self.hit(label).map(|h| (h.field, h.confidence))
    }

    /// The field a label names: the whole label, else the label without what it says in
    /// parentheses and the currency it names (`Total (EUR)`, `Summe Brutto (inkl. USt.)`).
    fn named(&self, label: &str) -> Named {
        let title = |f: &str| TITLE_WORDS.contains(&f);
        let look = |folded: &str| match self.exact.get(folded) {
            Some((i, c)) => Named::Field(Hit {
                field: *i,
                confidence: *c,
                title: title(folded),
            }),
            None if self.other.contains(folded) => Named::Other,
            None => Named::Unknown,
        };
        let folded = fold_caption(label);
        if folded.is_empty() || folded.len() > MAX_LABEL {
            return Named::Unknown;
        }
        match look(&folded) {
            Named::Unknown => {}
            found => return found,
        }
        let bare = fold_caption(&bare_label(label));
        if bare.is_empty() || bare == folded {
            return Named::Unknown;
        }
        look(&bare)
    }

    fn hit(&self, label: &str) -> Option<Hit> {
        match self.named(label) {
            Named::Field(hit) => return Some(hit),
            Named::Other => return None,
            Named::Unknown => {}
        }
        // A known label followed by words of its own (`Total for this invoice`, `TOTAL AMOUNT
        // DUE ON August 3, 2014`): the longest known beginning decides, and a beginning that
        // names something else (`Total net`) names nothing here.
        let bare = bare_label(label);
        let words: Vec<&str> = bare.split_whitespace().collect();
        if (2..=LABEL_WORDS).contains(&words.len()) {
            for n in (1..words.len()).rev() {
                match self.named(&words[..n].join(" ")) {
                    Named::Field(hit) if !hit.title => {
                        return Some(Hit {
                            confidence: hit.confidence.min(0.7),
                            ..hit
                        })
                    }
                    Named::Field(_) | Named::Other => return None,
                    Named::Unknown => {}
                }
            }
        }
        let folded = fold_caption(label);
        if folded.is_empty() || folded.len() > MAX_LABEL {
            return None;
        }
        self.names
            .iter()
            .map(|(n, i)| (similarity(&folded, n), *i))
            .filter(|(s, _)| *s >= 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| Hit {
                field: i,
                confidence: 0.6,
                title: false,
            })
    }
}

/// A cell that holds an amount and nothing else (but its currency).
fn amount_cell(cell: &str) -> bool {
    reading::number(cell).is_some() && !without_currency(cell).chars().any(char::is_alphabetic)
}

/// A label without what it says in parentheses, the currency it names and the words that
/// introduce that (`in`, `en`).
fn bare_label(label: &str) -> String {
    let mut depth = 0usize;
    let outside: String = label
        .chars()
        .map(|c| match c {
            '(' | '[' => {
                depth += 1;
                ' '
            }
            ')' | ']' => {
                depth = depth.saturating_sub(1);
                ' '
            }
            _ if depth > 0 => ' ',
            c => c,
        })
        .collect();
    without_currency(&outside)
}

/// A label without the currency it names and the words that introduce it (`in`, `en`).
fn without_currency(label: &str) -> String {
    label
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '[' || c == ']')
        .filter(|w| {
            !w.is_empty()
                && reading::currency_code(w).is_none()
                && !["in", "en"].contains(&w.to_lowercase().as_str())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Types a textual value when the text is unambiguous, else keeps it as printed: a number
/// (`€ 4.904,94` → 4904.94), an integer, a boolean, a date as `YYYY-MM-DD` (`7. Mai 2014`), a
/// currency as its ISO 4217 code (`€` → `EUR`). See `reading` for what counts as ambiguous.
pub fn typed_value(raw: &str, data_type: &str) -> Value {
    typed_value_in(raw, data_type, false)
}

/// `typed_value` for a document whose convention puts the day first (its language says so).
pub fn typed_value_in(raw: &str, data_type: &str, day_first: bool) -> Value {
    let t = raw.trim();
    let typed = match data_type {
        "number" => reading::number(t).map(super::policy::number_value),
        // Below 2^53 an f64 holds every integer exactly.
        "integer" => reading::number(t)
            .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
            .map(|x| Value::from(x as i64)),
        "boolean" if t.eq_ignore_ascii_case("true") => Some(Value::Bool(true)),
        "boolean" if t.eq_ignore_ascii_case("false") => Some(Value::Bool(false)),
        "date" => {
            reading::date(t, day_first).map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
        }
        "currency" if t.chars().count() <= 40 => reading::currency_code(t)
            .or_else(|| reading::currency_in(t))
            .map(|c| Value::String(c.into())),
        _ => None,
    };
    typed.unwrap_or_else(|| Value::String(t.to_string()))
}

/// Whether a value has its field's type (a text that could not be typed has not).
fn well_typed(v: &Value, data_type: &str) -> bool {
    match data_type {
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "date" => v
            .as_str()
            .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
        "currency" => v
            .as_str()
            .is_some_and(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())),
        _ => true,
    }
}

pub(super) fn clean_label(s: &str) -> &str {
    s.trim()
        .trim_end_matches(':')
        .trim_start_matches(['#', '-', '*', '>', ' '])
        .trim_matches(['*', '_', ' ', '\t'])
}

/// A value without markup and the signs that introduce it (`# BLR_…`, `: 42`).
pub(super) fn clean_value(s: &str) -> &str {
    s.trim()
        .trim_matches(['*', '_'])
        .trim_start_matches(['#', ':'])
        .trim()
}

/// The cells of a line: a Markdown table row's cells, a layout line's cells (` | ` between
/// text that stands apart on the page), else the line itself. A table's rule row has none.
pub(super) fn cells_of(line: &str) -> Vec<&str> {
    let t = line.trim();
    if t.is_empty() {
        return Vec::new();
    }
    let cells: Vec<&str> = if t.starts_with('|') {
        t.trim_matches('|').split('|').map(str::trim).collect()
    } else if t.contains(" | ") {
        t.split(" | ").map(str::trim).collect()
    } else {
        vec![t]
    };
    if cells
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
    {
        return Vec::new();
    }
    cells
}

/// Splits a cell into (label, value) when it has a labelled form: `Label: value` or
/// `Label - value`.
fn labelled(cell: &str) -> Option<(&str, &str)> {
    let t = cell.trim();
    if let Some((l, v)) = t.split_once(':') {
        return Some((clean_label(l), clean_value(v)));
    }
    if let Some((l, v)) = t.split_once(" - ") {
        return Some((clean_label(l), clean_value(v)));
    }
    None
}

/// Where a value stood relative to its label: beside it wins over below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Below,
    Beside,
}

struct Candidate {
    found: Extracted,
    well_typed: bool,
    place: Place,
}

struct Collector<'a> {
    fields: &'a [FieldSpec],
    matcher: &'a Matcher,
    /// Whether `03/04/2024` is the 3rd of April here.
    day_first: bool,
    out: HashMap<String, Candidate>,
}

impl Collector<'_> {
    /// Offers a labelled value. The first offer for a field stands unless a later one has the
    /// field's type where it had not, or stood beside its label where it stood below one.
    fn offer(&mut self, label: &str, value: Value, line: &str) -> bool {
        match self.matcher.hit(label) {
            Some(hit) => self.offer_hit(hit, value, line, Place::Beside),
            None => false,
        }
    }

    fn offer_hit(&mut self, hit: Hit, value: Value, line: &str, place: Place) -> bool {
        if value.is_null() || value.as_str().is_some_and(|s| s.is_empty()) {
            return false;
        }
        if hit.title
            && !value
                .as_str()
                .is_some_and(|s| s.bytes().any(|b| b.is_ascii_digit()))
        {
            return false;
        }
        let f = &self.fields[hit.field];
        // An array or an object is read whole (a table, a JSON value), never from one label.
        if matches!(f.data_type.as_str(), "array" | "object") {
            return false;
        }
        let (value, printed) = match value {
            Value::String(s) => (typed_value_in(&s, &f.data_type, self.day_first), s),
            other => {
                let printed = other.to_string();
                (other, printed)
            }
        };
        let well_typed = well_typed(&value, &f.data_type);
        if let Some(old) = self.out.get(&f.name) {
            if (old.well_typed, old.place) >= (well_typed, place) {
                return false;
            }
        }
        let confidence = match place {
            Place::Beside => hit.confidence,
            Place::Below => hit.confidence - 0.1,
        };
        let source_text: String = line.trim().chars().take(500).collect();
        self.out.insert(
            f.name.clone(),
            Candidate {
                found: Extracted {
                    value,
                    confidence,
                    source_text,
                    printed,
                    note: None,
                    rows: Vec::new(),
                },
                well_typed,
                place,
            },
        );
        true
    }

    /// `Invoice No. 2024-001`, `Total EUR 1.234,50`: a cell that starts with a label and goes
    /// on with a value, without a colon. Only a value of the field's type counts (for a text
    /// field, a word with a digit in it: where a value without a separator ends is unknown, and
    /// an identifier is one word), so prose that starts with a label's word does not.
    fn offer_unmarked(&mut self, cell: &str, line: &str) -> bool {
        // Word starts; `n°562044387` and `#42` start a word after the sign too.
        let starts: Vec<usize> = cell
            .char_indices()
            .filter(|(i, c)| {
                let before = cell[..*i].chars().next_back();
                !c.is_whitespace()
                    && (*i == 0
                        || before.is_some_and(|b| b.is_whitespace() || b == '°' || b == '#'))
            })
            .map(|(i, _)| i)
            .collect();
        for n in (1..starts.len().min(LABEL_WORDS)).rev() {
            let (label, rest) = cell.split_at(starts[n]);
            let hit = match self.matcher.named(clean_label(label)) {
                Named::Field(hit) => hit,
                Named::Other => return false,
                Named::Unknown => continue,
            };
            let f = &self.fields[hit.field];
            let rest = clean_value(rest.trim_start_matches([':', '.', ' ']));
            let (value, fits) = match f.data_type.as_str() {
                "string" => {
                    let word = rest.split_whitespace().next().unwrap_or("");
                    (word, word.bytes().any(|b| b.is_ascii_digit()))
                }
                t => (
                    rest,
                    well_typed(&typed_value_in(rest, t, self.day_first), t),
                ),
            };
            if fits {
                if f.data_type == "string" {
                    self.offer_dated(&rest[value.len()..], line);
                }
                return self.offer_hit(hit, Value::String(value.to_string()), line, Place::Beside);
            }
        }
        false
    }

    /// Whether a cell is a label rather than a value: it ends with a colon, or it is a label the
    /// fields or the lexicon know (`Invoice Date: | Due Date:` holds no date).
    fn is_label(&self, cell: &str) -> bool {
        let t = cell.trim();
        t.ends_with(':') || !matches!(self.matcher.named(clean_label(t)), Named::Unknown)
    }

    /// `Rechnung Nr. 17 vom 3.4.2024`, `Facture n° 88 du 2 juillet 2015`, `Invoice 12 of
    /// 3 May 2024`: a number followed by the date it was issued, offered to the field that an
    /// invoice's date label names (below any labelled date).
    fn offer_dated(&mut self, after: &str, line: &str) {
        const OF: [&str; 8] = ["of", "dated", "from", "vom", "du", "le", "van", "d.d."];
        let after = after.trim_start();
        let Some((word, date)) = after.split_once(char::is_whitespace) else {
            return;
        };
        if !OF.contains(&word.to_lowercase().as_str()) {
            return;
        }
        if let Named::Field(hit) = self.matcher.named("invoice date") {
            if reading::date(date, self.day_first).is_some() {
                self.offer_hit(hit, Value::String(date.to_string()), line, Place::Below);
            }
        }
    }

    /// Reads a text: labelled lines and cells, labels with their values beside them, a label
    /// alone with its value on the next line, and a table header over its row.
    fn text(&mut self, text: &str) {
        let lines: Vec<(&str, Vec<&str>)> = text
            .lines()
            .map(|l| (l, cells_of(l)))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        for (k, (line, cells)) in lines.iter().enumerate() {
            let below = lines.get(k + 1);
            // Cells that are a label and nothing else.
            let alone: Vec<Option<Hit>> = cells
                .iter()
                .map(|c| {
                    if labelled(c).is_some_and(|(_, v)| !v.is_empty()) {
                        return None;
                    }
                    match self.matcher.named(clean_label(c)) {
                        Named::Field(hit) if !hit.title => Some(hit),
                        _ => None,
                    }
                })
                .collect();
            // A header row: labels over the values of the row below, column by column.
            if alone.iter().flatten().count() >= 2 || (cells.len() == 1 && alone[0].is_some()) {
                if let Some((next, values)) = below {
                    if values.len() == cells.len() {
                        for (hit, v) in alone.iter().zip(values) {
                            if let Some(hit) = hit {
                                self.offer_hit(
                                    *hit,
                                    Value::String(clean_value(v).to_string()),
                                    next,
                                    Place::Below,
                                );
                            }
                        }
                    } else if cells.len() == 1 {
                        let v = clean_value(values[0]);
                        if let Some(hit) = alone[0] {
                            self.offer_hit(hit, Value::String(v.to_string()), next, Place::Below);
                        }
                    }
                }
                continue;
            }
            let mut i = 0;
            while i < cells.len() {
                if let Some((l, v)) = labelled(cells[i]).filter(|(_, v)| !v.is_empty()) {
                    self.offer(l, Value::String(v.to_string()), line);
                    i += 1;
                } else if self.offer_unmarked(cells[i], line) {
                    i += 1;
                } else if i + 1 < cells.len()
                    && !self.is_label(cells[i + 1])
                    && self.matcher.hit(clean_label(cells[i])).is_some()
                {
                    // A label before a row of amounts (`Total | 24.99 | 5.00 | 29.99`) is a
                    // table's row: its last column is the row's total.
                    let numbers = cells[i + 1..].iter().take_while(|c| amount_cell(c)).count();
                    let value = cells[i + numbers.max(1)];
                    self.offer(
                        clean_label(cells[i]),
                        Value::String(clean_value(value).to_string()),
                        line,
                    );
                    i += 1 + numbers.max(1);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// A currency field that no label named: the currency printed with an amount the
    /// document's labels gave, else the one currency the whole text names.
    fn currency_from_amounts(&mut self, text: &str) {
        for f in self.fields.iter().filter(|f| f.data_type == "currency") {
            if self.out.contains_key(&f.name) {
                continue;
            }
            let from_amount = self.fields.iter().find_map(|other| {
                let c = self
                    .out
                    .get(&other.name)
                    .filter(|c| c.found.value.is_number())?;
                reading::currency_in(&c.found.source_text)
                    .map(|code| (code, c.found.source_text.clone(), 0.7))
            });
            let found = from_amount.or_else(|| {
                let code = reading::currency_in(text)?;
                let line = text
                    .lines()
                    .find(|l| reading::currency_in(l) == Some(code))?;
                Some((code, line.trim().chars().take(500).collect(), 0.6))
            });
            if let Some((code, source_text, confidence)) = found {
                self.out.insert(
                    f.name.clone(),
                    Candidate {
                        found: Extracted {
                            value: Value::String(code.into()),
                            confidence,
                            source_text,
                            printed: code.into(),
                            note: None,
                            rows: Vec::new(),
                        },
                        well_typed: true,
                        place: Place::Below,
                    },
                );
            }
        }
    }

    /// A table read for the field at `field`: it stands over anything else offered to it.
    fn table(&mut self, field: usize, t: super::tables::Table) {
        let name = self.fields[field].name.clone();
        self.out.insert(
            name,
            Candidate {
                found: Extracted {
                    value: Value::Array(t.elements),
                    confidence: t.confidence,
                    printed: t.header.clone(),
                    source_text: t.header,
                    note: None,
                    rows: t.rows,
                },
                well_typed: true,
                place: Place::Beside,
            },
        );
    }

    /// Each table field's table in a text.
    fn text_tables(&mut self, text: &str) {
        let matcher = self.matcher;
        for (i, columns) in &matcher.tables {
            let found = super::tables::from_text(
                text,
                &self.fields[*i].items,
                columns,
                cells_of,
                |c| !matches!(matcher.named(clean_label(c)), Named::Unknown),
                self.day_first,
            );
            if let Some(t) = found {
                self.table(*i, t);
            }
        }
    }

    fn finish(self) -> HashMap<String, Extracted> {
        self.out.into_iter().map(|(k, c)| (k, c.found)).collect()
    }
}

/// Extracts what it can; `Err` when the document cannot be read at all.
pub fn extract(
    content: &[u8],
    mime: &str,
    fields: &[FieldSpec],
) -> Result<HashMap<String, Extracted>, String> {
    extract_with(content, mime, fields, &Matcher::new(fields), None)
}

/// `extract` with a matcher built beforehand for these fields, for a document in `language`
/// (ISO 639-1) where it is known: outside English, numeric dates put the day first.
pub fn extract_with(
    content: &[u8],
    mime: &str,
    fields: &[FieldSpec],
    matcher: &Matcher,
    language: Option<&str>,
) -> Result<HashMap<String, Extracted>, String> {
    let text = std::str::from_utf8(content)
        .map_err(|e| format!("the document is not valid UTF-8 ({e})"))?;
    let mut c = Collector {
        fields,
        matcher,
        day_first: language.is_some_and(|l| l != "en"),
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
                    _ => return Ok(c.finish()),
                },
                _ => return Ok(c.finish()),
            };
            for (k, val) in obj {
                let line = format!("\"{k}\": {val}");
                match val {
                    Value::Object(_) | Value::Array(_) | Value::Null => {}
                    Value::Number(_) | Value::Bool(_) => {
                        c.offer(k, val.clone(), &line);
                    }
                    Value::String(s) => {
                        c.offer(k, Value::String(s.trim().to_string()), &line);
                    }
                }
            }
            // A list of objects under a table field's name (or synonym) is its table.
            for (i, columns) in &matcher.tables {
                let found = obj.iter().find_map(|(k, val)| match val {
                    Value::Array(list) if matcher.best(k).is_some_and(|(f, _)| f == *i) => {
                        super::tables::from_json(k, list, &fields[*i].items, columns, c.day_first)
                    }
                    _ => None,
                });
                if let Some(t) = found {
                    c.table(*i, t);
                }
            }
            // One level down, for documents that group their fields.
            for val in obj.values() {
                if let Value::Object(inner) = val {
                    for (k, v) in inner {
                        let line = format!("\"{k}\": {v}");
                        match v {
                            Value::String(s) => {
                                c.offer(k, Value::String(s.trim().to_string()), &line);
                            }
                            Value::Number(_) | Value::Bool(_) => {
                                c.offer(k, v.clone(), &line);
                            }
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
            // Every record under a header that names a table's columns is an element of it;
            // such a CSV is a table, not a list of labels and values.
            let tables: Vec<(usize, super::tables::Table)> = matcher
                .tables
                .iter()
                .filter_map(|(i, columns)| {
                    super::tables::from_records(&rows, &fields[*i].items, columns, c.day_first)
                        .map(|t| (*i, t))
                })
                .collect();
            let key_value = tables.is_empty()
                && rows.iter().all(|r| r.len() <= 2)
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
            for (i, t) in tables {
                c.table(i, t);
            }
        }
        _ => {
            c.text(text);
            c.text_tables(text);
            c.currency_from_amounts(text);
        }
    }
    Ok(c.finish())
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
            items: Vec::new(),
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
            json!(1234.5),
            "grouped numbers are typed"
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
        assert_eq!(out["total"].value, json!(1000));
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
        assert_eq!(typed_value("1,5", "number"), json!(1.5));
        assert_eq!(typed_value("1,939", "number"), json!("1,939"));
        assert_eq!(typed_value("€ 4.904,94", "number"), json!(4904.94));
        assert_eq!(typed_value("1.000", "integer"), json!("1.000"));
        assert_eq!(typed_value("1.000.000", "integer"), json!(1_000_000));
        assert_eq!(typed_value("7. Mai 2014", "date"), json!("2014-05-07"));
        assert_eq!(typed_value("03/04/2024", "date"), json!("03/04/2024"));
        assert_eq!(typed_value("€", "currency"), json!("EUR"));
        assert_eq!(typed_value("Rs", "currency"), json!("INR"));
        assert_eq!(typed_value("€ or $", "currency"), json!("€ or $"));
        assert_eq!(typed_value("yes", "boolean"), json!("yes"));
        assert_eq!(typed_value("12", "string"), json!("12"));
    }

    fn invoice_specs() -> Vec<FieldSpec> {
        let f = |n: &str, t: &str| FieldSpec {
            name: n.into(),
            display_name: n.replace('_', " "),
            data_type: t.into(),
            synonyms: Vec::new(),
            items: Vec::new(),
        };
        vec![
            f("invoice_number", "string"),
            f("invoice_date", "date"),
            f("total", "number"),
            f("currency", "currency"),
        ]
    }

    fn read(doc: &str) -> HashMap<String, Value> {
        extract(doc.as_bytes(), "text/plain", &invoice_specs())
            .unwrap()
            .into_iter()
            .map(|(k, x)| (k, x.value))
            .collect()
    }

    #[test]
    fn german_labels_abbreviations_and_printed_forms_are_typed() {
        let out = read(
            "Muster GmbH | Rechnung\nRechnungsnr. | RE-2024-117\nDatum: 7. Mai 2014\n\
             Pos | Beschreibung | Betrag\n1 | Beratung | 4.122,64\n\
             Gesamtbetrag | € 4.904,94\n",
        );
        assert_eq!(out["invoice_number"], json!("RE-2024-117"));
        assert_eq!(out["invoice_date"], json!("2014-05-07"));
        assert_eq!(out["total"], json!(4904.94));
        assert_eq!(
            out["currency"],
            json!("EUR"),
            "the currency printed with the total"
        );
    }

    #[test]
    fn french_and_dutch_labels_and_labels_without_colons() {
        let fr =
            read("FACTURE\nFacture N° F-889\nDate de facture 14/09/2024\nTotal TTC 1 234,50 €\n");
        assert_eq!(fr["invoice_number"], json!("F-889"));
        assert_eq!(fr["invoice_date"], json!("2024-09-14"));
        assert_eq!(fr["total"], json!(1234.5));
        assert_eq!(fr["currency"], json!("EUR"));
        let nl =
            read("Factuurnummer: 2021/0042\nFactuurdatum: 5 maart 2021\nTe betalen: EUR 99,95\n");
        assert_eq!(nl["invoice_number"], json!("2021/0042"));
        assert_eq!(nl["invoice_date"], json!("2021-03-05"));
        assert_eq!(nl["total"], json!(99.95));
        assert_eq!(nl["currency"], json!("EUR"));
    }

    #[test]
    fn a_label_above_its_value_and_a_header_above_its_row() {
        let out = read(
            "INVOICE\nACME Corp\nInvoice No. | Invoice Date | Currency\nINV-7 | Sep 3, 2014 | USD\n\
             Amount due\n$1,939.00\n",
        );
        assert_eq!(out["invoice_number"], json!("INV-7"));
        assert_eq!(out["invoice_date"], json!("2014-09-03"));
        assert_eq!(out["currency"], json!("USD"));
        assert_eq!(out["total"], json!(1939));
    }

    #[test]
    fn a_total_beside_its_label_wins_over_a_line_items_column_and_untyped_text() {
        let out = read(
            "Invoice: 12\nDescription | Qty | Total\nWidget | 2 | 50.00\nTotal: see below\nTotal | 119.00 EUR\n",
        );
        assert_eq!(out["total"], json!(119), "a typed value beside its label");
        assert_eq!(out["invoice_number"], json!("12"));
        let title = read("INVOICE\nACME Corp\nInvoice: ACME\n");
        assert!(
            !title.contains_key("invoice_number"),
            "a title is not a number: {title:?}"
        );
    }

    #[test]
    fn ambiguous_text_stays_as_printed_and_two_currencies_name_none() {
        let out = read("Invoice Date: 03/04/2024\nTotal: 1,939\nPaid in € or $\n");
        assert_eq!(out["invoice_date"], json!("03/04/2024"));
        assert_eq!(out["total"], json!("1,939"));
        assert!(!out.contains_key("currency"));
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
