//! The bottom of tracelight's dependency graph: what every stage agrees on.
//!
//! - [`schema`]: the Arrow schemas of the three tables (`spans`, `logs`, `metrics`). OTLP is
//!   converted to these once, at the receiver; everything downstream speaks Arrow.
//! - [`Signal`], [`Tenant`], [`SignalBatch`]: what flows between stages.
//! - [`BatchSink`] and [`QueryService`]: the narrow traits the collector and the web crate call.
//!   Concrete types are wired only in the binary, as `Arc<dyn Trait>`.
//! - [`correlate`]: requests and answers of trace, log and service queries.
//! - [`telemetry`]: tracelight's own metrics, rendered as Prometheus text on `/metrics`.
//! - [`time`]: the time and duration syntax shared by the API, the CLI and the config.
//!
//! This crate must stay light: Arrow's array types and serde, nothing heavier.

pub mod auth;
pub mod cluster;
pub mod correlate;
pub mod metrics;
pub mod peers;
pub mod promname;
pub mod query;
pub mod schema;
pub mod signal;
pub mod sink;
pub mod slo;
pub mod telemetry;
pub mod time;

pub use query::{Changes, Column, QueryError, QueryRequest, QueryResult, QueryService, ScanStats};
pub use signal::{Signal, SignalBatch, TENANT_HEADER, Tenant, TenantError};
pub use sink::{BatchSink, Reservation, SinkError};
