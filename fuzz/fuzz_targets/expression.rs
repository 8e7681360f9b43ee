//! Indicator and validation rule expressions come from metadata imports.
#![no_main]
use hisa_shared::expression::{parse, ExprContext, MissingValueStrategy, ValueSource, Item};
use libfuzzer_sys::fuzz_target;

struct Ones;
impl ValueSource for Ones {
    fn item(&self, _: &Item) -> Option<f64> {
        Some(1.0)
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for ctx in [ExprContext::Indicator, ExprContext::ValidationRule, ExprContext::Predictor] {
        if let Ok(expr) = parse(text, ctx) {
            // What parses prints back to something that parses the same.
            assert_eq!(parse(&expr.to_string_canonical(), ctx).ok(), Some(expr.clone()));
            let _ = expr.evaluate(&Ones, MissingValueStrategy::NeverSkip);
        }
    }
});
