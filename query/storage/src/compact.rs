//! Compaction: merges the small segments of a partition (tenant, signal, hour, node) into one
//! large segment, sorted as the flush sorts (by service, then arrival), with its trace-ID index
//! and full-text index built in the same pass, then swaps it in for the small ones in one
//! catalog transaction. The replaced segments are retired, and the janitor deletes them after a
//! grace period longer than the longest query, so a query that listed them before the swap
//! still reads them.
//!
//! Crash points and what they leave: the merged segment is staged in the catalog before its
//! files are written, so a kill -9 before the swap leaves a staged segment (the janitor deletes
//! it) and the inputs still published; after the swap, retired inputs. Nothing is lost or
//! counted twice.
//!
//! Memory is bounded by one decoded block per input plus one output block and the Parquet
//! writer's current row group: the inputs are streamed, never loaded whole. One merge runs at
//! a time, on one thread (plus the index build beside it).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::compute::concat_batches;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use rand::Rng;
use tokio::sync::watch;
use tracelight_model::peers::{HeadKind, HeadRequest, NoPeers, Peers};
use tracelight_model::telemetry::{Counter, Histogram, Registry};
use tracelight_model::time::{now_ns, partition_dirs};
use tracelight_model::{Signal, Tenant};

use crate::catalog::{Catalog, Leadership, SegmentMeta};
use crate::error::StorageError;
use crate::flush::{SegmentIndexer, build_indexes};
use crate::head::Head;
use crate::segment::{self, SegmentStore, SegmentWriter};
use crate::traceidx::PAGE_ROWS;

/// Compaction settings.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Segments younger than this are left alone; an hour is *closed* (all of its small
    /// segments are merged) once it ended this long ago.
    pub min_age: Duration,
    /// A merged segment holds at most this many bytes of input segments (and segments at
    /// least half this size are never merged again).
    pub target_bytes: u64,
    /// A merged segment holds at most this many rows.
    pub target_rows: u64,
    /// Most segments one merge reads at once (open files, one decoded block each).
    pub max_inputs: usize,
    /// In an hour that is still open, a merge waits until this many segments of similar size
    /// are there (tiers of 4× in size), so the hour is not rewritten on every pass.
    pub min_inputs: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval: Duration::from_secs(60),
            min_age: Duration::from_secs(120),
            target_bytes: 256 << 20,
            target_rows: 8_000_000,
            max_inputs: 64,
            min_inputs: 8,
        }
    }
}

/// What one compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionStats {
    /// Merged segments written.
    pub merges: usize,
    /// Segments they replaced.
    pub inputs: usize,
    pub rows: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Called with the paths of deleted segments once their files are gone (the engine forgets
/// their cached index readers).
pub type RemovedFn = Arc<dyn Fn(&[String]) + Send + Sync>;

pub struct Compactor {
    catalog: Catalog,
    store: SegmentStore,
    node: String,
    head: Option<Arc<Head>>,
    /// The ingesters, asked where their heads begin (see [`plan`]).
    peers: Arc<dyn Peers>,
    /// Segments younger than this are not merged: the longest a query may take between
    /// reading the heads and listing the catalog (see [`Compactor::with_peers`]).
    settle: Duration,
    indexer: Option<Arc<dyn SegmentIndexer>>,
    config: CompactionConfig,
    stop: Arc<AtomicBool>,
    seq: AtomicU64,
    pause_before_commit: Option<Duration>,
    leadership: Leadership,
    /// Segments written with an older schema: never merged, and left out of planning so the
    /// others of their partition still are.
    unmergeable: parking_lot::Mutex<std::collections::HashSet<String>>,
    merges: Arc<Counter>,
    inputs: Arc<Counter>,
    rows: Arc<Counter>,
    bytes_read: Arc<Counter>,
    bytes_written: Arc<Counter>,
    failures: Arc<Counter>,
    seconds: Arc<Histogram>,
}

const SECONDS_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1200.0];

