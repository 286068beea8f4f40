//! The head: acknowledged rows not yet in Parquet, held in memory and visible to queries.
//!
//! Rows arrive from the WAL writer in LSN order with no gaps (see the collector's `wal`), so a
//! generation of the head always holds a contiguous LSN range. A flush swaps the active
//! generation out as the *flushing* one; both stay visible to queries until the catalog
//! commit. Queries learn the first LSN of what they read from the head and skip catalog
//! segments written from the same LSNs ([`HeadSnapshot::overlap_from_lsn`]), so a row is never
//! counted twice nor missed while a flush is in progress.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arrow::array::{Array, TimestampNanosecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;
use tokio::sync::Notify;
pub use tracelight_model::sink::batch_bytes;
use tracelight_model::telemetry::{Gauge, Registry};
use tracelight_model::time::hour_of;
use tracelight_model::{BatchSink, Reservation, Signal, SignalBatch, SinkError, Tenant};

use crate::headbatch::HeadBatch;

/// Where rows of one tenant, signal and hour live.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    pub tenant: Tenant,
    pub signal: Signal,
    pub hour: i64,
}

/// A set of head rows covering a contiguous range of WAL records.
#[derive(Debug, Default)]
pub struct Generation {
    pub partitions: BTreeMap<PartitionKey, Vec<HeadBatch>>,
    pub rows: usize,
    pub bytes: usize,
    pub first_lsn: Option<u64>,
    pub last_lsn: u64,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.first_lsn.is_none()
    }
}

#[derive(Default)]
struct Inner {
    active: Generation,
    flushing: Option<Arc<Generation>>,
}

/// Head limits.
#[derive(Debug, Clone)]
pub struct HeadConfig {
    /// Refuse new requests (retryably) while the head holds more than this many bytes.
    pub max_bytes: usize,
    /// Ask for a flush once the active generation holds this many rows.
    pub flush_rows: usize,
    /// Most partitions (tenant, signal, hour) one generation may hold, so one flush writes at
    /// most this many segments. A request that would add more waits (retryably) for a flush.
    pub max_partitions: usize,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig { max_bytes: 256 << 20, flush_rows: 1_000_000, max_partitions: DEFAULT_MAX_PARTITIONS }
    }
}

/// See [`HeadConfig::max_partitions`].
pub const DEFAULT_MAX_PARTITIONS: usize = 1024;

/// What a query reads from the head for one table.
pub struct HeadSnapshot {
    pub batches: Vec<HeadBatch>,
    /// Catalog segments of this node with `flush_lsn >= overlap_from_lsn` hold rows that are
    /// also in this snapshot and must be skipped. `u64::MAX` when the head is empty.
    pub overlap_from_lsn: u64,
}

/// One partition of one head generation. Batches are only ever appended to a partition while
/// its generation is active, so a longer list for the same generation extends a shorter one.
pub struct HeadPart {
    pub generation: u64,
    pub hour: i64,
    pub batches: Vec<HeadBatch>,
}

/// See [`Head::partitions`].
pub struct HeadParts {
    pub parts: Vec<HeadPart>,
    /// As in [`HeadSnapshot::overlap_from_lsn`].
    pub overlap_from_lsn: u64,
}

pub struct Head {
    inner: RwLock<Inner>,
    /// Bytes admitted but not yet consumed (see [`Reservation`]).
    reserved: Arc<AtomicUsize>,
    config: HeadConfig,
    flush_wanted: Notify,
    bytes_gauge: Arc<Gauge>,
    rows_gauge: Arc<Gauge>,
}

impl Head {
    pub fn new(config: HeadConfig, registry: &Registry) -> Head {
        Head {
            inner: RwLock::new(Inner::default()),
            reserved: Arc::new(AtomicUsize::new(0)),
            config,
            flush_wanted: Notify::new(),
            bytes_gauge: registry
                .gauge("tracelight_head_bytes", "Bytes of acknowledged rows held in memory, not yet in Parquet."),
            rows_gauge: registry.gauge("tracelight_head_rows", "Rows held in memory, not yet in Parquet."),
        }
    }

    /// Resolves when the head asks for a flush (row or memory threshold reached).
    pub async fn flush_wanted(&self) {
        self.flush_wanted.notified().await
    }

    /// Total bytes in the active and flushing generations.
    pub fn bytes(&self) -> usize {
        let inner = self.inner.read();
        inner.active.bytes + inner.flushing.as_ref().map_or(0, |g| g.bytes)
    }

