//! Storage: one trait, [`Store`], with a SQLite and a PostgreSQL
//! implementation. Each has its own migrations (`migrations/sqlite`,
//! `migrations/postgres`); the same test suite runs against both.
//!
//! The trait speaks in domain rows, not SQL: services above it never know
//! which database they run on. Writes that must be all-or-nothing (a metadata
//! import, a batch of data values) are one method each, one transaction each.
//!
//! - `sql`: both implementations, stamped from one macro; SQLite's checkpointer.
//! - `sms`, `approval`: the gateway's, devices' and approvals' tables.
//! - `write_behind`: a [`DataTx`] holding writes in memory until commit (sync uploads).
//! - `table_cache`: whole small tables (policies, approvals) kept between writes.

/// ` AND column IN ($1, $2, …)` on a `QueryBuilder`, nothing when `values`
/// is empty ("any"). A macro, not a function: it serves both databases'
/// builders without restating sqlx's encode bounds.
macro_rules! push_in {
    ($q:expr, $column:expr, $values:expr) => {{
        let values: Vec<_> = $values.into_iter().collect();
        if !values.is_empty() {
            $q.push(format!(" AND {} IN (", $column));
            let mut sep = $q.separated(", ");
            for v in values {
                sep.push_bind(v);
            }
            $q.push(")");
        }
    }};
}

mod approval;
mod sms;
mod sql;
mod table_cache;
mod write_behind;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::Value;
use time::{Date, OffsetDateTime};

pub use approval::{
    ApprovalAudit, ApprovalRow, ApprovalStore, UserMessage, ValidationResultQuery,
    ValidationResultRow,
};
pub use sms::{
    Claim, DeviceAudit, DeviceLogin, DeviceRecord, DeviceStore, DeviceWrite, PolicyRecord,
    RecordedSubmission, StoredClaim, SubmissionClaim,
};
pub use sql::{PgStore, SqliteStore};
pub use table_cache::StoreCaches;
pub use write_behind::{PeriodIds, WriteBehindTx};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// A live metadata object as stored.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub id: i64,
    pub uid: String,
    pub kind: String,
    pub body: Value,
}

/// An object to create or replace, keyed by UID.
#[derive(Debug, Clone)]
pub struct ObjectWrite {
    pub uid: String,
    pub kind: String,
    pub code: Option<String>,
    pub name: Option<String>,
    pub body: Value,
    pub created: OffsetDateTime,
    pub last_updated: OffsetDateTime,
}

/// An org unit's place in the tree, written beside its metadata object.
#[derive(Debug, Clone)]
pub struct OrgUnitWrite {
    pub uid: String,
    pub parent_uid: Option<String>,
    pub path: String,
    pub level: i32,
    pub opening_date: Option<Date>,
    pub closed_date: Option<Date>,
}

/// A user's sign-in credentials. `password_hash: None` keeps the current hash.
#[derive(Debug, Clone)]
pub struct CredentialWrite {
    pub user_uid: String,
    pub username: String,
    pub password_hash: Option<String>,
    pub disabled: bool,
}

