//! Segments on object storage (`s3://BUCKET/PREFIX`): what [`crate::SegmentStore`] does when
//! its files are objects.
//!
//! - Writes are create-only puts (`If-None-Match: *`): a name is never written twice, so no
//!   reader ever sees an object change. Objects above [`MULTIPART_BYTES`] go up in parts (S3
//!   has no create-only multipart upload; the name is unique and staged in the catalog first,
//!   so nothing else writes it).
//! - Parquet is read with range requests; a segment's trace-ID index and full-text index
//!   bundle are fetched whole into the node's [`DiskCache`] and read from there.
//! - The store's callers are synchronous (Parquet encoding, tantivy), so requests run on a
//!   small runtime of this store's own and the caller's thread waits for them ([`Remote::block`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};

use crate::diskcache::DiskCache;
use crate::error::StorageError;

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_BYTES: u64 = 64 << 20;
/// Size of one uploaded part.
const PART_BYTES: usize = 16 << 20;

pub(crate) struct Remote {
    /// The bucket (DataFusion is given the same store).
    pub(crate) objects: Arc<dyn ObjectStore>,
    /// `s3://BUCKET`.
    pub(crate) url: String,
    /// Key prefix of every segment (no leading or trailing `/`; may be empty).
    pub(crate) prefix: String,
    /// Local room for compaction output and index builds before upload, and for whole
    /// segments that compaction reads.
    pub(crate) scratch: PathBuf,
    pub(crate) disk: Arc<DiskCache>,
    pub(crate) breaker: Arc<Breaker>,
    io: Option<tokio::runtime::Runtime>,
}

/// After a read the bucket did not answer, reads of objects not in the disk cache fail at
/// once for [`Breaker::OPEN`] instead of each waiting out the request timeout: a search over
/// hundreds of segments during an outage answers within one timeout, not hundreds. Writes
/// (flushes, merges) keep their own retries.
#[derive(Default)]
pub(crate) struct Breaker {
    open_until: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl Breaker {
    const OPEN: std::time::Duration = std::time::Duration::from_secs(5);

    /// Whether reads may go to the bucket now.
    pub(crate) fn check(&self, key: &str) -> Result<(), StorageError> {
        match *self.open_until.lock() {
            Some(t) if std::time::Instant::now() < t => Err(StorageError::Unreachable(format!(
                "read {key}: not tried, a read failed less than {} s ago",
                Self::OPEN.as_secs()
            ))),
            _ => Ok(()),
        }
    }

    /// Notes the outcome of a read: an outage opens the breaker.
    pub(crate) fn note<T>(&self, r: &Result<T, object_store::Error>) {
        if let Err(e) = r
            && crate::error::is_outage(e)
        {
            *self.open_until.lock() = Some(std::time::Instant::now() + Self::OPEN);
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed on an async task.
        if let Some(rt) = self.io.take() {
            rt.shutdown_background();
        }
    }
}

fn fail(what: &str, key: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::SegmentWrite(format!("object storage: {what} {key}: {e}"))
}

fn read_fail(key: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::SegmentRead(format!("object storage: read {key}: {e}"))
}

/// A failed request to read `key`: the object is missing, the store did not answer, or it
/// refused (credentials, permissions: a failure to fix, not to wait out).
fn get_fail(key: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound(key.to_string()),
        e if crate::error::is_outage(&e) => StorageError::Unreachable(format!("read {key}: {e}")),
        e => read_fail(key, e),
    }
}

impl Remote {
    pub(crate) fn new(
        objects: Arc<dyn ObjectStore>,
        url: &str,
        prefix: &str,
        scratch: &Path,
        disk: Arc<DiskCache>,
    ) -> Result<Remote, StorageError> {
        std::fs::create_dir_all(scratch)
            .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", scratch.display())))?;
        // Leftovers of a process that died mid-upload: nothing refers to them.
        if let Ok(entries) = std::fs::read_dir(scratch) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tracelight-io")
            .enable_all()
            .build()
            .map_err(|e| StorageError::Config(format!("cannot start the object storage runtime: {e}")))?;
        Ok(Remote {
            objects,
            url: url.trim_end_matches('/').to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            scratch: scratch.to_path_buf(),
            disk,
            breaker: Arc::default(),
            io: Some(io),
        })
    }

