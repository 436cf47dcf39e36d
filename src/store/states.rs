//! The stored form of a document's field states.
//!
//! Most fields of most documents are in a plain state: progressing or completed at a phase,
//! with nothing else recorded. Those are stored as a short string (`"c5"`, `"p2"`) instead of
//! an object (`{"status":"completed","next":5}`): the states of a twenty-field document shrink
//! from about 850 bytes to about 330, and every claim, commit and index check reads and
//! rewrites fewer bytes. Every other state (held, flagged, pinned, reopened, …) stays a JSON
//! object, which is what the SQL that looks inside the column (`instr` patterns of the sticky
//! and flag indexes, `json_extract` of a held field's stage) relies on; a short string never
//! contains any of those patterns. Objects written before this form still read.

use super::conn::{DbResult, Row};
use crate::domain::state::{FieldState, States, Status};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt::{self, Write};

/// The short code of a plain state, or `None` when the state must be stored whole.
fn short(s: &FieldState) -> Option<char> {
    let code = match s.status {
        Status::Completed => 'c',
        Status::Progressing => 'p',
        _ => return None,
    };
    let plain = FieldState {
        status: s.status,
        next: s.next,
        ..FieldState::default()
    };
    (*s == plain).then_some(code)
}

fn parse_short(v: &str) -> Option<FieldState> {
    let mut chars = v.chars();
    let status = match chars.next()? {
        'c' => Status::Completed,
        'p' => Status::Progressing,
        _ => return None,
    };
    let digits = chars.as_str();
    let next = if digits.is_empty() {
        0
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(FieldState {
        status,
        next,
        ..FieldState::default()
    })
}

/// The column's text for `states`. Absent fields read as progressing at phase 0; storing them
/// all keeps reads simple.
pub fn encode(states: &States) -> String {
    let mut out = String::with_capacity(16 * states.len() + 2);
    out.push('{');
    for (i, (field, state)) in states.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        crate::domain::gate::push_json_escaped(&mut out, field);
        out.push_str("\":");
        match short(state) {
            Some(code) => {
                out.push('"');
                out.push(code);
                if state.next > 0 {
                    let _ = write!(out, "{}", state.next);
                }
                out.push('"');
            }
            // Serializing a state (strings, numbers, booleans, plain JSON values) cannot fail.
            None => out.push_str(&serde_json::to_string(state).unwrap_or_else(|_| "{}".into())),
        }
    }
    out.push('}');
    out
}

/// One stored field state: a short string or a whole object.
struct Stored(FieldState);

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Stored;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field state: an object or a short code such as \"c5\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stored, E> {
                parse_short(v)
                    .map(Stored)
                    .ok_or_else(|| E::custom(format!("unknown field state code {v:?}")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Stored, A::Error> {
                FieldState::deserialize(de::value::MapAccessDeserializer::new(map)).map(Stored)
            }
        }
        d.deserialize_any(V)
    }
}

/// The decoded column.
struct StoredStates(States);

impl<'de> Deserialize<'de> for StoredStates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, Stored>::deserialize(d)?;
        Ok(StoredStates(
            map.into_iter().map(|(f, Stored(s))| (f, s)).collect(),
        ))
    }
}

/// The field states in column `idx` of a row; text that does not decode is `Corrupt`, as for
/// every JSON column.
pub fn column(r: &Row, idx: usize, table: &'static str) -> DbResult<States> {
    super::json::<StoredStates>(r, idx, table).map(|s| s.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::Flag;

    fn decode(text: &str) -> Result<States, serde_json::Error> {
        serde_json::from_str::<StoredStates>(text).map(|s| s.0)
    }

    fn plain(status: Status, next: usize) -> FieldState {
        FieldState {
            status,
            next,
            ..FieldState::default()
        }
    }

    #[test]
    fn plain_states_are_short_and_everything_reads_back() {
        let mut held = plain(Status::Blocked, 3);
        held.blocked_at = Some(3);
        held.stage_id = Some("stage-1".into());
        let mut flagged = plain(Status::Completed, 5);
        flagged.flags.push(Flag {
            phase: 3,
            stage_id: "s".into(),
            severity: "warning".into(),
            reason: "r".into(),
        });
        let mut pinned = plain(Status::Completed, 5);
        pinned.pinned = true;
        pinned.pin = serde_json::json!("x");
        let mut completed_at = plain(Status::Completed, 5);
        completed_at.completed_at = Some("2026-11-30T00:00:00Z".into());
        let states: States = [
            ("a", plain(Status::Completed, 5)),
            ("b", plain(Status::Progressing, 0)),
            ("c", plain(Status::Progressing, 12)),
            ("d", held),
            ("e", flagged),
            ("f", pinned),
            ("g", plain(Status::Waiting, 2)),
            ("h", completed_at),
            ("quote\"d", plain(Status::Completed, 0)),
        ]
        .into_iter()
        .map(|(f, s)| (f.to_string(), s))
        .collect();
        let text = encode(&states);
        assert!(
            text.starts_with(r#"{"a":"c5","b":"p","c":"p12","d":{"#),
            "{text}"
        );
        assert!(text.contains(r#""quote\"d":"c""#), "{text}");
        assert!(
            text.contains(r#""g":{"status":"waiting","next":2}"#),
            "{text}"
        );
        assert_eq!(decode(&text).expect("decodes"), states);
        // The text is JSON, and the SQL patterns see held, flagged and pinned states.
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["d"]["stage_id"], "stage-1");
        for pattern in [r#""blocked""#, r#""flags""#, r#""pinned":true"#] {
            assert!(text.contains(pattern), "{pattern} in {text}");
        }
    }

    #[test]
    fn objects_of_the_older_form_still_read() {
        let old = r#"{"a":{"status":"completed","next":5},"b":{"status":"progressing"}}"#;
        let states = decode(old).expect("decodes");
        assert_eq!(states["a"], plain(Status::Completed, 5));
        assert_eq!(states["b"], plain(Status::Progressing, 0));
        assert_eq!(encode(&states), r#"{"a":"c5","b":"p"}"#);
    }

    #[test]
    fn unknown_codes_are_errors_not_guesses() {
        for bad in [
            r#"{"a":"x5"}"#,
            r#"{"a":"c5x"}"#,
            r#"{"a":""}"#,
            r#"{"a":"c-1"}"#,
            r#"{"a":5}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_short_code_never_matches_what_sql_looks_for() {
        // The patterns of `store::reruns` (KEEPS, STICKY) and the flag trigger.
        let patterns = [
            r#""blocked""#,
            r#""pinned":true"#,
            r#""guards""#,
            r#""flags""#,
            r#""reopened_after""#,
            r#""resumed""#,
            r#""review_at""#,
            r#""element_pins""#,
        ];
        for status in [Status::Completed, Status::Progressing] {
            for next in [0, 1, 5, 99] {
                let states: States = [("blocked".to_string(), plain(status, next))].into();
                let text = encode(&states);
                let value = text.trim_start_matches(r#"{"blocked":"#);
                for p in patterns {
                    assert!(!value.contains(p), "{p} in {text}");
                }
            }
        }
    }
}
