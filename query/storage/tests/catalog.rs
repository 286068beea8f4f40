//! Catalog tests, run against SQLite always and against PostgreSQL when
//! TRACELIGHT_TEST_POSTGRES_URL is set (scripts/test and .ci/run set it).

use sqlx::Connection;
use tracelight_model::{Signal, Tenant};
use tracelight_storage::{Catalog, NodeInfo, SegmentMeta};

const H: i64 = 3_600_000_000_000;

fn seg(id: &str, signal: Signal, hour: i64, lsn: u64) -> SegmentMeta {
    SegmentMeta {
        id: id.into(),
        node: "n1".into(),
        tenant: Tenant::default(),
        signal,
        partition_hour: hour,
        path: format!("default/{signal}/x/{hour}/n1-{id}.parquet"),
        min_time_ns: hour * H + 10,
        max_time_ns: hour * H + 20,
        rows: 5,
        bytes: 100,
        index_bytes: 7,
        flush_lsn: lsn,
        created_at_ns: 0,
    }
}

async fn exercise(catalog: &Catalog) {
    assert_eq!(
        catalog.migrate().await.unwrap(),
        vec!["0001_segments", "0002_segment_index", "0003_slo", "0004_slo_late_data", "0005_nodes"]
    );
    assert!(catalog.migrate().await.unwrap().is_empty(), "migrations apply once");

    // The node registry: an upsert per heartbeat, listed by name, stale ones forgotten.
    let node = |name: &str, roles: &str, beat: i64| NodeInfo {
        node: name.into(),
        roles: roles.into(),
        advertise: format!("{name}:4319"),
        version: "0.1.0".into(),
        started_at_ns: 5,
        heartbeat_ns: beat,
    };
    catalog.heartbeat(&node("q1", "query", 100)).await.unwrap();
    catalog.heartbeat(&node("i1", "ingest", 100)).await.unwrap();
    catalog.heartbeat(&node("q1", "query,alert", 200)).await.unwrap();
    assert_eq!(catalog.nodes().await.unwrap(), vec![node("i1", "ingest", 100), node("q1", "query,alert", 200)]);
    assert_eq!(catalog.forget_nodes_before(150).await.unwrap(), 1);
    assert_eq!(catalog.nodes().await.unwrap(), vec![node("q1", "query,alert", 200)]);
    assert_eq!(catalog.wal_checkpoint("n1").await.unwrap(), 0);

    assert!(
        catalog.commit_flush("n1", &[seg("a", Signal::Spans, 10, 4), seg("b", Signal::Logs, 10, 4)], 4).await.unwrap()
    );
    assert!(catalog.commit_flush("n1", &[seg("c", Signal::Spans, 12, 9)], 9).await.unwrap());
    assert_eq!(catalog.wal_checkpoint("n1").await.unwrap(), 9);
    // A retried commit of an already committed flush changes nothing.
    assert!(!catalog.commit_flush("n1", &[seg("c2", Signal::Spans, 12, 9)], 9).await.unwrap());
    assert_eq!(catalog.all_segment_paths().await.unwrap().len(), 3);

    let t = Tenant::default();
    let ids = |v: Vec<SegmentMeta>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(catalog.segments(&t, Signal::Spans, None, None).await.unwrap()), vec!["a", "c"]);
    assert_eq!(ids(catalog.segments(&t, Signal::Spans, Some(11 * H), None).await.unwrap()), vec!["c"]);
    assert_eq!(ids(catalog.segments(&t, Signal::Spans, None, Some(10 * H + 10)).await.unwrap()), Vec::<String>::new());
    assert_eq!(ids(catalog.segments(&t, Signal::Spans, None, Some(10 * H + 11)).await.unwrap()), vec!["a"]);
    assert_eq!(ids(catalog.segments(&t, Signal::Logs, None, None).await.unwrap()), vec!["b"]);
    let other = Tenant::new("other").unwrap();
    assert!(catalog.segments(&other, Signal::Spans, None, None).await.unwrap().is_empty());
    let got = &catalog.segments(&t, Signal::Logs, None, None).await.unwrap()[0];
    assert_eq!(got, &seg("b", Signal::Logs, 10, 4));
    // What a late-data recount looks at: segments created after a mark.
    let created = catalog.segments_created_after(&t, Signal::Spans, -1).await.unwrap();
    assert_eq!(created.len(), 2);
    let newest = created.iter().map(|c| c.2).max().unwrap();
    assert!(catalog.segments_created_after(&t, Signal::Spans, newest).await.unwrap().is_empty());
    assert!(catalog.segments_created_after(&other, Signal::Spans, -1).await.unwrap().is_empty());
    slo_state(catalog).await;
}

