//! Searching the segment indexes and the head: log search newest first, and every row of a set
//! of traces (spans, logs, metric points whose exemplars name them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use crate::bundle_dir::BundleDirectory;
use arrow::array::{Array, AsArray, BooleanArray, ListArray, StringArray};
use arrow::compute::interleave_record_batch;
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, Index, Order, ReloadPolicy, Searcher, Term};
use tracelight_model::peers::{HeadKind, HeadRequest, HeadSearch, NoPeers, PeerAnswers, Peers};
use tracelight_model::time::hour_of;
use tracelight_model::{ScanStats, Signal, Tenant};
use tracelight_storage::traceidx::{self, TraceIndexFile};
use tracelight_storage::{Catalog, Head, IndexFiles, SegmentMeta, SegmentStore, drop_head_overlap};

use crate::IndexError;
use crate::head::HeadIndex;

mod answer;
use crate::histogram::TimeBuckets;
use crate::schema::{self, Fields};
use crate::syntax::LogSyntax;
use crate::verify::{self, LogQuery, Node, Rows, Target};

/// Opened segment indexes kept at most.
const SEARCHER_CACHE: usize = 2048;

/// A log search: a tantivy query over body and attributes plus exact filters.
#[derive(Debug, Clone, Default)]
pub struct LogSearch {
    /// Query text (tantivy syntax); empty matches everything.
    pub q: String,
    /// Any of these services (empty: all).
    pub services: Vec<String>,
    /// Any of these severities, upper case (`ERROR`, `WARN`, …; empty: all).
    pub severities: Vec<String>,
    pub trace_id: Option<String>,
    /// Inclusive.
    pub start_ns: i64,
    /// Exclusive.
    pub end_ns: i64,
    pub limit: usize,
    /// Leave out the first this-many matches whose time is `end_ns - 1`: they were on the
    /// previous page (see the cursor in the API).
    pub skip_at_end: usize,
}

impl LogSearch {
    /// The search as another node's head answers it.
    pub fn for_peers(&self) -> HeadSearch {
        HeadSearch {
            q: self.q.clone(),
            services: self.services.clone(),
            severities: self.severities.clone(),
            trace_id: self.trace_id.clone(),
        }
    }

    /// The search another node asked this node's head (see [`IndexSearch::head_logs`]).
    pub fn from_peer(s: &HeadSearch, start_ns: i64, end_ns: i64) -> LogSearch {
        LogSearch {
            q: s.q.clone(),
            services: s.services.clone(),
            severities: s.severities.clone(),
            trace_id: s.trace_id.clone(),
            start_ns,
            end_ns,
            limit: 0,
            skip_at_end: 0,
        }
    }
}

/// Most hits one log search may ask of each index (a page of at most 1,000 plus a cursor's
/// skip of at most `MAX_CURSOR_SKIP`, with room to spare).
pub const MAX_WANT: usize = 100_000;

/// Segments one search could not read because object storage did not answer: left out of
/// the answer, which says so (the rest of the answer is exact).
#[derive(Default)]
struct Unread {
    segments: HashSet<String>,
    first: Option<String>,
}

impl Unread {
    /// `r`'s value, or `None` when object storage could not serve it (remembered); any other
    /// error is the caller's.
    fn skip<T>(&mut self, segment: &str, r: Result<T, IndexError>) -> Result<Option<T>, IndexError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(IndexError::Unreachable(why)) => {
                self.segments.insert(segment.to_string());
                // The store's error text can be long (a response body): the start says enough.
                self.first.get_or_insert_with(|| why.chars().take(200).collect());
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn warn_into(&self, stats: &mut ScanStats) {
        if let Some(why) = &self.first {
            stats.warn(&format!(
                "{} segment(s) could not be read ({why}): this answer leaves out their rows",
                self.segments.len()
            ));
        }
    }
}

/// Where a hit's row lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Source {
    Head {
        generation: u64,
        address: u64,
    },
    Segment {
        segment: usize,
        row: u64,
    },
    /// A row of another node's answer: answer, batch, row.
    Peer {
        answer: usize,
        batch: usize,
        row: usize,
    },
}

