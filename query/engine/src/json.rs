//! Arrow results as JSON rows: `{"columns": [...], "rows": [[...]]}`.
//!
//! Timestamps become RFC 3339 strings in UTC with nanoseconds, maps become objects, lists
//! arrays, structs objects; non-finite floats become the strings "NaN", "Infinity",
//! "-Infinity" (JSON has no such numbers); anything else is rendered by Arrow's formatter.

use base64::Engine as _;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::*;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value};
use tracelight_model::Column;

/// The result's columns: names and Arrow type names.
pub fn columns(schema: &Schema) -> Vec<Column> {
    schema.fields().iter().map(|f| Column { name: f.name().clone(), data_type: f.data_type().to_string() }).collect()
}

/// Bytes of `row` as JSON text (without writing it anywhere).
pub fn encoded_len(row: &[Value]) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, row);
    c.0
}

pub fn to_rows(schema: &Schema, batches: &[RecordBatch]) -> (Vec<Column>, Vec<Vec<Value>>) {
    let columns = self::columns(schema);
    let mut rows = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for b in batches {
        for i in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| value(c, i)).collect());
        }
    }
    (columns, rows)
}

fn float(v: f64) -> Value {
    if v.is_finite() {
        serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
    } else if v.is_nan() {
        Value::String("NaN".into())
    } else if v > 0.0 {
        Value::String("Infinity".into())
    } else {
        Value::String("-Infinity".into())
    }
}

fn rfc3339_ns(ns: i64) -> Value {
    let dt = chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32);
    match dt {
        Some(d) => Value::String(d.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()),
        None => Value::from(ns),
    }
}

/// The JSON value of row `i` of `a`.
pub fn value(a: &ArrayRef, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => Value::from(a.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Value::from(a.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Value::from(a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::from(a.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Value::from(a.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Value::from(a.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Value::from(a.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => float(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::Binary => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(a.as_binary::<i32>().value(i)))
        }
        DataType::Timestamp(unit, _) => {
            let n = match unit {
                TimeUnit::Nanosecond => Some(a.as_primitive::<TimestampNanosecondType>().value(i)),
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i).checked_mul(1_000),
                TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i).checked_mul(1_000_000),
                TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i).checked_mul(1_000_000_000),
            };
            n.map(rfc3339_ns).unwrap_or(Value::Null)
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>().value(i);
            Value::Array((0..l.len()).map(|j| value(&l, j)).collect())
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>().value(i);
            Value::Array((0..l.len()).map(|j| value(&l, j)).collect())
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), value(c, i));
            }
            Value::Object(m)
        }
        DataType::Map(_, _) => {
            let m = a.as_map();
            let entries = m.value(i);
            let keys = entries.column(0);
            let vals = entries.column(1);
            let mut out = Map::new();
            for j in 0..entries.len() {
                let k = match value(keys, j) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, value(vals, j));
            }
            Value::Object(out)
        }
        _ => {
            let opts = FormatOptions::default();
            match ArrayFormatter::try_new(a.as_ref(), &opts) {
                Ok(f) => Value::String(f.value(i).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}
