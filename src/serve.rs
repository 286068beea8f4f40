//! `tracelight serve`: wires the stages together and runs them until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracelight_alerts::{Channel, Notifier, Route, SloEngine};
use tracelight_collector::decode::ItemLimits;
use tracelight_collector::{IngestConfig, Ingestor, Wal, WalOptions};
use tracelight_engine::{Engine, EngineConfig, SegmentIndexBuilder};
use tracelight_model::peers::{NoPeers, Peers};
use tracelight_model::slo::SloStore;
use tracelight_model::telemetry::Registry;
use tracelight_storage::{Catalog, Compactor, Flusher, Head, HeadConfig, Leadership, SegmentStore};
use tracelight_web::{AppState, Readiness};

use crate::cluster::Roles;
use crate::config::Config;

struct Ready {
    /// The WAL and flusher of an `ingest` node.
    ingest: Option<(Wal, Arc<Flusher>)>,
    stopping: Arc<AtomicBool>,
}

impl Readiness for Ready {
    fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        let Some((wal, flusher)) = &self.ingest else { return Ok(()) };
        if !wal.healthy() {
            return Err("the write-ahead log failed; ingest is stopped until restart".into());
        }
        flusher.healthy()
    }
}

/// The addresses actually bound (port 0 resolved); no OTLP listeners without `ingest`.
#[derive(Debug, Clone)]
pub struct Bound {
    pub otlp_grpc: Option<SocketAddr>,
    pub otlp_http: Option<SocketAddr>,
    pub http: SocketAddr,
}

fn shown(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_string(), |a| a.to_string())
}

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr}"))
}

