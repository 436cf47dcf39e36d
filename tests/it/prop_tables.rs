//! Property test of line items (issue 21): a random table is rendered into a PDF (real text
//! layer, read back through the PDF reader and its layout), a Markdown table and a CSV, and the
//! rules extractor must read back exactly the table that was rendered, row for row. The oracle
//! is the generated table itself.

use proptest::prelude::*;
use quire::domain::{documents, extract, schema};
use quire::intake;
use quire::tools::pdf_writer::{pdf, Line};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Row {
    description: String,
    quantity: u32,
    /// In cents.
    unit_price: u32,
    amount: u32,
}

fn row() -> impl Strategy<Value = Row> {
    (
        "[A-Z][a-z]{2,9}( [a-z]{2,8}){0,2}",
        1u32..1000,
        1u32..1_000_000,
        1u32..10_000_000,
    )
        .prop_map(|(description, quantity, unit_price, amount)| Row {
            description,
            quantity,
            unit_price,
            amount,
        })
}

fn money(cents: u32) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn cells(r: &Row) -> [String; 4] {
    [
        r.description.clone(),
        r.quantity.to_string(),
        money(r.unit_price),
        money(r.amount),
    ]
}

const HEADER: [&str; 4] = ["Description", "Qty", "Unit price", "Amount"];

fn markdown(rows: &[Row]) -> String {
    let mut t = format!(
        "# Invoice\n\n| {} |\n|---|---|---|---|\n",
        HEADER.join(" | ")
    );
    for r in rows {
        t.push_str(&format!("| {} |\n", cells(r).join(" | ")));
    }
    t
}

fn csv(rows: &[Row]) -> String {
    let mut t = format!("{}\n", HEADER.join(","));
    for r in rows {
        t.push_str(&format!("{}\n", cells(r).join(",")));
    }
    t
}

/// Columns far enough apart that no two cells of a row run together, whatever their width.
fn pdf_text(rows: &[Row]) -> String {
    let xs = [40.0, 250.0, 330.0, 450.0];
    let mut page = vec![Line::at(40.0, 40.0, "ACME Supplies GmbH")];
    let mut y = 100.0;
    let mut line = |texts: Vec<String>, y: f32| {
        for (x, t) in xs.iter().zip(texts) {
            page.push(Line::at(*x, y, t));
        }
    };
    line(HEADER.iter().map(|s| s.to_string()).collect(), y);
    for r in rows {
        y += 16.0;
        line(cells(r).to_vec(), y);
    }
    let bytes = pdf(&[page]);
    match intake::read(&bytes, documents::PDF, &intake::Limits::default()) {
        intake::Outcome::Read(pages) => intake::full_text(&pages),
        other => panic!("the PDF was not read: {other:?}"),
    }
}

fn spec() -> Vec<extract::FieldSpec> {
    let def = schema::fields_from_input(&json!({"lines": [{
        "description": "string", "quantity": "number", "unit_price": "number", "amount": "number"}]}))
    .unwrap();
    let mut f: Vec<extract::FieldSpec> = def.iter().map(extract::FieldSpec::from).collect();
    f[0].items[1].synonyms.push("Qty".into());
    f
}

fn oracle(rows: &[Row]) -> Value {
    let n = |c: u32| json!(c as f64 / 100.0);
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({"description": r.description, "quantity": r.quantity,
                       "unit_price": n(r.unit_price), "amount": n(r.amount)})
            })
            .collect(),
    )
}

/// Equal as JSON, numbers by their value (`32906` and `32906.0` are one amount).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48)
    ))]

    #[test]
    fn a_table_rendered_as_pdf_markdown_and_csv_is_read_back_exactly(
        rows in proptest::collection::vec(row(), 1..8)
    ) {
        let fields = spec();
        let want = oracle(&rows);
        for (form, text, mime) in [
            ("pdf", pdf_text(&rows), "text/plain"),
            ("markdown", markdown(&rows), "text/markdown"),
            ("csv", csv(&rows), "text/csv"),
        ] {
            let got = extract::extract(text.as_bytes(), mime, &fields)
                .unwrap_or_else(|e| panic!("{form}: {e}"));
            let lines = got.get("lines").unwrap_or_else(|| panic!("{form}: no table in {text}"));
            prop_assert!(same(&lines.value, &want), "{}: {} read as {}, rendered {}", form, text, lines.value, want);
            prop_assert_eq!(lines.rows.len(), rows.len(), "{}: one row each", form);
        }
    }
}
