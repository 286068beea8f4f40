//! The trait the collector writes through (the OpenTelemetry Collector's `ConsumeLogs`).

use crate::SignalBatch;

/// Why a sink cannot take more data. Every variant is retryable by the client.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A configured memory or disk bound is reached; retry after the given delay.
    #[error("overloaded: {reason}")]
    Overloaded { reason: String, retry_after_secs: u32 },
}

/// Where acknowledged data goes after it is durable in the WAL.
///
/// The contract with the collector: `admit` is asked *before* a request is written to the WAL
/// (so refused data is never half-accepted); `consume` is called only with data that is already
/// durable and must not fail: the bound checked by `admit` is a soft one.
pub trait BatchSink: Send + Sync {
    /// Whether a request of about `bytes` may be accepted now.
    fn admit(&self, bytes: usize) -> Result<(), SinkError>;

    /// Takes durable rows. `lsn` is the WAL sequence number of the record that holds them;
    /// the sink reports flushed LSNs back through its checkpoint so the WAL can be truncated.
    fn consume(&self, lsn: u64, batches: Vec<SignalBatch>);

    /// Asks for a flush soon, e.g. because the WAL is over its disk bound: only a flush lets
    /// the WAL be truncated.
    fn request_flush(&self) {}
}
