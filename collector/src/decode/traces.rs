//! `ExportTraceServiceRequest` → `spans` rows.

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use tracelight_model::schema::{event_struct_fields, link_struct_fields};
use tracelight_model::{Signal, SignalBatch};

use super::common::{
    AttrBuilder, Reason, ResourceInfo, ResourceScopeCols, ScopeInfo, Tally, append_attrs, arr, attr_builder,
    check_window, hex_id, non_empty, presize, struct_list, to_i64, ts_builder, valid_id,
};
use super::{DecodeContext, Decoded, ItemLimits};

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        1 => "OK",
        2 => "ERROR",
        _ => "UNSET",
    }
}

/// A span that passed validation: its times and whether it has a (non-zero) parent.
struct Checked {
    start: i64,
    end: i64,
    has_parent: bool,
}

fn check_span(span: &Span, now_ns: i64, limits: &ItemLimits) -> Result<Checked, Reason> {
    if !valid_id(&span.trace_id, 16) {
        return Err(Reason::InvalidTraceId);
    }
    if !valid_id(&span.span_id, 8) {
        return Err(Reason::InvalidSpanId);
    }
    let has_parent = match span.parent_span_id.len() {
        0 => false,
        8 => span.parent_span_id.iter().any(|&b| b != 0),
        _ => return Err(Reason::InvalidParentSpanId),
    };
    if span.start_time_unix_nano == 0 {
        return Err(Reason::MissingStartTime);
    }
    let (Some(start), Some(end)) = (to_i64(span.start_time_unix_nano), to_i64(span.end_time_unix_nano)) else {
        return Err(Reason::TimestampOutOfRange);
    };
    if span.events.iter().any(|e| to_i64(e.time_unix_nano).is_none()) {
        return Err(Reason::TimestampOutOfRange);
    }
    if end < start {
        return Err(Reason::EndBeforeStart);
    }
    check_window(start, now_ns, limits)?;
    check_window(end, now_ns, limits)?;
    Ok(Checked { start, end, has_parent })
}

/// Sizes from a first pass, to allocate every builder once.
#[derive(Default)]
struct Counts {
    spans: usize,
    events: usize,
    links: usize,
    span_attrs: usize,
    event_attrs: usize,
    link_attrs: usize,
    resource_entries: usize,
}

fn count(req: &ExportTraceServiceRequest) -> Counts {
    let mut c = Counts::default();
    for rs in &req.resource_spans {
        let res_attrs = rs.resource.as_ref().map_or(0, |r| r.attributes.len());
        for ss in &rs.scope_spans {
            c.spans += ss.spans.len();
            c.resource_entries = c.resource_entries.saturating_add(res_attrs.saturating_mul(ss.spans.len()));
            for span in &ss.spans {
                c.span_attrs += span.attributes.len();
                c.events += span.events.len();
                c.links += span.links.len();
                for e in &span.events {
                    c.event_attrs += e.attributes.len();
                }
                for l in &span.links {
                    c.link_attrs += l.attributes.len();
                }
            }
        }
    }
    // Hints only, from counts the client wrote: builders grow with what is appended.
    Counts {
        spans: presize(c.spans),
        events: presize(c.events),
        links: presize(c.links),
        span_attrs: presize(c.span_attrs),
        event_attrs: presize(c.event_attrs),
        link_attrs: presize(c.link_attrs),
        resource_entries: presize(c.resource_entries),
    }
}

struct SpanCols {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: AttrBuilder,
    dropped_attributes_count: UInt32Builder,
    // events: List<Struct<time, name, attributes, dropped_attributes_count>>
    ev_offsets: Vec<i32>,
    ev_len: i32,
    ev_time: TimestampNanosecondBuilder,
    ev_name: StringBuilder,
    ev_attributes: AttrBuilder,
    ev_dropped: UInt32Builder,
    dropped_events_count: UInt32Builder,
    // links: List<Struct<trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags>>
    ln_offsets: Vec<i32>,
    ln_len: i32,
    ln_trace_id: StringBuilder,
    ln_span_id: StringBuilder,
    ln_trace_state: StringBuilder,
    ln_attributes: AttrBuilder,
    ln_dropped: UInt32Builder,
    ln_flags: UInt32Builder,
    dropped_links_count: UInt32Builder,
    rs: ResourceScopeCols,
}

