#![no_main]
//! CSV output over arbitrary cells: every cell is formula-neutralized, what `render` writes
//! reads back with the csv crate to exactly the neutralized cells, and a streamed export
//! (`lines` page by page) writes the same bytes.
//!
//! Input: UTF-8 text, rows separated by U+001E (record separator), cells by U+001F (unit
//! separator); the first row is the header.

use libfuzzer_sys::fuzz_target;
use quire::domain::csv_out::{self, BOM};
use serde_json::Value;

fn read_back(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    rdr.records()
        .map(|r| {
            r.expect("our own CSV reads back")
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let rows: Vec<Vec<String>> = text
        .split('\u{1e}')
        .map(|r| {
            r.split('\u{1f}')
                .map(|c| {
                    let cell = csv_out::cell(&Value::String(c.to_string()));
                    assert_eq!(cell, csv_out::neutralize(c));
                    assert!(
                        !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                        "{cell:?} would run as a formula"
                    );
                    assert!(cell == c || cell == format!("'{c}"));
                    cell
                })
                .collect()
        })
        .collect();
    let (header, body) = rows.split_first().expect("split gives at least one row");
    // The writer refuses rows of unequal length.
    let same_width = rows.iter().all(|r| r.len() == header.len());

    // Read as served: the BOM first, which the reader (like a spreadsheet) takes off.
    let rendered = csv_out::render(header, body);
    assert_eq!(rendered.is_ok(), same_width, "{rendered:?}");
    if let Ok(out) = &rendered {
        assert!(out.starts_with(BOM));
        assert_eq!(read_back(out.as_bytes()), rows, "{out:?}");
    }

    // A streamed export (BOM, header line, then pages of lines) writes the same bytes.
    let streamed = csv_out::lines(std::slice::from_ref(header))
        .and_then(|h| Ok([BOM.as_bytes(), &h, &csv_out::lines(body)?].concat()));
    // There the header and the body are written apart: only the body must be of one width.
    let body_width = body.first().map_or(0, Vec::len);
    assert_eq!(streamed.is_ok(), body.iter().all(|r| r.len() == body_width));
    if let Ok(out) = rendered {
        assert_eq!(streamed, Ok(out.into_bytes()));
    }
});
