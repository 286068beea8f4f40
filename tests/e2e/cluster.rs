//! Nodes in roles (`--role`, here through `TRACELIGHT_ROLE`) sharing a PostgreSQL catalog and
//! an S3 bucket (moto), as separate processes of the real binary: what an ingester flushes, a
//! querier answers, exactly; each node registers its roles; a node without the query role
//! serves no API.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::compaction::load;
use crate::harness::Server;
use crate::moto;
use crate::postgres::TempDb;

/// A fresh PostgreSQL database and a moto server with the bucket `cluster`, or why the test
/// is skipped (never under CI).
async fn catalog_and_bucket(test: &str) -> Option<(TempDb, moto::Moto)> {
    let Ok(admin) = std::env::var("TRACELIGHT_TEST_POSTGRES_URL") else {
        assert!(std::env::var_os("CI").is_none(), "TRACELIGHT_TEST_POSTGRES_URL unset under CI; .ci/run sets it");
        eprintln!("SKIPPED {test}: TRACELIGHT_TEST_POSTGRES_URL is not set");
        return None;
    };
    let moto = moto::moto(test)?;
    moto::create_bucket(&moto.endpoint, "cluster");
    Some((TempDb::create(&admin).await, moto))
}

/// The environment of a node `node` with roles `role` on the shared catalog and bucket.
fn shared(db: &TempDb, moto: &moto::Moto, node: &'static str, role: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("TRACELIGHT_NODE_ID", node.to_string()),
        ("TRACELIGHT_ROLE", role.to_string()),
        ("TRACELIGHT_CATALOG_URL", db.url.clone()),
        ("TRACELIGHT_STORAGE_URL", "s3://cluster/one".to_string()),
        ("TRACELIGHT_STORAGE_ENDPOINT", moto.endpoint.clone()),
        ("TRACELIGHT_STORAGE_REGION", "us-east-1".to_string()),
        ("TRACELIGHT_STORAGE_ACCESS_KEY_ID", "test".to_string()),
        ("TRACELIGHT_STORAGE_SECRET_ACCESS_KEY", "test".to_string()),
        ("TRACELIGHT_STORAGE_ALLOW_HTTP", "true".to_string()),
        ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "100ms".to_string()),
    ]
}

fn start(dir: &std::path::Path, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(dir, &env)
}

/// The server log without terminal colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `server` says it leads `job` now (its last leadership line for the job).
fn leads(server: &Server, job: &str) -> bool {
    plain(&server.log())
        .lines()
        .rfind(|l| l.contains("leadership changed") && l.contains(&format!("job={job:?}")))
        .is_some_and(|l| l.contains("leading=true"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_compactor_is_replaced_within_seconds() {
    let test = "a_killed_compactor_is_replaced_within_seconds";
    let Some((db, moto)) = catalog_and_bucket(test).await else { return };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start(d1.path(), &shared(&db, &moto, "c1", "compact,alert"));
    let mut b = start(d2.path(), &shared(&db, &moto, "c2", "compact,alert"));
    let started = Instant::now();
    while !(leads(&a, "compact") || leads(&b, "compact")) {
        assert!(started.elapsed() < Duration::from_secs(15), "no leader:\n{}\n{}", a.log(), b.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(leads(&a, "compact") != leads(&b, "compact"), "exactly one leads");
    let (leader, follower) = if leads(&a, "compact") { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert!(leads(leader, "alert") || leads(follower, "alert"));
    leader.kill9();
    let killed = Instant::now();
    while !leads(follower, "compact") {
        assert!(killed.elapsed() < Duration::from_secs(20), "not replaced in 20 s:\n{}", follower.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the compact job moved to the other node {:?} after the kill", killed.elapsed());
    let started = Instant::now();
    while !leads(follower, "alert") {
        assert!(started.elapsed() < Duration::from_secs(20), "alert job not taken over:\n{}", follower.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    follower.stop();
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ingester_and_a_querier_share_the_catalog_and_the_bucket() {
    let test = "an_ingester_and_a_querier_share_the_catalog_and_the_bucket";
    let Some((db, moto)) = catalog_and_bucket(test).await else { return };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ingester = start(d1.path(), &shared(&db, &moto, "i1", "ingest"));
    let mut querier = start(d2.path(), &shared(&db, &moto, "q1", "query"));

    // The ingester takes OTLP and flushes to the bucket; it serves no query API.
    let sent = load(&ingester).await;
    let res = ingester.http_client().post(ingester.api("/api/v1/query")).body("{}").send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("no query role"));
    assert!(ingester.http_client().get(ingester.api("/readyz")).send().await.unwrap().status().is_success());

    // The querier, which received nothing, answers every flushed row once.
    for (table, n) in ["spans", "logs", "metrics"].iter().zip(sent) {
        assert_eq!(querier.count(&format!("SELECT count(*) FROM {table}")).await, n, "{table}");
    }
    let v: Value = querier
        .http_client()
        .get(querier.api(&format!(
            "/api/v1/logs?q=payment&start={}&end={}&limit=1000",
            crate::otlp::T0 - 1_000_000_000,
            crate::otlp::T0 + 3_600_000_000_000
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!v["logs"].as_array().unwrap().is_empty(), "log search on the querier: {v}");
    assert!(querier.log().contains("roles query"), "{}", querier.log());

    // Both registered, with their roles.
    let started = Instant::now();
    loop {
        let v: Value =
            querier.http_client().get(querier.api("/api/v1/cluster")).send().await.unwrap().json().await.unwrap();
        let nodes: Vec<(String, String)> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["node"].as_str().unwrap().to_string(), n["roles"].to_string()))
            .collect();
        if nodes.len() == 2 {
            assert_eq!(nodes[0], ("i1".to_string(), r#"["ingest"]"#.to_string()), "{v}");
            assert_eq!(nodes[1], ("q1".to_string(), r#"["query"]"#.to_string()), "{v}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Neither has a leader job's role, so neither holds a leader lock (one that did would keep
    // the compactor from ever running).
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let (locks,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(locks, 0, "a node without the compact or alert role holds a leader lock");
    drop(conn);
    ingester.stop();
    querier.stop();
    db.drop().await;
}
