//! The server-rendered UI (askama): pages work without JavaScript, charts and bars are SVG drawn
//! here, and every page carries a Content-Security-Policy without inline scripts or styles.
//! All telemetry text reaches the page through askama's HTML escaping (names, attribute keys and
//! values, log bodies are attacker-controlled); none is ever put in a URL unchecked.

pub mod chart;
mod cluster;
mod login;
mod logs;
mod metrics;
mod services;
mod slos;
pub mod trace;
mod traces;

use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::extract::{Query, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use tracelight_model::time::rfc3339_ms;

use crate::{AppError, AppState};

/// Scripts, styles and images only from this origin; no inline script or style anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                       form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const STYLE: &str = include_str!("../../static/style.css");
/// Progressive enhancement only: local times, live tail, expand/collapse. Pages work without it.
const SCRIPT: &str = include_str!("../../static/app.js");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(services::page))
        .route("/open", get(home))
        .route("/trace", get(trace_lookup))
        .route("/traces", get(traces::page))
        .route("/traces/{trace_id}", get(trace::page))
        .route("/logs", get(logs::page))
        .route("/logs/tail", get(logs::tail))
        .route("/metrics/explore", get(metrics::page))
        .route("/slos", get(slos::list))
        .route("/slos/{name}", get(slos::detail))
        .route("/cluster", get(cluster::page))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", get(login::logout))
        .route("/static/style.css", get(style))
        .route("/static/app.js", get(script))
        .layer(middleware::from_fn(security_headers))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    res
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLE).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], SCRIPT)
        .into_response()
}

/// Percent-encodes a query-string component (everything but unreserved characters).
pub use tracelight_model::query::url_component as enc;

/// `path?k=v&…` with every key and value encoded; empty values left out.
pub fn url(path: &str, pairs: &[(&str, &str)]) -> String {
    let q: Vec<String> =
        pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    if q.is_empty() { path.to_string() } else { format!("{path}?{}", q.join("&")) }
}

/// The time range picker of a page: preset windows back from now, or a custom start and end.
pub struct RangeView {
    pub since: String,
    pub start: String,
    pub end: String,
    /// Preset label, its URL (the page's other parameters kept), whether it is the one shown.
    pub presets: Vec<(&'static str, String, bool)>,
    /// What the range is, in words.
    pub label: String,
    pub start_ns: i64,
    pub end_ns: i64,
}

pub const PRESETS: [&str; 5] = ["15m", "1h", "6h", "24h", "7d"];

impl RangeView {
    /// Reads `since`, `start`, `end` (the API's names) from `p`; `keep` are the page's other
    /// parameters, carried into the preset links.
    pub fn parse(p: &crate::search::Params, path: &str, keep: &[(&str, &str)]) -> Result<RangeView, AppError> {
        let custom = p.get("start").is_some() || p.get("end").is_some();
        // The form keeps the preset in a hidden field; a custom start or end wins over it.
        let without_since;
        let p = if custom {
            without_since = p.without("since");
            &without_since
        } else {
            p
        };
        let (start_ns, end_ns) = p.time_range("since", std::time::Duration::from_secs(3600))?;
        let since = if custom { String::new() } else { p.get("since").unwrap_or("1h").to_string() };
        let presets = PRESETS
            .iter()
            .map(|w| {
                let mut pairs = keep.to_vec();
                pairs.push(("since", w));
                (*w, url(path, &pairs), *w == since)
            })
            .collect();
        let label = if custom {
            format!("from {} to {}", rfc3339_ms(start_ns), rfc3339_ms(end_ns))
        } else {
            format!("last {since}")
        };
        Ok(RangeView {
            start: p.get("start").unwrap_or("").to_string(),
            end: p.get("end").unwrap_or("").to_string(),
            since,
            presets,
            label,
            start_ns,
            end_ns,
        })
    }
}

impl RangeView {
    /// The range as query parameters: the preset, or the custom start and end.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        if self.since.is_empty() {
            vec![("start", self.start.as_str()), ("end", self.end.as_str())]
        } else {
            vec![("since", self.since.as_str())]
        }
    }

    /// The link to the next page of a list: the same search and range, from `cursor`.
    pub fn next_page(&self, path: &str, keep: &[(&str, &str)], cursor: Option<&str>) -> String {
        let Some(c) = cursor else { return String::new() };
        url(path, &[keep, &self.pairs(), &[("cursor", c)]].concat())
    }
}

/// Unix nanoseconds as the page shows them: UTC text that the script turns into the viewer's
/// zone (keeping UTC in the hover title).
pub struct Stamp {
    pub iso: String,
    pub text: String,
}

impl Stamp {
    pub fn new(ns: i64) -> Stamp {
        let iso = rfc3339_ms(ns);
        let text = iso.replace('T', " ").trim_end_matches('Z').to_string() + " UTC";
        Stamp { iso, text }
    }
}

/// Times a page from the start of its handler; the footer shows it.
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
    pub fn ms(&self) -> String {
        format!("{:.1}", self.0.elapsed().as_secs_f64() * 1000.0)
    }
}

/// An error as a page with its reason (never a stack trace, never a blank page).
pub struct PageError(pub AppError);

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        PageError(e)
    }
}

impl From<tracelight_model::QueryError> for PageError {
    fn from(e: tracelight_model::QueryError) -> Self {
        PageError(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    reason: String,
    signin: bool,
    render_ms: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if let AppError::Internal(detail) = &self.0 {
            tracing::error!(%detail, "page failed");
        }
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Sign in first",
            s if s.is_server_error() => "Something went wrong on the server",
            _ => "Cannot show this",
        };
        let reason = match &self.0 {
            AppError::Unauthorized => "This server has API tokens: sign in with one to see its pages.".into(),
            e => e.to_string(),
        };
        let page = ErrorPage {
            title: title.into(),
            reason,
            signin: status == StatusCode::UNAUTHORIZED,
            render_ms: "0.0".into(),
        };
        (status, render(&page)).into_response()
    }
}

/// Renders a template; a template error (a bug) becomes a 500 page.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    render_ms: String,
}

async fn home() -> Response {
    let clock = Clock::start();
    render(&Home { render_ms: clock.ms() })
}

#[derive(serde::Deserialize)]
struct Lookup {
    #[serde(default)]
    id: String,
}

/// The header's trace-ID box: checks the ID, then redirects to its stable URL.
async fn trace_lookup(Query(q): Query<Lookup>) -> Result<Redirect, PageError> {
    let id = tracelight_model::correlate::parse_trace_id(&q.id).map_err(AppError::BadRequest)?;
    Ok(Redirect::to(&format!("/traces/{id}")))
}

/// The warnings of the answers a page is built from, each once.
pub fn warnings(stats: &[&tracelight_model::ScanStats]) -> Vec<String> {
    let mut all = tracelight_model::ScanStats::default();
    for s in stats {
        all.add(s);
    }
    all.warnings
}
