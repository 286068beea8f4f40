//! The write path up to the acknowledgement: OTLP receivers (gRPC with tonic, HTTP with
//! axum), decode into Arrow, per-item validation and limits, and the write-ahead log.
//!
//! A request flows: transport adapter (size cap, auth, tenant) → [`decode`] (a pure function
//! over bytes) → [`Ingestor::export`] (admission, WAL append with group-commit fsync, hand-off
//! to the [`BatchSink`](tracelight_model::BatchSink)) → acknowledgement with exact partial
//! success counts. This crate knows nothing of Parquet, DataFusion or tantivy.

pub mod decode;
pub mod error;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod receive;
pub mod record;
pub mod synth;
pub mod wal;

pub use error::{IngestError, WalError};
pub use ingest::{ExportOutcome, IngestConfig, Ingestor};
pub use wal::{ReplayStats, Wal, WalOptions};