/// SLO counts, alert states and the outbox, on either database.
async fn slo_state(catalog: &Catalog) {
    use tracelight_model::slo::{MinuteCounts, Notification, SloStore};
    assert_eq!(catalog.slo_build("s").await.unwrap(), None);
    catalog.slo_reset("s", "def1").await.unwrap();
    let m = |minute, good, total| MinuteCounts { minute, good, total };
    catalog.slo_put("s", &[m(10, 9, 10), m(11, 5, 5)], 12).await.unwrap();
    // Counting a minute again replaces it.
    catalog.slo_put("s", &[m(11, 6, 7)], 12).await.unwrap();
    assert_eq!(catalog.slo_build("s").await.unwrap(), Some(("def1".to_string(), 12)));
    assert_eq!(catalog.slo_minutes("s", 11).await.unwrap(), vec![m(11, 6, 7)]);
    assert_eq!(catalog.slo_segments_mark("s").await.unwrap(), 0);
    catalog.slo_set_segments_mark("s", 77).await.unwrap();
    assert_eq!(catalog.slo_segments_mark("s").await.unwrap(), 77);
    catalog.slo_reset("s", "def2").await.unwrap();
    assert!(catalog.slo_minutes("s", 0).await.unwrap().is_empty(), "a new definition starts over");
    assert_eq!(catalog.slo_segments_mark("s").await.unwrap(), 0, "and recounts from the start");

    let n = |id: &str, state: &str, at: i64| Notification {
        id: id.into(),
        alert_key: "s/page/1h/5m".into(),
        channel: "chat".into(),
        state: state.into(),
        payload: "{}".into(),
        created_at_ns: at,
        attempts: 0,
        next_attempt_ns: at,
    };
    catalog.alert_transition("s", "s/page/1h/5m", "firing", 100, &[n("f1", "firing", 100)]).await.unwrap();
    // The same transition recorded twice (a retried evaluation) queues it once.
    catalog.alert_transition("s", "s/page/1h/5m", "firing", 100, &[n("f1", "firing", 100)]).await.unwrap();
    catalog.alert_transition("s", "s/page/1h/5m", "ok", 200, &[n("r1", "resolved", 200)]).await.unwrap();
    assert_eq!(catalog.alert_states("s").await.unwrap()["s/page/1h/5m"], ("ok".to_string(), 200));
    let ids = |v: Vec<Notification>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(catalog.pending_notifications(10).await.unwrap()), vec!["f1", "r1"]);
    catalog.mark_failed("f1", 1, 900, "the receiver answered 500").await.unwrap();
    let p = catalog.pending_notifications(10).await.unwrap();
    assert_eq!((p[0].attempts, p[0].next_attempt_ns), (1, 900));
    catalog.mark_delivered("f1", 950).await.unwrap();
    assert_eq!(ids(catalog.pending_notifications(10).await.unwrap()), vec!["r1"]);
}

#[tokio::test]
async fn catalog_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}/nested/catalog.db", dir.path().display())).await.unwrap();
    exercise(&catalog).await;
}

#[tokio::test]
async fn catalog_on_postgresql() {
    let Ok(admin) = std::env::var("TRACELIGHT_TEST_POSTGRES_URL") else {
        assert!(std::env::var_os("CI").is_none(), "TRACELIGHT_TEST_POSTGRES_URL unset under CI; .ci/run sets it");
        eprintln!("SKIPPED catalog_on_postgresql: TRACELIGHT_TEST_POSTGRES_URL is not set");
        return;
    };
    let name = format!("tracelight_catalog_{}_{}", std::process::id(), rand::random::<u32>());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let catalog = Catalog::connect(&url).await.unwrap();
    exercise(&catalog).await;
    catalog.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn unsupported_urls_are_clear_errors() {
    let err = Catalog::connect("mysql://x").await.err().unwrap().to_string();
    assert!(err.contains("sqlite://") && err.contains("postgres://"), "{err}");
}
