//! Webhook rules: the events there are, how a delivery is signed and laid out, when a failed
//! attempt is tried again, and which addresses a webhook may never reach.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::time::Duration;

/// Every event a webhook can subscribe to, with what it tells.
pub const EVENTS: &[(&str, &str)] = &[
    (
        "pipeline.completed",
        "A run settled and every document is complete",
    ),
    (
        "pipeline.partial",
        "A run settled with some documents partial or in error",
    ),
    (
        "pipeline.failed",
        "A run settled with no document complete or partial",
    ),
    ("pipeline.cancelled", "A run was cancelled"),
    ("rerun.enqueued", "A rerun of a run was accepted"),
    ("rerun.completed", "A rerun settled"),
    (
        "review.item_created",
        "A field was held for review (or flagged for a look)",
    ),
    ("review.decision_made", "A reviewer decided a field"),
    (
        "data_product.ready",
        "A data product was created, or its run settled again",
    ),
    ("extraction.complete", "An extraction finished"),
    ("extraction.failed", "An extraction failed"),
    (
        "document.failed",
        "A document failed: at intake, or in a run's phase",
    ),
];

/// Sent only by `POST /v1/webhooks/{id}/test`, whatever the webhook subscribes to.
pub const TEST_EVENT: &str = "webhook.test";

/// Subscribes to every event.
pub const ALL_EVENTS: &str = "*";

pub fn known_event(name: &str) -> bool {
    name == ALL_EVENTS || EVENTS.iter().any(|(e, _)| *e == name)
}

/// `sha256=` and the hex HMAC-SHA256 of the raw body, keyed by the whole secret (`whsec_…`
/// included).
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `X-Talonic-Signature` value: one signature per live secret, newest first, comma-separated
/// (two only while a rotated-out secret is still in its overlap window).
pub fn signature_header(secrets: &[&str], body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| sign(s, body))
        .collect::<Vec<_>>()
        .join(",")
}

/// The body of one attempt: the event, the delivery's id (the same for every attempt), the
/// attempt's time (so a receiver can refuse a stale replay), the event's data and its id.
pub fn payload(
    event: &str,
    delivery_id: &str,
    timestamp: &str,
    event_id: &str,
    data: &Value,
) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("event".into(), event.into());
    m.insert("delivery_id".into(), delivery_id.into());
    m.insert("timestamp".into(), timestamp.into());
    m.insert("data".into(), data.clone());
    m.insert("event_id".into(), event_id.into());
    // A map of strings and JSON values always serializes.
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

/// The pause before attempt `failed + 1`, after `failed` failed attempts: the schedule's entry
/// with up to ±10% jitter (`unit` in [0, 1) picks where), or `None` when the schedule is spent
/// and the delivery has failed.
pub fn retry_delay(schedule: &[Duration], failed: u32, unit: f64) -> Option<Duration> {
    let base = schedule.get(usize::try_from(failed).ok()?.checked_sub(1)?)?;
    let factor = 0.9 + 0.2 * unit.clamp(0.0, 1.0);
    Some(base.mul_f64(factor))
}

/// Why an address may not be reached by a webhook, or `None` when it may.
pub fn forbidden_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() {
        Some("private")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let first = s[0];
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // Forms that carry an IPv4 address reach that address: judge it.
    let compatible = s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let carried = if compatible || nat64 {
        Some(embedded(s[6], s[7])) // ::a.b.c.d, 64:ff9b::a.b.c.d
    } else if first == 0x2002 {
        Some(embedded(s[1], s[2])) // 6to4
    } else {
        None
    };
    if let Some(v4) = carried {
        return forbidden_v4(v4);
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfec0 {
        Some("private (site-local)")
    } else if ip.is_multicast() {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

/// A webhook URL's own faults, before any name is looked up: the scheme, a host, no
/// credentials, and no literal address of a forbidden range (unless private ones are allowed).
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("url must be http or https, not {}", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    let host = match url.host_str() {
        None | Some("") => return Err("url has no host".into()),
        Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
    };
    if raw.len() > 2048 {
        return Err("url is longer than 2048 characters".into());
    }
    if allow_private {
        return Ok(url);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if let Some(why) = forbidden_ip(ip) {
            return Err(format!(
                "url points to a {why} address ({ip}); a server started with --webhooks-allow-private may"
            ));
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_published_test_vector() {
        let body = br#"{"event":"extraction.complete","delivery_id":"dlv_test123","timestamp":"2026-01-15T10:00:00Z","data":{"extraction_id":"ext_abc","document_id":"doc_xyz","schema_id":"sch_123","status":"complete","confidence":0.95}}"#;
        assert_eq!(
            sign("whsec_test_secret_do_not_use_in_production", body),
            "sha256=1e23bdc14b051f268d4fd9544387b51b074186c51c5b6c76ce700956308d168a"
        );
        assert_eq!(
            signature_header(&["whsec_a", "whsec_b"], b"x"),
            format!("{},{}", sign("whsec_a", b"x"), sign("whsec_b", b"x"))
        );
    }

    #[test]
    fn a_payload_lays_out_the_event_like_the_test_vector() {
        let data = serde_json::json!({"extraction_id": "ext_abc"});
        let body = payload(
            "extraction.complete",
            "dlv_1",
            "2026-01-15T10:00:00Z",
            "evt_1",
            &data,
        );
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"event":"extraction.complete","delivery_id":"dlv_1","timestamp":"2026-01-15T10:00:00Z","data":{"extraction_id":"ext_abc"},"event_id":"evt_1"}"#
        );
    }

    #[test]
    fn retries_follow_the_schedule_with_bounded_jitter_then_stop() {
        let s: Vec<Duration> = [60, 300, 1800, 14400]
            .iter()
            .map(|&x| Duration::from_secs(x))
            .collect();
        assert_eq!(retry_delay(&s, 0, 0.5), None, "no failure, no retry");
        for (failed, base) in [(1, 60.0), (2, 300.0), (3, 1800.0), (4, 14400.0)] {
            let lo = retry_delay(&s, failed, 0.0).unwrap().as_secs_f64();
            let hi = retry_delay(&s, failed, 0.999).unwrap().as_secs_f64();
            assert!((lo - base * 0.9).abs() < 1e-6, "{lo}");
            assert!(hi < base * 1.1 && hi > base * 1.09, "{hi}");
        }
        assert_eq!(
            retry_delay(&s, 5, 0.5),
            None,
            "after 4 h the delivery fails"
        );
    }

    #[test]
    fn private_and_special_addresses_are_refused_by_name() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("fd00::1", "private (unique local)"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:101::1", "private"),
            ("fec0::1", "private (site-local)"),
            ("224.0.0.1", "broadcast, multicast or reserved"),
            ("255.255.255.255", "broadcast, multicast or reserved"),
        ] {
            assert_eq!(forbidden_ip(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ok in [
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert_eq!(forbidden_ip(ok.parse().unwrap()), None, "{ok}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        assert!(check_url("https://hooks.example.com/q", false).is_ok());
        for (bad, says) in [
            ("ftp://example.com/", "http or https"),
            ("not a url", "not a URL"),
            ("http://user:pw@example.com/", "credentials"),
            ("http://127.0.0.1:9/", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://10.0.0.7/", "private"),
            ("http://0x7f000001/", "loopback"),
        ] {
            let e = check_url(bad, false).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert!(known_event("review.decision_made") && known_event("*"));
        assert!(!known_event("review.nothing"));
    }
}
