//! SLO evaluation: per-minute SLI counts kept up to date in the catalog, burn rates and alert
//! states computed from them (the math is [`tracelight_model::slo`]), state changes recorded
//! with their notifications queued in the same transaction.
//!
//! Counts are built by SQL over the stored spans (or by the counters' rates for
//! `metric_ratio`), one day per query, from where the last build stopped; the last
//! [`REROLL_MINUTES`] are counted again on every tick. Data that arrives later than that (a
//! collector's retry queue after an outage, a backfill, WAL replay after a restart) is counted
//! too, exactly once: every tick also recounts the minutes covered by segments created since
//! the last tick and by every hour the unflushed head holds ([`QueryService::changes_since`]).
//! A recount replaces a minute's counts, so counting again never counts twice; the segment mark
//! is kept in the catalog, so a restart loses nothing. When an SLO's definition changes, its
//! counts are rebuilt from the stored data. Evaluating a 30-day window reads at most 43,200
//! rows of counts, never the spans.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;
use tracelight_model::correlate::MetricQuery;
use tracelight_model::metrics::Aggregation;
use tracelight_model::query::sql_literal as lit;
use tracelight_model::slo::{
    MINUTE_NS, MinuteCounts, Notification, RuleState, RuleStatus, Sli, SloSpec, SloStatus, SloStore, evaluate,
};
use tracelight_model::{QueryRequest, QueryService, Signal, Tenant};

use crate::error::AlertError;
use crate::kinds::{AlertState, Change, ChannelKind};
use crate::payload::{Alert, payload};
use tracelight_model::query::url_component;

/// Minutes counted again on every tick, for spans that arrive late.
pub const REROLL_MINUTES: i64 = 10;
/// Minutes per counting query.
const CHUNK_MINUTES: i64 = 1440;
/// How far before the segment mark new segments are looked for again.
const LATE_MARGIN_NS: i64 = 60_000_000_000;

