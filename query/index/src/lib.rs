//! The full-text and trace-ID index: the only crate that links tantivy.
//!
//! - Every Parquet segment gets an index directory beside it (`<id>.idx`), built by the
//!   flusher from the same sorted rows ([`SegmentIndexBuilder`]) before the catalog commit,
//!   so the index never holds a row that Parquet does not, and retention removes both.
//! - Log records still in the head are searched through a per-generation in-memory index that
//!   is extended with the batches appended since the last search ([`head::HeadIndex`]).
//! - A hit is a row address: (segment, row number) or (head batch, row). The rows themselves
//!   are read back from Parquet (only the pages that hold them) or sliced from the head.
//!
//! See [`schema`] for what is indexed and how to query it.

#[cfg(feature = "segments")]
pub mod bundle_dir;
#[cfg(feature = "segments")]
pub mod head;
pub mod histogram;
pub mod schema;
#[cfg(feature = "segments")]
pub mod search;
pub mod syntax;
pub mod verify;

#[cfg(feature = "segments")]
mod build;

use tantivy::Index;

#[cfg(feature = "segments")]
pub use build::SegmentIndexBuilder;
pub use histogram::TimeBuckets;
#[cfg(feature = "segments")]
pub use search::{IndexSearch, LogSearch};
pub use syntax::LogSyntax;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The caller's query does not parse or names an unknown field.
    #[error("{0}")]
    Invalid(String),
    #[error("index: {0}")]
    Internal(String),
    /// Object storage did not answer a read of one segment (see
    /// `tracelight_storage::StorageError::Unreachable`): a search leaves that segment out and
    /// says so rather than failing.
    #[error("{0}")]
    Unreachable(String),
}

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        IndexError::Internal(e.to_string())
    }
}

#[cfg(feature = "segments")]
impl From<tracelight_storage::StorageError> for IndexError {
    fn from(e: tracelight_storage::StorageError) -> Self {
        match e {
            tracelight_storage::StorageError::Unreachable(_) => IndexError::Unreachable(e.to_string()),
            e => IndexError::Internal(e.to_string()),
        }
    }
}

#[cfg(all(test, feature = "segments"))]
mod tests;

/// Where the bytes of the full-text indexes under `dirs` go: per component (term dictionary,
/// postings, positions, fast fields, store) and field, summed over all of them, largest
/// first. `bench search` prints it.
pub fn space_usage(dirs: &[std::path::PathBuf]) -> Result<Vec<(String, u64)>, IndexError> {
    let mut sums: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for dir in dirs {
        let index = Index::open_in_dir(dir)?;
        let schema = index.schema();
        let usage = index.reader()?.searcher().space_usage().map_err(|e| IndexError::Internal(e.to_string()))?;
        for seg in usage.segments() {
            for (what, per_field) in [
                ("term dictionary", seg.termdict()),
                ("postings", seg.postings()),
                ("positions", seg.positions()),
                ("fast fields", seg.fast_fields()),
            ] {
                for (field, u) in per_field.fields() {
                    *sums.entry(format!("{what} of {}", schema.get_field_name(*field))).or_default() +=
                        u.total().get_bytes();
                }
            }
            for (field, u) in seg.fieldnorms().fields() {
                *sums.entry(format!("field norms of {}", schema.get_field_name(*field))).or_default() +=
                    u.total().get_bytes();
            }
            *sums.entry("document store".into()).or_default() += seg.store().total().get_bytes();
            *sums.entry("deletes".into()).or_default() += seg.deletes().get_bytes();
        }
    }
    let mut out: Vec<(String, u64)> = sums.into_iter().filter(|(_, b)| *b > 0).collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.1));
    Ok(out)
}
