//! The gateway as a service: receive a message (store raw, de-duplicate,
//! rate-limit, process, answer), reprocess, decode for an admin, queue
//! outbound messages, serve polling phones and push to providers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::directory::SmsDirectory;
use crate::gateways::{GatewayKind, GatewaySettings};
use crate::model::*;
use crate::process::{Processed, Processor};
use crate::store::SmsStore;
use crate::GatewayError;

#[derive(Debug, Clone)]
pub struct SmsConfig {
    /// Digits of the country calling code, to complete national numbers.
    pub country_code: Option<String>,
    /// The same text from the same sender within this window is a duplicate.
    pub duplicate_window_ms: i64,
    /// At most `rate_limit` messages from one sender per `rate_window_ms`.
    pub rate_limit: i64,
    pub rate_window_ms: i64,
    /// Parts of a multipart message wait this long for the rest.
    pub part_expiry_ms: i64,
    /// A failed push is retried this many times before it is given up.
    pub max_attempts: i32,
    /// How often the outbound sender looks for work.
    pub send_interval: Duration,
    /// Signed webhooks older or newer than this are refused.
    pub signature_tolerance_s: i64,
    /// Push and sweep in the background ([`SmsService::run`]). Off where
    /// something else drives [`SmsService::send_due`] and [`SmsService::sweep`]
    /// (tests that must see each step).
    pub background: bool,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            country_code: None,
            duplicate_window_ms: 60_000,
            rate_limit: 60,
            rate_window_ms: 10 * 60_000,
            part_expiry_ms: 24 * 3_600_000,
            max_attempts: 8,
            send_interval: Duration::from_secs(5),
            signature_tolerance_s: 300,
            background: true,
        }
    }
}

/// Security events, counted per instance since start (the inbound table
/// holds the durable record: `GET /api/sms/inbound?state=REJECTED`).
#[derive(Debug, Default)]
pub struct SecurityCounters {
    counts: std::sync::Mutex<HashMap<&'static str, u64>>,
    total: AtomicU64,
}

impl SecurityCounters {
    pub fn record(&self, kind: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(kind).or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .counts
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.to_string(), *v)).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// A message as a gateway protocol delivered it.
#[derive(Debug, Clone)]
pub struct IncomingSms {
    pub provider_id: Option<String>,
    pub sender: String,
    pub text: String,
    pub sent_at: Option<i64>,
}

/// What receiving one message came to.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub inbound: InboundSms,
    /// The reply queued for the sender, if any.
    pub reply: Option<String>,
}

pub struct SmsService {
    pub store: Arc<dyn SmsStore>,
    pub directory: Arc<dyn SmsDirectory>,
    pub config: SmsConfig,
    pub counters: SecurityCounters,
    http: reqwest::Client,
    /// Wakes the background sender when something was queued.
    queued: tokio::sync::Notify,
}

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn new_uid() -> String {
    hisa_shared::Uid::generate().as_str().to_string()
}

impl SmsService {
    pub fn new(
        store: Arc<dyn SmsStore>,
        directory: Arc<dyn SmsDirectory>,
        config: SmsConfig,
    ) -> SmsService {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_default();
        SmsService {
            store,
            directory,
            config,
            counters: SecurityCounters::default(),
            http,
            queued: tokio::sync::Notify::new(),
        }
    }

    fn normalize(&self, raw: &str) -> String {
        crate::msisdn::normalize(raw, self.config.country_code.as_deref())
            .unwrap_or_else(|_| raw.trim().to_string())
    }

