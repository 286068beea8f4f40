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
pub(crate) async fn catalog_and_bucket(test: &str) -> Option<(TempDb, moto::Moto)> {
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
pub(crate) fn shared(
    db: &TempDb,
    moto: &moto::Moto,
    node: &'static str,
    role: &'static str,
) -> Vec<(&'static str, String)> {
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
        // moto answers slowly when the suite runs many servers at once; a request it dropped is
        // retried after 5 s rather than 30 s.
        ("TRACELIGHT_STORAGE_REQUEST_TIMEOUT", "5s".to_string()),
        ("TRACELIGHT_HEAD_FLUSH_INTERVAL", "100ms".to_string()),
    ]
}

/// `env` with `key` set to `value` (replaced if there).
pub(crate) fn set(mut env: Vec<(&'static str, String)>, key: &'static str, value: &str) -> Vec<(&'static str, String)> {
    env.retain(|(k, _)| *k != key);
    env.push((key, value.to_string()));
    env
}

pub(crate) fn start(dir: &std::path::Path, env: &[(&'static str, String)]) -> Server {
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
pub(crate) fn leads(server: &Server, job: &str) -> bool {
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

/// kill -9 of an ingester under sustained load, its segments on the bucket and its catalog on
/// PostgreSQL, three times (odd rounds between a flush's upload and its catalog commit): a
/// querier answers every acknowledged record exactly once, from the bucket and the restarted
/// ingester's head, and again after its clean stop, from the bucket alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ingester_killed_under_load_on_object_storage_loses_and_duplicates_nothing() {
    let test = "an_ingester_killed_under_load_on_object_storage_loses_and_duplicates_nothing";
    let Some((db, moto)) = catalog_and_bucket(test).await else { return };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let under_kills = |node, role| {
        let mut env = shared(&db, &moto, node, role);
        for (k, v) in crate::crash::UNDER_KILLS {
            env = set(env, k, v);
        }
        env
    };
    let mut ingester = start(d1.path(), &under_kills("i1", "ingest"));
    let mut querier = start(d2.path(), &under_kills("q1", "query"));
    let killed = crate::crash::kill_under_load(&mut ingester, 3).await;
    crate::crash::check_nothing_lost(&querier, &killed).await;
    ingester.stop();
    crate::crash::check_nothing_lost(&querier, &killed).await;
    querier.stop();
    db.drop().await;
}

/// kill -9 of the compactor of a cluster while its merge of an ingester's segments waits
/// before the catalog swap: the querier's answers never change, another compactor merges
/// everything, and the janitor deletes what the killed merge staged and what the merges
/// replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compactor_killed_mid_merge_loses_and_duplicates_nothing() {
    let test = "a_compactor_killed_mid_merge_loses_and_duplicates_nothing";
    let Some((db, moto)) = catalog_and_bucket(test).await else { return };
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut ingester = start(dirs[0].path(), &shared(&db, &moto, "i1", "ingest"));
    let mut querier = start(dirs[1].path(), &shared(&db, &moto, "q1", "query"));
    crate::compaction::load(&ingester).await;
    let want = crate::compaction::answers(&querier).await;
    let before = crate::compaction::segments(&querier).await;
    assert!(before.iter().all(|n| *n > 1), "{before:?}");

    let compacting = |node, pause: Option<&str>| {
        let mut env = shared(&db, &moto, node, "compact,alert");
        env.extend([
            ("TRACELIGHT_COMPACTION_INTERVAL", "200ms".to_string()),
            ("TRACELIGHT_COMPACTION_MIN_AGE", "0s".to_string()),
            ("TRACELIGHT_COMPACTION_MIN_INPUTS", "2".to_string()),
            ("TRACELIGHT_QUERY_TIMEOUT", "5s".to_string()),
            ("TRACELIGHT_JANITOR_INTERVAL", "200ms".to_string()),
            ("TRACELIGHT_JANITOR_GRACE_AFTER_QUERIES", "1s".to_string()),
            ("TRACELIGHT_JANITOR_STAGED_GRACE", "1s".to_string()),
            // Segments settle for 2 × 1 s + 1 s before they are merged.
            ("TRACELIGHT_CLUSTER_PEER_TIMEOUT", "1s".to_string()),
        ]);
        if let Some(ms) = pause {
            env.push(("TRACELIGHT_FAULT_PAUSE_BEFORE_SWAP_MS", ms.to_string()));
        }
        env
    };
    // The ingester answers where its head begins, so its segments are merged at once (not a
    // minute after they were written).
    let mut first = start(dirs[2].path(), &compacting("c1", Some("5000")));
    let started = Instant::now();
    while !first.log().contains("pausing before the catalog swap") {
        assert!(started.elapsed() < Duration::from_secs(30), "no merge in 30 s:\n{}", first.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    assert_eq!(crate::compaction::answers(&querier).await, want, "after kill -9 mid-merge");
    assert_eq!(crate::compaction::segments(&querier).await, before, "the killed merge published nothing");

    let mut second = start(dirs[3].path(), &compacting("c2", None));
    let started = Instant::now();
    while crate::compaction::segments(&querier).await != vec![1, 1, 1] {
        assert!(started.elapsed() < Duration::from_secs(60), "not compacted in 60 s:\n{}", second.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(crate::compaction::answers(&querier).await, want, "after the merges");
    let started = Instant::now();
    loop {
        let waiting = second.metric("tracelight_segments_awaiting_deletion").await;
        let deleted = second.metric("tracelight_janitor_segments_deleted_total").await.unwrap_or(0.0);
        if waiting == Some(0.0) && deleted > 0.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{waiting:?} awaiting deletion, {deleted} deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(crate::compaction::answers(&querier).await, want, "after the janitor");
    for s in [&mut ingester, &mut querier, &mut second] {
        s.stop();
    }
    db.drop().await;
}
