//! Where segment files live, and how they are written and read: see [`SegmentStore`].

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::concat_batches;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStore;
use parking_lot::Mutex;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderBuilder, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection,
};
use parquet::file::metadata::PageIndexPolicy;
use tracelight_model::telemetry::Registry;

use crate::cache::RowCache;
use crate::diskcache::DiskCache;
use crate::error::StorageError;
use crate::objstore::{self, Location, S3Options};
use crate::remote::{Chunks, ObjectReader, Remote};
use crate::traceidx::PAGE_ROWS;

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

/// Where segment files live: a local directory (`file://`), read and written as files, or an
/// object store (`s3://`, see [`crate::remote`]). Cheap to clone.
#[derive(Clone)]
pub struct SegmentStore {
    backend: Backend,
    /// Parsed footers (with page indexes) of recently read segments: segments never change,
    /// and a point read should not parse the footer again.
    footers: Arc<Mutex<HashMap<String, Footer>>>,
    /// Decoded rows that reads come back to.
    cache: Arc<RowCache>,
}

#[derive(Clone)]
enum Backend {
    Local(PathBuf),
    Remote(Arc<Remote>),
}

impl std::fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentStore({})", self.describe())
    }
}

/// The index directory (or, on object storage, index bundle) that belongs to a segment file:
/// `…/<id>.parquet` → `…/<id>.idx`.
pub fn index_dir(segment_path: &str) -> String {
    format!("{}.idx", segment_path.strip_suffix(".parquet").unwrap_or(segment_path))
}

/// Where a segment's full-text index can be opened.
#[derive(Debug)]
pub enum IndexFiles {
    /// A directory of index files (a local store).
    Dir(PathBuf),
    /// A bundle (see [`crate::bundle`]) in the disk cache, opened.
    Bundle(File),
}

/// A parsed footer and, on object storage, its object's size (which its read learned).
type Footer = (ArrowReaderMetadata, Option<u64>);

/// At most this many parsed footers are kept.
const FOOTER_CACHE: usize = 1024;

/// Decoded rows kept by default (`query.row_cache_bytes`).
pub const ROW_CACHE_BYTES: usize = 64 << 20;

/// What one Parquet read takes of a segment.
struct ReadPlan {
    selection: RowSelection,
    projection: Option<ProjectionMask>,
    filter: Option<RowFilter>,
}

fn configure<T>(b: ArrowReaderBuilder<T>, plan: ReadPlan) -> ArrowReaderBuilder<T> {
    let mut b = b.with_row_selection(plan.selection).with_batch_size(8192);
    if let Some(p) = plan.projection {
        b = b.with_projection(p);
    }
    if let Some(f) = plan.filter {
        b = b.with_row_filter(f);
    }
    b
}

impl SegmentStore {
    /// Opens `file://PATH` (or a plain path), creating the directory. Object storage needs
    /// its settings: [`SegmentStore::open_location`].
    pub fn open(url: &str) -> Result<SegmentStore, StorageError> {
        match Location::parse(url)? {
            Location::Local(root) => SegmentStore::open_local(&root),
            Location::S3 { .. } => Err(StorageError::Config(format!(
                "storage URL {url:?}: object storage needs its settings (SegmentStore::open_location)"
            ))),
        }
    }

    fn open_local(root: &Path) -> Result<SegmentStore, StorageError> {
        fs::create_dir_all(root).map_err(|e| StorageError::Config(format!("cannot create {}: {e}", root.display())))?;
        let root =
            root.canonicalize().map_err(|e| StorageError::Config(format!("cannot resolve {}: {e}", root.display())))?;
        Ok(SegmentStore::with_backend(Backend::Local(root)))
    }

    fn with_backend(backend: Backend) -> SegmentStore {
        let cache = Arc::new(RowCache::new(ROW_CACHE_BYTES, &Registry::default()));
        SegmentStore { backend, footers: Arc::default(), cache }
    }

