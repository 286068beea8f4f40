//! Search and correlation against the real server: a trace split over requests, flushes and
//! partitions comes back whole with its logs and exemplars; a needle is found exactly; the
//! CLI's `logs` and `trace` print them; list routes page and say what they scanned.

use std::process::Command;

use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

use crate::harness::Server;
use crate::otlp::{self, i, kv, s};
use crate::transport::{self, Body};

const HOUR: u64 = 3_600_000_000_000;

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A span of trace `t` at `start`.
fn at(t: u64, id: u64, parent: Option<u64>, name: &str, start: u64, ms: u64, error: bool) -> Span {
    let mut sp = otlp::span(t, id, parent, name, 0, error);
    sp.start_time_unix_nano = start;
    sp.end_time_unix_nano = start + ms * 1_000_000;
    sp
}

fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracelight"))
        .args(args)
        .arg("--server")
        .arg(server.api(""))
        .env_remove("TRACELIGHT_API_TOKEN")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn get(server: &Server, path: &str) -> (u16, Value) {
    let res = server.http_client().get(server.api(path)).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn a_trace_split_over_requests_flushes_and_partitions_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    // No timed flush: restarts flush (the final flush at SIGTERM), so the test decides what
    // is in Parquet and what is still in the head.
    let mut server = Server::start(dir.path(), &[("TRACELIGHT_HEAD_FLUSH_INTERVAL", "1h")]);
    let t = 900;
    let old = now_ns() - 3 * HOUR;
    let now = now_ns();
    let ch = transport::channel(&server).await;

    // 1: the root and a child, three hours ago (an older partition), over gRPC, with a log.
    let first = vec![
        at(t, 1, None, "GET /checkout", old, 900, true),
        at(t, 2, Some(1), "SELECT cart", old + 1_000_000, 5, false),
    ];
    transport::grpc_traces(&ch, otlp::traces("frontend", first), false).await.unwrap();
    let mut log = otlp::logs("frontend", 0, 1);
    let rec: &mut LogRecord = &mut log.resource_logs[0].scope_logs[0].log_records[0];
    rec.time_unix_nano = old + 2_000_000;
    rec.trace_id = otlp::trace_id(t);
    transport::grpc_logs(&ch, log, false).await.unwrap();
    server.restart();

    // 2: minutes later, another service, over HTTP/JSON, plus a histogram exemplar naming it.
    let second = vec![at(t, 3, Some(1), "charge", old + 600_000_000_000, 40, true)];
    let res = transport::http_export(&server, "/v1/traces", &otlp::traces("payment", second), Body::Json, false).await;
    assert_eq!(res.status(), 200);
    let mut m = otlp::metrics("payment");
    for metric in &mut m.resource_metrics[0].scope_metrics[0].metrics {
        if let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) = &mut metric.data {
            h.data_points[0].exemplars[0].trace_id = otlp::trace_id(t);
            h.data_points[0].time_unix_nano = now;
        }
    }
    let res = transport::http_export(&server, "/v1/metrics", &m, Body::Protobuf, false).await;
    assert_eq!(res.status(), 200);
    server.restart();

    // 3: now, still in the head when we ask, with a log.
    let ch = transport::channel(&server).await;
    let third = vec![at(t, 4, Some(3), "fraud check", now, 2, false)];
    transport::grpc_traces(&ch, otlp::traces("fraud", third), false).await.unwrap();
    let mut log = otlp::logs("fraud", 0, 1);
    let rec = &mut log.resource_logs[0].scope_logs[0].log_records[0];
    rec.time_unix_nano = now + 1;
    rec.trace_id = otlp::trace_id(t);
    transport::grpc_logs(&ch, log, false).await.unwrap();

    let id = hex(&otlp::trace_id(t));
    let (status, v) = get(&server, &format!("/api/v1/traces/{}", id.to_uppercase())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["trace_id"], id.as_str(), "IDs come back lower case");
    let spans = v["spans"].as_array().unwrap();
    let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["GET /checkout", "SELECT cart", "charge", "fraud check"], "ordered by start: {v}");
    let parents: Vec<Value> = spans.iter().map(|s| s["parent_span_id"].clone()).collect();
    let sid = |n: u64| Value::String(hex(&otlp::span_id(n)));
    assert_eq!(parents, [Value::Null, sid(1), sid(1), sid(3)]);
    assert_eq!(v["logs"].as_array().unwrap().len(), 2, "{v}");
    let ex = v["exemplars"].as_array().unwrap();
    assert_eq!(ex.len(), 1, "{v}");
    assert_eq!(ex[0]["metric"], "latency");
    assert_eq!(ex[0]["service_name"], "payment");
    let sum = &v["summary"];
    assert_eq!(sum["root_name"], "GET /checkout");
    assert_eq!(sum["span_count"], 4);
    assert_eq!(sum["error_count"], 2);
    assert_eq!(sum["services"], serde_json::json!(["fraud", "frontend", "payment"]));
    let stats = &v["stats"];
    assert!(stats["segments"].as_u64().unwrap() >= 2, "found in segments: {stats}");
    assert!(stats["head_rows"].as_u64().unwrap() >= 1, "and in the head: {stats}");
    assert!(stats["elapsed_ms"].as_f64().is_some());

    // Unknown and malformed IDs.
    let (status, v) = get(&server, &format!("/api/v1/traces/{}", "ab".repeat(16))).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = get(&server, "/api/v1/traces/not-a-trace").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("32 hexadecimal digits"), "{v}");

    // The CLI prints the tree.
    let (ok, out, err) = cli(&server, &["trace", &id.to_uppercase()]);
    assert!(ok, "{err}");
    let tree: Vec<&str> = out.lines().collect();
    assert!(tree[0].starts_with(&format!("trace {id} · 4 spans")), "{out}");
    assert!(tree[1].starts_with("frontend GET /checkout  900.0ms  +0µs  ERROR"), "{out}");
    assert!(tree[2].starts_with("├─ frontend SELECT cart  5.0ms"), "{out}");
    assert!(tree[3].starts_with("└─ payment charge  40.0ms"), "{out}");
    assert!(tree[4].starts_with("   └─ fraud fraud check  2.0ms"), "{out}");
    assert!(out.contains("logs (2):") && out.contains("exemplars (1):"), "{out}");
    let (ok, _, err) = cli(&server, &["trace", "xyz"]);
    assert!(!ok && err.contains("malformed trace ID"), "{err}");

    // Trace search finds it by a filter on its payment span, and summarises the whole trace.
    let (status, v) = get(&server, "/api/v1/traces?service=payment&status=error&since=4h").await;
    assert_eq!(status, 200, "{v}");
    let traces = v["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{v}");
    assert_eq!(traces[0]["trace_id"], id.as_str());
    assert_eq!(traces[0]["span_count"], 4);
    assert_eq!(traces[0]["root_service"], "frontend");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn a_needle_in_many_logs_is_found_exactly_and_pages_cover_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("TRACELIGHT_HEAD_FLUSH_INTERVAL", "1h")]);
    let (n, k) = (4000u64, 7u64);
    let base = now_ns() - HOUR;
    let needles: Vec<u64> = (0..k).map(|j| 17 + j * 571).collect();
    for part in 0..4u64 {
        let ch = transport::channel(&server).await;
        let mut req = otlp::logs(&format!("svc{part}"), 0, 1);
        let records: Vec<LogRecord> = (part * n / 4..(part + 1) * n / 4)
            .map(|q| {
                let needle = if needles.contains(&q) { " zqxneedle" } else { "" };
                LogRecord {
                    time_unix_nano: base + q * 1_000_000,
                    severity_number: if q % 5 == 0 { 17 } else { 9 },
                    body: Some(s(&format!("request {q} handled{needle} in {}ms", q % 97))),
                    attributes: vec![kv("seq", i(q as i64))],
                    ..Default::default()
                }
            })
            .collect();
        req.resource_logs[0].scope_logs[0].log_records = records;
        transport::grpc_logs(&ch, req, false).await.unwrap();
        // Half of the data flushed to Parquet, half still in the head.
        if part == 1 {
            server.restart();
        }
    }

    let (status, v) = get(&server, "/api/v1/logs?q=zqxneedle&since=2h&limit=100").await;
    assert_eq!(status, 200, "{v}");
    let bodies: Vec<&str> = v["logs"].as_array().unwrap().iter().map(|l| l["body"].as_str().unwrap()).collect();
    let want: Vec<String> =
        needles.iter().rev().map(|q| format!("request {q} handled zqxneedle in {}ms", q % 97)).collect();
    assert_eq!(bodies, want, "exactly the {k} needles, newest first");
    assert_eq!(v["next_cursor"], Value::Null);
    assert!(v["stats"]["segments"].as_u64().unwrap() >= 1 && v["stats"]["head_rows"].as_u64().unwrap() > 0);

    // The CLI finds the same ones.
    let (ok, out, err) = cli(&server, &["logs", "zqxneedle", "--since", "2h"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count() as u64, k, "{out}");
    assert!(err.contains(&format!("{k} records")), "{err}");

    // Paging through every ERROR record: each exactly once, newest first.
    let mut seen = Vec::new();
    let mut path = "/api/v1/logs?severity=error&since=2h&limit=150".to_string();
    loop {
        let (status, v) = get(&server, &path).await;
        assert_eq!(status, 200, "{v}");
        seen.extend(v["logs"].as_array().unwrap().iter().map(|l| l["time_ns"].as_i64().unwrap()));
        match v["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/logs?severity=error&since=2h&limit=150&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len() as u64, n / 5);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first, no repeats");

    // Bad input is the caller's error, with the reason.
    for (path, msg) in [
        ("/api/v1/logs?q=body:%22unclosed", "cannot parse query"),
        ("/api/v1/logs?since=30d", "wider than the limit of 7d"),
        ("/api/v1/logs?limit=5000", "limit must be between 1 and 1000"),
    ] {
        let (status, v) = get(&server, path).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(msg), "{path}: {v}");
    }
}