/// Per-request conversion state shared by every span.
struct Scratch {
    text: String,
    id: [u8; 32],
    truncated: u64,
}

impl SpanCols {
    fn with_capacity(c: &Counts, limits: &ItemLimits) -> SpanCols {
        let n = c.spans;
        let mut ev_offsets = Vec::with_capacity(n + 1);
        ev_offsets.push(0);
        let mut ln_offsets = Vec::with_capacity(n + 1);
        ln_offsets.push(0);
        SpanCols {
            trace_id: StringBuilder::with_capacity(n, n * 32),
            span_id: StringBuilder::with_capacity(n, n * 16),
            parent_span_id: StringBuilder::with_capacity(n, n * 16),
            trace_state: StringBuilder::with_capacity(n, 0),
            flags: UInt32Builder::with_capacity(n),
            name: StringBuilder::with_capacity(n, n * 24),
            kind: StringBuilder::with_capacity(n, n * 6),
            start_time: ts_builder(n),
            end_time: ts_builder(n),
            duration_ns: Int64Builder::with_capacity(n),
            status_code: StringBuilder::with_capacity(n, n * 5),
            status_message: StringBuilder::with_capacity(n, 0),
            attributes: attr_builder(n, c.span_attrs),
            dropped_attributes_count: UInt32Builder::with_capacity(n),
            ev_offsets,
            ev_len: 0,
            ev_time: ts_builder(c.events),
            ev_name: StringBuilder::with_capacity(c.events, c.events * 16),
            ev_attributes: attr_builder(c.events, c.event_attrs),
            ev_dropped: UInt32Builder::with_capacity(c.events),
            dropped_events_count: UInt32Builder::with_capacity(n),
            ln_offsets,
            ln_len: 0,
            ln_trace_id: StringBuilder::with_capacity(c.links, c.links * 32),
            ln_span_id: StringBuilder::with_capacity(c.links, c.links * 16),
            ln_trace_state: StringBuilder::with_capacity(c.links, 0),
            ln_attributes: attr_builder(c.links, c.link_attrs),
            ln_dropped: UInt32Builder::with_capacity(c.links),
            ln_flags: UInt32Builder::with_capacity(c.links),
            dropped_links_count: UInt32Builder::with_capacity(n),
            rs: ResourceScopeCols::with_capacity(n, c.resource_entries, limits),
        }
    }

