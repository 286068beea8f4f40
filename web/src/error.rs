//! The one error type of the web crate: picks the status, logs our faults, never leaks
//! internals to the caller.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracelight_model::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A valid token that does not cover the tenant or scope asked for.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    TooCostly(String),
    /// Our fault. The detail goes to the log, not to the caller.
    #[error("internal error")]
    Internal(String),
}

impl From<QueryError> for AppError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(m) => AppError::BadRequest(m),
            QueryError::NotFound(m) => AppError::NotFound(m),
            QueryError::Timeout(_) => AppError::Timeout(e.to_string()),
            QueryError::ResourcesExhausted(_) => AppError::TooCostly(e.to_string()),
            QueryError::Internal(m) => AppError::Internal(m),
        }
    }
}

impl From<tracelight_model::auth::Denied> for AppError {
    fn from(d: tracelight_model::auth::Denied) -> Self {
        match d {
            tracelight_model::auth::Denied::Unauthenticated => AppError::Unauthorized,
            tracelight_model::auth::Denied::Forbidden(why) => AppError::Forbidden(why),
        }
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            // The caller asked for too much: their query, their 4xx.
            AppError::Timeout(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::TooCostly(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Internal(detail) = &self {
            tracing::error!(%detail, "API request failed");
        }
        let mut res = (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        res
    }
}
