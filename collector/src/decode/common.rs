//! Pieces shared by the three converters: rejection tallies, AnyValue → text, attribute maps
//! under the item limits, IDs, timestamps, list-of-struct assembly and the resource/scope
//! columns every table ends with.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ListArray, MapBuilder, MapFieldNames, StringBuilder, StructArray, TimestampNanosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tracelight_model::SignalBatch;
use tracelight_model::schema::ts_type;

use super::{Decoded, ItemLimits};

/// Why an item was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    InvalidTraceId,
    InvalidSpanId,
    InvalidParentSpanId,
    TimestampOutOfRange,
    MissingStartTime,
    EndBeforeStart,
    MissingTime,
    MissingValue,
    TooOld,
    TooNew,
    RepeatedTooLarge,
}

impl Reason {
    /// Machine label, used as a metric label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::InvalidTraceId => "invalid_trace_id",
            Reason::InvalidSpanId => "invalid_span_id",
            Reason::InvalidParentSpanId => "invalid_parent_span_id",
            Reason::TimestampOutOfRange => "timestamp_out_of_range",
            Reason::MissingStartTime => "missing_start_time",
            Reason::EndBeforeStart => "end_before_start",
            Reason::MissingTime => "missing_time",
            Reason::MissingValue => "missing_value",
            Reason::TooOld => "too_old",
            Reason::TooNew => "too_new",
            Reason::RepeatedTooLarge => "resource_too_large",
        }
    }

    /// Human text, used in the partial-success message.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Reason::InvalidTraceId => "trace_id must be 16 bytes, not all zero",
            Reason::InvalidSpanId => "span_id must be 8 bytes, not all zero",
            Reason::InvalidParentSpanId => "parent_span_id must be empty or 8 bytes",
            Reason::TimestampOutOfRange => "timestamp beyond year 2262 (exceeds i64 nanoseconds)",
            Reason::MissingStartTime => "start_time_unix_nano is 0",
            Reason::EndBeforeStart => "end_time_unix_nano is before start_time_unix_nano",
            Reason::MissingTime => "time_unix_nano is 0",
            Reason::MissingValue => "number data point has no value",
            Reason::TooOld => "timestamp older than the accepted window (ingest.accept_past)",
            Reason::TooNew => "timestamp further ahead than the accepted window (ingest.accept_future)",
            Reason::RepeatedTooLarge => {
                "resource and scope attributes repeated on every item exceed the request's expansion bound"
            }
        }
    }
}

/// Rejections and truncations of one request.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    reasons: Vec<(Reason, u64)>,
    pub(crate) truncated: u64,
}

impl Tally {
    pub(crate) fn reject(&mut self, reason: Reason) {
        match self.reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some(entry) => entry.1 += 1,
            None => self.reasons.push((reason, 1)),
        }
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.reasons.iter().map(|(_, n)| n).sum()
    }

    /// `item_word` is the plural noun of the message: "spans", "log records", "data points".
    pub(crate) fn into_decoded(self, batch: SignalBatch, item_word: &str) -> Decoded {
        let rejected = self.rejected();
        let message = (rejected > 0).then(|| {
            let mut m = format!("{rejected} {item_word} rejected: ");
            for (i, (reason, n)) in self.reasons.iter().enumerate() {
                if i > 0 {
                    m.push_str(", ");
                }
                let _ = write!(m, "{} ({n})", reason.text());
            }
            m
        });
        Decoded {
            batch,
            rejected,
            message,
            reasons: self.reasons.iter().map(|(r, n)| (r.label(), *n)).collect(),
            truncated_values: self.truncated,
            invalid_utf8: 0,
        }
    }
}

/// Most rows (or map entries) a builder is sized for up front. Counts come from the client:
/// past this the builders grow with what is actually appended, never with what was announced.
pub(crate) const PRESIZE_MAX: usize = 1 << 16;

/// A capacity hint from a client-controlled count.
pub(crate) fn presize(n: usize) -> usize {
    n.min(PRESIZE_MAX)
}