    fn append(&mut self, span: &Span, ok: &Checked, limits: &ItemLimits, sc: &mut Scratch) {
        self.trace_id.append_value(hex_id(&span.trace_id, &mut sc.id));
        self.span_id.append_value(hex_id(&span.span_id, &mut sc.id));
        if ok.has_parent {
            self.parent_span_id.append_value(hex_id(&span.parent_span_id, &mut sc.id));
        } else {
            self.parent_span_id.append_null();
        }
        self.trace_state.append_option(non_empty(&span.trace_state));
        self.flags.append_value(span.flags);
        self.name.append_value(&span.name);
        self.kind.append_value(kind_name(span.kind));
        self.start_time.append_value(ok.start);
        self.end_time.append_value(ok.end);
        self.duration_ns.append_value(ok.end - ok.start);
        match &span.status {
            Some(st) => {
                self.status_code.append_value(status_name(st.code));
                self.status_message.append_option(non_empty(&st.message));
            }
            None => {
                self.status_code.append_value("UNSET");
                self.status_message.append_null();
            }
        }
        let dropped = append_attrs(&mut self.attributes, &span.attributes, limits, &mut sc.text, &mut sc.truncated);
        self.dropped_attributes_count.append_value(span.dropped_attributes_count.saturating_add(dropped));

        for ev in &span.events {
            // Range checked by `check_span`.
            self.ev_time.append_value(ev.time_unix_nano as i64);
            self.ev_name.append_value(&ev.name);
            let dropped =
                append_attrs(&mut self.ev_attributes, &ev.attributes, limits, &mut sc.text, &mut sc.truncated);
            self.ev_dropped.append_value(ev.dropped_attributes_count.saturating_add(dropped));
            self.ev_len += 1;
        }
        self.ev_offsets.push(self.ev_len);
        self.dropped_events_count.append_value(span.dropped_events_count);

        let mut bad_links = 0u32;
        for link in &span.links {
            if !valid_id(&link.trace_id, 16) || !valid_id(&link.span_id, 8) {
                bad_links = bad_links.saturating_add(1);
                continue;
            }
            self.ln_trace_id.append_value(hex_id(&link.trace_id, &mut sc.id));
            self.ln_span_id.append_value(hex_id(&link.span_id, &mut sc.id));
            self.ln_trace_state.append_option(non_empty(&link.trace_state));
            let dropped =
                append_attrs(&mut self.ln_attributes, &link.attributes, limits, &mut sc.text, &mut sc.truncated);
            self.ln_dropped.append_value(link.dropped_attributes_count.saturating_add(dropped));
            self.ln_flags.append_value(link.flags);
            self.ln_len += 1;
        }
        self.ln_offsets.push(self.ln_len);
        self.dropped_links_count.append_value(span.dropped_links_count.saturating_add(bad_links));
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let events = struct_list(
            event_struct_fields(),
            vec![
                arr(self.ev_time.finish()),
                arr(self.ev_name.finish()),
                arr(self.ev_attributes.finish()),
                arr(self.ev_dropped.finish()),
            ],
            std::mem::take(&mut self.ev_offsets),
            None,
        );
        let links = struct_list(
            link_struct_fields(),
            vec![
                arr(self.ln_trace_id.finish()),
                arr(self.ln_span_id.finish()),
                arr(self.ln_trace_state.finish()),
                arr(self.ln_attributes.finish()),
                arr(self.ln_dropped.finish()),
                arr(self.ln_flags.finish()),
            ],
            std::mem::take(&mut self.ln_offsets),
            None,
        );
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(25);
        columns.push(arr(self.trace_id.finish()));
        columns.push(arr(self.span_id.finish()));
        columns.push(arr(self.parent_span_id.finish()));
        columns.push(arr(self.trace_state.finish()));
        columns.push(arr(self.flags.finish()));
        columns.push(arr(self.name.finish()));
        columns.push(arr(self.kind.finish()));
        columns.push(arr(self.start_time.finish()));
        columns.push(arr(self.end_time.finish()));
        columns.push(arr(self.duration_ns.finish()));
        columns.push(arr(self.status_code.finish()));
        columns.push(arr(self.status_message.finish()));
        columns.push(arr(self.attributes.finish()));
        columns.push(arr(self.dropped_attributes_count.finish()));
        columns.push(events);
        columns.push(arr(self.dropped_events_count.finish()));
        columns.push(links);
        columns.push(arr(self.dropped_links_count.finish()));
        self.rs.finish_into(&mut columns);
        columns
    }
}

