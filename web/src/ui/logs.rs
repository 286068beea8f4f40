//! `/logs`: full-text log search over the same parameters as `/api/v1/logs`, a histogram of
//! the matching volume over the window (exact counts from the index; a bar narrows the window
//! to itself), results newest first, and live tail: `/logs/tail` streams new matching records
//! as server-sent events, which the page's script appends (the page works without it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use tracelight_model::QueryService;
use tracelight_model::correlate::{LogList, LogQuery, LogRecord, parse_span_id, parse_trace_id};
use tracelight_model::time::{now_ns, pick_step, rfc3339_ms};

use super::chart::Chart;
use super::{Clock, PageError, RangeView, Stamp, render, url};
use crate::search::{Params, log_query};
use crate::{AppError, AppState};

/// Buckets of the histogram.
const BARS: i64 = 60;
/// How often live tail looks for new records, and how far back (records arrive late).
const TAIL_EVERY: Duration = Duration::from_secs(1);
const TAIL_LOOKBACK_NS: i64 = 60_000_000_000;
/// Most records one tail poll sends.
const TAIL_BATCH: usize = 500;
/// A tail stream ends after this long; the browser reconnects on its own.
const TAIL_LIFETIME: Duration = Duration::from_secs(3600);

pub struct LogRow {
    /// Identifies a record across the page and the tail (the script skips what it shows).
    pub key: String,
    pub time: Stamp,
    pub severity: String,
    /// CSS class of the severity band: trace, debug, info, warn, error, fatal.
    pub band: &'static str,
    pub service: String,
    pub body: String,
    /// The waterfall of its trace (empty without a well-formed trace ID).
    pub trace_href: String,
    pub trace_id: String,
    pub span_href: String,
    pub span_id: String,
}

#[derive(Default)]
pub struct Form {
    pub q: String,
    pub service: String,
    pub severity: String,
}

#[derive(Template)]
#[template(path = "logs.html")]
pub struct LogsPage {
    pub form: Form,
    pub range: RangeView,
    pub total: u64,
    pub histogram: Chart,
    pub rows: Vec<LogRow>,
    pub next: String,
    /// The live-tail stream of this search.
    pub tail: String,
    pub severities: &'static [&'static str],
    /// What the answer may be missing (see `ScanStats::warnings`).
    pub warnings: Vec<String>,
    pub render_ms: String,
}

pub const SEVERITIES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

fn band(n: i32) -> &'static str {
    match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unknown",
    }
}

/// FNV-1a over what tells two records apart.
fn key(l: &LogRecord) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let severity = l.severity_number.to_string();
    let parts = [
        l.service_name.as_str(),
        l.trace_id.as_deref().unwrap_or(""),
        l.span_id.as_deref().unwrap_or(""),
        &severity,
        l.body.as_deref().unwrap_or(""),
    ];
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{}-{h:016x}", l.time_ns)
}

pub fn row(l: &LogRecord) -> LogRow {
    let trace_id = l.trace_id.as_deref().and_then(|t| parse_trace_id(t).ok()).unwrap_or_default();
    let span_id = l.span_id.as_deref().and_then(|s| parse_span_id(s).ok()).unwrap_or_default();
    let trace_href = if trace_id.is_empty() { String::new() } else { format!("/traces/{trace_id}") };
    LogRow {
        key: key(l),
        time: Stamp::new(l.time_ns),
        severity: l.severity_text.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| l.severity_number.to_string()),
        band: band(l.severity_number),
        service: l.service_name.clone(),
        body: l.body.clone().unwrap_or_default(),
        span_href: if trace_href.is_empty() || span_id.is_empty() {
            String::new()
        } else {
            format!("{trace_href}#span-{span_id}")
        },
        trace_href,
        trace_id,
        span_id,
    }
}

/// The search's parameters other than the range and cursor, for links.
fn keep(form: &Form) -> [(&str, &str); 3] {
    [("q", form.q.as_str()), ("service", form.service.as_str()), ("severity", form.severity.as_str())]
}

pub fn build(form: Form, range: RangeView, list: &LogList, counts: &[u64], step: i64, next: String) -> LogsPage {
    let (start, end) = (range.start_ns, range.end_ns);
    let kept = keep(&form);
    let histogram = Chart::new("matching records over time", start, end).bars(start, end, step, counts, &|t0, t1| {
        let (a, b) = (t0.to_string(), t1.to_string());
        let mut pairs = kept.to_vec();
        pairs.extend([("start", a.as_str()), ("end", b.as_str())]);
        url("/logs", &pairs)
    });
    let tail = url("/logs/tail", &[&kept[..], &[("from", &now_ns().to_string())]].concat());
    LogsPage {
        total: counts.iter().sum(),
        form,
        range,
        histogram,
        rows: list.logs.iter().map(row).collect(),
        next,
        tail,
        severities: &SEVERITIES,
        warnings: Vec::new(),
        render_ms: String::new(),
    }
}

