//! `ExportMetricsServiceRequest` → `metrics` rows, one per data point.

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint, exemplar,
    metric, number_data_point,
};
use tracelight_model::schema::{exemplar_struct_fields, quantile_struct_fields};
use tracelight_model::{Signal, SignalBatch};

use super::common::{
    AttrBuilder, Reason, ResourceInfo, ResourceScopeCols, ScopeInfo, Tally, append_attrs, arr, attr_builder, hex_id,
    non_empty, struct_list, to_i64, ts_builder, valid_id,
};
use super::{DecodeContext, Decoded, ItemLimits};

fn temporality_name(t: i32) -> Option<&'static str> {
    match t {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

/// Metric-level values repeated on each of its points.
struct MetricInfo<'a> {
    name: &'a str,
    description: Option<&'a str>,
    unit: Option<&'a str>,
    kind: &'static str,
    temporality: Option<&'static str>,
    is_monotonic: Option<bool>,
}

impl<'a> MetricInfo<'a> {
    fn new(m: &'a Metric, kind: &'static str, temporality: Option<&'static str>, is_monotonic: Option<bool>) -> Self {
        MetricInfo {
            name: &m.name,
            description: non_empty(&m.description),
            unit: non_empty(&m.unit),
            kind,
            temporality,
            is_monotonic,
        }
    }
}

struct Exp<'a> {
    scale: i32,
    zero_count: u64,
    zero_threshold: f64,
    positive: Option<&'a Buckets>,
    negative: Option<&'a Buckets>,
}

/// One validated data point of any kind; the fields a kind does not have stay `None`.
#[derive(Default)]
struct Point<'a> {
    time: i64,
    start: Option<i64>,
    attrs: &'a [KeyValue],
    flags: u32,
    value: Option<f64>,
    value_int: Option<i64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    buckets: Option<(&'a [u64], &'a [f64])>,
    exp: Option<Exp<'a>>,
    quantiles: Option<&'a [ValueAtQuantile]>,
    exemplars: &'a [Exemplar],
}

fn check_times(time: u64, start: u64, exemplars: &[Exemplar]) -> Result<(i64, Option<i64>), Reason> {
    if time == 0 {
        return Err(Reason::MissingTime);
    }
    let (Some(t), Some(s)) = (to_i64(time), to_i64(start)) else {
        return Err(Reason::TimestampOutOfRange);
    };
    if exemplars.iter().any(|e| to_i64(e.time_unix_nano).is_none()) {
        return Err(Reason::TimestampOutOfRange);
    }
    Ok((t, (s != 0).then_some(s)))
}

fn number_point(p: &NumberDataPoint) -> Result<Point<'_>, Reason> {
    let (time, start) = check_times(p.time_unix_nano, p.start_time_unix_nano, &p.exemplars)?;
    let (value, value_int) = match p.value {
        Some(number_data_point::Value::AsDouble(d)) => (d, None),
        Some(number_data_point::Value::AsInt(i)) => (i as f64, Some(i)),
        None => return Err(Reason::MissingValue),
    };
    Ok(Point {
        time,
        start,
        attrs: p.attributes.as_slice(),
        flags: p.flags,
        value: Some(value),
        value_int,
        exemplars: p.exemplars.as_slice(),
        ..Default::default()
    })
}

fn histogram_point(p: &HistogramDataPoint) -> Result<Point<'_>, Reason> {
    let (time, start) = check_times(p.time_unix_nano, p.start_time_unix_nano, &p.exemplars)?;
    // Bucket counts that do not match the bounds (len != bounds + 1) are stored as sent: the
    // OTLP project's own example payload has them, and a receiver must accept it unchanged.
    Ok(Point {
        time,
        start,
        attrs: p.attributes.as_slice(),
        flags: p.flags,
        count: Some(p.count),
        sum: p.sum,
        min: p.min,
        max: p.max,
        buckets: Some((p.bucket_counts.as_slice(), p.explicit_bounds.as_slice())),
        exemplars: p.exemplars.as_slice(),
        ..Default::default()
    })
}

