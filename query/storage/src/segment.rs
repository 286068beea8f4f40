//! Parquet segments: one file per (tenant, signal, hour) per flush, grouped by service with
//! each request's rows in time order, zstd, page statistics where they prune, and a bloom
//! filter on `trace_id` so a SQL filter on a trace skips row groups without reading them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::array::BooleanArray;
use arrow::array::{Array, TimestampNanosecondArray};
use arrow::compute::concat_batches;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use parking_lot::Mutex;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter, RowSelection,
};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tracelight_model::Signal;

use crate::cache::RowCache;
use crate::error::StorageError;
use crate::headbatch::HeadBatch;
use crate::order::{row_keys, runs};
use tracelight_model::telemetry::Registry;

/// A Parquet file's bytes plus what the catalog needs to know about it.
pub struct EncodedSegment {
    pub bytes: Vec<u8>,
    pub rows: u64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
}

/// Rows per data page (and per block of the trace-ID index).
const PAGE_ROWS: usize = crate::traceidx::PAGE_ROWS;

/// Encodes `batches` (all of `signal`'s schema) into one Parquet file in segment order.
pub fn encode(signal: Signal, batches: &[RecordBatch]) -> Result<EncodedSegment, StorageError> {
    let batches: Vec<HeadBatch> = batches.iter().map(|b| HeadBatch::compact(signal, b)).collect();
    encode_partition(signal, &batches, |_, _| Ok(()))
}

/// Writes `batches` as one Parquet file, grouped by service (spans: then failed spans after
/// the rest, so a page holds only failed spans or none and a query for errors skips the
/// others by the page index) and otherwise in arrival order (which is close to time order:
/// pages still prune by time). No row is gathered or copied for ordering: each request's rows
/// go to the writer as they are (split only where one request mixes services or failed and
/// other spans). `each` sees every written batch with the file row number of its first row:
/// the flush builds the indexes from the same batches.
pub fn encode_partition(
    signal: Signal,
    batches: &[HeadBatch],
    mut each: impl FnMut(&RecordBatch, u64) -> Result<(), StorageError>,
) -> Result<EncodedSegment, StorageError> {
    if signal == Signal::Metrics {
        return encode_series(batches, each);
    }
    // (service, failed, batch, rows) for every run of one order key, ordered by key then arrival.
    let mut pieces: Vec<(&str, bool, usize, std::ops::Range<usize>)> = Vec::new();
    let column = |b: &HeadBatch, name: &str| b.rows().column_by_name(name).cloned();
    let services: Vec<_> = batches.iter().map(|b| column(b, "service_name")).collect();
    let statuses: Vec<_> = batches.iter().map(|b| column(b, "status_code")).collect();
    for (bi, col) in services.iter().enumerate() {
        let col = col.as_ref().expect("schema has service_name");
        let status = statuses[bi].as_ref().and_then(|s| s.as_string_opt::<i32>());
        for (s, f, r) in runs(col.as_string::<i32>(), status) {
            pieces.push((s, f, bi, r));
        }
    }
    pieces.sort_by(|a, b| (a.0, a.1, a.2, a.3.start).cmp(&(b.0, b.1, b.2, b.3.start)));
    let logical: usize = batches.iter().map(HeadBatch::bytes).sum();
    let mut w = SegmentWriter::new(signal, Vec::with_capacity(logical / 8))?;
    for (_, _, bi, range) in pieces {
        let b = &batches[bi];
        let part = if range.len() == b.num_rows() { b.clone() } else { b.slice(range.start, range.len()) };
        let rows = part.project(None);
        let first = w.write(&rows)?;
        each(&rows, first)?;
    }
    let (bytes, summary) = w.finish()?;
    Ok(EncodedSegment { bytes, rows: summary.rows, min_time_ns: summary.min_time_ns, max_time_ns: summary.max_time_ns })
}

