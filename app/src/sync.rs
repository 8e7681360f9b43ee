//! The headless sync client: what the app's screens (and the end-to-end
//! tests) use to enrol, fetch metadata, push the outbox and pull forms.
//! Protocol: `docs/sync-protocol.md`, types in `hisa_shared::sync`.
//!
//! The outbox is the heart of it: a submission is written to the sealed
//! store with its id *before* any network call, and leaves the outbox only
//! when the server gave a final result for that id. A request that dies
//! half-way is simply sent again; the server answers a repeated id with the
//! result it already has, so nothing is lost and nothing is applied twice.

use std::time::Duration;

use hisa_shared::sync::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{PinPolicy, SealedStore, StoreError};

const DEVICE: &str = "device";
const CREDENTIALS: &str = "credentials";
const INSTRUCTIONS: &str = "instructions";
const METADATA: &str = "metadata";
const META_STATE: &str = "metadata-state";
const LAST_CONTACT: &str = "last-contact";
const OUTBOX: &str = "outbox";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No answer, or a cut one: try again later; nothing was lost.
    #[error("the server could not be reached: {0}")]
    Network(String),
    /// The device was revoked or wiped, or its user disabled: sign in again.
    #[error("the server refused this device (revoked, wiped or user disabled)")]
    Unauthorized,
    #[error("the server refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the server's answer does not fit the sync protocol: {0}")]
    Protocol(String),
    #[error("this phone is not enrolled")]
    NotEnrolled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the phone keeps to talk to the server.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCredentials {
    pub server: String,
    pub device: String,
    pub user: String,
    pub username: String,
    secret: String,
}

impl std::fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("server", &self.server)
            .field("device", &self.device)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl DeviceCredentials {
    pub fn from_enrolment(server: &str, e: &Enrolment) -> DeviceCredentials {
        DeviceCredentials {
            server: server.trim_end_matches('/').to_string(),
            device: e.device.clone(),
            user: e.user.clone(),
            username: e.username.clone(),
            secret: e.secret.clone(),
        }
    }

    pub fn save(&self, store: &mut SealedStore) -> Result<(), SyncError> {
        Ok(store.put(DEVICE, CREDENTIALS, self)?)
    }

    pub fn load(store: &mut SealedStore) -> Result<DeviceCredentials, SyncError> {
        store
            .get(DEVICE, CREDENTIALS)?
            .ok_or(SyncError::NotEnrolled)
    }
}

/// HTTP to one server, as one device (once enrolled).
#[derive(Debug, Clone)]
pub struct SyncClient {
    server: String,
    http: reqwest::Client,
    credentials: Option<DeviceCredentials>,
}

