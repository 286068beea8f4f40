//! The one tantivy schema every index uses, and how Arrow rows become index documents.
//!
//! An index document carries no stored fields: only what searching needs (terms and two fast
//! fields, `time` and `row`), and no field norms (hits are ordered by time, never scored). The
//! row itself is read back from Parquet or the head by its address.
//!
//! | field         | from                                  | indexed as                              |
//! |---------------|---------------------------------------|-----------------------------------------|
//! | `body`        | log body                              | words (lower-cased), documents only     |
//! | `attr_values` | every attribute value of a log        | words, documents only (default field)   |
//! | `attributes`  | log attributes as an object           | `attributes.user.id:42`, dots expanded  |
//! | `service`     | `service_name`                        | one exact term                          |
//! | `severity`    | severity number, else text            | one upper-case term: `ERROR`, `WARN`, … |
//! | `trace_id`    | trace ID (head indexes only)          | one lower-case term per ID              |
//!
//! No positions and no frequencies: a phrase is found as all of its words and checked against
//! the row ([`crate::verify`]), which costs reading the candidates' text but saves more bytes
//! than the words themselves take. Segment indexes hold no trace IDs: the segment's trace-ID
//! index (`<id>.tid`) answers those. Indexes written by earlier versions have positions and
//! trace-ID terms; they are searched the same way.
//! | `time`        | the row's time column                 | fast field (ranges, newest-first order) |
//! | `row`         | the row's address in its segment      | fast field                              |

use std::collections::BTreeMap;

use arrow::array::{
    Array, AsArray, Int32Array, ListArray, MapArray, RecordBatch, StringArray, StructArray, TimestampNanosecondArray,
};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, JsonObjectOptions, OwnedValue, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer};
use tantivy::{Index, IndexWriter, TantivyDocument};
use tracelight_model::Signal;

/// Tokenizer for IDs: the whole value as one term, lower-cased, so any case finds it.
pub const ID_TOKENIZER: &str = "tl_id";

#[derive(Clone, Copy)]
pub struct Fields {
    pub body: Field,
    pub attr_values: Field,
    pub attributes: Field,
    pub service: Field,
    pub severity: Field,
    pub trace_id: Field,
    pub time: Field,
    pub row: Field,
}

pub fn schema() -> (Schema, Fields) {
    schema_with(IndexRecordOption::Basic)
}

/// The schema with `words` as what the text fields record (tests build the position-keeping
/// format of earlier versions with it, as an oracle).
pub fn schema_with(words: IndexRecordOption) -> (Schema, Fields) {
    let mut b = Schema::builder();
    let indexing = |tokenizer: &str, option| {
        TextFieldIndexing::default().set_tokenizer(tokenizer).set_index_option(option).set_fieldnorms(false)
    };
    let text = TextOptions::default().set_indexing_options(indexing("default", words));
    let id = TextOptions::default().set_indexing_options(indexing(ID_TOKENIZER, IndexRecordOption::Basic));
    let keyword = TextOptions::default().set_indexing_options(indexing("raw", IndexRecordOption::Basic));
    let json = JsonObjectOptions::default().set_expand_dots_enabled().set_indexing_options(indexing("default", words));
    let fields = Fields {
        body: b.add_text_field("body", text.clone()),
        attr_values: b.add_text_field("attr_values", text),
        attributes: b.add_json_field("attributes", json),
        service: b.add_text_field("service", keyword.clone()),
        severity: b.add_text_field("severity", keyword),
        trace_id: b.add_text_field("trace_id", id),
        time: b.add_i64_field("time", FAST),
        row: b.add_u64_field("row", FAST),
    };
    (b.build(), fields)
}

/// Looks the fields up in an opened index's schema.
pub fn fields_of(schema: &Schema) -> tantivy::Result<Fields> {
    let f = |name: &str| schema.get_field(name);
    Ok(Fields {
        body: f("body")?,
        attr_values: f("attr_values")?,
        attributes: f("attributes")?,
        service: f("service")?,
        severity: f("severity")?,
        trace_id: f("trace_id")?,
        time: f("time")?,
        row: f("row")?,
    })
}

/// Tokenizers are not saved with an index: every opened or created index needs this.
pub fn register_tokenizers(index: &Index) {
    index
        .tokenizers()
        .register(ID_TOKENIZER, TextAnalyzer::builder(RawTokenizer::default()).filter(LowerCaser).build());
}