pub struct IndexSearch {
    catalog: Catalog,
    head: Arc<Head>,
    store: SegmentStore,
    node: String,
    syntax: LogSyntax,
    fields: Fields,
    searchers: Mutex<HashMap<String, Searcher>>,
    /// Per segment index: whether its documents are the segment's rows in order (see
    /// [`SegmentRows::docs_of_rows`]), checked once.
    in_row_order: Mutex<HashMap<String, bool>>,
    head_index: HeadIndex,
    /// The other ingesters, whose heads every search also reads.
    peers: Arc<dyn Peers>,
}

impl IndexSearch {
    pub fn new(catalog: Catalog, head: Arc<Head>, store: SegmentStore, node: String) -> IndexSearch {
        let syntax = LogSyntax::new();
        let fields = syntax.fields();
        IndexSearch {
            catalog,
            head,
            store,
            node,
            syntax,
            fields,
            searchers: Mutex::default(),
            in_row_order: Mutex::default(),
            head_index: HeadIndex::default(),
            peers: Arc::new(NoPeers),
        }
    }

    /// Searches the heads of `peers` too (a deployment of several ingesters).
    pub fn set_peers(&mut self, peers: Arc<dyn Peers>) {
        self.peers = peers;
    }

    /// Parses a query in tantivy's syntax (see [`LogSyntax::parse`]).
    pub fn parse(&self, q: &str) -> Result<LogQuery, IndexError> {
        self.syntax.parse(q)
    }

    fn id_term(&self, field: tantivy::schema::Field, id: &str) -> Term {
        Term::from_field_text(field, &id.to_ascii_lowercase())
    }
}

impl IndexSearch {
    fn log_query(&self, s: &LogSearch) -> Result<LogQuery, IndexError> {
        let f = &self.fields;
        let parsed = self.parse(&s.q)?;
        let mut must: Vec<(Occur, Node)> = Vec::new();
        let any_of = |field, values: &[String]| -> Node {
            Node::Index(Box::new(TermSetQuery::new(values.iter().map(|v| Term::from_field_text(field, v)))))
        };
        if !s.services.is_empty() {
            must.push((Occur::Must, any_of(f.service, &s.services)));
        }
        if !s.severities.is_empty() {
            must.push((Occur::Must, any_of(f.severity, &s.severities)));
        }
        if let Some(t) = &s.trace_id {
            must.push((Occur::Must, Node::Trace(t.to_ascii_lowercase())));
        }
        must.push((Occur::Must, Node::Index(Box::new(self.time_range(s.start_ns, s.end_ns)))));
        Ok(parsed.and(must))
    }

    fn time_range(&self, start_ns: i64, end_ns: i64) -> RangeQuery {
        RangeQuery::new(
            Bound::Included(Term::from_field_i64(self.fields.time, start_ns)),
            Bound::Excluded(Term::from_field_i64(self.fields.time, end_ns)),
        )
    }

    /// The searcher of a segment's index; `None` for a segment written without one.
    fn searcher(&self, seg: &SegmentMeta) -> Result<Option<Searcher>, IndexError> {
        if let Some(s) = self.searchers.lock().get(&seg.path) {
            return Ok(Some(s.clone()));
        }
        let index = match self.store.index_files(&seg.path)? {
            None => return Ok(None),
            Some(IndexFiles::Dir(dir)) => Index::open_in_dir(&dir)?,
            Some(IndexFiles::Bundle(file)) => {
                let origin = std::path::Path::new(&seg.path);
                Index::open(BundleDirectory::open(&file, origin).map_err(IndexError::Internal)?)?
            }
        };
        schema::register_tokenizers(&index);
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let searcher = reader.searcher();
        let mut cache = self.searchers.lock();
        if cache.len() >= SEARCHER_CACHE
            && let Some(k) = cache.keys().next().cloned()
        {
            cache.remove(&k);
        }
        cache.insert(seg.path.clone(), searcher.clone());
        Ok(Some(searcher))
    }

