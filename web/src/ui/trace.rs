//! `/traces/{trace_id}`: the waterfall. Spans nested by parent (the same tree walk as the
//! CLI), one row each with an SVG bar placed by start offset and sized by duration on a shared
//! axis, errors marked, events as marks on the bar; a row expands (`<details>`, no script) to
//! its attributes, resource, events, links and logs. The trace's logs follow the tree.
//!
//! Large traces stay usable: at most [`ROW_BUDGET`] rows are drawn. Subtrees are opened
//! shallowest first while their children fit; the rest stay collapsed with a count of the
//! spans below and a link that opens the page focused on that subtree (`?focus=<span id>`).

use std::collections::{BTreeMap, HashMap, VecDeque};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tracelight_model::correlate::{
    LogRecord, SpanRecord, TraceDetail, critical_path, parse_span_id, parse_trace_id, span_tree,
};
use tracelight_model::time::short_duration as duration;

use super::{Clock, PageError, Stamp, render, url};
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

/// Most span rows one page draws.
pub const ROW_BUDGET: usize = 1500;

pub struct LogLine {
    pub time: Stamp,
    /// The log view around this record (its trace's logs).
    pub href: String,
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
    pub critical: bool,
    /// Spans below this one that are not drawn (0: its subtree is open).
    pub hidden: usize,
    /// The page focused on this span's subtree.
    pub focus_href: String,
}

#[derive(Template)]
#[template(path = "trace.html")]
pub struct TracePage {
    pub trace_id: String,
    pub summary: String,
    /// Set when the page shows one subtree: its root span and the way back.
    pub focus: Option<(String, String)>,
    /// Spans of the trace (or subtree) that no row shows.
    pub not_drawn: usize,
    /// The trace's logs in the log view.
    pub logs_href: String,
    pub ticks: Vec<Tick>,
    pub rows: Vec<Row>,
    pub logs: Vec<LogLine>,
    pub exemplars: Vec<Exemplar>,
    /// What the answer may be missing (see `ScanStats::warnings`).
    pub warnings: Vec<String>,
    pub render_ms: String,
}

/// A metric point whose exemplar names this trace, linked to its chart around that time.
pub struct Exemplar {
    pub text: String,
    pub href: String,
}

/// The spans of `root`'s subtree (`root` first).
/// Linear however the span IDs repeat: as in `span_tree`, the first span with an ID owns
/// the children that name it, and every span is visited once.
fn subtree(spans: &[SpanRecord], root: &str) -> Vec<SpanRecord> {
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        first.entry(s.span_id.as_str()).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    for (i, s) in spans.iter().enumerate() {
        if let Some(&p) = s.parent_span_id.as_deref().and_then(|p| first.get(p))
            && p != i
        {
            children[p].push(i);
        }
    }
    let mut out = Vec::new();
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<usize> = first.get(root).copied().into_iter().collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        out.push(spans[i].clone());
        stack.extend(std::mem::take(&mut children[i]));
    }
    out
}

/// Unix nanoseconds as `HH:MM:SS.mmm` UTC (the date is in the summary).
fn clock_time(ns: i64) -> String {
    let ms = ns.div_euclid(1_000_000).rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn log_line(l: &LogRecord) -> LogLine {
    let window = [
        ("trace_id", l.trace_id.clone().unwrap_or_default()),
        ("start", (l.time_ns - 3_600_000_000_000).to_string()),
        ("end", (l.time_ns + 3_600_000_000_000).to_string()),
    ];
    let pairs: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    LogLine {
        href: if l.trace_id.as_deref().is_some_and(|t| parse_trace_id(t).is_ok()) {
            url("/logs", &pairs)
        } else {
            String::new()
        },
        time: Stamp::new(l.time_ns),
        severity: l.severity_text.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| l.severity_number.to_string()),
        service: l.service_name.clone(),
        span_id: l.span_id.clone().unwrap_or_default(),
        body: l.body.clone().unwrap_or_default(),
    }
}

