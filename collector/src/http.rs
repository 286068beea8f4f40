//! OTLP/HTTP receiver (axum): `POST /v1/traces|logs|metrics`, protobuf or JSON, gzip.
//!
//! The size limit applies twice: to the body as received and, for gzip, to the decompressed
//! bytes (a decompression bomb stops at the limit). Responses use the request's content type;
//! errors carry a `google.rpc.Status` in that encoding, as the OTLP spec asks.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;
use tracelight_model::Signal;

use crate::decode::{self, DecodeContext, DecodeError, Decoded, Format};
use crate::error::IngestError;
use crate::ingest::{ExportOutcome, Ingestor, TENANT_HEADER};
use tracelight_model::auth::bearer_allowed;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/HTTP router. Unknown paths get 404 and other methods 405 from axum.
pub fn router(ingestor: Arc<Ingestor>) -> Router {
    // Bodies somewhat over the limit are still read in full, so the client gets a proper 413
    // from `read_body` instead of a connection reset while it is still sending. Past this
    // hard cap axum refuses early.
    let limit = ingestor.config().max_request_bytes;
    let hard_cap = limit.saturating_add(4 << 20);
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .layer(DefaultBodyLimit::max(hard_cap))
        .with_state(ingestor)
}

async fn traces(State(ing): State<Arc<Ingestor>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&ing, Signal::Spans, &headers, body, decode::decode_traces, |o, f| {
        encode(
            f,
            &ExportTraceServiceResponse {
                partial_success: (o.rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: o.rejected as i64,
                    error_message: o.message.clone().unwrap_or_default(),
                }),
            },
        )
    })
    .await
}

async fn logs(State(ing): State<Arc<Ingestor>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&ing, Signal::Logs, &headers, body, decode::decode_logs, |o, f| {
        encode(
            f,
            &ExportLogsServiceResponse {
                partial_success: (o.rejected > 0).then(|| ExportLogsPartialSuccess {
                    rejected_log_records: o.rejected as i64,
                    error_message: o.message.clone().unwrap_or_default(),
                }),
            },
        )
    })
    .await
}

async fn metrics(State(ing): State<Arc<Ingestor>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&ing, Signal::Metrics, &headers, body, decode::decode_metrics, |o, f| {
        encode(
            f,
            &ExportMetricsServiceResponse {
                partial_success: (o.rejected > 0).then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: o.rejected as i64,
                    error_message: o.message.clone().unwrap_or_default(),
                }),
            },
        )
    })
    .await
}

type DecodeFn = fn(&[u8], Format, &DecodeContext) -> Result<Decoded, DecodeError>;

async fn handle(
    ing: &Ingestor,
    signal: Signal,
    headers: &HeaderMap,
    body: Bytes,
    decode: DecodeFn,
    respond: impl Fn(&ExportOutcome, Format) -> Vec<u8>,
) -> Response {
    let format = match content_format(headers) {
        Some(f) => f,
        None => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
                "use Content-Type application/x-protobuf or application/json",
            )
                .into_response();
        }
    };
    let result = async {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !bearer_allowed(auth, &ing.config().tokens) {
            return Err(IngestError::Unauthenticated);
        }
        let tenant = Ingestor::tenant_from_header(headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok()))?;
        let body = read_body(headers, body, ing.config().max_request_bytes)?;
        let ctx = DecodeContext {
            tenant,
            now_ns: tracelight_model::time::now_ns(),
            limits: ing.config().item_limits.clone(),
        };
        let decoded = decode(&body, format, &ctx).map_err(|e| IngestError::Invalid(e.to_string()))?;
        ing.export(signal, format, &ctx, &body, decoded).await
    }
    .await;
    match result {
        Ok(outcome) => ok_response(format, respond(&outcome, format)),
        Err(e) => {
            if !matches!(e, IngestError::Overloaded { .. } | IngestError::Wal(_)) {
                ing.count_refused(&e);
            }
            error_response(format, e)
        }
    }
}

fn content_format(headers: &HeaderMap) -> Option<Format> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next()?.trim();
    if mime.eq_ignore_ascii_case(PROTOBUF) {
        Some(Format::Protobuf)
    } else if mime.eq_ignore_ascii_case(JSON) {
        Some(Format::Json)
    } else {
        None
    }
}

/// The request body after `Content-Encoding`, never larger than `limit`.
fn read_body(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, IngestError> {
    if body.len() > limit {
        return Err(IngestError::TooLarge { size: body.len(), limit });
    }
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity((body.len() * 4).min(limit));
            let mut reader = flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1);
            reader.read_to_end(&mut out).map_err(|e| IngestError::Invalid(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(IngestError::TooLarge { size: out.len(), limit });
            }
            Ok(Bytes::from(out))
        }
        other => Err(IngestError::Invalid(format!("unsupported Content-Encoding {other:?}; use gzip or identity"))),
    }
}

fn encode<M: Message + serde::Serialize>(format: Format, msg: &M) -> Vec<u8> {
    match format {
        Format::Protobuf => msg.encode_to_vec(),
        Format::Json => serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::Protobuf => PROTOBUF,
        Format::Json => JSON,
    })
}

fn ok_response(format: Format, body: Vec<u8>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type(format))], body).into_response()
}

fn error_response(format: Format, e: IngestError) -> Response {
    let (status, grpc_code, retry_after) = match &e {
        IngestError::Invalid(_) | IngestError::Tenant(_) => (StatusCode::BAD_REQUEST, 3, None),
        IngestError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, 8, None),
        IngestError::Overloaded { retry_after_secs, .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, 14, Some(*retry_after_secs))
        }
        IngestError::Wal(_) => (StatusCode::SERVICE_UNAVAILABLE, 14, Some(30)),
        IngestError::Unauthenticated => (StatusCode::UNAUTHORIZED, 16, None),
    };
    let message = e.to_string();
    let body = match format {
        Format::Protobuf => RpcStatus { code: grpc_code, message, details: Vec::new() }.encode_to_vec(),
        Format::Json => {
            serde_json::to_vec(&serde_json::json!({ "code": grpc_code, "message": message })).unwrap_or_default()
        }
    };
    let mut res = (status, [(header::CONTENT_TYPE, content_type(format))], body).into_response();
    if let Some(secs) = retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types_any::Any>,
}

mod prost_types_any {
    /// `google.protobuf.Any`, for the (always empty) details of [`super::RpcStatus`].
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
}
