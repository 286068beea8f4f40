//! The metrics explorer's math: raw OTLP metric points, already read from storage, become chart
//! lines with one value per time bucket.
//!
//! Pure and synchronous, so the engine, the web crate and the tests share one definition of what
//! "rate of a counter" or "p99 of a histogram" means.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most buckets one chart may ask for: more is bigger than any screen and costs memory.
pub const MAX_BUCKETS: usize = 10_000;

/// Summary quantiles went through float serialisation, so they are matched within this distance.
const QUANTILE_TOLERANCE: f64 = 1e-9;

/// The OTLP data point types, as named in the `metrics` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

impl MetricKind {
    /// Reads the name used by the table and the API; `None` for anything else.
    pub fn parse(s: &str) -> Option<MetricKind> {
        match s {
            "gauge" => Some(MetricKind::Gauge),
            "sum" => Some(MetricKind::Sum),
            "histogram" => Some(MetricKind::Histogram),
            "exponential_histogram" => Some(MetricKind::ExponentialHistogram),
            "summary" => Some(MetricKind::Summary),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Sum => "sum",
            MetricKind::Histogram => "histogram",
            MetricKind::ExponentialHistogram => "exponential_histogram",
            MetricKind::Summary => "summary",
        }
    }
}

/// How the points of one bucket become one value of a chart line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Sum,
    Avg,
    Min,
    Max,
    Rate,
    P50,
    P95,
    P99,
}

impl Aggregation {
    pub const ALL: [Aggregation; 8] = [
        Aggregation::Sum,
        Aggregation::Avg,
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::Rate,
        Aggregation::P50,
        Aggregation::P95,
        Aggregation::P99,
    ];

    /// Reads the name used by the API; the error names the valid ones so the caller can fix it.
    pub fn parse(s: &str) -> Result<Aggregation, String> {
        Aggregation::ALL.into_iter().find(|agg| agg.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Aggregation::ALL.iter().map(|agg| agg.as_str()).collect();
            format!("unknown aggregation {s:?}; expected one of {}", names.join(", "))
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Rate => "rate",
            Aggregation::P50 => "p50",
            Aggregation::P95 => "p95",
            Aggregation::P99 => "p99",
        }
    }

    /// Which aggregations make sense for a kind (used by the UI to offer them and by
    /// [`aggregate`] to refuse others): a rate of a gauge or the min of a summary has no meaning.
    pub fn applies_to(&self, kind: MetricKind, monotonic: bool) -> bool {
        let plain = matches!(self, Aggregation::Sum | Aggregation::Avg | Aggregation::Min | Aggregation::Max);
        match kind {
            MetricKind::Gauge => plain,
            MetricKind::Sum => plain || (monotonic && *self == Aggregation::Rate),
            MetricKind::Histogram | MetricKind::ExponentialHistogram => true,
            // Summaries carry neither min nor max.
            MetricKind::Summary => !matches!(self, Aggregation::Min | Aggregation::Max),
        }
    }

    /// The quantile a percentile asks for.
    fn quantile(&self) -> Option<f64> {
        match self {
            Aggregation::P50 => Some(0.5),
            Aggregation::P95 => Some(0.95),
            Aggregation::P99 => Some(0.99),
            _ => None,
        }
    }
}

/// One stored data point of one metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricPoint {
    pub time_ns: i64,
    pub start_ns: Option<i64>,
    /// Identity of the time series the point belongs to (service + resource + attributes,
    /// serialised by the caller).
    pub series: String,
    /// Value of the group-by attribute ("" when not grouping or absent).
    pub group: String,
    /// Temporality is cumulative (false: delta, or not applicable).
    pub cumulative: bool,
    pub monotonic: bool,
    /// Gauge and sum value.
    pub value: Option<f64>,
    /// Histograms and summaries.
    pub count: Option<u64>,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Histogram bounds, ascending.
    pub explicit_bounds: Vec<f64>,
    /// Histogram: `explicit_bounds.len() + 1` entries, the last one above every bound.
    pub bucket_counts: Vec<u64>,
    pub exp_scale: Option<i32>,
    pub exp_zero_count: Option<u64>,
    pub exp_zero_threshold: Option<f64>,
    pub exp_positive_offset: Option<i32>,
    pub exp_positive_bucket_counts: Vec<u64>,
    /// Summary: (quantile, value).
    pub quantiles: Vec<(f64, f64)>,
}