#[tokio::test]
async fn services_report_red_numbers_and_edges() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ch = transport::channel(&server).await;
    let now = now_ns() - 60_000_000_000;
    // 10 traces: frontend (root, 100..190 ms) calls checkout (server span); every 5th fails.
    let mut front = Vec::new();
    let mut checkout = Vec::new();
    for t in 0..10u64 {
        front.push(at(2000 + t, 1, None, "GET /", now + t * 1_000_000, 100 + t * 10, false));
        checkout.push(at(2000 + t, 2, Some(1), "POST /checkout", now + t * 1_000_000 + 1, 50, t % 5 == 0));
    }
    transport::grpc_traces(&ch, otlp::traces("frontend", front), false).await.unwrap();
    transport::grpc_traces(&ch, otlp::traces("checkout", checkout), false).await.unwrap();
    let (status, v) = get(&server, "/api/v1/services?window=15m").await;
    assert_eq!(status, 200, "{v}");
    let svc = v["services"].as_array().unwrap();
    let front = svc.iter().find(|s| s["service"] == "frontend").unwrap();
    assert_eq!(front["requests"], 10);
    assert_eq!(front["errors"], 0);
    // percentile_cont over 100, 110, …, 190 ms.
    assert_eq!(front["p50_ms"], 145.0);
    assert!((front["p99_ms"].as_f64().unwrap() - 189.1).abs() < 1e-9, "{front}");
    let co = svc.iter().find(|s| s["service"] == "checkout").unwrap();
    assert_eq!((co["requests"].as_u64(), co["errors"].as_u64()), (Some(10), Some(2)));
    assert_eq!(co["error_ratio"], 0.2);
    assert_eq!(
        v["edges"],
        serde_json::json!([{ "parent": "frontend", "child": "checkout", "calls": 10, "errors": 2 }])
    );
    assert!((front["rate_per_sec"].as_f64().unwrap() - 10.0 / 900.0).abs() < 1e-9);
}
