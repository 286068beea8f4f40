//! SQL over tracelight's storage with DataFusion: the only crate that links DataFusion.
//!
//! Each query gets a fresh `SessionContext` on a shared runtime (memory pool with a hard
//! limit) whose tables `spans`, `logs` and `metrics` are [`table::SignalTable`]s: catalog-pruned
//! Parquet segments ∪ the in-memory head. User SQL is read-only (no DDL, DML, `COPY` or `SET`;
//! URL tables are off), runs on a dedicated thread pool so ingest never waits on a query, and
//! is cancelled at its timeout.
//!
//! What bounds a hostile query (docs/SECURITY.md): operators allocate from the pool
//! (`memory_limit`, no spilling to disk); functions that can grow their input are bounded per
//! value, per call and for constants ([`bounded`]); recursive CTEs are off; `array_agg` and
//! `string_agg` are refused as window functions (DataFusion's window operator buffers outside
//! the pool and their output grows with the square of the frame); user SQL text is at most
//! [`MAX_SQL_BYTES`]; results stop at `max_result_rows` rows and `max_result_bytes` bytes of
//! JSON; the caller gets its answer at the timeout even while a poll is still running.

pub mod bounded;
pub mod correlate;
pub mod explore;
mod head;
pub mod json;
pub mod records;
pub mod table;
pub mod timerange;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use parking_lot::Mutex;
use tracelight_index::IndexSearch;
pub use tracelight_index::SegmentIndexBuilder;
use tracelight_model::correlate::{
    LogHistogram, LogList, LogQuery, MetricCatalog, MetricChart, MetricQuery, ServiceMap, ServiceSeries, TraceDetail,
    TraceList, TraceQuery,
};
use tracelight_model::peers::{HeadAnswer, HeadKind, HeadRequest, NoPeers, Peers};
use tracelight_model::telemetry::{Histogram, LATENCY_BUCKETS, Registry};
use tracelight_model::{QueryError, QueryRequest, QueryResult, QueryService, ScanStats, Signal, Tenant};
use tracelight_storage::{Catalog, Head, SegmentStore};

/// Query limits.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A query running longer is cancelled.
    pub timeout: Duration,
    /// Memory all running queries may hold together (joins, sorts, aggregations).
    pub memory_limit: usize,
    /// At most this many rows are returned; the result says when it was cut.
    pub max_result_rows: usize,
    /// Threads of the query pool.
    pub threads: usize,
    /// Widest time range a trace search, log search or services query may cover.
    pub max_search_range: Duration,
    /// Largest page (`limit`) of a list query.
    pub max_page: usize,
    /// A user query's result stops at this many bytes (as JSON text).
    pub max_result_bytes: usize,
}

/// Longest user SQL text: every literal in it may be copied into every row of a batch.
pub const MAX_SQL_BYTES: usize = 16 << 10;

/// Rows per batch: with [`bounded::CONST_CAP`] and [`MAX_SQL_BYTES`], what constants can cost
/// per batch once copied into every row.
const BATCH_ROWS: usize = 4096;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeout: Duration::from_secs(30),
            memory_limit: 1 << 30,
            max_result_rows: 10_000,
            threads: 2,
            max_search_range: Duration::from_secs(7 * 86_400),
            max_page: 1_000,
            max_result_bytes: 16 << 20,
        }
    }
}

/// What a table scan needs to find its data.
pub(crate) struct Sources {
    pub catalog: Catalog,
    pub head: Arc<Head>,
    pub store: SegmentStore,
    pub node: String,
    /// The other ingesters, whose heads every scan also reads.
    pub peers: Arc<dyn Peers>,
    /// A fault hook for tests: a scan waits this long between reading the heads and listing
    /// the catalog, so that flushes land in between.
    pub pause_after_heads: Option<Duration>,
}

/// The SQL engine; implements [`QueryService`].
pub struct Engine {
    sources: Arc<Sources>,
    index: Arc<IndexSearch>,
    runtime: Arc<RuntimeEnv>,
    pool: QueryPool,
    config: EngineConfig,
    query_seconds: Arc<Histogram>,
}

