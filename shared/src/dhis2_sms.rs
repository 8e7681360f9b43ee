//! DHIS2's compressed SMS submissions (wire format versions 1 and 2), as the
//! DHIS2 Android app sends them when it has no data link, and the reply SMS
//! the phone expects back.
//!
//! The phone's text is Base64 of a bit stream: a check byte, a header and a
//! body whose layout depends on the submission type and version. This module
//! turns the text into a [`Submission`] ([`decode`]), builds the text from a
//! submission ([`encode`], for tests, tools and a Hisa phone client) and
//! formats the reply ([`reply`]). It does no I/O and knows no metadata: ids
//! the phone sent as hashes come out as [`IdRef::Hash`] and the server
//! resolves them with [`resolve_hash`] against its own candidates.
//!
//! Every type is decoded in full, but Hisa's server processes only aggregate
//! data sets and simple events, so the others come out as
//! [`Submission::Unsupported`]: the server can still answer the phone (which
//! otherwise waits and retries) instead of dropping the SMS.
//!
//! The check byte is the first byte of a SHA-256 digest (from `sha2`).

use std::collections::HashSet;
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{DecodeError, Engine as _};
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------------------------------------------
// Enumerations on the wire
// ------------------------------------------------------------------------------------------------

/// Declares an enumeration carried on the wire as a small number, with its
/// DHIS2 name, so codes, names and serde forms cannot drift apart.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $code:literal => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in wire-code order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The number written on the wire.
            pub const fn code(self) -> u8 {
                match self {
                    $($name::$variant => $code,)+
                }
            }

            /// `None` for numbers the format does not define.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// DHIS2's name for it.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

wire_enum! {
    /// What a submission carries (4 bits on the wire).
    SubmissionType {
        AggregateDataset = 0 => "AGGREGATE_DATASET",
        Delete = 1 => "DELETE",
        Enrollment = 2 => "ENROLLMENT",
        Relationship = 3 => "RELATIONSHIP",
        SimpleEvent = 4 => "SIMPLE_EVENT",
        TrackerEvent = 5 => "TRACKER_EVENT",
    }
}

wire_enum! {
    /// Which kind of object an id refers to. Never written for ordinary ids
    /// (the field's position implies it); it picks the hash candidates and is
    /// the 5-bit prefix of an unresolved-hash placeholder ([`hash_placeholder`]).
    MetadataType {
        User = 0 => "USER",
        TrackedEntityType = 1 => "TRACKED_ENTITY_TYPE",
        TrackedEntityAttribute = 2 => "TRACKED_ENTITY_ATTRIBUTE",
        Program = 3 => "PROGRAM",
        OrganisationUnit = 4 => "ORGANISATION_UNIT",
        DataElement = 5 => "DATA_ELEMENT",
        CategoryOptionCombo = 6 => "CATEGORY_OPTION_COMBO",
        Dataset = 7 => "DATASET",
        ProgramStage = 8 => "PROGRAM_STAGE",
        Event = 9 => "EVENT",
        Enrollment = 10 => "ENROLLMENT",
        TrackedEntityInstance = 11 => "TRACKED_ENTITY_INSTANCE",
        Relationship = 12 => "RELATIONSHIP",
        RelationshipType = 13 => "RELATIONSHIP_TYPE",
    }
}

wire_enum! {
    /// Event status (3 bits; 6 and 7 are invalid).
    EventStatus {
        Active = 0 => "ACTIVE",
        Completed = 1 => "COMPLETED",
        Visited = 2 => "VISITED",
        Schedule = 3 => "SCHEDULE",
        Overdue = 4 => "OVERDUE",
        Skipped = 5 => "SKIPPED",
    }
}

wire_enum! {
    /// Enrollment status (2 bits; 3 is invalid). Only version 2 carries it.
    EnrollmentStatus {
        Active = 0 => "ACTIVE",
        Completed = 1 => "COMPLETED",
        Cancelled = 2 => "CANCELLED",
    }
}

// ------------------------------------------------------------------------------------------------
// Decoded content
// ------------------------------------------------------------------------------------------------

/// A UID hash as read from the stream. The length travels with the value
/// because the server must hash its candidates at exactly that length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashRef {
    /// Hash length k, 0–63 (a 6-bit field).
    pub bits: u8,
    /// The hash value, below 2^bits.
    pub value: u64,
}

/// An id as the phone sent it: the UID itself, or a hash of it that only the
/// server's metadata can turn back into a UID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdRef {
    /// Single id fields carry 11 characters of `0-9A-Za-z`; ids inside value
    /// lists are free text on the wire and are not checked here.
    Uid(String),
    Hash(HashRef),
}

impl IdRef {
    pub fn uid(&self) -> Option<&str> {
        match self {
            IdRef::Uid(uid) => Some(uid),
            IdRef::Hash(_) => None,
        }
    }

    /// The id as an argument of a reply SMS: the UID, or DHIS2's `#…`
    /// placeholder so the phone can tell which of its UIDs the server lacks.
    pub fn reply_arg(&self, kind: MetadataType) -> String {
        match self {
            IdRef::Uid(uid) => uid.clone(),
            IdRef::Hash(hash) => hash_placeholder(kind, hash.value),
        }
    }
}

/// A value as the phone typed it. The phone chose the variant from the text
/// (A9 of the reference), so e.g. `0712345678` already arrives as
/// `Int(712345678)`; nothing here can undo that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// The phone only produces 32-bit values, but the wire allows 63-bit
    /// magnitudes; range checks are the server's business.
    Int(i64),
    /// Kept as the phone's text (Java's shortest float rendering, `NaN`,
    /// `4.7123456E9`): DHIS2 stores exactly that text, and a round trip
    /// through `f32` would not reproduce it.
    Float(String),
    /// Seconds since 1970-01-01T00:00:00Z. The phone read the typed
    /// timestamp in its own time zone, so this instant is only as right as
    /// the phone's zone setting.
    Date(i64),
    Bool(bool),
    Text(String),
}

impl Value {
    /// The wire code of the value's type (0 INT, 1 FLOAT, 2 DATE, 3 BOOL, 4 STRING).
    pub const fn type_code(&self) -> u8 {
        match self {
            Value::Int(_) => 0,
            Value::Float(_) => 1,
            Value::Date(_) => 2,
            Value::Bool(_) => 3,
            Value::Text(_) => 4,
        }
    }

    /// The text to store as a data or attribute value. Dates become ISO 8601
    /// UTC (`2019-05-23T16:33:48Z`, a valid DATETIME) rather than the Java
    /// `Date` text DHIS2 stores (`Thu May 23 16:33:48 UTC 2019`), which no
    /// date value type accepts.
    pub fn stored_text(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Float(text) | Value::Text(text) => text.clone(),
            Value::Date(seconds) => format_utc(*seconds),
            Value::Bool(b) => b.to_string(),
        }
    }
}

/// A coordinate pair as the phone rendered it (Java float text). Kept as
/// text so re-encoding reproduces the SMS; [`GeoPoint::coordinates`] parses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub latitude: String,
    pub longitude: String,
}

impl GeoPoint {
    /// `(longitude, latitude)`, the x/y order DHIS2 stores points in.
    pub fn coordinates(&self) -> Option<(f64, f64)> {
        let lon = self.longitude.trim().parse::<f64>().ok()?;
        let lat = self.latitude.trim().parse::<f64>().ok()?;
        Some((lon, lat))
    }
}

/// One data value of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataValue {
    pub data_element: IdRef,
    pub value: Value,
}

/// Data values sharing one category option combo, as the wire groups them.
/// Kept grouped rather than flattened: flattening would copy the combo id
/// into every value, which a hostile text can turn into quadratic memory.
/// Events send their attribute option combo here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataValueGroup {
    pub category_option_combo: IdRef,
    /// Never empty in a decoded submission; [`encode`] rejects empty groups.
    pub values: Vec<DataValue>,
}

/// `(category option combo, data value)` pairs of a value list, in wire order.
pub fn iter_data_values(groups: &[DataValueGroup]) -> impl Iterator<Item = (&IdRef, &DataValue)> {
    groups.iter().flat_map(|group| {
        group
            .values
            .iter()
            .map(move |dv| (&group.category_option_combo, dv))
    })
}

/// A tracked entity attribute value of an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeValue {
    pub attribute: IdRef,
    pub value: Value,
}

/// The fields every submission starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The wire version the submission arrived in (1 or 2). [`encode`] writes
    /// the version it is given instead.
    pub version: u8,
    /// When the phone downloaded its UID lists, seconds since 1970 (0: it
    /// had none). Hash candidates are the objects created before it.
    pub last_sync: i64,
    /// Echoed in the reply; cycles 0–254 on the phone, so not unique over time.
    pub submission_id: u8,
    /// DHIS2 ignores it today and trusts the HTTP caller instead.
    pub user: IdRef,
}

/// AGGREGATE_DATASET: a data entry form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateDataset {
    pub org_unit: IdRef,
    pub data_set: IdRef,
    pub complete: bool,
    pub attribute_option_combo: IdRef,
    /// A DHIS2 ISO period as the phone sent it (`2019W16`); not validated here.
    pub period: String,
    /// Empty means "no values" (only version 2 can say so).
    pub values: Vec<DataValueGroup>,
}

/// SIMPLE_EVENT: an event of a program without registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleEvent {
    pub org_unit: IdRef,
    pub program: IdRef,
    pub status: EventStatus,
    pub attribute_option_combo: IdRef,
    /// Phone-generated for new events; resending the SMS updates the same event.
    pub event: IdRef,
    /// Always present in version 1.
    pub event_date: Option<i64>,
    /// Version 2 only.
    pub due_date: Option<i64>,
    /// Version 2 only.
    pub geo: Option<GeoPoint>,
    /// Empty means "no values" (only version 2 can say so).
    pub values: Vec<DataValueGroup>,
}

/// TRACKER_EVENT: an event of an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerEvent {
    pub org_unit: IdRef,
    pub program_stage: IdRef,
    pub status: EventStatus,
    pub attribute_option_combo: IdRef,
    pub enrollment: IdRef,
    pub event: IdRef,
    /// Always present in version 1.
    pub event_date: Option<i64>,
    /// Version 2 only.
    pub due_date: Option<i64>,
    /// Version 2 only.
    pub geo: Option<GeoPoint>,
    /// Empty means "no values" (only version 2 can say so).
    pub values: Vec<DataValueGroup>,
}

/// An event inside a version 2 enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentEvent {
    pub org_unit: IdRef,
    pub program_stage: IdRef,
    pub status: EventStatus,
    pub attribute_option_combo: IdRef,
    pub event: IdRef,
    pub event_date: Option<i64>,
    pub due_date: Option<i64>,
    pub geo: Option<GeoPoint>,
    pub values: Vec<DataValueGroup>,
}

/// ENROLLMENT: a tracked entity enrolled in a program, with its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub org_unit: IdRef,
    pub program: IdRef,
    pub tracked_entity_type: IdRef,
    pub tracked_entity_instance: IdRef,
    pub enrollment: IdRef,
    /// Always present in version 1.
    pub enrollment_date: Option<i64>,
    /// Present exactly in version 2.
    pub status: Option<EnrollmentStatus>,
    /// Version 2 only.
    pub incident_date: Option<i64>,
    /// Version 2 only.
    pub geo: Option<GeoPoint>,
    /// Never empty in version 1.
    pub attributes: Vec<AttributeValue>,
    /// Version 2 only.
    pub events: Vec<EnrollmentEvent>,
}

/// RELATIONSHIP between two tracked entities (or enrollments or events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    pub relationship_type: IdRef,
    pub relationship: IdRef,
    /// Always a full UID: endpoints are never hashed.
    pub from: String,
    pub to: String,
}

/// Bodies Hisa's server does not process yet, decoded in full all the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnsupportedBody {
    Delete { event: IdRef },
    Enrollment(Enrollment),
    Relationship(Relationship),
    TrackerEvent(TrackerEvent),
}

impl UnsupportedBody {
    pub const fn kind(&self) -> SubmissionType {
        match self {
            UnsupportedBody::Delete { .. } => SubmissionType::Delete,
            UnsupportedBody::Enrollment(_) => SubmissionType::Enrollment,
            UnsupportedBody::Relationship(_) => SubmissionType::Relationship,
            UnsupportedBody::TrackerEvent(_) => SubmissionType::TrackerEvent,
        }
    }
}

/// A decoded submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Submission {
    AggregateDataset {
        header: Header,
        body: AggregateDataset,
    },
    SimpleEvent {
        header: Header,
        body: SimpleEvent,
    },
    /// A valid submission of a type the server does not process; answer it
    /// with [`ReplyCode::NOT_SUPPORTED`]. `kind` and `submission_id` repeat
    /// `body.kind()` and `header.submission_id` so a server can reply without
    /// looking inside; [`encode`] refuses them when they disagree.
    Unsupported {
        kind: SubmissionType,
        submission_id: u8,
        header: Header,
        body: UnsupportedBody,
    },
}

impl Submission {
    pub fn header(&self) -> &Header {
        match self {
            Submission::AggregateDataset { header, .. }
            | Submission::SimpleEvent { header, .. }
            | Submission::Unsupported { header, .. } => header,
        }
    }

    pub fn kind(&self) -> SubmissionType {
        match self {
            Submission::AggregateDataset { .. } => SubmissionType::AggregateDataset,
            Submission::SimpleEvent { .. } => SubmissionType::SimpleEvent,
            Submission::Unsupported { kind, .. } => *kind,
        }
    }

    pub fn submission_id(&self) -> u8 {
        self.header().submission_id
    }

