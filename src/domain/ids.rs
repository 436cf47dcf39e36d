use uuid::Uuid;

/// A new lower-case hyphenated UUID v7.
pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Parses a path id: only the canonical lower-case hyphenated form is accepted.
pub fn parse_id(raw: &str) -> Option<String> {
    parse_uuid(raw).map(|u| u.hyphenated().to_string())
}

/// Parses an id in its hyphenated form (any case) into its 16 bytes.
pub fn parse_uuid(raw: &str) -> Option<Uuid> {
    // The hyphenated form is the only one 36 characters long (simple, braced and URN forms,
    // which `try_parse` also takes, are 32, 38 and 45).
    (raw.len() == 36)
        .then(|| Uuid::try_parse(raw).ok())
        .flatten()
}

/// Parses a schema reference: its UUID, or its `short_id` (`SCH-` + 8 upper-case hex digits).
pub fn parse_schema_ref(raw: &str) -> Option<String> {
    match raw.strip_prefix("SCH-") {
        Some(hex) => (hex.len() == 8
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
        .then(|| raw.to_string()),
        None => parse_id(raw),
    }
}

/// RFC 3339 UTC with milliseconds and `Z`.
pub fn now_rfc3339() -> String {
    format_time(chrono::Utc::now())
}

pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Unix milliseconds as `format_time` writes them.
pub fn format_ms(ms: i64) -> String {
    format_time(chrono::DateTime::from_timestamp_millis(ms).unwrap_or_else(chrono::Utc::now))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `SCH-` + 8 random upper-case hex digits.
pub fn short_id(prefix: &str) -> String {
    let n: u32 = rand::random();
    format!("{prefix}-{n:08X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_is_named_by_its_uuid_or_its_short_id() {
        let id = new_id();
        assert_eq!(parse_schema_ref(&id), Some(id));
        let short = short_id("SCH");
        assert_eq!(parse_schema_ref(&short), Some(short));
        for bad in [
            "SCH-1234567",
            "SCH-1234567G",
            "SCH-abcdef12",
            "sch-ABCDEF12",
            "SCH-ABCDEF123",
        ] {
            assert_eq!(parse_schema_ref(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_v7_lowercase_and_parse_back() {
        let id = new_id();
        assert_eq!(id, id.to_ascii_lowercase());
        assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        assert_eq!(parse_id(&id).as_deref(), Some(id.as_str()));
        assert!(parse_id("not-a-uuid").is_none());
        assert!(parse_id("0192f0c0e0b07c3a8d4e5f6a7b8c9d0e").is_none());
    }

    #[test]
    fn times_have_milliseconds_and_z() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z'));
        assert_eq!(t.len(), "2026-11-28T20:07:27.123Z".len());
    }
}
