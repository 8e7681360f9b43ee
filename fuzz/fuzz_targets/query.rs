//! `fields`, `filter` and `order` come straight from URLs.
#![no_main]
use hisa_server::query::{parse_fields, parse_filter, parse_order, select, NoResolver};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let object = serde_json::json!({"id": "abcdefghijk", "name": "x", "children": [{"id": "bcdefghijkl"}]});
    if let Ok(fields) = parse_fields(s) {
        let _ = select(&object, &fields, &NoResolver);
    }
    if let Ok(filter) = parse_filter(s) {
        let _ = filter.matches(&object, &NoResolver);
    }
    let _ = parse_order(s);
});
