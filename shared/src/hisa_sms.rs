//! Hisa's own SMS format: authenticated, compressed submissions of aggregate
//! forms and single events, for phones that only have SMS.
//!
//! DHIS2's compressed SMS ([`crate::dhis2_sms`]) names every data element and
//! combo on the wire and carries no authentication, so a 40-value monthly form
//! needs several SMS and anyone who knows a phone number can submit. Here both
//! ends build the same [`FormLayout`] from their own metadata (data elements ×
//! category option combos in canonical order), so a value travels as a
//! position in a presence bitmap plus a few bits of value; a 32-bit layout
//! fingerprint makes the server refuse a form built against other metadata
//! instead of guessing positions. Every message carries the device's key id,
//! a per-device counter (checked by a [`ReplayWindow`]) and a truncated
//! HMAC-SHA256 under the device's key. Messages longer than one SMS are cut
//! into [`Part`]s that carry slices of the whole authenticated message, so a
//! forged or mixed-up part simply fails the MAC after reassembly.
//!
//! Text on the air is `*` + unpadded Base64, all in GSM 7-bit, which tells it
//! apart from DHIS2's compressed SMS (bare Base64) and from plain-text
//! commands. The complete wire specification, with a worked example and sizes,
//! is `docs/sms-format.md`; keep the two in step.
//!
//! Pure functions only: no I/O, no clock, no key storage.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Date, Month, Weekday};

use crate::period::{Period, PeriodType, MAX_INPUT_YEAR, MIN_INPUT_YEAR};
use crate::uid::Uid;

/// Wire format version, the high nibble of every frame's first byte.
pub const VERSION: u8 = 1;
/// One SMS in GSM 7-bit.
pub const MAX_SMS_CHARS: usize = 160;
/// Bytes one SMS carries: 159 Base64 characters after the `*`.
pub const MAX_FRAME_BYTES: usize = (MAX_SMS_CHARS - 1) * 6 / 8;
/// Version/kind byte, reference (2 bytes), index/total byte.
pub const PART_HEADER_BYTES: usize = 4;
/// Bytes of the whole message one part carries.
pub const MAX_CHUNK_BYTES: usize = MAX_FRAME_BYTES - PART_HEADER_BYTES;
/// The part index and total are 4-bit fields.
pub const MAX_PARTS: usize = 15;
/// The largest whole message (MAC included) that multipart can carry.
pub const MAX_MESSAGE_BYTES: usize = MAX_PARTS * MAX_CHUNK_BYTES;
/// Truncated HMAC-SHA256 length.
pub const MAC_BYTES: usize = 4;
/// The device's shared secret for [`open`] and [`encode`].
pub type DeviceKey = [u8; 32];

const FRAME_WHOLE: u8 = 0;
const FRAME_PART: u8 = 1;
const MESSAGE_FORM: u64 = 0;
const MESSAGE_EVENT: u64 = 1;
/// Exp-Golomb order of every varint: 0–7 cost 4 bits, 8–23 six, 24–55 eight,
/// which covers the small counts that dominate health forms.
const VARINT_ORDER: u32 = 3;
/// Positions are `u16`, so a bitmap never needs more bits than this.
const MAX_FIELDS: u64 = 1 << 16;
const LAYOUT_DOMAIN: &[u8] = b"hisa-sms-layout-v1";
const UID_CHARS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Everything that can go wrong building or reading a Hisa SMS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HisaSmsError {
    #[error("not a Hisa SMS: it does not start with `*`")]
    NotHisa,
    #[error("the text after `*` is not standard Base64")]
    NotBase64,
    #[error("unknown Hisa SMS format version {0} (this reader knows version {VERSION})")]
    UnknownVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownFrameKind(u8),
    #[error("this is one part of a multipart message: reassemble the parts first")]
    NotWhole,
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    #[error("unknown period type code {0}")]
    UnknownPeriodType(u8),
    #[error("the message ends early (truncated)")]
    Truncated,
    #[error("unexpected bits after the end of the message (trailing garbage)")]
    TrailingGarbage,
    #[error("bad MAC: wrong key, or the message was altered")]
    BadMac,
    #[error("bad part header: {0}")]
    BadPartHeader(&'static str),
    #[error("missing parts {missing:?} of {total}")]
    MissingParts { total: u8, missing: Vec<u8> },
    #[error("inconsistent parts: {0}")]
    InconsistentParts(&'static str),
    #[error("invalid UID `{value}`: {reason}")]
    InvalidUid { value: String, reason: &'static str },
    #[error("the value at position {position} has {bytes} bytes; a message carries at most {MAX_MESSAGE_BYTES}")]
    ValueTooLong { position: u16, bytes: usize },
    #[error("the message has {bytes} bytes and would need {parts} parts; at most {MAX_PARTS} are allowed")]
    TooManyParts { bytes: usize, parts: usize },
    #[error("position {0} has two values")]
    DuplicatePosition(u16),
    #[error("period {0} is outside the years the format carries")]
    PeriodOutOfRange(String),
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
    #[error("a text value is not valid UTF-8")]
    InvalidUtf8,
}

type Result<T> = std::result::Result<T, HisaSmsError>;

// ------------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------------

/// What travels in one authenticated message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Which of the server's device keys verifies the MAC.
    pub key_id: u32,
    /// Rises with every message the device sends; see [`ReplayWindow`].
    pub counter: u32,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Form(FormSubmission),
    Event(EventSubmission),
}

/// An aggregate data entry form. Ids are [`uid_hash24`] hashes; the server
/// resolves them against the metadata the device may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormSubmission {
    pub data_set: u32,
    /// [`layout_fingerprint`] of the layout the positions refer to.
    pub layout: u32,
    pub period: Period,
    pub org_unit: u32,
    /// Position of the attribute option combo in the data set's category
    /// combo, in canonical (UID) order; 0 for the default combo.
    pub attribute_option_combo: u32,
    pub complete: bool,
    /// [`open`] returns them in ascending position order.
    pub values: Vec<FieldValue>,
}

/// A single event of a program without registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSubmission {
    /// The event's UID, chosen by the phone so a resend updates one event.
    pub event: String,
    pub program: u32,
    /// [`layout_fingerprint`] of [`FormLayout::for_program`] of the stage.
    pub layout: u32,
    pub org_unit: u32,
    pub occurred: Date,
    pub attribute_option_combo: u32,
    pub completed: bool,
    /// [`open`] returns them in ascending position order.
    pub values: Vec<FieldValue>,
}

/// One value of a form or event at a layout position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldValue {
    pub position: u16,
    /// `None` clears the stored value.
    pub value: Option<String>,
}

// ------------------------------------------------------------------------------------------------
// Layouts and hashes
// ------------------------------------------------------------------------------------------------

/// The positions of a form's fields, built independently by the phone and
/// the server from their own metadata. Equal metadata gives an equal layout
/// whatever order it was listed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FormLayout {
    /// The data set's UID, or the program's for an event layout.
    pub owner: String,
    /// Sorted by data element UID, then category option combo UID, without
    /// duplicates. Only the first 65 536 have a position.
    pub fields: Vec<LayoutField>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LayoutField {
    pub data_element: String,
    /// Empty in event layouts.
    pub category_option_combo: String,
}