fn exp_histogram_point(p: &ExponentialHistogramDataPoint) -> Result<Point<'_>, Reason> {
    let (time, start) = check_times(p.time_unix_nano, p.start_time_unix_nano, &p.exemplars)?;
    Ok(Point {
        time,
        start,
        attrs: p.attributes.as_slice(),
        flags: p.flags,
        count: Some(p.count),
        sum: p.sum,
        min: p.min,
        max: p.max,
        exp: Some(Exp {
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            positive: p.positive.as_ref(),
            negative: p.negative.as_ref(),
        }),
        exemplars: p.exemplars.as_slice(),
        ..Default::default()
    })
}

fn summary_point(p: &SummaryDataPoint) -> Result<Point<'_>, Reason> {
    let (time, start) = check_times(p.time_unix_nano, p.start_time_unix_nano, &[])?;
    Ok(Point {
        time,
        start,
        attrs: p.attributes.as_slice(),
        flags: p.flags,
        count: Some(p.count),
        sum: Some(p.sum),
        quantiles: Some(p.quantile_values.as_slice()),
        ..Default::default()
    })
}

/// (points, exemplars, point attributes) of one metric.
fn sizes(m: &Metric) -> (usize, usize, usize) {
    fn add<'a>(
        acc: (usize, usize, usize),
        it: impl Iterator<Item = (&'a [Exemplar], &'a [KeyValue])>,
    ) -> (usize, usize, usize) {
        it.fold(acc, |(p, e, a), (ex, at)| (p + 1, e + ex.len(), a + at.len()))
    }
    let zero = (0, 0, 0);
    match &m.data {
        None => zero,
        Some(metric::Data::Gauge(g)) => {
            add(zero, g.data_points.iter().map(|p| (p.exemplars.as_slice(), p.attributes.as_slice())))
        }
        Some(metric::Data::Sum(s)) => {
            add(zero, s.data_points.iter().map(|p| (p.exemplars.as_slice(), p.attributes.as_slice())))
        }
        Some(metric::Data::Histogram(h)) => {
            add(zero, h.data_points.iter().map(|p| (p.exemplars.as_slice(), p.attributes.as_slice())))
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            add(zero, h.data_points.iter().map(|p| (p.exemplars.as_slice(), p.attributes.as_slice())))
        }
        Some(metric::Data::Summary(s)) => {
            add(zero, s.data_points.iter().map(|p| (<&[Exemplar]>::default(), p.attributes.as_slice())))
        }
    }
}

fn has_points(m: &Metric) -> bool {
    sizes(m).0 > 0
}

struct Scratch {
    text: String,
    id: [u8; 32],
    truncated: u64,
}

struct MetricCols {
    time: TimestampNanosecondBuilder,
    start_time: TimestampNanosecondBuilder,
    name: StringBuilder,
    description: StringBuilder,
    unit: StringBuilder,
    kind: StringBuilder,
    temporality: StringBuilder,
    is_monotonic: BooleanBuilder,
    attributes: AttrBuilder,
    flags: UInt32Builder,
    value: Float64Builder,
    value_int: Int64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<UInt64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    exp_scale: Int32Builder,
    exp_zero_count: UInt64Builder,
    exp_zero_threshold: Float64Builder,
    exp_positive_offset: Int32Builder,
    exp_positive_bucket_counts: ListBuilder<UInt64Builder>,
    exp_negative_offset: Int32Builder,
    exp_negative_bucket_counts: ListBuilder<UInt64Builder>,
    // quantiles: nullable List<Struct<quantile, value>>
    q_offsets: Vec<i32>,
    q_valid: Vec<bool>,
    q_len: i32,
    q_quantile: Float64Builder,
    q_value: Float64Builder,
    // exemplars: List<Struct<time, value, trace_id, span_id, filtered_attributes>>
    ex_offsets: Vec<i32>,
    ex_len: i32,
    ex_time: TimestampNanosecondBuilder,
    ex_value: Float64Builder,
    ex_trace_id: StringBuilder,
    ex_span_id: StringBuilder,
    ex_attributes: AttrBuilder,
    rs: ResourceScopeCols,
}

fn append_exp_buckets(offset: &mut Int32Builder, counts: &mut ListBuilder<UInt64Builder>, b: Option<&Buckets>) {
    match b {
        Some(b) => {
            offset.append_value(b.offset);
            counts.values().append_slice(&b.bucket_counts);
            counts.append(true);
        }
        None => {
            offset.append_null();
            counts.append_null();
        }
    }
}