pub async fn run(config: Config, roles: Roles) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let registry = Registry::new();

    let catalog = Catalog::connect(&config.catalog_url()).await?;
    let applied = catalog.migrate().await?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "catalog migrated");
    }
    let store = open_store(&config, &registry).await?;

    let head = Arc::new(Head::new(
        HeadConfig {
            max_bytes: config.head.max_bytes,
            flush_rows: config.head.flush_rows,
            max_partitions: config.head.max_partitions,
        },
        &registry,
    ));
    let checkpoint = catalog.wal_checkpoint(&config.node_id).await?;
    let (past, future) = config.accept_window()?;
    let item_limits = ItemLimits {
        max_attribute_key_bytes: config.ingest.max_attribute_key_bytes,
        max_attribute_value_bytes: config.ingest.max_attribute_value_bytes,
        max_attributes: config.ingest.max_attributes,
        max_body_bytes: config.ingest.max_log_body_bytes,
        max_past_ns: Some(i64::try_from(past.as_nanos()).unwrap_or(i64::MAX)),
        max_future_ns: Some(i64::try_from(future.as_nanos()).unwrap_or(i64::MAX)),
        // Resource attributes repeated on every item may expand a request at most 4-fold.
        max_repeated_bytes: config.ingest.max_request_bytes.saturating_mul(4),
    };
    let wal_opts = WalOptions {
        dir: config.data_dir.join("wal"),
        segment_bytes: config.wal.segment_bytes,
        max_group_bytes: 8 << 20,
        fsync: config.wal.fsync,
        limits: item_limits.clone(),
        // Tests of a failed fsync on the real binary set it; never in production.
        fail_fsync_from_group: std::env::var("TRACELIGHT_FAULT_FAIL_FSYNC_GROUP").ok().and_then(|v| v.parse().ok()),
    };
    // The WAL, its replay and the flusher only on an `ingest` node; elsewhere the head stays
    // empty.
    let ingest = if roles.ingest {
        Some(open_ingest(&config, &registry, &catalog, &store, &head, wal_opts, checkpoint)?)
    } else {
        None
    };

    let engine = Engine::new(
        catalog.clone(),
        head.clone(),
        store.clone(),
        config.node_id.clone(),
        EngineConfig {
            timeout: config.query_timeout()?,
            memory_limit: config.query.memory_limit_bytes,
            max_result_rows: config.query.max_result_rows,
            threads: config.query.threads,
            max_search_range: config.max_search_range()?,
            max_page: config.query.max_page,
            max_result_bytes: config.query.max_result_bytes,
        },
        &registry,
    )?;
    // Crash tests widen the window between reading the heads and listing the catalog.
    let engine = engine.with_pause_after_heads(fault_pause("TRACELIGHT_FAULT_PAUSE_AFTER_HEADS_MS"));
    // The other ingesters' heads (rows not flushed yet), read by queries and asked where they
    // begin by the compactor; on SQLite this process is the only node.
    let peers: Option<Arc<dyn Peers>> = if catalog.is_postgres() {
        Some(Arc::new(crate::peers::HttpPeers::new(
            catalog.clone(),
            config.node_id.clone(),
            config.auth()?.cluster_token().map(str::to_string),
            config.cluster.peer_timeout()?,
            config.cluster.max_answer_bytes,
            &registry,
        )?))
    } else {
        None
    };
    let engine = Arc::new(match &peers {
        // Queries and SLO evaluation count what the ingesters hold too.
        Some(p) if roles.query || roles.alert => engine.with_peers(p.clone()),
        _ => engine,
    });
    let auth = Arc::new(config.auth()?);
    if !config.ingest.tokens.is_empty() || !config.api.tokens.is_empty() {
        tracing::warn!(
            "ingest.tokens and api.tokens are deprecated: they cover every tenant (ingest: the ingest scope; \
             api: read and admin). Use [[auth.tokens]] with tenants and scopes."
        );
    }
    if auth.is_open() {
        tracing::warn!("no tokens are configured: anyone who can reach the listeners may write and read every tenant");
    }
    let ingest_config = IngestConfig {
        max_request_bytes: config.ingest.max_request_bytes,
        item_limits,
        auth: auth.clone(),
        max_wal_bytes: config.wal.max_bytes,
        max_receiving_bytes: config.ingest.max_receiving_bytes,
        receive_timeout: config.receive_timeout()?,
    };
    // OTLP receivers only on an `ingest` node.
    let receivers = match &ingest {
        Some((wal, _)) => {
            let ingestor = Arc::new(Ingestor::new(wal.clone(), head.clone(), ingest_config, &registry));
            let grpc_l = bind("OTLP/gRPC", &config.listen.otlp_grpc).await?;
            let http_l = bind("OTLP/HTTP", &config.listen.otlp_http).await?;
            Some((ingestor, grpc_l, http_l))
        }
        None => None,
    };
    let api_l = bind("the UI and API", &config.listen.http).await?;
    let bound = Bound {
        otlp_grpc: receivers.as_ref().map(|r| r.1.local_addr()).transpose()?,
        otlp_http: receivers.as_ref().map(|r| r.2.local_addr()).transpose()?,
        http: api_l.local_addr()?,
    };

    let stopping = Arc::new(AtomicBool::new(false));
    let channels = config
        .notify
        .iter()
        .map(|n| Ok(Route { name: n.name.clone(), kind: n.kind.parse()? }))
        .collect::<Result<Vec<_>, tracelight_alerts::AlertError>>()?;
    let slos = Arc::new(SloEngine::new(
        config.slo_specs()?,
        Some(Arc::new(catalog.clone()) as Arc<dyn SloStore>),
        engine.clone(),
        channels,
        config.public_url(),
    ));
    let state = AppState {
        query: engine.clone(),
        registry: registry.clone(),
        readiness: Arc::new(Ready { ingest: ingest.clone(), stopping: stopping.clone() }),
        auth,
        allowed_hosts: Arc::new(config.api.allowed_hosts.clone()),
        slos: slos.clone(),
        cluster: Arc::new(crate::cluster::Registry(catalog.clone())),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // The flusher stops after the listeners, so its final flush covers every request that was
    // still in flight when shutdown began.
    let (flusher_stop_tx, flusher_stop_rx) = watch::channel(false);
    let until_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let flusher_task = ingest.as_ref().map(|(_, flusher)| tokio::spawn(flusher.clone().run(flusher_stop_rx)));
    let advertise =
        if config.cluster.advertise.is_empty() { bound.http.to_string() } else { config.cluster.advertise.clone() };
    if config.cluster.advertise.is_empty() && bound.http.ip().is_unspecified() && catalog.is_postgres() {
        tracing::warn!(
            "the API listens on {} and cluster.advertise is not set: other nodes cannot reach this one \
             (set cluster.advertise to an address they can)",
            bound.http
        );
    }
    let started_ns = tracelight_model::time::now_ns();
    let me = tracelight_storage::NodeInfo {
        node: config.node_id.clone(),
        roles: roles.to_string(),
        advertise,
        version: env!("CARGO_PKG_VERSION").into(),
        started_at_ns: started_ns,
        heartbeat_ns: started_ns,
    };
    tokio::spawn(crate::cluster::heartbeat(catalog.clone(), me, until_stop(stop_rx.clone())));
    // Leader jobs run on one node at a time (always this one on SQLite); only nodes with the
    // job's role campaign for it.
    let campaign = |on: bool, job: &'static str| {
        if on { catalog.campaign(job, stop_rx.clone()) } else { Leadership::never(job) }
    };
    let compact_leader = campaign(roles.compact, "compact");
    let alert_leader = campaign(roles.alert, "alert");
    if let Some(period) = config.retention_period()?
        && roles.compact
    {
        tokio::spawn(retention(
            catalog.clone(),
            compact_leader.clone(),
            period,
            config.retention_check_interval()?,
            until_stop(stop_rx.clone()),
        ));
    }
    if roles.compact {
        // Retired segments outlive their last listing by more than the longest query.
        let times = config.janitor_times()?;
        let forget = engine.clone();
        let janitor = Arc::new(
            tracelight_storage::Janitor::new(catalog.clone(), store.clone(), times.grace, &registry)
                .with_staged_grace(times.staged_grace)
                .with_leadership(compact_leader.clone())
                .with_on_removed(Arc::new(move |paths: &[String]| forget.forget_segments(paths))),
        );
        tokio::spawn(janitor.run(times.interval, stop_rx.clone()));
    }
    if config.compaction.enabled && roles.compact {
        let compactor = Arc::new(
            Compactor::new(
                catalog.clone(),
                store.clone(),
                config.node_id.clone(),
                config.compaction_config()?,
                &registry,
            )
            .with_head(head.clone())
            // A query waits for the ingesters at most twice (a second round when one failed).
            .with_peers(
                peers.clone().unwrap_or_else(|| Arc::new(NoPeers)),
                peers.as_ref().map_or(Ok(Duration::ZERO), |_| {
                    config.cluster.peer_timeout().map(|t| 2 * t + Duration::from_secs(1))
                })?,
            )
            .with_leadership(compact_leader.clone())
            .with_indexer(Arc::new(SegmentIndexBuilder))
            // Crash tests aim SIGKILL between the merged write and the catalog swap with it.
            .with_pause_before_commit(fault_pause("TRACELIGHT_FAULT_PAUSE_BEFORE_SWAP_MS")),
        );
        tokio::spawn(compactor.run(stop_rx.clone()));
    }
    if !slos.specs().is_empty() && roles.alert {
        tokio::spawn(evaluate_slos(
            slos.clone(),
            alert_leader.clone(),
            config.eval_interval()?,
            until_stop(stop_rx.clone()),
        ));
    }
    if !config.notify.is_empty() && roles.alert {
        let channels = config
            .notify
            .iter()
            .map(|n| {
                Ok(Channel {
                    name: n.name.clone(),
                    kind: n.kind.parse()?,
                    url: n.url.clone(),
                    secret: n.secret.clone(),
                })
            })
            .collect::<Result<Vec<_>, tracelight_alerts::AlertError>>()?;
        let notifier = Notifier::new(channels, config.allow_destinations()?, Arc::new(catalog.clone()), &registry)
            // Crash tests aim SIGKILL between a receiver's 2xx and the delivered mark with it.
            .with_pause_after_delivery(fault_pause("TRACELIGHT_FAULT_PAUSE_AFTER_DELIVERY_MS"));
        tokio::spawn(deliver_notifications(notifier, alert_leader.clone(), until_stop(stop_rx.clone())));
    }
    let mut listeners = Vec::new();
    if let Some((ingestor, grpc_l, http_l)) = receivers {
        let grpc = tracelight_collector::grpc::serve(ingestor.clone(), grpc_l, until_stop(stop_rx.clone()));
        let otlp_http = axum::serve(http_l, tracelight_collector::http::router(ingestor.clone()))
            .with_graceful_shutdown(until_stop(stop_rx.clone()))
            .into_future();
        listeners.push(("OTLP/gRPC", tokio::spawn(async move { report("OTLP/gRPC", grpc.await) })));
        listeners.push(("OTLP/HTTP", tokio::spawn(async move { report("OTLP/HTTP", otlp_http.await) })));
    }
    // The API stops last: while the OTLP listeners drain, probes still get an answer, and
    // `/readyz` says "shutting down" (503) instead of the connection being refused. A node
    // without the `query` role serves only probes, /metrics and the cluster list.
    let (api_stop_tx, api_stop_rx) = watch::channel(false);
    let router = if roles.query { tracelight_web::router(state) } else { tracelight_web::ops_router(state) };
    let api = axum::serve(api_l, router).with_graceful_shutdown(until_stop(api_stop_rx)).into_future();
    let api = tokio::spawn(async move { report("API", api.await) });

    tracing::info!(
        "tracelight ready in {} ms (roles {roles}): OTLP gRPC {}, OTLP HTTP {}, UI and API http://{}, data in {} (catalog {}, segments {})",
        started.elapsed().as_millis(),
        shown(bound.otlp_grpc),
        shown(bound.otlp_http),
        bound.http,
        config.data_dir.display(),
        catalog.display_url(),
        config.storage_url(),
    );

    // Tests and scripts read this line to find the chosen ports; keep its shape.
    println!(
        "tracelight listening: otlp_grpc={} otlp_http={} http={} data_dir={}",
        shown(bound.otlp_grpc),
        shown(bound.otlp_http),
        bound.http,
        config.data_dir.display()
    );
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests, then a final flush");
    stopping.store(true, Ordering::Release);
    let _ = stop_tx.send(true);
    // In-flight requests get a grace period; connections that clients keep open after it
    // (idle HTTP/2 and keep-alive connections) are closed by aborting the listener.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    for (name, mut task) in listeners {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::info!("{name}: closing connections still open after the {SHUTDOWN_GRACE:?} grace period");
            task.abort();
        }
    }
    let _ = api_stop_tx.send(true);
    let mut api = api;
    if tokio::time::timeout_at(deadline.max(tokio::time::Instant::now() + API_GRACE), &mut api).await.is_err() {
        tracing::info!("API: closing connections still open after the grace period");
        api.abort();
    }
    let _ = flusher_stop_tx.send(true);
    if let Some(task) = flusher_task {
        let _ = task.await;
    }
    // With its head flushed, query nodes need not ask it any more (nor warn that it is gone).
    // Rows left in the head (a final flush that failed) are in the WAL: it stays registered,
    // so queries say they are missing until it is back.
    if head.overlap_from_lsn() != u64::MAX {
        tracing::warn!("the head still holds rows the final flush could not write; they are in the WAL");
    } else if let Err(e) = catalog.forget_node(&config.node_id).await {
        tracing::warn!(error = %e, "cannot remove this node from the registry");
    }
    catalog.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The WAL (replayed into the head) and the flusher of an `ingest` node.
