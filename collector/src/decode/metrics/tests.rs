//! Tests of the metrics conversion.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampNanosecondType, UInt64Type};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;
use crate::decode::test_util::{ctx, fixture, kv, map_at, map_entries, owned, s, text, texts};
use crate::decode::{Format, decode_metrics, metrics_to_arrow};

const T0: u64 = 1_544_712_660_300_000_000;

fn metric(name: &str, data: metric::Data) -> Metric {
    Metric { name: name.to_string(), unit: "ms".into(), data: Some(data), ..Default::default() }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("service.name", s("db"))], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: "meter".into(), ..Default::default() }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn number(time: u64, value: Option<number_data_point::Value>) -> NumberDataPoint {
    NumberDataPoint { time_unix_nano: time, value, ..Default::default() }
}

fn f64s(b: &RecordBatch, col: &str) -> Vec<Option<f64>> {
    b.column_by_name(col).unwrap().as_primitive::<Float64Type>().iter().collect()
}

fn i64s(b: &RecordBatch, col: &str) -> Vec<Option<i64>> {
    b.column_by_name(col).unwrap().as_primitive::<Int64Type>().iter().collect()
}

fn u64s(b: &RecordBatch, col: &str) -> Vec<Option<u64>> {
    b.column_by_name(col).unwrap().as_primitive::<UInt64Type>().iter().collect()
}

fn i32s(b: &RecordBatch, col: &str) -> Vec<Option<i32>> {
    b.column_by_name(col).unwrap().as_primitive::<Int32Type>().iter().collect()
}

fn ts(b: &RecordBatch, col: &str) -> Vec<Option<i64>> {
    b.column_by_name(col).unwrap().as_primitive::<TimestampNanosecondType>().iter().collect()
}

fn bools(b: &RecordBatch, col: &str) -> Vec<Option<bool>> {
    b.column_by_name(col).unwrap().as_boolean().iter().collect()
}

/// The u64 list at `row`, `None` when the list is NULL.
fn u64_list(b: &RecordBatch, col: &str, row: usize) -> Option<Vec<u64>> {
    let l = b.column_by_name(col).unwrap().as_list::<i32>();
    if l.is_null(row) { None } else { Some(l.value(row).as_primitive::<UInt64Type>().values().to_vec()) }
}

fn f64_list(b: &RecordBatch, col: &str, row: usize) -> Option<Vec<f64>> {
    let l = b.column_by_name(col).unwrap().as_list::<i32>();
    if l.is_null(row) { None } else { Some(l.value(row).as_primitive::<Float64Type>().values().to_vec()) }
}

#[test]
fn fixture_metrics_load_unchanged_including_its_histogram() {
    let d = decode_metrics(&fixture("metrics.json"), Format::Json, &ctx()).unwrap();
    let b = &d.batch.batch;
    assert_eq!(b.schema(), Signal::Metrics.schema());
    assert_eq!((b.num_rows(), d.rejected), (3, 0));
    assert_eq!(d.message, None);
    let names = vec![Some("my.counter".to_string()), Some("my.gauge".to_string()), Some("my.histogram".to_string())];
    assert_eq!(texts(b, "name"), names);
    assert_eq!(
        texts(b, "kind"),
        vec![Some("sum".to_string()), Some("gauge".to_string()), Some("histogram".to_string())]
    );
    assert_eq!(texts(b, "temporality"), vec![Some("delta".to_string()), None, Some("delta".to_string())]);
    assert_eq!(bools(b, "is_monotonic"), vec![Some(true), None, None]);
    assert_eq!(text(b, "description", 0).as_deref(), Some("I`m a Counter"));
    assert_eq!(f64s(b, "value"), vec![Some(5.0), Some(10.0), None]);
    assert_eq!(i64s(b, "value_int"), vec![None, None, None]);
    assert_eq!(ts(b, "time"), vec![Some(T0 as i64); 3]);
    assert_eq!(ts(b, "start_time"), vec![Some(T0 as i64), None, Some(T0 as i64)]);
    assert_eq!(u64s(b, "count"), vec![None, None, Some(3)]);
    assert_eq!(f64s(b, "sum"), vec![None, None, Some(3.0)]);
    assert_eq!(u64_list(b, "bucket_counts", 0), None);
    // Stored as sent, although 3 counts for 1 bound is inconsistent.
    assert_eq!(u64_list(b, "bucket_counts", 2), Some(vec![1, 1, 1]));
    assert_eq!(f64_list(b, "explicit_bounds", 2), Some(vec![1.0]));
    assert_eq!(map_at(b, "attributes", 0), owned(&[("my.counter.attr", Some("some value"))]));
    assert_eq!(map_at(b, "attributes", 1), owned(&[("my.gauge.attr", Some("some value"))]));
    assert_eq!(texts(b, "service_name"), vec![Some("my.service".to_string()); 3]);
    let ex = b.column_by_name("exemplars").unwrap().as_list::<i32>();
    assert_eq!((ex.value_length(0), ex.value_length(1)), (0, 0));
    assert!(b.column_by_name("quantiles").unwrap().is_null(0));
}

