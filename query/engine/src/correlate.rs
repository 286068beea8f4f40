//! Correlation: a trace by ID with its logs and exemplars, trace search, log search and the
//! services overview. The one place these are answered; the API, the CLI and the UI call it
//! through [`QueryService`](tracelight_model::QueryService).
//!
//! - Rows of one trace are found through the trace-ID terms of the segment indexes (no time
//!   hint, no scan) and read back from the pages that hold them.
//! - Trace search selects candidate traces with SQL over `spans` (every filter applies to the
//!   same span), then assembles the summaries of one page of traces by ID.
//! - Log search is the full-text index, newest first.
//! - Service RED numbers and edges are SQL aggregations over the window.

use std::collections::{BTreeSet, HashMap};

use tracelight_index::LogSearch;
use tracelight_model::correlate::{
    Cursor, LogList, LogQuery, MAX_CURSOR_SKIP, ServiceEdge, ServiceMap, ServiceStats, SpanRecord, TraceDetail,
    TraceList, TraceQuery, TraceSummary,
};
use tracelight_model::{QueryError, QueryRequest, ScanStats, Signal, Tenant};

use crate::{Engine, records};

pub(crate) use tracelight_model::query::sql_literal as lit;

/// Entry spans: where a request enters a service (the services overview and its charts).
pub(crate) const ENTRY_SPANS: &str = "(kind IN ('SERVER', 'CONSUMER') OR parent_span_id IS NULL)";

impl Engine {
    /// Refuses an empty time range or one wider than the configured bound.
    pub(crate) fn check_range(&self, start_ns: i64, end_ns: i64) -> Result<(), QueryError> {
        if end_ns <= start_ns {
            return Err(QueryError::Invalid(format!(
                "empty time range: end ({end_ns}) is not after start ({start_ns})"
            )));
        }
        let max = self.config.max_search_range;
        if (end_ns - start_ns) as u128 > max.as_nanos() {
            return Err(QueryError::Invalid(format!(
                "time range of {} is wider than the limit of {} (query.max_search_range); narrow start/end",
                humanize((end_ns - start_ns) as u128),
                humanize(max.as_nanos()),
            )));
        }
        Ok(())
    }

    /// Refuses a list page (`limit`) outside 1..=max_page.
    pub(crate) fn check_limit(&self, limit: usize) -> Result<(), QueryError> {
        if limit == 0 || limit > self.config.max_page {
            return Err(QueryError::Invalid(format!("limit must be between 1 and {}", self.config.max_page)));
        }
        Ok(())
    }

    pub(crate) async fn trace_detail(&self, tenant: &Tenant, trace_id: &str) -> Result<TraceDetail, QueryError> {
        let started = std::time::Instant::now();
        let ids = [trace_id.to_string()];
        let index = self.index.clone();
        let tenant = tenant.clone();
        let (sp, lg, mt) = self
            .on_pool(async move {
                let sp = index.trace_rows(&tenant, Signal::Spans, &ids, None, None).await?;
                let lg = index.trace_rows(&tenant, Signal::Logs, &ids, None, None).await?;
                let mt = index.trace_rows(&tenant, Signal::Metrics, &ids, None, None).await?;
                Ok::<_, tracelight_index::IndexError>((sp, lg, mt))
            })
            .await?
            .map_err(index_error)?;
        let mut stats = ScanStats::default();
        for (_, s) in [&sp, &lg, &mt] {
            stats.add(s);
        }
        let mut spans = records::spans(&sp.0);
        spans.sort_by(|a, b| a.start_ns.cmp(&b.start_ns).then_with(|| a.span_id.cmp(&b.span_id)));
        let mut logs = records::logs(&lg.0);
        logs.sort_by_key(|l| l.time_ns);
        let exemplars = records::exemplars(&mt.0, trace_id);
        if spans.is_empty() && logs.is_empty() && exemplars.is_empty() {
            return Err(QueryError::NotFound(if stats.warnings.is_empty() {
                format!("no trace {trace_id}: no span, log or exemplar carries it")
            } else {
                format!("no trace {trace_id} in what could be read; {}", stats.warnings.join("; "))
            }));
        }
        stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(TraceDetail {
            trace_id: trace_id.to_string(),
            summary: summarize(trace_id, &spans),
            spans,
            logs,
            exemplars,
            stats,
        })
    }

