//! Compressed SMS text comes from any phone that can reach a gateway.
#![no_main]
use hisa_shared::dhis2_sms::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode(text);
    }
    // Valid Base64 of arbitrary bytes reaches the body decoder.
    use base64::Engine;
    let _ = decode(&base64::engine::general_purpose::STANDARD.encode(data));
});