#[test]
fn json_int_values_as_strings() {
    let body = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[
        {"timeUnixNano":"1000","asInt":"42"},{"timeUnixNano":2000,"asInt":-3}]}}]}]}]}"#;
    let d = decode_metrics(body, Format::Json, &ctx()).unwrap();
    let b = &d.batch.batch;
    assert_eq!(b.num_rows(), 2, "{:?}", d.message);
    assert_eq!(i64s(b, "value_int"), vec![Some(42), Some(-3)]);
    assert_eq!(f64s(b, "value"), vec![Some(42.0), Some(-3.0)]);
    assert_eq!(ts(b, "time"), vec![Some(1000), Some(2000)]);
    assert_eq!(texts(b, "service_name"), vec![Some("unknown_service".to_string()); 2]);
}

#[test]
fn number_points_values_and_rejections() {
    let gauge = metric(
        "g",
        metric::Data::Gauge(Gauge {
            data_points: vec![
                number(T0, Some(number_data_point::Value::AsInt(42))),
                number(T0, None),
                number(0, Some(number_data_point::Value::AsDouble(1.0))),
                number(T0 + 1, Some(number_data_point::Value::AsDouble(f64::NAN))),
                number(u64::MAX, Some(number_data_point::Value::AsDouble(1.0))),
            ],
        }),
    );
    let empty_sum =
        metric("empty", metric::Data::Sum(Sum { data_points: vec![], aggregation_temporality: 2, is_monotonic: true }));
    let no_data = Metric { name: "nodata".into(), ..Default::default() };
    let sum = metric(
        "s",
        metric::Data::Sum(Sum {
            data_points: vec![number(T0 + 2, Some(number_data_point::Value::AsDouble(-0.5)))],
            aggregation_temporality: 2,
            is_monotonic: false,
        }),
    );
    let d = metrics_to_arrow(&request(vec![gauge, empty_sum, no_data, sum]), &ctx());
    let b = &d.batch.batch;
    assert_eq!(texts(b, "name"), vec![Some("g".to_string()), Some("g".to_string()), Some("s".to_string())]);
    let values = f64s(b, "value");
    assert_eq!(values[0], Some(42.0));
    assert!(values[1].unwrap().is_nan());
    assert_eq!(values[2], Some(-0.5));
    assert_eq!(i64s(b, "value_int"), vec![Some(42), None, None]);
    assert_eq!(texts(b, "temporality"), vec![None, None, Some("cumulative".to_string())]);
    assert_eq!(bools(b, "is_monotonic"), vec![None, None, Some(false)]);
    assert_eq!(texts(b, "unit"), vec![Some("ms".to_string()); 3]);
    assert_eq!(texts(b, "description"), vec![None::<String>; 3]);
    assert_eq!(texts(b, "scope_name"), vec![Some("meter".to_string()); 3]);
    assert_eq!(d.rejected, 3);
    assert_eq!(d.reasons, vec![("missing_value", 1), ("missing_time", 1), ("timestamp_out_of_range", 1)]);
    assert!(d.message.unwrap().starts_with("3 data points rejected: "));
}

