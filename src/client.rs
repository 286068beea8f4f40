//! CLI commands that talk to a running server's API: `tracelight query`, `logs`, `trace`.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tracelight_model::correlate::{LogList, LogRecord, TraceDetail, parse_trace_id, span_tree};
use tracelight_model::time::short_duration as duration;

/// Sends SQL to `POST /api/v1/query` and prints a table (or the JSON with `json`).
pub async fn query(
    server: &str,
    sql: &str,
    start: Option<String>,
    end: Option<String>,
    token: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "sql": sql });
    if let Some(s) = start {
        body["start"] = Value::String(s);
    }
    if let Some(e) = end {
        body["end"] = Value::String(e);
    }
    let v: Value = call(server, "/api/v1/query", Some(&body), token).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let columns: Vec<String> =
        v["columns"].as_array().into_iter().flatten().map(|c| c.as_str().unwrap_or("").to_string()).collect();
    let rows: Vec<Vec<String>> = v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.as_array().into_iter().flatten().map(cell).collect())
        .collect();
    print!("{}", render_table(&columns, &rows));
    let stats = &v["stats"];
    eprintln!(
        "{} row{}{} in {:.1} ms ({} partitions, {} segments, {} head rows)",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if v["truncated"].as_bool() == Some(true) { " (truncated: add a LIMIT or narrow the query)" } else { "" },
        stats["elapsed_ms"].as_f64().unwrap_or(0.0),
        stats["partitions"],
        stats["segments"],
        stats["head_rows"],
    );
    Ok(())
}

/// `GET` an API path, or `POST` `body` to it, and decode the JSON answer; an API error
/// becomes the error message.
async fn call<T: serde::de::DeserializeOwned>(
    server: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> anyhow::Result<T> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let mut req = match body {
        Some(b) => client.post(&url).json(b),
        None => client.get(&url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("cannot reach tracelight at {server} (is `tracelight serve` running?)"))?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        bail!("{}", v["error"].as_str().unwrap_or(&text));
    }
    serde_json::from_str(&text).with_context(|| format!("unexpected answer from {url}: {status} {text}"))
}

/// What `tracelight logs` asks for.
pub struct LogsArgs<'a> {
    pub q: &'a str,
    pub since: &'a str,
    pub services: &'a [String],
    pub severity: Option<&'a str>,
    pub limit: usize,
    pub cursor: Option<&'a str>,
}

