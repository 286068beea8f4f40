//! Requests and answers of the correlation queries: a trace by ID with its logs and exemplars,
//! trace search, log search, and the services overview. The engine answers them; the API,
//! the CLI and the UI render them. IDs are lower-case hex on the way out; times are Unix
//! nanoseconds.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::query::ScanStats;

pub type Attributes = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub time_ns: i64,
    pub name: String,
    pub attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: Attributes,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: String,
    pub service_name: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub duration_ns: i64,
    pub status_code: String,
    pub status_message: Option<String>,
    pub attributes: Attributes,
    pub resource_attributes: Attributes,
    pub scope_name: Option<String>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub time_ns: i64,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub severity_number: i32,
    pub severity_text: Option<String>,
    pub body: Option<String>,
    pub service_name: String,
    pub attributes: Attributes,
    pub resource_attributes: Attributes,
}

/// A metric point's exemplar that names a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExemplarRef {
    pub metric: String,
    pub service_name: String,
    pub time_ns: i64,
    pub value: Option<f64>,
    pub trace_id: String,
    pub span_id: Option<String>,
    /// The data point's attributes.
    pub attributes: Attributes,
}

/// `GET /api/v1/traces/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceDetail {
    pub trace_id: String,
    pub summary: Option<TraceSummary>,
    /// Ordered by start time.
    pub spans: Vec<SpanRecord>,
    /// Ordered by time.
    pub logs: Vec<LogRecord>,
    pub exemplars: Vec<ExemplarRef>,
    pub stats: ScanStats,
}

/// One trace in a search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The span without a parent (`None` while the root has not arrived).
    pub root_service: Option<String>,
    pub root_name: Option<String>,
    pub start_ns: i64,
    /// Last span end minus first span start.
    pub duration_ns: i64,
    pub span_count: u64,
    pub error_count: u64,
    /// Sorted.
    pub services: Vec<String>,
}

/// `GET /api/v1/traces?…`: a trace matches when one of its spans matches every filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceQuery {
    pub service: Option<String>,
    pub name: Option<String>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    /// `ERROR`, `OK` or `UNSET`.
    pub status: Option<String>,
    /// Span attribute equalities (`attr.K=V`).
    pub attributes: Vec<(String, String)>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub tenant: Option<crate::Tenant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceList {
    pub traces: Vec<TraceSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    pub stats: ScanStats,
}

/// `GET /api/v1/logs?…`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    pub q: String,
    pub services: Vec<String>,
    pub severities: Vec<String>,
    pub trace_id: Option<String>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub tenant: Option<crate::Tenant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogList {
    pub logs: Vec<LogRecord>,
    pub next_cursor: Option<String>,
    pub stats: ScanStats,
}

