//! API key format, hashing and scopes.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    /// The quick tier's extraction routes; a `write` key may call them too.
    Extract,
}

/// What a key is given when no scopes are named.
pub const DEFAULT_SCOPES: &[Scope] = &[Scope::Extract, Scope::Read, Scope::Write];

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Extract => "extract",
        }
    }

    /// Whether a key holding `held` may call a route that needs `self`.
    pub fn granted_by(self, held: &[Scope]) -> bool {
        held.contains(&self) || (self == Scope::Extract && held.contains(&Scope::Write))
    }
}

/// Parses a comma-separated scope list such as `read,write`.
pub fn parse_scopes(raw: &str) -> Result<Vec<Scope>, String> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let s = match part {
            "read" => Scope::Read,
            "write" => Scope::Write,
            "extract" => Scope::Extract,
            other => {
                return Err(format!(
                    "unknown scope '{other}' (use read, write, extract)"
                ))
            }
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err("at least one scope is required".into());
    }
    Ok(out)
}

pub fn scopes_to_string(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A new plain key: `tlnc_<env>_` + 40 alphanumeric characters.
pub fn generate_key(env: &str) -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("tlnc_{env}_{body}")
}

/// True when `key` has the shape `tlnc_<env>_<32+ chars of [A-Za-z0-9]>`.
pub fn is_well_formed(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("tlnc_") else {
        return false;
    };
    let Some((env, secret)) = rest.split_once('_') else {
        return false;
    };
    !env.is_empty()
        && env.bytes().all(|b| b.is_ascii_alphanumeric())
        && secret.len() >= 32
        && secret.len() <= 256
        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The part of a key that is safe to show in listings.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(14).collect()
}

/// The longest key lifetime: a century keeps an expiry within four-digit years, where times
/// written as text still sort as times.
pub const MAX_LIFETIME_DAYS: i64 = 36_500;

/// Parses durations such as `30d`, `12h`, `45m`, `90s`, up to `MAX_LIFETIME_DAYS`.
pub fn parse_duration_secs(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    let invalid = || format!("invalid duration '{raw}' (use e.g. 30d, 12h, 45m)");
    let mut chars = raw.chars();
    let unit = chars.next_back().ok_or_else(invalid)?;
    let num = chars.as_str();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let mult: i64 = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(invalid()),
    };
    let too_long = || format!("duration '{raw}' is longer than the limit of {MAX_LIFETIME_DAYS}d");
    let n: i64 = num.parse().map_err(|_| too_long())?;
    if n == 0 {
        return Err("duration must be positive".into());
    }
    n.checked_mul(mult)
        .filter(|s| *s <= MAX_LIFETIME_DAYS * 86_400)
        .ok_or_else(too_long)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed() {
        let k = generate_key("live");
        assert!(is_well_formed(&k), "{k}");
        assert!(!is_well_formed("tlnc_live_short"));
        assert!(!is_well_formed(
            "sk_live_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
        assert!(!is_well_formed(
            "tlnc__aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
        assert!(!is_well_formed(
            "tlnc_live_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"
        ));
    }

    #[test]
    fn scopes_and_durations_parse() {
        assert_eq!(
            parse_scopes("read, write").unwrap(),
            vec![Scope::Read, Scope::Write]
        );
        assert!(parse_scopes("admin").is_err());
        assert_eq!(parse_scopes("extract").unwrap(), vec![Scope::Extract]);
        assert!(Scope::Extract.granted_by(&[Scope::Write]));
        assert!(Scope::Extract.granted_by(&[Scope::Extract]));
        assert!(!Scope::Extract.granted_by(&[Scope::Read]));
        assert!(!Scope::Write.granted_by(&[Scope::Extract]));
        assert!(parse_scopes("").is_err());
        assert_eq!(parse_duration_secs("30d").unwrap(), 30 * 86_400);
        assert!(parse_duration_secs("30x").is_err());
        assert!(parse_duration_secs("0d").is_err());
    }

    #[test]
    fn durations_beyond_a_century_or_not_ascii_are_refused_not_panicked() {
        assert_eq!(parse_duration_secs("36500d").unwrap(), 36_500 * 86_400);
        for bad in [
            "36501d",
            "999999999d",
            "106751991167301d",
            "99999999999999999999999d",
            "3é",
            "é",
            "-5d",
            "+5d",
            "d",
            "",
        ] {
            assert!(parse_duration_secs(bad).is_err(), "{bad}");
        }
        assert!(parse_duration_secs("999999999d")
            .unwrap_err()
            .contains("36500d"));
    }
}