    /// Opens a parsed storage location. On object storage, `scratch` is local room for
    /// uploads and downloads (emptied now) and `disk` caches index files.
    pub fn open_location(
        location: &Location,
        s3: &S3Options,
        scratch: &Path,
        disk: Arc<DiskCache>,
    ) -> Result<SegmentStore, StorageError> {
        match location {
            Location::Local(root) => SegmentStore::open_local(root),
            Location::S3 { bucket, prefix } => {
                let objects: Arc<dyn ObjectStore> = Arc::new(
                    objstore::s3_builder(bucket, s3)
                        .build()
                        .map_err(|e| StorageError::Config(format!("s3://{bucket}: {e}")))?,
                );
                SegmentStore::open_objects(objects, &format!("s3://{bucket}"), prefix, scratch, disk)
            }
        }
    }

    /// Segments in `objects` (reachable to DataFusion as `url`, e.g. `s3://bucket`) under
    /// `prefix`.
    pub fn open_objects(
        objects: Arc<dyn ObjectStore>,
        url: &str,
        prefix: &str,
        scratch: &Path,
        disk: Arc<DiskCache>,
    ) -> Result<SegmentStore, StorageError> {
        Ok(SegmentStore::with_backend(Backend::Remote(Arc::new(Remote::new(objects, url, prefix, scratch, disk)?))))
    }

    /// Keeps up to `max_bytes` of decoded rows (0: none), counting on `registry`.
    pub fn with_cache(mut self, max_bytes: usize, registry: &Registry) -> SegmentStore {
        self.cache = Arc::new(RowCache::new(max_bytes, registry));
        self
    }

