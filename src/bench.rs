//! `tracelight bench ingest`: drives a real server's OTLP/gRPC endpoint with concurrent
//! clients sending realistic, pre-encoded requests (so client-side encoding does not compete
//! for the CPU), with durability on, and reports acknowledged items per second, latency, the
//! decode-only rate of the same payloads measured in the same run, and bytes on disk per item.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use prost::Message;
use tonic::transport::Channel;
use tracelight_collector::decode::{self, DecodeContext, Format, ItemLimits};
use tracelight_collector::grpc::RawCodec;
use tracelight_collector::synth::{self, Rng};
use tracelight_model::Tenant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable ingest throughput over OTLP/gRPC, against a server it starts (or --endpoint).
    Ingest(IngestArgs),
    /// Trace-by-ID, full-text, LIKE-scan and services-RED latency over N spans and N logs.
    Search(crate::bench_search::SearchArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum SignalArg {
    Spans,
    Logs,
    Metrics,
}

impl From<SignalArg> for tracelight_model::Signal {
    fn from(s: SignalArg) -> Self {
        match s {
            SignalArg::Spans => tracelight_model::Signal::Spans,
            SignalArg::Logs => tracelight_model::Signal::Logs,
            SignalArg::Metrics => tracelight_model::Signal::Metrics,
        }
    }
}

#[derive(Args)]
pub struct IngestArgs {
    /// What to send.
    #[arg(long, value_enum, default_value = "spans")]
    signal: SignalArg,
    /// Items (spans, log records, points) per export request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long to measure, after a warm-up of 5 s. A rate is only a throughput when the run
    /// is long enough for flushes to keep up with it: keep it at a minute or more.
    #[arg(long, default_value = "60s")]
    duration: String,
    /// Distinct pre-encoded requests to cycle through (1,024 × 1,000 items: a million
    /// distinct items, so no flushed segment holds the same item twice).
    #[arg(long, default_value_t = 1024)]
    payloads: usize,
    /// An already running server's OTLP/gRPC address; without it a server is started on a
    /// temporary data directory (and its memory and bytes on disk are measured).
    #[arg(long)]
    endpoint: Option<String>,
    /// Extra `serve` arguments for the servers the bench starts (e.g. `--config FILE`, or
    /// `--storage-url s3://… --catalog-url postgres://…` for ingesters over object storage).
    #[arg(long, allow_hyphen_values = true, num_args = 1..)]
    serve_args: Vec<String>,
    /// Servers to start (1–8), each with its own data directory and WAL and the node ID
    /// `bench-<n>`; the clients are spread over them. More than one needs a shared catalog
    /// (`--serve-args --catalog-url postgres://…`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    ingesters: u8,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(a) => ingest(a).await,
        BenchCommand::Search(a) => crate::bench_search::search(a).await,
    }
}

fn payloads(a: &IngestArgs) -> Vec<Bytes> {
    let mut rng = Rng::new(42);
    // Recent, so that the server's accepted window (ingest.accept_past) takes them.
    let t0 = tracelight_model::time::now_ns() as u64 - 3_600_000_000_000;
    (0..a.payloads)
        .map(|i| {
            let t = t0 + i as u64 * 1_000_000_000;
            Bytes::from(match a.signal {
                SignalArg::Spans => synth::traces(&mut rng, a.batch, t).encode_to_vec(),
                SignalArg::Logs => synth::logs(&mut rng, a.batch, t).encode_to_vec(),
                SignalArg::Metrics => synth::metrics(&mut rng, a.batch, t).encode_to_vec(),
            })
        })
        .collect()
}

/// Items per second of decode → Arrow on one thread, over the same payloads.
fn decode_only_rate(signal: SignalArg, payloads: &[Bytes]) -> f64 {
    let ctx = DecodeContext {
        tenant: Tenant::default(),
        now_ns: tracelight_model::time::now_ns(),
        limits: ItemLimits::default(),
    };
    let started = Instant::now();
    let mut items = 0u64;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(3) || i < payloads.len() {
        let p = &payloads[i % payloads.len()];
        let d = decode::decode(signal.into(), p, Format::Protobuf, &ctx).expect("synthetic payloads decode");
        items += d.batch.num_rows() as u64;
        i += 1;
    }
    items as f64 / started.elapsed().as_secs_f64()
}

