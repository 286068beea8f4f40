//! Collector errors. Each says whether the client may retry, which decides the OTLP status.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{what} failed for {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    /// A write or fsync failed earlier; this WAL takes nothing more until restart.
    #[error("the write-ahead log is unavailable after a failed write; restart required")]
    Failed,
}

impl WalError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> WalError {
        WalError::Io { what, path: path.display().to_string(), source }
    }
}

/// Why an export request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Undecodable payload: do not retry (gRPC INVALID_ARGUMENT, HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Over the size limit: do not retry (gRPC RESOURCE_EXHAUSTED without retry info, HTTP 413).
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A memory or disk bound is reached: retry later (gRPC UNAVAILABLE, HTTP 503 + Retry-After).
    #[error("overloaded: {reason}")]
    Overloaded { reason: String, retry_after_secs: u32 },
    /// The body did not arrive in time (gRPC DEADLINE_EXCEEDED, HTTP 408).
    #[error("the request body was not received within {0:?}")]
    ReceiveTimeout(std::time::Duration),
    /// The WAL failed: retry elsewhere or later (gRPC UNAVAILABLE, HTTP 503).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Missing or wrong bearer token: do not retry (gRPC UNAUTHENTICATED, HTTP 401).
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// A valid token that does not cover the tenant or the ingest scope: do not retry (gRPC
    /// PERMISSION_DENIED, HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// Bad tenant header (HTTP 400).
    #[error(transparent)]
    Tenant(#[from] tracelight_model::TenantError),
}

impl IngestError {
    pub fn retryable(&self) -> bool {
        matches!(self, IngestError::Overloaded { .. } | IngestError::Wal(_))
    }

    /// Short machine label for the rejection metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Invalid(_) => "undecodable",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::Overloaded { .. } => "overloaded",
            IngestError::ReceiveTimeout(_) => "receive_timeout",
            IngestError::Wal(_) => "wal_failed",
            IngestError::Unauthenticated => "unauthenticated",
            IngestError::Forbidden(_) => "forbidden",
            IngestError::Tenant(_) => "invalid_tenant",
        }
    }
}
