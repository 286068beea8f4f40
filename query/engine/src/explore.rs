//! What the UI's charts need: log volume per bucket (the index, exact), RED numbers per
//! service per bucket, and the metrics explorer (a catalog of metrics and one metric
//! aggregated per bucket). The aggregation math lives in
//! [`tracelight_model::metrics::aggregate`]; this module only reads the points.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tracelight_index::TimeBuckets;
use tracelight_model::correlate::{
    Attributes, ExemplarRef, LogHistogram, LogQuery, MetricCatalog, MetricChart, MetricInfo, MetricQuery,
    ServiceBucket, ServiceSeries,
};
use tracelight_model::metrics::{Aggregation, MetricKind, MetricPoint, aggregate};
use tracelight_model::time::parse_time_ns;
use tracelight_model::{QueryError, QueryRequest, ScanStats, Tenant};

use crate::Engine;
use crate::correlate::{ENTRY_SPANS, index_error, index_search, lit};

/// Most buckets a chart may have.
pub const MAX_BUCKETS: i64 = 1_000;
/// Most metric points one chart reads; a wider question must narrow its window or service.
pub const MAX_METRIC_POINTS: usize = 200_000;
/// Most exemplars one chart shows.
const MAX_EXEMPLARS: usize = 500;

fn buckets(start_ns: i64, end_ns: i64, step_ns: i64) -> Result<usize, QueryError> {
    if step_ns <= 0 {
        return Err(QueryError::Invalid("step must be positive".into()));
    }
    let n = (end_ns - start_ns + step_ns - 1) / step_ns;
    if n > MAX_BUCKETS {
        return Err(QueryError::Invalid(format!(
            "{n} buckets is more than the {MAX_BUCKETS} a chart may have; use a larger step"
        )));
    }
    Ok(n.max(0) as usize)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

fn attributes(v: &Value) -> Attributes {
    v.as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect())
        .unwrap_or_default()
}

impl Engine {
    pub(crate) async fn histogram(&self, q: LogQuery, step_ns: i64) -> Result<LogHistogram, QueryError> {
        self.check_range(q.start_ns, q.end_ns)?;
        let len = buckets(q.start_ns, q.end_ns, step_ns)?;
        let s = index_search(&q);
        let b = TimeBuckets { start_ns: q.start_ns, step_ns, len };
        let tenant = q.tenant.clone().unwrap_or_default();
        let index = self.index.clone();
        let (counts, stats) =
            self.on_pool(async move { index.log_histogram(&tenant, &s, &b).await }).await?.map_err(index_error)?;
        let total = counts.iter().sum();
        Ok(LogHistogram { start_ns: q.start_ns, step_ns, counts, total, stats })
    }

