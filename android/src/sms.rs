//! Building the `ACTION_SENDTO` URI for an SMS.

/// `smsto:<number>?body=<text>`, percent-encoding the body as Android's
/// `Uri.parse` expects (RFC 3986 unreserved characters kept).
pub fn smsto_uri(number: &str, body: &str) -> String {
    let number: String = number
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    let mut out = format!("smsto:{number}?body=");
    for b in body.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_body_and_cleans_number() {
        assert_eq!(
            smsto_uri("+255 712-345", "H1 a=b&c"),
            "smsto:+255712345?body=H1%20a%3Db%26c"
        );
        assert_eq!(smsto_uri("1", "é"), "smsto:1?body=%C3%A9");
    }
}
