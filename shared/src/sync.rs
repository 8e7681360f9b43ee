//! The device sync protocol (version 1): what a phone and the server send
//! each other. Written down in `docs/sync-protocol.md`; the server's
//! endpoints and the app's sync client both use these types, so they cannot
//! drift apart. JSON, camelCase, as the rest of DHIS2's API.
//!
//! Three rules make sync safe on links that drop mid-request:
//! - every submission carries an id made on the phone; the server applies an
//!   id once and answers a repeat with the stored result;
//! - the phone keeps a submission until it has a final result for it (a
//!   dropped answer is asked again, never assumed);
//! - metadata comes as a package with a content version (an HTTP ETag), so a
//!   phone that is up to date downloads nothing, and a delta carries the full
//!   list of ids still present, so deletions are never missed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const PROTOCOL_VERSION: u32 = 1;

/// `Authorization: Device <device id>:<secret>` on every call after enrolment.
pub const AUTH_SCHEME: &str = "Device";

pub fn authorization(device: &str, secret: &str) -> String {
    format!("{AUTH_SCHEME} {device}:{secret}")
}

/// Splits the header value back into (device, secret).
pub fn parse_authorization(value: &str) -> Option<(&str, &str)> {
    let rest = value.strip_prefix(AUTH_SCHEME)?.strip_prefix(' ')?;
    let (device, secret) = rest.trim().split_once(':')?;
    (!device.is_empty() && !secret.is_empty()).then_some((device, secret))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceInfo {
    pub name: Option<String>,
    pub model: Option<String>,
    pub app_version: Option<String>,
}

/// Sign-in once: with a password, or with a one-time code an admin made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnrolRequest {
    pub username: Option<String>,
    pub password: Option<String>,
    pub code: Option<String>,
    pub device: DeviceInfo,
}

/// What the phone keeps after enrolment. `secret` and `sms_key` are shown
/// this once; the server keeps the secret only hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolment {
    pub protocol_version: u32,
    pub device: String,
    pub user: String,
    pub username: String,
    pub secret: String,
    pub sms_key_id: u32,
    pub sms_key: String,
    pub instructions: Instructions,
}

/// Rules for the phone, assigned by role, org unit or device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePolicy {
    pub pin_min_length: u32,
    pub pin_digits_only: bool,
    /// Refuse 1111, 1234 and the like.
    pub pin_reject_trivial: bool,
    /// Wrong PINs in a row before the phone wipes its store.
    pub max_failed_pin_attempts: u32,
    pub idle_lock_seconds: u32,
    pub screenshots_allowed: bool,
    pub metadata_sync_minutes: u32,
    pub data_sync_minutes: u32,
    /// Numbers the phone sends SMS submissions to, in order of preference.
    pub sms_gateway_numbers: Vec<String>,
    /// Replies are accepted only from this sender, when set.
    pub sms_result_sender: Option<String>,
    pub sms_fallback_allowed: bool,
    /// Past periods of forms kept on (and sent down to) the phone.
    pub past_periods_kept: u32,
    /// Days without contact after which the user must sign in again.
    pub offline_days_before_sign_in: u32,
    /// Enrolling a new phone revokes the user's other phones.
    pub revoke_previous_on_enrol: bool,
}

impl Default for DevicePolicy {
    fn default() -> Self {
        DevicePolicy {
            pin_min_length: 4,
            pin_digits_only: true,
            pin_reject_trivial: true,
            max_failed_pin_attempts: 5,
            idle_lock_seconds: 300,
            screenshots_allowed: false,
            metadata_sync_minutes: 24 * 60,
            data_sync_minutes: 60,
            sms_gateway_numbers: Vec::new(),
            sms_result_sender: None,
            sms_fallback_allowed: true,
            past_periods_kept: 3,
            offline_days_before_sign_in: 30,
            revoke_previous_on_enrol: false,
        }
    }
}

/// An admin's policy: only the fields it sets; the rest comes from policies
/// of lower precedence, then the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct PolicyRules {
    pub pin_min_length: Option<u32>,
    pub pin_digits_only: Option<bool>,
    pub pin_reject_trivial: Option<bool>,
    pub max_failed_pin_attempts: Option<u32>,
    pub idle_lock_seconds: Option<u32>,
    pub screenshots_allowed: Option<bool>,
    pub metadata_sync_minutes: Option<u32>,
    pub data_sync_minutes: Option<u32>,
    pub sms_gateway_numbers: Option<Vec<String>>,
    pub sms_result_sender: Option<String>,
    pub sms_fallback_allowed: Option<bool>,
    pub past_periods_kept: Option<u32>,
    pub offline_days_before_sign_in: Option<u32>,
    pub revoke_previous_on_enrol: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy field `{field}`: {problem}")]
