//! PromQL evaluation with Prometheus's semantics, over series of samples that the caller
//! fetches (the web crate, through the query service). Nothing here reads storage or links
//! DataFusion.
//!
//! - [`functions`]: the range-vector functions (`rate`, `increase`, `delta`, `irate`,
//!   `idelta`, `resets`, `changes`, `*_over_time`), each over the samples of one series in
//!   one window, as `promql/functions.go` computes them.
//! - [`histogram`]: `histogram_quantile` over classic buckets, as `promql/quantile.go` does.

pub mod functions;
pub mod histogram;

/// One sample: a time in milliseconds since the epoch and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t_ms: i64,
    pub v: f64,
}
