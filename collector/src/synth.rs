//! Realistic synthetic OTLP payloads for benchmarks and load tests: services calling each
//! other, HTTP and database spans with the usual semantic-convention attributes, logs with
//! trace context, and metrics of every kind. Deterministic for a given seed.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};

const SERVICES: &[&str] = &["frontend", "checkout", "payment", "cart", "shipping", "currency", "email", "ad"];
const ROUTES: &[&str] = &["/api/cart", "/api/checkout", "/api/products/{id}", "/api/currency", "/api/recommendations"];

/// A small deterministic generator (xorshift), so payloads are the same in every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn bytes<const N: usize>(&mut self) -> Vec<u8> {
        let mut v = Vec::with_capacity(N);
        while v.len() < N {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(N);
        v
    }
}

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(v.to_string())) })
}
fn i(v: i64) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::IntValue(v)) })
}
fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue { key: k.to_string(), value: v, ..Default::default() }
}

fn resource(service: &str, pod: u64) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("service.version", s("1.14.2")),
            kv("deployment.environment", s("production")),
            kv("host.name", s(&format!("node-{}", pod % 4))),
            kv("k8s.pod.name", s(&format!("{service}-7d9f8b-{pod:05}"))),
            kv("telemetry.sdk.language", s("go")),
            kv("telemetry.sdk.name", s("opentelemetry")),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "go.opentelemetry.io/contrib/net/http".into(),
        version: "0.49.0".into(),
        ..Default::default()
    })
}