pub struct PolicyError {
    pub field: &'static str,
    pub problem: String,
}

impl PolicyRules {
    /// Values a phone could not honour are refused when the policy is saved.
    pub fn check(&self) -> Result<(), PolicyError> {
        let bad = |field, problem: &str| {
            Err(PolicyError {
                field,
                problem: problem.to_string(),
            })
        };
        if let Some(n) = self.pin_min_length {
            if !(4..=32).contains(&n) {
                return bad("pinMinLength", "must be 4 to 32");
            }
        }
        if self.max_failed_pin_attempts == Some(0) {
            return bad("maxFailedPinAttempts", "must be at least 1");
        }
        if self.idle_lock_seconds == Some(0) {
            return bad("idleLockSeconds", "must be at least 1");
        }
        if self.metadata_sync_minutes == Some(0) || self.data_sync_minutes == Some(0) {
            return bad("syncMinutes", "must be at least 1");
        }
        if self.past_periods_kept.is_some_and(|n| n > 120) {
            return bad("pastPeriodsKept", "must be at most 120");
        }
        if self.offline_days_before_sign_in == Some(0) {
            return bad("offlineDaysBeforeSignIn", "must be at least 1");
        }
        for n in self.sms_gateway_numbers.iter().flatten() {
            let digits = n.trim_start_matches('+');
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return bad(
                    "smsGatewayNumbers",
                    "numbers are digits with an optional leading +",
                );
            }
        }
        Ok(())
    }

    /// Fill what `self` leaves unset from `lower` (a policy of lower precedence).
    pub fn over(mut self, lower: &PolicyRules) -> PolicyRules {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = lower.$f.clone(); } )* };
        }
        fill!(
            pin_min_length,
            pin_digits_only,
            pin_reject_trivial,
            max_failed_pin_attempts,
            idle_lock_seconds,
            screenshots_allowed,
            metadata_sync_minutes,
            data_sync_minutes,
            sms_gateway_numbers,
            sms_result_sender,
            sms_fallback_allowed,
            past_periods_kept,
            offline_days_before_sign_in,
            revoke_previous_on_enrol
        );
        self
    }

    /// The effective policy: these rules over the defaults.
    pub fn resolve(&self) -> DevicePolicy {
        let d = DevicePolicy::default();
        DevicePolicy {
            pin_min_length: self.pin_min_length.unwrap_or(d.pin_min_length),
            pin_digits_only: self.pin_digits_only.unwrap_or(d.pin_digits_only),
            pin_reject_trivial: self.pin_reject_trivial.unwrap_or(d.pin_reject_trivial),
            max_failed_pin_attempts: self
                .max_failed_pin_attempts
                .unwrap_or(d.max_failed_pin_attempts),
            idle_lock_seconds: self.idle_lock_seconds.unwrap_or(d.idle_lock_seconds),
            screenshots_allowed: self.screenshots_allowed.unwrap_or(d.screenshots_allowed),
            metadata_sync_minutes: self
                .metadata_sync_minutes
                .unwrap_or(d.metadata_sync_minutes),
            data_sync_minutes: self.data_sync_minutes.unwrap_or(d.data_sync_minutes),
            sms_gateway_numbers: self
                .sms_gateway_numbers
                .clone()
                .unwrap_or(d.sms_gateway_numbers),
            sms_result_sender: self.sms_result_sender.clone().or(d.sms_result_sender),
            sms_fallback_allowed: self.sms_fallback_allowed.unwrap_or(d.sms_fallback_allowed),
            past_periods_kept: self.past_periods_kept.unwrap_or(d.past_periods_kept),
            offline_days_before_sign_in: self
                .offline_days_before_sign_in
                .unwrap_or(d.offline_days_before_sign_in),
            revoke_previous_on_enrol: self
                .revoke_previous_on_enrol
                .unwrap_or(d.revoke_previous_on_enrol),
        }
    }
}

