//! What the gateway needs to know about the rest of Hisa, behind one trait
//! the server implements: who a phone number or user is, a catalog of the
//! metadata SMS refers to, and how to store a form or an event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use hisa_shared::hisa_sms::{self, FormLayout};
use hisa_shared::period::PeriodType;
use serde::Serialize;

use crate::plaintext::Dialect;

#[derive(Debug, thiserror::Error)]
#[error("directory lookup failed: {0}")]
pub struct DirectoryError(pub String);

pub type DirectoryResult<T> = Result<T, DirectoryError>;

/// A user as the gateway sees one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sender {
    pub user: String,
    pub username: String,
    /// The org units the user reports for (capture assignment).
    pub org_units: Vec<String>,
    /// Their paths, so hashes can be narrowed to the user's subtrees.
    pub org_unit_paths: Vec<String>,
    /// `keyUiLocale` or similar, for replies in the user's language.
    pub locale: Option<String>,
    pub disabled: bool,
}

impl Sender {
    /// Whether `path` lies in one of the user's subtrees.
    pub fn covers(&self, path: &str) -> bool {
        self.org_unit_paths
            .iter()
            .any(|root| path == root || path.starts_with(&format!("{root}/")))
    }
}

/// A data set as SMS formats refer to it.
#[derive(Debug, Clone)]
pub struct DataSetEntry {
    pub uid: String,
    pub name: String,
    pub period_type: PeriodType,
    /// Hisa's canonical field order; its fingerprint binds a compressed form.
    pub layout: FormLayout,
    pub fingerprint: u32,
    /// The data set's attribute option combos in canonical (UID) order.
    pub attribute_option_combos: Vec<String>,
    pub org_units: HashSet<String>,
}

/// An event program (without registration) as SMS formats refer to it.
#[derive(Debug, Clone)]
pub struct ProgramEntry {
    pub uid: String,
    pub name: String,
    pub stage: String,
    /// The stage's data elements, each with an empty combo.
    pub layout: FormLayout,
    pub fingerprint: u32,
    pub attribute_option_combos: Vec<String>,
    pub org_units: HashSet<String>,
}

/// A code of a plain-text command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandCode {
    pub code: String,
    pub data_element: String,
    pub category_option_combo: Option<String>,
    pub compulsory: bool,
    /// DHIS2's `+<uid>` / `-<uid>`: add to or subtract from another element.
    pub formula: Option<String>,
    pub text: bool,
}

/// Texts a command overrides; `None` keeps the default in the sender's language.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CommandTexts {
    pub default_message: Option<String>,
    pub received_message: Option<String>,
    pub wrong_format_message: Option<String>,
    pub no_user_message: Option<String>,
    pub more_than_one_org_unit_message: Option<String>,
    pub success_message: Option<String>,
}

/// DHIS2's `smsCommands` object, as much of it as Hisa acts on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmsCommand {
    pub uid: String,
    pub name: String,
    pub parser_type: String,
    pub separator: Option<String>,
    pub dialect: Dialect,
    pub data_set: Option<String>,
    pub program: Option<String>,
    pub program_stage: Option<String>,
    pub codes: Vec<CommandCode>,
    pub special_characters: Vec<(String, String)>,
    pub current_period_used_for_reporting: bool,
    pub completeness_method: String,
    pub texts: CommandTexts,
}

/// The metadata SMS refer to, built by the server once per metadata version.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub version: i64,
    pub data_sets: Vec<DataSetEntry>,
    pub programs: Vec<ProgramEntry>,
    /// Every org unit's path (`/root/…/uid`).
    pub org_unit_paths: HashMap<String, String>,
    pub users: Vec<String>,
    pub commands: Vec<SmsCommand>,
}

/// How a lookup among candidates came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a str),
    Missing,
    Ambiguous(Vec<&'a str>),
}

fn lookup<'a>(matches: Vec<&'a str>) -> Lookup<'a> {
    match matches.len() {
        0 => Lookup::Missing,
        1 => Lookup::Found(matches[0]),
        _ => Lookup::Ambiguous(matches),
    }
}

impl Catalog {
    pub fn data_set(&self, uid: &str) -> Option<&DataSetEntry> {
        self.data_sets.iter().find(|d| d.uid == uid)
    }

    pub fn program(&self, uid: &str) -> Option<&ProgramEntry> {
        self.programs.iter().find(|p| p.uid == uid)
    }