impl Engine {
    pub fn new(
        catalog: Catalog,
        head: Arc<Head>,
        store: SegmentStore,
        node: String,
        config: EngineConfig,
        registry: &Registry,
    ) -> Result<Engine, QueryError> {
        // No spilling: a query that needs more than the pool fails instead of filling the disk.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit)))
            .with_disk_manager_builder(
                datafusion::execution::disk_manager::DiskManagerBuilder::default()
                    .with_mode(datafusion::execution::disk_manager::DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        // Segments on object storage: DataFusion reads them through the same store, with
        // range requests.
        if let Some((url, objects)) = store.object_store() {
            let url = url::Url::parse(&url).map_err(|e| QueryError::Internal(format!("{url}: {e}")))?;
            runtime.register_object_store(&url, objects);
        }
        let pool = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("tracelight-query")
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query pool: {e}")))?;
        let pool = QueryPool(Some(pool));
        let index = Arc::new(IndexSearch::new(catalog.clone(), head.clone(), store.clone(), node.clone()));
        Ok(Engine {
            sources: Arc::new(Sources {
                catalog,
                head,
                store,
                node,
                peers: Arc::new(NoPeers),
                pause_after_heads: None,
            }),
            index,
            runtime,
            pool,
            config,
            query_seconds: registry.histogram("tracelight_query_seconds", "Duration of SQL queries.", LATENCY_BUCKETS),
        })
    }

    fn context(
        &self,
        tenant: &Tenant,
        range: timerange::TimeRange,
        stats: &Arc<Mutex<ScanStats>>,
        heads_only: bool,
    ) -> Result<SessionContext, QueryError> {
        let mut config = SessionConfig::new()
            .with_target_partitions(self.config.threads.max(1))
            .with_information_schema(false)
            .with_batch_size(BATCH_ROWS);
        config.options_mut().execution.parquet.pushdown_filters = true;
        config.options_mut().execution.parquet.bloom_filter_on_read = true;
        config.options_mut().execution.enable_recursive_ctes = false;
        config.options_mut().execution.collect_statistics = false;
        let mut ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        bounded::install(&mut ctx).map_err(|e| QueryError::Internal(e.to_string()))?;
        for signal in Signal::ALL {
            let table = table::SignalTable::new(signal, tenant.clone(), range, self.sources.clone(), stats.clone())
                .heads_only(heads_only);
            ctx.register_table(signal.table(), Arc::new(table)).map_err(|e| QueryError::Internal(e.to_string()))?;
        }
        Ok(ctx)
    }

    async fn run(&self, req: QueryRequest) -> Result<QueryResult, QueryError> {
        self.run_limited(req, self.config.max_result_rows).await
    }

    /// Runs a query returning at most `max` rows (the result says when there were more).
    async fn run_limited(&self, req: QueryRequest, max: usize) -> Result<QueryResult, QueryError> {
        self.run_bounded(req, max, usize::MAX).await
    }

    /// Runs a query returning at most `max` rows and about `max_bytes` of JSON: rows past
    /// either are left out (the result says so); a single row over `max_bytes` is an error.
    async fn run_bounded(&self, req: QueryRequest, max: usize, max_bytes: usize) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let tenant = req.tenant.clone().unwrap_or_default();
        let range = timerange::TimeRange { start_ns: req.start_ns, end_ns: req.end_ns };
        if let (Some(s), Some(e)) = (range.start_ns, range.end_ns)
            && e <= s
        {
            return Err(QueryError::Invalid(format!("empty time range: end ({e}) is not after start ({s})")));
        }
        let stats = Arc::new(Mutex::new(ScanStats::default()));
        let (schema, rows, truncated) =
            match self.execute(&tenant, range, &stats, &req.sql, max, max_bytes, false).await? {
                // The bucket cannot be read: answer from the heads, and say so.
                Err(e) if self.sources.store.object_store().is_some() && storage_failure(&e).is_some() => {
                    let why = storage_failure(&e).unwrap_or_default();
                    tracing::warn!(error = %why, "object storage unreachable; answering from the heads only");
                    *stats.lock() = ScanStats::default();
                    let answer = self.execute(&tenant, range, &stats, &req.sql, max, max_bytes, true).await?;
                    stats.lock().warn(&format!(
                    "object storage could not be read ({why}): this answer holds only the rows not yet flushed to it"
                ));
                    answer.map_err(map_error)?
                }
                other => other.map_err(map_error)?,
            };
        let columns = json::columns(&schema);
        let mut stats = stats.lock().clone();
        stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.query_seconds.observe(started.elapsed().as_secs_f64());
        Ok(QueryResult { columns, rows, truncated, stats })
    }

    /// Plans and runs `sql` on the query pool (see [`Engine::run_bounded`]); `heads_only`
    /// leaves the catalog's segments out.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        tenant: &Tenant,
        range: timerange::TimeRange,
        stats: &Arc<Mutex<ScanStats>>,
        sql: &str,
        max: usize,
        max_bytes: usize,
        heads_only: bool,
    ) -> Result<Result<Answer, DataFusionError>, QueryError> {
        let ctx = self.context(tenant, range, stats, heads_only)?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let sql = sql.to_string();
        let work = async move {
            let df = ctx.sql_with_options(&sql, options).await?;
            refuse_unbounded_windows(df.logical_plan())?;
            let df = df.limit(0, Some(max + 1))?;
            let schema = df.schema().as_arrow().clone();
            let mut stream = df.execute_stream().await?;
            let (mut rows, mut bytes, mut truncated) = (Vec::new(), 0usize, false);
            'batches: while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                let batch = batch?;
                for i in 0..batch.num_rows() {
                    if rows.len() == max {
                        truncated = true;
                        break 'batches;
                    }
                    let row: Vec<serde_json::Value> = batch.columns().iter().map(|c| json::value(c, i)).collect();
                    let size = json::encoded_len(&row);
                    if bytes + size > max_bytes {
                        if rows.is_empty() {
                            return Err(DataFusionError::ResourcesExhausted(format!(
                                "one row of the result takes {size} bytes, more than the limit of {max_bytes} \
                                 (query.max_result_bytes)"
                            )));
                        }
                        truncated = true;
                        break 'batches;
                    }
                    bytes += size;
                    rows.push(row);
                }
            }
            Ok::<_, DataFusionError>((schema, rows, truncated))
        };
        self.on_pool(work).await
    }
}

