//! A bounded local disk cache of immutable objects read from object storage: segments'
//! trace-ID indexes and full-text index bundles whole, and the Parquet data that point reads
//! touch in aligned chunks. Shared by every reader of a node (trace lookup and log search
//! alike), bounded by `cache.max_bytes`, least recently used first out.
//!
//! Objects never change once written (segments are immutable, names are never reused), so an
//! entry is never stale. An entry is written to a temporary name and renamed, so a crash
//! leaves whole entries or temporary files (removed at start). Evicting an entry unlinks it;
//! a reader that opened or mapped it keeps reading it (POSIX semantics). Entries found at
//! start are kept: a restarted querier starts warm.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::fs::File;

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
    /// One gate per object being fetched: readers that miss the same object at once wait for
    /// the first one's download instead of each downloading it (a cold querier's first
    /// queries all want the same indexes).
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
            fetching: Mutex::default(),
            hits: registry.counter(
                "tracelight_disk_cache_hits_total",
                "Index files and Parquet chunks read from the local disk cache.",
            ),
            misses: registry.counter(
                "tracelight_disk_cache_misses_total",
                "Index files and Parquet chunks fetched from object storage into the cache.",
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

    /// The local copy of object `key`, opened; on a miss `fetch` writes the object into the
    /// path it is given first. Opening happens under the cache's lock, so an eviction can
    /// never remove the file between its lookup and its opening (an open file outlives its
    /// name).
    pub async fn get_or_fetch<F, Fut>(&self, key: &str, fetch: F) -> Result<File, StorageError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<(), StorageError>>,
    {
        let name = file_name(key);
        let path = self.dir.join(&name);
        if let Some(f) = self.lookup(&name, &path) {
            return Ok(f);
        }
        let held = self.fetching.lock().entry(name.clone()).or_default().clone();
        let gate = Gate { cache: self, name: &name, gate: Some(held) };
        let _fetching = gate.gate.as_ref().expect("held until dropped").lock().await;
        // Another reader may have fetched it while this one waited.
        match self.lookup(&name, &path) {
            Some(f) => Ok(f),
            None => self.fetch_into(key, &name, &path, fetch).await,
        }
    }

    /// The cached copy of `name`, opened, as a hit; `None` when it is not (or no longer) there.
    fn lookup(&self, name: &str, path: &Path) -> Option<File> {
        let mut s = self.state.lock();
        s.tick += 1;
        let tick = s.tick;
        let e = s.entries.get_mut(name)?;
        match File::open(path) {
            Ok(f) => {
                e.used = tick;
                self.hits.inc();
                Some(f)
            }
            // Removed by other hands: forget it and fetch again.
            Err(_) => {
                let bytes = e.bytes;
                s.entries.remove(name);
                s.total -= bytes;
                None
            }
        }
    }

    /// Fetches `key` into the cache as `name` (at `path`) and opens it.
    async fn fetch_into<F, Fut>(&self, key: &str, name: &str, path: &Path, fetch: F) -> Result<File, StorageError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<(), StorageError>>,
    {
        let fail = |e: std::io::Error| StorageError::SegmentRead(format!("cache {key} in {}: {e}", self.dir.display()));
        self.misses.inc();
        let tmp = self.dir.join(format!("{name}.{:08x}.tmp", rand::random::<u32>()));
        if let Err(e) = fetch(tmp.clone()).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let file = {
            let mut s = self.state.lock();
            let installed = std::fs::metadata(&tmp)
                .and_then(|m| std::fs::rename(&tmp, path).map(|()| m.len()))
                .and_then(|bytes| File::open(path).map(|f| (f, bytes)));
            let (f, bytes) = match installed {
                Ok(v) => v,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(fail(e));
                }
            };
            s.tick += 1;
            let used = s.tick;
            // Two readers may have fetched the same object at once: the last copy counts.
            if let Some(old) = s.entries.insert(name.to_string(), Entry { bytes, used }) {
                s.total -= old.bytes;
            }
            s.total += bytes;
            f
        };
        self.evict(Some(name));
        Ok(file)
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

/// A reader's hold on the fetch gate of one object; the last one out removes the gate, also
/// when its query is cancelled mid-fetch.
struct Gate<'a> {
    cache: &'a DiskCache,
    name: &'a str,
    gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut fetching = self.cache.fetching.lock();
        // Let go of this reader's hold under the map's lock, so that of two readers leaving
        // at once the second always sees the first one gone.
        drop(self.gate.take());
        if fetching.get(self.name).is_some_and(|g| Arc::strong_count(g) == 1) {
            fetching.remove(self.name);
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn readers_missing_one_object_at_once_fetch_it_once() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::default();
        let cache = Arc::new(DiskCache::open(dir.path(), 1 << 20, &r).unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), fetches.clone());
                tokio::spawn(async move {
                    let fetch = |p: PathBuf| async move {
                        fetches.fetch_add(1, SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        std::fs::write(p, b"abc").unwrap();
                        Ok(())
                    };
                    cache.get_or_fetch("t/a/1.idx", fetch).await.unwrap().metadata().unwrap().len()
                })
            })
            .collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap(), 3);
        }
        assert_eq!(fetches.load(SeqCst), 1, "one download for eight readers");
        assert_eq!(series(&r, "tracelight_disk_cache_misses_total"), 1);
        assert_eq!(series(&r, "tracelight_disk_cache_hits_total"), 7);
        assert!(cache.fetching.lock().is_empty(), "the gate is gone once everyone is served");
        // A failed fetch lets the next reader try again.
        let failed = cache.get_or_fetch("t/b/1.idx", |_| async { Err(StorageError::Unreachable("down".into())) }).await;
        assert!(matches!(failed, Err(StorageError::Unreachable(_))));
        let again = cache.get_or_fetch("t/b/1.idx", |p: PathBuf| async move {
            std::fs::write(p, b"x").unwrap();
            Ok(())
        });
        assert_eq!(again.await.unwrap().metadata().unwrap().len(), 1);
        assert!(cache.fetching.lock().is_empty());
    }

    #[tokio::test]
    async fn fetches_once_evicts_least_recently_used_and_survives_a_restart() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::default();
        let cache = DiskCache::open(dir.path(), 250, &r).unwrap();
        let write = |n: usize| {
            move |p: PathBuf| async move {
                std::fs::write(p, vec![b'x'; n]).unwrap();
                Ok(())
            }
        };
        let get = |key: &'static str, n: usize| {
            let cache = &cache;
            async move {
                let mut f = cache.get_or_fetch(key, write(n)).await.unwrap();
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                v.len()
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
        assert_eq!(get("t/b/1.tid", 1).await, 1, "the evicted entry is fetched again");
        // An entry larger than the whole cache is still served, and stays readable through
        // the open file after the next miss evicts it.
        let mut big = cache.get_or_fetch("t/big", write(1000)).await.unwrap();
        assert_eq!(cache.bytes(), 1000);
        get("t/d", 10).await;
        let mut v = Vec::new();
        big.read_to_end(&mut v).unwrap();
        assert_eq!(v.len(), 1000);
        // A file removed behind the cache's back is fetched again, not reported missing.
        std::fs::remove_file(dir.path().join(file_name("t/d"))).unwrap();
        assert_eq!(get("t/d", 7).await, 7);
        // A failed fetch caches nothing and leaves no temporary file.
        let e = cache.get_or_fetch("t/err", |_| async { Err(StorageError::SegmentRead("gone".into())) }).await;
        assert!(e.is_err());
        assert_eq!(get("t/e", 100).await, 100);
        drop(cache);
        std::fs::write(dir.path().join("half.tmp"), b"x").unwrap();
        let again = DiskCache::open(dir.path(), 2000, &Registry::default()).unwrap();
        assert_eq!(again.bytes(), 107, "entries survive a restart; temporary files do not");
        assert!(!dir.path().join("half.tmp").exists());
        again.remove("t/e");
        assert_eq!(again.bytes(), 7);
    }
}
