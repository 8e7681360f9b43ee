//! Data value sets arrive as JSON, CSV and ADX bodies from anyone with a login.
#![no_main]
use hisa_server::data::input::{parse, Event, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let format = match selector % 3 {
        0 => Format::Json,
        1 => Format::Csv,
        _ => Format::Adx,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 16);
    let reader = body.to_vec();
    let parser = std::thread::spawn(move || parse(format, reader.as_slice(), true, None, tx));
    while let Some(event) = rx.blocking_recv() {
        // A malformed body ends the stream with one `Malformed`, never a panic.
        if let Event::Malformed(message) = event {
            assert!(!message.is_empty());
        }
    }
    parser.join().expect("parser thread panicked");
});
