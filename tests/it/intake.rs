//! Real documents in: intake by content, PDF and DOCX text layers with pages, Markdown and word
//! boxes, OCR of images (where Tesseract and poppler are installed), the real-world PDF corpus,
//! and files that must be refused.

use crate::common::*;
use quire::tools::pdf_writer::{pdf, Line};
use serde_json::{json, Value};
use std::io::Write;

fn invoice_pdf() -> Vec<u8> {
    pdf(&[
        vec![
            Line::at(50.0, 50.0, "ACME Supplies GmbH"),
            Line::at(50.0, 80.0, "Invoice"),
            Line::at(50.0, 120.0, "Invoice number"),
            Line::at(380.0, 120.0, "30064443"),
            Line::at(50.0, 140.0, "Invoice date"),
            Line::at(380.0, 140.0, "2024-09-14"),
        ],
        vec![
            Line::at(50.0, 50.0, "Payment terms: 30 days"),
            Line::at(50.0, 90.0, "Total"),
            Line::at(380.0, 90.0, "4904.94"),
        ],
    ])
}

fn docx(body: &str) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    z.start_file(
        "word/document.xml",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    write!(
        z,
        r#"<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
    )
    .unwrap();
    z.finish().unwrap();
    buf.into_inner()
}

fn para(text: &str) -> String {
    format!("<w:p><w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>")
}

/// A run of the default rail over one stored document: the pipeline and its one result row.
fn run_one(api: &Api, doc: &str) -> (String, Value) {
    let fields = json!([
        {"field_name": "invoice_number", "synonyms": ["Invoice number"]},
        {"field_name": "total", "data_type": "string"}
    ]);
    let (pid, rows) = run_rules(api, fields, &[doc.to_string()]);
    (pid, rows[0].clone())
}