/// Metric points sorted by series (service, metric name, attributes and resource) and time:
/// a series' points lie together, so its attribute maps repeat in runs that the dictionary
/// and run-length encodings shrink to almost nothing, its times are regular steps that delta
/// encoding stores in a few bits, and a query for one metric reads only the pages of its
/// series (page statistics on `name`). Metrics arrive at a far lower rate than spans and logs,
/// so the one sorted copy this takes is cheap.
fn encode_series(
    batches: &[HeadBatch],
    mut each: impl FnMut(&RecordBatch, u64) -> Result<(), StorageError>,
) -> Result<EncodedSegment, StorageError> {
    let signal = Signal::Metrics;
    let werr = |e: &dyn std::fmt::Display| StorageError::SegmentWrite(e.to_string());
    let full: Vec<RecordBatch> = batches.iter().map(|b| b.project(None)).collect();
    let all = concat_batches(&signal.schema(), &full).map_err(|e| werr(&e))?;
    drop(full);
    let keys = row_keys(signal, &all);
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    // Stable: points of one series at one time keep their arrival order.
    order.sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
    drop(keys);
    let sorted =
        arrow::compute::take_record_batch(&all, &arrow::array::UInt32Array::from(order)).map_err(|e| werr(&e))?;
    drop(all);
    let mut w = SegmentWriter::new(signal, Vec::new())?;
    let step = 8 * PAGE_ROWS;
    for offset in (0..sorted.num_rows()).step_by(step) {
        let rows = sorted.slice(offset, step.min(sorted.num_rows() - offset));
        let first = w.write(&rows)?;
        each(&rows, first)?;
    }
    let (bytes, summary) = w.finish()?;
    Ok(EncodedSegment { bytes, rows: summary.rows, min_time_ns: summary.min_time_ns, max_time_ns: summary.max_time_ns })
}

/// Rows and time range of a written segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub rows: u64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
}

/// Writes one segment's rows, in the order given, with the segment's writer settings, into
/// memory (a flush) or a file (a compaction, whose output may be far larger than memory).
pub struct SegmentWriter<W: Write + Send> {
    signal: Signal,
    writer: ArrowWriter<W>,
    summary: SegmentSummary,
}

impl<W: Write + Send> SegmentWriter<W> {
    pub fn new(signal: Signal, out: W) -> Result<SegmentWriter<W>, StorageError> {
        let schema = signal.schema();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(writer_properties(&schema)))
            .map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
        Ok(SegmentWriter {
            signal,
            writer,
            summary: SegmentSummary { rows: 0, min_time_ns: i64::MAX, max_time_ns: i64::MIN },
        })
    }

    /// Appends `rows`; returns the file row number of its first row.
    pub fn write(&mut self, rows: &RecordBatch) -> Result<u64, StorageError> {
        let times = rows
            .column_by_name(self.signal.time_column())
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .ok_or_else(|| StorageError::SegmentWrite("rows lack the signal's time column".into()))?;
        for t in times.values().iter() {
            self.summary.min_time_ns = self.summary.min_time_ns.min(*t);
            self.summary.max_time_ns = self.summary.max_time_ns.max(*t);
        }
        self.writer.write(rows).map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
        let first = self.summary.rows;
        self.summary.rows += rows.num_rows() as u64;
        Ok(first)
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.summary.rows
    }

    /// Writes the footer; returns the output and what was written.
    pub fn finish(self) -> Result<(W, SegmentSummary), StorageError> {
        let mut summary = self.summary;
        if summary.rows == 0 {
            (summary.min_time_ns, summary.max_time_ns) = (0, 0);
        }
        let out = self.writer.into_inner().map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
        Ok((out, summary))
    }
}

