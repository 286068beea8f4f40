//! `/` — the services overview: RED numbers of every service over a chosen window, and the
//! service map (services on a circle, an arrow per parent → child service edge with calls and
//! errors), drawn as SVG here.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tracelight_model::correlate::ServiceMap;
use tracelight_model::time::{now_ns, parse_duration};

use super::{Clock, PageError, render};
use crate::api::authorize;
use crate::{AppError, AppState};

pub const WINDOWS: [&str; 5] = ["15m", "1h", "6h", "24h", "7d"];
const MAP: f64 = 560.0;

pub struct ServiceRow {
    pub name: String,
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

#[derive(Template)]
#[template(path = "services.html")]
pub struct ServicesPage {
    pub window: String,
    /// Each preset window and whether it is the one shown.
    pub windows: Vec<(&'static str, bool)>,
    pub services: Vec<ServiceRow>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub map_size: String,
    pub render_ms: String,
}

fn ms(v: f64) -> String {
    if v < 1.0 { format!("{:.0}µs", v * 1000.0) } else { format!("{v:.1}ms") }
}

pub fn build(window: &str, m: &ServiceMap) -> ServicesPage {
    let services = m
        .services
        .iter()
        .map(|s| ServiceRow {
            name: s.service.clone(),
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
        window: window.to_string(),
        windows: WINDOWS.iter().map(|w| (*w, *w == window)).collect(),
        services,
        nodes,
        edges,
        map_size: f(MAP),
        render_ms: String::new(),
    }
}

#[derive(serde::Deserialize)]
pub struct WindowArg {
    #[serde(default)]
    window: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<WindowArg>,
) -> Result<Response, PageError> {
    let clock = Clock::start();
    let tenant = authorize(&state, &headers)?;
    let window = q.window.filter(|w| !w.is_empty()).unwrap_or_else(|| "1h".into());
    let d = parse_duration(&window).map_err(|e| AppError::BadRequest(format!("window: {e}")))?;
    let end = now_ns() + 1;
    let m = state.query.services(&tenant, end - d.as_nanos().min(i64::MAX as u128) as i64, end).await?;
    let mut page = build(&window, &m);
    page.render_ms = clock.ms();
    Ok(render(&page))
}