    /// Takes the generation to flush: the one a failed flush left behind, else the active one.
    /// `None` when there is nothing to flush.
    pub fn begin_flush(&self) -> Option<Arc<Generation>> {
        let mut inner = self.inner.write();
        if let Some(g) = &inner.flushing {
            return Some(g.clone());
        }
        if inner.active.is_empty() {
            return None;
        }
        let g = Arc::new(std::mem::take(&mut inner.active));
        inner.flushing = Some(g.clone());
        Some(g)
    }

    /// Drops the flushing generation once its segments are in the catalog.
    pub fn finish_flush(&self) {
        let mut inner = self.inner.write();
        inner.flushing = None;
        self.update_gauges(&inner);
    }

    /// The first WAL record still in the head (active or flushing generation); `u64::MAX` when
    /// the head is empty. Segments of this node from that record on may hold rows a query
    /// also reads from the head.
    pub fn overlap_from_lsn(&self) -> u64 {
        let inner = self.inner.read();
        let gens = inner.flushing.as_deref().into_iter().chain(std::iter::once(&inner.active));
        gens.filter_map(|g| g.first_lsn).min().unwrap_or(u64::MAX)
    }

    /// Rows of `tenant`/`signal` in hours `[h0, h1]`.
    pub fn snapshot(&self, tenant: &Tenant, signal: Signal, h0: i64, h1: i64) -> HeadSnapshot {
        let inner = self.inner.read();
        let lo = PartitionKey { tenant: tenant.clone(), signal, hour: h0 };
        let hi = PartitionKey { tenant: tenant.clone(), signal, hour: h1 };
        let mut batches = Vec::new();
        let gens = inner.flushing.as_deref().into_iter().chain(std::iter::once(&inner.active));
        let mut overlap_from_lsn = u64::MAX;
        for g in gens {
            if let Some(first) = g.first_lsn {
                overlap_from_lsn = overlap_from_lsn.min(first);
            }
            if h0 <= h1 {
                for (_, bs) in g.partitions.range(lo.clone()..=hi.clone()) {
                    batches.extend(bs.iter().cloned());
                }
            }
        }
        HeadSnapshot { batches, overlap_from_lsn }
    }

    /// The head rows of `tenant`/`signal` in hours `[h0, h1]`, partition by partition, each
    /// tagged with its generation (the generation's first LSN, unique while it lives), so an
    /// index over the head can be kept per generation and extended as batches are appended.
    pub fn partitions(&self, tenant: &Tenant, signal: Signal, h0: i64, h1: i64) -> HeadParts {
        let inner = self.inner.read();
        let lo = PartitionKey { tenant: tenant.clone(), signal, hour: h0 };
        let hi = PartitionKey { tenant: tenant.clone(), signal, hour: h1 };
        let mut parts = Vec::new();
        let mut overlap_from_lsn = u64::MAX;
        let gens = inner.flushing.as_deref().into_iter().chain(std::iter::once(&inner.active));
        for g in gens {
            let Some(first) = g.first_lsn else { continue };
            overlap_from_lsn = overlap_from_lsn.min(first);
            if h0 <= h1 {
                for (key, bs) in g.partitions.range(lo.clone()..=hi.clone()) {
                    parts.push(HeadPart { generation: first, hour: key.hour, batches: bs.clone() });
                }
            }
        }
        HeadParts { parts, overlap_from_lsn }
    }

    /// The hours of `tenant`/`signal` that the head (active and flushing) holds rows of.
    pub fn hours(&self, tenant: &Tenant, signal: Signal) -> Vec<i64> {
        let inner = self.inner.read();
        let gens = inner.flushing.as_deref().into_iter().chain(std::iter::once(&inner.active));
        let mut hours: Vec<i64> = gens
            .flat_map(|g| g.partitions.keys())
            .filter(|k| &k.tenant == tenant && k.signal == signal)
            .map(|k| k.hour)
            .collect();
        hours.sort_unstable();
        hours.dedup();
        hours
    }

    fn update_gauges(&self, inner: &Inner) {
        let f = inner.flushing.as_deref();
        self.bytes_gauge.set((inner.active.bytes + f.map_or(0, |g| g.bytes)) as i64);
        self.rows_gauge.set((inner.active.rows + f.map_or(0, |g| g.rows)) as i64);
    }
}

