//! `tracelight bench search`: ingests N spans and N logs of realistic data spread over the last
//! 24 hours into a server it starts (indexing on, defaults otherwise), restarts it so everything
//! is in Parquet and the index, then measures trace-by-ID without a time hint, a needle
//! full-text search against the same needle as a SQL `LIKE` scan, services RED over one hour,
//! the log ingest rate, and bytes on disk per log record (data and index apart). It also
//! plants a trace of 1,000 spans and one of 50,000 and times the UI's pages (server render
//! time from the page footer, and the whole HTTP round trip).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message;
use tonic::transport::Channel;
use tracelight_collector::grpc::RawCodec;
use tracelight_collector::synth::{self, Rng};

use crate::bench::{bytes_where, is_index_file, metric_sum, spawn_server_with, stop_server};

#[derive(Args)]
pub struct SearchArgs {
    /// Spans to ingest.
    #[arg(long, default_value_t = 10_000_000)]
    spans: u64,
    /// Log records to ingest.
    #[arg(long, default_value_t = 10_000_000)]
    logs: u64,
    /// Log records carrying the rare token `zqxneedle`.
    #[arg(long, default_value_t = 10)]
    needles: u64,
    /// Items per export request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Metric series to ingest (a third each counters, gauges and histograms with 10 bounds).
    #[arg(long, default_value_t = 800)]
    series: u64,
    /// Points per series, 15 s apart.
    #[arg(long, default_value_t = 200)]
    ticks: u64,
    /// Keep the data directory here (and reuse it, skipping ingest, when it already has data).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Extra `serve` arguments for every server the bench starts, e.g. `--storage-url
    /// s3://bucket/prefix` (credentials and endpoint from the AWS environment variables) to
    /// measure a node reading object storage through its disk cache. Not `--config`: the bench
    /// passes its own for the compaction pass.
    #[arg(long, allow_hyphen_values = true, num_args = 1..)]
    serve_args: Vec<String>,
    /// Rounds of the cold-cache measurement: each restarts the server with an empty disk cache
    /// (`<data dir>/cache`) and times its first trace lookup and needle search.
    #[arg(long, default_value_t = 3)]
    cold_rounds: u32,
}

/// The needle search the bench times (all logs of the last 25 hours).
const NEEDLE: &str = "/api/v1/logs?q=zqxneedle&since=25h&limit=100";

/// Histogram bounds of the metric series (10 bounds: 11 buckets).
const BOUNDS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Samples a Prometheus server would store for one point of series `s`: one for a counter or
/// gauge, 11 buckets + sum + count for a histogram.
fn samples_per_point(s: u64) -> u64 {
    if s % 3 == 2 { BOUNDS.len() as u64 + 3 } else { 1 }
}

/// One scrape of every series at `t`, as a fleet's SDKs export them: cumulative counters and
/// histograms that grow, gauges that wander, each series with its route, method and status
/// and its service's resource.
fn metric_tick(series: u64, tick: u64, t: u64) -> Bytes {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let kv = |k: &str, v: any_value::Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let services = 8;
    let start = t - tick * 15_000_000_000 - 60_000_000_000;
    let resource_metrics = (0..services)
        .map(|svc| {
            let metrics = (0..series)
                .filter(|s| s % services == svc)
                .map(|s| {
                    let attributes = vec![
                        kv("http.route", any_value::Value::StringValue(format!("/api/v{}/items/{}", s % 3, s / 3))),
                        kv(
                            "http.request.method",
                            any_value::Value::StringValue(["GET", "POST"][(s % 2) as usize].into()),
                        ),
                        kv("http.response.status_code", any_value::Value::IntValue(if s % 7 == 0 { 500 } else { 200 })),
                    ];
                    let (name, unit, data) = match s % 3 {
                        0 => (
                            "http.server.request.count",
                            "{request}",
                            metric::Data::Sum(Sum {
                                data_points: vec![NumberDataPoint {
                                    attributes,
                                    start_time_unix_nano: start,
                                    time_unix_nano: t,
                                    value: Some(number_data_point::Value::AsInt((tick * (3 + s % 11)) as i64)),
                                    ..Default::default()
                                }],
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                is_monotonic: true,
                            }),
                        ),
                        1 => (
                            "process.cpu.utilization",
                            "1",
                            metric::Data::Gauge(Gauge {
                                data_points: vec![NumberDataPoint {
                                    attributes,
                                    time_unix_nano: t,
                                    value: Some(number_data_point::Value::AsDouble(
                                        0.3 + 0.2 * ((tick as f64 / 10.0) + s as f64).sin(),
                                    )),
                                    ..Default::default()
                                }],
                            }),
                        ),
                        _ => {
                            let buckets: Vec<u64> =
                                (0..=BOUNDS.len() as u64).map(|j| tick * ((j * 7 + s) % 5 + 1)).collect();
                            let count = buckets.iter().sum();
                            (
                                "http.server.request.duration",
                                "s",
                                metric::Data::Histogram(Histogram {
                                    data_points: vec![HistogramDataPoint {
                                        attributes,
                                        start_time_unix_nano: start,
                                        time_unix_nano: t,
                                        count,
                                        sum: Some(count as f64 * 0.042),
                                        explicit_bounds: BOUNDS.to_vec(),
                                        bucket_counts: buckets,
                                        ..Default::default()
                                    }],
                                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                }),
                            )
                        }
                    };
                    Metric { name: name.into(), unit: unit.into(), data: Some(data), ..Default::default() }
                })
                .collect();
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", any_value::Value::StringValue(format!("service-{svc}"))),
                        kv("service.instance.id", any_value::Value::StringValue(format!("pod-{svc}-a1b2c3"))),
                        kv("host.name", any_value::Value::StringValue(format!("node-{}", svc % 3))),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
                ..Default::default()
            }
        })
        .collect();
    Bytes::from(ExportMetricsServiceRequest { resource_metrics }.encode_to_vec())
}

