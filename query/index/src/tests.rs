//! Index tests over a real catalog, head, flusher and Parquet, with logs decoded from OTLP.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tracelight_collector::decode::{DecodeContext, ItemLimits, logs_to_arrow};
use tracelight_model::telemetry::Registry;
use tracelight_model::{BatchSink, Signal, Tenant};
use tracelight_storage::{Catalog, Flusher, Head, HeadConfig, SegmentStore};

use super::*;

const T0: i64 = 1_764_000_000_000_000_000;

fn sv(v: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) })
}

/// One log record: (service, time offset in ms, severity number, body, attributes, trace id byte).
type Rec<'a> = (&'a str, i64, i32, &'a str, &'a [(&'a str, &'a str)], u8);

fn request(recs: &[Rec]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: recs
            .iter()
            .map(|(svc, ms, sev, body, attrs, tid)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue { key: "service.name".into(), value: sv(svc), ..Default::default() }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: (T0 + ms * 1_000_000) as u64,
                        severity_number: *sev,
                        body: sv(body),
                        attributes: attrs
                            .iter()
                            .map(|(k, v)| KeyValue { key: (*k).into(), value: sv(v), ..Default::default() })
                            .collect(),
                        trace_id: if *tid == 0 { vec![] } else { vec![*tid; 16] },
                        span_id: if *tid == 0 { vec![] } else { vec![*tid; 8] },
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    head: Arc<Head>,
    flusher: Flusher,
    search: IndexSearch,
    lsn: u64,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(|f| f.with_indexer(Arc::new(SegmentIndexBuilder))).await
    }

    async fn with(setup: impl FnOnce(Flusher) -> Flusher) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let catalog = Catalog::connect(&format!("sqlite://{}/catalog.db", dir.path().display())).await.unwrap();
        catalog.migrate().await.unwrap();
        let store = SegmentStore::open(&dir.path().join("segments").to_string_lossy()).unwrap();
        let head = Arc::new(Head::new(
            HeadConfig { max_bytes: 1 << 30, flush_rows: 1 << 30, ..Default::default() },
            &registry,
        ));
        let flusher = Flusher::new(
            head.clone(),
            catalog.clone(),
            store.clone(),
            "n1".into(),
            Duration::from_secs(3600),
            Box::new(|_| {}),
            &registry,
        );
        let flusher = setup(flusher);
        let search = IndexSearch::new(catalog, head.clone(), store, "n1".into());
        Fixture { _dir: dir, head, flusher, search, lsn: 0 }
    }

    fn put(&mut self, recs: &[Rec]) {
        let ctx = DecodeContext { tenant: Tenant::default(), now_ns: T0, limits: ItemLimits::default() };
        let decoded = logs_to_arrow(&request(recs), &ctx);
        self.lsn += 1;
        self.head.consume(self.lsn, vec![decoded.batch]);
    }

    async fn bodies(&self, q: &str) -> Vec<String> {
        self.find(&LogSearch { q: q.into(), ..everything() }).await
    }

    async fn find(&self, s: &LogSearch) -> Vec<String> {
        let (b, _) = self.search.logs(&Tenant::default(), s).await.unwrap();
        bodies(&b)
    }
}

fn everything() -> LogSearch {
    LogSearch { start_ns: T0 - 3_600_000_000_000, end_ns: T0 + 3_600_000_000_000, limit: 100, ..Default::default() }
}

fn bodies(b: &RecordBatch) -> Vec<String> {
    let c = b.column_by_name("body").unwrap().as_string::<i32>();
    (0..b.num_rows()).map(|i| c.value(i).to_string()).collect()
}

const DATA: &[Rec] = &[
    ("checkout", 1, 17, "payment failed: upstream timeout", &[("user.id", "42")], 1),
    ("checkout", 2, 9, "payment authorised", &[("user.id", "7")], 2),
    ("payment", 3, 17, "connection reset by peer", &[("peer", "db-1")], 1),
    ("payment", 4, 13, "reset the connection pool", &[], 0),
    ("cart", 5, 9, "timeout waiting for cache", &[("http.route", "/api/cart")], 3),
];

