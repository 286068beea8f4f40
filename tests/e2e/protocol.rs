//! OTLP protocol semantics (docs/TESTING.md §A) and bad input (§D2) against the real server.

use prost::Message;
use serde_json::json;
use tonic::Code;

use crate::harness::Server;
use crate::otlp::{self, kv, s};
use crate::transport::{self, Body};

#[tokio::test]
async fn http_status_codes_follow_the_otlp_spec() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("TRACELIGHT_INGEST_MAX_REQUEST_BYTES", "65536")]);
    let c = server.http_client();
    let ok = otlp::seq_traces("svc", 0, 3).encode_to_vec();

    assert_eq!(
        transport::post_raw(&server, "/v1/nope", "application/x-protobuf", ok.clone(), false).await.status(),
        404
    );
    assert_eq!(c.get(server.otlp("/v1/traces")).send().await.unwrap().status(), 405);
    assert_eq!(transport::post_raw(&server, "/v1/traces", "text/plain", ok.clone(), false).await.status(), 415);
    let garbage =
        transport::post_raw(&server, "/v1/traces", "application/x-protobuf", b"\xff\xff\xff\xff".to_vec(), false).await;
    assert_eq!(garbage.status(), 400);
    let bad_json =
        transport::post_raw(&server, "/v1/logs", "application/json", b"{\"resourceLogs\": 5}".to_vec(), false).await;
    assert_eq!(bad_json.status(), 400);
    assert_eq!(bad_json.headers()["content-type"], "application/json");
    let v: serde_json::Value = bad_json.json().await.unwrap();
    assert_eq!(v["code"], 3, "a google.rpc.Status in JSON: {v}");

    // Over the limit as sent, and only after decompression (a small gzip bomb).
    let big = otlp::seq_traces("svc", 0, 2000).encode_to_vec();
    assert!(big.len() > 65536);
    assert_eq!(transport::post_raw(&server, "/v1/traces", "application/x-protobuf", big, false).await.status(), 413);
    let mut bomb = otlp::seq_traces("svc", 0, 1);
    bomb.resource_spans[0].scope_spans[0].spans[0].attributes.push(kv("pad", s(&"a".repeat(4 << 20))));
    let bomb_gz = transport::gzip(&bomb.encode_to_vec());
    assert!(bomb_gz.len() < 65536, "compressed it fits: {}", bomb_gz.len());
    let res = transport::post_raw(&server, "/v1/traces", "application/x-protobuf", bomb.encode_to_vec(), true).await;
    assert_eq!(res.status(), 413);
    assert_eq!(
        transport::post_raw(&server, "/v1/traces", "application/x-protobuf", b"\x1f\x8b garbage".to_vec(), true)
            .await
            .status(),
        400
    );

    // Empty requests succeed and store nothing, in both encodings.
    assert_eq!(
        transport::post_raw(&server, "/v1/traces", "application/x-protobuf", Vec::new(), false).await.status(),
        200
    );
    assert_eq!(transport::post_raw(&server, "/v1/logs", "application/json", b"{}".to_vec(), false).await.status(), 200);
    assert_eq!(server.count("SELECT count(*) FROM spans").await + server.count("SELECT count(*) FROM logs").await, 0);

    // Partial success: exactly the bad span is rejected, the rest stored.
    let mut req = otlp::seq_traces("partial", 0, 3);
    req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1, 2, 3];
    let res = transport::http_export(&server, "/v1/traces", &req, Body::Json, false).await;
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], json!(1), "{v}");
    assert!(v["partialSuccess"]["errorMessage"].as_str().unwrap().contains("trace_id"), "{v}");
    assert_eq!(server.count("SELECT count(*) FROM spans WHERE service_name = 'partial'").await, 2);
}

