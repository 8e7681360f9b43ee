//! DHIS2 value types and the checks a data value must pass before it is stored.
//!
//! The rules follow the 2.37–2.42 data value importer (reference §3.7). A value
//! is checked as text, because that is how every DHIS2 format carries it, and the
//! checks are hand-written scans rather than regular expressions: they run once
//! for every imported value, so a million values must stay cheap.
//!
//! Where Hisa deliberately differs from DHIS2:
//! - PERCENTAGE, UNIT_INTERVAL and COORDINATE bounds are compared on the decimal
//!   text, not on a parsed `f64`. DHIS2 accepts `100.00000000000000001` as a
//!   percentage because it rounds to 100.0; Hisa does not.
//! - A blank value is rejected (E7618) instead of passing silently, so that no
//!   caller can store an empty string as, say, an INTEGER. A row that carries only
//!   a comment is legal: the caller must not validate its absent value.
//! - The option set is checked against the normalized value, so that a stored
//!   value always re-validates against the same option set.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest value accepted, in characters, whatever the value type.
pub const MAX_VALUE_LENGTH: usize = 50_000;
/// Longest comment accepted, in characters.
pub const MAX_COMMENT_LENGTH: usize = 50_000;
/// NUMBER values (and the decimals inside PERCENTAGE, UNIT_INTERVAL and
/// COORDINATE values) must be shorter than this.
pub const MAX_NUMBER_LENGTH: usize = 250;

/// How many characters of an offending value an error message shows; the full
/// value stays available in the error's fields.
const SHOWN_CHARS: usize = 80;

/// A DHIS2 value type, as carried by data elements and attributes.
///
/// Serialized as DHIS2's name for it (`"INTEGER_ZERO_OR_POSITIVE"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    Text,
    LongText,
    MultiText,
    Letter,
    PhoneNumber,
    Email,
    Boolean,
    TrueOnly,
    Date,
    Datetime,
    Time,
    Number,
    UnitInterval,
    Percentage,
    Integer,
    IntegerPositive,
    IntegerNegative,
    IntegerZeroOrPositive,
    TrackerAssociate,
    Username,
    Coordinate,
    OrganisationUnit,
    Reference,
    Age,
    Url,
    FileResource,
    Image,
    Geojson,
}

impl ValueType {
    /// Every value type, in DHIS2's declaration order.
    pub const ALL: [ValueType; 28] = [
        ValueType::Text,
        ValueType::LongText,
        ValueType::MultiText,
        ValueType::Letter,
        ValueType::PhoneNumber,
        ValueType::Email,
        ValueType::Boolean,
        ValueType::TrueOnly,
        ValueType::Date,
        ValueType::Datetime,
        ValueType::Time,
        ValueType::Number,
        ValueType::UnitInterval,
        ValueType::Percentage,
        ValueType::Integer,
        ValueType::IntegerPositive,
        ValueType::IntegerNegative,
        ValueType::IntegerZeroOrPositive,
        ValueType::TrackerAssociate,
        ValueType::Username,
        ValueType::Coordinate,
        ValueType::OrganisationUnit,
        ValueType::Reference,
        ValueType::Age,
        ValueType::Url,
        ValueType::FileResource,
        ValueType::Image,
        ValueType::Geojson,
    ];

    /// DHIS2's name for the type, as used in metadata payloads.
    pub const fn as_str(self) -> &'static str {
        match self {
            ValueType::Text => "TEXT",
            ValueType::LongText => "LONG_TEXT",
            ValueType::MultiText => "MULTI_TEXT",
            ValueType::Letter => "LETTER",
            ValueType::PhoneNumber => "PHONE_NUMBER",
            ValueType::Email => "EMAIL",
            ValueType::Boolean => "BOOLEAN",
            ValueType::TrueOnly => "TRUE_ONLY",
            ValueType::Date => "DATE",
            ValueType::Datetime => "DATETIME",
            ValueType::Time => "TIME",
            ValueType::Number => "NUMBER",
            ValueType::UnitInterval => "UNIT_INTERVAL",
            ValueType::Percentage => "PERCENTAGE",
            ValueType::Integer => "INTEGER",
            ValueType::IntegerPositive => "INTEGER_POSITIVE",
            ValueType::IntegerNegative => "INTEGER_NEGATIVE",
            ValueType::IntegerZeroOrPositive => "INTEGER_ZERO_OR_POSITIVE",
            ValueType::TrackerAssociate => "TRACKER_ASSOCIATE",
            ValueType::Username => "USERNAME",
            ValueType::Coordinate => "COORDINATE",
            ValueType::OrganisationUnit => "ORGANISATION_UNIT",
            ValueType::Reference => "REFERENCE",
            ValueType::Age => "AGE",
            ValueType::Url => "URL",
            ValueType::FileResource => "FILE_RESOURCE",
            ValueType::Image => "IMAGE",
            ValueType::Geojson => "GEOJSON",
        }
    }

    /// NUMBER, UNIT_INTERVAL, PERCENTAGE and the four INTEGER types: the types
    /// analytics can sum and for which a zero may be insignificant.
    pub const fn is_numeric(self) -> bool {
        self.is_integer() || self.is_decimal()
    }

    /// INTEGER, INTEGER_POSITIVE, INTEGER_NEGATIVE, INTEGER_ZERO_OR_POSITIVE.
    pub const fn is_integer(self) -> bool {
        matches!(
            self,
            ValueType::Integer
                | ValueType::IntegerPositive
                | ValueType::IntegerNegative
                | ValueType::IntegerZeroOrPositive
        )
    }

    /// NUMBER, UNIT_INTERVAL, PERCENTAGE.
    pub const fn is_decimal(self) -> bool {
        matches!(
            self,
            ValueType::Number | ValueType::UnitInterval | ValueType::Percentage
        )
    }

    /// Types stored and compared as free text (DHIS2's `TEXT_TYPES`, plus
    /// MULTI_TEXT, which is a comma-separated text).
    pub const fn is_text(self) -> bool {
        matches!(
            self,
            ValueType::Text
                | ValueType::LongText
                | ValueType::MultiText
                | ValueType::Letter
                | ValueType::Time
                | ValueType::Username
                | ValueType::Email
                | ValueType::PhoneNumber
                | ValueType::Url
        )
    }

    /// BOOLEAN and TRUE_ONLY.
    pub const fn is_boolean(self) -> bool {
        matches!(self, ValueType::Boolean | ValueType::TrueOnly)
    }

    /// DATE, DATETIME and AGE (TIME has no date part, so it is not one).
    pub const fn is_date(self) -> bool {
        matches!(self, ValueType::Date | ValueType::Datetime | ValueType::Age)
    }

    /// FILE_RESOURCE and IMAGE: the value is the UID of a stored file.
    pub const fn is_file(self) -> bool {
        matches!(self, ValueType::FileResource | ValueType::Image)
    }

    /// What a value of this type looks like, for error messages.
    const fn expectation(self) -> &'static str {
        match self {
            ValueType::Text | ValueType::LongText | ValueType::MultiText => {
                "text of at most 50000 characters"
            }
            ValueType::Letter => "a single letter",
            ValueType::PhoneNumber => {
                "6 to 50 characters made of digits, spaces and + ( ) # . / - e x t"
            }
            ValueType::Email => "an email address such as name@example.org",
            ValueType::Boolean => "true or false (or True, TRUE, t, T, 1 / False, FALSE, f, F, 0)",
            ValueType::TrueOnly => "true (or True, TRUE, t, T, 1)",
            ValueType::Date | ValueType::Age => "a calendar date written yyyy-MM-dd",
            ValueType::Datetime => {
                "a date and time written yyyy-MM-ddTHH:mm[:ss[.SSS]], optionally \
                 followed by Z, ±hh:mm or ±hhmm"
            }
            ValueType::Time => "a time of day written H:mm or HH:mm, from 0:00 to 23:59",
            ValueType::Number => {
                "a decimal number such as 12 or -3.5, shorter than 250 characters, \
                 without a + sign, leading zeros or exponent"
            }
            ValueType::UnitInterval => "a decimal number from 0 to 1",
            ValueType::Percentage => "a decimal number from 0 to 100",
            ValueType::Integer => {
                "a whole number from -2147483648 to 2147483647, without a + sign or leading zeros"
            }
            ValueType::IntegerPositive => {
                "a whole number from 1 to 2147483647, without a sign or leading zeros"
            }
            ValueType::IntegerNegative => {
                "a whole number from -2147483648 to -1, without leading zeros"
            }
            ValueType::IntegerZeroOrPositive => {
                "a whole number from 0 to 2147483647, without a sign or leading zeros"
            }
            ValueType::TrackerAssociate
            | ValueType::OrganisationUnit
            | ValueType::Reference
            | ValueType::FileResource
            | ValueType::Image => "a UID: 11 ASCII letters and digits, the first a letter",
            ValueType::Username => "4 to 255 characters made of ASCII letters, digits and . _ - @",
            ValueType::Coordinate => {
                "[longitude,latitude] with longitude from -180 to 180 and latitude from -90 to 90"
            }
            ValueType::Url => "an http, https or ftp URL with a host",
            ValueType::Geojson => "a GeoJSON object, starting with {",
        }
    }

    /// The reason key DHIS2 reports when a value does not fit this type.
    const fn invalid_reason_key(self) -> &'static str {
        match self {
            ValueType::Number => "value_not_numeric",
            ValueType::UnitInterval => "value_not_unit_interval",
            ValueType::Percentage => "value_not_percentage",
            ValueType::Integer => "value_not_integer",
            ValueType::IntegerPositive => "value_not_positive_integer",
            ValueType::IntegerNegative => "value_not_negative_integer",
            ValueType::IntegerZeroOrPositive => "value_not_zero_or_positive_integer",
            ValueType::Boolean => "value_not_bool",
            ValueType::TrueOnly => "value_not_true_only",
            ValueType::Date | ValueType::Age => "value_not_valid_date",
            ValueType::Datetime => "value_not_valid_datetime",
            ValueType::Time => "value_not_valid_time",
            ValueType::Coordinate => "value_not_valid_coordinate",
            ValueType::PhoneNumber => "value_not_valid_phone_number",
            ValueType::Email => "value_not_valid_email",
            ValueType::Url => "value_not_valid_url",
            ValueType::Letter => "value_not_valid_letter",
            ValueType::Username => "value_not_valid_username",
            ValueType::TrackerAssociate
            | ValueType::OrganisationUnit
            | ValueType::Reference
            | ValueType::FileResource
            | ValueType::Image => "value_not_valid_uid",
            ValueType::Geojson => "value_not_valid_geojson",
            // Only the length limit can reject free text, and it has its own key.
            ValueType::Text | ValueType::LongText | ValueType::MultiText => "value_not_valid_text",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not the name of a DHIS2 value type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("Unknown value type `{}`", Shown(.0))]
