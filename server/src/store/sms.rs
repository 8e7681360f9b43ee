//! The SMS gateway's storage ([`SmsStore`]) and the device registry
//! ([`DeviceStore`]) on both databases. As in `sql.rs` the statements are
//! shared; PostgreSQL adds row locks so several instances can claim
//! outbound messages without sending one twice.

use async_trait::async_trait;
use hisa_shared::hisa_sms::ReplayWindow;
use hisa_sms_gateway::model::*;
use hisa_sms_gateway::store::{SmsStore, SmsStoreError, SmsStoreResult};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{PgStore, SqliteStore, StoreError, StoreResult};

/// A device as the registry keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub uid: String,
    pub user_uid: String,
    pub name: Option<String>,
    pub model: Option<String>,
    pub app_version: Option<String>,
    pub sms_key_id: u32,
    pub enrolled_at: i64,
    pub last_seen_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub wipe_requested_at: Option<i64>,
    pub wiped_at: Option<i64>,
    /// Submissions the phone said were waiting, at its last contact.
    pub pending_reported: i64,
    /// Phone clock minus server clock at the last contact.
    pub clock_skew_ms: Option<i64>,
}

/// A device with its secret's hash and whether its user may sign in.
#[derive(Debug, Clone)]
pub struct DeviceLogin {
    pub device: DeviceRecord,
    pub secret_hash: String,
    /// The user has credentials and they are not disabled.
    pub user_active: bool,
}

/// What claiming a submission id found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This request applies it.
    New,
    /// Seen before: its stored status and result (JSON), if finished.
    Existing {
        status: String,
        result: Option<String>,
        received_at: i64,
    },
}

/// A submission id's row as stored, read ahead for a group of uploads so
/// that repeats are answered without a statement each.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredClaim {
    pub id: String,
    pub status: String,
    pub result: Option<String>,
    pub received_at: i64,
    pub updated_at: i64,
}

/// A submission applied in a transaction, recorded with its final result.
#[derive(Debug, Clone)]
pub struct RecordedSubmission {
    pub claim: SubmissionClaim,
    pub status: String,
    pub result: String,
}

