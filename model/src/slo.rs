//! SLO math: exact multi-window burn rates over per-minute good/total counts, the error budget,
//! and the multi-window, multi-burn-rate alert rules of the Google SRE Workbook.
//!
//! - burn rate over a window = (bad / total over that window) / (1 − objective): the exact
//!   ratio of the summed counts, never a mean of per-minute ratios;
//! - a window with fewer than `min_events` events has no burn rate ("insufficient data") and
//!   never fires a rule;
//! - a rule fires only when both its long and its short window burn at or above its factor;
//! - the default rules are the workbook's for 30 days, their factors scaled by window / 30 d
//!   so each still means the same fraction of the budget (28 d: 13.44, 5.6, 2.8, 0.9333).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;
const DAY_NS: i64 = 24 * HOUR_NS;
/// The window the workbook's factors are written for.
const BASE_WINDOW_NS: i64 = 30 * DAY_NS;

/// The windows every SLO reports a burn rate for.
pub const BURN_WINDOWS: [(&str, i64); 7] = [
    ("5m", 5 * MINUTE_NS),
    ("30m", 30 * MINUTE_NS),
    ("1h", HOUR_NS),
    ("2h", 2 * HOUR_NS),
    ("6h", 6 * HOUR_NS),
    ("24h", DAY_NS),
    ("3d", 3 * DAY_NS),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// What makes an event bad.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sli {
    /// Spans of the service (matching `filter`, SQL over `spans`); bad = status ERROR.
    ErrorRatio { filter: Option<String> },
    /// Spans of the service (matching `filter`); bad = slower than `threshold_ns`.
    Latency { threshold_ns: i64, filter: Option<String> },
    /// Counters: good and total are metric names (monotonic sums) of the service.
    MetricRatio { good: String, total: String },
}

/// One burn-rate alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub severity: Severity,
    pub long_ns: i64,
    pub short_ns: i64,
    pub factor: f64,
}

/// An SLO as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloSpec {
    pub name: String,
    /// Whose spans and metrics it counts, and who may see it.
    pub tenant: crate::Tenant,
    pub service: String,
    /// Percent, e.g. 99.9.
    pub objective: f64,
    pub window_ns: i64,
    pub sli: Sli,
    pub rules: Vec<Rule>,
    /// A window with fewer events has no burn rate.
    pub min_events: u64,
    /// Channel names.
    pub notify: Vec<String>,
}

impl SloSpec {
    /// The allowed bad fraction, `1 − objective`.
    pub fn budget(&self) -> f64 {
        1.0 - self.objective / 100.0
    }

    /// What the stored counts depend on: a change means they are rebuilt.
    pub fn fingerprint(&self) -> String {
        format!("{}|{}|{}", self.tenant, self.service, serde_json::to_string(&self.sli).unwrap_or_default())
    }
}

/// The workbook's rules for a 30-day window, factors scaled to `window_ns`.
pub fn default_rules(window_ns: i64) -> Vec<Rule> {
    let scale = window_ns as f64 / BASE_WINDOW_NS as f64;
    [
        (Severity::Page, HOUR_NS, 5 * MINUTE_NS, 14.4),
        (Severity::Page, 6 * HOUR_NS, 30 * MINUTE_NS, 6.0),
        (Severity::Ticket, DAY_NS, 2 * HOUR_NS, 3.0),
        (Severity::Ticket, 3 * DAY_NS, 6 * HOUR_NS, 1.0),
    ]
    .into_iter()
    .map(|(severity, long_ns, short_ns, factor)| Rule { severity, long_ns, short_ns, factor: factor * scale })
    .collect()
}

/// Good and total events of one minute (`minute` = Unix minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    pub minute: i64,
    pub good: u64,
    pub total: u64,
}

/// Sums over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub good: u64,
    pub total: u64,
}

impl Counts {
    pub fn bad(&self) -> u64 {
        self.total.saturating_sub(self.good)
    }
}

/// The counts of the `window_ns` that ends at `now_ns` (whole minutes: the minute holding
/// `now_ns` is still filling and is left out).
pub fn window_counts(minutes: &[MinuteCounts], now_ns: i64, window_ns: i64) -> Counts {
    let end = now_ns.div_euclid(MINUTE_NS);
    let start = end - window_ns / MINUTE_NS;
    minutes
        .iter()
        .filter(|m| m.minute >= start && m.minute < end)
        .fold(Counts::default(), |c, m| Counts { good: c.good + m.good, total: c.total + m.total })
}

