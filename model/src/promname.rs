//! OpenTelemetry metric and attribute names as Prometheus names: the OpenTelemetry
//! specification's Prometheus compatibility rules ("OTLP Metric points to Prometheus"), applied
//! as Prometheus's OTLP translator does by default (escaping with underscores, unit and type
//! suffixes). The Prometheus API answers with these names and resolves its selectors through
//! them; nothing is stored under them.
//!
//! - A metric name is split into tokens at every character outside `[a-zA-Z0-9:]` and joined
//!   with `_` (so runs collapse and leading or trailing separators vanish).
//! - The unit is appended as words: its main part mapped (`ms` → `milliseconds`, `By` →
//!   `bytes`, `1` → nothing), its part after `/` as `per_<unit>` (`By/s` →
//!   `bytes_per_second`); a part in braces (`{request}`) adds nothing, and a word already among
//!   the name's tokens is not repeated.
//! - A monotonic sum (a counter) ends in `_total`; a gauge of unit `1` ends in `_ratio`.
//! - A name starting with a digit gets a leading `_`.
//! - An attribute key becomes a label name with every character outside `[a-zA-Z0-9_]`
//!   replaced by `_`; a leading digit gets `key_` in front, a single leading `_` gets `key`.

/// The main part of a unit as a word (UCUM → Prometheus base units).
fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

/// The part of a unit after `/` as a word (singular).
fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// A unit word with characters outside `[a-zA-Z0-9:]` as `_`, runs of `_` collapsed and a
/// leading `_` removed.
fn clean_unit(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars().map(|c| if is_name_char(c) { c } else { '_' }) {
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out.trim_start_matches('_').to_string()
}

/// The unit's suffix words: (main, per), each empty when there is none.
fn unit_suffixes(unit: &str) -> (String, String) {
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (unit.trim(), None),
    };
    let usable = |u: &str| !u.is_empty() && !u.contains(['{', '}']);
    let main = if usable(main) { clean_unit(unit_word(main)) } else { String::new() };
    let per = match per {
        Some(p) if usable(p) => clean_unit(&format!("per_{}", per_unit_word(p))),
        _ => String::new(),
    };
    (main, per)
}

/// What kind of Prometheus series an OTLP metric becomes, for its name's type suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A monotonic sum: `_total`.
    Counter,
    /// A gauge: `_ratio` when its unit is `1`.
    Gauge,
    /// Anything else (a non-monotonic sum, a histogram, a summary): no type suffix.
    Other,
}

impl MetricType {
    /// From the `metrics` table's `kind` and `is_monotonic`.
    pub fn of(kind: &str, is_monotonic: bool) -> MetricType {
        match kind {
            "sum" if is_monotonic => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            _ => MetricType::Other,
        }
    }
}

/// The Prometheus name of an OTLP metric `name` of unit `unit`; `None` when nothing of the
/// name survives (a name of only separators).
pub fn metric_name(name: &str, unit: &str, kind: MetricType) -> Option<String> {
    let mut tokens: Vec<String> =
        name.split(|c| !is_name_char(c)).filter(|t| !t.is_empty()).map(String::from).collect();
    let (mut main, mut per) = unit_suffixes(unit);
    if tokens.contains(&main) {
        main.clear();
    }
    if per == "per_" {
        per.clear();
    } else {
        per = per.trim_end_matches('_').to_string();
        if tokens.contains(&per) {
            per.clear();
        }
    }
    if !per.is_empty() {
        main = main.trim_end_matches('_').to_string();
    }
    tokens.extend([main, per].into_iter().filter(|t| !t.is_empty()));
    let mut suffix = |word: &str| {
        tokens.retain(|t| t != word);
        tokens.push(word.to_string());
    };
    match kind {
        MetricType::Counter => suffix("total"),
        MetricType::Gauge if unit == "1" => suffix("ratio"),
        _ => {}
    }
    let joined = tokens.join("_");
    if joined.is_empty() || joined.chars().all(|c| c == '_') {
        return None;
    }
    Some(if joined.starts_with(|c: char| c.is_ascii_digit()) { format!("_{joined}") } else { joined })
}