/// The same answers whether the records are in the head, in segments, or split between both.
async fn check_syntax(fx: &Fixture) {
    assert_eq!(fx.bodies("payment AND timeout").await, vec!["payment failed: upstream timeout"]);
    // Bare words must all match.
    assert_eq!(fx.bodies("payment timeout").await, vec!["payment failed: upstream timeout"]);
    assert_eq!(fx.bodies("payment OR timeout").await.len(), 3);
    assert_eq!(fx.bodies("body:\"connection reset\"").await, vec!["connection reset by peer"]);
    // Both words, not as a phrase: two records.
    assert_eq!(fx.bodies("connection AND reset").await.len(), 2);
    assert_eq!(fx.bodies("attributes.user.id:42").await, vec!["payment failed: upstream timeout"]);
    assert_eq!(fx.bodies("attributes.http.route:\"/api/cart\"").await, vec!["timeout waiting for cache"]);
    // Attribute values are searched by bare words too.
    assert_eq!(fx.bodies("db").await, vec!["connection reset by peer"]);
    assert_eq!(fx.bodies("service:payment AND NOT pool").await, vec!["connection reset by peer"]);
    assert_eq!(fx.bodies("service:payment -pool").await, vec!["connection reset by peer"]);
    assert_eq!(fx.bodies("NOT timeout AND NOT reset").await, vec!["payment authorised"]);
    assert_eq!(fx.bodies("severity:ERROR").await.len(), 2);
    assert_eq!(fx.bodies(&format!("trace_id:{}", "01".repeat(16).to_uppercase())).await.len(), 2);
    // Newest first.
    assert_eq!(fx.bodies("").await.first().map(String::as_str), Some("timeout waiting for cache"));
    let s = LogSearch { services: vec!["checkout".into()], severities: vec!["ERROR".into()], ..everything() };
    assert_eq!(fx.find(&s).await, vec!["payment failed: upstream timeout"]);
    let s = LogSearch { trace_id: Some("01".repeat(16)), ..everything() };
    assert_eq!(fx.find(&s).await.len(), 2);
    // Time range: [T0+2ms, T0+4ms).
    let s = LogSearch { start_ns: T0 + 2_000_000, end_ns: T0 + 4_000_000, ..everything() };
    assert_eq!(fx.find(&s).await, vec!["connection reset by peer", "payment authorised"]);
}

#[tokio::test]
async fn query_syntax_works_on_head_segments_and_both() {
    let mut fx = Fixture::new().await;
    fx.put(DATA);
    check_syntax(&fx).await;
    fx.flusher.flush_once().await.unwrap();
    check_syntax(&fx).await;

    let mut fx = Fixture::new().await;
    fx.put(&DATA[..2]);
    fx.flusher.flush_once().await.unwrap();
    fx.put(&DATA[2..4]);
    fx.flusher.flush_once().await.unwrap();
    fx.put(&DATA[4..]);
    check_syntax(&fx).await;
}

#[tokio::test]
async fn pages_follow_each_other_without_gaps_or_repeats() {
    let mut fx = Fixture::new().await;
    // 25 records, 5 of them sharing one timestamp, across a flush.
    let bodies_in: Vec<String> = (0..25).map(|i| format!("record number{i}")).collect();
    let recs: Vec<Rec> =
        bodies_in.iter().enumerate().map(|(i, b)| ("svc", (i as i64).min(20), 9, b.as_str(), &[][..], 0)).collect();
    fx.put(&recs[..12]);
    fx.flusher.flush_once().await.unwrap();
    fx.put(&recs[12..]);
    let mut seen = Vec::new();
    let mut s = LogSearch { limit: 4, ..everything() };
    loop {
        let (b, _) = fx.search.logs(&Tenant::default(), &s).await.unwrap();
        if b.num_rows() == 0 {
            break;
        }
        let times = b.column_by_name("time").unwrap().as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        let last = times.value(b.num_rows() - 1);
        let at_last = (0..b.num_rows()).filter(|i| times.value(*i) == last).count();
        let same_page_end = s.end_ns - 1 == last;
        seen.extend(bodies(&b));
        s.skip_at_end = if same_page_end { s.skip_at_end + at_last } else { at_last };
        s.end_ns = last + 1;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "every record exactly once: {seen:?}");
    assert_eq!(seen.len(), 25);
}

#[tokio::test]
async fn a_partition_is_written_in_bounded_chunks_each_with_its_index() {
    // One segment per 1-byte chunk: every head batch becomes a segment of its own (a partition
    // over 2 GiB once overflowed Arrow's 32-bit offsets in one concat, and the flush failed
    // forever).
    let mut fx = Fixture::with(|f| f.with_indexer(Arc::new(SegmentIndexBuilder)).with_chunk_bytes(1)).await;
    for r in DATA.chunks(2) {
        fx.put(r);
    }
    let stats = fx.flusher.flush_once().await.unwrap();
    assert_eq!(stats.segments, DATA.len().div_ceil(2));
    assert_eq!(stats.rows, DATA.len() as u64);
    check_syntax(&fx).await;
    assert_eq!(fx.bodies("").await.len(), DATA.len());
}

