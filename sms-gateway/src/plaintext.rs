//! Plain-text SMS commands typed by people on basic phones: finding the
//! command word, splitting codes and values, and the period a report is for.
//! Pure functions: no I/O, no clock (the caller passes "today").
//!
//! Five ways of writing a report are understood (see [`Dialect`]):
//!
//! | Dialect | Example | Where it comes from |
//! |---|---|---|
//! | [`Dialect::KeyValue`] | `anc a=1\|b=2` | DHIS2's `KEY_VALUE_PARSER` (reference B3) |
//! | [`Dialect::Positional`] | `1!ANC!1#2#3` | CHT "muvuku": values by field order |
//! | [`Dialect::Tagged`] | `J1!ANC!a#1#b#2` | CHT "javarosa": tag, value, tag, value |
//! | [`Dialect::TextForms`] | `ANC#A 1#B-2#C3` | CHT TextForms: tagged, order-free |
//! | [`Dialect::Compact`] | `ANC 1 "two words" 3` | CHT compact TextForms: by field order |
//!
//! Decisions where the sources leave room (each has a unit test):
//! - DHIS2 key-value codes are matched case-sensitively (as DHIS2 does);
//!   TextForms and `J1!` tags case-insensitively. Output always uses the
//!   command's own spelling of a code, in the command's code order.
//! - A repeated code keeps its last value (DHIS2's rule), in every dialect.
//! - A code with an empty value counts as absent.
//! - Codes the command does not know are returned in
//!   [`ParsedCommand::unknown_codes`], never dropped silently.
//! - TextForms: between a tag and its value any run of spaces, `-` and `!`
//!   is skipped, so `RPY!!2012` and `RPY--2012` both give `RPY` = `2012`
//!   (as CHT does). A consequence: a negative number cannot be written in
//!   TextForms (`TMP -5` gives `5`); use the key=value style for those.
//!   When codes overlap (`A1`, `A12`) the longest matching code wins.
//! - Compact: `""` leaves a field empty (skips it); an unclosed `"` runs to
//!   the end of the message. Surplus words go to the last free-text field
//!   (joined by single spaces); without one, surplus words are an error.
//! - The `ddMM` date token (B5) is recognised in the key=value style only:
//!   in the other styles a 4-digit number is a value.

use std::fmt;

use hisa_shared::period::{Period, PeriodType};
use serde::{Deserialize, Serialize};
use time::{Date, Month};

/// How a plain-text command is written. Stored on a command (a Hisa
/// extension of `/api/smsCommands`); `Auto` accepts every style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Dialect {
    /// Recognise the style from the text (see [`parse`]).
    #[default]
    Auto,
    /// DHIS2: `anc a=1|b=2` (the command's separator instead of `=`).
    KeyValue,
    /// CHT: `1!CODE!v1#v2#v3`, values by the command's code order.
    Positional,
    /// CHT: `J1!CODE!tag#value#tag#value`, `\#` for a literal `#`.
    Tagged,
    /// CHT TextForms: `CODE#TAG value#TAG value`, order-free.
    #[serde(alias = "TEXTFORMS")]
    TextForms,
    /// CHT compact TextForms: `CODE v1 "two words" v3`, by code order.
    Compact,
}

impl Dialect {
    pub fn as_str(&self) -> &'static str {
        match self {
            Dialect::Auto => "AUTO",
            Dialect::KeyValue => "KEY_VALUE",
            Dialect::Positional => "POSITIONAL",
            Dialect::Tagged => "TAGGED",
            Dialect::TextForms => "TEXT_FORMS",
            Dialect::Compact => "COMPACT",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`parse`] needs to know about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec<'a> {
    /// The command's name (DHIS2 `name`).
    pub name: &'a str,
    /// DHIS2 `separator` (code-to-value); blank or `None` means `=`.
    pub separator: Option<&'a str>,
    /// The command's codes, in order (the order positional and compact
    /// styles fill them in).
    pub codes: &'a [CodeSpec<'a>],
    pub dialect: Dialect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeSpec<'a> {
    pub code: &'a str,
    /// DHIS2 `compulsory`.
    pub compulsory: bool,
    /// A free-text field: in the compact style the last free-text field
    /// takes the surplus words.
    pub text: bool,
}

/// A text parsed against a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedCommand {
    /// The dialect used (never `Auto`).
    pub dialect: Dialect,
    /// (the command's code, value), in the command's code order; values are
    /// trimmed and non-empty.
    pub values: Vec<(String, String)>,
    /// Codes in the text that the command does not have, as written, in
    /// order of appearance, without repeats.
    pub unknown_codes: Vec<String>,
    /// The B5 `ddMM` token (key=value style only) as (day, month), not yet
    /// checked: [`period_from_day_month`] tells whether it is a real day.
    pub day_month: Option<(u8, u8)>,
}