impl Compactor {
    pub fn new(
        catalog: Catalog,
        store: SegmentStore,
        node: String,
        config: CompactionConfig,
        registry: &Registry,
    ) -> Compactor {
        Compactor {
            catalog,
            store,
            node,
            head: None,
            peers: Arc::new(NoPeers),
            settle: Duration::ZERO,
            indexer: None,
            config,
            stop: Arc::default(),
            seq: AtomicU64::new(0),
            pause_before_commit: None,
            leadership: Leadership::always("compact"),
            unmergeable: parking_lot::Mutex::default(),
            merges: registry.counter("tracelight_compaction_merges_total", "Merged segments written by compaction."),
            inputs: registry
                .counter("tracelight_compaction_segments_replaced_total", "Small segments replaced by merged ones."),
            rows: registry.counter("tracelight_compaction_rows_total", "Rows rewritten by compaction."),
            bytes_read: registry
                .counter("tracelight_compaction_bytes_read_total", "Bytes of segments (data and indexes) merged."),
            bytes_written: registry.counter(
                "tracelight_compaction_bytes_written_total",
                "Bytes of merged segments (data and indexes) written.",
            ),
            failures: registry
                .counter("tracelight_compaction_failures_total", "Merges that failed (retried at the next pass)."),
            seconds: registry.histogram("tracelight_compaction_seconds", "Duration of one merge.", SECONDS_BUCKETS),
        }
    }

    /// Segments of this node still in the head's LSN range are never merged (a query that
    /// reads the head skips them by their LSN; a merged segment must not be skipped).
    pub fn with_head(mut self, head: Arc<Head>) -> Compactor {
        self.head = Some(head);
        self
    }

    /// Builds the merged segments' full-text indexes (as the flush does).
    /// Learns where the other ingesters' heads begin before each pass, so their segments are
    /// merged as soon as they are out of their heads instead of after [`OTHER_NODES_AFTER`].
    ///
    /// `settle` is the longest a query node spends between reading the heads and listing the
    /// catalog (asking the ingesters, twice at worst). A segment flushed in that gap is left
    /// out of the query by its LSN (its rows are in the head the query read); merged into an
    /// older segment, it would take that segment's rows out with it. So no segment younger
    /// than `settle` is merged.
    pub fn with_peers(mut self, peers: Arc<dyn Peers>, settle: Duration) -> Compactor {
        self.peers = peers;
        self.settle = settle;
        self
    }

    pub fn with_indexer(mut self, indexer: Arc<dyn SegmentIndexer>) -> Compactor {
        self.indexer = Some(indexer);
        self
    }

    /// Passes run only while this node leads the `compact` job (one compactor per cluster).
    pub fn with_leadership(mut self, l: Leadership) -> Compactor {
        self.leadership = l;
        self
    }

    /// Fault injection (crash tests only): pause `d` after the merged files are written and
    /// before the catalog swap, logging when the pause starts.
    pub fn with_pause_before_commit(mut self, d: Option<Duration>) -> Compactor {
        self.pause_before_commit = d;
        self
    }

