//! The transport-independent part of an export: admission, WAL, hand-off, counts.

use std::sync::Arc;

use tracelight_model::sink::batch_bytes;
use tracelight_model::telemetry::{Counter, Registry};
use tracelight_model::{BatchSink, Reservation, Signal, SignalBatch, SinkError, Tenant};

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use tracelight_model::auth::{Auth, Denied, Scope};

use crate::decode::{self, DecodeContext, Decoded, Format, ItemLimits};
use crate::error::IngestError;
use crate::receive::{ReceiveBudget, Ticket};
use crate::wal::Wal;

/// Limits and credentials of the receivers.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest accepted request, in bytes, after decompression.
    pub max_request_bytes: usize,
    /// Per-item limits applied during decode.
    pub item_limits: ItemLimits,
    /// Tokens with their tenants and scopes; none configured means no authentication.
    pub auth: Arc<Auth>,
    /// Refuse new requests (retryably) while the WAL holds more than this many bytes.
    pub max_wal_bytes: u64,
    /// Bytes that request bodies being received, decompressed and logged may hold at once,
    /// across all connections (see [`crate::receive`]).
    pub max_receiving_bytes: usize,
    /// Longest one request body may take to arrive.
    pub receive_timeout: std::time::Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_request_bytes: 4 << 20,
            item_limits: ItemLimits::default(),
            auth: Arc::new(Auth::default()),
            max_wal_bytes: 4 << 30,
            max_receiving_bytes: 64 << 20,
            receive_timeout: std::time::Duration::from_secs(30),
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

impl ExportOutcome {
    /// The `Export*ServiceResponse` of `signal`, encoded as `format`.
    pub fn response(&self, signal: Signal, format: Format) -> Vec<u8> {
        fn encode<M: prost::Message + serde::Serialize>(format: Format, msg: &M) -> Vec<u8> {
            match format {
                Format::Protobuf => msg.encode_to_vec(),
                Format::Json => serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()),
            }
        }
        let (rejected, error_message) = (self.rejected as i64, self.message.clone().unwrap_or_default());
        let partial = self.rejected > 0;
        match signal {
            Signal::Spans => encode(
                format,
                &ExportTraceServiceResponse {
                    partial_success: partial
                        .then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message }),
                },
            ),
            Signal::Logs => encode(
                format,
                &ExportLogsServiceResponse {
                    partial_success: partial
                        .then_some(ExportLogsPartialSuccess { rejected_log_records: rejected, error_message }),
                },
            ),
            Signal::Metrics => encode(
                format,
                &ExportMetricsServiceResponse {
                    partial_success: partial
                        .then_some(ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message }),
                },
            ),
        }
    }
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
    /// Requests being decoded at once. Decoding is CPU work, so more than one per core buys
    /// nothing, and a decoded request can take many times its wire size (prost's structs for
    /// empty items): this bounds what decoding holds in memory at any moment.
    decoding: tokio::sync::Semaphore,
    receiving: ReceiveBudget,
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
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let receiving = ReceiveBudget::new(config.max_receiving_bytes, config.receive_timeout);
        Ingestor { wal, sink, config, metrics, decoding: tokio::sync::Semaphore::new(cores), receiving }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// A ticket on the receive budget for one request (see [`crate::receive`]).
    pub fn receive_ticket(&self) -> Ticket {
        self.receiving.ticket()
    }

    /// Counts a request refused before it reached [`Ingestor::export`].
    pub fn count_refused(&self, err: &IngestError) {
        self.metrics.rejected_requests.add_labeled(err.reason(), 1);
    }

    /// Everything an export request goes through after its transport has framed and
    /// decompressed it: authentication, tenant, decode, admission, WAL append (resolving only
    /// after the fsync that covers it) and the partial-success outcome. Refusals are counted.
    pub async fn export(
        &self,
        signal: Signal,
        format: Format,
        authorization: Option<&str>,
        tenant: Option<&str>,
        body: &[u8],
    ) -> Result<ExportOutcome, IngestError> {
        let result = async {
            let tenant = Tenant::from_header(tenant)?;
            self.config.auth.check(authorization, &tenant, Scope::Ingest).map_err(|d| match d {
                Denied::Unauthenticated => IngestError::Unauthenticated,
                Denied::Forbidden(why) => IngestError::Forbidden(why),
            })?;
            let ctx = DecodeContext {
                tenant,
                now_ns: tracelight_model::time::now_ns(),
                limits: self.config.item_limits.clone(),
            };
            let slot = self.decoding.acquire().await.expect("the semaphore is never closed");
            let decoded =
                decode::decode(signal, body, format, &ctx).map_err(|e| IngestError::Invalid(e.to_string()))?;
            drop(slot);
            let Decoded { batch, rejected, message, reasons, truncated_values, invalid_utf8 } = decoded;
            let accepted = batch.num_rows() as u64;
            if accepted > 0 {
                // Held until the WAL writer has handed the rows to the sink (before the ack).
                let _reservation = self.admit(&batch, batch_bytes(&batch.batch))?;
                // The WAL logs the body as received; replay decodes it again with `ctx`.
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
        .await;
        if let Err(e) = &result {
            self.count_refused(e);
        }
        result
    }

    fn admit(&self, batch: &SignalBatch, bytes: usize) -> Result<Reservation, IngestError> {
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
        self.sink.admit(batch, bytes).map_err(|e| match e {
            SinkError::Overloaded { reason, retry_after_secs } => IngestError::Overloaded { reason, retry_after_secs },
            e @ SinkError::TooSpread { .. } => IngestError::Invalid(e.to_string()),
        })
    }
}