/// RED numbers of one service's entry spans (kind SERVER or CONSUMER, or without a parent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub service: String,
    pub requests: u64,
    pub rate_per_sec: f64,
    pub errors: u64,
    pub error_ratio: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Calls from spans of `parent` to child spans in `child` (a different service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEdge {
    pub parent: String,
    pub child: String,
    pub calls: u64,
    /// Child spans with status ERROR.
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceMap {
    pub start_ns: i64,
    pub end_ns: i64,
    pub services: Vec<ServiceStats>,
    pub edges: Vec<ServiceEdge>,
    pub stats: ScanStats,
}

/// Matching log records counted per time bucket: bucket `i` is
/// `[start_ns + i * step_ns, start_ns + (i + 1) * step_ns)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogHistogram {
    pub start_ns: i64,
    pub step_ns: i64,
    pub counts: Vec<u64>,
    pub total: u64,
    pub stats: ScanStats,
}

/// RED numbers of one service's entry spans in one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceBucket {
    pub service: String,
    /// Index of the bucket from the series' `start_ns`.
    pub bucket: usize,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Per-service RED numbers over time (buckets without requests are absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSeries {
    pub start_ns: i64,
    pub step_ns: i64,
    pub buckets: Vec<ServiceBucket>,
    pub stats: ScanStats,
}

/// One metric stored in a window: what the explorer's picker lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricInfo {
    pub name: String,
    /// `gauge`, `sum`, `histogram`, `exponential_histogram` or `summary`.
    pub kind: String,
    pub unit: String,
    pub description: String,
    /// For sums: a counter (only goes up).
    pub monotonic: bool,
    pub points: u64,
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricCatalog {
    pub metrics: Vec<MetricInfo>,
    pub stats: ScanStats,
}

/// A chart of one metric: an aggregation per time bucket, one line per value of `group_by`.
#[derive(Debug, Clone, Default)]
pub struct MetricQuery {
    pub name: String,
    pub aggregation: Option<crate::metrics::Aggregation>,
    /// An attribute key (of the point, or of the resource; `service.name` for the service).
    pub group_by: Option<String>,
    pub service: Option<String>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
    pub tenant: Option<crate::Tenant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricChart {
    pub info: MetricInfo,
    /// The aggregation applied (the default of the kind when none was asked for).
    pub aggregation: crate::metrics::Aggregation,
    pub start_ns: i64,
    pub step_ns: i64,
    pub series: Vec<crate::metrics::SeriesValues>,
    /// Attribute keys seen on the points: what the chart can be grouped by.
    pub attribute_keys: Vec<String>,
    /// Exemplars in the window that name a trace (histograms carry them).
    pub exemplars: Vec<ExemplarRef>,
    pub stats: ScanStats,
}

/// One span's place in the tree of its trace, in display order (depth first, children by
/// start time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRow {
    /// Index into the spans given to [`span_tree`].
    pub index: usize,
    pub depth: usize,
    /// Box-drawing prefix, e.g. `│  ├─ `.
    pub prefix: String,
    /// A span whose parent is not among the spans (not received yet, or dropped).
    pub orphan: bool,
}

/// Depth up to which tree prefixes are drawn.
pub const MAX_DRAWN_DEPTH: usize = 32;

/// Orders spans as a tree: roots (and orphans) first by start, each followed by its subtree.
/// Iterative, so a trace deeper than the stack allows still renders.
pub fn span_tree(spans: &[SpanRecord]) -> Vec<TreeRow> {
    use std::collections::HashMap;
    // Span IDs may repeat (a buggy or hostile client): the first span with an ID owns its
    // children, so each span is some span's child at most once and the walk stays linear.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        first.entry(s.span_id.as_str()).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.as_deref().filter(|p| *p != s.span_id).and_then(|p| first.get(p)) {
            Some(&p) if p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|i| (spans[*i].start_ns, *i));
    by_start(&mut roots);
    for v in children.iter_mut() {
        by_start(v);
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    // (span, prefix for its children, is last child, depth)
    let mut stack: Vec<(usize, String, bool, usize)> =
        roots.iter().rev().map(|r| (*r, String::new(), true, 0)).collect();
    while let Some((i, prefix, last, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue; // A cycle of parent IDs: show each span once.
        }
        let s = &spans[i];
        let branch = if depth == 0 {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        out.push(TreeRow {
            index: i,
            depth,
            prefix: format!("{prefix}{branch}"),
            orphan: depth == 0 && s.parent_span_id.is_some(),
        });
        let kids = std::mem::take(&mut children[i]);
        // Past MAX_DRAWN_DEPTH the prefix stops growing (a deep chain would otherwise cost
        // depth² bytes); the depth is written instead.
        let child_prefix = if depth == 0 {
            prefix
        } else if depth >= MAX_DRAWN_DEPTH {
            format!("{}[{}] ", prefix.split('[').next().unwrap_or_default(), depth + 1)
        } else {
            format!("{prefix}{}", if last { "   " } else { "│  " })
        };
        for (k, c) in kids.iter().enumerate().rev() {
            stack.push((*c, child_prefix.clone(), k == kids.len() - 1, depth + 1));
        }
    }
    // Spans only reachable through a cycle.
    for (i, done) in seen.iter().enumerate() {
        if !done {
            out.push(TreeRow { index: i, depth: 0, prefix: String::new(), orphan: true });
        }
    }
    out
}

/// Which spans are on the critical path: from the root that ends last, each span's child that
/// ends last, then the child that ends last before that one started, and so on (what the
/// parent was waiting on), recursively. Iterative; a cycle of parent IDs cannot loop.
pub fn critical_path(spans: &[SpanRecord]) -> Vec<bool> {
    use std::collections::HashMap;
    let index: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.as_deref().and_then(|p| index.get(p)) {
            Some(&p) if p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    let mut on = vec![false; spans.len()];
    let Some(&root) = roots.iter().max_by_key(|i| (spans[**i].end_ns, std::cmp::Reverse(spans[**i].start_ns))) else {
        return on;
    };
    let mut stack = vec![root];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut on[i], true) {
            continue;
        }
        let kids = &mut children[i];
        kids.sort_by_key(|c| std::cmp::Reverse(spans[*c].end_ns));
        let mut t = spans[i].end_ns;
        for &c in kids.iter() {
            // A child that outlives its parent (clock skew) counts as ending with it.
            if spans[c].end_ns.min(spans[i].end_ns) <= t {
                stack.push(c);
                t = spans[c].start_ns;
            }
        }
    }
    on
}

/// Most results at one exact timestamp a log cursor may skip: a search then asks the index for
/// at most `limit + MAX_CURSOR_SKIP` hits, so a forged cursor cannot size an allocation.
pub const MAX_CURSOR_SKIP: u64 = 10_000;

/// Where the next page starts: before `time_ns`, after the `skip` results at exactly
/// `time_ns` (logs), or after trace `key` at `time_ns` (traces). Opaque to clients, and
/// hostile when it comes back: `skip` is bounded by [`MAX_CURSOR_SKIP`], `key` by 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub time_ns: i64,
    pub skip: u64,
    pub key: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}:{}:{}", self.time_ns, self.skip, self.key))
    }

    pub fn decode(s: &str) -> Result<Cursor, String> {
        let bad = || format!("invalid cursor {s:?}: pass back the next_cursor of the previous page unchanged");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let mut parts = text.splitn(3, ':');
        let time_ns = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let skip = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let key = parts.next().ok_or_else(bad)?.to_string();
        if skip > MAX_CURSOR_SKIP || key.len() > 64 {
            return Err(bad());
        }
        Ok(Cursor { time_ns, skip, key })
    }
}