/// `tracelight logs QUERY`: matching log records, newest first.
pub async fn logs(server: &str, a: &LogsArgs<'_>, token: Option<&str>, json: bool) -> anyhow::Result<()> {
    let mut pairs = vec![("q", a.q.to_string()), ("since", a.since.to_string()), ("limit", a.limit.to_string())];
    pairs.extend(a.services.iter().map(|s| ("service", s.clone())));
    pairs.extend(a.severity.map(|s| ("severity", s.to_string())));
    pairs.extend(a.cursor.map(|c| ("cursor", c.to_string())));
    let query: String = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", tracelight_model::query::url_component(v)))
        .collect::<Vec<_>>()
        .join("&");
    if json {
        let v: Value = call(server, &format!("/api/v1/logs?{query}"), None, token).await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let list: LogList = call(server, &format!("/api/v1/logs?{query}"), None, token).await?;
    print!("{}", render_logs(&list.logs));
    eprintln!(
        "{} record{} in {:.1} ms ({} partitions, {} index segments, {} rows read){}",
        list.logs.len(),
        if list.logs.len() == 1 { "" } else { "s" },
        list.stats.elapsed_ms,
        list.stats.partitions,
        list.stats.segments,
        list.stats.rows_read,
        match &list.next_cursor {
            Some(c) => format!("; more with --cursor {c}"),
            None => String::new(),
        }
    );
    Ok(())
}

/// `tracelight trace ID`: the span tree with durations, then the trace's logs.
pub async fn trace(server: &str, id: &str, token: Option<&str>, json: bool) -> anyhow::Result<()> {
    let id = parse_trace_id(id).map_err(anyhow::Error::msg)?;
    if json {
        let v: Value = call(server, &format!("/api/v1/traces/{id}"), None, token).await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let t: TraceDetail = call(server, &format!("/api/v1/traces/{id}"), None, token).await?;
    print!("{}", render_trace(&t));
    eprintln!(
        "found in {:.1} ms ({} partitions, {} index segments, {} rows read)",
        t.stats.elapsed_ms, t.stats.partitions, t.stats.segments, t.stats.rows_read
    );
    Ok(())
}

/// Unix nanoseconds as RFC 3339 UTC with milliseconds.
pub fn utc(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
        .map_or_else(|| ns.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

pub fn render_logs(logs: &[LogRecord]) -> String {
    let mut out = String::new();
    for l in logs {
        let sev = l.severity_text.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| l.severity_number.to_string());
        let body = l.body.as_deref().unwrap_or("").replace(['\n', '\r'], " ");
        out += &format!("{} {sev:<5} {:<14} {body}", utc(l.time_ns), l.service_name);
        if let Some(t) = &l.trace_id {
            out += &format!("  trace={t}");
        }
        out += "\n";
    }
    out
}

pub fn render_trace(t: &TraceDetail) -> String {
    let mut out = String::new();
    if let Some(s) = &t.summary {
        out += &format!(
            "trace {} · {} span{} · {} · {} error{} · {} · started {}\n",
            t.trace_id,
            s.span_count,
            if s.span_count == 1 { "" } else { "s" },
            s.services.join(", "),
            s.error_count,
            if s.error_count == 1 { "" } else { "s" },
            duration(s.duration_ns),
            utc(s.start_ns)
        );
    } else {
        out += &format!("trace {} (no spans stored)\n", t.trace_id);
    }
    let start = t.summary.as_ref().map_or(0, |s| s.start_ns);
    for row in span_tree(&t.spans) {
        let s = &t.spans[row.index];
        let orphan = if row.orphan { " (parent not received)" } else { "" };
        let status = if s.status_code == "ERROR" {
            format!("  ERROR{}", s.status_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())
        } else {
            String::new()
        };
        out += &format!(
            "{}{} {}  {}  +{}{status}{orphan}\n",
            row.prefix,
            s.service_name,
            s.name,
            duration(s.duration_ns),
            duration(s.start_ns - start),
        );
    }
    if !t.logs.is_empty() {
        out += &format!("logs ({}):\n", t.logs.len());
        for line in render_logs(&t.logs).lines() {
            out += &format!("  {line}\n");
        }
    }
    if !t.exemplars.is_empty() {
        out += &format!("exemplars ({}):\n", t.exemplars.len());
        for e in &t.exemplars {
            out += &format!(
                "  {} {} {} = {}\n",
                utc(e.time_ns),
                e.service_name,
                e.metric,
                e.value.map_or_else(|| "-".into(), |v| v.to_string())
            );
        }
    }
    out
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain-text table with a header rule; wide cells are cut at 80 characters.
pub fn render_table(columns: &[String], rows: &[Vec<String>]) -> String {
    let clip = |s: &str| -> String {
        let one_line = s.replace(['\n', '\r', '\t'], " ");
        if one_line.chars().count() > 80 {
            format!("{}…", one_line.chars().take(79).collect::<String>())
        } else {
            one_line
        }
    };
    let columns: Vec<String> = columns.iter().map(|c| clip(c)).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| clip(c)).collect()).collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(&columns);
    out += &(widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-") + "\n");
    for r in &rows {
        out += &line(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use tracelight_model::correlate::SpanRecord;

    use super::*;

    fn span(id: &str, parent: Option<&str>, service: &str, start: i64, dur: i64) -> SpanRecord {
        SpanRecord {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(String::from),
            name: format!("op-{id}"),
            kind: "SERVER".into(),
            service_name: service.into(),
            start_ns: start,
            end_ns: start + dur,
            duration_ns: dur,
            status_code: if id == "c" { "ERROR".into() } else { "UNSET".into() },
            status_message: (id == "c").then(|| "declined".into()),
            attributes: Default::default(),
            resource_attributes: Default::default(),
            scope_name: None,
            events: vec![],
            links: vec![],
        }
    }

    #[test]
    fn traces_print_as_an_indented_tree() {
        let spans = vec![
            span("a", None, "front", 0, 300_000_000),
            span("b", Some("a"), "cart", 10_000_000, 50_000_000),
            span("c", Some("a"), "pay", 70_000_000, 200_000_000),
            span("d", Some("c"), "db", 80_000_000, 900_000),
            span("e", Some("zz"), "late", 5_000_000, 1_000),
        ];
        let t = TraceDetail {
            trace_id: "t".into(),
            summary: tracelight_engine_summary(&spans),
            spans,
            logs: vec![],
            exemplars: vec![],
            stats: Default::default(),
        };
        let text = render_trace(&t);
        let tree: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            tree,
            vec![
                "front op-a  300.0ms  +0µs",
                "├─ cart op-b  50.0ms  +10.0ms",
                "└─ pay op-c  200.0ms  +70.0ms  ERROR: declined",
                "   └─ db op-d  900µs  +80.0ms",
                "late op-e  1µs  +5.0ms (parent not received)",
            ]
        );
    }

    fn tracelight_engine_summary(spans: &[SpanRecord]) -> Option<tracelight_model::correlate::TraceSummary> {
        Some(tracelight_model::correlate::TraceSummary {
            trace_id: "t".into(),
            root_service: Some("front".into()),
            root_name: Some("op-a".into()),
            start_ns: 0,
            duration_ns: spans.iter().map(|s| s.end_ns).max()?,
            span_count: spans.len() as u64,
            error_count: 1,
            services: vec![],
        })
    }

    #[test]
    fn tables_align_and_clip() {
        let t = render_table(
            &["service_name".into(), "count(*)".into()],
            &[vec!["checkout".into(), "12".into()], vec!["a\nb".into(), "3".into()]],
        );
        assert_eq!(t, "service_name | count(*)\n-------------+---------\ncheckout     | 12\na b          | 3\n");
    }
}