const DAY: u64 = 86_400_000_000_000;
/// The planted large traces: (trace ID, spans).
const BIG: [([u8; 16], u64); 2] = [([0x7e; 16], 1_000), ([0x5f; 16], 50_000)];

fn now_ns() -> u64 {
    tracelight_model::time::now_ns() as u64
}

/// Sends `total` items in `batch`es from `clients` tasks; request `i` covers the slice of the
/// last 24 hours that its position gives it, so data lands in time order across partitions.
async fn send(
    channel: &Channel,
    path: &'static str,
    total: u64,
    a: &SearchArgs,
    start_ns: u64,
    make: Arc<dyn Fn(u64, u64) -> Bytes + Send + Sync>,
) -> anyhow::Result<f64> {
    let requests = total.div_ceil(a.batch);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let (ch, next, done, make) = (channel.clone(), next.clone(), done.clone(), make.clone());
        let batch = a.batch;
        tasks.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(ch);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, anyhow::Error>(());
                }
                let t = start_ns + i * (DAY - 60_000_000_000) / requests;
                let body = make(i, t);
                loop {
                    grpc.ready().await?;
                    let res = grpc
                        .unary(tonic::Request::new(body.clone()), http::uri::PathAndQuery::from_static(path), RawCodec)
                        .await;
                    match res {
                        Ok(_) => break,
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(s) => bail!("export failed: {s}"),
                    }
                }
                let d = done.fetch_add(batch, Ordering::Relaxed) + batch;
                if d.is_multiple_of(batch * 500) {
                    eprintln!("  {d} sent, {:.0}/s", d as f64 / started.elapsed().as_secs_f64());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Every `*.idx` directory under `dir`.
fn collect_dirs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.extension().is_some_and(|x| x == "idx") {
                out.push(p);
            } else {
                collect_dirs(&p, out);
            }
        }
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)])
}

async fn timed_get(client: &reqwest::Client, url: &str) -> anyhow::Result<(f64, serde_json::Value)> {
    let t = Instant::now();
    let res = client.get(url).send().await?;
    let status = res.status();
    let v: serde_json::Value = res.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {v}");
    }
    Ok((t.elapsed().as_secs_f64() * 1000.0, v))
}

