//! Golden tests: log search syntax, trace search filters and service RED numbers over a fixed
//! generated dataset (`dataset.rs`). Each case's answer is computed three ways and all must
//! agree: by the engine (through the same parameter parsing as the HTTP API), by an oracle
//! that reads the generated records directly, and as written in `cases.golden` (the reviewed
//! snapshot; `UPDATE_GOLDEN=1 cargo test -p tracelight-engine --test golden` rewrites it).
//!
//! The data is loaded in three parts with a flush after the first two, so every answer mixes
//! Parquet segments, their indexes and the head, and most traces are split across them.

mod dataset;
mod metrics;
mod slo;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dataset::{Dataset, HOUR, L, S, T0};
use tracelight_collector::decode::{DecodeContext, ItemLimits, logs_to_arrow, traces_to_arrow};
use tracelight_engine::{Engine, EngineConfig, SegmentIndexBuilder};
use tracelight_model::correlate::{LogQuery, TraceQuery};
use tracelight_model::telemetry::Registry;
use tracelight_model::{BatchSink, QueryService, Tenant};
use tracelight_storage::{Catalog, Flusher, Head, HeadConfig, SegmentStore};
use tracelight_web::search::{Params, log_query, trace_query};

const WINDOW: &str = "start=2026-11-01T00:00:00Z&end=2026-11-01T03:00:00Z";

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

fn has(l: &L, w: &str) -> bool {
    words(&l.body).iter().any(|x| x == w)
}

fn phrase(l: &L, p: &[&str]) -> bool {
    words(&l.body).windows(p.len()).any(|win| win.iter().zip(p).all(|(a, b)| a == b))
}

fn in_window(t: i64, from_h: i64, to_h: i64) -> bool {
    t >= T0 + from_h * HOUR && t < T0 + to_h * HOUR
}

type LogOracle = Box<dyn Fn(&L) -> bool>;
type SpanOracle = Box<dyn Fn(&S) -> bool>;

fn log_cases() -> Vec<(String, LogOracle)> {
    let w = WINDOW;
    vec![
        (format!("q=payment AND timeout&{w}"), Box::new(|l: &L| has(l, "payment") && has(l, "timeout")) as LogOracle),
        (format!("q=payment timeout&{w}"), Box::new(|l: &L| has(l, "payment") && has(l, "timeout"))),
        (format!("q=body:\"connection reset\"&{w}"), Box::new(|l: &L| phrase(l, &["connection", "reset"]))),
        (
            format!("q=card OR declined&severity=ERROR&{w}"),
            Box::new(|l: &L| (has(l, "card") || has(l, "declined")) && l.severity == "ERROR"),
        ),
        (
            format!("q=retry -cache&service=payment&{w}"),
            Box::new(|l: &L| has(l, "retry") && !has(l, "cache") && l.service == "payment"),
        ),
        (format!("q=attributes.user.id:42&{w}"), Box::new(|l: &L| l.user == 42)),
        (
            format!("q=queue AND NOT latency AND NOT upstream&service=checkout,frontend&{w}"),
            Box::new(|l: &L| has(l, "queue") && !has(l, "latency") && !has(l, "upstream") && l.service != "payment"),
        ),
        (
            "severity=WARN,ERROR&start=2026-11-01T01:00:00Z&end=2026-11-01T02:00:00Z".into(),
            Box::new(|l: &L| ["WARN", "ERROR"].contains(&l.severity) && in_window(l.time, 1, 2)),
        ),
        (
            format!("q=(inventory OR order) AND \"upstream failed\"&{w}"),
            Box::new(|l: &L| (has(l, "inventory") || has(l, "order")) && phrase(l, &["upstream", "failed"])),
        ),
        (format!("q=zqxwvneedle&{w}"), Box::new(|_: &L| false)),
    ]
}

fn trace_cases() -> Vec<(String, SpanOracle)> {
    let w = WINDOW;
    vec![
        (
            format!(
                "service=checkout&name=POST /checkout&min_duration=300ms&status=error\
                 &attr.http.response.status_code=503&{w}"
            ),
            Box::new(|s: &S| {
                s.service == "checkout"
                    && s.name == "POST /checkout"
                    && s.dur >= 300_000_000
                    && s.error
                    && s.status_code == 503
            }) as SpanOracle,
        ),
        (format!("service=payment&status=error&{w}"), Box::new(|s: &S| s.service == "payment" && s.error)),
        (format!("min_duration=800ms&{w}"), Box::new(|s: &S| s.dur >= 800_000_000)),
        (
            format!("attr.db.system=postgresql&max_duration=1ms&{w}"),
            Box::new(|s: &S| s.status_code == 0 && s.dur <= 1_000_000),
        ),
        (
            "service=frontend&name=GET /cart&start=2026-11-01T01:00:00Z&end=2026-11-01T02:00:00Z".into(),
            Box::new(|s: &S| s.service == "frontend" && s.name == "GET /cart" && in_window(s.start, 1, 2)),
        ),
        // Duration and attribute filters hold on the same span: a slow span and a 402 span in
        // one trace do not make it match.
        (
            format!("min_duration=150ms&attr.http.response.status_code=402&{w}"),
            Box::new(|s: &S| s.dur >= 150_000_000 && s.status_code == 402),
        ),
    ]
}