    pub(crate) fn path(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() { ObjectPath::from(rel) } else { ObjectPath::from(format!("{}/{rel}", self.prefix)) }
    }

    /// Runs `fut` on this store's runtime and waits for it, from any thread: a plain thread,
    /// a blocking-pool thread, or a worker of a multi-threaded runtime (which hands its other
    /// tasks to the remaining workers while it waits).
    pub(crate) fn block<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let io = self.io.as_ref().expect("the runtime lives as long as the store").handle();
        match tokio::runtime::Handle::try_current() {
            Err(_) => io.block_on(fut),
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| io.block_on(fut))
            }
            // A single-threaded runtime cannot give its thread away: wait on another one.
            Ok(_) => {
                std::thread::scope(|s| s.spawn(|| io.block_on(fut)).join().expect("object storage thread panicked"))
            }
        }
    }

    /// A scratch path no other writer uses.
    pub(crate) fn scratch_path(&self, suffix: &str) -> PathBuf {
        self.scratch.join(format!("{:016x}{suffix}", rand::random::<u64>()))
    }

    /// Create-only put of `bytes` at `rel`.
    pub(crate) fn put_bytes(&self, rel: &str, bytes: Bytes) -> Result<(), StorageError> {
        let path = self.path(rel);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.block(self.objects.put_opts(&path, PutPayload::from_bytes(bytes), opts))
            .map(|_| ())
            .map_err(|e| fail("put", rel, e))
    }

    /// Uploads the local file `file` to `rel` (create-only when it fits one request); returns
    /// its size.
    pub(crate) fn put_file(&self, rel: &str, file: &Path) -> Result<u64, StorageError> {
        let io = |e: std::io::Error| fail("upload", rel, format!("{}: {e}", file.display()));
        let size = std::fs::metadata(file).map_err(io)?.len();
        if size <= MULTIPART_BYTES {
            let bytes = std::fs::read(file).map_err(io)?;
            self.put_bytes(rel, Bytes::from(bytes))?;
            return Ok(size);
        }
        let path = self.path(rel);
        let mut f = std::fs::File::open(file).map_err(io)?;
        self.block(async {
            let upload = self.objects.put_multipart(&path).await.map_err(|e| fail("start upload of", rel, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; 4 << 20];
            let sent = async {
                loop {
                    // Two parts in flight at most: memory stays bounded whatever the size.
                    w.wait_for_capacity(2).await.map_err(|e| fail("upload", rel, e))?;
                    let n = f.read(&mut buf).map_err(io)?;
                    if n == 0 {
                        return Ok(());
                    }
                    w.write(&buf[..n]);
                }
            }
            .await;
            match sent {
                Ok(()) => w.finish().await.map(|_| size).map_err(|e| fail("finish upload of", rel, e)),
                Err(e) => {
                    // Parts of an abandoned upload are kept (and billed) until aborted.
                    let _ = w.abort().await;
                    Err(e)
                }
            }
        })
    }

    /// Downloads `rel` whole into a new scratch file and returns its path.
    pub(crate) fn get_to_file(&self, rel: &str) -> Result<PathBuf, StorageError> {
        let dest = self.scratch_path(".download");
        let path = self.path(rel);
        let result = self.block(async {
            let mut out = std::fs::File::create(&dest).map_err(|e| read_fail(rel, e))?;
            let mut stream = self.objects.get(&path).await.map_err(|e| get_fail(rel, e))?.into_stream();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk.map_err(|e| get_fail(rel, e))?).map_err(|e| read_fail(rel, e))?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(dest),
            Err(e) => {
                let _ = std::fs::remove_file(&dest);
                Err(e)
            }
        }
    }

    /// The local copy of `rel` from the disk cache, opened; fetched on a miss (streamed to
    /// disk, never held in memory whole). `None` when there is no such object.
    pub(crate) fn cached(&self, rel: &str) -> Result<Option<std::fs::File>, StorageError> {
        let path = self.path(rel);
        let got = self.block(self.disk.get_or_fetch(rel, |dest| async move {
            self.breaker.check(rel)?;
            let got = self.objects.get(&path).await;
            self.breaker.note(&got);
            let got = got.map_err(|e| get_fail(rel, e))?;
            let mut out = std::fs::File::create(&dest).map_err(|e| read_fail(rel, e))?;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk.map_err(|e| get_fail(rel, e))?).map_err(|e| read_fail(rel, e))?;
            }
            Ok(())
        }));
        match got {
            Ok(p) => Ok(Some(p)),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `rel`; a missing object is not an error. Its cached copy goes too.
    pub(crate) async fn delete(&self, rel: &str) -> Result<(), StorageError> {
        self.disk.remove(rel);
        match self.objects.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(fail("delete", rel, e)),
        }
    }
}

