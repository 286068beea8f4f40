//! A bounded cache of decoded row blocks of segments, for the reads that come back: the hits
//! of a search or the rows of a trace that a user opens again and again. A block is the
//! [`crate::traceidx::PAGE_ROWS`] rows of one data page of every column, so caching it costs
//! what decoding it did. A block is admitted on its second read within a while (the first
//! reads only the rows asked for, as cheaply as without a cache): a one-off scan does not push
//! out what users come back to. Least recently used blocks go first once `max_bytes` is
//! reached. Footers (with page indexes) are cached beside it, by count.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tracelight_model::telemetry::{Counter, Gauge, Registry};

/// Blocks remembered as read once, waiting for a second read to be admitted.
const SEEN: usize = 65_536;

pub struct BlockCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
    pub(crate) hits: Arc<Counter>,
    pub(crate) misses: Arc<Counter>,
    pub(crate) footer_hits: Arc<Counter>,
    pub(crate) footer_misses: Arc<Counter>,
    bytes: Arc<Gauge>,
}

#[derive(Default)]
struct Inner {
    blocks: HashMap<(Arc<str>, u32), (RecordBatch, usize, u64)>,
    seen: HashSet<(Arc<str>, u32)>,
    bytes: usize,
    tick: u64,
}

impl BlockCache {
    pub fn new(max_bytes: usize, registry: &Registry) -> BlockCache {
        BlockCache {
            max_bytes,
            inner: Mutex::default(),
            hits: registry.counter("tracelight_block_cache_hits_total", "Segment row blocks read from the cache."),
            misses: registry
                .counter("tracelight_block_cache_misses_total", "Segment row blocks decoded from Parquet for a read."),
            footer_hits: registry
                .counter("tracelight_footer_cache_hits_total", "Segment footers (with page indexes) found parsed."),
            footer_misses: registry.counter("tracelight_footer_cache_misses_total", "Segment footers read and parsed."),
            bytes: registry.gauge("tracelight_block_cache_bytes", "Bytes of decoded segment blocks held by the cache."),
        }
    }

    /// The cached block, counting a hit or a miss.
    pub fn get(&self, path: &str, block: u32) -> Option<RecordBatch> {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let key: (Arc<str>, u32) = (Arc::from(path), block);
        match inner.blocks.get_mut(&key) {
            Some((b, _, used)) => {
                *used = tick;
                let b = b.clone();
                drop(inner);
                self.hits.inc();
                Some(b)
            }
            None => {
                drop(inner);
                self.misses.inc();
                None
            }
        }
    }

    /// Whether a block read now should be decoded whole and kept: true on its second read
    /// (the first is only remembered).
    pub fn admit(&self, path: &str, block: u32) -> bool {
        if self.max_bytes == 0 {
            return false;
        }
        let mut inner = self.inner.lock();
        let key: (Arc<str>, u32) = (Arc::from(path), block);
        if inner.seen.remove(&key) {
            return true;
        }
        if inner.seen.len() >= SEEN {
            inner.seen.clear();
        }
        inner.seen.insert(key);
        false
    }

    /// Keeps a decoded block, evicting the least recently used ones past the budget.
    pub fn put(&self, path: &str, block: u32, batch: RecordBatch) {
        let size = batch.get_array_memory_size();
        if size > self.max_bytes / 4 {
            return;
        }
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, old, _)) = inner.blocks.insert((Arc::from(path), block), (batch, size, tick)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            let Some(oldest) = inner.blocks.iter().min_by_key(|(_, (_, _, used))| *used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some((_, s, _)) = inner.blocks.remove(&oldest) {
                inner.bytes -= s;
            }
        }
        self.bytes.set(inner.bytes as i64);
    }

    /// Drops every block of a removed segment.
    pub fn forget(&self, path: &str) {
        let mut inner = self.inner.lock();
        let gone: Vec<_> = inner.blocks.keys().filter(|(p, _)| &**p == path).cloned().collect();
        for k in gone {
            if let Some((_, s, _)) = inner.blocks.remove(&k) {
                inner.bytes -= s;
            }
        }
        inner.seen.retain(|(p, _)| &**p != path);
        self.bytes.set(inner.bytes as i64);
    }
}