    /// `file:///root` or `s3://bucket/prefix`, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(root) => format!("file://{}", root.display()),
            Backend::Remote(r) if r.prefix.is_empty() => r.url.clone(),
            Backend::Remote(r) => format!("{}/{}", r.url, r.prefix),
        }
    }

    /// The directory of a local store.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(root) => Some(root),
            Backend::Remote(_) => None,
        }
    }

    /// The object store and the URL DataFusion must know it by (`s3://bucket`); `None` for a
    /// local store (DataFusion reads local files itself).
    pub fn object_store(&self) -> Option<(String, Arc<dyn ObjectStore>)> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Remote(r) => Some((r.url.clone(), r.objects.clone())),
        }
    }

    /// On object storage, checks that the bucket answers and honours create-only puts
    /// ([`objstore::probe`], under the prefix); a local store needs no check.
    pub async fn probe(&self, node: &str) -> Result<(), StorageError> {
        let Backend::Remote(r) = &self.backend else { return Ok(()) };
        if r.prefix.is_empty() {
            objstore::probe(r.objects.as_ref(), node).await
        } else {
            let scoped = object_store::prefix::PrefixStore::new(r.objects.clone(), r.prefix.as_str());
            objstore::probe(&scoped, node).await
        }
    }

    /// The URL DataFusion reads segment `rel` at.
    pub fn table_url(&self, rel: &str) -> String {
        match &self.backend {
            Backend::Local(root) => root.join(rel).to_string_lossy().into_owned(),
            Backend::Remote(r) => format!("{}/{}", r.url, r.path(rel)),
        }
    }

    /// Writes a file durably and atomically: on a local store a temp file, fsync, rename and
    /// fsync of the directory (a crash leaves the whole file or a `.tmp`); on object storage
    /// a create-only put. Call from a thread that may block.
    pub fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(_) => self
                .put_with(rel, |f| {
                    f.write_all(bytes).map_err(|e| StorageError::SegmentWrite(format!("write {rel}: {e}")))
                })
                .map(|_| ()),
            Backend::Remote(r) => r.put_bytes(rel, Bytes::copy_from_slice(bytes)),
        }
    }

    /// As [`SegmentStore::put`], with the content written by `fill` (straight to a file, so
    /// a large segment is never held in memory). Returns the bytes written. On error nothing
    /// is left behind.
    pub fn put_with(
        &self,
        rel: &str,
        fill: impl FnOnce(&mut File) -> Result<(), StorageError>,
    ) -> Result<u64, StorageError> {
        let (path, remote) = match &self.backend {
            Backend::Local(root) => (root.join(rel), None),
            Backend::Remote(r) => (r.scratch_path(".upload"), Some(r)),
        };
        let dir = path.parent().expect("segment paths have a directory");
        let io = |what: &str, e: std::io::Error| StorageError::SegmentWrite(format!("{what} {}: {e}", path.display()));
        create_dir_all_durably(dir).map_err(|e| io("create directory for", e))?;
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let mut f = File::create(&tmp).map_err(|e| io("create", e))?;
        let written = fill(&mut f).and_then(|()| {
            if remote.is_none() {
                f.sync_all().map_err(|e| io("fsync", e))?;
            }
            f.metadata().map(|m| m.len()).map_err(|e| io("stat", e))
        });
        drop(f);
        let size = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Some(r) = remote {
            let uploaded = r.put_file(rel, &tmp);
            let _ = fs::remove_file(&tmp);
            return uploaded;
        }
        fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync directory of", e))?;
        Ok(size)
    }

    /// Reads a whole segment as a stream of batches of at most `batch_rows` rows, in file
    /// order (compaction). The footer is not cached: the segment is about to be replaced. On
    /// object storage the segment is downloaded first (compaction reads all of it anyway).
    pub fn read_all(
        &self,
        rel: &str,
        batch_rows: usize,
    ) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let file = match &self.backend {
            Backend::Local(root) => File::open(root.join(rel)).map_err(|e| err(&e))?,
            Backend::Remote(r) => {
                let local = r.get_to_file(rel)?;
                let f = File::open(&local).map_err(|e| err(&e));
                // The open file outlives its name: nothing is left behind whatever happens.
                let _ = fs::remove_file(&local);
                f?
            }
        };
        ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| err(&e))?
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| err(&e))
    }

    /// Writes an index durably: `fill` writes its files into an empty directory. On a local
    /// store that is `<rel>.tmp`: every file and the directory are fsynced, then it is renamed
    /// to `rel` and the parent fsynced (a crash leaves at most the `.tmp`). On object storage
    /// the directory is packed into one bundle object at `rel`. Returns the bytes written.
    pub fn put_dir(&self, rel: &str, fill: impl FnOnce(&Path) -> Result<(), String>) -> Result<u64, StorageError> {
        let (path, remote) = match &self.backend {
            Backend::Local(root) => (root.join(rel), None),
            Backend::Remote(r) => (r.scratch_path(".idx"), Some(r)),
        };
        let parent = path.parent().expect("index paths have a directory");
        let io = |what: &str, e: std::io::Error| StorageError::SegmentWrite(format!("{what} {}: {e}", path.display()));
        create_dir_all_durably(parent).map_err(|e| io("create directory for", e))?;
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| io("remove stale", e))?;
        }
        fs::create_dir(&tmp).map_err(|e| io("create", e))?;
        if let Some(r) = remote {
            let bundled = (|| {
                fill(&tmp).map_err(|e| StorageError::SegmentWrite(format!("index {rel}: {e}")))?;
                let bundle = PathBuf::from(format!("{}.bundle", tmp.display()));
                // The writer is flushed explicitly: a failed write of the footer (a full
                // disk) must fail the build, not upload a bundle without it.
                let packed = File::create(&bundle).map_err(|e| io("create", e)).and_then(|f| {
                    let mut w = std::io::BufWriter::new(f);
                    let n = crate::bundle::pack(&tmp, &mut w)?;
                    let f = w.into_inner().map_err(|e| io("write", e.into_error()))?;
                    if f.metadata().map_err(|e| io("stat", e))?.len() != n {
                        return Err(StorageError::SegmentWrite(format!("bundle {rel}: short write")));
                    }
                    Ok(n)
                });
                let uploaded = packed.and_then(|_| r.put_file(rel, &bundle));
                let _ = fs::remove_file(&bundle);
                uploaded
            })();
            let _ = fs::remove_dir_all(&tmp);
            return bundled;
        }
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

    /// Removes `rel` and then its parents while they are empty (never the root). Object
    /// stores have no directories: a no-op there.
    pub fn remove_empty_dirs(&self, rel: &str) {
        let Backend::Local(root) = &self.backend else { return };
        let mut p = root.join(rel);
        while p != *root && p.starts_with(root) && fs::remove_dir(&p).is_ok() {
            match p.parent() {
                Some(parent) => p = parent.to_path_buf(),
                None => break,
            }
        }
    }

    /// Reads the rows at `rows` (file row numbers, ascending, no repeats) of a segment, in
    /// that order. Rows read before come from the cache; for the others only the pages holding
    /// them are read and decoded (page index + row selection).
    pub fn read_rows(&self, rel: &str, rows: &[u64]) -> Result<RecordBatch, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let meta = self.footer(rel)?;
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
            let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
            let (_, batches) = self.read_batches(rel, meta, ReadPlan { selection, projection: None, filter: None })?;
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
        let meta = self.footer(rel)?;
        let total = meta.metadata().file_metadata().num_rows() as usize;
        let ranges = row_ranges(rows, total).map_err(|e| err(&e))?;
        let roots =
            columns.iter().map(|c| meta.schema().index_of(c)).collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?;
        let projection = Some(ProjectionMask::roots(meta.parquet_schema(), roots));
        let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
        let (schema, batches) = self.read_batches(rel, meta, ReadPlan { selection, projection, filter: None })?;
        concat_batches(&schema, &batches).map_err(|e| err(&e))
    }

    /// The row numbers, within row blocks `blocks` (ascending, of [`crate::traceidx::PAGE_ROWS`]
    /// rows each), of the rows whose string column `column` satisfies `keep`. Only that column
    /// is read.
    pub fn rows_where(
        &self,
        rel: &str,
        blocks: &[u32],
        column: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<u64>, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let meta = self.footer(rel)?;
        let total = meta.metadata().file_metadata().num_rows() as usize;
        let root = meta.schema().index_of(column).map_err(|e| err(&e))?;
        let ranges = block_ranges(blocks, total);
        let mut selected = ranges.iter().flat_map(|r| r.clone());
        let projection = Some(ProjectionMask::roots(meta.parquet_schema(), [root]));
        let selection = RowSelection::from_consecutive_ranges(ranges.clone().into_iter(), total);
        let (_, batches) = self.read_batches(rel, meta, ReadPlan { selection, projection, filter: None })?;
        let mut out = Vec::new();
        for b in batches {
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
    /// [`crate::traceidx::PAGE_ROWS`] rows each) for which `keep` says true. `keep` sees only
    /// the top-level column `column`; the other columns are decoded for the kept rows only.
    pub fn read_blocks_where(
        &self,
        rel: &str,
        blocks: &[u32],
        column: &str,
        keep: impl FnMut(&RecordBatch) -> BooleanArray + Send + 'static,
    ) -> Result<RecordBatch, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        let meta = self.footer(rel)?;
        let schema = meta.schema().clone();
        let total = meta.metadata().file_metadata().num_rows() as usize;
        let root = schema.index_of(column).map_err(|e| err(&e))?;
        let selection = RowSelection::from_consecutive_ranges(block_ranges(blocks, total).into_iter(), total);
        let mask = ProjectionMask::roots(meta.parquet_schema(), [root]);
        let mut keep = keep;
        let predicate = ArrowPredicateFn::new(mask, move |b: RecordBatch| Ok(keep(&b)));
        let filter = Some(RowFilter::new(vec![Box::new(predicate)]));
        let (_, batches) = self.read_batches(rel, meta, ReadPlan { selection, projection: None, filter })?;
        concat_batches(&schema, &batches).map_err(|e| err(&e))
    }

    /// Runs one read of a segment whose footer is `meta`: from the file on a local store, with
    /// range requests (coalesced, in parallel) on object storage.
    fn read_batches(
        &self,
        rel: &str,
        meta: ArrowReaderMetadata,
        plan: ReadPlan,
    ) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>), StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        match &self.backend {
            Backend::Local(root) => {
                let file = File::open(root.join(rel)).map_err(|e| err(&e))?;
                let reader = configure(ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta), plan)
                    .build()
                    .map_err(|e| err(&e))?;
                let schema = reader.schema();
                Ok((schema, reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(&e))?))
            }
            Backend::Remote(r) => {
                // Data pages come through the disk cache once the object's size is known.
                let size = self.footers.lock().get(rel).and_then(|(_, size)| *size);
                let chunks = size.map(|size| Chunks { disk: r.disk.clone(), key: rel.to_string(), size });
                let breaker = r.breaker.clone();
                let input = ObjectReader { objects: r.objects.clone(), path: r.path(rel), size, chunks, breaker };
                let stream = configure(ParquetRecordBatchStreamBuilder::new_with_metadata(input, meta), plan)
                    .build()
                    .map_err(|e| StorageError::read(rel, &e))?;
                let schema = stream.schema().clone();
                let batches = r.block(stream.try_collect::<Vec<_>>()).map_err(|e| StorageError::read(rel, &e))?;
                Ok((schema, batches))
            }
        }
    }

    /// A segment's parsed footer (with page indexes), cached across calls.
    fn footer(&self, rel: &str) -> Result<ArrowReaderMetadata, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::SegmentRead(format!("{rel}: {e}"));
        if let Some((m, _)) = self.footers.lock().get(rel).cloned() {
            self.cache.footer_hits.inc();
            return Ok(m);
        }
        self.cache.footer_misses.inc();
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let (m, size) = match &self.backend {
            Backend::Local(root) => {
                let file = File::open(root.join(rel)).map_err(|e| err(&e))?;
                (ArrowReaderMetadata::load(&file, options).map_err(|e| err(&e))?, None)
            }
            Backend::Remote(r) => {
                let mut input = ObjectReader {
                    objects: r.objects.clone(),
                    path: r.path(rel),
                    size: None,
                    chunks: None,
                    breaker: r.breaker.clone(),
                };
                let m = r
                    .block(ArrowReaderMetadata::load_async(&mut input, options))
                    .map_err(|e| StorageError::read(rel, &e))?;
                (m, input.size)
            }
        };
        let mut cache = self.footers.lock();
        if cache.len() >= FOOTER_CACHE {
            cache.clear();
        }
        cache.insert(rel.to_string(), (m.clone(), size));
        Ok(m)
    }

    /// Drops the cached footer and rows of a removed segment.
    pub fn forget(&self, rel: &str) {
        self.footers.lock().remove(rel);
        self.cache.forget(rel);
    }

    /// Opens a small file of a segment for reading (its trace-ID index, say): on object
    /// storage, its copy in the disk cache. `None` when it does not exist.
    pub fn open_file(&self, rel: &str) -> Result<Option<File>, StorageError> {
        let path = match &self.backend {
            Backend::Local(root) => root.join(rel),
            Backend::Remote(r) => return r.cached(rel),
        };
        match File::open(path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::SegmentRead(format!("{rel}: {e}"))),
        }
    }

    /// Where the full-text index of segment `rel` can be opened; `None` for a segment that
    /// has none.
    pub fn index_files(&self, rel: &str) -> Result<Option<IndexFiles>, StorageError> {
        let index = index_dir(rel);
        Ok(match &self.backend {
            Backend::Local(root) => Some(root.join(&index)).filter(|d| d.is_dir()).map(IndexFiles::Dir),
            Backend::Remote(r) => r.cached(&index)?.map(IndexFiles::Bundle),
        })
    }

    /// Removes everything of one segment: its Parquet file, trace-ID index and full-text index
    /// (and, on a local store, the temporary files a write cut short left of them), each of
    /// which may be missing, and forgets its cached footer and rows.
    pub async fn delete_segment(&self, rel: &str) -> Result<(), StorageError> {
        self.forget(rel);
        let tid = crate::traceidx::path_for(rel);
        let index = index_dir(rel);
        match &self.backend {
            Backend::Local(_) => {
                for file in [rel, &tid] {
                    self.delete_local(file, false)?;
                    self.delete_local(&format!("{file}.tmp"), false)?;
                }
                self.delete_local(&index, true)?;
                self.delete_local(&format!("{index}.tmp"), true)
            }
            Backend::Remote(r) => {
                r.delete(rel).await?;
                r.delete(&tid).await?;
                r.delete(&index).await
            }
        }
    }

    /// Removes a file (or a directory and everything in it) of a local store; a missing one
    /// is not an error.
    fn delete_local(&self, rel: &str, dir: bool) -> Result<(), StorageError> {
        let Backend::Local(root) = &self.backend else { return Ok(()) };
        let path = root.join(rel);
        match if dir { fs::remove_dir_all(path) } else { fs::remove_file(path) } {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::SegmentWrite(format!("delete {rel}: {e}"))),
        }
    }
}