/// One line of a chart: a value per bucket (None = no data in that bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesValues {
    pub group: String,
    pub values: Vec<Option<f64>>,
}

/// A request the data cannot answer; the message is shown to the user as is.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct AggregateError(pub String);

/// Turns the points of one metric into one chart line per group.
///
/// Buckets are `[start_ns + i*step_ns, start_ns + (i+1)*step_ns)` for i in 0..n where
/// n = ceil((end_ns-start_ns)/step_ns). Points with time outside `[start_ns, end_ns)` are used only
/// as the "previous point" of their series for cumulative differencing (callers fetch one extra
/// step before start for that), never counted in a bucket.
///
/// Result: one [`SeriesValues`] per distinct group that has a usable point in the window, sorted
/// by group name; each has exactly n values.
///
/// - Gauges and sums, sum/avg/min/max: the last value of each series in a bucket (a series
///   reporting twice is not counted twice), combined across the series of the group. For a
///   cumulative counter that is its last total.
/// - Rate: the increase of each series (differenced when cumulative, restarts detected by a drop
///   or a changed start time) summed over the group and divided by the step in seconds. The first
///   point of a cumulative series has no baseline and adds nothing, unless the series started
///   inside the window.
/// - Histograms: increments as for rate, summed over the group; percentiles interpolate within
///   buckets as Prometheus' `histogram_quantile` does. Exponential histograms become explicit
///   ones; their negative buckets are ignored.
/// - Summaries: rate/sum/avg from count and sum increases; a percentile is the mean over the
///   series of their own quantile, which is not the quantile of the union.
///
/// A sum counts as monotonic when all its points say so. NaN and infinite values are skipped.
pub fn aggregate(
    kind: MetricKind,
    points: &[MetricPoint],
    agg: Aggregation,
    start_ns: i64,
    end_ns: i64,
    step_ns: i64,
) -> Result<Vec<SeriesValues>, AggregateError> {
    let monotonic = points.iter().all(|point| point.monotonic);
    if !agg.applies_to(kind, monotonic) {
        return Err(refusal(kind, monotonic, agg));
    }
    let grid = Grid::new(start_ns, end_ns, step_ns)?;
    let sorted = by_series_and_time(points);
    let step_secs = step_ns as f64 / 1e9;
    let lines = match (kind, agg) {
        (MetricKind::Gauge | MetricKind::Sum, Aggregation::Rate) => counter_rate(&sorted, &grid, step_secs),
        (MetricKind::Gauge | MetricKind::Sum, _) => {
            finish(last_values(&sorted, &grid, |point| point.value), |stats| stats.value(agg))
        }
        (MetricKind::Histogram, _) => histograms(&sorted, &grid, agg, step_secs, Hist::from_point, Some),
        (MetricKind::ExponentialHistogram, _) => {
            histograms(&sorted, &grid, agg, step_secs, Exp::from_point, Exp::into_hist)
        }
        (MetricKind::Summary, _) => summaries(&sorted, &grid, agg, step_secs),
    };
    Ok(lines)
}

/// Says why, and what would work instead, so the UI can show the message as is.
fn refusal(kind: MetricKind, monotonic: bool, agg: Aggregation) -> AggregateError {
    let what = match kind {
        MetricKind::Gauge => "a gauge",
        MetricKind::Sum if monotonic => "a monotonic sum (counter)",
        MetricKind::Sum => "a non-monotonic sum (up-down counter)",
        MetricKind::Histogram => "a histogram",
        MetricKind::ExponentialHistogram => "an exponential histogram",
        MetricKind::Summary => "a summary",
    };
    let name = agg.as_str();
    let reason = match agg {
        Aggregation::Rate => "rate needs a monotonic sum (counter), a histogram or a summary".to_owned(),
        Aggregation::P50 | Aggregation::P95 | Aggregation::P99 => format!("{name} needs a histogram or a summary"),
        Aggregation::Min | Aggregation::Max => format!("{name} needs a gauge, a sum or a histogram"),
        Aggregation::Sum | Aggregation::Avg => format!("{name} does not apply"),
    };
    let allowed: Vec<&str> =
        Aggregation::ALL.iter().filter(|a| a.applies_to(kind, monotonic)).map(|a| a.as_str()).collect();
    AggregateError(format!("{reason}; this metric is {what} (it allows {})", allowed.join(", ")))
}