    /// Passes every `interval` until `shutdown` turns true. A merge in progress stops at its
    /// next block and leaves a staged segment (deleted by the janitor).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let stopper = {
            let stop = self.stop.clone();
            let mut rx = shutdown.clone();
            tokio::spawn(async move {
                let _ = rx.wait_for(|s| *s).await;
                stop.store(true, Ordering::Relaxed);
            })
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = shutdown.changed() => break,
            }
            if !self.leadership.is_leader() {
                continue;
            }
            match self.compact_once().await {
                Ok(s) if s.merges > 0 => tracing::info!(
                    merges = s.merges,
                    replaced = s.inputs,
                    rows = s.rows,
                    bytes_read = s.bytes_read,
                    bytes_written = s.bytes_written,
                    "compaction pass"
                ),
                Ok(_) => {}
                Err(e) if self.stop.load(Ordering::Relaxed) => {
                    tracing::info!(error = %e, "compaction stopped by shutdown");
                    break;
                }
                Err(e) => tracing::error!(error = %e, "compaction pass failed; retrying at the next pass"),
            }
        }
        stopper.abort();
    }

    /// One pass: plans merges over the catalog and runs them one after the other. The replaced
    /// segments are retired (the janitor deletes them after the grace period).
    pub async fn compact_once(&self) -> Result<CompactionStats, StorageError> {
        let c = &self.config;
        let now = now_ns();
        let created_before = now.saturating_sub(c.min_age.as_nanos().min(i64::MAX as u128) as i64);
        let mut candidates = self.catalog.compaction_candidates(c.target_bytes / 2, created_before).await?;
        {
            let skip = self.unmergeable.lock();
            let settled = now.saturating_sub(self.settle.as_nanos().min(i64::MAX as u128) as i64);
            candidates.retain(|s| !skip.contains(&s.id) && s.created_at_ns < settled);
        }
        // Where each head that answers begins: this node's, and every live ingester's. Their
        // heads only move forward (a restart replays from past the last flush), so a segment
        // below that point stays out of every head.
        let mut heads = vec![(self.node.clone(), self.head.as_ref().map_or(u64::MAX, |h| h.overlap_from_lsn()))];
        let ask = HeadRequest::new(&Tenant::default_tenant(), Signal::Spans, 0, 0, HeadKind::Hours);
        heads.extend(self.peers.heads(&ask).await.answers.into_iter().map(|a| (a.node, a.overlap_from_lsn)));
        let heads: Vec<(&str, u64)> = heads.iter().map(|(n, l)| (n.as_str(), *l)).collect();
        let groups = plan(candidates, c, &heads, now);
        let mut stats = CompactionStats::default();
        let mut first_error = None;
        for group in groups {
            if self.stop.load(Ordering::Relaxed) {
                return Err(StorageError::SegmentWrite("compaction stopped by shutdown".into()));
            }
            match self.merge(&group).await {
                Ok(Some(merged)) => {
                    stats.merges += 1;
                    stats.inputs += group.len();
                    stats.rows += merged.rows;
                    stats.bytes_read += group.iter().map(|s| s.bytes + s.index_bytes).sum::<u64>();
                    stats.bytes_written += merged.bytes + merged.index_bytes;
                }
                Ok(None) => {}
                Err(e) => {
                    self.failures.inc();
                    tracing::warn!(error = %e, partition = %group[0].path, "merge failed; the small segments stay");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if stats.merges == 0 => Err(e),
            _ => Ok(stats),
        }
    }

    /// Merges `group` (one partition's segments, in flush order) and swaps the result in.
    /// `None` when nothing was swapped (an input was gone or has another schema).
    async fn merge(&self, group: &[SegmentMeta]) -> Result<Option<SegmentMeta>, StorageError> {
        let started = Instant::now();
        let first = &group[0];
        let (day, hour) = partition_dirs(first.partition_hour);
        let salt: u32 = rand::rng().random();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) & 0xffff;
        let id = format!("{}-c{:016x}{seq:04x}-{salt:08x}", self.node, now_ns());
        let path = format!("{}/{}/{day}/{hour}/{id}.parquet", first.tenant, first.signal);
        let mut merged = SegmentMeta {
            id,
            node: first.node.clone(),
            tenant: first.tenant.clone(),
            signal: first.signal,
            partition_hour: first.partition_hour,
            path: path.clone(),
            min_time_ns: 0,
            max_time_ns: 0,
            rows: 0,
            bytes: 0,
            index_bytes: 0,
            // The head-overlap rule compares LSNs: the merged rows are as old as the newest input.
            flush_lsn: group.iter().map(|s| s.flush_lsn).max().unwrap_or(0),
            // Late-data recounts (SLOs) look at segments created after their mark: the merge
            // brings no new rows, so it is as new as its newest input.
            created_at_ns: group.iter().map(|s| s.created_at_ns).max().unwrap_or(0),
        };
        // No file is written before its catalog row: whatever a failure or crash leaves is
        // staged, and the janitor deletes it.
        self.catalog.stage_segments(std::slice::from_ref(&merged)).await?;
        let (store, indexer, stop) = (self.store.clone(), self.indexer.clone(), self.stop.clone());
        let (inputs, out) = (group.to_vec(), path.clone());
        let signal = first.signal;
        let written =
            tokio::task::spawn_blocking(move || merge_files(&store, indexer.as_deref(), signal, &inputs, &out, &stop))
                .await
                .map_err(|e| StorageError::SegmentWrite(format!("merge task panicked: {e}")))?;
        // Files of a merge that will not be swapped in go at once; the staged row stays for
        // the janitor (deleting a missing file is no error).
        let remove_output = || async {
            let _ = self.store.delete_segment(&path).await;
        };
        let (summary, bytes, index_bytes) = match written {
            Ok(Ok(w)) => w,
            Ok(Err(old_schema)) => {
                remove_output().await;
                self.unmergeable.lock().insert(old_schema);
                return Ok(None);
            }
            Err(e) => {
                remove_output().await;
                return Err(e);
            }
        };
        let expected: u64 = group.iter().map(|s| s.rows).sum();
        if summary.rows != expected {
            remove_output().await;
            return Err(StorageError::SegmentWrite(format!(
                "merge of {} segments read {} rows where the catalog lists {expected}; left as they are",
                group.len(),
                summary.rows
            )));
        }
        merged.min_time_ns = summary.min_time_ns;
        merged.max_time_ns = summary.max_time_ns;
        merged.rows = summary.rows;
        merged.bytes = bytes;
        merged.index_bytes = index_bytes;
        if let Some(d) = self.pause_before_commit {
            tracing::info!(
                inputs = group.len(),
                "fault injection: merged segment written, pausing before the catalog swap"
            );
            tokio::time::sleep(d).await;
        }
        if !self.catalog.replace_segments(group, &merged).await? {
            remove_output().await;
            tracing::info!(partition = %path, "a segment of the merge was removed meanwhile (retention); merge dropped");
            return Ok(None);
        }
        self.merges.inc();
        self.inputs.add(group.len() as u64);
        self.rows.add(merged.rows);
        self.bytes_read.add(group.iter().map(|s| s.bytes + s.index_bytes).sum());
        self.bytes_written.add(merged.bytes + merged.index_bytes);
        self.seconds.observe(started.elapsed().as_secs_f64());
        Ok(Some(merged))
    }
}