impl SyncClient {
    pub fn new(server: &str) -> SyncClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_default();
        SyncClient {
            server: server.trim_end_matches('/').to_string(),
            http,
            credentials: None,
        }
    }

    pub fn with_credentials(credentials: DeviceCredentials) -> SyncClient {
        let mut client = SyncClient::new(&credentials.server);
        client.credentials = Some(credentials);
        client
    }

    /// Talk to another address (a proxy, a moved server) as the same device.
    pub fn at(mut self, server: &str) -> SyncClient {
        self.server = server.trim_end_matches('/').to_string();
        self
    }

    pub fn credentials(&self) -> Option<&DeviceCredentials> {
        self.credentials.as_ref()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/sync/v1/{path}", self.server)
    }

    fn auth(&self) -> Result<String, SyncError> {
        let c = self.credentials.as_ref().ok_or(SyncError::NotEnrolled)?;
        Ok(authorization(&c.device, &c.secret))
    }

    async fn answer<T: serde::de::DeserializeOwned>(
        response: reqwest::Response,
    ) -> Result<T, SyncError> {
        let status = response.status().as_u16();
        if status == 401 {
            return Err(SyncError::Unauthorized);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| SyncError::Network(e.to_string()))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(SyncError::Refused { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| SyncError::Protocol(e.to_string()))
    }

    fn network(e: reqwest::Error) -> SyncError {
        SyncError::Network(e.to_string())
    }

    pub async fn enrol(&self, request: &EnrolRequest) -> Result<Enrolment, SyncError> {
        let r = self
            .http
            .post(self.url("enrol"))
            .json(request)
            .send()
            .await
            .map_err(Self::network)?;
        Self::answer(r).await
    }

    /// `None` when the phone already has `version`.
    pub async fn metadata(
        &self,
        version: Option<&str>,
        since: Option<&str>,
    ) -> Result<Option<MetadataPackage>, SyncError> {
        let mut request = self
            .http
            .get(self.url("metadata"))
            .header("Authorization", self.auth()?);
        if let Some(v) = version {
            request = request.header("If-None-Match", format!("\"{v}\""));
        }
        if let Some(s) = since {
            request = request.query(&[("since", s)]);
        }
        let r = request.send().await.map_err(Self::network)?;
        if r.status().as_u16() == 304 {
            return Ok(None);
        }
        Self::answer(r).await.map(Some)
    }

    /// The body goes gzipped: on 2G every byte is airtime (a 40-value form
    /// is mostly UIDs, which still shrink by a third).
    pub async fn upload(&self, request: &UploadRequest) -> Result<UploadResponse, SyncError> {
        let json = serde_json::to_vec(request).map_err(|e| SyncError::Protocol(e.to_string()))?;
        let body = gzip(&json).map_err(|e| SyncError::Protocol(e.to_string()))?;
        let r = self
            .http
            .post(self.url("data"))
            .header("Authorization", self.auth()?)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .body(body)
            .send()
            .await
            .map_err(Self::network)?;
        Self::answer(r).await
    }

    pub async fn download(&self) -> Result<DownloadResponse, SyncError> {
        let r = self
            .http
            .get(self.url("data"))
            .header("Authorization", self.auth()?)
            .send()
            .await
            .map_err(Self::network)?;
        Self::answer(r).await
    }

    pub async fn status(&self, report: &StatusReport) -> Result<Instructions, SyncError> {
        let r = self
            .http
            .post(self.url("status"))
            .header("Authorization", self.auth()?)
            .json(report)
            .send()
            .await
            .map_err(Self::network)?;
        Self::answer(r).await
    }

    pub async fn confirm_wipe(&self) -> Result<(), SyncError> {
        let r = self
            .http
            .post(self.url("wiped"))
            .header("Authorization", self.auth()?)
            .send()
            .await
            .map_err(Self::network)?;
        Self::answer::<Value>(r).await.map(|_| ())
    }
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------------------------
// The phone's side: outbox, metadata, instructions
// ------------------------------------------------------------------------------------------------

/// One submission on the phone, with what the server said about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub submission: Submission,
    /// Set once the server gave a final result.
    pub result: Option<SubmissionResult>,
}

/// Save a submission to the outbox under a new id; it is safe from here on.
pub fn queue(store: &mut SealedStore, body: SubmissionBody) -> Result<String, SyncError> {
    let id = uuid::Uuid::new_v4().to_string();
    let entry = OutboxEntry {
        submission: Submission {
            id: id.clone(),
            captured_at: Some(now_rfc3339()),
            body,
        },
        result: None,
    };
    store.put(OUTBOX, &id, &entry)?;
    Ok(id)
}

pub fn outbox(store: &mut SealedStore) -> Result<Vec<OutboxEntry>, SyncError> {
    let mut out = Vec::new();
    for key in store.list_keys(OUTBOX)? {
        if let Some(e) = store.get::<OutboxEntry>(OUTBOX, &key)? {
            out.push(e);
        }
    }
    Ok(out)
}

pub fn pending(store: &mut SealedStore) -> Result<Vec<OutboxEntry>, SyncError> {
    Ok(outbox(store)?
        .into_iter()
        .filter(|e| e.result.is_none())
        .collect())
}

/// What one push achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub accepted: usize,
    pub with_warnings: usize,
    pub rejected: usize,
    /// Still pending (in progress on the server): sent again next time.
    pub waiting: usize,
    pub remaining: usize,
}

/// Send up to `batch` pending submissions once. A network error leaves
/// every entry pending (the caller retries); results are saved as they come.
pub async fn push(
    store: &mut SealedStore,
    client: &SyncClient,
    batch: usize,
) -> Result<(PushReport, Instructions), SyncError> {
    let waiting = pending(store)?;
    let sending: Vec<Submission> = waiting
        .iter()
        .take(batch.max(1))
        .map(|e| e.submission.clone())
        .collect();
    let request = UploadRequest {
        device_time: now_rfc3339(),
        pending: u32::try_from(waiting.len()).unwrap_or(u32::MAX),
        submissions: sending,
    };
    let response = client.upload(&request).await?;
    let mut report = PushReport::default();
    for result in response.results {
        let Some(entry) = waiting.iter().find(|e| e.submission.id == result.id) else {
            continue;
        };
        match result.status {
            SubmissionStatus::InProgress => {
                report.waiting += 1;
                continue;
            }
            SubmissionStatus::Accepted => report.accepted += 1,
            SubmissionStatus::AcceptedWithWarnings => report.with_warnings += 1,
            SubmissionStatus::Rejected => report.rejected += 1,
        }
        let mut done = entry.clone();
        done.result = Some(result);
        store.put(OUTBOX, &done.submission.id, &done)?;
    }
    report.remaining = pending(store)?.len();
    Ok((report, response.instructions))
}

