//! The trace-ID index of a segment (`<id>.tid` beside `<id>.parquet`): from a trace ID to the
//! pages of the segment that may hold its rows, in about 5 bytes per (trace, page) pair, read
//! with three positioned reads and no parsing.
//!
//! Rows of one trace sit together in a segment (rows are sorted by service, then time, and a
//! trace's spans are close in time), so a trace usually costs one entry, not one per row.
//! Each entry is the trace ID's keyed hash (SipHash-1-3, a random key per file, so a client
//! cannot choose IDs that pile into one bucket) split into a bucket and a 16-bit fingerprint,
//! plus a page number (rows `page * PAGE_ROWS ..`). A lookup may name a page that does not hold
//! the trace (1 in 65,536 per entry of the bucket): the reader checks every row it reads.
//!
//! Layout, little-endian:
//!
//! ```text
//! magic "TLT1" | bucket_bits u8 | page_width u8 (2 or 4) | reserved u16 | key0 u64 | key1 u64
//! | entries u32 | rows u32 | bucket_start [u32; 2^bucket_bits + 1]
//! | fingerprints [u16; entries] | pages [u16 or u32; entries] | crc32 of everything before u32
//! ```

use std::fs::File;
use std::hash::Hasher;
use std::os::unix::fs::FileExt;

use arrow::array::{Array, AsArray, ListArray, RecordBatch, StringArray, StructArray};
use siphasher::sip::SipHasher13;
use tracelight_model::Signal;

/// Rows per page of a segment (the Parquet writer's data-page row limit).
pub const PAGE_ROWS: usize = 1024;

const MAGIC: &[u8; 4] = b"TLT1";
const HEADER: usize = 32;
/// Entries per bucket aimed at.
const PER_BUCKET: usize = 4;
/// Buckets are at most 2^24 (a 64 MiB offset table): far beyond any segment.
const MAX_BUCKET_BITS: u32 = 24;

fn hash(key: (u64, u64), trace_id: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(key.0, key.1);
    h.write(trace_id);
    h.finish()
}

fn bucket_of(h: u64, bits: u32) -> usize {
    if bits == 0 { 0 } else { (h >> (64 - bits)) as usize }
}

fn fingerprint(h: u64, bits: u32) -> u16 {
    (h.rotate_left(bits) >> 48) as u16
}

/// Collects the trace IDs of a segment's rows, in file order, and writes the index.
pub struct TraceIndexBuilder {
    key: (u64, u64),
    /// (hash, page), one per row with a trace ID (deduplicated at the end).
    entries: Vec<(u64, u32)>,
    rows: u64,
}

impl TraceIndexBuilder {
    pub fn new() -> TraceIndexBuilder {
        TraceIndexBuilder { key: (rand::random(), rand::random()), entries: Vec::new(), rows: 0 }
    }

    /// A builder with a fixed hash key (tests).
    pub fn with_key(key: (u64, u64)) -> TraceIndexBuilder {
        TraceIndexBuilder { key, entries: Vec::new(), rows: 0 }
    }

    /// Adds the trace ID (lower-case hex) of the row at `row` (file row number).
    pub fn add(&mut self, row: u64, trace_id: &str) {
        let page = (row / PAGE_ROWS as u64) as u32;
        let h = hash(self.key, trace_id.as_bytes());
        // Consecutive rows of a trace: one entry.
        if self.entries.last() != Some(&(h, page)) {
            self.entries.push((h, page));
        }
        self.rows = self.rows.max(row + 1);
    }

    /// Accounts for rows without a trace ID (so `rows` is the segment's row count).
    pub fn set_rows(&mut self, rows: u64) {
        self.rows = self.rows.max(rows);
    }