/// Parquet's view of one segment object: range requests (several coalesced and in parallel),
/// and the footer read from the object's end without knowing its size (no HEAD request).
pub(crate) struct ObjectReader {
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) path: ObjectPath,
    /// The object's size: known once its footer was read (the footer read sets it).
    pub(crate) size: Option<u64>,
    /// Where data reads are cached; `None` reads straight from the store.
    pub(crate) chunks: Option<Chunks>,
    pub(crate) breaker: Arc<Breaker>,
}

/// Data of one object cached on local disk in aligned chunks of [`CHUNK`] bytes: a repeated
/// point read (the same trace, the next page of a search) is served from the disk cache, as
/// its index files are.
pub(crate) struct Chunks {
    pub(crate) disk: Arc<DiskCache>,
    /// The object's key (under the store's root): the cache key of its chunks is `key#n`.
    pub(crate) key: String,
    pub(crate) size: u64,
}

/// Size of a cached chunk of Parquet data. Pages are tens of KiB: a chunk holds a few, and a
/// miss costs one request like an uncached read would.
const CHUNK: u64 = 128 << 10;

/// Chunks fetched at once by one read.
const CHUNK_FETCHES: usize = 8;

/// Bytes asked for from an object's end to read its footer: most segments' metadata and page
/// indexes fit, so a cold footer costs one request (a larger one costs one more).
const FOOTER_PREFETCH: usize = 256 << 10;

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    external(e)
}

/// Any error as parquet's, kept whole for [`StorageError::read`] to classify.
fn external(e: impl std::error::Error + Send + Sync + 'static) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl ObjectReader {
    /// Refuses a read while the breaker is open (see [`Breaker`]).
    fn gate(&self) -> parquet::errors::Result<()> {
        self.breaker.check(self.path.as_ref()).map_err(external)
    }

    /// `r`, noted by the breaker.
    fn noted<T>(&self, r: Result<T, object_store::Error>) -> parquet::errors::Result<T> {
        self.breaker.note(&r);
        r.map_err(parquet_err)
    }

    /// `ranges` of the object, each chunk they touch read from the disk cache (fetched on a
    /// miss, a few at once).
    async fn cached_ranges(&self, c: &Chunks, ranges: &[std::ops::Range<u64>]) -> parquet::errors::Result<Vec<Bytes>> {
        use futures::{StreamExt, TryStreamExt};
        let bad = |r: &std::ops::Range<u64>| {
            parquet::errors::ParquetError::General(format!("range {r:?} outside the object's {} bytes", c.size))
        };
        let mut ids = std::collections::BTreeSet::new();
        for r in ranges {
            if r.start > r.end || r.end > c.size {
                return Err(bad(r));
            }
            if r.start < r.end {
                ids.extend(r.start / CHUNK..=(r.end - 1) / CHUNK);
            }
        }
        let files: HashMap<u64, std::fs::File> = futures::stream::iter(ids)
            .map(|id| async move {
                let (start, end) = (id * CHUNK, ((id + 1) * CHUNK).min(c.size));
                // The chunk size is part of the key: a build with another size never reads
                // these chunks as its own.
                let key = format!("{}#{}k-{id}", c.key, CHUNK >> 10);
                let k = key.as_str();
                let file = c
                    .disk
                    .get_or_fetch(k, |dest| async move {
                        self.breaker.check(k)?;
                        let got = self.objects.get_range(&self.path, start..end).await;
                        self.breaker.note(&got);
                        let bytes = got.map_err(|e| get_fail(k, e))?;
                        if bytes.len() as u64 != end - start {
                            return Err(read_fail(k, format!("{} bytes came for {}", bytes.len(), end - start)));
                        }
                        std::fs::write(&dest, &bytes).map_err(|e| read_fail(k, e))
                    })
                    .await
                    .map_err(external)?;
                // A cut-short copy (a crash between write and rename) is dropped and fetched
                // again by the next read.
                if file.metadata().map_or(0, |m| m.len()) != end - start {
                    c.disk.remove(k);
                    return Err(external(read_fail(k, "the cached chunk is cut short; dropped")));
                }
                Ok::<_, parquet::errors::ParquetError>((id, file))
            })
            .buffer_unordered(CHUNK_FETCHES)
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            let mut at = r.start;
            while at < r.end {
                let id = at / CHUNK;
                let upto = ((id + 1) * CHUNK).min(r.end);
                let file = files.get(&id).ok_or_else(|| bad(r))?;
                let into = &mut buf[(at - r.start) as usize..(upto - r.start) as usize];
                std::os::unix::fs::FileExt::read_exact_at(file, into, at - id * CHUNK).map_err(external)?;
                at = upto;
            }
            out.push(Bytes::from(buf));
        }
        Ok(out)
    }
}

