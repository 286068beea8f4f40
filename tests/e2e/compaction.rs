//! Compaction in the real binary (docs/TESTING.md §B3): row counts, SQL answers, log search
//! and trace lookups are identical before and after; queries running while segments are
//! swapped always see complete results; kill -9 before or after the catalog swap loses and
//! duplicates nothing, and the janitor deletes what the merge left once its grace is over.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Server;
use crate::otlp;
use crate::transport;

const TABLES: [&str; 3] = ["spans", "logs", "metrics"];
pub(crate) const ROUNDS: i64 = 12;
pub(crate) const PER_REQUEST: i64 = 40;

/// Small segments, no compaction: one flush per round of requests.
const LOADING: [(&str, &str); 2] =
    [("TRACELIGHT_HEAD_FLUSH_INTERVAL", "100ms"), ("TRACELIGHT_COMPACTION_ENABLED", "false")];

/// Compaction at once and often, on every segment.
fn compacting(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "100ms"),
        ("TRACELIGHT_COMPACTION_INTERVAL", "200ms"),
        ("TRACELIGHT_COMPACTION_MIN_AGE", "0s"),
        ("TRACELIGHT_COMPACTION_MIN_INPUTS", "2"),
    ];
    env.extend_from_slice(extra);
    env
}

/// Sends `ROUNDS` requests per signal, waiting for a flush after each round, so every
/// partition ends up in `ROUNDS` small segments. Returns the rows sent per table.
pub(crate) async fn load(server: &Server) -> [i64; 3] {
    for round in 0..ROUNDS {
        send(server, round).await;
        let before = server.metric("tracelight_segments_written_total").await.unwrap_or(0.0);
        let started = Instant::now();
        while server.metric("tracelight_segments_written_total").await.unwrap_or(0.0) < before + 3.0 {
            assert!(started.elapsed() < Duration::from_secs(60), "no flush in 60 s:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    [ROUNDS * PER_REQUEST; 3]
}

/// Round `round` of the load: `PER_REQUEST` spans, logs and points, in one request each.
pub(crate) async fn send(server: &Server, round: i64) {
    let ch = transport::channel(server).await;
    let first = round * PER_REQUEST;
    // Two services, so the merge has groups to order.
    let svc = if round % 2 == 0 { "compact-a" } else { "compact-b" };
    transport::grpc_traces(&ch, otlp::seq_traces(svc, first, PER_REQUEST), false).await.unwrap();
    transport::grpc_logs(&ch, otlp::logs(svc, first, PER_REQUEST), false).await.unwrap();
    transport::grpc_metrics(&ch, otlp::seq_metrics(svc, first, PER_REQUEST), false).await.unwrap();
}

/// Every answer the test compares: counts and per-service sums, a log search, trace lookups.
#[derive(Debug, PartialEq)]
pub(crate) struct Answers {
    sql: Vec<Vec<Vec<Value>>>,
    search: Vec<Value>,
    traces: Vec<Vec<String>>,
}

pub(crate) async fn get(server: &Server, path: &str) -> Value {
    let res = server.http_client().get(server.api(path)).send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}\n{}", server.log());
    body
}

pub(crate) async fn answers(server: &Server) -> Answers {
    let mut sql = Vec::new();
    for t in TABLES {
        sql.push(
            server
                .sql(&format!(
                    "SELECT service_name, count(*), count(DISTINCT CAST(attributes['seq'] AS BIGINT)),
                            sum(CAST(attributes['seq'] AS BIGINT)) FROM {t} GROUP BY service_name ORDER BY service_name"
                ))
                .await,
        );
    }
    sql.push(server.sql("SELECT trace_id, count(*) FROM spans GROUP BY trace_id ORDER BY trace_id LIMIT 5").await);
    let (start, end) = (otlp::T0 - 1_000_000_000, otlp::T0 + 3_600_000_000_000);
    let found = get(server, &format!("/api/v1/logs?q=payment&start={start}&end={end}&limit=1000")).await;
    let search = found["logs"].as_array().unwrap().iter().map(|l| l["attributes"].clone()).collect();
    let mut traces = Vec::new();
    for n in [0u64, 7, 23, 47] {
        let id: String = otlp::trace_id(n).iter().map(|b| format!("{b:02x}")).collect();
        let v = get(server, &format!("/api/v1/traces/{id}")).await;
        let mut spans: Vec<String> =
            v["spans"].as_array().unwrap().iter().map(|s| s["span_id"].as_str().unwrap().to_string()).collect();
        spans.sort();
        traces.push(spans);
    }
    Answers { sql, search, traces }
}

/// Segments each table's full count opens (the catalog's view, minus nothing: the head is
/// empty once everything is flushed).
pub(crate) async fn segments(server: &Server) -> Vec<u64> {
    let mut out = Vec::new();
    for t in TABLES {
        let v = server.query_json(serde_json::json!({ "sql": format!("SELECT count(*) FROM {t}") })).await;
        out.push(v["stats"]["segments"].as_u64().unwrap());
    }
    out
}

/// Parquet files and leftovers (`.tmp`) under the segment directory.
fn files(server: &Server) -> (usize, Vec<String>) {
    let mut parquet = 0;
    let mut tmp = Vec::new();
    let mut stack = vec![server.dir.join("data").join("segments")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = p.to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                tmp.push(name.clone());
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".parquet") {
                parquet += 1;
            }
        }
    }
    (parquet, tmp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_changes_no_answer_and_queries_across_swaps_stay_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &LOADING);
    let sent = load(&server).await;
    let before = answers(&server).await;
    for (t, rows) in before.sql[..3].iter().enumerate() {
        let total: i64 = rows.iter().map(|r| r[1].as_i64().unwrap()).sum();
        assert_eq!(total, sent[t], "{}: {rows:?}", TABLES[t]);
    }
    assert_eq!(before.search.len() as i64, sent[1]);
    assert!(before.traces.iter().all(|t| t.len() == 10), "{:?}", before.traces);
    let small = segments(&server).await;
    assert!(small.iter().all(|n| *n >= ROUNDS as u64), "one segment per flush: {small:?}");
    server.stop();

    let server = Server::start(dir.path(), &compacting(&[]));
    // Readers hammer the counts while segments are swapped under them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for t in TABLES {
        let (stop, client, url) = (stop.clone(), reqwest::Client::new(), server.api("/api/v1/query"));
        readers.push(tokio::spawn(async move {
            let mut answers = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = serde_json::json!({ "sql": format!("SELECT count(*), count(DISTINCT CAST(attributes['seq'] AS BIGINT)) FROM {t}") });
                let v: Value = client.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
                assert!(v.get("error").is_none(), "{t}: {v}");
                let row = &v["rows"][0];
                assert_eq!(
                    (row[0].as_i64(), row[1].as_i64()),
                    (Some(ROUNDS * PER_REQUEST), Some(ROUNDS * PER_REQUEST)),
                    "{t}: a query during compaction saw {row} over {} segments",
                    v["stats"]["segments"]
                );
                answers += 1;
            }
            answers
        }));
    }
    let started = Instant::now();
    while segments(&server).await != vec![1, 1, 1] {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not compacted in 60 s: {:?}\n{}",
            segments(&server).await,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep reading across a few more passes (nothing left to merge: they must be no-ops).
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0, "every reader answered during compaction");
    }
    let merges = server.metric("tracelight_compaction_merges_total").await.unwrap();
    let replaced = server.metric("tracelight_compaction_segments_replaced_total").await.unwrap();
    assert!(merges >= 3.0 && replaced >= 3.0 * ROUNDS as f64, "merges {merges}, replaced {replaced}");
    assert_eq!(answers(&server).await, before, "compaction changed an answer");
    let (parquet, _) = files(&server);
    assert_eq!(parquet as f64, 3.0 + replaced, "the replaced files wait out the grace (query timeout + 30 s)");
}