pub struct ParseValueTypeError(pub String);

impl FromStr for ValueType {
    type Err = ParseValueTypeError;

    /// Exact, case-sensitive names: DHIS2 itself rejects `integer`, and a
    /// lenient parse would let such metadata round-trip into a different spelling.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ValueType::ALL
            .into_iter()
            .find(|value_type| value_type.as_str() == s)
            .ok_or_else(|| ParseValueTypeError(s.to_owned()))
    }
}

impl Serialize for ValueType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ValueType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl de::Visitor<'_> for NameVisitor {
            type Value = ValueType;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a DHIS2 value type name such as \"INTEGER\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<ValueType, E> {
                s.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

/// The codes of an option set, as far as validation needs them.
pub trait OptionCodes {
    fn contains_code(&self, code: &str) -> bool;
}

impl OptionCodes for [String] {
    fn contains_code(&self, code: &str) -> bool {
        self.iter().any(|candidate| candidate == code)
    }
}

impl OptionCodes for Vec<String> {
    fn contains_code(&self, code: &str) -> bool {
        self.as_slice().contains_code(code)
    }
}

impl<S: BuildHasher> OptionCodes for HashSet<String, S> {
    fn contains_code(&self, code: &str) -> bool {
        self.contains(code)
    }
}

impl OptionCodes for BTreeSet<String> {
    fn contains_code(&self, code: &str) -> bool {
        self.contains(code)
    }
}

/// Lets a `&[String]` be passed as `&dyn OptionCodes`: an unsized slice cannot
/// be turned into a trait object itself, a reference to it can.
impl<T: OptionCodes + ?Sized> OptionCodes for &T {
    fn contains_code(&self, code: &str) -> bool {
        (**self).contains_code(code)
    }
}

/// Why a value or comment was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// The value is empty or blank. Only an error when there is no comment
    /// either, which is why it carries DHIS2's E7618.
    #[error("No value given: a {value_type} value or a comment is required")]
    Empty { value_type: ValueType },

    /// The value is longer than [`MAX_VALUE_LENGTH`] characters.
    #[error(
        "Value is {length} characters long, more than the {max} allowed for a {value_type} value",
        max = MAX_VALUE_LENGTH
    )]
    TooLong {
        value_type: ValueType,
        length: usize,
    },

    /// The value does not have the form its type requires.
    #[error(
        "Value `{}` is not a valid {value_type}: expected {}",
        Shown(.value),
        .value_type.expectation()
    )]
    Invalid {
        value_type: ValueType,
        value: String,
    },

    /// The value (or, for MULTI_TEXT, one of its comma-separated items,
    /// `code`) is not a code of the data element's option set.
    #[error("{}", option_message(*.value_type, .value, .code))]
    NotAnOption {
        value_type: ValueType,
        value: String,
        code: String,
    },

    /// The comment is longer than [`MAX_COMMENT_LENGTH`] characters.
    #[error(
        "Comment is {length} characters long, more than the {max} allowed",
        max = MAX_COMMENT_LENGTH
    )]
    CommentTooLong { length: usize },
}