fn form_of(p: &Params) -> Form {
    Form {
        q: p.get("q").unwrap_or("").into(),
        service: p.get("service").unwrap_or("").into(),
        severity: p.get("severity").unwrap_or("").to_ascii_uppercase(),
    }
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let clock = Clock::start();
    let tenant = super::login::authorize_page(&state, &headers)?;
    let p = Params::new(pairs);
    let form = form_of(&p);
    let range = RangeView::parse(&p, "/logs", &keep(&form))?;
    let p = if range.since.is_empty() { p.without("since") } else { p };
    let mut q = log_query(&p)?;
    q.tenant = Some(tenant);
    if p.get("limit").is_none() {
        q.limit = 100;
    }
    let step = pick_step(range.end_ns - range.start_ns, BARS);
    let (list, histogram) = tokio::try_join!(state.query.logs(q.clone()), state.query.log_histogram(q, step))?;
    let next = range.next_page("/logs", &keep(&form), list.next_cursor.as_deref());
    let mut page = build(form, range, &list, &histogram.counts, step, next);
    page.warnings = super::warnings(&[&list.stats, &histogram.stats]);
    page.render_ms = clock.ms();
    Ok(render(&page))
}

/// A tail record as the script reads it (it builds the row with text nodes, never HTML).
fn event(l: &LogRecord) -> Event {
    let r = row(l);
    let data = serde_json::json!({
        "key": r.key,
        "time": rfc3339_ms(l.time_ns),
        "text": r.time.text,
        "severity": r.severity,
        "band": r.band,
        "service": r.service,
        "body": r.body,
        "trace_id": r.trace_id,
        "span_id": r.span_id,
    });
    Event::default().event("log").data(data.to_string())
}

struct Tail {
    query: std::sync::Arc<dyn QueryService>,
    q: LogQuery,
    from: i64,
    seen: HashMap<String, i64>,
    started: std::time::Instant,
    pending: Vec<Event>,
    /// Set after an error: the stream sends its notice and ends (the browser's reconnect then
    /// gets the error as a status, not an endless stream of notices).
    stopped: bool,
}

/// How far from now a tail's `from` may be.
const TAIL_FROM_RANGE_NS: i64 = 86_400_000_000_000;

impl Tail {
    /// The records that matched since the last poll, oldest first.
    async fn poll(&mut self) -> Result<Vec<Event>, String> {
        let now = now_ns();
        let mut q = self.q.clone();
        q.start_ns = self.from.saturating_sub(TAIL_LOOKBACK_NS).max(now - TAIL_LOOKBACK_NS);
        q.end_ns = now + 1;
        q.limit = TAIL_BATCH;
        let list = self.query.logs(q.clone()).await.map_err(|e| e.to_string())?;
        self.seen.retain(|_, t| *t >= q.start_ns);
        let mut out = Vec::new();
        for l in list.logs.iter().rev() {
            if self.seen.insert(key(l), l.time_ns).is_none() {
                out.push(event(l));
            }
        }
        if list.next_cursor.is_some() {
            out.push(Event::default().event("notice").data(format!(
                "more than {TAIL_BATCH} new records in a second; showing the newest. Narrow the search to see all."
            )));
        }
        Ok(out)
    }
}

pub async fn tail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let tenant = super::login::authorize_page(&state, &headers)?;
    let p = Params::new(pairs);
    let now = now_ns();
    let from = match p.get("from") {
        Some(f) => f.parse::<i64>().ok().filter(|f| f.abs_diff(now) <= TAIL_FROM_RANGE_NS as u64).ok_or_else(|| {
            AppError::BadRequest(format!("from must be Unix nanoseconds within a day of now, not {f:?}"))
        })?,
        None => now,
    };
    let mut q = log_query(&p.without("from"))?;
    q.tenant = Some(tenant);
    let mut tail = Tail {
        query: state.query.clone(),
        q,
        from,
        seen: HashMap::new(),
        started: std::time::Instant::now(),
        pending: Vec::new(),
        stopped: false,
    };
    // The first poll runs before the stream starts, so a bad query is a 400, not a stream.
    let mut first = tail.poll().await.map_err(AppError::BadRequest)?;
    first.reverse();
    tail.pending = first;
    let events = stream::unfold(tail, |mut t| async move {
        loop {
            if let Some(e) = t.pending.pop() {
                return Some((Ok::<_, Infallible>(e), t));
            }
            if t.stopped || t.started.elapsed() > TAIL_LIFETIME {
                return None;
            }
            match t.poll().await {
                Ok(mut events) => {
                    events.reverse();
                    t.pending = events;
                }
                Err(e) => {
                    t.stopped = true;
                    return Some((Ok(Event::default().event("notice").data(format!("tail stopped: {e}"))), t));
                }
            }
            if t.pending.is_empty() {
                tokio::time::sleep(TAIL_EVERY).await;
            }
        }
    });
    Ok(sse(events))
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}
