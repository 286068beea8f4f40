//! The `tracelight` binary: parses the command line and wires the crates together.

mod bench;
mod bench_search;
mod client;
mod cluster;
mod config;
mod peers;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

// Ingest allocates and frees many short-lived buffers per request (protobuf strings, Arrow
// builders, Parquet pages); under glibc malloc a third of the server's CPU went to the
// allocator (perf, `tracelight bench ingest`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// OpenTelemetry backend in one binary: OTLP ingest of traces, logs and metrics, stored in
/// Parquet and queried with SQL.
#[derive(Parser)]
#[command(name = "tracelight", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: OTLP on 4317 (gRPC) and 4318 (HTTP), UI and API on 4319.
    Serve(ServeArgs),
    /// Run SQL against a running server, e.g. `tracelight query "SELECT service_name, count(*) FROM spans GROUP BY 1"`.
    Query(QueryArgs),
    /// Search logs on a running server, newest first, e.g. `tracelight logs 'payment AND timeout' --since 1h`.
    Logs(LogsArgs),
    /// Print a trace as an indented span tree with durations, then its logs: `tracelight trace <trace-id>`.
    Trace(TraceArgs),
    /// Apply catalog migrations (serve also does this at start-up) and exit.
    Migrate(ServeArgs),
    /// Benchmarks against a real server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Config file (TOML); see deploy/tracelight.example.toml. Optional.
    #[arg(long, short = 'c', env = "TRACELIGHT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (WAL, segments, SQLite catalog) [default: ./tracelight-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Catalog URL: sqlite://PATH or postgres://USER@HOST/DB [default: SQLite in the data directory].
    #[arg(long)]
    catalog_url: Option<String>,
    /// Segment storage: file://PATH or s3://BUCKET/PREFIX [default: the data directory's segments/].
    /// S3 settings: the [storage] config section or AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP.
    #[arg(long)]
    storage_url: Option<String>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317]; port 0 picks a free port.
    #[arg(long)]
    otlp_grpc: Option<String>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long)]
    otlp_http: Option<String>,
    /// UI + API listen address [default: 127.0.0.1:4319].
    #[arg(long)]
    http: Option<String>,
    /// What this node does: all (a single node), or any of ingest (OTLP, WAL, flush), query
    /// (API, UI, SQL, search), compact (compaction, retention, janitor), alert (SLOs and
    /// notifications); comma-separated or repeated.
    #[arg(long = "role", env = "TRACELIGHT_ROLE", value_delimiter = ',', default_value = "all")]
    role: Vec<String>,
}

impl ServeArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("TRACELIGHT_")).collect();
        let flags = Overrides {
            data_dir: self.data_dir.clone(),
            catalog_url: self.catalog_url.clone(),
            storage_url: self.storage_url.clone(),
            otlp_grpc: self.otlp_grpc.clone(),
            otlp_http: self.otlp_http.clone(),
            http: self.http.clone(),
        };
        Config::load(self.config.as_deref(), &env, &flags)
    }
}

#[derive(Args)]
struct QueryArgs {
    /// The SQL (tables: spans, logs, metrics).
    sql: String,
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:4319", env = "TRACELIGHT_SERVER")]
    server: String,
    /// Print the JSON response instead of a table.
    #[arg(long)]
    json: bool,
    /// Only rows at or after this time (RFC 3339 or Unix ns).
    #[arg(long)]
    start: Option<String>,
    /// Only rows before this time (RFC 3339 or Unix ns).
    #[arg(long)]
    end: Option<String>,
    /// Only the last DURATION (e.g. 15m, 1h, 7d); shorthand for --start.
    #[arg(long, conflicts_with = "start")]
    since: Option<String>,
    /// API bearer token.
    #[arg(long, env = "TRACELIGHT_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct ClientArgs {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:4319", env = "TRACELIGHT_SERVER")]
    server: String,
    /// API bearer token.
    #[arg(long, env = "TRACELIGHT_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the JSON response.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LogsArgs {
    /// Full-text query: words (all must match), "phrases", AND/OR/NOT, field:value with fields
    /// body, attributes.<key>, service, severity, trace_id. Empty: every record.
    #[arg(default_value = "")]
    query: String,
    /// How far back to search (e.g. 15m, 1h, 7d).
    #[arg(long, default_value = "1h")]
    since: String,
    /// Only these services (repeat the flag for several).
    #[arg(long)]
    service: Vec<String>,
    /// Only these severities, comma-separated (TRACE, DEBUG, INFO, WARN, ERROR, FATAL).
    #[arg(long)]
    severity: Option<String>,
    /// Records to print at most.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue after a previous page (printed at its end).
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct TraceArgs {
    /// The trace ID: 32 hex digits, any case.
    trace_id: String,
    #[command(flatten)]
    client: ClientArgs,
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let config = args.load()?;
                let roles = cluster::Roles::parse(&args.role)?;
                init_logging(&config.log_level);
                serve::run(config, roles).await
            }
            Command::Migrate(args) => {
                let config = args.load()?;
                init_logging(&config.log_level);
                let catalog = tracelight_storage::Catalog::connect(&config.catalog_url()).await?;
                let applied = catalog.migrate().await?;
                if applied.is_empty() {
                    println!("catalog {} is up to date", catalog.display_url());
                } else {
                    println!("applied to {}: {}", catalog.display_url(), applied.join(", "));
                }
                Ok(())
            }
            Command::Query(q) => {
                let start = match &q.since {
                    Some(d) => {
                        let d = tracelight_model::time::parse_duration(d)?;
                        Some((tracelight_model::time::now_ns() - d.as_nanos() as i64).to_string())
                    }
                    None => q.start.clone(),
                };
                client::query(&q.server, &q.sql, start, q.end.clone(), q.token.as_deref(), q.json).await
            }
            Command::Logs(a) => {
                let args = client::LogsArgs {
                    q: &a.query,
                    since: &a.since,
                    services: &a.service,
                    severity: a.severity.as_deref(),
                    limit: a.limit,
                    cursor: a.cursor.as_deref(),
                };
                client::logs(&a.client.server, &args, a.client.token.as_deref(), a.client.json).await
            }
            Command::Trace(a) => {
                client::trace(&a.client.server, &a.trace_id, a.client.token.as_deref(), a.client.json).await
            }
            Command::Bench(b) => {
                init_logging("warn");
                bench::run(b).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
