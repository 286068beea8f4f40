//! Fresh data on queriers: what a query node asks the live ingesters for (their heads: rows
//! acknowledged but not yet in object storage), and what it gets back.
//!
//! A query takes every ingester's answer first and lists the catalog after, then leaves out
//! the segments of each answering node from its `overlap_from_lsn` on (their rows are in the
//! answer), as a single node does with its own head. A node that does not answer keeps all its
//! segments and the query says what is missing (a warning in [`crate::ScanStats`]).
//!
//! The wire: `POST` [`HEAD_PATH`] with a JSON [`HeadRequest`]; the answer is an Arrow IPC
//! stream of [`HeadRequest::answer_schema`] with the node and its overlap in headers.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::{Signal, Tenant};

/// The internal endpoint every ingesting node serves.
pub const HEAD_PATH: &str = "/internal/v1/head";
/// The version of [`HeadRequest`]; a node refuses another (a rolling upgrade mixes versions
/// for a while: the querier then says the node did not answer, and keeps its segments).
pub const PROTOCOL: u32 = 1;
/// Answer headers.
pub const NODE_HEADER: &str = "x-tracelight-node";
pub const OVERLAP_HEADER: &str = "x-tracelight-overlap-from-lsn";

/// Most trace IDs, columns, services or severities one request may name (a page of traces
/// looked up at once is at most `query.max_page`, which is bounded by it).
pub const MAX_LIST: usize = 10_000;
/// Most hours one answer may list.
pub const MAX_HOURS: usize = 100_000;
/// Most histogram buckets.
pub const MAX_BUCKETS: usize = 10_000;
/// Most log hits one request may ask for (a page plus a cursor's skip).
pub const MAX_WANT: usize = 100_000;
/// Longest log query text.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Largest request body a node reads.
pub const MAX_REQUEST_BYTES: usize = 256 << 10;

/// What to read from a node's head. Times are `[start_ns, end_ns)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadRequest {
    pub v: u32,
    pub tenant: String,
    /// `spans`, `logs` or `metrics`.
    pub signal: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub kind: HeadKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HeadKind {
    /// The rows in the range, only `columns` of them (all when absent): what SQL scans.
    Rows { columns: Option<Vec<String>> },
    /// The rows of these traces (lower-case hex): spans and logs by `trace_id`, metric points
    /// by their exemplars.
    Trace { trace_ids: Vec<String> },
    /// The newest `want` log records matching the search, newest first.
    Logs { search: HeadSearch, want: usize },
    /// Log records matching the search counted per bucket of `step_ns` from `start_ns`.
    Histogram { search: HeadSearch, step_ns: i64, buckets: usize },
    /// The hours the head holds rows of (the range is ignored).
    Hours,
}

/// A log search as the head answers it (see the index crate's `LogSearch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadSearch {
    pub q: String,
    pub services: Vec<String>,
    pub severities: Vec<String>,
    pub trace_id: Option<String>,
}

impl HeadRequest {
    pub fn new(tenant: &Tenant, signal: Signal, start_ns: i64, end_ns: i64, kind: HeadKind) -> HeadRequest {
        HeadRequest {
            v: PROTOCOL,
            tenant: tenant.as_str().to_string(),
            signal: signal.table().into(),
            start_ns,
            end_ns,
            kind,
        }
    }

    /// Checks everything a client could make too large or inconsistent; returns the tenant and
    /// signal. The answer's size is bounded by the head's (`head.max_bytes`).
    pub fn validate(&self) -> Result<(Tenant, Signal), String> {
        if self.v != PROTOCOL {
            return Err(format!("protocol version {} is not {PROTOCOL}", self.v));
        }
        let tenant = Tenant::new(&self.tenant).map_err(|e| e.to_string())?;
        let signal = Signal::from_table(&self.signal).ok_or_else(|| format!("unknown signal {:?}", self.signal))?;
        if self.end_ns < self.start_ns {
            return Err("end_ns is before start_ns".into());
        }
        // Log searches and histograms do arithmetic on times; they are epoch times of data.
        let searched = matches!(self.kind, HeadKind::Logs { .. } | HeadKind::Histogram { .. });
        if searched && (self.start_ns < 0 || self.end_ns == i64::MAX) {
            return Err("a log search covers times from 0 to before i64::MAX".into());
        }
        let list = |what: &str, n: usize| {
            if n > MAX_LIST { Err(format!("{n} {what}; at most {MAX_LIST} are accepted")) } else { Ok(()) }
        };
        let search = |s: &HeadSearch| {
            list("services", s.services.len())?;
            list("severities", s.severities.len())?;
            if s.q.len() > MAX_QUERY_BYTES {
                return Err(format!("a query of {} bytes; at most {MAX_QUERY_BYTES} are accepted", s.q.len()));
            }
            if signal != Signal::Logs {
                return Err("log searches are of the logs signal".into());
            }
            Ok(())
        };
        match &self.kind {
            HeadKind::Rows { columns } => {
                let columns = columns.as_deref().unwrap_or_default();
                list("columns", columns.len())?;
                let schema = signal.schema();
                if let Some(c) = columns.iter().find(|c| schema.index_of(c).is_err()) {
                    return Err(format!("{} has no column {c:?}", signal.table()));
                }
            }
            HeadKind::Trace { trace_ids } => list("trace IDs", trace_ids.len())?,
            HeadKind::Logs { search: s, want } => {
                search(s)?;
                if *want > MAX_WANT {
                    return Err(format!("{want} hits asked for; at most {MAX_WANT} are accepted"));
                }
            }
            HeadKind::Histogram { search: s, step_ns, buckets } => {
                search(s)?;
                if *buckets > MAX_BUCKETS || *step_ns <= 0 {
                    return Err(format!("{buckets} buckets of {step_ns} ns; at most {MAX_BUCKETS} of a positive step"));
                }
            }
            HeadKind::Hours => {}
        }
        Ok((tenant, signal))
    }