#[test]
fn histogram_with_exemplar_carrying_a_trace_id() {
    let h = metric(
        "latency",
        metric::Data::Histogram(Histogram {
            data_points: vec![
                HistogramDataPoint {
                    attributes: vec![kv("route", s("/a"))],
                    start_time_unix_nano: T0 - 1000,
                    time_unix_nano: T0,
                    count: 6,
                    sum: Some(12.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![1.0, 5.0],
                    exemplars: vec![
                        Exemplar {
                            filtered_attributes: vec![kv("user", s("u1"))],
                            time_unix_nano: T0 - 10,
                            span_id: vec![0xbb; 8],
                            trace_id: vec![0xaa; 16],
                            value: Some(exemplar::Value::AsInt(7)),
                        },
                        Exemplar {
                            time_unix_nano: T0 - 5,
                            trace_id: vec![1, 2, 3],
                            value: Some(exemplar::Value::AsDouble(2.5)),
                            ..Default::default()
                        },
                    ],
                    flags: 1,
                    min: Some(0.5),
                    max: Some(9.0),
                },
                HistogramDataPoint { time_unix_nano: T0 + 1, count: 0, ..Default::default() },
            ],
            aggregation_temporality: 2,
        }),
    );
    let d = metrics_to_arrow(&request(vec![h]), &ctx());
    let b = &d.batch.batch;
    assert_eq!(b.num_rows(), 2);
    assert_eq!(d.rejected, 0);
    assert_eq!(texts(b, "kind"), vec![Some("histogram".to_string()); 2]);
    assert_eq!(texts(b, "temporality"), vec![Some("cumulative".to_string()); 2]);
    assert_eq!(bools(b, "is_monotonic"), vec![None, None]);
    assert_eq!(u64s(b, "count"), vec![Some(6), Some(0)]);
    assert_eq!(f64s(b, "sum"), vec![Some(12.5), None]);
    assert_eq!(f64s(b, "min"), vec![Some(0.5), None]);
    assert_eq!(f64s(b, "max"), vec![Some(9.0), None]);
    assert_eq!(f64s(b, "value"), vec![None, None]);
    assert_eq!(u64_list(b, "bucket_counts", 0), Some(vec![1, 2, 3]));
    assert_eq!(f64_list(b, "explicit_bounds", 0), Some(vec![1.0, 5.0]));
    assert_eq!(u64_list(b, "bucket_counts", 1), Some(Vec::<u64>::new()));
    assert_eq!(ts(b, "start_time"), vec![Some((T0 - 1000) as i64), None]);
    assert_eq!(u64_list(b, "exp_positive_bucket_counts", 0), None);
    assert_eq!(i32s(b, "exp_scale"), vec![None, None]);
    assert!(b.column_by_name("quantiles").unwrap().is_null(0));
    assert_eq!(map_at(b, "attributes", 0), owned(&[("route", Some("/a"))]));

    let ex_list = b.column_by_name("exemplars").unwrap().as_list::<i32>();
    assert_eq!((ex_list.value_length(0), ex_list.value_length(1)), (2, 0));
    let ex = ex_list.value(0);
    let ex = ex.as_struct();
    let trace = ex.column_by_name("trace_id").unwrap().as_string::<i32>();
    assert_eq!(trace.value(0), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert!(trace.is_null(1));
    let span = ex.column_by_name("span_id").unwrap().as_string::<i32>();
    assert_eq!(span.value(0), "bbbbbbbbbbbbbbbb");
    assert!(span.is_null(1));
    let value: Vec<Option<f64>> = ex.column_by_name("value").unwrap().as_primitive::<Float64Type>().iter().collect();
    assert_eq!(value, vec![Some(7.0), Some(2.5)]);
    let time: Vec<Option<i64>> =
        ex.column_by_name("time").unwrap().as_primitive::<TimestampNanosecondType>().iter().collect();
    assert_eq!(time, vec![Some((T0 - 10) as i64), Some((T0 - 5) as i64)]);
    assert_eq!(
        map_entries(ex.column_by_name("filtered_attributes").unwrap().as_map(), 0),
        owned(&[("user", Some("u1"))])
    );
    assert!(map_entries(ex.column_by_name("filtered_attributes").unwrap().as_map(), 1).is_empty());
}

#[test]
fn exponential_histogram_and_summary_rows() {
    let e = metric(
        "exp",
        metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: T0,
                start_time_unix_nano: T0 - 100,
                count: 10,
                sum: Some(3.0),
                scale: 2,
                zero_count: 1,
                zero_threshold: 0.001,
                positive: Some(Buckets { offset: -1, bucket_counts: vec![4, 5] }),
                negative: None,
                min: Some(-1.0),
                ..Default::default()
            }],
            aggregation_temporality: 1,
        }),
    );
    let sm = metric(
        "sum_q",
        metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: T0 + 1,
                count: 4,
                sum: 10.0,
                quantile_values: vec![
                    ValueAtQuantile { quantile: 0.5, value: 2.0 },
                    ValueAtQuantile { quantile: 0.99, value: 4.0 },
                ],
                ..Default::default()
            }],
        }),
    );
    let d = metrics_to_arrow(&request(vec![e, sm]), &ctx());
    let b = &d.batch.batch;
    assert_eq!(d.rejected, 0);
    assert_eq!(b.num_rows(), 2);
    assert_eq!(texts(b, "kind"), vec![Some("exponential_histogram".to_string()), Some("summary".to_string())]);
    assert_eq!(texts(b, "temporality"), vec![Some("delta".to_string()), None]);
    assert_eq!(u64s(b, "count"), vec![Some(10), Some(4)]);
    assert_eq!(f64s(b, "sum"), vec![Some(3.0), Some(10.0)]);
    assert_eq!(f64s(b, "min"), vec![Some(-1.0), None]);
    assert_eq!(f64s(b, "max"), vec![None, None]);
    assert_eq!(i32s(b, "exp_scale"), vec![Some(2), None]);
    assert_eq!(u64s(b, "exp_zero_count"), vec![Some(1), None]);
    assert_eq!(f64s(b, "exp_zero_threshold"), vec![Some(0.001), None]);
    assert_eq!(i32s(b, "exp_positive_offset"), vec![Some(-1), None]);
    assert_eq!(u64_list(b, "exp_positive_bucket_counts", 0), Some(vec![4, 5]));
    assert_eq!(u64_list(b, "exp_positive_bucket_counts", 1), None);
    assert_eq!(i32s(b, "exp_negative_offset"), vec![None, None]);
    assert_eq!(u64_list(b, "exp_negative_bucket_counts", 0), None);
    assert_eq!(u64_list(b, "bucket_counts", 0), None);
    assert_eq!(f64_list(b, "explicit_bounds", 1), None);

    let q = b.column_by_name("quantiles").unwrap().as_list::<i32>();
    assert!(q.is_null(0));
    assert!(q.is_valid(1));
    let qs = q.value(1);
    let qs = qs.as_struct();
    let quantile: Vec<Option<f64>> =
        qs.column_by_name("quantile").unwrap().as_primitive::<Float64Type>().iter().collect();
    let value: Vec<Option<f64>> = qs.column_by_name("value").unwrap().as_primitive::<Float64Type>().iter().collect();
    assert_eq!(quantile, vec![Some(0.5), Some(0.99)]);
    assert_eq!(value, vec![Some(2.0), Some(4.0)]);
    let ex = b.column_by_name("exemplars").unwrap().as_list::<i32>();
    assert_eq!((ex.value_length(0), ex.value_length(1)), (0, 0));
}

#[test]
fn protobuf_round_trip_matches_direct_conversion() {
    let req = request(vec![
        metric(
            "g",
            metric::Data::Gauge(Gauge {
                data_points: vec![number(T0, Some(number_data_point::Value::AsInt(1))), number(T0, None)],
            }),
        ),
        metric(
            "h",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: T0,
                    count: 1,
                    bucket_counts: vec![0, 1],
                    explicit_bounds: vec![10.0],
                    attributes: vec![kv("b", Value::BoolValue(true))],
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
        ),
    ]);
    let body = prost::Message::encode_to_vec(&req);
    let c = ctx();
    let from_bytes = decode_metrics(&body, Format::Protobuf, &c).unwrap();
    assert_eq!(from_bytes.batch.batch, metrics_to_arrow(&req, &c).batch.batch);
    assert_eq!(from_bytes.batch.num_rows(), 2);
    assert_eq!(from_bytes.rejected, 1);
    assert_eq!(map_at(&from_bytes.batch.batch, "attributes", 1), owned(&[("b", Some("true"))]));
}