    /// Store a message raw, then process and answer it. Nothing is applied
    /// before the raw message is stored, so a crash loses nothing.
    pub async fn receive(&self, gateway: &str, sms: IncomingSms) -> Result<Receipt, GatewayError> {
        if sms.sender.trim().is_empty() {
            return Err(GatewayError::BadRequest("the sender is missing".into()));
        }
        if sms.text.trim().is_empty() {
            return Err(GatewayError::BadRequest(
                "the message text is missing".into(),
            ));
        }
        let now = now_ms();
        let new = NewInbound {
            uid: new_uid(),
            gateway: gateway.to_string(),
            provider_id: sms.provider_id.filter(|p| !p.trim().is_empty()),
            sender_raw: sms.sender.clone(),
            sender: self.normalize(&sms.sender),
            text: sms.text,
            sent_at: sms.sent_at,
            received_at: now,
        };
        let recent = self
            .store
            .count_from_sender(&new.sender, now - self.config.rate_window_ms)
            .await?;
        let inbound = match self
            .store
            .insert_inbound(&new, self.config.duplicate_window_ms)
            .await?
        {
            Inserted::Redelivered(existing) => {
                return Ok(Receipt {
                    inbound: existing,
                    reply: None,
                })
            }
            Inserted::Duplicate { stored, of } => {
                tracing::info!(sms = %stored.uid, of = %of, "duplicate SMS dropped");
                return Ok(Receipt {
                    inbound: stored,
                    reply: None,
                });
            }
            Inserted::New(inbound) => inbound,
        };
        if recent >= self.config.rate_limit {
            self.counters.record("rate_limited");
            tracing::warn!(sender = %inbound.sender, "SMS sender over its rate limit");
            let update = InboundUpdate {
                state: InboundState::RateLimited,
                format: None,
                reason: Some(format!(
                    "more than {} messages in {} minutes",
                    self.config.rate_limit,
                    self.config.rate_window_ms / 60_000
                )),
                user: None,
                device: None,
                processed_at: now_ms(),
            };
            self.store.update_inbound(&inbound.uid, &update).await?;
            let inbound = self.store.inbound(&inbound.uid).await?.unwrap_or(inbound);
            return Ok(Receipt {
                inbound,
                reply: None,
            });
        }
        self.process_and_answer(inbound).await
    }

    /// Process a stored message again (an admin after fixing metadata or a
    /// user's phone number). Data is applied as for a new message.
    pub async fn reprocess(&self, uid: &str) -> Result<Receipt, GatewayError> {
        let inbound = self
            .store
            .inbound(uid)
            .await?
            .ok_or_else(|| GatewayError::NotFound(format!("No inbound SMS with id {uid}")))?;
        self.process_and_answer(inbound).await
    }

    async fn process_and_answer(&self, inbound: InboundSms) -> Result<Receipt, GatewayError> {
        let catalog = self.directory.catalog().await?;
        let processor = Processor {
            store: &*self.store,
            directory: &*self.directory,
            catalog,
            today: OffsetDateTime::now_utc().date(),
            dry_run: false,
        };
        let processed = processor.process(&inbound).await?;
        if let Some(kind) = processed.security {
            self.counters.record(kind);
            tracing::warn!(sms = %inbound.uid, sender = %inbound.sender, kind, reason = ?processed.reason, "SMS security event");
        }
        let now = now_ms();
        let update = update_of(&processed, now);
        self.store.update_inbound(&inbound.uid, &update).await?;
        for part in &processed.parts {
            let mut part_update = update.clone();
            part_update.reason = Some(format!("part of {}", inbound.uid));
            self.store.update_inbound(part, &part_update).await?;
        }
        let reply = match &processed.reply {
            Some(text) => {
                let uid = self
                    .queue_reply(&inbound, text, OutboundKind::Reply)
                    .await?;
                self.wake();
                Some(uid)
            }
            None => None,
        };
        let inbound = self.store.inbound(&inbound.uid).await?.unwrap_or(inbound);
        Ok(Receipt { inbound, reply })
    }

    /// What a text decodes to against the current metadata, without
    /// applying it (`hisa-server sms decode`).
    pub async fn decode(&self, text: &str, sender: Option<&str>) -> Result<Value, GatewayError> {
        let catalog = self.directory.catalog().await?;
        let sender = sender.map(|s| self.normalize(s)).unwrap_or_default();
        let inbound = InboundSms {
            uid: "decode".into(),
            gateway: "cli".into(),
            provider_id: None,
            sender: sender.clone(),
            text: text.to_string(),
            sent_at: None,
            received_at: now_ms(),
            state: InboundState::Received,
            format: None,
            reason: None,
            user: None,
            device: None,
            processed_at: None,
        };
        let processor = Processor {
            store: &*self.store,
            directory: &*self.directory,
            catalog,
            today: OffsetDateTime::now_utc().date(),
            dry_run: true,
        };
        let p = processor.process(&inbound).await?;
        let would_be = match p.state {
            InboundState::Rejected => "REJECTED",
            InboundState::Duplicate => "DUPLICATE",
            InboundState::WaitingForParts => "WAITING_FOR_PARTS",
            _ => "ACCEPTED",
        };
        Ok(json!({
            "format": p.format,
            "sender": sender,
            "user": p.user,
            "device": p.device,
            "outcome": would_be,
            "reason": p.reason,
            "reply": p.reply,
            "decoded": p.decoded,
        }))
    }

