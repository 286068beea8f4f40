//! `/slos` and `/slos/{name}`: every SLO with its SLI, budget and burn rates; one SLO with a
//! burn-down chart of its budget over the window, its 1 h and 6 h burn rates over the last
//! three days with the alert thresholds drawn in, the rules with their state, what each costs
//! when it fires and how fast it sees a total outage, and the newest failing traces of the
//! burning window, each opening its waterfall.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tracelight_model::slo::{BURN_WINDOWS, MINUTE_NS, RuleState, SloSpec, SloStatus, window_counts};
use tracelight_model::time::{now_ns, pick_step};

use super::chart::{Chart, Line};
use super::{Clock, PageError, Stamp, render};
use crate::{AppError, AppState};

pub struct BurnCell {
    pub text: String,
    pub hot: bool,
}

pub struct SloRow {
    pub name: String,
    pub href: String,
    pub service: String,
    pub objective: String,
    pub window: String,
    pub sli: String,
    pub budget: String,
    pub low: bool,
    pub burns: Vec<BurnCell>,
    pub firing: usize,
    pub error: String,
}

fn pct(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "no data".into(), |v| format!("{:.*}%", digits, v * 100.0))
}

fn human_s(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

fn row(spec: &SloSpec, status: Option<&SloStatus>, error: Option<String>) -> SloRow {
    let factor = spec.rules.iter().map(|r| r.factor).fold(f64::INFINITY, f64::min);
    SloRow {
        name: spec.name.clone(),
        href: format!("/slos/{}", super::enc(&spec.name)),
        service: spec.service.clone(),
        objective: format!("{}%", spec.objective),
        window: tracelight_model::slo::window_label(spec.window_ns),
        sli: pct(status.and_then(|s| s.sli), 3),
        budget: match status.and_then(|s| s.budget_remaining) {
            None => "no data".into(),
            Some(b) => match status.and_then(|s| s.budget_exhausted_in_s) {
                Some(t) => format!("{:.1}% · gone in {} at the 1 h burn", b * 100.0, human_s(t)),
                None => format!("{:.1}%", b * 100.0),
            },
        },
        low: status.and_then(|s| s.budget_remaining).is_some_and(|b| b < 0.25),
        burns: BURN_WINDOWS
            .iter()
            .map(|(w, _)| {
                let b = status.and_then(|s| s.burn_rates.get(*w).copied().flatten());
                BurnCell {
                    text: b.map_or_else(|| "–".into(), |b| format!("{b:.2}×")),
                    hot: b.is_some_and(|b| b >= factor),
                }
            })
            .collect(),
        firing: status.map_or(0, |s| s.alerts.iter().filter(|a| a.state == RuleState::Firing).count()),
        error: error.unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "slos.html")]
pub struct SlosPage {
    pub rows: Vec<SloRow>,
    pub windows: Vec<&'static str>,
    pub render_ms: String,
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let clock = Clock::start();
    let tenant = super::login::authorize_page(&state, &headers)?;
    let e = &state.slos;
    let rows = e.specs_of(&tenant).map(|s| row(s, e.status(&s.name).as_ref(), e.error(&s.name))).collect();
    let mut page = SlosPage { rows, windows: BURN_WINDOWS.iter().map(|(w, _)| *w).collect(), render_ms: String::new() };
    page.render_ms = clock.ms();
    Ok(render(&page))
}

pub struct RuleRow {
    pub severity: String,
    pub windows: String,
    pub factor: String,
    pub long_burn: String,
    pub short_burn: String,
    pub state: String,
    pub firing: bool,
    pub consumed: String,
    pub detect: String,
}

pub struct Example {
    pub href: String,
    pub time: Stamp,
    pub what: String,
}

#[derive(Template)]
#[template(path = "slo.html")]
pub struct SloPage {
    pub row: SloRow,
    pub windows: Vec<&'static str>,
    pub sli: String,
    pub evaluated: Option<Stamp>,
    pub burndown: Chart,
    pub burn: Chart,
    pub rules: Vec<RuleRow>,
    pub examples: Vec<Example>,
    pub examples_window: String,
    pub render_ms: String,
}

/// The burn-down of the budget over the window, and the 1 h and 6 h burn rates over the last
/// three days with the alert thresholds.
fn charts(spec: &SloSpec, minutes: &[tracelight_model::slo::MinuteCounts], now: i64) -> (Chart, Chart) {
    // Burn-down: the budget left at each step of the window, against the events so far.
    let start = now - spec.window_ns;
    let step = pick_step(spec.window_ns, 120);
    let n = (spec.window_ns / step) as usize;
    let whole = window_counts(minutes, now, spec.window_ns);
    let allowed = spec.budget() * whole.total as f64;
    let mut left = Vec::with_capacity(n);
    let mut bad = 0u64;
    let mut sorted = minutes.to_vec();
    sorted.sort_by_key(|m| m.minute);
    let mut it = sorted.iter().filter(|m| m.minute * MINUTE_NS >= start).peekable();
    for i in 0..n {
        let end = start + step * (i as i64 + 1);
        while let Some(m) = it.peek() {
            if m.minute * MINUTE_NS >= end {
                break;
            }
            bad += m.total.saturating_sub(m.good);
            it.next();
        }
        left.push((allowed > 0.0).then(|| (1.0 - bad as f64 / allowed) * 100.0));
    }
    let burndown = Chart::new("error budget left over the window (%)", start, now).lines(
        start,
        now,
        step,
        &[Line { label: "budget left".into(), values: left }],
        &|v| format!("{v:.0}%"),
    );

    // Burn rates of the 1 h and 6 h windows over the last 3 days, with the thresholds.
    let span = (3 * 86_400 * 1_000_000_000i64).min(spec.window_ns);
    let (b0, bstep) = (now - span, pick_step(span, 144));
    let bn = (span / bstep) as usize;
    let rate = |w: i64| -> Vec<Option<f64>> {
        (0..bn)
            .map(|i| {
                let at = b0 + bstep * (i as i64 + 1);
                tracelight_model::slo::burn_rate(window_counts(minutes, at, w), spec.budget(), spec.min_events)
            })
            .collect()
    };
    let mut lines = vec![
        Line { label: "1h burn rate".into(), values: rate(3_600_000_000_000) },
        Line { label: "6h burn rate".into(), values: rate(6 * 3_600_000_000_000) },
    ];
    for r in &spec.rules {
        lines.push(Line {
            label: format!(
                "{} at {:.2}× ({})",
                r.severity.as_str(),
                r.factor,
                tracelight_model::slo::window_label(r.long_ns)
            ),
            values: vec![Some(r.factor); bn],
        });
    }
    let burn = Chart::new("burn rate (× the sustainable rate) with the alert thresholds", b0, now).lines(
        b0,
        now,
        bstep,
        &lines,
        &|v| format!("{v:.1}×"),
    );

    (burndown, burn)
}

pub async fn detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, PageError> {
    let clock = Clock::start();
    let tenant = super::login::authorize_page(&state, &headers)?;
    let engine = &state.slos;
    let spec = engine
        .specs_of(&tenant)
        .find(|s| s.name == name)
        .ok_or_else(|| AppError::NotFound(format!("no SLO named {name:?}; /slos lists them")))?;
    let status = engine.status(&spec.name);
    let now = status.as_ref().map_or_else(now_ns, |s| s.evaluated_at_ns);
    let minutes = engine.minutes(spec, now).await.map_err(|e| AppError::Internal(e.to_string()))?;

    let (burndown, burn) = charts(spec, &minutes, now);

    let rules = status
        .as_ref()
        .map(|s| {
            s.alerts
                .iter()
                .map(|a| RuleRow {
                    severity: a.severity.as_str().to_string(),
                    windows: format!("{} and {}", a.long_window, a.short_window),
                    factor: format!("{:.2}×", a.factor),
                    long_burn: a.long_burn.map_or_else(|| "insufficient data".into(), |b| format!("{b:.2}×")),
                    short_burn: a.short_burn.map_or_else(|| "insufficient data".into(), |b| format!("{b:.2}×")),
                    state: a.state.as_str().replace('_', " "),
                    firing: a.state == RuleState::Firing,
                    consumed: format!("{:.1}%", a.budget_consumed_at_fire * 100.0),
                    detect: human_s(a.detect_total_outage_s),
                })
                .collect()
        })
        .unwrap_or_default();
    // Examples from the long window of the most urgent firing rule (rules are listed pages
    // first, shortest first), or the last hour.
    let burning = status
        .as_ref()
        .and_then(|s| {
            s.alerts.iter().zip(&spec.rules).find(|(a, _)| a.state == RuleState::Firing).map(|(_, r)| r.long_ns)
        })
        .unwrap_or(3_600_000_000_000);
    let examples = engine
        .failing_examples(spec, now - burning, now + 1)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .into_iter()
        .map(|(id, t, what)| Example { href: format!("/traces/{id}"), time: Stamp::new(t), what })
        .collect();
    let sli = match &spec.sli {
        tracelight_model::slo::Sli::ErrorRatio { filter } => {
            format!(
                "error ratio of {} spans{}",
                spec.service,
                filter.as_deref().map(|f| format!(" where {f}")).unwrap_or_default()
            )
        }
        tracelight_model::slo::Sli::Latency { threshold_ns, filter } => format!(
            "{} spans slower than {} are bad{}",
            spec.service,
            tracelight_model::time::short_duration(*threshold_ns),
            filter.as_deref().map(|f| format!(" (where {f})")).unwrap_or_default()
        ),
        tracelight_model::slo::Sli::MetricRatio { good, total } => {
            format!("counters {good} / {total} of {}", spec.service)
        }
    };
    let mut page = SloPage {
        row: row(spec, status.as_ref(), engine.error(&spec.name)),
        windows: BURN_WINDOWS.iter().map(|(w, _)| *w).collect(),
        sli,
        evaluated: status.as_ref().map(|s| Stamp::new(s.evaluated_at_ns)),
        burndown,
        burn,
        rules,
        examples,
        examples_window: tracelight_model::slo::window_label(burning),
        render_ms: String::new(),
    };
    page.render_ms = clock.ms();
    Ok(render(&page))
}
