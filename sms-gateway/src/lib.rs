//! `hisa-sms-gateway`: SMS in and out of Hisa, mounted by the server.
//!
//! Module map:
//! - [`msisdn`]: phone numbers as gateways send them, normalised to E.164.
//! - [`model`]: inbound and outbound messages, their states, gateway records.
//! - [`store`]: [`store::SmsStore`], the gateway's own storage trait.
//! - [`directory`]: [`directory::SmsDirectory`], what the gateway asks of
//!   the rest of Hisa (users, a metadata catalog, storing forms and events).
//! - [`plaintext`]: typed commands: DHIS2's key=value and CHT's dialects.
//! - [`replies`]: reply texts in the sender's language.
//! - [`process`]: one stored message to data and a reply, for the three formats.
//! - [`service`]: receive, reprocess, decode, queue, poll and push.
//! - [`gateways`]: gateway configurations and the outbound protocols.
//! - [`http`]: the inbound protocols (CHT polls, SMS Gate webhooks, generic HTTP).
//!
//! Data flow: gateway → [`http`] → [`service::SmsService::receive`] (store
//! raw, de-duplicate, rate-limit) → [`process`] → directory (data written)
//! → reply queued → polled by the phone or pushed by [`service::SmsService::run`].

pub mod directory;
pub mod gateways;
pub mod http;
pub mod model;
pub mod msisdn;
pub mod plaintext;
pub mod process;
pub mod replies;
pub mod service;
pub mod store;

use axum::http::StatusCode;

pub use service::{SmsConfig, SmsService};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] store::SmsStoreError),
    #[error(transparent)]
    Directory(#[from] directory::DirectoryError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
