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

mod histogram;

use histogram::{Exp, Hist, HistCell, histograms};
#[cfg(test)]
mod tests;