/// The time buckets of a chart.
#[derive(Debug, Clone, Copy)]
struct Grid {
    start_ns: i64,
    end_ns: i64,
    step_ns: i64,
    n: usize,
}

impl Grid {
    fn new(start_ns: i64, end_ns: i64, step_ns: i64) -> Result<Grid, AggregateError> {
        if step_ns <= 0 {
            return Err(AggregateError(format!("the step must be positive, got {step_ns} ns")));
        }
        if end_ns <= start_ns {
            return Err(AggregateError(format!("the time range is empty: end {end_ns} is not after start {start_ns}")));
        }
        // i128: the span of two extreme i64 times does not fit an i64.
        let span = i128::from(end_ns) - i128::from(start_ns);
        let step = i128::from(step_ns);
        let n = span / step + i128::from(span % step != 0);
        match usize::try_from(n) {
            Ok(n) if n <= MAX_BUCKETS => Ok(Grid { start_ns, end_ns, step_ns, n }),
            _ => Err(AggregateError(format!(
                "{n} buckets requested but at most {MAX_BUCKETS} are allowed; use a longer step or a shorter range"
            ))),
        }
    }

    /// The bucket a time falls in; `None` outside the window.
    fn bucket(&self, time_ns: i64) -> Option<usize> {
        if !(self.start_ns..self.end_ns).contains(&time_ns) {
            return None;
        }
        usize::try_from((i128::from(time_ns) - i128::from(self.start_ns)) / i128::from(self.step_ns)).ok()
    }
}

/// Each series' points together and in time order, so "previous" and "last" are neighbours.
fn by_series_and_time(points: &[MetricPoint]) -> Vec<&MetricPoint> {
    let mut sorted: Vec<&MetricPoint> = points.iter().collect();
    sorted.sort_by(|a, b| a.series.cmp(&b.series).then(a.time_ns.cmp(&b.time_ns)));
    sorted
}

/// The cell of a group's line at a bucket, the line created empty on first use.
fn cell_at<'c, 'a, C: Clone + Default>(
    cells: &'c mut BTreeMap<&'a str, Vec<C>>,
    group: &'a str,
    n: usize,
    bucket: usize,
) -> Option<&'c mut C> {
    cells.entry(group).or_insert_with(|| vec![C::default(); n]).get_mut(bucket)
}

/// One line per group; the map already sorts them by name.
fn finish<C>(cells: BTreeMap<&str, Vec<C>>, value: impl Fn(&C) -> Option<f64>) -> Vec<SeriesValues> {
    cells
        .into_iter()
        .map(|(group, cells)| SeriesValues { group: group.to_owned(), values: cells.iter().map(&value).collect() })
        .collect()
}

/// Values combined across the series of a group.
#[derive(Debug, Clone, Default)]
struct Stats {
    n: usize,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Stats {
    fn add(&mut self, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }

    fn value(&self, agg: Aggregation) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        match agg {
            Aggregation::Sum => Some(self.sum),
            Aggregation::Min => self.min,
            Aggregation::Max => self.max,
            Aggregation::Avg | Aggregation::P50 | Aggregation::P95 | Aggregation::P99 => Some(self.sum / self.n as f64),
            Aggregation::Rate => None,
        }
    }
}