#[derive(Debug, Clone)]
pub struct SubmissionClaim {
    pub id: String,
    pub device: String,
    pub user: String,
    pub kind: String,
    pub received_at: i64,
    pub device_time: Option<String>,
    pub captured_at: Option<String>,
    pub future_dated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    pub uid: String,
    pub name: String,
    /// DEFAULT, ROLE, ORG_UNIT or DEVICE.
    pub scope: String,
    /// The role, org unit or device uid; empty for DEFAULT.
    pub target: String,
    /// `PolicyRules` as JSON.
    pub rules: String,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAudit {
    pub device: String,
    pub action: String,
    pub by_user: Option<String>,
    pub at: i64,
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeviceWrite {
    pub uid: String,
    pub user_uid: String,
    pub name: Option<String>,
    pub model: Option<String>,
    pub app_version: Option<String>,
    pub secret_hash: String,
    pub sms_key_id: u32,
    pub sms_key: Vec<u8>,
    pub enrolled_at: i64,
}

#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// `Err(Conflict)` when the SMS key id is taken (pick another).
    async fn create_device(&self, device: &DeviceWrite) -> StoreResult<()>;
    async fn devices(&self, user_uid: Option<&str>) -> StoreResult<Vec<DeviceRecord>>;
    async fn device(&self, uid: &str) -> StoreResult<Option<DeviceRecord>>;
    async fn revoke_device(&self, uid: &str, at: i64) -> StoreResult<bool>;
    /// What authenticating a device needs, in one read.
    async fn device_login(&self, uid: &str) -> StoreResult<Option<DeviceLogin>>;
    /// Record a contact; `None` fields keep their stored values.
    async fn touch_device(
        &self,
        uid: &str,
        at: i64,
        app_version: Option<&str>,
        pending: Option<i64>,
        clock_skew_ms: Option<i64>,
    ) -> StoreResult<()>;
    async fn request_wipe(&self, uid: &str, at: i64) -> StoreResult<bool>;
    /// The phone confirmed it wiped: revoked from now on.
    async fn confirm_wipe(&self, uid: &str, at: i64) -> StoreResult<bool>;
    /// Revoke the user's live devices other than `except`; returns their uids.
    async fn revoke_user_devices(
        &self,
        user_uid: &str,
        except: &str,
        at: i64,
    ) -> StoreResult<Vec<String>>;
    async fn audit_device(&self, audit: &DeviceAudit) -> StoreResult<()>;
    /// Oldest first.
    async fn device_audits(&self, uid: &str) -> StoreResult<Vec<DeviceAudit>>;
    /// Claim a submission id. An `IN_PROGRESS` claim last touched before
    /// `stale_before` (its request died) is taken over.
    async fn claim_submission(
        &self,
        claim: &SubmissionClaim,
        stale_before: i64,
    ) -> StoreResult<Claim>;
    async fn finish_submission(
        &self,
        id: &str,
        status: &str,
        result: &str,
        at: i64,
    ) -> StoreResult<()>;
    async fn policies(&self) -> StoreResult<Vec<PolicyRecord>>;
    /// `Err(Conflict)` when another policy has the same scope and target.
    async fn put_policy(&self, policy: &PolicyRecord) -> StoreResult<()>;
    async fn delete_policy(&self, uid: &str) -> StoreResult<bool>;
    async fn create_enrolment_code(
        &self,
        code_hash: &str,
        user_uid: &str,
        created_by: &str,
        created_at: i64,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// Use a code once: the user it was made for, if unused and unexpired.
    async fn use_enrolment_code(&self, code_hash: &str, now: i64) -> StoreResult<Option<String>>;
}

fn err(e: sqlx::Error) -> SmsStoreError {
    SmsStoreError(e.to_string())
}

fn content_hash(sender: &str, text: &str) -> String {
    let digest = Sha256::digest(format!("{sender}\n{}", text.trim()).as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

const INBOUND_COLUMNS: &str = "uid, gateway, provider_id, sender, text, sent_at, received_at, \
     state, format, reason, user_uid, device_uid, processed_at";

const OUTBOUND_COLUMNS: &str =
    "uid, gateway, recipient, text, kind, inbound_uid, state, attempts, \
     next_attempt_at, reason, created_at, updated_at";

const DEVICE_COLUMNS: &str = "uid, user_uid, name, model, app_version, sms_key_id, enrolled_at, \
     last_seen_at, revoked_at, wipe_requested_at, wiped_at, pending_reported, clock_skew_ms";

// Statements the data transaction shares, to record a form's submission
// and the device's contact with the form's own write.
pub(super) const CLAIM_READ: &str =
    "SELECT status, result, received_at FROM sync_submission WHERE id = $1";
/// A submission's claim and final result at once, when it was applied in
/// the same transaction.
pub(super) const CLAIM_RECORD: &str =
    "INSERT INTO sync_submission (id, device_uid, user_uid, kind, status, received_at,
       device_time, captured_at, future_dated, updated_at, result)
     VALUES ($1, $2, $3, $4, $9, $5, $6, $7, $8, $11, $10)
     ON CONFLICT (id) DO NOTHING";
/// Takes over a dead request's claim with a final result.
pub(super) const CLAIM_RECORD_STALE: &str =
    "UPDATE sync_submission SET status = $2, result = $3, updated_at = $4
     WHERE id = $1 AND status = 'IN_PROGRESS' AND updated_at < $5";
pub(super) const DEVICE_TOUCH: &str =
    "UPDATE device SET last_seen_at = $2, app_version = COALESCE($3, app_version),
       pending_reported = COALESCE($4, pending_reported),
       clock_skew_ms = COALESCE($5, clock_skew_ms) WHERE uid = $1";

macro_rules! impl_sms_store {
    ($store:ty, $row:ty) => {
        fn inbound_from_row(r: &$row) -> Result<InboundSms, sqlx::Error> {
            Ok(InboundSms {
                uid: r.try_get("uid")?,
                gateway: r.try_get("gateway")?,
                provider_id: r.try_get("provider_id")?,
                sender: r.try_get("sender")?,
                text: r.try_get("text")?,
                sent_at: r.try_get("sent_at")?,
                received_at: r.try_get("received_at")?,
                state: InboundState::parse(&r.try_get::<String, _>("state")?)
                    .unwrap_or(InboundState::Received),
                format: r
                    .try_get::<Option<String>, _>("format")?
                    .and_then(|f| MessageFormat::parse(&f)),
                reason: r.try_get("reason")?,
                user: r.try_get("user_uid")?,
                device: r.try_get("device_uid")?,
                processed_at: r.try_get("processed_at")?,
            })
        }

        fn outbound_from_row(r: &$row) -> Result<OutboundSms, sqlx::Error> {
            Ok(OutboundSms {
                uid: r.try_get("uid")?,
                gateway: r.try_get("gateway")?,
                recipient: r.try_get("recipient")?,
                text: r.try_get("text")?,
                kind: OutboundKind::parse(&r.try_get::<String, _>("kind")?),
                inbound: r.try_get("inbound_uid")?,
                state: OutboundState::parse(&r.try_get::<String, _>("state")?)
                    .unwrap_or(OutboundState::Queued),
                attempts: r.try_get::<i64, _>("attempts")? as i32,
                next_attempt_at: r.try_get("next_attempt_at")?,
                reason: r.try_get("reason")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        fn device_from_row(r: &$row) -> Result<DeviceRecord, sqlx::Error> {
            Ok(DeviceRecord {
                uid: r.try_get("uid")?,
                user_uid: r.try_get("user_uid")?,
                name: r.try_get("name")?,
                model: r.try_get("model")?,
                app_version: r.try_get("app_version")?,
                sms_key_id: r.try_get::<i64, _>("sms_key_id")? as u32,
                enrolled_at: r.try_get("enrolled_at")?,
                last_seen_at: r.try_get("last_seen_at")?,
                revoked_at: r.try_get("revoked_at")?,
                wipe_requested_at: r.try_get("wipe_requested_at")?,
                wiped_at: r.try_get("wiped_at")?,
                pending_reported: r.try_get("pending_reported")?,
                clock_skew_ms: r.try_get("clock_skew_ms")?,
            })
        }

        /// Messages the gateway may still be handed this minute. Taken under
        /// the queue lock (PostgreSQL) or the one writer (SQLite), so two
        /// instances never both spend the same budget.
        async fn minute_budget(
            tx: &mut sqlx::Transaction<'static, <$row as sqlx::Row>::Database>,
            gateway: &str,
            per_minute: i64,
            now: i64,
        ) -> Result<i64, sqlx::Error> {
            if let Some(lock) = LOCK_QUEUE {
                sqlx::query(lock).bind(gateway).execute(&mut **tx).await?;
            }
            let recent: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sms_outbound WHERE gateway = $1 AND handed_at >= $2",
            )
            .bind(gateway)
            .bind(now - 60_000)
            .fetch_one(&mut **tx)
            .await?;
            Ok((per_minute - recent).max(0))
        }

        #[async_trait]
        impl SmsStore for $store {
            async fn insert_inbound(
                &self,
                sms: &NewInbound,
                duplicate_window_ms: i64,
            ) -> SmsStoreResult<Inserted> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                if let Some(pid) = &sms.provider_id {
                    let row = sqlx::query(&format!(
                        "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE gateway = $1 AND provider_id = $2"
                    ))
                    .bind(&sms.gateway)
                    .bind(pid)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(err)?;
                    if let Some(row) = row {
                        return Ok(Inserted::Redelivered(inbound_from_row(&row).map_err(err)?));
                    }
                }
                let hash = content_hash(&sms.sender, &sms.text);
                let earlier: Option<String> = sqlx::query_scalar(
                    "SELECT uid FROM sms_inbound WHERE sender = $1 AND content_hash = $2
                       AND received_at >= $3 AND state <> 'DUPLICATE'
                     ORDER BY received_at LIMIT 1",
                )
                .bind(&sms.sender)
                .bind(&hash)
                .bind(sms.received_at - duplicate_window_ms)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let (state, reason) = match &earlier {
                    Some(of) => (InboundState::Duplicate, Some(format!("same text as {of}"))),
                    None => (InboundState::Received, None),
                };
                let inserted = sqlx::query(
                    "INSERT INTO sms_inbound (uid, gateway, provider_id, sender_raw, sender, text,
                       content_hash, sent_at, received_at, state, reason, processed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (gateway, provider_id) WHERE provider_id IS NOT NULL DO NOTHING",
                )
                .bind(&sms.uid)
                .bind(&sms.gateway)
                .bind(&sms.provider_id)
                .bind(&sms.sender_raw)
                .bind(&sms.sender)
                .bind(&sms.text)
                .bind(&hash)
                .bind(sms.sent_at)
                .bind(sms.received_at)
                .bind(state.as_str())
                .bind(&reason)
                .bind(earlier.as_ref().map(|_| sms.received_at))
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                if inserted.rows_affected() == 0 {
                    // Another instance stored the same provider id first.
                    let row = sqlx::query(&format!(
                        "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE gateway = $1 AND provider_id = $2"
                    ))
                    .bind(&sms.gateway)
                    .bind(&sms.provider_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(err)?;
                    tx.commit().await.map_err(err)?;
                    return Ok(Inserted::Redelivered(inbound_from_row(&row).map_err(err)?));
                }
                let row = sqlx::query(&format!(
                    "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE uid = $1"
                ))
                .bind(&sms.uid)
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)?;
                let stored = inbound_from_row(&row).map_err(err)?;
                Ok(match earlier {
                    Some(of) => Inserted::Duplicate { stored, of },
                    None => Inserted::New(stored),
                })
            }

            async fn update_inbound(&self, uid: &str, u: &InboundUpdate) -> SmsStoreResult<()> {
                sqlx::query(
                    "UPDATE sms_inbound SET state = $2, format = $3, reason = $4, user_uid = $5,
                       device_uid = $6, processed_at = $7 WHERE uid = $1",
                )
                .bind(uid)
                .bind(u.state.as_str())
                .bind(u.format.map(|f| f.as_str()))
                .bind(&u.reason)
                .bind(&u.user)
                .bind(&u.device)
                .bind(u.processed_at)
                .execute(&self.writer)
                .await
                .map_err(err)?;
                Ok(())
            }

            async fn inbound(&self, uid: &str) -> SmsStoreResult<Option<InboundSms>> {
                let row = sqlx::query(&format!(
                    "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE uid = $1"
                ))
                .bind(uid)
                .fetch_optional(&self.reader)
                .await
                .map_err(err)?;
                row.map(|r| inbound_from_row(&r)).transpose().map_err(err)
            }

            async fn list_inbound(&self, f: &InboundFilter) -> SmsStoreResult<Vec<InboundSms>> {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE 1 = 1"
                ));
                push_in!(q, "state", f.states.iter().map(|s| s.as_str()));
                if let Some(sender) = &f.sender {
                    q.push(" AND sender = ").push_bind(sender.clone());
                }
                if let Some(gateway) = &f.gateway {
                    q.push(" AND gateway = ").push_bind(gateway.clone());
                }
                if let Some(since) = f.since {
                    q.push(" AND received_at >= ").push_bind(since);
                }
                q.push(" ORDER BY received_at DESC, uid LIMIT ")
                    .push_bind(f.limit.max(1))
                    .push(" OFFSET ")
                    .push_bind(f.offset.max(0));
                let rows = q.build().fetch_all(&self.reader).await.map_err(err)?;
                rows.iter()
                    .map(inbound_from_row)
                    .collect::<Result<_, _>>()
                    .map_err(err)
            }

            async fn count_from_sender(&self, sender: &str, since: i64) -> SmsStoreResult<i64> {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sms_inbound WHERE sender = $1 AND received_at >= $2",
                )
                .bind(sender)
                .bind(since)
                .fetch_one(&self.reader)
                .await
                .map_err(err)
            }

            async fn inbound_counts(
                &self,
                since: i64,
            ) -> SmsStoreResult<Vec<(InboundState, String, i64)>> {
                let rows = sqlx::query(
                    "SELECT state, COALESCE(format, '') AS format, COUNT(*) AS n FROM sms_inbound
                     WHERE received_at >= $1 GROUP BY state, format ORDER BY state, format",
                )
                .bind(since)
                .fetch_all(&self.reader)
                .await
                .map_err(err)?;
                let mut out = Vec::new();
                for r in rows {
                    let state: String = r.try_get("state").map_err(err)?;
                    if let Some(state) = InboundState::parse(&state) {
                        out.push((
                            state,
                            r.try_get("format").map_err(err)?,
                            r.try_get("n").map_err(err)?,
                        ));
                    }
                }
                Ok(out)
            }

            async fn stale_received(
                &self,
                before: i64,
                limit: i64,
            ) -> SmsStoreResult<Vec<InboundSms>> {
                let rows = sqlx::query(&format!(
                    "SELECT {INBOUND_COLUMNS} FROM sms_inbound WHERE state = 'RECEIVED'
                       AND received_at < $1 ORDER BY received_at LIMIT $2"
                ))
                .bind(before)
                .bind(limit)
                .fetch_all(&self.reader)
                .await
                .map_err(err)?;
                rows.iter()
                    .map(inbound_from_row)
                    .collect::<Result<_, _>>()
                    .map_err(err)
            }

            async fn put_part(
                &self,
                sender: &str,
                reference: u16,
                total: u8,
                part: &StoredPart,
            ) -> SmsStoreResult<Vec<StoredPart>> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                sqlx::query(
                    "INSERT INTO sms_part (sender, reference, total, idx, inbound_uid, chunk, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (sender, reference, total, idx) DO NOTHING",
                )
                .bind(sender)
                .bind(i64::from(reference))
                .bind(i64::from(total))
                .bind(i64::from(part.index))
                .bind(&part.inbound)
                .bind(&part.chunk)
                .bind(part.received_at)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                let rows = sqlx::query(
                    "SELECT idx, inbound_uid, chunk, received_at FROM sms_part
                     WHERE sender = $1 AND reference = $2 AND total = $3 ORDER BY idx",
                )
                .bind(sender)
                .bind(i64::from(reference))
                .bind(i64::from(total))
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)?;
                rows.iter()
                    .map(|r| {
                        Ok(StoredPart {
                            index: r.try_get::<i64, _>("idx")? as u8,
                            inbound: r.try_get("inbound_uid")?,
                            chunk: r.try_get("chunk")?,
                            received_at: r.try_get("received_at")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(err)
            }

            async fn take_parts(&self, sender: &str, reference: u16, total: u8) -> SmsStoreResult<bool> {
                let done = sqlx::query(
                    "DELETE FROM sms_part WHERE sender = $1 AND reference = $2 AND total = $3",
                )
                .bind(sender)
                .bind(i64::from(reference))
                .bind(i64::from(total))
                .execute(&self.writer)
                .await
                .map_err(err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn expire_parts(&self, before: i64) -> SmsStoreResult<Vec<String>> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                // A set expires whole: one late part must not keep the others.
                let uids: Vec<String> = sqlx::query_scalar(
                    "SELECT p.inbound_uid FROM sms_part p WHERE EXISTS (
                       SELECT 1 FROM sms_part q WHERE q.sender = p.sender AND q.reference = p.reference
                         AND q.total = p.total GROUP BY q.sender HAVING MAX(q.received_at) < $1)",
                )
                .bind(before)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
                for uid in &uids {
                    sqlx::query("DELETE FROM sms_part WHERE inbound_uid = $1")
                        .bind(uid)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                tx.commit().await.map_err(err)?;
                Ok(uids)
            }

            async fn device_key(&self, key_id: u32) -> SmsStoreResult<Option<SmsDeviceKey>> {
                let row = sqlx::query(
                    "SELECT uid, user_uid, sms_key, replay_highest, replay_seen, revoked_at
                     FROM device WHERE sms_key_id = $1",
                )
                .bind(i64::from(key_id))
                .fetch_optional(&self.reader)
                .await
                .map_err(err)?;
                row.map(|r| -> Result<SmsDeviceKey, sqlx::Error> {
                    Ok(SmsDeviceKey {
                        key_id,
                        device: r.try_get("uid")?,
                        user: r.try_get("user_uid")?,
                        key: r.try_get("sms_key")?,
                        window: ReplayWindow {
                            highest: r.try_get::<i64, _>("replay_highest")? as u32,
                            seen: r.try_get::<i64, _>("replay_seen")? as u64,
                        },
                        revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                    })
                })
                .transpose()
                .map_err(err)
            }

            async fn update_replay_window(
                &self,
                key_id: u32,
                old: &ReplayWindow,
                new: &ReplayWindow,
            ) -> SmsStoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE device SET replay_highest = $2, replay_seen = $3
                     WHERE sms_key_id = $1 AND replay_highest = $4 AND replay_seen = $5",
                )
                .bind(i64::from(key_id))
                .bind(i64::from(new.highest))
                .bind(new.seen as i64)
                .bind(i64::from(old.highest))
                .bind(old.seen as i64)
                .execute(&self.writer)
                .await
                .map_err(err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn enqueue(&self, messages: &[NewOutbound]) -> SmsStoreResult<()> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                for m in messages {
                    sqlx::query(
                        "INSERT INTO sms_outbound (uid, gateway, recipient, text, kind, inbound_uid,
                           state, attempts, next_attempt_at, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, 'QUEUED', 0, $7, $7, $7)",
                    )
                    .bind(&m.uid)
                    .bind(&m.gateway)
                    .bind(&m.recipient)
                    .bind(&m.text)
                    .bind(m.kind.as_str())
                    .bind(&m.inbound)
                    .bind(m.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                }
                tx.commit().await.map_err(err)
            }

            async fn outbound(&self, uid: &str) -> SmsStoreResult<Option<OutboundSms>> {
                let row = sqlx::query(&format!(
                    "SELECT {OUTBOUND_COLUMNS} FROM sms_outbound WHERE uid = $1"
                ))
                .bind(uid)
                .fetch_optional(&self.reader)
                .await
                .map_err(err)?;
                row.map(|r| outbound_from_row(&r)).transpose().map_err(err)
            }

            async fn list_outbound(&self, f: &OutboundFilter) -> SmsStoreResult<Vec<OutboundSms>> {
                let mut q = sqlx::QueryBuilder::new(format!(
                    "SELECT {OUTBOUND_COLUMNS} FROM sms_outbound WHERE 1 = 1"
                ));
                push_in!(q, "state", f.states.iter().map(|s| s.as_str()));
                if let Some(r) = &f.recipient {
                    q.push(" AND recipient = ").push_bind(r.clone());
                }
                if let Some(g) = &f.gateway {
                    q.push(" AND gateway = ").push_bind(g.clone());
                }
                q.push(" ORDER BY created_at DESC, uid LIMIT ")
                    .push_bind(f.limit.max(1))
                    .push(" OFFSET ")
                    .push_bind(f.offset.max(0));
                let rows = q.build().fetch_all(&self.reader).await.map_err(err)?;
                rows.iter()
                    .map(outbound_from_row)
                    .collect::<Result<_, _>>()
                    .map_err(err)
            }

            async fn offer_outbound(
                &self,
                gateway: &str,
                per_minute: i64,
                now: i64,
            ) -> SmsStoreResult<Vec<OutboundSms>> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                let budget = minute_budget(&mut tx, gateway, per_minute, now).await.map_err(err)?;
                if budget > 0 {
                    sqlx::query(&format!(
                        "UPDATE sms_outbound SET state = 'OFFERED', handed_at = $2, updated_at = $2,
                           attempts = attempts + 1
                         WHERE uid IN (SELECT uid FROM sms_outbound WHERE gateway = $1
                           AND state = 'QUEUED' AND next_attempt_at <= $2
                           ORDER BY created_at, uid LIMIT $3 {})",
                        SKIP_LOCKED
                    ))
                    .bind(gateway)
                    .bind(now)
                    .bind(budget)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                }
                let rows = sqlx::query(&format!(
                    "SELECT {OUTBOUND_COLUMNS} FROM sms_outbound WHERE gateway = $1 AND state = 'OFFERED'
                     ORDER BY created_at, uid LIMIT 100"
                ))
                .bind(gateway)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)?;
                rows.iter()
                    .map(outbound_from_row)
                    .collect::<Result<_, _>>()
                    .map_err(err)
            }

            async fn claim_outbound(
                &self,
                gateway: &str,
                per_minute: i64,
                now: i64,
                lease_until: i64,
            ) -> SmsStoreResult<Vec<OutboundSms>> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                let budget = minute_budget(&mut tx, gateway, per_minute, now).await.map_err(err)?;
                if budget == 0 {
                    tx.commit().await.map_err(err)?;
                    return Ok(Vec::new());
                }
                let rows = sqlx::query(&format!(
                    "UPDATE sms_outbound SET state = 'SENDING', claimed_until = $3, handed_at = $2,
                       updated_at = $2, attempts = attempts + 1
                     WHERE uid IN (SELECT uid FROM sms_outbound WHERE gateway = $1
                       AND ((state = 'QUEUED' AND next_attempt_at <= $2)
                         OR (state = 'SENDING' AND claimed_until < $2))
                       ORDER BY created_at, uid LIMIT $4 {})
                     RETURNING {OUTBOUND_COLUMNS}",
                    SKIP_LOCKED
                ))
                .bind(gateway)
                .bind(now)
                .bind(lease_until)
                .bind(budget)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)?;
                let mut out: Vec<OutboundSms> = rows
                    .iter()
                    .map(outbound_from_row)
                    .collect::<Result<_, _>>()
                    .map_err(err)?;
                out.sort_by(|a, b| (a.created_at, &a.uid).cmp(&(b.created_at, &b.uid)));
                Ok(out)
            }

            async fn set_outbound_state(
                &self,
                uid: &str,
                state: OutboundState,
                reason: Option<&str>,
                now: i64,
            ) -> SmsStoreResult<bool> {
                for _ in 0..4 {
                    let current: Option<String> =
                        sqlx::query_scalar("SELECT state FROM sms_outbound WHERE uid = $1")
                            .bind(uid)
                            .fetch_optional(&self.writer)
                            .await
                            .map_err(err)?;
                    let Some(current) = current else {
                        return Ok(false);
                    };
                    let current_state = OutboundState::parse(&current).unwrap_or(OutboundState::Queued);
                    if state.rank() < current_state.rank() || state == current_state {
                        return Ok(true);
                    }
                    let done = sqlx::query(
                        "UPDATE sms_outbound SET state = $2, reason = COALESCE($3, reason),
                           updated_at = $4, claimed_until = NULL
                         WHERE uid = $1 AND state = $5",
                    )
                    .bind(uid)
                    .bind(state.as_str())
                    .bind(reason)
                    .bind(now)
                    .bind(&current)
                    .execute(&self.writer)
                    .await
                    .map_err(err)?;
                    if done.rows_affected() == 1 {
                        return Ok(true);
                    }
                }
                Err(SmsStoreError(format!("the state of SMS {uid} kept changing")))
            }

            async fn retry_outbound(
                &self,
                uid: &str,
                reason: &str,
                next_attempt_at: i64,
                give_up: bool,
                now: i64,
            ) -> SmsStoreResult<()> {
                sqlx::query(
                    "UPDATE sms_outbound SET state = $2, reason = $3, next_attempt_at = $4,
                       claimed_until = NULL, updated_at = $5 WHERE uid = $1",
                )
                .bind(uid)
                .bind(if give_up { "FAILED" } else { "QUEUED" })
                .bind(reason)
                .bind(next_attempt_at)
                .bind(now)
                .execute(&self.writer)
                .await
                .map_err(err)?;
                Ok(())
            }

            async fn gateways(&self) -> SmsStoreResult<Vec<GatewayRecord>> {
                let rows = sqlx::query(
                    "SELECT uid, name, kind, is_default, config FROM sms_gateway ORDER BY name, uid",
                )
                .fetch_all(&self.reader)
                .await
                .map_err(err)?;
                rows.iter()
                    .map(|r| {
                        let config: String = r.try_get("config").map_err(err)?;
                        Ok(GatewayRecord {
                            uid: r.try_get("uid").map_err(err)?,
                            name: r.try_get("name").map_err(err)?,
                            kind: r.try_get("kind").map_err(err)?,
                            is_default: r.try_get("is_default").map_err(err)?,
                            config: serde_json::from_str(&config)
                                .map_err(|e| SmsStoreError(e.to_string()))?,
                        })
                    })
                    .collect()
            }

            async fn put_gateway(&self, g: &GatewayRecord) -> SmsStoreResult<()> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                let now = hisa_sms_gateway::service::now_ms();
                sqlx::query(
                    "INSERT INTO sms_gateway (uid, name, kind, is_default, config, updated_at)
                     VALUES ($1, $2, $3, FALSE, $4, $5)
                     ON CONFLICT (uid) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                       config = excluded.config, updated_at = excluded.updated_at",
                )
                .bind(&g.uid)
                .bind(&g.name)
                .bind(&g.kind)
                .bind(g.config.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                sqlx::query(
                    "UPDATE sms_gateway SET is_default = TRUE WHERE uid = $1
                       AND NOT EXISTS (SELECT 1 FROM sms_gateway WHERE is_default)",
                )
                .bind(&g.uid)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)
            }

