//! A WAL segment's bytes → its intact records (damage skipped or cut) → each record's rows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelight_collector::decode::ItemLimits;
use tracelight_collector::{record, wal};

fuzz_target!(|data: &[u8]| {
    let scan = wal::scan(data, 0);
    let mut last = 0;
    for (lsn, range) in &scan.records {
        assert!(*lsn > last, "LSNs increase");
        last = *lsn;
        assert!(range.end <= scan.end && scan.end <= data.len());
        let _ = record::decode(&data[range.clone()], &ItemLimits::default());
    }
});