/// `t` is inside the accepted window around the receive time `now` (see [`ItemLimits`]).
pub(crate) fn check_window(t: i64, now: i64, limits: &ItemLimits) -> Result<(), Reason> {
    if limits.max_past_ns.is_some_and(|p| t < now.saturating_sub(p)) {
        return Err(Reason::TooOld);
    }
    if limits.max_future_ns.is_some_and(|f| t > now.saturating_add(f)) {
        return Err(Reason::TooNew);
    }
    Ok(())
}

/// `s` cut to at most `max` bytes at a character boundary, and whether it was cut.
pub(crate) fn truncate_str(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// The text of an AnyValue (see the module docs of `tracelight_model::schema`), cut to `max`
/// bytes; `None` for an absent or empty value. Strings are borrowed, everything else is
/// rendered into `scratch`.
pub(crate) fn any_text<'a>(
    value: Option<&'a AnyValue>,
    scratch: &'a mut String,
    max: usize,
    truncated: &mut u64,
) -> Option<&'a str> {
    let text: &'a str = match value.and_then(|v| v.value.as_ref())? {
        Value::StringValue(s) => s.as_str(),
        // Profiling-only dictionary reference: treated as absent for other signals.
        Value::StringValueStrindex(_) => return None,
        other => {
            scratch.clear();
            write_text(other, scratch);
            scratch.as_str()
        }
    };
    let (t, cut) = truncate_str(text, max);
    if cut {
        *truncated += 1;
    }
    Some(t)
}

fn write_text(v: &Value, out: &mut String) {
    match v {
        Value::StringValue(s) => out.push_str(s),
        Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        Value::DoubleValue(d) => {
            let _ = write!(out, "{d}");
        }
        Value::BytesValue(b) => STANDARD.encode_string(b, out),
        Value::ArrayValue(_) | Value::KvlistValue(_) => write_json(Some(v), out),
        Value::StringValueStrindex(_) => {}
    }
}

/// Compact JSON for arrays and key-value lists (and their nested values).
fn write_json(v: Option<&Value>, out: &mut String) {
    match v {
        None | Some(Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(Value::StringValue(s)) => write_json_str(s, out),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) => {
            if d.is_nan() {
                out.push_str("\"NaN\"");
            } else if d.is_infinite() {
                out.push_str(if *d > 0.0 { "\"Infinity\"" } else { "\"-Infinity\"" });
            } else {
                let _ = write!(out, "{d}");
            }
        }
        Some(Value::BytesValue(b)) => {
            out.push('"');
            STANDARD.encode_string(b, out);
            out.push('"');
        }
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item.value.as_ref(), out);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(kvs)) => {
            out.push('{');
            for (i, kv) in kvs.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(&kv.key, out);
                out.push(':');
                write_json(kv.value.as_ref().and_then(|a| a.value.as_ref()), out);
            }
            out.push('}');
        }
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Walks `attrs` under the limits: duplicate keys keep the last value, over-long keys and
/// attributes beyond `max_attributes` are dropped, values are cut to
/// `max_attribute_value_bytes`. Calls `sink` for each kept attribute in order and returns the
/// number dropped.
pub(crate) fn visit_attrs(
    attrs: &[KeyValue],
    limits: &ItemLimits,
    scratch: &mut String,
    truncated: &mut u64,
    mut sink: impl FnMut(&str, Option<&str>),
) -> u32 {
    // Small lists: a linear look-ahead is cheaper than hashing.
    let last_index: Option<HashMap<&str, usize>> = if attrs.len() > 16 {
        Some(attrs.iter().enumerate().map(|(i, kv)| (kv.key.as_str(), i)).collect())
    } else {
        None
    };
    let mut kept = 0usize;
    let mut dropped = 0u32;
    for (i, kv) in attrs.iter().enumerate() {
        let shadowed = match &last_index {
            Some(m) => m.get(kv.key.as_str()).copied() != Some(i),
            None => attrs[i + 1..].iter().any(|o| o.key == kv.key),
        };
        if shadowed {
            continue;
        }
        if kv.key.len() > limits.max_attribute_key_bytes || kept >= limits.max_attributes {
            dropped = dropped.saturating_add(1);
            continue;
        }
        kept += 1;
        let value = any_text(kv.value.as_ref(), scratch, limits.max_attribute_value_bytes, truncated);
        sink(kv.key.as_str(), value);
    }
    dropped
}