/// Restarts the server `a.cold_rounds` times with an empty disk cache and times its first trace
/// lookup (of a trace the warm passes looked up, now with nothing cached) and then its first
/// needle search: what the first user
/// of a new querier waits for. On a local store the operating system's page cache stays warm.
async fn cold_rounds(dir: &Path, a: &SearchArgs, ids: &[String]) -> anyhow::Result<Vec<(f64, f64)>> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for round in 0..a.cold_rounds as usize {
        let cache = dir.join("data/cache");
        if cache.exists() {
            std::fs::remove_dir_all(&cache)?;
        }
        let server = spawn_server_with(dir, &a.serve_args)?;
        let api = format!("http://{}", server.http);
        let id = ids.get(ids.len().saturating_sub(1 + round)).ok_or_else(|| anyhow::anyhow!("no sampled trace IDs"))?;
        let (trace_ms, v) = timed_get(&client, &format!("{api}/api/v1/traces/{id}")).await?;
        if v["spans"].as_array().is_none_or(|s| s.is_empty()) {
            bail!("trace {id} came back without spans");
        }
        let (needle_ms, v) = timed_get(&client, &format!("{api}{NEEDLE}")).await?;
        if v["logs"].as_array().map_or(0, |l| l.len()) as u64 != a.needles {
            bail!("cold needle search: {v}");
        }
        out.push((trace_ms, needle_ms));
        stop_server(server.child)?;
    }
    Ok(out)
}

/// Runs the server with compaction every second until a quiet 15 s pass without a merge, then
/// stops it. Its janitor runs every second with a grace of 2 s, so the replaced segments are
/// deleted by then and the bytes measured are those of the merged data alone.
async fn compact(dir: &Path, serve_args: &[String]) -> anyhow::Result<()> {
    let config = dir.join("compact-now.toml");
    std::fs::write(
        &config,
        "[compaction]\ninterval = \"1s\"\nmin_age = \"1s\"\n\n[janitor]\ninterval = \"1s\"\n\
         grace_after_queries = \"1s\"\n\n[query]\ntimeout = \"1s\"\n",
    )?;
    let mut args = serve_args.to_vec();
    args.extend(["--config".into(), config.display().to_string()]);
    let server = spawn_server_with(dir, &args)?;
    let url = format!("http://{}/metrics", server.http);
    let started = Instant::now();
    let (mut last, mut quiet_since) = (-1.0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = reqwest::get(&url).await?.text().await?;
        let merges = metric_sum(&m, "tracelight_compaction_merges_total");
        if merges != last {
            (last, quiet_since) = (merges, Instant::now());
        } else if quiet_since.elapsed() >= Duration::from_secs(15) {
            let replaced = metric_sum(&m, "tracelight_compaction_segments_replaced_total");
            eprintln!(
                "compacted: {merges} merges replaced {replaced} segments in {:.0} s",
                started.elapsed().as_secs_f64() - 15.0
            );
            break;
        }
        if metric_sum(&m, "tracelight_compaction_failures_total") > 0.0 {
            bail!("compaction failed (see {})", dir.join("server.log").display());
        }
    }
    stop_server(server.child)
}

