//! Tables read into array fields: a header row whose cells name the field's sub-fields, then
//! the rows beneath it, one element each. The same reading serves a text's tables (Markdown, a
//! PDF's layout lines), a CSV's records and a JSON document's list of objects.

use super::extract::{clean_label, clean_value, typed_value_in, FieldSpec, Matcher};
use serde_json::{Map, Value};

/// Most elements one table gives (a CSV of a million rows is not one field's value).
pub const MAX_ROWS: usize = 10_000;

/// A table read for one array field.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// One object per row, every sub-field present (null where the row has no value for it).
    pub elements: Vec<Value>,
    /// The surest of the header's column labels, at most: the weakest of them.
    pub confidence: f64,
    /// The header as the text gives it.
    pub header: String,
    /// Each element's row as the text gives it.
    pub rows: Vec<String>,
}

/// Which sub-field each column holds, and how surely the header named it.
struct Header {
    columns: Vec<Option<usize>>,
    matched: usize,
    confidence: f64,
}

/// A header: at least two of its cells name distinct sub-fields (one, when the field has one).
fn header<S: AsRef<str>>(cells: &[S], items: &[FieldSpec], labels: &Matcher) -> Option<Header> {
    let mut taken = vec![false; items.len()];
    let mut confidence: f64 = 1.0;
    let columns: Vec<Option<usize>> = cells
        .iter()
        .map(|c| {
            let (i, conf) = labels.best(clean_label(c.as_ref()))?;
            if taken[i] {
                return None;
            }
            taken[i] = true;
            confidence = confidence.min(conf);
            Some(i)
        })
        .collect();
    let matched = columns.iter().flatten().count();
    (matched >= items.len().min(2)).then_some(Header {
        columns,
        matched,
        confidence,
    })
}

/// A row's element, or `None` when none of its columns holds a value.
fn element<S: AsRef<str>>(
    cells: &[S],
    h: &Header,
    items: &[FieldSpec],
    day_first: bool,
) -> Option<Value> {
    let mut obj: Map<String, Value> = items
        .iter()
        .map(|s| (s.name.clone(), Value::Null))
        .collect();
    let mut any = false;
    for (cell, col) in cells.iter().zip(&h.columns) {
        let Some(i) = col else { continue };
        let v = clean_value(cell.as_ref());
        if v.is_empty() {
            continue;
        }
        any = true;
        obj.insert(
            items[*i].name.clone(),
            typed_value_in(v, &items[*i].data_type, day_first),
        );
    }
    any.then_some(Value::Object(obj))
}

fn better(a: &Table, matched_a: usize, b: &Option<(Table, usize)>) -> bool {
    match b {
        None => true,
        Some((b, matched_b)) => (matched_a, a.elements.len()) > (*matched_b, b.elements.len()),
    }
}

fn cut(s: &str) -> String {
    s.trim().chars().take(500).collect()
}

/// A CSV record as CSV text, quoted where it must be.
fn record(r: &[String]) -> String {
    let bytes = super::csv_out::lines(&[r.to_vec()]).unwrap_or_default();
    cut(&String::from_utf8_lossy(&bytes))
}

