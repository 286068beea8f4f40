//! SLOs end to end over the real engine and catalog: spans with known good and bad counts at
//! known times in the past (half in Parquet, half in the head) are counted per minute by SQL,
//! evaluated at a fixed "now", and every burn rate, the budget and the rules that fire are
//! checked against hand-computed values; state changes queue exactly one notification each.

use std::sync::Arc;

use tracelight_alerts::{ChannelKind, Route, SloEngine};
use tracelight_collector::decode::{DecodeContext, ItemLimits, traces_to_arrow};
use tracelight_model::slo::{RuleState, Sli, SloSpec, SloStore, default_rules};
use tracelight_model::telemetry::Registry;
use tracelight_model::{BatchSink, Tenant};
use tracelight_storage::Catalog;

use crate::dataset::{self, HOUR, S, T0};

const MIN: i64 = 60_000_000_000;
/// "Now": four days after the dataset's origin, on a minute boundary.
const NOW: i64 = T0 + 96 * HOUR;

fn span(n: usize, service: &'static str, name: &str, start: i64, error: bool) -> S {
    S {
        trace: format!("{:032x}", 0xabc0_0000_0000u64 + n as u64),
        span: format!("{:016x}", n as u64 + 1),
        parent: None,
        service,
        name: name.into(),
        kind: "SERVER",
        start,
        dur: 1_000_000,
        error,
        status_code: if error { 500 } else { 200 },
    }
}

/// The last 6 hours: 10 `POST /checkout` spans a minute; in the last hour 2 of each 10 fail.
/// Noise the SLO must not count: failing health checks, and failures of another service.
fn traffic(from_min: i64, to_min: i64, bad_from_min: i64, offset: usize) -> Vec<S> {
    let mut out = Vec::new();
    for m in from_min..to_min {
        let t = NOW + m * MIN;
        for k in 0..10 {
            let bad = m >= bad_from_min && k < 2;
            out.push(span(offset + out.len(), "checkout", "POST /checkout", t + k * 1_000_000_000, bad));
        }
        out.push(span(offset + out.len(), "checkout", "GET /health", t + 30_000_000_000, true));
        out.push(span(offset + out.len(), "payment", "POST /checkout", t + 31_000_000_000, true));
    }
    out
}

fn spec(filter: &str) -> SloSpec {
    let window_ns = 30 * 24 * HOUR;
    SloSpec {
        name: "checkout-avail".into(),
        tenant: Tenant::default(),
        service: "checkout".into(),
        objective: 99.0,
        window_ns,
        sli: Sli::ErrorRatio { filter: Some(filter.into()) },
        rules: default_rules(window_ns),
        min_events: 10,
        notify: vec!["oncall".into()],
    }
}