    /// The schema every batch of the answer has; anything else is refused by the reader.
    pub fn answer_schema(&self) -> Result<SchemaRef, String> {
        let signal = Signal::from_table(&self.signal).ok_or_else(|| format!("unknown signal {:?}", self.signal))?;
        Ok(match &self.kind {
            HeadKind::Rows { columns: Some(columns) } => {
                let schema = signal.schema();
                let indices = columns
                    .iter()
                    .map(|c| schema.index_of(c).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(schema.project(&indices).map_err(|e| e.to_string())?)
            }
            HeadKind::Rows { columns: None } | HeadKind::Trace { .. } | HeadKind::Logs { .. } => signal.schema(),
            HeadKind::Histogram { .. } => counts_schema(),
            HeadKind::Hours => hours_schema(),
        })
    }
}

/// The answer of [`HeadKind::Histogram`]: one `count` per bucket, in order.
pub fn counts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]))
}

/// The answer of [`HeadKind::Hours`]: one `hour` (hours since the epoch) per row.
pub fn hours_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("hour", DataType::Int64, false)]))
}

impl HeadRequest {
    /// Checks that an answer (already of [`Self::answer_schema`]) is no larger than asked for:
    /// at most `want` hits, exactly one count per bucket, a bounded list of hours.
    pub fn check_answer(&self, batches: &[RecordBatch]) -> Result<(), String> {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        match &self.kind {
            HeadKind::Logs { want, .. } if rows > *want => Err(format!("{rows} hits, {want} asked for")),
            HeadKind::Histogram { buckets, .. } if batches.len() != 1 || rows != *buckets => {
                Err(format!("{rows} counts in {} batches, {buckets} buckets asked for", batches.len()))
            }
            HeadKind::Hours if rows > MAX_HOURS => Err(format!("{rows} hours; at most {MAX_HOURS}")),
            _ => Ok(()),
        }
    }
}

/// One node's answer.
#[derive(Debug, Clone)]
pub struct HeadAnswer {
    pub node: String,
    /// That node's segments with `flush_lsn` at or past this hold rows of the answer.
    /// `u64::MAX` when its head was empty.
    pub overlap_from_lsn: u64,
    /// Of [`HeadRequest::answer_schema`].
    pub batches: Vec<RecordBatch>,
}

/// Every live ingester's answer, and a sentence for each one that did not give one.
#[derive(Debug, Clone, Default)]
pub struct PeerAnswers {
    pub answers: Vec<HeadAnswer>,
    pub missing: Vec<String>,
}

impl PeerAnswers {
    /// `(node, overlap_from_lsn)` of every answer, for leaving out the segments they overlap.
    pub fn overlaps(&self) -> impl Iterator<Item = (&str, u64)> {
        self.answers.iter().map(|a| (a.node.as_str(), a.overlap_from_lsn))
    }

    /// Adds a warning to `stats` for every node that did not answer.
    pub fn warn_into(&self, stats: &mut crate::ScanStats) {
        for w in &self.missing {
            stats.warn(w);
        }
    }

    pub fn rows(&self) -> u64 {
        self.answers.iter().flat_map(|a| &a.batches).map(|b| b.num_rows() as u64).sum()
    }
}

/// The other ingesting nodes of a deployment, as a query node reaches them.
#[async_trait::async_trait]
pub trait Peers: Send + Sync {
    /// Asks every live ingester but this node, at once. Never fails as a whole: a node that
    /// cannot answer in time is listed in [`PeerAnswers::missing`].
    async fn heads(&self, request: &HeadRequest) -> PeerAnswers;
}