/// A traces request of `spans` spans from one service, in traces of 4 (server, two client
/// calls, one database query), starting at `start_ns`.
pub fn traces(rng: &mut Rng, spans: usize, start_ns: u64) -> ExportTraceServiceRequest {
    let service = SERVICES[rng.below(SERVICES.len() as u64) as usize];
    let mut out = Vec::with_capacity(spans);
    while out.len() < spans {
        let trace_id = rng.bytes::<16>();
        let root_id = rng.bytes::<8>();
        let t0 = start_ns + rng.below(1_000_000_000);
        let route = ROUTES[rng.below(ROUTES.len() as u64) as usize];
        let dur = 2_000_000 + rng.below(300_000_000);
        let error = rng.below(50) == 0;
        let status_code = if error { 500 } else { 200 };
        out.push(Span {
            trace_id: trace_id.clone(),
            span_id: root_id.clone(),
            name: format!("GET {route}"),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: t0,
            end_time_unix_nano: t0 + dur,
            attributes: vec![
                kv("http.request.method", s("GET")),
                kv("http.route", s(route)),
                kv("http.response.status_code", i(status_code)),
                kv("url.scheme", s("http")),
                kv("server.address", s("frontend.prod.svc")),
                kv("network.protocol.version", s("1.1")),
                kv("user_agent.original", s("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0")),
                kv("client.address", s(&format!("10.0.{}.{}", rng.below(255), rng.below(255)))),
            ],
            status: Some(Status {
                code: if error { status::StatusCode::Error as i32 } else { status::StatusCode::Unset as i32 },
                message: if error { "upstream timeout".into() } else { String::new() },
            }),
            ..Default::default()
        });
        for (k, name) in ["GET /cart", "POST /charge", "SELECT orders"].iter().enumerate() {
            if out.len() >= spans {
                break;
            }
            let cs = t0 + 100_000 * (k as u64 + 1);
            let cd = 500_000 + rng.below(dur / 4);
            let mut attrs = if k == 2 {
                vec![
                    kv("db.system", s("postgresql")),
                    kv("db.name", s("orders")),
                    kv(
                        "db.statement",
                        s("SELECT id, total FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20"),
                    ),
                    kv("server.address", s("pg-primary.prod.svc")),
                ]
            } else {
                vec![
                    kv("http.request.method", s(if k == 0 { "GET" } else { "POST" })),
                    kv(
                        "url.full",
                        s(&format!("http://{}.prod.svc{}", SERVICES[k + 3], &name[name.find(' ').unwrap() + 1..])),
                    ),
                    kv("http.response.status_code", i(200)),
                    kv("server.address", s(&format!("{}.prod.svc", SERVICES[k + 3]))),
                ]
            };
            attrs.push(kv("thread.id", i(rng.below(64) as i64)));
            out.push(Span {
                trace_id: trace_id.clone(),
                span_id: rng.bytes::<8>(),
                parent_span_id: root_id.clone(),
                name: (*name).to_string(),
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: cs,
                end_time_unix_nano: cs + cd,
                attributes: attrs,
                status: Some(Status::default()),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service, rng.below(20)),
            scope_spans: vec![ScopeSpans { scope: scope(), spans: out, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// Spans `first..first + n` of one large trace `trace_id` (span `k`'s parent is `(k - 1) / 8`,
/// so the trace is an 8-ary tree 1 s long), from services taking turns by depth, starting
/// at `start_ns`. Sent in several requests, it makes the huge traces the UI must survive.
pub fn big_trace(trace_id: [u8; 16], first: u64, n: u64, start_ns: u64) -> ExportTraceServiceRequest {
    let id = |k: u64| (k + 1).to_be_bytes().to_vec();
    let depth = |mut k: u64| {
        let mut d = 0;
        while k > 0 {
            k = (k - 1) / 8;
            d += 1;
        }
        d
    };
    let spans = (first..first + n)
        .map(|k| {
            let d = depth(k);
            let t0 = start_ns + (k % 8) * 1_000_000 + d * 5_000_000;
            let dur = 1_000_000_000 / (1 + d * 4);
            Span {
                trace_id: trace_id.to_vec(),
                span_id: id(k),
                parent_span_id: if k == 0 { vec![] } else { id((k - 1) / 8) },
                name: format!("step {k}"),
                kind: if k == 0 { span::SpanKind::Server as i32 } else { span::SpanKind::Internal as i32 },
                start_time_unix_nano: t0,
                end_time_unix_nano: t0 + dur,
                attributes: vec![kv("step", i(k as i64)), kv("depth", i(d as i64))],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(SERVICES[0], 0),
            scope_spans: vec![ScopeSpans { scope: scope(), spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A logs request of `records` log records with trace context (four per trace), three
/// attributes and bodies of about 200 bytes: a message from a handful of templates followed
/// by key=value fields, the way structured loggers print them (repetitive text, a few
/// high-entropy numbers).
pub fn logs(rng: &mut Rng, records: usize, start_ns: u64) -> ExportLogsServiceRequest {
    let service = SERVICES[rng.below(SERVICES.len() as u64) as usize];
    let messages = [
        "request completed",
        "cache miss for key user:session",
        "payment authorised",
        "retrying upstream call after timeout",
        "order persisted",
        "connection reset by peer",
    ];
    let regions = ["eu-west-1", "us-east-1", "ap-south-1"];
    // A request logs a few lines: four records per trace, from two of its spans.
    let (mut trace_id, mut span_ids, mut t_trace) = (Vec::new(), [Vec::new(), Vec::new()], 0);
    let log_records = (0..records)
        .map(|k| {
            if k % 4 == 0 {
                trace_id = rng.bytes::<16>();
                span_ids = [rng.bytes::<8>(), rng.bytes::<8>()];
                t_trace = start_ns + rng.below(1_000_000_000);
            }
            let sev = [9, 9, 9, 13, 17][rng.below(5) as usize];
            let t = t_trace + (k % 4) as u64 * 50_000 + rng.below(50_000);
            let route = ROUTES[rng.below(ROUTES.len() as u64) as usize];
            let body = format!(
                "{} method={} route={route} status={} duration_ms={} user_id={} order_id={} region={} \
                 upstream={}.prod.svc:8080 retries={} cache={} build=1.14.2",
                messages[rng.below(6) as usize],
                ["GET", "POST"][rng.below(2) as usize],
                if sev == 17 { 500 } else { 200 },
                rng.below(2_000),
                rng.below(50_000),
                rng.below(1_000_000),
                regions[rng.below(3) as usize],
                SERVICES[rng.below(SERVICES.len() as u64) as usize],
                rng.below(3),
                ["hit", "miss"][rng.below(2) as usize],
            );
            LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: t + 1_000,
                severity_number: sev,
                severity_text: match sev {
                    9 => "INFO",
                    13 => "WARN",
                    _ => "ERROR",
                }
                .into(),
                body: s(&body),
                attributes: vec![
                    kv("code.function", s("handleCheckout")),
                    kv("code.filepath", s("internal/checkout/handler.go")),
                    kv("http.route", s(route)),
                ],
                trace_id: trace_id.clone(),
                span_id: span_ids[(k % 4) / 2].clone(),
                flags: 1,
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service, rng.below(20)),
            scope_logs: vec![ScopeLogs { scope: scope(), log_records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A metrics request of about `points` data points: counters, gauges and histograms by route.
pub fn metrics(rng: &mut Rng, points: usize, time_ns: u64) -> ExportMetricsServiceRequest {
    let service = SERVICES[rng.below(SERVICES.len() as u64) as usize];
    let mut list = Vec::new();
    let mut n = 0;
    while n < points {
        let route = ROUTES[rng.below(ROUTES.len() as u64) as usize];
        let attrs = vec![
            kv("http.route", s(route)),
            kv("http.request.method", s("GET")),
            kv("http.response.status_code", i(200)),
        ];
        let which = n % 3;
        let data = match which {
            0 => metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: attrs,
                    start_time_unix_nano: time_ns - 60_000_000_000,
                    time_unix_nano: time_ns,
                    value: Some(number_data_point::Value::AsInt(rng.below(100_000) as i64)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            1 => metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    attributes: attrs,
                    time_unix_nano: time_ns,
                    value: Some(number_data_point::Value::AsDouble(rng.below(1000) as f64 / 10.0)),
                    ..Default::default()
                }],
            }),
            _ => {
                let buckets: Vec<u64> = (0..15).map(|_| rng.below(40)).collect();
                metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: attrs,
                        start_time_unix_nano: time_ns - 60_000_000_000,
                        time_unix_nano: time_ns,
                        count: buckets.iter().sum(),
                        sum: Some(12.5),
                        // The semantic conventions' advice for http.server.request.duration.
                        explicit_bounds: vec![
                            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                        ],
                        bucket_counts: buckets,
                        exemplars: vec![Exemplar {
                            time_unix_nano: time_ns,
                            value: Some(exemplar::Value::AsDouble(0.042)),
                            trace_id: rng.bytes::<16>(),
                            span_id: rng.bytes::<8>(),
                            ..Default::default()
                        }],
                        min: Some(0.001),
                        max: Some(0.9),
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })
            }
        };
        let name = ["http.server.request.count", "process.cpu.utilization", "http.server.request.duration"][which];
        list.push(Metric {
            name: name.into(),
            unit: ["1", "1", "s"][which].into(),
            data: Some(data),
            ..Default::default()
        });
        n += 1;
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service, rng.below(20)),
            scope_metrics: vec![ScopeMetrics { scope: scope(), metrics: list, ..Default::default() }],
            ..Default::default()
        }],
    }
}
