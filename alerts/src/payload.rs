//! What a notification says, per channel kind: Slack and Discord messages, a Standard
//! Webhooks event, an Alertmanager alert. Every one carries the message id, so a receiver can
//! drop a repeat (delivery is at least once).

use serde_json::{Value, json};
use tracelight_model::slo::{RuleStatus, SloSpec, SloStatus, window_label};

use crate::kinds::{Change, ChannelKind};

/// What a notification says.
pub struct Alert<'a> {
    /// The message id: the same in every attempt to deliver this message, so a receiver can
    /// drop a repeat (delivery is at least once).
    pub id: &'a str,
    pub spec: &'a SloSpec,
    pub status: &'a SloStatus,
    pub rule: &'a RuleStatus,
    pub state: Change,
    pub fired_at_ns: i64,
    pub now_ns: i64,
    pub url: &'a str,
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "insufficient data".to_string(), |b| format!("{b:.2}×"))
}

impl Alert<'_> {
    /// One line for chat: SLO, severity, both burn rates, budget consumed.
    pub fn text(&self) -> String {
        let consumed =
            self.status.budget_remaining.map_or_else(|| "unknown".into(), |r| format!("{:.1}%", (1.0 - r) * 100.0));
        let head = if self.state == Change::Firing {
            format!(
                "[{}] SLO {} is burning its error budget",
                self.rule.severity.as_str().to_uppercase(),
                self.spec.name
            )
        } else {
            format!("[RESOLVED] SLO {} is no longer burning fast", self.spec.name)
        };
        format!(
            "{head}: {} over {} and {} over {} (threshold {:.2}×); {consumed} of the {} budget consumed (objective {}%, service {}).",
            rate(self.rule.long_burn),
            self.rule.long_window,
            rate(self.rule.short_burn),
            self.rule.short_window,
            self.rule.factor,
            window_label(self.spec.window_ns),
            self.spec.objective,
            self.spec.service,
        )
    }

    fn details(&self) -> Value {
        json!({
            "slo": self.spec.name,
            "service": self.spec.service,
            "severity": self.rule.severity.as_str(),
            "state": self.state.as_str(),
            "objective": self.spec.objective,
            "window": window_label(self.spec.window_ns),
            "long_window": self.rule.long_window,
            "short_window": self.rule.short_window,
            "factor": self.rule.factor,
            "long_burn_rate": self.rule.long_burn,
            "short_burn_rate": self.rule.short_burn,
            "budget_remaining": self.status.budget_remaining,
            "fired_at": tracelight_model::time::rfc3339_ms(self.fired_at_ns),
            "url": self.url,
        })
    }
}