/// Parses a trace ID (32 hex digits, any case) to lower case; a clear message otherwise.
pub fn parse_trace_id(s: &str) -> Result<String, String> {
    parse_hex_id(s, 32, "trace ID")
}

/// Parses a span ID (16 hex digits, any case) to lower case.
pub fn parse_span_id(s: &str) -> Result<String, String> {
    parse_hex_id(s, 16, "span ID")
}

fn parse_hex_id(s: &str, len: usize, what: &str) -> Result<String, String> {
    let t = s.trim();
    // The message echoes at most 40 characters of what was sent, not a 20 KB path.
    let shown = || match s.char_indices().nth(40) {
        Some((i, _)) => format!("{:?}…", &s[..i]),
        None => format!("{s:?}"),
    };
    if t.len() != len || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("malformed {what} {}: expected {len} hexadecimal digits", shown()));
    }
    if t.bytes().all(|b| b == b'0') {
        return Err(format!("malformed {what} {}: all zeros is not a valid ID", shown()));
    }
    Ok(t.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lower_cased_and_checked() {
        assert_eq!(parse_trace_id("5B8EFFF798038103D269B633813FC60C").unwrap(), "5b8efff798038103d269b633813fc60c");
        for bad in
            ["", "xyz", "5b8efff798038103d269b633813fc60", "00000000000000000000000000000000", "g".repeat(32).as_str()]
        {
            assert!(parse_trace_id(bad).is_err(), "{bad}");
        }
        assert!(parse_span_id("EEE19B7EC3C1B174").is_ok());
        let long = parse_trace_id(&"é".repeat(20_000)).unwrap_err();
        assert!(long.len() < 200 && long.contains("é\"…:"), "{long}");
        assert!(parse_trace_id("xyz").unwrap_err().contains("\"xyz\":"));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor { time_ns: -5, skip: 3, key: "ab:cd".into() };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("!!!").is_err());
        assert!(Cursor::decode("aGVsbG8").is_err());
    }

    #[test]
    fn forged_cursors_with_huge_skips_or_keys_are_refused() {
        let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        // The cursor that aborted the process (an allocation of ~10^15 bytes in the index).
        assert!(Cursor::decode(&b64("9000000000000000000:35184372088832:")).is_err());
        assert!(Cursor::decode(&b64(&format!("1:{}:", MAX_CURSOR_SKIP + 1))).is_err());
        assert!(Cursor::decode(&b64(&format!("1:0:{}", "k".repeat(65)))).is_err());
        assert!(Cursor::decode(&b64("1:-1:")).is_err());
        let edge = Cursor { time_ns: i64::MIN, skip: MAX_CURSOR_SKIP, key: "k".repeat(64) };
        assert_eq!(Cursor::decode(&edge.encode()).unwrap(), edge);
    }

    fn span(id: &str, parent: Option<&str>, start: i64, end: i64) -> SpanRecord {
        SpanRecord {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(String::from),
            name: id.into(),
            kind: "INTERNAL".into(),
            service_name: "s".into(),
            start_ns: start,
            end_ns: end,
            duration_ns: end - start,
            status_code: "UNSET".into(),
            status_message: None,
            attributes: Default::default(),
            resource_attributes: Default::default(),
            scope_name: None,
            events: vec![],
            links: vec![],
        }
    }

    #[test]
    fn the_critical_path_follows_what_each_parent_waited_on() {
        // root 0..100: a 0..30, b 10..60 (overlaps a, ends later), c 65..95; c has c1 70..90.
        // The path: root, c (ends last), b (ends last before c started), then nothing ends
        // before b started at 10 except... a ends at 30 > 10, so a is off the path.
        let spans = vec![
            span("root", None, 0, 100),
            span("a", Some("root"), 0, 30),
            span("b", Some("root"), 10, 60),
            span("c", Some("root"), 65, 95),
            span("c1", Some("c"), 70, 90),
            span("late", Some("c1"), 91, 120),
        ];
        let on = critical_path(&spans);
        let names: Vec<&str> = spans.iter().zip(&on).filter(|(_, on)| **on).map(|(s, _)| s.name.as_str()).collect();
        assert_eq!(names, vec!["root", "b", "c", "c1", "late"]);
        // A cycle of parents neither loops nor panics.
        let cyc = vec![span("x", Some("y"), 0, 10), span("y", Some("x"), 0, 10)];
        assert_eq!(critical_path(&cyc).len(), 2);
        assert!(critical_path(&[]).is_empty());
    }

    #[test]
    fn duplicate_span_ids_are_drawn_once_each_in_linear_work() {
        // 20,000 spans share one ID and 20,000 more name it as parent: once each duplicate
        // cloned the whole children list (400M copies, 11.8 s for 25,000 in release).
        let n = 20_000;
        let mut spans: Vec<SpanRecord> = (0..n).map(|i| span("00000000000000aa", None, i, 10)).collect();
        let kids: Vec<String> = (0..n).map(|i| format!("{:016x}", i + 1_000)).collect();
        spans.extend(kids.iter().map(|k| span(k, Some("00000000000000aa"), 5, 6)));
        let rows = span_tree(&spans);
        assert_eq!(rows.len(), spans.len());
        let mut seen = vec![0u8; spans.len()];
        for r in &rows {
            seen[r.index] += 1;
        }
        assert!(seen.iter().all(|c| *c == 1), "every span exactly once");
        // The children hang under the first span with their parent's ID.
        assert_eq!(rows[0].index, 0);
        assert!(rows[1..=n as usize].iter().all(|r| r.depth == 1 && r.index >= n as usize));
    }

    #[test]
    fn deep_chains_keep_prefixes_short() {
        let ids: Vec<String> = (0..5000).map(|i| format!("{i:016x}")).collect();
        let spans: Vec<SpanRecord> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| span(id, (i > 0).then(|| ids[i - 1].as_str()), i as i64, 10_000))
            .collect();
        let rows = span_tree(&spans);
        assert_eq!(rows.len(), 5000);
        assert_eq!(rows[4999].depth, 4999);
        assert!(rows.iter().all(|r| r.prefix.chars().count() < 4 * MAX_DRAWN_DEPTH), "{}", rows[4999].prefix);
        assert!(rows[4999].prefix.contains("[4999]"), "{}", rows[4999].prefix);
    }
}
