//! The server-rendered UI (askama): pages work without JavaScript, charts and bars are SVG drawn
//! here, and every page carries a Content-Security-Policy without inline scripts or styles.
//! All telemetry text reaches the page through askama's HTML escaping (names, attribute keys and
//! values, log bodies are attacker-controlled); none is ever put in a URL unchecked.

mod services;
mod trace;

use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::extract::{Query, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::{AppError, AppState};

/// Scripts, styles and images only from this origin; no inline script or style anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const STYLE: &str = include_str!("../../static/style.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(services::page))
        .route("/open", get(home))
        .route("/trace", get(trace_lookup))
        .route("/traces/{trace_id}", get(trace::page))
        .route("/static/style.css", get(style))
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
            StatusCode::UNAUTHORIZED => "Authentication needed",
            s if s.is_server_error() => "Something went wrong on the server",
            _ => "Cannot show this",
        };
        let page = ErrorPage { title: title.into(), reason: self.0.to_string(), render_ms: "0.0".into() };
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
