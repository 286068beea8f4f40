//! The write-ahead log: nothing is acknowledged before it is here and fsynced.
//!
//! Layout: `<data_dir>/wal/<first-lsn, 20 digits>.wal` segment files of records
//! `[magic u32][len u32][lsn u64][crc32 u32][payload; len]`, the CRC covering len, lsn and
//! payload. LSNs increase by one per record (one record per export request).
//!
//! Key decisions:
//! - **Group commit on one writer thread.** Requests queue their encoded payloads; the writer
//!   drains the queue, writes everything, calls `fdatasync` once for all of them, then hands
//!   the batches to the sink *in LSN order* and only then acknowledges. Because the sink sees
//!   LSNs in order with no gaps, "everything up to LSN X is in the head" is always true, so a
//!   single watermark (the catalog's checkpoint) decides both truncation and what replay skips.
//! - **A failed fsync is fatal** for this WAL: the error is returned to every waiting request
//!   and every later one; readiness turns false. It is never retried (the page cache may have
//!   dropped the dirty pages: "fsyncgate").
//! - **Damage is contained.** Replay skips a record whose header, length or CRC is wrong and
//!   scans on to the next intact one (its magic, a correct CRC and a following LSN), counting
//!   and logging the bytes skipped and keeping a copy of the segment in `wal/quarantine/`.
//!   Damage with no intact record after it (a torn tail) is cut off. Start-up never fails
//!   because of damage. (A record payload holds client bytes, so a client could plant what
//!   looks like a record inside one; it is only ever looked at after real damage to the
//!   record that holds it, and then must still carry a following LSN and a correct CRC.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tracelight_model::telemetry::{Counter, Gauge, Histogram, LATENCY_BUCKETS, Registry};
use tracelight_model::{BatchSink, SignalBatch};

use crate::error::WalError;
use crate::record;

const MAGIC: u32 = 0x544c_5731; // "TLW1"
const HEADER: usize = 20;
/// Upper bound on one record; a length field above it is damage, not a record.
pub const MAX_RECORD_BYTES: usize = 1 << 30;

/// WAL settings.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    /// Start a new segment file once the current one is larger than this.
    pub segment_bytes: u64,
    /// At most this many bytes are appended per group commit before the fsync.
    pub max_group_bytes: usize,
    /// Skip fsync (benchmarks that measure everything but the disk). Never in production.
    pub fsync: bool,
    /// Limits applied when replayed request bodies are decoded again.
    pub limits: crate::decode::ItemLimits,
    /// Fault hook (tests and the crash suite; `TRACELIGHT_FAULT_FAIL_FSYNC_GROUP` in `serve`):
    /// the fsync of this one group (0-based) fails; later ones would succeed. Never in production.
    pub fail_fsync_from_group: Option<u64>,
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayStats {
    pub segments: u64,
    pub records: u64,
    /// Records at or below the checkpoint, already in Parquet, skipped.
    pub skipped: u64,
    pub rows: u64,
    /// Places where a segment was damaged (torn tail, bad CRC, bad length, garbage).
    pub damaged: u64,
    /// Bytes cut off at damaged places.
    pub damaged_bytes: u64,
    /// Intact records (CRC correct) this binary cannot decode, e.g. written by a newer version.
    /// They are skipped, and their segment is copied to `wal/quarantine/` first.
    pub undecodable: u64,
}

struct Segment {
    path: PathBuf,
    last_lsn: u64,
    bytes: u64,
}

struct Append {
    payload: Vec<u8>,
    batches: Vec<SignalBatch>,
    reply: oneshot::Sender<Result<u64, WalError>>,
}

struct Metrics {
    fsync_seconds: Arc<Histogram>,
    appended_bytes: Arc<Counter>,
    records: Arc<Counter>,
    damaged: Arc<Counter>,
    wal_bytes: Arc<Gauge>,
    group_size: Arc<Histogram>,
}

struct Shared {
    failed: AtomicBool,
    /// Total bytes of all segment files.
    bytes: AtomicU64,
    /// Closed segments, oldest first; the active one is not in this list.
    closed: Mutex<Vec<Segment>>,
    metrics: Metrics,
}