impl ValueError {
    /// DHIS2's error code for the conflict this error causes in an import summary.
    pub fn code(&self) -> &'static str {
        match self {
            ValueError::Empty { .. } => "E7618",
            ValueError::TooLong { .. } | ValueError::Invalid { .. } => "E7619",
            ValueError::CommentTooLong { .. } => "E7620",
            ValueError::NotAnOption { .. } => "E7621",
        }
    }

    /// DHIS2's message key for the failed rule (`value_not_<rule>`).
    pub fn reason_key(&self) -> &'static str {
        match self {
            ValueError::Empty { .. } => "value_or_comment_missing",
            ValueError::TooLong { .. } => "value_length_greater_than_max_length",
            ValueError::Invalid { value_type, .. } => value_type.invalid_reason_key(),
            ValueError::NotAnOption { .. } => "value_not_valid_option",
            ValueError::CommentTooLong { .. } => "comment_length_greater_than_max_length",
        }
    }

    /// The value type the rejected value was checked against; `None` for a comment.
    pub fn value_type(&self) -> Option<ValueType> {
        match self {
            ValueError::Empty { value_type }
            | ValueError::TooLong { value_type, .. }
            | ValueError::Invalid { value_type, .. }
            | ValueError::NotAnOption { value_type, .. } => Some(*value_type),
            ValueError::CommentTooLong { .. } => None,
        }
    }
}

fn option_message(value_type: ValueType, value: &str, code: &str) -> String {
    if value_type == ValueType::MultiText {
        if code.is_empty() {
            format!(
                "Value `{}` is not a valid {value_type}: it has an empty item between commas",
                Shown(value)
            )
        } else {
            format!(
                "Value `{}` is not a valid {value_type}: `{}` is not a code of the option set",
                Shown(value),
                Shown(code)
            )
        }
    } else {
        format!(
            "Value `{}` is not a valid {value_type}: it is not a code of the option set",
            Shown(value)
        )
    }
}

/// Shows at most [`SHOWN_CHARS`] characters of a value, so that a 50,000
/// character value does not flood an import summary.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            Some((cut, _)) => write!(f, "{}…", &self.0[..cut]),
            None => f.write_str(self.0),
        }
    }
}

/// Checks `value` against `value_type` (and the option set, when the data
/// element has one) and returns the text to store.
///
/// The stored text is the trimmed value, except that BOOLEAN spellings become
/// `true`/`false` and TRUE_ONLY spellings become `true`. Validating the returned
/// text again returns it unchanged.
///
/// # Errors
///
/// [`ValueError::Empty`] for a blank value, [`ValueError::TooLong`] past
/// [`MAX_VALUE_LENGTH`] characters, [`ValueError::Invalid`] when the value does
/// not fit the type and [`ValueError::NotAnOption`] when it is not a code of
/// `options`.
pub fn validate_value(
    value_type: ValueType,
    value: &str,
    options: Option<&dyn OptionCodes>,
) -> Result<String, ValueError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ValueError::Empty { value_type });
    }
    // Measured after trimming: the limit is on what gets stored.
    if let Some(length) = length_over(value, MAX_VALUE_LENGTH) {
        return Err(ValueError::TooLong { value_type, length });
    }
    let Some(normalized) = normalize(value_type, value) else {
        return Err(ValueError::Invalid {
            value_type,
            value: value.to_owned(),
        });
    };
    if let Some(options) = options {
        check_options(value_type, normalized, options)?;
    }
    Ok(normalized.to_owned())
}

/// Checks a data value comment.
///
/// # Errors
///
/// [`ValueError::CommentTooLong`] past [`MAX_COMMENT_LENGTH`] characters.
pub fn validate_comment(comment: &str) -> Result<(), ValueError> {
    match length_over(comment, MAX_COMMENT_LENGTH) {
        Some(length) => Err(ValueError::CommentTooLong { length }),
        None => Ok(()),
    }
}

/// Whether a stored numeric value is a zero (`0`, `0.`, `0.000`, optionally
/// with a minus sign): such a value is dropped on import unless the data
/// element's zeros are significant.
#[must_use]
pub fn is_zero(value: &str) -> bool {
    let unsigned = value.strip_prefix('-').unwrap_or(value);
    match unsigned.strip_prefix('0') {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('.')
            .is_some_and(|fraction| fraction.bytes().all(|b| b == b'0')),
        None => false,
    }
}

/// The numeric value of a validated NUMBER, PERCENTAGE, UNIT_INTERVAL or
/// INTEGER* value; `None` for anything else.
///
/// Only the NUMBER form is read: Rust's own float syntax would also take
/// `inf`, `NaN`, `+1` and `1e5`, none of which DHIS2 can store.
#[must_use]
pub fn parse_number(value: &str) -> Option<f64> {
    split_decimal(value)?;
    value
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

/// The length in characters when it exceeds `max`. A string cannot have more
/// characters than bytes, so only long strings pay for counting.
fn length_over(text: &str, max: usize) -> Option<usize> {
    if text.len() <= max {
        return None;
    }
    let length = text.chars().count();
    (length > max).then_some(length)
}

fn check_options(
    value_type: ValueType,
    value: &str,
    options: &dyn OptionCodes,
) -> Result<(), ValueError> {
    let rejected = |code: &str| ValueError::NotAnOption {
        value_type,
        value: value.to_owned(),
        code: code.to_owned(),
    };
    if value_type == ValueType::MultiText {
        // Items are matched as written: trimming them here would store
        // `A, B` while checking `A,B`, and readers split on the comma alone.
        match value.split(',').find(|item| !options.contains_code(item)) {
            Some(item) => Err(rejected(item)),
            None => Ok(()),
        }
    } else if options.contains_code(value) {
        Ok(())
    } else {
        Err(rejected(value))
    }
}

/// The text to store for a trimmed, non-empty value, or `None` when the value
/// does not fit the type.
fn normalize(value_type: ValueType, value: &str) -> Option<&str> {
    let valid = match value_type {
        ValueType::Text | ValueType::LongText | ValueType::MultiText => true,
        ValueType::Boolean => return parse_boolean(value).map(bool_str),
        ValueType::TrueOnly => return parse_boolean(value).filter(|&b| b).map(bool_str),
        ValueType::Letter => is_letter(value),
        ValueType::PhoneNumber => is_phone_number(value),
        ValueType::Email => is_email(value),
        ValueType::Date | ValueType::Age => is_date(value),
        ValueType::Datetime => is_datetime(value),
        ValueType::Time => is_time(value),
        ValueType::Number => is_number(value),
        ValueType::UnitInterval => is_bounded_non_negative(value, 1),
        ValueType::Percentage => is_bounded_non_negative(value, 100),
        ValueType::Integer => parse_integer(value).is_some(),
        ValueType::IntegerPositive => parse_integer(value).is_some_and(|n| n > 0),
        ValueType::IntegerNegative => parse_integer(value).is_some_and(|n| n < 0),
        ValueType::IntegerZeroOrPositive => parse_integer(value).is_some_and(|n| n >= 0),
        ValueType::TrackerAssociate
        | ValueType::OrganisationUnit
        | ValueType::Reference
        | ValueType::FileResource
        | ValueType::Image => is_uid(value),
        ValueType::Username => is_username(value),
        ValueType::Coordinate => is_coordinate(value),
        ValueType::Url => is_url(value),
        ValueType::Geojson => value.starts_with('{'),
    };
    valid.then_some(value)
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn parse_boolean(value: &str) -> Option<bool> {
    match value {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Some(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Some(false),
        _ => None,
    }
}

fn all_digits(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
}

/// A decimal in NUMBER form, `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, split into parts.
struct Decimal<'a> {
    negative: bool,
    whole: &'a str,
    fraction: &'a str,
}

impl Decimal<'_> {
    fn is_zero(&self) -> bool {
        self.whole == "0" && self.fraction.bytes().all(|b| b == b'0')
    }

    /// |self| <= bound, decided on the digits so that no rounding can let a
    /// value slip past the bound.
    fn magnitude_at_most(&self, bound: u32) -> bool {
        // Ten digits hold any u32; a longer whole part (no leading zeros) is larger.
        if self.whole.len() > 10 {
            return false;
        }
        match self.whole.parse::<u64>() {
            Ok(whole) if whole < u64::from(bound) => true,
            Ok(whole) if whole == u64::from(bound) => self.fraction.bytes().all(|b| b == b'0'),
            _ => false,
        }
    }
}

fn split_decimal(value: &str) -> Option<Decimal<'_>> {
    let (negative, unsigned) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() && all_digits(fraction) => {
            (whole, fraction)
        }
        Some(_) => return None,
        None => (unsigned, ""),
    };
    let leading_zero = whole.len() > 1 && whole.starts_with('0');
    if whole.is_empty() || leading_zero || !all_digits(whole) {
        return None;
    }
    Some(Decimal {
        negative,
        whole,
        fraction,
    })
}