fn pairs(params: &str) -> Vec<(String, String)> {
    params
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn ms(ns: i64) -> String {
    format!("{:.3}ms", ns as f64 / 1e6)
}

async fn engine_logs(engine: &Engine, params: &str) -> String {
    let mut q: LogQuery = log_query(&Params::new(pairs(params))).unwrap();
    q.limit = 7;
    let first = engine.logs(q.clone()).await.unwrap();
    let ids: Vec<String> =
        first.logs.iter().map(|l| l.body.clone().unwrap().rsplit(' ').next().unwrap().into()).collect();
    // Every page, to count them all and check pagination.
    let mut total = first.logs.len();
    let mut cursor = first.next_cursor.clone();
    let mut seen: BTreeSet<String> = first.logs.iter().map(|l| l.body.clone().unwrap()).collect();
    while let Some(c) = cursor {
        let mut next = q.clone();
        next.limit = 50;
        next.cursor = Some(tracelight_model::correlate::Cursor::decode(&c).unwrap());
        let page = engine.logs(next).await.unwrap();
        total += page.logs.len();
        for l in &page.logs {
            assert!(seen.insert(l.body.clone().unwrap()), "{params}: {:?} on two pages", l.body);
        }
        cursor = page.next_cursor;
    }
    format!("{total} | {}", ids.join(" "))
}

fn oracle_logs(data: &Dataset, pred: &LogOracle) -> String {
    let mut hits: Vec<&L> = data.logs.iter().filter(|l| in_window(l.time, 0, 3) && pred(l)).collect();
    hits.sort_by_key(|l| std::cmp::Reverse(l.time));
    let ids: Vec<String> = hits.iter().take(7).map(|l| l.id.to_string()).collect();
    format!("{} | {}", hits.len(), ids.join(" "))
}

fn describe(id: &str, spans: &[&S]) -> String {
    let root = spans.iter().find(|s| s.parent.is_none()).unwrap();
    let start = spans.iter().map(|s| s.start).min().unwrap();
    let end = spans.iter().map(|s| s.start + s.dur).max().unwrap();
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service).collect();
    format!(
        "{} {}/{} spans={} errors={} {} [{}]",
        &id[..8],
        root.service,
        root.name,
        spans.len(),
        spans.iter().filter(|s| s.error).count(),
        ms(end - start),
        services.into_iter().collect::<Vec<_>>().join(",")
    )
}

async fn engine_traces(engine: &Engine, params: &str) -> String {
    let mut q: TraceQuery = trace_query(&Params::new(pairs(params))).unwrap();
    q.limit = 4;
    let first = engine.traces(q.clone()).await.unwrap();
    let mut lines: Vec<String> = first
        .traces
        .iter()
        .map(|t| {
            format!(
                "{} {}/{} spans={} errors={} {} [{}]",
                &t.trace_id[..8],
                t.root_service.as_deref().unwrap_or("?"),
                t.root_name.as_deref().unwrap_or("?"),
                t.span_count,
                t.error_count,
                ms(t.duration_ns),
                t.services.join(",")
            )
        })
        .collect();
    let mut total = first.traces.len();
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let mut next = q.clone();
        next.cursor = Some(tracelight_model::correlate::Cursor::decode(&c).unwrap());
        next.limit = 100;
        let page = engine.traces(next).await.unwrap();
        total += page.traces.len();
        cursor = page.next_cursor;
    }
    lines.insert(0, format!("{total} traces"));
    lines.join("\n   ")
}

fn oracle_traces(data: &Dataset, pred: &SpanOracle, from_h: i64, to_h: i64) -> String {
    let mut newest: HashMap<&str, i64> = HashMap::new();
    for s in data.spans.iter().filter(|s| in_window(s.start, from_h, to_h) && pred(s)) {
        let e = newest.entry(&s.trace).or_insert(i64::MIN);
        *e = (*e).max(s.start);
    }
    let mut order: Vec<(&str, i64)> = newest.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(a.0)));
    let mut by_trace: HashMap<&str, Vec<&S>> = HashMap::new();
    for s in &data.spans {
        by_trace.entry(&s.trace).or_default().push(s);
    }
    let mut lines = vec![format!("{} traces", order.len())];
    lines.extend(order.iter().take(4).map(|(id, _)| describe(id, &by_trace[id])));
    lines.join("\n   ")
}