/// A node alone (SQLite, or no other ingester): nothing to ask.
pub struct NoPeers;

#[async_trait::async_trait]
impl Peers for NoPeers {
    async fn heads(&self, _: &HeadRequest) -> PeerAnswers {
        PeerAnswers::default()
    }
}

/// An answer as an Arrow IPC stream (uncompressed).
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema).map_err(|e| e.to_string())?;
    for b in batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

/// Reads an answer from another node, which is trusted no further than a client: every batch
/// must have `schema` exactly, and compressed messages are refused before arrow sees them (a
/// compressed buffer declares its own decompressed length, and arrow allocates it).
pub fn decode(bytes: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    // Arrow panics on many malformed schema messages (unknown types, lists without a child,
    // …): the answer must open with exactly the schema message this node writes for the
    // schema asked for, so arrow only ever parses a schema of ours. Nodes of one version
    // write the same bytes; another version may not, and is then a node that did not answer.
    let ours = encode(schema, &[])?;
    let opening = &ours[..ours.len().saturating_sub(END_OF_STREAM)];
    if !bytes.starts_with(opening) {
        return Err("an Arrow IPC stream that does not open with the schema asked for".into());
    }
    check_messages(bytes)?;
    // The walk above keeps every buffer inside its body; should arrow still assert on
    // something, the answer is refused, not the query (or the compactor) brought down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_stream(bytes, schema)))
        .unwrap_or_else(|_| Err("an Arrow IPC stream arrow could not read".into()))
}