impl FormLayout {
    /// The layout of a data set from its data elements and, for each, the
    /// category option combos of its category combo. Repeated entries merge.
    pub fn new(
        data_set_uid: &str,
        elements: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> FormLayout {
        let fields: BTreeSet<LayoutField> = elements
            .into_iter()
            .flat_map(|(data_element, combos)| {
                combos
                    .into_iter()
                    .map(move |category_option_combo| LayoutField {
                        data_element: data_element.clone(),
                        category_option_combo,
                    })
            })
            .collect();
        FormLayout {
            owner: data_set_uid.to_string(),
            fields: fields.into_iter().collect(),
        }
    }

    /// The layout of a program stage's data elements: one field each, with
    /// an empty combo (events have no disaggregation).
    pub fn for_program(
        program_uid: &str,
        data_elements: impl IntoIterator<Item = String>,
    ) -> FormLayout {
        FormLayout::new(
            program_uid,
            data_elements
                .into_iter()
                .map(|de| (de, vec![String::new()])),
        )
    }

    pub fn position(&self, data_element: &str, category_option_combo: &str) -> Option<u16> {
        let index = self
            .fields
            .binary_search_by(|f| {
                (f.data_element.as_str(), f.category_option_combo.as_str())
                    .cmp(&(data_element, category_option_combo))
            })
            .ok()?;
        u16::try_from(index).ok()
    }

    pub fn field(&self, position: u16) -> Option<&LayoutField> {
        self.fields.get(usize::from(position))
    }

    pub fn fingerprint(&self) -> u32 {
        layout_fingerprint(self)
    }
}

/// First 4 bytes (big-endian) of SHA-256 over the canonical serialisation:
/// `hisa-sms-layout-v1`, the owner, the field count (u32 BE), then each
/// field's data element and combo; every string as u32 BE byte length + UTF-8.
pub fn layout_fingerprint(layout: &FormLayout) -> u32 {
    fn put(hasher: &mut Sha256, s: &str) {
        hasher.update((s.len() as u32).to_be_bytes());
        hasher.update(s.as_bytes());
    }
    let mut hasher = Sha256::new();
    hasher.update(LAYOUT_DOMAIN);
    put(&mut hasher, &layout.owner);
    hasher.update((layout.fields.len() as u32).to_be_bytes());
    for field in &layout.fields {
        put(&mut hasher, &field.data_element);
        put(&mut hasher, &field.category_option_combo);
    }
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// First 3 bytes (big-endian) of SHA-256 of the UID's bytes.
pub fn uid_hash24(uid: &str) -> u32 {
    let digest = Sha256::digest(uid.as_bytes());
    u32::from_be_bytes([0, digest[0], digest[1], digest[2]])
}

/// The multipart reference of a message: first 2 bytes of SHA-256 of
/// key id ‖ counter (both u32 BE). Tied to the counter so that two messages
/// of one device in flight together get different references.
pub fn part_reference(key_id: u32, counter: u32) -> u16 {
    let mut hasher = Sha256::new();
    hasher.update(key_id.to_be_bytes());
    hasher.update(counter.to_be_bytes());
    let digest = hasher.finalize();
    u16::from_be_bytes([digest[0], digest[1]])
}

/// Truncated HMAC-SHA256 of a whole message's bytes before the MAC.
pub fn message_mac(key: &DeviceKey, bytes: &[u8]) -> [u8; MAC_BYTES] {
    let tag = keyed(key, bytes).finalize().into_bytes();
    [tag[0], tag[1], tag[2], tag[3]]
}

fn keyed(key: &DeviceKey, bytes: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(bytes);
    mac
}

// ------------------------------------------------------------------------------------------------
// Encoding
// ------------------------------------------------------------------------------------------------

/// The SMS texts of a message: one when it fits in [`MAX_SMS_CHARS`],
/// otherwise 2–15 parts, each within [`MAX_SMS_CHARS`].
pub fn encode(envelope: &Envelope, key: &DeviceKey) -> Result<Vec<String>> {
    let whole = seal(envelope, key)?;
    if whole.len() <= MAX_FRAME_BYTES {
        return Ok(vec![frame_text(&whole)]);
    }
    let parts = whole.len().div_ceil(MAX_CHUNK_BYTES);
    if parts > MAX_PARTS {
        return Err(HisaSmsError::TooManyParts {
            bytes: whole.len(),
            parts,
        });
    }
    let reference = part_reference(envelope.key_id, envelope.counter).to_be_bytes();
    Ok(whole
        .chunks(MAX_CHUNK_BYTES)
        .enumerate()
        .map(|(index, chunk)| {
            let mut frame = vec![
                (VERSION << 4) | FRAME_PART,
                reference[0],
                reference[1],
                ((index as u8) << 4) | parts as u8,
            ];
            frame.extend_from_slice(chunk);
            frame_text(&frame)
        })
        .collect())
}

/// The whole message's bytes, MAC included, before any splitting into parts.
pub fn seal(envelope: &Envelope, key: &DeviceKey) -> Result<Vec<u8>> {
    let mut w = BitWriter::default();
    w.put(u64::from((VERSION << 4) | FRAME_WHOLE), 8);
    w.varint(u64::from(envelope.key_id));
    w.varint(u64::from(envelope.counter));
    match &envelope.message {
        Message::Form(form) => {
            w.put(MESSAGE_FORM, 4);
            write_form(&mut w, form)?;
        }
        Message::Event(event) => {
            w.put(MESSAGE_EVENT, 4);
            write_event(&mut w, event)?;
        }
    }
    let mut bytes = w.finish();
    if bytes.len() + MAC_BYTES > MAX_MESSAGE_BYTES {
        let bytes = bytes.len() + MAC_BYTES;
        return Err(HisaSmsError::TooManyParts {
            bytes,
            parts: bytes.div_ceil(MAX_CHUNK_BYTES),
        });
    }
    let mac = message_mac(key, &bytes);
    bytes.extend_from_slice(&mac);
    Ok(bytes)
}

fn frame_text(bytes: &[u8]) -> String {
    format!("*{}", STANDARD_NO_PAD.encode(bytes))
}

fn write_form(w: &mut BitWriter, form: &FormSubmission) -> Result<()> {
    let period_type = form.period.period_type();
    let type_code = PeriodType::all()
        .iter()
        .position(|t| *t == period_type)
        .unwrap_or_else(|| unreachable!("every period type is in PeriodType::all()"));
    let index = period_index(&form.period);
    if period_from_index(period_type, index).ok() != Some(form.period) {
        return Err(HisaSmsError::PeriodOutOfRange(form.period.iso()));
    }
    w.hash24(form.data_set, "data set hash")?;
    w.put(u64::from(form.layout), 32);
    w.put(type_code as u64, 5);
    w.signed(index);
    w.hash24(form.org_unit, "organisation unit hash")?;
    w.varint(u64::from(form.attribute_option_combo));
    w.flag(form.complete);
    write_values(w, &form.values)
}

fn write_event(w: &mut BitWriter, event: &EventSubmission) -> Result<()> {
    let uid = pack_uid(&event.event)?;
    w.put((uid >> 64) as u64, 2);
    w.put(uid as u64, 64);
    w.hash24(event.program, "program hash")?;
    w.put(u64::from(event.layout), 32);
    w.hash24(event.org_unit, "organisation unit hash")?;
    w.signed(days_since_2000(event.occurred));
    w.varint(u64::from(event.attribute_option_combo));
    w.flag(event.completed);
    write_values(w, &event.values)
}

fn write_values(w: &mut BitWriter, values: &[FieldValue]) -> Result<()> {
    let mut sorted: Vec<&FieldValue> = values.iter().collect();
    sorted.sort_by_key(|v| v.position);
    for pair in sorted.windows(2) {
        if pair[0].position == pair[1].position {
            return Err(HisaSmsError::DuplicatePosition(pair[0].position));
        }
    }
    let positions: Vec<u16> = sorted.iter().map(|v| v.position).collect();
    write_presence(w, &positions);
    for value in sorted {
        write_value(w, value)?;
    }
    Ok(())
}

/// A bitmap suits full forms, a list of gaps suits a few values in a big
/// layout; one bit says which, and the encoder takes the shorter.
fn write_presence(w: &mut BitWriter, positions: &[u16]) {
    let n = positions.last().map_or(0, |p| u64::from(*p) + 1);
    let bitmap_bits = varint_bits(n) + n;
    let gaps = gaps(positions);
    let list_bits =
        varint_bits(positions.len() as u64) + gaps.iter().map(|g| varint_bits(*g)).sum::<u64>();
    if bitmap_bits <= list_bits {
        w.flag(false);
        w.varint(n);
        let mut next = positions.iter().peekable();
        for p in 0..n {
            let present = next.next_if(|q| u64::from(**q) == p).is_some();
            w.flag(present);
        }
    } else {
        w.flag(true);
        w.varint(positions.len() as u64);
        for gap in gaps {
            w.varint(gap);
        }
    }
}

fn gaps(positions: &[u16]) -> Vec<u64> {
    let mut previous: Option<u16> = None;
    positions
        .iter()
        .map(|p| {
            let gap = match previous {
                None => u64::from(*p),
                Some(q) => u64::from(p - q - 1),
            };
            previous = Some(*p);
            gap
        })
        .collect()
}

fn write_value(w: &mut BitWriter, field: &FieldValue) -> Result<()> {
    let Some(text) = &field.value else {
        w.put(0b111, 3);
        return Ok(());
    };
    match canonical_integer(text) {
        Some((false, magnitude)) => {
            w.put(0b0, 1);
            w.varint(magnitude);
        }
        Some((true, magnitude)) => {
            w.put(0b10, 2);
            w.varint(magnitude - 1);
        }
        None => {
            if text.len() > MAX_MESSAGE_BYTES {
                return Err(HisaSmsError::ValueTooLong {
                    position: field.position,
                    bytes: text.len(),
                });
            }
            w.put(0b110, 3);
            w.varint(text.len() as u64);
            for byte in text.bytes() {
                w.put(u64::from(byte), 8);
            }
        }
    }
    Ok(())
}

/// `(negative, magnitude)` when the text is an integer in the one form the
/// decoder writes back (so "007", "+7" and "-0" travel as text and survive).
fn canonical_integer(text: &str) -> Option<(bool, u64)> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let bytes = digits.as_bytes();
    let first = *bytes.first()?;
    if !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if first == b'0' && (bytes.len() > 1 || negative) {
        return None;
    }
    let magnitude: u64 = digits.parse().ok()?;
    Some((negative, magnitude))
}

/// 11 characters × 6 bits = 66 bits.
fn pack_uid(uid: &str) -> Result<u128> {
    Uid::parse(uid).map_err(|e| HisaSmsError::InvalidUid {
        value: e.value,
        reason: e.reason,
    })?;
    Ok(uid.bytes().fold(0u128, |acc, c| {
        let code = UID_CHARS.iter().position(|u| *u == c).unwrap_or(0);
        (acc << 6) | code as u128
    }))
}

fn unpack_uid(packed: u128) -> Result<String> {
    let uid: Option<String> = (0..11)
        .rev()
        .map(|i| {
            UID_CHARS
                .get(((packed >> (6 * i)) & 0x3f) as usize)
                .map(|c| char::from(*c))
        })
        .collect();
    let uid = uid.ok_or_else(|| HisaSmsError::InvalidUid {
        value: format!("{packed:#x}"),
        reason: "6-bit codes 62 and 63 are not UID characters",
    })?;
    match Uid::parse(&uid) {
        Ok(_) => Ok(uid),
        Err(e) => Err(HisaSmsError::InvalidUid {
            value: e.value,
            reason: e.reason,
        }),
    }
}

// ------------------------------------------------------------------------------------------------
// Periods and dates
// ------------------------------------------------------------------------------------------------

const EPOCH: Date = time::macros::date!(2000 - 01 - 01);
/// Bi-weeks in 400 years: 26 per year plus one per 53-week ISO year (71).
const BIWEEKS_PER_400_YEARS: i64 = 400 * 26 + 71;

/// How periods of a type follow one another; BiWeekly is irregular because
/// the last bi-week of a 53-week year is one week long.
enum Step {
    Days(i64),
    BiWeeks,
    Months(i64),
}

fn step(period_type: PeriodType) -> Step {
    use PeriodType::*;
    match period_type {
        Daily => Step::Days(1),
        Weekly | WeeklyWednesday | WeeklyThursday | WeeklyFriday | WeeklySaturday
        | WeeklySunday => Step::Days(7),
        BiWeekly => Step::BiWeeks,
        Monthly => Step::Months(1),
        BiMonthly => Step::Months(2),
        Quarterly | QuarterlyNov => Step::Months(3),
        SixMonthly | SixMonthlyApril | SixMonthlyNov => Step::Months(6),
        Yearly | FinancialFeb | FinancialApril | FinancialJuly | FinancialAug | FinancialSep
        | FinancialOct | FinancialNov => Step::Months(12),
        TwoYearly => Step::Months(24),
    }
}

/// Periods of the same type from the one containing 2000-01-01 to `period`.
pub fn period_index(period: &Period) -> i64 {
    let period_type = period.period_type();
    let origin = Period::containing(period_type, EPOCH).start_date();
    let start = period.start_date();
    match step(period_type) {
        Step::Days(n) => (jd(start) - jd(origin)).div_euclid(n),
        Step::Months(n) => (month_number(start) - month_number(origin)).div_euclid(n),
        Step::BiWeeks => biweek_number(start) - biweek_number(origin),
    }
}

/// Inverse of [`period_index`] for periods that start in years 1–9998.
pub fn period_from_index(period_type: PeriodType, index: i64) -> Result<Period> {
    let out_of_range = || HisaSmsError::OutOfRange("period index");
    let origin = Period::containing(period_type, EPOCH).start_date();
    let start = match step(period_type) {
        Step::Days(n) => {
            let day = index
                .checked_mul(n)
                .and_then(|d| d.checked_add(jd(origin)))
                .ok_or_else(out_of_range)?;
            date_from_jd(day).ok_or_else(out_of_range)?
        }
        Step::Months(n) => {
            let month = index
                .checked_mul(n)
                .and_then(|m| m.checked_add(month_number(origin)))
                .ok_or_else(out_of_range)?;
            first_of_month(month).ok_or_else(out_of_range)?
        }
        Step::BiWeeks => {
            let target = index
                .checked_add(biweek_number(origin))
                .ok_or_else(out_of_range)?;
            biweek_start(target).ok_or_else(out_of_range)?
        }
    };
    if !(MIN_INPUT_YEAR..=MAX_INPUT_YEAR).contains(&start.year()) {
        return Err(out_of_range());
    }
    Period::new(period_type, start).map_err(|_| out_of_range())
}

fn jd(date: Date) -> i64 {
    i64::from(date.to_julian_day())
}

fn date_from_jd(day: i64) -> Option<Date> {
    Date::from_julian_day(i32::try_from(day).ok()?).ok()
}

fn month_number(date: Date) -> i64 {
    i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1
}

fn first_of_month(month_number: i64) -> Option<Date> {
    let year = i32::try_from(month_number.div_euclid(12)).ok()?;
    let month = Month::try_from(month_number.rem_euclid(12) as u8 + 1).ok()?;
    Date::from_calendar_date(year, month, 1).ok()
}

/// Monday of ISO week 1 of an ISO week-numbering year.
fn iso_week1(year: i64) -> Option<Date> {
    Date::from_iso_week_date(i32::try_from(year).ok()?, 1, Weekday::Monday).ok()
}

/// Bi-weeks between BiW1 of ISO year 2000 and BiW1 of `year`: each year has
/// 26, plus one more when it has 53 weeks, so it is weeks − 26 × years.
fn biweeks_before(year: i64) -> Option<i64> {
    let weeks = (jd(iso_week1(year)?) - jd(iso_week1(2000)?)) / 7;
    Some(weeks - 26 * (year - 2000))
}

/// A number that rises by one per bi-week (0 at 2000BiW1).
fn biweek_number(start: Date) -> i64 {
    let (year, week, _) = start.to_iso_week_date();
    let year = i64::from(year);
    biweeks_before(year).unwrap_or(0) + (i64::from(week) - 1) / 2
}

fn biweek_start(number: i64) -> Option<Date> {
    let lowest = i64::from(MIN_INPUT_YEAR);
    let highest = i64::from(MAX_INPUT_YEAR);
    let estimate =
        2000 + i64::try_from(i128::from(number) * 400 / i128::from(BIWEEKS_PER_400_YEARS)).ok()?;
    let mut year = estimate.clamp(lowest, highest);
    // The estimate is off by at most a year or two; each step stays in range.
    while biweeks_before(year)? > number {
        year -= 1;
        if year < lowest {
            return None;
        }
    }
    while biweeks_before(year + 1)? <= number {
        year += 1;
        if year > highest {
            return None;
        }
    }
    let offset = number - biweeks_before(year)?;
    date_from_jd(jd(iso_week1(year)?) + 14 * offset)
}

fn days_since_2000(date: Date) -> i64 {
    jd(date) - jd(EPOCH)
}

// ------------------------------------------------------------------------------------------------
// Frames and parts
// ------------------------------------------------------------------------------------------------

/// One SMS, decoded from its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A whole message's bytes, for [`peek_key`] and [`open`].
    Whole(Vec<u8>),
    Part(Part),
}