impl Engine {
    /// Reads the heads of `peers` too: every other ingester of a deployment. Call it before
    /// the engine is shared.
    pub fn with_peers(mut self, peers: Arc<dyn Peers>) -> Engine {
        let sources = Arc::get_mut(&mut self.sources).expect("with_peers before the engine is shared");
        sources.peers = peers.clone();
        Arc::get_mut(&mut self.index).expect("with_peers before the engine is shared").set_peers(peers);
        self
    }

    /// See [`Sources::pause_after_heads`] (tests only). Call it before the engine is shared.
    pub fn with_pause_after_heads(mut self, pause: Option<Duration>) -> Engine {
        Arc::get_mut(&mut self.sources)
            .expect("with_pause_after_heads before the engine is shared")
            .pause_after_heads = pause;
        self
    }

    /// The longest a query may run.
    pub fn query_timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Forgets cached index readers of segments that retention deleted.
    pub fn forget_segments(&self, paths: &[String]) {
        for p in paths {
            self.index.forget(p);
        }
    }

    /// Runs `work` on the query pool, cancelled at the query timeout. The caller is answered
    /// at the timeout even if the pool is inside a long poll: the task is aborted and stops at
    /// its next await (each step of a query is bounded, see [`bounded`]).
    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, QueryError> {
        let timeout = self.config.timeout;
        let mut handle = self.pool.handle().spawn(async move { tokio::time::timeout(timeout, work).await });
        let timed_out = || QueryError::Timeout(timeout.as_millis() as u64);
        match tokio::time::timeout(timeout + Duration::from_millis(250), &mut handle).await {
            Err(_) => {
                handle.abort();
                Err(timed_out())
            }
            Ok(Err(e)) => Err(QueryError::Internal(format!("query task failed: {e}"))),
            Ok(Ok(Err(_elapsed))) => Err(timed_out()),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }
}

#[async_trait::async_trait]
impl QueryService for Engine {
    async fn sql(&self, request: QueryRequest) -> Result<QueryResult, QueryError> {
        if request.sql.len() > MAX_SQL_BYTES {
            return Err(QueryError::Invalid(format!(
                "the SQL text is {} bytes; at most {MAX_SQL_BYTES} are accepted",
                request.sql.len()
            )));
        }
        self.run_bounded(request, self.config.max_result_rows, self.config.max_result_bytes).await
    }

    async fn trace(&self, tenant: &Tenant, trace_id: &str) -> Result<TraceDetail, QueryError> {
        self.trace_detail(tenant, trace_id).await
    }

    async fn traces(&self, query: TraceQuery) -> Result<TraceList, QueryError> {
        self.trace_search(query).await
    }

    async fn logs(&self, query: LogQuery) -> Result<LogList, QueryError> {
        self.log_search(query).await
    }

    async fn services(&self, tenant: &Tenant, start_ns: i64, end_ns: i64) -> Result<ServiceMap, QueryError> {
        self.service_map(tenant, start_ns, end_ns).await
    }

    async fn log_histogram(&self, query: LogQuery, step_ns: i64) -> Result<LogHistogram, QueryError> {
        self.histogram(query, step_ns).await
    }

    async fn service_series(
        &self,
        tenant: &Tenant,
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
    ) -> Result<ServiceSeries, QueryError> {
        self.red_series(tenant, start_ns, end_ns, step_ns).await
    }

