//! `/traces/{trace_id}`: the waterfall. Spans nested by parent (the same tree walk as the
//! CLI), one row each with an SVG bar placed by start offset and sized by duration on a shared
//! axis, errors marked, events as marks on the bar; a row expands (`<details>`, no script) to
//! its attributes, resource, events, links and logs. The trace's logs follow the tree.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tracelight_model::correlate::{LogRecord, TraceDetail, parse_trace_id, span_tree};
use tracelight_model::time::short_duration as duration;

use super::{Clock, PageError, render};
use crate::api::authorize;
use crate::{AppError, AppState};

pub struct Tick {
    pub x: String,
    pub text: String,
}

pub struct Mark {
    pub x: String,
    pub offset: String,
    pub name: String,
}

pub struct LogLine {
    pub time: String,
    pub severity: String,
    pub service: String,
    pub span_id: String,
    pub body: String,
}

pub struct Row {
    pub span_id: String,
    pub prefix: String,
    pub orphan: bool,
    pub service: String,
    pub color: usize,
    pub name: String,
    pub kind: String,
    pub x: String,
    pub w: String,
    pub offset: String,
    pub duration: String,
    pub error: bool,
    pub status_message: String,
    pub attributes: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
    pub events: Vec<Mark>,
    pub links: Vec<String>,
    pub logs: Vec<LogLine>,
}

#[derive(Template)]
#[template(path = "trace.html")]
pub struct TracePage {
    pub trace_id: String,
    pub summary: String,
    pub ticks: Vec<Tick>,
    pub rows: Vec<Row>,
    pub logs: Vec<LogLine>,
    pub exemplars: Vec<String>,
    pub render_ms: String,
}

/// Unix nanoseconds as `HH:MM:SS.mmm` UTC (the date is in the summary).
fn clock_time(ns: i64) -> String {
    let ms = ns.div_euclid(1_000_000).rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn log_line(l: &LogRecord) -> LogLine {
    LogLine {
        time: clock_time(l.time_ns),
        severity: l.severity_text.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| l.severity_number.to_string()),
        service: l.service_name.clone(),
        span_id: l.span_id.clone().unwrap_or_default(),
        body: l.body.clone().unwrap_or_default(),
    }
}

/// Builds the page model (kept apart from the handler so tests can time and inspect it).
pub fn build(t: &TraceDetail) -> TracePage {
    let start = t.spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = t.spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let pos = |ns: i64| format!("{:.2}", ((ns - start) as f64 / total * 1000.0).clamp(0.0, 1000.0));
    let mut colors: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &t.spans {
        let n = colors.len();
        colors.entry(s.service_name.as_str()).or_insert(n % 8);
    }
    let mut logs_by_span: HashMap<&str, Vec<LogLine>> = HashMap::new();
    for l in &t.logs {
        if let Some(sid) = l.span_id.as_deref() {
            logs_by_span.entry(sid).or_default().push(log_line(l));
        }
    }
    let rows = span_tree(&t.spans)
        .into_iter()
        .map(|tr| {
            let s = &t.spans[tr.index];
            Row {
                span_id: s.span_id.clone(),
                prefix: tr.prefix,
                orphan: tr.orphan,
                service: s.service_name.clone(),
                color: colors[s.service_name.as_str()],
                name: s.name.clone(),
                kind: s.kind.clone(),
                x: pos(s.start_ns),
                // At least a hairline, so zero-length spans stay visible.
                w: format!("{:.2}", (s.duration_ns as f64 / total * 1000.0).max(1.0)),
                offset: duration(s.start_ns - start),
                duration: duration(s.duration_ns),
                error: s.status_code == "ERROR",
                status_message: s.status_message.clone().unwrap_or_default(),
                attributes: s.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                resource: s.resource_attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                events: s
                    .events
                    .iter()
                    .map(|e| Mark { x: pos(e.time_ns), offset: duration(e.time_ns - start), name: e.name.clone() })
                    .collect(),
                // Only well-formed IDs become links.
                links: s.links.iter().filter_map(|l| parse_trace_id(&l.trace_id).ok()).collect(),
                logs: logs_by_span.remove(s.span_id.as_str()).unwrap_or_default(),
            }
        })
        .collect();
    let ticks = (0..=4).map(|i| Tick { x: format!("{}", i * 250), text: duration((end - start) * i / 4) }).collect();
    let summary = match &t.summary {
        Some(s) => format!(
            "{} span{} · {} service{} ({}) · {} error{} · {} · started {} UTC",
            s.span_count,
            if s.span_count == 1 { "" } else { "s" },
            s.services.len(),
            if s.services.len() == 1 { "" } else { "s" },
            s.services.join(", "),
            s.error_count,
            if s.error_count == 1 { "" } else { "s" },
            duration(s.duration_ns),
            clock_time(s.start_ns),
        ),
        None => "No spans of this trace have arrived; its logs and exemplars are below.".into(),
    };
    TracePage {
        trace_id: t.trace_id.clone(),
        summary,
        ticks,
        rows,
        logs: t.logs.iter().map(log_line).collect(),
        exemplars: t
            .exemplars
            .iter()
            .map(|e| {
                format!(
                    "{} {} = {} at {}",
                    e.service_name,
                    e.metric,
                    e.value.map_or_else(|| "-".into(), |v| v.to_string()),
                    clock_time(e.time_ns)
                )
            })
            .collect(),
        render_ms: String::new(),
    }
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(trace_id): Path<String>,
) -> Result<Response, PageError> {
    let clock = Clock::start();
    let tenant = authorize(&state, &headers)?;
    let id = parse_trace_id(&trace_id).map_err(AppError::BadRequest)?;
    let detail = state.query.trace(&tenant, &id).await?;
    let mut page = build(&detail);
    page.render_ms = clock.ms();
    Ok(render(&page))
}