    /// Forgets the cached searcher of a deleted segment (retention).
    pub fn forget(&self, segment_path: &str) {
        self.searchers.lock().remove(segment_path);
        self.in_row_order.lock().remove(segment_path);
    }

    /// Segments of `signal` in `[start, end)` that are not also in a head read (this node's
    /// and the peers' that answered), newest first. Call it after reading the heads.
    async fn segments(
        &self,
        tenant: &Tenant,
        signal: Signal,
        start_ns: Option<i64>,
        end_ns: Option<i64>,
        overlap_from_lsn: u64,
        peers: &PeerAnswers,
    ) -> Result<Vec<SegmentMeta>, IndexError> {
        let mut segs = self.catalog.segments(tenant, signal, start_ns, end_ns).await?;
        let heads = std::iter::once((self.node.as_str(), overlap_from_lsn)).chain(peers.overlaps());
        drop_head_overlap(&mut segs, heads);
        segs.sort_by(|a, b| b.max_time_ns.cmp(&a.max_time_ns).then_with(|| b.id.cmp(&a.id)));
        Ok(segs)
    }

    /// Log records matching `s`, newest first, at most `s.limit`, in the `logs` schema.
    pub async fn logs(&self, tenant: &Tenant, s: &LogSearch) -> Result<(RecordBatch, ScanStats), IndexError> {
        let started = Instant::now();
        let mut stats = ScanStats::default();
        if s.end_ns <= s.start_ns || s.limit == 0 {
            return Ok((RecordBatch::new_empty(Signal::Logs.schema()), stats));
        }
        let query = self.log_query(s)?;
        // Both come from the caller (a page size and a cursor): never size an allocation from
        // them unchecked (TopDocs reserves twice what it is asked for).
        let want = s.limit.saturating_add(s.skip_at_end);
        if want > MAX_WANT {
            return Err(IndexError::Invalid(format!("a search may ask for at most {MAX_WANT} hits, not {want}")));
        }
        let (h0, h1) = (hour_of(s.start_ns), hour_of(s.end_ns - 1));
        let parts = self.head.partitions(tenant, Signal::Logs, h0, h1);
        let kind = HeadKind::Logs { search: s.for_peers(), want };
        let remote = self.peers.heads(&HeadRequest::new(tenant, Signal::Logs, s.start_ns, s.end_ns, kind)).await;
        let segments = self
            .segments(tenant, Signal::Logs, Some(s.start_ns), Some(s.end_ns), parts.overlap_from_lsn, &remote)
            .await?;

        let mut hours: HashSet<i64> = parts.parts.iter().map(|p| p.hour).collect();
        stats.head_rows = parts.parts.iter().flat_map(|p| &p.batches).map(|b| b.num_rows() as u64).sum();
        let mut head_rows: HashMap<Source, RecordBatch> = HashMap::new();
        let mut hits: Vec<(i64, Source)> = Vec::new();
        for h in self.head_index.search(tenant, &parts, &query, want)? {
            let src = Source::Head { generation: h.order.0, address: h.order.1 };
            hits.push((h.time_ns, src));
            head_rows.insert(src, h.row);
        }
        peer_hits(&remote, &mut hits, &mut head_rows, &mut hours, &mut stats);
        keep_newest(&mut hits, want);
        let (base, rows_read) = (hits, stats.rows_read);

        let mut unread = Unread::default();
        // Each searched segment's newest hits as (time, row); `None` without an index.
        let mut tops: HashMap<usize, Option<Vec<(i64, u64)>>> = HashMap::new();
        loop {
            let mut hits = base.clone();
            for (i, seg) in segments.iter().enumerate() {
                if unread.segments.contains(&seg.path) {
                    continue;
                }
                // Newest segments first: once `want` hits are newer than everything this
                // segment holds, no older segment can contribute.
                if hits.len() >= want && hits.last().is_some_and(|(t, _)| *t > seg.max_time_ns) {
                    break;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = tops.entry(i) {
                    let Some(top) = unread.skip(&seg.path, self.segment_top(seg, &query, want))? else { continue };
                    match &top {
                        Some(_) => {
                            hours.insert(seg.partition_hour);
                            stats.segments += 1;
                            stats.segment_bytes += seg.index_bytes;
                        }
                        None => {
                            tracing::warn!(path = %seg.path, "segment has no index (written before indexing existed); not searched")
                        }
                    }
                    e.insert(top);
                }
                let top = tops[&i].iter().flatten();
                hits.extend(top.map(|(t, row)| (*t, Source::Segment { segment: i, row: *row })));
                keep_newest(&mut hits, want);
            }

            // Drop what the previous page already showed: the first matches at its last time.
            let last = s.end_ns - 1;
            let mut skip = s.skip_at_end;
            hits.retain(|(t, _)| {
                if skip > 0 && *t == last {
                    skip -= 1;
                    return false;
                }
                true
            });
            hits.truncate(s.limit);

            let lost = unread.segments.len();
            stats.rows_read = rows_read;
            let batch = self.materialize(Signal::Logs, &segments, &hits, &head_rows, &mut stats, &mut unread)?;
            if unread.segments.len() == lost {
                stats.partitions = hours.len() as u64;
                unread.warn_into(&mut stats);
                stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                return Ok((batch, stats));
            }
            // Rows of a segment could not be fetched: choose the hits again without it, so
            // that the page is full and its cursor (from the last row) skips nothing. Each
            // round leaves out one more segment, so this ends.
        }
    }

    /// The newest `want` hits of `query` in one segment as (time, row), or `None` for a
    /// segment written without an index.
    fn segment_top(
        &self,
        seg: &SegmentMeta,
        query: &LogQuery,
        want: usize,
    ) -> Result<Option<Vec<(i64, u64)>>, IndexError> {
        let Some(searcher) = self.searcher(seg)? else { return Ok(None) };
        let compiled =
            query.compile(&searcher, &SegmentRows { store: &self.store, seg, in_row_order: &self.in_row_order })?;
        let top = searcher
            .search(compiled.as_ref(), &TopDocs::with_limit(want).order_by_fast_field::<i64>("time", Order::Desc))?;
        let mut out = Vec::with_capacity(top.len());
        for (t, addr) in top {
            let rows = searcher.segment_reader(addr.segment_ord).fast_fields().u64("row")?;
            out.extend(rows.first(addr.doc_id).map(|row| (t, row)));
        }
        Ok(Some(out))
    }

    /// Log records matching `s` (its `limit` and `skip_at_end` ignored) counted per bucket.
    /// Every segment in the range is counted: the histogram is exact, not sampled.
    pub async fn log_histogram(
        &self,
        tenant: &Tenant,
        s: &LogSearch,
        buckets: &TimeBuckets,
    ) -> Result<(Vec<u64>, ScanStats), IndexError> {
        let started = Instant::now();
        let mut stats = ScanStats::default();
        if s.end_ns <= s.start_ns || buckets.len == 0 {
            return Ok((vec![0; buckets.len], stats));
        }
        let query = self.log_query(s)?;
        let (h0, h1) = (hour_of(s.start_ns), hour_of(s.end_ns - 1));
        let parts = self.head.partitions(tenant, Signal::Logs, h0, h1);
        let kind = HeadKind::Histogram { search: s.for_peers(), step_ns: buckets.step_ns, buckets: buckets.len };
        let remote = self.peers.heads(&HeadRequest::new(tenant, Signal::Logs, s.start_ns, s.end_ns, kind)).await;
        let segments = self
            .segments(tenant, Signal::Logs, Some(s.start_ns), Some(s.end_ns), parts.overlap_from_lsn, &remote)
            .await?;
        let mut hours: HashSet<i64> = parts.parts.iter().map(|p| p.hour).collect();
        stats.head_rows = parts.parts.iter().flat_map(|p| &p.batches).map(|b| b.num_rows() as u64).sum();
        let mut counts = self.head_index.histogram(tenant, &parts, &query, buckets)?;
        remote.warn_into(&mut stats);
        for b in remote.answers.iter().flat_map(|a| &a.batches) {
            // Of `counts_schema` (the reader checked): one count per bucket, in order.
            let peer = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>();
            for (c, n) in counts.iter_mut().zip(peer.values()) {
                *c += n;
            }
        }
        let mut unread = Unread::default();
        for seg in &segments {
            let counted = (|| {
                let Some(searcher) = self.searcher(seg)? else { return Ok(None) };
                let rows = SegmentRows { store: &self.store, seg, in_row_order: &self.in_row_order };
                let compiled = query.compile(&searcher, &rows)?;
                Ok::<_, IndexError>(Some(searcher.search(compiled.as_ref(), buckets)?))
            })();
            let Some(Some(seg_counts)) = unread.skip(&seg.path, counted)? else { continue };
            hours.insert(seg.partition_hour);
            stats.segments += 1;
            stats.segment_bytes += seg.index_bytes;
            for (c, n) in counts.iter_mut().zip(seg_counts) {
                *c += n;
            }
        }
        unread.warn_into(&mut stats);
        stats.partitions = hours.len() as u64;
        stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok((counts, stats))
    }

    /// Reads the rows of `hits` (in that order) from their segments and the head.
    fn materialize(
        &self,
        signal: Signal,
        segments: &[SegmentMeta],
        hits: &[(i64, Source)],
        head_rows: &HashMap<Source, RecordBatch>,
        stats: &mut ScanStats,
        unread: &mut Unread,
    ) -> Result<RecordBatch, IndexError> {
        let mut per_segment: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (_, src) in hits {
            if let Source::Segment { segment, row } = src {
                per_segment.entry(*segment).or_default().push(*row);
            }
        }
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut position: HashMap<Source, (usize, usize)> = HashMap::new();
        for (segment, mut rows) in per_segment {
            rows.sort_unstable();
            rows.dedup();
            // Hits of a segment whose rows cannot be fetched now are left out.
            let Some(b) = unread.skip(
                &segments[segment].path,
                self.store.read_rows(&segments[segment].path, &rows).map_err(IndexError::from),
            )?
            else {
                continue;
            };
            stats.rows_read += b.num_rows() as u64;
            for (j, row) in rows.iter().enumerate() {
                position.insert(Source::Segment { segment, row: *row }, (batches.len(), j));
            }
            batches.push(b);
        }
        for (_, src) in hits {
            if let Some(b) = head_rows.get(src) {
                position.insert(*src, (batches.len(), 0));
                batches.push(b.clone());
                stats.rows_read += 1;
            }
        }
        let order: Vec<(usize, usize)> = hits.iter().filter_map(|(_, src)| position.get(src).copied()).collect();
        if order.is_empty() {
            return Ok(RecordBatch::new_empty(signal.schema()));
        }
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        interleave_record_batch(&refs, &order).map_err(|e| IndexError::Internal(e.to_string()))
    }

    /// Every row of `signal` that belongs to one of `trace_ids` (lower-case hex): spans and
    /// logs by their `trace_id`, metric points by the trace IDs of their exemplars. Segments
    /// are found through their indexes, so no time hint is needed; `start_ns`/`end_ns` narrow
    /// the segments looked at when given.
    pub async fn trace_rows(
        &self,
        tenant: &Tenant,
        signal: Signal,
        trace_ids: &[String],
        start_ns: Option<i64>,
        end_ns: Option<i64>,
    ) -> Result<(RecordBatch, ScanStats), IndexError> {
        let started = Instant::now();
        let mut stats = ScanStats::default();
        let ids: HashSet<String> = trace_ids.iter().map(|t| t.to_ascii_lowercase()).collect();
        let (h0, h1) = (start_ns.map_or(i64::MIN, hour_of), end_ns.map_or(i64::MAX, |e| hour_of(e.saturating_sub(1))));
        let head = self.head.snapshot(tenant, signal, h0, h1);
        let (lo, hi) = (start_ns.unwrap_or(i64::MIN), end_ns.unwrap_or(i64::MAX));
        let kind = HeadKind::Trace { trace_ids: ids.iter().cloned().collect() };
        let remote = self.peers.heads(&HeadRequest::new(tenant, signal, lo, hi.max(lo), kind)).await;
        let segments = self.segments(tenant, signal, start_ns, end_ns, head.overlap_from_lsn, &remote).await?;
        // One term query per ID: a direct term-dictionary lookup each.
        let query = BooleanQuery::new(
            ids.iter()
                .map(|t| {
                    let q: Box<dyn Query> =
                        Box::new(TermQuery::new(self.id_term(self.fields.trace_id, t), IndexRecordOption::Basic));
                    (Occur::Should, q)
                })
                .collect(),
        );

        let mut hours = HashSet::new();
        let mut out: Vec<RecordBatch> = Vec::new();
        let shared_ids = Arc::new(ids.clone());
        let mut unread = Unread::default();
        for seg in &segments {
            let read = self.segment_trace_rows(seg, signal, &ids, &shared_ids, &query, &mut stats);
            let Some(Some(b)) = unread.skip(&seg.path, read)? else { continue };
            if b.num_rows() == 0 {
                continue;
            }
            hours.insert(seg.partition_hour);
            stats.rows_read += b.num_rows() as u64;
            out.push(b);
        }
        unread.warn_into(&mut stats);
        stats.head_rows += head.batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        for kept in head_trace_rows(signal, &head.batches, &ids) {
            stats.rows_read += kept.num_rows() as u64;
            if let Some(t) = kept.column_by_name(signal.time_column()) {
                let t = t.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
                hours.extend(t.values().iter().map(|v| hour_of(*v)));
            }
            out.push(kept);
        }
        remote.warn_into(&mut stats);
        for b in remote.answers.iter().flat_map(|a| &a.batches) {
            stats.head_rows += b.num_rows() as u64;
            stats.rows_read += b.num_rows() as u64;
            out.push(b.clone());
        }
        stats.partitions = hours.len() as u64;
        let batch =
            arrow::compute::concat_batches(&signal.schema(), &out).map_err(|e| IndexError::Internal(e.to_string()))?;
        stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok((batch, stats))
    }

    /// The rows of one segment that belong to `ids` (see [`IndexSearch::trace_rows`]); `None`
    /// when the segment has no index to find them with.
    fn segment_trace_rows(
        &self,
        seg: &SegmentMeta,
        signal: Signal,
        ids: &HashSet<String>,
        shared_ids: &Arc<HashSet<String>>,
        query: &BooleanQuery,
        stats: &mut ScanStats,
    ) -> Result<Option<RecordBatch>, IndexError> {
        let column = if signal == Signal::Metrics { "exemplars" } else { "trace_id" };
        Ok(Some(match self.store.open_file(&traceidx::path_for(&seg.path))? {
            Some(file) => {
                stats.segments += 1;
                // From each ID to the row blocks that may hold it; a damaged index costs
                // reading the whole segment's trace IDs instead.
                let blocks = TraceIndexFile::open(file).and_then(|ix| {
                    let mut blocks = Vec::new();
                    for id in ids {
                        blocks.extend(ix.pages(id)?);
                    }
                    Ok(blocks)
                });
                let mut blocks = blocks.unwrap_or_else(|e| {
                    tracing::warn!(path = %seg.path, error = %e, "trace-ID index unreadable; reading the segment's trace IDs");
                    (0..seg.rows.div_ceil(traceidx::PAGE_ROWS as u64) as u32).collect()
                });
                if blocks.is_empty() {
                    return Ok(None);
                }
                blocks.sort_unstable();
                blocks.dedup();
                let ids = shared_ids.clone();
                self.store.read_blocks_where(&seg.path, &blocks, column, move |b| trace_mask(signal, b, &ids))?
            }
            // Written before trace-ID indexes existed: the full-text index has the IDs.
            None => {
                let Some(searcher) = self.searcher(seg)? else {
                    tracing::warn!(path = %seg.path, "segment has no index (written before indexing existed); not searched");
                    return Ok(None);
                };
                stats.segments += 1;
                stats.segment_bytes += seg.index_bytes;
                let docs = searcher.search(query, &DocSetCollector)?;
                if docs.is_empty() {
                    return Ok(None);
                }
                let mut rows = Vec::with_capacity(docs.len());
                for addr in docs {
                    let col = searcher.segment_reader(addr.segment_ord).fast_fields().u64("row")?;
                    rows.extend(col.first(addr.doc_id));
                }
                rows.sort_unstable();
                rows.dedup();
                self.store.read_rows(&seg.path, &rows)?
            }
        }))
    }
}

/// The rows of head batches that belong to one of `ids`.
fn head_trace_rows(
    signal: Signal,
    batches: &[tracelight_storage::HeadBatch],
    ids: &HashSet<String>,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for b in batches {
        let mask = trace_mask(signal, b.rows(), ids);
        if mask.true_count() > 0 {
            let rows: Vec<u32> = (0..mask.len() as u32).filter(|i| mask.value(*i as usize)).collect();
            out.push(b.take(&rows));
        }
    }
    out
}

/// The rows behind a segment index's documents: the segment's Parquet file, by the `row`
/// fast field, and its trace-ID index.
struct SegmentRows<'a> {
    store: &'a SegmentStore,
    seg: &'a SegmentMeta,
    in_row_order: &'a Mutex<HashMap<String, bool>>,
}

