//! The transport-independent part of an export: admission, WAL, hand-off, counts.

use std::sync::Arc;

use tracelight_model::telemetry::{Counter, Registry};
use tracelight_model::{BatchSink, Signal, SinkError, Tenant};

use crate::decode::{DecodeContext, Decoded, Format, ItemLimits};
use crate::error::IngestError;
use crate::wal::Wal;

/// Limits and credentials of the receivers.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest accepted request, in bytes, after decompression.
    pub max_request_bytes: usize,
    /// Per-item limits applied during decode.
    pub item_limits: ItemLimits,
    /// Bearer tokens accepted for ingest; empty means no authentication.
    pub tokens: Vec<String>,
    /// Refuse new requests (retryably) while the WAL holds more than this many bytes.
    pub max_wal_bytes: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_request_bytes: 16 << 20,
            item_limits: ItemLimits::default(),
            tokens: Vec::new(),
            max_wal_bytes: 4 << 30,
        }
    }
}

/// What an accepted request reports back (OTLP partial success).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportOutcome {
    pub accepted: u64,
    pub rejected: u64,
    pub message: Option<String>,
}

struct Metrics {
    items: Arc<Counter>,
    rejected_items: Arc<Counter>,
    rejected_requests: Arc<Counter>,
    truncated: Arc<Counter>,
    invalid_utf8: Arc<Counter>,
}

/// Shared by the gRPC and HTTP receivers.
pub struct Ingestor {
    wal: Wal,
    sink: Arc<dyn BatchSink>,
    config: IngestConfig,
    metrics: Metrics,
}

impl Ingestor {
    pub fn new(wal: Wal, sink: Arc<dyn BatchSink>, config: IngestConfig, registry: &Registry) -> Ingestor {
        let metrics = Metrics {
            items: registry.counter_vec(
                "tracelight_ingested_items_total",
                "Spans, log records and metric points acknowledged, by signal.",
                "signal",
            ),
            rejected_items: registry.counter_vec(
                "tracelight_rejected_items_total",
                "Items refused inside otherwise accepted requests (partial success), by reason.",
                "reason",
            ),
            rejected_requests: registry.counter_vec(
                "tracelight_rejected_requests_total",
                "Whole export requests refused, by reason.",
                "reason",
            ),
            truncated: registry.counter(
                "tracelight_truncated_values_total",
                "Attribute values and log bodies cut to the configured limits.",
            ),
            invalid_utf8: registry.counter(
                "tracelight_invalid_utf8_strings_total",
                "Strings with invalid UTF-8 that were stored with U+FFFD instead of refusing the request.",
            ),
        };
        Ingestor { wal, sink, config, metrics }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    pub fn wal_healthy(&self) -> bool {
        self.wal.healthy()
    }

    /// Counts a request refused before it reached [`Ingestor::export`].
    pub fn count_refused(&self, err: &IngestError) {
        self.metrics.rejected_requests.add_labeled(err.reason(), 1);
    }

    /// Makes a decoded request durable and returns its partial-success outcome. Resolves only
    /// after the WAL fsync that covers it. `body` is the request as decoded (after
    /// decompression) and `ctx` the context it was decoded with: the WAL logs them, and replay
    /// decodes them again.
    pub async fn export(
        &self,
        signal: Signal,
        format: Format,
        ctx: &DecodeContext,
        body: &[u8],
        decoded: Decoded,
    ) -> Result<ExportOutcome, IngestError> {
        let result = self.export_inner(signal, format, ctx, body, decoded).await;
        if let Err(e) = &result {
            self.count_refused(e);
        }
        result
    }

    async fn export_inner(
        &self,
        signal: Signal,
        format: Format,
        ctx: &DecodeContext,
        body: &[u8],
        decoded: Decoded,
    ) -> Result<ExportOutcome, IngestError> {
        let Decoded { batch, rejected, message, reasons, truncated_values, invalid_utf8 } = decoded;
        let accepted = batch.num_rows() as u64;
        if accepted > 0 {
            self.admit(batch.batch.get_array_memory_size())?;
            let payload = crate::record::encode(signal, format, &ctx.tenant, ctx.now_ns, body);
            self.wal.append(payload, vec![batch]).await?;
        }
        self.metrics.items.add_labeled(signal.table(), accepted);
        for (reason, n) in reasons {
            self.metrics.rejected_items.add_labeled(reason, n);
        }
        self.metrics.truncated.add(truncated_values);
        self.metrics.invalid_utf8.add(invalid_utf8);
        Ok(ExportOutcome { accepted, rejected, message })
    }

    fn admit(&self, bytes: usize) -> Result<(), IngestError> {
        if self.wal.bytes() > self.config.max_wal_bytes {
            self.sink.request_flush();
            return Err(IngestError::Overloaded {
                reason: format!(
                    "write-ahead log above its bound of {} bytes; flush is behind",
                    self.config.max_wal_bytes
                ),
                retry_after_secs: 5,
            });
        }
        self.sink.admit(bytes).map_err(|e| match e {
            SinkError::Overloaded { reason, retry_after_secs } => IngestError::Overloaded { reason, retry_after_secs },
        })
    }

    /// The tenant named by a request header, or the default tenant.
    pub fn tenant_from_header(value: Option<&str>) -> Result<Tenant, IngestError> {
        match value {
            None | Some("") => Ok(Tenant::default_tenant()),
            Some(v) => Ok(Tenant::new(v)?),
        }
    }
}

/// The header that selects a tenant on both transports.
pub const TENANT_HEADER: &str = "x-tracelight-tenant";
