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
        vec![
            "0001_segments",
            "0002_segment_index",
            "0003_slo",
            "0004_slo_late_data",
            "0005_nodes",
            "0006_segment_states"
        ]
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

    // Segments are staged (with placeholder figures) before their files are written, and
    // published with their figures by the commit that moves the checkpoint.
    let (a, b, c) = (seg("a", Signal::Spans, 10, 4), seg("b", Signal::Logs, 10, 4), seg("c", Signal::Spans, 12, 9));
    let placeholder = |s: &SegmentMeta| SegmentMeta { rows: 0, bytes: 0, min_time_ns: 0, max_time_ns: 0, ..s.clone() };
    catalog.stage_segments(&[placeholder(&a), placeholder(&b), placeholder(&c)]).await.unwrap();
    assert!(catalog.segments(&Tenant::default(), Signal::Spans, None, None).await.unwrap().is_empty());
    assert!(catalog.commit_flush("n1", &[a, b], 4).await.unwrap());
    assert!(catalog.commit_flush("n1", &[c], 9).await.unwrap());
    assert_eq!(catalog.wal_checkpoint("n1").await.unwrap(), 9);
    // A retried commit of an already committed flush changes nothing; its staged row is left
    // to the janitor.
    catalog.stage_segments(&[seg("c2", Signal::Spans, 12, 9)]).await.unwrap();
    assert!(!catalog.commit_flush("n1", &[seg("c2", Signal::Spans, 12, 9)], 9).await.unwrap());
    assert_eq!(catalog.segment_state("c2").await.unwrap().as_deref(), Some("staged"));
    // Publishing a segment that was never staged (or that the janitor took) fails whole.
    let e = catalog.commit_flush("n1", &[seg("ghost", Signal::Spans, 12, 11)], 11).await.unwrap_err();
    assert!(e.to_string().contains("no longer staged"), "{e}");
    assert_eq!(catalog.wal_checkpoint("n1").await.unwrap(), 9, "the checkpoint did not move");
    lifecycle(catalog).await;

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

/// Staged and retired segments reach the janitor only after their grace period, and a claim
/// and a publish of the same segment cannot both succeed.
async fn lifecycle(catalog: &Catalog) {
    use tracelight_storage::catalog::GarbageStats;
    let t = Tenant::default();
    let g = catalog.garbage().await.unwrap();
    assert_eq!(g, GarbageStats { staged: 1, retired: 0, deleting: 0 }, "c2 from the retried commit");
    // Nothing is due yet at a time before it was staged.
    assert!(catalog.claim_garbage(0, 0, 10).await.unwrap().is_empty());
    let far = i64::MAX;
    let claimed = catalog.claim_garbage(0, far, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["c2"]);
    assert_eq!(catalog.segment_state("c2").await.unwrap().as_deref(), Some("deleting"));
    assert_eq!(catalog.forget_deleted(&["c2".into()]).await.unwrap(), 1);
    assert_eq!(catalog.segment_state("c2").await.unwrap(), None);

    // The janitor claims a staged merge output; the swap then fails and changes nothing.
    let merged = seg("m", Signal::Spans, 10, 4);
    catalog.stage_segments(std::slice::from_ref(&merged)).await.unwrap();
    assert_eq!(catalog.claim_garbage(0, far, 10).await.unwrap().len(), 1);
    let a = catalog.segments(&t, Signal::Spans, None, Some(11 * H)).await.unwrap();
    assert!(!catalog.replace_segments(&a, &merged).await.unwrap());
    assert_eq!(catalog.segments(&t, Signal::Spans, None, Some(11 * H)).await.unwrap(), a, "the inputs stay");
    catalog.forget_deleted(&["m".into()]).await.unwrap();
    // Published first, a segment is no longer the janitor's: the swap wins.
    let merged = seg("m2", Signal::Spans, 10, 4);
    catalog.stage_segments(std::slice::from_ref(&merged)).await.unwrap();
    assert!(catalog.replace_segments(&a, &merged).await.unwrap());
    assert!(catalog.claim_garbage(0, far, 10).await.unwrap().is_empty(), "the retired input is within its grace");
    let ids = |v: Vec<SegmentMeta>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(catalog.segments(&t, Signal::Spans, None, Some(11 * H)).await.unwrap()), ["m2"]);
    assert_eq!(catalog.garbage().await.unwrap().retired, 1);
    // A second swap of the same inputs finds them retired.
    let again = seg("m3", Signal::Spans, 10, 4);
    catalog.stage_segments(std::slice::from_ref(&again)).await.unwrap();
    assert!(!catalog.replace_segments(&a, &again).await.unwrap());
    let claimed = catalog.claim_garbage(far, far, 10).await.unwrap();
    let mut got = ids(claimed);
    got.sort();
    assert_eq!(got, ["a", "m3"]);
    // A claim whose janitor died is claimed again after the grace period, not before.
    assert!(catalog.claim_garbage(0, far, 10).await.unwrap().is_empty());
    assert_eq!(catalog.claim_garbage(far, 0, 1).await.unwrap().len(), 1, "at most the limit");
    assert_eq!(catalog.forget_deleted(&["a".into(), "m3".into()]).await.unwrap(), 2);
    // Put the spans back as the checks after this expect them (a and c).
    let a = seg("a", Signal::Spans, 10, 4);
    catalog.stage_segments(std::slice::from_ref(&a)).await.unwrap();
    assert!(
        catalog
            .replace_segments(&catalog.segments(&t, Signal::Spans, None, Some(11 * H)).await.unwrap(), &a)
            .await
            .unwrap()
    );
    assert_eq!(catalog.claim_garbage(far, far, 10).await.unwrap().len(), 1);
    catalog.forget_deleted(&["m2".into()]).await.unwrap();
    assert_eq!(catalog.garbage().await.unwrap(), GarbageStats::default());
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

