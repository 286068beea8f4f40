//! OTLP/HTTP receiver (axum): `POST /v1/traces|logs|metrics`, protobuf or JSON, gzip.
//!
//! The size limit applies twice: to the body as received and, for gzip, to the decompressed
//! bytes (a decompression bomb stops at the limit). Responses use the request's content type;
//! errors carry a `google.rpc.Status` in that encoding, as the OTLP spec asks.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use tracelight_model::{Signal, TENANT_HEADER};

use crate::decode::Format;
use crate::error::IngestError;
use crate::ingest::Ingestor;
use crate::receive::{Metered, Ticket};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/HTTP router. Unknown paths get 404 and other methods 405 from axum.
pub fn router(ingestor: Arc<Ingestor>) -> Router {
    Router::new()
        .route("/v1/traces", post(|s, h, b| handle(s, Signal::Spans, h, b)))
        .route("/v1/logs", post(|s, h, b| handle(s, Signal::Logs, h, b)))
        .route("/v1/metrics", post(|s, h, b| handle(s, Signal::Metrics, h, b)))
        .with_state(ingestor)
}

async fn handle(State(ing): State<Arc<Ingestor>>, signal: Signal, headers: HeaderMap, body: Body) -> Response {
    let Some(format) = content_format(&headers) else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            "use Content-Type application/x-protobuf or application/json",
        )
            .into_response();
    };
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // Held until the answer: the body, its decompressed form and the WAL's copy count against
    // the receive budget shared by all requests.
    let ticket = ing.receive_ticket();
    let body = match receive(&ing, &headers, body, &ticket).await {
        Ok(body) => body,
        Err(e) => {
            ing.count_refused(&e);
            return error_response(format, e);
        }
    };
    match ing.export(signal, format, value(header::AUTHORIZATION.as_str()), value(TENANT_HEADER), &body).await {
        Ok(outcome) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type(format))], outcome.response(signal, format))
                .into_response()
        }
        Err(e) => error_response(format, e),
    }
}

/// Reads the body within the receive budget and deadline, then decompresses it.
async fn receive(ing: &Ingestor, headers: &HeaderMap, body: Body, ticket: &Ticket) -> Result<Bytes, IngestError> {
    // Bodies somewhat over the limit are still read in full, so the client gets a proper 413
    // instead of a connection reset while it is still sending. Past this hard cap, or past a
    // declared length over it, reading stops.
    let limit = ing.config().max_request_bytes;
    let hard_cap = limit.saturating_add(4 << 20);
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(size) = declared.filter(|&n| n > hard_cap) {
        return Err(IngestError::TooLarge { size, limit });
    }
    let received = match axum::body::to_bytes(Body::new(Metered::new(body, ticket.clone())), hard_cap).await {
        Ok(b) => b,
        Err(e) => {
            return Err(match ticket.failure() {
                Some(e) => e,
                None if ticket.bytes() >= hard_cap => IngestError::TooLarge { size: ticket.bytes(), limit },
                None => IngestError::Invalid(format!("the request body could not be read: {e}")),
            });
        }
    };
    let body = read_body(headers, received, limit)?;
    // The decompressed body (when it is not the same bytes) and the copy the WAL logs.
    ticket.charge(body.len().saturating_mul(2))?;
    Ok(body)
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

fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::Protobuf => PROTOBUF,
        Format::Json => JSON,
    })
}

fn error_response(format: Format, e: IngestError) -> Response {
    let (status, grpc_code, retry_after) = match &e {
        IngestError::Invalid(_) | IngestError::Tenant(_) => (StatusCode::BAD_REQUEST, 3, None),
        IngestError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, 8, None),
        IngestError::Overloaded { retry_after_secs, .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, 14, Some(*retry_after_secs))
        }
        IngestError::Wal(_) => (StatusCode::SERVICE_UNAVAILABLE, 14, Some(30)),
        IngestError::ReceiveTimeout(_) => (StatusCode::REQUEST_TIMEOUT, 4, None),
        IngestError::Unauthenticated => (StatusCode::UNAUTHORIZED, 16, None),
        IngestError::Forbidden(_) => (StatusCode::FORBIDDEN, 7, None),
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
