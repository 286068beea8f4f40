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

pub mod head;
pub mod histogram;
pub mod schema;
pub mod search;

use std::path::Path;

use arrow::record_batch::RecordBatch;
use tantivy::Index;
use tracelight_model::Signal;
use tracelight_storage::SegmentIndexer;

pub use histogram::TimeBuckets;
pub use search::{IndexSearch, LogSearch, LogSyntax};

/// Indexing memory for one segment's index; past it tantivy starts another index segment.
const BUILD_MEMORY: usize = 96 << 20;

/// Builds the index of a segment during a flush.
#[derive(Default)]
pub struct SegmentIndexBuilder;

impl SegmentIndexer for SegmentIndexBuilder {
    fn indexes(&self, _signal: Signal) -> bool {
        // Spans and metric exemplars for trace-ID lookups, logs for full text too.
        true
    }

    fn build(&self, signal: Signal, rows: &RecordBatch, dir: &Path) -> Result<(), String> {
        let (schema, fields) = schema::schema();
        let index = Index::create_in_dir(dir, schema).map_err(|e| e.to_string())?;
        schema::register_tokenizers(&index);
        let mut writer = index.writer_with_num_threads(1, BUILD_MEMORY).map_err(|e| e.to_string())?;
        schema::add_rows(&writer, &fields, signal, rows, |i| i as u64).map_err(|e| e.to_string())?;
        writer.commit().map_err(|e| e.to_string())?;
        writer.wait_merging_threads().map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The caller's query does not parse or names an unknown field.
    #[error("{0}")]
    Invalid(String),
    #[error("index: {0}")]
    Internal(String),
}

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        IndexError::Internal(e.to_string())
    }
}

impl From<tracelight_storage::StorageError> for IndexError {
    fn from(e: tracelight_storage::StorageError) -> Self {
        IndexError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests;