    pub fn data_set_by_hash(&self, hash: u32) -> Lookup<'_> {
        lookup(
            self.data_sets
                .iter()
                .filter(|d| hisa_sms::uid_hash24(&d.uid) == hash)
                .map(|d| d.uid.as_str())
                .collect(),
        )
    }

    pub fn program_by_hash(&self, hash: u32) -> Lookup<'_> {
        lookup(
            self.programs
                .iter()
                .filter(|p| hisa_sms::uid_hash24(&p.uid) == hash)
                .map(|p| p.uid.as_str())
                .collect(),
        )
    }

    /// An org unit by Hisa hash among `assigned` units inside the sender's
    /// subtrees: narrowing first makes a 24-bit hash unambiguous in practice
    /// even in a country of tens of thousands of units.
    pub fn org_unit_by_hash<'a>(
        &'a self,
        hash: u32,
        assigned: &'a HashSet<String>,
        sender: &Sender,
    ) -> Lookup<'a> {
        let mut matches: Vec<&str> = assigned
            .iter()
            .filter(|uid| hisa_sms::uid_hash24(uid) == hash)
            .filter(|uid| {
                self.org_unit_paths
                    .get(uid.as_str())
                    .is_some_and(|p| sender.covers(p))
            })
            .map(String::as_str)
            .collect();
        matches.sort_unstable();
        lookup(matches)
    }

    /// The units of `assigned` inside the sender's subtrees, sorted.
    pub fn candidates_for<'a>(
        &'a self,
        sender: &Sender,
        assigned: &'a HashSet<String>,
    ) -> Vec<&'a str> {
        let mut out: Vec<&str> = assigned
            .iter()
            .filter(|uid| {
                self.org_unit_paths
                    .get(uid.as_str())
                    .is_some_and(|p| sender.covers(p))
            })
            .map(String::as_str)
            .collect();
        out.sort_unstable();
        out
    }

    /// Commands in DHIS2's search order: by parser type, then as stored;
    /// the first whose name contains the word (ignoring case) wins.
    pub fn command_for(&self, word: &str) -> Option<&SmsCommand> {
        const ORDER: &[&str] = &[
            "KEY_VALUE_PARSER",
            "EVENT_REGISTRATION_PARSER",
            "ALERT_PARSER",
            "UNREGISTERED_PARSER",
            "TRACKED_ENTITY_REGISTRATION_PARSER",
            "PROGRAM_STAGE_DATAENTRY_PARSER",
        ];
        let word = word.to_lowercase();
        if word.is_empty() {
            return None;
        }
        // An exact name match first: with DHIS2's "contains" alone, `ANC`
        // would be taken by a command named `ANCV` listed before it.
        if let Some(exact) = self.commands.iter().find(|c| c.name.to_lowercase() == word) {
            return Some(exact);
        }
        ORDER.iter().find_map(|parser| {
            self.commands
                .iter()
                .filter(|c| c.parser_type == *parser)
                .find(|c| c.name.to_lowercase().contains(&word))
        })
    }
}

/// A form to store: one data set, period, org unit and attribute option combo.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FormSubmission {
    pub data_set: String,
    pub period: String,
    pub org_unit: String,
    pub attribute_option_combo: Option<String>,
    pub complete: bool,
    /// All or nothing: one refused value refuses the form.
    pub atomic: bool,
    pub values: Vec<FormValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FormValue {
    pub data_element: String,
    pub category_option_combo: Option<String>,
    /// `None` clears the value.
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A single event to create or replace by its UID (so a resent SMS is idempotent).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSubmission {
    pub event: String,
    pub program: String,
    pub program_stage: Option<String>,
    pub org_unit: String,
    pub attribute_option_combo: Option<String>,
    /// ISO date.
    pub occurred_at: String,
    pub completed: bool,
    pub values: Vec<(String, String)>,
}

/// Where a submission came from, for the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub inbound: String,
    pub device: Option<String>,
}

/// Why a whole submission was refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", content = "detail")]
pub enum Rejection {
    UnknownDataSet,
    UnknownProgram,
    InvalidPeriod(String),
    UnknownAttributeOptionCombo,
    OrgUnitNotAssigned,
    OrgUnitOutsideScope,
    PeriodLocked(String),
    NotAuthorised(String),
    /// Every value was refused (or one was, in an atomic submission).
    ValuesRefused,
    Other(String),
}

/// A value the server refused, with DHIS2's error code when there is one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueConflict {
    pub data_element: Option<String>,
    pub category_option_combo: Option<String>,
    pub code: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub imported: usize,
    pub updated: usize,
    pub deleted: usize,
    pub ignored: usize,
    pub completed: bool,
    pub conflicts: Vec<ValueConflict>,
    pub rejection: Option<Rejection>,
}

impl ApplyReport {
    pub fn stored(&self) -> usize {
        self.imported + self.updated + self.deleted
    }
}

#[async_trait]
pub trait SmsDirectory: Send + Sync + 'static {
    async fn catalog(&self) -> DirectoryResult<Arc<Catalog>>;
    /// The user registered with this number (E.164 compared), if any.
    async fn sender_by_phone(&self, phone: &str) -> DirectoryResult<Option<Sender>>;
    async fn sender_by_user(&self, user: &str) -> DirectoryResult<Option<Sender>>;
    async fn apply_form(
        &self,
        sender: &Sender,
        form: &FormSubmission,
        origin: &Origin,
    ) -> DirectoryResult<ApplyReport>;
    async fn apply_event(
        &self,
        sender: &Sender,
        event: &EventSubmission,
        origin: &Origin,
    ) -> DirectoryResult<ApplyReport>;
}
