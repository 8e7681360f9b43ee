//! `hisa-sms-gateway`: SMS in and out of Hisa, mounted by the server.
//!
//! Module map:
//! - [`msisdn`]: phone numbers as gateways send them, normalised so that a
//!   sender can be matched to a user's registered number.
//!
//! Decoding, gateway protocols and the outbound queue arrive with the SMS issue.

pub mod msisdn;
