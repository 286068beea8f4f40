//! The Arrow schemas of `spans`, `logs` and `metrics`: the contract of DESIGN.md's "Query
//! contract", plus the OTLP fields it does not name (flags, dropped counts, scope attributes,
//! schema URLs, exponential-histogram buckets, summary quantiles) so that nothing sent is lost.
//!
//! Conventions:
//! - IDs are lower-case hex `Utf8`; a missing parent span or trace ID is NULL, never `""`.
//! - Timestamps are `Timestamp(Nanosecond, "UTC")`.
//! - Attributes are `Map<Utf8, Utf8>`: strings as sent, numbers and booleans as their text,
//!   bytes as base64, arrays and maps as JSON. `attributes['k']` in SQL returns that text.

use std::sync::{Arc, LazyLock};

use arrow::array::{MapBuilder, MapFieldNames, StringBuilder};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// `Timestamp(Nanosecond, "UTC")`.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn map_field_names() -> MapFieldNames {
    MapFieldNames { entry: "entries".into(), key: "keys".into(), value: "values".into() }
}

/// The `Map<Utf8, Utf8>` type used for every attribute column.
pub fn attr_map_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

/// A builder whose output has exactly [`attr_map_type`].
pub fn attr_map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(Some(map_field_names()), StringBuilder::new(), StringBuilder::new())
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, ts_type(), nullable)
}

fn attrs(name: &str) -> Field {
    Field::new(name, attr_map_type(), false)
}

fn u32f(name: &str) -> Field {
    Field::new(name, DataType::UInt32, false)
}

/// A `List<T>` field whose items are nullable, as Arrow's list builders produce by default.
fn list_of(name: &str, item: DataType, nullable: bool) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", item, true))), nullable)
}

/// The resource and scope columns shared by all three tables, in order.
fn resource_and_scope() -> Vec<Field> {
    vec![
        utf8("service_name", false),
        attrs("resource_attributes"),
        utf8("resource_schema_url", true),
        utf8("scope_name", true),
        utf8("scope_version", true),
        attrs("scope_attributes"),
        utf8("scope_schema_url", true),
    ]
}

/// Struct type of one entry of `spans.events`.
pub fn event_struct_fields() -> Fields {
    Fields::from(vec![ts("time", false), utf8("name", false), attrs("attributes"), u32f("dropped_attributes_count")])
}

/// Struct type of one entry of `spans.links`.
pub fn link_struct_fields() -> Fields {
    Fields::from(vec![
        utf8("trace_id", false),
        utf8("span_id", false),
        utf8("trace_state", true),
        attrs("attributes"),
        u32f("dropped_attributes_count"),
        u32f("flags"),
    ])
}

/// Struct type of one entry of `metrics.exemplars`.
pub fn exemplar_struct_fields() -> Fields {
    Fields::from(vec![
        ts("time", false),
        Field::new("value", DataType::Float64, true),
        utf8("trace_id", true),
        utf8("span_id", true),
        attrs("filtered_attributes"),
    ])
}

/// Struct type of one entry of `metrics.quantiles` (summaries).
pub fn quantile_struct_fields() -> Fields {
    Fields::from(vec![Field::new("quantile", DataType::Float64, false), Field::new("value", DataType::Float64, false)])
}

static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        utf8("trace_id", false),
        utf8("span_id", false),
        utf8("parent_span_id", true),
        utf8("trace_state", true),
        u32f("flags"),
        utf8("name", false),
        utf8("kind", false),
        ts("start_time", false),
        ts("end_time", false),
        Field::new("duration_ns", DataType::Int64, false),
        utf8("status_code", false),
        utf8("status_message", true),
        attrs("attributes"),
        u32f("dropped_attributes_count"),
        list_of("events", DataType::Struct(event_struct_fields()), false),
        u32f("dropped_events_count"),
        list_of("links", DataType::Struct(link_struct_fields()), false),
        u32f("dropped_links_count"),
    ];
    fields.extend(resource_and_scope());
    Arc::new(Schema::new(fields))
});

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        ts("time", false),
        ts("observed_time", true),
        utf8("trace_id", true),
        utf8("span_id", true),
        u32f("flags"),
        Field::new("severity_number", DataType::Int32, false),
        utf8("severity_text", true),
        utf8("body", true),
        utf8("event_name", true),
        attrs("attributes"),
        u32f("dropped_attributes_count"),
    ];
    fields.extend(resource_and_scope());
    Arc::new(Schema::new(fields))
});

