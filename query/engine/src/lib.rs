//! SQL over tracelight's storage with DataFusion: the only crate that links DataFusion.
//!
//! Each query gets a fresh `SessionContext` on a shared runtime (memory pool with a hard
//! limit) whose tables `spans`, `logs` and `metrics` are [`table::SignalTable`]s: catalog-pruned
//! Parquet segments ∪ the in-memory head. User SQL is read-only (no DDL, DML, `COPY` or `SET`;
//! URL tables are off), runs on a dedicated thread pool so ingest never waits on a query, and
//! is cancelled at its timeout.

pub mod correlate;
pub mod explore;
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeout: Duration::from_secs(30),
            memory_limit: 1 << 30,
            max_result_rows: 10_000,
            threads: 2,
            max_search_range: Duration::from_secs(7 * 86_400),
            max_page: 1_000,
        }
    }
}

/// What a table scan needs to find its data.
pub(crate) struct Sources {
    pub catalog: Catalog,
    pub head: Arc<Head>,
    pub store: SegmentStore,
    pub node: String,
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
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit)))
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let pool = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("tracelight-query")
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query pool: {e}")))?;
        let pool = QueryPool(Some(pool));
        let index = Arc::new(IndexSearch::new(catalog.clone(), head.clone(), store.clone(), node.clone()));
        Ok(Engine {
            sources: Arc::new(Sources { catalog, head, store, node }),
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
    ) -> Result<SessionContext, QueryError> {
        let mut config =
            SessionConfig::new().with_target_partitions(self.config.threads.max(1)).with_information_schema(false);
        config.options_mut().execution.parquet.pushdown_filters = true;
        config.options_mut().execution.parquet.bloom_filter_on_read = true;
        let ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        for signal in Signal::ALL {
            let table = table::SignalTable::new(signal, tenant.clone(), range, self.sources.clone(), stats.clone());
            ctx.register_table(signal.table(), Arc::new(table)).map_err(|e| QueryError::Internal(e.to_string()))?;
        }
        Ok(ctx)
    }

    async fn run(&self, req: QueryRequest) -> Result<QueryResult, QueryError> {
        self.run_limited(req, self.config.max_result_rows).await
    }

    /// Runs a query returning at most `max` rows (the result says when there were more).
    async fn run_limited(&self, req: QueryRequest, max: usize) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let tenant = req.tenant.clone().unwrap_or_default();
        let range = timerange::TimeRange { start_ns: req.start_ns, end_ns: req.end_ns };
        if let (Some(s), Some(e)) = (range.start_ns, range.end_ns)
            && e <= s
        {
            return Err(QueryError::Invalid(format!("empty time range: end ({e}) is not after start ({s})")));
        }
        let stats = Arc::new(Mutex::new(ScanStats::default()));
        let ctx = self.context(&tenant, range, &stats)?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let sql = req.sql.clone();
        let work = async move {
            let df = ctx.sql_with_options(&sql, options).await?;
            let df = df.limit(0, Some(max + 1))?;
            let schema = df.schema().as_arrow().clone();
            let batches = df.collect().await?;
            Ok::<_, DataFusionError>((schema, batches))
        };
        let (schema, batches) = self.on_pool(work).await?.map_err(map_error)?;
        let (columns, mut rows) = json::to_rows(&schema, &batches);
        let truncated = rows.len() > max;
        rows.truncate(max);
        let mut stats = stats.lock().clone();
        stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.query_seconds.observe(started.elapsed().as_secs_f64());
        Ok(QueryResult { columns, rows, truncated, stats })
    }
}

impl Engine {
    /// Forgets cached index readers of segments that retention deleted.
    pub fn forget_segments(&self, paths: &[String]) {
        for p in paths {
            self.index.forget(p);
        }
    }

    /// Runs `work` on the query pool, cancelled at the query timeout.
    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, QueryError> {
        let timeout = self.config.timeout;
        let handle = self.pool.handle().spawn(async move { tokio::time::timeout(timeout, work).await });
        match handle.await {
            Err(e) => Err(QueryError::Internal(format!("query task failed: {e}"))),
            Ok(Err(_elapsed)) => Err(QueryError::Timeout(timeout.as_millis() as u64)),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

#[async_trait::async_trait]
impl QueryService for Engine {
    async fn sql(&self, request: QueryRequest) -> Result<QueryResult, QueryError> {
        self.run(request).await
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

/// Sorts DataFusion's errors into the caller's mistakes and ours.
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
