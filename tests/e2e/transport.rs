//! Sending OTLP: tonic gRPC clients and plain HTTP.

use std::io::Write;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::harness::Server;

pub async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.grpc_url()).unwrap().connect().await.unwrap()
}

pub async fn grpc_traces(
    ch: &Channel,
    req: ExportTraceServiceRequest,
    gzip: bool,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let mut c = TraceServiceClient::new(ch.clone()).max_encoding_message_size(256 << 20);
    if gzip {
        c = c.send_compressed(CompressionEncoding::Gzip);
    }
    c.export(req).await.map(|r| r.into_inner())
}

pub async fn grpc_logs(
    ch: &Channel,
    req: ExportLogsServiceRequest,
    gzip: bool,
) -> Result<ExportLogsServiceResponse, tonic::Status> {
    let mut c = LogsServiceClient::new(ch.clone());
    if gzip {
        c = c.send_compressed(CompressionEncoding::Gzip);
    }
    c.export(req).await.map(|r| r.into_inner())
}

pub async fn grpc_metrics(
    ch: &Channel,
    req: ExportMetricsServiceRequest,
    gzip: bool,
) -> Result<ExportMetricsServiceResponse, tonic::Status> {
    let mut c = MetricsServiceClient::new(ch.clone());
    if gzip {
        c = c.send_compressed(CompressionEncoding::Gzip);
    }
    c.export(req).await.map(|r| r.into_inner())
}

#[derive(Clone, Copy, Debug)]
pub enum Body {
    Protobuf,
    Json,
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Encodes `msg` as the body kind, optionally gzipped, and posts it.
pub async fn http_export<M: Message + serde::Serialize>(
    server: &Server,
    path: &str,
    msg: &M,
    body: Body,
    compress: bool,
) -> reqwest::Response {
    let (bytes, ct) = match body {
        Body::Protobuf => (msg.encode_to_vec(), "application/x-protobuf"),
        Body::Json => (serde_json::to_vec(msg).unwrap(), "application/json"),
    };
    post_raw(server, path, ct, bytes, compress).await
}

pub async fn post_raw(
    server: &Server,
    path: &str,
    content_type: &str,
    bytes: Vec<u8>,
    compress: bool,
) -> reqwest::Response {
    let mut req = server.http_client().post(server.otlp(path)).header("content-type", content_type);
    let bytes = if compress {
        req = req.header("content-encoding", "gzip");
        gzip(&bytes)
    } else {
        bytes
    };
    req.body(bytes).send().await.unwrap()
}