/// The best table of a text for a field: the header naming the most columns (then the one
/// with the most rows, then the first). A table runs while its lines have the header's number
/// of cells; a blank line ends it, a Markdown rule row is passed over, and so is a row without
/// any value. A row that carries a label of its own (`is_label`: `Total`, `VAT`) with a column
/// left empty is a sum beneath the table, not an element of it, and ends it.
pub fn from_text(
    text: &str,
    items: &[FieldSpec],
    labels: &Matcher,
    cells_of: impl Fn(&str) -> Vec<&str>,
    is_label: impl Fn(&str) -> bool,
    day_first: bool,
) -> Option<Table> {
    let lines: Vec<(&str, Vec<&str>)> = text.lines().map(|l| (l, cells_of(l))).collect();
    let mut best: Option<(Table, usize)> = None;
    let mut k = 0;
    while k < lines.len() {
        let (line, cells) = &lines[k];
        k += 1;
        if cells.is_empty() {
            continue;
        }
        let Some(h) = header(cells, items, labels) else {
            continue;
        };
        let mut table = Table {
            elements: Vec::new(),
            confidence: h.confidence,
            header: cut(line),
            rows: Vec::new(),
        };
        // The lines under a header are not read again as headers of another table: each line
        // is looked at at most twice, so a text of thousands of header-like lines costs its
        // length, not its square.
        let mut j = k;
        while let Some((row, cells)) = lines.get(j) {
            if row.trim().is_empty() || table.elements.len() >= MAX_ROWS {
                break;
            }
            if !cells.is_empty() {
                if cells.len() != h.columns.len() {
                    break;
                }
                let empty_column = cells
                    .iter()
                    .zip(&h.columns)
                    .any(|(c, col)| col.is_some() && clean_value(c).is_empty());
                if empty_column && cells.iter().any(|c| is_label(c)) {
                    break;
                }
                if let Some(e) = element(cells, &h, items, day_first) {
                    table.elements.push(e);
                    table.rows.push(cut(row));
                }
            }
            j += 1;
        }
        k = j;
        if !table.elements.is_empty() && better(&table, h.matched, &best) {
            best = Some((table, h.matched));
        }
    }
    best.map(|(t, _)| t)
}

/// A CSV's records as a table: its first record is the header.
pub fn from_records(
    records: &[Vec<String>],
    items: &[FieldSpec],
    labels: &Matcher,
    day_first: bool,
) -> Option<Table> {
    let (head, body) = records.split_first()?;
    let h = header(head, items, labels)?;
    let mut table = Table {
        elements: Vec::new(),
        confidence: h.confidence,
        header: record(head),
        rows: Vec::new(),
    };
    for r in body.iter().take(MAX_ROWS) {
        if let Some(e) = element(r, &h, items, day_first) {
            table.elements.push(e);
            table.rows.push(record(r));
        }
    }
    (!table.elements.is_empty()).then_some(table)
}

