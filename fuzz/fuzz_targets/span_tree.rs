//! Spans with arbitrary (often repeated or cyclic) IDs and parents → the waterfall's tree and
//! critical path: every span exactly once, in time linear in the spans.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelight_model::correlate::{SpanRecord, critical_path, span_tree};

fuzz_target!(|data: &[u8]| {
    // Four bytes a span: its ID, its parent (0: none), start and duration, from tiny alphabets
    // so that IDs repeat and parents form chains, stars and cycles.
    let spans: Vec<SpanRecord> = data
        .chunks_exact(4)
        .take(20_000)
        .map(|c| SpanRecord {
            trace_id: "t".into(),
            span_id: format!("{:016x}", c[0] % 64),
            parent_span_id: (c[1] % 65 != 0).then(|| format!("{:016x}", c[1] % 65 - 1)),
            start_ns: c[2] as i64,
            end_ns: c[2] as i64 + c[3] as i64,
            duration_ns: c[3] as i64,
            ..SpanRecord::default()
        })
        .collect();
    let rows = span_tree(&spans);
    let mut seen = vec![false; spans.len()];
    for r in &rows {
        assert!(!std::mem::replace(&mut seen[r.index], true), "a span drawn twice");
    }
    assert!(seen.iter().all(|s| *s), "a span not drawn");
    assert_eq!(critical_path(&spans).len(), spans.len());
});
