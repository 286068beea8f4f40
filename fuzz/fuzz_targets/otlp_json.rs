//! OTLP/JSON request bytes of any signal (the first byte picks it) → rows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelight_collector::decode::{self, DecodeContext, Format, ItemLimits};
use tracelight_model::{Signal, Tenant};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let signal = Signal::ALL[pick as usize % Signal::ALL.len()];
    let ctx = DecodeContext { tenant: Tenant::default(), now_ns: 1_800_000_000_000_000_000, limits: ItemLimits::default() };
    if let Ok(d) = decode::decode(signal, body, Format::Json, &ctx) {
        assert_eq!(d.batch.batch.schema(), signal.schema());
    }
});
