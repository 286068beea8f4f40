//! Segment files and their index directories: retention retires partitions, the janitor
//! deletes what retention, merges and crashes left once its grace period is over, and point
//! reads by row number return exactly the rows asked for.

mod fixture;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, StringArray};
use tracelight_model::telemetry::Registry;
use tracelight_model::time::{hour_of, now_ns, partition_dirs};
use tracelight_model::{Signal, Tenant};
use tracelight_storage::{Catalog, Janitor, SegmentMeta, SegmentStore, apply_retention, index_dir};

const H: i64 = 3_600_000_000_000;

fn path(hour: i64, name: &str) -> String {
    let (day, hh) = partition_dirs(hour);
    format!("default/logs/{day}/{hh}/{name}.parquet")
}

/// A segment name as the flusher makes them: `<node>-<flush id>-<salt>`.
fn nm(node: &str, k: u64) -> String {
    format!("{node}-{k:020x}-{k:08x}")
}

fn meta(id: &str, hour: i64) -> SegmentMeta {
    SegmentMeta {
        id: id.into(),
        node: "n1".into(),
        tenant: Tenant::default(),
        signal: Signal::Logs,
        partition_hour: hour,
        path: path(hour, id),
        min_time_ns: hour * H,
        max_time_ns: hour * H + 1,
        rows: 1,
        bytes: 4,
        index_bytes: 3,
        flush_lsn: 1,
        created_at_ns: 0,
    }
}

fn put_segment(store: &SegmentStore, rel: &str) {
    store.put(rel, b"PAR1").unwrap();
    let bytes =
        store.put_dir(&index_dir(rel), |d| std::fs::write(d.join("meta.json"), b"{}").map_err(|e| e.to_string()));
    assert_eq!(bytes.unwrap(), 2);
}

#[tokio::test]
async fn retention_retires_and_the_janitor_deletes_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}/catalog.db", dir.path().display())).await.unwrap();
    catalog.migrate().await.unwrap();
    let store = SegmentStore::open(&dir.path().join("segments").to_string_lossy()).unwrap();
    let root = store.local_root().unwrap().to_path_buf();
    let (old, new) = (hour_of(now_ns()) - 48, hour_of(now_ns()));

    let (a, b) = (meta(&nm("n1", 1), old), meta(&nm("n1", 2), new));
    catalog.stage_segments(&[a.clone(), b.clone()]).await.unwrap();
    put_segment(&store, &a.path);
    put_segment(&store, &b.path);
    assert!(catalog.commit_flush("n1", &[a.clone(), b.clone()], 5).await.unwrap());
    // Left by crashes: a staged segment whose files were written but never published, and one
    // whose index build was cut short.
    let (c, d) = (meta(&nm("n1", 3), new), meta(&nm("n1", 4), new));
    catalog.stage_segments(&[c.clone(), d.clone()]).await.unwrap();
    put_segment(&store, &c.path);
    std::fs::create_dir_all(root.join(format!("{}.tmp", index_dir(&d.path)))).unwrap();
    std::fs::write(root.join(format!("{}.tmp/x", index_dir(&d.path))), b"x").unwrap();
    std::fs::write(root.join(format!("{}.tmp", d.path)), b"PA").unwrap();
    let listed = |catalog: Catalog| async move {
        let v = catalog.segments(&Tenant::default(), Signal::Logs, None, None).await.unwrap();
        v.into_iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert_eq!(listed(catalog.clone()).await, [a.id.clone(), b.id.clone()], "staged segments are not listed");

    let r = apply_retention(&catalog, new * H).await.unwrap();
    assert_eq!((r.segments, r.bytes), (1, 7));
    assert_eq!(listed(catalog.clone()).await, std::slice::from_ref(&b.id), "retention hides the segment at once");
    assert!(root.join(&a.path).exists(), "a query that listed it before still reads it");
    assert_eq!(apply_retention(&catalog, new * H).await.unwrap().segments, 0, "nothing more to do");

    // Within the grace periods the janitor deletes nothing.
    let registry = Registry::default();
    let hour = Duration::from_secs(3600);
    let patient = Janitor::new(catalog.clone(), store.clone(), hour, &registry).with_staged_grace(hour);
    assert_eq!(patient.pass().await.unwrap().segments, 0);
    assert!(root.join(&a.path).exists() && root.join(&c.path).exists());
    let waiting = registry.render();
    assert!(waiting.contains("tracelight_segments_awaiting_deletion 3"), "{waiting}");

    // Past them, it deletes the retired and the staged segments with everything of theirs.
    let removed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = removed.clone();
    let eager = Janitor::new(catalog.clone(), store.clone(), Duration::ZERO, &Registry::default())
        .with_staged_grace(Duration::ZERO)
        .with_on_removed(Arc::new(move |p: &[String]| seen.lock().unwrap().extend_from_slice(p)));
    let s = eager.pass().await.unwrap();
    assert_eq!((s.segments, s.failed), (3, 0));
    let mut gone = removed.lock().unwrap().clone();
    gone.sort();
    assert_eq!(gone, [a.path.clone(), c.path.clone(), d.path.clone()]);
    for p in [&a.path, &c.path, &d.path] {
        assert!(!root.join(p).exists() && !root.join(index_dir(p)).exists(), "{p}");
        assert!(catalog.segment_state(&p[p.rfind('/').unwrap() + 1..p.len() - 8]).await.unwrap().is_none());
    }
    assert!(
        !root.join(format!("{}.tmp", index_dir(&d.path))).exists() && !root.join(format!("{}.tmp", d.path)).exists()
    );
    assert!(!root.join(&a.path).parent().unwrap().exists(), "the emptied partition directory goes too");
    assert!(root.join(&b.path).exists() && root.join(index_dir(&b.path)).exists());
    assert_eq!(listed(catalog.clone()).await, std::slice::from_ref(&b.id));
    assert_eq!(eager.pass().await.unwrap().segments, 0, "nothing more to do");
}

