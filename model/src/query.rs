//! The query interface the web crate and the CLI call; the engine implements it.

use serde::{Deserialize, Serialize};

use crate::correlate::{
    LogHistogram, LogList, LogQuery, MetricCatalog, MetricChart, MetricQuery, ServiceMap, ServiceSeries, TraceDetail,
    TraceList, TraceQuery,
};

/// Percent-encodes a URL component (everything but unreserved characters).
pub fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Quotes a string as a SQL literal (`'` doubled), for values put into generated SQL.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A read-only SQL query over `spans`, `logs` and `metrics`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub sql: String,
    /// Inclusive lower bound on each table's time column, Unix nanoseconds.
    #[serde(default)]
    pub start_ns: Option<i64>,
    /// Exclusive upper bound on each table's time column, Unix nanoseconds.
    #[serde(default)]
    pub end_ns: Option<i64>,
    /// The tenant whose data the tables show; set by the caller from the request, never by
    /// the query text.
    #[serde(skip)]
    pub tenant: Option<crate::Tenant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// How much a query touched: every response says it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanStats {
    /// Time partitions (tenant/signal/day/hour) that survived pruning.
    pub partitions: u64,
    /// Parquet segments opened by SQL, or segment indexes searched by index lookups.
    pub segments: u64,
    /// On-disk bytes of those segments (of their indexes, for index lookups).
    pub segment_bytes: u64,
    /// Rows read from the in-memory head.
    pub head_rows: u64,
    /// Rows read: for SQL, the rows of the segments opened (before row-group pruning); for
    /// index lookups and log search, the rows read back by address.
    #[serde(default)]
    pub rows_read: u64,
    pub elapsed_ms: f64,
    /// What this answer may be missing, one sentence each: a node that did not answer (its
    /// unflushed rows are not in it), a part of storage that could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ScanStats {
    /// Adds what another query part touched (not its elapsed time: parts may overlap).
    pub fn add(&mut self, other: &ScanStats) {
        self.partitions += other.partitions;
        self.segments += other.segments;
        self.segment_bytes += other.segment_bytes;
        self.head_rows += other.head_rows;
        self.rows_read += other.rows_read;
        for w in &other.warnings {
            self.warn(w);
        }
    }

    /// Adds a warning once.
    pub fn warn(&mut self, warning: &str) {
        if !self.warnings.iter().any(|w| w == warning) {
            self.warnings.push(warning.to_string());
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// True when more rows matched than the configured maximum; `rows` holds the first ones.
    #[serde(default)]
    pub truncated: bool,
    pub stats: ScanStats,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The caller's mistake: bad SQL, a refused statement, an unknown table.
    #[error("{0}")]
    Invalid(String),
    /// What was asked for does not exist (a trace ID nothing carries).
    #[error("{0}")]
    NotFound(String),
    #[error("query exceeded its time limit of {0} ms")]
    Timeout(u64),
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(String),
    /// Our fault: storage or catalog failure. The message is for logs, not for callers.
    #[error("internal error: {0}")]
    Internal(String),
}

#[async_trait::async_trait]
pub trait QueryService: Send + Sync {
    async fn sql(&self, request: QueryRequest) -> Result<QueryResult, QueryError>;

    /// Every span, log record and exemplar of a trace (`trace_id` already validated, lower
    /// case), found through the trace-ID index without a time hint.
    async fn trace(&self, tenant: &crate::Tenant, trace_id: &str) -> Result<TraceDetail, QueryError>;

    /// Traces with a span matching every filter, newest first.
    async fn traces(&self, query: TraceQuery) -> Result<TraceList, QueryError>;

    /// Log records matching a full-text query and filters, newest first.
    async fn logs(&self, query: LogQuery) -> Result<LogList, QueryError>;

    /// RED numbers per service and the service-to-service edges over `[start_ns, end_ns)`.
    async fn services(&self, tenant: &crate::Tenant, start_ns: i64, end_ns: i64) -> Result<ServiceMap, QueryError>;

    /// Log records matching `query` (its limit and cursor ignored) counted per `step_ns` bucket
    /// from `query.start_ns`.
    async fn log_histogram(&self, query: LogQuery, step_ns: i64) -> Result<LogHistogram, QueryError>;

    /// RED numbers of every service per `step_ns` bucket of `[start_ns, end_ns)`.
    async fn service_series(
        &self,
        tenant: &crate::Tenant,
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
    ) -> Result<ServiceSeries, QueryError>;

    /// The metrics that have points in `[start_ns, end_ns)`.
    async fn metric_catalog(
        &self,
        tenant: &crate::Tenant,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<MetricCatalog, QueryError>;

    /// One metric aggregated per bucket (see [`crate::metrics::aggregate`]).
    async fn metric_chart(&self, query: MetricQuery) -> Result<MetricChart, QueryError>;

    /// Where rows of `tenant`/`signal` may have arrived since `created_after_ns`: the time
    /// ranges of segments created after it and of every hour the unflushed head holds. A
    /// reader that keeps derived counts (SLOs) recounts these, so data counts however late it
    /// arrives. The default (no storage) reports nothing.
    /// What this node's head answers another node's query (see [`crate::peers`]). The
    /// default (no head) refuses.
    async fn head(&self, _request: crate::peers::HeadRequest) -> Result<crate::peers::HeadAnswer, QueryError> {
        Err(QueryError::NotFound("this node keeps no head".into()))
    }

    async fn changes_since(
        &self,
        _tenant: &crate::Tenant,
        _signal: crate::Signal,
        created_after_ns: i64,
    ) -> Result<Changes, QueryError> {
        Ok(Changes { ranges_ns: Vec::new(), segments_through_ns: created_after_ns })
    }
}

/// See [`QueryService::changes_since`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// `[start, end)` time ranges, unordered, possibly overlapping.
    pub ranges_ns: Vec<(i64, i64)>,
    /// The newest creation time among the segments reported (the next call's argument).
    pub segments_through_ns: i64,
}