/// Sent with every answer: the phone acts on it at each contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instructions {
    pub server_time: String,
    pub policy: DevicePolicy,
    /// Changes whenever the effective policy does.
    pub policy_version: String,
    /// The current metadata package version: sync metadata when it differs.
    pub metadata_version: String,
    /// Delete every local record, confirm with `POST /api/sync/v1/wiped`.
    pub wipe: bool,
}

/// The metadata a user's assignment needs. A full package lists every
/// object; a delta (`since` set) lists objects changed since then. Both list
/// the ids of every object still present, per type: the phone deletes the
/// rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataPackage {
    pub version: String,
    /// Server time the package was built: the `since` of the next delta.
    pub as_of: String,
    pub since: Option<String>,
    pub objects: BTreeMap<String, Vec<Value>>,
    pub present: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormValue {
    pub data_element: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_option_combo: Option<String>,
    /// `None` clears the value.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An aggregate form: data set × period × org unit × attribute option combo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormSubmission {
    pub data_set: String,
    pub period: String,
    pub org_unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    #[serde(default)]
    pub complete: bool,
    pub values: Vec<FormValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventValue {
    pub data_element: String,
    pub value: String,
}

/// A single event of a program without registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSubmission {
    pub event: String,
    pub program: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_stage: Option<String>,
    pub org_unit: String,
    pub occurred_at: String,
    #[serde(default = "active")]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_option_combo: Option<String>,
    #[serde(default)]
    pub data_values: Vec<EventValue>,
}

fn active() -> String {
    "ACTIVE".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SubmissionBody {
    Form(FormSubmission),
    Event(EventSubmission),
}

/// One unit of work from the phone. `id` is a UUID made on the phone when
/// the user saved it; it never changes across retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    pub id: String,
    /// The phone's clock when the user saved it (RFC 3339), as the phone saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<String>,
    #[serde(flatten)]
    pub body: SubmissionBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRequest {
    /// The phone's clock now (RFC 3339): the server records the skew.
    pub device_time: String,
    /// Submissions still waiting on the phone, this batch included.
    pub pending: u32,
    pub submissions: Vec<Submission>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubmissionStatus {
    Accepted,
    AcceptedWithWarnings,
    Rejected,
    /// Another request is applying this id right now: ask again later.
    InProgress,
}

impl SubmissionStatus {
    /// Whether the phone can forget the submission.
    pub fn is_final(self) -> bool {
        !matches!(self, SubmissionStatus::InProgress)
    }
}

/// A value (or the whole submission) the server refused, with DHIS2's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_element: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_option_combo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionResult {
    pub id: String,
    pub status: SubmissionStatus,
    /// The id was applied before; this is the stored result.
    #[serde(default)]
    pub duplicate: bool,
    /// When the server first received it.
    pub received_at: String,
    /// The period starts after today, or the phone's capture time is ahead
    /// of the server's clock: the data is kept (if valid) and flagged.
    #[serde(default)]
    pub future_dated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    pub results: Vec<SubmissionResult>,
    pub instructions: Instructions,
}

/// A form as stored on the server, for the phone to show and edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredForm {
    pub data_set: String,
    pub period: String,
    pub org_unit: String,
    pub attribute_option_combo: String,
    pub complete: bool,
    pub values: Vec<FormValue>,
}

/// A supervisor's return of a form: what to correct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Returned {
    pub comment: String,
    pub by: String,
    pub at: String,
}

/// Where a form stands in its data set's approval workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormApproval {
    pub data_set: String,
    pub period: String,
    pub org_unit: String,
    pub attribute_option_combo: String,
    /// DHIS2's approval state (`UNAPPROVED_READY`, `APPROVED_HERE`, `ACCEPTED_HERE`, `APPROVED_ABOVE`, …).
    /// Approved forms are locked: the phone shows them read-only.
    pub state: String,
    /// Set when the form was returned and not approved since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned: Option<Returned>,
}

/// A message to the user (a returned form's comment, for one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserMessage {
    pub id: String,
    pub subject: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownloadResponse {
    /// The periods covered (the policy's `pastPeriodsKept` of each data set's type).
    pub periods: BTreeMap<String, Vec<String>>,
    pub forms: Vec<StoredForm>,
    /// Approval state of the forms above whose data sets have a workflow.
    #[serde(default)]
    pub approvals: Vec<FormApproval>,
    /// The user's messages, newest first.
    #[serde(default)]
    pub messages: Vec<UserMessage>,
    pub instructions: Instructions,
}

