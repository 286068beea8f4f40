//! OTLP export requests → Arrow record batches in the schemas of `tracelight_model::schema`.
//!
//! Pure conversion, no I/O: both receivers and WAL replay call [`decode`] with the request body
//! as received (after decompression); [`traces_to_arrow`] / [`logs_to_arrow`] /
//! [`metrics_to_arrow`] convert an already parsed request.
//!
//! Items that break a rule (bad IDs, impossible timestamps, inconsistent histograms) are
//! rejected one by one and counted, never the whole request: the caller reports them through
//! OTLP `partial_success`. Oversized attributes and bodies are cut, not refused.

mod common;
mod logs;
mod metrics;
mod traces;
mod utf8;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelight_model::{Signal, SignalBatch, Tenant};

/// Wire encoding of an OTLP/HTTP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// Per-item size limits applied while converting.
#[derive(Debug, Clone)]
pub struct ItemLimits {
    /// Attributes whose key is longer are dropped (and counted in `dropped_attributes_count`).
    pub max_attribute_key_bytes: usize,
    /// Attribute values longer than this are cut at a UTF-8 character boundary.
    pub max_attribute_value_bytes: usize,
    /// Attributes per item beyond this many are dropped (and counted).
    pub max_attributes: usize,
    /// Log bodies longer than this are cut at a UTF-8 character boundary.
    pub max_body_bytes: usize,
    /// Items whose time is more than this many nanoseconds before the receive time are
    /// rejected (`too_old`); `None` accepts any past time.
    pub max_past_ns: Option<i64>,
    /// Items whose time is more than this many nanoseconds after the receive time are
    /// rejected (`too_new`); `None` accepts any future time.
    pub max_future_ns: Option<i64>,
    /// Resource and scope attributes are repeated on every item; once the copies of one
    /// request would exceed this many bytes, further items are rejected (`resource_too_large`).
    pub max_repeated_bytes: usize,
}

impl Default for ItemLimits {
    fn default() -> Self {
        ItemLimits {
            max_attribute_key_bytes: 1024,
            max_attribute_value_bytes: 65536,
            max_attributes: 1024,
            max_body_bytes: 1024 * 1024,
            max_past_ns: None,
            max_future_ns: None,
            max_repeated_bytes: 64 << 20,
        }
    }
}

/// What the conversion needs besides the request itself.
#[derive(Debug, Clone)]
pub struct DecodeContext {
    pub tenant: Tenant,
    /// Receive time, used for log records that carry neither time nor observed time.
    pub now_ns: i64,
    pub limits: ItemLimits,
}

/// Result of converting one export request.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Every accepted item, one row each (may have 0 rows).
    pub batch: SignalBatch,
    /// Items refused (spans / log records / data points).
    pub rejected: u64,
    /// Short human summary for OTLP `partial_success.error_message`; `None` when nothing was
    /// rejected.
    pub message: Option<String>,
    /// Count per machine reason label, e.g. `("invalid_trace_id", 2)`.
    pub reasons: Vec<(&'static str, u64)>,
    /// Attribute values and log bodies cut to the limits.
    pub truncated_values: u64,
    /// Strings whose invalid UTF-8 was replaced by U+FFFD (protobuf only).
    pub invalid_utf8: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid protobuf: {0}")]
    Protobuf(String),
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// An empty or whitespace-only JSON body is an empty request.
fn blank(body: &[u8]) -> bool {
    body.iter().all(|b| b.is_ascii_whitespace())
}

/// Parses an export request, repairing invalid UTF-8 in protobuf strings (see [`utf8`]);
/// also returns how many strings were repaired.
fn parse<T>(body: &[u8], format: Format, ty: utf8::Ty) -> Result<(T, u64), DecodeError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    match format {
        Format::Protobuf => match T::decode(body) {
            Ok(req) => Ok((req, 0)),
            Err(e) => utf8::repair(body, ty)
                .and_then(|(fixed, n)| T::decode(&fixed[..]).ok().map(|r| (r, n)))
                .ok_or_else(|| DecodeError::Protobuf(e.to_string())),
        },
        Format::Json if blank(body) => Ok((T::default(), 0)),
        Format::Json => serde_json::from_slice::<T>(body).map(|r| (r, 0)).map_err(|e| DecodeError::Json(e.to_string())),
    }
}

/// Decodes a body of `signal`'s export request: what both receivers and WAL replay call.
pub fn decode(signal: Signal, body: &[u8], format: Format, ctx: &DecodeContext) -> Result<Decoded, DecodeError> {
    match signal {
        Signal::Spans => decode_traces(body, format, ctx),
        Signal::Logs => decode_logs(body, format, ctx),
        Signal::Metrics => decode_metrics(body, format, ctx),
    }
}

/// Decodes an OTLP/HTTP traces body and converts it to a `spans` batch.
pub fn decode_traces(body: &[u8], format: Format, ctx: &DecodeContext) -> Result<Decoded, DecodeError> {
    let (req, invalid_utf8) = parse::<ExportTraceServiceRequest>(body, format, utf8::Ty::TraceRequest)?;
    let mut decoded = traces_to_arrow(&req, ctx);
    decoded.invalid_utf8 = invalid_utf8;
    Ok(decoded)
}

/// Decodes an OTLP/HTTP logs body and converts it to a `logs` batch.
pub fn decode_logs(body: &[u8], format: Format, ctx: &DecodeContext) -> Result<Decoded, DecodeError> {
    let (req, invalid_utf8) = parse::<ExportLogsServiceRequest>(body, format, utf8::Ty::LogsRequest)?;
    let mut decoded = logs_to_arrow(&req, ctx);
    decoded.invalid_utf8 = invalid_utf8;
    Ok(decoded)
}