/// How a segment is written. Page-level statistics (the page index) only where they prune:
/// the sort columns and the few columns queries filter on; a minimum and maximum of a random
/// ID or a log body per page is bytes and time for nothing. Timestamps are delta-encoded
/// (sorted or nearly so), random IDs and bodies skip the dictionary attempt.
fn writer_properties(schema: &arrow::datatypes::Schema) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        // Small pages: a point read by row address (trace lookup, search hit) decodes one
        // page per column, so page size bounds its cost; dictionaries stay per row group.
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_max_row_group_row_count(Some(256 * 1024));
    let has = |c: &str| schema.field_with_name(c).is_ok();
    for c in ["service_name", "name", "kind", "status_code", "duration_ns", "severity_number"] {
        if has(c) {
            props = props.set_column_statistics_enabled(c.into(), EnabledStatistics::Page);
        }
    }
    // Low-cardinality columns that SQL filters and groups on are runs of dictionary indexes
    // (a few bits per row) and stay uncompressed: parquet-rs allocates a zstd compression and
    // decompression context for every compressed column chunk it reads (a tenth of the time of an
    // aggregate over 25 segments), at a cost of a few hundredths of a byte per span.
    for c in ["service_name", "kind", "status_code"] {
        if has(c) {
            props = props.set_column_compression(c.into(), Compression::UNCOMPRESSED);
        }
    }
    for c in ["time", "start_time", "end_time", "observed_time"] {
        if has(c) {
            props = props
                .set_column_statistics_enabled(c.into(), EnabledStatistics::Page)
                .set_column_dictionary_enabled(c.into(), false)
                .set_column_encoding(c.into(), Encoding::DELTA_BINARY_PACKED);
        }
    }
    for c in ["trace_id", "span_id", "parent_span_id", "body"] {
        if has(c) {
            props = props
                .set_column_statistics_enabled(c.into(), EnabledStatistics::None)
                .set_column_dictionary_enabled(c.into(), false);
        }
    }
    // Metric values: the bytes of each float position apart (sign and exponent bytes of a
    // series' values are nearly constant and compress away), no dictionary attempt.
    for c in ["value", "sum", "min", "max"] {
        if schema.field_with_name(c).is_ok_and(|f| f.data_type() == &arrow::datatypes::DataType::Float64) {
            props = props
                .set_column_dictionary_enabled(c.into(), false)
                .set_column_encoding(c.into(), Encoding::BYTE_STREAM_SPLIT);
        }
    }
    for c in ["value_int", "count"] {
        if has(c) {
            props = props
                .set_column_dictionary_enabled(c.into(), false)
                .set_column_encoding(c.into(), Encoding::DELTA_BINARY_PACKED);
        }
    }
    if has("bucket_counts") {
        // Metric queries scan; they do not read single rows by address. Pages of 8K rows
        // cost few page headers for the many columns a series leaves empty and give zstd
        // more of a series' values at once (1.7 → 0.9 B per Prometheus-equivalent sample).
        // (Delta-encoding the bucket counts was tried: 2.2 → 4.0 B per point, since
        // neighbouring values in a row are different buckets.)
        props = props.set_data_page_row_count_limit(8 * PAGE_ROWS);
    }
    if has("trace_id") {
        props = props
            .set_column_bloom_filter_enabled("trace_id".into(), true)
            .set_column_bloom_filter_fpp("trace_id".into(), 0.01);
    }
    props.build()
}

/// The rows of each of `blocks` (of [`PAGE_ROWS`] rows each) in a file of `total` rows.
fn block_ranges(blocks: &[u32], total: usize) -> Vec<std::ops::Range<usize>> {
    blocks
        .iter()
        .map(|b| (*b as usize * PAGE_ROWS).min(total)..((*b as usize + 1) * PAGE_ROWS).min(total))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Consecutive ranges of `rows` (ascending, no repeats, below `total`).
fn row_ranges(rows: &[u64], total: usize) -> Result<Vec<std::ops::Range<usize>>, String> {
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for &r in rows {
        let r = r as usize;
        if r >= total {
            return Err(format!("row {r} is past the end ({total} rows): index and segment disagree"));
        }
        match ranges.last_mut() {
            Some(last) if last.end == r => last.end += 1,
            Some(last) if last.end > r => return Err("row numbers must ascend".into()),
            _ => ranges.push(r..r + 1),
        }
    }
    Ok(ranges)
}

/// `create_dir_all`, then fsync the parent of every directory it created, so the new
/// directory entries survive power loss along with the file written into them.
pub fn create_dir_all_durably(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

/// Where segment files live. Only a local directory for now; object storage (`s3://`) is the
/// scale-out step and is refused with a clear error until it is built.
#[derive(Clone)]
pub struct SegmentStore {
    root: PathBuf,
    /// Parsed footers (with page indexes) of recently read segments: segments never change,
    /// and a point read should not parse the footer again.
    footers: Arc<Mutex<HashMap<String, ArrowReaderMetadata>>>,
    /// Decoded rows that reads come back to.
    cache: Arc<RowCache>,
}

impl std::fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentStore({})", self.root.display())
    }
}

/// The index directory that belongs to a segment file: `…/<id>.parquet` → `…/<id>.idx`.
pub fn index_dir(segment_path: &str) -> String {
    format!("{}.idx", segment_path.strip_suffix(".parquet").unwrap_or(segment_path))
}

/// At most this many parsed footers are kept.
const FOOTER_CACHE: usize = 1024;

/// Decoded rows kept by default (`query.row_cache_bytes`).
pub const ROW_CACHE_BYTES: usize = 64 << 20;