/// Handle to the WAL; cheap to clone.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Append>,
    shared: Arc<Shared>,
}

impl Wal {
    /// Opens the WAL in `opts.dir`, replays every record above `checkpoint` into `sink`, and
    /// starts the writer thread on a fresh segment.
    pub fn open(
        opts: WalOptions,
        checkpoint: u64,
        sink: Arc<dyn BatchSink>,
        registry: &Registry,
    ) -> Result<(Wal, ReplayStats), WalError> {
        if !opts.dir.exists() {
            fs::create_dir_all(&opts.dir).map_err(|e| WalError::io("create WAL directory", &opts.dir, e))?;
            // The new directory's entry must survive power loss too.
            if let Some(parent) = opts.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| WalError::io("sync data directory", parent, e))?;
            }
        }
        let metrics = Metrics {
            fsync_seconds: registry.histogram(
                "tracelight_wal_fsync_seconds",
                "Latency of one WAL group commit fsync.",
                LATENCY_BUCKETS,
            ),
            appended_bytes: registry.counter("tracelight_wal_appended_bytes_total", "Bytes appended to the WAL."),
            records: registry.counter("tracelight_wal_records_total", "Records (export requests) appended to the WAL."),
            damaged: registry.counter(
                "tracelight_wal_damaged_total",
                "Damaged WAL places found at replay (torn tail, bad CRC, bad length).",
            ),
            wal_bytes: registry.gauge("tracelight_wal_bytes", "Bytes in WAL segment files."),
            group_size: registry.histogram(
                "tracelight_wal_group_records",
                "Records per group commit.",
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            ),
        };

        let mut stats = ReplayStats::default();
        let mut closed = Vec::new();
        let mut max_lsn = checkpoint;
        for (first_lsn, path) in list_segments(&opts.dir)? {
            stats.segments += 1;
            let seg = replay_segment(&path, first_lsn, checkpoint, &*sink, &opts.limits, &mut stats)?;
            max_lsn = max_lsn.max(seg.last_lsn);
            if seg.bytes > 0 {
                closed.push(seg);
            }
        }
        metrics.damaged.add(stats.damaged);
        let total: u64 = closed.iter().map(|s| s.bytes).sum();

        let next_lsn = max_lsn + 1;
        let (file, path) = create_segment(&opts.dir, next_lsn)?;
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            bytes: AtomicU64::new(total),
            closed: Mutex::new(closed),
            metrics,
        });
        shared.metrics.wal_bytes.set(total as i64);
        // Bounded queue: when the disk falls behind, callers wait here (and time out upstream)
        // instead of queueing unbounded memory.
        let (tx, rx) = mpsc::channel::<Append>(4096);
        let writer = Writer {
            opts,
            rx,
            sink,
            shared: shared.clone(),
            file: BufWriter::with_capacity(1 << 20, file),
            path,
            seg_bytes: 0,
            next_lsn,
            last_lsn: max_lsn,
            groups: 0,
        };
        std::thread::Builder::new()
            .name("tracelight-wal".into())
            .spawn(move || writer.run())
            .map_err(|e| WalError::io("start WAL writer thread", Path::new("."), e))?;
        Ok((Wal { tx, shared }, stats))
    }

    /// Appends `payload` (see [`record`]) as one record, waits for the shared fsync, hands
    /// `batches` (the rows decoded from it) to the sink, and returns the record's LSN. Only
    /// then may the request be acknowledged.
    pub async fn append(&self, payload: Vec<u8>, batches: Vec<SignalBatch>) -> Result<u64, WalError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(WalError::Failed);
        }
        let (reply, rx) = oneshot::channel();
        // The queue is bounded: when the disk falls behind, callers wait here.
        self.tx.send(Append { payload, batches, reply }).await.map_err(|_| WalError::Failed)?;
        rx.await.map_err(|_| WalError::Failed)?
    }

    /// Whether the WAL still accepts writes (false after a failed fsync).
    pub fn healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire)
    }

    /// Bytes currently held in WAL segments.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Deletes closed segments whose records are all at or below `lsn` (durable elsewhere).
    pub fn truncate_through(&self, lsn: u64) -> usize {
        let mut closed = self.shared.closed.lock();
        let mut removed = 0;
        while let Some(seg) = closed.first() {
            if seg.last_lsn > lsn {
                break;
            }
            match fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %seg.path.display(), error = %e, "could not delete WAL segment; will retry");
                    break;
                }
            }
            self.shared.bytes.fetch_sub(seg.bytes, Ordering::Relaxed);
            closed.remove(0);
            removed += 1;
        }
        self.shared.metrics.wal_bytes.set(self.shared.bytes.load(Ordering::Relaxed) as i64);
        removed
    }
}