#[test]
fn point_reads_return_exactly_the_rows_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let registry = tracelight_model::telemetry::Registry::default();
    let store = SegmentStore::open(&dir.path().to_string_lossy()).unwrap().with_cache(8 << 20, &registry);
    let bytes = fixture::parquet(50_000, 1000);
    store.put("t/x.parquet", &bytes).unwrap();

    let rows = [0u64, 1, 2, 999, 1000, 8191, 8192, 30_000, 49_999];
    let series = |name: &str| fixture::series(&registry, name);
    // The first read decodes the rows; the second reads them from the cache. The answer is
    // the same each time, and so is a read mixing cached rows with new ones.
    for round in 0..2 {
        let got = store.read_rows("t/x.parquet", &rows).unwrap();
        let col = got.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(col.values().iter().map(|v| *v as u64).collect::<Vec<_>>(), rows, "round {round}");
        let s = got.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(s.value(3), "row 999");
        assert_eq!(series("tracelight_row_cache_hits_total"), if round == 1 { 9 } else { 0 }, "round {round}");
    }
    assert_eq!(series("tracelight_row_cache_misses_total"), 9);
    assert!(series("tracelight_row_cache_bytes") > 0);
    let mixed = [2u64, 5, 999, 1500, 2047, 49_998, 49_999];
    let got = store.read_rows("t/x.parquet", &mixed).unwrap();
    let col = got.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(col.values().iter().map(|v| *v as u64).collect::<Vec<_>>(), mixed);
    let s = got.column(1).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!((s.value(0), s.value(6)), ("row 2", "row 49999"));
    assert_eq!(series("tracelight_row_cache_hits_total"), 12, "three of the mixed rows were cached");
    store.forget("t/x.parquet");
    assert_eq!(series("tracelight_row_cache_bytes"), 0, "a removed segment's rows go");
    assert!(store.read_rows("t/x.parquet", &[5, 3]).is_err(), "row numbers must ascend");
    assert!(store.read_rows("t/x.parquet", &[50_000]).is_err(), "past the end");
    assert_eq!(store.read_rows("t/x.parquet", &[]).unwrap().num_rows(), 0);
}
