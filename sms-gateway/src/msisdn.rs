//! Phone numbers. Gateways deliver the sender in whatever form the network
//! gave (`+255712345678`, `255712345678`, `0712345678`, `00255 712 345 678`);
//! users are registered with one form. Matching compares E.164 forms.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsisdnError {
    #[error("`{0}` is not a phone number: it has characters other than digits, spaces, dashes, dots, parentheses and a leading +")]
    BadCharacters(String),
    #[error("`{0}` has too few or too many digits for a phone number")]
    BadLength(String),
    #[error(
        "`{0}` is a national number, and no country calling code is configured to complete it"
    )]
    NoCountryCode(String),
}

/// Normalise to E.164 (`+` and 8–15 digits). `country_code` (digits, e.g.
/// "255") completes national numbers that start with a single 0.
pub fn normalize(raw: &str, country_code: Option<&str>) -> Result<String, MsisdnError> {
    let trimmed = raw.trim();
    let mut digits = String::with_capacity(trimmed.len());
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(MsisdnError::BadCharacters(raw.to_string())),
        }
    }
    let international = if trimmed.starts_with('+') {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix('0') {
        let cc = country_code.ok_or_else(|| MsisdnError::NoCountryCode(raw.to_string()))?;
        format!("{cc}{rest}")
    } else {
        digits
    };
    if !(8..=15).contains(&international.len()) {
        return Err(MsisdnError::BadLength(raw.to_string()));
    }
    Ok(format!("+{international}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_forms_agree() {
        let expected = Ok("+255712345678".to_string());
        for raw in [
            "+255712345678",
            "255712345678",
            "0712345678",
            "00255 712 345 678",
            "+255 (712) 345-678",
        ] {
            assert_eq!(normalize(raw, Some("255")), expected, "{raw}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        assert!(matches!(
            normalize("hello", None),
            Err(MsisdnError::BadCharacters(_))
        ));
        assert!(matches!(
            normalize("12", None),
            Err(MsisdnError::BadLength(_))
        ));
        assert!(matches!(
            normalize("0712345678", None),
            Err(MsisdnError::NoCountryCode(_))
        ));
        assert!(matches!(
            normalize("+2+55712345678", None),
            Err(MsisdnError::BadCharacters(_))
        ));
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(s in "\\+?[0-9 ]{0,20}") {
            if let Ok(n) = normalize(&s, Some("255")) {
                prop_assert_eq!(normalize(&n, Some("255")), Ok(n.clone()));
            }
        }
    }
}