fn open_ingest(
    config: &Config,
    registry: &Registry,
    catalog: &Catalog,
    store: &SegmentStore,
    head: &Arc<Head>,
    wal_opts: WalOptions,
    checkpoint: u64,
) -> anyhow::Result<(Wal, Arc<Flusher>)> {
    let replay_started = Instant::now();
    let (wal, replay) = Wal::open(wal_opts, checkpoint, head.clone(), registry)?;
    // Segments wholly below the checkpoint were kept only because the last run stopped first.
    wal.truncate_through(checkpoint);
    tracing::info!(
        checkpoint,
        records = replay.records,
        replayed_rows = replay.rows,
        skipped = replay.skipped,
        damaged = replay.damaged,
        damaged_bytes = replay.damaged_bytes,
        ms = replay_started.elapsed().as_millis() as u64,
        "recovered write-ahead log"
    );

    let wal_for_truncate = wal.clone();
    let flusher = Arc::new(
        Flusher::new(
            head.clone(),
            catalog.clone(),
            store.clone(),
            config.node_id.clone(),
            config.flush_interval()?,
            Box::new(move |lsn| {
                wal_for_truncate.truncate_through(lsn);
            }),
            registry,
        )
        .with_indexer(Arc::new(SegmentIndexBuilder))
        // Crash tests aim SIGKILL between the Parquet write and the catalog commit with it.
        .with_pause_before_commit(fault_pause("TRACELIGHT_FAULT_PAUSE_BEFORE_COMMIT_MS")),
    );
    Ok((wal, flusher))
}