/// One SMS of a multipart message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Part {
    /// Shared by the parts of one message; see [`part_reference`].
    pub reference: u16,
    /// 0-based.
    pub index: u8,
    /// 2–15.
    pub total: u8,
    /// A slice of the whole message's bytes.
    pub chunk: Vec<u8>,
}

/// True when the text looks like a Hisa SMS (`*` after leading whitespace).
pub fn is_hisa(text: &str) -> bool {
    text.trim_start().starts_with('*')
}

const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes one SMS text and checks its frame header.
pub fn read_frame(text: &str) -> Result<Frame> {
    let payload = text.trim().strip_prefix('*').ok_or(HisaSmsError::NotHisa)?;
    let bytes = LENIENT_BASE64
        .decode(payload)
        .map_err(|_| HisaSmsError::NotBase64)?;
    let first = *bytes.first().ok_or(HisaSmsError::Truncated)?;
    check_version(first)?;
    match first & 0x0f {
        FRAME_WHOLE => Ok(Frame::Whole(bytes)),
        FRAME_PART => read_part(&bytes).map(Frame::Part),
        kind => Err(HisaSmsError::UnknownFrameKind(kind)),
    }
}

fn check_version(first: u8) -> Result<()> {
    match first >> 4 {
        VERSION => Ok(()),
        other => Err(HisaSmsError::UnknownVersion(other)),
    }
}

fn read_part(bytes: &[u8]) -> Result<Part> {
    let [_, high, low, counts, ..] = *bytes else {
        return Err(HisaSmsError::BadPartHeader(
            "shorter than its 4-byte header",
        ));
    };
    let part = Part {
        reference: u16::from_be_bytes([high, low]),
        index: counts >> 4,
        total: counts & 0x0f,
        chunk: bytes[PART_HEADER_BYTES..].to_vec(),
    };
    check_part(&part)?;
    Ok(part)
}

fn check_part(part: &Part) -> Result<()> {
    if !(2..=MAX_PARTS as u8).contains(&part.total) {
        return Err(HisaSmsError::BadPartHeader("the total is not 2–15"));
    }
    if part.index >= part.total {
        return Err(HisaSmsError::BadPartHeader(
            "the index is not below the total",
        ));
    }
    if part.chunk.is_empty() {
        return Err(HisaSmsError::BadPartHeader("the part carries no bytes"));
    }
    Ok(())
}

/// The whole message from its parts, in any order; a part received twice is
/// fine as long as both copies agree.
pub fn reassemble(parts: &[Part]) -> Result<Vec<u8>> {
    let first = parts.first().ok_or(HisaSmsError::MissingParts {
        total: 0,
        missing: Vec::new(),
    })?;
    let mut chunks: BTreeMap<u8, &[u8]> = BTreeMap::new();
    for part in parts {
        check_part(part)?;
        if part.reference != first.reference {
            return Err(HisaSmsError::InconsistentParts("the references differ"));
        }
        if part.total != first.total {
            return Err(HisaSmsError::InconsistentParts("the totals differ"));
        }
        if let Some(seen) = chunks.insert(part.index, &part.chunk) {
            if seen != part.chunk.as_slice() {
                return Err(HisaSmsError::InconsistentParts(
                    "two different parts have the same index",
                ));
            }
        }
    }
    let missing: Vec<u8> = (0..first.total)
        .filter(|i| !chunks.contains_key(i))
        .collect();
    if !missing.is_empty() {
        return Err(HisaSmsError::MissingParts {
            total: first.total,
            missing,
        });
    }
    let whole: Vec<u8> = chunks.values().flat_map(|c| c.iter().copied()).collect();
    let (key_id, counter) = peek_key(&whole)?;
    if part_reference(key_id, counter) != first.reference {
        return Err(HisaSmsError::InconsistentParts(
            "the reference does not belong to the reassembled message",
        ));
    }
    Ok(whole)
}

// ------------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------------

/// Key id and counter of a whole message, read before the MAC is checked so
/// the server can find the device's key (and drop replays early).
pub fn peek_key(bytes: &[u8]) -> Result<(u32, u32)> {
    let mut r = BitReader::new(bytes, bytes.len());
    read_whole_header(&mut r)?;
    let key_id = r.varint_u32("key id")?;
    let counter = r.varint_u32("counter")?;
    Ok((key_id, counter))
}

/// Verifies the MAC under `key` (in constant time), then decodes.
pub fn open(bytes: &[u8], key: &DeviceKey) -> Result<Envelope> {
    let first = *bytes.first().ok_or(HisaSmsError::Truncated)?;
    check_whole(first)?;
    let body_len = bytes
        .len()
        .checked_sub(MAC_BYTES)
        .filter(|n| *n > 0)
        .ok_or(HisaSmsError::Truncated)?;
    let (body, tag) = bytes.split_at(body_len);
    keyed(key, body)
        .verify_truncated_left(tag)
        .map_err(|_| HisaSmsError::BadMac)?;
    let mut r = BitReader::new(body, body.len());
    let envelope = read_envelope(&mut r)?;
    r.finish()?;
    Ok(envelope)
}

fn check_whole(first: u8) -> Result<()> {
    check_version(first)?;
    match first & 0x0f {
        FRAME_WHOLE => Ok(()),
        FRAME_PART => Err(HisaSmsError::NotWhole),
        kind => Err(HisaSmsError::UnknownFrameKind(kind)),
    }
}

fn read_whole_header(r: &mut BitReader) -> Result<()> {
    let first = r.get(8)? as u8;
    check_whole(first)
}

fn read_envelope(r: &mut BitReader) -> Result<Envelope> {
    read_whole_header(r)?;
    let key_id = r.varint_u32("key id")?;
    let counter = r.varint_u32("counter")?;
    let message = match r.get(4)? {
        MESSAGE_FORM => Message::Form(read_form(r)?),
        MESSAGE_EVENT => Message::Event(read_event(r)?),
        other => return Err(HisaSmsError::UnknownMessageType(other as u8)),
    };
    Ok(Envelope {
        key_id,
        counter,
        message,
    })
}

