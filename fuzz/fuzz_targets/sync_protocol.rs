//! The device sync protocol's request bodies and header, as a phone (or an
//! attacker) sends them: parsing never panics, and what parses serialises
//! back to something that parses to the same value.
#![no_main]

use hisa_shared::sync::{parse_authorization, EnrolRequest, PolicyRules, StatusReport, UploadRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_authorization(text);
    }
    if let Ok(upload) = serde_json::from_slice::<UploadRequest>(data) {
        let again: UploadRequest = serde_json::from_slice(&serde_json::to_vec(&upload).unwrap()).unwrap();
        assert_eq!(again, upload);
    }
    if let Ok(rules) = serde_json::from_slice::<PolicyRules>(data) {
        let _ = rules.check();
        let _ = rules.resolve();
    }
    let _ = serde_json::from_slice::<EnrolRequest>(data);
    let _ = serde_json::from_slice::<StatusReport>(data);
});