/// How long in-flight requests may take once shutdown starts.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// At least this long for API requests once the OTLP listeners have stopped.
const API_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn report<E: std::fmt::Display>(name: &str, result: Result<(), E>) {
    if let Err(e) = result {
        tracing::error!("{name} listener failed: {e}");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Deletes expired partitions every `interval` until `stop` resolves.
/// Evaluates the SLOs every `every` until `stop`.
async fn evaluate_slos(
    slos: Arc<SloEngine>,
    leader: Leadership,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => if leader.is_leader() {
                slos.tick(tracelight_model::time::now_ns()).await
            },
        }
    }
}

/// Sends due notifications from the outbox every second until `stop`.
async fn deliver_notifications(notifier: Notifier, leader: Leadership, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => if leader.is_leader() {
                notifier.deliver_due(tracelight_model::time::now_ns()).await;
            },
        }
    }
}

async fn retention(
    catalog: Catalog,
    leader: Leadership,
    period: std::time::Duration,
    interval: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let cutoff = tracelight_model::time::now_ns().saturating_sub(period.as_nanos() as i64);
        let pass = if leader.is_leader() {
            tracelight_storage::apply_retention(&catalog, cutoff).await
        } else {
            Ok(Default::default())
        };
        match pass {
            Ok(r) if r.segments > 0 => {
                tracing::info!(
                    segments = r.segments,
                    bytes = r.bytes,
                    "retention retired expired partitions (the janitor deletes them after the grace period)"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention pass failed; retrying at the next interval"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => return,
        }
    }
}

/// Opens the segment store of `storage_url`. Object storage is checked before anything is
/// written to it: a bucket that cannot be reached, or that overwrites on a create-only put,
/// stops the start with the reason.
async fn open_store(config: &Config, registry: &Registry) -> anyhow::Result<SegmentStore> {
    let location = config.storage_location()?;
    let disk = Arc::new(tracelight_storage::diskcache::DiskCache::open(
        &config.cache_dir(),
        config.cache.max_bytes,
        registry,
    )?);
    let scratch = config.data_dir.join("scratch");
    let s3 = config.storage.s3_options()?;
    let store =
        SegmentStore::open_location(&location, &s3, &scratch, disk)?.with_cache(config.query.row_cache_bytes, registry);
    store.probe(&config.node_id).await.with_context(|| format!("object storage {} is not usable", store.describe()))?;
    tracing::info!(storage = %store.describe(), "segment storage");
    Ok(store)
}

/// A crash-test fault hook: a pause in milliseconds from the environment variable `name`.
fn fault_pause(name: &str) -> Option<std::time::Duration> {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).map(std::time::Duration::from_millis)
}
