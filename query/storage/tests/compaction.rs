//! Compaction: which segments a pass merges, and that a merge keeps every row (same multiset,
//! flush order), builds a trace-ID index that finds every trace, swaps in one catalog
//! transaction, and keeps the replaced files readable until the janitor's grace period is over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, TimeUnit};
use tracelight_model::telemetry::Registry;
use tracelight_model::time::{now_ns, partition_dirs};
use tracelight_model::{Signal, Tenant};
use tracelight_storage::compact::plan;
use tracelight_storage::segment::encode;
use tracelight_storage::traceidx::{self, TraceIndexBuilder, TraceIndexFile};
use tracelight_storage::{Catalog, CompactionConfig, Compactor, Janitor, SegmentMeta, SegmentStore};

const H: i64 = 3_600_000_000_000;

fn meta(id: &str, hour: i64, bytes: u64, lsn: u64) -> SegmentMeta {
    let (day, hh) = partition_dirs(hour);
    SegmentMeta {
        id: id.into(),
        node: "n1".into(),
        tenant: Tenant::default(),
        signal: Signal::Logs,
        partition_hour: hour,
        path: format!("default/logs/{day}/{hh}/{id}.parquet"),
        min_time_ns: hour * H,
        max_time_ns: hour * H + 1,
        rows: 10,
        bytes,
        index_bytes: 0,
        flush_lsn: lsn,
        created_at_ns: 0,
    }
}

fn ids(groups: &[Vec<SegmentMeta>]) -> Vec<Vec<&str>> {
    groups.iter().map(|g| g.iter().map(|s| s.id.as_str()).collect()).collect()
}

#[test]
fn a_pass_merges_closed_hours_whole_and_open_hours_by_tier() {
    let c = CompactionConfig { min_inputs: 3, max_inputs: 4, target_bytes: 100 << 20, ..Default::default() };
    let now = 1000 * H + H / 2;
    let mib = 1 << 20;
    // A closed hour: every small segment goes, in runs of at most max_inputs.
    let closed: Vec<_> = (0..6).map(|i| meta(&format!("a{i}"), 998, mib / 2, i)).collect();
    assert_eq!(
        ids(&plan(closed.clone(), &c, &[("n1", u64::MAX)], now)),
        [vec!["a0", "a1", "a2", "a3"], vec!["a4", "a5"]]
    );
    // One lone segment is left alone.
    assert!(plan(closed[..1].to_vec(), &c, &[("n1", u64::MAX)], now).is_empty());
    // Segments still in the head's LSN range are skipped (only this node's).
    assert_eq!(ids(&plan(closed.clone(), &c, &[("n1", 4)], now)), [vec!["a0", "a1", "a2", "a3"]]);
    assert_eq!(plan(closed.clone(), &c, &[("n2", 0)], now).len(), 2, "another node's head says nothing about n1");
    // Another node's segments wait until that node has surely dropped them from its head.
    let young: Vec<_> =
        closed.iter().map(|s| SegmentMeta { created_at_ns: now - 30_000_000_000, ..s.clone() }).collect();
    assert!(plan(young.clone(), &c, &[("n2", u64::MAX)], now).is_empty(), "30 s old, of a node that did not answer");
    assert_eq!(plan(young.clone(), &c, &[("n1", u64::MAX)], now).len(), 2, "30 s old, of a node whose head is known");
    assert_eq!(
        plan(young.clone(), &c, &[("n2", u64::MAX), ("n1", u64::MAX)], now).len(),
        2,
        "30 s old, of another node that answered"
    );
    assert!(plan(young, &c, &[("n1", 0)], now).is_empty(), "all still in n1's head");
    // The open hour: only a tier with at least min_inputs segments of similar size.
    let open = vec![
        meta("b0", 1000, 40 * mib, 1),
        meta("b1", 1000, mib / 4, 2),
        meta("b2", 1000, 3 * mib, 3),
        meta("b3", 1000, mib / 8, 4),
        meta("b4", 1000, mib / 2, 5),
    ];
    assert_eq!(ids(&plan(open.clone(), &c, &[("n1", u64::MAX)], now)), [vec!["b1", "b3", "b4"]]);
    assert!(plan(open[..4].to_vec(), &c, &[("n1", u64::MAX)], now).is_empty(), "two small ones wait");
    // The size target splits runs too.
    let tight = CompactionConfig { target_bytes: mib, ..c.clone() };
    assert_eq!(
        ids(&plan(closed, &tight, &[("n1", u64::MAX)], now)),
        [vec!["a0", "a1"], vec!["a2", "a3"], vec!["a4", "a5"]]
    );
    // Partitions never mix.
    let mixed = vec![meta("c0", 997, 1, 1), meta("c1", 998, 1, 2)];
    assert!(plan(mixed, &c, &[("n1", u64::MAX)], now).is_empty());
}

