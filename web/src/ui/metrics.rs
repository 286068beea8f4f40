//! `/metrics/explore`: the metrics explorer. A searchable list of the metrics stored in the
//! window (type, unit, description), and for the one picked: an aggregation (those that apply
//! to its type), a group-by attribute, a line chart with a legend, and, on histograms, the
//! exemplars as dots that open their traces.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tracelight_model::correlate::{MetricChart, MetricInfo, MetricQuery, parse_trace_id};
use tracelight_model::metrics::{Aggregation, MetricKind};
use tracelight_model::time::{pick_step, rfc3339_ms};

use super::chart::{Chart, Line, Point};
use super::{Clock, PageError, RangeView, render, url};
use crate::search::Params;
use crate::{AppError, AppState};

const POINTS: i64 = 80;

pub struct MetricRow {
    pub name: String,
    pub href: String,
    pub kind: String,
    pub unit: String,
    pub description: String,
    pub services: String,
    pub on: bool,
}

#[derive(Default)]
pub struct Form {
    pub metric: String,
    pub agg: String,
    pub group_by: String,
    pub service: String,
    pub filter: String,
}

#[derive(Template)]
#[template(path = "metrics.html")]
pub struct MetricsPage {
    pub form: Form,
    pub range: RangeView,
    pub metrics: Vec<MetricRow>,
    /// The picked metric: what it is, the aggregations and groupings offered, its chart.
    pub picked: Option<Picked>,
    /// What the answer may be missing (see `ScanStats::warnings`).
    pub warnings: Vec<String>,
    pub render_ms: String,
}

pub struct Picked {
    pub info: String,
    pub aggregations: Vec<(&'static str, bool)>,
    pub group_keys: Vec<(String, bool)>,
    pub chart: Chart,
    pub exemplars: usize,
}

fn kind_label(m: &MetricInfo) -> String {
    match m.kind.as_str() {
        "sum" if m.monotonic => "counter".into(),
        "sum" => "up-down counter".into(),
        "exponential_histogram" => "histogram (exponential)".into(),
        k => k.to_string(),
    }
}

/// A value with the metric's unit (`ms`, `By`, `1` as OTel writes them).
fn with_unit(v: f64, unit: &str, agg: Aggregation) -> String {
    let n = match v.abs() {
        0.0 => "0".to_string(),
        a if a >= 10.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.1}"),
        _ => format!("{v:.3}"),
    };
    match (agg, unit) {
        (Aggregation::Rate, _) => format!("{n}/s"),
        (_, "" | "1") => n,
        (_, u) => format!("{n} {u}"),
    }
}