    pub(crate) async fn trace_search(&self, q: TraceQuery) -> Result<TraceList, QueryError> {
        let started = std::time::Instant::now();
        self.check_range(q.start_ns, q.end_ns)?;
        self.check_limit(q.limit)?;
        let mut conds = Vec::new();
        if let Some(s) = &q.service {
            conds.push(format!("service_name = {}", lit(s)));
        }
        if let Some(n) = &q.name {
            conds.push(format!("name = {}", lit(n)));
        }
        if let Some(d) = q.min_duration_ns {
            conds.push(format!("duration_ns >= {d}"));
        }
        if let Some(d) = q.max_duration_ns {
            conds.push(format!("duration_ns <= {d}"));
        }
        if let Some(s) = &q.status {
            conds.push(format!("status_code = {}", lit(s)));
        }
        for (k, v) in &q.attributes {
            conds.push(format!("attributes[{}] = {}", lit(k), lit(v)));
        }
        let filter = if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
        let having = match &q.cursor {
            Some(c) => format!(
                "HAVING CAST(max(start_time) AS BIGINT) < {t} OR (CAST(max(start_time) AS BIGINT) = {t} AND trace_id < {k})",
                t = c.time_ns,
                k = lit(&c.key)
            ),
            None => String::new(),
        };
        // The newest matching span of each trace orders the traces.
        let sql = format!(
            "SELECT trace_id, CAST(max(start_time) AS BIGINT) AS t FROM spans {filter} GROUP BY trace_id {having} \
             ORDER BY t DESC, trace_id DESC LIMIT {}",
            q.limit + 1
        );
        let tenant = q.tenant.clone().unwrap_or_default();
        let found = self
            .run(QueryRequest { sql, start_ns: Some(q.start_ns), end_ns: Some(q.end_ns), tenant: Some(tenant.clone()) })
            .await?;
        let mut stats = found.stats.clone();
        let mut hits: Vec<(String, i64)> =
            found.rows.iter().filter_map(|r| Some((r.first()?.as_str()?.to_string(), r.get(1)?.as_i64()?))).collect();
        let more = hits.len() > q.limit;
        hits.truncate(q.limit);
        let next_cursor = if more {
            hits.last().map(|(id, t)| Cursor { time_ns: *t, skip: 0, key: id.clone() }.encode())
        } else {
            None
        };

        // Whole traces, wherever their other spans landed.
        let ids: Vec<String> = hits.iter().map(|(id, _)| id.clone()).collect();
        let index = self.index.clone();
        let (batch, s) = self
            .on_pool(async move { index.trace_rows(&tenant, Signal::Spans, &ids, None, None).await })
            .await?
            .map_err(index_error)?;
        stats.add(&s);
        let mut by_trace: HashMap<String, Vec<SpanRecord>> = HashMap::new();
        for span in records::spans(&batch) {
            by_trace.entry(span.trace_id.clone()).or_default().push(span);
        }
        let traces = hits
            .iter()
            .filter_map(|(id, _)| summarize(id, by_trace.get(id).map_or(&[][..], |v| v.as_slice())))
            .collect();
        stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(TraceList { traces, next_cursor, stats })
    }

    pub(crate) async fn log_search(&self, q: LogQuery) -> Result<LogList, QueryError> {
        self.check_range(q.start_ns, q.end_ns)?;
        self.check_limit(q.limit)?;
        // One more than asked says whether there is a next page.
        let mut s = LogSearch { limit: q.limit + 1, ..index_search(&q) };
        if let Some(c) = &q.cursor {
            s.end_ns = s.end_ns.min(c.time_ns.saturating_add(1));
            s.skip_at_end = c.skip as usize;
        }
        let tenant = q.tenant.clone().unwrap_or_default();
        let index = self.index.clone();
        let search = s.clone();
        let (batch, st) =
            self.on_pool(async move { index.logs(&tenant, &search).await }).await?.map_err(index_error)?;
        let mut logs = records::logs(&batch);
        let more = logs.len() > q.limit;
        logs.truncate(q.limit);
        let next_cursor = match (more, logs.last()) {
            (true, Some(last)) => {
                let at_last = logs.iter().filter(|l| l.time_ns == last.time_ns).count() as u64;
                let carried = if last.time_ns == s.end_ns - 1 { s.skip_at_end as u64 } else { 0 };
                let skip = carried + at_last;
                // Past MAX_CURSOR_SKIP records at one nanosecond, paging moves on to older times
                // (the rest of that nanosecond is reachable only by a narrower query).
                Some(
                    if skip > MAX_CURSOR_SKIP {
                        Cursor { time_ns: last.time_ns.saturating_sub(1), skip: 0, key: String::new() }
                    } else {
                        Cursor { time_ns: last.time_ns, skip, key: String::new() }
                    }
                    .encode(),
                )
            }
            _ => None,
        };
        let stats = st;
        Ok(LogList { logs, next_cursor, stats })
    }