struct Writer {
    opts: WalOptions,
    rx: mpsc::Receiver<Append>,
    sink: Arc<dyn BatchSink>,
    shared: Arc<Shared>,
    file: BufWriter<File>,
    path: PathBuf,
    seg_bytes: u64,
    next_lsn: u64,
    last_lsn: u64,
    groups: u64,
}

impl Writer {
    fn run(mut self) {
        // If this thread dies (a panic in the sink, say), the WAL must stop reporting healthy.
        struct FailOnUnwind(Arc<Shared>);
        impl Drop for FailOnUnwind {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    tracing::error!("WAL writer thread panicked; refusing all further ingest until restart");
                    self.0.failed.store(true, Ordering::Release);
                }
            }
        }
        let _guard = FailOnUnwind(self.shared.clone());
        let mut group: Vec<Append> = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            let mut group_bytes = first.payload.len();
            group.push(first);
            while group_bytes < self.opts.max_group_bytes {
                match self.rx.try_recv() {
                    Ok(a) => {
                        group_bytes += a.payload.len();
                        group.push(a);
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
        }
        // All senders gone: the server is shutting down. Everything acknowledged is synced.
    }

    fn commit(&mut self, group: &mut Vec<Append>) {
        if self.shared.failed.load(Ordering::Acquire) {
            for a in group.drain(..) {
                let _ = a.reply.send(Err(WalError::Failed));
            }
            return;
        }
        let first_lsn = self.next_lsn;
        let result = self.write_group(group).and_then(|written| {
            let t = Instant::now();
            self.file.flush()?;
            if self.opts.fsync {
                self.sync()?;
            }
            self.shared.metrics.fsync_seconds.observe(t.elapsed().as_secs_f64());
            Ok(written)
        });
        match result {
            Ok(written) => {
                self.seg_bytes += written;
                self.shared.bytes.fetch_add(written, Ordering::Relaxed);
                self.shared.metrics.appended_bytes.add(written);
                self.shared.metrics.records.add(group.len() as u64);
                self.shared.metrics.group_size.observe(group.len() as f64);
                self.shared.metrics.wal_bytes.set(self.shared.bytes.load(Ordering::Relaxed) as i64);
                for (i, a) in group.drain(..).enumerate() {
                    let lsn = first_lsn + i as u64;
                    self.sink.consume(lsn, a.batches);
                    let _ = a.reply.send(Ok(lsn));
                }
                self.last_lsn = self.next_lsn - 1;
                if self.seg_bytes >= self.opts.segment_bytes
                    && let Err(e) = self.rotate()
                {
                    self.fail(&format!("WAL segment rotation failed: {e}"));
                }
            }
            Err(e) => {
                self.fail(&format!("WAL write or fsync failed: {e}"));
                for a in group.drain(..) {
                    let _ = a.reply.send(Err(WalError::Failed));
                }
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.groups += 1;
        if self.opts.fail_fsync_from_group.is_some_and(|g| self.groups == g + 1) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.file.get_ref().sync_data()
    }

    fn fail(&self, why: &str) {
        tracing::error!("{why}; refusing all further ingest until restart");
        self.shared.failed.store(true, Ordering::Release);
    }

    fn write_group(&mut self, group: &[Append]) -> io::Result<u64> {
        let mut written = 0u64;
        for a in group {
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            let header = header_for(lsn, &a.payload);
            self.file.write_all(&header)?;
            self.file.write_all(&a.payload)?;
            written += (HEADER + a.payload.len()) as u64;
        }
        Ok(written)
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        let (file, path) = create_segment(&self.opts.dir, self.next_lsn)?;
        let old = std::mem::replace(&mut self.file, BufWriter::with_capacity(1 << 20, file));
        drop(old);
        let old_path = std::mem::replace(&mut self.path, path);
        self.shared.closed.lock().push(Segment { path: old_path, last_lsn: self.last_lsn, bytes: self.seg_bytes });
        self.seg_bytes = 0;
        Ok(())
    }
}

fn header_for(lsn: u64, payload: &[u8]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[4..16]);
    crc.update(payload);
    h[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| WalError::io("list WAL directory", dir, e))? {
        let entry = entry.map_err(|e| WalError::io("list WAL directory", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else { continue };
        if let Ok(lsn) = stem.parse::<u64>() {
            out.push((lsn, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn create_segment(dir: &Path, first_lsn: u64) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(segment_name(first_lsn));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| WalError::io("create WAL segment", &path, e))?;
    // The new name must be durable before records in it are acknowledged.
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| WalError::io("sync WAL directory", dir, e))?;
    Ok((file, path))
}

/// Reads one segment, feeding records above `checkpoint` to the sink; cuts it at the first
/// damaged record.
fn replay_segment(
    path: &Path,
    first_lsn: u64,
    checkpoint: u64,
    sink: &dyn BatchSink,
    limits: &crate::decode::ItemLimits,
    stats: &mut ReplayStats,
) -> Result<Segment, WalError> {
    let mut file =
        OpenOptions::new().read(true).write(true).open(path).map_err(|e| WalError::io("open WAL segment", path, e))?;
    let len = file.metadata().map_err(|e| WalError::io("stat WAL segment", path, e))?.len();
    let mut data = Vec::with_capacity(len as usize);
    file.read_to_end(&mut data).map_err(|e| WalError::io("read WAL segment", path, e))?;

    let scan = scan(&data, first_lsn.saturating_sub(1));
    let last_lsn = scan.records.last().map_or(first_lsn.saturating_sub(1), |r| r.0);
    for (offset, skipped, why) in &scan.skipped {
        stats.damaged += 1;
        stats.damaged_bytes += *skipped as u64;
        let kept = quarantine(path);
        tracing::warn!(
            segment = %path.display(),
            offset,
            bytes_skipped = skipped,
            copy = %kept,
            "WAL damage found ({why}); skipped to the next intact record"
        );
    }
    for (lsn, range) in &scan.records {
        let (lsn, payload) = (*lsn, &data[range.clone()]);
        stats.records += 1;
        if lsn <= checkpoint {
            stats.skipped += 1;
        } else {
            match record::decode(payload, limits) {
                Ok(batches) => {
                    stats.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                    sink.consume(lsn, batches);
                }
                Err(e) => {
                    // The CRC matched: the bytes are what was written, this binary just
                    // cannot read them. Keep a copy, skip the record, never cut the file.
                    stats.undecodable += 1;
                    let kept = quarantine(path);
                    tracing::error!(
                        segment = %path.display(),
                        lsn,
                        error = %e,
                        copy = %kept,
                        "WAL record cannot be decoded by this version; skipped, segment kept"
                    );
                }
            }
        }
    }
    let pos = scan.end;
    let damage = scan.tail_damage;
    if let Some(why) = damage {
        let cut = data.len() - pos;
        stats.damaged += 1;
        stats.damaged_bytes += cut as u64;
        tracing::warn!(
            segment = %path.display(),
            offset = pos,
            bytes_dropped = cut,
            "WAL damage found ({why}); keeping the {pos} bytes before it"
        );
        file.set_len(pos as u64)
            .and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()))
            .and_then(|_| file.sync_all())
            .map_err(|e| WalError::io("truncate damaged WAL segment", path, e))?;
    }
    if pos == 0 {
        // Nothing valid in it (an unused segment from an earlier run, or damage at byte 0):
        // remove it so its name can be reused by the new active segment.
        fs::remove_file(path).map_err(|e| WalError::io("remove empty WAL segment", path, e))?;
    }
    Ok(Segment { path: path.to_path_buf(), last_lsn, bytes: pos as u64 })
}

/// Copies a segment to `<wal>/quarantine/` (once) and says where, or why not.
fn quarantine(path: &Path) -> String {
    let Some(dir) = path.parent().map(|d| d.join("quarantine")) else { return "nowhere".into() };
    let target = dir.join(path.file_name().unwrap_or_default());
    if target.exists() {
        return target.display().to_string();
    }
    match fs::create_dir_all(&dir).and_then(|_| fs::copy(path, &target)).and_then(|_| File::open(&dir)?.sync_all()) {
        Ok(()) => target.display().to_string(),
        Err(e) => format!("copy failed: {e}"),
    }
}

/// What a segment file holds: its intact records in order, the damage skipped between them,
/// and where the intact part ends (with why, when damage runs from there to the end).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// `(lsn, payload byte range)` of every intact record.
    pub records: Vec<(u64, std::ops::Range<usize>)>,
    /// `(offset, bytes skipped, why)` of damage followed by an intact record.
    pub skipped: Vec<(usize, usize, String)>,
    /// End of the last intact record.
    pub end: usize,
    pub tail_damage: Option<String>,
}

/// Reads a segment's bytes (pure: replay and the fuzz target call it). `prev_lsn`: the LSN
/// before the segment's first.
pub fn scan(data: &[u8], prev_lsn: u64) -> Scan {
    let mut out = Scan::default();
    let (mut pos, mut last_lsn) = (0usize, prev_lsn);
    while pos < data.len() {
        match parse_record(&data[pos..], last_lsn) {
            Ok((lsn, payload)) => {
                out.records.push((lsn, pos + HEADER..pos + HEADER + payload.len()));
                last_lsn = lsn;
                pos += HEADER + payload.len();
                out.end = pos;
            }
            // Scan on to the next intact record: damage in the middle of a file (a bad
            // sector, a flipped bit) must not take every later record with it.
            Err(why) => match next_intact(data, pos + 1, last_lsn) {
                Some(next) => {
                    out.skipped.push((pos, next - pos, why));
                    pos = next;
                }
                None => {
                    out.tail_damage = Some(why);
                    break;
                }
            },
        }
    }
    out
}

/// The offset of the first intact record at or after `from` whose LSN follows `prev_lsn`.
/// Each candidate (a magic number) costs a CRC over its claimed length; the search gives up
/// after hashing four times the file, so planted candidates cannot make replay quadratic.
fn next_intact(data: &[u8], from: usize, prev_lsn: u64) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut budget = data.len().saturating_mul(4);
    let mut at = from;
    while at + HEADER <= data.len() {
        let found = data[at..].windows(4).position(|w| w == magic)?;
        at += found;
        if at + HEADER > data.len() {
            return None;
        }
        let claimed = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        budget = budget.checked_sub(claimed.min(data.len() - at))?;
        if parse_record(&data[at..], prev_lsn).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Parses one record at the start of `buf`: `(lsn, payload)` or why it is damaged.
fn parse_record(buf: &[u8], prev_lsn: u64) -> Result<(u64, &[u8]), String> {
    if buf.len() < HEADER {
        return Err(format!("torn header: {} bytes left", buf.len()));
    }
    let magic = u32::from_le_bytes(buf[0..4].try_into().unwrap());
    if magic != MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
    if len > MAX_RECORD_BYTES {
        return Err(format!("bad length {len}"));
    }
    if buf.len() < HEADER + len {
        return Err(format!("torn record: needs {} bytes, {} left", HEADER + len, buf.len()));
    }
    let lsn = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let stored = u32::from_le_bytes(buf[16..20].try_into().unwrap());
    let payload = &buf[HEADER..HEADER + len];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&buf[4..16]);
    crc.update(payload);
    if crc.finalize() != stored {
        return Err(format!("bad CRC in record {lsn}"));
    }
    if lsn <= prev_lsn {
        return Err(format!("LSN {lsn} does not follow {prev_lsn}"));
    }
    Ok((lsn, payload))
}

#[cfg(test)]
mod tests;