/// `ranges` (ns, half-open) as merged minute ranges inside `[lo, hi)`.
fn minute_ranges(ranges: &[(i64, i64)], lo: i64, hi: i64) -> Vec<(i64, i64)> {
    let mut m: Vec<(i64, i64)> = ranges
        .iter()
        .map(|(s, e)| {
            (s.div_euclid(MINUTE_NS).max(lo), e.saturating_sub(1).div_euclid(MINUTE_NS).saturating_add(1).min(hi))
        })
        .filter(|(s, e)| s < e)
        .collect();
    m.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(m.len());
    for (s, e) in m {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The longest burn-rate window: counts are kept at least this far back.
const LONGEST_BURN_NS: i64 = 3 * 86_400_000_000_000;

/// A notification channel as the evaluator needs it (the URL and secret stay with delivery).
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub kind: ChannelKind,
}

pub struct SloEngine {
    specs: Vec<SloSpec>,
    store: Option<Arc<dyn SloStore>>,
    query: Arc<dyn QueryService>,
    channels: Vec<Route>,
    public_url: String,
    latest: RwLock<BTreeMap<String, SloStatus>>,
    /// The last error of each SLO's counting or evaluation, shown with its status.
    errors: RwLock<BTreeMap<String, String>>,
}

impl SloEngine {
    pub fn new(
        specs: Vec<SloSpec>,
        store: Option<Arc<dyn SloStore>>,
        query: Arc<dyn QueryService>,
        channels: Vec<Route>,
        public_url: String,
    ) -> SloEngine {
        SloEngine { specs, store, query, channels, public_url, latest: RwLock::default(), errors: RwLock::default() }
    }

    /// An engine without SLOs (tests, and servers that declare none).
    pub fn none(query: Arc<dyn QueryService>) -> SloEngine {
        SloEngine::new(Vec::new(), None, query, Vec::new(), String::new())
    }

    /// The SLOs of one tenant: the only ones a request for that tenant may see.
    pub fn specs_of<'a>(&'a self, tenant: &'a Tenant) -> impl Iterator<Item = &'a SloSpec> + 'a {
        self.specs().iter().filter(move |s| &s.tenant == tenant)
    }

    pub fn specs(&self) -> &[SloSpec] {
        &self.specs
    }

    pub fn status(&self, name: &str) -> Option<SloStatus> {
        self.latest.read().get(name).cloned()
    }

    pub fn error(&self, name: &str) -> Option<String> {
        self.errors.read().get(name).cloned()
    }

    /// Brings every SLO's counts up to date and evaluates it at `now_ns`.
    pub async fn tick(&self, now_ns: i64) {
        for spec in &self.specs {
            match self.tick_one(spec, now_ns).await {
                Ok(status) => {
                    self.errors.write().remove(&spec.name);
                    self.latest.write().insert(spec.name.clone(), status);
                }
                Err(e) => {
                    tracing::warn!(slo = %spec.name, error = %e, "SLO evaluation failed");
                    self.errors.write().insert(spec.name.clone(), e.to_string());
                }
            }
        }
    }

    fn store(&self) -> Result<&Arc<dyn SloStore>, AlertError> {
        self.store.as_ref().ok_or(AlertError::NoStore)
    }

    /// How far back counts are kept for `spec`, in minutes before `now`.
    fn keep_minutes(spec: &SloSpec) -> i64 {
        spec.window_ns.max(LONGEST_BURN_NS) / MINUTE_NS
    }

    async fn tick_one(&self, spec: &SloSpec, now_ns: i64) -> Result<SloStatus, AlertError> {
        self.count(spec, now_ns).await?;
        let store = self.store()?;
        let now_minute = now_ns.div_euclid(MINUTE_NS);
        let minutes = store.slo_minutes(&spec.name, now_minute - Self::keep_minutes(spec)).await?;
        let status = evaluate(spec, &minutes, now_ns);
        self.transitions(spec, &status, now_ns).await?;
        Ok(status)
    }

    /// Counts the minutes not counted yet (and the last few again); rebuilds all of them when
    /// the definition changed.
    pub async fn count(&self, spec: &SloSpec, now_ns: i64) -> Result<(), AlertError> {
        let store = self.store()?;
        let fingerprint = spec.fingerprint();
        let now_minute = now_ns.div_euclid(MINUTE_NS);
        let oldest = now_minute - Self::keep_minutes(spec);
        let built = match store.slo_build(&spec.name).await? {
            Some((f, through)) if f == fingerprint => through,
            _ => {
                store.slo_reset(&spec.name, &fingerprint).await?;
                0
            }
        };
        let forward_from = (built - REROLL_MINUTES).max(oldest);
        // Counter rates come as chart buckets, of which one query may ask for at most 1,000.
        let chunk = if matches!(spec.sli, Sli::MetricRatio { .. }) { CHUNK_MINUTES / 2 } else { CHUNK_MINUTES };

        // Late data: the minutes before `forward_from` that new segments or the head cover.
        let signal = if matches!(spec.sli, Sli::MetricRatio { .. }) { Signal::Metrics } else { Signal::Spans };
        let mark = store.slo_segments_mark(&spec.name).await?;
        // A margin: segments are stamped before their catalog commit, so one may appear with a
        // stamp a little older than the newest seen. Recounting twice is harmless.
        let changes = self
            .query
            .changes_since(&spec.tenant, signal, mark.saturating_sub(LATE_MARGIN_NS))
            .await
            .map_err(|e| AlertError::query(format!("finding late data for {}", spec.name), e))?;
        let late = minute_ranges(&changes.ranges_ns, oldest, forward_from);

        let mut from = forward_from;
        while from < now_minute {
            let to = (from + chunk).min(now_minute);
            let counts = self.count_range(spec, from, to).await?;
            store.slo_put(&spec.name, &counts, to).await?;
            from = to;
        }
        for (start, end) in late {
            let mut from = start;
            while from < end {
                let to = (from + chunk).min(end);
                let counts = self.count_range(spec, from, to).await?;
                store.slo_put(&spec.name, &counts, now_minute.max(built)).await?;
                from = to;
            }
        }
        store.slo_set_segments_mark(&spec.name, changes.segments_through_ns).await?;
        Ok(())
    }

    /// Good and total events per minute in `[from, to)` (Unix minutes).
    async fn count_range(&self, spec: &SloSpec, from: i64, to: i64) -> Result<Vec<MinuteCounts>, AlertError> {
        let (start_ns, end_ns) = (from * MINUTE_NS, to * MINUTE_NS);
        let Some((bad, filter)) = span_sli(spec) else {
            let Sli::MetricRatio { good, total } = &spec.sli else { unreachable!("span_sli covers span SLIs") };
            return self.count_counters(spec, good, total, from, to).await;
        };
        let minute = format!("CAST(start_time AS BIGINT) / {MINUTE_NS}");
        let sql = format!(
            "SELECT {minute} AS minute, count(*) AS total, sum(CASE WHEN {bad} THEN 0 ELSE 1 END) AS good
             FROM spans WHERE service_name = {}{filter} GROUP BY {minute}",
            lit(&spec.service)
        );
        let req =
            QueryRequest { sql, start_ns: Some(start_ns), end_ns: Some(end_ns), tenant: Some(spec.tenant.clone()) };
        let r = self.query.sql(req).await.map_err(|e| AlertError::query(format!("counting {}", spec.name), e))?;
        // A partial answer (an ingester that did not answer) is counted as it is: the rows it
        // left out arrive in segments created later, and `changes_since` has those minutes
        // counted again.
        if let Some(w) = r.stats.warnings.first() {
            tracing::warn!(slo = %spec.name, warning = %w, "SLO counts may be incomplete until the node is back");
        }
        Ok(r.rows
            .iter()
            .filter_map(|row| {
                Some(MinuteCounts {
                    minute: row.first()?.as_i64()?,
                    total: row.get(1)?.as_u64()?,
                    good: row.get(2)?.as_u64().unwrap_or(0),
                })
            })
            .collect())
    }

    /// `metric_ratio`: the increase of the good and the total counter per minute (their rates
    /// × 60, resets handled by the metrics math).
    async fn count_counters(
        &self,
        spec: &SloSpec,
        good: &str,
        total: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MinuteCounts>, AlertError> {
        let increase = |name: &str| {
            let name = name.to_string();
            let q = MetricQuery {
                name: name.clone(),
                aggregation: Some(Aggregation::Rate),
                group_by: None,
                service: Some(spec.service.clone()),
                start_ns: from * MINUTE_NS,
                end_ns: to * MINUTE_NS,
                step_ns: MINUTE_NS,
                tenant: Some(spec.tenant.clone()),
            };
            let query = self.query.clone();
            async move {
                match query.metric_chart(q).await {
                    Ok(c) => Ok(c.series.first().map(|s| s.values.clone()).unwrap_or_default()),
                    Err(tracelight_model::QueryError::NotFound(_)) => Ok(Vec::new()),
                    Err(e) => Err(AlertError::query(format!("counting {name}"), e)),
                }
            }
        };
        let (g, t) = (increase(good).await?, increase(total).await?);
        Ok((0..(to - from) as usize)
            .filter_map(|i| {
                let total = t.get(i).copied().flatten()?;
                let total = (total * 60.0).round().max(0.0) as u64;
                let good = g.get(i).copied().flatten().map_or(0, |v| (v * 60.0).round().max(0.0) as u64).min(total);
                (total > 0).then_some(MinuteCounts { minute: from + i as i64, good, total })
            })
            .collect())
    }

    /// Records rule state changes and queues one notification per channel for each.
    /// A rule without enough data keeps its last state: no page on thin traffic, no flapping.
    async fn transitions(&self, spec: &SloSpec, status: &SloStatus, now_ns: i64) -> Result<(), AlertError> {
        let store = self.store()?;
        let states = store.alert_states(&spec.name).await?;
        for rule in &status.alerts {
            let key = alert_key(&spec.name, rule);
            let (prev, prev_since) = match states.get(&key) {
                Some((state, since)) => (AlertState::parse(state)?, *since),
                None => (AlertState::Ok, 0),
            };
            let next = match rule.state {
                RuleState::Firing => AlertState::Firing,
                RuleState::Ok => AlertState::Ok,
                RuleState::InsufficientData => prev,
            };
            if next == prev {
                continue;
            }
            let state = if next == AlertState::Firing { Change::Firing } else { Change::Resolved };
            let fired_at = if next == AlertState::Firing { now_ns } else { prev_since };
            let notifications: Vec<Notification> = spec
                .notify
                .iter()
                .filter_map(|name| self.channels.iter().find(|c| &c.name == name))
                .map(|ch| {
                    // Stable across retries and restarts: a resend after a crash between the
                    // receiver's 2xx and the delivered mark carries the same id.
                    let id = format!("{key}:{}:{now_ns}:{}", state.as_str(), ch.name);
                    let alert = Alert {
                        id: &id,
                        spec,
                        status,
                        rule,
                        state,
                        fired_at_ns: fired_at,
                        now_ns,
                        url: &self.slo_url(&spec.name),
                    };
                    Notification {
                        payload: payload(ch.kind, &alert).to_string(),
                        id,
                        alert_key: key.clone(),
                        channel: ch.name.clone(),
                        state: state.as_str().to_string(),
                        created_at_ns: now_ns,
                        attempts: 0,
                        next_attempt_ns: now_ns,
                    }
                })
                .collect();
            tracing::info!(slo = %spec.name, alert = %key, state = state.as_str(), "SLO alert changed state");
            store.alert_transition(&spec.name, &key, next.as_str(), now_ns, &notifications).await?;
        }
        Ok(())
    }

    /// Per-minute counts of `name` kept for its window, for charts.
    pub async fn minutes(&self, spec: &SloSpec, now_ns: i64) -> Result<Vec<MinuteCounts>, AlertError> {
        let from = now_ns.div_euclid(MINUTE_NS) - Self::keep_minutes(spec);
        Ok(self.store()?.slo_minutes(&spec.name, from).await?)
    }

    /// The newest bad events of the SLI (its spans), as (trace ID, time, what).
    pub async fn failing_examples(
        &self,
        spec: &SloSpec,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<(String, i64, String)>, AlertError> {
        let Some((bad, filter)) = span_sli(spec) else { return Ok(Vec::new()) };
        let sql = format!(
            "SELECT trace_id, CAST(start_time AS BIGINT) AS t, name, duration_ns, status_message FROM spans
             WHERE service_name = {}{filter} AND {bad} ORDER BY start_time DESC LIMIT 20",
            lit(&spec.service)
        );
        let req =
            QueryRequest { sql, start_ns: Some(start_ns), end_ns: Some(end_ns), tenant: Some(spec.tenant.clone()) };
        let r =
            self.query.sql(req).await.map_err(|e| AlertError::query(format!("failing spans of {}", spec.name), e))?;
        Ok(r.rows
            .iter()
            .filter_map(|row| {
                let id = tracelight_model::correlate::parse_trace_id(row.first()?.as_str()?).ok()?;
                let what = format!(
                    "{} · {} · {}",
                    row.get(2).and_then(Value::as_str).unwrap_or_default(),
                    tracelight_model::time::short_duration(row.get(3).and_then(Value::as_i64).unwrap_or(0)),
                    row.get(4).and_then(Value::as_str).unwrap_or("")
                );
                Some((id, row.get(1)?.as_i64()?, what))
            })
            .collect())
    }

    pub fn slo_url(&self, name: &str) -> String {
        format!("{}/slos/{}", self.public_url, url_component(name))
    }
}

/// A span SLI as SQL: the condition that makes a span bad, and ` AND (filter)` (or nothing).
/// `None` for counter SLIs.
fn span_sli(spec: &SloSpec) -> Option<(String, String)> {
    let (bad, filter) = match &spec.sli {
        Sli::ErrorRatio { filter } => ("status_code = 'ERROR'".to_string(), filter),
        Sli::Latency { threshold_ns, filter } => (format!("duration_ns > {threshold_ns}"), filter),
        Sli::MetricRatio { .. } => return None,
    };
    Some((bad, filter.as_deref().map(|f| format!(" AND ({f})")).unwrap_or_default()))
}

/// An alert's identity: the SLO and the rule (severity and windows).
pub fn alert_key(slo: &str, rule: &RuleStatus) -> String {
    format!("{slo}/{}/{}/{}", rule.severity.as_str(), rule.long_window, rule.short_window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_ranges_become_merged_minutes_inside_the_window() {
        let m = MINUTE_NS;
        let ranges = [(10 * m + 5, 12 * m), (11 * m, 15 * m + 1), (40 * m, 41 * m), (0, 2 * m), (90 * m, 99 * m)];
        assert_eq!(minute_ranges(&ranges, 1, 50), vec![(1, 2), (10, 16), (40, 41)]);
        assert!(minute_ranges(&[(5 * m, 5 * m)], 0, 100).is_empty(), "empty ranges stay empty");
        assert!(minute_ranges(&[(i64::MIN, i64::MAX)], 0, 10) == vec![(0, 10)]);
    }
}