/// Segments of other nodes are merged only once this old.
pub const OTHER_NODES_AFTER: Duration = Duration::from_secs(60);

/// Chooses the merges of one pass from `candidates` (small segments, ordered by partition,
/// node and flush order). A merge takes consecutive segments of one partition and node, at
/// most `target_bytes`, `target_rows` and `max_inputs` of them. An hour that ended more than
/// `min_age` ago is merged whole; in an open hour only a tier of at least `min_inputs`
/// segments of similar size (within 4×) is merged, so each row is rewritten about log4(n)
/// times, not on every pass. `heads` are the `(node, overlap_from_lsn)` of the heads known
/// now (this node's, the ingesters' that answered): a segment of such a node at or past its
/// point is skipped (its rows may still be in that head). Segments of other nodes, whose
/// heads are not known, are merged only once they are [`OTHER_NODES_AFTER`] old (a node drops
/// a flushed generation from its head right after the commit).
pub fn plan(
    candidates: Vec<SegmentMeta>,
    c: &CompactionConfig,
    heads: &[(&str, u64)],
    now_ns: i64,
) -> Vec<Vec<SegmentMeta>> {
    let hour_ns = 3_600_000_000_000i64;
    let min_age_ns = c.min_age.as_nanos().min(i64::MAX as u128) as i64;
    let mut out = Vec::new();
    let others_before = now_ns.saturating_sub(OTHER_NODES_AFTER.as_nanos() as i64);
    let mut rest = candidates
        .into_iter()
        .filter(|s| match heads.iter().find(|(n, _)| *n == s.node) {
            Some((_, from)) => s.flush_lsn < *from,
            None => s.created_at_ns < others_before,
        })
        .peekable();
    while let Some(s) = rest.next() {
        let mut partition = vec![s];
        while let Some(n) = rest.peek() {
            let p = &partition[0];
            if (n.tenant != p.tenant)
                || n.signal != p.signal
                || n.partition_hour != p.partition_hour
                || n.node != p.node
            {
                break;
            }
            partition.push(rest.next().expect("peeked"));
        }
        let closed =
            partition[0].partition_hour.saturating_add(1).saturating_mul(hour_ns).saturating_add(min_age_ns) < now_ns;
        if closed {
            out.extend(runs(partition, c, 2));
        } else {
            // Tiers: < 1 MiB, < 4 MiB, < 16 MiB, …
            let tier = |s: &SegmentMeta| (64 - (s.bytes >> 20).leading_zeros()).div_ceil(2);
            let mut tiers: std::collections::BTreeMap<u32, Vec<SegmentMeta>> = Default::default();
            for s in partition {
                tiers.entry(tier(&s)).or_default().push(s);
            }
            for (_, t) in tiers {
                if t.len() >= c.min_inputs.max(2) {
                    out.extend(runs(t, c, c.min_inputs.max(2)));
                }
            }
        }
    }
    out
}

