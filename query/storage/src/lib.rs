//! Storage below the query engine: the catalog (SQLite or PostgreSQL), the in-memory head
//! that makes acknowledged data queryable at once, Parquet segments, and the flusher that
//! moves rows from the one to the other. No DataFusion here: the engine crate reads what this
//! crate writes.

pub mod catalog;
pub mod error;
pub mod flush;
pub mod head;
pub mod segment;

use std::collections::HashSet;

pub use catalog::{Catalog, SegmentMeta};
pub use error::StorageError;
pub use flush::{FlushStats, Flusher};
pub use head::{Head, HeadConfig, HeadSnapshot};
pub use segment::SegmentStore;

/// Removes this node's segment files that have no catalog row (a crash between the Parquet
/// write and the catalog commit) and its leftover temporary files. Run at start-up, before the
/// first flush. Files of other nodes sharing the store are never touched: they may be written
/// and not yet committed.
pub async fn remove_orphans(catalog: &Catalog, store: &SegmentStore, node: &str) -> Result<usize, StorageError> {
    let known: HashSet<String> = catalog.all_segment_paths().await?.into_iter().collect();
    let mine = format!("{node}-");
    let mut removed = 0;
    for path in store.list()? {
        let name = path.rsplit('/').next().unwrap_or(&path);
        if !name.starts_with(&mine) {
            continue;
        }
        let orphan = path.ends_with(".tmp") || (path.ends_with(".parquet") && !known.contains(&path));
        if orphan {
            tracing::info!(%path, "removing segment file without a catalog row (left by a crash)");
            store.delete(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}
