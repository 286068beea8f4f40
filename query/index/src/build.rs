//! Building a segment's full-text index during a flush.

use std::path::Path;

use arrow::record_batch::RecordBatch;
use tantivy::{Index, IndexWriter};
use tracelight_model::Signal;
use tracelight_storage::{IndexBuild, SegmentIndexer};

use crate::schema;

/// Indexing memory for one segment's index; past it tantivy starts another index segment.
const BUILD_MEMORY: usize = 96 << 20;

/// Builds the index of a segment during a flush.
#[derive(Default)]
pub struct SegmentIndexBuilder;

impl SegmentIndexer for SegmentIndexBuilder {
    fn indexes(&self, signal: Signal) -> bool {
        // Full text is for logs; trace-ID lookups of every signal go through the storage
        // crate's trace-ID index (`<id>.tid`).
        signal == Signal::Logs
    }

    fn start(&self, signal: Signal, dir: &Path) -> Result<Box<dyn IndexBuild>, String> {
        let (schema, fields) = schema::schema();
        let index = Index::create_in_dir(dir, schema).map_err(|e| e.to_string())?;
        schema::register_tokenizers(&index);
        let writer = index.writer_with_num_threads(1, BUILD_MEMORY).map_err(|e| e.to_string())?;
        Ok(Box::new(TantivyBuild { writer, fields, signal }))
    }
}

/// A segment's tantivy index being filled slice by slice.
struct TantivyBuild {
    writer: IndexWriter,
    fields: schema::Fields,
    signal: Signal,
}

impl IndexBuild for TantivyBuild {
    fn add(&mut self, rows: &RecordBatch, first_row: u64) -> Result<(), String> {
        schema::add_rows(&self.writer, &self.fields, self.signal, rows, false, |i| first_row + i as u64)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn finish(self: Box<Self>) -> Result<(), String> {
        let TantivyBuild { mut writer, .. } = *self;
        writer.commit().map_err(|e| e.to_string())?;
        writer.wait_merging_threads().map_err(|e| e.to_string())
    }
}