/// The severity term of a log: the OTLP severity-number range's name, or the upper-cased text
/// when the number is unset (0).
pub fn severity_name(number: i32, text: Option<&str>) -> Option<String> {
    let name = match number {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => return text.filter(|t| !t.is_empty()).map(|t| t.trim().to_ascii_uppercase()),
    };
    Some(name.to_string())
}

fn string_col<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>())
}

fn opt(a: Option<&StringArray>, i: usize) -> Option<&str> {
    a.filter(|a| a.is_valid(i)).map(|a| a.value(i))
}

/// Adds one document per row of `batch` (of `signal`'s schema) that has something to index
/// (every log record: a segment's documents are then its rows, in order). `address(i)` is what
/// the document records as the row's address. `trace_ids`: index trace IDs too (the head's
/// indexes; a segment has its trace-ID index beside it).
pub fn add_rows(
    writer: &IndexWriter,
    f: &Fields,
    signal: Signal,
    batch: &RecordBatch,
    trace_ids: bool,
    address: impl Fn(usize) -> u64,
) -> tantivy::Result<usize> {
    let times = batch
        .column_by_name(signal.time_column())
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .expect("time column is Timestamp(ns)");
    let service = string_col(batch, "service_name");
    let trace = string_col(batch, "trace_id");
    let body = string_col(batch, "body");
    let sev_text = string_col(batch, "severity_text");
    let sev_num = batch.column_by_name("severity_number").and_then(|c| c.as_any().downcast_ref::<Int32Array>());
    let attrs = batch.column_by_name("attributes").and_then(|c| c.as_any().downcast_ref::<MapArray>());
    let exemplars = batch.column_by_name("exemplars").and_then(|c| c.as_any().downcast_ref::<ListArray>());
    let mut added = 0;
    for i in 0..batch.num_rows() {
        let mut doc = TantivyDocument::new();
        let indexed = match signal {
            Signal::Spans => {
                if let Some(t) = opt(trace, i).filter(|_| trace_ids) {
                    doc.add_text(f.trace_id, t);
                }
                true
            }
            Signal::Logs => {
                if let Some(t) = opt(trace, i).filter(|_| trace_ids) {
                    doc.add_text(f.trace_id, t);
                }
                if let Some(b) = opt(body, i) {
                    doc.add_text(f.body, b);
                }
                if let Some(sev) = severity_name(sev_num.map_or(0, |a| a.value(i)), opt(sev_text, i)) {
                    doc.add_text(f.severity, sev);
                }
                if let Some(m) = attrs {
                    add_attributes(&mut doc, f, m, i);
                }
                true
            }
            // Only points with exemplars that name a trace: the trace page shows them.
            Signal::Metrics => exemplars.is_some_and(|ex| add_exemplar_trace_ids(&mut doc, f, ex, i)),
        };
        if !indexed {
            continue;
        }
        if let Some(s) = opt(service, i) {
            doc.add_text(f.service, s);
        }
        doc.add_i64(f.time, times.value(i));
        doc.add_u64(f.row, address(i));
        writer.add_document(doc)?;
        added += 1;
    }
    Ok(added)
}

/// Attribute values as words (`attr_values`) and the attributes as an object (`attributes`).
fn add_attributes(doc: &mut TantivyDocument, f: &Fields, m: &MapArray, i: usize) {
    if m.is_null(i) {
        return;
    }
    let entries = m.value(i);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    let mut object = BTreeMap::new();
    for j in 0..keys.len() {
        if values.is_valid(j) {
            let v = values.value(j);
            doc.add_text(f.attr_values, v);
            object.insert(keys.value(j).to_string(), OwnedValue::Str(v.to_string()));
        }
    }
    if !object.is_empty() {
        doc.add_object(f.attributes, object);
    }
}

/// The trace IDs of a point's exemplars; false when none names a trace.
fn add_exemplar_trace_ids(doc: &mut TantivyDocument, f: &Fields, ex: &ListArray, i: usize) -> bool {
    if ex.is_null(i) || ex.value_length(i) == 0 {
        return false;
    }
    let items = ex.value(i);
    let items: &StructArray = items.as_struct();
    let Some(ids) = items.column_by_name("trace_id").and_then(|c| c.as_any().downcast_ref::<StringArray>()) else {
        return false;
    };
    let mut any = false;
    for j in 0..ids.len() {
        if ids.is_valid(j) {
            doc.add_text(f.trace_id, ids.value(j));
            any = true;
        }
    }
    any
}
