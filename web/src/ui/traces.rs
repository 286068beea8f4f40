//! `/traces`: trace search. A form (service, operation, duration range, status, attributes,
//! time range) over the same parameters as `/api/v1/traces`, a scatter of the found traces'
//! durations over time, and the list; a dot or a row opens the trace.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tracelight_model::correlate::{TraceList, parse_trace_id};
use tracelight_model::time::short_duration;

use super::chart::{Chart, Point};
use super::{Clock, PageError, RangeView, Stamp, render};
use crate::search::{Params, trace_query};
use crate::{AppError, AppState};

pub struct TraceRow {
    pub href: String,
    pub trace_id: String,
    pub start: Stamp,
    pub root: String,
    pub duration: String,
    pub spans: u64,
    pub errors: u64,
    pub services: String,
}

/// What the form shows (the request's own values, echoed back escaped).
#[derive(Default)]
pub struct Form {
    pub service: String,
    pub name: String,
    pub min_duration: String,
    pub max_duration: String,
    pub status: String,
    pub attrs: String,
}

#[derive(Template)]
#[template(path = "traces.html")]
pub struct TracesPage {
    pub form: Form,
    pub range: RangeView,
    pub chart: Chart,
    pub rows: Vec<TraceRow>,
    pub next: String,
    /// What the answer may be missing (see `ScanStats::warnings`).
    pub warnings: Vec<String>,
    pub render_ms: String,
}

/// The form's one `attrs` box (`key=value, key2=value2`) as the API's `attr.key=value`.
fn attr_pairs(attrs: &str) -> Result<Vec<(String, String)>, AppError> {
    attrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((format!("attr.{}", k.trim()), v.trim().to_string())),
            _ => Err(AppError::BadRequest(format!("attribute filter {a:?} must look like key=value"))),
        })
        .collect()
}

pub fn build(form: Form, range: RangeView, list: &TraceList, next: String) -> TracesPage {
    let (start, end) = (range.start_ns, range.end_ns);
    let points = list
        .traces
        .iter()
        .filter_map(|t| {
            let id = parse_trace_id(&t.trace_id).ok()?;
            Some(Point {
                time_ns: t.start_ns,
                value: t.duration_ns as f64 / 1e6,
                title: format!(
                    "{} {} · {} · {} spans{}",
                    t.root_service.as_deref().unwrap_or("?"),
                    t.root_name.as_deref().unwrap_or("(root not received)"),
                    short_duration(t.duration_ns),
                    t.span_count,
                    if t.error_count > 0 { format!(" · {} errors", t.error_count) } else { String::new() }
                ),
                href: format!("/traces/{id}"),
                color: if t.error_count > 0 { 8 } else { 0 },
            })
        })
        .collect();
    let chart = Chart::new("duration of the traces found", start, end)
        .dots(start, end, points, &|v| short_duration((v * 1e6) as i64));
    let rows = list
        .traces
        .iter()
        .filter_map(|t| {
            let id = parse_trace_id(&t.trace_id).ok()?;
            Some(TraceRow {
                href: format!("/traces/{id}"),
                trace_id: id,
                start: Stamp::new(t.start_ns),
                root: match (&t.root_service, &t.root_name) {
                    (Some(s), Some(n)) => format!("{s}: {n}"),
                    _ => "(root span not received)".into(),
                },
                duration: short_duration(t.duration_ns),
                spans: t.span_count,
                errors: t.error_count,
                services: t.services.join(", "),
            })
        })
        .collect();
    TracesPage { form, range, chart, rows, next, warnings: list.stats.warnings.clone(), render_ms: String::new() }
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let clock = Clock::start();
    let tenant = super::login::authorize_page(&state, &headers)?;
    let raw = Params::new(pairs.clone());
    let attrs = raw.get("attrs").unwrap_or("").to_string();
    let mut api_pairs: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "attrs").collect();
    api_pairs.extend(attr_pairs(&attrs)?);
    let p = Params::new(api_pairs);
    let form = Form {
        service: p.get("service").unwrap_or("").into(),
        name: p.get("name").unwrap_or("").into(),
        min_duration: p.get("min_duration").unwrap_or("").into(),
        max_duration: p.get("max_duration").unwrap_or("").into(),
        status: p.get("status").unwrap_or("").to_ascii_lowercase(),
        attrs,
    };
    let keep = [
        ("service", form.service.as_str()),
        ("name", form.name.as_str()),
        ("min_duration", form.min_duration.as_str()),
        ("max_duration", form.max_duration.as_str()),
        ("status", form.status.as_str()),
        ("attrs", form.attrs.as_str()),
    ];
    let range = RangeView::parse(&p, "/traces", &keep)?;
    let p = if range.since.is_empty() { p.without("since") } else { p };
    let mut q = trace_query(&p)?;
    if p.get("limit").is_none() {
        q.limit = 100;
    }
    q.tenant = Some(tenant);
    let list = state.query.traces(q).await?;
    let next = range.next_page("/traces", &keep, list.next_cursor.as_deref());
    let mut page = build(form, range, &list, next);
    page.render_ms = clock.ms();
    Ok(render(&page))
}