    async fn metric_catalog(&self, tenant: &Tenant, start_ns: i64, end_ns: i64) -> Result<MetricCatalog, QueryError> {
        self.catalog_of_metrics(tenant, start_ns, end_ns).await
    }

    async fn metric_chart(&self, query: MetricQuery) -> Result<MetricChart, QueryError> {
        self.chart(query).await
    }

    async fn head(&self, request: HeadRequest) -> Result<HeadAnswer, QueryError> {
        self.head_answer(request).await
    }

    async fn changes_since(
        &self,
        tenant: &Tenant,
        signal: Signal,
        created_after_ns: i64,
    ) -> Result<tracelight_model::Changes, QueryError> {
        use datafusion::arrow::array::AsArray;
        const HOUR: i64 = 3_600_000_000_000;
        let segs = self
            .sources
            .catalog
            .segments_created_after(tenant, signal, created_after_ns)
            .await
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let through = segs.iter().map(|s| s.2).max().unwrap_or(created_after_ns).max(created_after_ns);
        let mut ranges: Vec<(i64, i64)> = segs.iter().map(|(lo, hi, _)| (*lo, hi.saturating_add(1))).collect();
        let mut hours = self.sources.head.hours(tenant, signal);
        let remote = self.sources.peers.heads(&HeadRequest::new(tenant, signal, 0, 0, HeadKind::Hours)).await;
        if let Some(missing) = remote.missing.first() {
            // That node's rows reach the catalog once it is back and flushes; those segments
            // are reported then.
            tracing::warn!(warning = %missing, "hours in the heads of other nodes not known");
        }
        for b in remote.answers.iter().flat_map(|a| &a.batches) {
            // Of `hours_schema` (the reader checked).
            hours.extend(b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().values());
        }
        hours.sort_unstable();
        hours.dedup();
        ranges.extend(hours.into_iter().map(|h| (h * HOUR, (h + 1) * HOUR)));
        Ok(tracelight_model::Changes { ranges_ns: ranges, segments_through_ns: through })
    }
}

/// The dedicated runtime queries execute on, so a heavy query never starves ingest.
struct QueryPool(Option<tokio::runtime::Runtime>);

impl QueryPool {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("pool lives until drop").handle()
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        // The engine may be dropped inside another runtime, where blocking is not allowed.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// `array_agg` and `string_agg` over a window frame: DataFusion's window operator buffers its
/// input outside the memory pool and their output grows with the square of the frame.
fn refuse_unbounded_windows(plan: &datafusion::logical_expr::LogicalPlan) -> Result<(), DataFusionError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, LogicalPlan, WindowFunctionDefinition};
    let mut found = None;
    plan.apply(|node| {
        if let LogicalPlan::Window(w) = node {
            for e in &w.window_expr {
                e.apply(|x| {
                    if let Expr::WindowFunction(f) = x
                        && let WindowFunctionDefinition::AggregateUDF(u) = &f.fun
                        && matches!(u.name(), "array_agg" | "string_agg")
                    {
                        found = Some(u.name().to_string());
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
            }
        }
        Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    })?;
    match found {
        Some(name) => Err(DataFusionError::Plan(format!("{name} is not supported as a window function"))),
        None => Ok(()),
    }
}

/// Sorts DataFusion's errors into the caller's mistakes and ours.
/// A result's schema, its rows as JSON values, and whether rows were left out.
type Answer = (datafusion::arrow::datatypes::Schema, Vec<Vec<serde_json::Value>>, bool);

/// Why a query failed if it was reading the segment store (not a missing file: one retired and
/// deleted under a long query is a different story), for answering from the heads instead.
fn storage_failure(e: &DataFusionError) -> Option<String> {
    use datafusion::object_store::Error as StoreError;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let store = match err.downcast_ref::<DataFusionError>() {
            Some(DataFusionError::ObjectStore(s)) => Some(s.as_ref()),
            _ => err.downcast_ref::<StoreError>(),
        };
        if let Some(s) = store {
            return (!matches!(s, StoreError::NotFound { .. })).then(|| s.to_string().chars().take(200).collect());
        }
        cur = err.source();
    }
    None
}

fn map_error(e: DataFusionError) -> QueryError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => QueryError::ResourcesExhausted(m.clone()),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.find_root().to_string()),
        DataFusionError::Execution(m) => QueryError::Invalid(m.clone()),
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) | DataFusionError::ParquetError(_) => {
            QueryError::Internal(e.to_string())
        }
        _ => QueryError::Invalid(e.find_root().to_string()),
    }
}

#[cfg(test)]
mod tests;
