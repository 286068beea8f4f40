//! Storage below the query engine: the catalog (SQLite or PostgreSQL), the in-memory head
//! that makes acknowledged data queryable at once, Parquet segments, and the flusher that
//! moves rows from the one to the other. No DataFusion here: the engine crate reads what this
//! crate writes.

pub mod cache;
pub mod catalog;
pub mod compact;
pub mod error;
pub mod flush;
pub mod head;
pub mod headbatch;
pub mod objstore;
pub mod order;
pub mod segment;
pub mod traceidx;

use std::collections::HashSet;

pub use catalog::{Catalog, NodeInfo, SegmentMeta};
pub use compact::{CompactionConfig, CompactionStats, Compactor};
pub use error::StorageError;
pub use flush::{FlushStats, Flusher, IndexBuild, SegmentIndexer};
pub use head::{Head, HeadConfig, HeadPart, HeadParts, HeadSnapshot};
pub use headbatch::HeadBatch;
pub use segment::{SegmentStore, index_dir};

/// What one retention pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionStats {
    pub segments: usize,
    pub bytes: u64,
    /// Paths of the removed segments (their index readers can be forgotten).
    pub paths: Vec<String>,
}

/// Deletes every partition that ended before `cutoff_ns`: catalog rows first (new queries
/// stop seeing them), then, once `grace` has passed (longer than the longest query, so a
/// query that listed the segments before the rows went can still read them), each segment's
/// Parquet file and index directory and the emptied partition directories. A crash during the
/// grace leaves files without catalog rows, which the start-up sweep removes.
pub async fn apply_retention(
    catalog: &Catalog,
    store: &SegmentStore,
    cutoff_ns: i64,
    grace: std::time::Duration,
) -> Result<RetentionStats, StorageError> {
    // A partition goes only when all of its hour is older than the cutoff.
    let expired = catalog.expire_before(tracelight_model::time::hour_of(cutoff_ns)).await?;
    if !expired.is_empty() && !grace.is_zero() {
        tokio::time::sleep(grace).await;
    }
    let mut stats = RetentionStats::default();
    for seg in &expired {
        store.delete_segment(&seg.path)?;
        stats.segments += 1;
        stats.bytes += seg.bytes + seg.index_bytes;
        stats.paths.push(seg.path.clone());
    }
    let dirs: HashSet<String> =
        expired.iter().filter_map(|s| s.path.rsplit_once('/').map(|(d, _)| d.to_string())).collect();
    for d in dirs {
        store.remove_empty_dirs(&d);
    }
    Ok(stats)
}

/// The node a segment file belongs to: names are `<node>-<flush id>-<salt>` (a flush) or
/// `<node>-c<id>-<salt>` (a merge), with `.parquet`, `.tid` or `.idx` and maybe `.tmp` after.
/// Read from the right, so a node name with `-` in it (`a-b`) is not taken for a shorter one
/// (`a`). `None` for a name not made so.
pub fn node_of(name: &str) -> Option<&str> {
    let name = name.strip_suffix(".tmp").unwrap_or(name);
    let stem = [".parquet", ".tid", ".idx"].iter().find_map(|ext| name.strip_suffix(ext))?;
    let (rest, salt) = stem.rsplit_once('-')?;
    let (node, id) = rest.rsplit_once('-')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let id_ok = hex(id, 20) || id.strip_prefix('c').is_some_and(|i| hex(i, 20));
    (hex(salt, 8) && id_ok && !node.is_empty()).then_some(node)
}

/// Drops the segments whose rows are still in the head ([`HeadSnapshot::overlap_from_lsn`]):
/// a reader that reads both must count those rows once.
pub fn drop_head_overlap(segments: &mut Vec<SegmentMeta>, node: &str, overlap_from_lsn: u64) {
    segments.retain(|s| !(s.node == node && s.flush_lsn >= overlap_from_lsn));
}

/// Removes this node's segment files that have no catalog row (a crash between the Parquet
/// write and the catalog commit) and its leftover temporary files. Run at start-up, before the
/// first flush. Files of other nodes sharing the store are never touched: they may be written
/// and not yet committed.
pub async fn remove_orphans(catalog: &Catalog, store: &SegmentStore, node: &str) -> Result<usize, StorageError> {
    let known: HashSet<String> = catalog.all_segment_paths().await?.into_iter().collect();
    let mut removed = 0;
    let mut dirs_done = HashSet::new();
    for path in store.list()? {
        // A file inside an index directory belongs to that directory's segment.
        let (entry, is_dir) = match path.split('/').position(|c| c.ends_with(".idx") || c.ends_with(".idx.tmp")) {
            Some(i) => (path.split('/').take(i + 1).collect::<Vec<_>>().join("/"), true),
            None => (path.clone(), false),
        };
        let name = entry.rsplit('/').next().unwrap_or(&entry);
        if node_of(name) != Some(node) || (is_dir && !dirs_done.insert(entry.clone())) {
            continue;
        }
        let orphan = if is_dir {
            entry.ends_with(".tmp") || !known.contains(&format!("{}.parquet", entry.trim_end_matches(".idx")))
        } else if let Some(stem) = entry.strip_suffix(".tid") {
            !known.contains(&format!("{stem}.parquet"))
        } else {
            entry.ends_with(".tmp") || (entry.ends_with(".parquet") && !known.contains(&entry))
        };
        if orphan {
            tracing::info!(path = %entry, "removing segment data without a catalog row (left by a crash or retention)");
            if is_dir {
                store.delete_dir(&entry)?
            } else {
                store.delete(&entry)?
            }
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_belongs_to_the_node_named_before_its_ids() {
        use super::node_of;
        let (id, salt) = ("0123456789abcdef0001", "deadbeef");
        assert_eq!(node_of(&format!("a-b-{id}-{salt}.parquet")), Some("a-b"));
        assert_eq!(node_of(&format!("a-{id}-{salt}.tid")), Some("a"));
        assert_eq!(node_of(&format!("a-c{id}-{salt}.idx.tmp")), Some("a"));
        assert_eq!(node_of(&format!("a-b-c{id}-{salt}.parquet.tmp")), Some("a-b"));
        assert_eq!(node_of("a-b.parquet"), None);
        assert_eq!(node_of(&format!("-{id}-{salt}.parquet")), None);
        assert_eq!(node_of(&format!("a-{id}-{salt}.csv")), None);
    }
}