/// Rows read per batch when checking phrases.
const CHECK_ROWS: usize = 8192;

impl SegmentRows<'_> {
    /// The documents of `rows` (ascending). A segment's index holds its rows as documents in
    /// order when it has one tantivy segment that was never merged; whether it does is checked
    /// on the whole `row` column once (a merge of tantivy segments reorders them). Any other
    /// index is mapped through the `row` fast field.
    fn docs_of_rows(&self, searcher: &Searcher, rows: &[u64]) -> Result<Vec<DocAddress>, IndexError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let cached = self.in_row_order.lock().get(&self.seg.path).copied();
        let in_order = match cached {
            Some(v) => v,
            None => {
                let v = match searcher.segment_readers() {
                    [reader] if reader.num_deleted_docs() == 0 && reader.max_doc() as u64 == self.seg.rows => {
                        let col = reader.fast_fields().u64("row")?;
                        (0..reader.max_doc()).all(|d| col.first(d) == Some(d as u64))
                    }
                    _ => false,
                };
                self.in_row_order.lock().insert(self.seg.path.clone(), v);
                v
            }
        };
        if in_order {
            return Ok(rows.iter().map(|r| DocAddress::new(0, *r as u32)).collect());
        }
        let mut out = Vec::new();
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            let col = reader.fast_fields().u64("row")?;
            for doc in 0..reader.max_doc() {
                if col.first(doc).is_some_and(|r| rows.binary_search(&r).is_ok()) {
                    out.push(DocAddress::new(ord as u32, doc));
                }
            }
        }
        Ok(out)
    }
}