#[tokio::test]
async fn burn_rates_budget_and_alerts_from_backfilled_spans() {
    let fx = crate::Fixture::empty().await;
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: NOW, limits: ItemLimits::default() };
    let older = traffic(-360, -180, -60, 0);
    let newer = traffic(-180, 0, -60, 100_000);
    fx.head.consume(1, vec![traces_to_arrow(&dataset::spans_request(&older), &ctx).batch]);
    fx.flusher.flush_once().await.unwrap();
    fx.head.consume(2, vec![traces_to_arrow(&dataset::spans_request(&newer), &ctx).batch]);

    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}/slo.db", dir.path().display())).await.unwrap();
    catalog.migrate().await.unwrap();
    let store: Arc<dyn SloStore> = Arc::new(catalog.clone());
    let channels = vec![Route { name: "oncall".into(), kind: ChannelKind::Slack }];
    let engine: Arc<dyn tracelight_model::QueryService> = Arc::new(fx.engine);
    let slos = SloEngine::new(
        vec![spec("name = 'POST /checkout'")],
        Some(store.clone()),
        engine.clone(),
        channels.clone(),
        "http://ui.example".into(),
    );
    slos.tick(NOW).await;
    assert_eq!(slos.error("checkout-avail"), None);
    let s = slos.status("checkout-avail").unwrap();
    // 3,600 events in 6 h; 120 bad, all in the last hour (20% there); budget 1%.
    assert_eq!((s.events, s.bad_events), (3600, 120));
    let burn = |w: &str| s.burn_rates[w].unwrap();
    for (w, want) in [
        ("5m", 20.0),
        ("30m", 20.0),
        ("1h", 20.0),
        ("2h", 10.0),
        ("6h", 10.0 / 3.0),
        ("24h", 10.0 / 3.0),
        ("3d", 10.0 / 3.0),
    ] {
        assert!((burn(w) - want).abs() < 1e-9, "{w}: {} != {want}", burn(w));
    }
    assert!((s.budget_remaining.unwrap() - (1.0 - 10.0 / 3.0)).abs() < 1e-9);
    assert!((s.sli.unwrap() - 3480.0 / 3600.0).abs() < 1e-12);
    // 14.4× over 1h and 5m: page. 6× over 6h (3.33×): no. 3× over 24h and 2h: ticket. 1× over 3d and 6h: ticket.
    let states: Vec<RuleState> = s.alerts.iter().map(|a| a.state).collect();
    assert_eq!(states, vec![RuleState::Firing, RuleState::Ok, RuleState::Firing, RuleState::Firing]);

    // Each firing rule queued one Slack message; evaluating again queues nothing more.
    let queued = store.pending_notifications(100).await.unwrap();
    assert_eq!(queued.len(), 3, "{queued:?}");
    let page = queued.iter().find(|n| n.alert_key == "checkout-avail/page/1h/5m").unwrap();
    let body: serde_json::Value = serde_json::from_str(&page.payload).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("[PAGE] SLO checkout-avail is burning its error budget: 20.00× over 1h and 20.00× over 5m"),
        "{text}"
    );
    assert!(
        text.contains("333.3% of the 30d budget consumed")
            && text.contains("<http://ui.example/slos/checkout-avail|Open the SLO>"),
        "{text}"
    );
    slos.tick(NOW).await;
    assert_eq!(store.pending_notifications(100).await.unwrap().len(), 3);

    // An hour and five minutes of healthy traffic later the page resolves (one message, after
    // the firing one); the tickets' longer windows still burn.
    let later = traffic(0, 65, i64::MAX, 200_000);
    let ctx = DecodeContext { now_ns: NOW + 65 * MIN, ..ctx };
    fx.head.consume(3, vec![traces_to_arrow(&dataset::spans_request(&later), &ctx).batch]);
    slos.tick(NOW + 65 * MIN).await;
    let s = slos.status("checkout-avail").unwrap();
    assert_eq!(s.burn_rates["1h"], Some(0.0));
    assert_eq!(s.alerts[0].state, RuleState::Ok);
    let queued = store.pending_notifications(100).await.unwrap();
    let page: Vec<&str> =
        queued.iter().filter(|n| n.alert_key == "checkout-avail/page/1h/5m").map(|n| n.state.as_str()).collect();
    assert_eq!(page, vec!["firing", "resolved"]);

    // A changed definition rebuilds the counts from the stored spans: the health checks.
    let health = SloEngine::new(vec![spec("name = 'GET /health'")], Some(store), engine, channels, String::new());
    health.tick(NOW + 65 * MIN).await;
    let s = health.status("checkout-avail").unwrap();
    assert_eq!((s.events, s.bad_events), (425, 425));
}

/// A rule whose windows fall silent keeps its last state: thin or absent traffic neither pages
/// nor resolves a page.
#[tokio::test]
async fn insufficient_data_keeps_the_last_state() {
    let fx = crate::Fixture::empty().await;
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: NOW, limits: ItemLimits::default() };
    fx.head.consume(1, vec![traces_to_arrow(&dataset::spans_request(&traffic(-60, 0, -60, 0)), &ctx).batch]);
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}/slo.db", dir.path().display())).await.unwrap();
    catalog.migrate().await.unwrap();
    let store: Arc<dyn SloStore> = Arc::new(catalog);
    let channels = vec![Route { name: "oncall".into(), kind: ChannelKind::Slack }];
    let engine: Arc<dyn tracelight_model::QueryService> = Arc::new(fx.engine);
    let slos =
        SloEngine::new(vec![spec("name = 'POST /checkout'")], Some(store.clone()), engine, channels, String::new());
    slos.tick(NOW).await;
    let page = |s: &tracelight_model::slo::SloStatus| s.alerts[0].state;
    assert_eq!(page(&slos.status("checkout-avail").unwrap()), RuleState::Firing);
    // Three hours later nothing has arrived: the 1 h and 5 m windows have no events.
    slos.tick(NOW + 180 * MIN).await;
    let s = slos.status("checkout-avail").unwrap();
    assert_eq!(page(&s), RuleState::InsufficientData);
    assert_eq!(s.burn_rates["1h"], None);
    let states = store.alert_states("checkout-avail").await.unwrap();
    assert_eq!(states["checkout-avail/page/1h/5m"].0, "firing", "the page stays firing, not resolved");
    let queued = store.pending_notifications(100).await.unwrap();
    assert!(queued.iter().all(|n| n.state == "firing"), "no resolved message: {queued:?}");
}

