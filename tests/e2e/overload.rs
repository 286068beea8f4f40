//! Backpressure (docs/TESTING.md §A8, C2): past the head's memory bound the receivers
//! refuse retryably (HTTP 503 + Retry-After, gRPC UNAVAILABLE + RetryInfo), never with a 500;
//! nothing acknowledged is lost and ingest resumes once the head drains.

use std::time::{Duration, Instant};

use prost::Message;

use crate::harness::Server;
use crate::otlp;

#[tokio::test]
async fn past_the_memory_bound_ingest_is_refused_retryably_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[("TRACELIGHT_HEAD_MAX_BYTES", "1048576"), ("TRACELIGHT_QUERY_MAX_RESULT_ROWS", "1000000")],
    );
    let http = server.http_client().clone();
    let url = server.otlp("/v1/traces");
    let ch = crate::transport::channel(&server).await;
    let mut acked = 0i64;
    let (mut http_refusals, mut grpc_refusals) = (0, 0);
    let started = Instant::now();
    let mut seq = 0i64;
    // Bounded: at most 400 requests or 60 s.
    for round in 0..400 {
        if (http_refusals > 0 && grpc_refusals > 0) || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        // Four concurrent requests of 500 spans: together well past a 1 MiB head.
        let mut handles = Vec::new();
        for k in 0..4 {
            let first = seq;
            seq += 500;
            let req = otlp::seq_traces("load", first, 500);
            if (round + k) % 2 == 0 {
                let (http, url) = (http.clone(), url.clone());
                handles.push(tokio::spawn(async move {
                    let res = http
                        .post(url)
                        .header("content-type", "application/x-protobuf")
                        .body(req.encode_to_vec())
                        .send()
                        .await
                        .unwrap();
                    let status = res.status().as_u16();
                    let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                    (true, status, retry_after.is_some(), false)
                }));
            } else {
                let ch = ch.clone();
                handles.push(tokio::spawn(async move {
                    match crate::transport::grpc_traces(&ch, req, false).await {
                        Ok(_) => (false, 200, false, false),
                        Err(s) => {
                            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                            (false, 503, false, !s.details().is_empty())
                        }
                    }
                }));
            }
        }
        for h in handles {
            let (is_http, status, retry_after, retry_info) = h.await.unwrap();
            match status {
                200 => acked += 500,
                503 if is_http => {
                    assert!(retry_after, "HTTP 503 carries Retry-After");
                    http_refusals += 1;
                }
                503 => {
                    assert!(retry_info, "UNAVAILABLE carries RetryInfo");
                    grpc_refusals += 1;
                }
                other => panic!("overload must be refused retryably, got {other}"),
            }
        }
    }
    assert!(
        http_refusals > 0 && grpc_refusals > 0,
        "the bound was reached on both transports ({http_refusals}, {grpc_refusals})"
    );
    // Ingest resumes once the head has drained.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(otlp::seq_traces("after", 0, 10).encode_to_vec())
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A refused request is refused before the WAL: stored = acknowledged, exactly.
    assert_eq!(server.count("SELECT count(*) FROM spans WHERE service_name = 'load'").await, acked);
    let metrics = http.get(server.api("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tracelight_rejected_requests_total{reason=\"overloaded\"}"), "{metrics}");
}

#[tokio::test]
async fn past_the_wal_disk_bound_ingest_is_refused_until_a_flush_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    // No timed flush: only the refusal itself can ask for one.
    let server = Server::start(
        dir.path(),
        &[
            ("TRACELIGHT_WAL_SEGMENT_BYTES", "100000"),
            ("TRACELIGHT_WAL_MAX_BYTES", "300000"),
            ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "1h"),
        ],
    );
    let http = server.http_client().clone();
    let url = server.otlp("/v1/traces");
    let (mut acked, mut refused, mut seq) = (0i64, 0, 0i64);
    for _ in 0..200 {
        let body = otlp::seq_traces("disk", seq, 200).encode_to_vec();
        seq += 200;
        let res = http.post(&url).header("content-type", "application/x-protobuf").body(body).send().await.unwrap();
        match res.status().as_u16() {
            200 => acked += 200,
            503 => {
                assert!(res.headers().contains_key("retry-after"));
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("the disk bound must be refused retryably, got {other}"),
        }
        if refused > 0 && acked > 40 * 200 {
            break;
        }
    }
    assert!(refused > 0, "the WAL bound was reached");
    assert!(acked > 40 * 200, "ingest resumed after the requested flushes: {acked} acknowledged");
    assert_eq!(server.count("SELECT count(*) FROM spans").await, acked);
    let v = server.query_json(serde_json::json!({ "sql": "SELECT count(*) FROM spans" })).await;
    assert!(v["stats"]["segments"].as_u64().unwrap() > 0, "flushes happened without a timer: {v}");
}