pub fn picked(chart: &MetricChart, form: &Form, start: i64, end: i64) -> Picked {
    let kind = MetricKind::parse(&chart.info.kind);
    let agg = chart.aggregation;
    let unit = chart.info.unit.clone();
    let lines: Vec<Line> = chart
        .series
        .iter()
        .map(|s| Line {
            label: if form.group_by.is_empty() {
                chart.info.name.clone()
            } else if s.group.is_empty() {
                format!("({} not set)", form.group_by)
            } else {
                s.group.clone()
            },
            values: s.values.clone(),
        })
        .collect();
    let fmt = move |v: f64| with_unit(v, &unit, agg);
    let mut c = Chart::new(&format!("{} of {}", agg.as_str(), chart.info.name), start, end).lines(
        chart.start_ns,
        end,
        chart.step_ns,
        &lines,
        &fmt,
    );
    // Exemplars are raw measurements: they share the axis of percentiles and min/max/avg.
    let same_axis = matches!(
        agg,
        Aggregation::P50 | Aggregation::P95 | Aggregation::P99 | Aggregation::Avg | Aggregation::Min | Aggregation::Max
    );
    let mut shown = 0;
    if same_axis && c.empty.is_empty() {
        let points: Vec<Point> = chart
            .exemplars
            .iter()
            .filter_map(|e| {
                let id = parse_trace_id(&e.trace_id).ok()?;
                let v = e.value?;
                Some(Point {
                    time_ns: e.time_ns,
                    value: v,
                    title: format!(
                        "exemplar {} at {} from {}: open trace {id}",
                        fmt(v),
                        rfc3339_ms(e.time_ns),
                        e.service_name
                    ),
                    href: format!("/traces/{id}"),
                    color: 9,
                })
            })
            .collect();
        shown = points.len();
        c = c.overlay(start, end, points);
    }
    Picked {
        info: format!(
            "{} · {}{} · {}",
            kind_label(&chart.info),
            if chart.info.unit.is_empty() { "no unit".to_string() } else { format!("unit {}", chart.info.unit) },
            if chart.info.description.is_empty() { String::new() } else { format!(" · {}", chart.info.description) },
            chart.info.services.join(", ")
        ),
        aggregations: Aggregation::ALL
            .iter()
            .filter(|a| kind.is_some_and(|k| a.applies_to(k, chart.info.monotonic)))
            .map(|a| (a.as_str(), *a == agg))
            .collect(),
        group_keys: chart.attribute_keys.iter().map(|k| (k.clone(), *k == form.group_by)).collect(),
        chart: c,
        exemplars: shown,
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
    p.only(&["metric", "agg", "group_by", "service", "filter", "since", "start", "end"], false)?;
    let form = Form {
        metric: p.get("metric").unwrap_or("").into(),
        agg: p.get("agg").unwrap_or("").into(),
        group_by: p.get("group_by").unwrap_or("").into(),
        service: p.get("service").unwrap_or("").into(),
        filter: p.get("filter").unwrap_or("").into(),
    };
    let keep = [
        ("metric", form.metric.as_str()),
        ("agg", form.agg.as_str()),
        ("group_by", form.group_by.as_str()),
        ("service", form.service.as_str()),
        ("filter", form.filter.as_str()),
    ];
    let range = RangeView::parse(&p, "/metrics/explore", &keep)?;
    let (start, end) = (range.start_ns, range.end_ns);
    let catalog = state.query.metric_catalog(&tenant, start, end).await?;
    let window = range.pairs();
    let needle = form.filter.to_lowercase();
    let metrics = catalog
        .metrics
        .iter()
        .filter(|m| {
            needle.is_empty()
                || m.name.to_lowercase().contains(&needle)
                || m.description.to_lowercase().contains(&needle)
        })
        .map(|m| MetricRow {
            href: url(
                "/metrics/explore",
                &[&[("metric", m.name.as_str()), ("filter", &form.filter)][..], &window].concat(),
            ),
            name: m.name.clone(),
            kind: kind_label(m),
            unit: m.unit.clone(),
            description: m.description.clone(),
            services: m.services.join(", "),
            on: m.name == form.metric,
        })
        .collect();
    let picked = if form.metric.is_empty() {
        None
    } else {
        let aggregation = match form.agg.as_str() {
            "" => None,
            a => Some(Aggregation::parse(a).map_err(AppError::BadRequest)?),
        };
        let step = pick_step(end - start, POINTS);
        let series_start = start.div_euclid(step) * step;
        let chart = state
            .query
            .metric_chart(MetricQuery {
                name: form.metric.clone(),
                aggregation,
                group_by: Some(form.group_by.clone()).filter(|g| !g.is_empty()),
                service: Some(form.service.clone()).filter(|s| !s.is_empty()),
                start_ns: series_start,
                end_ns: end,
                step_ns: step,
                tenant: Some(tenant),
            })
            .await?;
        Some((picked(&chart, &form, series_start, end), chart.stats))
    };
    let (picked, chart_stats) = picked.unzip();
    let warnings = super::warnings(&[&catalog.stats, &chart_stats.unwrap_or_default()]);
    let mut page = MetricsPage { form, range, metrics, picked, warnings, render_ms: String::new() };
    page.render_ms = clock.ms();
    Ok(render(&page))
}
