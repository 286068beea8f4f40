//! The metrics explorer end to end through the engine: OTLP metric points decoded, half in
//! Parquet and half in the head, read back and aggregated per bucket; answers computed by hand.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tracelight_collector::decode::{DecodeContext, ItemLimits, metrics_to_arrow};
use tracelight_model::correlate::MetricQuery;
use tracelight_model::metrics::Aggregation;
use tracelight_model::{BatchSink, QueryService, Tenant};

use crate::dataset::T0;

const MIN: i64 = 60_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// Minute `k` (0..=10): route /a has 10 observations in (10, 20] and 10 in (20, 40] per
/// minute, /b 5 in (20, 40]; cumulative from T0. A counter adds 5 per minute. Minute 3 of /a
/// carries an exemplar naming a trace.
fn request(k: i64) -> ExportMetricsServiceRequest {
    let t = (T0 + k * MIN) as u64;
    let hist = |route: &str, b1: u64, b2: u64| HistogramDataPoint {
        attributes: vec![kv("http.route", route)],
        start_time_unix_nano: T0 as u64,
        time_unix_nano: t,
        count: (b1 + b2) * k as u64,
        sum: Some((15 * b1 + 30 * b2) as f64 * k as f64),
        bucket_counts: vec![0, b1 * k as u64, b2 * k as u64, 0],
        explicit_bounds: vec![10.0, 20.0, 40.0],
        exemplars: if route == "/a" && k == 3 {
            vec![Exemplar {
                time_unix_nano: t - 1_000_000_000,
                trace_id: vec![0xab; 16],
                span_id: vec![0xcd; 8],
                value: Some(exemplar::Value::AsDouble(37.5)),
                ..Default::default()
            }]
        } else {
            vec![]
        },
        ..Default::default()
    };
    let metrics = vec![
        Metric {
            name: "http.latency".into(),
            unit: "ms".into(),
            description: "request latency".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![hist("/a", 10, 10), hist("/b", 0, 5)],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        },
        Metric {
            name: "http.requests".into(),
            unit: "1".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    start_time_unix_nano: T0 as u64,
                    time_unix_nano: t,
                    value: Some(number_data_point::Value::AsInt(5 * k)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("service.name", "checkout")], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test]
async fn metric_charts_aggregate_stored_points_per_bucket() {
    let fx = crate::Fixture::empty().await;
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: T0, limits: ItemLimits::default() };
    for k in 0..=10 {
        let d = metrics_to_arrow(&request(k), &ctx);
        assert_eq!(d.rejected, 0);
        fx.head.consume(k as u64 + 1, vec![d.batch]);
        if k == 5 {
            fx.flusher.flush_once().await.unwrap();
        }
    }
    check_charts(&fx.engine).await;
    // The same answers from one compacted segment: metric points are written sorted by series
    // and time, and merged in that order.
    fx.flusher.flush_once().await.unwrap();
    let registry = tracelight_model::telemetry::Registry::default();
    let config = tracelight_storage::CompactionConfig {
        min_age: std::time::Duration::ZERO,
        min_inputs: 2,
        ..Default::default()
    };
    let compactor =
        tracelight_storage::Compactor::new(fx.catalog.clone(), fx.store.clone(), "n1".into(), config, &registry);
    assert_eq!(compactor.compact_once().await.unwrap().merges, 1);
    let segments =
        fx.catalog.segments(&Tenant::default(), tracelight_model::Signal::Metrics, None, None).await.unwrap();
    assert_eq!(segments.len(), 1);
    check_charts(&fx.engine).await;
}

async fn check_charts(engine: &tracelight_engine::Engine) {
    let (start, end) = (T0 + MIN, T0 + 11 * MIN);
    let catalog = engine.metric_catalog(&Tenant::default(), start, end).await.unwrap();
    let names: Vec<(&str, &str, bool)> =
        catalog.metrics.iter().map(|m| (m.name.as_str(), m.kind.as_str(), m.monotonic)).collect();
    assert_eq!(names, vec![("http.latency", "histogram", false), ("http.requests", "sum", true)]);

    let chart = |name: &str, agg: Option<Aggregation>, group_by: Option<&str>| MetricQuery {
        name: name.into(),
        aggregation: agg,
        group_by: group_by.map(String::from),
        service: None,
        start_ns: start,
        end_ns: end,
        step_ns: 2 * MIN,
        tenant: Some(Tenant::default()),
    };
    // Two minutes per bucket: /a adds 40 observations (20 in each bucket), /b 10.
    let c = engine.metric_chart(chart("http.latency", Some(Aggregation::P50), Some("http.route"))).await.unwrap();
    let groups: Vec<(&str, Vec<Option<f64>>)> = c.series.iter().map(|s| (s.group.as_str(), s.values.clone())).collect();
    assert_eq!(groups, vec![("/a", vec![Some(20.0); 5]), ("/b", vec![Some(30.0); 5])]);
    assert!(c.attribute_keys.contains(&"http.route".to_string()) && c.attribute_keys.contains(&"service.name".into()));
    assert_eq!(c.exemplars.len(), 1);
    assert_eq!(c.exemplars[0].trace_id, "ab".repeat(16));
    assert_eq!(c.exemplars[0].value, Some(37.5));

    // Ungrouped p95 over both routes: 50 per bucket, [0, 20, 30, 0]: rank 47.5 lands in
    // (20, 40] at (47.5 - 20) / 30 → 20 + 20 × 0.91667 = 38.333.
    let c = engine.metric_chart(chart("http.latency", Some(Aggregation::P95), None)).await.unwrap();
    assert_eq!(c.series.len(), 1);
    for v in &c.series[0].values {
        assert!((v.unwrap() - 38.333_333).abs() < 1e-3, "{v:?}");
    }
    // Rate: 50 observations per 120 s.
    let c = engine.metric_chart(chart("http.latency", Some(Aggregation::Rate), None)).await.unwrap();
    assert!(c.series[0].values.iter().all(|v| (v.unwrap() - 50.0 / 120.0).abs() < 1e-9), "{:?}", c.series);
    // The counter's default is its rate: 10 per 120 s.
    let c = engine.metric_chart(chart("http.requests", None, None)).await.unwrap();
    assert_eq!(c.aggregation, Aggregation::Rate);
    assert!(c.series[0].values.iter().all(|v| (v.unwrap() - 10.0 / 120.0).abs() < 1e-9), "{:?}", c.series);
    // What does not apply is refused with the choices; an unknown metric is not found.
    let e = engine.metric_chart(chart("http.requests", Some(Aggregation::P99), None)).await.unwrap_err();
    assert!(e.to_string().contains("rate"), "{e}");
    let e = engine.metric_chart(chart("nope", None, None)).await.unwrap_err();
    assert!(matches!(e, tracelight_model::QueryError::NotFound(_)), "{e}");
}