pub(crate) type AttrBuilder = MapBuilder<StringBuilder, StringBuilder>;

/// A map builder whose output has exactly `tracelight_model::schema::attr_map_type()`
/// (same field names as `attr_map_builder()`), with room for `rows` maps of `entries` entries.
pub(crate) fn attr_builder(rows: usize, entries: usize) -> AttrBuilder {
    let (rows, entries) = (presize(rows), presize(entries));
    MapBuilder::with_capacity(
        Some(MapFieldNames::default()),
        StringBuilder::with_capacity(entries, entries * 16),
        StringBuilder::with_capacity(entries, entries * 16),
        rows,
    )
}

/// Appends one map row; returns the number of attributes dropped by the limits.
pub(crate) fn append_attrs(
    b: &mut AttrBuilder,
    attrs: &[KeyValue],
    limits: &ItemLimits,
    scratch: &mut String,
    truncated: &mut u64,
) -> u32 {
    let dropped = {
        let (keys, values) = b.entries();
        visit_attrs(attrs, limits, scratch, truncated, |k, v| {
            keys.append_value(k);
            values.append_option(v);
        })
    };
    b.append(true).expect("map keys and values are appended in pairs");
    dropped
}

/// Attributes converted once and appended to many rows (resource and scope attributes).
#[derive(Debug, Default)]
pub(crate) struct AttrList {
    entries: Vec<(String, Option<String>)>,
}

impl AttrList {
    pub(crate) fn new(attrs: &[KeyValue], limits: &ItemLimits, scratch: &mut String, truncated: &mut u64) -> AttrList {
        let mut entries = Vec::with_capacity(attrs.len());
        visit_attrs(attrs, limits, scratch, truncated, |k, v| {
            entries.push((k.to_owned(), v.map(str::to_owned)));
        });
        AttrList { entries }
    }

    /// Bytes one copy of these entries adds to a map column (text and offsets).
    pub(crate) fn bytes(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len) + 9).sum()
    }

    pub(crate) fn append_to(&self, b: &mut AttrBuilder) {
        {
            let (keys, values) = b.entries();
            for (k, v) in &self.entries {
                keys.append_value(k);
                values.append_option(v.as_deref());
            }
        }
        b.append(true).expect("map keys and values are appended in pairs");
    }
}

/// `id` is exactly `len` bytes and not all zero.
pub(crate) fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|&b| b != 0)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of an ID of at most 16 bytes, written into `buf`.
pub(crate) fn hex_id<'a>(id: &[u8], buf: &'a mut [u8; 32]) -> &'a str {
    let n = id.len().min(16);
    for (i, b) in id[..n].iter().enumerate() {
        buf[2 * i] = HEX_DIGITS[(b >> 4) as usize];
        buf[2 * i + 1] = HEX_DIGITS[(b & 0x0f) as usize];
    }
    std::str::from_utf8(&buf[..2 * n]).expect("hex digits are ASCII")
}

/// An OTLP `u64` nanosecond timestamp as the `i64` Arrow stores; `None` beyond `i64::MAX`.
pub(crate) fn to_i64(t: u64) -> Option<i64> {
    i64::try_from(t).ok()
}

/// `None` for the empty string (optional text columns are NULL, never `""`).
pub(crate) fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

fn non_empty_owned(s: &str) -> Option<String> {
    non_empty(s).map(str::to_owned)
}

/// A `Timestamp(Nanosecond, "UTC")` builder.
pub(crate) fn ts_builder(capacity: usize) -> TimestampNanosecondBuilder {
    TimestampNanosecondBuilder::with_capacity(capacity).with_data_type(ts_type())
}

pub(crate) fn arr<A: Array + 'static>(a: A) -> ArrayRef {
    Arc::new(a)
}