    /// The gateway a reply to `inbound` goes out through: the one it came
    /// in by when that one can send, else the default.
    async fn reply_gateway(&self, inbound_gateway: &str) -> Result<Option<String>, GatewayError> {
        let gateways = self.store.gateways().await?;
        if let Some(g) = gateways.iter().find(|g| g.uid == inbound_gateway) {
            if GatewaySettings::from_record(g).is_ok_and(|s| s.can_send()) {
                return Ok(Some(g.uid.clone()));
            }
        }
        Ok(self.default_gateway(&gateways))
    }

    fn default_gateway(&self, gateways: &[GatewayRecord]) -> Option<String> {
        gateways
            .iter()
            .filter(|g| GatewaySettings::from_record(g).is_ok_and(|s| s.can_send()))
            .max_by_key(|g| g.is_default)
            .map(|g| g.uid.clone())
    }

    async fn queue_reply(
        &self,
        inbound: &InboundSms,
        text: &str,
        kind: OutboundKind,
    ) -> Result<String, GatewayError> {
        let gateway = self.reply_gateway(&inbound.gateway).await?;
        let uid = new_uid();
        let message = NewOutbound {
            uid: uid.clone(),
            gateway: gateway.clone().unwrap_or_default(),
            recipient: inbound.sender.clone(),
            text: text.to_string(),
            kind,
            inbound: Some(inbound.uid.clone()),
            created_at: now_ms(),
        };
        self.store.enqueue(std::slice::from_ref(&message)).await?;
        if gateway.is_none() {
            // Kept and visible, not silently dropped: an admin who adds a
            // gateway can see what could not be sent.
            self.store
                .retry_outbound(&uid, "no gateway can send SMS", 0, true, now_ms())
                .await?;
        }
        Ok(uid)
    }

    /// Queue a message to each recipient (an admin's message, a supervisor's
    /// return notice). Returns the outbound uids.
    pub async fn send(
        &self,
        recipients: &[String],
        text: &str,
        kind: OutboundKind,
        gateway: Option<&str>,
    ) -> Result<Vec<String>, GatewayError> {
        if text.trim().is_empty() {
            return Err(GatewayError::BadRequest("Message must be specified".into()));
        }
        if recipients.is_empty() {
            return Err(GatewayError::BadRequest(
                "Recipients must be specified".into(),
            ));
        }
        if text.chars().count() > crate::gateways::MAX_TEXT_CHARS {
            return Err(GatewayError::BadRequest(format!(
                "Message is longer than {} characters",
                crate::gateways::MAX_TEXT_CHARS
            )));
        }
        let gateways = self.store.gateways().await?;
        let gateway = match gateway {
            Some(uid) => {
                let g = gateways
                    .iter()
                    .find(|g| g.uid == uid)
                    .ok_or_else(|| GatewayError::NotFound(format!("No gateway with id {uid}")))?;
                if !GatewaySettings::from_record(g).is_ok_and(|s| s.can_send()) {
                    return Err(GatewayError::BadRequest(format!(
                        "Gateway {uid} cannot send SMS"
                    )));
                }
                uid.to_string()
            }
            None => self.default_gateway(&gateways).ok_or_else(|| {
                GatewayError::BadRequest("No gateway is configured to send SMS".into())
            })?,
        };
        let now = now_ms();
        let mut messages = Vec::with_capacity(recipients.len());
        for r in recipients {
            let recipient = crate::msisdn::normalize(r, self.config.country_code.as_deref())
                .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
            messages.push(NewOutbound {
                uid: new_uid(),
                gateway: gateway.clone(),
                recipient,
                text: text.to_string(),
                kind,
                inbound: None,
                created_at: now,
            });
        }
        self.store.enqueue(&messages).await?;
        Ok(messages.into_iter().map(|m| m.uid).collect())
    }

