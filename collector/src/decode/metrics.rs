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
    AttrBuilder, Reason, ResourceInfo, ResourceScopeCols, ScopeInfo, Tally, append_attrs, arr, attr_builder,
    check_window, hex_id, non_empty, presize, struct_list, to_i64, ts_builder, valid_id,
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

    /// Bytes the metric's own text adds to every point (repeated like the resource).
    fn bytes(&self) -> usize {
        self.name.len() + self.description.map_or(0, str::len) + self.unit.map_or(0, str::len) + 32
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
    fn with_capacity(
        rows: usize,
        exemplars: usize,
        attrs: usize,
        resource_entries: usize,
        limits: &ItemLimits,
    ) -> MetricCols {
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
            rs: ResourceScopeCols::with_capacity(rows, resource_entries, limits),
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
    now_ns: i64,
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
                if let Err(reason) = check_window(p.time, e.now_ns, e.limits) {
                    return tally.reject(reason);
                }
                if !self.rs.fits(e.res, e.scope, info.bytes()) {
                    return tally.reject(Reason::RepeatedTooLarge);
                }
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
                resource_entries = resource_entries.saturating_add(res_attrs.saturating_mul(p));
            }
        }
    }

    let mut tally = Tally::default();
    let mut sc = Scratch { text: String::new(), id: [0u8; 32], truncated: 0 };
    let mut cols =
        MetricCols::with_capacity(presize(rows), presize(exemplars), presize(attrs), presize(resource_entries), limits);
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
            let emit = Emit { res: &res, scope: &scope, limits, now_ns: ctx.now_ns };
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
mod tests;