/// An indexer that fails while `fail` is set.
struct Flaky(std::sync::atomic::AtomicBool);

impl tracelight_storage::SegmentIndexer for Flaky {
    fn indexes(&self, _: Signal) -> bool {
        true
    }
    fn start(&self, signal: Signal, dir: &std::path::Path) -> Result<Box<dyn tracelight_storage::IndexBuild>, String> {
        if self.0.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("disk says no".into());
        }
        tracelight_storage::SegmentIndexer::start(&SegmentIndexBuilder, signal, dir)
    }
}

#[tokio::test]
async fn a_flush_that_keeps_failing_turns_readiness_false_with_its_reason() {
    let flaky = Arc::new(Flaky(std::sync::atomic::AtomicBool::new(true)));
    let mut fx = Fixture::with({
        let f = flaky.clone();
        |fl| fl.with_indexer(f)
    })
    .await;
    fx.put(&DATA[..2]);
    for _ in 0..tracelight_storage::flush::FAILING_AFTER {
        assert!(fx.flusher.healthy().is_ok());
        assert!(fx.flusher.flush_once().await.is_err());
    }
    let why = fx.flusher.healthy().unwrap_err();
    assert!(why.contains("3 flushes in a row") && why.contains("disk says no"), "{why}");
    assert_eq!(fx.bodies("").await.len(), 2, "the rows stay readable from the head");
    flaky.0.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fx.flusher.flush_once().await.unwrap().rows, 2);
    assert!(fx.flusher.healthy().is_ok());
}

#[tokio::test]
async fn a_forged_skip_is_refused_not_allocated() {
    // `limit + skip` once went straight to TopDocs, which reserves twice that: a cursor with a
    // skip of 2^45 aborted the process.
    let mut fx = Fixture::new().await;
    fx.put(&DATA[..2]);
    fx.flusher.flush_once().await.unwrap();
    fx.put(&DATA[2..4]);
    for skip in [35_184_372_088_832usize, usize::MAX, crate::search::MAX_WANT] {
        let s = LogSearch { limit: 10, skip_at_end: skip, ..everything() };
        match fx.search.logs(&Tenant::default(), &s).await {
            Err(IndexError::Invalid(m)) => assert!(m.contains("at most"), "{m}"),
            other => panic!("skip {skip}: {:?}", other.map(|(b, _)| b.num_rows())),
        }
    }
    let s = LogSearch { limit: 10, skip_at_end: 10_000, ..everything() };
    assert_eq!(fx.search.logs(&Tenant::default(), &s).await.unwrap().0.num_rows(), 4);
}

#[tokio::test]
async fn bad_queries_are_the_callers_error() {
    let fx = Fixture::new().await;
    for q in ["nosuchfield:x", "body:\"unclosed", "(a AND", "a AND", "OR a", "a AND OR b", "a NOT", "a)", "[a TO"] {
        match fx.search.logs(&Tenant::default(), &LogSearch { q: q.into(), ..everything() }).await {
            Err(IndexError::Invalid(m)) => assert!(m.contains("cannot parse"), "{m}"),
            other => panic!("{q}: expected Invalid, got {:?}", other.map(|(b, _)| b.num_rows())),
        }
    }
}