impl ParsedCommand {
    /// The value stored for `code` (the command's spelling).
    pub fn value(&self, code: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a text could not be read as the command. The checks run in DHIS2's
/// order (B4): no pair first, then missing compulsory codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainTextError {
    /// Nothing that looks like a code and a value: DHIS2's "Wrong command format".
    #[error("no code and value found in the text")]
    NoPairs,
    /// Compulsory codes absent or empty (the command's spelling, in its order).
    #[error("compulsory codes missing: {}", .0.join(", "))]
    MissingCompulsory(Vec<String>),
    /// Positional or compact text with more values than the command has codes
    /// (and, for compact, no free-text field to take the surplus).
    #[error("{got} values sent, the command has {expected} codes")]
    TooManyValues { expected: usize, got: usize },
}

// ---------------------------------------------------------------------------
// B2: the command word

/// B2: the first run that starts with an ASCII letter and continues with at
/// least one ASCII letter, digit or underscore. One-letter words never match;
/// leading digits and punctuation are skipped (`12anc` gives `anc`).
pub fn command_word(text: &str) -> Option<&str> {
    command_word_range(text).map(|(start, end)| &text[start..end])
}

/// Byte range of [`command_word`] in `text`.
fn command_word_range(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() {
            let mut j = i + 1;
            while j < bytes.len() && is_word(bytes[j]) {
                j += 1;
            }
            if j > i + 1 {
                // ASCII bytes only: both ends are char boundaries.
                return Some((i, j));
            }
            // A one-letter run: a regex search would retry from the next
            // position, which is not a letter-led run of two or more either.
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

/// The header of CHT's positional and tagged forms: `1!CODE!…` and
/// `J1!CODE!…` (`j1!` too), after optional leading whitespace.
fn positional_header(text: &str) -> Option<(Dialect, &str, &str)> {
    let t = text.trim_start();
    let (dialect, rest) = if let Some(rest) = t.strip_prefix("1!") {
        (Dialect::Positional, rest)
    } else if let Some(rest) = t.strip_prefix("J1!").or_else(|| t.strip_prefix("j1!")) {
        (Dialect::Tagged, rest)
    } else {
        return None;
    };
    let (code, body) = rest.split_once('!')?;
    let code = code.trim();
    if code.is_empty() {
        return None;
    }
    Some((dialect, code, body))
}

/// The code of a CHT positional (`1!CODE!…`) or tagged (`J1!CODE!…`) text.
/// The code may be anything but `!` (one letter, digits, any script).
pub fn positional_code(text: &str) -> Option<&str> {
    positional_header(text).map(|(_, code, _)| code)
}

// ---------------------------------------------------------------------------
// B3: DHIS2's key-value splitting

/// Java's `\s`.
fn is_java_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r')
}

/// Java's `String.trim` (everything up to U+0020), plus Unicode whitespace
/// (a no-break space typed on a phone must not make a value unreadable).
fn trim_value(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ' || c.is_whitespace())
}

/// B3 exactly: DHIS2's splitting of a command text into (code, value) pairs.
/// Runs on the whole text, command word included (`anc a=1|b=2`).
///
/// S = `separator` when non-blank (trimmed), else `=`. A pair is: a key (characters
/// other than whitespace, `|` and the characters of S), optional spaces, S,
/// optional spaces, a value (characters other than `|` and the characters of
/// S: spaces and commas included), then optional spaces and any run of S.
/// Keys and values are trimmed; pairs with an empty key or value are
/// dropped; a repeated key keeps its last value (at its first position).
/// Scanning resumes after each pair, or one character further when no pair
/// starts at a position (the scan jumps over a key that has no S after it:
/// no pair can start inside it either).
pub fn key_value_pairs(text: &str, separator: Option<&str>) -> Vec<(String, String)> {
    let sep = match separator.map(str::trim) {
        Some(s) if !s.is_empty() => s,
        _ => "=",
    };
    let in_sep = |c: char| sep.contains(c);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        match pair_at(text, pos, sep, &in_sep) {
            Ok((key, value, end)) => {
                let (key, value) = (trim_value(key), trim_value(value));
                if !key.is_empty() && !value.is_empty() {
                    match out.iter_mut().find(|(k, _)| k == key) {
                        Some(slot) => slot.1 = value.to_string(),
                        None => out.push((key.to_string(), value.to_string())),
                    }
                }
                pos = end;
            }
            Err(next) => pos = next,
        }
    }
    out
}

/// One B3 pair starting exactly at `start`: (key, value, end of match), or
/// where to look next.
fn pair_at<'t>(
    text: &'t str,
    start: usize,
    sep: &str,
    in_sep: &dyn Fn(char) -> bool,
) -> Result<(&'t str, &'t str, usize), usize> {
    let rest = &text[start..];
    // Key: greedy. Backtracking cannot help: a shorter key is followed by a
    // key character, which is neither a space nor the start of S. For the
    // same reason a key starting later inside this one fails the same way.
    let key_len = rest
        .find(|c: char| is_java_space(c) || c == '|' || in_sep(c))
        .unwrap_or(rest.len());
    if key_len == 0 {
        return Err(start + rest.chars().next().map_or(1, char::len_utf8));
    }
    let key = &rest[..key_len];
    let key_end = start + key_len;
    let mut i = key_end;
    i += skip_spaces(&text[i..]);
    if !text[i..].starts_with(sep) {
        return Err(key_end);
    }
    i += sep.len();
    // Optional spaces, then a value of at least one character. The spaces
    // are allowed in the value, so a value made only of spaces still
    // matches (and is dropped after trimming).
    let after_spaces = i + skip_spaces(&text[i..]);
    let value_chars = |from: usize| {
        text[from..]
            .find(|c: char| c == '|' || in_sep(c))
            .unwrap_or(text.len() - from)
    };
    let (value_start, value_len) = match value_chars(after_spaces) {
        0 => match value_chars(i) {
            0 => return Err(key_end),
            n => (i, n),
        },
        n => (after_spaces, n),
    };
    let value = &text[value_start..value_start + value_len];
    let mut end = value_start + value_len;
    // Trailing: spaces, any run of S, spaces.
    end += skip_spaces(&text[end..]);
    while text[end..].starts_with(sep) {
        end += sep.len();
    }
    end += skip_spaces(&text[end..]);
    Ok((key, value, end))
}

fn skip_spaces(s: &str) -> usize {
    s.find(|c: char| !is_java_space(c)).unwrap_or(s.len())
}

/// B5: with at least three space-separated tokens, a second token of four
/// digits is the `ddMM` day the report is for.
fn day_month_token(text: &str) -> Option<(u8, u8)> {
    let tokens: Vec<&str> = text.split_whitespace().take(3).collect();
    if tokens.len() < 3 {
        return None;
    }
    let t = tokens[1].as_bytes();
    if t.len() != 4 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let two = |a: u8, b: u8| (a - b'0') * 10 + (b - b'0');
    Some((two(t[0], t[1]), two(t[2], t[3])))
}

// ---------------------------------------------------------------------------
// Parsing a text against a command

