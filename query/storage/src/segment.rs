//! Parquet segments: one file per (tenant, signal, hour) per flush, grouped by service with
//! each request's rows in time order, zstd, page statistics where they prune, and a bloom
//! filter on `trace_id` so a SQL filter on a trace skips row groups without reading them.

use std::io::Write;

use arrow::array::AsArray;
use arrow::array::{Array, TimestampNanosecondArray};
use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tracelight_model::Signal;

use crate::error::StorageError;
use crate::headbatch::HeadBatch;
use crate::order::{row_keys, runs};

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

pub use crate::store::{ROW_CACHE_BYTES, SegmentStore, create_dir_all_durably, index_dir};