fn is_number(value: &str) -> bool {
    value.len() < MAX_NUMBER_LENGTH && split_decimal(value).is_some()
}

/// A NUMBER in [0, bound]. `-0` counts as zero, as it does for DHIS2's double
/// comparison.
fn is_bounded_non_negative(value: &str, bound: u32) -> bool {
    value.len() < MAX_NUMBER_LENGTH
        && split_decimal(value)
            .is_some_and(|d| (!d.negative || d.is_zero()) && d.magnitude_at_most(bound))
}

/// An integer in `0|-?[1-9][0-9]*` form within the i32 range. DHIS2 stores
/// integers as Java ints, so anything wider would fail later in analytics.
fn parse_integer(value: &str) -> Option<i32> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let canonical = match digits.as_bytes() {
        [] => false,
        // `-0` is a valid NUMBER but not an INTEGER.
        [b'0'] => digits.len() == value.len(),
        [first, ..] => *first != b'0' && all_digits(digits),
    };
    if !canonical {
        return None;
    }
    value.parse().ok()
}

fn is_letter(value: &str) -> bool {
    let mut chars = value.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if c.is_alphabetic())
}

fn is_phone_number(value: &str) -> bool {
    // Every allowed character is ASCII, so the byte length is the char length.
    (6..=50).contains(&value.len())
        && value.bytes().all(|b| {
            matches!(
                b,
                b'0'..=b'9'
                    | b'+'
                    | b'('
                    | b')'
                    | b'#'
                    | b'.'
                    | b'/'
                    | b'e'
                    | b'x'
                    | b't'
                    | b'-'
                    // Java's \s: space, \t, \n, \x0B, \f, \r.
                    | b' '
                    | b'\t'
                    | b'\n'
                    | 0x0B
                    | 0x0C
                    | b'\r'
            )
        })
}

fn is_email(value: &str) -> bool {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

fn is_url(value: &str) -> bool {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return false;
    };
    if !["http", "https", "ftp"]
        .iter()
        .any(|known| scheme.eq_ignore_ascii_case(known))
    {
        return false;
    }
    let authority = rest.find(['/', '?', '#']).map_or(rest, |end| &rest[..end]);
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_user, host)| host);
    let (host_ok, port) = match host_and_port.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip6, after)) => (
                !ip6.is_empty()
                    && ip6
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
                after,
            ),
            None => return false,
        },
        None => {
            let end = host_and_port.find(':').unwrap_or(host_and_port.len());
            let host = &host_and_port[..end];
            (
                !host.is_empty()
                    && !host.starts_with(['.', '-'])
                    && host
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '-' || c == '.'),
                &host_and_port[end..],
            )
        }
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            (1..=5).contains(&digits.len())
                && all_digits(digits)
                && digits.parse::<u32>().is_ok_and(|p| p <= 65_535)
        });
    host_ok && port_ok
}