/// Splits `segments` into consecutive runs within the size limits; keeps runs of at least
/// `at_least` segments.
fn runs(segments: Vec<SegmentMeta>, c: &CompactionConfig, at_least: usize) -> Vec<Vec<SegmentMeta>> {
    let mut out = Vec::new();
    let mut run: Vec<SegmentMeta> = Vec::new();
    let (mut bytes, mut rows) = (0u64, 0u64);
    for s in segments {
        if !run.is_empty()
            && (bytes + s.bytes > c.target_bytes || rows + s.rows > c.target_rows || run.len() >= c.max_inputs.max(2))
        {
            if run.len() >= at_least {
                out.push(std::mem::take(&mut run));
            }
            run.clear();
            (bytes, rows) = (0, 0);
        }
        bytes += s.bytes;
        rows += s.rows;
        run.push(s);
    }
    if run.len() >= at_least {
        out.push(run);
    }
    out
}

/// One input of a merge: a stream of its blocks, the position in the current one, and the
/// order keys of the current block's rows ([`crate::order::row_keys`]).
struct Cursor {
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    keys: Vec<Vec<u8>>,
    pos: usize,
    signal: Signal,
}

impl Cursor {
    /// The order key of the next row, `None` at the end.
    fn key(&self) -> Option<&[u8]> {
        self.batch.as_ref()?;
        self.keys.get(self.pos).map(Vec::as_slice)
    }

