//! Parquet segments: one file per (tenant, signal, hour) per flush, sorted by service then
//! time, zstd, page statistics, and a bloom filter on `trace_id` so a lookup by trace skips
//! row groups without reading them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, TimestampNanosecondArray};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tracelight_model::Signal;

use crate::error::StorageError;

/// A Parquet file's bytes plus what the catalog needs to know about it.
pub struct EncodedSegment {
    pub bytes: Vec<u8>,
    pub rows: u64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
}

/// Rows per data page.
const PAGE_ROWS: usize = 1024;

/// Concatenates, sorts and encodes `batches` (all of `signal`'s schema) into one Parquet file.
pub fn encode(signal: Signal, batches: &[RecordBatch]) -> Result<EncodedSegment, StorageError> {
    encode_sorted(signal, sort_rows(signal, batches)?)
}

/// Concatenates `batches` and sorts the rows by service, then time: the order of a segment.
pub fn sort_rows(signal: Signal, batches: &[RecordBatch]) -> Result<RecordBatch, StorageError> {
    let schema = signal.schema();
    let all = concat_batches(&schema, batches).map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
    let time = all.column_by_name(signal.time_column()).expect("time column").clone();
    let service = all.column_by_name("service_name").expect("service_name column").clone();
    let order = lexsort_to_indices(
        &[SortColumn { values: service, options: None }, SortColumn { values: time, options: None }],
        None,
    )
    .map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
    take_record_batch(&all, &order).map_err(|e| StorageError::SegmentWrite(e.to_string()))
}

/// Encodes rows already in segment order ([`sort_rows`]) as one Parquet file.
pub fn encode_sorted(signal: Signal, sorted: RecordBatch) -> Result<EncodedSegment, StorageError> {
    let schema = signal.schema();
    let times = sorted
        .column_by_name(signal.time_column())
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>().cloned())
        .expect("time column is Timestamp(ns)");
    let min_time_ns = times.values().iter().copied().min().unwrap_or(0);
    let max_time_ns = times.values().iter().copied().max().unwrap_or(0);

    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        // Small pages: a point read by row address (trace lookup, search hit) decodes one
        // page per column, so page size bounds its cost; dictionaries stay per row group.
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_max_row_group_row_count(Some(256 * 1024));
    if schema.field_with_name("trace_id").is_ok() {
        props = props
            .set_column_bloom_filter_enabled("trace_id".into(), true)
            .set_column_bloom_filter_fpp("trace_id".into(), 0.01);
    }
    let mut bytes = Vec::with_capacity(sorted.get_array_memory_size() / 4);
    let mut w = ArrowWriter::try_new(&mut bytes, schema, Some(props.build()))
        .map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
    w.write(&sorted).map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
    w.close().map_err(|e| StorageError::SegmentWrite(e.to_string()))?;
    Ok(EncodedSegment { bytes, rows: sorted.num_rows() as u64, min_time_ns, max_time_ns: max_time_ns.max(min_time_ns) })
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
const FOOTER_CACHE: usize = 4096;

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
        Ok(SegmentStore { root, footers: Arc::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a file durably: temp file, fsync, rename, fsync of the directory. A crash leaves
    /// either nothing or the whole file (and at worst a `.tmp` that start-up removes).
    pub fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.root.join(rel);
        let dir = path.parent().expect("segment paths have a directory");
        let io = |what: &str, e: std::io::Error| StorageError::SegmentWrite(format!("{what} {}: {e}", path.display()));
        create_dir_all_durably(dir).map_err(|e| io("create directory for", e))?;
        let tmp = path.with_extension("parquet.tmp");
        let mut f = File::create(&tmp).map_err(|e| io("create", e))?;
        f.write_all(bytes).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("fsync", e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync directory of", e))?;
        Ok(())
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
    /// that order. Only the pages holding them are decoded (page index + row selection).
    pub fn read_rows(&self, rel: &str, rows: &[u64]) -> Result<RecordBatch, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let file = File::open(self.root.join(rel)).map_err(|e| err(&e))?;
        let cached = self.footers.lock().get(rel).cloned();
        let meta = match cached {
            Some(m) => m,
            None => {
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
        let schema = meta.schema().clone();
        let total = meta.metadata().file_metadata().num_rows() as usize;
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        for &r in rows {
            let r = r as usize;
            if r >= total {
                return Err(err(&format!("row {r} is past the end ({total} rows): index and segment disagree")));
            }
            match ranges.last_mut() {
                Some(last) if last.end == r => last.end += 1,
                Some(last) if last.end > r => return Err(err(&"row numbers must ascend")),
                _ => ranges.push(r..r + 1),
            }
        }
        let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta)
            .with_row_selection(selection)
            .with_batch_size(8192)
            .build()
            .map_err(|e| err(&e))?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?;
        concat_batches(&schema, &batches).map_err(|e| err(&e))
    }

    pub fn delete(&self, rel: &str) -> Result<(), StorageError> {
        match fs::remove_file(self.root.join(rel)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::SegmentWrite(format!("delete {rel}: {e}"))),
        }
    }
}
