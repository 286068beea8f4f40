//! A bounded local disk cache of immutable objects read from object storage: segments'
//! trace-ID indexes and full-text index bundles. Shared by every reader of a node (trace
//! lookup and log search alike), bounded by `cache.max_bytes`, least recently used first out.
//!
//! Objects never change once written (segments are immutable, names are never reused), so an
//! entry is never stale. An entry is written to a temporary name and renamed, so a crash
//! leaves whole entries or temporary files (removed at start). Evicting an entry unlinks it;
//! a reader that opened or mapped it keeps reading it (POSIX semantics). Entries found at
//! start are kept: a restarted querier starts warm.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tracelight_model::telemetry::{Counter, Gauge, Registry};

use crate::error::StorageError;

struct Entry {
    bytes: u64,
    used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    total: u64,
    tick: u64,
}

pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    evictions: Arc<Counter>,
    size: Arc<Gauge>,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiskCache({}, {} bytes max)", self.dir.display(), self.max_bytes)
    }
}

impl DiskCache {
    /// Opens (creating) the cache directory, keeping the entries already there.
    pub fn open(dir: &Path, max_bytes: u64, registry: &Registry) -> Result<DiskCache, StorageError> {
        let fail = |e: std::io::Error| StorageError::Config(format!("cache directory {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            found.push((modified.map_or(0, |d| d.as_nanos()), name, meta.len()));
        }
        // The oldest files are the least recently used.
        found.sort();
        let cache = DiskCache {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::default(),
            hits: registry.counter("tracelight_disk_cache_hits_total", "Index files read from the local disk cache."),
            misses: registry.counter(
                "tracelight_disk_cache_misses_total",
                "Index files fetched from object storage into the cache.",
            ),
            evictions: registry.counter(
                "tracelight_disk_cache_evictions_total",
                "Cache entries removed to stay within cache.max_bytes.",
            ),
            size: registry.gauge("tracelight_disk_cache_bytes", "Bytes held by the local disk cache."),
        };
        {
            let mut s = cache.state.lock();
            for (_, name, bytes) in found {
                s.tick += 1;
                let used = s.tick;
                s.total += bytes;
                s.entries.insert(name, Entry { bytes, used });
            }
        }
        cache.evict(None);
        Ok(cache)
    }

    /// The local file holding object `key`, fetched with `fetch` on a miss.
    pub async fn get_or_fetch<F>(&self, key: &str, fetch: F) -> Result<PathBuf, StorageError>
    where
        F: std::future::Future<Output = Result<Bytes, StorageError>>,
    {
        let name = file_name(key);
        let path = self.dir.join(&name);
        {
            let mut s = self.state.lock();
            s.tick += 1;
            let tick = s.tick;
            if let Some(e) = s.entries.get_mut(&name) {
                e.used = tick;
                self.hits.inc();
                return Ok(path);
            }
        }
        self.misses.inc();
        let bytes = fetch.await?;
        let tmp = self.dir.join(format!("{name}.{:08x}.tmp", rand::random::<u32>()));
        let write = |p: &Path| -> std::io::Result<()> {
            std::fs::write(p, &bytes)?;
            std::fs::rename(p, &path)
        };
        if let Err(e) = write(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StorageError::SegmentRead(format!("cache {key} in {}: {e}", self.dir.display())));
        }
        {
            let mut s = self.state.lock();
            s.tick += 1;
            let used = s.tick;
            // Two readers may have fetched the same object at once: count it once.
            if s.entries.insert(name.clone(), Entry { bytes: bytes.len() as u64, used }).is_none() {
                s.total += bytes.len() as u64;
            }
        }
        self.evict(Some(&name));
        Ok(path)
    }

    /// Drops the entry of `key` (its object was deleted).
    pub fn remove(&self, key: &str) {
        let name = file_name(key);
        let mut s = self.state.lock();
        if let Some(e) = s.entries.remove(&name) {
            s.total -= e.bytes;
            let _ = std::fs::remove_file(self.dir.join(&name));
        }
        self.size.set(s.total as i64);
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.state.lock().total
    }

    /// Removes least recently used entries until the cache fits, never `keep` (the entry just
    /// fetched for a reader, even when it alone is larger than the cache).
    fn evict(&self, keep: Option<&str>) {
        let mut s = self.state.lock();
        while s.total > self.max_bytes {
            let victim = s
                .entries
                .iter()
                .filter(|(n, _)| Some(n.as_str()) != keep)
                .min_by_key(|(_, e)| e.used)
                .map(|(n, _)| n.clone());
            let Some(victim) = victim else { break };
            let e = s.entries.remove(&victim).expect("just found");
            s.total -= e.bytes;
            let _ = std::fs::remove_file(self.dir.join(&victim));
            self.evictions.inc();
        }
        self.size.set(s.total as i64);
    }
}

/// A flat file name for an object key: a hash of the whole key (keys differ in their
/// directories) and its last component, readable in a listing.
fn file_name(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let last: String = key
        .rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(100)
        .collect();
    format!("{h:016x}-{}", last.trim_end_matches(".tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(r: &Registry, name: &str) -> u64 {
        r.render().lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
    }

    #[tokio::test]
    async fn fetches_once_evicts_least_recently_used_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::default();
        let cache = DiskCache::open(dir.path(), 250, &r).unwrap();
        let get = |key: &'static str, n: usize| {
            let cache = &cache;
            async move {
                let p = cache.get_or_fetch(key, async move { Ok(Bytes::from(vec![b'x'; n])) }).await.unwrap();
                std::fs::read(p).unwrap().len()
            }
        };
        assert_eq!(get("t/a/1.tid", 100).await, 100);
        assert_eq!(get("t/a/1.tid", 999).await, 100, "a hit does not fetch");
        assert_eq!(get("t/b/1.tid", 100).await, 100, "same name in another directory is another entry");
        assert_eq!(
            (series(&r, "tracelight_disk_cache_hits_total"), series(&r, "tracelight_disk_cache_misses_total")),
            (1, 2)
        );
        get("t/a/1.tid", 0).await; // a is now more recently used than b
        get("t/c/1.tid", 100).await; // 300 > 250: b goes
        assert_eq!(cache.bytes(), 200);
        assert_eq!(series(&r, "tracelight_disk_cache_evictions_total"), 1);
        let fetched = std::sync::atomic::AtomicBool::new(false);
        cache
            .get_or_fetch("t/b/1.tid", async {
                fetched.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(Bytes::from_static(b"b"))
            })
            .await
            .unwrap();
        assert!(fetched.load(std::sync::atomic::Ordering::Relaxed), "the evicted entry is fetched again");
        // One entry larger than the whole cache is still served (and the rest evicted).
        assert_eq!(get("t/big", 1000).await, 1000);
        assert_eq!(cache.bytes(), 1000);
        // A failed fetch caches nothing.
        let e = cache.get_or_fetch("t/err", async { Err(StorageError::SegmentRead("gone".into())) }).await;
        assert!(e.is_err());
        drop(cache);
        std::fs::write(dir.path().join("half.tmp"), b"x").unwrap();
        let again = DiskCache::open(dir.path(), 2000, &Registry::default()).unwrap();
        assert_eq!(again.bytes(), 1000, "entries survive a restart; temporary files do not");
        assert!(!dir.path().join("half.tmp").exists());
        again.remove("t/big");
        assert_eq!(again.bytes(), 0);
    }
}