#[tokio::test]
async fn deeply_nested_and_huge_queries_are_refused_not_recursed() {
    let fx = Fixture::new().await;
    let deep = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
    let negated = "-(".repeat(50_000) + "a" + &")".repeat(50_000);
    let wide = vec!["word"; 100_000].join(" OR ");
    let nots = "NOT ".repeat(1000) + "a";
    let dashes = "-".repeat(1000) + "a";
    // Found by fuzzing: a control character in a JSON field path hit an assertion in tantivy.
    let control = "attributes.5s\u{1}\0er.id:4".to_string();
    for q in [
        deep,
        negated,
        wide,
        nots,
        dashes,
        control,
        "((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))".into(),
    ] {
        match fx.search.logs(&Tenant::default(), &LogSearch { q: q.clone(), ..everything() }).await {
            Err(IndexError::Invalid(m)) => assert!(m.contains("at most"), "{m}"),
            other => panic!("{:?}…: expected Invalid, got {:?}", &q[..20], other.map(|(b, _)| b.num_rows())),
        }
    }
    // Found by fuzzing: the strict grammar backtracks at every group, so time doubled with
    // each level (32 levels around 3 KB of words: hours). Nesting up to the limit, balanced or
    // not, is answered at once.
    let words = vec!["w"; 1500].join(" ");
    let at_limit = format!("{}{words}{}", "(".repeat(32), ")".repeat(32));
    assert!(fx.search.logs(&Tenant::default(), &LogSearch { q: at_limit, ..everything() }).await.is_ok());
    for q in ["((((((\t((+((((((\t((+((((m1c;))".to_string(), "(+".repeat(32) + "a", format!("{}a", "(".repeat(32))] {
        match fx.search.logs(&Tenant::default(), &LogSearch { q: q.clone(), ..everything() }).await {
            Err(IndexError::Invalid(m)) => assert!(m.contains("expected ')'"), "{m}"),
            other => panic!("{q}: expected Invalid, got {:?}", other.map(|(b, _)| b.num_rows())),
        }
    }
    // Found by fuzzing: whitespace other than space, tab, CR and LF in a set made tantivy's
    // lenient grammar loop forever, allocating. It is taken as a space.
    for q in [
        "service:IN [checkout\u{b}payments]",
        "service:IN [\u{a0}",
        "payment\u{2003}upstream",
        "service:IN [\u{85}x\u{3000}]",
    ] {
        let r = fx.search.logs(&Tenant::default(), &LogSearch { q: q.into(), ..everything() }).await;
        assert!(matches!(r, Ok(_) | Err(IndexError::Invalid(_))), "{q:?}");
    }
    // Ordinary nesting, negation and phrases with parentheses inside still work.
    for q in [
        "((payment OR upstream) AND -authorised)",
        "\"(((((((((((((((((((((((((((((((((((x\" OR payment",
        "-x -y -z payment",
        "payment AND -authorised OR x",
        "\"a AND\" payment",
    ] {
        assert!(fx.search.logs(&Tenant::default(), &LogSearch { q: q.into(), ..everything() }).await.is_ok(), "{q}");
    }
}

#[tokio::test]
async fn trace_rows_come_from_head_and_segments() {
    let mut fx = Fixture::new().await;
    fx.put(&DATA[..3]);
    fx.flusher.flush_once().await.unwrap();
    fx.put(&DATA[3..]);
    fx.put(&[("late", 9, 9, "late record of trace one", &[], 1)]);
    let id = "01".repeat(16);
    let (b, stats) = fx.search.trace_rows(&Tenant::default(), Signal::Logs, &[id], None, None).await.unwrap();
    let mut got = bodies(&b);
    got.sort();
    assert_eq!(got, vec!["connection reset by peer", "late record of trace one", "payment failed: upstream timeout"]);
    assert_eq!(stats.segments, 1);
    assert_eq!(stats.rows_read, 3);
}

#[tokio::test]
async fn histogram_counts_matches_per_bucket_in_head_and_segments() {
    let mut fx = Fixture::new().await;
    // Records at 1..=5 ms and 1 005 ms: "payment" matches the first two.
    fx.put(&DATA[..2]);
    fx.flusher.flush_once().await.unwrap();
    fx.put(&DATA[2..]);
    fx.put(&[("checkout", 1005, 17, "payment retried", &[], 0)]);
    let buckets = TimeBuckets { start_ns: T0, step_ns: 1_000_000_000, len: 3 };
    let count = |q: &str| {
        let s = LogSearch { q: q.into(), ..everything() };
        let search = &fx.search;
        async move { search.log_histogram(&Tenant::default(), &s, &buckets).await.unwrap().0 }
    };
    assert_eq!(count("payment").await, vec![2, 1, 0]);
    assert_eq!(count("").await, vec![5, 1, 0]);
    assert_eq!(count("nothing-matches-this").await, vec![0, 0, 0]);
    // The window bounds apply: a search from 1 s on sees only the late record.
    let late = LogSearch { start_ns: T0 + 1_000_000_000, ..everything() };
    assert_eq!(fx.search.log_histogram(&Tenant::default(), &late, &buckets).await.unwrap().0, vec![0, 1, 0]);
}

