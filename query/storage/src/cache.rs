//! A bounded cache of decoded rows of segments, for the reads that come back: the hits of a
//! search that a dashboard refreshes, the page a user returns to. A hit costs decoding the
//! pages that hold it in every column (zstd, 1,024 rows each); once decoded, the row itself
//! is a few hundred bytes, so the cache keeps rows, not pages: a page of logs is about 1 MB
//! decoded, and a page cache that held one 100-hit search would need 100 MB. Least recently
//! used rows go first once `max_bytes` is reached. Footers (with page indexes) are cached
//! beside it, by count, and counted here too.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tracelight_model::telemetry::{Counter, Gauge, Registry};

pub struct RowCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    pub(crate) footer_hits: Arc<Counter>,
    pub(crate) footer_misses: Arc<Counter>,
    bytes: Arc<Gauge>,
}

#[derive(Default)]
struct Inner {
    rows: HashMap<(Arc<str>, u64), (RecordBatch, usize, u64)>,
    bytes: usize,
    tick: u64,
}

impl RowCache {
    pub fn new(max_bytes: usize, registry: &Registry) -> RowCache {
        RowCache {
            max_bytes,
            inner: Mutex::default(),
            hits: registry.counter("tracelight_row_cache_hits_total", "Segment rows read from the cache."),
            misses: registry.counter("tracelight_row_cache_misses_total", "Segment rows decoded from Parquet."),
            footer_hits: registry
                .counter("tracelight_footer_cache_hits_total", "Segment footers (with page indexes) found parsed."),
            footer_misses: registry.counter("tracelight_footer_cache_misses_total", "Segment footers read and parsed."),
            bytes: registry.gauge("tracelight_row_cache_bytes", "Bytes of decoded segment rows held by the cache."),
        }
    }

    /// The cached row (a one-row batch), counting a hit or a miss.
    pub fn get(&self, path: &str, row: u64) -> Option<RecordBatch> {
        if self.max_bytes == 0 {
            return None;
        }
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let found = inner.rows.get_mut(&(Arc::from(path), row)).map(|(b, _, used)| {
            *used = tick;
            b.clone()
        });
        drop(inner);
        if found.is_some() {
            self.hits.inc()
        } else {
            self.misses.inc()
        }
        found
    }

    /// Keeps a decoded row (a one-row batch that owns its buffers), evicting the least
    /// recently used rows past the budget.
    pub fn put(&self, path: &Arc<str>, row: u64, batch: RecordBatch) {
        let size = batch.get_array_memory_size();
        if self.max_bytes == 0 || size > self.max_bytes / 64 {
            return;
        }
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, old, _)) = inner.rows.insert((path.clone(), row), (batch, size, tick)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        if inner.bytes > self.max_bytes {
            // Evict the oldest eighth at once: one scan per many inserts, not one per insert.
            let mut by_age: Vec<(u64, (Arc<str>, u64))> =
                inner.rows.iter().map(|(k, (_, _, used))| (*used, k.clone())).collect();
            by_age.sort_unstable_by_key(|(used, _)| *used);
            let target = self.max_bytes - self.max_bytes / 8;
            for (_, k) in by_age {
                if inner.bytes <= target {
                    break;
                }
                if let Some((_, s, _)) = inner.rows.remove(&k) {
                    inner.bytes -= s;
                }
            }
        }
        self.bytes.set(inner.bytes as i64);
    }

    /// Drops every row of a removed segment.
    pub fn forget(&self, path: &str) {
        let mut inner = self.inner.lock();
        let before = inner.rows.len();
        let mut freed = 0;
        inner.rows.retain(|(p, _), (_, s, _)| {
            let keep = &**p != path;
            if !keep {
                freed += *s;
            }
            keep
        });
        if inner.rows.len() != before {
            inner.bytes -= freed;
            self.bytes.set(inner.bytes as i64);
        }
    }
}
