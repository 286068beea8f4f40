//! Times and durations as the API, CLI and config accept them: RFC 3339 or Unix nanoseconds;
//! durations like `250ms`, `5m`, `3d`.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    #[error("invalid time {0:?}: use RFC 3339 (2026-01-02T03:04:05Z) or Unix nanoseconds")]
    Time(String),
    #[error("invalid duration {0:?}: use a number and a unit, e.g. 250ms, 5m, 3d")]
    Duration(String),
}

/// Parses RFC 3339 or an integer of Unix nanoseconds into Unix nanoseconds.
pub fn parse_time_ns(s: &str) -> Result<i64, TimeError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<i64>().map_err(|_| TimeError::Time(s.to_string()));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .ok_or_else(|| TimeError::Time(s.to_string()))
}

/// Parses `250ms`, `5m`, `3d`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, TimeError> {
    humantime::parse_duration(s.trim()).map_err(|_| TimeError::Duration(s.to_string()))
}

/// Unix nanoseconds now.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Hours since the Unix epoch, the unit of time partitions.
pub fn hour_of(ns: i64) -> i64 {
    ns.div_euclid(3_600_000_000_000)
}

/// `yyyy-mm-dd` and `hh` of an hour number (the storage layout's partition directories).
pub fn partition_dirs(hour: i64) -> (String, String) {
    let secs = hour.saturating_mul(3600);
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    (dt.format("%Y-%m-%d").to_string(), dt.format("%H").to_string())
}

/// A duration in nanoseconds, short: `850µs`, `12.3ms`, `1.20s`.
pub fn short_duration(ns: i64) -> String {
    match ns {
        n if n < 1_000_000 => format!("{}µs", n / 1_000),
        n if n < 1_000_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n => format!("{:.2}s", n as f64 / 1e9),
    }
}

/// A round bucket width that splits `range_ns` into at most `max_buckets` buckets (1 s, 5 s,
/// 10 s, 30 s, 1 m, 5 m, 10 m, 30 m, 1 h, 3 h, 6 h, 12 h, 1 d, then whole days).
pub fn pick_step(range_ns: i64, max_buckets: i64) -> i64 {
    const S: i64 = 1_000_000_000;
    const STEPS: [i64; 13] = [
        S,
        5 * S,
        10 * S,
        30 * S,
        60 * S,
        300 * S,
        600 * S,
        1800 * S,
        3600 * S,
        3 * 3600 * S,
        6 * 3600 * S,
        12 * 3600 * S,
        86400 * S,
    ];
    let want = (range_ns.max(1) + max_buckets.max(1) - 1) / max_buckets.max(1);
    STEPS.iter().copied().find(|s| *s >= want).unwrap_or_else(|| (want + 86400 * S - 1) / (86400 * S) * 86400 * S)
}

/// A time window as the UI and API take it: a preset length back from now (`15m`, `1h`, …),
/// or `from`/`to` (RFC 3339 or Unix nanoseconds; `to` defaults to now). Returns
/// `[start_ns, end_ns)`.
pub fn resolve_window(
    window: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    now: i64,
) -> Result<(i64, i64), TimeError> {
    let end = match to.filter(|s| !s.trim().is_empty()) {
        Some(t) => parse_time_ns(t)?,
        None => now,
    };
    let start = match from.filter(|s| !s.trim().is_empty()) {
        Some(f) => parse_time_ns(f)?,
        None => {
            let d = parse_duration(window.filter(|w| !w.trim().is_empty()).unwrap_or("1h"))?;
            end.saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64)
        }
    };
    Ok((start, end))
}

/// Unix nanoseconds as RFC 3339 UTC with milliseconds (`2026-11-29T21:56:23.123Z`).
pub fn rfc3339_ms(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ns.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_both_forms() {
        assert_eq!(parse_time_ns("1700000000000000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time_ns("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time_ns("2023-11-14T23:13:20+01:00"), Ok(1_700_000_000_000_000_000));
        assert!(parse_time_ns("yesterday").is_err());
        assert!(parse_time_ns("99999999999999999999999").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86400)));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn steps_are_round_and_bounded() {
        const S: i64 = 1_000_000_000;
        assert_eq!(pick_step(3600 * S, 60), 60 * S);
        assert_eq!(pick_step(900 * S, 60), 30 * S);
        assert_eq!(pick_step(86400 * S, 60), 1800 * S);
        assert_eq!(pick_step(7 * 86400 * S, 60), 3 * 3600 * S);
        assert_eq!(pick_step(365 * 86400 * S, 60), 7 * 86400 * S);
        assert_eq!(pick_step(1, 60), S);
    }

    #[test]
    fn windows_resolve_from_presets_or_bounds() {
        let now = 10_000_000_000_000;
        assert_eq!(resolve_window(Some("15m"), None, None, now), Ok((now - 900_000_000_000, now)));
        assert_eq!(resolve_window(None, None, None, now), Ok((now - 3_600_000_000_000, now)));
        assert_eq!(resolve_window(Some("1h"), Some("1000"), Some("2000"), now), Ok((1000, 2000)));
        assert!(resolve_window(Some("soon"), None, None, now).is_err());
        assert_eq!(rfc3339_ms(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn partitions_are_utc_hours() {
        let ns = parse_time_ns("2026-11-29T16:42:13Z").unwrap();
        assert_eq!(partition_dirs(hour_of(ns)), ("2026-11-29".to_string(), "16".to_string()));
        assert_eq!(hour_of(-1), -1);
    }
}
