//! What the gateway stores: inbound messages with their processing state,
//! outbound messages with their delivery state, and gateway configurations.
//! Times are milliseconds since the epoch: both databases compare integers
//! the same way, which scheduling and duplicate windows rely on.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where an inbound message is in its life. Every message is stored as
/// `Received` before anything else happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundState {
    Received,
    /// One part of a multipart Hisa message; the set is not complete yet.
    WaitingForParts,
    Applied,
    /// Applied, but some values were refused.
    AppliedWithWarnings,
    Rejected,
    /// The same message arrived before (same content from the same sender
    /// within the window, or a replayed counter).
    Duplicate,
    /// Over the sender's rate limit: stored, not processed, not answered.
    RateLimited,
}

impl InboundState {
    pub const ALL: &'static [InboundState] = &[
        InboundState::Received,
        InboundState::WaitingForParts,
        InboundState::Applied,
        InboundState::AppliedWithWarnings,
        InboundState::Rejected,
        InboundState::Duplicate,
        InboundState::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InboundState::Received => "RECEIVED",
            InboundState::WaitingForParts => "WAITING_FOR_PARTS",
            InboundState::Applied => "APPLIED",
            InboundState::AppliedWithWarnings => "APPLIED_WITH_WARNINGS",
            InboundState::Rejected => "REJECTED",
            InboundState::Duplicate => "DUPLICATE",
            InboundState::RateLimited => "RATE_LIMITED",
        }
    }

    pub fn parse(s: &str) -> Option<InboundState> {
        Self::ALL.iter().copied().find(|st| st.as_str() == s)
    }
}

/// Which format a message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageFormat {
    /// Hisa's authenticated compressed format.
    Hisa,
    /// DHIS2's compressed format (Android app).
    Dhis2,
    /// A plain-text command typed by a person.
    Command,
}

impl MessageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageFormat::Hisa => "HISA",
            MessageFormat::Dhis2 => "DHIS2",
            MessageFormat::Command => "COMMAND",
        }
    }

    pub fn parse(s: &str) -> Option<MessageFormat> {
        match s {
            "HISA" => Some(MessageFormat::Hisa),
            "DHIS2" => Some(MessageFormat::Dhis2),
            "COMMAND" => Some(MessageFormat::Command),
            _ => None,
        }
    }
}

/// A message as a gateway handed it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInbound {
    pub uid: String,
    /// UID of the gateway configuration it came through (or `api` for
    /// `POST /api/sms/inbound` without a gateway).
    pub gateway: String,
    /// The provider's or phone's id for the message, for de-duplication.
    pub provider_id: Option<String>,
    /// As the gateway gave it.
    pub sender_raw: String,
    /// E.164 when it could be normalised, else the raw text.
    pub sender: String,
    pub text: String,
    pub sent_at: Option<i64>,
    pub received_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboundSms {
    pub uid: String,
    pub gateway: String,
    pub provider_id: Option<String>,
    pub sender: String,
    pub text: String,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    pub state: InboundState,
    pub format: Option<MessageFormat>,
    /// Why it was rejected, or a note on how it was applied.
    pub reason: Option<String>,
    /// The user the message was attributed to.
    pub user: Option<String>,
    /// The device whose key authenticated it (Hisa format).
    pub device: Option<String>,
    pub processed_at: Option<i64>,
}

/// The outcome of processing, written back onto the inbound row.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundUpdate {
    pub state: InboundState,
    pub format: Option<MessageFormat>,
    pub reason: Option<String>,
    pub user: Option<String>,
    pub device: Option<String>,
    pub processed_at: i64,
}

/// What storing an inbound message found.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Stored; process it.
    New(InboundSms),
    /// The gateway delivered a message it had delivered before (same
    /// provider id): nothing new was stored.
    Redelivered(InboundSms),
    /// Stored with state `Duplicate`: the same text from the same sender
    /// arrived within the window. `of` is the earlier message.
    Duplicate { stored: InboundSms, of: String },
}

#[derive(Debug, Clone, Default)]
pub struct InboundFilter {
    pub states: Vec<InboundState>,
    pub sender: Option<String>,
    pub gateway: Option<String>,
    pub since: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

/// Where an outbound message is. `Queued` waits to be handed over;
/// `Offered` was given to a polling phone that has not confirmed it;
/// `Sending` is claimed by one server instance's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundState {
    Queued,
    Offered,
    Sending,
    /// Handed to the phone or provider; waiting for the network.
    Pending,
    Sent,
    Delivered,
    Failed,
}

impl OutboundState {
    pub const ALL: &'static [OutboundState] = &[
        OutboundState::Queued,
        OutboundState::Offered,
        OutboundState::Sending,
        OutboundState::Pending,
        OutboundState::Sent,
        OutboundState::Delivered,
        OutboundState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboundState::Queued => "QUEUED",
            OutboundState::Offered => "OFFERED",
            OutboundState::Sending => "SENDING",
            OutboundState::Pending => "PENDING",
            OutboundState::Sent => "SENT",
            OutboundState::Delivered => "DELIVERED",
            OutboundState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<OutboundState> {
        Self::ALL.iter().copied().find(|st| st.as_str() == s)
    }

    /// A later status never goes back to an earlier one: phones repeat
    /// status updates, and a late PENDING must not undo a DELIVERED.
    pub fn rank(self) -> u8 {
        match self {
            OutboundState::Queued => 0,
            OutboundState::Offered | OutboundState::Sending => 1,
            OutboundState::Pending => 2,
            OutboundState::Sent => 3,
            OutboundState::Delivered | OutboundState::Failed => 4,
        }
    }
}

/// Why a message is sent, for the outbound list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundKind {
    /// The answer to an inbound message.
    Reply,
    /// Typed by an admin (`POST /api/sms/outbound`).
    Message,
    /// A supervisor's return of a form.
    Notice,
}

impl OutboundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundKind::Reply => "REPLY",
            OutboundKind::Message => "MESSAGE",
            OutboundKind::Notice => "NOTICE",
        }
    }

    pub fn parse(s: &str) -> OutboundKind {
        match s {
            "REPLY" => OutboundKind::Reply,
            "NOTICE" => OutboundKind::Notice,
            _ => OutboundKind::Message,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbound {
    pub uid: String,
    pub gateway: String,
    pub recipient: String,
    pub text: String,
    pub kind: OutboundKind,
    pub inbound: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboundSms {
    pub uid: String,
    pub gateway: String,
    pub recipient: String,
    pub text: String,
    pub kind: OutboundKind,
    pub inbound: Option<String>,
    pub state: OutboundState,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct OutboundFilter {
    pub states: Vec<OutboundState>,
    pub recipient: Option<String>,
    pub gateway: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// A gateway as configured through `/api/gateways`. `config` keeps the
/// DHIS2-shaped JSON (secrets included); the API hides the secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRecord {
    pub uid: String,
    pub name: String,
    pub kind: String,
    pub is_default: bool,
    pub config: Value,
}

/// A device's SMS key and replay window, as the device registry keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsDeviceKey {
    pub key_id: u32,
    pub device: String,
    pub user: String,
    pub key: Vec<u8>,
    pub window: hisa_shared::hisa_sms::ReplayWindow,
    pub revoked: bool,
}

/// One part of a multipart message, as stored until its set is complete.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPart {
    pub inbound: String,
    pub index: u8,
    pub chunk: Vec<u8>,
    pub received_at: i64,
}
