//! Histograms, explicit and exponential: increments between points, merged buckets and
//! quantiles by interpolation within a bucket.

use super::*;

/// An explicit-bounds histogram, or the increment of one.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hist {
    pub(super) count: u64,
    sum: Option<f64>,
    /// Finite and ascending; empty when the point has no buckets (count and sum only).
    pub(super) bounds: Vec<f64>,
    /// `bounds.len() + 1` entries, or none.
    pub(super) buckets: Vec<u64>,
}

impl Hist {
    /// `None` for malformed points (bounds not finite and ascending, wrong number of buckets):
    /// their buckets cannot be placed.
    pub(super) fn from_point(point: &MetricPoint) -> Option<Hist> {
        let bounds = &point.explicit_bounds;
        let placeable = bounds.iter().all(|b| b.is_finite()) && bounds.is_sorted();
        if !placeable {
            return None;
        }
        let (bounds, buckets) = if point.bucket_counts.is_empty() {
            (Vec::new(), Vec::new())
        } else if point.bucket_counts.len() == bounds.len() + 1 {
            (bounds.clone(), point.bucket_counts.clone())
        } else {
            return None;
        };
        let count = point.count.unwrap_or_else(|| total(&buckets));
        Some(Hist { count, sum: point.sum.filter(|s| s.is_finite()), bounds, buckets })
    }

    /// Each bucket as (upper bound, count), the last one's bound infinite.
    fn pairs(&self) -> impl Iterator<Item = (f64, u64)> {
        let upper = move |i: usize| self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
        self.buckets.iter().enumerate().map(move |(i, &count)| (upper(i), count))
    }
}

impl Cumulative for Hist {
    /// Changed bounds or any count going down mean the series restarted.
    fn increase_since(&self, prev: &Hist) -> Option<Hist> {
        if self.bounds != prev.bounds || self.buckets.len() != prev.buckets.len() || self.count < prev.count {
            return None;
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&prev.buckets)
            .map(|(&now, &before)| now.checked_sub(before))
            .collect::<Option<Vec<u64>>>()?;
        Some(Hist {
            count: self.count - prev.count,
            sum: self.sum.zip(prev.sum).map(|(now, before)| now - before),
            bounds: self.bounds.clone(),
            buckets,
        })
    }

    fn zero(&self) -> Hist {
        Hist { count: 0, sum: self.sum.map(|_| 0.0), bounds: Vec::new(), buckets: Vec::new() }
    }
}

pub(super) fn total(counts: &[u64]) -> u64 {
    counts.iter().fold(0u64, |acc, &c| acc.saturating_add(c))
}

/// The positive half of an exponential histogram, or the increment of one.
///
/// Negative buckets are ignored: latencies and sizes, what these charts show, are never negative,
/// and the explicit form below has no room for them. `count` still includes them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Exp {
    pub(super) scale: i32,
    pub(super) zero_threshold: f64,
    pub(super) zero_count: u64,
    pub(super) offset: i64,
    pub(super) counts: Vec<u64>,
    pub(super) count: u64,
    pub(super) sum: Option<f64>,
}

impl Exp {
    /// Absent fields take their protobuf defaults (scale 0, offset 0, no zero bucket).
    pub(super) fn from_point(point: &MetricPoint) -> Option<Exp> {
        let zero_threshold = point.exp_zero_threshold.unwrap_or(0.0);
        if !zero_threshold.is_finite() {
            return None;
        }
        let zero_count = point.exp_zero_count.unwrap_or(0);
        let counts = point.exp_positive_bucket_counts.clone();
        let count = point.count.unwrap_or_else(|| zero_count.saturating_add(total(&counts)));
        Some(Exp {
            scale: point.exp_scale.unwrap_or(0),
            zero_threshold,
            zero_count,
            offset: i64::from(point.exp_positive_offset.unwrap_or(0)),
            counts,
            count,
            sum: point.sum.filter(|s| s.is_finite()),
        })
    }

    fn count_at(&self, index: i64) -> u64 {
        index
            .checked_sub(self.offset)
            .and_then(|pos| usize::try_from(pos).ok())
            .and_then(|pos| self.counts.get(pos))
            .copied()
            .unwrap_or(0)
    }

