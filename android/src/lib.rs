//! `hisa-android`: what the app needs from Android that desktop does not have.
//!
//! Module map:
//! - [`sms`]: the `smsto:` intent URI that opens the phone's SMS app with a
//!   submission filled in, for phones without the `SEND_SMS` permission.
//!
//! Code that calls into the JVM sits behind `cfg(target_os = "android")`;
//! what can be computed without it lives here and is tested on desktop.
//! No APK is built on this project's machines; README.md says how.

pub mod sms;