/// Parse a text known to be for `spec` into the command's codes and values.
///
/// With [`Dialect::Auto`]: a `1!`/`J1!` header → positional/tagged; else if
/// DHIS2 key-value pairs are found → key=value; else if the text (after the
/// command word) contains `#`, or starts with one of the command's codes
/// followed by a value → TextForms; else compact. With another dialect that
/// dialect is used; positional and tagged texts may then omit the `1!CODE!`
/// header (the text after the command word is read instead).
///
/// Errors come in DHIS2's order: [`PlainTextError::NoPairs`] (or
/// [`PlainTextError::TooManyValues`]) first, then
/// [`PlainTextError::MissingCompulsory`]. A text whose codes are all unknown
/// is not an error: `values` is empty and `unknown_codes` says why.
pub fn parse(text: &str, spec: &CommandSpec) -> Result<ParsedCommand, PlainTextError> {
    let header = positional_header(text);
    let dialect = match spec.dialect {
        Dialect::Auto => match header {
            Some((d, _, _)) => d,
            None => auto_dialect(text, spec),
        },
        d => d,
    };
    let body = || match header {
        Some((_, _, body)) => body,
        None => after_command_word(text),
    };
    let raw = match dialect {
        Dialect::KeyValue | Dialect::Auto => parse_key_value(text, spec),
        Dialect::Positional => parse_positional(body(), spec),
        Dialect::Tagged => parse_tagged(body(), spec),
        Dialect::TextForms => parse_textforms(after_command_word(text), spec),
        Dialect::Compact => parse_compact(after_command_word(text), spec),
    }?;
    let dialect = if dialect == Dialect::Auto {
        Dialect::KeyValue
    } else {
        dialect
    };
    let values = order_values(raw.values, spec);
    let missing: Vec<String> = spec
        .codes
        .iter()
        .filter(|c| c.compulsory && !values.iter().any(|(code, _)| code == c.code))
        .map(|c| c.code.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(PlainTextError::MissingCompulsory(missing));
    }
    let mut unknown_codes: Vec<String> = Vec::new();
    for u in raw.unknown {
        if !unknown_codes.contains(&u) {
            unknown_codes.push(u);
        }
    }
    Ok(ParsedCommand {
        dialect,
        values,
        unknown_codes,
        day_month: if dialect == Dialect::KeyValue {
            day_month_token(text)
        } else {
            None
        },
    })
}

/// What a dialect parser found: (spec index, value) with later entries
/// overriding earlier ones, and unknown codes as written.
struct Raw {
    values: Vec<(usize, String)>,
    unknown: Vec<String>,
}

/// Values in the command's code order, the last value of a repeated code
/// winning, empty values dropped.
fn order_values(found: Vec<(usize, String)>, spec: &CommandSpec) -> Vec<(String, String)> {
    let mut slots: Vec<Option<String>> = vec![None; spec.codes.len()];
    for (i, v) in found {
        let v = trim_value(&v);
        slots[i] = if v.is_empty() {
            None
        } else {
            Some(v.to_string())
        };
    }
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (spec.codes[i].code.to_string(), v)))
        .collect()
}

fn auto_dialect(text: &str, spec: &CommandSpec) -> Dialect {
    if !key_value_pairs(text, spec.separator).is_empty() {
        return Dialect::KeyValue;
    }
    let body = after_command_word(text);
    if body.contains('#') {
        return Dialect::TextForms;
    }
    match match_tag(body.trim_start(), spec) {
        Some((_, value)) if !value.is_empty() => Dialect::TextForms,
        _ => Dialect::Compact,
    }
}

/// The text after the first command word (B2), or the whole text when it
/// has none.
fn after_command_word(text: &str) -> &str {
    match command_word_range(text) {
        Some((_, end)) => &text[end..],
        None => text,
    }
}

fn parse_key_value(text: &str, spec: &CommandSpec) -> Result<Raw, PlainTextError> {
    let pairs = key_value_pairs(text, spec.separator);
    if pairs.is_empty() {
        return Err(PlainTextError::NoPairs);
    }
    let mut raw = Raw {
        values: Vec::new(),
        unknown: Vec::new(),
    };
    for (key, value) in pairs {
        // Case-sensitive, as DHIS2.
        match spec.codes.iter().position(|c| c.code == key) {
            Some(i) => raw.values.push((i, value)),
            None => raw.unknown.push(key),
        }
    }
    Ok(raw)
}

/// Splits on `#`, turning `\#` into a literal `#`.
fn split_hash_escaped(body: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'#') => {
                chars.next();
                parts.last_mut().expect("never empty").push('#');
            }
            '#' => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

fn parse_positional(body: &str, spec: &CommandSpec) -> Result<Raw, PlainTextError> {
    let mut parts = split_hash_escaped(body);
    // Trailing empty values (`1!ANC!5#7#`) are not values.
    while parts.last().is_some_and(|p| trim_value(p).is_empty()) {
        parts.pop();
    }
    if parts.is_empty() {
        return Err(PlainTextError::NoPairs);
    }
    if parts.len() > spec.codes.len() {
        return Err(PlainTextError::TooManyValues {
            expected: spec.codes.len(),
            got: parts.len(),
        });
    }
    Ok(Raw {
        values: parts.into_iter().enumerate().collect(),
        unknown: Vec::new(),
    })
}

fn find_code_ci(tag: &str, spec: &CommandSpec) -> Option<usize> {
    spec.codes
        .iter()
        .position(|c| strip_prefix_ci(tag, c.code) == Some(""))
}

fn parse_tagged(body: &str, spec: &CommandSpec) -> Result<Raw, PlainTextError> {
    let parts = split_hash_escaped(body);
    let mut raw = Raw {
        values: Vec::new(),
        unknown: Vec::new(),
    };
    let mut any = false;
    for pair in parts.chunks(2) {
        let [tag, value] = pair else { continue };
        let (tag, value) = (trim_value(tag), trim_value(value));
        if tag.is_empty() || value.is_empty() {
            continue;
        }
        any = true;
        match find_code_ci(tag, spec) {
            Some(i) => raw.values.push((i, value.to_string())),
            None => raw.unknown.push(tag.to_string()),
        }
    }
    if !any {
        return Err(PlainTextError::NoPairs);
    }
    Ok(raw)
}