/// Decodes an OTLP/HTTP metrics body and converts it to a `metrics` batch.
pub fn decode_metrics(body: &[u8], format: Format, ctx: &DecodeContext) -> Result<Decoded, DecodeError> {
    let (req, invalid_utf8) = parse::<ExportMetricsServiceRequest>(body, format, utf8::Ty::MetricsRequest)?;
    let mut decoded = metrics_to_arrow(&req, ctx);
    decoded.invalid_utf8 = invalid_utf8;
    Ok(decoded)
}

/// Converts an already decoded traces request: one `spans` row per accepted span.
pub fn traces_to_arrow(req: &ExportTraceServiceRequest, ctx: &DecodeContext) -> Decoded {
    traces::convert(req, ctx)
}

/// Converts an already decoded logs request: one `logs` row per accepted log record.
pub fn logs_to_arrow(req: &ExportLogsServiceRequest, ctx: &DecodeContext) -> Decoded {
    logs::convert(req, ctx)
}

/// Converts an already decoded metrics request: one `metrics` row per accepted data point.
pub fn metrics_to_arrow(req: &ExportMetricsServiceRequest, ctx: &DecodeContext) -> Decoded {
    metrics::convert(req, ctx)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers for the converters' tests.
    #![allow(dead_code)]

    use arrow::array::{Array, AsArray};
    use arrow::record_batch::RecordBatch;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use tracelight_model::Tenant;

    use super::{DecodeContext, ItemLimits};

    pub const NOW_NS: i64 = 1_700_000_000_000_000_000;

    pub fn ctx() -> DecodeContext {
        DecodeContext { tenant: Tenant::default(), now_ns: NOW_NS, limits: ItemLimits::default() }
    }

    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/fixtures/otlp-json/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    pub fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    pub fn s(v: &str) -> Value {
        Value::StringValue(v.to_string())
    }

    /// The text of a Utf8 column at `row`, `None` when NULL.
    pub fn text(batch: &RecordBatch, col: &str, row: usize) -> Option<String> {
        let a = batch.column_by_name(col).unwrap_or_else(|| panic!("no column {col}")).as_string::<i32>();
        if a.is_null(row) { None } else { Some(a.value(row).to_string()) }
    }

    /// All values of a Utf8 column.
    pub fn texts(batch: &RecordBatch, col: &str) -> Vec<Option<String>> {
        (0..batch.num_rows()).map(|r| text(batch, col, r)).collect()
    }

    /// The entries of a map column at `row`, in stored order.
    pub fn map_at(batch: &RecordBatch, col: &str, row: usize) -> Vec<(String, Option<String>)> {
        let m = batch.column_by_name(col).unwrap_or_else(|| panic!("no column {col}")).as_map();
        map_entries(m, row)
    }

    pub fn map_entries(m: &arrow::array::MapArray, row: usize) -> Vec<(String, Option<String>)> {
        let entries = m.value(row);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        (0..entries.len())
            .map(|i| {
                let v = if values.is_null(i) { None } else { Some(values.value(i).to_string()) };
                (keys.value(i).to_string(), v)
            })
            .collect()
    }

    pub fn owned(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    }
}

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_limits() {
        let l = ItemLimits::default();
        assert_eq!(l.max_attribute_key_bytes, 1024);
        assert_eq!(l.max_attribute_value_bytes, 65536);
        assert_eq!(l.max_attributes, 1024);
        assert_eq!(l.max_body_bytes, 1 << 20);
    }

    #[test]
    fn empty_bodies_are_empty_requests_for_every_signal_and_format() {
        let ctx = test_util::ctx();
        for format in [Format::Protobuf, Format::Json] {
            for body in [&b""[..], &b" \n\t "[..]] {
                if format == Format::Protobuf && !body.is_empty() {
                    continue;
                }
                for d in [
                    decode_traces(body, format, &ctx).unwrap(),
                    decode_logs(body, format, &ctx).unwrap(),
                    decode_metrics(body, format, &ctx).unwrap(),
                ] {
                    assert_eq!(d.batch.num_rows(), 0);
                    assert_eq!(d.rejected, 0);
                    assert!(d.message.is_none());
                    assert!(d.reasons.is_empty());
                    assert_eq!(d.truncated_values, 0);
                }
            }
        }
    }

    #[test]
    fn undecodable_bodies_are_errors() {
        let ctx = test_util::ctx();
        let garbage = [0xffu8, 0xff, 0xff];
        assert!(matches!(decode_traces(&garbage, Format::Protobuf, &ctx), Err(DecodeError::Protobuf(_))));
        assert!(matches!(decode_logs(&garbage, Format::Protobuf, &ctx), Err(DecodeError::Protobuf(_))));
        assert!(matches!(decode_metrics(&garbage, Format::Protobuf, &ctx), Err(DecodeError::Protobuf(_))));
        for body in [&b"{not json"[..], &b"[1,2]"[..], &b"{\"resourceSpans\": 5}"[..]] {
            assert!(matches!(decode_traces(body, Format::Json, &ctx), Err(DecodeError::Json(_))));
        }
        assert!(matches!(decode_logs(b"{", Format::Json, &ctx), Err(DecodeError::Json(_))));
        assert!(matches!(decode_metrics(b"nope", Format::Json, &ctx), Err(DecodeError::Json(_))));
        let e = decode_traces(b"{", Format::Json, &ctx).err().unwrap();
        assert!(e.to_string().starts_with("invalid JSON: "), "{e}");
    }
}
