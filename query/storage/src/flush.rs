//! The flusher: head → Parquet segments → catalog row + WAL checkpoint (one transaction) →
//! WAL truncation. Runs every `interval`, when the head asks, and once more at shutdown.
//!
//! Publishing: the segments are staged in the catalog before any of their files is written,
//! then written, then published together with the WAL checkpoint in one transaction. Crash
//! points and what they leave: before the commit, staged segments that no query sees and the
//! janitor deletes (the WAL still holds their rows); after it, the WAL replays nothing at or
//! below the new checkpoint, so nothing is duplicated.
//!
//! A partition is written as one segment per chunk of at most [`CHUNK_BYTES`] of head memory,
//! so no valid data can make a flush fail for good (Arrow's 32-bit string offsets end at 2 GiB
//! per array). A flush that keeps failing anyway turns readiness false, with its reason on
//! `/metrics` (`tracelight_flush_failing`) and in the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::path::Path;

use arrow::record_batch::RecordBatch;
use rand::Rng;
use tokio::sync::watch;
use tracelight_model::Signal;
use tracelight_model::telemetry::{Counter, Histogram, LATENCY_BUCKETS, Registry};
use tracelight_model::time::{now_ns, partition_dirs};

use crate::catalog::{Catalog, SegmentMeta};
use crate::error::StorageError;
use crate::head::Head;
use crate::headbatch::HeadBatch;
use crate::segment::{self, SegmentStore};
use crate::traceidx;

/// Called with the new WAL checkpoint after every successful flush.
pub type CheckpointFn = Box<dyn Fn(u64) + Send + Sync>;

/// Builds the full-text index that sits beside a segment (the index crate implements it;
/// storage does not link tantivy). It runs inside the flush, before the catalog commit, so an
/// index never holds rows its segment does not and a segment is never visible without its
/// index.
pub trait SegmentIndexer: Send + Sync {
    /// Whether segments of `signal` get an index.
    fn indexes(&self, signal: Signal) -> bool;
    /// Starts the index of one segment in the empty directory `dir`.
    fn start(&self, signal: Signal, dir: &Path) -> Result<Box<dyn IndexBuild>, String>;
}

/// One segment's index being built from the segment's rows as they are encoded.
pub trait IndexBuild: Send {
    /// Adds `rows`, the segment's rows from file row `first_row` on, in file order.
    fn add(&mut self, rows: &RecordBatch, first_row: u64) -> Result<(), String>;
    /// Completes the index in its directory.
    fn finish(self: Box<Self>) -> Result<(), String>;
}

/// Most head bytes one segment is written from.
pub const CHUNK_BYTES: usize = 256 << 20;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;
    use crate::head::batch_bytes;

    #[test]
    fn chunks_bound_the_bytes_of_each_segment() {
        let b =
            |n: i64| RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from_iter_values(0..n)) as _)]).unwrap();
        let batches = vec![b(10), b(10), b(10), b(100), b(1)];
        let sizes = |max| chunks(&batches, batch_bytes, max).iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(sizes(usize::MAX), vec![5]);
        assert_eq!(sizes(160), vec![2, 1, 1, 1], "80 + 80, then 80, then 800 alone, then 8");
        assert_eq!(sizes(1), vec![1, 1, 1, 1, 1]);
        assert!(chunks(&[], batch_bytes, 10).is_empty());
    }
}

/// Builds a segment's trace-ID index and (for signals the indexer covers) its full-text index
/// from the slices of sorted rows `rows` delivers, and writes them durably. Returns their bytes.
pub(crate) fn build_indexes(
    store: &SegmentStore,
    indexer: Option<&dyn SegmentIndexer>,
    signal: Signal,
    path: &str,
    rows: std::sync::mpsc::Receiver<(RecordBatch, u64)>,
) -> Result<u64, StorageError> {
    let mut tid = traceidx::TraceIndexBuilder::new();
    let full_text = match indexer {
        Some(ix) if ix.indexes(signal) => store.put_dir(&segment::index_dir(path), |dir| {
            let mut build = ix.start(signal, dir)?;
            for (slice, first) in rows.iter() {
                tid.add_rows(signal, &slice, first);
                build.add(&slice, first)?;
            }
            build.finish()
        })?,
        _ => {
            for (slice, first) in rows.iter() {
                tid.add_rows(signal, &slice, first);
            }
            0
        }
    };
    let tid = tid.finish();
    store.put(&traceidx::path_for(path), &tid)?;
    Ok(full_text + tid.len() as u64)
}

/// Consecutive failed flushes after which readiness turns false.
pub const FAILING_AFTER: u64 = 3;