/// Spans that arrive long after their event time (a collector's retry queue draining after an
/// outage, WAL replay after a restart) are counted exactly once, whether they are still in the
/// head or already flushed, and across a restart of the evaluator. Once, the minutes of such
/// spans were never recounted: a 1 h burn rate of 58-64 instead of 50.
#[tokio::test]
async fn late_spans_are_counted_exactly_once_whatever_their_arrival_order() {
    let fx = crate::Fixture::empty().await;
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: NOW, limits: ItemLimits::default() };
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}/slo.db", dir.path().display())).await.unwrap();
    catalog.migrate().await.unwrap();
    let store: Arc<dyn SloStore> = Arc::new(catalog);
    let engine: Arc<dyn tracelight_model::QueryService> = Arc::new(fx.engine);
    let evaluator = || {
        SloEngine::new(
            vec![spec("name = 'POST /checkout'")],
            Some(store.clone()),
            engine.clone(),
            vec![],
            String::new(),
        )
    };

    // Nothing has arrived yet when the evaluator first counts.
    let slos = evaluator();
    slos.tick(NOW).await;
    assert_eq!(slos.status("checkout-avail").unwrap().events, 0);

    // Then 50 minutes of spans arrive at once, all older than the re-counted last minutes:
    // 10 a minute, 2 of them bad in the first 25 minutes (4% bad over the hour before now).
    let late = traffic(-50, 0, i64::MAX, 0)
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            if s.name == "POST /checkout" && (s.start - (NOW - 50 * MIN)) < 25 * MIN && i % 12 < 2 {
                s.error = true;
                s.status_code = 500;
            }
            s
        })
        .collect::<Vec<_>>();
    let bad = late.iter().filter(|s| s.name == "POST /checkout" && s.service == "checkout" && s.error).count() as u64;
    assert!(bad > 0);
    let (first, second) = late.split_at(late.len() / 2);
    fx.head.consume(1, vec![traces_to_arrow(&dataset::spans_request(first), &ctx).batch]);
    fx.flusher.flush_once().await.unwrap();
    fx.head.consume(2, vec![traces_to_arrow(&dataset::spans_request(second), &ctx).batch]);
    slos.tick(NOW + MIN).await;
    let s = slos.status("checkout-avail").unwrap();
    assert_eq!((s.events, s.bad_events), (500, bad), "one tick later, head and segments both counted");

    // Flushed, evaluated again and by a restarted evaluator: still exactly once.
    fx.flusher.flush_once().await.unwrap();
    slos.tick(NOW + 2 * MIN).await;
    let restarted = evaluator();
    restarted.tick(NOW + 3 * MIN).await;
    for e in [&slos, &restarted] {
        let s = e.status("checkout-avail").unwrap();
        assert_eq!((s.events, s.bad_events), (500, bad));
        let burn = s.burn_rates["1h"].unwrap();
        let want = bad as f64 / 500.0 / 0.01;
        assert!((burn - want).abs() < 1e-9, "1h burn {burn} != {want}");
    }
}

/// A receiver on 127.0.0.1 that answers 500 to its first `fail` requests, then 200, and
/// records every request (headers lower-cased, body, the status it answered).
/// One request the receiver saw: headers, body, the status it answered.
type Seen = (std::collections::BTreeMap<String, String>, String, u16);

struct Receiver {
    url: String,
    seen: Arc<parking_lot::Mutex<Vec<Seen>>>,
}

async fn receiver(fail: usize) -> Receiver {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let head = text[..i].to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0usize);
                    if buf.len() >= i + 4 + len {
                        break (head, String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string());
                    }
                }
            };
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
                .collect();
            let status = if log.lock().len() < fail { 500 } else { 200 };
            log.lock().push((headers, body, status));
            let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    Receiver { url, seen }
}