    /// Moves to the next non-empty block once the current one is used up.
    fn refill(&mut self, path: &str) -> Result<(), StorageError> {
        while self.batch.as_ref().is_none_or(|b| self.pos >= b.num_rows()) {
            match self.reader.next() {
                Some(b) => {
                    let b = b.map_err(|e| StorageError::SegmentRead(format!("{path}: {e}")))?;
                    self.keys = crate::order::row_keys(self.signal, &b);
                    self.batch = Some(b);
                    self.pos = 0;
                }
                None => {
                    self.batch = None;
                    self.keys.clear();
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Writes the rows of `inputs` to `out` in the order a flush writes (spans and logs grouped by
/// service, each service's rows in input order; metric points by series and time), a k-way
/// merge of the inputs' order keys, so pages prune as well as a flush's do.
/// Builds the trace-ID and full-text indexes from the same blocks. Returns what was written,
/// the Parquet bytes and the index bytes; `Ok(Err(id))` when input `id` has another schema (written by
/// an older version; it stays as it is).
fn merge_files(
    store: &SegmentStore,
    indexer: Option<&dyn SegmentIndexer>,
    signal: Signal,
    inputs: &[SegmentMeta],
    out: &str,
    stop: &AtomicBool,
) -> Result<Result<(segment::SegmentSummary, u64, u64), String>, StorageError> {
    let schema = signal.schema();
    let mut cursors = Vec::with_capacity(inputs.len());
    for s in inputs {
        let reader = store.read_all(&s.path, PAGE_ROWS)?;
        if reader.schema().fields() != schema.fields() {
            tracing::info!(segment = %s.path, "not merged: written with an older schema");
            return Ok(Err(s.id.clone()));
        }
        let mut c = Cursor { reader, batch: None, keys: Vec::new(), pos: 0, signal };
        c.refill(&s.path)?;
        cursors.push(c);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<(RecordBatch, u64)>(2);
    let mut written = None;
    let (data, index_bytes) = std::thread::scope(|scope| {
        let index = scope.spawn(|| build_indexes(store, indexer, signal, out, rx));
        let data = store.put_with(out, |file| {
            let mut w = SegmentWriter::new(signal, std::io::BufWriter::with_capacity(1 << 20, file))?;
            let mut pending: Vec<RecordBatch> = Vec::new();
            let mut pending_rows = 0;
            let emit = |pending: &mut Vec<RecordBatch>, w: &mut SegmentWriter<_>| -> Result<(), StorageError> {
                if pending.is_empty() {
                    return Ok(());
                }
                let block =
                    concat_batches(&schema, pending.iter()).map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
                pending.clear();
                let first = w.write(&block)?;
                tx.send((block, first)).map_err(|_| StorageError::SegmentWrite("the index build stopped".into()))
            };
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(StorageError::SegmentWrite("compaction stopped by shutdown".into()));
                }
                // The input whose next row comes first (ties: the earlier input), and the
                // first row of any other input: everything of the first before that goes now.
                let mut heads: Vec<(&[u8], usize)> =
                    cursors.iter().enumerate().filter_map(|(i, c)| c.key().map(|k| (k, i))).collect();
                heads.sort_unstable();
                let Some(&(_, ci)) = heads.first() else { break };
                let bound: Option<(Vec<u8>, usize)> = heads.get(1).map(|(k, i)| (k.to_vec(), *i));
                let c = &mut cursors[ci];
                let b = c.batch.as_ref().expect("a key means a block");
                let mut end = c.pos + 1;
                while end < b.num_rows()
                    && bound.as_ref().is_none_or(|(bk, bi)| (c.keys[end].as_slice(), ci) < (bk.as_slice(), *bi))
                {
                    end += 1;
                }
                pending.push(b.slice(c.pos, end - c.pos));
                pending_rows += end - c.pos;
                c.pos = end;
                c.refill(&inputs[ci].path)?;
                if pending_rows >= 8 * PAGE_ROWS {
                    emit(&mut pending, &mut w)?;
                    pending_rows = 0;
                }
            }
            emit(&mut pending, &mut w)?;
            let (mut buf, summary) = w.finish()?;
            buf.flush().map_err(|e| StorageError::SegmentWrite(format!("write {out}: {e}")))?;
            written = Some(summary);
            Ok(())
        });
        drop(tx);
        let index_bytes =
            index.join().unwrap_or_else(|_| Err(StorageError::SegmentWrite("index build panicked".into())));
        (data, index_bytes)
    });
    // An index failure explains a write that stopped because of it.
    let index_bytes = index_bytes?;
    let bytes = data?;
    let summary = written.expect("a successful write sets the summary");
    Ok(Ok((summary, bytes, index_bytes)))
}