impl BatchSink for Head {
    fn admit(&self, batch: &SignalBatch, bytes: usize) -> Result<Reservation, SinkError> {
        let (held, partitions, new_partitions) = {
            let inner = self.inner.read();
            let held = inner.active.bytes + inner.flushing.as_ref().map_or(0, |g| g.bytes);
            let hours = hours_of(batch, self.config.max_partitions + 1);
            let new = hours
                .iter()
                .filter(|h| {
                    let key = PartitionKey { tenant: batch.tenant.clone(), signal: batch.signal, hour: **h };
                    !inner.active.partitions.contains_key(&key)
                })
                .count();
            if hours.len() > self.config.max_partitions {
                return Err(SinkError::TooSpread { max: self.config.max_partitions });
            }
            (held, inner.active.partitions.len(), new)
        };
        if new_partitions > 0 && partitions > 0 && partitions + new_partitions > self.config.max_partitions {
            self.flush_wanted.notify_one();
            return Err(SinkError::Overloaded {
                reason: format!(
                    "the head holds {partitions} partitions, its bound per flush is {}",
                    self.config.max_partitions
                ),
                retry_after_secs: 2,
            });
        }
        let free = self.config.max_bytes.saturating_sub(held);
        Reservation::try_take(&self.reserved, bytes, free).ok_or_else(|| {
            self.flush_wanted.notify_one();
            SinkError::Overloaded {
                reason: format!(
                    "in-memory head holds {held} bytes and {} more are admitted, its bound is {}",
                    self.reserved.load(std::sync::atomic::Ordering::Acquire),
                    self.config.max_bytes
                ),
                retry_after_secs: 2,
            }
        })
    }

    fn request_flush(&self) {
        self.flush_wanted.notify_one();
    }

    fn consume(&self, lsn: u64, batches: Vec<SignalBatch>) {
        let mut parts: Vec<(PartitionKey, RecordBatch)> = Vec::new();
        for b in batches {
            split_by_hour(b, &mut parts);
        }
        // Compacted before the lock: queries never wait for it.
        let parts: Vec<(PartitionKey, HeadBatch)> = parts
            .into_iter()
            .map(|(k, b)| {
                let b = HeadBatch::compact(k.signal, &b);
                (k, b)
            })
            .collect();
        let mut inner = self.inner.write();
        let g = &mut inner.active;
        for (key, batch) in parts {
            g.rows += batch.num_rows();
            g.bytes += batch.bytes();
            g.partitions.entry(key).or_default().push(batch);
        }
        g.first_lsn.get_or_insert(lsn);
        g.last_lsn = lsn;
        let want_flush = g.rows >= self.config.flush_rows || g.bytes >= self.config.max_bytes / 2;
        self.update_gauges(&inner);
        drop(inner);
        if want_flush {
            self.flush_wanted.notify_one();
        }
    }
}

/// The distinct hours of a batch's time column, at most `cap` of them.
fn hours_of(b: &SignalBatch, cap: usize) -> BTreeSet<i64> {
    let mut hours = BTreeSet::new();
    if let Some(times) = b
        .batch
        .column_by_name(b.signal.time_column())
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
    {
        let mut last = None;
        for t in times.values().iter() {
            let h = hour_of(*t);
            if last != Some(h) {
                last = Some(h);
                hours.insert(h);
                if hours.len() >= cap {
                    break;
                }
            }
        }
    }
    hours
}

