//! `/` — the services overview: RED numbers of every service over a chosen window, a chart of
//! each over time, and the service map (services on a circle, an arrow per parent → child service edge with calls and
//! errors), drawn as SVG here.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tracelight_model::correlate::{ServiceMap, ServiceSeries};
use tracelight_model::time::pick_step;

use super::chart::{Chart, Line};
use super::{Clock, PageError, RangeView, render, url};
use crate::AppState;
use crate::search::Params;

const MAP: f64 = 560.0;
/// Buckets of the per-service charts.
const POINTS: i64 = 60;

pub struct ServiceRow {
    pub name: String,
    /// The fragment of its charts (encoded, as names are attacker-controlled).
    pub anchor: Option<String>,
    /// The trace search of this service in the same window.
    pub traces: String,
    pub requests: u64,
    pub rate: String,
    pub error_ratio: String,
    pub failing: bool,
    pub p50: String,
    pub p95: String,
    pub p99: String,
}

pub struct Node {
    pub name: String,
    pub x: String,
    pub y: String,
    pub ty: String,
}

pub struct Edge {
    pub x1: String,
    pub y1: String,
    pub x2: String,
    pub y2: String,
    pub lx: String,
    pub ly: String,
    pub text: String,
    pub label: String,
    pub errors: u64,
}

/// One service's charts: request rate, error ratio, latency percentiles.
pub struct ServiceCharts {
    pub name: String,
    pub anchor: String,
    pub rate: Chart,
    pub errors: Chart,
    pub latency: Chart,
}

#[derive(Template)]
#[template(path = "services.html")]
pub struct ServicesPage {
    pub range: RangeView,
    pub services: Vec<ServiceRow>,
    pub charts: Vec<ServiceCharts>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub map_size: String,
    /// What the answer may be missing (see `ScanStats::warnings`).
    pub warnings: Vec<String>,
    pub render_ms: String,
}

fn ms(v: f64) -> String {
    if v < 1.0 { format!("{:.0}µs", v * 1000.0) } else { format!("{v:.1}ms") }
}

/// Charts of every service with requests, from its per-bucket RED numbers.
fn charts(m: &ServiceMap, series: &ServiceSeries, end_ns: i64) -> Vec<ServiceCharts> {
    let n = ((end_ns - series.start_ns + series.step_ns - 1) / series.step_ns).max(0) as usize;
    let secs = series.step_ns as f64 / 1e9;
    m.services
        .iter()
        .filter(|s| s.requests > 0)
        .map(|s| {
            // No request in a bucket is a rate of zero; its error ratio and latency are unknown.
            let (mut rate, mut errors) = (vec![Some(0.0); n], vec![None; n]);
            let (mut p50, mut p95, mut p99) = (vec![None; n], vec![None; n], vec![None; n]);
            for b in series.buckets.iter().filter(|b| b.service == s.service && b.bucket < n) {
                rate[b.bucket] = Some(b.requests as f64 / secs);
                errors[b.bucket] = Some(b.errors as f64 / b.requests.max(1) as f64 * 100.0);
                p50[b.bucket] = Some(b.p50_ms);
                p95[b.bucket] = Some(b.p95_ms);
                p99[b.bucket] = Some(b.p99_ms);
            }
            let line = |label: &str, values| Line { label: label.to_string(), values };
            let (start, step) = (series.start_ns, series.step_ns);
            ServiceCharts {
                name: s.service.clone(),
                anchor: super::enc(&s.service),
                rate: Chart::small("requests/s", start, end_ns)
                    .lines(start, end_ns, step, &[line("", rate)], &|v| format!("{v:.2}")),
                errors: Chart::small("error %", start, end_ns)
                    .lines(start, end_ns, step, &[line("", errors)], &|v| format!("{v:.1}%")),
                latency: Chart::small("latency", start, end_ns).lines(
                    start,
                    end_ns,
                    step,
                    &[line("p50", p50), line("p95", p95), line("p99", p99)],
                    &ms,
                ),
            }
        })
        .collect()
}

pub fn build(range: RangeView, m: &ServiceMap, series: &ServiceSeries) -> ServicesPage {
    let window = range.pairs();
    let services = m
        .services
        .iter()
        .map(|s| ServiceRow {
            traces: url("/traces", &[&[("service", s.service.as_str())][..], &window].concat()),
            name: s.service.clone(),
            anchor: (s.requests > 0).then(|| super::enc(&s.service)),
            requests: s.requests,
            rate: if s.rate_per_sec < 0.1 {
                format!("{:.4}", s.rate_per_sec)
            } else {
                format!("{:.2}", s.rate_per_sec)
            },
            error_ratio: format!("{:.2}%", s.error_ratio * 100.0),
            failing: s.errors > 0,
            p50: ms(s.p50_ms),
            p95: ms(s.p95_ms),
            p99: ms(s.p99_ms),
        })
        .collect();
    // Only services that take part in an edge go on the map.
    let mut pos: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for e in &m.edges {
        pos.insert(e.parent.as_str(), (0.0, 0.0));
        pos.insert(e.child.as_str(), (0.0, 0.0));
    }
    let n = pos.len().max(1) as f64;
    let (c, r) = (MAP / 2.0, MAP / 2.0 - 60.0);
    for (i, p) in pos.values_mut().enumerate() {
        let a = -PI / 2.0 + 2.0 * PI * i as f64 / n;
        *p = (c + r * a.cos(), c + r * a.sin());
    }
    let f = |v: f64| format!("{v:.1}");
    let edges = m
        .edges
        .iter()
        .map(|e| {
            let ((x1, y1), (x2, y2)) = (pos[e.parent.as_str()], pos[e.child.as_str()]);
            // Stop at the circles' edges (radius 26 + a gap for the arrow).
            let (dx, dy) = (x2 - x1, y2 - y1);
            let len = (dx * dx + dy * dy).sqrt().max(1.0);
            let (ux, uy) = (dx / len, dy / len);
            Edge {
                x1: f(x1 + ux * 28.0),
                y1: f(y1 + uy * 28.0),
                x2: f(x2 - ux * 30.0),
                y2: f(y2 - uy * 30.0),
                lx: f((x1 + x2) / 2.0),
                ly: f((y1 + y2) / 2.0 - 4.0),
                text: if e.errors > 0 {
                    format!("{} calls, {} errors", e.calls, e.errors)
                } else {
                    format!("{} calls", e.calls)
                },
                label: format!("{} → {}: {} calls, {} errors", e.parent, e.child, e.calls, e.errors),
                errors: e.errors,
            }
        })
        .collect();
    let nodes =
        pos.iter().map(|(name, (x, y))| Node { name: name.to_string(), x: f(*x), y: f(*y), ty: f(y + 44.0) }).collect();
    ServicesPage {
        charts: charts(m, series, range.end_ns),
        range,
        services,
        nodes,
        edges,
        map_size: f(MAP),
        warnings: super::warnings(&[&m.stats, &series.stats]),
        render_ms: String::new(),
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
    p.only(&["since", "start", "end"], false)?;
    let range = RangeView::parse(&p, "/", &[])?;
    let (start, end) = (range.start_ns, range.end_ns);
    let step = pick_step(end - start, POINTS);
    // Buckets on round times, so charts of the same window line up.
    let series_start = start.div_euclid(step) * step;
    let (m, series) = tokio::try_join!(
        state.query.services(&tenant, start, end),
        state.query.service_series(&tenant, series_start, end, step)
    )?;
    let mut page = build(range, &m, &series);
    page.render_ms = clock.ms();
    Ok(render(&page))
}
