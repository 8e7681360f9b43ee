//! Hisa SMS text comes from any phone that can reach a gateway, and a device
//! holding a key can sign any bytes it likes: both the frame layer and the
//! body decoder behind the MAC must take anything without panicking.
#![no_main]
use hisa_shared::hisa_sms::{self, DeviceKey, Frame, Part};
use libfuzzer_sys::fuzz_target;

const KEY: DeviceKey = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hisa_sms::read_frame(text);
        let _ = hisa_sms::parse_reply(text);
    }
    use base64::Engine;
    let text = format!(
        "*{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(data)
    );
    if let Ok(Frame::Part(part)) = hisa_sms::read_frame(&text) {
        let _ = hisa_sms::reassemble(&[part.clone(), part]);
    }
    let _ = hisa_sms::peek_key(data);
    let _ = hisa_sms::open(data, &KEY);

    // Signed with the right key, the bytes reach the body decoder; whatever
    // decodes must encode and decode back to itself.
    let mut signed = data.to_vec();
    let mac = hisa_sms::message_mac(&KEY, &signed);
    signed.extend_from_slice(&mac);
    if let Ok(envelope) = hisa_sms::open(&signed, &KEY) {
        if let Ok(texts) = hisa_sms::encode(&envelope, &KEY) {
            let mut parts: Vec<Part> = Vec::new();
            let mut whole = None;
            for text in &texts {
                match hisa_sms::read_frame(text).expect("own text reads") {
                    Frame::Whole(bytes) => whole = Some(bytes),
                    Frame::Part(part) => parts.push(part),
                }
            }
            parts.reverse();
            let bytes = whole.unwrap_or_else(|| hisa_sms::reassemble(&parts).expect("own parts"));
            assert_eq!(hisa_sms::open(&bytes, &KEY).expect("own message"), envelope);
        }
    }
});
