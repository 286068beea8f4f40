//! OTLP/gRPC receiver (tonic): TraceService, LogsService and MetricsService on one port.
//!
//! tonic handles HTTP/2, framing, gzip and the size cap; the message bytes go to the same pure
//! decode function as OTLP/HTTP (so invalid UTF-8 is repaired, not fatal, on both). Status
//! mappings follow docs/TESTING.md §A7-8: undecodable is `INVALID_ARGUMENT`, over-size is
//! `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`, which OTLP clients retry forever), and
//! overload is `UNAVAILABLE` with a `RetryInfo` detail.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::HeaderValue;
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracelight_model::{Signal, TENANT_HEADER};

use crate::decode::Format;
use crate::error::IngestError;
use crate::ingest::Ingestor;
use crate::receive::{Metered, Ticket};

/// One OTLP service (`S` is the signal's code): tonic frames, decompresses and caps the
/// message; the bytes go to the same pure decode function as OTLP/HTTP.
struct Otlp<const S: u8>(Arc<Ingestor>);

impl<const S: u8> Clone for Otlp<S> {
    fn clone(&self) -> Self {
        Otlp(self.0.clone())
    }
}

impl NamedService for Otlp<1> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}
impl NamedService for Otlp<2> {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}
impl NamedService for Otlp<3> {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl<const S: u8, B> tower::Service<http::Request<B>> for Otlp<S>
where
    Otlp<S>: NamedService,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let export = req.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(<Self as NamedService>::NAME))
            == Some("/Export");
        let ingestor = self.0.clone();
        Box::pin(async move {
            if !export {
                return Ok(Status::unimplemented("only Export is served").into_http());
            }
            let limit = ingestor.config().max_request_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            let signal = Signal::from_code(S).expect("services are built for valid signal codes");
            // Held until the answer: the frames as they arrive, the decompressed message and
            // the WAL's copy count against the receive budget shared by all requests.
            let ticket = ingestor.receive_ticket();
            let req = req.map(|body| Metered::new(body, ticket.clone()));
            let res = grpc.unary(Export { ingestor: ingestor.clone(), signal, ticket: ticket.clone() }, req).await;
            // tonic reports a failed body as an internal error: say what happened instead.
            Ok(match ticket.failure() {
                Some(e) => {
                    ingestor.count_refused(&e);
                    to_status(e).into_http()
                }
                None => res,
            })
        })
    }
}

struct Export {
    ingestor: Arc<Ingestor>,
    signal: Signal,
    ticket: Ticket,
}

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (ingestor, signal, ticket) = (self.ingestor.clone(), self.signal, self.ticket.clone());
        Box::pin(async move {
            // The decompressed message (when compressed) and the copy the WAL logs. A refusal
            // is counted by the caller, which sees it in the ticket.
            let result = match ticket.charge(req.get_ref().len().saturating_mul(2)) {
                Ok(()) => export(&ingestor, signal, req).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(body) => Ok(Response::new(body)),
                Err(e) => Err(to_status(e)),
            }
        })
    }
}

async fn export(ing: &Ingestor, signal: Signal, req: Request<Bytes>) -> Result<Bytes, IngestError> {
    let metadata = |key: &str| req.metadata().get(key).and_then(|v| v.to_str().ok());
    let out =
        ing.export(signal, Format::Protobuf, metadata("authorization"), metadata(TENANT_HEADER), req.get_ref()).await?;
    Ok(Bytes::from(out.response(signal, Format::Protobuf)))
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
        IngestError::ReceiveTimeout(_) => Status::deadline_exceeded(e.to_string()),
        IngestError::Wal(w) => Status::with_error_details(
            tonic::Code::Unavailable,
            w.to_string(),
            ErrorDetails::with_retry_info(Some(Duration::from_secs(30))),
        ),
        IngestError::Unauthenticated => Status::unauthenticated(e.to_string()),
        IngestError::Forbidden(why) => Status::permission_denied(why),
        IngestError::Tenant(t) => Status::invalid_argument(t.to_string()),
    }
}

/// Serves the three OTLP gRPC services on `listener` until `shutdown` resolves.
pub async fn serve(
    ingestor: Arc<Ingestor>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(FixStatus))
        .add_service(Otlp::<1>(ingestor.clone()))
        .add_service(Otlp::<2>(ingestor.clone()))
        .add_service(Otlp::<3>(ingestor))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
}

/// A gRPC codec that passes message bytes through: decoding is ours, not tonic's.
#[derive(Clone, Copy, Default, Debug)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Rewrites the status tonic produces for an over-size request before our handler runs:
/// `OUT_OF_RANGE` becomes `RESOURCE_EXHAUSTED`. tonic reports it as a trailers-only response,
/// so the status is in the headers.
#[derive(Clone)]
struct FixStatus<S>(S);

const TOO_LARGE_PREFIX: &str = "Error, decoded message length too large";

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
            let out_of_range = h.get("grpc-status").is_some_and(|v| v == "11");
            let too_large = h
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .is_some_and(|m| percent_decode(m).starts_with(TOO_LARGE_PREFIX));
            if out_of_range && too_large {
                h.insert("grpc-status", HeaderValue::from_static("8"));
            }
            Ok(res)
        })
    }
}

/// grpc-message is percent-encoded; only spaces and commas matter for the prefix check.
fn percent_decode(s: &str) -> String {
    s.replace("%20", " ").replace("%2C", ",")
}