impl Rows for SegmentRows<'_> {
    fn texts(
        &self,
        searcher: &Searcher,
        docs: &[DocAddress],
        target: &Target,
        f: &mut dyn FnMut(usize, &str),
    ) -> Result<(), IndexError> {
        let mut by_row: Vec<(u64, usize)> = Vec::with_capacity(docs.len());
        let mut columns = HashMap::new();
        for (i, d) in docs.iter().enumerate() {
            let col = match columns.entry(d.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(searcher.segment_reader(d.segment_ord).fast_fields().u64("row")?)
                }
            };
            if let Some(row) = col.first(d.doc_id) {
                by_row.push((row, i));
            }
        }
        by_row.sort_unstable();
        by_row.dedup_by_key(|(row, _)| *row);
        for chunk in by_row.chunks(CHECK_ROWS) {
            let rows: Vec<u64> = chunk.iter().map(|(r, _)| *r).collect();
            let batch = self.store.read_columns(&self.seg.path, &rows, &[verify::column_of(target)])?;
            for (j, (_, i)) in chunk.iter().enumerate().take(batch.num_rows()) {
                verify::texts_of_row(&batch, j, target, &mut |t| f(*i, t));
            }
        }
        Ok(())
    }

    fn trace_docs(&self, searcher: &Searcher, id: &str) -> Result<Vec<DocAddress>, IndexError> {
        let Some(file) = self.store.open_file(&traceidx::path_for(&self.seg.path))? else {
            // Written before trace-ID indexes existed: its full-text index has the IDs.
            return verify::trace_term_docs(searcher, id);
        };
        let blocks = TraceIndexFile::open(file).and_then(|ix| ix.pages(id));
        let mut blocks = blocks.unwrap_or_else(|e| {
            tracing::warn!(path = %self.seg.path, error = %e, "trace-ID index unreadable; reading the segment's trace IDs");
            (0..self.seg.rows.div_ceil(traceidx::PAGE_ROWS as u64) as u32).collect()
        });
        if blocks.is_empty() {
            return Ok(Vec::new());
        }
        blocks.sort_unstable();
        blocks.dedup();
        let rows = self.store.rows_where(&self.seg.path, &blocks, "trace_id", |v| v.eq_ignore_ascii_case(id))?;
        self.docs_of_rows(searcher, &rows)
    }
}