    /// One poll of a phone gateway (CHT's protocol): store what it received,
    /// record its status updates, answer with what it should send.
    pub async fn poll(
        &self,
        gateway: &GatewayRecord,
        settings: &GatewaySettings,
        messages: Vec<IncomingSms>,
        updates: Vec<(String, OutboundState, Option<String>)>,
    ) -> Result<Vec<OutboundSms>, GatewayError> {
        for sms in messages {
            match self.receive(&gateway.uid, sms).await {
                Ok(_) => {}
                // A malformed message must not make the phone resend the
                // whole batch forever: it is logged and skipped.
                Err(GatewayError::BadRequest(why)) => {
                    tracing::warn!(gateway = %gateway.uid, %why, "unusable SMS from gateway skipped")
                }
                Err(e) => return Err(e),
            }
        }
        let now = now_ms();
        for (uid, state, reason) in updates {
            self.store
                .set_outbound_state(&uid, state, reason.as_deref(), now)
                .await?;
        }
        Ok(self
            .store
            .offer_outbound(&gateway.uid, settings.per_minute(), now)
            .await?)
    }

    /// A provider's status callback for a message it was given.
    pub async fn status(
        &self,
        uid: &str,
        state: OutboundState,
        reason: Option<&str>,
    ) -> Result<bool, GatewayError> {
        Ok(self
            .store
            .set_outbound_state(uid, state, reason, now_ms())
            .await?)
    }

    /// Expire incomplete multipart sets and pick up messages a crashed
    /// instance left half-processed.
    pub async fn sweep(&self) -> Result<(), GatewayError> {
        let now = now_ms();
        let expired = self
            .store
            .expire_parts(now - self.config.part_expiry_ms)
            .await?;
        for uid in expired {
            let update = InboundUpdate {
                state: InboundState::Rejected,
                format: Some(MessageFormat::Hisa),
                reason: Some("the other parts never arrived".into()),
                user: None,
                device: None,
                processed_at: now,
            };
            self.store.update_inbound(&uid, &update).await?;
        }
        for stale in self.store.stale_received(now - 60_000, 100).await? {
            tracing::info!(sms = %stale.uid, "processing an SMS left unprocessed");
            if let Err(e) = self.process_and_answer(stale).await {
                tracing::error!(error = %e, "reprocessing a stale SMS failed");
            }
        }
        Ok(())
    }

    /// Push queued messages to every gateway that sends by HTTP, once.
    /// Returns how many were handed over.
    pub async fn send_due(&self, instance: &str) -> Result<usize, GatewayError> {
        let mut sent = 0;
        for record in self.store.gateways().await? {
            let Ok(settings) = GatewaySettings::from_record(&record) else {
                continue;
            };
            if !settings.pushes() {
                continue;
            }
            let now = now_ms();
            let claimed = self
                .store
                .claim_outbound(&record.uid, settings.per_minute(), now, now + 120_000)
                .await?;
            for message in claimed {
                match crate::gateways::push(&self.http, &settings, &message).await {
                    Ok(state) => {
                        sent += 1;
                        self.store
                            .set_outbound_state(&message.uid, state, None, now_ms())
                            .await?;
                    }
                    Err(why) => {
                        let attempts = message.attempts;
                        let give_up = attempts >= self.config.max_attempts;
                        let backoff = 30_000i64.saturating_mul(1 << attempts.clamp(0, 7));
                        tracing::warn!(sms = %message.uid, gateway = %record.uid, attempts, %why, instance, "SMS push failed");
                        self.store
                            .retry_outbound(
                                &message.uid,
                                &why,
                                now_ms() + backoff.min(3_600_000),
                                give_up,
                                now_ms(),
                            )
                            .await?;
                    }
                }
            }
        }
        Ok(sent)
    }

    /// The background loop: push outbound messages and sweep, until shutdown.
    pub async fn run(
        self: Arc<Self>,
        instance: String,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        if !self.config.background {
            return;
        }
        let mut sweep_every = 0u32;
        loop {
            if let Err(e) = self.send_due(&instance).await {
                tracing::error!(error = %e, "SMS sender failed");
            }
            if sweep_every.is_multiple_of(12) {
                if let Err(e) = self.sweep().await {
                    tracing::error!(error = %e, "SMS sweep failed");
                }
            }
            sweep_every = sweep_every.wrapping_add(1);
            tokio::select! {
                _ = tokio::time::sleep(self.config.send_interval) => {}
                _ = self.queued.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Ask the background sender to look for work now.
    pub fn wake(&self) {
        self.queued.notify_one();
    }

    pub fn gateway_kind(record: &GatewayRecord) -> Option<GatewayKind> {
        GatewayKind::parse(&record.kind)
    }
}

fn update_of(p: &Processed, now: i64) -> InboundUpdate {
    InboundUpdate {
        state: p.state,
        format: p.format,
        reason: p.reason.clone(),
        user: p.user.clone(),
        device: p.device.clone(),
        processed_at: now,
    }
}