fn read_form(r: &mut BitReader) -> Result<FormSubmission> {
    let data_set = r.get(24)? as u32;
    let layout = r.get(32)? as u32;
    let code = r.get(5)? as u8;
    let period_type = *PeriodType::all()
        .get(usize::from(code))
        .ok_or(HisaSmsError::UnknownPeriodType(code))?;
    let period = period_from_index(period_type, r.signed()?)?;
    Ok(FormSubmission {
        data_set,
        layout,
        period,
        org_unit: r.get(24)? as u32,
        attribute_option_combo: r.varint_u32("attribute option combo")?,
        complete: r.flag()?,
        values: read_values(r)?,
    })
}

fn read_event(r: &mut BitReader) -> Result<EventSubmission> {
    let packed = (u128::from(r.get(2)?) << 64) | u128::from(r.get(64)?);
    let event = unpack_uid(packed)?;
    let program = r.get(24)? as u32;
    let layout = r.get(32)? as u32;
    let org_unit = r.get(24)? as u32;
    let occurred = r
        .signed()?
        .checked_add(jd(EPOCH))
        .and_then(date_from_jd)
        .ok_or(HisaSmsError::OutOfRange("occurred date"))?;
    Ok(EventSubmission {
        event,
        program,
        layout,
        org_unit,
        occurred,
        attribute_option_combo: r.varint_u32("attribute option combo")?,
        completed: r.flag()?,
        values: read_values(r)?,
    })
}

fn read_values(r: &mut BitReader) -> Result<Vec<FieldValue>> {
    let positions = if r.flag()? {
        read_position_list(r)?
    } else {
        read_bitmap(r)?
    };
    positions
        .into_iter()
        .map(|position| {
            Ok(FieldValue {
                position,
                value: read_value(r)?,
            })
        })
        .collect()
}

fn read_bitmap(r: &mut BitReader) -> Result<Vec<u16>> {
    let n = r.varint()?;
    if n > MAX_FIELDS {
        return Err(HisaSmsError::OutOfRange("field count"));
    }
    let mut positions = Vec::new();
    for position in 0..n as u32 {
        if r.flag()? {
            positions.push(position as u16);
        }
    }
    Ok(positions)
}

fn read_position_list(r: &mut BitReader) -> Result<Vec<u16>> {
    let count = r.varint()?;
    if count > MAX_FIELDS {
        return Err(HisaSmsError::OutOfRange("value count"));
    }
    let mut positions = Vec::new();
    let mut next: u64 = 0;
    for _ in 0..count {
        let position = next
            .checked_add(r.varint()?)
            .filter(|p| *p < MAX_FIELDS)
            .ok_or(HisaSmsError::OutOfRange("position"))?;
        positions.push(position as u16);
        next = position + 1;
    }
    Ok(positions)
}

fn read_value(r: &mut BitReader) -> Result<Option<String>> {
    if !r.flag()? {
        return Ok(Some(r.varint()?.to_string()));
    }
    if !r.flag()? {
        let magnitude = u128::from(r.varint()?) + 1;
        return Ok(Some(format!("-{magnitude}")));
    }
    if r.flag()? {
        return Ok(None);
    }
    let len = r.varint()?;
    if len > r.remaining() / 8 {
        return Err(HisaSmsError::Truncated);
    }
    let bytes = (0..len)
        .map(|_| r.get(8).map(|b| b as u8))
        .collect::<Result<Vec<u8>>>()?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| HisaSmsError::InvalidUtf8)
}

// ------------------------------------------------------------------------------------------------
// Bit streams
// ------------------------------------------------------------------------------------------------

/// Big-endian bits: the first bit written is the top bit of byte 0.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn put(&mut self, value: u64, width: u32) {
        for i in (0..width).rev() {
            self.flag((value >> i) & 1 == 1);
        }
    }

    fn flag(&mut self, bit: bool) {
        let offset = self.bits % 8;
        if offset == 0 {
            self.bytes.push(0);
        }
        if bit {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 0x80 >> offset;
            }
        }
        self.bits += 1;
    }

    /// Exp-Golomb of order 3: `v + 8` in binary, preceded by as many zero
    /// bits as it has bits beyond four.
    fn varint(&mut self, value: u64) {
        let x = u128::from(value) + (1 << VARINT_ORDER);
        let width = 128 - x.leading_zeros();
        self.put(0, width - (VARINT_ORDER + 1));
        if width > 64 {
            self.flag(true);
        }
        self.put(x as u64, width.min(64));
    }

    /// Ids travel as 24-bit hashes; a wider number would be cut silently.
    fn hash24(&mut self, hash: u32, what: &'static str) -> Result<()> {
        if hash >> 24 != 0 {
            return Err(HisaSmsError::OutOfRange(what));
        }
        self.put(u64::from(hash), 24);
        Ok(())
    }

    /// Zigzag (0, −1, 1, −2, … → 0, 1, 2, 3, …) then [`BitWriter::varint`].
    fn signed(&mut self, value: i64) {
        self.varint(((value << 1) ^ (value >> 63)) as u64);
    }

    /// Pads the last byte with zero bits.
    fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

fn varint_bits(value: u64) -> u64 {
    let x = u128::from(value) + (1 << VARINT_ORDER);
    let width = u64::from(128 - x.leading_zeros());
    2 * width - u64::from(VARINT_ORDER + 1)
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8], len: usize) -> Self {
        BitReader {
            bytes,
            pos: 0,
            end: len.min(bytes.len()) * 8,
        }
    }

    fn remaining(&self) -> u64 {
        (self.end - self.pos) as u64
    }

    /// Up to 64 bits as an unsigned number.
    fn get(&mut self, width: u32) -> Result<u64> {
        if u64::from(width) > self.remaining() {
            return Err(HisaSmsError::Truncated);
        }
        let mut value = 0u64;
        let mut left = width;
        while left > 0 {
            let byte = *self
                .bytes
                .get(self.pos / 8)
                .ok_or(HisaSmsError::Truncated)?;
            let offset = (self.pos % 8) as u32;
            let available = 8 - offset;
            let take = available.min(left);
            let chunk = (u32::from(byte) >> (available - take)) & ((1 << take) - 1);
            value = (value << take) | u64::from(chunk);
            self.pos += take as usize;
            left -= take;
        }
        Ok(value)
    }

    fn flag(&mut self) -> Result<bool> {
        Ok(self.get(1)? == 1)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            // v + 8 ≤ 2^64 + 7 has at most 65 bits, so at most 61 zeros.
            if zeros > 64 - VARINT_ORDER {
                return Err(HisaSmsError::OutOfRange("number"));
            }
        }
        let low_width = zeros + VARINT_ORDER;
        let x = (1u128 << low_width) | u128::from(self.get(low_width)?);
        u64::try_from(x - (1 << VARINT_ORDER)).map_err(|_| HisaSmsError::OutOfRange("number"))
    }

    fn varint_u32(&mut self, what: &'static str) -> Result<u32> {
        u32::try_from(self.varint()?).map_err(|_| HisaSmsError::OutOfRange(what))
    }

    fn signed(&mut self) -> Result<i64> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// Only zero padding may follow the body, and less than a byte of it.
    fn finish(&mut self) -> Result<()> {
        let rest = self.remaining();
        if rest >= 8 || self.get(rest as u32)? != 0 {
            return Err(HisaSmsError::TrailingGarbage);
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Replay window
// ------------------------------------------------------------------------------------------------

/// Whether a counter may be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Freshness {
    Fresh,
    /// Seen before: answer "duplicate", store nothing.
    Replayed,
    /// More than 63 below the highest counter seen: it cannot be told apart
    /// from a replay any more.
    TooOld,
}

/// The counters seen from one device: the highest, and a bitmap of the 64
/// counters up to it (bit i = `highest − i`). Persisted by the server per
/// device; the default state has seen nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindow {
    pub highest: u32,
    pub seen: u64,
}

impl ReplayWindow {
    pub const SIZE: u32 = 64;

    pub fn check(&self, counter: u32) -> Freshness {
        if counter > self.highest {
            return Freshness::Fresh;
        }
        let age = self.highest - counter;
        if age >= Self::SIZE {
            Freshness::TooOld
        } else if self.seen & (1 << age) != 0 {
            Freshness::Replayed
        } else {
            Freshness::Fresh
        }
    }