/// A `List<Struct<fields>>` array (item field "item", nullable, as the schemas declare) from
/// the struct's child arrays and the list offsets (`offsets[0] == 0`, one more than rows);
/// `validity` marks NULL lists, `None` when every list is valid.
pub(crate) fn struct_list(
    fields: Fields,
    children: Vec<ArrayRef>,
    offsets: Vec<i32>,
    validity: Option<Vec<bool>>,
) -> ArrayRef {
    let values = StructArray::try_new(fields.clone(), children, None).expect("struct children match their fields");
    let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
    let nulls = validity.map(NullBuffer::from);
    let list = ListArray::try_new(item, OffsetBuffer::new(ScalarBuffer::from(offsets)), arr(values), nulls)
        .expect("list offsets and values are consistent");
    arr(list)
}

/// Resource-level values, converted once per `Resource*` message.
#[derive(Debug)]
pub(crate) struct ResourceInfo {
    pub(crate) service_name: String,
    attrs: AttrList,
    schema_url: Option<String>,
}

impl ResourceInfo {
    pub(crate) fn new(
        resource: Option<&Resource>,
        schema_url: &str,
        limits: &ItemLimits,
        scratch: &mut String,
        truncated: &mut u64,
    ) -> ResourceInfo {
        let attrs: &[KeyValue] = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let mut service_name = None;
        if let Some(kv) = attrs.iter().rev().find(|kv| kv.key == "service.name") {
            let mut ignored = 0u64;
            if let Some(t) = any_text(kv.value.as_ref(), scratch, limits.max_attribute_value_bytes, &mut ignored)
                && !t.is_empty()
            {
                service_name = Some(t.to_owned());
            }
        }
        ResourceInfo {
            service_name: service_name.unwrap_or_else(|| "unknown_service".to_owned()),
            attrs: AttrList::new(attrs, limits, scratch, truncated),
            schema_url: non_empty_owned(schema_url),
        }
    }

    /// Bytes these columns add to every row that carries them.
    fn bytes(&self) -> usize {
        self.service_name.len() + self.attrs.bytes() + self.schema_url.as_ref().map_or(0, String::len) + 16
    }
}

/// Scope-level values, converted once per `Scope*` message.
#[derive(Debug)]
pub(crate) struct ScopeInfo {
    name: Option<String>,
    version: Option<String>,
    attrs: AttrList,
    schema_url: Option<String>,
}

impl ScopeInfo {
    pub(crate) fn new(
        scope: Option<&InstrumentationScope>,
        schema_url: &str,
        limits: &ItemLimits,
        scratch: &mut String,
        truncated: &mut u64,
    ) -> ScopeInfo {
        match scope {
            Some(s) => ScopeInfo {
                name: non_empty_owned(&s.name),
                version: non_empty_owned(&s.version),
                attrs: AttrList::new(&s.attributes, limits, scratch, truncated),
                schema_url: non_empty_owned(schema_url),
            },
            None => ScopeInfo {
                name: None,
                version: None,
                attrs: AttrList::default(),
                schema_url: non_empty_owned(schema_url),
            },
        }
    }
}

impl ScopeInfo {
    /// Bytes these columns add to every row that carries them.
    fn bytes(&self) -> usize {
        [&self.name, &self.version, &self.schema_url].iter().map(|s| s.as_ref().map_or(0, String::len)).sum::<usize>()
            + self.attrs.bytes()
            + 16
    }
}

/// The seven resource and scope columns that end every table, in schema order.
///
/// Resource and scope values are received once and repeated on every row: a small request
/// with a large resource and many empty items would expand without bound. [`Self::fits`]
/// keeps the repeated bytes under `ItemLimits::max_repeated_bytes`.
pub(crate) struct ResourceScopeCols {
    repeated_bytes: usize,
    max_repeated_bytes: usize,
    service_name: StringBuilder,
    resource_attributes: AttrBuilder,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttrBuilder,
    scope_schema_url: StringBuilder,
}

impl ResourceScopeCols {
    pub(crate) fn with_capacity(rows: usize, resource_entries: usize, limits: &ItemLimits) -> ResourceScopeCols {
        let (rows, resource_entries) = (presize(rows), presize(resource_entries));
        ResourceScopeCols {
            repeated_bytes: 0,
            max_repeated_bytes: limits.max_repeated_bytes,
            service_name: StringBuilder::with_capacity(rows, rows * 16),
            resource_attributes: attr_builder(rows, resource_entries),
            resource_schema_url: StringBuilder::with_capacity(rows, 0),
            scope_name: StringBuilder::with_capacity(rows, rows * 16),
            scope_version: StringBuilder::with_capacity(rows, rows * 8),
            scope_attributes: attr_builder(rows, 0),
            scope_schema_url: StringBuilder::with_capacity(rows, 0),
        }
    }

