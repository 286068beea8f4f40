//! A fixed generated dataset of traces and logs whose true answers the tests compute
//! independently: every record is also kept as a plain Rust value the oracles read.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use tracelight_collector::synth::Rng;

/// 2026-11-01T00:00:00Z: the dataset covers the three hours after it.
pub const T0: i64 = 1_793_491_200_000_000_000;
pub const HOUR: i64 = 3_600_000_000_000;

#[derive(Debug, Clone)]
pub struct S {
    pub trace: String,
    pub span: String,
    pub parent: Option<String>,
    pub service: &'static str,
    pub name: String,
    pub kind: &'static str,
    pub start: i64,
    pub dur: i64,
    pub error: bool,
    pub status_code: i64,
}

#[derive(Debug, Clone)]
pub struct L {
    pub id: usize,
    pub time: i64,
    pub service: &'static str,
    pub severity: &'static str,
    pub body: String,
    pub user: u64,
    pub trace: Option<String>,
}

pub struct Dataset {
    pub spans: Vec<S>,
    pub logs: Vec<L>,
}

const WORDS: &[&str] = &[
    "payment",
    "timeout",
    "connection",
    "reset",
    "retry",
    "cache",
    "order",
    "user",
    "checkout",
    "failed",
    "queue",
    "latency",
    "upstream",
    "card",
    "declined",
    "inventory",
];
const ROUTES: &[&str] = &["POST /checkout", "GET /cart", "GET /products", "POST /charge"];

fn hex(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::new();
    while s.len() < bytes * 2 {
        s.push_str(&format!("{:016x}", rng.next_u64()));
    }
    s.truncate(bytes * 2);
    s
}

/// 400 traces of 3–6 spans across services, and 3,000 log records, over three hours.
pub fn generate() -> Dataset {
    let mut rng = Rng::new(20261101);
    let mut spans = Vec::new();
    for _ in 0..400 {
        let trace = hex(&mut rng, 16);
        let start = T0 + (rng.below(3 * 3600 - 10) as i64) * 1_000_000_000 + rng.below(1_000_000_000) as i64;
        let route = ROUTES[rng.below(ROUTES.len() as u64) as usize];
        let root = hex(&mut rng, 8);
        let root_dur = 5_000_000 + rng.below(900_000_000) as i64;
        let fail = rng.below(6) == 0;
        spans.push(S {
            trace: trace.clone(),
            span: root.clone(),
            parent: None,
            service: "frontend",
            name: route.to_string(),
            kind: "SERVER",
            start,
            dur: root_dur,
            error: fail,
            status_code: if fail { 503 } else { 200 },
        });
        // frontend -> checkout (client + server), checkout -> payment sometimes, -> db.
        let client = hex(&mut rng, 8);
        let c_start = start + 1_000_000;
        let c_dur = root_dur / 2 + rng.below(1_000_000) as i64;
        spans.push(S {
            trace: trace.clone(),
            span: client.clone(),
            parent: Some(root.clone()),
            service: "frontend",
            name: "POST /checkout".into(),
            kind: "CLIENT",
            start: c_start,
            dur: c_dur,
            error: fail,
            status_code: if fail { 503 } else { 200 },
        });
        let server = hex(&mut rng, 8);
        spans.push(S {
            trace: trace.clone(),
            span: server.clone(),
            parent: Some(client),
            service: "checkout",
            name: "POST /checkout".into(),
            kind: "SERVER",
            start: c_start + 200_000,
            dur: c_dur - 400_000,
            error: fail,
            status_code: if fail { 503 } else { 200 },
        });
        if rng.below(2) == 0 {
            let pay_fail = fail && rng.below(2) == 0;
            spans.push(S {
                trace: trace.clone(),
                span: hex(&mut rng, 8),
                parent: Some(server.clone()),
                service: "payment",
                name: "charge".into(),
                kind: "SERVER",
                start: c_start + 300_000,
                dur: 1_000_000 + rng.below(200_000_000) as i64,
                error: pay_fail,
                status_code: if pay_fail { 402 } else { 200 },
            });
        }
        for _ in 0..rng.below(3) {
            spans.push(S {
                trace: trace.clone(),
                span: hex(&mut rng, 8),
                parent: Some(server.clone()),
                service: "checkout",
                name: "SELECT orders".into(),
                kind: "CLIENT",
                start: c_start + 500_000,
                dur: 100_000 + rng.below(20_000_000) as i64,
                error: false,
                status_code: 0,
            });
        }
    }
    let mut logs = Vec::new();
    let services = ["frontend", "checkout", "payment"];
    let severities = ["INFO", "INFO", "WARN", "ERROR", "DEBUG"];
    for id in 0..3000 {
        let n = 3 + rng.below(5) as usize;
        let mut words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect();
        words.push("id");
        let body = format!("{} {id}", words.join(" "));
        let with_trace = rng.below(3) == 0;
        let s = &spans[rng.below(spans.len() as u64) as usize];
        logs.push(L {
            id,
            // Distinct times: the order newest-first is unambiguous.
            time: T0 + id as i64 * 3_500_000_000 + rng.below(1_000_000) as i64,
            service: services[rng.below(3) as usize],
            severity: severities[rng.below(5) as usize],
            body,
            user: rng.below(50),
            trace: with_trace.then(|| s.trace.clone()),
        });
    }
    Dataset { spans, logs }
}

fn sv(v: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) })
}

fn iv(v: i64) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::IntValue(v)) })
}

fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue { key: k.into(), value: v, ..Default::default() }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", sv(service))], ..Default::default() })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

pub fn spans_request(spans: &[S]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: spans
            .iter()
            .map(|s| ResourceSpans {
                resource: resource(s.service),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: unhex(&s.trace),
                        span_id: unhex(&s.span),
                        parent_span_id: s.parent.as_deref().map(unhex).unwrap_or_default(),
                        name: s.name.clone(),
                        kind: match s.kind {
                            "SERVER" => span::SpanKind::Server,
                            _ => span::SpanKind::Client,
                        } as i32,
                        start_time_unix_nano: s.start as u64,
                        end_time_unix_nano: (s.start + s.dur) as u64,
                        attributes: if s.status_code == 0 {
                            vec![kv("db.system", sv("postgresql"))]
                        } else {
                            vec![kv("http.response.status_code", iv(s.status_code))]
                        },
                        status: Some(Status {
                            code: if s.error { status::StatusCode::Error } else { status::StatusCode::Unset } as i32,
                            message: String::new(),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

pub fn logs_request(logs: &[L]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: logs
            .iter()
            .map(|l| ResourceLogs {
                resource: resource(l.service),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: l.time as u64,
                        severity_text: l.severity.into(),
                        body: sv(&l.body),
                        attributes: vec![kv("user.id", sv(&l.user.to_string()))],
                        trace_id: l.trace.as_deref().map(unhex).unwrap_or_default(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}