/// The body a channel of `kind` is sent for `alert`.
pub fn payload(kind: ChannelKind, a: &Alert) -> Value {
    let text = a.text();
    match kind {
        ChannelKind::Slack => json!({
            "text": format!("{text} <{}|Open the SLO>", a.url),
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!("{text}\n<{}|Open the SLO>", a.url)}},
                {"type": "context", "elements": [{"type": "plain_text", "text": format!("id {}", a.id)}]},
            ],
            "metadata": {"event_type": "tracelight_slo_alert", "event_payload": {"id": a.id}},
        }),
        ChannelKind::Discord => json!({
            "content": text,
            "embeds": [{
                "title": format!("SLO {}", a.spec.name),
                "url": a.url,
                "description": text,
                "color": if a.state == Change::Firing { 0xC8283A } else { 0x59A14F },
                "footer": {"text": format!("id {}", a.id)},
            }],
        }),
        ChannelKind::Alertmanager => {
            let d = a.details();
            json!([{
                "labels": {
                    "alertname": "SLOErrorBudgetBurn",
                    "slo": a.spec.name,
                    "service": a.spec.service,
                    "severity": a.rule.severity.as_str(),
                    "long_window": a.rule.long_window,
                    "short_window": a.rule.short_window,
                },
                "annotations": {"summary": text, "description": d.to_string(), "url": a.url, "id": a.id},
                "generatorURL": a.url,
                "startsAt": tracelight_model::time::rfc3339_ms(a.fired_at_ns),
                "endsAt": if a.state == Change::Resolved { Value::from(tracelight_model::time::rfc3339_ms(a.now_ns)) } else { Value::Null },
            }])
        }
        ChannelKind::Webhook => json!({
            "id": a.id,
            "type": format!("slo.alert.{}", a.state.as_str()),
            "timestamp": tracelight_model::time::rfc3339_ms(a.now_ns),
            "data": a.details(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use tracelight_model::Tenant;
    use tracelight_model::slo::{MINUTE_NS, MinuteCounts, Sli, default_rules, evaluate};

    use super::*;

    /// Every channel's payload for one firing page, from a real evaluation.
    #[test]
    fn payloads_are_well_formed_for_every_channel() {
        let window_ns = 30 * 86_400_000_000_000;
        let spec = SloSpec {
            name: "checkout-avail".into(),
            tenant: Tenant::default(),
            service: "checkout".into(),
            objective: 99.0,
            window_ns,
            sli: Sli::ErrorRatio { filter: None },
            rules: default_rules(window_ns),
            min_events: 10,
            notify: vec![],
        };
        let now = 1_800_000_000 * 1_000_000_000;
        let minutes: Vec<MinuteCounts> =
            (1..=60).map(|k| MinuteCounts { minute: now / MINUTE_NS - k, good: 80, total: 100 }).collect();
        let status = evaluate(&spec, &minutes, now);
        let rule = &status.alerts[0];
        let alert = Alert {
            id: "m1",
            spec: &spec,
            status: &status,
            rule,
            state: Change::Firing,
            fired_at_ns: now,
            now_ns: now,
            url: "http://ui/slos/x",
        };
        let slack = payload(ChannelKind::Slack, &alert);
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .starts_with("[PAGE] SLO checkout-avail is burning its error budget: 20.00× over 1h")
        );
        assert_eq!(slack["blocks"][0]["type"], "section");
        let discord = payload(ChannelKind::Discord, &alert);
        assert_eq!(discord["embeds"][0]["url"], "http://ui/slos/x");
        assert_eq!(discord["embeds"][0]["color"], 0xC8283A);
        assert!(discord["content"].as_str().unwrap().len() <= 2000, "Discord's content limit");
        let hook = payload(ChannelKind::Webhook, &alert);
        assert_eq!(hook["type"], "slo.alert.firing");
        assert_eq!(hook["data"]["severity"], "page");
        assert!((hook["data"]["long_burn_rate"].as_f64().unwrap() - 20.0).abs() < 1e-9);
        let am = payload(ChannelKind::Alertmanager, &alert);
        assert_eq!(am[0]["labels"]["alertname"], "SLOErrorBudgetBurn");
        assert_eq!(am[0]["endsAt"], Value::Null);
        let resolved = Alert { state: Change::Resolved, now_ns: now + 60_000_000_000, ..alert };
        let am = payload(ChannelKind::Alertmanager, &resolved);
        assert_eq!(am[0]["endsAt"], "2027-01-15T08:01:00.000Z");
        assert!(payload(ChannelKind::Slack, &resolved)["text"].as_str().unwrap().starts_with("[RESOLVED]"));
        assert_eq!(payload(ChannelKind::Discord, &resolved)["embeds"][0]["color"], 0x59A14F);
        // Every kind carries the message id, so a receiver can drop a repeat.
        assert_eq!(slack["metadata"]["event_payload"]["id"], "m1");
        assert_eq!(slack["blocks"][1]["elements"][0]["text"], "id m1");
        assert_eq!(discord["embeds"][0]["footer"]["text"], "id m1");
        assert_eq!(hook["id"], "m1");
        assert_eq!(am[0]["annotations"]["id"], "m1");
    }
}
