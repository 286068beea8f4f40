//! What this node's head answers a query node (see [`tracelight_model::peers`]): the same
//! reads a query of its own makes of the head, for one tenant, signal and time range.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Int64Array, RecordBatch, UInt64Array};
use datafusion::arrow::compute::filter_record_batch;
use tracelight_index::{LogSearch, TimeBuckets};
use tracelight_model::QueryError;
use tracelight_model::peers::{HeadAnswer, HeadKind, HeadRequest, counts_schema, hours_schema};
use tracelight_model::time::hour_of;

use crate::Engine;
use crate::correlate::index_error;

impl Engine {
    pub(crate) async fn head_answer(&self, request: HeadRequest) -> Result<HeadAnswer, QueryError> {
        let (tenant, signal) = request.validate().map_err(QueryError::Invalid)?;
        let schema = request.answer_schema().map_err(QueryError::Invalid)?;
        let (start, end) = (request.start_ns, request.end_ns);
        let (h0, h1) = if end <= start { (1, 0) } else { (hour_of(start), hour_of(end - 1)) };
        let sources = self.sources.clone();
        let index = self.index.clone();
        let work = async move {
            let (overlap, batches) = match request.kind {
                HeadKind::Rows { columns } => {
                    let full = signal.schema();
                    let indices: Option<Vec<usize>> = columns.map(|cs| {
                        cs.iter().filter_map(|c| full.index_of(c).ok()).collect() // checked by validate
                    });
                    let head = sources.head.snapshot(&tenant, signal, h0, h1);
                    let mut out = Vec::with_capacity(head.batches.len());
                    for b in &head.batches {
                        let times = b
                            .rows()
                            .column_by_name(signal.time_column())
                            .and_then(|c| {
                                c.as_any().downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
                            })
                            .ok_or_else(|| QueryError::Internal("a head batch without its time column".into()))?;
                        let projected = b.project(indices.as_deref());
                        if times.values().iter().all(|t| (start..end).contains(t)) {
                            out.push(projected);
                            continue;
                        }
                        let keep: BooleanArray =
                            times.values().iter().map(|t| Some((start..end).contains(t))).collect();
                        let kept =
                            filter_record_batch(&projected, &keep).map_err(|e| QueryError::Internal(e.to_string()))?;
                        if kept.num_rows() > 0 {
                            out.push(kept);
                        }
                    }
                    (head.overlap_from_lsn, out)
                }
                HeadKind::Trace { trace_ids } => index.head_trace(&tenant, signal, &trace_ids, start, end),
                HeadKind::Logs { search, want } => {
                    index.head_logs(&tenant, &LogSearch::from_peer(&search, start, end), want).map_err(index_error)?
                }
                HeadKind::Histogram { search, step_ns, buckets } => {
                    let b = TimeBuckets { start_ns: start, step_ns, len: buckets };
                    let s = LogSearch::from_peer(&search, start, end);
                    let (overlap, counts) = index.head_histogram(&tenant, &s, &b).map_err(index_error)?;
                    let counts = RecordBatch::try_new(counts_schema(), vec![Arc::new(UInt64Array::from(counts))])
                        .map_err(|e| QueryError::Internal(e.to_string()))?;
                    (overlap, vec![counts])
                }
                HeadKind::Hours => {
                    let hours = sources.head.hours(&tenant, signal);
                    let hours = RecordBatch::try_new(hours_schema(), vec![Arc::new(Int64Array::from(hours))])
                        .map_err(|e| QueryError::Internal(e.to_string()))?;
                    (sources.head.overlap_from_lsn(), vec![hours])
                }
            };
            Ok::<_, QueryError>(HeadAnswer { node: sources.node.clone(), overlap_from_lsn: overlap, batches })
        };
        let answer = self.on_pool(work).await??;
        // What the reader will check, checked here first: a mismatch is our bug, not the peer's.
        if let Some(b) = answer.batches.iter().find(|b| b.schema().fields() != schema.fields()) {
            return Err(QueryError::Internal(format!("a head answer of schema {:?}, not {:?}", b.schema(), schema)));
        }
        Ok(answer)
    }
}