impl SegmentStore {
    /// Opens `file://PATH` (or a plain path), creating the directory.
    pub fn open(url: &str) -> Result<SegmentStore, StorageError> {
        let path = if let Some(p) = url.strip_prefix("file://") {
            p
        } else if url.contains("://") {
            return Err(StorageError::Config(format!(
                "storage URL {url:?} is not supported yet: only file:// (local disk) is built; object storage is planned"
            )));
        } else {
            url
        };
        let root = PathBuf::from(path);
        fs::create_dir_all(&root)
            .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", root.display())))?;
        let root =
            root.canonicalize().map_err(|e| StorageError::Config(format!("cannot resolve {}: {e}", root.display())))?;
        let cache = Arc::new(RowCache::new(ROW_CACHE_BYTES, &Registry::default()));
        Ok(SegmentStore { root, footers: Arc::default(), cache })
    }

    /// Keeps up to `max_bytes` of decoded rows (0: none), counting on `registry`.
    pub fn with_cache(mut self, max_bytes: usize, registry: &Registry) -> SegmentStore {
        self.cache = Arc::new(RowCache::new(max_bytes, registry));
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a file durably: temp file, fsync, rename, fsync of the directory. A crash leaves
    /// either nothing or the whole file (and at worst a `.tmp` that start-up removes).
    pub fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.put_with(rel, |f| f.write_all(bytes).map_err(|e| StorageError::SegmentWrite(format!("write {rel}: {e}"))))
    }

    /// As [`SegmentStore::put`], with the content written by `fill` (straight to the file, so
    /// a large segment is never held in memory). On error the temporary file is removed.
    pub fn put_with(
        &self,
        rel: &str,
        fill: impl FnOnce(&mut File) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let path = self.root.join(rel);
        let dir = path.parent().expect("segment paths have a directory");
        let io = |what: &str, e: std::io::Error| StorageError::SegmentWrite(format!("{what} {}: {e}", path.display()));
        create_dir_all_durably(dir).map_err(|e| io("create directory for", e))?;
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let mut f = File::create(&tmp).map_err(|e| io("create", e))?;
        let written = fill(&mut f).and_then(|()| f.sync_all().map_err(|e| io("fsync", e)));
        drop(f);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync directory of", e))?;
        Ok(())
    }

