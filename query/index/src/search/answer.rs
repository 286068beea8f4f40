//! What this node's head answers another node's query (see [`tracelight_model::peers`]).

use std::collections::HashSet;

use arrow::record_batch::RecordBatch;
use tracelight_model::time::hour_of;
use tracelight_model::{Signal, Tenant};

use super::{IndexSearch, LogSearch, head_trace_rows};
use crate::IndexError;
use crate::histogram::TimeBuckets;

/// What this node's head answers another node (see [`tracelight_model::peers`]). Each returns
/// the head's `overlap_from_lsn` with the rows.
impl IndexSearch {
    /// The newest `want` log records of the head matching `s`, newest first.
    pub fn head_logs(
        &self,
        tenant: &Tenant,
        s: &LogSearch,
        want: usize,
    ) -> Result<(u64, Vec<RecordBatch>), IndexError> {
        let parts = self.head.partitions(tenant, Signal::Logs, hour_of(s.start_ns), hour_of(s.end_ns - 1));
        if s.end_ns <= s.start_ns || want == 0 {
            return Ok((parts.overlap_from_lsn, Vec::new()));
        }
        let query = self.log_query(s)?;
        let mut hits = self.head_index.search(tenant, &parts, &query, want)?;
        hits.sort_unstable_by(|a, b| b.time_ns.cmp(&a.time_ns).then_with(|| a.order.cmp(&b.order)));
        hits.truncate(want);
        let rows: Vec<RecordBatch> = hits.into_iter().map(|h| h.row).collect();
        if rows.is_empty() {
            return Ok((parts.overlap_from_lsn, Vec::new()));
        }
        let batch = arrow::compute::concat_batches(&Signal::Logs.schema(), &rows)
            .map_err(|e| IndexError::Internal(e.to_string()))?;
        Ok((parts.overlap_from_lsn, vec![batch]))
    }

    /// The head's log records matching `s` counted per bucket.
    pub fn head_histogram(
        &self,
        tenant: &Tenant,
        s: &LogSearch,
        buckets: &TimeBuckets,
    ) -> Result<(u64, Vec<u64>), IndexError> {
        let parts = self.head.partitions(tenant, Signal::Logs, hour_of(s.start_ns), hour_of(s.end_ns - 1));
        if s.end_ns <= s.start_ns {
            return Ok((parts.overlap_from_lsn, vec![0; buckets.len]));
        }
        let query = self.log_query(s)?;
        Ok((parts.overlap_from_lsn, self.head_index.histogram(tenant, &parts, &query, buckets)?))
    }

    /// The head's rows of `trace_ids` in `[start_ns, end_ns)`'s hours.
    pub fn head_trace(
        &self,
        tenant: &Tenant,
        signal: Signal,
        trace_ids: &[String],
        start_ns: i64,
        end_ns: i64,
    ) -> (u64, Vec<RecordBatch>) {
        let ids: HashSet<String> = trace_ids.iter().map(|t| t.to_ascii_lowercase()).collect();
        let head = self.head.snapshot(tenant, signal, hour_of(start_ns), hour_of(end_ns.saturating_sub(1)));
        (head.overlap_from_lsn, head_trace_rows(signal, &head.batches, &ids))
    }
}
