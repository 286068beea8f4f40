//! Range-vector functions: each takes the samples of one series inside one window
//! `(range_start, range_end]` (stale markers already removed, times ascending) and returns the
//! function's value, or `None` where Prometheus returns no sample. The arithmetic follows
//! Prometheus's `promql/functions.go` step by step, including its compensated sums, so that
//! results agree to the last bits the oracle test compares.

use crate::Sample;

/// One step of a Kahan–Neumaier compensated sum: `sum + inc`, with the running compensation.
pub fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `rate` (`is_counter`, `is_rate`), `increase` (`is_counter`) or `delta` (neither) over a
/// window of `range_end_ms - range_start_ms`: the change between the first and last sample
/// (counter resets added back), extrapolated towards the window's edges, but by no more than
/// half an average sample interval beyond the samples and, for a counter, not below zero.
pub fn extrapolated_rate(
    samples: &[Sample],
    range_start_ms: i64,
    range_end_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    let (first, last) = (samples.first()?, samples.last()?);
    if samples.len() < 2 || last.t_ms <= first.t_ms {
        return None;
    }
    let mut result = last.v - first.v;
    if is_counter {
        for w in samples.windows(2) {
            if w[1].v < w[0].v {
                result += w[0].v;
            }
        }
    }
    let mut to_start = (first.t_ms - range_start_ms) as f64 / 1000.0;
    let mut to_end = (range_end_ms - last.t_ms) as f64 / 1000.0;
    let sampled = (last.t_ms - first.t_ms) as f64 / 1000.0;
    let average = sampled / (samples.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if is_counter && result > 0.0 && first.v >= 0.0 {
        // A counter started at zero: extrapolate no further back than where it was zero.
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= (range_end_ms - range_start_ms) as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` (`is_rate`) or `idelta`: from the last two samples; a drop counts as a counter
/// reset for `irate`.
pub fn instant_value(samples: &[Sample], is_rate: bool) -> Option<f64> {
    let [.., prev, last] = samples else { return None };
    let interval_ms = last.t_ms - prev.t_ms;
    if interval_ms == 0 {
        return None;
    }
    let mut value = last.v - prev.v;
    if is_rate && last.v < prev.v {
        value = last.v;
    }
    if is_rate {
        value /= interval_ms as f64 / 1000.0;
    }
    Some(value)
}

/// `resets`: how often a sample is below the one before it.
pub fn resets(samples: &[Sample]) -> f64 {
    samples.windows(2).filter(|w| w[1].v < w[0].v).count() as f64
}

/// `changes`: how often a sample differs from the one before it (NaN after NaN is no change).
pub fn changes(samples: &[Sample]) -> f64 {
    samples.windows(2).filter(|w| !(w[1].v == w[0].v || (w[1].v.is_nan() && w[0].v.is_nan()))).count() as f64
}

/// The `*_over_time` functions of one value each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OverTime {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    Present,
    Stddev,
    Stdvar,
    /// `quantile_over_time(φ, …)`.
    Quantile(f64),
}

/// `<agg>_over_time` of the samples; `None` for an empty window.
pub fn over_time(samples: &[Sample], agg: OverTime) -> Option<f64> {
    let last = samples.last()?;
    let n = samples.len() as f64;
    Some(match agg {
        OverTime::Count => n,
        OverTime::Present => 1.0,
        OverTime::Last => last.v,
        OverTime::Sum => {
            let (sum, c) = samples.iter().fold((0.0, 0.0), |(s, c), x| kahan_sum_inc(x.v, s, c));
            sum + c
        }
        OverTime::Avg => average(samples),
        // NaN is replaced by any number; a NaN stays only when all are NaN.
        OverTime::Min => samples.iter().skip(1).fold(samples[0].v, |m, x| if x.v < m || m.is_nan() { x.v } else { m }),
        OverTime::Max => samples.iter().skip(1).fold(samples[0].v, |m, x| if x.v > m || m.is_nan() { x.v } else { m }),
        OverTime::Stdvar => variance(samples),
        OverTime::Stddev => variance(samples).sqrt(),
        OverTime::Quantile(q) => {
            let mut values: Vec<f64> = samples.iter().map(|s| s.v).collect();
            quantile(q, &mut values)
        }
    })
}

/// The mean, summed with compensation; past an overflow to infinity, as a running mean.
fn average(samples: &[Sample]) -> f64 {
    let (mut sum, mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut incremental = false;
    for s in samples {
        count += 1.0;
        if !incremental {
            let (new_sum, new_c) = kahan_sum_inc(s.v, sum, c);
            if count == 1.0 || !new_sum.is_infinite() {
                (sum, c) = (new_sum, new_c);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_sum_inc(s.v / count, q * mean, q * c);
    }
    if incremental { mean + c } else { sum / count + c / count }
}

/// The population variance (Welford, with compensated sums).
fn variance(samples: &[Sample]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for s in samples {
        count += 1.0;
        let delta = s.v - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (s.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// The φ-quantile of `values` (reordered), interpolating between the two nearest ranks:
/// −∞ for φ < 0, +∞ for φ > 1, NaN for a NaN φ or no values.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every 15 s from `first_s`, with these values.
    fn every_15s(first_s: i64, values: &[f64]) -> Vec<Sample> {
        values.iter().enumerate().map(|(i, v)| Sample { t_ms: (first_s + 15 * i as i64) * 1000, v: *v }).collect()
    }

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("a value");
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} != {b}");
    }

    // Window (0 s, 60 s] throughout; each expectation worked through by hand from the rules.
    #[test]
    fn rate_and_increase_extrapolate_to_the_window_edges() {
        let s = every_15s(15, &[10.0, 20.0, 30.0, 40.0]);
        // 30 over 45 s of samples; 15 s to the start (< 1.1 × 15 s), 0 to the end: × 60/45.
        close(extrapolated_rate(&s, 0, 60_000, true, false), 40.0);
        close(extrapolated_rate(&s, 0, 60_000, true, true), 40.0 / 60.0);
        // A reset adds the value before it: 5 + 20 = 25, × 60/45.
        let s = every_15s(15, &[10.0, 20.0, 5.0, 15.0]);
        close(extrapolated_rate(&s, 0, 60_000, true, false), 25.0 * 60.0 / 45.0);
        // A counter is not extrapolated below zero: it was zero 1.5 s before its first sample.
        let s = every_15s(15, &[1.0, 11.0, 21.0, 31.0]);
        close(extrapolated_rate(&s, 0, 60_000, true, false), 30.0 * 46.5 / 45.0);
        // A gap to the start longer than 1.1 average intervals extrapolates half an interval.
        let s = every_15s(30, &[10.0, 20.0, 30.0]);
        close(extrapolated_rate(&s, 0, 60_000, true, false), 20.0 * 37.5 / 30.0);
        // delta: no reset handling, no zero clamp.
        let s = every_15s(15, &[10.0, 5.0, 20.0, 15.0]);
        close(extrapolated_rate(&s, 0, 60_000, false, false), 5.0 * 60.0 / 45.0);
        assert_eq!(extrapolated_rate(&s[..1], 0, 60_000, true, true), None, "one sample: no rate");
    }

    #[test]
    fn irate_and_idelta_use_the_last_two_samples() {
        let s = every_15s(15, &[10.0, 20.0, 30.0, 40.0]);
        close(instant_value(&s, true), 10.0 / 15.0);
        close(instant_value(&s, false), 10.0);
        let s = every_15s(15, &[10.0, 30.0, 5.0]);
        close(instant_value(&s, true), 5.0 / 15.0);
        close(instant_value(&s, false), -25.0);
        assert_eq!(instant_value(&s[..1], true), None);
    }

    #[test]
    fn resets_and_changes() {
        let s = every_15s(0, &[1.0, 1.0, 2.0, f64::NAN, f64::NAN, 3.0]);
        assert_eq!(changes(&s), 3.0);
        let s = every_15s(0, &[3.0, 1.0, 2.0, f64::NAN, 0.0]);
        assert_eq!(resets(&s), 1.0);
    }

    #[test]
    fn over_time_aggregations() {
        let s = every_15s(0, &[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        close(over_time(&s, OverTime::Avg), 5.0);
        close(over_time(&s, OverTime::Stdvar), 4.0);
        close(over_time(&s, OverTime::Stddev), 2.0);
        close(over_time(&s, OverTime::Sum), 40.0);
        close(over_time(&s, OverTime::Count), 8.0);
        close(over_time(&s, OverTime::Min), 2.0);
        close(over_time(&s, OverTime::Max), 9.0);
        close(over_time(&s, OverTime::Last), 9.0);
        close(over_time(&s, OverTime::Present), 1.0);
        close(over_time(&s, OverTime::Quantile(0.5)), 4.5);
        assert_eq!(over_time(&s, OverTime::Quantile(-1.0)), Some(f64::NEG_INFINITY));
        assert_eq!(over_time(&s, OverTime::Quantile(2.0)), Some(f64::INFINITY));
        assert_eq!(over_time(&[], OverTime::Count), None);
        // NaN is replaced by a number in min and max.
        let s = every_15s(0, &[f64::NAN, 3.0, 1.0]);
        close(over_time(&s, OverTime::Min), 1.0);
        close(over_time(&s, OverTime::Max), 3.0);
        // An overflowing sum falls back to a running mean.
        let s = every_15s(0, &[f64::MAX, f64::MAX, 0.0]);
        let avg = over_time(&s, OverTime::Avg).unwrap();
        assert!(avg.is_finite() && (avg - f64::MAX / 3.0 * 2.0).abs() <= f64::MAX * 1e-12, "{avg}");
    }

    #[test]
    fn compensated_sums_keep_small_terms() {
        let s = every_15s(0, &[1e16, 1.0, -1e16]);
        close(over_time(&s, OverTime::Sum), 1.0);
    }
}