fn is_username(value: &str) -> bool {
    (4..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn is_uid(value: &str) -> bool {
    match value.as_bytes() {
        [first, rest @ ..] => {
            rest.len() == 10
                && first.is_ascii_alphabetic()
                && rest.iter().all(u8::is_ascii_alphanumeric)
        }
        [] => false,
    }
}

fn is_coordinate(value: &str) -> bool {
    let Some(inner) = value
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return false;
    };
    let Some((longitude, latitude)) = inner.split_once(',') else {
        return false;
    };
    let within = |text: &str, bound: u32| {
        let text = text.trim();
        text.len() < MAX_NUMBER_LENGTH
            && split_decimal(text).is_some_and(|d| d.magnitude_at_most(bound))
    };
    within(longitude, 180) && within(latitude, 90)
}

/// Two ASCII digits at `at`, as a number.
fn two_digits(bytes: &[u8], at: usize) -> Option<u8> {
    match bytes.get(at..at + 2)? {
        [a @ b'0'..=b'9', b @ b'0'..=b'9'] => Some((a - b'0') * 10 + (b - b'0')),
        _ => None,
    }
}

/// `yyyy-MM-dd` naming a real day of the proleptic Gregorian calendar. Year
/// 0000 is refused: DHIS2 parses `yyyy` as a year of the era, which has no zero.
fn is_date(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 10 && is_date_prefix(bytes)
}

fn is_date_prefix(bytes: &[u8]) -> bool {
    let (Some(century), Some(year_of_century), Some(month), Some(day)) = (
        two_digits(bytes, 0),
        two_digits(bytes, 2),
        two_digits(bytes, 5),
        two_digits(bytes, 8),
    ) else {
        return false;
    };
    if bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let year = i32::from(century) * 100 + i32::from(year_of_century);
    year >= 1
        && time::Month::try_from(month)
            .is_ok_and(|month| time::Date::from_calendar_date(year, month, day).is_ok())
}

/// `yyyy-MM-dd(T| )HH:mm[:ss[.f{1,9}]][Z|±hh:mm|±hhmm]`. More than the three
/// fraction digits DHIS2 writes are allowed because other systems export
/// micro- and nanoseconds.
fn is_datetime(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() < 16 || !is_date_prefix(bytes) || !matches!(bytes[10], b'T' | b' ') {
        return false;
    }
    if !is_hour_minute(bytes, 11) {
        return false;
    }
    let mut at = 16;
    if bytes.get(at) == Some(&b':') {
        if two_digits(bytes, at + 1).is_none_or(|second| second > 59) {
            return false;
        }
        at += 3;
        if bytes.get(at) == Some(&b'.') {
            let digits = bytes[at + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if !(1..=9).contains(&digits) {
                return false;
            }
            at += 1 + digits;
        }
    }
    is_offset(&bytes[at..])
}

/// `HH:mm` at `at`, hours 00–23, minutes 00–59.
fn is_hour_minute(bytes: &[u8], at: usize) -> bool {
    two_digits(bytes, at).is_some_and(|hour| hour <= 23)
        && bytes.get(at + 2) == Some(&b':')
        && two_digits(bytes, at + 3).is_some_and(|minute| minute <= 59)
}

/// Nothing, `Z`, `±hh:mm` or `±hhmm`, at most 18 hours as java.time allows.
fn is_offset(bytes: &[u8]) -> bool {
    let (hours, minutes) = match bytes {
        [] | [b'Z'] => return true,
        [b'+' | b'-', _, _, b':', _, _] => (two_digits(bytes, 1), two_digits(bytes, 4)),
        [b'+' | b'-', _, _, _, _] => (two_digits(bytes, 1), two_digits(bytes, 3)),
        _ => return false,
    };
    match (hours, minutes) {
        (Some(hours), Some(minutes)) => {
            minutes <= 59 && (hours < 18 || (hours == 18 && minutes == 0))
        }
        _ => false,
    }
}

/// `H:mm` or `HH:mm`, from 0:00 to 23:59.
fn is_time(value: &str) -> bool {
    let bytes = value.as_bytes();
    match bytes.len() {
        4 => {
            bytes[0].is_ascii_digit()
                && bytes[1] == b':'
                && two_digits(bytes, 2).is_some_and(|minute| minute <= 59)
        }
        5 => is_hour_minute(bytes, 0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::value::{Error as DeError, StrDeserializer};
    use serde::de::IntoDeserializer;

    const UID: &str = "DeTestsDone";

    /// (type, input, stored value)
    #[rustfmt::skip]
    const ACCEPTED: &[(ValueType, &str, &str)] = &[
        (ValueType::Text, "anything at all", "anything at all"),
        (ValueType::Text, "  padded  ", "padded"),
        (ValueType::Text, "1e5", "1e5"),
        (ValueType::LongText, "line one\nline two", "line one\nline two"),
        (ValueType::MultiText, "A,B,C", "A,B,C"),
        (ValueType::Letter, "a", "a"),
        (ValueType::Letter, "Z", "Z"),
        (ValueType::Letter, "é", "é"),
        (ValueType::Letter, "ж", "ж"),
        (ValueType::PhoneNumber, "+254 712 345678", "+254 712 345678"),
        (ValueType::PhoneNumber, "(020) 123-4567 ext 89", "(020) 123-4567 ext 89"),
        (ValueType::PhoneNumber, "123456", "123456"),
        (ValueType::Email, "name@example.org", "name@example.org"),
        (ValueType::Email, "first.last+tag@mail.example.co.ke", "first.last+tag@mail.example.co.ke"),
        (ValueType::Boolean, "true", "true"),
        (ValueType::Boolean, "True", "true"),
        (ValueType::Boolean, "TRUE", "true"),
        (ValueType::Boolean, "t", "true"),
        (ValueType::Boolean, "T", "true"),
        (ValueType::Boolean, "1", "true"),
        (ValueType::Boolean, "false", "false"),
        (ValueType::Boolean, "False", "false"),
        (ValueType::Boolean, "FALSE", "false"),
        (ValueType::Boolean, "f", "false"),
        (ValueType::Boolean, "F", "false"),
        (ValueType::Boolean, " 0 ", "false"),
        (ValueType::TrueOnly, "true", "true"),
        (ValueType::TrueOnly, "T", "true"),
        (ValueType::TrueOnly, "1", "true"),
        (ValueType::Date, "2024-02-29", "2024-02-29"),
        (ValueType::Date, "2023-12-31", "2023-12-31"),
        (ValueType::Date, "0001-01-01", "0001-01-01"),
        (ValueType::Age, "1990-06-15", "1990-06-15"),
        (ValueType::Datetime, "2024-03-05T10:15", "2024-03-05T10:15"),
        (ValueType::Datetime, "2024-03-05T10:15:30", "2024-03-05T10:15:30"),
        (ValueType::Datetime, "2024-03-05T10:15:30.123", "2024-03-05T10:15:30.123"),
        (ValueType::Datetime, "2024-03-05T10:15:30.123Z", "2024-03-05T10:15:30.123Z"),
        (ValueType::Datetime, "2024-03-05T10:15:30.123+0000", "2024-03-05T10:15:30.123+0000"),
        (ValueType::Datetime, "2024-03-05T10:15:30+03:00", "2024-03-05T10:15:30+03:00"),
        (ValueType::Datetime, "2024-03-05T23:59-05:30", "2024-03-05T23:59-05:30"),
        (ValueType::Datetime, "2024-03-05 00:00:00", "2024-03-05 00:00:00"),
        (ValueType::Datetime, "2024-03-05T10:15:30.123456", "2024-03-05T10:15:30.123456"),
        (ValueType::Time, "0:00", "0:00"),
        (ValueType::Time, "7:05", "7:05"),
        (ValueType::Time, "07:05", "07:05"),
        (ValueType::Time, "23:59", "23:59"),
        (ValueType::Number, "0", "0"),
        (ValueType::Number, "-0", "-0"),
        (ValueType::Number, "12", "12"),
        (ValueType::Number, "-3.5", "-3.5"),
        (ValueType::Number, "0.001", "0.001"),
        (ValueType::Number, "-0.0", "-0.0"),
        (ValueType::Number, "10.50", "10.50"),
        (ValueType::Number, " 42 ", "42"),
        (ValueType::UnitInterval, "0", "0"),
        (ValueType::UnitInterval, "0.5", "0.5"),
        (ValueType::UnitInterval, "1", "1"),
        (ValueType::UnitInterval, "1.000", "1.000"),
        (ValueType::UnitInterval, "-0", "-0"),
        (ValueType::Percentage, "0", "0"),
        (ValueType::Percentage, "55.5", "55.5"),
        (ValueType::Percentage, "100", "100"),
        (ValueType::Percentage, "100.0", "100.0"),
        (ValueType::Integer, "0", "0"),
        (ValueType::Integer, "42", "42"),
        (ValueType::Integer, "-42", "-42"),
        (ValueType::Integer, "2147483647", "2147483647"),
        (ValueType::Integer, "-2147483648", "-2147483648"),
        (ValueType::IntegerPositive, "1", "1"),
        (ValueType::IntegerPositive, "2147483647", "2147483647"),
        (ValueType::IntegerNegative, "-1", "-1"),
        (ValueType::IntegerNegative, "-2147483648", "-2147483648"),
        (ValueType::IntegerZeroOrPositive, "0", "0"),
        (ValueType::IntegerZeroOrPositive, "17", "17"),
        (ValueType::TrackerAssociate, UID, UID),
        (ValueType::OrganisationUnit, "OuKisumuH01", "OuKisumuH01"),
        (ValueType::Reference, "a0000000000", "a0000000000"),
        (ValueType::FileResource, UID, UID),
        (ValueType::Image, UID, UID),
        (ValueType::Username, "admin", "admin"),
        (ValueType::Username, "jane.doe_2@moh-ke", "jane.doe_2@moh-ke"),
        (ValueType::Coordinate, "[36.8,-1.28]", "[36.8,-1.28]"),
        (ValueType::Coordinate, "[ 36.8 , -1.28 ]", "[ 36.8 , -1.28 ]"),
        (ValueType::Coordinate, "[180,90]", "[180,90]"),
        (ValueType::Coordinate, "[-180.0,-90.0]", "[-180.0,-90.0]"),
        (ValueType::Url, "https://dhis2.org", "https://dhis2.org"),
        (ValueType::Url, "http://localhost:8080/api?x=1#top", "http://localhost:8080/api?x=1#top"),
        (ValueType::Url, "ftp://user:pw@files.example.org/a.csv", "ftp://user:pw@files.example.org/a.csv"),
        (ValueType::Url, "HTTPS://[::1]:443/", "HTTPS://[::1]:443/"),
        (ValueType::Geojson, r#"{"type":"Point","coordinates":[1,2]}"#, r#"{"type":"Point","coordinates":[1,2]}"#),
    ];

    /// (type, input, reason key)
    #[rustfmt::skip]
    const REJECTED: &[(ValueType, &str, &str)] = &[
        (ValueType::Text, "   ", "value_or_comment_missing"),
        (ValueType::Integer, "", "value_or_comment_missing"),
        (ValueType::Letter, "ab", "value_not_valid_letter"),
        (ValueType::Letter, "1", "value_not_valid_letter"),
        (ValueType::Letter, "e\u{301}", "value_not_valid_letter"),
        (ValueType::PhoneNumber, "12345", "value_not_valid_phone_number"),
        (ValueType::PhoneNumber, "call me maybe", "value_not_valid_phone_number"),
        (ValueType::PhoneNumber, "123456789012345678901234567890123456789012345678901", "value_not_valid_phone_number"),
        (ValueType::Email, "name.example.org", "value_not_valid_email"),
        (ValueType::Email, "@example.org", "value_not_valid_email"),
        (ValueType::Email, "a@b@example.org", "value_not_valid_email"),
        (ValueType::Email, "name@localhost", "value_not_valid_email"),
        (ValueType::Email, "name@example..org", "value_not_valid_email"),
        (ValueType::Email, "na me@example.org", "value_not_valid_email"),
        (ValueType::Boolean, "yes", "value_not_bool"),
        (ValueType::Boolean, "tRuE", "value_not_bool"),
        (ValueType::Boolean, "2", "value_not_bool"),
        (ValueType::TrueOnly, "false", "value_not_true_only"),
        (ValueType::TrueOnly, "0", "value_not_true_only"),
        (ValueType::TrueOnly, "F", "value_not_true_only"),
        (ValueType::Date, "2024-02-30", "value_not_valid_date"),
        (ValueType::Date, "2023-02-29", "value_not_valid_date"),
        (ValueType::Date, "2024-13-01", "value_not_valid_date"),
        (ValueType::Date, "2024-00-10", "value_not_valid_date"),
        (ValueType::Date, "0000-01-01", "value_not_valid_date"),
        (ValueType::Date, "2024-1-05", "value_not_valid_date"),
        (ValueType::Date, "05/03/2024", "value_not_valid_date"),
        (ValueType::Date, "2024-03-05T10:15", "value_not_valid_date"),
        (ValueType::Age, "2024-04-31", "value_not_valid_date"),
        (ValueType::Datetime, "2024-03-05", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-02-30T10:15", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T24:00", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T10:60", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T10:15:60", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T10:15:30.", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T10:15:30.1234567890", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T10:15+03", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T10:15+19:00", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T10:15z", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05t10:15", "value_not_valid_datetime"),
        (ValueType::Datetime, "2024-03-05T1:15", "value_not_valid_datetime"),
        (ValueType::Time, "24:00", "value_not_valid_time"),
        (ValueType::Time, "12:60", "value_not_valid_time"),
        (ValueType::Time, "7:5", "value_not_valid_time"),
        (ValueType::Time, "007:05", "value_not_valid_time"),
        (ValueType::Time, "07:05:00", "value_not_valid_time"),
        (ValueType::Number, "+1", "value_not_numeric"),
        (ValueType::Number, "01", "value_not_numeric"),
        (ValueType::Number, "-01", "value_not_numeric"),
        (ValueType::Number, "1e5", "value_not_numeric"),
        (ValueType::Number, "1.", "value_not_numeric"),
        (ValueType::Number, ".5", "value_not_numeric"),
        (ValueType::Number, "-", "value_not_numeric"),
        (ValueType::Number, "1.2.3", "value_not_numeric"),
        (ValueType::Number, "12a", "value_not_numeric"),
        (ValueType::Number, "1,5", "value_not_numeric"),
        (ValueType::Number, "NaN", "value_not_numeric"),
        (ValueType::Number, "inf", "value_not_numeric"),
        (ValueType::Number, "١٢", "value_not_numeric"),
        (ValueType::UnitInterval, "1.0001", "value_not_unit_interval"),
        (ValueType::UnitInterval, "-0.1", "value_not_unit_interval"),
        (ValueType::UnitInterval, "2", "value_not_unit_interval"),
        (ValueType::UnitInterval, ".5", "value_not_unit_interval"),
        (ValueType::Percentage, "100.1", "value_not_percentage"),
        (ValueType::Percentage, "100.00000000000000001", "value_not_percentage"),
        (ValueType::Percentage, "-1", "value_not_percentage"),
        (ValueType::Percentage, "101", "value_not_percentage"),
        (ValueType::Percentage, "50%", "value_not_percentage"),
        (ValueType::Integer, "+1", "value_not_integer"),
        (ValueType::Integer, "01", "value_not_integer"),
        (ValueType::Integer, "-0", "value_not_integer"),
        (ValueType::Integer, "1.0", "value_not_integer"),
        (ValueType::Integer, "1e5", "value_not_integer"),
        (ValueType::Integer, "2147483648", "value_not_integer"),
        (ValueType::Integer, "-2147483649", "value_not_integer"),
        (ValueType::Integer, "99999999999999999999", "value_not_integer"),
        (ValueType::IntegerPositive, "0", "value_not_positive_integer"),
        (ValueType::IntegerPositive, "-5", "value_not_positive_integer"),
        (ValueType::IntegerPositive, "+5", "value_not_positive_integer"),
        (ValueType::IntegerPositive, "2147483648", "value_not_positive_integer"),
        (ValueType::IntegerNegative, "0", "value_not_negative_integer"),
        (ValueType::IntegerNegative, "-0", "value_not_negative_integer"),
        (ValueType::IntegerNegative, "5", "value_not_negative_integer"),
        (ValueType::IntegerNegative, "-2147483649", "value_not_negative_integer"),
        (ValueType::IntegerZeroOrPositive, "-1", "value_not_zero_or_positive_integer"),
        (ValueType::IntegerZeroOrPositive, "-0", "value_not_zero_or_positive_integer"),
        (ValueType::IntegerZeroOrPositive, "00", "value_not_zero_or_positive_integer"),
        (ValueType::IntegerZeroOrPositive, "2147483648", "value_not_zero_or_positive_integer"),
        (ValueType::TrackerAssociate, "1eTestsDone", "value_not_valid_uid"),
        (ValueType::OrganisationUnit, "OuKisumuH0", "value_not_valid_uid"),
        (ValueType::Reference, "OuKisumuH012", "value_not_valid_uid"),
        (ValueType::FileResource, "OuKisumu-01", "value_not_valid_uid"),
        (ValueType::Image, "ÖuKisumuH01", "value_not_valid_uid"),
        (ValueType::Username, "abc", "value_not_valid_username"),
        (ValueType::Username, "jane doe", "value_not_valid_username"),
        (ValueType::Username, "jane!", "value_not_valid_username"),
        (ValueType::Coordinate, "[181,0]", "value_not_valid_coordinate"),
        (ValueType::Coordinate, "[0,91]", "value_not_valid_coordinate"),
        (ValueType::Coordinate, "[-180.5,0]", "value_not_valid_coordinate"),
        (ValueType::Coordinate, "[180.0001,0]", "value_not_valid_coordinate"),
        (ValueType::Coordinate, "36.8,-1.28", "value_not_valid_coordinate"),
        (ValueType::Coordinate, "[36.8]", "value_not_valid_coordinate"),
        (ValueType::Coordinate, "[1,2,3]", "value_not_valid_coordinate"),
        (ValueType::Coordinate, "[a,b]", "value_not_valid_coordinate"),
        (ValueType::Coordinate, "[,]", "value_not_valid_coordinate"),
        (ValueType::Url, "dhis2.org", "value_not_valid_url"),
        (ValueType::Url, "mailto:a@b.org", "value_not_valid_url"),
        (ValueType::Url, "javascript://alert(1)", "value_not_valid_url"),
        (ValueType::Url, "https://", "value_not_valid_url"),
        (ValueType::Url, "https:///path", "value_not_valid_url"),
        (ValueType::Url, "https://exa mple.org", "value_not_valid_url"),
        (ValueType::Url, "https://example.org:99999/", "value_not_valid_url"),
        (ValueType::Url, "https://example.org:/", "value_not_valid_url"),
        (ValueType::Url, "https://[::1/", "value_not_valid_url"),
        (ValueType::Geojson, "[1,2]", "value_not_valid_geojson"),
    ];

    #[test]
    fn accepted_values_are_stored_normalized() {
        for &(value_type, input, stored) in ACCEPTED {
            assert_eq!(
                validate_value(value_type, input, None).as_deref(),
                Ok(stored),
                "{value_type} {input:?}"
            );
        }
    }

    #[test]
    fn rejected_values_name_the_failed_rule() {
        for &(value_type, input, reason) in REJECTED {
            match validate_value(value_type, input, None) {
                Ok(stored) => panic!("{value_type} {input:?} was accepted as {stored:?}"),
                Err(error) => {
                    assert_eq!(error.reason_key(), reason, "{value_type} {input:?}");
                    assert_eq!(error.value_type(), Some(value_type));
                }
            }
        }
    }

    #[test]
    fn every_type_has_examples_on_both_sides() {
        for value_type in ValueType::ALL {
            let free_text = matches!(
                value_type,
                ValueType::Text | ValueType::LongText | ValueType::MultiText
            );
            assert!(
                ACCEPTED.iter().any(|(t, ..)| *t == value_type),
                "{value_type} has no accepted example"
            );
            assert!(
                free_text || REJECTED.iter().any(|(t, ..)| *t == value_type),
                "{value_type} has no rejected example"
            );
        }
    }

    #[test]
    fn error_codes() {
        let invalid = validate_value(ValueType::Number, "12a", None).unwrap_err();
        assert_eq!(invalid.code(), "E7619");
        let empty = validate_value(ValueType::Number, " ", None).unwrap_err();
        assert_eq!(empty.code(), "E7618");
        let long = "x".repeat(MAX_VALUE_LENGTH + 1);
        let too_long = validate_value(ValueType::Text, &long, None).unwrap_err();
        assert_eq!(too_long.code(), "E7619");
        assert_eq!(
            too_long.reason_key(),
            "value_length_greater_than_max_length"
        );
        let codes = vec!["A".to_owned()];
        let not_option = validate_value(ValueType::Text, "B", Some(&codes)).unwrap_err();
        assert_eq!(not_option.code(), "E7621");
        assert_eq!(not_option.reason_key(), "value_not_valid_option");
        let comment = validate_comment(&long).unwrap_err();
        assert_eq!(comment.code(), "E7620");
        assert_eq!(comment.value_type(), None);
    }

    #[test]
    fn messages_name_value_and_type() {
        let error = validate_value(ValueType::Number, "12a", None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("Value `12a` is not a valid NUMBER"),
            "{error}"
        );
        let huge = format!("{}x", "9".repeat(300));
        let message = validate_value(ValueType::Integer, &huge, None)
            .unwrap_err()
            .to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains('…'));
    }

    #[test]
    fn length_limit_counts_characters_not_bytes() {
        // 50,000 two-byte characters: 100,000 bytes, yet within the limit.
        let wide = "é".repeat(MAX_VALUE_LENGTH);
        assert_eq!(
            validate_value(ValueType::LongText, &wide, None).as_deref(),
            Ok(wide.as_str())
        );
        assert_eq!(validate_comment(&wide), Ok(()));
        let over = format!("{wide}é");
        assert_eq!(
            validate_value(ValueType::LongText, &over, None),
            Err(ValueError::TooLong {
                value_type: ValueType::LongText,
                length: MAX_VALUE_LENGTH + 1
            })
        );
        assert_eq!(
            validate_comment(&over),
            Err(ValueError::CommentTooLong {
                length: MAX_VALUE_LENGTH + 1
            })
        );
        assert_eq!(validate_comment(""), Ok(()));
    }

    #[test]
    fn number_length_limit() {
        let longest = "9".repeat(MAX_NUMBER_LENGTH - 1);
        assert!(validate_value(ValueType::Number, &longest, None).is_ok());
        let too_long = "9".repeat(MAX_NUMBER_LENGTH);
        assert_eq!(
            validate_value(ValueType::Number, &too_long, None)
                .unwrap_err()
                .reason_key(),
            "value_not_numeric"
        );
    }

    #[test]
    fn option_sets() {
        let vec: Vec<String> = vec!["MALE".into(), "FEMALE".into(), "true".into()];
        let hash: HashSet<String> = vec.iter().cloned().collect();
        let btree: BTreeSet<String> = vec.iter().cloned().collect();
        let slice: &[String] = &vec;
        let all: [&dyn OptionCodes; 4] = [&vec, &hash, &btree, &slice];
        for codes in all {
            assert_eq!(
                validate_value(ValueType::Text, " MALE ", Some(codes)).as_deref(),
                Ok("MALE")
            );
            // Codes are exact: case matters.
            assert!(validate_value(ValueType::Text, "male", Some(codes)).is_err());
            // The normalized value is what must be a code.
            assert_eq!(
                validate_value(ValueType::Boolean, "1", Some(codes)).as_deref(),
                Ok("true")
            );
        }
        // A value must fit its type before its option set is looked at.
        assert_eq!(
            validate_value(ValueType::Integer, "MALE", Some(&vec))
                .unwrap_err()
                .code(),
            "E7619"
        );
    }

    #[test]
    fn multi_text_items_must_each_be_codes() {
        let codes: Vec<String> = vec!["A".into(), "B".into(), "C".into()];
        let check = |value: &str| validate_value(ValueType::MultiText, value, Some(&codes));
        assert_eq!(check("A").as_deref(), Ok("A"));
        assert_eq!(check("C,A").as_deref(), Ok("C,A"));
        assert_eq!(
            check("A,Z"),
            Err(ValueError::NotAnOption {
                value_type: ValueType::MultiText,
                value: "A,Z".into(),
                code: "Z".into()
            })
        );
        let spaced = check("A, B").unwrap_err();
        assert!(spaced.to_string().contains("` B`"), "{spaced}");
        let gap = check("A,,B").unwrap_err();
        assert!(gap.to_string().contains("empty item"), "{gap}");
        assert!(check("A,").is_err());
        // Without an option set a MULTI_TEXT is just text.
        assert!(validate_value(ValueType::MultiText, "A,,Z", None).is_ok());
    }

    #[test]
    fn zeros() {
        for zero in ["0", "-0", "0.", "0.0", "0.000", "-0.00"] {
            assert!(is_zero(zero), "{zero}");
        }
        for other in ["", "-", "00", "0.01", "1", "10", ".0", "0a", " 0", "0.0.0"] {
            assert!(!is_zero(other), "{other}");
        }
    }

    #[test]
    fn numbers_parse() {
        assert_eq!(parse_number("-3.5"), Some(-3.5));
        assert_eq!(parse_number("2147483647"), Some(2_147_483_647.0));
        for not_stored in ["1e5", "+1", "inf", "NaN", "", " 1", "1."] {
            assert_eq!(parse_number(not_stored), None, "{not_stored}");
        }
    }

    #[test]
    fn names_round_trip() {
        let mut seen = HashSet::new();
        for value_type in ValueType::ALL {
            assert!(seen.insert(value_type.as_str()));
            assert_eq!(value_type.as_str().parse(), Ok(value_type));
            assert_eq!(value_type.to_string(), value_type.as_str());
            let deserializer: StrDeserializer<'_, DeError> =
                value_type.as_str().into_deserializer();
            assert_eq!(ValueType::deserialize(deserializer), Ok(value_type));
        }
        assert_eq!(
            "integer".parse::<ValueType>(),
            Err(ParseValueTypeError("integer".into()))
        );
        let deserializer: StrDeserializer<'_, DeError> = "DATE_TIME".into_deserializer();
        let error = ValueType::deserialize(deserializer).unwrap_err();
        assert!(error.to_string().contains("DATE_TIME"), "{error}");
    }

    #[test]
    fn predicates() {
        use ValueType::*;
        let numeric: Vec<_> = ValueType::ALL
            .into_iter()
            .filter(|t| t.is_numeric())
            .collect();
        assert_eq!(
            numeric,
            [
                Number,
                UnitInterval,
                Percentage,
                Integer,
                IntegerPositive,
                IntegerNegative,
                IntegerZeroOrPositive
            ]
        );
        let integer: Vec<_> = ValueType::ALL
            .into_iter()
            .filter(|t| t.is_integer())
            .collect();
        assert_eq!(
            integer,
            [
                Integer,
                IntegerPositive,
                IntegerNegative,
                IntegerZeroOrPositive
            ]
        );
        assert!(Boolean.is_boolean() && TrueOnly.is_boolean() && !Text.is_boolean());
        assert!(Date.is_date() && Datetime.is_date() && Age.is_date() && !Time.is_date());
        assert!(Text.is_text() && LongText.is_text() && MultiText.is_text() && Time.is_text());
        assert!(!Number.is_text() && !Date.is_text() && !OrganisationUnit.is_text());
        assert!(FileResource.is_file() && Image.is_file() && !Text.is_file());
    }

    fn any_value_type() -> impl Strategy<Value = ValueType> {
        proptest::sample::select(ValueType::ALL.to_vec())
    }

    /// Strings made of the characters the checks branch on, so that the
    /// properties below reach past the first rejection more often than
    /// arbitrary Unicode would.
    fn value_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[-+0-9.:,Tt Z\\[\\]{}@/a-zA-Z]{0,30}",
            "-?(0|[1-9][0-9]{0,12})(\\.[0-9]{1,6})?",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,4})?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
            "\\[ ?-?[0-9]{1,3}(\\.[0-9]{1,3})? ?, ?-?[0-9]{1,3}(\\.[0-9]{1,3})? ?\\]",
            "https?://[a-z.:0-9@\\[\\]]{0,20}(/[a-z]{0,5})?",
        ]
    }

    proptest! {
        #[test]
        fn every_i32_is_an_integer(n in any::<i32>()) {
            let text = n.to_string();
            prop_assert_eq!(validate_value(ValueType::Integer, &text, None), Ok(text.clone()));
            prop_assert_eq!(validate_value(ValueType::IntegerPositive, &text, None).is_ok(), n > 0);
            prop_assert_eq!(validate_value(ValueType::IntegerNegative, &text, None).is_ok(), n < 0);
            prop_assert_eq!(validate_value(ValueType::IntegerZeroOrPositive, &text, None).is_ok(), n >= 0);
            prop_assert_eq!(parse_number(&text), Some(f64::from(n)));
        }

        #[test]
        fn integers_beyond_i32_are_refused(n in any::<i64>().prop_filter("outside i32", |n| i32::try_from(*n).is_err())) {
            let text = n.to_string();
            prop_assert!(validate_value(ValueType::Integer, &text, None).is_err());
            // Still a NUMBER, which has no range.
            prop_assert!(validate_value(ValueType::Number, &text, None).is_ok());
        }

        #[test]
        fn every_valid_number_parses(value in value_like()) {
            if let Ok(stored) = validate_value(ValueType::Number, &value, None) {
                let number = parse_number(&stored);
                prop_assert!(number.is_some_and(f64::is_finite), "{:?}", stored);
            }
        }

        #[test]
        fn bounded_decimals_agree_with_floats(value in "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?") {
            let number = parse_number(&value).unwrap_or(f64::NAN);
            prop_assert_eq!(
                validate_value(ValueType::Percentage, &value, None).is_ok(),
                (0.0..=100.0).contains(&number)
            );
            prop_assert_eq!(
                validate_value(ValueType::UnitInterval, &value, None).is_ok(),
                (0.0..=1.0).contains(&number)
            );
        }

        #[test]
        fn never_panics(value_type in any_value_type(), value in value_like()) {
            let codes: Vec<String> = vec!["A".into(), value.clone()];
            let _ = validate_value(value_type, &value, None);
            let _ = validate_value(value_type, &value, Some(&codes));
            let _ = validate_comment(&value);
            let _ = is_zero(&value);
            let _ = parse_number(&value);
            if let Err(error) = validate_value(value_type, &value, None) {
                let _ = (error.to_string(), error.code(), error.reason_key());
            }
        }

        #[test]
        fn normalized_values_revalidate_to_themselves(value_type in any_value_type(), value in value_like()) {
            if let Ok(stored) = validate_value(value_type, &value, None) {
                prop_assert_eq!(validate_value(value_type, &stored, None), Ok(stored.clone()));
            }
            let codes: Vec<String> = vec!["true".into(), value.trim().to_owned()];
            if let Ok(stored) = validate_value(value_type, &value, Some(&codes)) {
                prop_assert_eq!(validate_value(value_type, &stored, Some(&codes)), Ok(stored.clone()));
            }
        }

        #[test]
        fn valid_dates_are_what_time_formats(day in 0..=3_652_058) {
            // Every day from 0001-01-01 to 9999-12-31, as `time` writes it.
            let format = time::macros::format_description!("[year]-[month]-[day]");
            let origin = time::macros::date!(0001 - 01 - 01);
            let date = origin + time::Duration::days(i64::from(day));
            let text = date.format(&format).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(validate_value(ValueType::Date, &text, None), Ok(text.clone()));
        }
    }
}
