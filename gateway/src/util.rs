//! Small Docker-compatibility helpers: query booleans, filters, times, human durations.

use crate::error::ApiError;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Docker's loose boolean (`httputils.BoolValue`): "", 0, no, false, none are false.
pub fn query_bool(q: &HashMap<String, String>, key: &str) -> bool {
    match q.get(key) {
        None => false,
        Some(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "no" | "false" | "none"
        ),
    }
}

/// Like [`query_bool`] but `default` when the key is absent.
pub fn query_bool_or(q: &HashMap<String, String>, key: &str, default: bool) -> bool {
    if q.contains_key(key) {
        query_bool(q, key)
    } else {
        default
    }
}

/// Parses the `filters` query parameter: `{"key":{"value":true}}` or the legacy
/// `{"key":["value"]}`.
pub fn parse_filters(
    q: &HashMap<String, String>,
) -> Result<BTreeMap<String, BTreeSet<String>>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(raw) = q.get("filters") else {
        return Ok(out);
    };
    if raw.trim().is_empty() {
        return Ok(out);
    }
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid filter: expected a JSON object"))?;
    for (k, vals) in obj {
        let set: BTreeSet<String> = match vals {
            serde_json::Value::Object(m) => m
                .iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(true))
                .map(|(s, _)| s.clone())
                .collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter: {k}"))),
        };
        out.insert(k.clone(), set);
    }
    Ok(out)
}

/// RFC 3339 with nanoseconds, UTC, as Docker prints times.
pub fn rfc3339_nanos(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Go's zero time, which Docker shows for "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Parses an RFC 3339 time; None for empty or malformed.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if s.is_empty() {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Docker's `units.HumanDuration`, used in `docker ps` status text.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < 1 {
        return "Less than a second".into();
    }
    if secs == 1 {
        return "1 second".into();
    }
    if secs < 60 {
        return format!("{secs} seconds");
    }
    let mins = d.num_minutes();
    if mins == 1 {
        return "About a minute".into();
    }
    if mins < 60 {
        return format!("{mins} minutes");
    }
    let hours = d.num_hours();
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", hours / 24 / 365)
}

/// Parses Docker's `since`/`until` log parameters (unix seconds, possibly fractional,
/// or RFC 3339) into unix nanoseconds; 0 for absent.
pub fn parse_unix_time_param(v: Option<&String>) -> Result<i64, ApiError> {
    let Some(v) = v else { return Ok(0) };
    let v = v.trim();
    if v.is_empty() || v == "0" {
        return Ok(0);
    }
    if let Some(t) = parse_time(v) {
        return Ok(t.timestamp_nanos_opt().unwrap_or(0));
    }
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid time value {v:?}")))?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let scale = 10i64.pow(9 - digits.len() as u32);
        nanos = digits
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid time value {v:?}")))?
            * scale;
    }
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// daemon.json as a JSON document (`{}` when there is none).
pub fn daemon_json(config_file: Option<&std::path::Path>) -> anyhow::Result<serde_json::Value> {
    berth_kit::reload::read_daemon_json(config_file).map_err(anyhow::Error::msg)
}

/// daemon.json's `log-driver` (default json-file) and `log-opts`.
pub fn log_defaults(
    doc: &serde_json::Value,
) -> (String, std::collections::HashMap<String, String>) {
    let driver = doc
        .get("log-driver")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("json-file")
        .to_string();
    let opts = doc
        .get("log-opts")
        .and_then(|v| v.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    (driver, opts)
}

/// The `until` filter of a prune, in unix nanos (0 = none).
pub fn until_filter(filters: &BTreeMap<String, BTreeSet<String>>) -> Result<i64, ApiError> {
    Ok(filters
        .get("until")
        .and_then(|v| v.iter().next())
        .map(|v| parse_unix_time_param(Some(v)))
        .transpose()?
        .unwrap_or(0))
}

/// Whether an object passes the `label` (every one must hold) and `label!` (none may)
/// filters; `has(key, Some(value))` tests key=value, `has(key, None)` the key alone.
pub fn labels_pass(
    filters: &BTreeMap<String, BTreeSet<String>>,
    has: impl Fn(&str, Option<&str>) -> bool,
) -> bool {
    let holds = |v: &String| match v.split_once('=') {
        Some((k, val)) => has(k, Some(val)),
        None => has(v, None),
    };
    filters
        .get("label")
        .is_none_or(|vals| vals.iter().all(holds))
        && filters
            .get("label!")
            .is_none_or(|vals| !vals.iter().any(holds))
}

/// A 200 whose body streams JSON objects (events, stats) as they come.
pub fn json_stream(body: axum::body::Body) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = (axum::http::StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A new 64-hex object ID.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filters_need_every_label_and_refuse_any_negated_one() {
        let f = |pairs: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (k, v) in pairs {
                m.entry(k.to_string()).or_default().insert(v.to_string());
            }
            m
        };
        let labels: HashMap<&str, &str> = [("tier", "web"), ("keep", "")].into();
        let has = |k: &str, v: Option<&str>| match v {
            Some(v) => labels.get(k) == Some(&v),
            None => labels.contains_key(k),
        };
        assert!(labels_pass(&f(&[]), has));
        assert!(labels_pass(
            &f(&[("label", "tier=web"), ("label", "keep")]),
            has
        ));
        assert!(!labels_pass(
            &f(&[("label", "tier=web"), ("label", "x")]),
            has
        ));
        assert!(!labels_pass(&f(&[("label", "tier=db")]), has));
        assert!(!labels_pass(&f(&[("label!", "keep")]), has));
        assert!(labels_pass(&f(&[("label!", "keep=yes")]), has));
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn booleans_are_loose_like_docker() {
        assert!(query_bool(&q(&[("all", "1")]), "all"));
        assert!(query_bool(&q(&[("all", "True")]), "all"));
        assert!(!query_bool(&q(&[("all", "0")]), "all"));
        assert!(!query_bool(&q(&[("all", "no")]), "all"));
        assert!(!query_bool(&q(&[]), "all"));
        assert!(query_bool_or(&q(&[]), "stream", true));
    }

    #[test]
    fn filters_accept_both_forms() {
        let f = parse_filters(&q(&[(
            "filters",
            r#"{"name":{"web":true},"status":["exited"]}"#,
        )]))
        .unwrap();
        assert!(f["name"].contains("web"));
        assert!(f["status"].contains("exited"));
        assert!(parse_filters(&q(&[("filters", "{bad")])).is_err());
    }

    #[test]
    fn human_durations_match_docker() {
        let s = chrono::Duration::seconds;
        assert_eq!(human_duration(s(0)), "Less than a second");
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(5)), "5 seconds");
        assert_eq!(human_duration(s(61)), "About a minute");
        assert_eq!(human_duration(s(180)), "3 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(3 * 3600)), "3 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
    }

    #[test]
    fn unix_time_params() {
        assert_eq!(parse_unix_time_param(None).unwrap(), 0);
        assert_eq!(
            parse_unix_time_param(Some(&"12".into())).unwrap(),
            12_000_000_000
        );
        assert_eq!(
            parse_unix_time_param(Some(&"1.5".into())).unwrap(),
            1_500_000_000
        );
        assert!(parse_unix_time_param(Some(&"x".into())).is_err());
    }

    #[test]
    fn ids_are_64_hex() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
    }
}
