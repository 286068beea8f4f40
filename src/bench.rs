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
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// How long to send, after a one-second warm-up.
    #[arg(long, default_value = "15s")]
    duration: String,
    /// Distinct pre-encoded requests to cycle through.
    #[arg(long, default_value_t = 128)]
    payloads: usize,
    /// An already running server's OTLP/gRPC address; without it a server is started on a
    /// temporary data directory (and bytes on disk are measured).
    #[arg(long)]
    endpoint: Option<String>,
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

pub fn spawn_server(dir: &Path) -> anyhow::Result<Spawned> {
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut child = Command::new(exe)
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
            bail!("server did not start: {line}")
        }
    }
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

async fn ingest(a: IngestArgs) -> anyhow::Result<()> {
    let duration = tracelight_model::time::parse_duration(&a.duration)?;
    eprintln!("generating {} distinct requests of {} {:?}...", a.payloads, a.batch, a.signal);
    let payloads = Arc::new(payloads(&a));
    let wire: usize = payloads.iter().map(|p| p.len()).sum();
    eprintln!("  {:.0} protobuf bytes per item", wire as f64 / (a.payloads * a.batch) as f64);
    eprintln!("measuring decode-only rate (one thread, same payloads)...");
    let decode_rate = decode_only_rate(a.signal, &payloads);

    let tmp = std::env::temp_dir().join(format!("tracelight-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut server = match &a.endpoint {
        Some(_) => None,
        None => Some(spawn_server(&tmp)?),
    };
    let endpoint = a.endpoint.clone().or_else(|| server.as_ref().map(|s| s.grpc.clone())).unwrap();
    let channel =
        Channel::from_shared(format!("http://{endpoint}"))?.connect().await.context("connect to the server")?;
    let path = match a.signal {
        SignalArg::Spans => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        SignalArg::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        SignalArg::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    };

    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (ch, payloads, acked, refused, measuring, stop) =
            (channel.clone(), payloads.clone(), acked.clone(), refused.clone(), measuring.clone(), stop.clone());
        let batch = a.batch as u64;
        tasks.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(ch);
            let mut latencies = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let body = payloads[i % payloads.len()].clone();
                i += 7;
                let t = Instant::now();
                if grpc.ready().await.is_err() {
                    break;
                }
                let res =
                    grpc.unary(tonic::Request::new(body), http::uri::PathAndQuery::from_static(path), RawCodec).await;
                match res {
                    Ok(_) if measuring.load(Ordering::Relaxed) => {
                        acked.fetch_add(batch, Ordering::Relaxed);
                        latencies.push(t.elapsed().as_micros() as u32);
                    }
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => {
                        eprintln!("client {c}: {s}");
                        break;
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let total = acked.load(Ordering::Relaxed);
    let rate = total as f64 / elapsed;
    let item = match a.signal {
        SignalArg::Spans => "spans",
        SignalArg::Logs => "log records",
        SignalArg::Metrics => "points",
    };
    println!(
        "durable ingest: {rate:.0} {item}/s ({total} acknowledged in {elapsed:.1} s, {} clients, {} per request)",
        a.clients, a.batch
    );
    println!(
        "request latency: p50 {:.1} ms, p99 {:.1} ms; refused (retryable): {}",
        pct(0.5) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        refused.load(Ordering::Relaxed)
    );
    println!("decode-only (one thread): {decode_rate:.0} {item}/s; durable / decode-only = {:.2}", rate / decode_rate);

    if let Some(s) = server.take() {
        let metrics = reqwest::get(format!("http://{}/metrics", s.http)).await?.text().await?;
        let appended: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tracelight_wal_appended_bytes_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        let ingested: f64 = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("tracelight_ingested_items_total{signal=\"")
                    .and_then(|r| r.split_once("} "))
                    .map(|(_, v)| v)
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        stop_server(s.child)?;
        let segments = bytes_where(&s.dir.join("data/segments"), &|_| true);
        // Index directories are part of this figure; `bench search` reports them apart.
        if ingested > 0.0 {
            println!(
                "on disk after flush: {:.1} bytes per {} in Parquet ({} bytes for {} {item}); WAL wrote {:.1} bytes per item",
                segments as f64 / ingested,
                item.trim_end_matches('s'),
                segments,
                ingested,
                appended / ingested
            );
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

pub fn stop_server(mut child: Child) -> anyhow::Result<()> {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    let status = child.wait()?;
    if !status.success() {
        bail!("server exited with {status}");
    }
    Ok(())
}
