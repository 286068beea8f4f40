//! `/api/v1/` handlers.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use tracelight_model::auth::Scope;
use tracelight_model::time::parse_time_ns;
use tracelight_model::{QueryRequest, ScanStats, TENANT_HEADER, Tenant};

use crate::{AppError, AppState};

/// A time as RFC 3339 text or Unix nanoseconds (number or string).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TimeArg {
    Nanos(i64),
    Text(String),
}

impl TimeArg {
    fn resolve(&self) -> Result<i64, AppError> {
        match self {
            TimeArg::Nanos(n) => Ok(*n),
            TimeArg::Text(s) => parse_time_ns(s).map_err(|e| AppError::BadRequest(e.to_string())),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub sql: String,
    #[serde(default)]
    pub start: Option<TimeArg>,
    #[serde(default)]
    pub end: Option<TimeArg>,
}

#[derive(Debug, Serialize)]
pub struct QueryResponse {
    pub columns: Vec<String>,
    pub column_types: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
    pub truncated: bool,
    pub stats: ScanStats,
}

/// Picks the tenant (`X-Tracelight-Tenant`, default `default`) and checks that the bearer
/// token may read it.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Tenant, AppError> {
    let auth = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let tenant = Tenant::from_header(headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok()))
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    if state.auth.is_open() {
        return Ok(tenant);
    }
    state.auth.check(auth, &tenant, Scope::Read)?;
    Ok(tenant)
}

/// `POST /api/v1/query` `{"sql": "...", "start"?, "end"?}`.
pub async fn query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<QueryBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<QueryResponse>, AppError> {
    let tenant = authorize(&state, &headers)?;
    let Json(body) = body.map_err(|e| AppError::BadRequest(format!("invalid request body: {}", e.body_text())))?;
    if body.sql.trim().is_empty() {
        return Err(AppError::BadRequest("\"sql\" is empty".into()));
    }
    let request = QueryRequest {
        sql: body.sql,
        start_ns: body.start.as_ref().map(TimeArg::resolve).transpose()?,
        end_ns: body.end.as_ref().map(TimeArg::resolve).transpose()?,
        tenant: Some(tenant),
    };
    let result = state.query.sql(request).await?;
    Ok(Json(QueryResponse {
        columns: result.columns.iter().map(|c| c.name.clone()).collect(),
        column_types: result.columns.into_iter().map(|c| c.data_type).collect(),
        rows: result.rows,
        truncated: result.truncated,
        stats: result.stats,
    }))
}
