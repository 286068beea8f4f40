//! The HTTP surface on port 4319: the JSON API under `/api/v1/`, health and readiness, and
//! tracelight's own metrics. It depends on the [`QueryService`] trait, never on DataFusion.

pub mod api;
pub mod error;
pub mod notify;
pub mod search;
pub mod slo;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracelight_model::QueryService;
use tracelight_model::telemetry::Registry;

pub use error::AppError;

/// Whether the server can take traffic (the WAL is writable and it is not shutting down).
pub trait Readiness: Send + Sync {
    fn ready(&self) -> Result<(), String>;
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub query: Arc<dyn QueryService>,
    pub registry: Arc<Registry>,
    pub readiness: Arc<dyn Readiness>,
    /// Bearer tokens for `/api/`; empty means no authentication.
    pub api_tokens: Arc<Vec<String>>,
    /// The configured SLOs and their latest evaluation.
    pub slos: Arc<slo::SloEngine>,
}

/// The router for port 4319.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/query", post(api::query))
        .route("/api/v1/traces", get(search::traces))
        .route("/api/v1/traces/{trace_id}", get(search::trace))
        .route("/api/v1/logs", get(search::logs))
        .route("/api/v1/services", get(search::services))
        .route("/api/v1/slos", get(slo::list))
        .route("/api/v1/slos/{name}", get(slo::one))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(ui::routes())
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.readiness.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = s.registry.render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route; the API lives under /api/v1/".into())
}

#[cfg(test)]
mod tests;