/// Splits a partition's batches into runs of at most `max_bytes` each (a single larger batch
/// is a run of its own: one request's rows are far below the 2 GiB that matters).
pub fn chunks<T>(batches: &[T], bytes_of: impl Fn(&T) -> usize, max_bytes: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, b) in batches.iter().enumerate() {
        let n = bytes_of(b);
        if i > start && bytes + n > max_bytes {
            out.push(&batches[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < batches.len() {
        out.push(&batches[start..]);
    }
    out
}

pub struct Flusher {
    head: Arc<Head>,
    catalog: Catalog,
    store: SegmentStore,
    node: String,
    interval: Duration,
    on_checkpoint: CheckpointFn,
    indexer: Option<Arc<dyn SegmentIndexer>>,
    seq: AtomicU64,
    flush_seconds: Arc<Histogram>,
    segments_written: Arc<Counter>,
    bytes_written: Arc<Counter>,
    failures: Arc<Counter>,
    failing: Arc<tracelight_model::telemetry::Gauge>,
    /// Consecutive failures and the last one's reason.
    health: parking_lot::Mutex<(u64, String)>,
    chunk_bytes: usize,
    /// Fault injection for crash tests: a pause between writing the files and the catalog
    /// commit, announced in the log, so a SIGKILL can be aimed there.
    pause_before_commit: Option<Duration>,
}

/// What one flush wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushStats {
    pub segments: usize,
    pub rows: u64,
    pub bytes: u64,
    pub checkpoint: u64,
}

impl Flusher {
    pub fn new(
        head: Arc<Head>,
        catalog: Catalog,
        store: SegmentStore,
        node: String,
        interval: Duration,
        on_checkpoint: CheckpointFn,
        registry: &Registry,
    ) -> Flusher {
        Flusher {
            head,
            catalog,
            store,
            node,
            interval,
            on_checkpoint,
            indexer: None,
            seq: AtomicU64::new(0),
            flush_seconds: registry.histogram(
                "tracelight_flush_seconds",
                "Duration of one head flush to Parquet.",
                LATENCY_BUCKETS,
            ),
            segments_written: registry.counter("tracelight_segments_written_total", "Parquet segments written."),
            bytes_written: registry
                .counter("tracelight_segment_bytes_written_total", "Bytes of Parquet segments written."),
            failures: registry.counter("tracelight_flush_failures_total", "Flushes that failed and will be retried."),
            failing: registry.gauge(
                "tracelight_flush_failing",
                "Consecutive failed flushes (0: the last flush succeeded); readiness is false from 3 on.",
            ),
            health: parking_lot::Mutex::new((0, String::new())),
            chunk_bytes: CHUNK_BYTES,
            pause_before_commit: None,
        }
    }

    /// Fault injection (crash tests only): pause `d` after the segment files are written and
    /// before the catalog commit, logging when the pause starts.
    pub fn with_pause_before_commit(mut self, d: Option<Duration>) -> Flusher {
        self.pause_before_commit = d;
        self
    }

    /// Writes segments from at most `bytes` of head memory each (tests use small chunks).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Flusher {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// `Err(reason)` once [`FAILING_AFTER`] flushes in a row have failed: acknowledged data is
    /// piling up in the WAL and the head, so the node should not take more traffic.
    pub fn healthy(&self) -> Result<(), String> {
        let h = self.health.lock();
        if h.0 >= FAILING_AFTER {
            return Err(format!("{} flushes in a row failed, the last with: {}", h.0, h.1));
        }
        Ok(())
    }

    fn record(&self, result: &Result<FlushStats, StorageError>) {
        let mut h = self.health.lock();
        match result {
            Ok(_) => *h = (0, String::new()),
            Err(e) => *h = (h.0 + 1, e.to_string()),
        }
        self.failing.set(h.0 as i64);
    }

    /// Builds an index beside every segment of the signals `indexer` covers.
    pub fn with_indexer(mut self, indexer: Arc<dyn SegmentIndexer>) -> Flusher {
        self.indexer = Some(indexer);
        self
    }

    /// Flushes on a timer and on demand until `shutdown` turns true, then flushes once more.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.head.flush_wanted() => {}
                _ = shutdown.changed() => break,
            }
            if let Err(e) = self.flush_once().await {
                tracing::error!(error = %e, "flush failed; the data stays in the head and the WAL, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        // A generation left by a failed flush goes first, then the active one.
        for _ in 0..3 {
            match self.flush_once().await {
                Ok(stats) if stats.segments == 0 => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "final flush failed; the WAL still holds everything and replays it at start-up");
                    break;
                }
            }
        }
    }

    /// Writes everything in the head to Parquet and commits it. A no-op on an empty head.
    pub async fn flush_once(&self) -> Result<FlushStats, StorageError> {
        let result = self.flush_generation().await;
        if result.is_err() {
            self.failures.inc();
        }
        self.record(&result);
        result
    }

    async fn flush_generation(&self) -> Result<FlushStats, StorageError> {
        let Some(generation) = self.head.begin_flush() else { return Ok(FlushStats::default()) };
        let started = Instant::now();
        let checkpoint = generation.last_lsn;
        let flush_id = format!("{:016x}{:04x}", now_ns(), self.seq.fetch_add(1, Ordering::Relaxed) & 0xffff);
        // Plan the segments (one per chunk of each partition) and stage them before any file
        // is written, so whatever a failure or crash leaves has a catalog row the janitor
        // finds.
        let mut planned = Vec::new();
        for (key, batches) in &generation.partitions {
            let mut first = 0;
            for c in chunks(batches, HeadBatch::bytes, self.chunk_bytes) {
                let (day, hour) = partition_dirs(key.hour);
                let salt: u32 = rand::rng().random();
                let id = format!("{}-{flush_id}-{salt:08x}", self.node);
                let path = format!("{}/{}/{day}/{hour}/{id}.parquet", key.tenant, key.signal);
                let meta = SegmentMeta {
                    id,
                    node: self.node.clone(),
                    tenant: key.tenant.clone(),
                    signal: key.signal,
                    partition_hour: key.hour,
                    path,
                    min_time_ns: 0,
                    max_time_ns: 0,
                    rows: 0,
                    bytes: 0,
                    index_bytes: 0,
                    flush_lsn: checkpoint,
                    created_at_ns: 0,
                };
                planned.push((key.clone(), first..first + c.len(), meta));
                first += c.len();
            }
        }
        let staged: Vec<SegmentMeta> = planned.iter().map(|(_, _, m)| m.clone()).collect();
        self.catalog.stage_segments(&staged).await?;
        let store = self.store.clone();
        let g = generation.clone();
        let indexer = self.indexer.clone();
        // Sorting and Parquet encoding are CPU work: keep them off the async workers.
        let written = tokio::task::spawn_blocking(move || -> Result<Vec<SegmentMeta>, StorageError> {
            let mut metas = Vec::with_capacity(planned.len());
            for (key, range, mut meta) in planned {
                let batches = &g.partitions[&key][range];
                let path = meta.path.clone();
                // The rows are put in segment order a slice at a time; each slice is encoded
                // here and indexed on a second thread, so row addresses in the indexes are row
                // numbers in the file and no sorted copy of the partition is ever held.
                let (tx, rx) = std::sync::mpsc::sync_channel::<(RecordBatch, u64)>(2);
                let (enc, index_bytes) = std::thread::scope(|s| {
                    let index = s.spawn(|| build_indexes(&store, indexer.as_deref(), key.signal, &path, rx));
                    let enc = segment::encode_partition(key.signal, batches, |slice, first| {
                        tx.send((slice.clone(), first))
                            .map_err(|_| StorageError::SegmentWrite("the index build stopped".into()))
                    });
                    drop(tx);
                    let index_bytes =
                        index.join().unwrap_or_else(|_| Err(StorageError::SegmentWrite("index build panicked".into())));
                    (enc, index_bytes)
                });
                // An index failure explains an encode that stopped because of it.
                let index_bytes = index_bytes?;
                let enc = enc?;
                store.put(&path, &enc.bytes)?;
                meta.min_time_ns = enc.min_time_ns;
                meta.max_time_ns = enc.max_time_ns;
                meta.rows = enc.rows;
                meta.bytes = enc.bytes.len() as u64;
                meta.index_bytes = index_bytes;
                metas.push(meta);
            }
            Ok(metas)
        })
        .await
        .map_err(|e| StorageError::SegmentWrite(format!("flush task panicked: {e}")))
        .and_then(|r| r);
        let mut metas = match written {
            Ok(m) => m,
            Err(e) => {
                // What was written goes now (a full disk must not fill up with one partial
                // segment per retry); the staged rows stay for the janitor.
                for m in &staged {
                    let _ = self.store.delete_segment(&m.path).await;
                }
                return Err(e);
            }
        };
        // Late-data recounts (SLOs) look for segments created after their mark: a segment is
        // created when it becomes visible.
        let published_at = now_ns();
        for m in &mut metas {
            m.created_at_ns = published_at;
        }

        if let Some(d) = self.pause_before_commit {
            tracing::info!(
                segments = metas.len(),
                "fault injection: segment files written, pausing before the catalog commit"
            );
            tokio::time::sleep(d).await;
        }
        let committed = match self.catalog.commit_flush(&self.node, &metas, checkpoint).await {
            Err(StorageError::Unstaged(path)) => {
                // The janitor may have deleted only part of what was written (an upload that
                // finished after its pass): nothing else would ever delete the rest.
                for m in &metas {
                    let _ = self.store.delete_segment(&m.path).await;
                }
                return Err(StorageError::Unstaged(path));
            }
            other => other?,
        };
        if !committed {
            // An earlier attempt committed after all (its answer was lost). These files are
            // copies: removed now, their staged rows by the janitor.
            for m in &metas {
                let _ = self.store.delete_segment(&m.path).await;
            }
            tracing::warn!(checkpoint, "flush was already committed; removed the duplicate files of the retry");
        }
        self.head.finish_flush();
        (self.on_checkpoint)(checkpoint);

        let stats = FlushStats {
            segments: metas.len(),
            rows: metas.iter().map(|m| m.rows).sum(),
            bytes: metas.iter().map(|m| m.bytes + m.index_bytes).sum(),
            checkpoint,
        };
        self.flush_seconds.observe(started.elapsed().as_secs_f64());
        self.segments_written.add(stats.segments as u64);
        self.bytes_written.add(stats.bytes);
        tracing::debug!(segments = stats.segments, rows = stats.rows, bytes = stats.bytes, checkpoint, "flushed");
        Ok(stats)
    }
}
