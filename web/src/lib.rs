//! The HTTP surface on port 4319: the JSON API under `/api/v1/`, health and readiness, and
//! tracelight's own metrics. It depends on the [`QueryService`] trait, never on DataFusion.

pub mod api;
pub mod error;
pub mod internal;
pub mod search;
pub mod slo;
pub mod ui;

use std::sync::Arc;

use axum::Json;
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
    /// Tokens with their tenants and scopes; none configured means no authentication.
    pub auth: Arc<tracelight_model::auth::Auth>,
    /// The configured SLOs and their latest evaluation.
    pub slos: Arc<tracelight_alerts::SloEngine>,
    /// Host names (besides IP literals and `localhost`) this port answers to while no token
    /// is configured: a check against DNS rebinding.
    pub allowed_hosts: Arc<Vec<String>>,
    /// The nodes of the deployment (the catalog's registry).
    pub cluster: Arc<dyn tracelight_model::cluster::ClusterView>,
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
        .route("/api/v1/cluster", get(cluster))
        .route(tracelight_model::peers::HEAD_PATH, post(internal::head))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(ui::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), host_guard))
        .with_state(state)
}

/// The routes of a node without the `query` role: probes, `/metrics` and the cluster list.
/// Everything else answers 404 with the reason.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route(tracelight_model::peers::HEAD_PATH, post(internal::head))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_a_query_node)
        .layer(axum::middleware::from_fn_with_state(state.clone(), host_guard))
        .with_state(state)
}

async fn not_a_query_node() -> Response {
    AppError::NotFound("this node has no query role: send queries and open the UI on a query node".into())
        .into_response()
}

/// Without tokens, anyone who can reach the port may read everything; a DNS-rebinding page
/// (evil.example re-pointed at 127.0.0.1) would then read the API from the victim's browser
/// as its own origin. Such a request carries the attacker's name in `Host`, so while no token
/// is configured only IP literals, `localhost` and the configured `api.allowed_hosts` pass.
async fn host_guard(State(s): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // HTTP/1.1 browsers send `Host`, HTTP/2 ones `:authority` (the URI's); a request with
    // neither is not a browser's.
    let host = match req.headers().get(header::HOST) {
        Some(h) => Some(h.to_str().unwrap_or("").to_string()),
        None => req.uri().authority().map(|a| a.to_string()),
    };
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    if s.auth.is_open()
        && !probe
        && let Some(host) = host
        && !host_allowed(&host, &s.allowed_hosts)
    {
        let name: String = host.chars().take(100).filter(|c| !c.is_control()).collect();
        return AppError::Forbidden(format!(
            "this server does not answer to the host name {name:?}; add it to api.allowed_hosts (or configure tokens)"
        ))
        .into_response();
    }
    next.run(req).await
}

/// Whether a `Host` header names this server: an IP literal, `localhost`, or a configured name
/// (any port).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host
            .rsplit_once(':')
            .map_or(host, |(n, port)| if port.bytes().all(|b| b.is_ascii_digit()) { n } else { host }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    !name.is_empty()
        && (name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name)))
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

/// tracelight's own metrics: an `admin` token when tokens are configured.
async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Err(e) = require_admin(&s, &headers) {
        return e.into_response();
    }
    let body = s.registry.render();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}

/// `GET /api/v1/cluster`: every registered node, its roles, address and whether it is up.
/// Deployment details, not tenant data: the `admin` scope, as `/metrics`.
async fn cluster(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    require_admin(&s, &headers)?;
    let now = tracelight_model::time::now_ns();
    let nodes = s.cluster.nodes(now).await.map_err(AppError::Internal)?;
    Ok(Json(
        serde_json::json!({ "nodes": nodes, "down_after_s": tracelight_model::cluster::DOWN_AFTER_NS / 1_000_000_000 }),
    ))
}

/// Routes about the deployment rather than a tenant's data want the `admin` scope.
fn require_admin(s: &AppState, headers: &axum::http::HeaderMap) -> Result<(), AppError> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    Ok(s.auth.check_scope(auth, tracelight_model::auth::Scope::Admin)?)
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route; the API lives under /api/v1/".into())
}

#[cfg(test)]
mod tests;