/// The rows other nodes' heads answered a log search with, as hits: each row kept on its
/// own, as head rows are, to be put in order with the rest.
fn peer_hits(
    remote: &PeerAnswers,
    hits: &mut Vec<(i64, Source)>,
    rows: &mut HashMap<Source, RecordBatch>,
    hours: &mut HashSet<i64>,
    stats: &mut ScanStats,
) {
    remote.warn_into(stats);
    for (answer, a) in remote.answers.iter().enumerate() {
        for (batch, b) in a.batches.iter().enumerate() {
            stats.head_rows += b.num_rows() as u64;
            // Of the logs schema (the reader checked).
            let Some(times) = b.column_by_name("time") else { continue };
            let times = times.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
            for (row, t) in times.values().iter().enumerate() {
                let src = Source::Peer { answer, batch, row };
                hits.push((*t, src));
                hours.insert(hour_of(*t));
                rows.insert(src, b.slice(row, 1));
            }
        }
    }
}

/// Sorts hits newest first (ties in a fixed order) and keeps the first `n`.
fn keep_newest(hits: &mut Vec<(i64, Source)>, n: usize) {
    hits.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    hits.truncate(n);
}

/// Which rows of a head batch belong to one of `ids`.
fn trace_mask(signal: Signal, b: &RecordBatch, ids: &HashSet<String>) -> BooleanArray {
    match signal {
        Signal::Spans | Signal::Logs => {
            let col = b.column_by_name("trace_id").and_then(|c| c.as_any().downcast_ref::<StringArray>());
            (0..b.num_rows()).map(|i| Some(col.is_some_and(|c| c.is_valid(i) && ids.contains(c.value(i))))).collect()
        }
        Signal::Metrics => {
            let ex = b.column_by_name("exemplars").and_then(|c| c.as_any().downcast_ref::<ListArray>());
            (0..b.num_rows())
                .map(|i| {
                    Some(ex.is_some_and(|ex| {
                        if ex.is_null(i) || ex.value_length(i) == 0 {
                            return false;
                        }
                        let items = ex.value(i);
                        let items = items.as_struct();
                        items
                            .column_by_name("trace_id")
                            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                            .is_some_and(|c| (0..c.len()).any(|j| c.is_valid(j) && ids.contains(c.value(j))))
                    }))
                })
                .collect()
        }
    }
}
