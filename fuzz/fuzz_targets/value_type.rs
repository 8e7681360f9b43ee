//! Every data value passes through these checks.
#![no_main]
use hisa_shared::value_type::{validate_value, ValueType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(value) = std::str::from_utf8(rest) else { return };
    let value_type = ValueType::ALL[selector as usize % ValueType::ALL.len()];
    if let Ok(normalized) = validate_value(value_type, value, None) {
        // Normalizing is idempotent: a stored value re-validates to itself.
        assert_eq!(validate_value(value_type, &normalized, None).ok(), Some(normalized));
    }
});
