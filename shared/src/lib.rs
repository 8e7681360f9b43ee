//! `hisa-shared`: Hisa's domain, shared by the server, the phone app and the
//! SMS gateway. No I/O: no database, no HTTP, no UI.
//!
//! Module map:
//! - [`uid`]: DHIS2's 11-character identifiers.
//! - [`period`]: period types, ISO and ADX period strings, relative periods.
//! - [`value_type`]: value types and the checks a data value must pass.
//! - [`schema`]: which metadata types exist, their required fields and references.
//! - [`metadata`]: typed views of DHIS2 metadata JSON; the built-in defaults.
//! - [`category`]: the category option combos a category combo implies.
//! - [`datavalue`]: id schemes, import strategies and the data import summary.
//! - [`dhis2_sms`]: DHIS2's compressed SMS (versions 1 and 2): decode, encode, UID hashes, replies.
//! - [`hisa_sms`]: Hisa's authenticated compressed SMS: forms and events bit-packed against the form layout, multipart, replay window, replies.
//! - [`aggregation`]: how values aggregate over time and up the org unit hierarchy, by aggregation type.
//! - [`expression`]: DHIS2's expression language: parse, describe, evaluate; validation rule operators.
//! - [`sync`]: the device sync protocol: enrolment, policies, metadata packages, submissions and their results.
//! - [`webmessage`]: DHIS2's response envelopes and import reports.
//! - [`authority`]: authority names.

pub mod aggregation;
pub mod authority;
pub mod category;
pub mod datavalue;
pub mod dhis2_sms;
pub mod expression;
pub mod hisa_sms;
pub mod metadata;
pub mod period;
pub mod schema;
pub mod sync;
pub mod uid;
pub mod value_type;
pub mod webmessage;

pub use uid::Uid;