    /// The index's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entries.sort_unstable();
        self.entries.dedup();
        let n = self.entries.len();
        let bits = (n.div_ceil(PER_BUCKET).max(1)).next_power_of_two().trailing_zeros().min(MAX_BUCKET_BITS);
        let max_page = self.entries.iter().map(|e| e.1).max().unwrap_or(0);
        let page_width: usize = if max_page <= u16::MAX as u32 { 2 } else { 4 };
        let buckets = 1usize << bits;
        let mut out = Vec::with_capacity(HEADER + (buckets + 1) * 4 + n * (2 + page_width) + 4);
        out.extend_from_slice(MAGIC);
        out.push(bits as u8);
        out.push(page_width as u8);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.key.0.to_le_bytes());
        out.extend_from_slice(&self.key.1.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&(self.rows.min(u32::MAX as u64) as u32).to_le_bytes());
        // Entries are sorted by hash, so by bucket: a bucket's entries are a run.
        let mut next = 0usize;
        for b in 0..=buckets {
            while next < n && bucket_of(self.entries[next].0, bits) < b {
                next += 1;
            }
            out.extend_from_slice(&(next as u32).to_le_bytes());
        }
        for (h, _) in &self.entries {
            out.extend_from_slice(&fingerprint(*h, bits).to_le_bytes());
        }
        for (_, p) in &self.entries {
            if page_width == 2 {
                out.extend_from_slice(&(*p as u16).to_le_bytes());
            } else {
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

impl Default for TraceIndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceIndexBuilder {
    /// Adds the trace IDs of `rows`, the segment's rows from file row `first_row` on: spans
    /// and logs by their `trace_id`, metric points by the trace IDs of their exemplars.
    pub fn add_rows(&mut self, signal: Signal, rows: &RecordBatch, first_row: u64) {
        self.set_rows(first_row + rows.num_rows() as u64);
        match signal {
            Signal::Spans | Signal::Logs => {
                if let Some(ids) =
                    rows.column_by_name("trace_id").and_then(|c| c.as_any().downcast_ref::<StringArray>())
                {
                    for i in 0..ids.len() {
                        if ids.is_valid(i) {
                            self.add(first_row + i as u64, ids.value(i));
                        }
                    }
                }
            }
            Signal::Metrics => {
                let Some(ex) = rows.column_by_name("exemplars").and_then(|c| c.as_any().downcast_ref::<ListArray>())
                else {
                    return;
                };
                let items: &StructArray = ex.values().as_struct();
                let Some(ids) = items.column_by_name("trace_id").and_then(|c| c.as_any().downcast_ref::<StringArray>())
                else {
                    return;
                };
                let offsets = ex.value_offsets();
                for i in 0..ex.len() {
                    if ex.is_null(i) {
                        continue;
                    }
                    for j in offsets[i] as usize..offsets[i + 1] as usize {
                        if ids.is_valid(j) {
                            self.add(first_row + i as u64, ids.value(j));
                        }
                    }
                }
            }
        }
    }
}

/// The trace-ID index file that belongs to a segment file: `…/<id>.parquet` → `…/<id>.tid`.
pub fn path_for(segment_path: &str) -> String {
    format!("{}.tid", segment_path.strip_suffix(".parquet").unwrap_or(segment_path))
}

/// The fixed part of an index file, read once per lookup (or kept by a cache).
#[derive(Debug, Clone, Copy)]
pub struct TraceIndexHeader {
    bits: u32,
    page_width: usize,
    key: (u64, u64),
    entries: usize,
    rows: u64,
}

impl TraceIndexHeader {
    pub fn parse(b: &[u8], file_len: u64) -> Result<TraceIndexHeader, String> {
        if b.len() < HEADER || &b[..4] != MAGIC {
            return Err("not a trace-ID index (bad magic)".into());
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let bits = b[4] as u32;
        let page_width = b[5] as usize;
        if bits > MAX_BUCKET_BITS || !matches!(page_width, 2 | 4) {
            return Err(format!("damaged trace-ID index header (bucket bits {bits}, page width {page_width})"));
        }
        let h = TraceIndexHeader {
            bits,
            page_width,
            key: (u64_at(8), u64_at(16)),
            entries: u32_at(24) as usize,
            rows: u32_at(28) as u64,
        };
        if h.file_len() != file_len {
            return Err(format!("trace-ID index is {file_len} bytes, its header says {}", h.file_len()));
        }
        Ok(h)
    }

    fn buckets_at(&self) -> u64 {
        HEADER as u64
    }

    fn fingerprints_at(&self) -> u64 {
        self.buckets_at() + ((1u64 << self.bits) + 1) * 4
    }

    fn pages_at(&self) -> u64 {
        self.fingerprints_at() + self.entries as u64 * 2
    }

    fn file_len(&self) -> u64 {
        self.pages_at() + self.entries as u64 * self.page_width as u64 + 4
    }

    /// Rows of the segment.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// Reads an index file with positioned reads.
pub struct TraceIndexFile {
    file: File,
    header: TraceIndexHeader,
}

impl TraceIndexFile {
    pub fn open(file: File) -> Result<TraceIndexFile, String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut b = [0u8; HEADER];
        file.read_exact_at(&mut b, 0).map_err(|e| format!("read trace-ID index header: {e}"))?;
        Ok(TraceIndexFile { header: TraceIndexHeader::parse(&b, len)?, file })
    }

    pub fn header(&self) -> &TraceIndexHeader {
        &self.header
    }

    /// The pages (ascending, no repeats) that may hold rows of `trace_id` (lower-case hex).
    pub fn pages(&self, trace_id: &str) -> Result<Vec<u32>, String> {
        let h = &self.header;
        let hv = hash(h.key, trace_id.as_bytes());
        let bucket = bucket_of(hv, h.bits) as u64;
        let mut b = [0u8; 8];
        self.read(&mut b, h.buckets_at() + bucket * 4)?;
        let start = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
        let end = u32::from_le_bytes(b[4..].try_into().expect("4 bytes")) as usize;
        if start > end || end > h.entries {
            return Err(format!("damaged trace-ID index (bucket {bucket}: entries {start}..{end} of {})", h.entries));
        }
        if start == end {
            return Ok(Vec::new());
        }
        let mut fps = vec![0u8; (end - start) * 2];
        self.read(&mut fps, h.fingerprints_at() + start as u64 * 2)?;
        let want = fingerprint(hv, h.bits);
        let hits: Vec<usize> = fps
            .chunks_exact(2)
            .enumerate()
            .filter(|(_, f)| u16::from_le_bytes([f[0], f[1]]) == want)
            .map(|(i, _)| start + i)
            .collect();
        let mut pages = Vec::with_capacity(hits.len());
        for i in hits {
            let mut p = [0u8; 4];
            self.read(&mut p[..h.page_width], h.pages_at() + (i * h.page_width) as u64)?;
            let page = u32::from_le_bytes(p);
            if page as u64 * PAGE_ROWS as u64 >= h.rows.max(1) {
                return Err(format!("damaged trace-ID index (page {page} past {} rows)", h.rows));
            }
            pages.push(page);
        }
        pages.sort_unstable();
        pages.dedup();
        Ok(pages)
    }

    fn read(&self, buf: &mut [u8], at: u64) -> Result<(), String> {
        self.file.read_exact_at(buf, at).map_err(|e| format!("read trace-ID index at {at}: {e}"))
    }
}

/// Checks a whole index (its CRC): used after writing and by tests.
pub fn verify(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < HEADER + 4 {
        return Err("trace-ID index too short".into());
    }
    TraceIndexHeader::parse(&bytes[..HEADER], bytes.len() as u64)?;
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("trace-ID index CRC mismatch".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn id(i: u64) -> String {
        format!("{:016x}{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i)
    }

    fn open(bytes: &[u8]) -> TraceIndexFile {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        TraceIndexFile::open(f).unwrap()
    }

    #[test]
    fn every_trace_finds_its_pages_and_absent_ones_almost_never_match() {
        let mut b = TraceIndexBuilder::new();
        // 100,000 rows, traces of 4 adjacent rows, one trace spread over three pages.
        for row in 0..100_000u64 {
            b.add(row, &id(row / 4));
        }
        b.add(100_000, &id(7));
        b.add(100_001, &id(7));
        b.set_rows(100_002);
        let bytes = b.finish();
        verify(&bytes).unwrap();
        let per_row = bytes.len() as f64 / 100_002.0;
        assert!(per_row < 2.0, "{per_row} bytes per row for traces of 4 rows");
        let ix = open(&bytes);
        assert_eq!(ix.header().rows(), 100_002);
        for t in (0..25_000).step_by(97) {
            let pages = ix.pages(&id(t)).unwrap();
            let first = (t * 4 / PAGE_ROWS as u64) as u32;
            assert!(pages.contains(&first), "trace {t} on page {first}, found {pages:?}");
        }
        assert_eq!(ix.pages(&id(7)).unwrap(), vec![0, 97]);
        let false_hits: usize = (1_000_000..1_100_000).map(|t| ix.pages(&id(t)).unwrap().len()).sum();
        assert!(false_hits < 20, "{false_hits} pages named for 100,000 absent traces");
    }

    #[test]
    fn empty_and_damaged_indexes_are_errors_or_empty_never_panics() {
        let empty = TraceIndexBuilder::new().finish();
        verify(&empty).unwrap();
        assert!(open(&empty).pages(&id(1)).unwrap().is_empty());

        let mut b = TraceIndexBuilder::with_key((1, 2));
        for row in 0..5000u64 {
            b.add(row, &id(row));
        }
        let good = b.finish();
        // Every single-byte change of the body is caught by the CRC; a reader given a
        // damaged file without checking it returns errors or pages within bounds.
        for at in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            assert!(verify(&bad).is_err(), "damage at {at} not caught");
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(&bad).unwrap();
            if let Ok(ix) = TraceIndexFile::open(f) {
                for t in 0..50 {
                    if let Ok(pages) = ix.pages(&id(t)) {
                        assert!(pages.iter().all(|p| (*p as u64) * (PAGE_ROWS as u64) < 5000));
                    }
                }
            }
        }
        // Truncated.
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&good[..good.len() - 10]).unwrap();
        assert!(TraceIndexFile::open(f).is_err());
    }
}
