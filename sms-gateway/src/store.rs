//! The gateway's storage, as a trait of its own: the server implements it
//! on SQLite and PostgreSQL; tests can implement it in memory. Every method
//! is one atomic step, so several server instances can share one database.

use async_trait::async_trait;
use hisa_shared::hisa_sms::ReplayWindow;

use crate::model::*;

#[derive(Debug, thiserror::Error)]
#[error("SMS storage failed: {0}")]
pub struct SmsStoreError(pub String);

pub type SmsStoreResult<T> = Result<T, SmsStoreError>;

#[async_trait]
pub trait SmsStore: Send + Sync + 'static {
    /// Store a message raw before anything else. A provider id seen before
    /// on the same gateway returns the earlier row (`Redelivered`); the same
    /// text from the same sender received within `duplicate_window_ms`
    /// is stored with state `Duplicate`.
    async fn insert_inbound(
        &self,
        sms: &NewInbound,
        duplicate_window_ms: i64,
    ) -> SmsStoreResult<Inserted>;
    async fn update_inbound(&self, uid: &str, update: &InboundUpdate) -> SmsStoreResult<()>;
    async fn inbound(&self, uid: &str) -> SmsStoreResult<Option<InboundSms>>;
    /// Newest first.
    async fn list_inbound(&self, filter: &InboundFilter) -> SmsStoreResult<Vec<InboundSms>>;
    /// How many messages from `sender` were received at or after `since`.
    async fn count_from_sender(&self, sender: &str, since: i64) -> SmsStoreResult<i64>;
    /// Counts by state and reason since `since`, for the security counters.
    async fn inbound_counts(&self, since: i64) -> SmsStoreResult<Vec<(InboundState, String, i64)>>;
    /// Messages left in `Received` before `before` (a crash mid-processing).
    async fn stale_received(&self, before: i64, limit: i64) -> SmsStoreResult<Vec<InboundSms>>;

    /// Keep one part of a multipart message; returns every part of its set
    /// held so far (each index once, first arrival kept).
    async fn put_part(
        &self,
        sender: &str,
        reference: u16,
        total: u8,
        part: &StoredPart,
    ) -> SmsStoreResult<Vec<StoredPart>>;
    /// Remove a set once assembled. Returns false when another instance
    /// removed it first (it is handling the set).
    async fn take_parts(&self, sender: &str, reference: u16, total: u8) -> SmsStoreResult<bool>;
    /// Remove parts received before `before`; returns the inbound uids of
    /// the parts removed, so their messages can be marked incomplete.
    async fn expire_parts(&self, before: i64) -> SmsStoreResult<Vec<String>>;

    async fn device_key(&self, key_id: u32) -> SmsStoreResult<Option<SmsDeviceKey>>;
    /// Compare-and-swap: write `new` only if the stored window is still
    /// `old`. False means another message of the device got there first.
    async fn update_replay_window(
        &self,
        key_id: u32,
        old: &ReplayWindow,
        new: &ReplayWindow,
    ) -> SmsStoreResult<bool>;

    async fn enqueue(&self, messages: &[NewOutbound]) -> SmsStoreResult<()>;
    async fn outbound(&self, uid: &str) -> SmsStoreResult<Option<OutboundSms>>;
    /// Newest first.
    async fn list_outbound(&self, filter: &OutboundFilter) -> SmsStoreResult<Vec<OutboundSms>>;
    /// For a polling phone: every message already offered and not yet
    /// confirmed, plus queued ones up to the gateway's budget for the last
    /// minute (`per_minute`), which become `Offered`. Oldest first.
    async fn offer_outbound(
        &self,
        gateway: &str,
        per_minute: i64,
        now: i64,
    ) -> SmsStoreResult<Vec<OutboundSms>>;
    /// For a sender that pushes to a provider: claim due messages up to the
    /// budget as `Sending` until `lease_until`. Claims that expired (an
    /// instance died) are claimed again. Each message goes to one claimer.
    async fn claim_outbound(
        &self,
        gateway: &str,
        per_minute: i64,
        now: i64,
        lease_until: i64,
    ) -> SmsStoreResult<Vec<OutboundSms>>;
    /// Record a status. A status of lower rank than the stored one is
    /// ignored (repeated or late updates). Returns false for unknown uids.
    async fn set_outbound_state(
        &self,
        uid: &str,
        state: OutboundState,
        reason: Option<&str>,
        now: i64,
    ) -> SmsStoreResult<bool>;
    /// A failed attempt: back to `Queued` at `next_attempt_at`, or `Failed`
    /// when `give_up`.
    async fn retry_outbound(
        &self,
        uid: &str,
        reason: &str,
        next_attempt_at: i64,
        give_up: bool,
        now: i64,
    ) -> SmsStoreResult<()>;

    async fn gateways(&self) -> SmsStoreResult<Vec<GatewayRecord>>;
    /// Insert or replace by uid. The first gateway stored becomes the default.
    async fn put_gateway(&self, gateway: &GatewayRecord) -> SmsStoreResult<()>;
    async fn delete_gateway(&self, uid: &str) -> SmsStoreResult<bool>;
    async fn set_default_gateway(&self, uid: &str) -> SmsStoreResult<bool>;
}