    /// Records the counter; call only after the message was verified and
    /// stored. A counter older than the window changes nothing.
    pub fn accept(&mut self, counter: u32) {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift >= Self::SIZE {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = counter;
        } else if self.highest - counter < Self::SIZE {
            self.seen |= 1 << (self.highest - counter);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Replies
// ------------------------------------------------------------------------------------------------

/// The server's answer SMS, matched by the phone to its submission by counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub counter: u32,
    pub status: ReplyStatus,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplyStatus {
    Accepted,
    AcceptedWithWarnings,
    Duplicate,
    Rejected,
}

impl ReplyStatus {
    pub const ALL: [ReplyStatus; 4] = [
        ReplyStatus::Accepted,
        ReplyStatus::AcceptedWithWarnings,
        ReplyStatus::Duplicate,
        ReplyStatus::Rejected,
    ];

    /// The word in the reply text.
    pub fn code(self) -> &'static str {
        match self {
            ReplyStatus::Accepted => "OK",
            ReplyStatus::AcceptedWithWarnings => "WARN",
            ReplyStatus::Duplicate => "DUP",
            ReplyStatus::Rejected => "ERR",
        }
    }

    fn from_code(code: &str) -> Option<ReplyStatus> {
        ReplyStatus::ALL
            .into_iter()
            .find(|s| s.code().eq_ignore_ascii_case(code))
    }
}

impl fmt::Display for ReplyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// GSM 03.38's basic character set without its control characters: each
/// costs one septet, so a reply of 160 of them fits one SMS.
const GSM7_PRINTABLE: &str = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

impl Reply {
    /// `HISA <counter> <OK|WARN|DUP|ERR>[ <detail>]`, within one SMS: the
    /// detail is cut to fit, whitespace becomes a space and characters GSM
    /// 7-bit lacks become `?`.
    pub fn text(&self) -> String {
        let mut text = format!("HISA {} {}", self.counter, self.status.code());
        let detail = gsm7_detail(&self.detail);
        if !detail.is_empty() {
            text.push(' ');
            let room = MAX_SMS_CHARS.saturating_sub(text.chars().count());
            text.extend(detail.chars().take(room));
        }
        text.trim_end().to_string()
    }
}

fn gsm7_detail(detail: &str) -> String {
    detail
        .chars()
        .map(|c| match c {
            c if c.is_whitespace() || c.is_control() => ' ',
            c if GSM7_PRINTABLE.contains(c) => c,
            _ => '?',
        })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Reads a reply text; `None` when it is not one (any other SMS).
pub fn parse_reply(text: &str) -> Option<Reply> {
    let text = text.trim();
    let (keyword, rest) = text.split_once(' ')?;
    if !keyword.eq_ignore_ascii_case("HISA") {
        return None;
    }
    let (counter, rest) = rest.split_once(' ')?;
    if !counter.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let counter = counter.parse().ok()?;
    let (code, detail) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Reply {
        counter,
        status: ReplyStatus::from_code(code)?,
        detail: detail.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use time::macros::date;

    use super::*;

    const KEY: DeviceKey = [7; 32];

    /// The key of the worked example in docs/sms-format.md: bytes 0x00–0x1f.
    fn example_key() -> DeviceKey {
        std::array::from_fn(|i| i as u8)
    }

    fn monthly(iso: &str) -> Period {
        Period::parse(iso).unwrap()
    }

    fn form(values: Vec<FieldValue>) -> Envelope {
        Envelope {
            key_id: 12,
            counter: 1_500,
            message: Message::Form(FormSubmission {
                data_set: uid_hash24("BfMAe6Itzgt"),
                layout: 0xdead_beef,
                period: monthly("202501"),
                org_unit: uid_hash24("DiszpKrYNg8"),
                attribute_option_combo: 0,
                complete: true,
                values,
            }),
        }
    }

    fn counts(values: impl IntoIterator<Item = u64>) -> Vec<FieldValue> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| FieldValue {
                position: i as u16,
                value: Some(v.to_string()),
            })
            .collect()
    }

    fn value(position: u16, text: &str) -> FieldValue {
        FieldValue {
            position,
            value: Some(text.to_string()),
        }
    }

    /// Texts → frames → (reassembled) bytes → envelope, as a server would.
    fn receive(texts: &[String], key: &DeviceKey) -> Result<Envelope> {
        let mut parts = Vec::new();
        for text in texts {
            match read_frame(text)? {
                Frame::Whole(bytes) => return open(&bytes, key),
                Frame::Part(part) => parts.push(part),
            }
        }
        open(&reassemble(&parts)?, key)
    }

    fn sorted(mut envelope: Envelope) -> Envelope {
        let values = match &mut envelope.message {
            Message::Form(f) => &mut f.values,
            Message::Event(e) => &mut e.values,
        };
        values.sort_by_key(|v| v.position);
        envelope
    }

    /// The worked example of docs/sms-format.md; keep the two in step.
    fn example() -> (FormLayout, Envelope) {
        let layout = FormLayout::new(
            "BfMAe6Itzgt",
            [
                "GQY2lXrypjO",
                "s46m5MS0hxu",
                "pikOziyCXbM",
                "UOlfIjgN8X6",
                "x3Do5e7g4Qo",
            ]
            .map(|de| (de.to_string(), vec!["HllvX50cXC0".to_string()])),
        );
        let values = vec![
            value(0, "12"),
            value(1, "0"),
            FieldValue {
                position: 2,
                value: None,
            },
            value(3, "-3"),
            value(4, "007"),
        ];
        let envelope = Envelope {
            key_id: 7,
            counter: 42,
            message: Message::Form(FormSubmission {
                data_set: uid_hash24("BfMAe6Itzgt"),
                layout: layout.fingerprint(),
                period: monthly("202501"),
                org_unit: uid_hash24("DiszpKrYNg8"),
                attribute_option_combo: 0,
                complete: true,
                values,
            }),
        };
        (layout, envelope)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn worked_example() {
        let (layout, envelope) = example();
        let key = example_key();
        assert_eq!(layout.fields[1].data_element, "UOlfIjgN8X6");
        assert_eq!(layout.fingerprint(), 0x719f_6fce);
        assert_eq!(uid_hash24("BfMAe6Itzgt"), 0x7c_da44);
        assert_eq!(uid_hash24("DiszpKrYNg8"), 0x4c_f6f7);
        assert_eq!(period_index(&monthly("202501")), 300);
        let whole = seal(&envelope, &key).unwrap();
        assert_eq!(
            hex(&whole),
            "10f3207cda44719f6fce40130267b7bc5bf288f56b30303761747d00"
        );
        assert_eq!(hex(&message_mac(&key, &whole[..24])), "61747d00");
        assert_eq!(
            encode(&envelope, &key).unwrap(),
            ["*EPMgfNpEcZ9vzkATAme3vFvyiPVrMDA3YXR9AA"]
        );
        assert_eq!(
            receive(&encode(&envelope, &key).unwrap(), &key).unwrap(),
            envelope
        );
    }

    #[test]
    fn worked_multipart_example() {
        let key = example_key();
        let envelope = Envelope {
            key_id: 7,
            counter: 42,
            message: Message::Event(EventSubmission {
                event: "l7M1gUFK37v".into(),
                program: uid_hash24("lxAQ7Zs9VYR"),
                layout: FormLayout::for_program(
                    "lxAQ7Zs9VYR",
                    ["sWoqcoByYmD".to_string(), "qrur9Dvnyt5".to_string()],
                )
                .fingerprint(),
                org_unit: uid_hash24("DiszpKrYNg8"),
                occurred: date!(2025 - 03 - 14),
                attribute_option_combo: 0,
                completed: true,
                values: vec![
                    value(
                        0,
                        "Patient referred to the district hospital after three days of fever; \
                         family informed, transport arranged by the village health committee.",
                    ),
                    value(1, "39"),
                ],
            }),
        };
        assert_eq!(part_reference(7, 42), 0x77c8);
        assert_eq!(seal(&envelope, &key).unwrap().len(), 170);
        assert_eq!(days_since_2000(date!(2025 - 03 - 14)), 9204);
        assert_eq!(
            encode(&envelope, &key).unwrap(),
            [
                "*EXfIAhDzIbx1ganj1Ax+buY+XJM+uxM9vcAEfwirwSKgwujSytzoQOTKzMrk5MrIQOjeQOjQykDI0ubo5NLG6EDQ3ubg0ujC2EDCzOjK5EDo0OTKykDIwvLmQN7MQMzK7MrkdkDMwtrS2PJA0tzM3uTayshYQOg",
                "*EXfIEuTC3Obg3uToQMLk5MLczsrIQMTyQOjQykDs0tjYws7KQNDKwtjo0EDG3tra0ujoyspcL+42HUI",
            ]
        );
        assert_eq!(
            receive(&encode(&envelope, &key).unwrap(), &key).unwrap(),
            envelope
        );
    }

    // --- bit streams ---------------------------------------------------------------------------

    #[test]
    fn varint_sizes_favour_small_counts() {
        let cases = [
            (0, 4),
            (7, 4),
            (8, 6),
            (23, 6),
            (24, 8),
            (50, 8),
            (55, 8),
            (56, 10),
        ];
        for (value, bits) in cases {
            let mut w = BitWriter::default();
            w.varint(value);
            assert_eq!(w.bits as u64, bits, "{value}");
            assert_eq!(varint_bits(value), bits, "{value}");
        }
        assert_eq!(varint_bits(u64::MAX), 126);
    }

    #[test]
    fn varint_edges_round_trip() {
        let unsigned = [
            0,
            1,
            7,
            8,
            55,
            56,
            1 << 32,
            u64::MAX - 8,
            u64::MAX - 7,
            u64::MAX,
        ];
        let signed = [0, -1, 1, i64::MIN, i64::MAX, -65_536];
        let mut w = BitWriter::default();
        unsigned.iter().for_each(|v| w.varint(*v));
        signed.iter().for_each(|v| w.signed(*v));
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes, bytes.len());
        for v in unsigned {
            assert_eq!(r.varint().unwrap(), v);
        }
        for v in signed {
            assert_eq!(r.signed().unwrap(), v);
        }
        r.finish().unwrap();
    }

    #[test]
    fn varint_rejects_overlong_and_overflowing_input() {
        // 61 zeros then a 65-bit number above u64::MAX + 8.
        let mut w = BitWriter::default();
        w.put(0, 61);
        w.put(u64::MAX, 64);
        w.put(1, 1);
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes, bytes.len());
        assert_eq!(r.varint(), Err(HisaSmsError::OutOfRange("number")));
        let zeros = [0u8; 10];
        let mut r = BitReader::new(&zeros, zeros.len());
        assert_eq!(r.varint(), Err(HisaSmsError::OutOfRange("number")));
        let mut r = BitReader::new(&zeros[..2], 2);
        assert_eq!(r.varint(), Err(HisaSmsError::Truncated));
    }

    proptest! {
        #[test]
        fn bit_stream_round_trips(fields in prop::collection::vec((any::<u64>(), 0u32..=64), 0..40)) {
            let mut w = BitWriter::default();
            for (value, width) in &fields {
                w.put(*value, *width);
            }
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes, bytes.len());
            for (value, width) in fields {
                let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
                prop_assert_eq!(r.get(width).unwrap(), value & mask);
            }
            r.finish().unwrap();
        }

        #[test]
        fn varints_round_trip(values in prop::collection::vec(any::<u64>(), 0..20), signed in prop::collection::vec(any::<i64>(), 0..20)) {
            let mut w = BitWriter::default();
            values.iter().for_each(|v| w.varint(*v));
            signed.iter().for_each(|v| w.signed(*v));
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes, bytes.len());
            for v in values {
                prop_assert_eq!(r.varint().unwrap(), v);
            }
            for v in signed {
                prop_assert_eq!(r.signed().unwrap(), v);
            }
        }
    }

    // --- values --------------------------------------------------------------------------------

    #[test]
    fn only_canonical_integers_use_the_integer_tags() {
        assert_eq!(canonical_integer("0"), Some((false, 0)));
        assert_eq!(canonical_integer("50"), Some((false, 50)));
        assert_eq!(canonical_integer("-3"), Some((true, 3)));
        assert_eq!(
            canonical_integer("18446744073709551615"),
            Some((false, u64::MAX))
        );
        assert_eq!(
            canonical_integer("-18446744073709551615"),
            Some((true, u64::MAX))
        );
        for text in [
            "",
            "-",
            "-0",
            "007",
            "00",
            "+7",
            "1.0",
            "1e3",
            " 1",
            "18446744073709551616",
            "٣",
        ] {
            assert_eq!(canonical_integer(text), None, "{text:?}");
        }
    }

    #[test]
    fn awkward_values_come_back_as_typed() {
        let texts = [
            "007",
            "-0",
            "+5",
            "",
            "true",
            "3.14",
            "2025-01-31",
            "Kɔnɔ",
            "😀",
            "-18446744073709551616",
            "18446744073709551616",
            "0",
            "-1",
            "a\nb",
        ];
        let mut values: Vec<FieldValue> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| value(i as u16, t))
            .collect();
        values.push(FieldValue {
            position: 40,
            value: None,
        });
        let envelope = form(values);
        let texts = encode(&envelope, &KEY).unwrap();
        assert_eq!(receive(&texts, &KEY).unwrap(), envelope);
    }

    #[test]
    fn values_may_be_given_in_any_order_but_not_twice() {
        let envelope = form(vec![value(3, "1"), value(0, "2")]);
        let opened = receive(&encode(&envelope, &KEY).unwrap(), &KEY).unwrap();
        assert_eq!(opened, sorted(envelope));
        let twice = form(vec![value(3, "1"), value(3, "2")]);
        assert_eq!(
            encode(&twice, &KEY),
            Err(HisaSmsError::DuplicatePosition(3))
        );
    }

    #[test]
    fn sparse_values_use_the_position_list() {
        let sparse = form(vec![value(5_000, "1"), value(65_535, "2")]);
        let bytes = seal(&sparse, &KEY).unwrap();
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
        assert_eq!(open(&bytes, &KEY).unwrap(), sparse);
        let empty = form(Vec::new());
        assert_eq!(open(&seal(&empty, &KEY).unwrap(), &KEY).unwrap(), empty);
    }

    #[test]
    fn oversized_values_and_messages_are_refused() {
        let huge = form(vec![value(0, &"x".repeat(MAX_MESSAGE_BYTES + 1))]);
        assert_eq!(
            encode(&huge, &KEY),
            Err(HisaSmsError::ValueTooLong {
                position: 0,
                bytes: MAX_MESSAGE_BYTES + 1
            })
        );
        let big = form(vec![value(0, &"x".repeat(MAX_MESSAGE_BYTES - 20))]);
        assert!(matches!(
            encode(&big, &KEY),
            Err(HisaSmsError::TooManyParts { parts: 16, .. })
        ));
        // The largest message that fits takes exactly 15 parts.
        let fits = form(vec![value(0, &"x".repeat(MAX_MESSAGE_BYTES - 30))]);
        let texts = encode(&fits, &KEY).unwrap();
        assert_eq!(texts.len(), MAX_PARTS);
        assert!(texts.iter().all(|t| t.len() <= MAX_SMS_CHARS));
        assert_eq!(receive(&texts, &KEY).unwrap(), fits);
    }

    #[test]
    fn hashes_wider_than_24_bits_are_refused() {
        let mut envelope = form(Vec::new());
        if let Message::Form(f) = &mut envelope.message {
            f.org_unit = 1 << 24;
        }
        assert_eq!(
            encode(&envelope, &KEY),
            Err(HisaSmsError::OutOfRange("organisation unit hash"))
        );
    }

    // --- sizes ---------------------------------------------------------------------------------

    /// Deterministic small counts 0–50 (the brief's typical monthly form).
    fn small_counts(n: usize) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(2025);
        (0..n).map(|_| rng.gen_range(0..=50)).collect()
    }

    #[test]
    fn a_forty_value_monthly_form_fits_one_sms() {
        let envelope = form(counts(small_counts(40)));
        let texts = encode(&envelope, &KEY).unwrap();
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(texts[0].len() <= MAX_SMS_CHARS);
        // Even the worst case of 0–50 (every value ≥ 24) fits.
        let worst = form(counts(std::iter::repeat_n(50, 40)));
        assert_eq!(encode(&worst, &KEY).unwrap().len(), 1);
        for n in [10, 40, 100] {
            let texts = encode(&form(counts(small_counts(n))), &KEY).unwrap();
            let chars: usize = texts.iter().map(String::len).sum();
            println!("{n:>3} values: {} SMS, {chars} characters", texts.len());
        }
    }

    // --- UIDs ----------------------------------------------------------------------------------

    #[test]
    fn event_uids_pack_into_66_bits() {
        for uid in [
            "a0000000000",
            "zzzzzzzzzzz",
            "ZZZZZZZZZZZ",
            "l7M1gUFK37v",
            "A9z8Y7x6W5v",
        ] {
            assert_eq!(unpack_uid(pack_uid(uid).unwrap()).unwrap(), uid);
        }
        assert!(pack_uid("zzzzzzzzzzz").unwrap() < 1 << 66);
        for bad in [
            "",
            "0bcdefghijk",
            "abcdefghij",
            "abcdefghijkl",
            "abc-efghijk",
            "abcdéfghijk",
        ] {
            assert!(
                matches!(pack_uid(bad), Err(HisaSmsError::InvalidUid { .. })),
                "{bad:?}"
            );
        }
        // 62 and 63 are not characters; a digit first is not a UID.
        assert!(matches!(
            unpack_uid(63),
            Err(HisaSmsError::InvalidUid { .. })
        ));
        assert!(matches!(
            unpack_uid(0),
            Err(HisaSmsError::InvalidUid { .. })
        ));
    }

    #[test]
    fn events_with_bad_uids_are_refused() {
        let envelope = Envelope {
            key_id: 1,
            counter: 1,
            message: Message::Event(EventSubmission {
                event: "not a uid".into(),
                program: 1,
                layout: 2,
                org_unit: 3,
                occurred: date!(2025 - 03 - 14),
                attribute_option_combo: 0,
                completed: true,
                values: Vec::new(),
            }),
        };
        assert!(matches!(
            encode(&envelope, &KEY),
            Err(HisaSmsError::InvalidUid { .. })
        ));
    }

    // --- periods -------------------------------------------------------------------------------

    /// Every period of every type from 1970 to 2100, against stepping.
    #[test]
    fn period_index_counts_periods_for_every_type() {
        for period_type in PeriodType::all() {
            assert_eq!(period_index(&Period::containing(*period_type, EPOCH)), 0);
            let mut p = Period::containing(*period_type, date!(1970 - 01 - 01));
            let mut expected = period_index(&p);
            while p.start_date().year() <= 2100 {
                assert_eq!(period_index(&p), expected, "{period_type} {p}");
                assert_eq!(period_from_index(*period_type, expected), Ok(p), "{p}");
                p = p.next();
                expected += 1;
            }
        }
    }

    /// The origin table of docs/sms-format.md.
    #[test]
    fn period_origins_match_the_spec() {
        let origins = [
            "2000-01-01",
            "1999-12-27",
            "1999-12-29",
            "1999-12-30",
            "1999-12-31",
            "2000-01-01",
            "1999-12-26",
            "1999-12-20",
            "2000-01-01",
            "2000-01-01",
            "2000-01-01",
            "1999-11-01",
            "2000-01-01",
            "1999-10-01",
            "1999-11-01",
            "2000-01-01",
            "1999-02-01",
            "1999-04-01",
            "1999-07-01",
            "1999-08-01",
            "1999-09-01",
            "1999-10-01",
            "1999-11-01",
            "2000-01-01",
        ];
        for (period_type, origin) in PeriodType::all().iter().zip(origins) {
            let p = Period::containing(*period_type, EPOCH);
            assert_eq!(p.start_date().to_string(), origin, "{period_type}");
        }
        assert_eq!(
            Period::containing(PeriodType::BiWeekly, EPOCH).iso(),
            "1999BiW26"
        );
        assert_eq!(biweek_number(date!(1999 - 12 - 20)), -1);
        assert_eq!(period_index(&Period::parse("2000W1").unwrap()), 1);
        assert_eq!(period_index(&Period::parse("1999").unwrap()), -1);
        // 2000–2003 have 26 bi-weeks each; 2004 has 53 weeks, so a BiW27.
        assert_eq!(period_index(&Period::parse("2000BiW1").unwrap()), 1);
        assert_eq!(
            period_index(&Period::parse("2004BiW27").unwrap()),
            1 + 4 * 26 + 26
        );
        assert_eq!(
            period_index(&Period::parse("2005BiW1").unwrap()),
            1 + 4 * 26 + 27
        );
    }

    #[test]
    fn periods_outside_the_range_are_refused() {
        assert_eq!(
            period_from_index(PeriodType::Yearly, i64::MAX),
            Err(HisaSmsError::OutOfRange("period index"))
        );
        for period_type in PeriodType::all() {
            for index in [i64::MIN, i64::MAX, -10_000_000, 10_000_000] {
                assert!(period_from_index(*period_type, index).is_err());
            }
        }
        let mut envelope = form(Vec::new());
        if let Message::Form(f) = &mut envelope.message {
            f.period = Period::containing(PeriodType::Yearly, date!(9999 - 06 - 01));
        }
        assert!(matches!(
            encode(&envelope, &KEY),
            Err(HisaSmsError::PeriodOutOfRange(_))
        ));
    }

    fn period_strategy(years: std::ops::RangeInclusive<i32>) -> impl Strategy<Value = Period> {
        let first = jd(Date::from_calendar_date(*years.start(), Month::January, 1).unwrap());
        let last = jd(Date::from_calendar_date(*years.end(), Month::December, 31).unwrap());
        (prop::sample::select(PeriodType::all()), first..=last)
            .prop_map(|(t, day)| Period::containing(t, date_from_jd(day).unwrap()))
    }

    proptest! {
        #[test]
        fn period_index_round_trips(p in period_strategy(2..=9997)) {
            prop_assert_eq!(period_from_index(p.period_type(), period_index(&p)), Ok(p));
            prop_assert_eq!(period_index(&p.next()), period_index(&p) + 1);
        }
    }

    // --- layouts -------------------------------------------------------------------------------

    #[test]
    fn layouts_sort_and_look_up() {
        let layout = FormLayout::new(
            "BfMAe6Itzgt",
            [
                (
                    "s46m5MS0hxu".to_string(),
                    vec!["Prlt0C1RF0s".to_string(), "O3Jd2T1mVqX".to_string()],
                ),
                ("GQY2lXrypjO".to_string(), vec!["HllvX50cXC0".to_string()]),
                ("s46m5MS0hxu".to_string(), vec!["O3Jd2T1mVqX".to_string()]),
            ],
        );
        let order: Vec<(&str, &str)> = layout
            .fields
            .iter()
            .map(|f| (f.data_element.as_str(), f.category_option_combo.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("GQY2lXrypjO", "HllvX50cXC0"),
                ("s46m5MS0hxu", "O3Jd2T1mVqX"),
                ("s46m5MS0hxu", "Prlt0C1RF0s"),
            ]
        );
        assert_eq!(layout.position("s46m5MS0hxu", "Prlt0C1RF0s"), Some(2));
        assert_eq!(layout.position("s46m5MS0hxu", "HllvX50cXC0"), None);
        assert_eq!(layout.field(0).unwrap().data_element, "GQY2lXrypjO");
        assert_eq!(layout.field(3), None);
        let mut other = layout.clone();
        other.owner = "Ss2T1qzNgu9".into();
        assert_ne!(layout.fingerprint(), other.fingerprint());
        let mut fewer = layout.clone();
        fewer.fields.pop();
        assert_ne!(layout.fingerprint(), fewer.fingerprint());
        let program = FormLayout::for_program("lxAQ7Zs9VYR", ["b".to_string(), "a".to_string()]);
        assert_eq!(program.position("a", ""), Some(0));
        assert_eq!(program.position("b", ""), Some(1));
    }

    #[test]
    fn fingerprints_keep_strings_apart() {
        // Without length prefixes these two would serialise alike.
        let a = FormLayout::new("ds", [("ab".to_string(), vec!["c".to_string()])]);
        let b = FormLayout::new("ds", [("a".to_string(), vec!["bc".to_string()])]);
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn hashes_are_sha256_prefixes() {
        // SHA-256("abc") = ba7816bf 8f01cfea …
        assert_eq!(uid_hash24("abc"), 0xba7816);
        let layout = FormLayout::new("ds", []);
        let mut expected = Sha256::new();
        expected.update(b"hisa-sms-layout-v1\x00\x00\x00\x02ds\x00\x00\x00\x00");
        let digest = expected.finalize();
        assert_eq!(
            layout.fingerprint(),
            u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
        );
    }

    fn elements_strategy() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
        prop::collection::vec(
            (
                "[A-Za-z][A-Za-z0-9]{10}",
                prop::collection::vec("[A-Za-z][A-Za-z0-9]{10}", 0..4),
            ),
            0..12,
        )
    }

    proptest! {
        #[test]
        fn layout_ignores_input_order(elements in elements_strategy(), seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut shuffled = elements.clone();
            shuffled.shuffle(&mut rng);
            for (_, combos) in &mut shuffled {
                combos.shuffle(&mut rng);
            }
            let a = FormLayout::new("BfMAe6Itzgt", elements.clone());
            let b = FormLayout::new("BfMAe6Itzgt", shuffled);
            prop_assert_eq!(a.fingerprint(), b.fingerprint());
            prop_assert!(a.fields.windows(2).all(|w| w[0] < w[1]));
            for (i, field) in a.fields.iter().enumerate() {
                prop_assert_eq!(
                    a.position(&field.data_element, &field.category_option_combo),
                    Some(i as u16)
                );
            }
            prop_assert_eq!(&a, &b);
        }
    }

    // --- round trips ---------------------------------------------------------------------------

    fn uid_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z][A-Za-z0-9]{10}"
    }

    fn value_strategy() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            4 => (0u64..=50).prop_map(|v| Some(v.to_string())),
            1 => Just(None),
            1 => any::<i64>().prop_map(|v| Some(v.to_string())),
            1 => any::<u64>().prop_map(|v| Some(v.to_string())),
            1 => "-?[0-9]{1,6}".prop_map(Some),
            1 => "\\PC{0,8}".prop_map(Some),
            1 => prop::sample::select(vec!["-0", "", "true", "007", "12.5", "2025-01-31", "+3"])
                .prop_map(|s| Some(s.to_string())),
        ]
    }

    fn values_strategy() -> impl Strategy<Value = Vec<FieldValue>> {
        let position = prop_oneof![8 => 0u16..120, 1 => any::<u16>()];
        prop::collection::btree_map(position, value_strategy(), 0..40).prop_map(|map| {
            map.into_iter()
                .map(|(position, value)| FieldValue { position, value })
                .collect()
        })
    }

    fn hash_strategy() -> impl Strategy<Value = u32> {
        0u32..1 << 24
    }

    fn form_strategy() -> impl Strategy<Value = Message> {
        (
            hash_strategy(),
            any::<u32>(),
            period_strategy(1970..=2100),
            hash_strategy(),
            prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
            any::<bool>(),
            values_strategy(),
        )
            .prop_map(
                |(data_set, layout, period, org_unit, aoc, complete, values)| {
                    Message::Form(FormSubmission {
                        data_set,
                        layout,
                        period,
                        org_unit,
                        attribute_option_combo: aoc,
                        complete,
                        values,
                    })
                },
            )
    }

    fn event_strategy() -> impl Strategy<Value = Message> {
        let first = jd(date!(1900 - 01 - 01));
        let last = jd(date!(2200 - 12 - 31));
        (
            uid_strategy(),
            hash_strategy(),
            any::<u32>(),
            hash_strategy(),
            first..=last,
            prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
            any::<bool>(),
            values_strategy(),
        )
            .prop_map(
                |(event, program, layout, org_unit, day, aoc, completed, values)| {
                    Message::Event(EventSubmission {
                        event,
                        program,
                        layout,
                        org_unit,
                        occurred: date_from_jd(day).unwrap(),
                        attribute_option_combo: aoc,
                        completed,
                        values,
                    })
                },
            )
    }

    fn envelope_strategy() -> impl Strategy<Value = Envelope> {
        (
            prop_oneof![0u32..100, any::<u32>()],
            prop_oneof![0u32..10_000, any::<u32>()],
            prop_oneof![form_strategy(), event_strategy()],
        )
            .prop_map(|(key_id, counter, message)| Envelope {
                key_id,
                counter,
                message,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn envelopes_round_trip(envelope in envelope_strategy(), key in any::<[u8; 32]>(), seed in any::<u64>()) {
            let texts = match encode(&envelope, &key) {
                Err(HisaSmsError::TooManyParts { bytes, .. }) => {
                    prop_assert!(bytes > MAX_MESSAGE_BYTES);
                    return Ok(());
                }
                other => other.unwrap(),
            };
            prop_assert!((1..=MAX_PARTS).contains(&texts.len()));
            for text in &texts {
                prop_assert!(text.len() <= MAX_SMS_CHARS);
                prop_assert!(is_hisa(text));
                prop_assert!(text[1..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
            }
            let whole = seal(&envelope, &key).unwrap();
            prop_assert_eq!(peek_key(&whole), Ok((envelope.key_id, envelope.counter)));
            let opened = if texts.len() == 1 {
                prop_assert_eq!(read_frame(&texts[0]), Ok(Frame::Whole(whole.clone())));
                open(&whole, &key)
            } else {
                let mut parts: Vec<Part> = texts
                    .iter()
                    .map(|t| match read_frame(t) {
                        Ok(Frame::Part(p)) => p,
                        other => panic!("not a part: {other:?}"),
                    })
                    .collect();
                let mut rng = StdRng::seed_from_u64(seed);
                let duplicates: Vec<Part> = parts
                    .iter()
                    .filter(|_| rng.gen_bool(0.3))
                    .cloned()
                    .collect();
                parts.extend(duplicates);
                parts.shuffle(&mut rng);
                let bytes = reassemble(&parts).unwrap();
                prop_assert_eq!(&bytes, &whole);
                open(&bytes, &key)
            };
            prop_assert_eq!(opened, Ok(envelope));
        }

        #[test]
        fn any_flipped_bit_is_caught(envelope in envelope_strategy(), key in any::<[u8; 32]>()) {
            let Ok(whole) = seal(&envelope, &key) else { return Ok(()) };
            for bit in 0..whole.len() * 8 {
                let mut flipped = whole.clone();
                flipped[bit / 8] ^= 0x80 >> (bit % 8);
                prop_assert!(open(&flipped, &key).is_err(), "bit {}", bit);
            }
            let mut other_key = key;
            other_key[0] ^= 1;
            prop_assert_eq!(open(&whole, &other_key), Err(HisaSmsError::BadMac));
        }
    }

    // --- hostile input -------------------------------------------------------------------------

    fn base64_text(bytes: &[u8]) -> String {
        frame_text(bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}", star in "\\*[A-Za-z0-9+/=]{0,200}") {
            let _ = read_frame(&text);
            let _ = read_frame(&star);
            let _ = parse_reply(&text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), first in 0u8..=255) {
            let _ = read_frame(&base64_text(&bytes));
            let _ = open(&bytes, &KEY);
            let _ = peek_key(&bytes);
            // A valid header and MAC lets the body decoder see arbitrary bits.
            let mut body = bytes.clone();
            body.insert(0, first & 0xf0);
            let mac = message_mac(&KEY, &body);
            body.extend_from_slice(&mac);
            let _ = open(&body, &KEY);
        }

        #[test]
        fn arbitrary_parts_never_panic(
            parts in prop::collection::vec(
                (0u16..3, any::<u8>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..20)),
                0..20
            )
        ) {
            let parts: Vec<Part> = parts
                .into_iter()
                .map(|(reference, index, total, chunk)| Part { reference, index, total, chunk })
                .collect();
            let _ = reassemble(&parts);
        }

        /// Mutated real messages, re-signed so that the MAC passes.
        #[test]
        fn resigned_mutations_never_panic(envelope in envelope_strategy(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
            let Ok(whole) = seal(&envelope, &KEY) else { return Ok(()) };
            let mut body = whole[..whole.len() - MAC_BYTES].to_vec();
            for (index, byte) in edits {
                let i = index.index(body.len());
                body[i] = if i == 0 { body[i] } else { byte };
            }
            body.truncate(1 + cut.index(body.len()));
            let mac = message_mac(&KEY, &body);
            body.extend_from_slice(&mac);
            if let Ok(decoded) = open(&body, &KEY) {
                // Whatever decodes must survive a re-encode unchanged.
                if let Ok(again) = seal(&decoded, &KEY) {
                    prop_assert_eq!(open(&again, &KEY), Ok(decoded));
                }
            }
        }
    }

    // --- frames and errors ---------------------------------------------------------------------

    #[test]
    fn frame_errors_are_named() {
        assert_eq!(read_frame("hello"), Err(HisaSmsError::NotHisa));
        assert_eq!(read_frame("*ab$d"), Err(HisaSmsError::NotBase64));
        assert_eq!(read_frame("*"), Err(HisaSmsError::Truncated));
        assert_eq!(
            read_frame(&base64_text(&[0x20])),
            Err(HisaSmsError::UnknownVersion(2))
        );
        assert_eq!(
            read_frame(&base64_text(&[0x12])),
            Err(HisaSmsError::UnknownFrameKind(2))
        );
        assert!(matches!(
            read_frame(&base64_text(&[0x11, 0, 0])),
            Err(HisaSmsError::BadPartHeader(_))
        ));
        for counts in [0x01, 0x00, 0x10, 0x22, 0x0f + 0x10 * 15, 0x10] {
            assert!(matches!(
                read_frame(&base64_text(&[0x11, 0, 0, counts, 1])),
                Err(HisaSmsError::BadPartHeader(_))
            ));
        }
        assert!(matches!(
            read_frame(&base64_text(&[0x11, 0, 0, 0x02])),
            Err(HisaSmsError::BadPartHeader(_))
        ));
        // Surrounding whitespace and padding, as gateways may add, are fine.
        let whole = seal(&form(counts([1, 2, 3])), &KEY).unwrap();
        let padded = format!(
            "  *{}\n",
            base64::engine::general_purpose::STANDARD.encode(&whole)
        );
        assert!(padded.contains('='));
        assert_eq!(read_frame(&padded), Ok(Frame::Whole(whole)));
        assert!(is_hisa(" \n*abc"));
        assert!(!is_hisa("abc*"));
    }

    #[test]
    fn open_checks_header_mac_and_end() {
        let whole = seal(&form(counts([1, 2, 3])), &KEY).unwrap();
        assert_eq!(open(&[], &KEY), Err(HisaSmsError::Truncated));
        assert_eq!(open(&whole[..4], &KEY), Err(HisaSmsError::Truncated));
        assert_eq!(
            open(&whole[..MAC_BYTES + 1], &KEY),
            Err(HisaSmsError::BadMac)
        );
        assert_eq!(open(&whole, &[0; 32]), Err(HisaSmsError::BadMac));
        let mut part = whole.clone();
        part[0] = 0x11;
        assert_eq!(open(&part, &KEY), Err(HisaSmsError::NotWhole));
        assert_eq!(peek_key(&part), Err(HisaSmsError::NotWhole));
        let resign = |mut body: Vec<u8>| {
            let mac = message_mac(&KEY, &body);
            body.extend_from_slice(&mac);
            body
        };
        let body = whole[..whole.len() - MAC_BYTES].to_vec();
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(
            open(&resign(longer), &KEY),
            Err(HisaSmsError::TrailingGarbage)
        );
        let shorter = body[..body.len() - 1].to_vec();
        assert_eq!(open(&resign(shorter), &KEY), Err(HisaSmsError::Truncated));
        let mut unknown_type = BitWriter::default();
        unknown_type.put(0x10, 8);
        unknown_type.varint(1);
        unknown_type.varint(1);
        unknown_type.put(5, 4);
        assert_eq!(
            open(&resign(unknown_type.finish()), &KEY),
            Err(HisaSmsError::UnknownMessageType(5))
        );
    }

    fn parts_of(envelope: &Envelope) -> Vec<Part> {
        encode(envelope, &KEY)
            .unwrap()
            .iter()
            .map(|t| match read_frame(t).unwrap() {
                Frame::Part(p) => p,
                Frame::Whole(_) => panic!("expected parts"),
            })
            .collect()
    }

    #[test]
    fn multipart_problems_are_reported() {
        let envelope = form(vec![value(0, &"é".repeat(200))]);
        let parts = parts_of(&envelope);
        assert_eq!(parts.len(), 4);
        assert!(parts
            .iter()
            .all(|p| p.reference == part_reference(12, 1_500)));
        assert_eq!(
            reassemble(&parts[1..3]),
            Err(HisaSmsError::MissingParts {
                total: 4,
                missing: vec![0, 3]
            })
        );
        assert!(matches!(
            reassemble(&[]),
            Err(HisaSmsError::MissingParts { .. })
        ));
        let mut other_total = parts.clone();
        other_total[1].total = 5;
        assert!(matches!(
            reassemble(&other_total),
            Err(HisaSmsError::InconsistentParts(_))
        ));
        let mut other_ref = parts.clone();
        other_ref[2].reference ^= 1;
        assert!(matches!(
            reassemble(&other_ref),
            Err(HisaSmsError::InconsistentParts(_))
        ));
        let mut conflicting = parts.clone();
        let mut copy = parts[2].clone();
        copy.chunk[0] ^= 1;
        conflicting.push(copy);
        assert!(matches!(
            reassemble(&conflicting),
            Err(HisaSmsError::InconsistentParts(_))
        ));
        // All references changed together: the message's own key and
        // counter give it away.
        let mut relabelled = parts.clone();
        relabelled.iter_mut().for_each(|p| p.reference ^= 1);
        assert!(matches!(
            reassemble(&relabelled),
            Err(HisaSmsError::InconsistentParts(_))
        ));
        // A part of another message with the same shape fails the MAC.
        let mut other = envelope.clone();
        if let Message::Form(f) = &mut other.message {
            f.values[0].value = Some("è".repeat(200));
        }
        let mut mixed = parts.clone();
        mixed[3] = parts_of(&other)[3].clone();
        assert_eq!(
            open(&reassemble(&mixed).unwrap(), &KEY),
            Err(HisaSmsError::BadMac)
        );
        assert_eq!(open(&reassemble(&parts).unwrap(), &KEY), Ok(envelope));
    }

    // --- replay window -------------------------------------------------------------------------

    #[test]
    fn replay_window_basics() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(0), Freshness::Fresh);
        w.accept(0);
        assert_eq!(w.check(0), Freshness::Replayed);
        w.accept(100);
        assert_eq!(w.check(100), Freshness::Replayed);
        assert_eq!(w.check(37), Freshness::Fresh);
        assert_eq!(w.check(36), Freshness::TooOld);
        assert_eq!(w.check(0), Freshness::TooOld);
        w.accept(37);
        assert_eq!(w.check(37), Freshness::Replayed);
        w.accept(u32::MAX);
        assert_eq!(w.check(u32::MAX), Freshness::Replayed);
        assert_eq!(w.check(u32::MAX - 63), Freshness::Fresh);
        assert_eq!(w.check(u32::MAX - 64), Freshness::TooOld);
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<ReplayWindow>(&json).unwrap(), w);
    }

    /// The window's answer for a set of accepted counters, by brute force.
    fn model(accepted: &BTreeMap<u32, ()>, counter: u32) -> Freshness {
        let highest = accepted.keys().next_back().copied().unwrap_or(0);
        if u64::from(counter) + 64 <= u64::from(highest) {
            Freshness::TooOld
        } else if accepted.contains_key(&counter) {
            Freshness::Replayed
        } else {
            Freshness::Fresh
        }
    }

    proptest! {
        #[test]
        fn replay_window_matches_a_set(
            start in prop_oneof![Just(0u32), any::<u32>()],
            steps in prop::collection::vec((-80i64..80, any::<bool>()), 0..200)
        ) {
            let mut window = ReplayWindow::default();
            let mut accepted = BTreeMap::new();
            let mut counter = i64::from(start);
            for (delta, accept) in steps {
                counter = (counter + delta).clamp(0, i64::from(u32::MAX));
                let c = counter as u32;
                let expected = model(&accepted, c);
                prop_assert_eq!(window.check(c), expected, "counter {}", c);
                if accept && expected == Freshness::Fresh {
                    window.accept(c);
                    accepted.insert(c, ());
                }
            }
        }
    }

    // --- replies -------------------------------------------------------------------------------

    #[test]
    fn replies_read_and_write() {
        let reply = Reply {
            counter: 1234,
            status: ReplyStatus::Accepted,
            detail: "38 values stored".into(),
        };
        assert_eq!(reply.text(), "HISA 1234 OK 38 values stored");
        assert_eq!(parse_reply(&reply.text()), Some(reply));
        let bare = Reply {
            counter: 7,
            status: ReplyStatus::Duplicate,
            detail: String::new(),
        };
        assert_eq!(bare.text(), "HISA 7 DUP");
        assert_eq!(parse_reply("HISA 7 DUP"), Some(bare));
        assert_eq!(
            parse_reply(" hisa 9 err form changed, sync the phone\n")
                .map(|r| (r.counter, r.status)),
            Some((9, ReplyStatus::Rejected))
        );
        for text in [
            "HISA",
            "HISA x OK",
            "HISA 1 MAYBE",
            "HISA +1 OK",
            "RESULT 1 OK",
            "HISA 99999999999 OK",
            "",
        ] {
            assert_eq!(parse_reply(text), None, "{text:?}");
        }
        let long = Reply {
            counter: u32::MAX,
            status: ReplyStatus::AcceptedWithWarnings,
            detail: "wärning {braces} ✓\ttab ".repeat(20),
        };
        let text = long.text();
        assert_eq!(text.chars().count(), MAX_SMS_CHARS);
        assert!(text.starts_with("HISA 4294967295 WARN wärning ?braces? ? tab"));
        assert!(text.chars().all(|c| c == ' ' || GSM7_PRINTABLE.contains(c)));
    }

    proptest! {
        #[test]
        fn replies_fit_one_sms_and_parse_back(counter in any::<u32>(), status in prop::sample::select(ReplyStatus::ALL.to_vec()), detail in "\\PC{0,200}") {
            let reply = Reply { counter, status, detail };
            let text = reply.text();
            prop_assert!(text.chars().count() <= MAX_SMS_CHARS);
            prop_assert!(text.chars().all(|c| c == ' ' || GSM7_PRINTABLE.contains(c)));
            let parsed = parse_reply(&text).unwrap();
            prop_assert_eq!(parsed.counter, counter);
            prop_assert_eq!(parsed.status, status);
            prop_assert_eq!(parsed.text(), text);
        }
    }
}