/// Which rows to draw: subtrees open shallowest first while the drawn rows fit the budget.
/// Returns, per position of `tree`, whether it is drawn, and per drawn row the spans hidden
/// below it.
fn layout(tree: &[tracelight_model::correlate::TreeRow], budget: usize) -> Vec<Option<usize>> {
    // Subtree extent of each position: the tree is depth-first, so a subtree ends at the next
    // position that is not deeper.
    let n = tree.len();
    let mut end = vec![n; n];
    let mut open: Vec<usize> = Vec::new();
    for (p, r) in tree.iter().enumerate() {
        while open.last().is_some_and(|&q| tree[q].depth >= r.depth) {
            end[open.pop().unwrap_or_default()] = p;
        }
        open.push(p);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for (p, r) in tree.iter().enumerate() {
        while stack.last().is_some_and(|&q| tree[q].depth >= r.depth) {
            stack.pop();
        }
        match stack.last() {
            Some(&q) if r.depth > 0 => children[q].push(p),
            _ => roots.push(p),
        }
        stack.push(p);
    }
    let mut drawn = vec![false; n];
    let mut expanded = vec![false; n];
    let mut count = 0;
    let mut queue: VecDeque<usize> = VecDeque::new();
    for &r in roots.iter() {
        if count < budget {
            drawn[r] = true;
            count += 1;
            queue.push_back(r);
        }
    }
    while let Some(p) = queue.pop_front() {
        let kids = &children[p];
        // A node opens when all its children fit; a root that is alone opens partly, so a
        // very wide span still shows its first children.
        let partial = roots.len() == 1 && p == roots[0];
        if kids.is_empty() || (count + kids.len() > budget && !partial) {
            continue;
        }
        expanded[p] = true;
        for &k in kids {
            if count >= budget {
                break;
            }
            drawn[k] = true;
            count += 1;
            queue.push_back(k);
        }
    }
    // A collapsed row hides its whole subtree; an open one only the children it could not
    // fit (a partly opened root).
    (0..n)
        .map(|p| {
            drawn[p].then(|| {
                if expanded[p] {
                    children[p].iter().filter(|k| !drawn[**k]).map(|&k| end[k] - k).sum()
                } else {
                    end[p] - p - 1
                }
            })
        })
        .collect()
}

/// Builds the page model (kept apart from the handler so tests can time and inspect it).
/// `focus` narrows it to one span's subtree.
pub fn build(t: &TraceDetail, focus: Option<&str>) -> TracePage {
    let focused: Vec<SpanRecord>;
    let spans: &[SpanRecord] = match focus {
        Some(f) => {
            focused = subtree(&t.spans, f);
            &focused
        }
        None => &t.spans,
    };
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let pos = |ns: i64| format!("{:.2}", ((ns - start) as f64 / total * 1000.0).clamp(0.0, 1000.0));
    let mut colors: BTreeMap<&str, usize> = BTreeMap::new();
    for s in spans {
        let n = colors.len();
        colors.entry(s.service_name.as_str()).or_insert(n % 8);
    }
    let mut logs_by_span: HashMap<&str, Vec<LogLine>> = HashMap::new();
    for l in &t.logs {
        if let Some(sid) = l.span_id.as_deref() {
            logs_by_span.entry(sid).or_default().push(log_line(l));
        }
    }
    let critical = critical_path(spans);
    let tree = span_tree(spans);
    let shown = layout(&tree, ROW_BUDGET);
    let trace_id = parse_trace_id(&t.trace_id).unwrap_or_default();
    let mut not_drawn = 0;
    let rows: Vec<Row> = tree
        .into_iter()
        .zip(shown)
        .filter_map(|(tr, hidden)| {
            let Some(hidden) = hidden else {
                not_drawn += 1;
                return None;
            };
            let s = &spans[tr.index];
            let span_id = parse_span_id(&s.span_id).unwrap_or_default();
            Some(Row {
                focus_href: if hidden > 0 && !span_id.is_empty() {
                    url(&format!("/traces/{trace_id}"), &[("focus", span_id.as_str())])
                } else {
                    String::new()
                },
                span_id: s.span_id.clone(),
                prefix: tr.prefix,
                orphan: tr.orphan && focus.is_none_or(|f| f != s.span_id),
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
                critical: critical[tr.index],
                hidden,
            })
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
    let focus = focus.and_then(|f| {
        let root = spans.iter().find(|s| s.span_id == f)?;
        Some((format!("{}: {}", root.service_name, root.name), format!("/traces/{trace_id}")))
    });
    TracePage {
        logs_href: url(
            "/logs",
            &[
                ("trace_id", trace_id.as_str()),
                ("start", &(start - 3_600_000_000_000).to_string()),
                ("end", &(end + 3_600_000_000_000).to_string()),
            ],
        ),
        trace_id: t.trace_id.clone(),
        focus,
        not_drawn,
        summary,
        ticks,
        rows,
        logs: t.logs.iter().map(log_line).collect(),
        exemplars: t
            .exemplars
            .iter()
            .map(|e| Exemplar {
                text: format!(
                    "{} {} = {} at {}",
                    e.service_name,
                    e.metric,
                    e.value.map_or_else(|| "-".into(), |v| v.to_string()),
                    clock_time(e.time_ns)
                ),
                href: url(
                    "/metrics/explore",
                    &[
                        ("metric", e.metric.as_str()),
                        ("service", e.service_name.as_str()),
                        ("start", &(e.time_ns - 1_800_000_000_000).to_string()),
                        ("end", &(e.time_ns + 1_800_000_000_000).to_string()),
                    ],
                ),
            })
            .collect(),
        warnings: t.stats.warnings.clone(),
        render_ms: String::new(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceArgs {
    #[serde(default)]
    focus: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(trace_id): Path<String>,
    Query(args): Query<TraceArgs>,
) -> Result<Response, PageError> {
    let clock = Clock::start();
    let tenant = super::login::authorize_page(&state, &headers)?;
    let id = parse_trace_id(&trace_id).map_err(AppError::BadRequest)?;
    let focus =
        args.focus.filter(|f| !f.is_empty()).map(|f| parse_span_id(&f).map_err(AppError::BadRequest)).transpose()?;
    let detail = state.query.trace(&tenant, &id).await?;
    if let Some(f) = &focus
        && !detail.spans.iter().any(|s| &s.span_id == f)
    {
        return Err(AppError::NotFound(format!("trace {id} has no span {f}")).into());
    }
    // Building and rendering a large trace is CPU work: keep it off the runtime that serves
    // ingest and health checks.
    let page = tokio::task::spawn_blocking(move || {
        let mut page = build(&detail, focus.as_deref());
        page.render_ms = clock.ms();
        render(&page)
    })
    .await
    .map_err(|e| AppError::Internal(format!("trace page task failed: {e}")))?;
    Ok(page)
}
