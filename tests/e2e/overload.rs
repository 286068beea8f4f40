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

/// Resident memory of a process now (`VmRSS`) or at its peak (`VmHWM`), in bytes.
fn proc_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Memory (docs/TESTING.md §C2): spans and logs pushed as fast as two `bench ingest` clients
/// can for 60 s keep the head at its bound, and the server's peak RSS stays under the bound
/// the configuration sets: `head.max_bytes + ingest.max_receiving_bytes` plus a fixed
/// allowance for code, runtime, the flush and the index build (documented in the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_of_full_ingest_stay_under_the_configured_memory_bound() {
    const HEAD: u64 = 96 << 20;
    const RECEIVING: u64 = 32 << 20;
    const FIXED: u64 = 320 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("TRACELIGHT_HEAD_MAX_BYTES", &HEAD.to_string()),
            ("TRACELIGHT_INGEST_MAX_RECEIVING_BYTES", &RECEIVING.to_string()),
        ],
    );
    let pid = server.pid();
    let duration = std::env::var("TRACELIGHT_MEMORY_TEST_SECONDS").unwrap_or_else(|_| "60".into());
    let benches: Vec<_> = ["spans", "logs"]
        .iter()
        .map(|signal| {
            let out = |ext: &str| std::fs::File::create(dir.path().join(format!("bench-{signal}.{ext}"))).unwrap();
            std::process::Command::new(env!("CARGO_BIN_EXE_tracelight"))
                .args(["bench", "ingest", "--signal", signal, "--clients", "8", "--payloads", "32"])
                .args(["--duration", &format!("{duration}s"), "--endpoint", &server.grpc.to_string()])
                .stdout(out("out"))
                .stderr(out("err"))
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut samples, mut max_rss, mut head_full) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let mut benches: Vec<_> = benches.into_iter().map(Some).collect();
    let mut statuses = Vec::new();
    while benches.iter().any(Option::is_some) {
        assert!(started.elapsed() < Duration::from_secs(300), "the benches did not end in 300 s");
        max_rss = max_rss.max(proc_bytes(pid, "VmRSS"));
        samples += 1;
        if server.metric("tracelight_head_bytes").await.unwrap_or(0.0) as u64 > HEAD / 2 {
            head_full += 1;
        }
        for b in benches.iter_mut() {
            if let Some(status) = b.as_mut().and_then(|c| c.try_wait().unwrap()) {
                statuses.push(status);
                *b = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let peak = proc_bytes(pid, "VmHWM");
    let bound = HEAD + RECEIVING + FIXED;
    let read = |f: String| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    let report: Vec<String> = ["spans", "logs"].iter().map(|s| read(format!("bench-{s}.out"))).collect();
    assert!(
        statuses.iter().all(|s| s.success()),
        "a bench failed: {}\n{}",
        read("bench-spans.err".into()),
        read("bench-logs.err".into())
    );
    eprintln!(
        "memory under full ingest: peak RSS {} MiB (VmHWM), max sampled {} MiB, bound {} MiB; head over half full in \
         {head_full} of {samples} samples\n{}",
        peak >> 20,
        max_rss >> 20,
        bound >> 20,
        report.join("\n")
    );
    assert!(report.iter().all(|r| r.contains("sustained durable ingest")), "{report:?}");
    assert!(head_full > 0, "the load did not fill the head: it was not ingest at its maximum");
    assert!(peak <= bound, "peak RSS {} MiB over the configured bound of {} MiB", peak >> 20, bound >> 20);
}
