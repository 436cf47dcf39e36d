//! Document rules: accepted media types and metadata shape.

use serde_json::Value;

pub const ACCEPTED: [&str; 4] = [
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
];

fn from_extension(filename: &str) -> Option<&'static str> {
    let ext = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "json" => "application/json",
        _ => return None,
    })
}

/// The document's media type: the declared one when given, else from the filename's extension.
pub fn detect_mime(declared: Option<&str>, filename: &str) -> Result<String, String> {
    if let Some(d) = declared.map(|d| {
        d.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }) {
        if !d.is_empty() {
            return if ACCEPTED.contains(&d.as_str()) {
                Ok(d)
            } else {
                Err(format!(
                    "Unsupported document type '{d}' (accepted: {})",
                    ACCEPTED.join(", ")
                ))
            };
        }
    }
    from_extension(filename).map(str::to_string).ok_or_else(|| {
        format!(
            "Cannot tell the type of '{filename}': give mime_type or use .txt, .md, .csv or .json"
        )
    })
}

/// Metadata is a JSON object of scalars.
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_come_from_declaration_then_extension() {
        assert_eq!(
            detect_mime(Some("text/csv; charset=utf-8"), "x.bin").unwrap(),
            "text/csv"
        );
        assert_eq!(detect_mime(None, "Invoice.MD").unwrap(), "text/markdown");
        assert!(detect_mime(Some("application/pdf"), "a.txt").is_err());
        assert!(detect_mime(None, "a.pdf").is_err());
    }

    #[test]
    fn metadata_must_be_flat() {
        assert!(check_metadata(&json!({"a": 1, "b": "x", "c": null})).is_ok());
        assert!(check_metadata(&json!({"a": {"b": 1}})).is_err());
        assert!(check_metadata(&json!([1])).is_err());
    }
}
