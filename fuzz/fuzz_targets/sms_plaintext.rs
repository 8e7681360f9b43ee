//! Plain-text SMS commands are typed by anyone who can reach a gateway.
#![no_main]
use hisa_sms_gateway::plaintext::{
    command_word, key_value_pairs, parse, positional_code, CodeSpec, CommandSpec, Dialect,
};
use hisa_sms_gateway::replies::{reply_text, sms_units, CustomTexts, Language, ReplyKind};
use libfuzzer_sys::fuzz_target;

const CODES: &[CodeSpec] = &[
    CodeSpec {
        code: "a",
        compulsory: false,
        text: false,
    },
    CodeSpec {
        code: "B1",
        compulsory: false,
        text: true,
    },
    CodeSpec {
        code: "B12",
        compulsory: true,
        text: false,
    },
    CodeSpec {
        code: "é",
        compulsory: false,
        text: false,
    },
    CodeSpec {
        code: "RPY",
        compulsory: false,
        text: true,
    },
];

const DIALECTS: [Dialect; 6] = [
    Dialect::Auto,
    Dialect::KeyValue,
    Dialect::Positional,
    Dialect::Tagged,
    Dialect::TextForms,
    Dialect::Compact,
];

const SEPARATORS: [Option<&str>; 6] =
    [None, Some("="), Some(":"), Some("."), Some("::"), Some(" ")];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let separator = SEPARATORS[selector as usize % SEPARATORS.len()];

    if let Some(word) = command_word(text) {
        assert!(word.len() >= 2 && word.as_bytes()[0].is_ascii_alphabetic());
    }
    if let Some(code) = positional_code(text) {
        assert!(!code.is_empty() && !code.contains('!'));
    }
    // B3's pairs: trimmed, non-empty, never containing `|`, keys unique.
    let pairs = key_value_pairs(text, separator);
    for (i, (k, v)) in pairs.iter().enumerate() {
        assert!(!k.is_empty() && !v.is_empty());
        assert!(!k.contains('|') && !v.contains('|'));
        assert_eq!(k.trim(), k);
        assert_eq!(v.trim(), v);
        assert!(pairs[..i].iter().all(|(other, _)| other != k));
    }

    let lang = [Language::En, Language::Fr, Language::Pt][selector as usize % 3];
    for dialect in DIALECTS {
        let spec = CommandSpec {
            name: "anc",
            separator,
            codes: CODES,
            dialect,
        };
        let kind = match parse(text, &spec) {
            Ok(parsed) => {
                assert_ne!(parsed.dialect, Dialect::Auto);
                for (code, value) in &parsed.values {
                    assert!(CODES.iter().any(|c| c.code == code));
                    assert!(!value.is_empty());
                }
                if parsed.unknown_codes.is_empty() {
                    ReplyKind::Success {
                        stored: parsed.values,
                        period: "202611".into(),
                    }
                } else {
                    ReplyKind::UnknownCodes(parsed.unknown_codes)
                }
            }
            Err(e) => ReplyKind::from_error(&e),
        };
        // Replies echo what the sender typed: they must stay one SMS long.
        let reply = reply_text(&kind, lang, &CustomTexts::default());
        assert!(sms_units(&reply) <= 160, "{reply}");
    }
});