/// A JSON list of objects as a table: each object's keys name its sub-fields.
pub fn from_json(
    key: &str,
    list: &[Value],
    items: &[FieldSpec],
    labels: &Matcher,
    day_first: bool,
) -> Option<Table> {
    let mut table = Table {
        elements: Vec::new(),
        confidence: 1.0,
        header: cut(&format!("\"{key}\"")),
        rows: Vec::new(),
    };
    for v in list.iter().take(MAX_ROWS) {
        let Value::Object(obj) = v else { continue };
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let Some(h) = header(&keys, items, labels) else {
            continue;
        };
        let cells: Vec<String> = obj
            .values()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        if let Some(e) = element(&cells, &h, items, day_first) {
            table.confidence = table.confidence.min(h.confidence);
            table.elements.push(e);
            table.rows.push(cut(&v.to_string()));
        }
    }
    (!table.elements.is_empty()).then_some(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::extract;
    use serde_json::json;

    fn lines_spec() -> FieldSpec {
        let s = |n: &str, t: &str, syn: &[&str]| FieldSpec {
            name: n.into(),
            display_name: extract_display(n),
            data_type: t.into(),
            synonyms: syn.iter().map(|x| x.to_string()).collect(),
            items: Vec::new(),
        };
        FieldSpec {
            name: "lines".into(),
            display_name: "Lines".into(),
            data_type: "array".into(),
            synonyms: Vec::new(),
            items: vec![
                s("description", "string", &["Item"]),
                s("quantity", "number", &["Qty"]),
                s("unit_price", "number", &[]),
                s("amount", "number", &[]),
            ],
        }
    }

    fn extract_display(n: &str) -> String {
        crate::domain::schema::default_display_name(n)
    }

    fn read(doc: &str, mime: &str) -> Option<extract::Extracted> {
        let specs = vec![lines_spec()];
        extract::extract(doc.as_bytes(), mime, &specs)
            .unwrap()
            .remove("lines")
    }

    #[test]
    fn a_markdown_table_becomes_one_element_per_row() {
        let doc = "# Invoice 7\n\n| Item | Qty | Unit price | Amount |\n|---|---|---|---|\n\
                   | Widget | 2 | 12.50 | 25.00 |\n| Gadget, large | 1 | 1.234,50 | 1.234,50 |\n\
                   | | | Total | 1.259,50 |\n";
        let x = read(doc, "text/markdown").expect("a table");
        assert_eq!(
            x.value,
            json!([
                {"description": "Widget", "quantity": 2, "unit_price": 12.5, "amount": 25},
                {"description": "Gadget, large", "quantity": 1, "unit_price": 1234.5, "amount": 1234.5}
            ]),
            "the total row beneath is not an element"
        );
        assert_eq!(x.rows.len(), 2);
        assert_eq!(x.rows[1], "| Gadget, large | 1 | 1.234,50 | 1.234,50 |");
        assert_eq!(x.confidence, 0.85, "the weakest column label (a synonym)");
    }

    #[test]
    fn layout_lines_of_a_pdf_read_as_a_table_until_the_cells_stop_fitting() {
        let doc = "ACME GmbH | Invoice\nDescription | Quantity | Unit Price | Amount\n\
                   Consulting | 3 | 100.00 | 300.00\nTravel | 1 | 80.00 | 80.00\n\
                   Total | 380.00\n";
        let x = read(doc, "text/plain").expect("a table");
        assert_eq!(x.value.as_array().map(Vec::len), Some(2));
        assert_eq!(x.value[1]["description"], json!("Travel"));
        assert_eq!(x.value[1]["amount"], json!(80));
        assert_eq!(x.rows[0], "Consulting | 3 | 100.00 | 300.00");
    }

    #[test]
    fn csv_rows_and_json_lists_fill_the_array_and_missing_columns_are_null() {
        let csv = "Description,Qty,Amount\nWidget,2,25.00\n\"Bolt, M8\",100,\"1,000.00\"\n";
        let x = read(csv, "text/csv").expect("a table");
        assert_eq!(
            x.value,
            json!([
                {"description": "Widget", "quantity": 2, "unit_price": null, "amount": 25},
                {"description": "Bolt, M8", "quantity": 100, "unit_price": null, "amount": 1000}
            ])
        );
        assert_eq!(x.rows[1], "\"Bolt, M8\",100,\"1,000.00\"");
        let doc = r#"{"lines": [{"description": "A", "amount": 1.5}, {"qty": 2, "amount": "3,00"}], "total": 4.5}"#;
        let x = read(doc, "application/json").expect("a list");
        assert_eq!(x.value[0]["amount"], json!(1.5));
        assert_eq!(x.value[1]["quantity"], json!(2));
        assert_eq!(x.value[1]["amount"], json!(3));
    }

    #[test]
    fn lines_that_all_look_like_headers_are_one_table_under_the_first() {
        // Each line would have been read as the header of a table of all the lines after it:
        // 20,000 lines, 10,000 rows each. Under the first, they are its rows, read once.
        let doc = "Description | Amount\n".repeat(20_000);
        let x = read(&doc, "text/plain").expect("a table");
        assert_eq!(x.value.as_array().map(Vec::len), Some(MAX_ROWS));
        assert_eq!(
            x.value[0],
            json!({"description": "Description", "quantity": null,
            "unit_price": null, "amount": "Amount"})
        );
    }

    #[test]
    fn a_two_column_csv_table_is_a_table_not_labels_and_values() {
        let csv = "Item,Amount\nWidget,25.00\nTotal,25.00\n";
        let x = read(csv, "text/csv").expect("a table");
        assert_eq!(x.value.as_array().map(Vec::len), Some(2), "{}", x.value);
        assert_eq!(x.value[0]["description"], json!("Widget"));
    }

    #[test]
    fn no_header_no_table_and_a_label_never_fills_an_array() {
        assert!(read("Lines: 4\nQty 2\n", "text/plain").is_none());
        assert!(read("Description | Notes\nA | b\n", "text/plain").is_none());
    }
}
