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
    fn partitions_are_utc_hours() {
        let ns = parse_time_ns("2026-11-29T16:42:13Z").unwrap();
        assert_eq!(partition_dirs(hour_of(ns)), ("2026-11-29".to_string(), "16".to_string()));
        assert_eq!(hour_of(-1), -1);
    }
}