    /// Every id in the submission with the metadata type whose hash table it
    /// belongs to, value lists included, so the server can resolve hashes (or
    /// build reply placeholders) without knowing each body's layout.
    /// Relationship endpoints are plain UIDs and not listed.
    pub fn ids(&self) -> Vec<(MetadataType, &IdRef)> {
        use MetadataType as M;
        let mut ids = vec![(M::User, &self.header().user)];
        fn values<'a>(ids: &mut Vec<(MetadataType, &'a IdRef)>, groups: &'a [DataValueGroup]) {
            for group in groups {
                ids.push((M::CategoryOptionCombo, &group.category_option_combo));
                for dv in &group.values {
                    ids.push((M::DataElement, &dv.data_element));
                }
            }
        }
        match self {
            Submission::AggregateDataset { body, .. } => {
                ids.push((M::OrganisationUnit, &body.org_unit));
                ids.push((M::Dataset, &body.data_set));
                ids.push((M::CategoryOptionCombo, &body.attribute_option_combo));
                values(&mut ids, &body.values);
            }
            Submission::SimpleEvent { body, .. } => {
                ids.push((M::OrganisationUnit, &body.org_unit));
                ids.push((M::Program, &body.program));
                ids.push((M::CategoryOptionCombo, &body.attribute_option_combo));
                ids.push((M::Event, &body.event));
                values(&mut ids, &body.values);
            }
            Submission::Unsupported { body, .. } => match body {
                UnsupportedBody::Delete { event } => ids.push((M::Event, event)),
                UnsupportedBody::Relationship(r) => {
                    ids.push((M::RelationshipType, &r.relationship_type));
                    ids.push((M::Relationship, &r.relationship));
                }
                UnsupportedBody::TrackerEvent(e) => {
                    ids.push((M::OrganisationUnit, &e.org_unit));
                    ids.push((M::ProgramStage, &e.program_stage));
                    ids.push((M::CategoryOptionCombo, &e.attribute_option_combo));
                    ids.push((M::Enrollment, &e.enrollment));
                    ids.push((M::Event, &e.event));
                    values(&mut ids, &e.values);
                }
                UnsupportedBody::Enrollment(e) => {
                    ids.push((M::OrganisationUnit, &e.org_unit));
                    ids.push((M::Program, &e.program));
                    ids.push((M::TrackedEntityType, &e.tracked_entity_type));
                    ids.push((M::TrackedEntityInstance, &e.tracked_entity_instance));
                    ids.push((M::Enrollment, &e.enrollment));
                    for a in &e.attributes {
                        ids.push((M::TrackedEntityAttribute, &a.attribute));
                    }
                    for ev in &e.events {
                        ids.push((M::OrganisationUnit, &ev.org_unit));
                        ids.push((M::ProgramStage, &ev.program_stage));
                        ids.push((M::CategoryOptionCombo, &ev.attribute_option_combo));
                        ids.push((M::Event, &ev.event));
                        values(&mut ids, &ev.values);
                    }
                }
            },
        }
        ids
    }
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/// Why a text is not a submission (decoding) or a submission cannot be sent
/// (encoding). Bit positions count from the first bit of the check byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    #[error("the SMS text is empty")]
    Empty,
    #[error(
        "not Base64: {character:?} at position {position} is not a Base64 character{}",
        space_hint(.character)
    )]
    InvalidBase64Character { position: usize, character: char },
    #[error("not Base64: misplaced or incomplete `=` padding at position {position}")]
    InvalidBase64Padding { position: usize },
    #[error("not Base64: {length} characters leave a dangling last character")]
    InvalidBase64Length { length: usize },
    #[error(
        "check byte mismatch: the SMS carries {found:#04x} but its content hashes to \
         {expected:#04x} (corrupted or truncated text)"
    )]
    CheckByteMismatch { expected: u8, found: u8 },
    #[error(
        "truncated at bit {bit} while reading {field}: {needed} bits needed, {available} left"
    )]
    Truncated {
        bit: usize,
        field: &'static str,
        needed: u32,
        available: usize,
    },
    #[error("unknown submission type {0} (0-5 exist)")]
    UnknownSubmissionType(u8),
    #[error("unsupported format version {0} (1 and 2 exist)")]
    UnsupportedVersion(u8),
    #[error("unknown value type {code} at bit {bit} (0-4 exist)")]
    UnknownValueType { bit: usize, code: u8 },
    #[error("unknown event status {code} at bit {bit} (0-5 exist)")]
    UnknownEventStatus { bit: usize, code: u8 },
    #[error("unknown enrollment status {code} at bit {bit} (0-2 exist)")]
    UnknownEnrollmentStatus { bit: usize, code: u8 },
    #[error("invalid UID character code {code} at bit {bit} in {field} (0-61 exist)")]
    InvalidUidCode {
        bit: usize,
        field: &'static str,
        code: u8,
    },
    #[error("{bits} bits of unexpected data after the submission, from bit {bit}")]
    TrailingData { bit: usize, bits: usize },
    #[error("non-zero padding bits after the submission, from bit {bit}")]
    NonZeroPadding { bit: usize },
    #[error(
        "invalid date in {field}: {seconds} seconds since 1970 is outside the signed 32-bit \
         range the format carries"
    )]
    InvalidDate { field: &'static str, seconds: i64 },
    #[error("invalid UID in {field}: {uid:?} is not 11 ASCII letters and digits")]
    InvalidUid { field: &'static str, uid: String },
    #[error(
        "invalid text in {field}: {character:?} cannot be sent (only U+0001-U+00FF survive \
         the 8-bit text encoding)"
    )]
    InvalidText {
        field: &'static str,
        character: char,
    },
    #[error("invalid hash in {field}: {value} does not fit in {bits} bits (lengths 0-63)")]
    InvalidHash {
        field: &'static str,
        bits: u8,
        value: u64,
    },
    #[error(
        "mixed ids in {field}: one list holds either UIDs only or hashes only, with one hash \
         length per metadata type"
    )]
    MixedIdList { field: &'static str },
    #[error("integer {0} cannot be sent: magnitudes are limited to 2^63-1")]
    IntegerOutOfRange(i64),
    #[error("empty data value group in {field}: each category option combo needs a value")]
    EmptyGroup { field: &'static str },
    #[error("format version {version} cannot express {what}")]
    NotRepresentable { version: u8, what: &'static str },
    #[error("inconsistent submission: {0}")]
    Inconsistent(&'static str),
    #[error("duplicate UID {0} in a hash list")]
    DuplicateUid(String),
    #[error("malformed UID {0:?} in a hash list")]
    MalformedUid(String),
    #[error("no hash length up to 64 bits separates the list's UIDs")]
    HashLengthExhausted,
}

fn space_hint(character: &char) -> &'static str {
    if *character == ' ' {
        " (a gateway that form-decodes bodies turns `+` into a space)"
    } else {
        ""
    }
}

/// Field names used while reading the header; errors in them get
/// HEADER_ERROR rather than READ_ERROR.
const HEADER_FIELDS: &[&str] = &[
    "check byte",
    "submission type",
    "format version",
    "last sync date",
    "submission id",
    "user",
];

impl SmsError {
    /// The code DHIS2 answers an unreadable submission with: 102 when the
    /// header could not be read (reply with id `-1` unless
    /// [`peek_submission_id`] finds one), 103 when the body could not.
    /// Encoding errors map to 101.
    pub fn reply_code(&self) -> ReplyCode {
        use SmsError as E;
        match self {
            E::Empty
            | E::InvalidBase64Character { .. }
            | E::InvalidBase64Padding { .. }
            | E::InvalidBase64Length { .. }
            | E::CheckByteMismatch { .. }
            | E::UnknownSubmissionType(_)
            | E::UnsupportedVersion(_) => ReplyCode::HeaderError,
            E::Truncated { field, .. } | E::InvalidUidCode { field, .. } => {
                if HEADER_FIELDS.contains(field) {
                    ReplyCode::HeaderError
                } else {
                    ReplyCode::ReadError
                }
            }
            E::UnknownValueType { .. }
            | E::UnknownEventStatus { .. }
            | E::UnknownEnrollmentStatus { .. }
            | E::TrailingData { .. }
            | E::NonZeroPadding { .. } => ReplyCode::ReadError,
            _ => ReplyCode::UnknownError,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Text <-> bytes
// ------------------------------------------------------------------------------------------------

// DHIS2 accepts Base64 with or without padding. Java's standard decoder,
// whose rules these follow, refuses a partial padding (`AA=`) and ignores the
// unused low bits of the last character; one engine per case reproduces that
// (the `base64` crate alone would accept `AA=`).
const PADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);
const UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

fn base64_bytes(text: &str) -> Result<Vec<u8>, SmsError> {
    if text.is_empty() {
        return Err(SmsError::Empty);
    }
    // Checked here rather than left to the engine so the error names the
    // character, and so every later offset is a character position.
    for (position, character) in text.chars().enumerate() {
        if !(character.is_ascii_alphanumeric() || matches!(character, '+' | '/' | '=')) {
            return Err(SmsError::InvalidBase64Character {
                position,
                character,
            });
        }
    }
    let engine = if text.ends_with('=') {
        &PADDED
    } else {
        &UNPADDED
    };
    engine.decode(text).map_err(|error| match error {
        DecodeError::InvalidLength(_) => SmsError::InvalidBase64Length { length: text.len() },
        DecodeError::InvalidByte(position, _) | DecodeError::InvalidLastSymbol(position, _) => {
            SmsError::InvalidBase64Padding { position }
        }
        DecodeError::InvalidPadding => SmsError::InvalidBase64Padding {
            position: text.find('=').unwrap_or(text.len()),
        },
    })
}

/// DHIS2's test for "compressed or plain text?": the whole body is Base64.
/// Short words such as `help` pass it too and then fail in [`decode`], which
/// is DHIS2's behaviour as well. The empty text is not compressed.
pub fn is_compressed(text: &str) -> bool {
    base64_bytes(text).is_ok()
}

fn verified_bytes(text: &str) -> Result<Vec<u8>, SmsError> {
    let bytes = base64_bytes(text)?;
    let (&found, rest) = bytes.split_first().ok_or(SmsError::Truncated {
        bit: 0,
        field: "check byte",
        needed: 8,
        available: 0,
    })?;
    let expected = sha256(rest)[0];
    if found != expected {
        return Err(SmsError::CheckByteMismatch { expected, found });
    }
    Ok(bytes)
}

/// The submission id of a text whose body does not decode, so the error
/// reply can carry it. `None` (reply with `-1`) unless the Base64, the check
/// byte, the type and the version are all sound.
pub fn peek_submission_id(text: &str) -> Option<u8> {
    let bytes = verified_bytes(text).ok()?;
    let first = *bytes.get(1)?;
    SubmissionType::from_code(first >> 4)?;
    if !matches!(first & 0x0f, 1 | 2) {
        return None;
    }
    bytes.get(6).copied()
}

// ------------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------------

/// Reads one SMS text. Never panics; every malformed input is an error.
///
/// Strict where DHIS2 is lenient in one respect: after the structure ends,
/// at most 7 bits may remain and they must be zero (every real writer pads
/// that way), which catches corruption the 8-bit check byte lets through.
pub fn decode(text: &str) -> Result<Submission, SmsError> {
    let bytes = verified_bytes(text)?;
    let mut r = BitReader::new(&bytes);

    let kind_code = r.bits(4, "submission type")? as u8;
    let version = r.bits(4, "format version")? as u8;
    let kind =
        SubmissionType::from_code(kind_code).ok_or(SmsError::UnknownSubmissionType(kind_code))?;
    if !matches!(version, 1 | 2) {
        return Err(SmsError::UnsupportedVersion(version));
    }
    let header = Header {
        version,
        last_sync: r.date("last sync date")?,
        submission_id: r.bits(8, "submission id")? as u8,
        user: r.id("user")?,
    };
    let v2 = version == 2;

    let submission = match kind {
        SubmissionType::AggregateDataset => {
            let body = AggregateDataset {
                org_unit: r.id("organisation unit")?,
                data_set: r.id("data set")?,
                complete: r.flag("complete flag")?,
                attribute_option_combo: r.id("attribute option combo")?,
                period: r.text("period")?,
                values: r.data_values_for(v2)?,
            };
            Submission::AggregateDataset { header, body }
        }
        SubmissionType::SimpleEvent => {
            let org_unit = r.id("organisation unit")?;
            let program = r.id("program")?;
            let status = r.event_status()?;
            let attribute_option_combo = r.id("attribute option combo")?;
            let event = r.id("event")?;
            let (event_date, due_date, geo) = r.event_dates_and_geo(v2)?;
            let body = SimpleEvent {
                org_unit,
                program,
                status,
                attribute_option_combo,
                event,
                event_date,
                due_date,
                geo,
                values: r.data_values_for(v2)?,
            };
            Submission::SimpleEvent { header, body }
        }
        SubmissionType::TrackerEvent => {
            let org_unit = r.id("organisation unit")?;
            let program_stage = r.id("program stage")?;
            let status = r.event_status()?;
            let attribute_option_combo = r.id("attribute option combo")?;
            let enrollment = r.id("enrollment")?;
            let event = r.id("event")?;
            let (event_date, due_date, geo) = r.event_dates_and_geo(v2)?;
            let body = TrackerEvent {
                org_unit,
                program_stage,
                status,
                attribute_option_combo,
                enrollment,
                event,
                event_date,
                due_date,
                geo,
                values: r.data_values_for(v2)?,
            };
            unsupported(header, UnsupportedBody::TrackerEvent(body))
        }
        SubmissionType::Enrollment => {
            let body = r.enrollment(v2)?;
            unsupported(header, UnsupportedBody::Enrollment(body))
        }
        SubmissionType::Relationship => {
            let body = Relationship {
                relationship_type: r.id("relationship type")?,
                relationship: r.id("relationship")?,
                from: r.full_uid("relationship from")?,
                to: r.full_uid("relationship to")?,
            };
            unsupported(header, UnsupportedBody::Relationship(body))
        }
        SubmissionType::Delete => {
            let event = r.id("event")?;
            unsupported(header, UnsupportedBody::Delete { event })
        }
    };
    r.finish()?;
    Ok(submission)
}

/// Event date, due date and geo point: the part of every event whose shape
/// depends on the version.
type EventExtras = (Option<i64>, Option<i64>, Option<GeoPoint>);

fn unsupported(header: Header, body: UnsupportedBody) -> Submission {
    Submission::Unsupported {
        kind: body.kind(),
        submission_id: header.submission_id,
        header,
        body,
    }
}

/// Most significant bit first, positions counted from the check byte's first
/// bit so errors match the reference's bit offsets.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 8 }
    }

    fn remaining(&self) -> usize {
        (self.bytes.len() * 8).saturating_sub(self.pos)
    }

    /// `width` is at most 63 everywhere the format is read.
    fn bits(&mut self, width: u32, field: &'static str) -> Result<u64, SmsError> {
        let available = self.remaining();
        if width as usize > available {
            return Err(SmsError::Truncated {
                bit: self.pos,
                field,
                needed: width,
                available,
            });
        }
        let mut value = 0u64;
        for _ in 0..width {
            let byte = self.bytes.get(self.pos / 8).copied().unwrap_or(0);
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            value = (value << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(value)
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, SmsError> {
        Ok(self.bits(1, field)? == 1)
    }

    /// Signed: DHIS2 reads the header date that way, and a value date before
    /// 1970 (a birth date) only survives the phone's 32-bit truncation if
    /// read back as two's complement.
    fn date(&mut self, field: &'static str) -> Result<i64, SmsError> {
        Ok(i64::from(self.bits(32, field)? as u32 as i32))
    }

    fn opt_date(&mut self, field: &'static str) -> Result<Option<i64>, SmsError> {
        if self.flag(field)? {
            self.date(field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn text(&mut self, field: &'static str) -> Result<String, SmsError> {
        let mut text = String::new();
        loop {
            match self.bits(8, field)? as u8 {
                0 => return Ok(text),
                code => text.push(char::from(code)),
            }
        }
    }

    fn full_uid(&mut self, field: &'static str) -> Result<String, SmsError> {
        let mut uid = String::with_capacity(11);
        for _ in 0..11 {
            let bit = self.pos;
            let code = self.bits(6, field)? as u8;
            uid.push(uid_char(code).ok_or(SmsError::InvalidUidCode { bit, field, code })?);
        }
        Ok(uid)
    }

    fn id(&mut self, field: &'static str) -> Result<IdRef, SmsError> {
        if self.flag(field)? {
            let bits = self.bits(6, field)? as u8;
            let value = self.bits(u32::from(bits), field)?;
            Ok(IdRef::Hash(HashRef { bits, value }))
        } else {
            self.full_uid(field).map(IdRef::Uid)
        }
    }

    /// Ids inside value lists: a bare hash, or the UID as text.
    fn list_id(&mut self, hash_bits: Option<u8>, field: &'static str) -> Result<IdRef, SmsError> {
        match hash_bits {
            Some(bits) => Ok(IdRef::Hash(HashRef {
                bits,
                value: self.bits(u32::from(bits), field)?,
            })),
            None => self.text(field).map(IdRef::Uid),
        }
    }

    fn event_status(&mut self) -> Result<EventStatus, SmsError> {
        let bit = self.pos;
        let code = self.bits(3, "event status")? as u8;
        EventStatus::from_code(code).ok_or(SmsError::UnknownEventStatus { bit, code })
    }

    fn enrollment_status(&mut self) -> Result<EnrollmentStatus, SmsError> {
        let bit = self.pos;
        let code = self.bits(2, "enrollment status")? as u8;
        EnrollmentStatus::from_code(code).ok_or(SmsError::UnknownEnrollmentStatus { bit, code })
    }

    fn geo(&mut self) -> Result<Option<GeoPoint>, SmsError> {
        if !self.flag("geo point")? {
            return Ok(None);
        }
        let latitude = self.text("latitude")?;
        let longitude = self.text("longitude")?;
        Ok(Some(GeoPoint {
            latitude,
            longitude,
        }))
    }

    /// v1: mandatory event date, nothing else; v2: two optional dates and a
    /// geo point.
    fn event_dates_and_geo(&mut self, v2: bool) -> Result<EventExtras, SmsError> {
        if v2 {
            let event_date = self.opt_date("event date")?;
            let due_date = self.opt_date("due date")?;
            Ok((event_date, due_date, self.geo()?))
        } else {
            Ok((Some(self.date("event date")?), None, None))
        }
    }

    fn value(&mut self, fixed_width: u32) -> Result<Value, SmsError> {
        let bit = self.pos;
        let code = self.bits(3, "value type")? as u8;
        Ok(match code {
            0 => {
                let negative = self.flag("integer sign")?;
                let magnitude = if self.flag("integer width flag")? {
                    let width = self.bits(6, "integer length")? as u32;
                    self.bits(width, "integer")?
                } else {
                    self.bits(fixed_width, "integer")?
                };
                // At most 63 bits were read, so the magnitude fits an i64.
                let magnitude = magnitude as i64;
                Value::Int(if negative { -magnitude } else { magnitude })
            }
            1 => Value::Float(self.text("float value")?),
            2 => Value::Date(self.date("date value")?),
            3 => Value::Bool(self.flag("boolean value")?),
            4 => Value::Text(self.text("text value")?),
            _ => return Err(SmsError::UnknownValueType { bit, code }),
        })
    }

    fn fixed_width(&mut self, field: &'static str) -> Result<u32, SmsError> {
        Ok(self.bits(4, field)? as u32 + 1)
    }

    fn data_values(&mut self) -> Result<Vec<DataValueGroup>, SmsError> {
        let hashed = self.flag("data value list")?;
        let (coc_bits, de_bits) = if hashed {
            let coc = self.bits(6, "data value list")? as u8;
            let de = self.bits(6, "data value list")? as u8;
            (Some(coc), Some(de))
        } else {
            (None, None)
        };
        let fixed_width = self.fixed_width("data value list")?;
        let mut groups = Vec::new();
        loop {
            let category_option_combo = self.list_id(coc_bits, "category option combo")?;
            let mut values = Vec::new();
            loop {
                let data_element = self.list_id(de_bits, "data element")?;
                let value = self.value(fixed_width)?;
                values.push(DataValue {
                    data_element,
                    value,
                });
                if !self.flag("data value continuation bit")? {
                    break;
                }
            }
            groups.push(DataValueGroup {
                category_option_combo,
                values,
            });
            if !self.flag("group continuation bit")? {
                return Ok(groups);
            }
        }
    }

    /// v1 lists are mandatory and non-empty; v2 puts a presence bit first.
    fn data_values_for(&mut self, v2: bool) -> Result<Vec<DataValueGroup>, SmsError> {
        if !v2 || self.flag("data values presence bit")? {
            self.data_values()
        } else {
            Ok(Vec::new())
        }
    }

    fn attribute_values(&mut self) -> Result<Vec<AttributeValue>, SmsError> {
        let bits = if self.flag("attribute value list")? {
            Some(self.bits(6, "attribute value list")? as u8)
        } else {
            None
        };
        let fixed_width = self.fixed_width("attribute value list")?;
        let mut attributes = Vec::new();
        loop {
            let attribute = self.list_id(bits, "attribute")?;
            let value = self.value(fixed_width)?;
            attributes.push(AttributeValue { attribute, value });
            if !self.flag("attribute continuation bit")? {
                return Ok(attributes);
            }
        }
    }

    fn enrollment(&mut self, v2: bool) -> Result<Enrollment, SmsError> {
        let org_unit = self.id("organisation unit")?;
        let program = self.id("program")?;
        let tracked_entity_type = self.id("tracked entity type")?;
        let tracked_entity_instance = self.id("tracked entity instance")?;
        let enrollment = self.id("enrollment")?;
        if !v2 {
            let enrollment_date = Some(self.date("enrollment date")?);
            return Ok(Enrollment {
                org_unit,
                program,
                tracked_entity_type,
                tracked_entity_instance,
                enrollment,
                enrollment_date,
                status: None,
                incident_date: None,
                geo: None,
                attributes: self.attribute_values()?,
                events: Vec::new(),
            });
        }
        let enrollment_date = self.opt_date("enrollment date")?;
        let status = Some(self.enrollment_status()?);
        let incident_date = self.opt_date("incident date")?;
        let geo = self.geo()?;
        let attributes = if self.flag("attribute values presence bit")? {
            self.attribute_values()?
        } else {
            Vec::new()
        };
        let mut events = Vec::new();
        if self.flag("events presence bit")? {
            loop {
                events.push(self.enrollment_event()?);
                if !self.flag("event continuation bit")? {
                    break;
                }
            }
        }
        Ok(Enrollment {
            org_unit,
            program,
            tracked_entity_type,
            tracked_entity_instance,
            enrollment,
            enrollment_date,
            status,
            incident_date,
            geo,
            attributes,
            events,
        })
    }

    fn enrollment_event(&mut self) -> Result<EnrollmentEvent, SmsError> {
        let org_unit = self.id("organisation unit")?;
        let program_stage = self.id("program stage")?;
        let status = self.event_status()?;
        let attribute_option_combo = self.id("attribute option combo")?;
        let event = self.id("event")?;
        let (event_date, due_date, geo) = self.event_dates_and_geo(true)?;
        Ok(EnrollmentEvent {
            org_unit,
            program_stage,
            status,
            attribute_option_combo,
            event,
            event_date,
            due_date,
            geo,
            values: self.data_values_for(true)?,
        })
    }

    fn finish(&mut self) -> Result<(), SmsError> {
        let bit = self.pos;
        let left = self.remaining();
        if left >= 8 {
            return Err(SmsError::TrailingData { bit, bits: left });
        }
        if self.bits(left as u32, "padding")? != 0 {
            return Err(SmsError::NonZeroPadding { bit });
        }
        Ok(())
    }
}

fn uid_char(code: u8) -> Option<char> {
    match code {
        0..=9 => Some(char::from(b'0' + code)),
        10..=35 => Some(char::from(b'A' + code - 10)),
        36..=61 => Some(char::from(b'a' + code - 36)),
        _ => None,
    }
}

fn uid_code(character: char) -> Option<u8> {
    match character {
        '0'..='9' => Some(character as u8 - b'0'),
        'A'..='Z' => Some(character as u8 - b'A' + 10),
        'a'..='z' => Some(character as u8 - b'a' + 36),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------------
// Encoding
// ------------------------------------------------------------------------------------------------

/// Writes a submission as the phone would, in wire `version` 1 or 2 (the
/// header's `version` field is not consulted). Values, hashes and grouping are
/// written as given, with the integer width chosen as DHIS2's writer chooses
/// it, so a vector's fields reproduce the vector's text.
///
/// Succeeds only when [`decode`] gives the submission back (with
/// `header.version` = `version`): anything the version cannot express (v1:
/// absent dates, due dates, geo points, empty lists, enrollment events and
/// status) or the wire cannot carry (characters above U+00FF, mixed id lists,
/// dates beyond 32 bits) is an error rather than silently dropped.
pub fn encode(submission: &Submission, version: u8) -> Result<String, SmsError> {
    if !matches!(version, 1 | 2) {
        return Err(SmsError::UnsupportedVersion(version));
    }
    let v2 = version == 2;
    let header = submission.header();
    let mut w = BitWriter::new(version);
    w.put(u64::from(submission.kind().code()), 4);
    w.put(u64::from(version), 4);
    w.date(header.last_sync, "last sync date")?;
    w.put(u64::from(header.submission_id), 8);
    w.id(&header.user, "user")?;

    match submission {
        Submission::AggregateDataset { body, .. } => {
            w.id(&body.org_unit, "organisation unit")?;
            w.id(&body.data_set, "data set")?;
            w.flag(body.complete);
            w.id(&body.attribute_option_combo, "attribute option combo")?;
            w.text(&body.period, "period")?;
            w.data_values_for(&body.values)?;
        }
        Submission::SimpleEvent { body, .. } => {
            w.id(&body.org_unit, "organisation unit")?;
            w.id(&body.program, "program")?;
            w.put(u64::from(body.status.code()), 3);
            w.id(&body.attribute_option_combo, "attribute option combo")?;
            w.id(&body.event, "event")?;
            w.event_dates_and_geo(body.event_date, body.due_date, body.geo.as_ref())?;
            w.data_values_for(&body.values)?;
        }
        Submission::Unsupported {
            kind,
            submission_id,
            header,
            body,
        } => {
            if *kind != body.kind() {
                return Err(SmsError::Inconsistent(
                    "`kind` differs from the body's type",
                ));
            }
            if *submission_id != header.submission_id {
                return Err(SmsError::Inconsistent(
                    "`submission_id` differs from the header's",
                ));
            }
            match body {
                UnsupportedBody::Delete { event } => w.id(event, "event")?,
                UnsupportedBody::Relationship(r) => {
                    w.id(&r.relationship_type, "relationship type")?;
                    w.id(&r.relationship, "relationship")?;
                    w.full_uid(&r.from, "relationship from")?;
                    w.full_uid(&r.to, "relationship to")?;
                }
                UnsupportedBody::TrackerEvent(e) => {
                    w.id(&e.org_unit, "organisation unit")?;
                    w.id(&e.program_stage, "program stage")?;
                    w.put(u64::from(e.status.code()), 3);
                    w.id(&e.attribute_option_combo, "attribute option combo")?;
                    w.id(&e.enrollment, "enrollment")?;
                    w.id(&e.event, "event")?;
                    w.event_dates_and_geo(e.event_date, e.due_date, e.geo.as_ref())?;
                    w.data_values_for(&e.values)?;
                }
                UnsupportedBody::Enrollment(e) => w.enrollment(e, v2)?,
            }
        }
    }
    Ok(STANDARD.encode(w.finish()))
}

struct BitWriter {
    version: u8,
    bytes: Vec<u8>,
    len: usize,
}

impl BitWriter {
    fn new(version: u8) -> Self {
        // Byte 0 is the check byte, filled in by `finish`.
        BitWriter {
            version,
            bytes: vec![0],
            len: 8,
        }
    }

    fn not_in_v1(&self, what: &'static str) -> SmsError {
        SmsError::NotRepresentable {
            version: self.version,
            what,
        }
    }

    /// Callers guarantee `value < 2^width`.
    fn put(&mut self, value: u64, width: u32) {
        for shift in (0..width).rev() {
            if self.len.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (value >> shift) & 1 == 1 {
                if let Some(last) = self.bytes.last_mut() {
                    *last |= 0x80 >> (self.len % 8);
                }
            }
            self.len += 1;
        }
    }

    fn flag(&mut self, value: bool) {
        self.put(u64::from(value), 1);
    }

    fn date(&mut self, seconds: i64, field: &'static str) -> Result<(), SmsError> {
        let seconds32 =
            i32::try_from(seconds).map_err(|_| SmsError::InvalidDate { field, seconds })?;
        self.put(u64::from(seconds32 as u32), 32);
        Ok(())
    }

    fn opt_date(&mut self, seconds: Option<i64>, field: &'static str) -> Result<(), SmsError> {
        self.flag(seconds.is_some());
        match seconds {
            Some(seconds) => self.date(seconds, field),
            None => Ok(()),
        }
    }

    fn text(&mut self, text: &str, field: &'static str) -> Result<(), SmsError> {
        for character in text.chars() {
            let code = u32::from(character);
            if code == 0 || code > 0xff {
                return Err(SmsError::InvalidText { field, character });
            }
            self.put(u64::from(code), 8);
        }
        self.put(0, 8);
        Ok(())
    }

    fn full_uid(&mut self, uid: &str, field: &'static str) -> Result<(), SmsError> {
        let invalid = || SmsError::InvalidUid {
            field,
            uid: uid.chars().take(64).collect(),
        };
        if uid.len() != 11 {
            return Err(invalid());
        }
        let codes: Vec<u8> = uid
            .chars()
            .map(uid_code)
            .collect::<Option<_>>()
            .ok_or_else(invalid)?;
        for code in codes {
            self.put(u64::from(code), 6);
        }
        Ok(())
    }

    fn hash(&mut self, hash: &HashRef, field: &'static str) -> Result<(), SmsError> {
        if hash.bits > 63 || hash.value > low_mask(hash.bits) {
            return Err(SmsError::InvalidHash {
                field,
                bits: hash.bits,
                value: hash.value,
            });
        }
        self.put(hash.value, u32::from(hash.bits));
        Ok(())
    }

    fn id(&mut self, id: &IdRef, field: &'static str) -> Result<(), SmsError> {
        match id {
            IdRef::Hash(hash) => {
                // Validated before any bit is written so the length field
                // below never receives more than its 6 bits.
                if hash.bits > 63 {
                    return Err(SmsError::InvalidHash {
                        field,
                        bits: hash.bits,
                        value: hash.value,
                    });
                }
                self.flag(true);
                self.put(u64::from(hash.bits), 6);
                self.hash(hash, field)
            }
            IdRef::Uid(uid) => {
                self.flag(false);
                self.full_uid(uid, field)
            }
        }
    }

    fn list_id(&mut self, id: &IdRef, field: &'static str) -> Result<(), SmsError> {
        match id {
            IdRef::Hash(hash) => self.hash(hash, field),
            IdRef::Uid(uid) => self.text(uid, field),
        }
    }

    fn geo(&mut self, geo: Option<&GeoPoint>) -> Result<(), SmsError> {
        self.flag(geo.is_some());
        if let Some(geo) = geo {
            self.text(&geo.latitude, "latitude")?;
            self.text(&geo.longitude, "longitude")?;
        }
        Ok(())
    }

    fn event_dates_and_geo(
        &mut self,
        event_date: Option<i64>,
        due_date: Option<i64>,
        geo: Option<&GeoPoint>,
    ) -> Result<(), SmsError> {
        if self.version == 2 {
            self.opt_date(event_date, "event date")?;
            self.opt_date(due_date, "due date")?;
            return self.geo(geo);
        }
        if due_date.is_some() {
            return Err(self.not_in_v1("a due date"));
        }
        if geo.is_some() {
            return Err(self.not_in_v1("a geo point"));
        }
        let event_date = event_date.ok_or_else(|| self.not_in_v1("an event without a date"))?;
        self.date(event_date, "event date")
    }

    fn value(&mut self, value: &Value, fixed_width: u32) -> Result<(), SmsError> {
        self.put(u64::from(value.type_code()), 3);
        match value {
            Value::Int(n) => {
                let magnitude = n.unsigned_abs();
                if magnitude > i64::MAX as u64 {
                    return Err(SmsError::IntegerOutOfRange(*n));
                }
                self.flag(*n < 0);
                // DHIS2's writer goes wide exactly above 16 bits; matching it
                // is what lets encoded vectors equal the phone's bytes.
                let wide = magnitude > 0xffff;
                self.flag(wide);
                if wide {
                    let width = bit_length(magnitude);
                    self.put(u64::from(width), 6);
                    self.put(magnitude, width);
                } else {
                    self.put(magnitude, fixed_width);
                }
            }
            Value::Float(text) => self.text(text, "float value")?,
            Value::Date(seconds) => self.date(*seconds, "date value")?,
            Value::Bool(b) => self.flag(*b),
            Value::Text(text) => self.text(text, "text value")?,
        }
        Ok(())
    }

    fn data_values(&mut self, groups: &[DataValueGroup]) -> Result<(), SmsError> {
        let field = "data value list";
        if groups.iter().any(|g| g.values.is_empty()) {
            return Err(SmsError::EmptyGroup { field });
        }
        let coc_bits = list_hash_bits(groups.iter().map(|g| &g.category_option_combo), field)?;
        let de_bits = list_hash_bits(
            groups
                .iter()
                .flat_map(|g| g.values.iter().map(|dv| &dv.data_element)),
            field,
        )?;
        // One flag covers both id kinds, so both must be hashed or neither.
        match (coc_bits, de_bits) {
            (Some(coc), Some(de)) => {
                self.flag(true);
                self.put(u64::from(coc), 6);
                self.put(u64::from(de), 6);
            }
            (None, None) => self.flag(false),
            _ => return Err(SmsError::MixedIdList { field }),
        }
        let fixed_width = fixed_width(
            groups
                .iter()
                .flat_map(|g| g.values.iter().map(|dv| &dv.value)),
        );
        self.put(u64::from(fixed_width - 1), 4);
        for (group_index, group) in groups.iter().enumerate() {
            self.list_id(&group.category_option_combo, "category option combo")?;
            for (index, dv) in group.values.iter().enumerate() {
                self.list_id(&dv.data_element, "data element")?;
                self.value(&dv.value, fixed_width)?;
                self.flag(index + 1 < group.values.len());
            }
            self.flag(group_index + 1 < groups.len());
        }
        Ok(())
    }

    fn data_values_for(&mut self, groups: &[DataValueGroup]) -> Result<(), SmsError> {
        if self.version == 2 {
            self.flag(!groups.is_empty());
            if groups.is_empty() {
                return Ok(());
            }
        } else if groups.is_empty() {
            return Err(self.not_in_v1("an empty data value list"));
        }
        self.data_values(groups)
    }

    fn attribute_values(&mut self, attributes: &[AttributeValue]) -> Result<(), SmsError> {
        let field = "attribute value list";
        let bits = list_hash_bits(attributes.iter().map(|a| &a.attribute), field)?;
        self.flag(bits.is_some());
        if let Some(bits) = bits {
            self.put(u64::from(bits), 6);
        }
        let fixed_width = fixed_width(attributes.iter().map(|a| &a.value));
        self.put(u64::from(fixed_width - 1), 4);
        for (index, attribute) in attributes.iter().enumerate() {
            self.list_id(&attribute.attribute, "attribute")?;
            self.value(&attribute.value, fixed_width)?;
            self.flag(index + 1 < attributes.len());
        }
        Ok(())
    }

    fn enrollment(&mut self, e: &Enrollment, v2: bool) -> Result<(), SmsError> {
        self.id(&e.org_unit, "organisation unit")?;
        self.id(&e.program, "program")?;
        self.id(&e.tracked_entity_type, "tracked entity type")?;
        self.id(&e.tracked_entity_instance, "tracked entity instance")?;
        self.id(&e.enrollment, "enrollment")?;
        if !v2 {
            if e.status.is_some() {
                return Err(self.not_in_v1("an enrollment status"));
            }
            if e.incident_date.is_some() {
                return Err(self.not_in_v1("an incident date"));
            }
            if e.geo.is_some() {
                return Err(self.not_in_v1("a geo point"));
            }
            if !e.events.is_empty() {
                return Err(self.not_in_v1("events inside an enrollment"));
            }
            if e.attributes.is_empty() {
                return Err(self.not_in_v1("an empty attribute value list"));
            }
            let date = e
                .enrollment_date
                .ok_or_else(|| self.not_in_v1("an enrollment without a date"))?;
            self.date(date, "enrollment date")?;
            return self.attribute_values(&e.attributes);
        }
        let status = e.status.ok_or(SmsError::NotRepresentable {
            version: 2,
            what: "an enrollment without a status",
        })?;
        self.opt_date(e.enrollment_date, "enrollment date")?;
        self.put(u64::from(status.code()), 2);
        self.opt_date(e.incident_date, "incident date")?;
        self.geo(e.geo.as_ref())?;
        self.flag(!e.attributes.is_empty());
        if !e.attributes.is_empty() {
            self.attribute_values(&e.attributes)?;
        }
        self.flag(!e.events.is_empty());
        for (index, event) in e.events.iter().enumerate() {
            self.id(&event.org_unit, "organisation unit")?;
            self.id(&event.program_stage, "program stage")?;
            self.put(u64::from(event.status.code()), 3);
            self.id(&event.attribute_option_combo, "attribute option combo")?;
            self.id(&event.event, "event")?;
            self.event_dates_and_geo(event.event_date, event.due_date, event.geo.as_ref())?;
            self.data_values_for(&event.values)?;
            self.flag(index + 1 < e.events.len());
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        let check = sha256(&self.bytes[1..])[0];
        self.bytes[0] = check;
        self.bytes
    }
}

/// The hash length shared by a list's ids, `None` for a list of UIDs.
fn list_hash_bits<'a>(
    ids: impl Iterator<Item = &'a IdRef>,
    field: &'static str,
) -> Result<Option<u8>, SmsError> {
    let mut mode: Option<Option<u8>> = None;
    for id in ids {
        let this = match id {
            IdRef::Hash(hash) => Some(hash.bits),
            IdRef::Uid(_) => None,
        };
        match mode {
            None => mode = Some(this),
            Some(seen) if seen != this => return Err(SmsError::MixedIdList { field }),
            Some(_) => {}
        }
    }
    Ok(mode.flatten())
}

/// DHIS2's writer sizes the narrow integer field for the largest magnitude
/// that is not sent wide; 1 bit when there is none.
fn fixed_width<'a>(values: impl Iterator<Item = &'a Value>) -> u32 {
    let largest = values
        .filter_map(|value| match value {
            Value::Int(n) if n.unsigned_abs() <= 0xffff => Some(n.unsigned_abs()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    bit_length(largest).max(1)
}

fn bit_length(value: u64) -> u32 {
    64 - value.leading_zeros()
}

fn low_mask(bits: u8) -> u64 {
    match bits {
        0 => 0,
        1..=63 => u64::MAX >> (64 - u32::from(bits)),
        _ => u64::MAX,
    }
}

// ------------------------------------------------------------------------------------------------
// UID hashing
// ------------------------------------------------------------------------------------------------

/// Java's `String.hashCode`, which DHIS2's hashing starts from.
fn java_hash_code(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The k-bit hash of a UID the way the phone and DHIS2 compute it: Java's
/// `hashCode`, its absolute value in 64-bit arithmetic, modulo 2^k.
///
/// Exact for k ≤ 30, the only lengths real lists produce. For larger k the
/// same rule is applied (Java's own arithmetic differs there, see the
/// reference); for k ≥ 32 the hash is simply |hashCode|.
pub fn uid_hash(uid: &str, bits: u8) -> u64 {
    let magnitude = i64::from(java_hash_code(uid)).unsigned_abs();
    match 1u64.checked_shl(u32::from(bits)) {
        Some(modulus) => magnitude % modulus,
        None => magnitude,
    }
}

/// The hash length the phone picks for its list of one metadata type: the
/// smallest k from ⌊log₂ n⌋ + 1 (1 for an empty list) at which no two UIDs
/// share a hash. The server never needs this (k is on the wire); a phone-side
/// encoder and tests do.
pub fn hash_length<'a>(uids: impl IntoIterator<Item = &'a str>) -> Result<u8, SmsError> {
    let uids: Vec<&str> = uids.into_iter().collect();
    let mut seen = HashSet::new();
    for uid in &uids {
        if !is_valid_uid(uid) {
            return Err(SmsError::MalformedUid(uid.chars().take(64).collect()));
        }
        if !seen.insert(*uid) {
            return Err(SmsError::DuplicateUid((*uid).to_string()));
        }
    }
    let start = if uids.is_empty() {
        1
    } else {
        uids.len().ilog2() + 1
    };
    for bits in start..=64 {
        let bits = bits as u8;
        let mut hashes = HashSet::new();
        if uids.iter().all(|uid| hashes.insert(uid_hash(uid, bits))) {
            return Ok(bits);
        }
    }
    Err(SmsError::HashLengthExhausted)
}

/// DHIS2's UID shape: a letter, then ten letters or digits.
fn is_valid_uid(uid: &str) -> bool {
    let bytes = uid.as_bytes();
    bytes.len() == 11
        && bytes[0].is_ascii_alphabetic()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric())
}

/// The outcome of looking a hash up among candidate UIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<'a> {
    Unique(&'a str),
    None,
    /// Two or more distinct candidates share the hash. DHIS2 silently takes
    /// the last one; a careful server narrows the candidates or rejects.
    Ambiguous(Vec<&'a str>),
}

/// Resolves a hash against candidate UIDs (DHIS2 uses every object of the
/// field's metadata type created before the header's `last_sync`). The same
/// UID listed twice is not an ambiguity.
pub fn resolve_hash<'a>(
    hash: HashRef,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Resolution<'a> {
    let mut matches: Vec<&'a str> = Vec::new();
    for candidate in candidates {
        if uid_hash(candidate, hash.bits) == hash.value && !matches.contains(&candidate) {
            matches.push(candidate);
        }
    }
    match matches.len() {
        0 => Resolution::None,
        1 => Resolution::Unique(matches[0]),
        _ => Resolution::Ambiguous(matches),
    }
}

/// DHIS2's stand-in for a hash it could not resolve, used as a reply
/// argument: `#` and Base64 of [5-bit metadata type][6-bit n][n-bit hash],
/// n the hash's bit length (at least 1). Meant for hashes read from the
/// wire, which are below 2^63; larger values do not fit the 6-bit length.
pub fn hash_placeholder(kind: MetadataType, hash: u64) -> String {
    let width = bit_length(hash).max(1);
    let mut w = BitWriter::new(2);
    w.put(u64::from(kind.code()), 5);
    w.put(u64::from(width), 6);
    w.put(hash, width);
    format!("#{}", STANDARD.encode(&w.bytes[1..]))
}

// ------------------------------------------------------------------------------------------------
// Replies
// ------------------------------------------------------------------------------------------------

/// The result codes of a reply SMS. Below 100 the SMS counts as processed
/// (warnings included); the phone shows only 0 as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplyCode {
    Success,
    WarnDverr,
    WarnDvempty,
    WarnAvempty,
    UnknownError,
    HeaderError,
    ReadError,
    InvalidUser,
    InvalidOrgunit,
    InvalidProgram,
    InvalidTetype,
    InvalidDataset,
    InvalidPeriod,
    InvalidAoc,
    InvalidTei,
    InvalidStage,
    InvalidEvent,
    InvalidReltype,
    InvalidEnroll,
    InvalidAttrib,
    UserNotinOu,
    OuNotinProgram,
    OuNotinDataset,
    EnrollFailed,
    DatasetLocked,
    MultiPrograms,
    MultiStages,
    NoEnroll,
    NullAttribval,
    EnrollExist,
}

impl ReplyCode {
    /// DHIS2 has no code for "this type is not processed here", so the
    /// answer is its generic failure: the phone shows any non-zero code as a
    /// failure, and a code of 100 or more marks the inbound SMS failed where
    /// an operator can find it. A new number would be unknown to phones.
    pub const NOT_SUPPORTED: ReplyCode = ReplyCode::UnknownError;

    pub const ALL: &'static [ReplyCode] = &[
        ReplyCode::Success,
        ReplyCode::WarnDverr,
        ReplyCode::WarnDvempty,
        ReplyCode::WarnAvempty,
        ReplyCode::UnknownError,
        ReplyCode::HeaderError,
        ReplyCode::ReadError,
        ReplyCode::InvalidUser,
        ReplyCode::InvalidOrgunit,
        ReplyCode::InvalidProgram,
        ReplyCode::InvalidTetype,
        ReplyCode::InvalidDataset,
        ReplyCode::InvalidPeriod,
        ReplyCode::InvalidAoc,
        ReplyCode::InvalidTei,
        ReplyCode::InvalidStage,
        ReplyCode::InvalidEvent,
        ReplyCode::InvalidReltype,
        ReplyCode::InvalidEnroll,
        ReplyCode::InvalidAttrib,
        ReplyCode::UserNotinOu,
        ReplyCode::OuNotinProgram,
        ReplyCode::OuNotinDataset,
        ReplyCode::EnrollFailed,
        ReplyCode::DatasetLocked,
        ReplyCode::MultiPrograms,
        ReplyCode::MultiStages,
        ReplyCode::NoEnroll,
        ReplyCode::NullAttribval,
        ReplyCode::EnrollExist,
    ];

    const fn entry(self) -> (u16, &'static str, &'static str) {
        use ReplyCode as R;
        match self {
            R::Success => (0, "SUCCESS", "Submission has been processed successfully"),
            R::WarnDverr => (
                1,
                "WARN_DVERR",
                "There was an error with some of the data values in the submission",
            ),
            R::WarnDvempty => (
                2,
                "WARN_DVEMPTY",
                "The submission did not include any data values",
            ),
            R::WarnAvempty => (
                3,
                "WARN_AVEMPTY",
                "The submission did not include any attribute values",
            ),
            R::UnknownError => (101, "UNKNOWN_ERROR", "An unknown error occurred"),
            R::HeaderError => (
                102,
                "HEADER_ERROR",
                "An unknown error occurred reading the header of the SMS",
            ),
            R::ReadError => (
                103,
                "READ_ERROR",
                "An unknown error occurred reading the SMS submission",
            ),
            R::InvalidUser => (201, "INVALID_USER", "User [%s] does not exist"),
            R::InvalidOrgunit => (
                202,
                "INVALID_ORGUNIT",
                "Organisation unit [%s] does not exist",
            ),
            R::InvalidProgram => (203, "INVALID_PROGRAM", "Program [%s] does not exist"),
            R::InvalidTetype => (
                204,
                "INVALID_TETYPE",
                "Tracked Entity Type [%s] does not exist",
            ),
            R::InvalidDataset => (205, "INVALID_DATASET", "DataSet [%s] does not exist"),
            R::InvalidPeriod => (206, "INVALID_PERIOD", "Period [%s] is invalid"),
            R::InvalidAoc => (
                207,
                "INVALID_AOC",
                "Attribute Option Combo [%s] does not exist",
            ),
            R::InvalidTei => (
                208,
                "INVALID_TEI",
                "Tracked Entity Instance [%s] does not exist",
            ),
            R::InvalidStage => (209, "INVALID_STAGE", "Program stage [%s] does not exist"),
            R::InvalidEvent => (210, "INVALID_EVENT", "Event [%s] does not exist"),
            R::InvalidReltype => (
                211,
                "INVALID_RELTYPE",
                "Relationship Type [%s] does not exist",
            ),
            R::InvalidEnroll => (212, "INVALID_ENROLL", "Enrollment [%s] does not exist"),
            R::InvalidAttrib => (213, "INVALID_ATTRIB", "Attribute [%s] does not exist"),
            // "does not not" is DHIS2's own text; phones and tests compare it verbatim.
            R::UserNotinOu => (
                301,
                "USER_NOTIN_OU",
                "User [%s] does not not belong to organisation unit [%s]",
            ),
            R::OuNotinProgram => (
                302,
                "OU_NOTIN_PROGRAM",
                "Organisation unit [%s] is not assigned to program [%s]",
            ),
            R::OuNotinDataset => (
                303,
                "OU_NOTIN_DATASET",
                "Organisation unit [%s] is not assigned to dataSet [%s]",
            ),
            R::EnrollFailed => (
                304,
                "ENROLL_FAILED",
                "Enrollment of TEI [%s] in program [%s] failed",
            ),
            R::DatasetLocked => (
                305,
                "DATASET_LOCKED",
                "Dataset [%s] is locked for period [%s]",
            ),
            R::MultiPrograms => (
                306,
                "MULTI_PROGRAMS",
                "Multiple active program instances exists for program [%s]",
            ),
            R::MultiStages => (
                307,
                "MULTI_STAGES",
                "Multiple program stages found for event capture program [%s]",
            ),
            R::NoEnroll => (
                308,
                "NO_ENROLL",
                "No enrollment was found for tracked entity instance [%s] in program stage [%s]",
            ),
            R::NullAttribval => (309, "NULL_ATTRIBVAL", "Value for attribute [%s] was null"),
            R::EnrollExist => (
                310,
                "ENROLL_EXIST",
                "TEI [%s] already enrolled in program [%s]",
            ),
        }
    }

    pub const fn code(self) -> u16 {
        self.entry().0
    }

    pub const fn name(self) -> &'static str {
        self.entry().1
    }

    /// DHIS2's description with `%s` where the arguments go.
    pub const fn description_template(self) -> &'static str {
        self.entry().2
    }

    pub fn from_code(code: u16) -> Option<ReplyCode> {
        ReplyCode::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// Codes below 100 (success and warnings) mark the inbound SMS processed.
    pub const fn is_processed(self) -> bool {
        self.code() < 100
    }

    pub const fn is_warning(self) -> bool {
        matches!(self.code(), 1..=99)
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The reply SMS: `<submission id>:<code>:<args joined by ,>:<description>`,
/// `-1` as the id when the header could not be read. Arguments fill the
/// description's `%s` in order (missing ones as empty text) and are not
/// escaped, as in DHIS2.
pub fn reply(submission_id: Option<u8>, code: ReplyCode, args: &[&str]) -> String {
    let id = submission_id.map_or_else(|| "-1".to_string(), |id| id.to_string());
    format!("{id}:{}", reply_response(code, args))
}

/// The reply without the leading `<submission id>:`.
pub fn reply_response(code: ReplyCode, args: &[&str]) -> String {
    let mut description = String::new();
    let mut args_left = args.iter();
    let mut pieces = code.description_template().split("%s");
    if let Some(first) = pieces.next() {
        description.push_str(first);
    }
    for piece in pieces {
        description.push_str(args_left.next().copied().unwrap_or(""));
        description.push_str(piece);
    }
    format!("{}:{}:{}", code.code(), args.join(","), description)
}

// ------------------------------------------------------------------------------------------------
// Dates
// ------------------------------------------------------------------------------------------------

/// Seconds since 1970 as `yyyy-MM-ddTHH:mm:ssZ` (proleptic Gregorian, UTC).
pub fn format_utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Days to civil date, counting eras of 400 years from 0000-03-01 so leap
    // days fall at the end of each year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

// ------------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), for the check byte
// ------------------------------------------------------------------------------------------------

/// The check byte is the first byte of a SHA-256 digest.
fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- A10.1: the phone's metadata lists and the instants the vectors use ----

    /// 2019-05-23T16:33:48Z, the lists' download time and every event date.
    const SYNC: i64 = 1_558_629_228;
    const MAY_24: i64 = 1_558_656_000;
    const MAY_20: i64 = 1_558_310_400;

    const USERS: &[&str] = &["GOLswS44mh8", "RU5alwpmcPU", "iMTzunLyexc"];
    const ORG_UNITS: &[&str] = &["DiszpKrYNg8", "ueuQlqb8ccl", "Rp268JB6Ne4", "cDw53Ej8rju"];
    const DATA_SETS: &[&str] = &["Nyh6laLdBEJ", "BfMAe6Itzgt"];
    const COCS: &[&str] = &["HllvX50cXC0", "rQLFnNXXIL0"];
    const DATA_ELEMENTS: &[&str] = &[
        "UsSUX0cpKsH",
        "HS9zqaBdOQ4",
        "noIzB569hTM",
        "vq2qO3eTrNi",
        "YazgqXbizv1",
        "sWoqcoByYmD",
        "Ok9OQpitjQr",
        "vANAXwtLwcT",
        "a3kGcGDCuk6",
        "wQLfBvPrXqq",
        "X8zyunlgUfM",
        "UXz7xuGCEhU",
    ];
    const PROGRAMS: &[&str] = &["lxAQ7Zs9VYR", "IpHINAT79UW"];
    const PROGRAM_STAGES: &[&str] = &["A03MvHHogjR"];
    const TETS: &[&str] = &["nEenWmSyUEp"];
    const TEAS: &[&str] = &[
        "w75KJ2mc4zz",
        "zDhUuAYrxNC",
        "FO4sWYJ64LQ",
        "VqEFza8wbwA",
        "lZGmxYbs97q",
    ];
    const REL_TYPES: &[&str] = &["XdP5nraLPZ0"];

    #[derive(Clone, Copy, PartialEq)]
    enum Lists {
        Small,
        Android,
        None,
    }

    fn phone_list(lists: Lists, kind: MetadataType) -> Option<&'static [&'static str]> {
        use MetadataType as M;
        let small = match kind {
            M::User => USERS,
            M::OrganisationUnit => ORG_UNITS,
            M::Dataset => DATA_SETS,
            M::CategoryOptionCombo => COCS,
            M::DataElement => DATA_ELEMENTS,
            M::Program => PROGRAMS,
            M::ProgramStage => PROGRAM_STAGES,
            M::TrackedEntityType => TETS,
            M::TrackedEntityAttribute => TEAS,
            M::RelationshipType => REL_TYPES,
            _ => return None,
        };
        let android_lacks = matches!(
            kind,
            M::User | M::Dataset | M::ProgramStage | M::RelationshipType
        );
        match lists {
            Lists::Small => Some(small),
            Lists::Android if !android_lacks => Some(small),
            _ => None,
        }
    }

    /// A single id field as the phone writes it (A7.3): hashed when its
    /// list holds the UID, at the length the whole list needs.
    fn id(lists: Lists, kind: MetadataType, uid: &str) -> IdRef {
        match phone_list(lists, kind) {
            Some(list) if list.contains(&uid) => {
                let bits = hash_length(list.iter().copied()).unwrap();
                IdRef::Hash(HashRef {
                    bits,
                    value: uid_hash(uid, bits),
                })
            }
            _ => IdRef::Uid(uid.to_string()),
        }
    }

    /// A list id: hashed whenever the phone has the lists, as text otherwise.
    fn list_id(lists: Lists, kind: MetadataType, uid: &str) -> IdRef {
        if lists == Lists::None {
            IdRef::Uid(uid.to_string())
        } else {
            id(lists, kind, uid)
        }
    }

    fn group(lists: Lists, coc: &str, values: &[(&str, Value)]) -> DataValueGroup {
        DataValueGroup {
            category_option_combo: list_id(lists, MetadataType::CategoryOptionCombo, coc),
            values: values
                .iter()
                .map(|(de, value)| DataValue {
                    data_element: list_id(lists, MetadataType::DataElement, de),
                    value: value.clone(),
                })
                .collect(),
        }
    }

    fn header(lists: Lists, version: u8, submission_id: u8) -> Header {
        Header {
            version,
            last_sync: if lists == Lists::None { 0 } else { SYNC },
            submission_id,
            user: id(lists, MetadataType::User, "GOLswS44mh8"),
        }
    }

    fn uid(text: &str) -> IdRef {
        IdRef::Uid(text.to_string())
    }

    /// Decodes the vector and compares it with every field the reference
    /// states, re-encodes those fields and compares with the vector's text,
    /// and resolves every hash against the SMALL lists (the server's
    /// candidates), which must name exactly one UID.
    fn check_vector(text: &str, byte_len: usize, expected: &Submission) {
        assert_eq!(STANDARD.decode(text).unwrap().len(), byte_len);
        let decoded = decode(text).unwrap();
        assert_eq!(&decoded, expected);
        assert_eq!(
            encode(expected, expected.header().version).unwrap(),
            text,
            "encoding the vector's fields"
        );
        for (kind, id) in decoded.ids() {
            if let IdRef::Hash(hash) = id {
                let list = phone_list(Lists::Small, kind).unwrap();
                assert!(
                    matches!(
                        resolve_hash(*hash, list.iter().copied()),
                        Resolution::Unique(_)
                    ),
                    "{kind} hash {hash:?}"
                );
            }
        }
    }

    fn aggregate_values(lists: Lists) -> Vec<DataValueGroup> {
        vec![group(
            lists,
            "HllvX50cXC0",
            &[
                ("UsSUX0cpKsH", Value::Int(0)),
                ("HS9zqaBdOQ4", Value::Int(-65535)),
                ("noIzB569hTM", Value::Int(12_345_678)),
                ("vq2qO3eTrNi", Value::Float("-24.5".into())),
                ("YazgqXbizv1", Value::Float("0.12345678".into())),
            ],
        )]
    }

    fn aggregate(lists: Lists, version: u8, with_values: bool) -> Submission {
        Submission::AggregateDataset {
            header: header(lists, version, 1),
            body: AggregateDataset {
                org_unit: id(lists, MetadataType::OrganisationUnit, "DiszpKrYNg8"),
                data_set: id(lists, MetadataType::Dataset, "Nyh6laLdBEJ"),
                complete: true,
                attribute_option_combo: id(lists, MetadataType::CategoryOptionCombo, "HllvX50cXC0"),
                period: "2019W16".into(),
                values: if with_values {
                    aggregate_values(lists)
                } else {
                    Vec::new()
                },
            },
        }
    }

    fn simple_event(lists: Lists, version: u8, full: bool) -> Submission {
        let v2 = version == 2;
        Submission::SimpleEvent {
            header: header(lists, version, 7),
            body: SimpleEvent {
                org_unit: id(lists, MetadataType::OrganisationUnit, "DiszpKrYNg8"),
                program: id(lists, MetadataType::Program, "lxAQ7Zs9VYR"),
                status: EventStatus::Completed,
                attribute_option_combo: id(lists, MetadataType::CategoryOptionCombo, "HllvX50cXC0"),
                event: uid("l7M1gUFK37v"),
                event_date: full.then_some(SYNC),
                due_date: (full && v2).then_some(MAY_24),
                geo: (full && v2).then(|| GeoPoint {
                    latitude: "8.484469".into(),
                    longitude: "-13.236433".into(),
                }),
                values: if full {
                    vec![group(
                        lists,
                        "HllvX50cXC0",
                        &[
                            ("sWoqcoByYmD", Value::Bool(true)),
                            ("Ok9OQpitjQr", Value::Bool(false)),
                            ("vANAXwtLwcT", Value::Int(14)),
                        ],
                    )]
                } else {
                    Vec::new()
                },
            },
        }
    }

    fn tracker_event(lists: Lists) -> Submission {
        let body = TrackerEvent {
            org_unit: id(lists, MetadataType::OrganisationUnit, "DiszpKrYNg8"),
            program_stage: id(lists, MetadataType::ProgramStage, "A03MvHHogjR"),
            status: EventStatus::Active,
            attribute_option_combo: id(lists, MetadataType::CategoryOptionCombo, "HllvX50cXC0"),
            enrollment: uid("DacGG5vK1K6"),
            event: uid("r7M1gUFK37v"),
            event_date: Some(SYNC),
            due_date: None,
            geo: None,
            values: vec![group(
                lists,
                "HllvX50cXC0",
                &[
                    ("a3kGcGDCuk6", Value::Int(10)),
                    ("wQLfBvPrXqq", Value::Text("Others".into())),
                    ("X8zyunlgUfM", Value::Text("Exclusive".into())),
                ],
            )],
        };
        Submission::Unsupported {
            kind: SubmissionType::TrackerEvent,
            submission_id: 200,
            header: header(lists, 2, 200),
            body: UnsupportedBody::TrackerEvent(body),
        }
    }

    fn enrollment(lists: Lists, version: u8, with_events: bool) -> Submission {
        let v2 = version == 2;
        let attribute = |uid: &str, value: Value| AttributeValue {
            attribute: list_id(lists, MetadataType::TrackedEntityAttribute, uid),
            value,
        };
        let events = if with_events {
            vec![EnrollmentEvent {
                org_unit: id(lists, MetadataType::OrganisationUnit, "DiszpKrYNg8"),
                program_stage: id(lists, MetadataType::ProgramStage, "A03MvHHogjR"),
                status: EventStatus::Completed,
                attribute_option_combo: id(lists, MetadataType::CategoryOptionCombo, "HllvX50cXC0"),
                event: uid("r7M1gUFK3X1"),
                event_date: Some(SYNC),
                due_date: None,
                geo: None,
                values: vec![group(
                    lists,
                    "HllvX50cXC0",
                    &[("UXz7xuGCEhU", Value::Int(2))],
                )],
            }]
        } else {
            Vec::new()
        };
        let body = Enrollment {
            org_unit: id(lists, MetadataType::OrganisationUnit, "DiszpKrYNg8"),
            program: id(lists, MetadataType::Program, "IpHINAT79UW"),
            tracked_entity_type: id(lists, MetadataType::TrackedEntityType, "nEenWmSyUEp"),
            tracked_entity_instance: uid("T2bRuLEGoVN"),
            enrollment: uid("p7M1gUFK37W"),
            enrollment_date: Some(SYNC),
            status: v2.then_some(EnrollmentStatus::Active),
            incident_date: v2.then_some(MAY_20),
            geo: v2.then(|| GeoPoint {
                latitude: "8.484469".into(),
                longitude: "-13.236433".into(),
            }),
            attributes: vec![
                attribute("w75KJ2mc4zz", Value::Text("Harold".into())),
                attribute("zDhUuAYrxNC", Value::Text("Smith".into())),
                attribute("lZGmxYbs97q", Value::Int(987_123)),
            ],
            events,
        };
        Submission::Unsupported {
            kind: SubmissionType::Enrollment,
            submission_id: 42,
            header: header(lists, version, 42),
            body: UnsupportedBody::Enrollment(body),
        }
    }

    fn delete(lists: Lists, version: u8) -> Submission {
        Submission::Unsupported {
            kind: SubmissionType::Delete,
            submission_id: 254,
            header: header(lists, version, 254),
            body: UnsupportedBody::Delete {
                event: uid("Jpr20TLJ7Z1"),
            },
        }
    }

    const A: &str = "fQIAAAAAASDCu3TggmFZA2zb3NTWJeogv5WNfIrOWcnI338wigTQmAGRgYnKuYmwBekNjY7LBqYMawhmAAquamqrBgxuCW5pAAAAAKQpnL04sKEyJ6iaAAv//tzekvSEamxy0KiaABYvGFOuziZOKeZsqo5JzSAEtMjQuNQCssL0zuKwxNL07GIATAuMTIzNDU2NzgAA";
    const B: &str =
        "iAJc5stsAYVD8LwkyMDE5VzE2AMIv1XYAAAhMF//+E4WLxhTsICWmRoXGoBGcTAuMTIzNDU2NzgAAA==";
    const C: &str =
        "hgFc5stsAYVD8LwkyMDE5VzE2AIRfquwAABCYL//8JwsXjCnYQEtMjQuNQCM4mBcYmRmaGpsbnAAAA==";
    const D: &str = "lgJc5stsAYVD8LwkyMDE5VzE2AA=";
    const E: &str =
        "fkJc5stsB4VD8KMJXjrA1PHqBj81zmy2yuc5oATguNDg0NDY5AC0xMy4yMzY0MzMAwizRzvRi1WYOA==";
    const F: &str = "N0IAAAAAByDCu3TggmFZA2zb3NTWJeohf2U0PHsS/E2SN9/MIoE0JgC8dYGp49QMfkA=";
    const G: &str = "1kFc5stsB4VD8KMJXjrA1PHqBj8rnNltkIs0c70YtVmDgA==";
    const H: &str =
        "/FJc5stsyIVD8GISNkmQQF5UBUGajrA1PHqBj81zmy2wwizdYgqs6J7o0Mrk5gHNMRXhjbHVzaXZlAA=";
    const I: &str = "/iJc5stsKoVD8JgjoUrfCpyGT67MdYGp49QMeCuc2W2Fc4e4AnBcaHBoaGxyAFpiZlxkZmxoZmYBhgIkMLk3tjIATFNtaXRoANCp4f5sPwZhLUdYGp49QOEGuc2W2GEWKCcEAA==";
    const J: &str = "jiIAAAAAKiDCu3TggmFZA2zb3NTWJeoglmikuU6OS9AxOoxgwc8eOzOhSt8KnIZPrsx1ganj1Ax4K5zZbYVzh7gCcFxocGhobHIAWmJmXGRmbGhmZgEDubmqWlGTaxmj09AESGFyb2xkAL0iNCq6oKy5PCchgEU21pdGgAti0jtrwssTmcm7iABU8P8w";
    const K: &str = "jSFc5stsKoVD8JgjoUrfCpyGT67MdYGp49QMeBc5stshgIkMLk3tjIATFNtaXRoANCp4f5g=";
    const L: &str = "qTJc5stsA4VBOKQ9udcM/WLdOQLREy4WoQFXDrfCMSg7og==";
    const M: &str = "txJc5sts/oUTz1CAdVTHjBA=";
    const N: &str = "JhEAAAAA/iDCu3TggmFZBPPUIB1VMeME";
    const Q: &str = "PwJc5stsASDCu3TggmFZEPl/Kxr5FZyzk8JMjAxOVcxNgDCL9V2AAAITBf//hOFi8YU7CAlpkaFxqARnEwLjEyMzQ1Njc4AA";
    const R: &str = "y1Jc5stsyCDCu3TggmFZEPigA1uUUcqrWxCRskyCAvKgKgzUdYGp49QMfmuc2W2GEWbrEFVnRPdGhlcnMA5piK8MbY6ubS7MoAA=";
    const ALL_VECTORS: &[&str] = &[A, B, C, D, E, F, G, H, I, J, K, L, M, N, Q, R];

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The dates the vectors state, so the constants above are not taken on trust.
    #[test]
    fn vector_instants() {
        assert_eq!(format_utc(SYNC), "2019-05-23T16:33:48Z");
        assert_eq!(format_utc(MAY_24), "2019-05-24T00:00:00Z");
        assert_eq!(format_utc(MAY_20), "2019-05-20T00:00:00Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    }

    // ---- A10.2: one test per vector ----

    #[test]
    fn vector_a_aggregate_v2_no_lists() {
        let expected = aggregate(Lists::None, 2, true);
        check_vector(A, 150, &expected);
        let Submission::AggregateDataset { header, body } = decode(A).unwrap() else {
            panic!("not aggregate")
        };
        assert_eq!(header.last_sync, 0);
        assert_eq!(header.user, uid("GOLswS44mh8"));
        assert_eq!(body.period, "2019W16");
        // F = 16 (largest narrow magnitude 65535); 12345678 goes wide in 24 bits.
        assert_eq!(
            fixed_width(iter_data_values(&body.values).map(|(_, dv)| &dv.value)),
            16
        );
        assert_eq!(bit_length(12_345_678), 24);
    }

    #[test]
    fn vector_b_aggregate_v2_small() {
        check_vector(B, 58, &aggregate(Lists::Small, 2, true));
        assert_eq!(
            hex(&STANDARD.decode(B).unwrap()),
            "88025ce6cb6c018543f0bc24c8c0c4e55cc4d80308bf55d8000021305ffff84e162f1853b08096991a171a804671302e31323334353637380000"
        );
        // A10.4's walk: the first data element hash is 699 at k = 11.
        let Submission::AggregateDataset { body, .. } = decode(B).unwrap() else {
            panic!("not aggregate")
        };
        assert_eq!(
            body.values[0].values[0].data_element,
            IdRef::Hash(HashRef {
                bits: 11,
                value: 699
            })
        );
        assert_eq!(body.org_unit, IdRef::Hash(HashRef { bits: 3, value: 7 }));
    }

    #[test]
    fn vector_c_aggregate_v1_small() {
        check_vector(C, 58, &aggregate(Lists::Small, 1, true));
    }

    #[test]
    fn vector_d_aggregate_v2_small_no_values() {
        check_vector(D, 20, &aggregate(Lists::Small, 2, false));
    }

    #[test]
    fn vector_e_simple_event_v2_small() {
        check_vector(E, 58, &simple_event(Lists::Small, 2, true));
    }

    #[test]
    fn vector_f_simple_event_v2_no_lists_nothing_optional() {
        check_vector(F, 50, &simple_event(Lists::None, 2, false));
    }

    #[test]
    fn vector_g_simple_event_v1_small() {
        check_vector(G, 34, &simple_event(Lists::Small, 1, true));
    }

    #[test]
    fn vector_h_tracker_event_v2_small() {
        check_vector(H, 59, &tracker_event(Lists::Small));
    }

    #[test]
    fn vector_i_enrollment_v2_small_with_event() {
        check_vector(I, 100, &enrollment(Lists::Small, 2, true));
    }

    #[test]
    fn vector_j_enrollment_v2_no_lists_no_events() {
        check_vector(J, 141, &enrollment(Lists::None, 2, false));
    }

    #[test]
    fn vector_k_enrollment_v1_small() {
        check_vector(K, 53, &enrollment(Lists::Small, 1, false));
    }

    #[test]
    fn vector_l_relationship_v2_small() {
        let expected = Submission::Unsupported {
            kind: SubmissionType::Relationship,
            submission_id: 3,
            header: header(Lists::Small, 2, 3),
            body: UnsupportedBody::Relationship(Relationship {
                relationship_type: id(Lists::Small, MetadataType::RelationshipType, "XdP5nraLPZ0"),
                relationship: uid("uf3svrmpzOj"),
                from: "qv0j4JBXQX0".into(),
                to: "LSEjy8nA3kY".into(),
            }),
        };
        check_vector(L, 34, &expected);
        let Submission::Unsupported {
            body: UnsupportedBody::Relationship(r),
            ..
        } = decode(L).unwrap()
        else {
            panic!("not a relationship")
        };
        assert!(matches!(
            r.relationship_type,
            IdRef::Hash(HashRef { bits: 1, .. })
        ));
    }

    #[test]
    fn vector_m_delete_v2_small() {
        check_vector(M, 17, &delete(Lists::Small, 2));
        assert_eq!(
            hex(&STANDARD.decode(M).unwrap()),
            "b7125ce6cb6cfe8513cf50807554c78c10"
        );
        // The bit walk: user hashed at k = 2 with value 2.
        assert_eq!(
            decode(M).unwrap().header().user,
            IdRef::Hash(HashRef { bits: 2, value: 2 })
        );
    }

    #[test]
    fn vector_n_delete_v1_no_lists() {
        check_vector(N, 24, &delete(Lists::None, 1));
    }

    #[test]
    fn vector_q_aggregate_v2_android() {
        let expected = aggregate(Lists::Android, 2, true);
        check_vector(Q, 72, &expected);
        let Submission::AggregateDataset { header, body } = &expected else {
            unreachable!()
        };
        assert_eq!(header.user, uid("GOLswS44mh8"));
        assert_eq!(body.data_set, uid("Nyh6laLdBEJ"));
        assert!(matches!(body.org_unit, IdRef::Hash(_)));
    }

    #[test]
    fn vector_r_tracker_event_v2_android() {
        let expected = tracker_event(Lists::Android);
        check_vector(R, 74, &expected);
        let Submission::Unsupported {
            header,
            body: UnsupportedBody::TrackerEvent(e),
            ..
        } = &expected
        else {
            unreachable!()
        };
        assert_eq!(header.user, uid("GOLswS44mh8"));
        assert_eq!(e.program_stage, uid("A03MvHHogjR"));
    }

    // ---- A10.3: what a decoder must reject ----

    fn shorten_until_base64(mut text: &str) -> &str {
        while !text.is_empty() && base64_bytes(text).is_err() {
            text = &text[..text.len() - 1];
        }
        text
    }

    #[test]
    fn cut_vectors_fail_the_check_byte() {
        for vector in ALL_VECTORS {
            for cut in [&vector[1..], &vector[..vector.len() - 4]] {
                let text = shorten_until_base64(cut);
                assert!(
                    matches!(decode(text), Err(SmsError::CheckByteMismatch { .. })),
                    "{text}: {:?}",
                    decode(text)
                );
            }
        }
    }

    #[test]
    fn padding_is_optional() {
        for vector in ALL_VECTORS {
            let bare = vector.trim_end_matches('=');
            assert_eq!(decode(bare), decode(vector));
            assert!(decode(bare).is_ok());
        }
    }

    fn bytes(text: &str) -> Vec<u8> {
        STANDARD.decode(text).unwrap()
    }

    /// Recomputes the check byte so a test reaches the part it breaks.
    fn seal(mut bytes: Vec<u8>) -> String {
        bytes[0] = sha256(&bytes[1..])[0];
        STANDARD.encode(bytes)
    }

    /// A hand-made stream: the header (type, version 2, date 0, id 9, user
    /// hashed at k = 1) and whatever `body` writes.
    fn stream(kind: u8, body: impl FnOnce(&mut BitWriter)) -> String {
        let mut w = BitWriter::new(2);
        w.put(u64::from(kind), 4);
        w.put(2, 4);
        w.put(0, 32);
        w.put(9, 8);
        w.put(1, 1);
        w.put(1, 6);
        w.put(0, 1);
        body(&mut w);
        STANDARD.encode(w.finish())
    }

    fn hashed_id(w: &mut BitWriter) {
        w.put(1, 1);
        w.put(1, 6);
        w.put(1, 1);
    }

    #[test]
    fn rejects_bad_versions() {
        for version in [0u8, 3, 4, 15] {
            let mut b = bytes(M);
            b[1] = (b[1] & 0xf0) | version;
            assert_eq!(decode(&seal(b)), Err(SmsError::UnsupportedVersion(version)));
        }
    }

    #[test]
    fn rejects_bad_types() {
        for kind in 6u8..=15 {
            let mut b = bytes(M);
            b[1] = (b[1] & 0x0f) | (kind << 4);
            assert_eq!(decode(&seal(b)), Err(SmsError::UnknownSubmissionType(kind)));
        }
    }

    #[test]
    fn rejects_bad_value_types() {
        for code in 5u8..=7 {
            let text = stream(0, |w| {
                hashed_id(w); // org unit
                hashed_id(w); // data set
                w.flag(true);
                hashed_id(w); // attribute option combo
                w.put(0, 8); // empty period
                w.flag(true); // values present
                              // hashed, kC = kD = 1, F = 1
                w.put(1, 1);
                w.put(1, 6);
                w.put(1, 6);
                w.put(0, 4);
                w.put(0, 2); // COC hash, DE hash
                w.put(u64::from(code), 3);
                w.put(0, 16);
            });
            assert!(matches!(
                decode(&text),
                Err(SmsError::UnknownValueType { code: c, .. }) if c == code
            ));
        }
    }

    #[test]
    fn rejects_bad_event_statuses() {
        for code in [6u8, 7] {
            let text = stream(4, |w| {
                hashed_id(w);
                hashed_id(w);
                w.put(u64::from(code), 3);
                w.put(0, 64);
            });
            let bit = 56 + 8 + 16;
            assert_eq!(
                decode(&text),
                Err(SmsError::UnknownEventStatus { bit, code })
            );
        }
    }

    #[test]
    fn rejects_enrollment_status_3() {
        let text = stream(2, |w| {
            for _ in 0..5 {
                hashed_id(w);
            }
            w.flag(false); // no enrollment date
            w.put(3, 2);
            w.put(0, 32);
        });
        assert!(matches!(
            decode(&text),
            Err(SmsError::UnknownEnrollmentStatus { code: 3, .. })
        ));
    }

    #[test]
    fn rejects_uid_codes_62_and_63() {
        for code in [62u8, 63] {
            // A delete whose event UID starts with the bad code.
            let text = stream(1, |w| {
                w.flag(false);
                w.put(u64::from(code), 6);
                w.put(0, 60);
            });
            assert_eq!(
                decode(&text),
                Err(SmsError::InvalidUidCode {
                    bit: 65,
                    field: "event",
                    code
                })
            );
        }
        assert_eq!(uid_char(61), Some('z'));
        assert_eq!(uid_char(62), None);
    }

    #[test]
    fn every_truncation_runs_out_of_bits() {
        for vector in ALL_VECTORS {
            let full = bytes(vector);
            for len in 1..full.len() {
                let text = seal(full[..len].to_vec());
                assert!(
                    matches!(decode(&text), Err(SmsError::Truncated { .. })),
                    "{vector} cut to {len} bytes: {:?}",
                    decode(&text)
                );
            }
        }
    }

    #[test]
    fn short_texts_fail_in_the_header() {
        let error = decode(&seal(bytes(M)[..5].to_vec())).unwrap_err();
        assert!(matches!(
            error,
            SmsError::Truncated {
                bit: 16,
                field: "last sync date",
                needed: 32,
                available: 24
            }
        ));
        assert_eq!(error.reply_code(), ReplyCode::HeaderError);
        assert_eq!(
            error.to_string(),
            "truncated at bit 16 while reading last sync date: 32 bits needed, 24 left"
        );
        // The fixed header alone, without the user field.
        let error = decode(&seal(bytes(M)[..7].to_vec())).unwrap_err();
        assert!(matches!(
            error,
            SmsError::Truncated {
                bit: 56,
                field: "user",
                ..
            }
        ));
        assert_eq!(error.reply_code(), ReplyCode::HeaderError);
    }

    #[test]
    fn flipped_check_byte() {
        let mut b = bytes(M);
        b[0] ^= 0x01;
        assert_eq!(
            decode(&STANDARD.encode(&b)),
            Err(SmsError::CheckByteMismatch {
                expected: 0xb7,
                found: 0xb6
            })
        );
        // A flipped content bit fails the same way.
        let mut b = bytes(B);
        b[20] ^= 0x10;
        assert!(matches!(
            decode(&STANDARD.encode(&b)),
            Err(SmsError::CheckByteMismatch { .. })
        ));
    }

    #[test]
    fn leftover_bits_must_be_zero_padding() {
        let mut b = bytes(M);
        b.push(0);
        assert_eq!(
            decode(&seal(b)),
            Err(SmsError::TrailingData { bit: 132, bits: 12 })
        );
        let mut b = bytes(M);
        *b.last_mut().unwrap() |= 0x01;
        assert_eq!(decode(&seal(b)), Err(SmsError::NonZeroPadding { bit: 132 }));
    }

    #[test]
    fn garbage_and_empty() {
        assert_eq!(decode(""), Err(SmsError::Empty));
        assert_eq!(
            decode("hello world"),
            Err(SmsError::InvalidBase64Character {
                position: 5,
                character: ' '
            })
        );
        assert_eq!(
            decode("anc a=1|b=2"),
            Err(SmsError::InvalidBase64Character {
                position: 3,
                character: ' '
            })
        );
        assert_eq!(
            decode("é"),
            Err(SmsError::InvalidBase64Character {
                position: 0,
                character: 'é'
            })
        );
        assert_eq!(
            decode("AAAAA"),
            Err(SmsError::InvalidBase64Length { length: 5 })
        );
        assert!(matches!(
            decode("AA="),
            Err(SmsError::InvalidBase64Padding { .. })
        ));
        assert!(matches!(
            decode("===="),
            Err(SmsError::InvalidBase64Padding { .. })
        ));
        assert_eq!(
            decode("A=AA"),
            Err(SmsError::InvalidBase64Padding { position: 1 })
        );
        // Plain words that happen to be Base64 fail later, as in DHIS2.
        for word in ["help", "text", "report"] {
            assert!(is_compressed(word));
            assert!(decode(word).is_err());
        }
        assert!(!is_compressed(""));
        assert!(!is_compressed("anc a=1"));
        assert!(is_compressed(B) && is_compressed(N));
    }

    #[test]
    fn form_decoded_plus_is_explained() {
        assert!(B.contains('+'));
        let error = decode(&B.replace('+', " ")).unwrap_err();
        assert!(
            error.to_string().contains("turns `+` into a space"),
            "{error}"
        );
    }

    #[test]
    fn error_reply_codes_and_ids() {
        assert_eq!(SmsError::Empty.reply_code(), ReplyCode::HeaderError);
        let body_error = decode(&seal(bytes(B)[..30].to_vec())).unwrap_err();
        assert_eq!(body_error.reply_code(), ReplyCode::ReadError);
        assert_eq!(peek_submission_id(&seal(bytes(B)[..30].to_vec())), Some(1));
        assert_eq!(peek_submission_id(M), Some(254));
        assert_eq!(peek_submission_id("help"), None);
        assert_eq!(peek_submission_id(&seal(bytes(M)[..6].to_vec())), None);
        assert_eq!(
            reply(
                peek_submission_id("help"),
                SmsError::Empty.reply_code(),
                &[]
            ),
            "-1:102::An unknown error occurred reading the header of the SMS"
        );
    }

    // ---- A7: hashing ----

    #[test]
    fn hash_spot_values() {
        let table: &[(&str, i32, [u64; 8])] = &[
            (
                "GOLswS44mh8",
                -2_077_397_294,
                [0, 2, 6, 14, 46, 46, 302, 37166],
            ),
            (
                "DiszpKrYNg8",
                -2_045_664_847,
                [1, 3, 7, 15, 15, 79, 3663, 24143],
            ),
            (
                "HllvX50cXC0",
                -362_842_777,
                [1, 1, 1, 9, 25, 153, 2713, 35481],
            ),
            (
                "rQLFnNXXIL0",
                1_241_531_604,
                [0, 0, 4, 4, 20, 212, 1236, 17620],
            ),
            (
                "UsSUX0cpKsH",
                1_133_851_323,
                [1, 3, 3, 11, 59, 187, 699, 12987],
            ),
            (
                "Nyh6laLdBEJ",
                -189_398_687,
                [1, 3, 7, 15, 31, 159, 3743, 65183],
            ),
        ];
        for (uid, hash_code, hashes) in table {
            assert_eq!(java_hash_code(uid), *hash_code, "{uid}");
            for (bits, expected) in [1u8, 2, 3, 4, 6, 8, 12, 16].iter().zip(hashes) {
                assert_eq!(uid_hash(uid, *bits), *expected, "{uid} at {bits}");
            }
        }
    }

    #[test]
    fn hash_edge_cases() {
        // |−2^31| needs 64-bit arithmetic. "polygenelubricants" is a
        // well-known Java string whose hashCode is Integer.MIN_VALUE.
        assert_eq!(java_hash_code("polygenelubricants"), i32::MIN);
        assert_eq!(uid_hash("polygenelubricants", 32), 1 << 31);
        assert_eq!(uid_hash("polygenelubricants", 30), 0);
        assert_eq!(uid_hash("GOLswS44mh8", 0), 0);
        assert_eq!(uid_hash("GOLswS44mh8", 63), 2_077_397_294);
        assert_eq!(uid_hash("GOLswS44mh8", 255), 2_077_397_294);
        assert_eq!(java_hash_code(""), 0);
    }

    #[test]
    fn hash_lengths_of_the_vector_lists() {
        let expected: &[(&[&str], u8)] = &[
            (USERS, 2),
            (ORG_UNITS, 3),
            (DATA_SETS, 2),
            (COCS, 2),
            (DATA_ELEMENTS, 11),
            (PROGRAMS, 2),
            (PROGRAM_STAGES, 1),
            (TETS, 1),
            (TEAS, 3),
            (REL_TYPES, 1),
        ];
        for (list, bits) in expected {
            assert_eq!(hash_length(list.iter().copied()), Ok(*bits), "{list:?}");
        }
        assert_eq!(hash_length([]), Ok(1));
        assert_eq!(
            hash_length(["GOLswS44mh8", "GOLswS44mh8"]),
            Err(SmsError::DuplicateUid("GOLswS44mh8".into()))
        );
        assert_eq!(
            hash_length(["1OLswS44mh8"]),
            Err(SmsError::MalformedUid("1OLswS44mh8".into()))
        );
    }

    #[test]
    fn resolution() {
        let k11 = |uid| HashRef {
            bits: 11,
            value: uid_hash(uid, 11),
        };
        assert_eq!(
            resolve_hash(k11("UsSUX0cpKsH"), DATA_ELEMENTS.iter().copied()),
            Resolution::Unique("UsSUX0cpKsH")
        );
        assert_eq!(
            resolve_hash(
                HashRef {
                    bits: 11,
                    value: 2047
                },
                DATA_ELEMENTS.iter().copied()
            ),
            Resolution::None
        );
        // At k = 1, GOLswS44mh8 and rQLFnNXXIL0 both hash to 0: a server
        // whose candidates exceed the phone's list sees the clash.
        let zero = HashRef { bits: 1, value: 0 };
        assert_eq!(
            resolve_hash(zero, ["GOLswS44mh8", "DiszpKrYNg8", "rQLFnNXXIL0"]),
            Resolution::Ambiguous(vec!["GOLswS44mh8", "rQLFnNXXIL0"])
        );
        assert_eq!(
            resolve_hash(zero, ["GOLswS44mh8", "GOLswS44mh8"]),
            Resolution::Unique("GOLswS44mh8")
        );
        assert_eq!(resolve_hash(zero, []), Resolution::None);
    }

    #[test]
    fn unresolved_hash_placeholders() {
        assert_eq!(hash_placeholder(MetadataType::OrganisationUnit, 7), "#IHw=");
        assert_eq!(hash_placeholder(MetadataType::DataElement, 699), "#KVXY");
        assert_eq!(hash_placeholder(MetadataType::User, 0), "#ACA=");
        let hashed = IdRef::Hash(HashRef {
            bits: 11,
            value: 699,
        });
        assert_eq!(hashed.reply_arg(MetadataType::DataElement), "#KVXY");
        assert_eq!(
            uid("DiszpKrYNg8").reply_arg(MetadataType::OrganisationUnit),
            "DiszpKrYNg8"
        );
    }

    // ---- A11: replies ----

    #[test]
    fn reply_examples() {
        assert_eq!(
            reply(Some(1), ReplyCode::Success, &[]),
            "1:0::Submission has been processed successfully"
        );
        assert_eq!(
            reply(Some(1), ReplyCode::WarnDvempty, &[]),
            "1:2::The submission did not include any data values"
        );
        assert_eq!(
            reply(Some(1), ReplyCode::WarnAvempty, &[]),
            "1:3::The submission did not include any attribute values"
        );
        assert_eq!(
            reply(None, ReplyCode::HeaderError, &[]),
            "-1:102::An unknown error occurred reading the header of the SMS"
        );
        assert_eq!(
            reply(Some(5), ReplyCode::OuNotinDataset, &["DiszpKrYNg8", "Nyh6laLdBEJ"]),
            "5:303:DiszpKrYNg8,Nyh6laLdBEJ:Organisation unit [DiszpKrYNg8] is not assigned to dataSet [Nyh6laLdBEJ]"
        );
        assert_eq!(
            reply(
                Some(12),
                ReplyCode::WarnDverr,
                &["UsSUX0cpKsH-HllvX50cXC0", "HS9zqaBdOQ4-HllvX50cXC0"]
            ),
            "12:1:UsSUX0cpKsH-HllvX50cXC0,HS9zqaBdOQ4-HllvX50cXC0:There was an error with some of the data values in the submission"
        );
        assert_eq!(
            reply(Some(12), ReplyCode::InvalidPeriod, &["2019W99"]),
            "12:206:2019W99:Period [2019W99] is invalid"
        );
        assert_eq!(
            reply_response(ReplyCode::OuNotinProgram, &["ooooooooooo", "ppppppppppp"]),
            "302:ooooooooooo,ppppppppppp:Organisation unit [ooooooooooo] is not assigned to program [ppppppppppp]"
        );
        // Missing arguments leave their slots empty instead of failing.
        assert_eq!(
            reply(Some(0), ReplyCode::DatasetLocked, &["x"]),
            "0:305:x:Dataset [x] is locked for period []"
        );
        assert_eq!(
            reply(Some(9), ReplyCode::NOT_SUPPORTED, &[]),
            "9:101::An unknown error occurred"
        );
    }

    #[test]
    fn reply_code_table() {
        let codes: Vec<u16> = ReplyCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            codes,
            [
                0, 1, 2, 3, 101, 102, 103, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211,
                212, 213, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310
            ]
        );
        for code in ReplyCode::ALL {
            assert_eq!(ReplyCode::from_code(code.code()), Some(*code));
        }
        assert_eq!(ReplyCode::from_code(104), None);
        assert_eq!(ReplyCode::UserNotinOu.name(), "USER_NOTIN_OU");
        assert!(ReplyCode::WarnDverr.is_processed() && ReplyCode::WarnDverr.is_warning());
        assert!(ReplyCode::Success.is_processed() && !ReplyCode::Success.is_warning());
        assert!(!ReplyCode::InvalidPeriod.is_processed());
    }

    // ---- Enumerations, helpers ----

    #[test]
    fn enumeration_codes() {
        for (list, len) in [
            (
                SubmissionType::ALL
                    .iter()
                    .map(|t| t.code())
                    .collect::<Vec<_>>(),
                6,
            ),
            (MetadataType::ALL.iter().map(|t| t.code()).collect(), 14),
            (EventStatus::ALL.iter().map(|t| t.code()).collect(), 6),
            (EnrollmentStatus::ALL.iter().map(|t| t.code()).collect(), 3),
        ] {
            assert_eq!(list, (0..len).collect::<Vec<u8>>());
        }
        assert_eq!(MetadataType::Dataset.name(), "DATASET");
        assert_eq!(SubmissionType::from_code(6), None);
        assert_eq!(EventStatus::from_code(5), Some(EventStatus::Skipped));
        assert_eq!(EnrollmentStatus::from_code(3), None);
    }

    #[test]
    fn stored_text() {
        assert_eq!(Value::Date(SYNC).stored_text(), "2019-05-23T16:33:48Z");
        assert_eq!(Value::Int(-7).stored_text(), "-7");
        assert_eq!(Value::Bool(false).stored_text(), "false");
        assert_eq!(Value::Float("1.0E-5".into()).stored_text(), "1.0E-5");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(i64::from(i32::MAX)), "2038-01-19T03:14:07Z");
        let geo = GeoPoint {
            latitude: "8.484469".into(),
            longitude: "-13.236433".into(),
        };
        assert_eq!(geo.coordinates(), Some((-13.236433, 8.484469)));
    }

    #[test]
    fn sha256_known_answers() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(&sha256(&[b'a'; 1000])),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
    }

    #[test]
    fn ids_lists_every_reference() {
        let ids = decode(I).unwrap();
        let kinds: Vec<MetadataType> = ids.ids().into_iter().map(|(kind, _)| kind).collect();
        use MetadataType as Mt;
        assert_eq!(
            kinds,
            [
                Mt::User,
                Mt::OrganisationUnit,
                Mt::Program,
                Mt::TrackedEntityType,
                Mt::TrackedEntityInstance,
                Mt::Enrollment,
                Mt::TrackedEntityAttribute,
                Mt::TrackedEntityAttribute,
                Mt::TrackedEntityAttribute,
                Mt::OrganisationUnit,
                Mt::ProgramStage,
                Mt::CategoryOptionCombo,
                Mt::Event,
                Mt::CategoryOptionCombo,
                Mt::DataElement,
            ]
        );
    }

    // ---- Encoding refusals ----

    fn with_event(change: impl FnOnce(&mut SimpleEvent)) -> Submission {
        let mut submission = simple_event(Lists::Small, 2, true);
        if let Submission::SimpleEvent { body, .. } = &mut submission {
            change(body);
        }
        submission
    }

    #[test]
    fn encode_refuses_what_the_wire_cannot_carry() {
        let v1 = |what| Err(SmsError::NotRepresentable { version: 1, what });
        assert_eq!(
            encode(&simple_event(Lists::Small, 2, true), 1),
            v1("a due date")
        );
        assert_eq!(
            encode(&with_event(|e| e.due_date = None), 1),
            v1("a geo point")
        );
        assert_eq!(
            encode(&simple_event(Lists::Small, 2, false), 1),
            v1("an event without a date")
        );
        assert_eq!(
            encode(&aggregate(Lists::Small, 2, false), 1),
            v1("an empty data value list")
        );
        assert_eq!(
            encode(&enrollment(Lists::Small, 2, true), 1),
            v1("an enrollment status")
        );
        assert_eq!(
            encode(&delete(Lists::Small, 2), 3),
            Err(SmsError::UnsupportedVersion(3))
        );
        assert_eq!(
            encode(&with_event(|e| e.event = uid("short")), 2),
            Err(SmsError::InvalidUid {
                field: "event",
                uid: "short".into()
            })
        );
        assert_eq!(
            encode(&with_event(|e| e.event_date = Some(1 << 40)), 2),
            Err(SmsError::InvalidDate {
                field: "event date",
                seconds: 1 << 40
            })
        );
        assert_eq!(
            encode(
                &with_event(|e| e.geo = Some(GeoPoint {
                    latitude: "8°".into(),
                    longitude: "€".into()
                })),
                2
            ),
            Err(SmsError::InvalidText {
                field: "longitude",
                character: '€'
            })
        );
        assert_eq!(
            encode(
                &with_event(|e| e.values[0].values[0].value = Value::Int(i64::MIN)),
                2
            ),
            Err(SmsError::IntegerOutOfRange(i64::MIN))
        );
        assert_eq!(
            encode(
                &with_event(|e| e.values[0].values[0].data_element = uid("sWoqcoByYmD")),
                2
            ),
            Err(SmsError::MixedIdList {
                field: "data value list"
            })
        );
        assert_eq!(
            encode(&with_event(|e| e.values[0].values.clear()), 2),
            Err(SmsError::EmptyGroup {
                field: "data value list"
            })
        );
        assert_eq!(
            encode(
                &with_event(|e| e.program = IdRef::Hash(HashRef { bits: 2, value: 4 })),
                2
            ),
            Err(SmsError::InvalidHash {
                field: "program",
                bits: 2,
                value: 4
            })
        );
        let mut inconsistent = delete(Lists::Small, 2);
        if let Submission::Unsupported { submission_id, .. } = &mut inconsistent {
            *submission_id = 1;
        }
        assert!(matches!(
            encode(&inconsistent, 2),
            Err(SmsError::Inconsistent(_))
        ));
    }

    /// Re-encoding in the other version works when the content fits both.
    #[test]
    fn encode_between_versions() {
        let v1 = encode(&aggregate(Lists::Small, 2, true), 1).unwrap();
        assert_eq!(v1, C);
        let v2 = encode(&aggregate(Lists::Small, 1, true), 2).unwrap();
        assert_eq!(v2, B);
    }

    /// Groups are kept as the wire has them, repeated combos included.
    #[test]
    fn groups_round_trip_in_order() {
        let submission = with_event(|e| {
            let first = e.values[0].clone();
            let mut other = first.clone();
            other.category_option_combo = IdRef::Hash(HashRef { bits: 2, value: 3 });
            e.values = vec![first.clone(), other, first];
        });
        let text = encode(&submission, 2).unwrap();
        assert_eq!(decode(&text).unwrap(), submission);
    }

    // ---- Properties ----

    fn latin1() -> impl Strategy<Value = String> {
        prop::collection::vec(1u8..=255, 0..12)
            .prop_map(|codes| codes.into_iter().map(char::from).collect())
    }

    fn hash_ref() -> impl Strategy<Value = HashRef> {
        (0u8..=63).prop_flat_map(|bits| {
            (0..=low_mask(bits)).prop_map(move |value| HashRef { bits, value })
        })
    }

    fn full_uid() -> impl Strategy<Value = String> {
        "[0-9A-Za-z]{11}"
    }

    fn id_ref() -> impl Strategy<Value = IdRef> {
        prop_oneof![
            full_uid().prop_map(IdRef::Uid),
            hash_ref().prop_map(IdRef::Hash)
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            (i64::MIN + 1..=i64::MAX).prop_map(Value::Int),
            (-70_000i64..70_000).prop_map(Value::Int),
            latin1().prop_map(Value::Float),
            any::<i32>().prop_map(|d| Value::Date(d.into())),
            any::<bool>().prop_map(Value::Bool),
            latin1().prop_map(Value::Text),
        ]
    }

    fn date() -> impl Strategy<Value = i64> {
        any::<i32>().prop_map(i64::from)
    }

    fn geo() -> impl Strategy<Value = Option<GeoPoint>> {
        prop::option::of(
            (latin1(), latin1()).prop_map(|(latitude, longitude)| GeoPoint {
                latitude,
                longitude,
            }),
        )
    }

    /// A value list as some phone could send it: ids all text, or all hashed
    /// with one length per id kind; combos drawn from a small pool so groups
    /// repeat.
    fn groups(min: usize) -> impl Strategy<Value = Vec<DataValueGroup>> {
        let build = |groups: Vec<(IdRef, Vec<(IdRef, Value)>)>| -> Vec<DataValueGroup> {
            groups
                .into_iter()
                .map(|(coc, values)| DataValueGroup {
                    category_option_combo: coc,
                    values: values
                        .into_iter()
                        .map(|(data_element, value)| DataValue {
                            data_element,
                            value,
                        })
                        .collect(),
                })
                .collect()
        };
        let text = prop::collection::vec(
            (
                prop_oneof![Just("HllvX50cXC0".to_string()), latin1()].prop_map(IdRef::Uid),
                prop::collection::vec((latin1().prop_map(IdRef::Uid), value()), 1..5),
            ),
            min..4,
        )
        .prop_map(build);
        let hashed = (0u8..=63, 0u8..=63).prop_flat_map(move |(coc_bits, de_bits)| {
            let hash = |bits: u8| {
                (0..=low_mask(bits)).prop_map(move |value| IdRef::Hash(HashRef { bits, value }))
            };
            prop::collection::vec(
                (
                    prop_oneof![
                        Just(IdRef::Hash(HashRef {
                            bits: coc_bits,
                            value: 0
                        })),
                        hash(coc_bits)
                    ],
                    prop::collection::vec((hash(de_bits), value()), 1..5),
                ),
                min..4,
            )
            .prop_map(build)
        });
        prop_oneof![text, hashed]
    }

    fn attributes(min: usize) -> impl Strategy<Value = Vec<AttributeValue>> {
        let text = prop::collection::vec((latin1().prop_map(IdRef::Uid), value()), min..5).boxed();
        let hashed = (0u8..=63)
            .prop_flat_map(move |bits| {
                prop::collection::vec(
                    (
                        (0..=low_mask(bits))
                            .prop_map(move |value| IdRef::Hash(HashRef { bits, value })),
                        value(),
                    ),
                    min..5,
                )
            })
            .boxed();
        prop_oneof![text, hashed].prop_map(|list| {
            list.into_iter()
                .map(|(attribute, value)| AttributeValue { attribute, value })
                .collect()
        })
    }

    fn header_for(version: u8) -> impl Strategy<Value = Header> {
        (date(), any::<u8>(), id_ref()).prop_map(move |(last_sync, submission_id, user)| Header {
            version,
            last_sync,
            submission_id,
            user,
        })
    }

    fn event_status() -> impl Strategy<Value = EventStatus> {
        prop::sample::select(EventStatus::ALL)
    }

    /// Event dates and geo as the version can carry them.
    fn event_extras(version: u8) -> BoxedStrategy<EventExtras> {
        if version == 1 {
            date().prop_map(|d| (Some(d), None, None)).boxed()
        } else {
            (prop::option::of(date()), prop::option::of(date()), geo()).boxed()
        }
    }

    fn aggregate_submission() -> impl Strategy<Value = Submission> {
        (1u8..=2).prop_flat_map(|version| {
            let min = if version == 1 { 1 } else { 0 };
            (
                header_for(version),
                (id_ref(), id_ref(), any::<bool>(), id_ref(), latin1()),
                groups(min),
            )
                .prop_map(
                    |(header, (org_unit, data_set, complete, aoc, period), values)| {
                        Submission::AggregateDataset {
                            header,
                            body: AggregateDataset {
                                org_unit,
                                data_set,
                                complete,
                                attribute_option_combo: aoc,
                                period,
                                values,
                            },
                        }
                    },
                )
        })
    }

    fn simple_event_submission() -> impl Strategy<Value = Submission> {
        (1u8..=2).prop_flat_map(|version| {
            let min = if version == 1 { 1 } else { 0 };
            (
                header_for(version),
                (id_ref(), id_ref(), event_status(), id_ref(), id_ref()),
                event_extras(version),
                groups(min),
            )
                .prop_map(
                    |(
                        header,
                        (org_unit, program, status, aoc, event),
                        (event_date, due_date, geo),
                        values,
                    )| {
                        Submission::SimpleEvent {
                            header,
                            body: SimpleEvent {
                                org_unit,
                                program,
                                status,
                                attribute_option_combo: aoc,
                                event,
                                event_date,
                                due_date,
                                geo,
                                values,
                            },
                        }
                    },
                )
        })
    }

    fn unsupported_of(header: Header, body: UnsupportedBody) -> Submission {
        Submission::Unsupported {
            kind: body.kind(),
            submission_id: header.submission_id,
            header,
            body,
        }
    }

    fn other_submission() -> impl Strategy<Value = Submission> {
        (1u8..=2).prop_flat_map(|version| {
            let min = if version == 1 { 1 } else { 0 };
            let delete = id_ref().prop_map(|event| UnsupportedBody::Delete { event });
            let relationship = (id_ref(), id_ref(), full_uid(), full_uid()).prop_map(
                |(relationship_type, relationship, from, to)| {
                    UnsupportedBody::Relationship(Relationship {
                        relationship_type,
                        relationship,
                        from,
                        to,
                    })
                },
            );
            let tracker = (
                (
                    id_ref(),
                    id_ref(),
                    event_status(),
                    id_ref(),
                    id_ref(),
                    id_ref(),
                ),
                event_extras(version),
                groups(min),
            )
                .prop_map(
                    |(
                        (org_unit, program_stage, status, aoc, enrollment, event),
                        (event_date, due_date, geo),
                        values,
                    )| {
                        UnsupportedBody::TrackerEvent(TrackerEvent {
                            org_unit,
                            program_stage,
                            status,
                            attribute_option_combo: aoc,
                            enrollment,
                            event,
                            event_date,
                            due_date,
                            geo,
                            values,
                        })
                    },
                );
            let enrollment_event = (
                (id_ref(), id_ref(), event_status(), id_ref(), id_ref()),
                event_extras(2),
                groups(0),
            )
                .prop_map(
                    |(
                        (org_unit, program_stage, status, aoc, event),
                        (event_date, due_date, geo),
                        values,
                    )| {
                        EnrollmentEvent {
                            org_unit,
                            program_stage,
                            status,
                            attribute_option_combo: aoc,
                            event,
                            event_date,
                            due_date,
                            geo,
                            values,
                        }
                    },
                );
            let v2 = version == 2;
            let enrollment = (
                (id_ref(), id_ref(), id_ref(), id_ref(), id_ref()),
                if v2 {
                    prop::option::of(date()).boxed()
                } else {
                    date().prop_map(Some).boxed()
                },
                if v2 {
                    prop::sample::select(EnrollmentStatus::ALL)
                        .prop_map(Some)
                        .boxed()
                } else {
                    Just(None).boxed()
                },
                if v2 {
                    prop::option::of(date()).boxed()
                } else {
                    Just(None).boxed()
                },
                if v2 {
                    geo().boxed()
                } else {
                    Just(None).boxed()
                },
                attributes(min),
                prop::collection::vec(enrollment_event, 0..if v2 { 3 } else { 1 }),
            )
                .prop_map(
                    |(
                        (org_unit, program, tet, tei, enrollment),
                        enrollment_date,
                        status,
                        incident_date,
                        geo,
                        attributes,
                        events,
                    )| {
                        UnsupportedBody::Enrollment(Enrollment {
                            org_unit,
                            program,
                            tracked_entity_type: tet,
                            tracked_entity_instance: tei,
                            enrollment,
                            enrollment_date,
                            status,
                            incident_date,
                            geo,
                            attributes,
                            events,
                        })
                    },
                );
            (
                header_for(version),
                prop_oneof![delete, relationship, tracker, enrollment],
            )
                .prop_map(|(header, body)| unsupported_of(header, body))
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_text(text in any::<String>()) {
            let _ = decode(&text);
        }

        #[test]
        fn decode_never_panics_on_base64_alphabet(text in "[A-Za-z0-9+/=]{0,200}") {
            let _ = decode(&text);
            let _ = peek_submission_id(&text);
        }

        #[test]
        fn decode_never_panics_on_base64_of_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&STANDARD.encode(&bytes));
        }

        /// With a correct check byte and a plausible first byte, random
        /// bytes reach every body parser instead of stopping at the check.
        #[test]
        fn decode_never_panics_past_the_check_byte(
            kind in 0u8..8,
            version in 0u8..4,
            mut bytes in prop::collection::vec(any::<u8>(), 2..300),
        ) {
            bytes[1] = (kind << 4) | version;
            let text = seal(bytes);
            if let Ok(submission) = decode(&text) {
                // Whatever decodes must re-encode to something that decodes the same.
                let again = encode(&submission, submission.header().version).unwrap();
                prop_assert_eq!(decode(&again).unwrap(), submission);
            }
        }

        #[test]
        fn aggregate_round_trip(submission in aggregate_submission()) {
            let text = encode(&submission, submission.header().version).unwrap();
            prop_assert!(is_compressed(&text));
            prop_assert_eq!(decode(&text).unwrap(), submission);
        }

        #[test]
        fn simple_event_round_trip(submission in simple_event_submission()) {
            let text = encode(&submission, submission.header().version).unwrap();
            prop_assert_eq!(decode(&text).unwrap(), submission);
        }

        #[test]
        fn other_types_round_trip(submission in other_submission()) {
            let text = encode(&submission, submission.header().version).unwrap();
            prop_assert_eq!(peek_submission_id(&text), Some(submission.submission_id()));
            prop_assert_eq!(decode(&text).unwrap(), submission);
        }

        /// Ids and texts outside what the wire carries are refused, never
        /// mangled: whatever encodes, decodes back unchanged.
        #[test]
        fn encode_never_panics_and_never_mangles(
            version in 0u8..4,
            user in prop_oneof![full_uid(), any::<String>()],
            bits in 0u8..70,
            value in prop_oneof![0u64..64, any::<u64>()],
            period in prop_oneof![latin1(), any::<String>()],
            n in prop_oneof![Just(i64::MIN), any::<i64>()],
        ) {
            let submission = Submission::AggregateDataset {
                header: Header { version: 2, last_sync: 0, submission_id: 1, user: IdRef::Uid(user) },
                body: AggregateDataset {
                    org_unit: IdRef::Hash(HashRef { bits, value }),
                    data_set: uid("Nyh6laLdBEJ"),
                    complete: false,
                    attribute_option_combo: uid("HllvX50cXC0"),
                    period,
                    values: vec![DataValueGroup {
                        category_option_combo: uid("HllvX50cXC0"),
                        values: vec![DataValue { data_element: uid("x"), value: Value::Int(n) }],
                    }],
                },
            };
            if let Ok(text) = encode(&submission, version) {
                let mut expected = submission.clone();
                if let Submission::AggregateDataset { header, .. } = &mut expected {
                    header.version = version;
                }
                prop_assert_eq!(decode(&text).unwrap(), expected);
            }
        }
    }
}