    pub(crate) async fn red_series(
        &self,
        tenant: &Tenant,
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
    ) -> Result<ServiceSeries, QueryError> {
        self.check_range(start_ns, end_ns)?;
        buckets(start_ns, end_ns, step_ns)?;
        // Entry spans, as in the services overview.
        let sql = format!(
            "SELECT service_name, (CAST(start_time AS BIGINT) - {start_ns}) / {step_ns} AS bucket, count(*) AS requests,
                    sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns) AS p50,
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95,
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99
             FROM spans WHERE {ENTRY_SPANS}
             GROUP BY service_name, bucket ORDER BY service_name, bucket"
        );
        let req = QueryRequest { sql, start_ns: Some(start_ns), end_ns: Some(end_ns), tenant: Some(tenant.clone()) };
        let r = self.run_limited(req, 1_000_000).await?;
        let ms = |v: &Value| v.as_f64().map_or(0.0, |ns| ns / 1e6);
        let buckets = r
            .rows
            .iter()
            .map(|r| ServiceBucket {
                service: text(&r[0]),
                bucket: r[1].as_u64().unwrap_or(0) as usize,
                requests: r[2].as_u64().unwrap_or(0),
                errors: r[3].as_u64().unwrap_or(0),
                p50_ms: ms(&r[4]),
                p95_ms: ms(&r[5]),
                p99_ms: ms(&r[6]),
            })
            .collect();
        Ok(ServiceSeries { start_ns, step_ns, buckets, stats: r.stats })
    }

    /// Per metric name and kind in the window: unit, description, points, services.
    async fn metric_infos(
        &self,
        tenant: &Tenant,
        start_ns: i64,
        end_ns: i64,
        name: Option<&str>,
    ) -> Result<(Vec<MetricInfo>, ScanStats), QueryError> {
        let filter = name.map(|n| format!("WHERE name = {}", lit(n))).unwrap_or_default();
        let sql = format!(
            "SELECT name, kind, max(unit), max(description), bool_or(is_monotonic), count(*),
                    array_agg(DISTINCT service_name)
             FROM metrics {filter} GROUP BY name, kind ORDER BY name, count(*) DESC"
        );
        let req = QueryRequest { sql, start_ns: Some(start_ns), end_ns: Some(end_ns), tenant: Some(tenant.clone()) };
        let r = self.run_limited(req, 100_000).await?;
        let metrics = r
            .rows
            .iter()
            .map(|r| {
                let mut services: Vec<String> =
                    r[6].as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default();
                services.sort();
                MetricInfo {
                    name: text(&r[0]),
                    kind: text(&r[1]),
                    unit: text(&r[2]),
                    description: text(&r[3]),
                    monotonic: r[4].as_bool().unwrap_or(false),
                    points: r[5].as_u64().unwrap_or(0),
                    services,
                }
            })
            .collect();
        Ok((metrics, r.stats))
    }

    pub(crate) async fn catalog_of_metrics(
        &self,
        tenant: &Tenant,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<MetricCatalog, QueryError> {
        self.check_range(start_ns, end_ns)?;
        let (mut metrics, stats) = self.metric_infos(tenant, start_ns, end_ns, None).await?;
        // A name stored under two kinds (a changed instrument) is listed once, by its most
        // frequent kind.
        metrics.dedup_by(|b, a| a.name == b.name);
        Ok(MetricCatalog { metrics, stats })
    }

    pub(crate) async fn chart(&self, q: MetricQuery) -> Result<MetricChart, QueryError> {
        self.check_range(q.start_ns, q.end_ns)?;
        buckets(q.start_ns, q.end_ns, q.step_ns)?;
        let tenant = q.tenant.clone().unwrap_or_default();
        let (infos, mut stats) = self.metric_infos(&tenant, q.start_ns, q.end_ns, Some(&q.name)).await?;
        let Some(info) = infos.into_iter().next() else {
            return Err(QueryError::NotFound(format!("metric {:?} has no points in this window", q.name)));
        };
        let kind = MetricKind::parse(&info.kind)
            .ok_or_else(|| QueryError::Internal(format!("unknown metric kind {:?}", info.kind)))?;
        let aggregation = q.aggregation.unwrap_or(match kind {
            MetricKind::Sum if info.monotonic => Aggregation::Rate,
            MetricKind::Histogram | MetricKind::ExponentialHistogram | MetricKind::Summary => Aggregation::P95,
            _ => Aggregation::Avg,
        });
        if !aggregation.applies_to(kind, info.monotonic) {
            let offered: Vec<&str> =
                Aggregation::ALL.iter().filter(|a| a.applies_to(kind, info.monotonic)).map(|a| a.as_str()).collect();
            return Err(QueryError::Invalid(format!(
                "{} does not apply to {} (a {}); choose one of {}",
                aggregation.as_str(),
                q.name,
                kind.as_str(),
                offered.join(", ")
            )));
        }
        let service = q.service.as_ref().map(|s| format!("AND service_name = {}", lit(s))).unwrap_or_default();
        // One step before the window too: the baseline of cumulative points.
        let from = q.start_ns.saturating_sub(q.step_ns);
        let sql = format!(
            "SELECT CAST(time AS BIGINT) AS t, CAST(start_time AS BIGINT) AS st, temporality, is_monotonic, service_name,
                    attributes, resource_attributes, value, value_int, count, sum, min, max, bucket_counts,
                    explicit_bounds, exp_scale, exp_zero_count, exp_zero_threshold, exp_positive_offset,
                    exp_positive_bucket_counts, quantiles, exemplars
             FROM metrics WHERE name = {} AND kind = {} {service} ORDER BY time",
            lit(&q.name),
            lit(&info.kind)
        );
        let req = QueryRequest { sql, start_ns: Some(from), end_ns: Some(q.end_ns), tenant: Some(tenant) };
        let r = self.run_limited(req, MAX_METRIC_POINTS).await?;
        stats.add(&r.stats);
        if r.truncated {
            return Err(QueryError::Invalid(format!(
                "{} has more than {MAX_METRIC_POINTS} points in this window; narrow the window or pick a service",
                q.name
            )));
        }
        let mut keys = BTreeSet::new();
        let mut exemplars = Vec::new();
        let points: Vec<MetricPoint> = r
            .rows
            .iter()
            .map(|row| {
                let service = text(&row[4]);
                let attrs = attributes(&row[5]);
                let resource = attributes(&row[6]);
                keys.extend(attrs.keys().cloned());
                let group = match q.group_by.as_deref() {
                    None | Some("") => String::new(),
                    Some("service.name") => service.clone(),
                    Some(k) => attrs.get(k).or_else(|| resource.get(k)).cloned().unwrap_or_default(),
                };
                let time_ns = row[0].as_i64().unwrap_or(0);
                if time_ns >= q.start_ns && exemplars.len() < MAX_EXEMPLARS {
                    exemplars.extend(point_exemplars(&q.name, &service, &row[21]));
                }
                MetricPoint {
                    time_ns,
                    start_ns: row[1].as_i64(),
                    series: format!("{service}\u{1f}{}\u{1f}{}", row[5], row[6]),
                    group,
                    cumulative: row[2].as_str() == Some("cumulative"),
                    monotonic: row[3].as_bool().unwrap_or(false),
                    value: row[7].as_f64().or_else(|| row[8].as_i64().map(|v| v as f64)),
                    count: row[9].as_u64(),
                    sum: row[10].as_f64(),
                    min: row[11].as_f64(),
                    max: row[12].as_f64(),
                    bucket_counts: u64s(&row[13]),
                    explicit_bounds: f64s(&row[14]),
                    exp_scale: row[15].as_i64().map(|v| v as i32),
                    exp_zero_count: row[16].as_u64(),
                    exp_zero_threshold: row[17].as_f64(),
                    exp_positive_offset: row[18].as_i64().map(|v| v as i32),
                    exp_positive_bucket_counts: u64s(&row[19]),
                    quantiles: row[20]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|q| Some((q.get("quantile")?.as_f64()?, q.get("value")?.as_f64()?)))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        exemplars.truncate(MAX_EXEMPLARS);
        exemplars.retain(|e: &ExemplarRef| e.time_ns >= q.start_ns && e.time_ns < q.end_ns);
        let series = aggregate(kind, &points, aggregation, q.start_ns, q.end_ns, q.step_ns)
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
        // The service is always a way to split a chart.
        keys.insert("service.name".into());
        Ok(MetricChart {
            info,
            aggregation,
            start_ns: q.start_ns,
            step_ns: q.step_ns,
            series,
            attribute_keys: keys.into_iter().collect(),
            exemplars,
            stats,
        })
    }
}

/// The exemplars of one point that name a trace.
fn point_exemplars(metric: &str, service: &str, v: &Value) -> Vec<ExemplarRef> {
    let Some(items) = v.as_array() else { return Vec::new() };
    items
        .iter()
        .filter_map(|e| {
            let trace_id = e.get("trace_id")?.as_str().filter(|t| !t.is_empty())?.to_string();
            Some(ExemplarRef {
                metric: metric.to_string(),
                service_name: service.to_string(),
                time_ns: e.get("time").and_then(Value::as_str).and_then(|t| parse_time_ns(t).ok()).unwrap_or(0),
                value: e.get("value").and_then(Value::as_f64),
                trace_id,
                span_id: e.get("span_id").and_then(Value::as_str).map(str::to_string),
                attributes: e.get("filtered_attributes").map(attributes).unwrap_or_else(BTreeMap::new),
            })
        })
        .collect()
}