/// Kills the compacting server at `marker` in its log, restarts it without compaction and
/// checks that every answer is as before, and that the janitor (with short grace periods)
/// leaves on disk exactly the files of the segments queries list.
async fn kill_at(marker: &str, env: &[(&'static str, &'static str)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &LOADING);
    load(&server).await;
    let before = answers(&server).await;
    server.stop();

    let mut server = Server::start(dir.path(), &compacting(env));
    let started = Instant::now();
    while !server.log().contains(marker) {
        assert!(started.elapsed() < Duration::from_secs(60), "never saw {marker:?}:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    let mut env = LOADING.to_vec();
    env.extend([
        ("TRACELIGHT_QUERY_TIMEOUT", "5s"),
        ("TRACELIGHT_JANITOR_INTERVAL", "200ms"),
        ("TRACELIGHT_JANITOR_GRACE_AFTER_QUERIES", "1s"),
        ("TRACELIGHT_JANITOR_STAGED_GRACE", "1s"),
    ]);
    let server = Server::start(dir.path(), &env);
    assert_eq!(answers(&server).await, before, "after kill -9 at {marker:?}");
    let listed: u64 = segments(&server).await.iter().sum();
    let started = Instant::now();
    loop {
        let (parquet, tmp) = files(&server);
        if parquet as u64 == listed && tmp.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the janitor left {parquet} files for {listed} segments, leftovers {tmp:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answers(&server).await, before, "after the janitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_before_the_swap_loses_and_duplicates_nothing() {
    kill_at("pausing before the catalog swap", &[("TRACELIGHT_FAULT_PAUSE_BEFORE_SWAP_MS", "5000")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_after_the_swap_loses_and_duplicates_nothing() {
    // The replaced files wait out the grace (query timeout + 30 s) when the kill lands.
    kill_at("compaction pass", &[]).await;
}
