//! `ExportLogsServiceRequest` → `logs` rows.

use arrow::array::{ArrayRef, Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt32Builder};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use tracelight_model::{Signal, SignalBatch};

use super::common::{
    AttrBuilder, Reason, ResourceInfo, ResourceScopeCols, ScopeInfo, Tally, any_text, append_attrs, arr, attr_builder,
    check_window, hex_id, non_empty, presize, to_i64, ts_builder, valid_id,
};
use super::{DecodeContext, Decoded, ItemLimits};

/// `time` (never NULL) and `observed_time` of a record, or why it is refused.
fn check_record(rec: &LogRecord, now_ns: i64, limits: &ItemLimits) -> Result<(i64, Option<i64>), Reason> {
    let (Some(time), Some(observed)) = (to_i64(rec.time_unix_nano), to_i64(rec.observed_time_unix_nano)) else {
        return Err(Reason::TimestampOutOfRange);
    };
    let effective = if time != 0 {
        time
    } else if observed != 0 {
        observed
    } else {
        now_ns
    };
    check_window(effective, now_ns, limits)?;
    Ok((effective, (observed != 0).then_some(observed)))
}

struct LogCols {
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    flags: UInt32Builder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    event_name: StringBuilder,
    attributes: AttrBuilder,
    dropped_attributes_count: UInt32Builder,
    rs: ResourceScopeCols,
}

struct Scratch {
    text: String,
    id: [u8; 32],
    truncated: u64,
}

impl LogCols {
    fn with_capacity(rows: usize, attrs: usize, resource_entries: usize, limits: &ItemLimits) -> LogCols {
        LogCols {
            time: ts_builder(rows),
            observed_time: ts_builder(rows),
            trace_id: StringBuilder::with_capacity(rows, rows * 32),
            span_id: StringBuilder::with_capacity(rows, rows * 16),
            flags: UInt32Builder::with_capacity(rows),
            severity_number: Int32Builder::with_capacity(rows),
            severity_text: StringBuilder::with_capacity(rows, rows * 5),
            body: StringBuilder::with_capacity(rows, rows * 64),
            event_name: StringBuilder::with_capacity(rows, 0),
            attributes: attr_builder(rows, attrs),
            dropped_attributes_count: UInt32Builder::with_capacity(rows),
            rs: ResourceScopeCols::with_capacity(rows, resource_entries, limits),
        }
    }

    fn append(&mut self, rec: &LogRecord, time: i64, observed: Option<i64>, limits: &ItemLimits, sc: &mut Scratch) {
        self.time.append_value(time);
        self.observed_time.append_option(observed);
        // Correlation IDs are best effort: a malformed one is dropped, the record kept.
        if valid_id(&rec.trace_id, 16) {
            self.trace_id.append_value(hex_id(&rec.trace_id, &mut sc.id));
        } else {
            self.trace_id.append_null();
        }
        if valid_id(&rec.span_id, 8) {
            self.span_id.append_value(hex_id(&rec.span_id, &mut sc.id));
        } else {
            self.span_id.append_null();
        }
        self.flags.append_value(rec.flags);
        self.severity_number.append_value(rec.severity_number);
        self.severity_text.append_option(non_empty(&rec.severity_text));
        self.body.append_option(any_text(rec.body.as_ref(), &mut sc.text, limits.max_body_bytes, &mut sc.truncated));
        self.event_name.append_option(non_empty(&rec.event_name));
        let dropped = append_attrs(&mut self.attributes, &rec.attributes, limits, &mut sc.text, &mut sc.truncated);
        self.dropped_attributes_count.append_value(rec.dropped_attributes_count.saturating_add(dropped));
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(18);
        columns.push(arr(self.time.finish()));
        columns.push(arr(self.observed_time.finish()));
        columns.push(arr(self.trace_id.finish()));
        columns.push(arr(self.span_id.finish()));
        columns.push(arr(self.flags.finish()));
        columns.push(arr(self.severity_number.finish()));
        columns.push(arr(self.severity_text.finish()));
        columns.push(arr(self.body.finish()));
        columns.push(arr(self.event_name.finish()));
        columns.push(arr(self.attributes.finish()));
        columns.push(arr(self.dropped_attributes_count.finish()));
        self.rs.finish_into(&mut columns);
        columns
    }
}