/// Splits a batch into one batch per hour of its time column (usually just one). Linear in
/// rows whatever the number of hours: one stable sort of row numbers by hour, one `take`, then
/// zero-copy slices per hour (the head counts a slice's bytes, not its parent's).
fn split_by_hour(b: SignalBatch, out: &mut Vec<(PartitionKey, RecordBatch)>) {
    let n = b.batch.num_rows();
    if n == 0 {
        return;
    }
    let col = b.batch.column_by_name(b.signal.time_column()).expect("schema has its time column");
    let times = col.as_any().downcast_ref::<TimestampNanosecondArray>().expect("time column is Timestamp(ns)");
    let first = hour_of(times.value(0));
    if times.values().iter().all(|t| hour_of(*t) == first) {
        out.push((PartitionKey { tenant: b.tenant, signal: b.signal, hour: first }, b.batch));
        return;
    }
    let mut order: Vec<(i64, u32)> = times.values().iter().enumerate().map(|(i, t)| (hour_of(*t), i as u32)).collect();
    order.sort_unstable();
    let indices = UInt32Array::from_iter_values(order.iter().map(|(_, i)| *i));
    let sorted = take_record_batch(&b.batch, &indices).expect("indices are in bounds");
    let mut start = 0;
    while start < n {
        let h = order[start].0;
        let end = start + order[start..].partition_point(|(x, _)| *x == h);
        out.push((
            PartitionKey { tenant: b.tenant.clone(), signal: b.signal, hour: h },
            sorted.slice(start, end - start),
        ));
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::reader::StreamReader;
    use arrow::ipc::writer::StreamWriter;

    use super::*;
    use arrow::array::{Array, TimestampNanosecondArray};

    const HOUR: i64 = 3_600_000_000_000;

    /// A batch of `Signal::Logs` at `times`, one resource, otherwise empty.
    fn batch(times: &[i64]) -> SignalBatch {
        let res: &[(&str, &str)] = &[("service.name", "checkout")];
        let batch = crate::headbatch::tests::logs_at(times, &vec![res; times.len()]);
        SignalBatch { tenant: Tenant::default(), signal: Signal::Logs, batch }
    }

    fn head(max_bytes: usize, max_partitions: usize) -> Head {
        Head::new(HeadConfig { max_bytes, flush_rows: 1 << 30, max_partitions }, &Registry::new())
    }

    #[test]
    fn a_batch_over_many_hours_splits_in_linear_work_keeping_row_order() {
        // 20,000 distinct hours in one request once took O(N²) on the WAL writer thread.
        let n = 20_000i64;
        let times: Vec<i64> = (0..n).map(|i| ((i * 7919) % n) * HOUR + i).chain([5 * HOUR + 1, 5 * HOUR]).collect();
        let mut parts = Vec::new();
        split_by_hour(batch(&times), &mut parts);
        assert_eq!(parts.len(), n as usize);
        assert_eq!(parts.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), times.len());
        for (key, b) in &parts {
            let t = b.column(0).as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
            assert!(t.values().iter().all(|v| hour_of(*v) == key.hour));
        }
        // Within an hour, rows keep their order of arrival.
        let (_, five) = parts.iter().find(|(k, _)| k.hour == hour_of(5 * HOUR)).unwrap();
        let t = five.column(0).as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
        let mut want: Vec<i64> = times.iter().copied().filter(|v| hour_of(*v) == hour_of(5 * HOUR)).collect();
        assert_eq!(t.values().to_vec(), std::mem::take(&mut want));
    }

    #[test]
    fn admission_reserves_so_concurrent_requests_cannot_all_pass() {
        // With a 1 MiB bound, 60 concurrent 400 KB requests once pushed the head to 7.3x it.
        let h = head(1 << 20, 16);
        let b = batch(&[HOUR]);
        let held: Vec<Reservation> = (0..60).filter_map(|_| h.admit(&b, 400_000).ok()).collect();
        assert_eq!(held.len(), 2, "only what fits is admitted");
        drop(held);
        assert!(h.admit(&b, 400_000).is_ok(), "a dropped reservation gives its room back");
        // Consumed rows count against the bound as held bytes.
        h.consume(1, vec![batch(&vec![HOUR; 100_000])]);
        assert!(h.bytes() >= 800_000);
        assert!(h.admit(&b, 400_000).is_err());
    }

    #[test]
    fn a_generation_holds_a_bounded_number_of_partitions() {
        let h = head(1 << 30, 3);
        h.consume(1, vec![batch(&[0, HOUR, 2 * HOUR])]);
        assert!(h.admit(&batch(&[HOUR, 2 * HOUR]), 10).is_ok(), "existing partitions are fine");
        let e = h.admit(&batch(&[3 * HOUR]), 10).unwrap_err();
        assert!(e.to_string().contains("partitions"), "{e}");
        // After the flush the new generation starts empty; a request within the bound fits,
        // one that alone spans more hours than a flush may write is refused for good.
        h.begin_flush().unwrap();
        h.finish_flush();
        assert!(h.admit(&batch(&[0, HOUR, 2 * HOUR]), 10).is_ok());
        let e = h.admit(&batch(&(0..10).map(|i| i * HOUR).collect::<Vec<_>>()), 10).unwrap_err();
        assert!(matches!(e, SinkError::TooSpread { max: 3 }), "{e}");
    }

    #[test]
    fn replayed_ipc_batches_are_not_counted_once_per_column() {
        let cols = 20;
        let schema = Arc::new(Schema::new(
            (0..cols).map(|i| Field::new(format!("c{i}"), DataType::Int64, false)).collect::<Vec<_>>(),
        ));
        let arrays = (0..cols).map(|_| Arc::new(Int64Array::from_iter_values(0..10_000)) as _).collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
        let mut buf = Vec::new();
        let mut w = StreamWriter::try_new(&mut buf, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        let replayed = StreamReader::try_new(Cursor::new(buf.clone()), None).unwrap().next().unwrap().unwrap();
        let logical = cols * 10_000 * 8;
        assert_eq!(batch_bytes(&replayed), logical);
        assert!(batch_bytes(&replayed) <= buf.len());
        let s = RecordBatch::try_from_iter([("s", Arc::new(StringArray::from(vec!["ab", "c"])) as _)]).unwrap();
        assert_eq!(batch_bytes(&s), 3 + 3 * 4);
    }
}