#[tokio::test]
async fn grpc_status_codes_are_the_non_retryable_ones_for_caller_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("TRACELIGHT_INGEST_MAX_REQUEST_BYTES", "65536")]);
    let ch = transport::channel(&server).await;
    let err = transport::grpc_traces(&ch, otlp::seq_traces("svc", 0, 2000), false).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.details().is_empty(), "no retry info on over-size");
    // Compressed small, large once decompressed.
    let mut bomb = otlp::seq_traces("svc", 0, 1);
    bomb.resource_spans[0].scope_spans[0].spans[0].attributes.push(kv("pad", s(&"a".repeat(1 << 20))));
    let err = transport::grpc_traces(&ch, bomb, true).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Undecodable bytes on the wire: send raw garbage as a "message" through a raw codec.
    let err = raw_grpc(&server, b"\xff\xff\xff\xff\x0f").await;
    assert_eq!(err, Code::InvalidArgument);

    // Partial success and empty requests.
    let mut req = otlp::seq_traces("partial", 0, 4);
    req.resource_spans[0].scope_spans[0].spans[2].span_id = vec![0; 8];
    let r = transport::grpc_traces(&ch, req, false).await.unwrap();
    assert_eq!(r.partial_success.unwrap().rejected_spans, 1);
    assert_eq!(server.count("SELECT count(*) FROM spans WHERE service_name = 'partial'").await, 3);
    let r = transport::grpc_traces(&ch, Default::default(), false).await.unwrap();
    assert_eq!(r.partial_success, None);
}

/// Sends `payload` as the body of a TraceService/Export call, bypassing prost encoding.
async fn raw_grpc(server: &Server, payload: &[u8]) -> Code {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let res = client
        .post(format!("http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export", server.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    let status = res
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().parse::<i32>().unwrap())
        .expect("trailers-only status");
    Code::from_i32(status)
}

#[tokio::test]
async fn bad_items_are_rejected_or_normalised_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ch = transport::channel(&server).await;
    let mut req = otlp::seq_traces("bad", 0, 8);
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans[0].start_time_unix_nano = 0; // rejected: no start
    spans[1].end_time_unix_nano = spans[1].start_time_unix_nano - 1; // rejected: end before start
    spans[2].end_time_unix_nano = u64::MAX; // rejected: out of range
    spans[3].trace_id = vec![0; 16]; // rejected: all-zero ID
    // Kept, normalised: 100k attributes, a megabyte key, NUL and control characters.
    spans[4].attributes.extend((0..100_000).map(|i| kv(&format!("k{i}"), s("v"))));
    spans[5].attributes.push(kv(&"k".repeat(1 << 20), s("v")));
    spans[6].name = "nul\0and\u{7}bell".into();
    // Deep nesting is cut by the decoder's recursion limit: the whole request fails cleanly.
    let r = transport::grpc_traces(&ch, req, false).await.unwrap();
    assert_eq!(r.partial_success.unwrap().rejected_spans, 4);
    assert_eq!(server.count("SELECT count(*) FROM spans WHERE service_name = 'bad'").await, 4);
    let rows = server.sql("SELECT cardinality(map_keys(attributes)), dropped_attributes_count FROM spans WHERE attributes['seq'] = '4'").await;
    assert_eq!(rows, vec![vec![json!(1024), json!(100_002 - 1024)]]);
    let rows = server.sql("SELECT dropped_attributes_count FROM spans WHERE attributes['seq'] = '5'").await;
    assert_eq!(rows, vec![vec![json!(1)]]);
    assert_eq!(
        server.count("SELECT count(*) FROM spans WHERE name = concat('nul', chr(0), 'and', chr(7), 'bell')").await,
        1
    );

    let deep = deep_request(10_000);
    assert_eq!(raw_grpc(&server, &deep).await, Code::InvalidArgument);
    let res = transport::post_raw(&server, "/v1/traces", "application/x-protobuf", deep, false).await;
    assert_eq!(res.status(), 400);
    // The server is still fine.
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 4);
}

