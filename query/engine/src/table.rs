//! `spans`, `logs` and `metrics` as DataFusion tables: catalog-pruned Parquet ∪ head.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use parking_lot::Mutex;
use tracelight_model::peers::{HeadKind, HeadRequest, PeerAnswers};
use tracelight_model::time::hour_of;
use tracelight_model::{ScanStats, Signal, Tenant};

use crate::Sources;
use crate::timerange::TimeRange;

pub struct SignalTable {
    signal: Signal,
    tenant: Tenant,
    range: TimeRange,
    sources: Arc<Sources>,
    stats: Arc<Mutex<ScanStats>>,
    /// Reads the heads only, not the catalog's segments (the bucket is unreachable).
    heads_only: bool,
}

impl fmt::Debug for SignalTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignalTable({}, {})", self.signal, self.tenant)
    }
}

impl SignalTable {
    pub(crate) fn new(
        signal: Signal,
        tenant: Tenant,
        range: TimeRange,
        sources: Arc<Sources>,
        stats: Arc<Mutex<ScanStats>>,
    ) -> Self {
        SignalTable { signal, tenant, range, sources, stats, heads_only: false }
    }

    pub(crate) fn heads_only(mut self, on: bool) -> Self {
        self.heads_only = on;
        self
    }
}

#[async_trait]
impl TableProvider for SignalTable {
    fn schema(&self) -> SchemaRef {
        self.signal.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters are used for pruning (time range, Parquet statistics, bloom filters) and
        // always evaluated again above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let range = self.range.narrow(self.signal.time_column(), filters);
        let (start, end) = (range.start_ns.unwrap_or(i64::MIN), range.end_ns.unwrap_or(i64::MAX));
        let (h0, h1) = if end <= start { (1, 0) } else { (hour_of(start), hour_of(end.saturating_sub(1))) };

        // Heads first (this node's, then every other ingester's): their snapshots say which
        // catalog segments they overlap.
        let head = self.sources.head.snapshot(&self.tenant, self.signal, h0, h1);
        let schema = self.signal.schema();
        let remote = if end <= start {
            PeerAnswers::default()
        } else {
            // Only the columns this scan reads; a scan of none (`count(*)`) still needs the
            // rows, so it asks for the time column.
            let columns = projection.map(|p| match p.is_empty() {
                true => vec![self.signal.time_column().to_string()],
                false => p.iter().map(|i| schema.field(*i).name().clone()).collect(),
            });
            let request = HeadRequest::new(&self.tenant, self.signal, start, end, HeadKind::Rows { columns });
            self.sources.peers.heads(&request).await
        };
        if let Some(pause) = self.sources.pause_after_heads {
            tokio::time::sleep(pause).await;
        }
        let mut segments = if end <= start || self.heads_only {
            Vec::new()
        } else {
            self.sources
                .catalog
                .segments(&self.tenant, self.signal, range.start_ns, range.end_ns)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
        };
        let heads = std::iter::once((self.sources.node.as_str(), head.overlap_from_lsn)).chain(remote.overlaps());
        tracelight_storage::drop_head_overlap(&mut segments, heads);

        {
            let mut st = self.stats.lock();
            let mut hours: BTreeSet<i64> = segments.iter().map(|s| s.partition_hour).collect();
            hours.extend(head_hours(&head.batches, self.signal));
            st.partitions += hours.len() as u64;
            st.segments += segments.len() as u64;
            st.segment_bytes += segments.iter().map(|s| s.bytes).sum::<u64>();
            // Rows of the opened segments: what the scan may read before row-group pruning.
            st.rows_read += segments.iter().map(|s| s.rows).sum::<u64>();
            st.head_rows += head.batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            st.head_rows += remote.rows();
            remote.warn_into(&mut st);
        }

        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !segments.is_empty() {
            let urls = segments
                .iter()
                .map(|s| ListingTableUrl::parse(self.sources.store.table_url(&s.path)))
                .collect::<Result<Vec<_>>>()?;
            with_page_index_cached(state, &urls).await?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema.clone());
            let listing = ListingTable::try_new(config)?;
            plans.push(listing.scan(state, projection, filters, limit).await?);
        }
        if !head.batches.is_empty() || remote.rows() > 0 || plans.is_empty() {
            // Head batches hold resource and scope values once per batch: only the columns
            // this scan reads are built out to full rows.
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema.clone(),
            };
            let mut batches: Vec<_> =
                head.batches.iter().map(|b| b.project(projection.map(|p| p.as_slice()))).collect();
            for b in remote.answers.iter().flat_map(|a| &a.batches) {
                // Of the projected schema (the reader checked), or the time column alone.
                let b = if projection.is_some_and(|p| p.is_empty()) { b.project(&[])? } else { b.clone() };
                batches.push(b);
            }
            let mem = MemTable::try_new(projected, vec![batches])?;
            plans.push(mem.scan(state, None, filters, limit).await?);
        }
        UnionExec::try_new(plans)
    }
}

/// Puts each file's Parquet metadata with its page index into DataFusion's metadata cache.
/// DataFusion 55 caches the footer without the page index and then reads and parses the page
/// index again for every query that prunes pages (half the time of a query that reads a few
/// pages of 25 segments); a cached entry that already holds it is used as it is. Segments are
/// immutable, so an entry never goes stale.
async fn with_page_index_cached(state: &dyn Session, urls: &[ListingTableUrl]) -> Result<()> {
    use datafusion::datasource::physical_plan::parquet::metadata::{CachedParquetMetaData, DFParquetMetadata};
    use datafusion::object_store::ObjectStoreExt;
    let runtime = state.runtime_env();
    let cache = runtime.cache_manager.get_file_metadata_cache();
    for url in urls {
        let cached = cache.get(url.prefix()).is_some_and(|e| {
            e.file_metadata.as_any().downcast_ref::<CachedParquetMetaData>().is_some_and(|m| {
                let m = m.parquet_metadata();
                m.column_index().is_some() && m.offset_index().is_some()
            })
        });
        if cached {
            continue;
        }
        let store = runtime.object_store(url.object_store())?;
        let meta = store.head(url.prefix()).await?;
        DFParquetMetadata::new(store.as_ref(), &meta)
            .with_file_metadata_cache(Some(cache.clone()))
            .fetch_metadata()
            .await?;
    }
    Ok(())
}

fn head_hours(batches: &[tracelight_storage::HeadBatch], signal: Signal) -> BTreeSet<i64> {
    use datafusion::arrow::array::{Array, TimestampNanosecondArray};
    let mut out = BTreeSet::new();
    for b in batches {
        if let Some(t) = b
            .rows()
            .column_by_name(signal.time_column())
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            && !t.is_empty()
        {
            // A head batch lies within one hour (the head splits batches by hour).
            out.insert(hour_of(t.value(0)));
        }
    }
    out
}