/// An object's tail, read once: parquet's footer and page-index reads that fall inside it are
/// answered from it, any other from the object.
struct Tail<'a> {
    reader: &'a mut ObjectReader,
    start: u64,
    bytes: Bytes,
}

impl parquet::arrow::async_reader::MetadataFetch for Tail<'_> {
    fn fetch(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        use parquet::arrow::async_reader::AsyncFileReader;
        let end = self.start + self.bytes.len() as u64;
        if range.start >= self.start && range.end <= end {
            let held = self.bytes.slice((range.start - self.start) as usize..(range.end - self.start) as usize);
            return futures::future::ready(Ok(held)).boxed();
        }
        self.reader.get_bytes(range)
    }
}

impl parquet::arrow::async_reader::AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            match &self.chunks {
                Some(c) => Ok(self.cached_ranges(c, std::slice::from_ref(&range)).await?.remove(0)),
                None => {
                    self.gate()?;
                    self.noted(self.objects.get_range(&self.path, range).await)
                }
            }
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            match &self.chunks {
                Some(c) => self.cached_ranges(c, &ranges).await,
                None => {
                    self.gate()?;
                    self.noted(self.objects.get_ranges(&self.path, &ranges).await)
                }
            }
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>> {
        async move {
            // One request for the tail also tells the object's size.
            let options_get =
                GetOptions { range: Some(GetRange::Suffix(FOOTER_PREFETCH as u64)), ..Default::default() };
            self.gate()?;
            let got = self.noted(self.objects.get_opts(&self.path, options_get).await)?;
            let (size, start) = (got.meta.size, got.range.start);
            self.size = Some(size);
            let bytes = self.noted(got.bytes().await)?;
            let hint = bytes.len();
            let tail = Tail { reader: self, start, bytes };
            let meta = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(hint))
                .load_and_finish(tail, size)
                .await?;
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_opens_the_breaker_and_a_refusal_does_not() {
        let b = Breaker::default();
        assert!(b.check("k").is_ok());
        let refused: Result<(), _> =
            Err(object_store::Error::PermissionDenied { path: "k".into(), source: "no".into() });
        b.note(&refused);
        let missing: Result<(), _> = Err(object_store::Error::NotFound { path: "k".into(), source: "gone".into() });
        b.note(&missing);
        assert!(b.check("k").is_ok(), "denied and missing are answers, not an outage");
        assert!(matches!(
            get_fail("k", object_store::Error::PermissionDenied { path: "k".into(), source: "no".into() }),
            StorageError::SegmentRead(_)
        ));
        let down: Result<(), _> =
            Err(object_store::Error::Generic { store: "S3", source: "connection refused".into() });
        b.note(&down);
        let e = b.check("k").unwrap_err();
        assert!(matches!(e, StorageError::Unreachable(_)), "{e}");
        assert!(e.to_string().contains("not tried"), "{e}");
        // It closes again once OPEN has passed.
        *b.open_until.lock() = Some(std::time::Instant::now());
        assert!(b.check("k").is_ok());
    }
}
