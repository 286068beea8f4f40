//! Engine tests over a real catalog (SQLite in a temp dir), a real head and real Parquet.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampNanosecondArray};
use tracelight_model::telemetry::Registry;
use tracelight_model::{BatchSink, QueryError, QueryRequest, QueryService, Signal, SignalBatch, Tenant};
use tracelight_storage::{Catalog, Flusher, Head, HeadConfig, SegmentStore};

use super::*;

/// A logs batch with one row per (service, time, body); other columns empty or defaults.
fn logs_batch(rows: &[(&str, i64, &str)]) -> RecordBatch {
    let schema = Signal::Logs.schema();
    let n = rows.len();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for f in schema.fields() {
        let col: ArrayRef = match f.name().as_str() {
            "time" => Arc::new(
                TimestampNanosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()).with_timezone("UTC"),
            ),
            "service_name" => Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            "body" => Arc::new(StringArray::from(rows.iter().map(|r| Some(r.2)).collect::<Vec<_>>())),
            _ if !f.is_nullable() => {
                // Non-null defaults: zero for numbers, empty maps.
                match f.data_type() {
                    datafusion::arrow::datatypes::DataType::UInt32 => {
                        Arc::new(datafusion::arrow::array::UInt32Array::from(vec![0; n]))
                    }
                    datafusion::arrow::datatypes::DataType::Int32 => {
                        Arc::new(datafusion::arrow::array::Int32Array::from(vec![9; n]))
                    }
                    datafusion::arrow::datatypes::DataType::Map(_, _) => {
                        let mut b = tracelight_model::schema::attr_map_builder();
                        for _ in 0..n {
                            b.append(true).unwrap();
                        }
                        Arc::new(b.finish())
                    }
                    other => panic!("no default for {other}"),
                }
            }
            _ => datafusion::arrow::array::new_null_array(f.data_type(), n),
        };
        cols.push(col);
    }
    RecordBatch::try_new(schema, cols).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    head: Arc<Head>,
    flusher: Flusher,
    engine: Engine,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new();
    let catalog = Catalog::connect(&format!("sqlite://{}/catalog.db", dir.path().display())).await.unwrap();
    catalog.migrate().await.unwrap();
    let store = SegmentStore::open(&dir.path().join("segments").to_string_lossy()).unwrap();
    let head =
        Arc::new(Head::new(HeadConfig { max_bytes: 1 << 30, flush_rows: 1 << 30, ..Default::default() }, &registry));
    let flusher = Flusher::new(
        head.clone(),
        catalog.clone(),
        store.clone(),
        "n1".into(),
        Duration::from_secs(3600),
        Box::new(|_| {}),
        &registry,
    );
    let engine = Engine::new(catalog, head.clone(), store, "n1".into(), EngineConfig::default(), &registry).unwrap();
    Fixture { _dir: dir, head, flusher, engine }
}

fn put(head: &Head, lsn: u64, rows: &[(&str, i64, &str)]) {
    head.consume(lsn, vec![SignalBatch { tenant: Tenant::default(), signal: Signal::Logs, batch: logs_batch(rows) }]);
}

async fn count(engine: &Engine, sql: &str) -> Vec<Vec<serde_json::Value>> {
    engine.sql(QueryRequest { sql: sql.into(), ..Default::default() }).await.unwrap().rows
}

const H: i64 = 3_600_000_000_000;

#[tokio::test]
async fn head_and_parquet_are_one_table_and_never_double_count() {
    let f = fixture().await;
    put(&f.head, 1, &[("a", 10 * H, "x"), ("b", 10 * H + 1, "y")]);
    put(&f.head, 2, &[("a", 11 * H, "z")]);
    let q = "SELECT service_name, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1";
    let expect: Vec<Vec<serde_json::Value>> = vec![vec!["a".into(), 2.into()], vec!["b".into(), 1.into()]];
    assert_eq!(count(&f.engine, q).await, expect);

    // Mid-flush: rows are in the flushing generation; still counted once.
    let g = f.head.begin_flush().unwrap();
    assert_eq!(g.rows, 3);
    assert_eq!(count(&f.engine, q).await, expect);
    f.head.finish_flush();
    // Not committed anywhere: gone (this is what a failed flush must never do; we only check
    // that the engine reads what the head holds).
    assert_eq!(count(&f.engine, q).await, Vec::<Vec<serde_json::Value>>::new());

    put(&f.head, 3, &[("a", 10 * H + 5, "w")]);
    let stats = f.flusher.flush_once().await.unwrap();
    assert_eq!((stats.rows, stats.segments, stats.checkpoint), (1, 1, 3));
    put(&f.head, 4, &[("c", 12 * H, "v")]);
    let rows = count(&f.engine, q).await;
    let want: Vec<Vec<serde_json::Value>> = vec![vec!["a".into(), 1.into()], vec!["c".into(), 1.into()]];
    assert_eq!(rows, want);
}

