//! Hand-computed cases of the metrics aggregation.

use super::*;
use crate::metrics::histogram::{bucket_quantile, total};

const S: i64 = 1_000_000_000;

fn gauge(series: &str, group: &str, time_ns: i64, value: f64) -> MetricPoint {
    MetricPoint {
        time_ns,
        series: series.to_owned(),
        group: group.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn counter(series: &str, time_ns: i64, start_ns: Option<i64>, value: f64, cumulative: bool) -> MetricPoint {
    MetricPoint {
        time_ns,
        start_ns,
        series: series.to_owned(),
        cumulative,
        monotonic: true,
        value: Some(value),
        ..Default::default()
    }
}

/// A cumulative histogram point of series "h" that started at time 0.
fn hist(time_ns: i64, count: u64, sum: f64, bounds: &[f64], buckets: &[u64]) -> MetricPoint {
    MetricPoint {
        time_ns,
        start_ns: Some(0),
        series: "h".to_owned(),
        cumulative: true,
        count: Some(count),
        sum: Some(sum),
        explicit_bounds: bounds.to_vec(),
        bucket_counts: buckets.to_vec(),
        ..Default::default()
    }
}

fn exp(scale: i32, offset: i64, counts: &[u64]) -> Exp {
    let count = total(counts);
    Exp { scale, zero_threshold: 0.0, zero_count: 0, offset, counts: counts.to_vec(), count, sum: None }
}

fn assert_values(actual: &[Option<f64>], expected: &[Option<f64>]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} != {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        match (a, e) {
            (Some(a), Some(e)) => assert!((a - e).abs() < 1e-9, "{actual:?} != {expected:?}"),
            (None, None) => {}
            _ => panic!("{actual:?} != {expected:?}"),
        }
    }
}

/// The values of the only line.
fn single(result: Result<Vec<SeriesValues>, AggregateError>) -> Vec<Option<f64>> {
    let lines = result.expect("aggregates");
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().map(|line| line.values).unwrap_or_default()
}

#[test]
fn names_round_trip() {
    for agg in Aggregation::ALL {
        assert_eq!(Aggregation::parse(agg.as_str()), Ok(agg));
    }
    let err = Aggregation::parse("p42").unwrap_err();
    assert!(err.contains("p42") && err.contains("sum, avg, min, max, rate, p50, p95, p99"), "{err}");
    for kind in [
        MetricKind::Gauge,
        MetricKind::Sum,
        MetricKind::Histogram,
        MetricKind::ExponentialHistogram,
        MetricKind::Summary,
    ] {
        assert_eq!(MetricKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(MetricKind::parse("counter"), None);
    assert_eq!(serde_json::to_string(&Aggregation::P95).unwrap(), "\"p95\"");
    assert_eq!(serde_json::to_string(&MetricKind::ExponentialHistogram).unwrap(), "\"exponential_histogram\"");
}

#[test]
fn applicable_aggregations_per_kind() {
    let count = |kind, monotonic| Aggregation::ALL.iter().filter(|a| a.applies_to(kind, monotonic)).count();
    assert_eq!(count(MetricKind::Gauge, false), 4);
    assert_eq!(count(MetricKind::Sum, true), 5);
    assert_eq!(count(MetricKind::Sum, false), 4);
    assert_eq!(count(MetricKind::Histogram, false), 8);
    assert_eq!(count(MetricKind::ExponentialHistogram, false), 8);
    assert_eq!(count(MetricKind::Summary, false), 6);
    assert!(!Aggregation::Min.applies_to(MetricKind::Summary, false));
}

#[test]
fn gauge_takes_the_last_value_of_each_series() {
    // Out of order on purpose: a@5s is the last of a in bucket 0.
    let points =
        [gauge("a", "", 5 * S, 3.0), gauge("b", "", 2 * S, 5.0), gauge("a", "", S, 1.0), gauge("a", "", 12 * S, 10.0)];
    let run = |agg| single(aggregate(MetricKind::Gauge, &points, agg, 0, 20 * S, 10 * S));
    assert_values(&run(Aggregation::Avg), &[Some(4.0), Some(10.0)]);
    assert_values(&run(Aggregation::Sum), &[Some(8.0), Some(10.0)]);
    assert_values(&run(Aggregation::Min), &[Some(3.0), Some(10.0)]);
    assert_values(&run(Aggregation::Max), &[Some(5.0), Some(10.0)]);
}

#[test]
fn non_finite_values_are_skipped() {
    let points = [gauge("a", "", S, 2.0), gauge("a", "", 2 * S, f64::NAN), gauge("b", "", 3 * S, f64::INFINITY)];
    let values = single(aggregate(MetricKind::Gauge, &points, Aggregation::Avg, 0, 10 * S, 10 * S));
    assert_values(&values, &[Some(2.0)]);
}

#[test]
fn cumulative_counter_rate_with_reset_and_unknown_baseline() {
    let points = [
        // a: baseline before the window, +50, reset to 20 (+20), +30.
        counter("a", 95 * S, Some(0), 100.0, true),
        counter("a", 105 * S, Some(0), 150.0, true),
        counter("a", 115 * S, Some(0), 20.0, true),
        counter("a", 125 * S, Some(0), 50.0, true),
        // b: first point has no baseline (started before the window): +0, then +10.
        counter("b", 105 * S, Some(0), 1000.0, true),
        counter("b", 108 * S, Some(0), 1010.0, true),
        // c: started inside the window, so its first value counts: +7.
        counter("c", 112 * S, Some(110 * S), 7.0, true),
    ];
    let values = single(aggregate(MetricKind::Sum, &points, Aggregation::Rate, 100 * S, 130 * S, 10 * S));
    assert_values(&values, &[Some(6.0), Some(2.7), Some(3.0)]);

    // A changed start time is a restart even though the value went up.
    let restarted = [counter("a", 95 * S, Some(0), 100.0, true), counter("a", 105 * S, Some(100 * S), 130.0, true)];
    let values = single(aggregate(MetricKind::Sum, &restarted, Aggregation::Rate, 100 * S, 110 * S, 10 * S));
    assert_values(&values, &[Some(13.0)]);

    // A lone point without baseline: data, but no increase.
    let lone = [counter("d", 105 * S, None, 42.0, true)];
    let values = single(aggregate(MetricKind::Sum, &lone, Aggregation::Rate, 100 * S, 110 * S, 10 * S));
    assert_values(&values, &[Some(0.0)]);
}

#[test]
fn delta_counter_rate() {
    let points = [
        counter("a", S / 2, None, 5.0, false),
        counter("a", 7 * S / 10, None, 3.0, false),
        counter("a", 5 * S / 2, None, 4.0, false),
    ];
    let values = single(aggregate(MetricKind::Sum, &points, Aggregation::Rate, 0, 3 * S, S));
    assert_values(&values, &[Some(8.0), None, Some(4.0)]);
}

#[test]
fn quantiles_interpolate_within_buckets() {
    let buckets = [(10.0, 0), (20.0, 10), (40.0, 10), (f64::INFINITY, 0)];
    // rank 10 ends bucket (10, 20]; rank 15 is halfway through (20, 40].
    assert_values(&[bucket_quantile(0.5, &buckets)], &[Some(20.0)]);
    assert_values(&[bucket_quantile(0.75, &buckets)], &[Some(30.0)]);
    assert_values(&[bucket_quantile(0.95, &buckets)], &[Some(38.0)]);
    assert_values(&[bucket_quantile(0.99, &buckets)], &[Some(39.6)]);
    // In the +Inf bucket: the last bound.
    assert_values(&[bucket_quantile(0.5, &[(10.0, 0), (20.0, 0), (40.0, 0), (f64::INFINITY, 5)])], &[Some(40.0)]);
    // The first bucket starts at 0.
    assert_values(&[bucket_quantile(0.5, &[(10.0, 4), (f64::INFINITY, 0)])], &[Some(5.0)]);
    assert_eq!(bucket_quantile(0.5, &[(10.0, 0), (f64::INFINITY, 0)]), None);
    assert_eq!(bucket_quantile(0.5, &[(f64::INFINITY, 3)]), None);

    let delta = MetricPoint { cumulative: false, ..hist(5 * S, 20, 500.0, &[10.0, 20.0, 40.0], &[0, 10, 10, 0]) };
    let run = |agg| single(aggregate(MetricKind::Histogram, std::slice::from_ref(&delta), agg, 0, 10 * S, 10 * S));
    assert_values(&run(Aggregation::P50), &[Some(20.0)]);
    assert_values(&run(Aggregation::P99), &[Some(39.6)]);
    assert_values(&run(Aggregation::Avg), &[Some(25.0)]);
    assert_values(&run(Aggregation::Sum), &[Some(500.0)]);
    assert_values(&run(Aggregation::Rate), &[Some(2.0)]);
}

#[test]
fn cumulative_histograms_are_differenced() {
    let before = hist(95 * S, 10, 15.0, &[1.0, 2.0], &[5, 3, 2]);
    let now = MetricPoint { min: Some(0.2), max: Some(9.0), ..hist(105 * S, 16, 30.0, &[1.0, 2.0], &[6, 7, 3]) };
    let points = [before.clone(), now];
    let run =
        |points: &[MetricPoint], agg| single(aggregate(MetricKind::Histogram, points, agg, 100 * S, 110 * S, 10 * S));
    // Increment: count 6, sum 15, buckets [1, 4, 1]; p50: rank 3 in (1, 2] → 1 + 1 * 2/4.
    assert_values(&run(&points, Aggregation::Rate), &[Some(0.6)]);
    assert_values(&run(&points, Aggregation::Sum), &[Some(15.0)]);
    assert_values(&run(&points, Aggregation::Avg), &[Some(2.5)]);
    assert_values(&run(&points, Aggregation::P50), &[Some(1.5)]);
    assert_values(&run(&points, Aggregation::Min), &[Some(0.2)]);
    assert_values(&run(&points, Aggregation::Max), &[Some(9.0)]);

    // A count going down is a restart: the point counts in full.
    let reset = [before.clone(), hist(105 * S, 4, 5.0, &[1.0, 2.0], &[1, 2, 1])];
    assert_values(&run(&reset, Aggregation::Rate), &[Some(0.4)]);
    assert_values(&run(&reset, Aggregation::Sum), &[Some(5.0)]);
    // So are changed bounds.
    let rebucketed = [before, hist(105 * S, 16, 30.0, &[1.0, 3.0], &[6, 7, 3])];
    assert_values(&run(&rebucketed, Aggregation::Rate), &[Some(1.6)]);
}

#[test]
fn exponential_histograms_become_explicit() {
    let point = MetricPoint {
        exp_scale: Some(0),
        exp_positive_offset: Some(0),
        exp_zero_count: Some(3),
        exp_positive_bucket_counts: vec![1, 1],
        count: Some(5),
        ..Default::default()
    };
    let hist = Exp::from_point(&point).and_then(Exp::into_hist).expect("converts");
    assert_values(&hist.bounds.iter().map(|&b| Some(b)).collect::<Vec<_>>(), &[Some(0.0), Some(2.0), Some(4.0)]);
    assert_eq!(hist.buckets, [3, 1, 1, 0]);
    assert_eq!(hist.count, 5);

    let finer = exp(1, 0, &[1]).into_hist().expect("converts");
    assert_values(
        &[finer.bounds.first().copied(), finer.bounds.get(1).copied()],
        &[Some(0.0), Some(std::f64::consts::SQRT_2)],
    );
}

#[test]
fn exponential_histograms_downscale_and_grow_without_reset() {
    let coarse = exp(1, 0, &[1, 2, 3, 4]).downscaled(0);
    assert_eq!((coarse.offset, coarse.counts), (0, vec![3, 7]));
    let negative = exp(1, -3, &[1, 1, 1]).downscaled(0);
    assert_eq!((negative.offset, negative.counts), (-2, vec![1, 2]));

    // The range grew downwards: bucket 1 went from 2 to 3, bucket 0 appeared with 1.
    let grown = exp(0, 0, &[1, 3]).increase_since(&exp(0, 1, &[2])).expect("no reset");
    assert_eq!((grown.offset, grown.counts, grown.count), (0, vec![1, 1], 2));
    // Same after a downscale: index 2 at scale 1 is index 1 at scale 0.
    let rescaled = exp(0, 0, &[1, 3]).increase_since(&exp(1, 2, &[2])).expect("no reset");
    assert_eq!((rescaled.offset, rescaled.counts), (0, vec![1, 1]));
    // A bucket going down is a restart.
    assert_eq!(exp(0, 0, &[1, 1]).increase_since(&exp(0, 1, &[2])), None);

    let cumulative = |time_ns, offset, counts: &[u64]| MetricPoint {
        time_ns,
        start_ns: Some(0),
        series: "e".to_owned(),
        cumulative: true,
        count: Some(total(counts)),
        exp_scale: Some(0),
        exp_positive_offset: Some(offset),
        exp_positive_bucket_counts: counts.to_vec(),
        ..Default::default()
    };
    let points = [cumulative(95 * S, 1, &[2]), cumulative(105 * S, 0, &[1, 3])];
    let kind = MetricKind::ExponentialHistogram;
    let values = single(aggregate(kind, &points, Aggregation::Rate, 100 * S, 110 * S, 10 * S));
    assert_values(&values, &[Some(0.2)]);
}

#[test]
fn summary_rates_and_quantiles() {
    let summary = |series: &str, time_ns, start_ns, count, sum, quantiles: &[(f64, f64)]| MetricPoint {
        time_ns,
        start_ns,
        series: series.to_owned(),
        count: Some(count),
        sum: Some(sum),
        quantiles: quantiles.to_vec(),
        ..Default::default()
    };
    let points = [
        summary("s1", 95 * S, Some(0), 10, 100.0, &[(0.5, 9.0), (0.99, 20.0)]),
        summary("s1", 105 * S, Some(0), 20, 150.0, &[(0.5, 11.0), (0.99, 30.0)]),
        summary("s2", 106 * S, Some(101 * S), 5, 10.0, &[(0.5, 3.0)]),
    ];
    let run = |agg| single(aggregate(MetricKind::Summary, &points, agg, 100 * S, 110 * S, 10 * S));
    // Increases: s1 +10 count, +50 sum; s2 started in the window: +5, +10.
    assert_values(&run(Aggregation::Rate), &[Some(1.5)]);
    assert_values(&run(Aggregation::Sum), &[Some(60.0)]);
    assert_values(&run(Aggregation::Avg), &[Some(4.0)]);
    assert_values(&run(Aggregation::P50), &[Some(7.0)]);
    assert_values(&run(Aggregation::P99), &[Some(30.0)]);
}

#[test]
fn refusals() {
    let err = aggregate(MetricKind::Gauge, &[], Aggregation::Rate, 0, 10, 1).unwrap_err();
    assert!(err.0.starts_with("rate needs a monotonic sum") && err.0.contains("a gauge"), "{err}");
    let up_down = [MetricPoint { monotonic: false, ..counter("a", 5, None, 1.0, true) }];
    let err = aggregate(MetricKind::Sum, &up_down, Aggregation::Rate, 0, 10, 1).unwrap_err();
    assert!(err.0.contains("non-monotonic"), "{err}");
    assert!(aggregate(MetricKind::Gauge, &[], Aggregation::P50, 0, 10, 1).is_err());
    assert!(aggregate(MetricKind::Summary, &[], Aggregation::Min, 0, 10, 1).is_err());
    assert!(aggregate(MetricKind::Gauge, &[], Aggregation::Avg, 0, 10, 0).is_err());
    assert!(aggregate(MetricKind::Gauge, &[], Aggregation::Avg, 10, 10, 1).is_err());
    assert!(aggregate(MetricKind::Gauge, &[], Aggregation::Avg, 0, 10_001, 1).is_err());
    assert_eq!(aggregate(MetricKind::Gauge, &[], Aggregation::Avg, 0, 10_000, 1), Ok(Vec::new()));
    assert!(aggregate(MetricKind::Gauge, &[], Aggregation::Avg, i64::MIN, i64::MAX, 1).is_err());
}

#[test]
fn buckets_cover_the_window_and_empty_ones_are_none() {
    // 25 / 10 rounds up to 3 buckets; the end is exclusive.
    let points = [gauge("a", "", -1, 1.0), gauge("a", "", 24, 2.0), gauge("a", "", 25, 3.0)];
    let values = single(aggregate(MetricKind::Gauge, &points, Aggregation::Sum, 0, 25, 10));
    assert_values(&values, &[None, None, Some(2.0)]);
}

#[test]
fn groups_are_sorted_by_name() {
    let points = [gauge("x", "b", 1, 1.0), gauge("y", "a", 1, 2.0), gauge("z", "", 1, 3.0)];
    let lines = aggregate(MetricKind::Gauge, &points, Aggregation::Max, 0, 10, 10).expect("aggregates");
    let groups: Vec<&str> = lines.iter().map(|line| line.group.as_str()).collect();
    assert_eq!(groups, ["", "a", "b"]);
    assert_values(&lines.iter().map(|line| line.values[0]).collect::<Vec<_>>(), &[Some(3.0), Some(2.0), Some(1.0)]);
}
