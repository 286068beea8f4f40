//! Second-chance protobuf decode for requests with invalid UTF-8 in string fields.
//!
//! prost refuses a whole message when any `string` field is not UTF-8, which would drop a
//! whole batch for one bad attribute (docs/TESTING.md §A6). When a decode fails, the bytes
//! are walked once more with a table of which OTLP fields are strings and which are nested
//! messages; invalid strings are replaced lossily (U+FFFD) and the request is decoded again.
//! The happy path never comes here.

/// What a length-delimited field holds.
#[derive(Clone, Copy)]
enum Len {
    Str,
    Msg(Ty),
    Opaque,
}

/// The OTLP message types that contain strings, directly or below.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ty {
    TraceRequest,
    LogsRequest,
    MetricsRequest,
    ResourceSpans,
    ResourceLogs,
    ResourceMetrics,
    Resource,
    EntityRef,
    Scope,
    ScopeSpans,
    ScopeLogs,
    ScopeMetrics,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    LogRecord,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    NumberPoint,
    HistogramPoint,
    ExpHistogramPoint,
    SummaryPoint,
    Exemplar,
}

fn field(ty: Ty, number: u32) -> Len {
    use Len::*;
    use Ty::*;
    match (ty, number) {
        (TraceRequest, 1) => Msg(ResourceSpans),
        (LogsRequest, 1) => Msg(ResourceLogs),
        (MetricsRequest, 1) => Msg(ResourceMetrics),
        (ResourceSpans, 1) | (ResourceLogs, 1) | (ResourceMetrics, 1) => Msg(Resource),
        (ResourceSpans, 2) => Msg(ScopeSpans),
        (ResourceLogs, 2) => Msg(ScopeLogs),
        (ResourceMetrics, 2) => Msg(ScopeMetrics),
        (ResourceSpans, 3) | (ResourceLogs, 3) | (ResourceMetrics, 3) => Str,
        (Resource, 1) => Msg(KeyValue),
        (Resource, 3) => Msg(EntityRef),
        (EntityRef, 1..=4) => Str,
        (ScopeSpans, 1) | (ScopeLogs, 1) | (ScopeMetrics, 1) => Msg(Scope),
        (ScopeSpans, 2) => Msg(Span),
        (ScopeLogs, 2) => Msg(LogRecord),
        (ScopeMetrics, 2) => Msg(Metric),
        (ScopeSpans, 3) | (ScopeLogs, 3) | (ScopeMetrics, 3) => Str,
        (Scope, 1) | (Scope, 2) => Str,
        (Scope, 3) => Msg(KeyValue),
        (Span, 3) | (Span, 5) => Str,
        (Span, 9) => Msg(KeyValue),
        (Span, 11) => Msg(Event),
        (Span, 13) => Msg(Link),
        (Span, 15) => Msg(Status),
        (Event, 2) => Str,
        (Event, 3) => Msg(KeyValue),
        (Link, 3) => Str,
        (Link, 4) => Msg(KeyValue),
        (Status, 2) => Str,
        (KeyValue, 1) => Str,
        (KeyValue, 2) => Msg(AnyValue),
        (AnyValue, 1) => Str,
        (AnyValue, 5) => Msg(ArrayValue),
        (AnyValue, 6) => Msg(KeyValueList),
        (ArrayValue, 1) => Msg(AnyValue),
        (KeyValueList, 1) => Msg(KeyValue),
        (LogRecord, 3) | (LogRecord, 12) => Str,
        (LogRecord, 5) => Msg(AnyValue),
        (LogRecord, 6) => Msg(KeyValue),
        (Metric, 1..=3) => Str,
        (Metric, 5) => Msg(Gauge),
        (Metric, 7) => Msg(Sum),
        (Metric, 9) => Msg(Histogram),
        (Metric, 10) => Msg(ExpHistogram),
        (Metric, 11) => Msg(Summary),
        (Metric, 12) => Msg(KeyValue),
        (Gauge, 1) | (Sum, 1) => Msg(NumberPoint),
        (Histogram, 1) => Msg(HistogramPoint),
        (ExpHistogram, 1) => Msg(ExpHistogramPoint),
        (Summary, 1) => Msg(SummaryPoint),
        (NumberPoint, 7) | (HistogramPoint, 9) | (ExpHistogramPoint, 1) | (SummaryPoint, 7) => Msg(KeyValue),
        (NumberPoint, 5) | (HistogramPoint, 8) | (ExpHistogramPoint, 11) => Msg(Exemplar),
        (Exemplar, 7) => Msg(KeyValue),
        _ => Opaque,
    }
}