pub struct Spawned {
    pub child: Child,
    pub dir: PathBuf,
    pub grpc: String,
    pub http: String,
}

/// Starts `tracelight serve` on `dir/data` with loopback listeners on free ports, plus `extra`
/// arguments; its log goes to `dir/server.log`.
pub fn spawn_server_with(dir: &Path, extra: &[String]) -> anyhow::Result<Spawned> {
    spawn_node(dir, extra, None)
}

/// [`spawn_server_with`], as node `node` when given (`TRACELIGHT_NODE_ID`).
pub fn spawn_node(dir: &Path, extra: &[String], node: Option<&str>) -> anyhow::Result<Spawned> {
    let exe = std::env::current_exe()?;
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut command = Command::new(exe);
    if let Some(node) = node {
        command.env("TRACELIGHT_NODE_ID", node);
    }
    let mut child = command
        .args([
            "serve",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .context("start the server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_string);
    match (field("otlp_grpc="), field("http=")) {
        (Some(grpc), Some(http)) => Ok(Spawned { child, dir: dir.to_path_buf(), grpc, http }),
        _ => {
            let _ = child.kill();
            bail!("server did not start: {line} (see {})", dir.join("server.log").display())
        }
    }
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`); 0 when unreadable.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Whether a file under the storage root belongs to an index: a `.tid` file or a file inside a
/// tantivy `.idx` directory.
pub fn is_index_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "tid")
        || p.components().any(|c| c.as_os_str().to_string_lossy().ends_with(".idx"))
}

/// Bytes of the files under `p` (recursively) that `keep` accepts.
pub fn bytes_where(p: &Path, keep: &dyn Fn(&Path) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                bytes_where(&p, keep)
            } else if keep(&p) {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

/// What the clients saw, shared between them.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    /// Refusals by reason (the status message with its numbers blanked out).
    refused: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Client time spent waiting before a retry, in microseconds.
    backoff_us: AtomicU64,
}

/// A refusal's reason without its numbers, so that refusals of one kind count together.
fn reason_key(message: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in message.chars().take(120) {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

const WARM_UP: Duration = Duration::from_secs(5);

async fn ingest(a: IngestArgs) -> anyhow::Result<()> {
    let duration = tracelight_model::time::parse_duration(&a.duration)?;
    if duration < Duration::from_secs(60) {
        eprintln!("note: a run shorter than 60 s measures a burst, not a sustained rate");
    }
    eprintln!("generating {} distinct requests of {} {:?}...", a.payloads, a.batch, a.signal);
    let payloads = Arc::new(payloads(&a));
    let wire: usize = payloads.iter().map(|p| p.len()).sum();
    let wire_per_item = wire as f64 / (a.payloads * a.batch) as f64;
    eprintln!("  {wire_per_item:.0} protobuf bytes per item");
    eprintln!("measuring decode-only rate (one thread, same payloads)...");
    let decode_rate = decode_only_rate(a.signal, &payloads);

    let tmp = std::env::temp_dir().join(format!("tracelight-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut servers = Vec::new();
    if a.endpoint.is_none() {
        for n in 0..a.ingesters {
            let node = (a.ingesters > 1).then(|| format!("bench-{n}"));
            servers.push(spawn_node(&tmp.join(format!("n{n}")), &a.serve_args, node.as_deref())?);
        }
    }
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let endpoints = match &a.endpoint {
        Some(e) => vec![e.clone()],
        None => servers.iter().map(|s| s.grpc.clone()).collect(),
    };
    let mut channels = Vec::new();
    for e in &endpoints {
        channels.push(Channel::from_shared(format!("http://{e}"))?.connect().await.context("connect to the server")?);
    }
    let path = match a.signal {
        SignalArg::Spans => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        SignalArg::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        SignalArg::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    };
    let item = match a.signal {
        SignalArg::Spans => "spans",
        SignalArg::Logs => "log records",
        SignalArg::Metrics => "points",
    };

    let tally = Arc::new(Tally::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (ch, payloads, tally, measuring, stop) =
            (channels[c % channels.len()].clone(), payloads.clone(), tally.clone(), measuring.clone(), stop.clone());
        let batch = a.batch as u64;
        tasks.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(ch);
            // (attempt that succeeded, first attempt to acknowledgement), in µs.
            let mut latencies: Vec<(u32, u32)> = Vec::new();
            let mut i = c;
            'requests: while !stop.load(Ordering::Relaxed) {
                let body = payloads[i % payloads.len()].clone();
                i += a_prime(payloads.len());
                let first = Instant::now();
                let mut backoff = Duration::from_millis(50);
                // An exporter retries a refused request until it is taken: that time counts
                // against the rate, the refusal itself is not a failure.
                loop {
                    let t = Instant::now();
                    if grpc.ready().await.is_err() {
                        break 'requests;
                    }
                    let path = http::uri::PathAndQuery::from_static(path);
                    match grpc.unary(tonic::Request::new(body.clone()), path, RawCodec).await {
                        Ok(_) => {
                            if measuring.load(Ordering::Relaxed) {
                                tally.acked.fetch_add(batch, Ordering::Relaxed);
                                latencies.push((t.elapsed().as_micros() as u32, first.elapsed().as_micros() as u32));
                            }
                            break;
                        }
                        Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted) => {
                            if measuring.load(Ordering::Relaxed) {
                                *tally.refused.lock().entry(reason_key(s.message())).or_default() += 1;
                                tally.backoff_us.fetch_add(backoff.as_micros() as u64, Ordering::Relaxed);
                            }
                            if stop.load(Ordering::Relaxed) {
                                break 'requests;
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                        Err(s) => {
                            eprintln!("client {c}: {s}");
                            break 'requests;
                        }
                    }
                }
            }
            latencies
        }));
    }

    // Progress every 10 s, and the servers' memory every second.
    let rss_now = || pids.iter().map(|p| proc_status_bytes(*p, "VmRSS")).sum::<u64>();
    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (mut rss_max, mut rss_sum, mut rss_n) = (0u64, 0u64, 0u64);
    let mut last = (0u64, Instant::now());
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1).min(duration.saturating_sub(started.elapsed()))).await;
        if !pids.is_empty() {
            let rss = rss_now();
            rss_max = rss_max.max(rss);
            rss_sum += rss;
            rss_n += 1;
        }
        if last.1.elapsed() >= Duration::from_secs(10) {
            let acked = tally.acked.load(Ordering::Relaxed);
            let refused: u64 = tally.refused.lock().values().sum();
            eprintln!(
                "  {:>4.0} s: {:.0} {item}/s over the last 10 s, {refused} refusals so far, server RSS {} MiB",
                started.elapsed().as_secs_f64(),
                (acked - last.0) as f64 / last.1.elapsed().as_secs_f64(),
                rss_now() >> 20,
            );
            last = (acked, Instant::now());
        }
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let pct = |v: &mut Vec<u32>, p: f64| {
        v.sort_unstable();
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1000.0
    };
    let mut attempt: Vec<u32> = latencies.iter().map(|l| l.0).collect();
    let mut whole: Vec<u32> = latencies.iter().map(|l| l.1).collect();
    let total = tally.acked.load(Ordering::Relaxed);
    let rate = total as f64 / elapsed;
    let refused = tally.refused.lock().clone();
    println!(
        "sustained durable ingest: {rate:.0} {item}/s ({total} acknowledged in {elapsed:.0} s after a {} s warm-up; \
         {} clients, {} {item} per request, {wire_per_item:.0} protobuf bytes per item, fsync on)",
        WARM_UP.as_secs(),
        a.clients,
        a.batch
    );
    println!(
        "request latency: p50 {:.1} ms, p99 {:.1} ms per accepted attempt; p50 {:.1} ms, p99 {:.1} ms from first attempt to acknowledgement",
        pct(&mut attempt, 0.5),
        pct(&mut attempt, 0.99),
        pct(&mut whole, 0.5),
        pct(&mut whole, 0.99),
    );
    let client_seconds = a.clients as f64 * elapsed;
    println!(
        "refused and retried: {} requests; clients spent {:.1}% of their time backing off",
        refused.values().sum::<u64>(),
        100.0 * tally.backoff_us.load(Ordering::Relaxed) as f64 / 1e6 / client_seconds
    );
    for (reason, n) in &refused {
        println!("  {n:>8} × {reason}");
    }
    println!("decode-only (one thread): {decode_rate:.0} {item}/s; durable / decode-only = {:.2}", rate / decode_rate);
    if let Some(mean) = rss_sum.checked_div(rss_n) {
        let together = if pids.len() > 1 { format!(" ({} servers together)", pids.len()) } else { String::new() };
        println!(
            "server RSS while measured{together}: mean {} MiB, max {} MiB (sampled each second)",
            mean >> 20,
            rss_max >> 20
        );
    }

    if !servers.is_empty() {
        let ingested = report_servers(&servers, &a, item, elapsed).await?;
        for s in servers {
            let peak = proc_status_bytes(s.child.id(), "VmHWM");
            stop_server(s.child)?;
            println!("server {} peak RSS (VmHWM, whole run): {} MiB", s.dir.display(), peak >> 20);
        }
        let segments = tmp.join("n0/data/segments");
        let data = bytes_where(&segments, &|p| p.extension().is_some_and(|e| e == "parquet"));
        let index = bytes_where(&segments, &is_index_file);
        if a.ingesters == 1 && ingested > 0.0 && data > 0 {
            println!(
                "on local disk after the final flush: {:.1} B data + {:.1} B index per {}",
                data as f64 / ingested,
                index as f64 / ingested,
                item.trim_end_matches('s'),
            );
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// What the servers the bench started say about the run: flush time, and (once every head has
/// been flushed) the WAL and segment bytes written per item, the segment bytes being what went
/// to the store (Parquet and index; uploads on object storage).
async fn report_servers(servers: &[Spawned], a: &IngestArgs, item: &str, elapsed: f64) -> anyhow::Result<f64> {
    let scrape = |http: &str| {
        let url = format!("http://{http}/metrics");
        async move { anyhow::Ok(reqwest::get(url).await?.text().await?) }
    };
    let mut texts = Vec::new();
    for s in servers {
        let waited = Instant::now();
        let mut text = scrape(&s.http).await?;
        // The load has stopped: wait for the flush interval to empty each head.
        while metric_sum(&text, "tracelight_head_bytes") > 0.0 && waited.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            text = scrape(&s.http).await?;
        }
        if metric_sum(&text, "tracelight_head_bytes") > 0.0 {
            eprintln!("note: {} still has unflushed data after 120 s", s.dir.display());
        }
        texts.push(text);
    }
    let metric = |name: &str| texts.iter().map(|t| metric_sum(t, name)).sum::<f64>();
    let (flushes, flush_s) = (metric("tracelight_flush_seconds_count"), metric("tracelight_flush_seconds_sum"));
    if flushes > 0.0 {
        println!(
            "flushes: {flushes:.0}, mean {:.2} s each, {:.0}% of the run spent flushing (per server)",
            flush_s / flushes,
            100.0 * flush_s / (elapsed + WARM_UP.as_secs_f64()) / servers.len() as f64
        );
    }
    let ingested = metric("tracelight_ingested_items_total");
    if ingested > 0.0 {
        println!(
            "written per {}: WAL {:.1} B, segments (Parquet + index, uploaded on object storage) {:.1} B \
             ({ingested:.0} {item} in all, warm-up and retries included; the payloads repeat every {} items)",
            item.trim_end_matches('s'),
            metric("tracelight_wal_appended_bytes_total") / ingested,
            metric("tracelight_segment_bytes_written_total") / ingested,
            a.payloads * a.batch
        );
    }
    Ok(ingested)
}

/// A stride through the payloads that visits all of them (coprime with `n`).
fn a_prime(n: usize) -> usize {
    [7, 11, 13, 17, 19, 23].into_iter().find(|p| !n.is_multiple_of(*p)).unwrap_or(1)
}

pub fn stop_server(mut child: Child) -> anyhow::Result<()> {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    let status = child.wait()?;
    if !status.success() {
        bail!("server exited with {status}");
    }
    Ok(())
}

/// The sum over all label sets of metric `name` in a `/metrics` text (0 when absent).
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
