//! Period strings come from URLs, payloads, SMS and ADX files.
#![no_main]
use hisa_shared::period::Period;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = Period::parse(s) {
        // Whatever parses must format and parse back to itself.
        assert_eq!(Period::parse(&p.iso()).ok(), Some(p));
        let _ = p.next();
        let _ = p.previous();
    }
    if let Ok(p) = Period::from_adx(s) {
        assert_eq!(Period::from_adx(&p.to_adx()).ok(), Some(p));
    }
    let _ = hisa_shared::Uid::parse(s);
});