#[test]
fn a_pdf_named_txt_is_refused_naming_both_types_and_nothing_is_stored() {
    let api = start();
    let r = upload_bytes(&api, "invoice.txt", &invoice_pdf(), None);
    assert_eq!(r.status, 415, "{}", r.text);
    let m = r.body["message"].as_str().unwrap();
    assert!(
        m.contains("text/plain") && m.contains("application/pdf"),
        "{m}"
    );
    let r = upload_bytes(&api, "scan.png", b"%PDF-1.4 not really", Some("image/png"));
    assert_eq!(r.status, 415, "{}", r.text);
    assert_envelope(&r, 415, "unsupported_media_type");
    let r = upload_bytes(&api, "fake.pdf", b"just text", None);
    assert_eq!(r.status, 415, "{}", r.text);
    assert_eq!(api.get("/v1/documents").body["pagination"]["total"], 0);
    // Text formats are still taken as declared, unparsed.
    let r = upload_bytes(&api, "broken.json", b"{not json", None);
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn a_born_digital_pdf_is_read_into_pages_with_word_boxes_and_its_values_extracted() {
    let api = start();
    let r = upload_bytes(&api, "acme.pdf", &invoice_pdf(), None);
    assert_eq!(r.status, 201, "{}", r.text);
    let d = &r.body;
    assert_eq!(d["mime_type"], "application/pdf");
    assert_eq!(d["status"], "completed");
    assert_eq!(d["pages"], 2);
    assert_eq!(d["type_detected"], "invoice");
    let id = d["id"].as_str().unwrap().to_string();

    let p1 = api.get(&format!("/v1/documents/{id}/pages/1"));
    assert_eq!(p1.status, 200, "{}", p1.text);
    let text = p1.body["text"].as_str().unwrap();
    assert!(
        text.contains("Invoice number | 30064443"),
        "a label and its distant value are two cells of one line: {text}"
    );
    let word = p1.body["words"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["text"] == "30064443")
        .expect("the number is a word")
        .clone();
    // Placed at x = 380 pt, 120 pt below the top edge of an A4 page (842 pt high).
    assert!((word["x0"].as_f64().unwrap() - 380.0).abs() < 2.0, "{word}");
    let top = word["y0"].as_f64().unwrap();
    assert!(
        (115.0..135.0).contains(&top),
        "box from the top-left corner: {word}"
    );
    assert_eq!(p1.body["width"], 595.0);
    let p2 = api.get(&format!("/v1/documents/{id}/pages/2"));
    assert!(p2.body["text"]
        .as_str()
        .unwrap()
        .contains("Total | 4904.94"));
    let missing = api.get(&format!("/v1/documents/{id}/pages/3"));
    assert_envelope(&missing, 404, "not_found");
    let bad = api.get(&format!("/v1/documents/{id}/pages/zero"));
    assert_envelope(&bad, 400, "bad_request");

    let md = api.get(&format!("/v1/documents/{id}/markdown"));
    assert_eq!(md.status, 200, "{}", md.text);
    assert_eq!(md.body["pages"].as_array().unwrap().len(), 2);
    assert!(md.body["markdown"].as_str().unwrap().contains("30064443"));

    let (_, row) = run_one(&api, &id);
    assert_eq!(row["status"], "complete", "{row}");
    assert_eq!(row["fields"]["invoice_number"], "30064443", "{row}");
    assert_eq!(row["fields"]["total"], "4904.94", "{row}");
}

#[test]
fn a_docx_is_read_in_order_with_its_tables_and_headings() {
    let api = start();
    let body = format!(
        r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Invoice</w:t></w:r></w:p>
        {}<w:tbl><w:tr><w:tc>{}</w:tc><w:tc>{}</w:tc></w:tr><w:tr><w:tc>{}</w:tc><w:tc>{}</w:tc></w:tr></w:tbl>
        <w:p><w:r><w:br w:type="page"/></w:r></w:p>{}"#,
        para("Invoice number: 77001"),
        para("Item"),
        para("Price"),
        para("Bolts"),
        para("12.50"),
        para("Total: 12.50"),
    );
    let r = upload_bytes(&api, "inv.docx", &docx(&body), None);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["mime_type"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    assert_eq!(r.body["pages"], 2);
    let id = r.body["id"].as_str().unwrap().to_string();
    let md = api.get(&format!("/v1/documents/{id}/markdown")).body;
    let first = md["pages"][0]["markdown"].as_str().unwrap();
    assert!(first.starts_with("# Invoice"), "{first}");
    assert!(
        first.contains("| Item | Price |\n| --- | --- |\n| Bolts | 12.50 |"),
        "{first}"
    );
    let (_, row) = run_one(&api, &id);
    assert_eq!(row["fields"]["invoice_number"], "77001", "{row}");
    assert_eq!(row["fields"]["total"], "12.50", "{row}");
    // A DOCX whose text would expand past the cap is refused, as is one that is no archive.
    let r = upload_bytes(&api, "bad.docx", b"PK\x03\x04 not a zip", None);
    assert_eq!(
        r.status, 415,
        "a ZIP signature alone is not a DOCX: {}",
        r.text
    );
}

#[test]
fn text_formats_have_one_page_and_markdown_of_their_kind() {
    let api = start();
    let id = upload(&api, "rows.csv", "name,total\nACME,12.50\n");
    let md = api.get(&format!("/v1/documents/{id}/markdown")).body;
    assert_eq!(
        md["markdown"],
        "| name | total |\n| --- | --- |\n| ACME | 12.50 |"
    );
    let p = api.get(&format!("/v1/documents/{id}/pages/1")).body;
    assert_eq!(p["text"], "name,total\nACME,12.50\n");
    let d = api.get(&format!("/v1/documents/{id}")).body;
    assert_eq!(
        (d["status"].as_str(), d["pages"].as_i64()),
        (Some("completed"), Some(1))
    );
}

/// Renders `pdf` page 1 to a PNG with poppler, as a scanner would have produced it.
fn scanned(pdf: &[u8]) -> Vec<u8> {
    let budget = std::time::Duration::from_secs(60);
    quire::intake::render::pdf_page_png(pdf, 1, 150, budget).expect("pdftoppm renders the page")
}

#[test]
fn an_image_is_read_through_ocr_with_word_confidences() {
    if !optional("tesseract") || !optional("pdftoppm") {
        return;
    }
    let api = start();
    let png = scanned(&invoice_pdf());
    let r = upload_bytes(&api, "scan.png", &png, None);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["mime_type"], "image/png");
    assert_eq!(r.body["status"], "completed", "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let p = api.get(&format!("/v1/documents/{id}/pages/1")).body;
    assert_eq!(p["ocr"], true);
    let words = p["words"].as_array().unwrap();
    let n = words
        .iter()
        .find(|w| w["text"] == "30064443")
        .expect("OCR read the number");
    let conf = n["conf"].as_f64().unwrap();
    assert!(conf > 0.5 && conf <= 1.0, "{n}");
    let (pid, row) = run_one(&api, &id);
    assert_eq!(row["fields"]["invoice_number"], "30064443", "{row}");
    // The value is as sure as the OCR that read it: the label's confidence (0.95 for the
    // field's display name) times the mean confidence of the words that print it.
    let cell = &extracted_cell(&api, &pid, &row, "invoice_number");
    let ocr = cell["provenance"]["ocr_confidence"]
        .as_f64()
        .expect("a scan's confidence");
    let confidence = cell["confidence"].as_f64().unwrap();
    assert!(ocr > 0.5 && ocr <= 1.0, "{cell}");
    assert!((confidence - 0.95 * ocr).abs() < 1e-6, "{cell}");
    assert!(cell["provenance"]["bbox"].is_array(), "{cell}");
}

/// The `rules_extraction` version of a field in a result row's document.
fn extracted_cell(api: &Api, pid: &str, row: &Value, field: &str) -> Value {
    let pd = row["pipeline_document_id"].as_str().unwrap();
    let f = field_cells(api, pid, pd, field);
    f["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["source"] == "rules_extraction")
        .unwrap_or_else(|| panic!("an extracted version of {field}: {f}"))
        .clone()
}

#[test]
fn a_german_pdf_invoice_is_read_typed_and_each_value_keeps_its_page_span_and_box() {
    let api = start();
    let pdf = pdf(&[
        vec![
            Line::at(300.0, 40.0, "Muster Handel GmbH"),
            Line::at(50.0, 80.0, "RECHNUNG"),
            Line::at(50.0, 120.0, "Rechnungsnr."),
            Line::at(160.0, 120.0, "Rechnungsdatum"),
            Line::at(300.0, 120.0, "Kundennr."),
            Line::at(50.0, 134.0, "RE-2014-0417"),
            Line::at(160.0, 134.0, "7. Mai 2014"),
            Line::at(300.0, 134.0, "K-88"),
        ],
        vec![
            Line::at(50.0, 60.0, "Pos"),
            Line::at(100.0, 60.0, "Beschreibung"),
            Line::at(400.0, 60.0, "Betrag"),
            Line::at(50.0, 76.0, "1"),
            Line::at(100.0, 76.0, "Beratung"),
            Line::at(400.0, 76.0, "4.122,64"),
            Line::at(50.0, 110.0, "Gesamtbetrag"),
            Line::at(400.0, 110.0, "€ 4.904,94"),
        ],
    ]);
    let doc = upload_bytes(&api, "rechnung.pdf", &pdf, None);
    assert_eq!(doc.status, 201, "{}", doc.text);
    let doc = doc.body["id"].as_str().unwrap().to_string();
    let (pid, rows) = run_rules(&api, invoice_fields(), std::slice::from_ref(&doc));
    let row = rows[0].clone();
    assert_eq!(
        row["fields"],
        json!({"invoice_number": "RE-2014-0417", "invoice_date": "2014-05-07",
               "total": 4904.94, "currency": "EUR"}),
        "labels in German, a header above its row, printed forms typed"
    );
    let page_text = |n: u64| -> Vec<char> {
        api.get(&format!("/v1/documents/{doc}/pages/{n}")).body["text"]
            .as_str()
            .unwrap()
            .chars()
            .collect()
    };
    for (field, page, printed) in [
        ("invoice_number", 1, "RE-2014-0417"),
        ("invoice_date", 1, "7. Mai 2014"),
        ("total", 2, "€ 4.904,94"),
    ] {
        let cell = extracted_cell(&api, &pid, &row, field);
        let p = &cell["provenance"];
        assert_eq!(p["page"], page, "{field}: {cell}");
        let text = page_text(page);
        let (s, e) = (
            p["start"].as_u64().unwrap() as usize,
            p["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            text[s..e].iter().collect::<String>(),
            printed,
            "{field}: {cell}"
        );
        assert!(p["bbox"].is_array(), "{field}: {cell}");
        assert!(p.get("ocr_confidence").is_none(), "a text layer: {cell}");
    }
    let bbox = extracted_cell(&api, &pid, &row, "total")["provenance"]["bbox"].clone();
    assert!((bbox[0].as_f64().unwrap() - 400.0).abs() < 2.0, "{bbox}");
}

#[test]
fn without_tesseract_an_image_is_stored_with_what_to_install_and_its_run_errors() {
    let api = start_with(|c| c.reader.limits.tesseract = "/nonexistent/tesseract".into());
    let r = upload_bytes(&api, "photo.png", &blank_png(40, 30), None);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["status"], "error");
    let why = r.body["error"].as_str().unwrap();
    assert!(why.contains("tesseract-ocr"), "{why}");
    let id = r.body["id"].as_str().unwrap().to_string();
    let (_, row) = run_one(&api, &id);
    assert_eq!(row["status"], "error", "{row}");
    assert!(
        row["error"].as_str().unwrap().contains("tesseract-ocr"),
        "{row}"
    );
}

#[test]
fn hostile_files_are_refused_within_their_budget_and_others_still_read() {
    let api = start_with(|c| {
        c.reader.limits.max_pages = 3;
        c.reader.limits.max_pixels = 1_000_000;
    });
    let many: Vec<Vec<Line>> = (0..5)
        .map(|i| vec![Line::at(50.0, 50.0, format!("p{i}"))])
        .collect();
    let r = upload_bytes(&api, "long.pdf", &pdf(&many), None);
    assert_envelope(&r, 400, "bad_request");
    assert!(
        r.body["message"].as_str().unwrap().contains("5 pages"),
        "{}",
        r.text
    );
    // A PNG header claiming 20,000 × 20,000 pixels is refused before anything decodes it.
    let mut huge = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    huge.extend_from_slice(&20_000u32.to_be_bytes());
    huge.extend_from_slice(&20_000u32.to_be_bytes());
    huge.extend_from_slice(b"\x08\x02\0\0\0\0\0\0\0");
    let r = upload_bytes(&api, "huge.png", &huge, None);
    assert_envelope(&r, 400, "bad_request");
    assert!(
        r.body["message"].as_str().unwrap().contains("pixels"),
        "{}",
        r.text
    );
    // A damaged PDF (cut in half) is refused with a reason; the service reads the next one.
    let whole = invoice_pdf();
    // Its pages keep no text, so only the OCR tools can tell it is damaged: without them it is
    // stored unreadable, saying what to install.
    let r = upload_bytes(&api, "half.pdf", &whole[..whole.len() / 2], None);
    if optional("tesseract") && optional("pdftoppm") {
        assert_eq!(r.status, 400, "{}", r.text);
    } else {
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(
            r.body["error"].as_str().unwrap().contains("tesseract-ocr"),
            "{}",
            r.text
        );
    }
    let r = upload_bytes(&api, "ok.pdf", &whole, None);
    assert_eq!(r.status, 201, "two pages pass the 3-page cap: {}", r.text);
}

/// The real-world corpus: `QUIRE_CORPORA` when set (then it must be there), else
/// `../shared/corpora` beside the project, else the test is skipped with a notice.
fn corpus() -> Option<std::path::PathBuf> {
    let given = std::env::var_os("QUIRE_CORPORA").map(std::path::PathBuf::from);
    let root = given.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora")
    });
    let dir = root.join("pdf-sample-files");
    if dir.join("files.json").is_file() {
        return Some(dir);
    }
    assert!(
        given.is_none(),
        "QUIRE_CORPORA names no corpus: {}",
        dir.display()
    );
    eprintln!("notice: the PDF corpus is not beside the project; this test is skipped");
    None
}

#[test]
fn every_pdf_of_the_real_world_corpus_is_read_with_its_page_count_or_refused_with_a_reason() {
    let Some(dir) = corpus() else { return };
    let files: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("files.json")).unwrap()).unwrap();
    let api = start();
    let mut read = 0;
    for f in files["data"].as_array().unwrap() {
        let path = dir.join(f["path"].as_str().unwrap());
        let Ok(bytes) = std::fs::read(&path) else {
            continue; // listed but not shipped (GeoTopo.pdf, too large)
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let r = upload_bytes(&api, &name, &bytes, None);
        if f["encrypted"] == true {
            assert_envelope(&r, 400, "bad_request");
            let m = r.body["message"].as_str().unwrap();
            assert!(m.contains("encrypted"), "{name}: {m}");
            continue;
        }
        // One corpus file has a broken cross-reference table; reading it whole is not promised,
        // but it must be answered like any other: read, or refused with a reason.
        if r.status == 400 {
            assert!(
                f["path"].as_str().unwrap().starts_with("017"),
                "{name}: {}",
                r.text
            );
            continue;
        }
        assert_eq!(r.status, 201, "{name}: {}", r.text);
        if !f["path"].as_str().unwrap().starts_with("017") {
            assert_eq!(r.body["pages"], f["pages"], "{name}");
        }
        assert!(["completed", "error"].contains(&r.body["status"].as_str().unwrap()));
        read += 1;
    }
    assert!(read >= 29, "{read} files read");
    assert_eq!(api.get("/healthz").status, 200);
}