/// Everything one metadata import changes, applied in one transaction.
/// `org_units` must list parents before children.
#[derive(Debug, Clone, Default)]
pub struct MetadataChange {
    pub upserts: Vec<ObjectWrite>,
    pub deletes: Vec<String>,
    pub org_units: Vec<OrgUnitWrite>,
    pub credentials: Vec<CredentialWrite>,
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub user_id: i64,
    pub user_uid: String,
    pub username: String,
    pub password_hash: Option<String>,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct ApiTokenRecord {
    pub uid: String,
    pub user_uid: String,
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id_hash: String,
    pub user_uid: String,
    pub csrf_token: String,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct PeriodRow {
    pub iso: String,
    pub period_type: String,
    pub start_date: Date,
    pub end_date: Date,
}

impl PeriodRow {
    pub fn of(period: &hisa_shared::period::Period) -> PeriodRow {
        PeriodRow {
            iso: period.iso(),
            period_type: period.period_type().name().to_string(),
            start_date: period.start_date(),
            end_date: period.end_date(),
        }
    }
}

/// A data value by internal ids, as the services resolve them.
#[derive(Debug, Clone)]
pub struct DataValueWrite {
    pub data_element_id: i64,
    pub period_id: i64,
    pub org_unit_id: i64,
    pub category_option_combo_id: i64,
    pub attribute_option_combo_id: i64,
    pub value: Option<String>,
    pub comment: Option<String>,
    pub follow_up: bool,
    pub stored_by: Option<String>,
    pub created: OffsetDateTime,
    pub last_updated: OffsetDateTime,
    pub deleted: bool,
}

#[derive(Debug, Clone)]
pub struct CompletionWrite {
    pub data_set_id: i64,
    pub period_id: i64,
    pub org_unit_id: i64,
    pub attribute_option_combo_id: i64,
    pub completed_by: Option<String>,
    pub completed_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct EventWrite {
    pub uid: String,
    pub program_id: i64,
    pub program_stage_id: i64,
    pub org_unit_id: i64,
    pub attribute_option_combo_id: i64,
    pub occurred_at: Date,
    pub status: String,
    pub stored_by: Option<String>,
    pub data_values: Value,
    pub created: OffsetDateTime,
    pub last_updated: OffsetDateTime,
}

/// The key of one data value, by internal ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueKey {
    pub org_unit_id: i64,
    pub period_id: i64,
    pub data_element_id: i64,
    pub category_option_combo_id: i64,
    pub attribute_option_combo_id: i64,
}

/// A stored data value (live or soft-deleted).
#[derive(Debug, Clone)]
pub struct StoredValue {
    pub key: ValueKey,
    pub period_iso: String,
    pub value: Option<String>,
    pub comment: Option<String>,
    pub follow_up: bool,
    pub stored_by: Option<String>,
    pub created: OffsetDateTime,
    pub last_updated: OffsetDateTime,
    pub deleted: bool,
}

/// One audit row: what a value was and became, who changed it, through which channel.
#[derive(Debug, Clone)]
pub struct AuditWrite {
    pub key: ValueKey,
    pub previous_value: Option<String>,
    pub value: Option<String>,
    pub audit_type: String,
    pub modified_by: Option<String>,
    pub created: OffsetDateTime,
    pub channel: String,
    pub device: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub audit: AuditWrite,
    pub period_iso: String,
}

/// Which values an export or an audit query wants. Empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct ValueQuery {
    pub data_element_ids: Vec<i64>,
    pub period_ids: Vec<i64>,
    /// Org units by id (exactly these units)…
    pub org_unit_ids: Vec<i64>,
    /// …or by subtree path (the units and their descendants).
    pub org_unit_paths: Vec<String>,
    pub attribute_option_combo_ids: Vec<i64>,
    pub last_updated_since: Option<OffsetDateTime>,
    pub include_deleted: bool,
    /// Keyset paging: rows after this key, in key order.
    pub after: Option<ValueKey>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct CompletionRow {
    pub data_set_id: i64,
    pub period_iso: String,
    pub org_unit_id: i64,
    pub attribute_option_combo_id: i64,
    pub completed: bool,
    pub completed_by: Option<String>,
    pub completed_at: OffsetDateTime,
    pub last_updated: OffsetDateTime,
}

#[derive(Debug, Clone, Default)]
pub struct CompletionQuery {
    pub data_set_ids: Vec<i64>,
    pub period_ids: Vec<i64>,
    pub org_unit_ids: Vec<i64>,
    pub org_unit_paths: Vec<String>,
    pub limit: i64,
}

/// One data value as written, for those who mirror the data (analytics).
#[derive(Debug, Clone)]
pub struct ValueChange {
    pub key: ValueKey,
    pub value: Option<String>,
    pub deleted: bool,
    pub last_updated: OffsetDateTime,
}

impl DataValueWrite {
    pub fn key(&self) -> ValueKey {
        ValueKey {
            org_unit_id: self.org_unit_id,
            period_id: self.period_id,
            data_element_id: self.data_element_id,
            category_option_combo_id: self.category_option_combo_id,
            attribute_option_combo_id: self.attribute_option_combo_id,
        }
    }
}

impl From<&DataValueWrite> for ValueChange {
    fn from(w: &DataValueWrite) -> ValueChange {
        ValueChange {
            key: ValueKey {
                org_unit_id: w.org_unit_id,
                period_id: w.period_id,
                data_element_id: w.data_element_id,
                category_option_combo_id: w.category_option_combo_id,
                attribute_option_combo_id: w.attribute_option_combo_id,
            },
            value: w.value.clone(),
            deleted: w.deleted,
            last_updated: w.last_updated,
        }
    }
}

/// What a committed transaction wrote, as told to listeners: the values
/// themselves, or (when there were too many to keep in memory) only which
/// data elements they were of.
pub enum Written<'a> {
    Values(&'a [ValueChange]),
    Elements(&'a HashSet<i64>),
}

/// The values a transaction writes, kept until it commits; past
/// [`ValueLog::CAP`] values only their data elements are kept.
#[derive(Default)]
pub struct ValueLog {
    values: Vec<ValueChange>,
    elements: HashSet<i64>,
    overflowed: bool,
    /// Open savepoints and how many values were logged when each opened:
    /// work undone to a savepoint is forgotten here too.
    marks: Vec<(&'static str, usize)>,
}

impl ValueLog {
    pub const CAP: usize = 100_000;

    pub fn record(&mut self, values: &[DataValueWrite]) {
        self.elements
            .extend(values.iter().map(|v| v.data_element_id));
        if self.overflowed {
            return;
        }
        if self.values.len() + values.len() > Self::CAP {
            self.overflowed = true;
            self.values = Vec::new();
        } else {
            self.values.extend(values.iter().map(ValueChange::from));
        }
    }

    pub fn savepoint(&mut self, name: &'static str) {
        self.marks.push((name, self.values.len()));
    }

    /// Forget what was logged since savepoint `name` (its elements stay
    /// named: telling a listener of an element needlessly is harmless).
    pub fn rollback_to(&mut self, name: &'static str) {
        if let Some(i) = self.marks.iter().rposition(|(n, _)| *n == name) {
            let (_, len) = self.marks[i];
            self.values.truncate(len);
            self.marks.truncate(i);
        }
    }

    pub fn release(&mut self, name: &'static str) {
        if let Some(i) = self.marks.iter().rposition(|(n, _)| *n == name) {
            self.marks.truncate(i);
        }
    }

    fn written(&self) -> Option<Written<'_>> {
        if self.elements.is_empty() {
            None
        } else if self.overflowed {
            Some(Written::Elements(&self.elements))
        } else {
            Some(Written::Values(&self.values))
        }
    }
}

type ValueListener = Arc<dyn Fn(Written<'_>) + Send + Sync>;

/// Listeners told, right after each commit, of every data value the
/// transaction wrote: a write is visible to them as soon as to a reader.
/// Other instances over the same database are not told; they poll
/// ([`Store::analytics_values`] with `since`).
#[derive(Clone, Default)]
pub struct ValueFeed(Arc<RwLock<Vec<ValueListener>>>);

impl ValueFeed {
    pub fn subscribe(&self, listener: impl Fn(Written<'_>) + Send + Sync + 'static) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(listener));
    }

    pub fn is_watched(&self) -> bool {
        !self.0.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Tell every listener what a committed transaction wrote.
    pub fn publish(&self, log: &ValueLog) {
        let Some(written) = log.written() else {
            return;
        };
        let listeners = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        for l in listeners {
            l(match &written {
                Written::Values(v) => Written::Values(v),
                Written::Elements(e) => Written::Elements(e),
            });
        }
    }
}

/// A completion's audit row, as [`DataTx::audit_completion`] writes it.
#[derive(Debug, Clone)]
pub struct CompletionAudit {
    pub completion: CompletionWrite,
    pub audit_type: String,
    pub channel: String,
    pub device: Option<String>,
}

/// A unit of data writing: one transaction, committed or dropped (rolled back).
#[async_trait]
pub trait DataTx: Send {
    /// Current rows for these keys, locked against concurrent writers where the database can.
    async fn existing_values(&mut self, keys: &[ValueKey]) -> StoreResult<Vec<StoredValue>>;
    async fn put_values(&mut self, values: &[DataValueWrite]) -> StoreResult<()>;
    /// Period ids, creating rows inside this transaction (SQLite has one
    /// writer: asking the store from outside would wait on ourselves).
    async fn ensure_periods(&mut self, periods: &[PeriodRow]) -> StoreResult<Vec<(String, i64)>>;
    async fn put_audits(&mut self, audits: &[AuditWrite]) -> StoreResult<()>;
    /// Whether a completion exists (completed) for the key.
    async fn completion(
        &mut self,
        data_set_id: i64,
        period_id: i64,
        org_unit_id: i64,
        attribute_option_combo_id: i64,
    ) -> StoreResult<Option<CompletionRow>>;
    async fn put_completion(&mut self, c: &CompletionWrite, completed: bool) -> StoreResult<()>;
    async fn audit_completion(
        &mut self,
        c: &CompletionWrite,
        audit_type: &str,
        channel: &str,
        device: Option<&str>,
    ) -> StoreResult<()>;
    async fn commit(self: Box<Self>) -> StoreResult<()>;

    /// Open a savepoint: the work after it can be undone on its own. `name`
    /// is one of the callers' constants, never input.
    async fn savepoint(&mut self, name: &'static str) -> StoreResult<()>;
    /// Undo the work since the savepoint `name` and close it; the
    /// transaction goes on.
    async fn rollback_to(&mut self, name: &'static str) -> StoreResult<()>;
    /// Close the savepoint `name`, keeping its work.
    async fn release(&mut self, name: &'static str) -> StoreResult<()>;

    // Device sync's bookkeeping, in the transaction of the form it records:
    // a form, its claim and its result commit together or not at all.

    /// Record a submission applied in this transaction, its claim and its
    /// final result in one statement. `false` when the id was claimed
    /// before (and not by a request that died, whose claim is taken over
    /// once older than `stale_before`): then the caller undoes what it
    /// applied and answers with [`DataTx::submission`]. A concurrent
    /// claim of the same id waits for this transaction to end.
    async fn record_submission(
        &mut self,
        claim: &SubmissionClaim,
        status: &str,
        result: &str,
        stale_before: i64,
    ) -> StoreResult<bool>;
    /// The stored claim of a submission id, as [`Claim::Existing`].
    async fn submission(&mut self, id: &str) -> StoreResult<Option<Claim>>;
    /// The stored rows of these submission ids (those that have one).
    async fn claims(&mut self, ids: &[String]) -> StoreResult<Vec<StoredClaim>>;
    /// Record submissions whose ids had no row when read: how many were
    /// recorded. Fewer means another request claimed one meanwhile, and
    /// the caller must not commit.
    async fn record_new_submissions(&mut self, rows: &[RecordedSubmission]) -> StoreResult<u64>;
    /// Many [`DataTx::put_completion`]s in as few statements as the database allows.
    async fn put_completions(&mut self, rows: &[(CompletionWrite, bool)]) -> StoreResult<()>;
    /// Many [`DataTx::audit_completion`]s in as few statements as the database allows.
    async fn audit_completions(&mut self, rows: &[CompletionAudit]) -> StoreResult<()>;
    /// [`DeviceStore::touch_device`] inside this transaction.
    async fn touch_device(
        &mut self,
        uid: &str,
        at: i64,
        app_version: Option<&str>,
        pending: Option<i64>,
        clock_skew_ms: Option<i64>,
    ) -> StoreResult<()>;
}

/// A stored single event.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub uid: String,
    pub program_id: i64,
    pub program_stage_id: i64,
    pub org_unit_id: i64,
    pub attribute_option_combo_id: i64,
    pub occurred_at: Date,
    pub status: String,
    pub stored_by: Option<String>,
    pub data_values: Value,
    pub created: OffsetDateTime,
    pub last_updated: OffsetDateTime,
    pub deleted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub program_ids: Vec<i64>,
    pub org_unit_ids: Vec<i64>,
    pub org_unit_paths: Vec<String>,
    pub occurred_after: Option<Date>,
    pub occurred_before: Option<Date>,
    pub updated_after: Option<OffsetDateTime>,
    pub include_deleted: bool,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct EventAudit {
    pub event_uid: String,
    pub audit_type: String,
    /// The event as it was before the change (JSON), for updates and deletes.
    pub previous: Option<String>,
    pub modified_by: Option<String>,
    pub channel: String,
    pub device: Option<String>,
}

/// Counts of stored data, for the system info and the demo banner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataCounts {
    pub data_values: i64,
    pub completions: i64,
    pub events: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// The same database, as the SMS gateway's storage.
    fn sms(&self) -> std::sync::Arc<dyn hisa_sms_gateway::store::SmsStore>;
    /// The same database, as the registry of enrolled phones.
    fn devices(&self) -> std::sync::Arc<dyn DeviceStore>;
    /// The same database, as approvals and user messages.
    fn approvals(&self) -> std::sync::Arc<dyn ApprovalStore>;

    /// Bring the schema up to date; safe to run from several instances.
    async fn migrate(&self) -> StoreResult<()>;

    /// Bumped by every metadata change; instances compare it to their snapshot's.
    async fn metadata_version(&self) -> StoreResult<i64>;

    /// Every live metadata object, for building the in-memory snapshot.
    async fn load_metadata(&self) -> StoreResult<Vec<StoredObject>>;

    /// Apply one import atomically; returns the new metadata version.
    async fn apply_metadata(&self, change: &MetadataChange) -> StoreResult<i64>;

    async fn credential_by_username(&self, username: &str) -> StoreResult<Option<Credential>>;
    async fn credential_by_user_uid(&self, user_uid: &str) -> StoreResult<Option<Credential>>;
    async fn set_password(&self, user_uid: &str, password_hash: &str) -> StoreResult<()>;
    async fn record_login(&self, user_uid: &str, at: OffsetDateTime) -> StoreResult<()>;

    async fn create_api_token(
        &self,
        uid: &str,
        user_uid: &str,
        token_hash: &str,
        expires_at: Option<OffsetDateTime>,
    ) -> StoreResult<()>;
    async fn api_token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ApiTokenRecord>>;

    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()>;
    async fn session_by_hash(&self, id_hash: &str) -> StoreResult<Option<SessionRecord>>;
    async fn delete_session(&self, id_hash: &str) -> StoreResult<()>;

    /// Internal ids for periods, creating rows for the ones not yet stored.
    async fn ensure_periods(&self, periods: &[PeriodRow]) -> StoreResult<Vec<(String, i64)>>;
    /// Internal ids of metadata objects by UID (live or deleted).
    async fn object_ids(&self, uids: &[String]) -> StoreResult<Vec<(String, i64)>>;

    /// Insert or replace data values by their key, in one transaction.
    async fn put_data_values(&self, values: &[DataValueWrite]) -> StoreResult<()>;
    async fn put_completions(&self, completions: &[CompletionWrite]) -> StoreResult<()>;
    async fn put_events(&self, events: &[EventWrite]) -> StoreResult<()>;
    async fn data_counts(&self) -> StoreResult<DataCounts>;

    /// Values stored for org units in the subtrees rooted at `paths`.
    async fn count_data_values_in_subtrees(&self, paths: &[String]) -> StoreResult<i64>;

    /// Events by UID, deleted ones included.
    async fn events_by_uid(&self, uids: &[String]) -> StoreResult<Vec<EventRow>>;
    /// Upsert events, soft-delete others, and audit both, in one transaction.
    async fn write_events(
        &self,
        upserts: &[EventWrite],
        deletes: &[String],
        audits: &[EventAudit],
    ) -> StoreResult<()>;
    async fn query_events(&self, query: &EventQuery) -> StoreResult<Vec<EventRow>>;

    /// Begin a data-writing transaction.
    async fn begin_data(&self) -> StoreResult<Box<dyn DataTx>>;
    /// Period ids for ISO strings that are stored (unknown ones are left out).
    async fn period_ids(&self, isos: &[String]) -> StoreResult<Vec<(String, i64)>>;
    /// Ids of stored periods lying within `[start, end]`.
    async fn period_ids_within(&self, start: Date, end: Date) -> StoreResult<Vec<(String, i64)>>;
    /// One page of values in key order.
    async fn query_values(&self, query: &ValueQuery) -> StoreResult<Vec<StoredValue>>;
    async fn query_completions(&self, query: &CompletionQuery) -> StoreResult<Vec<CompletionRow>>;
    /// Audit rows matching the query (newest first), at most `query.limit`.
    async fn query_audits(&self, query: &ValueQuery, offset: i64) -> StoreResult<Vec<AuditRow>>;

    /// Where committed data value writes are announced.
    fn value_feed(&self) -> &ValueFeed;
    /// Every live value of these data elements (all when empty) in these
    /// periods (all when empty), handed to `sink` as it is read (no
    /// particular order); with `since`, every value (deleted too) written
    /// at or after it. For bulk readers (analytics, validation runs): it
    /// walks the element × period index, not the form order.
    async fn analytics_values(
        &self,
        data_element_ids: &[i64],
        period_ids: &[i64],
        since: Option<OffsetDateTime>,
        sink: &mut (dyn FnMut(ValueChange) + Send),
    ) -> StoreResult<()>;
    /// Every stored period: id and ISO string.
    async fn all_periods(&self) -> StoreResult<Vec<(i64, String)>>;
}

/// An id no period has: a period filter that matched no stored period must
/// select nothing, and an empty list would select everything.
const NO_PERIOD: i64 = -1;

/// Ids of the stored periods among `isos`, as a filter: never empty.
pub async fn period_filter(store: &dyn Store, isos: &[String]) -> StoreResult<Vec<i64>> {
    let mut ids: Vec<i64> = store
        .period_ids(isos)
        .await?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    ids.push(NO_PERIOD);
    Ok(ids)
}

/// Ids of the stored periods lying within `[start, end]`, as a filter: never empty.
pub async fn period_filter_within(
    store: &dyn Store,
    start: Date,
    end: Date,
) -> StoreResult<Vec<i64>> {
    let mut ids: Vec<i64> = store
        .period_ids_within(start, end)
        .await?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    ids.push(NO_PERIOD);
    Ok(ids)
}

/// Open the store a database URL names: `postgres://…` or `sqlite:…`
/// (a bare path is taken as a SQLite file).
pub async fn open(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::connect(url).await?))
    } else {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(de: i64, ou: i64) -> DataValueWrite {
        let now = OffsetDateTime::now_utc();
        DataValueWrite {
            data_element_id: de,
            period_id: 1,
            org_unit_id: ou,
            category_option_combo_id: 1,
            attribute_option_combo_id: 1,
            value: Some("1".into()),
            comment: None,
            follow_up: false,
            stored_by: None,
            created: now,
            last_updated: now,
            deleted: false,
        }
    }

    #[test]
    fn values_undone_to_a_savepoint_are_not_told() {
        let mut log = ValueLog::default();
        log.record(&[write(7, 1)]);
        log.savepoint("form");
        log.record(&[write(7, 2), write(7, 3)]);
        log.rollback_to("form");
        log.savepoint("form");
        log.record(&[write(7, 4)]);
        log.release("form");
        match log.written() {
            Some(Written::Values(v)) => assert_eq!(
                v.iter().map(|c| c.key.org_unit_id).collect::<Vec<_>>(),
                [1, 4]
            ),
            _ => panic!("values expected"),
        }
    }

    #[test]
    fn a_large_transaction_is_told_by_data_element_only() {
        let mut log = ValueLog::default();
        assert!(log.written().is_none(), "nothing written, nothing told");
        log.record(&[write(7, 1), write(8, 1)]);
        assert!(matches!(log.written(), Some(Written::Values(v)) if v.len() == 2));
        let many: Vec<DataValueWrite> = (0..ValueLog::CAP as i64).map(|ou| write(9, ou)).collect();
        log.record(&many);
        match log.written() {
            Some(Written::Elements(e)) => {
                assert_eq!(e, &[7, 8, 9].into_iter().collect::<HashSet<i64>>())
            }
            _ => panic!("past the cap only the elements are kept"),
        }
    }
}