#[tokio::test]
async fn bearer_tokens_guard_ingest_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[("TRACELIGHT_INGEST_TOKENS", "ingest-secret-1"), ("TRACELIGHT_API_TOKENS", "api-secret-22")],
    );
    let res = transport::http_export(&server, "/v1/traces", &otlp::seq_traces("a", 0, 1), Body::Protobuf, false).await;
    assert_eq!(res.status(), 401);
    let ch = transport::channel(&server).await;
    let err = transport::grpc_traces(&ch, otlp::seq_traces("a", 0, 1), false).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let c = server.http_client();
    let res = c
        .post(server.otlp("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .bearer_auth("ingest-secret-1")
        .body(otlp::seq_traces("a", 0, 2).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut req = tonic::Request::new(otlp::seq_traces("a", 2, 3));
    req.metadata_mut().insert("authorization", "Bearer ingest-secret-1".parse().unwrap());
    opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(ch)
        .export(req)
        .await
        .unwrap();

    let q = json!({ "sql": "SELECT count(*) FROM spans" });
    assert_eq!(c.post(server.api("/api/v1/query")).json(&q).send().await.unwrap().status(), 401);
    let v: serde_json::Value = c
        .post(server.api("/api/v1/query"))
        .bearer_auth("api-secret-22")
        .json(&q)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["rows"], json!([[5]]));
    // Health stays open for probes; /metrics wants an admin token (the flat API list has the
    // admin scope); secrets are never in logs or metrics.
    assert_eq!(c.get(server.api("/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(server.api("/metrics")).send().await.unwrap().status(), 401);
    let metrics =
        c.get(server.api("/metrics")).bearer_auth("api-secret-22").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tracelight_rejected_requests_total{reason=\"unauthenticated\"} 2"), "{metrics}");
    assert!(metrics.contains("tracelight_ingested_items_total{signal=\"spans\"} 5"), "{metrics}");
    for secret in ["ingest-secret-1", "api-secret-22"] {
        assert!(!metrics.contains(secret) && !server.log().contains(secret));
    }
}

#[tokio::test]
async fn user_sql_cannot_write_read_files_or_change_settings() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("TRACELIGHT_QUERY_TIMEOUT", "2s")]);
    for sql in [
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/tracelight-pwned.csv'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM '/etc/passwd'",
        "INSERT INTO spans SELECT * FROM spans",
    ] {
        let res =
            server.http_client().post(server.api("/api/v1/query")).json(&json!({ "sql": sql })).send().await.unwrap();
        assert_eq!(res.status(), 400, "{sql}");
    }
    assert!(!std::path::Path::new("/tmp/tracelight-pwned.csv").exists());
    // A query that would run for ages ends at the timeout with a 4xx.
    let res = server
        .http_client()
        .post(server.api("/api/v1/query"))
        .json(&json!({ "sql": "SELECT count(*) FROM generate_series(1, 100000000000) a" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let v: serde_json::Value = res.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("time limit"), "{v}");
}

/// A traces request whose one span has an attribute nested `depth` kvlists deep, written
/// directly as protobuf bytes (building it with prost would recurse as deep as it nests).
fn deep_request(depth: usize) -> Vec<u8> {
    fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + 12);
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }
    // AnyValue{string_value = "leaf"}
    let mut value = field(1, b"leaf");
    for _ in 0..depth {
        // AnyValue{kvlist_value = KeyValueList{values = [KeyValue{key = "d", value}]}}
        let mut kv = field(1, b"d");
        kv.extend(field(2, &value));
        value = field(6, &field(1, &kv));
    }
    let base = otlp::seq_traces("deep", 0, 1);
    let mut span = base.resource_spans[0].scope_spans[0].spans[0].encode_to_vec();
    // Appending a repeated field to an encoded message adds one more element.
    let mut attr = field(1, b"deep");
    attr.extend(field(2, &value));
    span.extend(field(9, &attr));
    field(1, &field(2, &field(2, &span)))
}

#[tokio::test]
async fn invalid_utf8_in_a_string_never_drops_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Two spans; one name and one attribute value become invalid UTF-8 on the wire.
    let mut req = otlp::seq_traces("utf8", 0, 2);
    req.resource_spans[0].scope_spans[0].spans[0].name = "BAD_NAME".into();
    req.resource_spans[0].scope_spans[0].spans[1].attributes.push(kv("k", s("BAD_VALUE")));
    let mut bytes = req.encode_to_vec();
    for needle in [&b"BAD_NAME"[..], &b"BAD_VALUE"[..]] {
        let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
        bytes[at] = 0xff;
    }
    let res = transport::post_raw(&server, "/v1/traces", "application/x-protobuf", bytes.clone(), false).await;
    assert_eq!(res.status(), 200);
    let ch = transport::channel(&server).await;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    grpc.unary(tonic::Request::new(bytes::Bytes::from(bytes)), path, tracelight_collector::grpc::RawCodec)
        .await
        .unwrap();

    assert_eq!(server.count("SELECT count(*) FROM spans WHERE service_name = 'utf8'").await, 4);
    assert_eq!(server.count("SELECT count(*) FROM spans WHERE name = concat(chr(65533), 'AD_NAME')").await, 2);
    assert_eq!(
        server.count("SELECT count(*) FROM spans WHERE attributes['k'] = concat(chr(65533), 'AD_VALUE')").await,
        2
    );
    let metrics = server.http_client().get(server.api("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tracelight_invalid_utf8_strings_total 4"), "{metrics}");
}