#[test]
fn a_held_value_of_a_pdf_points_a_reviewer_to_its_page_span_and_box() {
    let api = start();
    let r = upload_bytes(&api, "acme.pdf", &invoice_pdf(), None);
    let doc = r.body["id"].as_str().unwrap().to_string();
    let schema = api.create_schema(&json!({"name": "Held", "fields": [
        {"field_name": "invoice_number", "synonyms": ["Invoice number"], "requires_review": true},
        {"field_name": "total", "data_type": "string"}
    ]}));
    let sid = schema["id"].as_str().unwrap();
    let rail = json!({"rail": [{"type": "registry"}, {"type": "schema"}]});
    assert_eq!(
        api.put(&format!("/v1/schemas/{sid}/rail"), &rail).status,
        200
    );
    let r = api.post(
        "/v1/pipelines",
        &json!({"schema_id": sid, "document_ids": [doc]}),
    );
    let pid = r.body["id"].as_str().unwrap().to_string();
    settle(&api, &pid);
    let queue = api
        .get(&format!("/v1/field-reviews?pipeline_id={pid}"))
        .body;
    let item = &queue["data"][0];
    assert_eq!(item["field_key"], "invoice_number", "{queue}");
    let pd = item["pipeline_document_id"].as_str().unwrap();
    let detail = api.get(&format!("/v1/field-reviews/{pd}/invoice_number"));
    assert_eq!(detail.status, 200, "{}", detail.text);
    let span = &detail.body["matchedSpan"];
    assert_eq!(span["page"], 1, "{span}");
    assert_eq!(span["approximate"], false);
    let page = api.get(&format!("/v1/documents/{doc}/pages/1")).body;
    let text: Vec<char> = page["text"].as_str().unwrap().chars().collect();
    let (s, e) = (
        span["start"].as_u64().unwrap() as usize,
        span["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(text[s..e].iter().collect::<String>(), "30064443");
    let bbox: Vec<f64> = span["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        (bbox[0] - 380.0).abs() < 2.0 && (115.0..135.0).contains(&bbox[1]),
        "{span}"
    );
}

#[test]
fn a_page_image_is_rendered_once_and_kept_and_other_formats_answer_plainly() {
    let api = start();
    let r = upload_bytes(&api, "acme.pdf", &invoice_pdf(), None);
    let doc = r.body["id"].as_str().unwrap().to_string();
    let beyond = api.get(&format!("/v1/documents/{doc}/pages/3/image"));
    assert_envelope(&beyond, 404, "not_found");
    let text = upload(&api, "a.txt", "Invoice number: 1");
    let none = api.get(&format!("/v1/documents/{text}/pages/1/image"));
    assert_envelope(&none, 404, "not_found");
    if !optional("pdftoppm") {
        return;
    }
    let image = |path: &str| {
        let r = reqwest::blocking::Client::new()
            .get(api.url(path))
            .bearer_auth(api.key())
            .send()
            .unwrap();
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        (r.status().as_u16(), kind, r.bytes().unwrap().to_vec())
    };
    let (status, kind, first) = image(&format!("/v1/documents/{doc}/pages/1/image"));
    assert_eq!((status, kind.as_str()), (200, "image/png"));
    assert!(first.starts_with(b"\x89PNG\r\n\x1a\n"));
    let (_, _, again) = image(&format!("/v1/documents/{doc}/pages/1/image"));
    assert_eq!(first, again, "the kept rendering");
    let png = scanned(&invoice_pdf());
    let r = upload_bytes(&api, "scan.png", &png, None);
    let scan = r.body["id"].as_str().unwrap().to_string();
    let (status, kind, bytes) = image(&format!("/v1/documents/{scan}/pages/1/image"));
    assert_eq!((status, kind.as_str()), (200, "image/png"));
    assert_eq!(bytes, png, "an uploaded image is its own page image");
}