            async fn delete_gateway(&self, uid: &str) -> SmsStoreResult<bool> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                let done = sqlx::query("DELETE FROM sms_gateway WHERE uid = $1")
                    .bind(uid)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                sqlx::query(
                    "UPDATE sms_gateway SET is_default = TRUE WHERE uid =
                       (SELECT uid FROM sms_gateway ORDER BY name, uid LIMIT 1)
                       AND NOT EXISTS (SELECT 1 FROM sms_gateway WHERE is_default)",
                )
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_default_gateway(&self, uid: &str) -> SmsStoreResult<bool> {
                let mut tx = self.writer.begin().await.map_err(err)?;
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT uid FROM sms_gateway WHERE uid = $1")
                        .bind(uid)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(err)?;
                if exists.is_none() {
                    return Ok(false);
                }
                sqlx::query("UPDATE sms_gateway SET is_default = (uid = $1)")
                    .bind(uid)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                tx.commit().await.map_err(err)?;
                Ok(true)
            }
        }

        #[async_trait]
        impl DeviceStore for $store {
            async fn create_device(&self, d: &DeviceWrite) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO device (uid, user_uid, name, model, app_version, secret_hash,
                       sms_key_id, sms_key, enrolled_at, last_seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                )
                .bind(&d.uid)
                .bind(&d.user_uid)
                .bind(&d.name)
                .bind(&d.model)
                .bind(&d.app_version)
                .bind(&d.secret_hash)
                .bind(i64::from(d.sms_key_id))
                .bind(&d.sms_key)
                .bind(d.enrolled_at)
                .execute(&self.writer)
                .await
                .map_err(crate::store::sql::map_unique)?;
                Ok(())
            }

            async fn devices(&self, user_uid: Option<&str>) -> StoreResult<Vec<DeviceRecord>> {
                let rows = sqlx::query(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM device WHERE ($1 IS NULL OR user_uid = $1)
                     ORDER BY enrolled_at DESC, uid"
                ))
                .bind(user_uid)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(device_from_row)
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::from)
            }

            async fn device(&self, uid: &str) -> StoreResult<Option<DeviceRecord>> {
                let row = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM device WHERE uid = $1"))
                    .bind(uid)
                    .fetch_optional(&self.reader)
                    .await?;
                row.map(|r| device_from_row(&r))
                    .transpose()
                    .map_err(StoreError::from)
            }

            async fn revoke_device(&self, uid: &str, at: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE device SET revoked_at = COALESCE(revoked_at, $2) WHERE uid = $1",
                )
                .bind(uid)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn device_login(&self, uid: &str) -> StoreResult<Option<DeviceLogin>> {
                let row = sqlx::query(
                    "SELECT d.uid, d.user_uid, d.name, d.model, d.app_version, d.sms_key_id,
                       d.enrolled_at, d.last_seen_at, d.revoked_at, d.wipe_requested_at, d.wiped_at,
                       d.pending_reported, d.clock_skew_ms, d.secret_hash,
                       c.disabled AS credential_disabled
                     FROM device d
                     LEFT JOIN metadata_object m ON m.uid = d.user_uid AND m.deleted = FALSE
                     LEFT JOIN user_credential c ON c.user_id = m.id
                     WHERE d.uid = $1",
                )
                .bind(uid)
                .fetch_optional(&self.reader)
                .await?;
                let Some(r) = row else {
                    return Ok(None);
                };
                let disabled: Option<bool> = r.try_get("credential_disabled")?;
                Ok(Some(DeviceLogin {
                    device: device_from_row(&r)?,
                    secret_hash: r.try_get("secret_hash")?,
                    user_active: disabled == Some(false),
                }))
            }

            async fn touch_device(
                &self,
                uid: &str,
                at: i64,
                app_version: Option<&str>,
                pending: Option<i64>,
                clock_skew_ms: Option<i64>,
            ) -> StoreResult<()> {
                sqlx::query(DEVICE_TOUCH)
                .bind(uid)
                .bind(at)
                .bind(app_version)
                .bind(pending)
                .bind(clock_skew_ms)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn request_wipe(&self, uid: &str, at: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE device SET wipe_requested_at = COALESCE(wipe_requested_at, $2)
                     WHERE uid = $1 AND wiped_at IS NULL",
                )
                .bind(uid)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn confirm_wipe(&self, uid: &str, at: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE device SET wiped_at = $2, revoked_at = COALESCE(revoked_at, $2)
                     WHERE uid = $1 AND wipe_requested_at IS NOT NULL AND wiped_at IS NULL",
                )
                .bind(uid)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn revoke_user_devices(
                &self,
                user_uid: &str,
                except: &str,
                at: i64,
            ) -> StoreResult<Vec<String>> {
                let uids: Vec<String> = sqlx::query_scalar(
                    "UPDATE device SET revoked_at = $3
                     WHERE user_uid = $1 AND uid <> $2 AND revoked_at IS NULL RETURNING uid",
                )
                .bind(user_uid)
                .bind(except)
                .bind(at)
                .fetch_all(&self.writer)
                .await?;
                Ok(uids)
            }

            async fn audit_device(&self, a: &DeviceAudit) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO device_audit (device_uid, action, by_user, at, detail)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&a.device)
                .bind(&a.action)
                .bind(&a.by_user)
                .bind(a.at)
                .bind(&a.detail)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn device_audits(&self, uid: &str) -> StoreResult<Vec<DeviceAudit>> {
                let rows = sqlx::query(
                    "SELECT device_uid, action, by_user, at, detail FROM device_audit
                     WHERE device_uid = $1 ORDER BY at, id",
                )
                .bind(uid)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(DeviceAudit {
                            device: r.try_get("device_uid")?,
                            action: r.try_get("action")?,
                            by_user: r.try_get("by_user")?,
                            at: r.try_get("at")?,
                            detail: r.try_get("detail")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError::from)
            }

            async fn claim_submission(
                &self,
                c: &SubmissionClaim,
                stale_before: i64,
            ) -> StoreResult<Claim> {
                let inserted = sqlx::query(
                    "INSERT INTO sync_submission (id, device_uid, user_uid, kind, status, received_at,
                       device_time, captured_at, future_dated, updated_at)
                     VALUES ($1, $2, $3, $4, 'IN_PROGRESS', $5, $6, $7, $8, $5)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&c.id)
                .bind(&c.device)
                .bind(&c.user)
                .bind(&c.kind)
                .bind(c.received_at)
                .bind(&c.device_time)
                .bind(&c.captured_at)
                .bind(c.future_dated)
                .execute(&self.writer)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(Claim::New);
                }
                let taken = sqlx::query(
                    "UPDATE sync_submission SET updated_at = $2
                     WHERE id = $1 AND status = 'IN_PROGRESS' AND updated_at < $3",
                )
                .bind(&c.id)
                .bind(c.received_at)
                .bind(stale_before)
                .execute(&self.writer)
                .await?;
                if taken.rows_affected() == 1 {
                    return Ok(Claim::New);
                }
                let row = sqlx::query(
                    "SELECT status, result, received_at FROM sync_submission WHERE id = $1",
                )
                .bind(&c.id)
                .fetch_one(&self.writer)
                .await?;
                Ok(Claim::Existing {
                    status: row.try_get("status")?,
                    result: row.try_get("result")?,
                    received_at: row.try_get("received_at")?,
                })
            }

            async fn finish_submission(&self, id: &str, status: &str, result: &str, at: i64) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE sync_submission SET status = $2, result = $3, updated_at = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(status)
                .bind(result)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn policies(&self) -> StoreResult<Vec<PolicyRecord>> {
                let cache = &self.caches.policies;
                if let Some(rows) = cache.get() {
                    return Ok(rows);
                }
                let generation = cache.generation();
                let rows = sqlx::query(
                    "SELECT uid, name, scope, target, rules, updated_at FROM device_policy ORDER BY name, uid",
                )
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(PolicyRecord {
                            uid: r.try_get("uid")?,
                            name: r.try_get("name")?,
                            scope: r.try_get("scope")?,
                            target: r.try_get("target")?,
                            rules: r.try_get("rules")?,
                            updated_at: r.try_get("updated_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(StoreError::from)
                    .inspect(|rows| cache.keep(generation, rows))
            }

            async fn put_policy(&self, p: &PolicyRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO device_policy (uid, name, scope, target, rules, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (uid) DO UPDATE SET name = excluded.name, scope = excluded.scope,
                       target = excluded.target, rules = excluded.rules, updated_at = excluded.updated_at",
                )
                .bind(&p.uid)
                .bind(&p.name)
                .bind(&p.scope)
                .bind(&p.target)
                .bind(&p.rules)
                .bind(p.updated_at)
                .execute(&self.writer)
                .await
                .map_err(crate::store::sql::map_unique)?;
                self.caches.policies.invalidate();
                Ok(())
            }

            async fn delete_policy(&self, uid: &str) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM device_policy WHERE uid = $1")
                    .bind(uid)
                    .execute(&self.writer)
                    .await?;
                self.caches.policies.invalidate();
                Ok(done.rows_affected() > 0)
            }

            async fn create_enrolment_code(
                &self,
                code_hash: &str,
                user_uid: &str,
                created_by: &str,
                created_at: i64,
                expires_at: i64,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO enrolment_code (code_hash, user_uid, created_by, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(code_hash)
                .bind(user_uid)
                .bind(created_by)
                .bind(created_at)
                .bind(expires_at)
                .execute(&self.writer)
                .await
                .map_err(crate::store::sql::map_unique)?;
                Ok(())
            }

            async fn use_enrolment_code(&self, code_hash: &str, now: i64) -> StoreResult<Option<String>> {
                let user: Option<String> = sqlx::query_scalar(
                    "UPDATE enrolment_code SET used_at = $2
                     WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_uid",
                )
                .bind(code_hash)
                .bind(now)
                .fetch_optional(&self.writer)
                .await?;
                Ok(user)
            }
        }
    };
}

mod sqlite {
    use super::*;
    // SQLite has one writer: a transaction already has the queue to itself.
    const LOCK_QUEUE: Option<&str> = None;
    const SKIP_LOCKED: &str = "";
    impl_sms_store!(SqliteStore, sqlx::sqlite::SqliteRow);
}

mod postgres {
    use super::*;
    // One instance at a time counts and claims a gateway's budget; rows
    // another instance holds are skipped rather than waited for.
    const LOCK_QUEUE: Option<&str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");
    const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";
    impl_sms_store!(PgStore, sqlx::postgres::PgRow);
}