/// Linear interpolation between closest ranks (`percentile_cont`).
fn percentile(sorted: &[i64], p: f64) -> f64 {
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] as f64 + (sorted[hi] - sorted[lo]) as f64 * (rank - lo as f64)
}

fn oracle_services(data: &Dataset) -> String {
    let mut per: BTreeMap<&str, Vec<&S>> = BTreeMap::new();
    for s in &data.spans {
        if s.kind == "SERVER" || s.parent.is_none() {
            per.entry(s.service).or_default().push(s);
        }
    }
    let mut lines = Vec::new();
    for (svc, spans) in per {
        let mut d: Vec<i64> = spans.iter().map(|s| s.dur).collect();
        d.sort_unstable();
        let errors = spans.iter().filter(|s| s.error).count();
        lines.push(format!(
            "{svc} requests={} rate={:.4}/s errors={errors} ratio={:.4} p50={:.3}ms p95={:.3}ms p99={:.3}ms",
            spans.len(),
            spans.len() as f64 / (3.0 * 3600.0),
            errors as f64 / spans.len() as f64,
            percentile(&d, 0.5) / 1e6,
            percentile(&d, 0.95) / 1e6,
            percentile(&d, 0.99) / 1e6
        ));
    }
    let by_id: HashMap<(&str, &str), &S> =
        data.spans.iter().map(|s| ((s.trace.as_str(), s.span.as_str()), s)).collect();
    let mut edges: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for c in &data.spans {
        if let Some(p) = c.parent.as_deref().and_then(|p| by_id.get(&(c.trace.as_str(), p)))
            && p.service != c.service
        {
            let e = edges.entry((p.service, c.service)).or_default();
            e.0 += 1;
            e.1 += c.error as u64;
        }
    }
    for ((p, c), (calls, errors)) in edges {
        lines.push(format!("{p} -> {c} calls={calls} errors={errors}"));
    }
    lines.join("\n   ")
}

async fn engine_services(engine: &Engine) -> String {
    let m = engine.services(&Tenant::default(), T0, T0 + 3 * HOUR).await.unwrap();
    let mut lines: Vec<String> = m
        .services
        .iter()
        .map(|s| {
            format!(
                "{} requests={} rate={:.4}/s errors={} ratio={:.4} p50={:.3}ms p95={:.3}ms p99={:.3}ms",
                s.service, s.requests, s.rate_per_sec, s.errors, s.error_ratio, s.p50_ms, s.p95_ms, s.p99_ms
            )
        })
        .collect();
    lines.extend(m.edges.iter().map(|e| format!("{} -> {} calls={} errors={}", e.parent, e.child, e.calls, e.errors)));
    lines.join("\n   ")
}

/// Half-hour buckets over the three hours.
const STEP: i64 = HOUR / 2;

async fn engine_histogram(engine: &Engine, params: &str) -> String {
    let q: LogQuery = log_query(&Params::new(pairs(params))).unwrap();
    let h = engine.log_histogram(q, STEP).await.unwrap();
    format!("{} | {:?}", h.total, h.counts)
}

fn oracle_histogram(data: &Dataset, pred: &LogOracle) -> String {
    let mut counts = vec![0u64; 6];
    for l in data.logs.iter().filter(|l| in_window(l.time, 0, 3) && pred(l)) {
        counts[((l.time - T0) / STEP) as usize] += 1;
    }
    format!("{} | {:?}", counts.iter().sum::<u64>(), counts)
}

/// Per service and half hour: requests, errors, p99 of entry spans.
async fn engine_series(engine: &Engine) -> String {
    let s = engine.service_series(&Tenant::default(), T0, T0 + 3 * HOUR, STEP).await.unwrap();
    let lines: Vec<String> = s
        .buckets
        .iter()
        .map(|b| {
            format!("{} #{} requests={} errors={} p99={:.3}ms", b.service, b.bucket, b.requests, b.errors, b.p99_ms)
        })
        .collect();
    lines.join("\n   ")
}

