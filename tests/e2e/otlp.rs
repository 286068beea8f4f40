//! OTLP payload builders for the end-to-end tests.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
    exemplar, exponential_histogram_data_point, metric, number_data_point, summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};

/// Nanoseconds of a fixed, recent instant (2026-11-01T00:00:00Z) so partitions are stable.
pub const T0: u64 = 1_793_491_200_000_000_000;

pub fn s(v: &str) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(v.into())) }
}

pub fn i(v: i64) -> AnyValue {
    AnyValue { value: Some(any_value::Value::IntValue(v)) }
}

pub fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue { key: k.into(), value: Some(v), ..Default::default() }
}

pub fn resource(service: &str) -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", s(service)), kv("host.name", s("e2e"))], ..Default::default() })
}

pub fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope { name: "e2e-scope".into(), version: "1.2.3".into(), ..Default::default() })
}

/// A trace ID whose 16 bytes encode `n` (never all zero).
pub fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0xabu8; 8];
    id.extend_from_slice(&n.to_be_bytes());
    id
}

pub fn span_id(n: u64) -> Vec<u8> {
    (n + 1).to_be_bytes().to_vec()
}

/// One span tagged with `seq`; `error` sets status ERROR.
pub fn span(trace: u64, id: u64, parent: Option<u64>, name: &str, seq: i64, error: bool) -> Span {
    let start = T0 + seq as u64 * 1000;
    Span {
        trace_id: trace_id(trace),
        span_id: span_id(id),
        parent_span_id: parent.map(span_id).unwrap_or_default(),
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 250_000,
        attributes: vec![kv("seq", i(seq)), kv("http.route", s("/checkout/{id}"))],
        status: Some(Status {
            code: if error { status::StatusCode::Error as i32 } else { status::StatusCode::Ok as i32 },
            message: if error { "boom".into() } else { String::new() },
        }),
        ..Default::default()
    }
}

pub fn traces(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans { scope: scope(), spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// `n` spans with seq `first..first+n`, one trace per 10 spans.
pub fn seq_traces(service: &str, first: i64, n: i64) -> ExportTraceServiceRequest {
    let spans = (first..first + n).map(|q| span(q as u64 / 10, q as u64, None, "GET /seq", q, false)).collect();
    traces(service, spans)
}

/// A span with an event and a link, to check nested columns.
pub fn rich_span() -> Span {
    let mut sp = span(7, 70, Some(69), "POST /checkout", 1, true);
    sp.events = vec![span::Event {
        time_unix_nano: T0 + 1500,
        name: "exception".into(),
        attributes: vec![kv("exception.type", s("Timeout"))],
        dropped_attributes_count: 0,
    }];
    sp.links = vec![span::Link { trace_id: trace_id(8), span_id: span_id(80), ..Default::default() }];
    sp
}

pub fn logs(service: &str, first: i64, n: i64) -> ExportLogsServiceRequest {
    let records = (first..first + n)
        .map(|q| LogRecord {
            time_unix_nano: T0 + q as u64 * 1000,
            observed_time_unix_nano: T0 + q as u64 * 1000 + 5,
            severity_number: 17,
            severity_text: "ERROR".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("msg", s("payment timeout")), kv("attempt", i(q))],
                })),
            }),
            attributes: vec![kv("seq", i(q))],
            trace_id: trace_id(7),
            span_id: span_id(70),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs { scope: scope(), log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// An array-bodied log record.
pub fn array_log(service: &str) -> ExportLogsServiceRequest {
    let mut req = logs(service, 0, 1);
    req.resource_logs[0].scope_logs[0].log_records[0].body =
        Some(AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![s("a"), i(2)] })) });
    req
}

/// `n` gauge points with seq `first..first+n`, one series each.
pub fn seq_metrics(service: &str, first: i64, n: i64) -> ExportMetricsServiceRequest {
    let points = (first..first + n)
        .map(|q| NumberDataPoint {
            attributes: vec![kv("seq", i(q))],
            time_unix_nano: T0 + q as u64 * 1000,
            value: Some(number_data_point::Value::AsDouble(q as f64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![Metric {
                    name: "seq.gauge".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points: points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One point of each of the five metric kinds (a histogram with an exemplar on trace 7).
/// The gauge is NaN except for JSON, whose encoder here writes non-finite numbers as null.
pub fn metrics(service: &str) -> ExportMetricsServiceRequest {
    let gauge = if service.contains("json") { 21.5 } else { f64::NAN };
    let attrs = vec![kv("route", s("/checkout"))];
    let m = |name: &str, data: metric::Data| Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(data),
        ..Default::default()
    };
    let list = vec![
        m(
            "requests",
            metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: attrs.clone(),
                    start_time_unix_nano: T0 - 1000,
                    time_unix_nano: T0,
                    value: Some(number_data_point::Value::AsInt(42)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        ),
        m(
            "temperature",
            metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: T0,
                    value: Some(number_data_point::Value::AsDouble(gauge)),
                    ..Default::default()
                }],
            }),
        ),
        m(
            "latency",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attrs.clone(),
                    time_unix_nano: T0,
                    count: 6,
                    sum: Some(1.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![0.1, 0.5],
                    exemplars: vec![Exemplar {
                        time_unix_nano: T0,
                        value: Some(exemplar::Value::AsDouble(0.7)),
                        trace_id: trace_id(7),
                        span_id: span_id(70),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
            }),
        ),
        m(
            "latency_exp",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: T0,
                    count: 3,
                    scale: 2,
                    zero_count: 1,
                    positive: Some(exponential_histogram_data_point::Buckets { offset: 1, bucket_counts: vec![1, 1] }),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
            }),
        ),
        m(
            "rpc_summary",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: T0,
                    count: 10,
                    sum: 5.0,
                    quantile_values: vec![summary_data_point::ValueAtQuantile { quantile: 0.99, value: 0.9 }],
                    ..Default::default()
                }],
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics { scope: scope(), metrics: list, ..Default::default() }],
            ..Default::default()
        }],
    }
}