impl MetricCols {
    fn with_capacity(rows: usize, exemplars: usize, attrs: usize, resource_entries: usize) -> MetricCols {
        let mut q_offsets = Vec::with_capacity(rows + 1);
        q_offsets.push(0);
        let mut ex_offsets = Vec::with_capacity(rows + 1);
        ex_offsets.push(0);
        MetricCols {
            time: ts_builder(rows),
            start_time: ts_builder(rows),
            name: StringBuilder::with_capacity(rows, rows * 24),
            description: StringBuilder::with_capacity(rows, rows * 24),
            unit: StringBuilder::with_capacity(rows, rows * 2),
            kind: StringBuilder::with_capacity(rows, rows * 5),
            temporality: StringBuilder::with_capacity(rows, rows * 10),
            is_monotonic: BooleanBuilder::with_capacity(rows),
            attributes: attr_builder(rows, attrs),
            flags: UInt32Builder::with_capacity(rows),
            value: Float64Builder::with_capacity(rows),
            value_int: Int64Builder::with_capacity(rows),
            count: UInt64Builder::with_capacity(rows),
            sum: Float64Builder::with_capacity(rows),
            min: Float64Builder::with_capacity(rows),
            max: Float64Builder::with_capacity(rows),
            bucket_counts: ListBuilder::with_capacity(UInt64Builder::new(), rows),
            explicit_bounds: ListBuilder::with_capacity(Float64Builder::new(), rows),
            exp_scale: Int32Builder::with_capacity(rows),
            exp_zero_count: UInt64Builder::with_capacity(rows),
            exp_zero_threshold: Float64Builder::with_capacity(rows),
            exp_positive_offset: Int32Builder::with_capacity(rows),
            exp_positive_bucket_counts: ListBuilder::with_capacity(UInt64Builder::new(), rows),
            exp_negative_offset: Int32Builder::with_capacity(rows),
            exp_negative_bucket_counts: ListBuilder::with_capacity(UInt64Builder::new(), rows),
            q_offsets,
            q_valid: Vec::with_capacity(rows),
            q_len: 0,
            q_quantile: Float64Builder::new(),
            q_value: Float64Builder::new(),
            ex_offsets,
            ex_len: 0,
            ex_time: ts_builder(exemplars),
            ex_value: Float64Builder::with_capacity(exemplars),
            ex_trace_id: StringBuilder::with_capacity(exemplars, exemplars * 32),
            ex_span_id: StringBuilder::with_capacity(exemplars, exemplars * 16),
            ex_attributes: attr_builder(exemplars, 0),
            rs: ResourceScopeCols::with_capacity(rows, resource_entries),
        }
    }