pub(crate) fn convert(req: &ExportLogsServiceRequest, ctx: &DecodeContext) -> Decoded {
    let limits = &ctx.limits;
    let (mut rows, mut attrs, mut resource_entries) = (0usize, 0usize, 0usize);
    for rl in &req.resource_logs {
        let res_attrs = rl.resource.as_ref().map_or(0, |r| r.attributes.len());
        for sl in &rl.scope_logs {
            rows += sl.log_records.len();
            resource_entries = resource_entries.saturating_add(res_attrs.saturating_mul(sl.log_records.len()));
            attrs += sl.log_records.iter().map(|r| r.attributes.len()).sum::<usize>();
        }
    }

    let mut tally = Tally::default();
    let mut sc = Scratch { text: String::new(), id: [0u8; 32], truncated: 0 };
    let mut cols = LogCols::with_capacity(presize(rows), presize(attrs), presize(resource_entries), limits);
    for rl in &req.resource_logs {
        if rl.scope_logs.iter().all(|sl| sl.log_records.is_empty()) {
            continue;
        }
        let res = ResourceInfo::new(rl.resource.as_ref(), &rl.schema_url, limits, &mut sc.text, &mut sc.truncated);
        for sl in &rl.scope_logs {
            if sl.log_records.is_empty() {
                continue;
            }
            let scope = ScopeInfo::new(sl.scope.as_ref(), &sl.schema_url, limits, &mut sc.text, &mut sc.truncated);
            // Checked in the order sent, appended in time order (see the same step for spans).
            let mut ok: Vec<(&LogRecord, i64, Option<i64>)> = Vec::with_capacity(sl.log_records.len());
            for rec in &sl.log_records {
                match check_record(rec, ctx.now_ns, limits) {
                    Ok((time, observed)) => ok.push((rec, time, observed)),
                    Err(reason) => tally.reject(reason),
                }
            }
            if !ok.is_sorted_by_key(|r| r.1) {
                ok.sort_by_key(|r| r.1);
            }
            for (rec, time, observed) in ok {
                if !cols.rs.fits(&res, &scope, 0) {
                    tally.reject(Reason::RepeatedTooLarge);
                    continue;
                }
                cols.append(rec, time, observed, limits, &mut sc);
                cols.rs.append(&res, &scope);
            }
        }
    }
    let batch =
        RecordBatch::try_new(Signal::Logs.schema(), cols.finish()).expect("log columns are built in the logs schema");
    tally.truncated += sc.truncated;
    tally.into_decoded(SignalBatch { tenant: ctx.tenant.clone(), signal: Signal::Logs, batch }, "log records")
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, TimestampNanosecondType, UInt32Type};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;
    use crate::decode::test_util::{NOW_NS, ctx, fixture, kv, map_at, owned, s, text, texts};
    use crate::decode::{Format, decode_logs, logs_to_arrow};

    const T0: u64 = 1_544_712_660_300_000_000;

    fn record(body: Option<Value>) -> LogRecord {
        LogRecord {
            time_unix_nano: T0,
            observed_time_unix_nano: T0 + 5,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: body.map(|v| AnyValue { value: Some(v) }),
            trace_id: vec![0x0a; 16],
            span_id: vec![0x0b; 8],
            ..Default::default()
        }
    }

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource { attributes: vec![kv("service.name", s("api"))], ..Default::default() }),
                scope_logs: vec![ScopeLogs { scope: None, log_records: records, schema_url: String::new() }],
                schema_url: "https://example.com/schema".into(),
            }],
        }
    }

    fn ts(b: &RecordBatch, col: &str, row: usize) -> Option<i64> {
        let a = b.column_by_name(col).unwrap().as_primitive::<TimestampNanosecondType>();
        if a.is_null(row) { None } else { Some(a.value(row)) }
    }

    #[test]
    fn fixture_logs_give_one_record_with_typed_attributes_as_text() {
        let d = decode_logs(&fixture("logs.json"), Format::Json, &ctx()).unwrap();
        assert_eq!(d.rejected, 0);
        let b = &d.batch.batch;
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema(), Signal::Logs.schema());
        assert_eq!(ts(b, "time", 0), Some(1_544_712_660_300_000_000));
        assert_eq!(ts(b, "observed_time", 0), Some(1_544_712_660_300_000_000));
        assert_eq!(text(b, "trace_id", 0).as_deref(), Some("5b8efff798038103d269b633813fc60c"));
        assert_eq!(text(b, "span_id", 0).as_deref(), Some("eee19b7ec3c1b174"));
        assert_eq!(text(b, "severity_text", 0).as_deref(), Some("Information"));
        assert_eq!(b.column_by_name("severity_number").unwrap().as_primitive::<Int32Type>().value(0), 0);
        assert_eq!(text(b, "body", 0).as_deref(), Some("Example log record"));
        assert_eq!(text(b, "event_name", 0), None);
        assert_eq!(text(b, "service_name", 0).as_deref(), Some("my.service"));
        assert_eq!(text(b, "scope_name", 0).as_deref(), Some("my.library"));
        assert_eq!(
            map_at(b, "attributes", 0),
            owned(&[
                ("string.attribute", Some("some string")),
                ("boolean.attribute", Some("true")),
                ("int.attribute", Some("10")),
                ("double.attribute", Some("637.704")),
                ("array.attribute", Some(r#"["many","values"]"#)),
                ("map.attribute", Some(r#"{"some.map.key":"some value"}"#)),
            ])
        );
    }

    #[test]
    fn structured_bodies_become_json_text() {
        let kvlist = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("msg", s("hi \"there\"")),
                kv("n", Value::IntValue(3)),
                kv("tags", Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("a")) }] })),
            ],
        });
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue { value: Some(Value::IntValue(1)) },
                AnyValue { value: Some(Value::DoubleValue(0.5)) },
            ],
        });
        let d = logs_to_arrow(
            &request(vec![record(Some(kvlist)), record(Some(array)), record(None), record(Some(Value::IntValue(-7)))]),
            &ctx(),
        );
        let b = &d.batch.batch;
        assert_eq!(
            texts(b, "body"),
            vec![
                Some(r#"{"msg":"hi \"there\"","n":3,"tags":["a"]}"#.to_string()),
                Some("[1,0.5]".to_string()),
                None,
                Some("-7".to_string()),
            ]
        );
        assert_eq!(text(b, "trace_id", 0).as_deref(), Some("0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"));
        assert_eq!(text(b, "span_id", 0).as_deref(), Some("0b0b0b0b0b0b0b0b"));
        assert_eq!(text(b, "resource_schema_url", 0).as_deref(), Some("https://example.com/schema"));
        assert_eq!(text(b, "scope_name", 0), None);
        assert!(map_at(b, "scope_attributes", 0).is_empty());
        assert_eq!(b.column_by_name("severity_number").unwrap().as_primitive::<Int32Type>().value(0), 9);
    }

    #[test]
    fn times_fall_back_and_out_of_range_is_rejected() {
        let mut no_time = record(None);
        no_time.time_unix_nano = 0;
        let mut no_times = record(None);
        no_times.time_unix_nano = 0;
        no_times.observed_time_unix_nano = 0;
        let mut huge = record(None);
        huge.time_unix_nano = u64::MAX;
        let mut huge_observed = record(None);
        huge_observed.observed_time_unix_nano = i64::MAX as u64 + 1;
        let d = logs_to_arrow(&request(vec![record(None), no_time, huge, no_times, huge_observed]), &ctx());
        let b = &d.batch.batch;
        assert_eq!(b.num_rows(), 3);
        assert_eq!(ts(b, "time", 0), Some(T0 as i64));
        assert_eq!(ts(b, "time", 1), Some(T0 as i64 + 5));
        assert_eq!(ts(b, "time", 2), Some(NOW_NS));
        assert_eq!(ts(b, "observed_time", 0), Some(T0 as i64 + 5));
        assert_eq!(ts(b, "observed_time", 2), None);
        assert_eq!(d.rejected, 2);
        assert_eq!(d.reasons, vec![("timestamp_out_of_range", 2)]);
        assert!(d.message.unwrap().starts_with("2 log records rejected: "));
    }

    #[test]
    fn bad_correlation_ids_become_null_but_keep_the_record() {
        let mut short = record(None);
        short.trace_id = vec![1; 15];
        short.span_id = vec![1; 9];
        let mut zero = record(None);
        zero.trace_id = vec![0; 16];
        zero.span_id = vec![0; 8];
        let mut empty = record(None);
        empty.trace_id.clear();
        empty.span_id.clear();
        let d = logs_to_arrow(&request(vec![short, zero, empty]), &ctx());
        let b = &d.batch.batch;
        assert_eq!(b.num_rows(), 3);
        assert_eq!(d.rejected, 0);
        assert_eq!(texts(b, "trace_id"), vec![None::<String>; 3]);
        assert_eq!(texts(b, "span_id"), vec![None::<String>; 3]);
    }

    #[test]
    fn body_and_attributes_are_truncated_to_the_limits() {
        let mut rec = record(Some(s("abcdéfgh")));
        rec.event_name = "evt".into();
        rec.flags = 1;
        rec.dropped_attributes_count = 4;
        rec.attributes = vec![kv("a", s("0123456789")), kv("b", s("short"))];
        let mut c = ctx();
        c.limits.max_body_bytes = 5;
        c.limits.max_attribute_value_bytes = 6;
        c.limits.max_attributes = 1;
        let d = logs_to_arrow(&request(vec![rec]), &c);
        let b = &d.batch.batch;
        // "abcdé" would be 6 bytes: the cut falls inside 'é'.
        assert_eq!(text(b, "body", 0).as_deref(), Some("abcd"));
        assert_eq!(map_at(b, "attributes", 0), owned(&[("a", Some("012345"))]));
        assert_eq!(b.column_by_name("dropped_attributes_count").unwrap().as_primitive::<UInt32Type>().value(0), 5);
        assert_eq!(b.column_by_name("flags").unwrap().as_primitive::<UInt32Type>().value(0), 1);
        assert_eq!(text(b, "event_name", 0).as_deref(), Some("evt"));
        assert_eq!(d.truncated_values, 2);
    }

    #[test]
    fn protobuf_round_trip_matches_direct_conversion() {
        let req = request(vec![record(Some(s("x"))), record(Some(Value::BoolValue(false)))]);
        let body = prost::Message::encode_to_vec(&req);
        let c = ctx();
        let from_bytes = decode_logs(&body, Format::Protobuf, &c).unwrap();
        assert_eq!(from_bytes.batch.batch, logs_to_arrow(&req, &c).batch.batch);
        assert_eq!(texts(&from_bytes.batch.batch, "body"), vec![Some("x".to_string()), Some("false".to_string())]);
    }
}
