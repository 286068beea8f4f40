//! A paging cursor as a client sends it back → decoded within its bounds, or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracelight_model::correlate::{Cursor, MAX_CURSOR_SKIP};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(c) = Cursor::decode(s)
    {
        assert!(c.skip <= MAX_CURSOR_SKIP && c.key.len() <= 64);
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    }
});
