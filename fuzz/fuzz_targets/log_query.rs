//! Log search text (tantivy syntax, with our checks) → a query, or a clear refusal.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tracelight_index::LogSyntax;

static SYNTAX: LazyLock<LogSyntax> = LazyLock::new(LogSyntax::new);

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = std::str::from_utf8(data) {
        let _ = SYNTAX.parse(q);
    }
});