pub(crate) fn convert(req: &ExportTraceServiceRequest, ctx: &DecodeContext) -> Decoded {
    let limits = &ctx.limits;
    let mut tally = Tally::default();
    let mut sc = Scratch { text: String::new(), id: [0u8; 32], truncated: 0 };
    let mut cols = SpanCols::with_capacity(&count(req), limits);
    for rs in &req.resource_spans {
        if rs.scope_spans.iter().all(|ss| ss.spans.is_empty()) {
            continue;
        }
        let res = ResourceInfo::new(rs.resource.as_ref(), &rs.schema_url, limits, &mut sc.text, &mut sc.truncated);
        for ss in &rs.scope_spans {
            if ss.spans.is_empty() {
                continue;
            }
            let scope = ScopeInfo::new(ss.scope.as_ref(), &ss.schema_url, limits, &mut sc.text, &mut sc.truncated);
            // Checked in the order sent (so rejections are reported in that order), then
            // appended in time order within the scope (SDKs export roughly so already): a
            // flush writes a request's rows as they are, and sorted timestamps cost a few bits.
            let mut ok: Vec<(&Span, Checked)> = Vec::with_capacity(ss.spans.len());
            for span in &ss.spans {
                match check_span(span, ctx.now_ns, limits) {
                    Ok(c) => ok.push((span, c)),
                    Err(reason) => tally.reject(reason),
                }
            }
            if !ok.is_sorted_by_key(|(_, c)| c.start) {
                ok.sort_by_key(|(_, c)| c.start);
            }
            for (span, c) in ok {
                if !cols.rs.fits(&res, &scope, 0) {
                    tally.reject(Reason::RepeatedTooLarge);
                    continue;
                }
                cols.append(span, &c, limits, &mut sc);
                cols.rs.append(&res, &scope);
            }
        }
    }
    let batch = RecordBatch::try_new(Signal::Spans.schema(), cols.finish())
        .expect("span columns are built in the spans schema");
    tally.truncated += sc.truncated;
    tally.into_decoded(SignalBatch { tenant: ctx.tenant.clone(), signal: Signal::Spans, batch }, "spans")
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type};
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;
    use crate::decode::test_util::{ctx, fixture, kv, map_at, map_entries, owned, s, text, texts};
    use crate::decode::{Format, decode_traces, traces_to_arrow};

    const TRACE_ID: [u8; 16] =
        [0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c];
    const SPAN_ID: [u8; 8] = [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74];
    const T0: u64 = 1_544_712_660_000_000_000;

    fn span(name: &str) -> Span {
        Span {
            trace_id: TRACE_ID.to_vec(),
            span_id: SPAN_ID.to_vec(),
            name: name.to_string(),
            kind: 3,
            start_time_unix_nano: T0,
            end_time_unix_nano: T0 + 250,
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("checkout")), kv("host.name", s("h1"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "lib".into(), version: "".into(), ..Default::default() }),
                    spans,
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn ts_at(batch: &RecordBatch, col: &str, row: usize) -> i64 {
        batch.column_by_name(col).unwrap().as_primitive::<TimestampNanosecondType>().value(row)
    }

    fn u32_at(batch: &RecordBatch, col: &str, row: usize) -> u32 {
        batch.column_by_name(col).unwrap().as_primitive::<UInt32Type>().value(row)
    }

    #[test]
    fn fixture_trace_gives_one_span() {
        let d = decode_traces(&fixture("trace.json"), Format::Json, &ctx()).unwrap();
        assert_eq!(d.rejected, 0);
        assert!(d.message.is_none());
        assert_eq!(d.batch.signal, Signal::Spans);
        let b = &d.batch.batch;
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema(), Signal::Spans.schema());
        assert_eq!(text(b, "trace_id", 0).as_deref(), Some("5b8efff798038103d269b633813fc60c"));
        assert_eq!(text(b, "span_id", 0).as_deref(), Some("eee19b7ec3c1b174"));
        assert_eq!(text(b, "parent_span_id", 0).as_deref(), Some("eee19b7ec3c1b173"));
        assert_eq!(text(b, "trace_state", 0), None);
        assert_eq!(text(b, "name", 0).as_deref(), Some("I'm a server span"));
        assert_eq!(text(b, "kind", 0).as_deref(), Some("SERVER"));
        assert_eq!(text(b, "service_name", 0).as_deref(), Some("my.service"));
        assert_eq!(text(b, "status_code", 0).as_deref(), Some("UNSET"));
        assert_eq!(text(b, "status_message", 0), None);
        assert_eq!(ts_at(b, "start_time", 0), 1_544_712_660_000_000_000);
        assert_eq!(ts_at(b, "end_time", 0), 1_544_712_661_000_000_000);
        assert_eq!(b.column_by_name("duration_ns").unwrap().as_primitive::<Int64Type>().value(0), 1_000_000_000);
        assert_eq!(map_at(b, "attributes", 0), owned(&[("my.span.attr", Some("some value"))]));
        assert_eq!(map_at(b, "resource_attributes", 0), owned(&[("service.name", Some("my.service"))]));
        assert_eq!(text(b, "scope_name", 0).as_deref(), Some("my.library"));
        assert_eq!(text(b, "scope_version", 0).as_deref(), Some("1.0.0"));
        assert_eq!(map_at(b, "scope_attributes", 0), owned(&[("my.scope.attribute", Some("some scope attribute"))]));
        assert_eq!(text(b, "resource_schema_url", 0), None);
        assert_eq!(text(b, "scope_schema_url", 0), None);
        assert_eq!(b.column_by_name("events").unwrap().as_list::<i32>().value_length(0), 0);
        assert_eq!(b.column_by_name("links").unwrap().as_list::<i32>().value_length(0), 0);
        assert_eq!(u32_at(b, "dropped_attributes_count", 0), 0);
    }

    #[test]
    fn json_accepts_lower_case_ids_string_int64_and_unknown_fields() {
        let body = br#"{"resourceSpans":[{"unknownField":1,"scopeSpans":[{"spans":[{
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "name":"s","kind":1,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712660000000500",
            "status":{"code":2,"message":"boom"},"somethingNew":{"x":[1]}}]}]}]}"#;
        let d = decode_traces(body, Format::Json, &ctx()).unwrap();
        let b = &d.batch.batch;
        assert_eq!(b.num_rows(), 1, "{:?}", d.message);
        assert_eq!(text(b, "trace_id", 0).as_deref(), Some("5b8efff798038103d269b633813fc60c"));
        assert_eq!(text(b, "parent_span_id", 0), None);
        assert_eq!(text(b, "kind", 0).as_deref(), Some("INTERNAL"));
        assert_eq!(text(b, "status_code", 0).as_deref(), Some("ERROR"));
        assert_eq!(text(b, "status_message", 0).as_deref(), Some("boom"));
        assert_eq!(text(b, "service_name", 0).as_deref(), Some("unknown_service"));
        assert_eq!(b.column_by_name("duration_ns").unwrap().as_primitive::<Int64Type>().value(0), 500);
    }

    #[test]
    fn each_rule_rejects_only_its_span() {
        let mut bad_trace = span("bad_trace");
        bad_trace.trace_id.truncate(15);
        let mut zero_trace = span("zero_trace");
        zero_trace.trace_id = vec![0; 16];
        let mut zero_span = span("zero_span");
        zero_span.span_id = vec![0; 8];
        let mut bad_parent = span("bad_parent");
        bad_parent.parent_span_id = vec![1, 2, 3];
        let mut no_start = span("no_start");
        no_start.start_time_unix_nano = 0;
        let mut end_before = span("end_before");
        end_before.end_time_unix_nano = T0 - 1;
        let mut huge = span("huge");
        huge.start_time_unix_nano = i64::MAX as u64 + 1;
        huge.end_time_unix_nano = u64::MAX;
        let mut huge_event = span("huge_event");
        huge_event.events.push(Event { time_unix_nano: u64::MAX, name: "e".into(), ..Default::default() });
        let mut zero_parent = span("zero_parent");
        zero_parent.parent_span_id = vec![0; 8];
        let mut instant = span("instant");
        instant.end_time_unix_nano = instant.start_time_unix_nano;

        let req = request(vec![
            span("ok1"),
            bad_trace,
            zero_trace,
            zero_span,
            bad_parent,
            span("ok2"),
            no_start,
            end_before,
            huge,
            huge_event,
            zero_parent,
            instant,
        ]);
        let d = traces_to_arrow(&req, &ctx());
        let b = &d.batch.batch;
        assert_eq!(
            texts(b, "name"),
            vec![
                Some("ok1".to_string()),
                Some("ok2".to_string()),
                Some("zero_parent".to_string()),
                Some("instant".to_string())
            ]
        );
        assert_eq!(text(b, "parent_span_id", 2), None);
        assert_eq!(b.column_by_name("duration_ns").unwrap().as_primitive::<Int64Type>().value(3), 0);
        assert_eq!(d.rejected, 8);
        assert_eq!(
            d.reasons,
            vec![
                ("invalid_trace_id", 2),
                ("invalid_span_id", 1),
                ("invalid_parent_span_id", 1),
                ("missing_start_time", 1),
                ("end_before_start", 1),
                ("timestamp_out_of_range", 2),
            ]
        );
        let msg = d.message.unwrap();
        assert!(msg.starts_with("8 spans rejected: trace_id must be 16 bytes, not all zero (2), "), "{msg}");
        assert!(msg.contains("(exceeds i64 nanoseconds) (2)"), "{msg}");
        assert_eq!(texts(b, "service_name"), vec![Some("checkout".to_string()); 4]);
        assert_eq!(texts(b, "scope_version"), vec![None::<String>; 4]);
        assert_eq!(texts(b, "scope_schema_url"), vec![Some("https://opentelemetry.io/schemas/1.21.0".to_string()); 4]);
        assert_eq!(texts(b, "kind"), vec![Some("CLIENT".to_string()); 4]);
    }

    #[test]
    fn attribute_limits_apply_to_span_attributes() {
        let mut sp = span("attrs");
        sp.dropped_attributes_count = 1;
        sp.attributes = vec![
            kv("k1", s("first")),
            kv("toolongkey_123456789", s("x")),
            kv("k1", s("héllo")),
            kv("k2", Value::IntValue(42)),
            kv("k3", Value::BoolValue(true)),
            kv("k4", s("x")),
        ];
        let mut c = ctx();
        c.limits.max_attribute_key_bytes = 16;
        c.limits.max_attribute_value_bytes = 4;
        c.limits.max_attributes = 3;
        let d = traces_to_arrow(&request(vec![sp]), &c);
        let b = &d.batch.batch;
        assert_eq!(b.num_rows(), 1);
        assert_eq!(map_at(b, "attributes", 0), owned(&[("k1", Some("hél")), ("k2", Some("42")), ("k3", Some("true"))]));
        assert_eq!(u32_at(b, "dropped_attributes_count", 0), 3);
        // "checkout" is cut to 4 bytes in the resource attributes map (the service_name column
        // is cut the same way but not counted twice).
        assert_eq!(d.truncated_values, 2);
        assert_eq!(text(b, "service_name", 0).as_deref(), Some("chec"));
        assert_eq!(
            map_at(b, "resource_attributes", 0),
            owned(&[("service.name", Some("chec")), ("host.name", Some("h1"))])
        );
        assert_eq!(d.rejected, 0);
    }

    #[test]
    fn events_links_and_status() {
        let mut sp = span("rich");
        sp.trace_state = "k=v".into();
        sp.flags = 0x301;
        sp.parent_span_id = vec![0xab; 8];
        sp.status = Some(Status { message: String::new(), code: 1 });
        sp.dropped_events_count = 2;
        sp.events = vec![
            Event {
                time_unix_nano: T0 + 10,
                name: "exception".into(),
                attributes: vec![kv("exception.type", s("E"))],
                dropped_attributes_count: 1,
            },
            Event { time_unix_nano: T0 + 20, name: "second".into(), ..Default::default() },
        ];
        sp.dropped_links_count = 5;
        sp.links = vec![
            Link {
                trace_id: vec![0x11; 16],
                span_id: vec![0x22; 8],
                trace_state: String::new(),
                attributes: vec![kv("l", Value::IntValue(7))],
                dropped_attributes_count: 0,
                flags: 1,
            },
            Link { trace_id: vec![0x11; 15], span_id: vec![0x22; 8], ..Default::default() },
            Link { trace_id: vec![0x11; 16], span_id: vec![0; 8], ..Default::default() },
        ];
        let d = traces_to_arrow(&request(vec![sp, span("plain")]), &ctx());
        let b = &d.batch.batch;
        assert_eq!(b.num_rows(), 2);
        assert_eq!(text(b, "trace_state", 0).as_deref(), Some("k=v"));
        assert_eq!(u32_at(b, "flags", 0), 0x301);
        assert_eq!(text(b, "parent_span_id", 0).as_deref(), Some("abababababababab"));
        assert_eq!(text(b, "status_code", 0).as_deref(), Some("OK"));
        assert_eq!(text(b, "status_message", 0), None);
        assert_eq!(u32_at(b, "dropped_events_count", 0), 2);
        assert_eq!(u32_at(b, "dropped_links_count", 0), 7);
        assert_eq!(u32_at(b, "dropped_links_count", 1), 0);

        let events = b.column_by_name("events").unwrap().as_list::<i32>();
        assert_eq!(events.value_length(0), 2);
        assert_eq!(events.value_length(1), 0);
        let ev = events.value(0);
        let ev = ev.as_struct();
        assert_eq!(
            ev.column_by_name("time").unwrap().as_primitive::<TimestampNanosecondType>().value(1),
            (T0 + 20) as i64
        );
        assert_eq!(ev.column_by_name("name").unwrap().as_string::<i32>().value(0), "exception");
        assert_eq!(
            map_entries(ev.column_by_name("attributes").unwrap().as_map(), 0),
            owned(&[("exception.type", Some("E"))])
        );
        assert_eq!(ev.column_by_name("dropped_attributes_count").unwrap().as_primitive::<UInt32Type>().value(0), 1);

        let links = b.column_by_name("links").unwrap().as_list::<i32>();
        assert_eq!(links.value_length(0), 1);
        assert_eq!(links.value_length(1), 0);
        let ln = links.value(0);
        let ln = ln.as_struct();
        assert_eq!(
            ln.column_by_name("trace_id").unwrap().as_string::<i32>().value(0),
            "11111111111111111111111111111111"
        );
        assert_eq!(ln.column_by_name("span_id").unwrap().as_string::<i32>().value(0), "2222222222222222");
        assert!(ln.column_by_name("trace_state").unwrap().is_null(0));
        assert_eq!(ln.column_by_name("flags").unwrap().as_primitive::<UInt32Type>().value(0), 1);
        assert_eq!(map_entries(ln.column_by_name("attributes").unwrap().as_map(), 0), owned(&[("l", Some("7"))]));
    }

    #[test]
    fn protobuf_round_trip_matches_direct_conversion() {
        let mut sp = span("rt");
        sp.attributes = vec![kv("a", Value::DoubleValue(2.5)), kv("b", Value::BytesValue(vec![0, 1]))];
        sp.events = vec![Event { time_unix_nano: T0 + 1, name: "e".into(), ..Default::default() }];
        let mut bad = span("bad");
        bad.span_id = vec![1];
        let req = request(vec![sp, bad, span("rt2")]);
        let body = prost::Message::encode_to_vec(&req);
        let c = ctx();
        let from_bytes = decode_traces(&body, Format::Protobuf, &c).unwrap();
        let direct = traces_to_arrow(&req, &c);
        assert_eq!(from_bytes.batch.batch, direct.batch.batch);
        assert_eq!(from_bytes.batch.num_rows(), 2);
        assert_eq!(from_bytes.rejected, 1);
        assert_eq!(from_bytes.reasons, vec![("invalid_span_id", 1)]);
        assert_eq!(map_at(&from_bytes.batch.batch, "attributes", 0), owned(&[("a", Some("2.5")), ("b", Some("AAE="))]));
    }

    #[test]
    fn empty_request_has_schema_and_no_rows() {
        let d = traces_to_arrow(&ExportTraceServiceRequest::default(), &ctx());
        assert_eq!(d.batch.num_rows(), 0);
        assert_eq!(d.batch.batch.schema(), Signal::Spans.schema());
        assert_eq!(d.batch.tenant.as_str(), "default");
        assert!(b_is_empty_lists(&d.batch.batch));
    }

    fn b_is_empty_lists(b: &RecordBatch) -> bool {
        b.column_by_name("events").unwrap().is_empty() && b.column_by_name("links").unwrap().is_empty()
    }
}
