//! Arrow rows of `spans`, `logs` and `metrics` as the correlation answers' records.

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int32Array, Int64Array, ListArray, MapArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray,
};
use tracelight_model::correlate::{Attributes, ExemplarRef, LogRecord, SpanEvent, SpanLink, SpanRecord};

fn strings<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).unwrap_or_else(|| panic!("{name} is Utf8"))
}

fn times<'a>(b: &'a RecordBatch, name: &str) -> &'a TimestampNanosecondArray {
    b.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).unwrap_or_else(|| panic!("{name} is Timestamp"))
}

fn maps<'a>(b: &'a RecordBatch, name: &str) -> &'a MapArray {
    b.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).unwrap_or_else(|| panic!("{name} is a Map"))
}

fn lists<'a>(b: &'a RecordBatch, name: &str) -> &'a ListArray {
    b.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).unwrap_or_else(|| panic!("{name} is a List"))
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn struct_strings<'a>(s: &'a StructArray, name: &str) -> &'a StringArray {
    s.column_by_name(name).and_then(|c| c.as_any().downcast_ref()).unwrap_or_else(|| panic!("{name} is Utf8"))
}

/// The attributes at row `i` of a `Map<Utf8, Utf8>` column.
pub fn attributes(m: &MapArray, i: usize) -> Attributes {
    let mut out = Attributes::new();
    if m.is_null(i) {
        return out;
    }
    let entries = m.value(i);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    for j in 0..keys.len() {
        if values.is_valid(j) {
            out.insert(keys.value(j).to_string(), values.value(j).to_string());
        }
    }
    out
}

pub fn spans(b: &RecordBatch) -> Vec<SpanRecord> {
    let (trace, span, parent) = (strings(b, "trace_id"), strings(b, "span_id"), strings(b, "parent_span_id"));
    let (name, kind, service) = (strings(b, "name"), strings(b, "kind"), strings(b, "service_name"));
    let (status, status_msg, scope) =
        (strings(b, "status_code"), strings(b, "status_message"), strings(b, "scope_name"));
    let (start, end) = (times(b, "start_time"), times(b, "end_time"));
    let duration: &Int64Array = b.column_by_name("duration_ns").and_then(|c| c.as_any().downcast_ref()).expect("Int64");
    let (attrs, res) = (maps(b, "attributes"), maps(b, "resource_attributes"));
    let (events, links) = (lists(b, "events"), lists(b, "links"));
    (0..b.num_rows())
        .map(|i| SpanRecord {
            trace_id: trace.value(i).to_string(),
            span_id: span.value(i).to_string(),
            parent_span_id: opt(parent, i),
            name: name.value(i).to_string(),
            kind: kind.value(i).to_string(),
            service_name: service.value(i).to_string(),
            start_ns: start.value(i),
            end_ns: end.value(i),
            duration_ns: duration.value(i),
            status_code: status.value(i).to_string(),
            status_message: opt(status_msg, i),
            attributes: attributes(attrs, i),
            resource_attributes: attributes(res, i),
            scope_name: opt(scope, i),
            events: span_events(events, i),
            links: span_links(links, i),
        })
        .collect()
}

fn span_events(l: &ListArray, i: usize) -> Vec<SpanEvent> {
    if l.is_null(i) {
        return Vec::new();
    }
    let items = l.value(i);
    let s = items.as_struct();
    let (time, name) = (
        s.column_by_name("time").and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>()).expect("time"),
        struct_strings(s, "name"),
    );
    let attrs = s.column_by_name("attributes").and_then(|c| c.as_any().downcast_ref::<MapArray>()).expect("map");
    (0..s.len())
        .map(|j| SpanEvent {
            time_ns: time.value(j),
            name: name.value(j).to_string(),
            attributes: attributes(attrs, j),
        })
        .collect()
}

fn span_links(l: &ListArray, i: usize) -> Vec<SpanLink> {
    if l.is_null(i) {
        return Vec::new();
    }
    let items = l.value(i);
    let s = items.as_struct();
    let (trace, span) = (struct_strings(s, "trace_id"), struct_strings(s, "span_id"));
    let attrs = s.column_by_name("attributes").and_then(|c| c.as_any().downcast_ref::<MapArray>()).expect("map");
    (0..s.len())
        .map(|j| SpanLink {
            trace_id: trace.value(j).to_string(),
            span_id: span.value(j).to_string(),
            attributes: attributes(attrs, j),
        })
        .collect()
}

pub fn logs(b: &RecordBatch) -> Vec<LogRecord> {
    let (time, trace, span) = (times(b, "time"), strings(b, "trace_id"), strings(b, "span_id"));
    let (sev_text, body, service) = (strings(b, "severity_text"), strings(b, "body"), strings(b, "service_name"));
    let sev: &Int32Array = b.column_by_name("severity_number").and_then(|c| c.as_any().downcast_ref()).expect("Int32");
    let (attrs, res) = (maps(b, "attributes"), maps(b, "resource_attributes"));
    (0..b.num_rows())
        .map(|i| LogRecord {
            time_ns: time.value(i),
            trace_id: opt(trace, i),
            span_id: opt(span, i),
            severity_number: sev.value(i),
            severity_text: opt(sev_text, i),
            body: opt(body, i),
            service_name: service.value(i).to_string(),
            attributes: attributes(attrs, i),
            resource_attributes: attributes(res, i),
        })
        .collect()
}

/// The exemplars of metric rows that name `trace_id`.
pub fn exemplars(b: &RecordBatch, trace_id: &str) -> Vec<ExemplarRef> {
    let (name, service, attrs) = (strings(b, "name"), strings(b, "service_name"), maps(b, "attributes"));
    let ex = lists(b, "exemplars");
    let mut out = Vec::new();
    for i in 0..b.num_rows() {
        if ex.is_null(i) {
            continue;
        }
        let items = ex.value(i);
        let s = items.as_struct();
        let time = s.column_by_name("time").and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>());
        let value = s.column_by_name("value").and_then(|c| c.as_any().downcast_ref::<Float64Array>());
        let (trace, span) = (struct_strings(s, "trace_id"), struct_strings(s, "span_id"));
        for j in 0..s.len() {
            if trace.is_valid(j) && trace.value(j) == trace_id {
                out.push(ExemplarRef {
                    metric: name.value(i).to_string(),
                    service_name: service.value(i).to_string(),
                    time_ns: time.map_or(0, |t| t.value(j)),
                    value: value.filter(|v| v.is_valid(j)).map(|v| v.value(j)),
                    trace_id: trace_id.to_string(),
                    span_id: opt(span, j),
                    attributes: attributes(attrs, i),
                });
            }
        }
    }
    out
}
