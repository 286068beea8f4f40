//! Another node's head answer (Arrow IPC, see `tracelight_model::peers`) → batches of the
//! schema asked for, or a clear refusal; never a panic or an allocation the bytes size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelight_model::peers::{self, HeadKind, HeadRequest};
use tracelight_model::{Signal, Tenant};

fuzz_target!(|data: &[u8]| {
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