/// Nesting deeper than this is left to prost's own recursion limit to refuse.
const MAX_DEPTH: usize = 100;

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Re-encodes `buf` (a message of type `ty`) with every invalid UTF-8 string replaced.
/// Returns how many strings were replaced, or `None` if the bytes are not valid protobuf.
fn fix(buf: &[u8], ty: Ty, out: &mut Vec<u8>, depth: usize) -> Option<u64> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut fixed = 0;
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = varint(buf, &mut pos)?;
        let (number, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => {
                varint(buf, &mut pos)?;
                out.extend_from_slice(&buf[start..pos]);
            }
            1 | 5 => {
                pos += if wire == 1 { 8 } else { 4 };
                out.extend_from_slice(buf.get(start..pos)?);
            }
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let body = buf.get(pos..pos.checked_add(len)?)?;
                pos += len;
                match field(ty, number) {
                    Len::Opaque => out.extend_from_slice(&buf[start..pos]),
                    Len::Str => {
                        put_varint(key, out);
                        match std::str::from_utf8(body) {
                            Ok(_) => {
                                put_varint(len as u64, out);
                                out.extend_from_slice(body);
                            }
                            Err(_) => {
                                let s = String::from_utf8_lossy(body);
                                put_varint(s.len() as u64, out);
                                out.extend_from_slice(s.as_bytes());
                                fixed += 1;
                            }
                        }
                    }
                    Len::Msg(sub) => {
                        let mut inner = Vec::with_capacity(body.len());
                        fixed += fix(body, sub, &mut inner, depth + 1)?;
                        put_varint(key, out);
                        put_varint(inner.len() as u64, out);
                        out.extend_from_slice(&inner);
                    }
                }
            }
            _ => return None,
        }
    }
    Some(fixed)
}

/// `Some((repaired bytes, strings replaced))` when `body` is valid protobuf apart from invalid
/// UTF-8 in some string fields; `None` otherwise (then the original error stands).
pub fn repair(body: &[u8], ty: Ty) -> Option<(Vec<u8>, u64)> {
    let mut out = Vec::with_capacity(body.len());
    match fix(body, ty, &mut out, 0)? {
        0 => None,
        n => Some((out, n)),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use super::*;

    #[test]
    fn only_invalid_strings_change_and_the_rest_decodes() {
        let mut req = ExportTraceServiceRequest::default();
        let mut rs = opentelemetry_proto::tonic::trace::v1::ResourceSpans::default();
        let mut ss = opentelemetry_proto::tonic::trace::v1::ScopeSpans::default();
        let mut span = opentelemetry_proto::tonic::trace::v1::Span {
            trace_id: vec![0xff; 16], // bytes fields may hold anything
            name: "BAD_NAME".into(),
            ..Default::default()
        };
        span.attributes.push(opentelemetry_proto::tonic::common::v1::KeyValue {
            key: "k".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("BAD_VALUE".into())),
            }),
            ..Default::default()
        });
        ss.spans.push(span);
        rs.scope_spans.push(ss);
        req.resource_spans.push(rs);
        let mut bytes = req.encode_to_vec();
        // Corrupt the two strings into invalid UTF-8 of the same length.
        for needle in [&b"BAD_NAME"[..], &b"BAD_VALUE"[..]] {
            let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
            bytes[at] = 0xff;
        }
        assert!(ExportTraceServiceRequest::decode(&bytes[..]).is_err(), "prost refuses it as is");
        let (repaired, n) = repair(&bytes, Ty::TraceRequest).unwrap();
        assert_eq!(n, 2);
        let back = ExportTraceServiceRequest::decode(&repaired[..]).unwrap();
        let span = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "\u{fffd}AD_NAME");
        assert_eq!(span.trace_id, vec![0xff; 16]);
        let v = span.attributes[0].value.as_ref().unwrap().value.as_ref().unwrap();
        assert_eq!(
            v,
            &opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("\u{fffd}AD_VALUE".into())
        );
    }

    #[test]
    fn garbage_and_valid_requests_are_not_repaired() {
        assert!(repair(b"\xff\xff\xff\xff\x0f", Ty::TraceRequest).is_none());
        let ok = ExportTraceServiceRequest::default().encode_to_vec();
        assert!(repair(&ok, Ty::TraceRequest).is_none());
    }
}
