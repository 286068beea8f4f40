//! `histogram_quantile` over classic buckets (`le` series), as Prometheus's
//! `promql/quantile.go` computes it: buckets sorted by upper bound, equal bounds merged,
//! counts made monotonic, then linear interpolation inside the bucket the rank falls in.

/// One bucket: its upper bound (`le`) and the cumulative count of observations up to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub upper: f64,
    pub count: f64,
}

/// What [`bucket_quantile`] had to fix in its input (Prometheus reports these as annotations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fixes {
    /// A count below the one before it was raised to it.
    pub forced_monotonic: bool,
    /// A difference within floating-point noise (relative 1e-12) was ignored.
    pub fixed_precision: bool,
}

/// The smallest positive normal f64.
const MIN_NORMAL: f64 = f64::MIN_POSITIVE;

/// Whether `a` and `b` are equal within relative `epsilon` (both NaN counts as equal).
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if (a.is_nan() && b.is_nan()) || a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// The φ-quantile of the observations the buckets count: −∞ for φ < 0, +∞ for φ > 1, NaN for
/// a NaN φ, without a `+Inf` bucket, with fewer than two buckets, or with no observations.
pub fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> (f64, Fixes) {
    let mut fixes = Fixes::default();
    if q.is_nan() {
        return (f64::NAN, fixes);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, fixes);
    }
    if q > 1.0 {
        return (f64::INFINITY, fixes);
    }
    buckets.sort_by(|a, b| a.upper.total_cmp(&b.upper));
    if buckets.last().is_none_or(|b| b.upper != f64::INFINITY) {
        return (f64::NAN, fixes);
    }
    // Buckets of one bound (from series differing in another label) count together.
    buckets.dedup_by(|later, kept| {
        let same = later.upper == kept.upper;
        if same {
            kept.count += later.count;
        }
        same
    });
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        if b.count == prev {
            continue;
        }
        if almost_equal(prev, b.count, 1e-12) {
            b.count = prev;
            fixes.fixed_precision = true;
        } else if b.count < prev {
            b.count = prev;
            fixes.forced_monotonic = true;
        } else {
            prev = b.count;
        }
    }
    if buckets.len() < 2 {
        return (f64::NAN, fixes);
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return (f64::NAN, fixes);
    }
    let mut rank = q * observations;
    // The first bucket (the +Inf one aside) holding at least `rank` observations.
    let b = buckets[..buckets.len() - 1].partition_point(|x| x.count < rank);
    if b == buckets.len() - 1 {
        return (buckets[buckets.len() - 2].upper, fixes);
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return (buckets[0].upper, fixes);
    }
    let (mut start, end, mut count) = (0.0, buckets[b].upper, buckets[b].count);
    if b > 0 {
        start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    (start + (end - start) * (rank / count), fixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs.iter().map(|(upper, count)| Bucket { upper: *upper, count: *count }).collect()
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn interpolates_inside_the_bucket_of_the_rank() {
        let b = buckets(&[(1.0, 30.0), (0.1, 10.0), (INF, 40.0), (0.5, 20.0)]);
        let q = |q: f64| bucket_quantile(q, &mut b.clone()).0;
        assert_eq!(q(0.25), 0.1, "rank 10: the top of the first bucket");
        assert_eq!(q(0.5), 0.5);
        assert!((q(0.6) - 0.7).abs() < 1e-12, "{}", q(0.6));
        assert_eq!(q(0.9), 1.0, "in the +Inf bucket: the highest finite bound");
        assert_eq!(q(0.0), 0.0, "the first bucket starts at 0");
        assert_eq!(q(-0.1), f64::NEG_INFINITY);
        assert_eq!(q(1.1), INF);
        assert!(q(f64::NAN).is_nan());
    }

    #[test]
    fn refuses_what_it_cannot_answer() {
        assert!(bucket_quantile(0.5, &mut buckets(&[(0.1, 1.0), (1.0, 2.0)])).0.is_nan(), "no +Inf bucket");
        assert!(bucket_quantile(0.5, &mut buckets(&[(INF, 3.0)])).0.is_nan(), "one bucket");
        assert!(bucket_quantile(0.5, &mut buckets(&[(1.0, 0.0), (INF, 0.0)])).0.is_nan(), "no observations");
        assert!(bucket_quantile(0.5, &mut Vec::new()).0.is_nan());
    }

    #[test]
    fn a_first_bound_at_or_below_zero_is_the_answer_in_it() {
        let mut b = buckets(&[(-1.0, 10.0), (0.0, 20.0), (INF, 20.0)]);
        assert_eq!(bucket_quantile(0.25, &mut b).0, -1.0);
    }

    #[test]
    fn counts_are_made_monotonic_and_equal_bounds_merged() {
        let mut b = buckets(&[(0.1, 10.0), (0.5, 8.0), (1.0, 30.0), (INF, 40.0)]);
        let (v, fixes) = bucket_quantile(0.5, &mut b);
        assert!(fixes.forced_monotonic && !fixes.fixed_precision);
        // Counts 10, 10, 30, 40: rank 20 falls in (0.5, 1] at 10 of 20.
        assert!((v - 0.75).abs() < 1e-12, "{v}");
        let mut b = buckets(&[(0.1, 10.0), (0.5, 10.0 * (1.0 - 1e-14)), (INF, 20.0)]);
        let (_, fixes) = bucket_quantile(0.5, &mut b);
        assert!(fixes.fixed_precision && !fixes.forced_monotonic);
        let mut b = buckets(&[(1.0, 5.0), (1.0, 5.0), (INF, 20.0)]);
        assert_eq!(bucket_quantile(0.5, &mut b).0, 1.0, "the merged bucket holds 10 of 20");
    }
}
