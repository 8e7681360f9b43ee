//! `hisa-app`: the health worker's phone app.
//!
//! Module map:
//! - [`store`]: the local store, sealed with AES-256-GCM under a key wrapped
//!   by the user's PIN (Argon2id); PIN policy, failed-attempt wipe, idle lock.
//!
//! - [`sms`]: the SMS fallback: forms and events as Hisa's authenticated
//!   compressed SMS, signed with the key enrolment gave the phone.
//! - [`sync`]: the headless sync client: enrolment, metadata packages, the
//!   outbox pushed until every submission has a final result, instructions
//!   (policy, wipe).
//!
//! The Dioxus screens, the sync client and the SMS fallback build on this
//! store; they arrive with the app and sync issues.

pub mod sms;
pub mod store;
pub mod sync;
