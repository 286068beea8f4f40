//! End-to-end tests: the real `tracelight` binary, real OTLP clients (tonic gRPC, HTTP with
//! protobuf/JSON/gzip, and the Python OpenTelemetry SDK), a temporary data directory each.

mod alertmanager;
mod browser;
mod cluster;
mod compaction;
mod crash;
mod fanout;
mod harness;
mod hostile;
mod ingest;
#[path = "../support/moto.rs"]
mod moto;
mod objects;
mod otlp;
mod overload;
mod postgres;
mod protocol;
mod sdk;
mod search;
mod slo;
mod transport;