/// A corpus where phrases have near misses: the same words apart, reversed, repeated, split
/// by punctuation, in one attribute value or across two.
fn corpus() -> Vec<Rec<'static>> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let words = [
        "payment",
        "timeout",
        "upstream",
        "connection",
        "reset",
        "by",
        "peer",
        "cache",
        "miss",
        "the",
        "retry",
        "error:",
        "42",
        "user-42",
        "db-1",
        "/api/cart",
        "GET",
    ];
    let services = ["checkout", "payment", "cart"];
    let mut seed = 7u64;
    let mut next = |n: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 33) % n as u64) as usize
    };
    (0..240)
        .map(|i| {
            let len = 2 + next(6);
            let mut body: Vec<&str> = (0..len).map(|_| words[next(words.len())]).collect();
            if i % 7 == 0 {
                body.extend(["payment", "timeout"]);
            }
            if i % 11 == 0 {
                body.extend(["connection", "reset", "by", "peer"]);
            }
            let mut attrs = vec![("user.id", ["42", "7", "user-42", "user 42"][next(4)])];
            if i % 3 == 0 {
                attrs.push(("http.route", ["/api/cart", "/api/order/{id}", "GET /api/cart"][next(3)]));
            }
            if i % 5 == 0 {
                attrs.push(("peer", ["db-1", "db-2", "cache miss"][next(3)]));
            }
            // A unique word last, so every record's body is distinct.
            let body = leak(format!("{} rec{i}", body.join(" ")));
            let attrs: &'static [(&'static str, &'static str)] = Box::leak(attrs.into_boxed_slice());
            (services[next(3)], i as i64, [9, 13, 17][next(3)], body, attrs, next(4) as u8)
        })
        .collect()
}

const GOLDEN_QUERIES: &[&str] = &[
    "\"payment timeout\"",
    "\"timeout payment\"",
    "body:\"connection reset\"",
    "\"reset by peer\"",
    "\"the cache\"",
    "user-42",
    "\"user 42\"",
    "attributes.user.id:\"user-42\"",
    "attributes.user.id:\"user 42\"",
    "attributes.user.id:42",
    "attributes.http.route:\"/api/cart\"",
    "attributes.http.route:\"api order\"",
    "attributes.http.route:\"GET /api/cart\"",
    "\"payment timeout\"~1",
    "\"payment upstream\"~2",
    "\"connection peer\"~2",
    "\"payment tim\"*",
    "NOT \"payment timeout\"",
    "payment -\"payment timeout\"",
    "\"payment timeout\" OR \"cache miss\"",
    "(\"payment timeout\" AND service:checkout)",
    "\"db 1\"",
    "db-1",
    "/api/cart",
    "\"error 42\"",
    "\"error: 42\"",
    "severity:ERROR AND \"connection reset\"",
    "\"retry retry\"",
    "attr_values:\"cache miss\"",
    "attributes.peer:\"cache miss\"",
    "\"cache miss\" AND NOT attributes.peer:\"cache miss\"",
    "payment",
    "\"payment\"",
    "\"!!\" payment",
    "api cart",
    "\"api cart\" OR timeout",
];

