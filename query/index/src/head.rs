//! Full-text search over log records still in the head.
//!
//! One in-memory tantivy index per (tenant, head generation). A search first indexes the
//! batches appended since the previous search (the head only appends to a live generation),
//! so ingest pays nothing for it and a record is searchable as soon as it is queryable by SQL.
//! Generations that the flusher has committed are dropped on the next search.

use std::collections::HashMap;

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tantivy::collector::TopDocs;
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher};
use tracelight_model::{Signal, Tenant};
use tracelight_storage::{HeadBatch, HeadParts};

use crate::IndexError;
use crate::histogram::TimeBuckets;
use crate::schema::{self, Fields};
use crate::verify::{self, LogQuery, Rows, Target};

/// Indexing memory of one generation's writer (tantivy's minimum is 15 MB).
const HEAD_MEMORY: usize = 32 << 20;

struct GenIndex {
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    /// Every batch indexed so far; a document's `row` is `batch << 32 | row`.
    batches: Vec<HeadBatch>,
    /// Per hour: how many of the partition's batches are indexed.
    done: HashMap<i64, usize>,
}

impl GenIndex {
    fn new() -> Result<GenIndex, IndexError> {
        let (schema, fields) = schema::schema();
        let index = Index::create_in_ram(schema);
        schema::register_tokenizers(&index);
        let writer = index.writer_with_num_threads(1, HEAD_MEMORY)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(GenIndex { writer, reader, fields, batches: Vec::new(), done: HashMap::new() })
    }

    /// Indexes the batches of `hour` past those already done; returns whether any were added.
    fn extend(&mut self, hour: i64, batches: &[HeadBatch]) -> Result<bool, IndexError> {
        let done = self.done.entry(hour).or_insert(0);
        let mut added = false;
        for b in batches.iter().skip(*done) {
            let n = self.batches.len() as u64;
            schema::add_rows(&self.writer, &self.fields, Signal::Logs, b.rows(), true, |i| (n << 32) | i as u64)?;
            self.batches.push(b.clone());
            added = true;
        }
        *done = batches.len().max(*done);
        Ok(added)
    }
}

/// A head hit: the time and the record as a one-row batch.
pub struct HeadHit {
    pub time_ns: i64,
    pub order: (u64, u64),
    pub row: RecordBatch,
}

#[derive(Default)]
pub struct HeadIndex {
    gens: Mutex<HashMap<(Tenant, u64), GenIndex>>,
}

impl HeadIndex {
    /// The newest `limit` head log records of `tenant` that match `query`.
    pub fn search(
        &self,
        tenant: &Tenant,
        parts: &HeadParts,
        query: &LogQuery,
        limit: usize,
    ) -> Result<Vec<HeadHit>, IndexError> {
        let mut hits = Vec::new();
        self.each_searcher(tenant, parts, |generation, searcher, batches| {
            let query = query.compile(searcher, &HeadRows { batches })?;
            let top = searcher
                .search(query.as_ref(), &TopDocs::with_limit(limit).order_by_fast_field::<i64>("time", Order::Desc))?;
            for (time_ns, addr) in top {
                let rows = searcher.segment_reader(addr.segment_ord).fast_fields().u64("row")?;
                let Some(a) = rows.first(addr.doc_id) else { continue };
                let (b, r) = ((a >> 32) as usize, (a & 0xffff_ffff) as usize);
                let Some(batch) = batches.get(b) else { continue };
                if r < batch.num_rows() {
                    hits.push(HeadHit { time_ns, order: (generation, a), row: batch.take(&[r as u32]) });
                }
            }
            Ok(())
        })?;
        Ok(hits)
    }

    /// Head log records of `tenant` matching `query`, counted per time bucket.
    pub fn histogram(
        &self,
        tenant: &Tenant,
        parts: &HeadParts,
        query: &LogQuery,
        buckets: &TimeBuckets,
    ) -> Result<Vec<u64>, IndexError> {
        let mut counts = vec![0; buckets.len];
        self.each_searcher(tenant, parts, |_, searcher, batches| {
            let query = query.compile(searcher, &HeadRows { batches })?;
            for (c, n) in counts.iter_mut().zip(searcher.search(query.as_ref(), buckets)?) {
                *c += n;
            }
            Ok(())
        })?;
        Ok(counts)
    }

    /// Brings the index of every live head generation of `tenant` up to date, then calls `f`
    /// with its generation, searcher and the batches its `row` fast field points into.
    fn each_searcher(
        &self,
        tenant: &Tenant,
        parts: &HeadParts,
        mut f: impl FnMut(u64, &Searcher, &[HeadBatch]) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let mut gens = self.gens.lock();
        // Generations below the oldest live one have been flushed and committed.
        gens.retain(|(_, g), _| *g >= parts.overlap_from_lsn);
        let mut by_gen: HashMap<u64, Vec<&tracelight_storage::HeadPart>> = HashMap::new();
        for p in &parts.parts {
            by_gen.entry(p.generation).or_default().push(p);
        }
        for (generation, ps) in by_gen {
            let key = (tenant.clone(), generation);
            if !gens.contains_key(&key) {
                gens.insert(key.clone(), GenIndex::new()?);
            }
            let g = gens.get_mut(&key).expect("inserted above");
            let mut added = false;
            for p in ps {
                added |= g.extend(p.hour, &p.batches)?;
            }
            if added {
                g.writer.commit()?;
                g.reader.reload()?;
            }
            f(generation, &g.reader.searcher(), &g.batches)?;
        }
        Ok(())
    }
}

/// The rows behind a head generation's documents: its batches, by the `row` address.
struct HeadRows<'a> {
    batches: &'a [HeadBatch],
}

impl HeadRows<'_> {
    /// (batch, row) of a document.
    fn locate(&self, searcher: &Searcher, d: DocAddress) -> Result<Option<(usize, usize)>, IndexError> {
        let rows = searcher.segment_reader(d.segment_ord).fast_fields().u64("row")?;
        Ok(rows.first(d.doc_id).map(|a| ((a >> 32) as usize, (a & 0xffff_ffff) as usize)))
    }
}

impl Rows for HeadRows<'_> {
    fn texts(
        &self,
        searcher: &Searcher,
        docs: &[DocAddress],
        target: &Target,
        f: &mut dyn FnMut(usize, &str),
    ) -> Result<(), IndexError> {
        for (i, d) in docs.iter().enumerate() {
            if let Some((b, r)) = self.locate(searcher, *d)?
                && let Some(batch) = self.batches.get(b)
                && r < batch.num_rows()
            {
                verify::texts_of_row(batch.rows(), r, target, &mut |t| f(i, t));
            }
        }
        Ok(())
    }

    fn trace_docs(&self, searcher: &Searcher, id: &str) -> Result<Vec<DocAddress>, IndexError> {
        // Head indexes keep the trace-ID terms.
        verify::trace_term_docs(searcher, id)
    }
}