pub async fn search(a: SearchArgs) -> anyhow::Result<()> {
    let tmp = match &a.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tracelight-bench-search-{}", std::process::id())),
    };
    std::fs::create_dir_all(&tmp)?;
    let reuse = tmp.join("data/catalog.db").exists();
    let sampled = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut log_rate = None;
    let mut span_rate = None;
    let start_ns = now_ns() - DAY;
    if !reuse {
        let server = spawn_server_with(&tmp, &a.serve_args)?;
        let channel = Channel::from_shared(format!("http://{}", server.grpc))?.connect().await?;
        let (n, k, batch) = (a.logs, a.needles.max(1), a.batch);
        eprintln!("ingesting {} log records ({} with the needle) over the last 24 h...", a.logs, a.needles);
        let make_logs: Arc<dyn Fn(u64, u64) -> Bytes + Send + Sync> = Arc::new(move |i, t| {
            let mut req = synth::logs(&mut Rng::new(i + 1), batch as usize, t);
            for (j, r) in req.resource_logs[0].scope_logs[0].log_records.iter_mut().enumerate() {
                let g = i * batch + j as u64;
                if g % (n / k) == 17
                    && g / (n / k) < k
                    && let Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) = &mut r.body
                {
                    s.push_str(" zqxneedle");
                }
            }
            Bytes::from(req.encode_to_vec())
        });
        let path = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
        log_rate = Some(send(&channel, path, a.logs, &a, start_ns, make_logs).await?);
        eprintln!("ingesting {} spans...", a.spans);
        let s2 = sampled.clone();
        let make_spans: Arc<dyn Fn(u64, u64) -> Bytes + Send + Sync> = Arc::new(move |i, t| {
            let req = synth::traces(&mut Rng::new(i + 1_000_000_007), batch as usize, t);
            if i % 50 == 0 {
                let id = &req.resource_spans[0].scope_spans[0].spans[0].trace_id;
                s2.lock().push(id.iter().map(|b| format!("{b:02x}")).collect());
            }
            Bytes::from(req.encode_to_vec())
        });
        let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
        span_rate = Some(send(&channel, path, a.spans, &a, start_ns, make_spans).await?);
        eprintln!("planting traces of 1,000 and 50,000 spans 30 minutes ago...");
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        for (id, n) in BIG {
            for first in (0..n).step_by(1000) {
                let req = synth::big_trace(id, first, 1000.min(n - first), now_ns() - DAY / 48);
                grpc.ready().await?;
                let path =
                    http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
                grpc.unary(tonic::Request::new(Bytes::from(req.encode_to_vec())), path, RawCodec).await?;
            }
        }
        eprintln!("ingesting {} metric series × {} points, 15 s apart...", a.series, a.ticks);
        let metrics_start = now_ns() - DAY / 2;
        let path =
            http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export");
        for tick in 0..a.ticks {
            let body = metric_tick(a.series, tick, metrics_start + tick * 15_000_000_000);
            loop {
                grpc.ready().await?;
                match grpc.unary(tonic::Request::new(body.clone()), path.clone(), RawCodec).await {
                    Ok(_) => break,
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(s) => bail!("metrics export failed: {s}"),
                }
            }
        }
        eprintln!("restarting so that everything is flushed to Parquet and indexed...");
        stop_server(server.child)?;
    } else {
        eprintln!("reusing the data in {}", tmp.display());
        for i in (0..a.spans.div_ceil(a.batch)).step_by(50) {
            let t = 0; // The trace IDs depend on the seed only.
            let req = synth::traces(&mut Rng::new(i + 1_000_000_007), a.batch as usize, t);
            let id = &req.resource_spans[0].scope_spans[0].spans[0].trace_id;
            sampled.lock().push(id.iter().map(|b| format!("{b:02x}")).collect());
        }
    }

    // What users live with an hour later: compaction has merged each hour's flushes.
    compact(&tmp, &a.serve_args).await?;
    // Pages a previous run of a reused data directory cached are not this run's first reads.
    let cache = tmp.join("data/cache");
    if cache.exists() {
        std::fs::remove_dir_all(&cache)?;
    }
    let server = spawn_server_with(&tmp, &a.serve_args)?;
    let api = format!("http://{}", server.http);
    let client = reqwest::Client::new();
    let ids = sampled.lock().clone();
    let mut ids: Vec<String> = ids.into_iter().take(203).collect();
    // Warm-up, with traces not measured: the first touches open every segment's index once.
    for id in ids.drain(..3.min(ids.len())) {
        timed_get(&client, &format!("{api}/api/v1/traces/{id}")).await?;
    }
    // Each trace twice: its first lookup reads its rows' pages for the first time (on object
    // storage: from the bucket, into the disk cache), the second finds them cached.
    let mut passes = Vec::new();
    for _ in 0..2 {
        let mut trace_ms = Vec::new();
        for id in &ids {
            let (ms, v) = timed_get(&client, &format!("{api}/api/v1/traces/{id}")).await?;
            if v["spans"].as_array().map_or(0, |s| s.len()) == 0 {
                bail!("trace {id} came back without spans");
            }
            trace_ms.push(ms);
        }
        passes.push(percentiles(trace_ms));
    }
    let ((t50, t99), (w50, w99)) = (passes[0], passes[1]);

    let needle_url = format!("{api}{NEEDLE}");
    let mut needle_ms = Vec::new();
    let mut found = 0;
    for _ in 0..21 {
        let (ms, v) = timed_get(&client, &needle_url).await?;
        found = v["logs"].as_array().map_or(0, |l| l.len());
        needle_ms.push(ms);
    }
    // The first run decodes the hits' pages; the rest find the rows in the row cache.
    let needle_first = needle_ms[0];
    let (n50, _) = percentiles(needle_ms);
    if found as u64 != a.needles {
        bail!("needle search found {found} records, {} were planted", a.needles);
    }

    let end = now_ns() + 1;
    let like = serde_json::json!({
        "sql": "SELECT count(*) FROM logs WHERE body LIKE '%zqxneedle%'",
        "start": (end - DAY - 3_600_000_000_000).to_string(),
        "end": end.to_string(),
    });
    let mut like_ms = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let v: serde_json::Value = client.post(format!("{api}/api/v1/query")).json(&like).send().await?.json().await?;
        like_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if v["rows"][0][0].as_u64() != Some(a.needles) {
            bail!("LIKE scan counted {}, not {}", v["rows"][0][0], a.needles);
        }
    }
    let (l50, _) = percentiles(like_ms);

    let errors = serde_json::json!({
        "sql": "SELECT service_name, count(*) FROM spans WHERE status_code = 'ERROR' GROUP BY service_name",
        "start": (end - DAY - 3_600_000_000_000).to_string(),
        "end": end.to_string(),
    });
    let mut errors_ms = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let v: serde_json::Value =
            client.post(format!("{api}/api/v1/query")).json(&errors).send().await?.json().await?;
        errors_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if v.get("error").is_some() {
            bail!("error spans by service: {v}");
        }
    }
    let (e50, _) = percentiles(errors_ms);
    // Logs of one trace: the log search's trace filter (synthetic logs carry the trace IDs of
    // synthetic spans of the same seed only by chance, so take IDs from the logs themselves).
    let sample = serde_json::json!({ "sql": "SELECT trace_id FROM logs WHERE trace_id IS NOT NULL LIMIT 50",
        "start": (end - DAY - 3_600_000_000_000).to_string(), "end": end.to_string() });
    let v: serde_json::Value = client.post(format!("{api}/api/v1/query")).json(&sample).send().await?.json().await?;
    let log_traces: Vec<String> =
        v["rows"].as_array().into_iter().flatten().filter_map(|r| r[0].as_str().map(str::to_string)).collect();
    let mut trace_logs_ms = Vec::new();
    for id in &log_traces {
        let (ms, v) = timed_get(&client, &format!("{api}/api/v1/logs?trace_id={id}&since=25h&limit=100")).await?;
        if v["logs"].as_array().is_none_or(|l| l.is_empty()) {
            bail!("the logs of trace {id} came back empty");
        }
        trace_logs_ms.push(ms);
    }
    let tl50 = if trace_logs_ms.is_empty() { f64::NAN } else { percentiles(trace_logs_ms).0 };

    let mut red_ms = Vec::new();
    let mut services = 0;
    let mut requests = 0;
    for _ in 0..5 {
        let (ms, v) = timed_get(&client, &format!("{api}/api/v1/services?window=1h")).await?;
        services = v["services"].as_array().map_or(0, |s| s.len());
        requests = v["services"].as_array().map_or(0, |s| s.iter().map(|x| x["requests"].as_u64().unwrap_or(0)).sum());
        red_ms.push(ms);
    }
    let (r50, _) = percentiles(red_ms);
    let mut pages = Vec::new();
    let big: Vec<String> = BIG.iter().map(|(id, _)| id.iter().map(|b| format!("{b:02x}")).collect()).collect();
    for (what, path, runs) in [
        ("home (services, 1 h)", "/".to_string(), 7),
        ("trace of 1,000 spans", format!("/traces/{}", big[0]), 7),
        ("trace of 50,000 spans", format!("/traces/{}", big[1]), 3),
        ("trace search (1 h)", "/traces?since=1h".to_string(), 7),
        ("log search with histogram (24 h)", "/logs?q=zqxneedle&since=24h".to_string(), 7),
        ("logs, everything (1 h)", "/logs?since=1h".to_string(), 7),
    ] {
        let (mut server_ms, mut total_ms) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            let res = client.get(format!("{api}{path}")).send().await?;
            let status = res.status();
            let html = res.text().await?;
            total_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if !status.is_success() {
                bail!("{path}: {status}");
            }
            let rendered = html
                .split("rendered on the server in ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse::<f64>().ok());
            server_ms.push(rendered.ok_or_else(|| anyhow::anyhow!("{path}: no render time in the footer"))?);
        }
        pages.push((what, percentiles(server_ms).0, percentiles(total_ms).0));
    }
    stop_server(server.child)?;
    let cold = cold_rounds(&tmp, &a, &ids).await?;

    let logs_dir = tmp.join("data/segments/default/logs");
    let data = bytes_where(&logs_dir, &|p| p.extension().is_some_and(|e| e == "parquet"));
    let index = bytes_where(&logs_dir, &is_index_file);
    let spans_dir = tmp.join("data/segments/default/spans");
    let span_data = bytes_where(&spans_dir, &|p| p.extension().is_some_and(|e| e == "parquet"));
    let span_index = bytes_where(&spans_dir, &is_index_file);

    println!("dataset: {} spans, {} log records over the last 24 h ({} needles)", a.spans, a.logs, a.needles);
    if let (Some(l), Some(s)) = (log_rate, span_rate) {
        println!("ingest with indexing on (generator on the same 2 cores): {l:.0} logs/s, {s:.0} spans/s");
    }
    println!(
        "trace by ID, no time hint ({} traces, HTTP API): first lookup of each p50 {t50:.1} ms, p99 {t99:.1} ms; \
         again (rows' pages cached) p50 {w50:.1} ms, p99 {w99:.1} ms",
        ids.len()
    );
    println!(
        "needle full-text search over all logs: first run {needle_first:.1} ms (decodes the hits' pages), p50 of 21 runs {n50:.1} ms (rows cached; {found} found)"
    );
    for (i, (trace, needle)) in cold.iter().enumerate() {
        println!(
            "cold (restarted, empty disk cache), round {}: first trace lookup {trace:.1} ms, then first needle search {needle:.1} ms",
            i + 1
        );
    }
    println!("same needle as SQL LIKE scan: p50 {l50:.0} ms; index / scan = 1 / {:.0}", l50 / n50);
    println!("services RED over 1 hour ({services} services, {requests} entry spans): p50 {r50:.0} ms");
    println!("error spans by service (SQL over 24 h): p50 {e50:.1} ms");
    println!("logs of one trace (log search, trace filter, {} traces): p50 {tl50:.1} ms", log_traces.len());
    for (what, server, total) in pages {
        println!("UI page {what}: p50 {server:.1} ms rendered on the server, {total:.1} ms round trip");
    }
    if data > 0 {
        print_bytes(&tmp, &a, (data, index, span_data, span_index))?;
    } else {
        println!("(no segments on local disk: bytes per record are measured on a local store only)");
    }
    if a.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// Bytes on the local disk per record: `sizes` is (log data, log index, span data, span
