//! Another node's head answer (Arrow IPC, see `tracelight_model::peers`) → batches of the
//! schema asked for, or a clear refusal; never a panic that escapes `decode`, or an allocation
//! the bytes size.
//!
//! arrow's IPC reader asserts on some malformed record batches (a validity buffer shorter than
//! its rows, found here). `decode` runs it under `catch_unwind` and turns that into a refusal,
//! which is what a query node does in production (release builds unwind). libFuzzer's panic
//! hook would abort even on a caught panic, so this target replaces it with a silent one: a
//! panic outside `decode`'s guard still unwinds out of the target and is a finding.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use tracelight_model::peers::{self, HeadKind, HeadRequest};
use tracelight_model::{Signal, Tenant};

static QUIET: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let t = Tenant::default_tenant();
    let asked = [
        HeadRequest::new(&t, Signal::Logs, 0, 1, HeadKind::Rows { columns: None }),
        HeadRequest::new(&t, Signal::Spans, 0, 1, HeadKind::Hours),
        HeadRequest::new(&t, Signal::Logs, 0, 1, HeadKind::Histogram { search: Default::default(), step_ns: 1, buckets: 1 }),
    ];
    for r in &asked {
        let schema = r.answer_schema().expect("a valid request");
        if let Ok(batches) = peers::decode(data, &schema) {
            for b in batches {
                assert_eq!(b.schema().fields(), schema.fields());
            }
        }
    }
});