    /// Whether one more row with `res` and `scope` stays under the expansion bound; counts it
    /// when it does. Ask before appending anything of the row.
    /// `extra`: other per-item repeated bytes (a metric's name, unit and description).
    pub(crate) fn fits(&mut self, res: &ResourceInfo, scope: &ScopeInfo, extra: usize) -> bool {
        let next = self.repeated_bytes.saturating_add(res.bytes() + scope.bytes() + extra);
        if next > self.max_repeated_bytes {
            return false;
        }
        self.repeated_bytes = next;
        true
    }

    pub(crate) fn append(&mut self, res: &ResourceInfo, scope: &ScopeInfo) {
        self.service_name.append_value(&res.service_name);
        res.attrs.append_to(&mut self.resource_attributes);
        self.resource_schema_url.append_option(res.schema_url.as_deref());
        self.scope_name.append_option(scope.name.as_deref());
        self.scope_version.append_option(scope.version.as_deref());
        scope.attrs.append_to(&mut self.scope_attributes);
        self.scope_schema_url.append_option(scope.schema_url.as_deref());
    }

    pub(crate) fn finish_into(mut self, columns: &mut Vec<ArrayRef>) {
        columns.push(arr(self.service_name.finish()));
        columns.push(arr(self.resource_attributes.finish()));
        columns.push(arr(self.resource_schema_url.finish()));
        columns.push(arr(self.scope_name.finish()));
        columns.push(arr(self.scope_version.finish()));
        columns.push(arr(self.scope_attributes.finish()));
        columns.push(arr(self.scope_schema_url.finish()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use tracelight_model::schema::attr_map_type;

    use crate::decode::test_util::{kv, owned, s};

    fn text_of(v: Value) -> Option<String> {
        let av = AnyValue { value: Some(v) };
        let mut scratch = String::new();
        let mut t = 0;
        any_text(Some(&av), &mut scratch, usize::MAX, &mut t).map(str::to_owned)
    }

    #[test]
    fn scalar_values_render_as_text() {
        assert_eq!(text_of(s("plain")).as_deref(), Some("plain"));
        assert_eq!(text_of(Value::BoolValue(true)).as_deref(), Some("true"));
        assert_eq!(text_of(Value::BoolValue(false)).as_deref(), Some("false"));
        assert_eq!(text_of(Value::IntValue(-42)).as_deref(), Some("-42"));
        assert_eq!(text_of(Value::DoubleValue(637.704)).as_deref(), Some("637.704"));
        assert_eq!(text_of(Value::DoubleValue(1.5)).as_deref(), Some("1.5"));
        assert_eq!(text_of(Value::BytesValue(vec![1, 2, 3])).as_deref(), Some("AQID"));
        assert_eq!(text_of(Value::StringValueStrindex(3)), None);
        let mut scratch = String::new();
        let mut t = 0;
        assert_eq!(any_text(Some(&AnyValue { value: None }), &mut scratch, 10, &mut t), None);
        assert_eq!(any_text(None, &mut scratch, 10, &mut t), None);
    }

    #[test]
    fn arrays_and_maps_render_as_compact_json() {
        let nested = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("a", Value::IntValue(1)),
                kv(
                    "b",
                    Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue { value: Some(Value::BoolValue(true)) },
                            AnyValue { value: Some(Value::DoubleValue(1.5)) },
                            AnyValue { value: Some(Value::DoubleValue(f64::NAN)) },
                            AnyValue { value: Some(Value::DoubleValue(f64::INFINITY)) },
                            AnyValue { value: Some(Value::DoubleValue(f64::NEG_INFINITY)) },
                            AnyValue { value: Some(Value::BytesValue(vec![1, 2, 3])) },
                            AnyValue { value: None },
                        ],
                    }),
                ),
                kv("q\"\\\n\u{1}", s("line\tbreak")),
            ],
        });
        assert_eq!(
            text_of(nested).as_deref(),
            Some(r#"{"a":1,"b":[true,1.5,"NaN","Infinity","-Infinity","AQID",null],"q\"\\\n\u0001":"line\tbreak"}"#)
        );
        let arr = Value::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: Some(s("many")) }, AnyValue { value: Some(s("values")) }],
        });
        let json = text_of(arr).unwrap();
        assert_eq!(json, r#"["many","values"]"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[1], "values");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_str("héllo", 10), ("héllo", false));
        assert_eq!(truncate_str("héllo", 2), ("h", true));
        assert_eq!(truncate_str("héllo", 3), ("hé", true));
        assert_eq!(truncate_str("héllo", 0), ("", true));
    }

    #[test]
    fn attribute_limits_dedupe_drop_and_truncate() {
        let limits = ItemLimits {
            max_attribute_key_bytes: 8,
            max_attribute_value_bytes: 4,
            max_attributes: 3,
            max_body_bytes: 10,
            ..ItemLimits::default()
        };
        let attrs = vec![
            kv("k1", s("first")),
            kv("toolongkey123", s("x")),
            kv("k1", s("héllo")),
            kv("k2", Value::IntValue(42)),
            kv("k3", Value::BoolValue(true)),
            kv("k4", s("x")),
        ];
        let mut scratch = String::new();
        let mut truncated = 0;
        let mut b = attr_builder(1, 4);
        let dropped = append_attrs(&mut b, &attrs, &limits, &mut scratch, &mut truncated);
        assert_eq!(dropped, 2);
        assert_eq!(truncated, 1);
        let m = b.finish();
        assert_eq!(m.data_type(), &attr_map_type());
        assert_eq!(
            crate::decode::test_util::map_entries(&m, 0),
            owned(&[("k1", Some("hél")), ("k2", Some("42")), ("k3", Some("true"))])
        );
    }

    #[test]
    fn many_duplicates_use_the_hashed_path_and_keep_the_last() {
        let mut attrs: Vec<KeyValue> = (0..20).map(|i| kv(&format!("k{i}"), Value::IntValue(i))).collect();
        attrs.push(kv("k3", s("last")));
        let mut scratch = String::new();
        let mut truncated = 0;
        let mut seen = Vec::new();
        let dropped = visit_attrs(&attrs, &ItemLimits::default(), &mut scratch, &mut truncated, |k, v| {
            seen.push((k.to_string(), v.map(str::to_string)));
        });
        assert_eq!(dropped, 0);
        assert_eq!(seen.len(), 20);
        assert_eq!(seen[2], ("k2".to_string(), Some("2".to_string())));
        assert_eq!(seen[19], ("k3".to_string(), Some("last".to_string())));
        assert!(!seen[..19].iter().any(|(k, _)| k == "k3"));
    }

    #[test]
    fn ids_are_lower_case_hex() {
        let mut buf = [0u8; 32];
        assert_eq!(hex_id(&[0xab, 0x01, 0xff], &mut buf), "ab01ff");
        assert!(valid_id(&[0, 0, 1], 3));
        assert!(!valid_id(&[0, 0, 0], 3));
        assert!(!valid_id(&[1, 2], 3));
    }

    #[test]
    fn message_lists_reasons_with_counts() {
        let mut t = Tally::default();
        t.reject(Reason::InvalidTraceId);
        t.reject(Reason::EndBeforeStart);
        t.reject(Reason::InvalidTraceId);
        let batch = SignalBatch {
            tenant: Default::default(),
            signal: tracelight_model::Signal::Spans,
            batch: arrow::record_batch::RecordBatch::new_empty(tracelight_model::Signal::Spans.schema()),
        };
        let d = t.into_decoded(batch, "spans");
        assert_eq!(d.rejected, 3);
        assert_eq!(d.reasons, vec![("invalid_trace_id", 2), ("end_before_start", 1)]);
        assert_eq!(
            d.message.as_deref(),
            Some(
                "3 spans rejected: trace_id must be 16 bytes, not all zero (2), end_time_unix_nano is before start_time_unix_nano (1)"
            )
        );
    }
}