/// index), then metric points and where the full-text index's bytes go.
fn print_bytes(tmp: &Path, a: &SearchArgs, sizes: (u64, u64, u64, u64)) -> anyhow::Result<()> {
    let (data, index, span_data, span_index) = sizes;
    let (logs_dir, spans_dir) = (tmp.join("data/segments/default/logs"), tmp.join("data/segments/default/spans"));
    println!(
        "on disk per log record: {:.1} B data (Parquet) + {:.1} B index (tantivy)",
        data as f64 / a.logs as f64,
        index as f64 / a.logs as f64
    );
    println!(
        "on disk per span: {:.1} B data + {:.1} B trace-ID index",
        span_data as f64 / a.spans as f64,
        span_index as f64 / a.spans as f64
    );
    let tid = |dir: &Path| bytes_where(dir, &|p| p.extension().is_some_and(|e| e == "tid"));
    println!(
        "  of which trace-ID index files (.tid): {:.1} B per log record, {:.1} B per span",
        tid(&logs_dir) as f64 / a.logs as f64,
        tid(&spans_dir) as f64 / a.spans as f64
    );
    let metrics_dir = tmp.join("data/segments/default/metrics");
    let metric_data = bytes_where(&metrics_dir, &|p| p.extension().is_some_and(|e| e == "parquet"));
    let points = a.series * a.ticks;
    let samples: u64 = (0..a.series).map(samples_per_point).sum::<u64>() * a.ticks;
    if points > 0 {
        println!(
            "on disk per metric point: {:.2} B ({} series × {} points); per Prometheus-equivalent sample: {:.2} B ({samples} samples: histogram buckets, sum and count apart)",
            metric_data as f64 / points as f64,
            a.series,
            a.ticks,
            metric_data as f64 / samples as f64
        );
    }
    let mut idx_dirs = Vec::new();
    collect_dirs(&logs_dir, &mut idx_dirs);
    let usage = tracelight_index::space_usage(&idx_dirs)?;
    println!("where the log full-text index's bytes go (per log record):");
    for (what, bytes) in usage.iter().take(12) {
        println!("  {:>6.2} B  {what}", *bytes as f64 / a.logs as f64);
    }
    Ok(())
}