/// One leader per job on PostgreSQL: the second campaigner waits, and takes over once the
/// first one's session ends; other jobs are independent; SQLite always leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_jobs_run_on_one_node_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Catalog::connect(&format!("sqlite://{}/c.db", dir.path().display())).await.unwrap();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    assert!(sqlite.campaign("compact", rx).is_leader(), "one process on SQLite always leads");

    let Ok(admin) = std::env::var("TRACELIGHT_TEST_POSTGRES_URL") else {
        assert!(std::env::var_os("CI").is_none(), "TRACELIGHT_TEST_POSTGRES_URL unset under CI; .ci/run sets it");
        eprintln!(
            "SKIPPED leader_jobs_run_on_one_node_at_a_time (PostgreSQL part): TRACELIGHT_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    let a = Catalog::connect(&admin).await.unwrap();
    let b = Catalog::connect(&admin).await.unwrap();
    // A job name of this run only: tests running at once must not share a lock.
    let job: &'static str = Box::leak(format!("test-{}", rand::random::<u64>()).into_boxed_str());
    let other: &'static str = Box::leak(format!("test-{}", rand::random::<u64>()).into_boxed_str());
    let wait = |l: tracelight_storage::Leadership, want: bool, within: std::time::Duration| async move {
        let started = std::time::Instant::now();
        while l.is_leader() != want {
            assert!(started.elapsed() < within, "{} leadership did not become {want} within {within:?}", l.job());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let (stop_a, rx_a) = tokio::sync::watch::channel(false);
    let (stop_b, rx_b) = tokio::sync::watch::channel(false);
    let la = a.campaign(job, rx_a.clone());
    wait(la.clone(), true, std::time::Duration::from_secs(10)).await;
    let lb = b.campaign(job, rx_b.clone());
    let lb_other = b.campaign(other, rx_b);
    wait(lb_other.clone(), true, std::time::Duration::from_secs(10)).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!lb.is_leader() && la.is_leader(), "one leader per job");
    // The leader stops (or dies: its session closes either way); the follower takes over at
    // its next try.
    stop_a.send(true).unwrap();
    wait(la, false, std::time::Duration::from_secs(2)).await;
    wait(lb, true, tracelight_storage::catalog::leader_retry() * 3).await;
    stop_b.send(true).unwrap();
}
