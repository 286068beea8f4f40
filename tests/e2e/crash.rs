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

/// Rounds of kill -9 (`TRACELIGHT_CRASH_ROUNDS`; `scripts/crash` runs 100 on a release build).
fn rounds() -> usize {
    std::env::var("TRACELIGHT_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6)
}

const PER_REQUEST: i64 = 50;
const TABLES: [&str; 3] = ["spans", "logs", "metrics"];

#[derive(Default)]
struct Acked {
    /// Acknowledged sequence numbers per table (`TABLES` order).
    acked: [Vec<i64>; 3],
    /// First sequence number of each request that was not acknowledged, per table: stored
    /// all or nothing.
    unacked: [Vec<i64>; 3],
    /// Distinct refusals seen (the server being killed causes most of them).
    errors: std::collections::BTreeSet<String>,
}

/// Flushes, WAL rotation and truncation all happen while the kills land; every flush pauses
/// between the Parquet write and the catalog commit, and says so in the log: odd rounds kill
/// right there.
pub(crate) const UNDER_KILLS: [(&str, &str); 5] = [
    ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "200ms"),
    ("TRACELIGHT_WAL_SEGMENT_BYTES", "200000"),
    ("TRACELIGHT_QUERY_MAX_RESULT_ROWS", "100000000"),
    ("TRACELIGHT_QUERY_MAX_RESULT_BYTES", "1000000000"),
    ("TRACELIGHT_FAULT_PAUSE_BEFORE_COMMIT_MS", "100"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_sustained_ingest_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &UNDER_KILLS);
    let rounds = rounds();
    let a = kill_under_load(&mut server, rounds).await;
    check_nothing_lost(&server, &a).await;
}

/// What [`kill_under_load`] sent and saw.
pub(crate) struct Killed {
    acked: Acked,
    rounds: usize,
    /// Rounds whose kill landed between a flush's Parquet write and its catalog commit.
    landed: usize,
    /// Start to listening after each kill.
    recovery: Vec<Duration>,
}

/// `rounds` rounds of: five clients sending spans, logs and points as fast as a debug build
/// flushes, then SIGKILL (odd rounds between a flush's write and its commit), then a restart.
pub(crate) async fn kill_under_load(server: &mut Server, rounds: usize) -> Killed {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let next = Arc::new(AtomicI64::new(0));
    let mut recovery = Vec::new();
    let mut acked_before = 0;
    let mut landed = 0;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let ch = transport::channel(server).await;
        let mut tasks = Vec::new();
        for worker in 0..5 {
            let (ch, stop, next, acked) = (ch.clone(), stop.clone(), next.clone(), acked.clone());
            let http = reqwest::Client::new();
            let otlp_http = server.otlp("/v1/traces");
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let first = next.fetch_add(PER_REQUEST, Ordering::Relaxed);
                    let grpc = |e: tonic::Status| format!("gRPC {:?}: {}", e.code(), e.message());
                    let (table, result): (usize, Result<(), String>) = match worker {
                        0 | 1 => (
                            0,
                            transport::grpc_traces(&ch, otlp::seq_traces("crash", first, PER_REQUEST), false)
                                .await
                                .map_err(grpc)
                                .and_then(|r| r.partial_success.map_or(Ok(()), |p| Err(format!("{p:?}")))),
                        ),
                        2 => {
                            use prost::Message;
                            let body = otlp::seq_traces("crash", first, PER_REQUEST).encode_to_vec();
                            let sent = http
                                .post(&otlp_http)
                                .header("content-type", "application/x-protobuf")
                                .body(body)
                                .send();
                            (
                                0,
                                match sent.await {
                                    Ok(r) if r.status() == 200 => Ok(()),
                                    Ok(r) => Err(format!("HTTP {}", r.status())),
                                    Err(e) => Err(format!("HTTP client: {e}")),
                                },
                            )
                        }
                        3 => (
                            1,
                            transport::grpc_logs(&ch, otlp::logs("crash", first, PER_REQUEST), false)
                                .await
                                .map_err(grpc)
                                .and_then(|r| r.partial_success.map_or(Ok(()), |p| Err(format!("{p:?}")))),
                        ),
                        _ => (
                            2,
                            transport::grpc_metrics(&ch, otlp::seq_metrics("crash", first, PER_REQUEST), false)
                                .await
                                .map_err(grpc)
                                .and_then(|r| r.partial_success.map_or(Ok(()), |p| Err(format!("{p:?}")))),
                        ),
                    };
                    let failed = {
                        let mut a = acked.lock().unwrap();
                        match result {
                            Ok(()) => {
                                a.acked[table].extend(first..first + PER_REQUEST);
                                false
                            }
                            Err(e) => {
                                // Not acknowledged: not counted, but stored all or nothing.
                                a.unacked[table].push(first);
                                a.errors.insert(e.chars().take(160).collect());
                                true
                            }
                        }
                    };
                    // Keep going, as an SDK retries; a little slower than flat out, so that a debug
                    // build's flush keeps up over 100 rounds.
                    tokio::time::sleep(Duration::from_millis(if failed { 20 } else { 10 })).await;
                }
            }));
        }
        // Ingest must resume after the restart before the next kill (a slow debug flush can
        // keep the head full for a while after a replay).
        let resumed = std::time::Instant::now();
        while acked.lock().unwrap().acked.iter().map(Vec::len).sum::<usize>() == acked_before {
            assert!(
                resumed.elapsed() < Duration::from_secs(60),
                "round {round} acknowledged nothing in 60 s: ingest did not resume after the restart\nerrors: {:?}\n{}",
                acked.lock().unwrap().errors,
                tail(&server.log())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let aimed = round % 2 == 1;
        let waited = if aimed {
            // Kill while a flush has written its files but not committed them.
            let seen = server.log().matches("pausing before the catalog commit").count();
            let started = std::time::Instant::now();
            while server.log().matches("pausing before the catalog commit").count() == seen
                && started.elapsed() < Duration::from_secs(20)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            landed += (server.log().matches("pausing before the catalog commit").count() > seen) as usize;
            started.elapsed().as_millis() as u64
        } else {
            // Let one flush commit first (its pause, then the commit), so that the WAL is
            // checkpointed between aimed kills and the backlog a restart replays stays bounded;
            // then kill at a random moment.
            let seen = server.log().matches("pausing before the catalog commit").count();
            let started = std::time::Instant::now();
            while server.log().matches("pausing before the catalog commit").count() == seen
                && started.elapsed() < Duration::from_secs(20)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let wait = rand::rng().random_range(150..900);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            started.elapsed().as_millis() as u64
        };
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        server.restart_after_kill9();
        recovery.push(server.start_time);
        let a = acked.lock().unwrap();
        let now: usize = a.acked.iter().map(Vec::len).sum();
        eprintln!(
            "round {round}: killed {} after {waited} ms; {now} records acknowledged so far",
            if aimed { "between the Parquet write and the catalog commit" } else { "at random after a flush" },
        );
        acked_before = now;
    }

    let acked = std::mem::take(&mut *acked.lock().unwrap());
    Killed { acked, rounds, landed, recovery }
}