    fn append(&mut self, info: &MetricInfo<'_>, p: &Point<'_>, limits: &ItemLimits, sc: &mut Scratch) {
        self.time.append_value(p.time);
        self.start_time.append_option(p.start);
        self.name.append_value(info.name);
        self.description.append_option(info.description);
        self.unit.append_option(info.unit);
        self.kind.append_value(info.kind);
        self.temporality.append_option(info.temporality);
        self.is_monotonic.append_option(info.is_monotonic);
        // The metrics table has no dropped-attributes column: the count is not kept.
        append_attrs(&mut self.attributes, p.attrs, limits, &mut sc.text, &mut sc.truncated);
        self.flags.append_value(p.flags);
        self.value.append_option(p.value);
        self.value_int.append_option(p.value_int);
        self.count.append_option(p.count);
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        match p.buckets {
            Some((counts, bounds)) => {
                self.bucket_counts.values().append_slice(counts);
                self.bucket_counts.append(true);
                self.explicit_bounds.values().append_slice(bounds);
                self.explicit_bounds.append(true);
            }
            None => {
                self.bucket_counts.append_null();
                self.explicit_bounds.append_null();
            }
        }
        match &p.exp {
            Some(e) => {
                self.exp_scale.append_value(e.scale);
                self.exp_zero_count.append_value(e.zero_count);
                self.exp_zero_threshold.append_value(e.zero_threshold);
                append_exp_buckets(&mut self.exp_positive_offset, &mut self.exp_positive_bucket_counts, e.positive);
                append_exp_buckets(&mut self.exp_negative_offset, &mut self.exp_negative_bucket_counts, e.negative);
            }
            None => {
                self.exp_scale.append_null();
                self.exp_zero_count.append_null();
                self.exp_zero_threshold.append_null();
                append_exp_buckets(&mut self.exp_positive_offset, &mut self.exp_positive_bucket_counts, None);
                append_exp_buckets(&mut self.exp_negative_offset, &mut self.exp_negative_bucket_counts, None);
            }
        }
        match p.quantiles {
            Some(qs) => {
                for q in qs {
                    self.q_quantile.append_value(q.quantile);
                    self.q_value.append_value(q.value);
                }
                self.q_len += qs.len() as i32;
                self.q_valid.push(true);
            }
            None => self.q_valid.push(false),
        }
        self.q_offsets.push(self.q_len);
        for e in p.exemplars {
            // Range checked by `check_times`.
            self.ex_time.append_value(e.time_unix_nano as i64);
            self.ex_value.append_option(match e.value {
                Some(exemplar::Value::AsDouble(d)) => Some(d),
                Some(exemplar::Value::AsInt(i)) => Some(i as f64),
                None => None,
            });
            if valid_id(&e.trace_id, 16) {
                self.ex_trace_id.append_value(hex_id(&e.trace_id, &mut sc.id));
            } else {
                self.ex_trace_id.append_null();
            }
            if valid_id(&e.span_id, 8) {
                self.ex_span_id.append_value(hex_id(&e.span_id, &mut sc.id));
            } else {
                self.ex_span_id.append_null();
            }
            append_attrs(&mut self.ex_attributes, &e.filtered_attributes, limits, &mut sc.text, &mut sc.truncated);
            self.ex_len += 1;
        }
        self.ex_offsets.push(self.ex_len);
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let quantiles = struct_list(
            quantile_struct_fields(),
            vec![arr(self.q_quantile.finish()), arr(self.q_value.finish())],
            std::mem::take(&mut self.q_offsets),
            Some(std::mem::take(&mut self.q_valid)),
        );
        let exemplars = struct_list(
            exemplar_struct_fields(),
            vec![
                arr(self.ex_time.finish()),
                arr(self.ex_value.finish()),
                arr(self.ex_trace_id.finish()),
                arr(self.ex_span_id.finish()),
                arr(self.ex_attributes.finish()),
            ],
            std::mem::take(&mut self.ex_offsets),
            None,
        );
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(34);
        columns.push(arr(self.time.finish()));
        columns.push(arr(self.start_time.finish()));
        columns.push(arr(self.name.finish()));
        columns.push(arr(self.description.finish()));
        columns.push(arr(self.unit.finish()));
        columns.push(arr(self.kind.finish()));
        columns.push(arr(self.temporality.finish()));
        columns.push(arr(self.is_monotonic.finish()));
        columns.push(arr(self.attributes.finish()));
        columns.push(arr(self.flags.finish()));
        columns.push(arr(self.value.finish()));
        columns.push(arr(self.value_int.finish()));
        columns.push(arr(self.count.finish()));
        columns.push(arr(self.sum.finish()));
        columns.push(arr(self.min.finish()));
        columns.push(arr(self.max.finish()));
        columns.push(arr(self.bucket_counts.finish()));
        columns.push(arr(self.explicit_bounds.finish()));
        columns.push(arr(self.exp_scale.finish()));
        columns.push(arr(self.exp_zero_count.finish()));
        columns.push(arr(self.exp_zero_threshold.finish()));
        columns.push(arr(self.exp_positive_offset.finish()));
        columns.push(arr(self.exp_positive_bucket_counts.finish()));
        columns.push(arr(self.exp_negative_offset.finish()));
        columns.push(arr(self.exp_negative_bucket_counts.finish()));
        columns.push(quantiles);
        columns.push(exemplars);
        self.rs.finish_into(&mut columns);
        columns
    }
}

/// Everything `push` needs besides the point.
struct Emit<'c> {
    res: &'c ResourceInfo,
    scope: &'c ScopeInfo,
    limits: &'c ItemLimits,
}