    /// The same histogram at a coarser scale: each step down merges pairs of buckets, as SDKs
    /// do when a histogram outgrows its bucket limit.
    pub(super) fn downscaled(&self, scale: i32) -> Exp {
        let shift = i64::from(self.scale) - i64::from(scale);
        if shift <= 0 {
            return self.clone();
        }
        let shift = u32::try_from(shift.min(63)).unwrap_or(63);
        let offset = self.offset >> shift;
        let mut counts: Vec<u64> = Vec::new();
        for (&count, index) in self.counts.iter().zip(self.offset..) {
            let Ok(pos) = usize::try_from((index >> shift) - offset) else { continue };
            if counts.len() <= pos {
                counts.resize(pos + 1, 0);
            }
            if let Some(slot) = counts.get_mut(pos) {
                *slot = slot.saturating_add(count);
            }
        }
        Exp {
            scale,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count,
            offset,
            counts,
            count: self.count,
            sum: self.sum,
        }
    }

    /// The explicit histogram: base = 2^(2^-scale); positive bucket k covers
    /// (base^(offset+k), base^(offset+k+1)]. Bounds are [zero threshold, base^(offset+1), …,
    /// base^(offset+n)] and counts [zero count, c0, …, c(n-1), 0], so the first positive bucket
    /// reaches down to the zero threshold. `None` when a bound overflows.
    pub(super) fn into_hist(self) -> Option<Hist> {
        let factor = (-f64::from(self.scale)).exp2();
        let uppers: Vec<f64> = (self.offset.saturating_add(1)..)
            .take(self.counts.len())
            .map(|index| (index as f64 * factor).exp2())
            .collect();
        if uppers.iter().any(|upper| !upper.is_finite()) {
            return None;
        }
        // Keeps the bounds ascending should a zero threshold exceed the first bucket.
        let floor = uppers.first().map_or(self.zero_threshold, |&upper| self.zero_threshold.min(upper));
        let mut bounds = Vec::with_capacity(uppers.len() + 1);
        bounds.push(floor);
        bounds.extend(uppers);
        let mut buckets = Vec::with_capacity(self.counts.len() + 2);
        buckets.push(self.zero_count);
        buckets.extend_from_slice(&self.counts);
        buckets.push(0);
        Some(Hist { count: self.count, sum: self.sum, bounds, buckets })
    }
}

impl Cumulative for Exp {
    /// Compares bucket by bucket at the coarser of the two scales, so a histogram whose range
    /// grew (new offset, more buckets) or that was downscaled is not taken for a restart.
    fn increase_since(&self, prev: &Exp) -> Option<Exp> {
        if self.zero_threshold.total_cmp(&prev.zero_threshold).is_ne()
            || self.count < prev.count
            || self.zero_count < prev.zero_count
        {
            return None;
        }
        let scale = self.scale.min(prev.scale);
        let now = self.downscaled(scale);
        let before = prev.downscaled(scale);
        if !before.counts.iter().zip(before.offset..).all(|(&count, index)| count <= now.count_at(index)) {
            return None;
        }
        let counts = now
            .counts
            .iter()
            .zip(now.offset..)
            .map(|(&count, index)| count.saturating_sub(before.count_at(index)))
            .collect();
        Some(Exp {
            scale,
            zero_threshold: now.zero_threshold,
            zero_count: now.zero_count - before.zero_count,
            offset: now.offset,
            counts,
            count: self.count - prev.count,
            sum: self.sum.zip(prev.sum).map(|(a, b)| a - b),
        })
    }

    fn zero(&self) -> Exp {
        Exp {
            scale: self.scale,
            zero_threshold: self.zero_threshold,
            zero_count: 0,
            offset: self.offset,
            counts: Vec::new(),
            count: 0,
            sum: self.sum.map(|_| 0.0),
        }
    }
}

/// Increments of histograms (or summaries) summed across the series of a group.
#[derive(Debug, Clone, Default)]
pub(super) struct HistCell {
    points: usize,
    count: u64,
    sum: f64,
    has_sum: bool,
    min: Option<f64>,
    max: Option<f64>,
    /// (upper bound, count) of every increment, merged when a percentile is asked for.
    buckets: Vec<(f64, u64)>,
}