    /// Reads a whole segment as a stream of batches of at most `batch_rows` rows, in file
    /// order (compaction). The footer is not cached: the segment is about to be replaced.
    pub fn read_all(
        &self,
        rel: &str,
        batch_rows: usize,
    ) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let file = File::open(self.root.join(rel)).map_err(|e| err(&e))?;
        ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| err(&e))?
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| err(&e))
    }

    /// Every file under the root, as paths relative to it.
    pub fn list(&self) -> Result<Vec<String>, StorageError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => return Err(StorageError::SegmentWrite(format!("list {}: {e}", dir.display()))),
            };
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        Ok(out)
    }

    /// Writes a directory durably: `fill` writes into `<rel>.tmp`, every file and the directory
    /// are fsynced, then it is renamed to `rel` and the parent fsynced. Returns the bytes
    /// written. A crash leaves at most a `.tmp` directory that start-up removes.
    pub fn put_dir(&self, rel: &str, fill: impl FnOnce(&Path) -> Result<(), String>) -> Result<u64, StorageError> {
        let path = self.root.join(rel);
        let parent = path.parent().expect("index paths have a directory");
        let io = |what: &str, e: std::io::Error| StorageError::SegmentWrite(format!("{what} {}: {e}", path.display()));
        create_dir_all_durably(parent).map_err(|e| io("create directory for", e))?;
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io("remove stale", e))?;
        }
        fs::create_dir(&tmp).map_err(|e| io("create", e))?;
        // A failed build leaves nothing behind (a full disk must not fill up with partial
        // indexes, one per retry).
        let filled = (|| {
            fill(&tmp).map_err(|e| StorageError::SegmentWrite(format!("index {}: {e}", path.display())))?;
            let mut bytes = 0;
            for entry in fs::read_dir(&tmp).map_err(|e| io("list", e))? {
                let p = entry.map_err(|e| io("list", e))?.path();
                let f = File::open(&p).map_err(|e| io("open", e))?;
                bytes += f.metadata().map_err(|e| io("stat", e))?.len();
                f.sync_all().map_err(|e| io("fsync", e))?;
            }
            File::open(&tmp).and_then(|d| d.sync_all()).map_err(|e| io("fsync", e))?;
            if path.exists() {
                fs::remove_dir_all(&path).map_err(|e| io("replace", e))?;
            }
            fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
            Ok(bytes)
        })();
        let bytes = match filled {
            Ok(b) => b,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        File::open(parent).and_then(|d| d.sync_all()).map_err(|e| io("fsync directory of", e))?;
        Ok(bytes)
    }

    /// Removes `rel` and then its parents while they are empty (never the root).
    pub fn remove_empty_dirs(&self, rel: &str) {
        let mut p = self.root.join(rel);
        while p != self.root && p.starts_with(&self.root) && fs::remove_dir(&p).is_ok() {
            match p.parent() {
                Some(parent) => p = parent.to_path_buf(),
                None => break,
            }
        }
    }

    /// Removes a directory and everything in it; a missing one is not an error.
    pub fn delete_dir(&self, rel: &str) -> Result<(), StorageError> {
        match fs::remove_dir_all(self.root.join(rel)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::SegmentWrite(format!("delete {rel}: {e}"))),
        }
    }

    /// Reads the rows at `rows` (file row numbers, ascending, no repeats) of a segment, in
    /// that order. Rows read before come from the cache; for the others only the pages holding
    /// them are decoded (page index + row selection).
    pub fn read_rows(&self, rel: &str, rows: &[u64]) -> Result<RecordBatch, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let (file, meta) = self.open_with_footer(rel)?;
        let schema = meta.schema().clone();
        let total = meta.metadata().file_metadata().num_rows() as usize;
        row_ranges(rows, total).map_err(|e| err(&e))?;
        let mut sources: Vec<RecordBatch> = Vec::new();
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(rows.len());
        let mut missing: Vec<u64> = Vec::new();
        for &r in rows {
            match self.cache.get(rel, r) {
                Some(b) => {
                    order.push((sources.len(), 0));
                    sources.push(b);
                }
                None => {
                    // Filled in below, from the batch of missing rows.
                    order.push((usize::MAX, missing.len()));
                    missing.push(r);
                }
            }
        }
        if !missing.is_empty() {
            let ranges = row_ranges(&missing, total).map_err(|e| err(&e))?;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
                .with_row_selection(RowSelection::from_consecutive_ranges(ranges.into_iter(), total))
                .with_batch_size(8192)
                .build()
                .map_err(|e| err(&e))?;
            let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?;
            let read = concat_batches(&schema, &batches).map_err(|e| err(&e))?;
            let path: Arc<str> = Arc::from(rel);
            for (j, r) in missing.iter().enumerate().take(read.num_rows()) {
                // A copy that owns its buffers: a slice would keep the whole batch alive.
                let one = arrow::compute::take_record_batch(&read, &arrow::array::UInt32Array::from(vec![j as u32]))
                    .map_err(|e| err(&e))?;
                self.cache.put(&path, *r, one);
            }
            let at = sources.len();
            sources.push(read);
            for o in order.iter_mut().filter(|o| o.0 == usize::MAX) {
                o.0 = at;
            }
        }
        if order.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        let refs: Vec<&RecordBatch> = sources.iter().collect();
        arrow::compute::interleave_record_batch(&refs, &order).map_err(|e| err(&e))
    }

    /// Reads columns `columns` of the rows at `rows` (ascending, no repeats), in that order:
    /// what a phrase check needs of its candidates, without decoding the other columns.
    pub fn read_columns(&self, rel: &str, rows: &[u64], columns: &[&str]) -> Result<RecordBatch, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let (file, meta) = self.open_with_footer(rel)?;
        let total = meta.metadata().file_metadata().num_rows() as usize;
        let ranges = row_ranges(rows, total).map_err(|e| err(&e))?;
        let roots =
            columns.iter().map(|c| meta.schema().index_of(c)).collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?;
        let mask = ProjectionMask::roots(meta.parquet_schema(), roots);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
            .with_projection(mask)
            .with_row_selection(RowSelection::from_consecutive_ranges(ranges.into_iter(), total))
            .with_batch_size(8192)
            .build()
            .map_err(|e| err(&e))?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?;
        concat_batches(&schema, &batches).map_err(|e| err(&e))
    }

    /// The row numbers, within row blocks `blocks` (ascending, of [`crate::traceidx::PAGE_ROWS`]
    /// rows each), of the rows whose string column `column` satisfies `keep`. Only that column
    /// is decoded.
    pub fn rows_where(
        &self,
        rel: &str,
        blocks: &[u32],
        column: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<u64>, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let (file, meta) = self.open_with_footer(rel)?;
        let total = meta.metadata().file_metadata().num_rows() as usize;
        let root = meta.schema().index_of(column).map_err(|e| err(&e))?;
        let ranges = block_ranges(blocks, total);
        let selected = ranges.iter().flat_map(|r| r.clone());
        let mask = ProjectionMask::roots(meta.parquet_schema(), [root]);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
            .with_projection(mask)
            .with_row_selection(RowSelection::from_consecutive_ranges(ranges.clone().into_iter(), total))
            .with_batch_size(8192)
            .build()
            .map_err(|e| err(&e))?;
        let mut out = Vec::new();
        let mut selected = selected;
        for b in reader {
            let b = b.map_err(|e| err(&e))?;
            let col =
                b.column(0).as_string_opt::<i32>().ok_or_else(|| err(&format!("{column} is not a string column")))?;
            for i in 0..col.len() {
                let row = selected.next().ok_or_else(|| err(&"more rows than selected"))?;
                if col.is_valid(i) && keep(col.value(i)) {
                    out.push(row as u64);
                }
            }
        }
        Ok(out)
    }

    /// Reads the rows of a segment within row blocks `blocks` (ascending, of
    /// [`traceidx::PAGE_ROWS`] rows each) for which `keep` says true. `keep` sees only the
    /// top-level column `column`; the other columns are decoded for the kept rows only.
    pub fn read_blocks_where(
        &self,
        rel: &str,
        blocks: &[u32],
        column: &str,
        keep: impl FnMut(&RecordBatch) -> BooleanArray + Send + 'static,
    ) -> Result<RecordBatch, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let (file, meta) = self.open_with_footer(rel)?;
        let schema = meta.schema().clone();
        let total = meta.metadata().file_metadata().num_rows() as usize;
        let root = schema.index_of(column).map_err(|e| err(&e))?;
        let selection = RowSelection::from_consecutive_ranges(block_ranges(blocks, total).into_iter(), total);
        let mask = ProjectionMask::roots(meta.parquet_schema(), [root]);
        let mut keep = keep;
        let predicate = ArrowPredicateFn::new(mask, move |b: RecordBatch| Ok(keep(&b)));
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
            .with_row_selection(selection)
            .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
            .with_batch_size(8192)
            .build()
            .map_err(|e| err(&e))?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?;
        concat_batches(&schema, &batches).map_err(|e| err(&e))
    }

    /// Opens a segment and its parsed footer (with page indexes), cached across calls.
    fn open_with_footer(&self, rel: &str) -> Result<(File, ArrowReaderMetadata), StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let file = File::open(self.root.join(rel)).map_err(|e| err(&e))?;
        let cached = self.footers.lock().get(rel).cloned();
        let meta = match cached {
            Some(m) => {
                self.cache.footer_hits.inc();
                m
            }
            None => {
                self.cache.footer_misses.inc();
                let m = ArrowReaderMetadata::load(
                    &file,
                    ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
                )
                .map_err(|e| err(&e))?;
                let mut cache = self.footers.lock();
                if cache.len() >= FOOTER_CACHE {
                    cache.clear();
                }
                cache.insert(rel.to_string(), m.clone());
                m
            }
        };
        Ok((file, meta))
    }

    /// Drops the cached footer and rows of a removed segment.
    pub fn forget(&self, rel: &str) {
        self.footers.lock().remove(rel);
        self.cache.forget(rel);
    }

    /// Opens a file under the root for reading (a segment's trace-ID index, say).
    pub fn open_file(&self, rel: &str) -> Result<Option<File>, StorageError> {
        match File::open(self.root.join(rel)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::SegmentRead(format!("{rel}: {e}"))),
        }
    }

    /// Removes everything of one segment: its Parquet file, trace-ID index and full-text index
    /// directory (each may be missing), and forgets its cached footer and rows.
    pub fn delete_segment(&self, rel: &str) -> Result<(), StorageError> {
        self.forget(rel);
        self.delete(rel)?;
        self.delete(&crate::traceidx::path_for(rel))?;
        self.delete_dir(&index_dir(rel))
    }

    pub fn delete(&self, rel: &str) -> Result<(), StorageError> {
        match fs::remove_file(self.root.join(rel)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::SegmentWrite(format!("delete {rel}: {e}"))),
        }
    }
}
