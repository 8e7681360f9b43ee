//! `hisa-app`: the health worker's phone app.
//!
//! Module map:
//! - [`store`]: the local store, sealed with AES-256-GCM under a key wrapped
//!   by the user's PIN (Argon2id); PIN policy, failed-attempt wipe, idle lock.
//!
//! The Dioxus screens, the sync client and the SMS fallback build on this
//! store; they arrive with the app and sync issues.

pub mod store;