/// A logs batch of `n` rows: service `svc(i)`, body `"{tag} {i}"`, trace `trace(i)`.
fn logs(tag: &str, n: usize, hour: i64, svc: impl Fn(usize) -> String, trace: impl Fn(usize) -> String) -> RecordBatch {
    let schema = Signal::Logs.schema();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for f in schema.fields() {
        let col: ArrayRef = match (f.name().as_str(), f.data_type()) {
            ("time", t) => Arc::new(
                TimestampNanosecondArray::from_iter_values((0..n).map(|i| hour * H + i as i64))
                    .with_data_type(t.clone()),
            ),
            ("body", _) => Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("{tag} {i}")))),
            ("trace_id", _) => Arc::new(StringArray::from_iter_values((0..n).map(&trace))),
            ("service_name", _) => Arc::new(StringArray::from_iter_values((0..n).map(&svc))),
            (_, DataType::Map(_, _)) => {
                let mut b = tracelight_model::schema::attr_map_builder();
                for _ in 0..n {
                    b.append(true).unwrap();
                }
                Arc::new(b.finish())
            }
            (_, DataType::Utf8) if !f.is_nullable() => Arc::new(StringArray::from_iter_values((0..n).map(|_| ""))),
            (_, DataType::Int32) if !f.is_nullable() => Arc::new(Int32Array::from_iter_values((0..n).map(|_| 9))),
            (_, DataType::UInt32) if !f.is_nullable() => Arc::new(UInt32Array::from_iter_values((0..n).map(|_| 0))),
            (_, t @ DataType::Timestamp(TimeUnit::Nanosecond, _)) if !f.is_nullable() => {
                Arc::new(TimestampNanosecondArray::from_iter_values((0..n).map(|_| hour * H)).with_data_type(t.clone()))
            }
            (name, t) => {
                assert!(f.is_nullable(), "test batch: fill column {name} of type {t}");
                arrow::array::new_null_array(t, n)
            }
        };
        let col =
            if col.data_type() != f.data_type() { arrow::compute::cast(&col, f.data_type()).unwrap() } else { col };
        cols.push(col);
    }
    RecordBatch::try_new(schema, cols).unwrap()
}

/// (service, body) of every row of a segment, in file order.
fn rows_of(store: &SegmentStore, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in store.read_all(path, 700).unwrap() {
        let b = b.unwrap();
        let s = b.column_by_name("service_name").unwrap().as_string::<i32>().clone();
        let body = b.column_by_name("body").unwrap().as_string::<i32>().clone();
        out.extend((0..b.num_rows()).map(|i| (s.value(i).to_string(), body.value(i).to_string())));
    }
    out
}

