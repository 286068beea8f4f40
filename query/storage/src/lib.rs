//! Storage below the query engine: the catalog (SQLite or PostgreSQL), the in-memory head
//! that makes acknowledged data queryable at once, Parquet segments, and the flusher that
//! moves rows from the one to the other. No DataFusion here: the engine crate reads what this
//! crate writes.

pub mod bundle;
pub mod cache;
pub mod catalog;
pub mod compact;
pub mod diskcache;
pub mod error;
pub mod flush;
pub mod head;
pub mod headbatch;
pub mod janitor;
pub mod objstore;
pub mod order;
mod remote;
pub mod segment;
pub mod store;
pub mod traceidx;

pub use catalog::{Catalog, Leadership, NodeInfo, SegmentMeta, SegmentState};
pub use compact::{CompactionConfig, CompactionStats, Compactor};
pub use error::StorageError;
pub use flush::{FlushStats, Flusher, IndexBuild, SegmentIndexer};
pub use head::{Head, HeadConfig, HeadPart, HeadParts, HeadSnapshot};
pub use headbatch::HeadBatch;
pub use janitor::{Janitor, JanitorStats};
pub use remote::MULTIPART_BYTES;
pub use store::{IndexFiles, SegmentStore, index_dir};

/// What one retention pass retired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionStats {
    pub segments: usize,
    pub bytes: u64,
}

/// Retires every published segment of a partition that ended before `cutoff_ns`: new queries
/// stop seeing them at once, and the [`Janitor`] deletes their data after the grace period
/// (so a query that listed them just before still reads them).
pub async fn apply_retention(catalog: &Catalog, cutoff_ns: i64) -> Result<RetentionStats, StorageError> {
    // A partition goes only when all of its hour is older than the cutoff.
    let expired = catalog.expire_before(tracelight_model::time::hour_of(cutoff_ns)).await?;
    Ok(RetentionStats { segments: expired.len(), bytes: expired.iter().map(|s| s.bytes + s.index_bytes).sum() })
}

/// Drops the segments whose rows are also in a head that was read
/// ([`HeadSnapshot::overlap_from_lsn`]): this node's, and every other node's that answered
/// (`(node, overlap_from_lsn)` pairs, see [`tracelight_model::peers`]). A reader that reads
/// both must count those rows once. Segments of a node that did not answer all stay.
pub fn drop_head_overlap<'a>(segments: &mut Vec<SegmentMeta>, heads: impl IntoIterator<Item = (&'a str, u64)>) {
    let heads: Vec<(&str, u64)> = heads.into_iter().collect();
    segments.retain(|s| !heads.iter().any(|(node, from)| s.node == *node && s.flush_lsn >= *from));
}