/// The last usable value of each series in each bucket, so that a series reporting twice in a
/// bucket is counted once.
fn last_values<'a>(
    sorted: &[&'a MetricPoint],
    grid: &Grid,
    value: impl Fn(&MetricPoint) -> Option<f64>,
) -> BTreeMap<&'a str, Vec<Stats>> {
    let mut cells: BTreeMap<&'a str, Vec<Stats>> = BTreeMap::new();
    for chunk in sorted.chunk_by(|a, b| a.series == b.series) {
        let entries: Vec<(usize, &'a str, f64)> = chunk
            .iter()
            .filter_map(|&point| {
                let bucket = grid.bucket(point.time_ns)?;
                let v = value(point).filter(|v| v.is_finite())?;
                Some((bucket, point.group.as_str(), v))
            })
            .collect();
        for (k, &(bucket, group, v)) in entries.iter().enumerate() {
            let superseded = entries.get(k + 1).is_some_and(|&(b, g, _)| b == bucket && g == group);
            if superseded {
                continue;
            }
            if let Some(stats) = cell_at(&mut cells, group, grid.n, bucket) {
                stats.add(v);
            }
        }
    }
    cells
}

/// A cumulative total that can be differenced against the previous point of its series.
trait Cumulative: Clone {
    /// What was added since `prev`; `None` when the total went down, i.e. the series restarted.
    fn increase_since(&self, prev: &Self) -> Option<Self>;
    /// An increase of nothing, for a point whose baseline is unknown.
    fn zero(&self) -> Self;
}

impl Cumulative for f64 {
    fn increase_since(&self, prev: &f64) -> Option<f64> {
        if self < prev { None } else { Some(self - prev) }
    }

    fn zero(&self) -> f64 {
        0.0
    }
}

/// What a point adds to its bucket: a delta point itself; a cumulative one its increase over the
/// previous point, or itself after a restart. A cumulative series' first point has no baseline,
/// so it adds nothing unless the series started inside the window.
fn increment_of<T: Cumulative>(
    current: &T,
    start_ns: Option<i64>,
    cumulative: bool,
    prev: Option<&(T, Option<i64>)>,
    window_start_ns: i64,
) -> T {
    if !cumulative {
        return current.clone();
    }
    match prev {
        None if start_ns.is_some_and(|start| start >= window_start_ns) => current.clone(),
        None => current.zero(),
        Some((old, old_start)) => {
            let restarted = matches!((*old_start, start_ns), (Some(a), Some(b)) if a != b);
            if restarted { current.clone() } else { current.increase_since(old).unwrap_or_else(|| current.clone()) }
        }
    }
}