impl MetricCols {
    fn push(
        &mut self,
        point: Result<Point<'_>, Reason>,
        info: &MetricInfo<'_>,
        e: &Emit<'_>,
        sc: &mut Scratch,
        tally: &mut Tally,
    ) {
        match point {
            Ok(p) => {
                self.append(info, &p, e.limits, sc);
                self.rs.append(e.res, e.scope);
            }
            Err(reason) => tally.reject(reason),
        }
    }
}

pub(crate) fn convert(req: &ExportMetricsServiceRequest, ctx: &DecodeContext) -> Decoded {
    let limits = &ctx.limits;
    let (mut rows, mut exemplars, mut attrs, mut resource_entries) = (0usize, 0usize, 0usize, 0usize);
    for rm in &req.resource_metrics {
        let res_attrs = rm.resource.as_ref().map_or(0, |r| r.attributes.len());
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let (p, e, a) = sizes(m);
                rows += p;
                exemplars += e;
                attrs += a;
                resource_entries += res_attrs * p;
            }
        }
    }

    let mut tally = Tally::default();
    let mut sc = Scratch { text: String::new(), id: [0u8; 32], truncated: 0 };
    let mut cols = MetricCols::with_capacity(rows, exemplars, attrs, resource_entries);
    for rm in &req.resource_metrics {
        if !rm.scope_metrics.iter().any(|sm| sm.metrics.iter().any(has_points)) {
            continue;
        }
        let res = ResourceInfo::new(rm.resource.as_ref(), &rm.schema_url, limits, &mut sc.text, &mut sc.truncated);
        for sm in &rm.scope_metrics {
            if !sm.metrics.iter().any(has_points) {
                continue;
            }
            let scope = ScopeInfo::new(sm.scope.as_ref(), &sm.schema_url, limits, &mut sc.text, &mut sc.truncated);
            let emit = Emit { res: &res, scope: &scope, limits };
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                match data {
                    metric::Data::Gauge(g) => {
                        let info = MetricInfo::new(m, "gauge", None, None);
                        for p in &g.data_points {
                            cols.push(number_point(p), &info, &emit, &mut sc, &mut tally);
                        }
                    }
                    metric::Data::Sum(s) => {
                        let info = MetricInfo::new(
                            m,
                            "sum",
                            temporality_name(s.aggregation_temporality),
                            Some(s.is_monotonic),
                        );
                        for p in &s.data_points {
                            cols.push(number_point(p), &info, &emit, &mut sc, &mut tally);
                        }
                    }
                    metric::Data::Histogram(h) => {
                        let info = MetricInfo::new(m, "histogram", temporality_name(h.aggregation_temporality), None);
                        for p in &h.data_points {
                            cols.push(histogram_point(p), &info, &emit, &mut sc, &mut tally);
                        }
                    }
                    metric::Data::ExponentialHistogram(h) => {
                        let info = MetricInfo::new(
                            m,
                            "exponential_histogram",
                            temporality_name(h.aggregation_temporality),
                            None,
                        );
                        for p in &h.data_points {
                            cols.push(exp_histogram_point(p), &info, &emit, &mut sc, &mut tally);
                        }
                    }
                    metric::Data::Summary(s) => {
                        let info = MetricInfo::new(m, "summary", None, None);
                        for p in &s.data_points {
                            cols.push(summary_point(p), &info, &emit, &mut sc, &mut tally);
                        }
                    }
                }
            }
        }
    }
    let batch = RecordBatch::try_new(Signal::Metrics.schema(), cols.finish())
        .expect("metric columns are built in the metrics schema");
    tally.truncated += sc.truncated;
    tally.into_decoded(SignalBatch { tenant: ctx.tenant.clone(), signal: Signal::Metrics, batch }, "data points")
}

#[cfg(test)]
mod tests {
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
        let names =
            vec![Some("my.counter".to_string()), Some("my.gauge".to_string()), Some("my.histogram".to_string())];
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
        let empty_sum = metric(
            "empty",
            metric::Data::Sum(Sum { data_points: vec![], aggregation_temporality: 2, is_monotonic: true }),
        );
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
        let value: Vec<Option<f64>> =
            ex.column_by_name("value").unwrap().as_primitive::<Float64Type>().iter().collect();
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
        let value: Vec<Option<f64>> =
            qs.column_by_name("value").unwrap().as_primitive::<Float64Type>().iter().collect();
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
}