/// What the phone did with the server's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Kept,
    /// Local data deleted and the wipe confirmed: the phone is revoked now.
    Wiped,
}

/// Act on instructions: keep the policy (PIN rules and idle lock take effect
/// in the store), or wipe and confirm.
pub async fn apply(
    store: &mut SealedStore,
    client: &SyncClient,
    instructions: &Instructions,
) -> Result<Applied, SyncError> {
    if instructions.wipe {
        store.wipe()?;
        client.confirm_wipe().await?;
        return Ok(Applied::Wiped);
    }
    let p = &instructions.policy;
    let pin = PinPolicy {
        min_length: p.pin_min_length as usize,
        digits_only: p.pin_digits_only,
        reject_trivial: p.pin_reject_trivial,
        max_failed_attempts: p.max_failed_pin_attempts.max(1),
    };
    store.set_policy(pin, u64::from(p.idle_lock_seconds))?;
    store.put(DEVICE, INSTRUCTIONS, instructions)?;
    store.put(
        DEVICE,
        LAST_CONTACT,
        &time::OffsetDateTime::now_utc().unix_timestamp(),
    )?;
    Ok(Applied::Kept)
}

/// Whether the user must sign in again before using the app: the policy's
/// `offlineDaysBeforeSignIn` have passed since the last contact with the
/// server (a phone that never reached the server since enrolment counts
/// from nothing, so it must).
pub fn must_sign_in_again(store: &mut SealedStore, now_unix: i64) -> Result<bool, SyncError> {
    let Some(instructions) = last_instructions(store)? else {
        return Ok(true);
    };
    let last: Option<i64> = store.get(DEVICE, LAST_CONTACT)?;
    let limit = i64::from(instructions.policy.offline_days_before_sign_in) * 86_400;
    Ok(last.is_none_or(|t| now_unix - t > limit))
}

pub fn last_instructions(store: &mut SealedStore) -> Result<Option<Instructions>, SyncError> {
    Ok(store.get(DEVICE, INSTRUCTIONS)?)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MetadataState {
    version: Option<String>,
    as_of: Option<String>,
}

/// What a metadata sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataReport {
    pub unchanged: bool,
    pub version: String,
    pub upserted: usize,
    pub removed: usize,
}

/// Fetch the package (a delta after the first time) and apply it: upsert
/// what changed, delete what is no longer present, in one store transaction.
pub async fn sync_metadata(
    store: &mut SealedStore,
    client: &SyncClient,
) -> Result<MetadataReport, SyncError> {
    let state: MetadataState = store.get(DEVICE, META_STATE)?.unwrap_or_default();
    let Some(package) = client
        .metadata(state.version.as_deref(), state.as_of.as_deref())
        .await?
    else {
        return Ok(MetadataReport {
            unchanged: true,
            version: state.version.unwrap_or_default(),
            ..Default::default()
        });
    };
    let mut items: Vec<(String, Value)> = Vec::new();
    for (kind, objects) in &package.objects {
        for o in objects {
            if let Some(id) = o.get("id").and_then(Value::as_str) {
                items.push((format!("{kind}/{id}"), o.clone()));
            }
        }
    }
    let keep: std::collections::HashSet<String> = package
        .present
        .iter()
        .flat_map(|(kind, ids)| ids.iter().map(move |id| format!("{kind}/{id}")))
        .collect();
    let mut removed = 0;
    for key in store.list_keys(METADATA)? {
        if !keep.contains(&key) {
            store.delete(METADATA, &key)?;
            removed += 1;
        }
    }
    let new_state = MetadataState {
        version: Some(package.version.clone()),
        as_of: Some(package.as_of.clone()),
    };
    let mut batch: Vec<(&str, &str, Value)> = items
        .iter()
        .map(|(k, v)| (METADATA, k.as_str(), v.clone()))
        .collect();
    let state_value =
        serde_json::to_value(&new_state).map_err(|e| SyncError::Protocol(e.to_string()))?;
    batch.push((DEVICE, META_STATE, state_value));
    store.put_many(&batch)?;
    Ok(MetadataReport {
        unchanged: false,
        version: package.version,
        upserted: items.len(),
        removed,
    })
}

/// Metadata objects of one type, as synced.
pub fn metadata_of(store: &mut SealedStore, kind: &str) -> Result<Vec<Value>, SyncError> {
    let prefix = format!("{kind}/");
    let mut out = Vec::new();
    for key in store.list_keys(METADATA)? {
        if key.starts_with(&prefix) {
            if let Some(v) = store.get::<Value>(METADATA, &key)? {
                out.push(v);
            }
        }
    }
    Ok(out)
}