fn oracle_series(data: &Dataset) -> String {
    let mut per: BTreeMap<(&str, i64), Vec<&S>> = BTreeMap::new();
    for s in &data.spans {
        if (s.kind == "SERVER" || s.parent.is_none()) && in_window(s.start, 0, 3) {
            per.entry((s.service, (s.start - T0) / STEP)).or_default().push(s);
        }
    }
    let lines: Vec<String> = per
        .into_iter()
        .map(|((svc, b), spans)| {
            let mut d: Vec<i64> = spans.iter().map(|s| s.dur).collect();
            d.sort_unstable();
            let errors = spans.iter().filter(|s| s.error).count();
            format!("{svc} #{b} requests={} errors={errors} p99={:.3}ms", spans.len(), percentile(&d, 0.99) / 1e6)
        })
        .collect();
    lines.join("\n   ")
}

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
    head: Arc<Head>,
    flusher: Flusher,
    catalog: Catalog,
    store: SegmentStore,
}

impl Fixture {
    /// An engine over an empty catalog, head and store, with indexing on.
    async fn empty() -> Fixture {
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
        )
        .with_indexer(Arc::new(SegmentIndexBuilder));
        let engine =
            Engine::new(catalog.clone(), head.clone(), store.clone(), "n1".into(), EngineConfig::default(), &registry)
                .unwrap();
        Fixture { _dir: dir, engine, head, flusher, catalog, store }
    }
}

async fn load(data: &Dataset) -> Fixture {
    let fx = Fixture::empty().await;
    let (head, flusher) = (&fx.head, &fx.flusher);
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: T0, limits: ItemLimits::default() };
    let mut lsn = 0;
    for part in 0..3 {
        let spans: Vec<S> =
            data.spans.iter().enumerate().filter(|(i, _)| i % 3 == part).map(|(_, s)| s.clone()).collect();
        let logs: Vec<L> = data.logs.iter().filter(|l| l.id % 3 == part).cloned().collect();
        let t = traces_to_arrow(&dataset::spans_request(&spans), &ctx);
        let l = logs_to_arrow(&dataset::logs_request(&logs), &ctx);
        assert_eq!((t.rejected, l.rejected), (0, 0));
        lsn += 1;
        head.consume(lsn, vec![t.batch, l.batch]);
        if part < 2 {
            flusher.flush_once().await.unwrap();
        }
    }
    fx
}

#[tokio::test]
async fn golden_cases() {
    let data = dataset::generate();
    let fx = load(&data).await;
    let mut out = String::from(
        "# Golden answers over the generated dataset of query/engine/tests/golden/dataset.rs.\n\
         # Each case: the parameters (as the HTTP API takes them), then `=>` and the answer.\n\
         # logs: total matches over all pages | ids of the newest 7.\n\
         # traces: total matching traces, then the newest 4: id root spans errors duration [services].\n\
         # services: RED of entry spans per service over the three hours, then the edges.\n\
         # histogram: total matches | matches per half hour.\n\
         # service series: per service and half hour (#bucket), RED numbers of entry spans.\n\n",
    );
    let mut failures = Vec::new();
    let mut check = |case: String, got: String, want: String| {
        if got != want {
            failures.push(format!("{case}\n  engine: {got}\n  oracle: {want}"));
        }
        out.push_str(&format!("{case}\n=> {got}\n\n"));
    };
    for (params, pred) in log_cases() {
        let got = engine_logs(&fx.engine, &params).await;
        check(format!("logs {params}"), got, oracle_logs(&data, &pred));
    }
    for (params, pred) in trace_cases() {
        let got = engine_traces(&fx.engine, &params).await;
        let (from, to) = if params.contains("T01:00:00Z") { (1, 2) } else { (0, 3) };
        check(format!("traces {params}"), got, oracle_traces(&data, &pred, from, to));
    }
    check(
        "services start=2026-11-01T00:00:00Z&end=2026-11-01T03:00:00Z".into(),
        engine_services(&fx.engine).await,
        oracle_services(&data),
    );
    for (params, pred) in log_cases().into_iter().filter(|(p, _)| p.contains(WINDOW)).take(4) {
        let got = engine_histogram(&fx.engine, &params).await;
        check(format!("histogram step=30m {params}"), got, oracle_histogram(&data, &pred));
    }
    check(
        "service series step=30m start=2026-11-01T00:00:00Z&end=2026-11-01T03:00:00Z".into(),
        engine_series(&fx.engine).await,
        oracle_series(&data),
    );
    assert!(failures.is_empty(), "engine and oracle disagree:\n{}", failures.join("\n"));

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/cases.golden");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &out).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    if want != out {
        let first = want.lines().zip(out.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "answers differ from {path} (first at line {}): review, then rerun with UPDATE_GOLDEN=1\n  file: {:?}\n  now:  {:?}",
            first + 1,
            want.lines().nth(first),
            out.lines().nth(first)
        );
    }
}