/// Walks each series in time order and hands every in-window point's increment to `emit`.
/// Points `read` cannot use (NaN, malformed) are skipped, also as baselines.
fn walk<'a, T: Cumulative>(
    sorted: &[&'a MetricPoint],
    grid: &Grid,
    always_cumulative: bool,
    read: impl Fn(&MetricPoint) -> Option<T>,
    mut emit: impl FnMut(&'a MetricPoint, usize, T),
) {
    for chunk in sorted.chunk_by(|a, b| a.series == b.series) {
        let mut prev: Option<(T, Option<i64>)> = None;
        for &point in chunk {
            let Some(current) = read(point) else { continue };
            if let Some(bucket) = grid.bucket(point.time_ns) {
                let cumulative = always_cumulative || point.cumulative;
                let increment = increment_of(&current, point.start_ns, cumulative, prev.as_ref(), grid.start_ns);
                emit(point, bucket, increment);
            }
            prev = Some((current, point.start_ns));
        }
    }
}

/// Rate of monotonic sums. A bucket with points but no increase is 0, without points `None`.
fn counter_rate(sorted: &[&MetricPoint], grid: &Grid, step_secs: f64) -> Vec<SeriesValues> {
    let mut cells: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    let read = |point: &MetricPoint| point.value.filter(|v| v.is_finite());
    walk(sorted, grid, false, read, |point, bucket, increment| {
        if let Some(total) = cell_at(&mut cells, point.group.as_str(), grid.n, bucket) {
            *total = Some(total.unwrap_or(0.0) + increment);
        }
    });
    finish(cells, |total| total.map(|increase| increase / step_secs))
}

/// An explicit-bounds histogram, or the increment of one.
#[derive(Debug, Clone, PartialEq)]
struct Hist {
    count: u64,
    sum: Option<f64>,
    /// Finite and ascending; empty when the point has no buckets (count and sum only).
    bounds: Vec<f64>,
    /// `bounds.len() + 1` entries, or none.
    buckets: Vec<u64>,
}

impl Hist {
    /// `None` for malformed points (bounds not finite and ascending, wrong number of buckets):
    /// their buckets cannot be placed.
    fn from_point(point: &MetricPoint) -> Option<Hist> {
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

fn total(counts: &[u64]) -> u64 {
    counts.iter().fold(0u64, |acc, &c| acc.saturating_add(c))
}

/// The positive half of an exponential histogram, or the increment of one.
///
/// Negative buckets are ignored: latencies and sizes, what these charts show, are never negative,
/// and the explicit form below has no room for them. `count` still includes them.
#[derive(Debug, Clone, PartialEq)]
struct Exp {
    scale: i32,
    zero_threshold: f64,
    zero_count: u64,
    offset: i64,
    counts: Vec<u64>,
    count: u64,
    sum: Option<f64>,
}

impl Exp {
    /// Absent fields take their protobuf defaults (scale 0, offset 0, no zero bucket).
    fn from_point(point: &MetricPoint) -> Option<Exp> {
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
    fn downscaled(&self, scale: i32) -> Exp {
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
    fn into_hist(self) -> Option<Hist> {
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
struct HistCell {
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
    fn add(&mut self, count: u64, sum: Option<f64>) {
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

    fn value(&self, agg: Aggregation, step_secs: f64) -> Option<f64> {
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
fn merge_buckets(buckets: &[(f64, u64)]) -> Vec<(f64, u64)> {
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
fn bucket_quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
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
fn histograms<T: Cumulative>(
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

/// The running count and sum of a summary.
#[derive(Debug, Clone, PartialEq)]
struct SummaryTotals {
    count: u64,
    sum: Option<f64>,
}

impl SummaryTotals {
    fn from_point(point: &MetricPoint) -> Option<SummaryTotals> {
        Some(SummaryTotals { count: point.count?, sum: point.sum.filter(|s| s.is_finite()) })
    }
}

impl Cumulative for SummaryTotals {
    /// A count going down means a restart; the sum alone may legitimately go down.
    fn increase_since(&self, prev: &SummaryTotals) -> Option<SummaryTotals> {
        if self.count < prev.count {
            return None;
        }
        Some(SummaryTotals { count: self.count - prev.count, sum: self.sum.zip(prev.sum).map(|(a, b)| a - b) })
    }

    fn zero(&self) -> SummaryTotals {
        SummaryTotals { count: 0, sum: self.sum.map(|_| 0.0) }
    }
}

/// A summary's value at quantile `q`, if it reports that quantile.
fn summary_quantile(point: &MetricPoint, q: f64) -> Option<f64> {
    point.quantiles.iter().find(|entry| (entry.0 - q).abs() <= QUANTILE_TOLERANCE).map(|entry| entry.1)
}

/// Summaries are cumulative by definition in OTLP (they carry no temporality), so they are always
/// differenced. A percentile is the mean over the series of each one's last reported quantile in
/// the bucket: a mean of quantiles, not the quantile of the union, and shown as such.
fn summaries(sorted: &[&MetricPoint], grid: &Grid, agg: Aggregation, step_secs: f64) -> Vec<SeriesValues> {
    if let Some(q) = agg.quantile() {
        let cells = last_values(sorted, grid, |point| summary_quantile(point, q));
        return finish(cells, |stats| stats.value(Aggregation::Avg));
    }
    let mut cells: BTreeMap<&str, Vec<HistCell>> = BTreeMap::new();
    walk(sorted, grid, true, SummaryTotals::from_point, |point, bucket, increment| {
        if let Some(cell) = cell_at(&mut cells, point.group.as_str(), grid.n, bucket) {
            cell.add(increment.count, increment.sum);
        }
    });
    finish(cells, |cell| cell.value(agg, step_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let points = [
            gauge("a", "", 5 * S, 3.0),
            gauge("b", "", 2 * S, 5.0),
            gauge("a", "", S, 1.0),
            gauge("a", "", 12 * S, 10.0),
        ];
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
        let run = |points: &[MetricPoint], agg| {
            single(aggregate(MetricKind::Histogram, points, agg, 100 * S, 110 * S, 10 * S))
        };
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
}
