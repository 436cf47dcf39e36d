//! CSV output: RFC 4180 quoting (by the csv crate), a UTF-8 BOM, and formula neutralization.

use serde_json::Value;

pub const BOM: &str = "\u{feff}";

/// A string that a spreadsheet would run as a formula gets a leading `'`; numbers never do.
pub fn neutralize(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

/// A JSON value as a CSV cell: strings neutralized, numbers and booleans as written, null empty.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => neutralize(s),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        other => neutralize(&other.to_string()),
    }
}

/// Renders rows as CSV lines (no BOM): a streamed export writes the header, then page after page.
pub fn lines(rows: &[Vec<String>]) -> Result<Vec<u8>, String> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for r in rows {
        w.write_record(r).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

/// Renders rows as CSV text with a BOM.
pub fn render(header: &[String], rows: &[Vec<String>]) -> Result<String, String> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(header).map_err(|e| e.to_string())?;
    for r in rows {
        w.write_record(r).map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    Ok(format!(
        "{BOM}{}",
        String::from_utf8(bytes).map_err(|e| e.to_string())?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formulas_are_neutralized_on_strings_only() {
        assert_eq!(cell(&json!("=SUM(A1)")), "'=SUM(A1)");
        assert_eq!(cell(&json!("-5")), "'-5");
        assert_eq!(cell(&json!(-5)), "-5");
        assert_eq!(cell(&json!("\tx")), "'\tx");
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!("plain")), "plain");
    }

    #[test]
    fn quoting_survives_commas_quotes_and_newlines() {
        let out = render(
            &["a".into(), "b".into()],
            &[vec!["x, \"y\"".into(), "line\nbreak".into()]],
        )
        .unwrap();
        assert!(out.starts_with(BOM));
        assert!(out.contains("\"x, \"\"y\"\"\""));
        assert!(out.contains("\"line\nbreak\""));
    }
}