/// `s` without a leading `prefix`, compared case-insensitively.
fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let mut rest = s;
    for p in prefix.chars() {
        let c = rest.chars().next()?;
        if c != p && !c.to_lowercase().eq(p.to_lowercase()) {
            return None;
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(rest)
}

fn is_tag_separator(c: char) -> bool {
    c.is_whitespace() || c == '-' || c == '!'
}

/// A TextForms segment that starts with one of the command's codes (the
/// longest that fits): the code's index and the value (possibly empty). The
/// code must be followed by the end, a separator (space, `-`, `!`) or a digit.
fn match_tag<'s>(segment: &'s str, spec: &CommandSpec) -> Option<(usize, &'s str)> {
    let mut best: Option<(usize, &'s str)> = None;
    for (i, c) in spec.codes.iter().enumerate() {
        if c.code.is_empty() {
            continue;
        }
        let Some(rest) = strip_prefix_ci(segment, c.code) else {
            continue;
        };
        let fits = match rest.chars().next() {
            None => true,
            Some(n) => is_tag_separator(n) || n.is_ascii_digit(),
        };
        let longer = best.is_none_or(|(b, _)| spec.codes[b].code.len() < c.code.len());
        if fits && longer {
            best = Some((i, rest));
        }
    }
    best.map(|(i, rest)| (i, trim_value(rest.trim_start_matches(is_tag_separator))))
}

fn parse_textforms(body: &str, spec: &CommandSpec) -> Result<Raw, PlainTextError> {
    let mut raw = Raw {
        values: Vec::new(),
        unknown: Vec::new(),
    };
    let mut any = false;
    for segment in body.split('#') {
        let segment = trim_value(segment);
        if segment.is_empty() {
            continue;
        }
        match match_tag(segment, spec) {
            Some((i, value)) => {
                if !value.is_empty() {
                    any = true;
                    raw.values.push((i, value.to_string()));
                }
            }
            None => {
                any = true;
                // The tag as written: up to the first separator or digit, or
                // the first word when the segment starts with neither.
                let end = segment
                    .find(|c: char| is_tag_separator(c) || c.is_ascii_digit())
                    .unwrap_or(segment.len());
                let tag = if end == 0 {
                    segment.split_whitespace().next().unwrap_or(segment)
                } else {
                    &segment[..end]
                };
                raw.unknown.push(tag.to_string());
            }
        }
    }
    if !any {
        return Err(PlainTextError::NoPairs);
    }
    Ok(raw)
}

/// Compact tokens: whitespace-separated; `"…"` groups (an unclosed quote
/// runs to the end); an unquoted token also ends at a `"`.
fn compact_tokens(body: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace());
        if rest.is_empty() {
            return tokens;
        }
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            tokens.push(trim_value(&q[..end]).to_string());
            rest = q.get(end + 1..).unwrap_or("");
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            tokens.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
}

fn parse_compact(body: &str, spec: &CommandSpec) -> Result<Raw, PlainTextError> {
    let tokens = compact_tokens(body);
    if tokens.iter().all(String::is_empty) {
        return Err(PlainTextError::NoPairs);
    }
    let (n, m) = (tokens.len(), spec.codes.len());
    let mut values: Vec<(usize, String)> = Vec::with_capacity(m);
    if n <= m {
        values.extend(tokens.into_iter().enumerate());
    } else {
        let Some(t) = spec.codes.iter().rposition(|c| c.text) else {
            return Err(PlainTextError::TooManyValues {
                expected: m,
                got: n,
            });
        };
        let surplus = n - m;
        let mut tokens = tokens.into_iter();
        for i in 0..t {
            values.push((i, tokens.next().expect("n > m > t")));
        }
        let joined: Vec<String> = tokens
            .by_ref()
            .take(surplus + 1)
            .filter(|s| !s.is_empty())
            .collect();
        values.push((t, joined.join(" ")));
        values.extend(tokens.enumerate().map(|(k, v)| (t + 1 + k, v)));
    }
    Ok(Raw {
        values,
        unknown: Vec::new(),
    })
}

// ---------------------------------------------------------------------------
// B5: the period a key=value report is for

/// B5's period rule for a `ddMM` token: the period of `period_type` that
/// contains that day this year, or last year when that month is later than
/// today's month. `None` when the day does not exist (`3102`, `0012`, `2902`
/// in a year that is not a leap year).
pub fn period_from_day_month(
    day_month: (u8, u8),
    period_type: PeriodType,
    today: Date,
) -> Option<Period> {
    let (day, month) = day_month;
    let month = Month::try_from(month).ok()?;
    let year = if u8::from(month) > u8::from(today.month()) {
        today.year() - 1
    } else {
        today.year()
    };
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(Period::containing(period_type, date))
}

