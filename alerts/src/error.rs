//! The one error type of the alerts crate.

use tracelight_model::QueryError;
use tracelight_model::slo::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The catalog (counts, alert states, the outbox) failed.
    #[error("catalog: {0}")]
    Store(#[from] StoreError),
    /// Counting over the stored telemetry failed.
    #[error("{what}: {source}")]
    Query {
        what: String,
        #[source]
        source: QueryError,
    },
    /// SLOs are declared but there is no catalog to keep their counts in.
    #[error("no catalog to keep SLO counts in")]
    NoStore,
    /// A configuration value the alerting does not know.
    #[error("{0}")]
    Config(String),
}

impl AlertError {
    pub fn query(what: impl Into<String>, source: QueryError) -> AlertError {
        AlertError::Query { what: what.into(), source }
    }
}
