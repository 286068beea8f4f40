//! Hostile requests against the pure decoders: what a client controls must never size an
//! allocation beyond what it actually sent and what passed validation.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::test_util::{NOW_NS, ctx, kv, s};
use super::*;

const HOUR: i64 = 3_600_000_000_000;

/// A resource of `n` distinct attributes with `value_bytes`-byte values.
fn big_resource(n: usize, value_bytes: usize) -> Option<Resource> {
    let value = "v".repeat(value_bytes);
    Some(Resource { attributes: (0..n).map(|i| kv(&format!("k{i}"), s(&value))).collect(), ..Default::default() })
}

fn logs_request(resource: Option<Resource>, records: Vec<LogRecord>) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn span_at(i: u64, start: u64, end: u64) -> Span {
    let mut trace_id = vec![1u8; 16];
    trace_id[..8].copy_from_slice(&(i + 1).to_be_bytes());
    Span {
        trace_id,
        span_id: (i + 1).to_be_bytes().to_vec(),
        name: "s".into(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

fn traces_request(resource: Option<Resource>, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn gauge_request(resource: Option<Resource>, times: &[u64]) -> Vec<u8> {
    let points = times
        .iter()
        .map(|t| NumberDataPoint {
            time_unix_nano: *t,
            value: Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(1.0)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource,
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points: points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn reason(d: &Decoded, label: &str) -> u64 {
    d.reasons.iter().filter(|(l, _)| *l == label).map(|(_, n)| n).sum()
}

#[test]
fn empty_attributes_times_empty_records_do_not_size_an_allocation() {
    // The 13.7 KB gzipped request that aborted the process had 3.5M empty KeyValues on its
    // resource and 3.5M empty records: builders were pre-sized from the product (~2×10^14
    // bytes). 200,000 × 200,000 here: the same shape, pre-sized at 6×10^11 bytes before.
    let n = 200_000;
    let resource = Some(Resource { attributes: vec![KeyValue::default(); n], ..Default::default() });
    let body = logs_request(resource, vec![LogRecord::default(); n]);
    assert!(body.len() < 1_000_000, "{} bytes", body.len());
    let d = decode_logs(&body, Format::Protobuf, &ctx()).unwrap();
    assert_eq!(d.batch.num_rows() as u64 + d.rejected, n as u64);
    // What was built is proportional to what was received.
    assert!(d.batch.batch.get_array_memory_size() < 64 * body.len(), "{}", d.batch.batch.get_array_memory_size());
}

#[test]
fn a_large_resource_repeated_on_many_items_is_bounded_for_every_signal() {
    // 64 attributes of 1 KiB (64 KiB per item) on 20,000 empty items: 1.3 GB once expanded.
    let limits = ItemLimits { max_repeated_bytes: 4 << 20, ..ItemLimits::default() };
    let ctx = DecodeContext { limits, ..ctx() };
    let n = 20_000u64;
    let t = NOW_NS as u64;
    let logs = logs_request(
        big_resource(64, 1024),
        (0..n).map(|_| LogRecord { time_unix_nano: t, ..Default::default() }).collect(),
    );
    let spans = traces_request(big_resource(64, 1024), (0..n).map(|i| span_at(i, t, t + 1)).collect());
    let times: Vec<u64> = (0..n).map(|i| t + i).collect();
    let metrics = gauge_request(big_resource(64, 1024), &times);
    for (signal, body) in [(Signal::Logs, logs), (Signal::Spans, spans), (Signal::Metrics, metrics)] {
        let d = decode(signal, &body, Format::Protobuf, &ctx).unwrap();
        let kept = d.batch.num_rows() as u64;
        assert!(kept > 0 && kept < 100, "{signal:?}: {kept} items kept");
        assert_eq!(reason(&d, "resource_too_large"), n - kept, "{signal:?}");
        assert!(d.message.as_deref().unwrap().contains("expansion bound"), "{:?}", d.message);
        assert!(d.batch.batch.get_array_memory_size() < 16 << 20, "{signal:?}");
    }
}

#[test]
fn items_outside_the_accepted_window_are_rejected_per_item() {
    let limits = ItemLimits { max_past_ns: Some(24 * HOUR), max_future_ns: Some(HOUR), ..ItemLimits::default() };
    let ctx = DecodeContext { limits, ..ctx() };
    let now = NOW_NS as u64;
    let h = HOUR as u64;
    // (time, accepted?)
    let cases = [
        (now, true),
        (now - 23 * h, true),
        (now + h - 1, true),
        (now - 25 * h, false),
        (1, false),
        (now + 2 * h, false),
        (i64::MAX as u64, false),
    ];
    let times: Vec<u64> = cases.iter().map(|c| c.0).collect();
    let want_kept = cases.iter().filter(|c| c.1).count();

    let logs =
        logs_request(None, times.iter().map(|t| LogRecord { time_unix_nano: *t, ..Default::default() }).collect());
    let d = decode_logs(&logs, Format::Protobuf, &ctx).unwrap();
    assert_eq!(d.batch.num_rows(), want_kept);
    assert_eq!((reason(&d, "too_old"), reason(&d, "too_new")), (2, 2));
    assert!(d.message.as_deref().unwrap().contains("accept_past"), "{:?}", d.message);

    let spans = traces_request(None, times.iter().enumerate().map(|(i, t)| span_at(i as u64, *t, *t)).collect());
    let d = decode_traces(&spans, Format::Protobuf, &ctx).unwrap();
    assert_eq!(d.batch.num_rows(), want_kept);
    assert_eq!((reason(&d, "too_old"), reason(&d, "too_new")), (2, 2));
    // A span that starts in the window but ends far ahead is refused too.
    let spans = traces_request(None, vec![span_at(1, now, now + 10 * h)]);
    assert_eq!(reason(&decode_traces(&spans, Format::Protobuf, &ctx).unwrap(), "too_new"), 1);

    let d = decode_metrics(&gauge_request(None, &times), Format::Protobuf, &ctx).unwrap();
    assert_eq!(d.batch.num_rows(), want_kept);
    assert_eq!((reason(&d, "too_old"), reason(&d, "too_new")), (2, 2));

    // Without a window (replay of records acknowledged under another one, tests) all pass.
    let d = decode_logs(&logs, Format::Protobuf, &super::test_util::ctx()).unwrap();
    assert_eq!(d.batch.num_rows(), cases.len());
}
