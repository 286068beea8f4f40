//! The order a segment's rows are written in (and compaction merges in): logs by service,
//! spans by service and then failed after the rest, metric points by series and time.

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use tracelight_model::Signal;

/// Runs of rows with the same order key (service, and for spans whether the span failed):
/// (service, failed, rows).
pub(crate) fn runs<'a>(
    service: &'a StringArray,
    status: Option<&StringArray>,
) -> Vec<(&'a str, bool, std::ops::Range<usize>)> {
    let mut out: Vec<(&str, bool, std::ops::Range<usize>)> = Vec::new();
    for i in 0..service.len() {
        let (v, failed) = (service.value(i), status.is_some_and(|s| failed(s, i)));
        match out.last_mut() {
            Some((last, f, r)) if *last == v && *f == failed => r.end = i + 1,
            _ => out.push((v, failed, i..i + 1)),
        }
    }
    out
}

/// Whether span `i` has status ERROR.
fn failed(status: &StringArray, i: usize) -> bool {
    status.is_valid(i) && status.value(i) == "ERROR"
}

/// The order a segment's rows are written in, as byte strings that compare as the order does:
/// logs by service, spans by service then failed after the rest (then arrival, which the
/// caller keeps); metric points by series and time (service, name, a hash of the point's
/// attributes and resource, time).
pub fn row_keys(signal: Signal, batch: &RecordBatch) -> Vec<Vec<u8>> {
    let n = batch.num_rows();
    let strings = |name: &str| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>().cloned());
    let service = strings("service_name");
    fn text(a: &Option<StringArray>, i: usize) -> &[u8] {
        a.as_ref().filter(|a| a.is_valid(i)).map_or(&[][..], |a| a.value(i).as_bytes())
    }
    if signal == Signal::Spans {
        let status = strings("status_code");
        return (0..n)
            .map(|i| {
                let mut key = text(&service, i).to_vec();
                key.extend_from_slice(&[0, u8::from(status.as_ref().is_some_and(|s| failed(s, i)))]);
                key
            })
            .collect();
    }
    if signal != Signal::Metrics {
        return (0..n).map(|i| text(&service, i).to_vec()).collect();
    }
    let name = strings("name");
    let maps: Vec<Option<arrow::array::MapArray>> = ["attributes", "resource_attributes"]
        .iter()
        .map(|c| batch.column_by_name(c).and_then(|c| c.as_map_opt().cloned()))
        .collect();
    let times = batch
        .column_by_name("time")
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>().cloned());
    (0..n)
        .map(|i| {
            use std::hash::Hasher;
            let mut h = siphasher::sip::SipHasher13::new_with_keys(0x7472_6163_656c_6967, 0x6874_2073_6572_6965);
            for m in maps.iter().flatten() {
                if m.is_valid(i) {
                    let entries = m.value(i);
                    let (k, v) = (entries.column(0).as_string::<i32>(), entries.column(1).as_string::<i32>());
                    for j in 0..k.len() {
                        h.write(k.value(j).as_bytes());
                        h.write_u8(0xff);
                        h.write(if v.is_valid(j) { v.value(j).as_bytes() } else { &[] });
                        h.write_u8(0xfe);
                    }
                }
                h.write_u8(0xfd);
            }
            let mut key = Vec::with_capacity(40);
            key.extend_from_slice(text(&service, i));
            key.push(0);
            key.extend_from_slice(text(&name, i));
            key.push(0);
            key.extend_from_slice(&h.finish().to_be_bytes());
            // Sign flipped, so negative times sort before positive ones as bytes.
            let t = times.as_ref().map_or(0, |t| t.value(i));
            key.extend_from_slice(&((t as u64) ^ (1 << 63)).to_be_bytes());
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn spans_order_by_service_then_failed_after_the_rest() {
        let service = StringArray::from(vec!["b", "a", "a", "a", "b", "a"]);
        let status =
            StringArray::from(vec![Some("OK"), Some("ERROR"), None, Some("UNSET"), Some("ERROR"), Some("ERROR")]);
        assert_eq!(
            runs(&service, Some(&status)),
            [("b", false, 0..1), ("a", true, 1..2), ("a", false, 2..4), ("b", true, 4..5), ("a", true, 5..6)]
        );
        assert_eq!(
            runs(&service, None),
            [("b", false, 0..1), ("a", false, 1..4), ("b", false, 4..5), ("a", false, 5..6)]
        );

        let schema = Arc::new(Schema::new(vec![
            Field::new("service_name", DataType::Utf8, false),
            Field::new("status_code", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(service), Arc::new(status)]).unwrap();
        let keys = row_keys(Signal::Spans, &batch);
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&x, &y| keys[x].cmp(&keys[y]));
        // Service a: the unset and OK ones (arrival order), then its failed ones; then b's.
        assert_eq!(order, [2, 3, 1, 5, 0, 4]);
        // Logs keep the service order alone.
        let keys = row_keys(Signal::Logs, &batch);
        assert!(keys[1] == keys[2] && keys[1] < keys[0]);
    }
}
