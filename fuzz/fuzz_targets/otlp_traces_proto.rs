//! OTLP/protobuf traces request bytes → rows, as both receivers and WAL replay decode them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelight_collector::decode::{self, DecodeContext, Format, ItemLimits};
use tracelight_model::{Signal, Tenant};

fuzz_target!(|data: &[u8]| {
    let limits = ItemLimits { max_past_ns: Some(7 * 86_400_000_000_000), max_future_ns: Some(3_600_000_000_000), ..ItemLimits::default() };
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: 1_800_000_000_000_000_000, limits };
    if let Ok(d) = decode::decode(Signal::Spans, data, Format::Protobuf, &ctx) {
        assert_eq!(d.batch.batch.schema(), Signal::Spans.schema());
    }
});