/// Every acknowledged record is on `reader` exactly once, and no unacknowledged request is
/// there in part.
pub(crate) async fn check_nothing_lost(reader: &Server, k: &Killed) {
    let (a, rounds, landed, recovery) = (&k.acked, k.rounds, k.landed, &k.recovery);
    assert!(
        a.acked[0].len() > 1000 && a.acked[1].len() > 200 && a.acked[2].len() > 200,
        "the load really ran: {:?}",
        a.acked.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut report = Vec::new();
    for (t, table) in TABLES.iter().enumerate() {
        let rows = reader
            .sql(&format!("SELECT CAST(attributes['seq'] AS BIGINT) FROM {table} WHERE service_name = 'crash'"))
            .await;
        let stored: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
        let distinct: HashSet<i64> = stored.iter().copied().collect();
        let lost: Vec<i64> = a.acked[t].iter().copied().filter(|s| !distinct.contains(s)).collect();
        let duplicates = stored.len() - distinct.len();
        let partial: Vec<(i64, usize)> = a.unacked[t]
            .iter()
            .map(|f| (*f, (*f..f + PER_REQUEST).filter(|s| distinct.contains(s)).count()))
            .filter(|(_, n)| *n != 0 && *n != PER_REQUEST as usize)
            .collect();
        let kept = a.unacked[t].iter().filter(|f| distinct.contains(f)).count();
        report.push(format!(
            "{table}: acknowledged {}, stored {} ({} distinct), lost {}, duplicates {duplicates}, \
             unacknowledged requests {} ({kept} stored whole, {} partly)",
            a.acked[t].len(),
            stored.len(),
            distinct.len(),
            lost.len(),
            a.unacked[t].len(),
            partial.len()
        ));
        assert!(
            lost.is_empty(),
            "{table}: {} acknowledged records lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        assert_eq!(duplicates, 0, "{table}: the WAL checkpoint must prevent replaying flushed records");
        assert!(partial.is_empty(), "{table}: unacknowledged requests stored in part: {partial:?}");
    }
    let max = recovery.iter().max().unwrap();
    let mean = recovery.iter().sum::<Duration>() / recovery.len() as u32;
    eprintln!(
        "CRASH REPORT: {rounds} rounds of SIGKILL, {landed} of them between a flush's Parquet write and its catalog commit"
    );
    for line in &report {
        eprintln!("CRASH REPORT: {line}");
    }
    eprintln!("CRASH REPORT: recovery (start to listening, WAL replay included): mean {mean:?}, max {max:?}");
    eprintln!("refusals seen during the kills: {:?}", a.errors);
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
