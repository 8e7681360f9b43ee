//! A metadata payload is the largest structured input Hisa takes.
#![no_main]
use hisa_server::metadata::import::{plan, ImportParams};
use hisa_server::metadata::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let snapshot = Snapshot::default();
    let _ = plan(
        &snapshot,
        payload,
        ImportParams::default(),
        time::OffsetDateTime::UNIX_EPOCH,
        &|p| p.to_string(),
    );
});