#[tokio::test]
async fn a_merge_keeps_every_row_in_flush_order_and_swaps_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}/catalog.db", dir.path().display())).await.unwrap();
    catalog.migrate().await.unwrap();
    let store = SegmentStore::open(&dir.path().join("segments").to_string_lossy()).unwrap();
    let hour = tracelight_model::time::hour_of(now_ns()) - 5;
    let services = ["web", "api", "db", "auth"];
    let mut expected: Vec<(String, String)> = Vec::new();
    let mut segments = Vec::new();
    for k in 0..5usize {
        // Sizes straddle the reader's blocks; every segment mixes services.
        let n = 300 + k * 900;
        let tag = format!("seg{k}");
        let batch =
            logs(&tag, n, hour, |i| services[(i * 7 + k) % 4].to_string(), |i| format!("{:032x}", (i % 50) + k * 1000));
        let enc = encode(Signal::Logs, std::slice::from_ref(&batch)).unwrap();
        let (day, hh) = partition_dirs(hour);
        let path = format!("default/logs/{day}/{hh}/n1-s{k}.parquet");
        store.put(&path, &enc.bytes).unwrap();
        let mut tid = TraceIndexBuilder::new();
        tid.add_rows(Signal::Logs, &batch, 0);
        store.put(&traceidx::path_for(&path), &tid.finish()).unwrap();
        let m = SegmentMeta {
            id: format!("n1-s{k}"),
            path,
            rows: enc.rows,
            bytes: enc.bytes.len() as u64,
            min_time_ns: enc.min_time_ns,
            max_time_ns: enc.max_time_ns,
            flush_lsn: k as u64 + 1,
            ..meta("x", hour, 0, 0)
        };
        catalog.stage_segments(std::slice::from_ref(&m)).await.unwrap();
        assert!(catalog.commit_flush("n1", std::slice::from_ref(&m), k as u64 + 1).await.unwrap());
        expected.extend(rows_of(&store, &m.path));
        segments.push(m);
    }
    let listed_before = catalog.segments(&Tenant::default(), Signal::Logs, None, None).await.unwrap();
    assert_eq!(listed_before.len(), 5);

    let registry = Registry::default();
    let config = CompactionConfig { min_age: Duration::ZERO, min_inputs: 2, ..Default::default() };
    let compactor = Compactor::new(catalog.clone(), store.clone(), "n1".into(), config, &registry);
    let stats = compactor.compact_once().await.unwrap();
    assert_eq!((stats.merges, stats.inputs), (1, 5));
    assert_eq!(stats.rows, expected.len() as u64);

    let after = catalog.segments(&Tenant::default(), Signal::Logs, None, None).await.unwrap();
    assert_eq!(after.len(), 1, "the five are replaced by one");
    let merged = &after[0];
    assert_eq!(merged.rows, expected.len() as u64);
    assert_eq!(merged.flush_lsn, 5, "as new as the newest input");
    assert_eq!((merged.min_time_ns, merged.max_time_ns), (hour * H, hour * H + 4 * 900 + 299));

    // Every row once, grouped by service in service order, each service's rows in input order.
    let got = rows_of(&store, &merged.path);
    let mut want_sorted = expected.clone();
    want_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    // A stable sort by service of the inputs in flush order is exactly the merge's order.
    let mut stable = Vec::new();
    for s in &segments {
        stable.extend(rows_of(&store, &s.path));
    }
    stable.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, stable);
    let count = |v: &[(String, String)]| {
        let mut m = BTreeMap::new();
        for r in v {
            *m.entry(r.clone()).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(count(&got), count(&expected));

    // The merged trace-ID index finds every trace in the blocks that hold it.
    let tid = TraceIndexFile::open(store.open_file(&traceidx::path_for(&merged.path)).unwrap().unwrap()).unwrap();
    let batch = store.read_all(&merged.path, 1 << 20).unwrap().next().unwrap().unwrap();
    let traces = batch.column_by_name("trace_id").unwrap().as_string::<i32>().clone();
    for i in (0..traces.len()).step_by(37) {
        let blocks = tid.pages(traces.value(i)).unwrap();
        assert!(blocks.contains(&((i / traceidx::PAGE_ROWS) as u32)), "row {i} of trace {}", traces.value(i));
    }

    // A query that listed the old set before the swap still reads it during the grace period.
    let hour_long = Janitor::new(catalog.clone(), store.clone(), Duration::from_secs(3600), &Registry::default());
    assert_eq!(hour_long.pass().await.unwrap().segments, 0);
    for s in &listed_before {
        assert!(!rows_of(&store, &s.path).is_empty());
    }
    let removed = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let janitor = Janitor::new(catalog.clone(), store.clone(), Duration::ZERO, &Registry::default()).with_on_removed({
        let removed = removed.clone();
        Arc::new(move |p: &[String]| removed.lock().extend(p.iter().cloned()))
    });
    assert_eq!(janitor.pass().await.unwrap().segments, 5);
    for s in &listed_before {
        assert!(!store.local_root().unwrap().join(&s.path).exists(), "{} is removed after the grace", s.path);
        assert!(!store.local_root().unwrap().join(traceidx::path_for(&s.path)).exists());
    }
    let mut gone = removed.lock().clone();
    gone.sort();
    assert_eq!(gone, listed_before.iter().map(|s| s.path.clone()).collect::<Vec<_>>());
    assert!(registry.render().contains("tracelight_compaction_merges_total 1"), "{}", registry.render());

    // Nothing more to do; a swap whose inputs are gone changes nothing.
    assert_eq!(compactor.compact_once().await.unwrap().merges, 0);
    let phantom = meta("n1-zz", hour, 1, 1);
    catalog.stage_segments(&[meta("n1-new", hour, 1, 1)]).await.unwrap();
    assert!(!catalog.replace_segments(&[merged.clone(), phantom], &meta("n1-new", hour, 1, 1)).await.unwrap());
    assert_eq!(catalog.segments(&Tenant::default(), Signal::Logs, None, None).await.unwrap(), after);
}
