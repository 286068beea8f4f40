//! Durability (docs/TESTING.md §B1, B3): SIGKILL during sustained ingest loses nothing that
//! was acknowledged, and a damaged WAL tail costs only the damaged records.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::harness::Server;
use crate::otlp;
use crate::transport::{self, Body};

const ROUNDS: usize = 6;
const PER_REQUEST: i64 = 50;

#[derive(Default)]
struct Acked {
    spans: Vec<i64>,
    logs: Vec<i64>,
    /// Distinct refusals seen (the server being killed causes most of them).
    errors: std::collections::BTreeSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_sustained_ingest_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &[
            // Flushes, WAL rotation and truncation all happen while the kills land.
            ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "200ms"),
            ("TRACELIGHT_WAL_SEGMENT_BYTES", "200000"),
            ("TRACELIGHT_QUERY_MAX_RESULT_ROWS", "10000000"),
        ],
    );
    let acked = Arc::new(Mutex::new(Acked::default()));
    let next = Arc::new(AtomicI64::new(0));
    let mut recovery = Vec::new();
    let mut acked_before = 0;
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let ch = transport::channel(&server).await;
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let (ch, stop, next, acked) = (ch.clone(), stop.clone(), next.clone(), acked.clone());
            let http = reqwest::Client::new();
            let otlp_http = server.otlp("/v1/traces");
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let first = next.fetch_add(PER_REQUEST, Ordering::Relaxed);
                    let result: Result<(), String> = match worker {
                        0 | 1 => transport::grpc_traces(&ch, otlp::seq_traces("crash", first, PER_REQUEST), false)
                            .await
                            .map_err(|e| format!("gRPC {:?}: {}", e.code(), e.message()))
                            .and_then(|r| r.partial_success.map_or(Ok(()), |p| Err(format!("{p:?}")))),
                        2 => {
                            use prost::Message;
                            let body = otlp::seq_traces("crash", first, PER_REQUEST).encode_to_vec();
                            match http
                                .post(&otlp_http)
                                .header("content-type", "application/x-protobuf")
                                .body(body)
                                .send()
                                .await
                            {
                                Ok(r) if r.status() == 200 => Ok(()),
                                Ok(r) => Err(format!("HTTP {}", r.status())),
                                Err(e) => Err(format!("HTTP client: {e}")),
                            }
                        }
                        _ => transport::grpc_logs(&ch, otlp::logs("crash", first, PER_REQUEST), false)
                            .await
                            .map_err(|e| format!("gRPC {:?}: {}", e.code(), e.message()))
                            .and_then(|r| r.partial_success.map_or(Ok(()), |p| Err(format!("{p:?}")))),
                    };
                    if let Err(e) = result {
                        // Not acknowledged: not counted. Keep going, as an SDK retries.
                        acked.lock().unwrap().errors.insert(e.chars().take(160).collect());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let mut a = acked.lock().unwrap();
                    let list = if worker == 3 { &mut a.logs } else { &mut a.spans };
                    list.extend(first..first + PER_REQUEST);
                }
            }));
        }
        let wait = rand::rng().random_range(300..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        server.restart_after_kill9();
        recovery.push(server.start_time);
        let a = acked.lock().unwrap();
        eprintln!(
            "round {round}: killed after {wait} ms; {} spans and {} logs acknowledged so far",
            a.spans.len(),
            a.logs.len()
        );
        let now = a.spans.len() + a.logs.len();
        assert!(
            now > acked_before,
            "round {round} acknowledged nothing: ingest did not resume after the restart\nerrors: {:?}\n{}",
            a.errors,
            tail(&server.log())
        );
        acked_before = now;
    }

    let (spans, logs) = {
        let a = acked.lock().unwrap();
        (a.spans.clone(), a.logs.clone())
    };
    assert!(spans.len() > 1000 && logs.len() > 200, "the load really ran: {} spans, {} logs", spans.len(), logs.len());
    for (table, acked) in [("spans", spans), ("logs", logs)] {
        let rows = server
            .sql(&format!("SELECT CAST(attributes['seq'] AS BIGINT) FROM {table} WHERE service_name = 'crash'"))
            .await;
        let stored: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
        let distinct: HashSet<i64> = stored.iter().copied().collect();
        let lost: Vec<i64> = acked.iter().copied().filter(|s| !distinct.contains(s)).collect();
        let duplicates = stored.len() - distinct.len();
        eprintln!(
            "{table}: acknowledged {}, stored {} ({} distinct), lost {}, duplicates {duplicates}",
            acked.len(),
            stored.len(),
            distinct.len(),
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "{table}: {} acknowledged records lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        assert_eq!(duplicates, 0, "{table}: the WAL checkpoint must prevent replaying flushed records");
    }
    eprintln!("refusals seen during the kills: {:?}", acked.lock().unwrap().errors);
    let max = recovery.iter().max().unwrap();
    eprintln!("recovery (start to listening, including WAL replay): max {max:?}, all {recovery:?}");
}

#[tokio::test]
async fn a_torn_tail_and_a_flipped_byte_cost_only_the_damaged_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("TRACELIGHT_HEAD_FLUSH_INTERVAL", "1h")]);
    let wal_dir = dir.path().join("data/wal");
    let segment = || {
        let mut files: Vec<_> = std::fs::read_dir(&wal_dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files.pop().unwrap()
    };
    // One WAL record per request; remember where each ends.
    let mut ends = Vec::new();
    for r in 0..5 {
        let res =
            transport::http_export(&server, "/v1/traces", &otlp::seq_traces("torn", r * 10, 10), Body::Protobuf, false)
                .await;
        assert_eq!(res.status(), 200);
        ends.push(std::fs::metadata(segment()).unwrap().len());
    }
    server.kill9();
    let path = segment();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid4 = ((ends[2] + ends[3]) / 2) as usize;
    bytes[mid4] ^= 0x55; // a flipped byte inside record 4
    bytes.truncate(ends[4] as usize - 3); // and a torn last record
    std::fs::write(&path, bytes).unwrap();

    server.restart_after_kill9();
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 30);
    assert_eq!(server.count("SELECT max(CAST(attributes['seq'] AS BIGINT)) FROM spans").await, 29);
    assert!(server.log().contains("WAL damage found"), "the damage is logged");
    // New data is accepted after the damaged part.
    let res =
        transport::http_export(&server, "/v1/traces", &otlp::seq_traces("torn", 100, 10), Body::Protobuf, false).await;
    assert_eq!(res.status(), 200);
    server.restart_after_kill9();
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 40);
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