/// What an index with positions (the format before this version) answers for `q`: the oracle
/// the position-free index and its phrase checks must agree with.
fn oracle(recs: &[Rec], q: &str) -> Vec<String> {
    let (schema, fields) = schema::schema_with(tantivy::schema::IndexRecordOption::WithFreqsAndPositions);
    let index = tantivy::Index::create_in_ram(schema);
    schema::register_tokenizers(&index);
    let mut writer = index.writer_with_num_threads(1, 20 << 20).unwrap();
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: T0, limits: ItemLimits::default() };
    let batch = logs_to_arrow(&request(recs), &ctx).batch.batch;
    schema::add_rows(&writer, &fields, Signal::Logs, &batch, true, |i| i as u64).unwrap();
    writer.commit().unwrap();
    let searcher = index.reader().unwrap().searcher();
    let mut parser = tantivy::query::QueryParser::for_index(&index, vec![fields.body, fields.attr_values]);
    parser.set_conjunction_by_default();
    let (ast, errors) = tantivy::query_grammar::parse_query_lenient(q);
    assert!(errors.is_empty(), "{q}: {errors:?}");
    let query = parser.build_query_from_user_input_ast(crate::syntax::lift_negations(ast)).unwrap();
    let body = batch.column_by_name("body").unwrap().as_string::<i32>();
    let mut out: Vec<String> = searcher
        .search(&query, &tantivy::collector::DocSetCollector)
        .unwrap()
        .into_iter()
        .map(|a| {
            let row = searcher.segment_reader(a.segment_ord).fast_fields().u64("row").unwrap().first(a.doc_id).unwrap();
            body.value(row as usize).to_string()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn phrases_and_attribute_searches_answer_as_an_index_with_positions_does() {
    let all = corpus();
    let id = |b: u8| format!("{b:02x}").repeat(16);
    let mut queries: Vec<String> = GOLDEN_QUERIES.iter().map(|q| q.to_string()).collect();
    queries.push(format!("trace_id:{}", id(1)));
    queries.push(format!("trace_id:IN [{} {}]", id(1), id(2).to_uppercase()));
    queries.push(format!("\"payment timeout\" AND NOT trace_id:{}", id(3)));
    queries.push(format!("trace_id:{} OR \"cache miss\"", id(2)));
    // Head only, segments only (two flushes and a chunked flush), and both.
    let mut head = Fixture::new().await;
    head.put(&all);
    let mut segs = Fixture::with(|f| f.with_indexer(Arc::new(SegmentIndexBuilder)).with_chunk_bytes(8 << 10)).await;
    segs.put(&all[..100]);
    segs.flusher.flush_once().await.unwrap();
    segs.put(&all[100..]);
    segs.flusher.flush_once().await.unwrap();
    let mut both = Fixture::new().await;
    both.put(&all[..150]);
    both.flusher.flush_once().await.unwrap();
    both.put(&all[150..]);
    let buckets = TimeBuckets { start_ns: T0, step_ns: 60_000_000, len: 5 };
    let mut nonempty = 0;
    for q in &queries {
        let want = oracle(&all, q);
        nonempty += !want.is_empty() as usize;
        for (name, fx) in [("head", &head), ("segments", &segs), ("both", &both)] {
            let mut got = fx.find(&LogSearch { q: q.clone(), limit: 1000, ..everything() }).await;
            got.sort();
            assert_eq!(got, want, "{q} ({name})");
            // The histogram counts the same records.
            let s = LogSearch { q: q.clone(), ..everything() };
            let counts = fx.search.log_histogram(&Tenant::default(), &s, &buckets).await.unwrap().0;
            assert_eq!(counts.iter().sum::<u64>() as usize, want.len(), "{q} ({name}): histogram");
        }
    }
    assert!(nonempty >= queries.len() - 4, "the corpus must give most queries something to find");
    // A slop past the bound is refused, not tried.
    let r = head.search.logs(&Tenant::default(), &LogSearch { q: "\"a b\"~99".into(), ..everything() }).await;
    assert!(matches!(r, Err(IndexError::Invalid(m)) if m.contains("at most")));
}

#[tokio::test]
async fn phrase_checks_are_bounded_whatever_the_text_and_the_slop() {
    // Found in review: the slop check was a search over placements without memory, so a
    // phrase of many repeated words with ~16 over text of one repeated word took hours.
    let body = "a ".repeat(5000);
    let mut fx = Fixture::new().await;
    fx.put(&[("svc", 1, 9, body.as_str(), &[], 0)]);
    fx.flusher.flush_once().await.unwrap();
    fx.put(&[("svc", 2, 9, body.as_str(), &[], 0)]);
    let words = vec!["a"; 40].join(" ");
    let started = std::time::Instant::now();
    for q in [format!("\"{words} b\"~16"), format!("\"{words}\"~16"), format!("\"{words} a\"")] {
        let r = fx.search.logs(&Tenant::default(), &LogSearch { q: q.clone(), ..everything() }).await;
        match r {
            Ok((b, _)) => assert_eq!(b.num_rows(), if q.contains(" b\"") { 0 } else { 2 }, "{q}"),
            Err(IndexError::Invalid(m)) => assert!(m.contains("takes more than"), "{m}"),
            Err(e) => panic!("{q}: {e}"),
        }
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "bounded work: {:?}", started.elapsed());
    // Too many phrases, or too many words in one, are refused before any work.
    let many = (0..17).map(|i| format!("\"x{i} y\"")).collect::<Vec<_>>().join(" OR ");
    let long = format!("\"{}\"", vec!["w"; 65].join(" "));
    for q in [many, long] {
        match fx.search.logs(&Tenant::default(), &LogSearch { q: q.clone(), ..everything() }).await {
            Err(IndexError::Invalid(m)) => assert!(m.contains("at most"), "{m}"),
            other => panic!("{q}: expected Invalid, got {:?}", other.map(|(b, _)| b.num_rows())),
        }
    }
}