#[tokio::test]
async fn notifications_arrive_once_in_order_signed_through_retries_and_restarts() {
    use tracelight_alerts::deliver::sign;
    use tracelight_alerts::{Channel, Cidr, Notifier};
    let fx = crate::Fixture::empty().await;
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: NOW + 65 * MIN, limits: ItemLimits::default() };
    let mut spans = traffic(-360, 0, -60, 0);
    spans.extend(traffic(0, 65, i64::MAX, 200_000));
    let (before, after): (Vec<S>, Vec<S>) = spans.into_iter().partition(|s| s.start < NOW);
    fx.head.consume(1, vec![traces_to_arrow(&dataset::spans_request(&before), &ctx).batch]);
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}/slo.db", dir.path().display())).await.unwrap();
    catalog.migrate().await.unwrap();
    let store: Arc<dyn SloStore> = Arc::new(catalog);
    let mut s = spec("name = 'POST /checkout'");
    s.notify = vec!["hook".into()];
    let engine: Arc<dyn tracelight_model::QueryService> = Arc::new(fx.engine);
    let kinds = vec![Route { name: "hook".into(), kind: ChannelKind::Webhook }];
    let slos = SloEngine::new(vec![s], Some(store.clone()), engine, kinds, "http://ui.example".into());
    // Fires (3 rules); an hour later the page has resolved, and so has the 24h/2h ticket
    // (24 h: 120 bad of 4,250 is 2.8× < 3×).
    slos.tick(NOW).await;
    fx.head.consume(2, vec![traces_to_arrow(&dataset::spans_request(&after), &ctx).batch]);
    slos.tick(NOW + 65 * MIN).await;
    assert_eq!(store.pending_notifications(100).await.unwrap().len(), 5);

    let rx = receiver(2).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let channel =
        Channel { name: "hook".into(), kind: ChannelKind::Webhook, url: rx.url.clone(), secret: Some(secret.into()) };
    // Without an allow-list entry, 127.0.0.1 is refused and nothing is sent.
    let guarded = Notifier::new(vec![channel.clone()], Vec::new(), store.clone(), &Registry::new());
    assert_eq!(guarded.deliver_due(NOW + 65 * MIN).await, 0);
    assert!(rx.seen.lock().is_empty());
    // Allowed, through two failures and a restart (a new notifier on the same outbox) per
    // round; time moves an hour a round so every backoff has passed.
    let allow = vec![Cidr::parse("127.0.0.1/32").unwrap()];
    let mut now = NOW + 65 * MIN;
    for _ in 0..10 {
        now += 60 * MIN;
        let notifier = Notifier::new(vec![channel.clone()], allow.clone(), store.clone(), &Registry::new());
        notifier.deliver_due(now).await;
        if store.pending_notifications(100).await.unwrap().is_empty() {
            break;
        }
    }
    assert!(store.pending_notifications(100).await.unwrap().is_empty());
    let seen = rx.seen.lock().clone();
    let delivered: Vec<&Seen> = seen.iter().filter(|r| r.2 == 200).collect();
    assert_eq!(seen.len(), 7, "two refused by the receiver, then five delivered");
    assert_eq!(delivered.len(), 5);
    let mut ids: Vec<&str> = delivered.iter().map(|r| r.0["webhook-id"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each message exactly once");
    for (headers, body, _) in &delivered {
        let ts: i64 = headers["webhook-timestamp"].parse().unwrap();
        assert_eq!(headers["webhook-signature"], sign(secret, &headers["webhook-id"], ts, body));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["type"].as_str().unwrap().starts_with("slo.alert."), "{v}");
        assert_eq!(v["id"], headers["webhook-id"].as_str(), "the body carries the message id too");
    }
    let page: Vec<String> = delivered
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.1).unwrap())
        .filter(|v| v["data"]["severity"] == "page")
        .map(|v| v["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(page, vec!["slo.alert.firing", "slo.alert.resolved"]);
}

/// Two cumulative counters of checkout, one point a minute for two hours: all requests (+10 a
/// minute) and good ones (+9 a minute, +5 in the last 10 minutes).
fn counters(k: i64) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let start = NOW - 120 * MIN;
    let t = (start + k * MIN) as u64;
    let good = 9 * k.min(110) + 5 * (k - 110).max(0);
    let counter = |name: &str, v: i64| Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                start_time_unix_nano: start as u64,
                time_unix_nano: t,
                value: Some(number_data_point::Value::AsInt(v)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let service = KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue("checkout".into())) }),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![service], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![counter("req.total", 10 * k), counter("req.good", good)],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test]
async fn metric_ratio_slis_count_counter_increases() {
    use tracelight_collector::decode::metrics_to_arrow;
    let fx = crate::Fixture::empty().await;
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: NOW, limits: ItemLimits::default() };
    for k in 0..=120 {
        fx.head.consume(k as u64 + 1, vec![metrics_to_arrow(&counters(k), &ctx).batch]);
    }
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&format!("sqlite://{}/slo.db", dir.path().display())).await.unwrap();
    catalog.migrate().await.unwrap();
    let mut s = spec("unused");
    s.sli = Sli::MetricRatio { good: "req.good".into(), total: "req.total".into() };
    s.notify.clear();
    let slos = SloEngine::new(vec![s], Some(Arc::new(catalog)), Arc::new(fx.engine), Vec::new(), String::new());
    slos.tick(NOW).await;
    assert_eq!(slos.error("checkout-avail"), None);
    let st = slos.status("checkout-avail").unwrap();
    // Point k counts the increase since point k−1 (point 0 is the series' start, at 0); the
    // point at "now" is in the minute still filling. So points 1..=119: 10 events each, 1 bad
    // up to point 110 and 5 bad after. Budget 1%.
    assert_eq!(st.events, 1190);
    assert_eq!(st.bad_events, 110 + 9 * 5);
    // 5 m: points 115..=119, half bad. 1 h: points 60..=119: 51 × 1 + 9 × 5 = 96 bad of 600.
    assert!((st.burn_rates["5m"].unwrap() - 50.0).abs() < 1e-9, "{:?}", st.burn_rates);
    assert!((st.burn_rates["1h"].unwrap() - 16.0).abs() < 1e-9, "{:?}", st.burn_rates);
}
