//! DHIS2 identifiers: 11 characters, a letter then ten letters or digits.
//!
//! Every identifier that enters Hisa from outside (an import, a URL, an SMS)
//! passes through [`Uid::parse`], so the rest of the code can rely on the shape.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALPHANUMERIC: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
pub const UID_LEN: usize = 11;

/// A validated DHIS2 UID. Stored inline: no allocation, `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid([u8; UID_LEN]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid UID: {reason}")]
pub struct UidError {
    pub value: String,
    pub reason: &'static str,
}

impl Uid {
    /// A fresh UID from the operating system's CSPRNG, as DHIS2 generates them.
    pub fn generate() -> Uid {
        let mut rng = rand::rngs::OsRng;
        let mut bytes = [0u8; UID_LEN];
        bytes[0] = LETTERS[rng.gen_range(0..LETTERS.len())];
        for b in bytes.iter_mut().skip(1) {
            *b = ALPHANUMERIC[rng.gen_range(0..ALPHANUMERIC.len())];
        }
        Uid(bytes)
    }

    /// A UID derived from a name. Used where two servers must agree on an id
    /// without talking to each other (generated category option combos).
    pub fn derive(seed: &str) -> Uid {
        let digest = Sha256::digest(seed.as_bytes());
        let mut bytes = [0u8; UID_LEN];
        bytes[0] = LETTERS[digest[0] as usize % LETTERS.len()];
        for i in 1..UID_LEN {
            bytes[i] = ALPHANUMERIC[digest[i] as usize % ALPHANUMERIC.len()];
        }
        Uid(bytes)
    }

    pub fn parse(value: &str) -> Result<Uid, UidError> {
        let err = |reason| UidError {
            value: value.chars().take(64).collect(),
            reason,
        };
        let raw = value.as_bytes();
        if raw.len() != UID_LEN {
            return Err(err("a UID has exactly 11 characters"));
        }
        if !raw[0].is_ascii_alphabetic() {
            return Err(err("a UID starts with a letter"));
        }
        if !raw.iter().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err("a UID holds only letters and digits"));
        }
        let mut bytes = [0u8; UID_LEN];
        bytes.copy_from_slice(raw);
        Ok(Uid(bytes))
    }

    pub fn is_valid(value: &str) -> bool {
        Uid::parse(value).is_ok()
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics ever get in, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({})", self.as_str())
    }
}

impl FromStr for Uid {
    type Err = UidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uid::parse(s)
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for Uid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Uid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Uid::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_uids_are_valid_and_distinct() {
        let a = Uid::generate();
        let b = Uid::generate();
        assert!(Uid::is_valid(a.as_str()));
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            "",
            "abc",
            "1bcdefghijk",
            "abcdefghij!",
            "abcdefghijkl",
            "abcdéfghijk",
        ] {
            assert!(Uid::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Uid::parse("HllvX50cXC0").is_ok());
    }

    #[test]
    fn derived_uids_are_stable() {
        assert_eq!(Uid::derive("x"), Uid::derive("x"));
        assert_ne!(Uid::derive("x"), Uid::derive("y"));
    }

    proptest! {
        #[test]
        fn derive_always_valid(seed in ".*") {
            prop_assert!(Uid::is_valid(Uid::derive(&seed).as_str()));
        }

        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = Uid::parse(&s);
        }

        #[test]
        fn valid_shapes_round_trip(s in "[a-zA-Z][a-zA-Z0-9]{10}") {
            let uid = Uid::parse(&s).unwrap();
            prop_assert_eq!(uid.to_string(), s);
        }
    }
}