/// The Prometheus label name of an attribute key; `None` when nothing of it survives.
pub fn label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let clean: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if clean != key && clean.chars().all(|c| c == '_') {
        return None;
    }
    Some(if clean.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{clean}")
    } else if clean.starts_with('_') && !clean.starts_with("__") {
        format!("key{clean}")
    } else {
        clean
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetricType::*;

    #[test]
    fn metric_names_follow_the_specification() {
        let cases = [
            // The issue's own example, and the translator's documented ones.
            ("http.server.request.duration", "s", Other, "http_server_request_duration_seconds"),
            ("http.server.duration", "s", Other, "http_server_duration_seconds"),
            ("requests.count", "1", Counter, "requests_count_total"),
            ("memory.usage", "By", Gauge, "memory_usage_bytes"),
            // Units: braces add nothing, `1` adds ratio on gauges only, per-units.
            ("http.server.active_requests", "{request}", Other, "http_server_active_requests"),
            ("process.cpu.utilization", "1", Gauge, "process_cpu_utilization_ratio"),
            ("system.cpu.utilization", "1", Other, "system_cpu_utilization"),
            ("network.io", "By/s", Gauge, "network_io_bytes_per_second"),
            ("speed", "m/s", Gauge, "speed_meters_per_second"),
            ("packets", "{packet}/s", Counter, "packets_per_second_total"),
            ("packets", "{packet}/{interval}", Counter, "packets_total"),
            ("ratio.of.things", "%", Gauge, "ratio_of_things_percent"),
            ("storage", "TiBy", Gauge, "storage_tebibytes"),
            // A unit word already in the name is not repeated; total and ratio move last.
            ("request.duration.seconds", "s", Other, "request_duration_seconds"),
            ("bytes.sent", "By", Counter, "bytes_sent_total"),
            ("total.requests", "", Counter, "requests_total"),
            ("hits.ratio", "1", Gauge, "hits_ratio"),
            // Escaping: runs collapse, edges vanish, colons stay, a leading digit gets `_`.
            ("my-metric__name..x", "", Other, "my_metric_name_x"),
            ("_leading.and.trailing_", "", Other, "leading_and_trailing"),
            ("ns:sub.metric", "", Other, "ns:sub_metric"),
            ("2xx.responses", "", Counter, "_2xx_responses_total"),
            ("température", "Cel", Gauge, "temp_rature_celsius"),
            // An unknown unit passes through, cleaned.
            ("queue.depth", "items/batch", Gauge, "queue_depth_items_per_batch"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(metric_name(name, unit, kind).as_deref(), Some(want), "{name} [{unit}] {kind:?}");
        }
        assert_eq!(metric_name("...", "", Other), None);
        assert_eq!(metric_name("", "", Counter).as_deref(), Some("total"));
    }

    #[test]
    fn kinds_map_to_types() {
        assert_eq!(MetricType::of("sum", true), Counter);
        assert_eq!(MetricType::of("sum", false), Other);
        assert_eq!(MetricType::of("gauge", false), Gauge);
        assert_eq!(MetricType::of("histogram", false), Other);
    }

    #[test]
    fn label_names_follow_the_specification() {
        let cases = [
            ("http.method", "http_method"),
            ("http.response.status_code", "http_response_status_code"),
            ("123invalid", "key_123invalid"),
            ("_private", "key_private"),
            ("__reserved__", "__reserved__"),
            ("a:b", "a_b"),
            ("service.name", "service_name"),
        ];
        for (key, want) in cases {
            assert_eq!(label_name(key).as_deref(), Some(want), "{key}");
        }
        assert_eq!(label_name(""), None);
        assert_eq!(label_name("..."), None);
        assert_eq!(label_name("__").as_deref(), Some("__"), "unchanged, so kept");
    }
}