/// The burn rate of `counts` against `budget` (1 − objective); `None` below `min_events`.
pub fn burn_rate(counts: Counts, budget: f64, min_events: u64) -> Option<f64> {
    if counts.total == 0 || counts.total < min_events || budget <= 0.0 {
        return None;
    }
    Some(counts.bad() as f64 / counts.total as f64 / budget)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleState {
    Ok,
    Firing,
    /// A window of the rule has too few events to judge.
    InsufficientData,
}

impl RuleState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleState::Ok => "ok",
            RuleState::Firing => "firing",
            RuleState::InsufficientData => "insufficient_data",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub severity: Severity,
    pub long_window: String,
    pub short_window: String,
    pub factor: f64,
    pub state: RuleState,
    pub long_burn: Option<f64>,
    pub short_burn: Option<f64>,
    /// Fraction of the whole budget spent by the time the rule fires (burning at exactly
    /// `factor` for the long window).
    pub budget_consumed_at_fire: f64,
    /// Seconds from the start of a total outage (every event bad) to the rule firing.
    pub detect_total_outage_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloStatus {
    pub name: String,
    pub service: String,
    pub objective: f64,
    pub window: String,
    pub sli_kind: String,
    /// Good / total over the SLO window (`None` without events).
    pub sli: Option<f64>,
    pub events: u64,
    pub bad_events: u64,
    /// Fraction of the error budget left over the window (negative once overspent).
    pub budget_remaining: Option<f64>,
    /// Seconds until the budget is gone at the current (1 h) burn rate; `None` when not burning.
    pub budget_exhausted_in_s: Option<f64>,
    /// Burn rate per reporting window (`None`: insufficient data).
    pub burn_rates: BTreeMap<String, Option<f64>>,
    pub alerts: Vec<RuleStatus>,
    pub evaluated_at_ns: i64,
}

/// A duration as the config writes it: `5m`, `1h`, `3d`, `28d`, or minutes otherwise.
pub fn window_label(ns: i64) -> String {
    if ns % DAY_NS == 0 && ns > DAY_NS {
        format!("{}d", ns / DAY_NS)
    } else if ns % HOUR_NS == 0 {
        format!("{}h", ns / HOUR_NS)
    } else {
        format!("{}m", ns / MINUTE_NS)
    }
}

/// Evaluates an SLO at `now_ns` from its per-minute counts.
pub fn evaluate(spec: &SloSpec, minutes: &[MinuteCounts], now_ns: i64) -> SloStatus {
    let budget = spec.budget();
    let burn = |window_ns: i64| burn_rate(window_counts(minutes, now_ns, window_ns), budget, spec.min_events);
    let whole = window_counts(minutes, now_ns, spec.window_ns);
    let burn_rates = BURN_WINDOWS.iter().map(|(label, ns)| (label.to_string(), burn(*ns))).collect();
    let alerts = spec
        .rules
        .iter()
        .map(|r| {
            let (long_burn, short_burn) = (burn(r.long_ns), burn(r.short_ns));
            let state = match (long_burn, short_burn) {
                (Some(l), Some(s)) if l >= r.factor && s >= r.factor => RuleState::Firing,
                (Some(_), Some(_)) => RuleState::Ok,
                _ => RuleState::InsufficientData,
            };
            RuleStatus {
                severity: r.severity,
                long_window: window_label(r.long_ns),
                short_window: window_label(r.short_ns),
                factor: r.factor,
                state,
                long_burn,
                short_burn,
                budget_consumed_at_fire: r.factor * r.long_ns as f64 / spec.window_ns as f64,
                detect_total_outage_s: r.factor * budget * r.long_ns.max(r.short_ns) as f64 / 1e9,
            }
        })
        .collect();
    // The whole window's budget: no minimum, any event counts.
    let spent = burn_rate(whole, budget, 1);
    let budget_remaining = spent.map(|b| 1.0 - b);
    let budget_exhausted_in_s = match (budget_remaining, burn(HOUR_NS)) {
        (Some(left), Some(rate)) if rate > 0.0 && left > 0.0 => Some(left * spec.window_ns as f64 / 1e9 / rate),
        _ => None,
    };
    SloStatus {
        name: spec.name.clone(),
        service: spec.service.clone(),
        objective: spec.objective,
        window: window_label(spec.window_ns),
        sli_kind: match spec.sli {
            Sli::ErrorRatio { .. } => "error_ratio".into(),
            Sli::Latency { .. } => "latency".into(),
            Sli::MetricRatio { .. } => "metric_ratio".into(),
        },
        sli: (whole.total > 0).then(|| whole.good as f64 / whole.total as f64),
        events: whole.total,
        bad_events: whole.bad(),
        budget_remaining,
        budget_exhausted_in_s,
        burn_rates,
        alerts,
        evaluated_at_ns: now_ns,
    }
}

/// A notification waiting in (or delivered from) the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Alert identity, state and the time the state began: the same transition is never
    /// queued twice.
    pub id: String,
    pub alert_key: String,
    pub channel: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// What the channel is sent (JSON), built when the transition happened.
    pub payload: String,
    pub created_at_ns: i64,
    pub attempts: u32,
    pub next_attempt_ns: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Where SLO counts, alert states and the outbox live (the catalog); the alerts crate's
/// evaluator and notifier use it through this trait.
#[async_trait::async_trait]
pub trait SloStore: Send + Sync {
    /// The definition the stored counts were built from, and the first minute not yet built.
    async fn slo_build(&self, slo: &str) -> Result<Option<(String, i64)>, StoreError>;
    /// Forgets the counts of `slo` and starts again from `definition`.
    async fn slo_reset(&self, slo: &str, fingerprint: &str) -> Result<(), StoreError>;
    /// Writes (replaces) per-minute counts and moves the built mark, in one transaction.
    async fn slo_put(&self, slo: &str, minutes: &[MinuteCounts], built_through_minute: i64) -> Result<(), StoreError>;
    /// Up to which segment creation time the minutes new segments cover were recounted.
    async fn slo_segments_mark(&self, slo: &str) -> Result<i64, StoreError>;
    async fn slo_set_segments_mark(&self, slo: &str, through_ns: i64) -> Result<(), StoreError>;
    /// Counts of `slo` from `from_minute` on.
    async fn slo_minutes(&self, slo: &str, from_minute: i64) -> Result<Vec<MinuteCounts>, StoreError>;
    /// The last recorded state of each alert of `slo`: key → (state, since).
    async fn alert_states(&self, slo: &str) -> Result<BTreeMap<String, (String, i64)>, StoreError>;
    /// Records a state change and queues its notifications, atomically; a notification whose
    /// id is already queued is not queued again.
    async fn alert_transition(
        &self,
        slo: &str,
        alert_key: &str,
        state: &str,
        since_ns: i64,
        notifications: &[Notification],
    ) -> Result<(), StoreError>;
    /// Undelivered notifications, oldest first (due or waiting for a retry: the caller keeps
    /// each alert's messages in order).
    async fn pending_notifications(&self, limit: usize) -> Result<Vec<Notification>, StoreError>;
    async fn mark_delivered(&self, id: &str, now_ns: i64) -> Result<(), StoreError>;
    async fn mark_failed(&self, id: &str, attempts: u32, next_attempt_ns: i64, error: &str) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000 * 1_000_000_000; // a whole minute

    fn spec(objective: f64, window_ns: i64) -> SloSpec {
        SloSpec {
            name: "checkout".into(),
            tenant: crate::Tenant::default(),
            service: "checkout".into(),
            objective,
            window_ns,
            sli: Sli::ErrorRatio { filter: None },
            rules: default_rules(window_ns),
            min_events: 10,
            notify: vec![],
        }
    }

    /// `per_minute` events in each of the `n` minutes before now, `bad` of them bad.
    fn minutes(n: i64, per_minute: u64, bad: u64) -> Vec<MinuteCounts> {
        let now = NOW / MINUTE_NS;
        (1..=n).map(|k| MinuteCounts { minute: now - k, good: per_minute - bad, total: per_minute }).collect()
    }

    #[test]
    fn default_factors_scale_with_the_window() {
        let f = |w: i64| default_rules(w).iter().map(|r| r.factor).collect::<Vec<_>>();
        assert_eq!(f(30 * DAY_NS), vec![14.4, 6.0, 3.0, 1.0]);
        let f28 = f(28 * DAY_NS);
        for (got, want) in f28.iter().zip([13.44, 5.6, 2.8, 0.9333]) {
            assert!((got - want).abs() < 1e-4, "{f28:?}");
        }
    }

    #[test]
    fn the_workbooks_numbers() {
        // 99.9% over 30 days: burning at 14.4× for an hour spends 2% of the budget, and a
        // total outage is detected in 14.4 × 0.001 × 1 h = 51.84 s.
        let s = evaluate(&spec(99.9, 30 * DAY_NS), &[], NOW);
        let page = &s.alerts[0];
        assert!((page.budget_consumed_at_fire - 0.02).abs() < 1e-12);
        assert!((page.detect_total_outage_s - 51.84).abs() < 1e-9);
        assert!((s.alerts[1].budget_consumed_at_fire - 0.05).abs() < 1e-12);
        assert!((s.alerts[2].budget_consumed_at_fire - 0.10).abs() < 1e-12);
        assert!((s.alerts[3].budget_consumed_at_fire - 0.10).abs() < 1e-12);
        assert!(s.alerts.iter().all(|a| a.state == RuleState::InsufficientData));
    }

    #[test]
    fn burn_rates_are_exact_ratios_and_both_windows_must_exceed() {
        // 3 days of 100 events a minute with 0.1% bad (burn 1×), then the last 10 minutes at
        // 2% bad: the 5m window burns 20×; the 1h window burns (50×0.1 + 10×2) / 60 / 0.1.
        let sp = spec(99.9, 30 * DAY_NS);
        let mut m: Vec<MinuteCounts> = minutes(3 * 24 * 60, 1000, 1);
        for x in m.iter_mut().take(10) {
            x.good = 980;
        }
        let s = evaluate(&sp, &m, NOW);
        let b = |w: &str| s.burn_rates[w].unwrap();
        assert!((b("5m") - 20.0).abs() < 1e-9, "{}", b("5m"));
        assert!((b("30m") - (20.0 * 10.0 + 20.0) / 30.0 / 1.0).abs() < 1e-9, "{}", b("30m"));
        let one_hour = (10.0 * 20.0 + 50.0 * 1.0) / 60.0;
        assert!((b("1h") - one_hour).abs() < 1e-9);
        // 5m at 20× but 1h at 4.17×: the 14.4× page does not fire; nor does 6× (6h ≈ 1.5×).
        assert_eq!(s.alerts[0].state, RuleState::Ok);
        assert_eq!(s.alerts[1].state, RuleState::Ok);
        // Then the whole last hour at 2%: both windows of the first rule exceed 14.4×.
        for x in m.iter_mut().take(60) {
            x.good = 980;
        }
        let s = evaluate(&sp, &m, NOW);
        assert_eq!(s.alerts[0].state, RuleState::Firing);
        assert!((s.burn_rates["1h"].unwrap() - 20.0).abs() < 1e-9);
        // Budget over 30 days (only 3 days of data): bad = 60×20 + (4320−60)×1 of 4.32M.
        let bad = 60.0 * 20.0 + (4320.0 - 60.0) * 1.0;
        let want = 1.0 - bad / 4_320_000.0 / 0.001;
        assert!((s.budget_remaining.unwrap() - want).abs() < 1e-9);
        assert_eq!(s.events, 4_320_000);
        // The minute still filling is not counted.
        let mut with_now = m.clone();
        with_now.push(MinuteCounts { minute: NOW / MINUTE_NS, good: 0, total: 1_000_000 });
        assert_eq!(evaluate(&sp, &with_now, NOW).events, 4_320_000);
    }

    #[test]
    fn a_mean_of_ratios_is_not_the_ratio() {
        // One busy minute with 1% bad and one quiet minute with 100% bad: exact 2/1001.
        let now = NOW / MINUTE_NS;
        let m = [
            MinuteCounts { minute: now - 1, good: 990, total: 1000 },
            MinuteCounts { minute: now - 2, good: 0, total: 1 },
        ];
        let s = evaluate(&spec(99.0, 30 * DAY_NS), &m, NOW);
        assert!((s.burn_rates["5m"].unwrap() - 11.0 / 1001.0 / 0.01).abs() < 1e-12);
    }

    #[test]
    fn low_traffic_is_insufficient_data_and_never_pages() {
        // One event every 15 minutes for 3 days, every one bad: the 5m, 30m, 1h and 2h
        // windows hold fewer than min_events = 10, so no page rule (and not the 24h/2h ticket)
        // can fire, burning 1000× or not. Only the 3d/6h ticket has enough events to judge.
        let now = NOW / MINUTE_NS;
        let m: Vec<MinuteCounts> = (1..=3 * 24 * 60)
            .filter(|k| k % 15 == 0)
            .map(|k| MinuteCounts { minute: now - k, good: 0, total: 1 })
            .collect();
        let s = evaluate(&spec(99.9, 30 * DAY_NS), &m, NOW);
        for w in ["5m", "30m", "1h", "2h"] {
            assert_eq!(s.burn_rates[w], None, "{w}");
        }
        assert!((s.burn_rates["6h"].unwrap() - 1000.0).abs() < 1e-6);
        let states: Vec<RuleState> = s.alerts.iter().map(|a| a.state).collect();
        assert_eq!(
            states,
            vec![
                RuleState::InsufficientData,
                RuleState::InsufficientData,
                RuleState::InsufficientData,
                RuleState::Firing
            ]
        );
        assert!(s.alerts.iter().filter(|a| a.severity == Severity::Page).all(|a| a.state != RuleState::Firing));
    }

    #[test]
    fn window_labels() {
        assert_eq!(window_label(5 * MINUTE_NS), "5m");
        assert_eq!(window_label(HOUR_NS), "1h");
        assert_eq!(window_label(DAY_NS), "24h");
        assert_eq!(window_label(3 * DAY_NS), "3d");
        assert_eq!(window_label(28 * DAY_NS), "28d");
    }
}