static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        ts("time", false),
        ts("start_time", true),
        utf8("name", false),
        utf8("description", true),
        utf8("unit", true),
        utf8("kind", false),
        utf8("temporality", true),
        Field::new("is_monotonic", DataType::Boolean, true),
        attrs("attributes"),
        u32f("flags"),
        Field::new("value", DataType::Float64, true),
        Field::new("value_int", DataType::Int64, true),
        Field::new("count", DataType::UInt64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        list_of("bucket_counts", DataType::UInt64, true),
        list_of("explicit_bounds", DataType::Float64, true),
        Field::new("exp_scale", DataType::Int32, true),
        Field::new("exp_zero_count", DataType::UInt64, true),
        Field::new("exp_zero_threshold", DataType::Float64, true),
        Field::new("exp_positive_offset", DataType::Int32, true),
        list_of("exp_positive_bucket_counts", DataType::UInt64, true),
        Field::new("exp_negative_offset", DataType::Int32, true),
        list_of("exp_negative_bucket_counts", DataType::UInt64, true),
        list_of("quantiles", DataType::Struct(quantile_struct_fields()), true),
        list_of("exemplars", DataType::Struct(exemplar_struct_fields()), false),
    ];
    fields.extend(resource_and_scope());
    Arc::new(Schema::new(fields))
});

/// Schema of the `spans` table.
pub fn spans_schema() -> SchemaRef {
    SPANS.clone()
}

/// Schema of the `logs` table.
pub fn logs_schema() -> SchemaRef {
    LOGS.clone()
}

/// Schema of the `metrics` table.
pub fn metrics_schema() -> SchemaRef {
    METRICS.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, ArrayBuilder};

    #[test]
    fn attr_map_builder_output_matches_the_declared_type() {
        let mut b = attr_map_builder();
        b.keys().append_value("http.route");
        b.values().append_value("/checkout");
        b.append(true).unwrap();
        assert_eq!(b.len(), 1);
        let arr = b.finish();
        assert_eq!(arr.data_type(), &attr_map_type());
    }

    #[test]
    fn design_md_columns_are_present() {
        let spans = [
            "trace_id",
            "span_id",
            "parent_span_id",
            "trace_state",
            "name",
            "kind",
            "service_name",
            "start_time",
            "end_time",
            "duration_ns",
            "status_code",
            "status_message",
            "attributes",
            "resource_attributes",
            "scope_name",
            "scope_version",
            "events",
            "links",
        ];
        let logs = [
            "time",
            "observed_time",
            "trace_id",
            "span_id",
            "severity_number",
            "severity_text",
            "body",
            "service_name",
            "attributes",
            "resource_attributes",
            "scope_name",
        ];
        let metrics = [
            "time",
            "start_time",
            "name",
            "description",
            "unit",
            "kind",
            "temporality",
            "is_monotonic",
            "service_name",
            "attributes",
            "resource_attributes",
            "value",
            "count",
            "sum",
            "min",
            "max",
            "bucket_counts",
            "explicit_bounds",
            "exemplars",
        ];
        for (schema, cols) in
            [(spans_schema(), &spans[..]), (logs_schema(), &logs[..]), (metrics_schema(), &metrics[..])]
        {
            for c in cols {
                assert!(schema.field_with_name(c).is_ok(), "missing column {c}");
            }
        }
    }
}