    pub(crate) async fn service_map(
        &self,
        tenant: &Tenant,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<ServiceMap, QueryError> {
        let started = std::time::Instant::now();
        self.check_range(start_ns, end_ns)?;
        let range = |sql: String| QueryRequest {
            sql,
            start_ns: Some(start_ns),
            end_ns: Some(end_ns),
            tenant: Some(tenant.clone()),
        };
        // Entry spans: where a request enters a service.
        let red = self
            .run(range(format!(
                "SELECT service_name, count(*) AS requests,
                        sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors,
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns) AS p50,
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95,
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99
                 FROM spans WHERE {ENTRY_SPANS}
                 GROUP BY service_name ORDER BY service_name"
            )))
            .await?;
        let all = self.run(range("SELECT DISTINCT service_name FROM spans ORDER BY service_name".into())).await?;
        let edges = self
            .run(range(
                "SELECT p.service_name AS parent, c.service_name AS child, count(*) AS calls,
                        sum(CASE WHEN c.status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors
                 FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
                 WHERE c.service_name <> p.service_name
                 GROUP BY p.service_name, c.service_name ORDER BY parent, child"
                    .into(),
            ))
            .await?;
        let mut stats = ScanStats::default();
        for r in [&red, &all, &edges] {
            stats.add(&r.stats);
        }
        let seconds = (end_ns - start_ns) as f64 / 1e9;
        let ms = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_f64()).map_or(0.0, |ns| ns / 1e6);
        let mut services: Vec<ServiceStats> = red
            .rows
            .iter()
            .map(|r| {
                let requests = r[1].as_u64().unwrap_or(0);
                let errors = r[2].as_u64().unwrap_or(0);
                ServiceStats {
                    service: r[0].as_str().unwrap_or_default().to_string(),
                    requests,
                    rate_per_sec: requests as f64 / seconds,
                    errors,
                    error_ratio: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
                    p50_ms: ms(r.get(3)),
                    p95_ms: ms(r.get(4)),
                    p99_ms: ms(r.get(5)),
                }
            })
            .collect();
        // Services seen only through client or internal spans still appear, with no requests.
        let known: BTreeSet<String> = services.iter().map(|s| s.service.clone()).collect();
        for r in &all.rows {
            if let Some(name) = r[0].as_str()
                && !known.contains(name)
            {
                services.push(ServiceStats {
                    service: name.to_string(),
                    requests: 0,
                    rate_per_sec: 0.0,
                    errors: 0,
                    error_ratio: 0.0,
                    p50_ms: 0.0,
                    p95_ms: 0.0,
                    p99_ms: 0.0,
                });
            }
        }
        services.sort_by(|a, b| a.service.cmp(&b.service));
        let edges = edges
            .rows
            .iter()
            .map(|r| ServiceEdge {
                parent: r[0].as_str().unwrap_or_default().to_string(),
                child: r[1].as_str().unwrap_or_default().to_string(),
                calls: r[2].as_u64().unwrap_or(0),
                errors: r[3].as_u64().unwrap_or(0),
            })
            .collect();
        stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(ServiceMap { start_ns, end_ns, services, edges, stats })
    }
}

/// The index search of a log query (no limit, no cursor).
pub(crate) fn index_search(q: &LogQuery) -> LogSearch {
    LogSearch {
        q: q.q.clone(),
        services: q.services.clone(),
        severities: q.severities.iter().map(|s| s.to_ascii_uppercase()).collect(),
        trace_id: q.trace_id.clone(),
        start_ns: q.start_ns,
        end_ns: q.end_ns,
        limit: 0,
        skip_at_end: 0,
    }
}

/// The summary of a trace from its spans; `None` without spans.
pub fn summarize(trace_id: &str, spans: &[SpanRecord]) -> Option<TraceSummary> {
    let start = spans.iter().map(|s| s.start_ns).min()?;
    let end = spans.iter().map(|s| s.end_ns).max()?;
    // The root: no parent; with several (or none yet), the earliest.
    let root = spans.iter().filter(|s| s.parent_span_id.is_none()).min_by_key(|s| s.start_ns);
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    Some(TraceSummary {
        trace_id: trace_id.to_string(),
        root_service: root.map(|r| r.service_name.clone()),
        root_name: root.map(|r| r.name.clone()),
        start_ns: start,
        duration_ns: end - start,
        span_count: spans.len() as u64,
        error_count: spans.iter().filter(|s| s.status_code == "ERROR").count() as u64,
        services: services.into_iter().map(String::from).collect(),
    })
}

pub(crate) fn index_error(e: tracelight_index::IndexError) -> QueryError {
    match e {
        tracelight_index::IndexError::Invalid(m) => QueryError::Invalid(m),
        tracelight_index::IndexError::Internal(m) | tracelight_index::IndexError::Unreachable(m) => {
            QueryError::Internal(m)
        }
    }
}

/// Nanoseconds as a short duration: `7d`, `36h`, `90m`, `45s`.
fn humanize(ns: u128) -> String {
    let s = ns / 1_000_000_000;
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{:.1}h", s as f64 / 3_600.0),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