#[tokio::test]
async fn time_bounds_prune_partitions_and_filter_rows() {
    let f = fixture().await;
    put(&f.head, 1, &[("a", 10 * H, "x"), ("a", 11 * H, "y"), ("a", 12 * H, "z")]);
    f.flusher.flush_once().await.unwrap();
    let res = f
        .engine
        .sql(QueryRequest {
            sql: "SELECT body FROM logs".into(),
            start_ns: Some(11 * H),
            end_ns: Some(12 * H),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(res.rows, vec![vec![serde_json::Value::from("y")]]);
    assert_eq!(res.stats.segments, 1, "only the 11h partition is opened: {:?}", res.stats);
    let res = f
        .engine
        .sql(QueryRequest {
            sql: format!("SELECT count(*) FROM logs WHERE time >= to_timestamp_nanos({}) ", 12 * H),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(res.rows, vec![vec![serde_json::Value::from(1)]]);
    assert_eq!(res.stats.segments, 1, "a WHERE on the time column prunes too: {:?}", res.stats);
    assert_eq!(res.stats.partitions, 1, "{:?}", res.stats);
}

#[tokio::test]
async fn user_sql_is_read_only() {
    let f = fixture().await;
    for sql in [
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
        "COPY (SELECT 1) TO '/tmp/x.parquet'",
        "SET datafusion.execution.batch_size = 1",
        "INSERT INTO logs SELECT * FROM logs",
        "DROP TABLE logs",
        "SELECT * FROM '/etc/passwd'",
        "CREATE TABLE t AS SELECT 1",
    ] {
        let err = f.engine.sql(QueryRequest { sql: sql.into(), ..Default::default() }).await.unwrap_err();
        assert!(matches!(err, QueryError::Invalid(_)), "{sql}: {err:?}");
    }
}

#[tokio::test]
async fn results_carry_types_maps_and_timestamps() {
    let f = fixture().await;
    put(&f.head, 1, &[("a", 1_700_000_000_123_456_789, "hello")]);
    let res = f
        .engine
        .sql(QueryRequest {
            sql: "SELECT time, body, attributes, attributes['k'] AS k FROM logs".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(res.columns[0].name, "time");
    assert_eq!(
        res.rows,
        vec![vec![
            "2023-11-14T22:13:20.123456789Z".into(),
            "hello".into(),
            serde_json::json!({}),
            serde_json::Value::Null
        ]]
    );
}

#[tokio::test]
async fn result_size_is_capped_and_reported() {
    let mut f = fixture().await;
    f.engine.config.max_result_rows = 2;
    put(&f.head, 1, &[("a", H, "1"), ("a", H, "2"), ("a", H, "3")]);
    let res = f.engine.sql(QueryRequest { sql: "SELECT body FROM logs".into(), ..Default::default() }).await.unwrap();
    assert_eq!(res.rows.len(), 2);
    assert!(res.truncated);
}

async fn err(engine: &Engine, sql: &str) -> QueryError {
    match engine.sql(QueryRequest { sql: sql.into(), ..Default::default() }).await {
        Ok(r) => panic!("{sql}: expected an error, got {} rows", r.rows.len()),
        Err(e) => e,
    }
}

#[tokio::test]
async fn functions_that_grow_their_input_are_bounded_before_they_allocate() {
    let f = fixture().await;
    put(&f.head, 1, &[("a", H, "abc"), ("b", H + 1, "de")]);
    // Each of these once allocated gigabytes outside the memory pool, in one poll.
    for sql in [
        "SELECT repeat('x', 1000000000)",
        "SELECT repeat(body, 100000000) FROM logs",
        "SELECT lpad('x', 2000000000)",
        "SELECT rpad(body, 2000000000, 'ab') FROM logs",
        "SELECT range(0, 200000000)",
        "SELECT generate_series(0, 200000000)",
        "SELECT range(TIMESTAMP '2000-01-01', TIMESTAMP '2030-01-01', INTERVAL '1 second')",
        "SELECT array_repeat(body, 100000000) FROM logs",
        "SELECT array_resize(make_array(1), 1000000000, 7)",
        "SELECT replace(repeat('x', 60000), '', repeat('y', 60000))",
        "SELECT regexp_replace(body, '', repeat('y', 30000000), 'g') FROM logs",
        // Constants are copied into every row: 100 KB per row is refused up front.
        "SELECT repeat('x', 100000) FROM logs",
    ] {
        let e = err(&f.engine, sql).await;
        assert!(matches!(e, QueryError::ResourcesExhausted(_)), "{sql}: {e:?}");
        assert!(e.to_string().contains("limit"), "{sql}: {e}");
    }
    // Doubling through `||` is bounded like a function: 2^30 KB, stopped at 16 MiB a value.
    let mut sql = "WITH t0 AS (SELECT repeat(body, 300) s FROM logs)".to_string();
    for k in 1..=30 {
        sql.push_str(&format!(", t{k} AS (SELECT s || s s FROM t{})", k - 1));
    }
    sql.push_str(" SELECT length(s) FROM t30");
    let e = err(&f.engine, &sql).await;
    assert!(matches!(e, QueryError::ResourcesExhausted(_)), "{e:?}");
}

#[tokio::test]
async fn bounded_functions_still_compute_what_they_did() {
    let f = fixture().await;
    put(&f.head, 1, &[("a", H, "abc"), ("b", H + 1, "de")]);
    let rows = count(
        &f.engine,
        "SELECT repeat(body, 2), lpad(body, 5, '.'), replace(body, 'b', 'BB'), upper(body), concat(body, '!', NULL), \
         body || '?', NULL || body, concat_ws('-', body, service_name), regexp_replace(body, '[ae]', '_', 'g'), \
         array_length(range(0, 10)), cardinality(array_repeat(body, 3)), array_to_string(make_array(body, body), ',') \
         FROM logs ORDER BY body",
    )
    .await;
    use serde_json::json;
    assert_eq!(
        rows,
        vec![
            vec![
                json!("abcabc"),
                json!("..abc"),
                json!("aBBc"),
                json!("ABC"),
                json!("abc!"),
                json!("abc?"),
                json!(null),
                json!("abc-a"),
                json!("_bc"),
                json!(10),
                json!(3),
                json!("abc,abc")
            ],
            vec![
                json!("dede"),
                json!("...de"),
                json!("de"),
                json!("DE"),
                json!("de!"),
                json!("de?"),
                json!(null),
                json!("de-b"),
                json!("d_"),
                json!(10),
                json!(3),
                json!("de,de")
            ],
        ]
    );
    let r = f.engine.sql(QueryRequest { sql: "SELECT body || 'x' FROM logs LIMIT 1".into(), ..Default::default() });
    assert_eq!(r.await.unwrap().columns[0].name, "logs.body || Utf8(\"x\")");
}

#[tokio::test]
async fn windows_recursion_long_sql_and_large_results_are_refused_or_cut() {
    let mut f = fixture().await;
    let rows: Vec<(&str, i64, &str)> = (0..50).map(|i| ("a", H + i, "0123456789")).collect();
    put(&f.head, 1, &rows);
    let e = err(&f.engine, "SELECT array_agg(body) OVER (ORDER BY time) FROM logs").await;
    assert!(e.to_string().contains("not supported as a window function"), "{e}");
    let e =
        err(&f.engine, "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t").await;
    assert!(matches!(e, QueryError::Invalid(_)), "{e:?}");
    let long = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
    assert!(err(&f.engine, &long).await.to_string().contains("at most"));
    // Bytes: rows past the limit are cut; one row over it is an error.
    f.engine.config.max_result_bytes = 200;
    let r = f.engine.sql(QueryRequest { sql: "SELECT body FROM logs".into(), ..Default::default() }).await.unwrap();
    assert!(r.truncated && r.rows.len() < 50 && !r.rows.is_empty(), "{} rows", r.rows.len());
    let e = err(&f.engine, "SELECT array_agg(body) FROM logs").await;
    assert!(e.to_string().contains("max_result_bytes"), "{e}");
}

#[tokio::test]
async fn a_query_past_its_timeout_is_answered_at_the_timeout() {
    let mut f = fixture().await;
    f.engine.config.timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let e = err(&f.engine, "SELECT count(*) FROM range(100000000000) a CROSS JOIN range(10) b").await;
    assert!(matches!(e, QueryError::Timeout(500)), "{e:?}");
    // Generous: the point is "not minutes", on a loaded 2-core machine.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}