/// A contact without data: the phone says how it is, the server answers
/// with instructions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StatusReport {
    pub app_version: Option<String>,
    pub pending: u32,
    pub device_time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn authorization_round_trips_and_refuses_junk() {
        let h = authorization("DevAbc12345", "s3cr3t");
        assert_eq!(parse_authorization(&h), Some(("DevAbc12345", "s3cr3t")));
        for bad in [
            "",
            "Device",
            "Device ",
            "Device x",
            "Device :y",
            "Basic a:b",
            "Devicex a:b",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad}");
        }
    }

    #[test]
    fn submissions_are_tagged_by_kind() {
        let s: Submission = serde_json::from_value(json!({
            "id": "7f0c…", "kind": "form", "dataSet": "DsMonth0001", "period": "202610",
            "orgUnit": "OuFacA10001", "complete": true,
            "values": [{"dataElement": "DeDeaths001", "value": "3"}]
        }))
        .unwrap();
        assert!(matches!(s.body, SubmissionBody::Form(ref f) if f.values.len() == 1 && f.complete));
        let e: Submission = serde_json::from_value(json!({
            "id": "x", "kind": "event", "event": "EvA00000001", "program": "PrgCase0001",
            "orgUnit": "OuFacA10001", "occurredAt": "2026-10-03",
            "dataValues": [{"dataElement": "DeAge000001", "value": "4"}]
        }))
        .unwrap();
        assert!(matches!(e.body, SubmissionBody::Event(ref ev) if ev.status == "ACTIVE"));
        assert!(serde_json::from_value::<Submission>(json!({"id": "x", "kind": "fax"})).is_err());
    }

    #[test]
    fn policies_merge_by_precedence_field_by_field() {
        let device = PolicyRules {
            idle_lock_seconds: Some(60),
            ..Default::default()
        };
        let org_unit = PolicyRules {
            idle_lock_seconds: Some(600),
            pin_min_length: Some(6),
            ..Default::default()
        };
        let role = PolicyRules {
            pin_min_length: Some(8),
            sms_fallback_allowed: Some(false),
            ..Default::default()
        };
        let effective = device.over(&org_unit).over(&role).resolve();
        assert_eq!(effective.idle_lock_seconds, 60);
        assert_eq!(effective.pin_min_length, 6);
        assert!(!effective.sms_fallback_allowed);
        assert_eq!(
            effective.past_periods_kept,
            DevicePolicy::default().past_periods_kept
        );
        assert!(PolicyRules {
            pin_min_length: Some(2),
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(
            serde_json::from_value::<PolicyRules>(json!({"pinLength": 4})).is_err(),
            "typos are refused"
        );
    }

    use proptest::prelude::*;

    fn rules() -> impl Strategy<Value = PolicyRules> {
        (
            proptest::option::of(4u32..12),
            proptest::option::of(1u32..10_000),
            proptest::option::of(any::<bool>()),
            proptest::option::of(0u32..24),
        )
            .prop_map(|(pin, idle, sms, past)| PolicyRules {
                pin_min_length: pin,
                idle_lock_seconds: idle,
                sms_fallback_allowed: sms,
                past_periods_kept: past,
                ..Default::default()
            })
    }

    proptest! {
        /// Each field of the merged policy is the first layer's that sets it, else the default.
        #[test]
        fn merge_takes_the_first_layer_that_sets_each_field(layers in proptest::collection::vec(rules(), 0..5)) {
            let merged = layers.iter().fold(PolicyRules::default(), |acc, l| acc.over(l)).resolve();
            let d = DevicePolicy::default();
            let first = |f: &dyn Fn(&PolicyRules) -> Option<u32>| layers.iter().find_map(f);
            prop_assert_eq!(merged.pin_min_length, first(&|l| l.pin_min_length).unwrap_or(d.pin_min_length));
            prop_assert_eq!(merged.idle_lock_seconds, first(&|l| l.idle_lock_seconds).unwrap_or(d.idle_lock_seconds));
            prop_assert_eq!(merged.past_periods_kept, first(&|l| l.past_periods_kept).unwrap_or(d.past_periods_kept));
            prop_assert_eq!(merged.sms_fallback_allowed, layers.iter().find_map(|l| l.sms_fallback_allowed).unwrap_or(d.sms_fallback_allowed));
        }

        #[test]
        fn authorization_parsing_never_panics(s in ".{0,64}") {
            let _ = parse_authorization(&s);
        }
    }
}
