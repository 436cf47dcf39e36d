//! Document rules: accepted media types (text taken as declared, binary formats told by their
//! bytes) and metadata shape.

use serde_json::Value;

/// Text formats: taken as declared, read as UTF-8 text, not parsed at intake.
pub const TEXT_TYPES: [&str; 4] = [
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
];

pub const PDF: &str = "application/pdf";
pub const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
pub const PNG: &str = "image/png";
pub const JPEG: &str = "image/jpeg";
pub const TIFF: &str = "image/tiff";

/// Binary formats: told by their bytes, turned into page text at intake.
pub const BINARY_TYPES: [&str; 5] = [PDF, DOCX, PNG, JPEG, TIFF];

/// Every type Quire reads, for messages.
pub fn accepted() -> String {
    TEXT_TYPES
        .iter()
        .chain(BINARY_TYPES.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a stored document of this type is read through its text layer (pages).
pub fn is_binary(mime: &str) -> bool {
    BINARY_TYPES.contains(&mime)
}

fn from_extension(filename: &str) -> Option<&'static str> {
    let ext = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "json" => "application/json",
        "pdf" => PDF,
        "docx" => DOCX,
        "png" => PNG,
        "jpg" | "jpeg" => JPEG,
        "tif" | "tiff" => TIFF,
        _ => return None,
    })
}

/// A declared media type in its canonical spelling; `None` when it says nothing.
fn declared_type(declared: Option<&str>) -> Option<String> {
    let d = declared?
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match d.as_str() {
        "" | "application/octet-stream" => return None,
        "image/jpg" | "image/pjpeg" => JPEG.to_string(),
        "image/tif" => TIFF.to_string(),
        "application/x-pdf" => PDF.to_string(),
        _ => d,
    })
}

/// The binary type the bytes are, by their magic numbers; `None` for text (or anything no
/// signature matches, which is then taken as the text it is declared to be).
pub fn sniff(content: &[u8]) -> Option<&'static str> {
    let t = infer::get(content)?;
    if t.matcher_type() == infer::MatcherType::Text {
        return None;
    }
    Some(t.mime_type())
}

/// The document's media type, from what the client declared (the `mime_type`, else the
/// filename's extension) checked against what the bytes are: a binary format is told by its
/// content, and a declaration the content contradicts is refused naming both.
pub fn detect_type(
    declared: Option<&str>,
    filename: &str,
    content: &[u8],
) -> Result<String, String> {
    let declared = declared_type(declared).or_else(|| from_extension(filename).map(str::to_string));
    match (declared, sniff(content)) {
        (_, Some(found)) if !BINARY_TYPES.contains(&found) => Err(format!(
            "The content of '{filename}' is {found}, which Quire does not read (accepted: {})",
            accepted()
        )),
        (Some(d), Some(found)) if d != found => Err(format!(
            "'{filename}' is declared {d} but its content is {found}"
        )),
        (_, Some(found)) => Ok(found.to_string()),
        (Some(d), None) if TEXT_TYPES.contains(&d.as_str()) => Ok(d),
        (Some(d), None) if BINARY_TYPES.contains(&d.as_str()) => Err(format!(
            "'{filename}' is declared {d} but its content is not: its first bytes match no {d} signature"
        )),
        (Some(d), None) => Err(format!(
            "Unsupported document type '{d}' (accepted: {})",
            accepted()
        )),
        (None, None) => Err(format!(
            "Cannot tell the type of '{filename}': give mime_type or use .txt, .md, .csv, .json, \
             .pdf, .docx, .png, .jpg or .tiff"
        )),
    }
}

/// Metadata is a JSON object of scalars. No key or string holds the NUL character: filters
/// look inside stored metadata, and PostgreSQL cannot read a NUL out of JSON (it means nothing
/// in a key or a label either).
pub fn check_metadata(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("metadata must be a JSON object")?;
    if obj.len() > 1000 {
        return Err("metadata has at most 1000 keys".into());
    }
    for (k, val) in obj {
        if val.is_object() || val.is_array() {
            return Err(format!(
                "metadata.{k} must be a string, number, boolean or null"
            ));
        }
        if k.contains('\0') || val.as_str().is_some_and(|s| s.contains('\0')) {
            return Err(format!(
                "metadata.{} must not contain the NUL character (\\u0000)",
                k.replace('\0', "\\u0000")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PDF_BYTES: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n";
    const PNG_BYTES: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

    #[test]
    fn text_types_come_from_declaration_then_extension() {
        let t = |d: Option<&str>, name: &str| detect_type(d, name, b"Invoice 1");
        assert_eq!(
            t(Some("text/csv; charset=utf-8"), "x.bin").unwrap(),
            "text/csv"
        );
        assert_eq!(t(None, "Invoice.MD").unwrap(), "text/markdown");
        assert!(t(None, "a.bin").is_err());
        assert!(t(Some("application/msword"), "a.doc").is_err());
    }

    #[test]
    fn binary_types_are_told_by_their_bytes_and_a_contradiction_names_both() {
        assert_eq!(detect_type(None, "scan", PDF_BYTES).unwrap(), PDF);
        assert_eq!(
            detect_type(Some("application/pdf"), "a.pdf", PDF_BYTES).unwrap(),
            PDF
        );
        assert_eq!(detect_type(None, "a.png", PNG_BYTES).unwrap(), PNG);
        let e = detect_type(None, "invoice.txt", PDF_BYTES).unwrap_err();
        assert!(
            e.contains("text/plain") && e.contains("application/pdf"),
            "{e}"
        );
        let e = detect_type(Some("image/png"), "a.png", PDF_BYTES).unwrap_err();
        assert!(
            e.contains("image/png") && e.contains("application/pdf"),
            "{e}"
        );
        let e = detect_type(None, "fake.pdf", b"hello").unwrap_err();
        assert!(e.contains("application/pdf"), "{e}");
        let e = detect_type(None, "a.gif", b"GIF89a\x01\0\x01\0").unwrap_err();
        assert!(e.contains("image/gif"), "{e}");
    }

    #[test]
    fn metadata_must_be_flat() {
        assert!(check_metadata(&json!({"a": 1, "b": "x", "c": null})).is_ok());
        assert!(check_metadata(&json!({"a": {"b": 1}})).is_err());
        assert!(check_metadata(&json!([1])).is_err());
        let e = check_metadata(&json!({"a": "x\u{0}y"})).unwrap_err();
        assert!(e.contains("metadata.a") && e.contains("NUL"), "{e}");
        let e = check_metadata(&json!({"a\u{0}": 1})).unwrap_err();
        assert!(e.contains("metadata.a\\u0000"), "{e}");
    }
}
