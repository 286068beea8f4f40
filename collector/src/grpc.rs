//! OTLP/gRPC receiver (tonic): TraceService, LogsService and MetricsService on one port.
//!
//! tonic decodes the message; conversion and everything after it is shared with HTTP. Three
//! status mappings differ from tonic's defaults on purpose (shared/TESTPLAN.md §A7-8):
//! an over-size message becomes `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`, which OTLP
//! clients retry forever), an undecodable one `INVALID_ARGUMENT` (tonic says `INTERNAL`, also
//! retried), and overload is `UNAVAILABLE` with a `RetryInfo` detail.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracelight_model::Signal;

use crate::decode::{self, DecodeContext, Decoded};
use crate::error::IngestError;
use crate::ingest::{ExportOutcome, Ingestor, TENANT_HEADER};
use tracelight_model::auth::bearer_allowed;

#[derive(Clone)]
struct Receiver(Arc<Ingestor>);

impl Receiver {
    fn context<T>(&self, req: &Request<T>) -> Result<DecodeContext, IngestError> {
        let auth = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if !bearer_allowed(auth, &self.0.config().tokens) {
            return Err(IngestError::Unauthenticated);
        }
        let tenant = Ingestor::tenant_from_header(req.metadata().get(TENANT_HEADER).and_then(|v| v.to_str().ok()))?;
        Ok(DecodeContext {
            tenant,
            now_ns: tracelight_model::time::now_ns(),
            limits: self.0.config().item_limits.clone(),
        })
    }

    async fn export<T: Message>(
        &self,
        req: Request<T>,
        signal: Signal,
        convert: fn(&T, &DecodeContext) -> Decoded,
    ) -> Result<ExportOutcome, Status> {
        let ctx = match self.context(&req) {
            Ok(ctx) => ctx,
            Err(e) => {
                self.0.count_refused(&e);
                return Err(to_status(e));
            }
        };
        let msg = req.into_inner();
        let size = msg.encoded_len();
        let decoded = convert(&msg, &ctx);
        drop(msg);
        self.0.export(signal, decoded, size).await.map_err(to_status)
    }
}

fn to_status(e: IngestError) -> Status {
    match e {
        IngestError::Invalid(m) => Status::invalid_argument(m),
        IngestError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        IngestError::Overloaded { reason, retry_after_secs } => Status::with_error_details(
            tonic::Code::Unavailable,
            format!("overloaded: {reason}"),
            ErrorDetails::with_retry_info(Some(Duration::from_secs(retry_after_secs as u64))),
        ),
        IngestError::Wal(w) => Status::with_error_details(
            tonic::Code::Unavailable,
            w.to_string(),
            ErrorDetails::with_retry_info(Some(Duration::from_secs(30))),
        ),
        IngestError::Unauthenticated => Status::unauthenticated(e.to_string()),
        IngestError::Tenant(t) => Status::invalid_argument(t.to_string()),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let out = Receiver::export(self, req, Signal::Spans, decode::traces_to_arrow).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (out.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: out.rejected as i64,
                error_message: out.message.unwrap_or_default(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let out = Receiver::export(self, req, Signal::Logs, decode::logs_to_arrow).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (out.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: out.rejected as i64,
                error_message: out.message.unwrap_or_default(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let out = Receiver::export(self, req, Signal::Metrics, decode::metrics_to_arrow).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (out.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: out.rejected as i64,
                error_message: out.message.unwrap_or_default(),
            }),
        }))
    }
}

/// Serves the three OTLP gRPC services on `listener` until `shutdown` resolves.
pub async fn serve(
    ingestor: Arc<Ingestor>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = ingestor.config().max_request_bytes;
    let rx = Receiver(ingestor);
    tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(FixStatus))
        .add_service(
            TraceServiceServer::new(rx.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            LogsServiceServer::new(rx.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        )
        .add_service(
            MetricsServiceServer::new(rx)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
}

/// Rewrites two statuses tonic produces before our handler runs: `OUT_OF_RANGE` for an
/// over-size request becomes `RESOURCE_EXHAUSTED`, and `INTERNAL` for an undecodable message
/// becomes `INVALID_ARGUMENT`. tonic reports both as trailers-only responses, so the status is
/// in the headers.
#[derive(Clone)]
struct FixStatus<S>(S);

const REWRITES: &[(&str, &str, &str)] =
    &[("11", "Error, decoded message length too large", "8"), ("13", "failed to decode Protobuf message", "3")];

impl<S, B, ResB> tower::Service<http::Request<B>> for FixStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResB>> + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            let h = res.headers_mut();
            let status = h.get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let message = h.get("grpc-message").and_then(|m| m.to_str().ok()).map(percent_decode).unwrap_or_default();
            if let Some(status) = status
                && let Some((_, _, to)) =
                    REWRITES.iter().find(|(from, prefix, _)| *from == status && message.starts_with(prefix))
            {
                h.insert("grpc-status", HeaderValue::from_static(to));
            }
            Ok(res)
        })
    }
}

/// grpc-message is percent-encoded; only spaces and commas matter for the prefix check.
fn percent_decode(s: &str) -> String {
    s.replace("%20", " ").replace("%2C", ",")
}