fn read_stream(bytes: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
    if reader.schema().fields() != schema.fields() {
        return Err(format!("an answer of schema {:?}, not the one asked for", reader.schema()));
    }
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| format!("a damaged Arrow IPC batch: {e}"))?;
        out.push(RecordBatch::try_new(schema.clone(), b.columns().to_vec()).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Walks the messages of an IPC stream (each: an optional `0xFFFFFFFF`, a 4-byte metadata
/// length, the flatbuffer, the body) and refuses any with compressed buffers or with a
/// buffer outside its body (arrow asserts on those).
fn check_messages(bytes: &[u8]) -> Result<(), String> {
    let mut pos = 0usize;
    let word = |at: usize| -> Result<u32, String> {
        let b = bytes.get(at..at + 4).ok_or("an Arrow IPC stream cut short")?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    loop {
        if pos == bytes.len() {
            return Ok(()); // a stream may end without its end-of-stream marker
        }
        let mut len = word(pos)?;
        pos += 4;
        if len == 0xFFFF_FFFF {
            len = word(pos)?;
            pos += 4;
        }
        if len == 0 {
            return Ok(());
        }
        let end =
            pos.checked_add(len as usize).filter(|e| *e <= bytes.len()).ok_or("an Arrow IPC message cut short")?;
        let message =
            arrow::ipc::root_as_message(&bytes[pos..end]).map_err(|e| format!("a damaged Arrow IPC message: {e}"))?;
        let body = usize::try_from(message.bodyLength()).map_err(|_| "a negative Arrow IPC body length")?;
        let batch =
            message.header_as_record_batch().or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        if let Some(b) = batch {
            if b.compression().is_some() {
                return Err("compressed Arrow IPC buffers are refused".into());
            }
            for buffer in b.buffers().into_iter().flatten() {
                let end = usize::try_from(buffer.offset())
                    .ok()
                    .zip(usize::try_from(buffer.length()).ok())
                    .and_then(|(o, l)| o.checked_add(l));
                if end.is_none_or(|end| end > body) {
                    return Err("an Arrow IPC buffer outside its message body".into());
                }
            }
        }
        pos = end.checked_add(body).filter(|e| *e <= bytes.len()).ok_or("an Arrow IPC body cut short")?;
    }
}

/// The end-of-stream marker `encode` writes: a continuation word and a zero length.
const END_OF_STREAM: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: HeadKind) -> HeadRequest {
        HeadRequest::new(&Tenant::default_tenant(), Signal::Logs, 0, 10, kind)
    }

    #[test]
    fn requests_are_checked() {
        assert!(req(HeadKind::Rows { columns: None }).validate().is_ok());
        assert!(req(HeadKind::Rows { columns: Some(vec!["nope".into()]) }).validate().is_err());
        assert!(req(HeadKind::Trace { trace_ids: vec![String::new(); MAX_LIST + 1] }).validate().is_err());
        assert!(req(HeadKind::Logs { search: HeadSearch::default(), want: MAX_WANT + 1 }).validate().is_err());
        let hist = |step_ns, buckets| req(HeadKind::Histogram { search: HeadSearch::default(), step_ns, buckets });
        assert!(hist(1, MAX_BUCKETS).validate().is_ok());
        assert!(hist(0, 10).validate().is_err());
        assert!(hist(1, MAX_BUCKETS + 1).validate().is_err());
        let mut r = req(HeadKind::Hours);
        r.v = 2;
        assert!(r.validate().is_err());
        let mut r = req(HeadKind::Hours);
        r.tenant = "a/b".into();
        assert!(r.validate().is_err());
        let mut r = req(HeadKind::Hours);
        (r.start_ns, r.end_ns) = (10, 0);
        assert!(r.validate().is_err());
        let spans = HeadRequest::new(
            &Tenant::default_tenant(),
            Signal::Spans,
            0,
            1,
            HeadKind::Logs { search: HeadSearch::default(), want: 1 },
        );
        assert!(spans.validate().is_err(), "a log search of spans");
    }

    #[test]
    fn the_request_round_trips_and_names_its_answer() {
        let r = req(HeadKind::Rows { columns: Some(vec!["time".into(), "body".into()]) });
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""kind":"rows""#), "{json}");
        assert_eq!(serde_json::from_str::<HeadRequest>(&json).unwrap(), r);
        let schema = r.answer_schema().unwrap();
        assert_eq!(schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["time", "body"]);
        assert!(serde_json::from_str::<HeadRequest>(&json.replace("\"v\"", "\"extra\":1,\"v\"")).is_err());
    }

    #[test]
    fn answers_round_trip_and_hostile_ones_are_refused() {
        use arrow::array::UInt64Array;
        let batch = RecordBatch::try_new(counts_schema(), vec![Arc::new(UInt64Array::from(vec![1, 2, 3]))]).unwrap();
        let bytes = encode(&counts_schema(), &[batch.clone(), batch.clone()]).unwrap();
        assert_eq!(decode(&bytes, &counts_schema()).unwrap(), vec![batch.clone(), batch.clone()]);
        // Another schema than asked for.
        assert!(decode(&bytes, &hours_schema()).unwrap_err().contains("schema"));
        // Every truncation fails cleanly or yields whole batches only.
        for cut in 0..bytes.len() {
            if let Ok(b) = decode(&bytes[..cut], &counts_schema()) {
                assert!(b.len() <= 2);
            }
        }
        // A compressed stream is refused before arrow reads it.
        let mut out = Vec::new();
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::ZSTD))
            .unwrap();
        let mut w =
            arrow::ipc::writer::StreamWriter::try_new_with_options(&mut out, &counts_schema(), options).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        assert!(decode(&out, &counts_schema()).unwrap_err().contains("compressed"));
        // Garbage.
        assert!(decode(b"\xff\xff\xff\xff\x10\x00\x00\x00garbagegarbage!!", &counts_schema()).is_err());
        assert!(decode(&[0xff; 64], &counts_schema()).is_err());
        // Every byte of a valid answer damaged three ways: refused or read, never a panic
        // (offsets, lengths and counts in the flatbuffers included).
        let big =
            RecordBatch::try_new(counts_schema(), vec![Arc::new(UInt64Array::from((0..100).collect::<Vec<u64>>()))])
                .unwrap();
        let bytes = encode(&counts_schema(), &[big]).unwrap();
        for i in 0..bytes.len() {
            for v in [0x00, 0x7f, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] = v;
                if let Ok(batches) = decode(&damaged, &counts_schema()) {
                    assert!(batches.iter().all(|b| b.schema().fields() == counts_schema().fields()));
                }
            }
        }
    }

    #[test]
    fn answers_larger_than_asked_for_are_refused() {
        use arrow::array::UInt64Array;
        let counts = |n: u64| {
            RecordBatch::try_new(counts_schema(), vec![Arc::new(UInt64Array::from((0..n).collect::<Vec<_>>()))])
                .unwrap()
        };
        let hist = req(HeadKind::Histogram { search: HeadSearch::default(), step_ns: 1, buckets: 3 });
        assert!(hist.check_answer(&[counts(3)]).is_ok());
        assert!(hist.check_answer(&[counts(4)]).is_err());
        assert!(hist.check_answer(&[counts(1), counts(2)]).is_err(), "one batch of counts");
        assert!(hist.check_answer(&[]).is_err());
        let logs = req(HeadKind::Logs { search: HeadSearch::default(), want: 2 });
        assert!(logs.check_answer(&[]).is_ok());
        assert!(logs.check_answer(&[counts(3)]).is_err(), "more hits than asked for");
        // Log searches do arithmetic on times: no i64 extremes.
        let mut r = logs.clone();
        r.start_ns = i64::MIN;
        assert!(r.validate().is_err());
        let mut r = logs;
        r.end_ns = i64::MAX;
        assert!(r.validate().is_err());
    }
}