impl HistCell {
    pub(super) fn add(&mut self, count: u64, sum: Option<f64>) {
        self.points += 1;
        self.count = self.count.saturating_add(count);
        if let Some(sum) = sum {
            self.sum += sum;
            self.has_sum = true;
        }
    }

    fn add_hist(&mut self, hist: &Hist) {
        self.add(hist.count, hist.sum);
        self.buckets.extend(hist.pairs());
    }

    /// Min and max are those of the points themselves: they cannot be differenced.
    fn add_extremes(&mut self, min: Option<f64>, max: Option<f64>) {
        if let Some(min) = min.filter(|m| m.is_finite()) {
            self.min = Some(self.min.map_or(min, |m| m.min(min)));
        }
        if let Some(max) = max.filter(|m| m.is_finite()) {
            self.max = Some(self.max.map_or(max, |m| m.max(max)));
        }
    }

    pub(super) fn value(&self, agg: Aggregation, step_secs: f64) -> Option<f64> {
        if self.points == 0 {
            return None;
        }
        match agg {
            Aggregation::Rate => Some(self.count as f64 / step_secs),
            Aggregation::Sum => self.has_sum.then_some(self.sum),
            Aggregation::Avg => {
                if self.has_sum && self.count > 0 {
                    Some(self.sum / self.count as f64)
                } else {
                    None
                }
            }
            Aggregation::Min => self.min,
            Aggregation::Max => self.max,
            Aggregation::P50 | Aggregation::P95 | Aggregation::P99 => {
                agg.quantile().and_then(|q| bucket_quantile(q, &merge_buckets(&self.buckets)))
            }
        }
    }
}

/// Adds up buckets by upper bound, as Prometheus does with `le`: exact when the series of a
/// group share their bounds, an approximation when they do not.
pub(super) fn merge_buckets(buckets: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, u64)> = Vec::with_capacity(sorted.len());
    for (upper, count) in sorted {
        match merged.last_mut() {
            Some(last) if last.0.total_cmp(&upper).is_eq() => last.1 = last.1.saturating_add(count),
            _ => merged.push((upper, count)),
        }
    }
    merged
}

/// Prometheus' `histogram_quantile` over ascending (upper bound, count) buckets, the last one's
/// bound infinite: linear interpolation inside the bucket holding the rank; the first bucket
/// starts at min(0, its bound); a rank in the infinite bucket answers the last finite bound.
pub(super) fn bucket_quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let total = buckets.iter().fold(0u64, |acc, &(_, count)| acc.saturating_add(count));
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = buckets.first().map_or(0.0, |&(upper, _)| upper.min(0.0));
    let mut last_finite: Option<f64> = None;
    let mut before = 0u64;
    for &(upper, count) in buckets {
        let after = before.saturating_add(count);
        if after as f64 >= rank {
            if !upper.is_finite() {
                return last_finite;
            }
            if count == 0 {
                return Some(upper);
            }
            return Some(lower + (upper - lower) * (rank - before as f64) / count as f64);
        }
        before = after;
        lower = upper;
        last_finite = Some(upper);
    }
    last_finite
}

/// Histograms, explicit or exponential: `read` parses a point, `to_hist` makes an increment
/// explicit.
pub(super) fn histograms<T: Cumulative>(
    sorted: &[&MetricPoint],
    grid: &Grid,
    agg: Aggregation,
    step_secs: f64,
    read: impl Fn(&MetricPoint) -> Option<T>,
    to_hist: impl Fn(T) -> Option<Hist>,
) -> Vec<SeriesValues> {
    let mut cells: BTreeMap<&str, Vec<HistCell>> = BTreeMap::new();
    walk(sorted, grid, false, read, |point, bucket, increment| {
        let Some(hist) = to_hist(increment) else { return };
        let Some(cell) = cell_at(&mut cells, point.group.as_str(), grid.n, bucket) else { return };
        cell.add_hist(&hist);
        cell.add_extremes(point.min, point.max);
    });
    finish(cells, |cell| cell.value(agg, step_secs))
}