/// B5 without a `ddMM` token: the period containing today when the command
/// has `currentPeriodUsedForReporting`, else the one before it.
pub fn default_period(
    period_type: PeriodType,
    today: Date,
    current_period_used_for_reporting: bool,
) -> Period {
    let current = Period::containing(period_type, today);
    if current_period_used_for_reporting {
        current
    } else {
        current.previous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    fn pairs(text: &str, sep: Option<&str>) -> Vec<(String, String)> {
        key_value_pairs(text, sep)
    }

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // --- B3: every row of the table -------------------------------------

    #[test]
    fn b3_pipe_separates_pairs() {
        assert_eq!(pairs("anc a=1|b=2", None), p(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn b3_spaces_around_separator_and_pipe() {
        assert_eq!(
            pairs("anc a = 1 | b = 2", None),
            p(&[("a", "1"), ("b", "2")])
        );
    }

    #[test]
    fn b3_chained_separator() {
        assert_eq!(pairs("anc a=1=b=2", None), p(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn b3_space_does_not_end_a_value() {
        assert_eq!(pairs("anc a=1 b=2", None), p(&[("a", "1 b")]));
    }

    #[test]
    fn b3_comma_does_not_end_a_value() {
        assert_eq!(pairs("anc a=1,b=2", None), p(&[("a", "1,b")]));
    }

    #[test]
    fn b3_value_with_words() {
        assert_eq!(
            pairs("anc a=Hello world|b=2", None),
            p(&[("a", "Hello world"), ("b", "2")])
        );
    }

    #[test]
    fn b3_empty_value_dropped() {
        assert_eq!(pairs("anc a=1|b=", None), p(&[("a", "1")]));
    }

    #[test]
    fn b3_command_alone() {
        assert_eq!(pairs("anc", None), p(&[]));
    }

    #[test]
    fn b3_colon_separator() {
        assert_eq!(
            pairs("anc a:1|b:2", Some(":")),
            p(&[("a", "1"), ("b", "2")])
        );
    }

    #[test]
    fn b3_dot_separator_chained() {
        assert_eq!(
            pairs("anc a.1.b.2", Some(".")),
            p(&[("a", "1"), ("b", "2")])
        );
    }

    #[test]
    fn b3_equals_text_with_dot_separator() {
        assert_eq!(pairs("anc a=1|b=2", Some(".")), p(&[]));
    }

    #[test]
    fn b3_child_program_pipes() {
        assert_eq!(
            pairs("childProgram fn=xmen|ln=xmen2|age=4", None),
            p(&[("fn", "xmen"), ("ln", "xmen2"), ("age", "4")])
        );
    }

    #[test]
    fn b3_child_program_commas_do_not_work() {
        assert_eq!(
            pairs("childProgram fn=xmen,ln=xmen2,age=4", None),
            p(&[("fn", "xmen,ln"), ("xmen2,age", "4")])
        );
    }

    #[test]
    fn b3_old_format_not_parsed() {
        assert_eq!(pairs("report vo2 vn5", None), p(&[]));
    }

    // --- B3: further rules ----------------------------------------------

    #[test]
    fn b3_blank_separator_means_equals() {
        assert_eq!(pairs("anc a=1", Some("  ")), p(&[("a", "1")]));
        assert_eq!(
            pairs("anc a : 1|b:2", Some(" : ")),
            p(&[("a", "1"), ("b", "2")])
        );
        assert_eq!(pairs("anc a=1", Some("")), p(&[("a", "1")]));
    }

    #[test]
    fn b3_repeated_key_keeps_last_value() {
        assert_eq!(pairs("anc a=1|b=2|a=3", None), p(&[("a", "3"), ("b", "2")]));
    }

    #[test]
    fn b3_whitespace_only_value_dropped() {
        assert_eq!(pairs("anc a= |b=2", None), p(&[("b", "2")]));
    }

    #[test]
    fn b3_no_break_space_trimmed() {
        assert_eq!(
            pairs("anc a=5\u{a0}|b=2", None),
            p(&[("a", "5"), ("b", "2")])
        );
    }

    #[test]
    fn b3_multi_character_separator() {
        // Every character of S is excluded from keys and values; S itself is
        // matched as a whole.
        assert_eq!(
            pairs("anc a::1|b::2", Some("::")),
            p(&[("a", "1"), ("b", "2")])
        );
        assert_eq!(pairs("anc a:1", Some("::")), p(&[]));
    }

    #[test]
    fn b3_non_ascii_text() {
        assert_eq!(
            pairs("ançé nom=Zoé Ndiaye|âge=4", None),
            p(&[("nom", "Zoé Ndiaye"), ("âge", "4")])
        );
    }

    // --- B2 --------------------------------------------------------------

    #[test]
    fn b2_command_word() {
        assert_eq!(command_word("anc a=1|b=2"), Some("anc"));
        assert_eq!(command_word("ANC_2 a=1"), Some("ANC_2"));
        assert_eq!(command_word("  12anc a=1"), Some("anc"));
        assert_eq!(command_word("...#anc"), Some("anc"));
        assert_eq!(command_word("_ab"), Some("ab"));
        assert_eq!(command_word("a1"), Some("a1"));
        assert_eq!(command_word("x_"), Some("x_"));
        assert_eq!(command_word("YYYY#HFI!foobar"), Some("YYYY"));
        assert_eq!(command_word("ab-cd"), Some("ab"));
    }

    #[test]
    fn b2_one_letter_words_never_match() {
        assert_eq!(command_word("a"), None);
        assert_eq!(command_word("a b c=1"), None);
        assert_eq!(command_word("a b cd"), Some("cd"));
        assert_eq!(command_word("9a"), None);
        assert_eq!(command_word("1!A!s"), None);
        assert_eq!(command_word(""), None);
        assert_eq!(command_word("123 456"), None);
        assert_eq!(command_word("é ab"), Some("ab"));
        assert_eq!(command_word("éab"), Some("ab"));
    }

    // --- CHT header --------------------------------------------------------

    #[test]
    fn positional_codes() {
        assert_eq!(positional_code("1!ANCR!sarah#11"), Some("ANCR"));
        assert_eq!(positional_code("  J1!ANCR!name#sarah"), Some("ANCR"));
        assert_eq!(positional_code("j1!anc!a#1"), Some("anc"));
        assert_eq!(positional_code("1!A!s"), Some("A"));
        assert_eq!(positional_code("1!ग!sarah"), Some("ग"));
        assert_eq!(positional_code("1!ANCR"), None);
        assert_eq!(positional_code("1!!x"), None);
        assert_eq!(positional_code("ANC 1!A!s"), None);
        assert_eq!(positional_code("2!ANC!s"), None);
    }

    // --- Dialects ------------------------------------------------------------

    const YYYY: &[CodeSpec] = &[
        CodeSpec {
            code: "CDT",
            compulsory: false,
            text: false,
        },
        CodeSpec {
            code: "HFI",
            compulsory: false,
            text: true,
        },
        CodeSpec {
            code: "ZDT",
            compulsory: false,
            text: false,
        },
        CodeSpec {
            code: "RPY",
            compulsory: false,
            text: false,
        },
    ];

    fn yyyy(dialect: Dialect) -> CommandSpec<'static> {
        CommandSpec {
            name: "YYYY",
            separator: None,
            codes: YYYY,
            dialect,
        }
    }

    #[test]
    fn cht_bang_delimited() {
        // `RPY!!2012`: a run of separators between tag and value is skipped,
        // so RPY = 2012 (CHT gives the same).
        let r = parse("YYYY#HFI!foobar#ZDT!999#RPY!!2012", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.dialect, Dialect::TextForms);
        assert_eq!(
            r.values,
            p(&[("HFI", "foobar"), ("ZDT", "999"), ("RPY", "2012")])
        );
        assert!(r.unknown_codes.is_empty());
        assert_eq!(r.day_month, None);
    }

    #[test]
    fn cht_space_delimited() {
        let r = parse(
            "YYYY CDT 33 #HFI foobar# ZDT 999 #RPY 2012",
            &yyyy(Dialect::Auto),
        )
        .unwrap();
        assert_eq!(r.dialect, Dialect::TextForms);
        assert_eq!(
            r.values,
            p(&[
                ("CDT", "33"),
                ("HFI", "foobar"),
                ("ZDT", "999"),
                ("RPY", "2012")
            ])
        );
    }

    #[test]
    fn cht_digits_after_tags() {
        let r = parse("YYYY CDT33#HFI001#ZDT999#RPY2012", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.dialect, Dialect::TextForms);
        assert_eq!(
            r.values,
            p(&[
                ("CDT", "33"),
                ("HFI", "001"),
                ("ZDT", "999"),
                ("RPY", "2012")
            ])
        );
    }

    #[test]
    fn textforms_dash_separator_order_free_and_case() {
        let r = parse("yyyy#rpy--2012#hfi-foo bar#cdt 4", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(
            r.values,
            p(&[("CDT", "4"), ("HFI", "foo bar"), ("RPY", "2012")])
        );
    }

    #[test]
    fn textforms_single_tag_without_hash() {
        let r = parse("YYYY CDT33", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.dialect, Dialect::TextForms);
        assert_eq!(r.values, p(&[("CDT", "33")]));
    }

    #[test]
    fn textforms_unknown_tags_reported() {
        let r = parse("YYYY#HFI x#XYZ 5#ABC7#XYZ 6#3108", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.values, p(&[("HFI", "x")]));
        assert_eq!(r.unknown_codes, vec!["XYZ", "ABC", "3108"]);
        // A tag followed by a letter is another tag.
        let r = parse("YYYY#CDTX 5", &yyyy(Dialect::TextForms)).unwrap();
        assert_eq!(r.unknown_codes, vec!["CDTX"]);
    }

    #[test]
    fn textforms_longest_code_wins_and_empty_tag() {
        const CODES: &[CodeSpec] = &[
            CodeSpec {
                code: "A1",
                compulsory: false,
                text: false,
            },
            CodeSpec {
                code: "A12",
                compulsory: false,
                text: false,
            },
        ];
        let spec = CommandSpec {
            name: "T",
            separator: None,
            codes: CODES,
            dialect: Dialect::TextForms,
        };
        let r = parse("TT#A12 5#A1 6", &spec).unwrap();
        assert_eq!(r.values, p(&[("A1", "6"), ("A12", "5")]));
        assert_eq!(parse("TT#A1#A12", &spec), Err(PlainTextError::NoPairs));
    }

    #[test]
    fn textforms_negative_number_loses_sign() {
        let r = parse("YYYY#ZDT -5", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.values, p(&[("ZDT", "5")]));
    }

    #[test]
    fn positional_values_by_order_with_escapes() {
        let r = parse(r"1!YYYY!33#foo\#bar#999#2012", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.dialect, Dialect::Positional);
        assert_eq!(
            r.values,
            p(&[
                ("CDT", "33"),
                ("HFI", "foo#bar"),
                ("ZDT", "999"),
                ("RPY", "2012")
            ])
        );
        // Empty values skip a code; trailing `#` is not a value.
        let r = parse("1!YYYY!33##999#", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.values, p(&[("CDT", "33"), ("ZDT", "999")]));
        assert_eq!(
            parse("1!YYYY!1#2#3#4#5", &yyyy(Dialect::Auto)),
            Err(PlainTextError::TooManyValues {
                expected: 4,
                got: 5
            })
        );
        assert_eq!(
            parse("1!YYYY!", &yyyy(Dialect::Auto)),
            Err(PlainTextError::NoPairs)
        );
        assert_eq!(
            parse("1!YYYY!#", &yyyy(Dialect::Auto)),
            Err(PlainTextError::NoPairs)
        );
    }

    #[test]
    fn positional_without_header_when_configured() {
        let r = parse("YYYY 1#2", &yyyy(Dialect::Positional)).unwrap();
        assert_eq!(r.values, p(&[("CDT", "1"), ("HFI", "2")]));
    }

    #[test]
    fn tagged_pairs_with_escapes() {
        let r = parse(r"J1!YYYY!hfi#a\#b#zdt#999#xx#1#rpy", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.dialect, Dialect::Tagged);
        assert_eq!(r.values, p(&[("HFI", "a#b"), ("ZDT", "999")]));
        assert_eq!(r.unknown_codes, vec!["xx"]);
        assert_eq!(
            parse("J1!YYYY!cdt", &yyyy(Dialect::Auto)),
            Err(PlainTextError::NoPairs)
        );
        // Repeated tag: the last value wins.
        let r = parse("J1!YYYY!cdt#1#CDT#2", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.values, p(&[("CDT", "2")]));
    }

    const ANCR: &[CodeSpec] = &[
        CodeSpec {
            code: "name",
            compulsory: true,
            text: true,
        },
        CodeSpec {
            code: "lmp",
            compulsory: false,
            text: false,
        },
        CodeSpec {
            code: "village",
            compulsory: false,
            text: true,
        },
    ];

    fn ancr() -> CommandSpec<'static> {
        CommandSpec {
            name: "ANCR",
            separator: None,
            codes: ANCR,
            dialect: Dialect::Auto,
        }
    }

    #[test]
    fn compact_quotes_group() {
        let r = parse(r#"ANCR "sarah jane" 24 Kibera"#, &ancr()).unwrap();
        assert_eq!(r.dialect, Dialect::Compact);
        assert_eq!(
            r.values,
            p(&[("name", "sarah jane"), ("lmp", "24"), ("village", "Kibera")])
        );
    }

    #[test]
    fn compact_last_text_field_takes_the_rest() {
        let r = parse("ANCR sarah 24 Kibera  East \"zone 3\"", &ancr()).unwrap();
        assert_eq!(
            r.values,
            p(&[
                ("name", "sarah"),
                ("lmp", "24"),
                ("village", "Kibera East zone 3")
            ])
        );
    }

    #[test]
    fn compact_fewer_values_and_empty_quotes() {
        let r = parse("ANCR sarah", &ancr()).unwrap();
        assert_eq!(r.values, p(&[("name", "sarah")]));
        let r = parse(r#"ANCR sarah "" Kibera"#, &ancr()).unwrap();
        assert_eq!(r.values, p(&[("name", "sarah"), ("village", "Kibera")]));
        // An unclosed quote runs to the end.
        let r = parse(r#"ANCR sarah 24 "Kibera East"#, &ancr()).unwrap();
        assert_eq!(r.value("village"), Some("Kibera East"));
    }

    #[test]
    fn compact_surplus_goes_to_last_text_field_even_in_the_middle() {
        const CODES: &[CodeSpec] = &[
            CodeSpec {
                code: "name",
                compulsory: false,
                text: true,
            },
            CodeSpec {
                code: "age",
                compulsory: false,
                text: false,
            },
        ];
        let spec = CommandSpec {
            name: "REG",
            separator: None,
            codes: CODES,
            dialect: Dialect::Compact,
        };
        let r = parse("REG Mary Ann Smith 24", &spec).unwrap();
        assert_eq!(r.values, p(&[("name", "Mary Ann Smith"), ("age", "24")]));
    }

    #[test]
    fn compact_too_many_values_without_text_field() {
        assert_eq!(
            parse("ANC 1 2 3", &kv_spec(None)),
            Err(PlainTextError::TooManyValues {
                expected: 2,
                got: 3
            })
        );
    }

    #[test]
    fn compact_nothing_is_wrong_format() {
        assert_eq!(parse("ANCR", &ancr()), Err(PlainTextError::NoPairs));
        assert_eq!(parse("ANCR \"\"", &ancr()), Err(PlainTextError::NoPairs));
    }

    const KV: &[CodeSpec] = &[
        CodeSpec {
            code: "a",
            compulsory: true,
            text: false,
        },
        CodeSpec {
            code: "b",
            compulsory: false,
            text: false,
        },
    ];

    fn kv_spec(separator: Option<&'static str>) -> CommandSpec<'static> {
        CommandSpec {
            name: "anc",
            separator,
            codes: KV,
            dialect: Dialect::Auto,
        }
    }

    #[test]
    fn key_value_case_sensitive_and_unknown_reported() {
        let r = parse("anc b=2|a=1|A=5|c=3|c=4", &kv_spec(None)).unwrap();
        assert_eq!(r.dialect, Dialect::KeyValue);
        assert_eq!(r.values, p(&[("a", "1"), ("b", "2")]));
        assert_eq!(r.unknown_codes, vec!["A", "c"]);
    }

    #[test]
    fn key_value_only_unknown_codes_is_not_an_error() {
        let mut spec = kv_spec(None);
        spec.codes = &KV[1..];
        let r = parse("anc x=1", &spec).unwrap();
        assert!(r.values.is_empty());
        assert_eq!(r.unknown_codes, vec!["x"]);
    }

    #[test]
    fn b4_order_wrong_format_then_compulsory() {
        let mut spec = kv_spec(None);
        spec.dialect = Dialect::KeyValue;
        assert_eq!(parse("anc", &spec), Err(PlainTextError::NoPairs));
        assert_eq!(parse("anc 5 6", &spec), Err(PlainTextError::NoPairs));
        assert_eq!(
            parse("anc b=2", &spec),
            Err(PlainTextError::MissingCompulsory(vec!["a".into()]))
        );
        assert_eq!(
            parse("anc a= |b=2", &spec),
            Err(PlainTextError::MissingCompulsory(vec!["a".into()]))
        );
    }

    #[test]
    fn key_value_with_custom_separator() {
        let r = parse("anc a:1|b:2", &kv_spec(Some(":"))).unwrap();
        assert_eq!(r.values, p(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn key_value_day_month_token() {
        let r = parse("anc 3108 a=1|b=2", &kv_spec(None)).unwrap();
        assert_eq!(r.day_month, Some((31, 8)));
        assert_eq!(r.values, p(&[("a", "1"), ("b", "2")]));
        // Not the second token, or fewer than three tokens.
        let r = parse("anc a=1 3108", &kv_spec(None)).unwrap();
        assert_eq!(r.day_month, None);
        let r = parse("anc 3108|a=1", &kv_spec(None)).unwrap();
        assert_eq!(r.day_month, None);
        assert_eq!(r.values, p(&[("a", "1")]));
        // Four digits are taken; whether it is a day is checked later.
        let r = parse("anc 3102 a=1", &kv_spec(None)).unwrap();
        assert_eq!(r.day_month, Some((31, 2)));
        let r = parse("anc 310 a=1", &kv_spec(None)).unwrap();
        assert_eq!(r.day_month, None);
        // Other dialects never take a date.
        let r = parse("ANCR 3108 24", &ancr()).unwrap();
        assert_eq!(r.day_month, None);
        assert_eq!(r.value("name"), Some("3108"));
    }

    #[test]
    fn explicit_dialect_is_used() {
        let mut spec = yyyy(Dialect::Compact);
        let r = parse("YYYY 1 foo 3", &spec).unwrap();
        assert_eq!(r.values, p(&[("CDT", "1"), ("HFI", "foo"), ("ZDT", "3")]));
        spec.dialect = Dialect::KeyValue;
        assert_eq!(parse("YYYY CDT33", &spec), Err(PlainTextError::NoPairs));
    }

    #[test]
    fn auto_prefers_key_value() {
        let r = parse("YYYY CDT=3#HFI 4", &yyyy(Dialect::Auto)).unwrap();
        assert_eq!(r.dialect, Dialect::KeyValue);
        assert_eq!(r.values, p(&[("CDT", "3#HFI 4")]));
    }

    #[test]
    fn dialect_serde_names() {
        use serde::de::value::{Error, StrDeserializer};
        let all = [
            (Dialect::Auto, "AUTO"),
            (Dialect::KeyValue, "KEY_VALUE"),
            (Dialect::Positional, "POSITIONAL"),
            (Dialect::Tagged, "TAGGED"),
            (Dialect::TextForms, "TEXT_FORMS"),
            (Dialect::Compact, "COMPACT"),
        ];
        let de = |s: &'static str| Dialect::deserialize(StrDeserializer::<Error>::new(s));
        for (d, name) in all {
            assert_eq!(de(name), Ok(d));
            assert_eq!(d.to_string(), name);
        }
        assert_eq!(de("TEXTFORMS"), Ok(Dialect::TextForms));
        assert!(de("KEYVALUE").is_err());
    }

    // --- B5 periods -------------------------------------------------------

    fn iso(p: Option<Period>) -> Option<String> {
        p.map(|p| p.iso())
    }

    #[test]
    fn ddmm_this_year_or_last() {
        let today = date!(2026 - 11 - 20);
        let m = PeriodType::Monthly;
        assert_eq!(
            iso(period_from_day_month((31, 8), m, today)),
            Some("202608".into())
        );
        assert_eq!(
            iso(period_from_day_month((1, 11), m, today)),
            Some("202611".into())
        );
        // Same month, a later day: still this year (the rule looks at months).
        assert_eq!(
            iso(period_from_day_month((30, 11), m, today)),
            Some("202611".into())
        );
        // A later month: last year.
        assert_eq!(
            iso(period_from_day_month((5, 12), m, today)),
            Some("202512".into())
        );
        let jan = date!(2027 - 01 - 03);
        assert_eq!(
            iso(period_from_day_month((31, 12), m, jan)),
            Some("202612".into())
        );
    }

    #[test]
    fn ddmm_invalid_days() {
        let today = date!(2026 - 11 - 20);
        let m = PeriodType::Monthly;
        assert_eq!(period_from_day_month((31, 2), m, today), None);
        assert_eq!(period_from_day_month((0, 5), m, today), None);
        assert_eq!(period_from_day_month((12, 0), m, today), None);
        assert_eq!(period_from_day_month((12, 13), m, today), None);
        assert_eq!(period_from_day_month((31, 4), m, today), None);
        assert_eq!(period_from_day_month((99, 99), m, today), None);
        // 29 February exists only in leap years: 2028 yes, 2026 no.
        assert_eq!(period_from_day_month((29, 2), m, today), None);
        assert_eq!(
            iso(period_from_day_month((29, 2), m, date!(2028 - 03 - 01))),
            Some("202802".into())
        );
    }

    #[test]
    fn ddmm_weekly_quarterly_and_others() {
        let today = date!(2026 - 11 - 20);
        // 31 August 2026 is a Monday, in ISO week 36.
        assert_eq!(
            iso(period_from_day_month((31, 8), PeriodType::Weekly, today)),
            Some("2026W36".into())
        );
        // 1 January 2026 is a Thursday: ISO week 1 of 2026.
        assert_eq!(
            iso(period_from_day_month((1, 1), PeriodType::Weekly, today)),
            Some("2026W1".into())
        );
        assert_eq!(
            iso(period_from_day_month((31, 8), PeriodType::Quarterly, today)),
            Some("2026Q3".into())
        );
        assert_eq!(
            iso(period_from_day_month(
                (15, 12),
                PeriodType::Quarterly,
                today
            )),
            Some("2025Q4".into())
        );
        assert_eq!(
            iso(period_from_day_month((31, 8), PeriodType::Daily, today)),
            Some("20260831".into())
        );
        assert_eq!(
            iso(period_from_day_month((31, 8), PeriodType::Yearly, today)),
            Some("2026".into())
        );
    }

    #[test]
    fn default_periods() {
        let today = date!(2026 - 01 - 15);
        assert_eq!(
            default_period(PeriodType::Monthly, today, true).iso(),
            "202601"
        );
        assert_eq!(
            default_period(PeriodType::Monthly, today, false).iso(),
            "202512"
        );
        assert_eq!(
            default_period(PeriodType::Quarterly, today, false).iso(),
            "2025Q4"
        );
        assert_eq!(
            default_period(PeriodType::Yearly, today, false).iso(),
            "2025"
        );
        // 15 January 2026 is in ISO week 3.
        assert_eq!(
            default_period(PeriodType::Weekly, today, true).iso(),
            "2026W3"
        );
        assert_eq!(
            default_period(PeriodType::Weekly, today, false).iso(),
            "2026W2"
        );
    }

    #[test]
    fn long_runs_scan_in_linear_time() {
        // A regex-like scan that retried every position inside a long key
        // would take minutes here.
        let text = "a".repeat(200_000);
        assert!(key_value_pairs(&text, None).is_empty());
        let text = format!("{}=1", "x".repeat(200_000));
        assert_eq!(key_value_pairs(&text, None).len(), 1);
        let text = "a ".repeat(100_000);
        assert!(key_value_pairs(&text, None).is_empty());
        assert!(parse(&"#".repeat(100_000), &kv_spec(None)).is_err());
    }

    // --- Properties ----------------------------------------------------------

    fn arbitrary_spec(dialect: Dialect) -> CommandSpec<'static> {
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
        ];
        CommandSpec {
            name: "anc",
            separator: None,
            codes: CODES,
            dialect,
        }
    }

    const DIALECTS: [Dialect; 6] = [
        Dialect::Auto,
        Dialect::KeyValue,
        Dialect::Positional,
        Dialect::Tagged,
        Dialect::TextForms,
        Dialect::Compact,
    ];

    fn check_pairs(out: &[(String, String)]) -> Result<(), TestCaseError> {
        for (k, v) in out {
            prop_assert!(!k.is_empty() && !v.is_empty());
            prop_assert_eq!(k.as_str(), trim_value(k));
            prop_assert_eq!(v.as_str(), trim_value(v));
            prop_assert!(!k.contains('|') && !v.contains('|'));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC*", sep in prop::option::of("\\PC{0,3}")) {
            let _ = command_word(&text);
            let _ = positional_code(&text);
            check_pairs(&key_value_pairs(&text, sep.as_deref()))?;
            for d in DIALECTS {
                let mut spec = arbitrary_spec(d);
                spec.separator = sep.as_deref();
                if let Ok(r) = parse(&text, &spec) {
                    prop_assert!(r.dialect != Dialect::Auto);
                    for (_, v) in &r.values {
                        prop_assert!(!v.is_empty());
                    }
                }
            }
        }

        #[test]
        fn parsers_never_panic_on_structured_text(
            text in "[ a-cB1é2#!|=:\"\\\\J-]{0,40}",
            sep in prop::sample::select(vec![None, Some("="), Some(":"), Some("."), Some("::"), Some(" ")]),
        ) {
            let _ = command_word(&text);
            let _ = positional_code(&text);
            check_pairs(&key_value_pairs(&text, sep))?;
            for d in DIALECTS {
                let mut spec = arbitrary_spec(d);
                spec.separator = sep;
                let _ = parse(&text, &spec);
            }
        }

        #[test]
        fn key_value_pairs_round_trip(
            pairs in prop::collection::vec(("[A-Za-z0-9_]{1,6}", "[A-Za-z0-9,.]([A-Za-z0-9 ,.]{0,8}[A-Za-z0-9,.])?"), 0..6),
            sep in prop::sample::select(vec![None, Some(":"), Some("#")]),
        ) {
            // Distinct keys: a repeated key would keep only its last value.
            let mut unique: Vec<(String, String)> = Vec::new();
            for (k, v) in pairs {
                if !unique.iter().any(|(u, _)| *u == k) {
                    unique.push((k, v));
                }
            }
            let s = sep.unwrap_or("=");
            let joined = unique
                .iter()
                .map(|(k, v)| format!("{k}{s}{v}"))
                .collect::<Vec<_>>()
                .join("|");
            let once = key_value_pairs(&joined, sep);
            prop_assert_eq!(&once, &unique);
            check_pairs(&once)?;
            // And with the command word in front, as phones send it.
            let again = key_value_pairs(&format!("anc {joined}"), sep);
            prop_assert_eq!(&again, &unique);
        }
    }
}
