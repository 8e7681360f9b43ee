//! The two SQL stores. Their SQL is the same statement for statement (both
//! speak `$n` placeholders, `ON CONFLICT … DO UPDATE` and `RETURNING`), so one
//! macro stamps the [`Store`] implementation for each; what differs (pools,
//! pragmas, migrations) lives in their constructors.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{PgPool, QueryBuilder, Row, SqlitePool};
use time::OffsetDateTime;

use super::sms::{CLAIM_READ, CLAIM_RECORD, CLAIM_RECORD_STALE, DEVICE_TOUCH};
use super::*;

/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bind limits.
const BATCH_ROWS: usize = 1000;

/// Subtree bounds of an org unit path: `[path, path + "0")`. UIDs have a fixed
/// length, so nothing but the unit itself and its descendants falls inside.
fn subtree_bounds(path: &str) -> (String, String) {
    (path.to_string(), format!("{path}0"))
}

#[derive(Clone)]
pub struct SqliteStore {
    /// SQLite allows one writer at a time; a single-connection pool queues
    /// writers in the application instead of failing them with SQLITE_BUSY.
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
    pub(super) feed: ValueFeed,
    pub(super) caches: std::sync::Arc<StoreCaches>,
    /// Held by every clone of the store; the checkpointer stops once the
    /// last one is dropped.
    _alive: std::sync::Arc<()>,
}

/// How often the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

impl SqliteStore {
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        let url = if url.starts_with("sqlite:") {
            url.to_string()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An answer of "accepted" lets a phone forget its copy, so a
            // commit must outlive a power cut, not only a crash of this
            // process: NORMAL would sync the log only at checkpoints. Group
            // commit pays the sync once per group.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // The default 2 MB page cache thrashes on a national data table.
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // A log reset to empty by a checkpoint is cut back to this size.
            .pragma("journal_size_limit", "67108864");
        // Checkpoints are the checkpointer's: left to the writer, the commit
        // that crosses SQLite's 1,000-page mark copies the whole log into the
        // database and syncs it, and a large commit paid for that each time.
        let writer_options = options.clone().pragma("wal_autocheckpoint", "0");
        // A local file does not drop connections: no ping (a round trip to
        // the connection's thread) before every use.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(writer_options)
            .await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        let alive = std::sync::Arc::new(());
        tokio::spawn(checkpoint_while(
            std::sync::Arc::downgrade(&alive),
            checkpointer,
        ));
        Ok(SqliteStore {
            writer,
            reader,
            feed: ValueFeed::default(),
            // The file's one writer is this process.
            caches: std::sync::Arc::new(StoreCaches::new(None)),
            _alive: alive,
        })
    }
}

/// Copy the write-ahead log into the database beside the writer, never in
/// its way: a passive checkpoint takes what is committed and waits for
/// nobody. The log restarts from its beginning once all of it is copied.
async fn checkpoint_while(alive: std::sync::Weak<()>, pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "SQLite checkpoint failed; will try again");
        }
    }
    // The last copy, so a closed database needs no recovery of its log.
    let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await;
    pool.close().await;
}

#[derive(Clone)]
pub struct PgStore {
    pub(super) writer: PgPool,
    pub(super) reader: PgPool,
    pub(super) feed: ValueFeed,
    pub(super) caches: std::sync::Arc<StoreCaches>,
}

/// How long another instance's write to a cached table may go unseen here.
const PG_CACHE_TTL: Duration = Duration::from_secs(1);

impl PgStore {
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        Self::connect_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connect with options made by the caller (tests put each run in its own schema).
    pub async fn connect_with(options: PgConnectOptions) -> StoreResult<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(PgStore {
            writer: pool.clone(),
            reader: pool,
            feed: ValueFeed::default(),
            caches: std::sync::Arc::new(StoreCaches::new(Some(PG_CACHE_TTL))),
        })
    }
}

pub(super) fn map_unique(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict(db.message().to_string());
        }
    }
    StoreError::Database(e)
}

const VALUE_COLUMNS: &str =
    "d.org_unit_id, d.period_id, d.data_element_id, d.category_option_combo_id, \
     d.attribute_option_combo_id, p.iso, d.value, d.comment, d.follow_up, d.stored_by, d.created, \
     d.last_updated, d.deleted";

const INSERT_VALUES: &str = "INSERT INTO data_value (org_unit_id, period_id, data_element_id, \
     category_option_combo_id, attribute_option_combo_id, value, comment, follow_up, stored_by, \
     created, last_updated, deleted) ";

const UPSERT_VALUES: &str = " ON CONFLICT (org_unit_id, period_id, data_element_id, \
     category_option_combo_id, attribute_option_combo_id) DO UPDATE SET value = excluded.value, \
     comment = excluded.comment, follow_up = excluded.follow_up, stored_by = excluded.stored_by, \
     last_updated = excluded.last_updated, deleted = excluded.deleted";

fn stored_value_from_row<R: Row>(r: &R) -> StoreResult<StoredValue>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> OffsetDateTime: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredValue {
        key: ValueKey {
            org_unit_id: r.try_get("org_unit_id")?,
            period_id: r.try_get("period_id")?,
            data_element_id: r.try_get("data_element_id")?,
            category_option_combo_id: r.try_get("category_option_combo_id")?,
            attribute_option_combo_id: r.try_get("attribute_option_combo_id")?,
        },
        period_iso: r.try_get("iso")?,
        value: r.try_get("value")?,
        comment: r.try_get("comment")?,
        follow_up: r.try_get("follow_up")?,
        stored_by: r.try_get("stored_by")?,
        created: r.try_get("created")?,
        last_updated: r.try_get("last_updated")?,
        deleted: r.try_get("deleted")?,
    })
}

/// `AND …` clauses for a [`ValueQuery`]; `$alias` is the table holding the key columns.
macro_rules! push_value_filters {
    ($q:ident, $query:ident, $alias:literal) => {{
        for (column, ids) in [
            ("data_element_id", &$query.data_element_ids),
            ("period_id", &$query.period_ids),
            ("org_unit_id", &$query.org_unit_ids),
            (
                "attribute_option_combo_id",
                &$query.attribute_option_combo_ids,
            ),
        ] {
            push_in!($q, format!("{}.{}", $alias, column), ids.iter().copied());
        }
        if !$query.org_unit_paths.is_empty() {
            $q.push(" AND (");
            for (i, path) in $query.org_unit_paths.iter().enumerate() {
                let (lo, hi) = subtree_bounds(path);
                if i > 0 {
                    $q.push(" OR ");
                }
                $q.push("(o.path >= ");
                $q.push_bind(lo);
                $q.push(" AND o.path < ");
                $q.push_bind(hi);
                $q.push(")");
            }
            $q.push(")");
        }
    }};
}

macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:expr, $migrations:literal, $tx:ident, $existing:ident, $put_values:ident, $put_audits:ident) => {
        pub struct $tx {
            tx: sqlx::Transaction<'static, $db>,
            /// What this transaction wrote, told to the feed once committed.
            written: ValueLog,
            feed: ValueFeed,
        }

        #[async_trait]
        impl DataTx for $tx {
            async fn existing_values(&mut self, keys: &[ValueKey]) -> StoreResult<Vec<StoredValue>> {
                $existing(&mut self.tx, keys).await
            }

            async fn put_values(&mut self, values: &[DataValueWrite]) -> StoreResult<()> {
                $put_values(&mut self.tx, values).await?;
                if self.feed.is_watched() {
                    self.written.record(values);
                }
                Ok(())
            }

            async fn ensure_periods(&mut self, periods: &[PeriodRow]) -> StoreResult<Vec<(String, i64)>> {
                let mut out = Vec::with_capacity(periods.len());
                for p in periods {
                    // Nearly always stored already: one read, not a write and a read.
                    let stored: Option<i64> = sqlx::query_scalar("SELECT id FROM period WHERE iso = $1")
                        .bind(&p.iso)
                        .fetch_optional(&mut *self.tx)
                        .await?;
                    if let Some(id) = stored {
                        out.push((p.iso.clone(), id));
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO period (iso, period_type, start_date, end_date) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (iso) DO NOTHING",
                    )
                    .bind(&p.iso)
                    .bind(&p.period_type)
                    .bind(p.start_date)
                    .bind(p.end_date)
                    .execute(&mut *self.tx)
                    .await?;
                    let id: i64 = sqlx::query_scalar("SELECT id FROM period WHERE iso = $1")
                        .bind(&p.iso)
                        .fetch_one(&mut *self.tx)
                        .await?;
                    out.push((p.iso.clone(), id));
                }
                Ok(out)
            }

            async fn put_audits(&mut self, audits: &[AuditWrite]) -> StoreResult<()> {
                $put_audits(&mut self.tx, audits).await
            }

            async fn completion(
                &mut self,
                data_set_id: i64,
                period_id: i64,
                org_unit_id: i64,
                attribute_option_combo_id: i64,
            ) -> StoreResult<Option<CompletionRow>> {
                let row = sqlx::query(
                    "SELECT c.data_set_id, p.iso, c.org_unit_id, c.attribute_option_combo_id, c.completed,
                            c.completed_by, c.completed_at, c.last_updated
                     FROM complete_registration c JOIN period p ON p.id = c.period_id
                     WHERE c.data_set_id = $1 AND c.period_id = $2 AND c.org_unit_id = $3
                       AND c.attribute_option_combo_id = $4",
                )
                .bind(data_set_id)
                .bind(period_id)
                .bind(org_unit_id)
                .bind(attribute_option_combo_id)
                .fetch_optional(&mut *self.tx)
                .await?;
                row.map(|r| completion_from_row(&r)).transpose()
            }

            async fn put_completion(&mut self, c: &CompletionWrite, completed: bool) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO complete_registration (data_set_id, period_id, org_unit_id,
                       attribute_option_combo_id, completed, completed_by, completed_at, last_updated)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (data_set_id, period_id, org_unit_id, attribute_option_combo_id)
                     DO UPDATE SET completed = excluded.completed, completed_by = excluded.completed_by,
                       completed_at = excluded.completed_at, last_updated = excluded.last_updated",
                )
                .bind(c.data_set_id)
                .bind(c.period_id)
                .bind(c.org_unit_id)
                .bind(c.attribute_option_combo_id)
                .bind(completed)
                .bind(&c.completed_by)
                .bind(c.completed_at)
                .bind(OffsetDateTime::now_utc())
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn audit_completion(
                &mut self,
                c: &CompletionWrite,
                audit_type: &str,
                channel: &str,
                device: Option<&str>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO completion_audit (data_set_id, period_id, org_unit_id,
                       attribute_option_combo_id, audit_type, modified_by, created, channel, device)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(c.data_set_id)
                .bind(c.period_id)
                .bind(c.org_unit_id)
                .bind(c.attribute_option_combo_id)
                .bind(audit_type)
                .bind(&c.completed_by)
                .bind(OffsetDateTime::now_utc())
                .bind(channel)
                .bind(device)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn commit(self: Box<Self>) -> StoreResult<()> {
                let $tx { tx, written, feed } = *self;
                tx.commit().await?;
                feed.publish(&written);
                Ok(())
            }

            async fn savepoint(&mut self, name: &'static str) -> StoreResult<()> {
                sqlx::query(&format!("SAVEPOINT {name}")).execute(&mut *self.tx).await?;
                self.written.savepoint(name);
                Ok(())
            }

            async fn rollback_to(&mut self, name: &'static str) -> StoreResult<()> {
                sqlx::query(&format!("ROLLBACK TO SAVEPOINT {name}")).execute(&mut *self.tx).await?;
                self.written.rollback_to(name);
                self.release(name).await
            }

            async fn release(&mut self, name: &'static str) -> StoreResult<()> {
                sqlx::query(&format!("RELEASE SAVEPOINT {name}")).execute(&mut *self.tx).await?;
                self.written.release(name);
                Ok(())
            }

            async fn record_submission(
                &mut self,
                c: &SubmissionClaim,
                status: &str,
                result: &str,
                stale_before: i64,
            ) -> StoreResult<bool> {
                let now = crate::sync::now_ms();
                let inserted = sqlx::query(CLAIM_RECORD)
                    .bind(&c.id)
                    .bind(&c.device)
                    .bind(&c.user)
                    .bind(&c.kind)
                    .bind(c.received_at)
                    .bind(&c.device_time)
                    .bind(&c.captured_at)
                    .bind(c.future_dated)
                    .bind(status)
                    .bind(result)
                    .bind(now)
                    .execute(&mut *self.tx)
                    .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(true);
                }
                let taken = sqlx::query(CLAIM_RECORD_STALE)
                    .bind(&c.id)
                    .bind(status)
                    .bind(result)
                    .bind(now)
                    .bind(stale_before)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(taken.rows_affected() == 1)
            }

            async fn submission(&mut self, id: &str) -> StoreResult<Option<Claim>> {
                let row = sqlx::query(CLAIM_READ)
                    .bind(id)
                    .fetch_optional(&mut *self.tx)
                    .await?;
                row.map(|r| {
                    Ok(Claim::Existing {
                        status: r.try_get("status")?,
                        result: r.try_get("result")?,
                        received_at: r.try_get("received_at")?,
                    })
                })
                .transpose()
            }

            async fn claims(&mut self, ids: &[String]) -> StoreResult<Vec<StoredClaim>> {
                let mut out = Vec::new();
                for chunk in ids.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(
                        "SELECT id, status, result, received_at, updated_at FROM sync_submission WHERE id IN (",
                    );
                    let mut sep = q.separated(", ");
                    for id in chunk {
                        sep.push_bind(id);
                    }
                    q.push(")");
                    for r in q.build().fetch_all(&mut *self.tx).await? {
                        out.push(StoredClaim {
                            id: r.try_get("id")?,
                            status: r.try_get("status")?,
                            result: r.try_get("result")?,
                            received_at: r.try_get("received_at")?,
                            updated_at: r.try_get("updated_at")?,
                        });
                    }
                }
                Ok(out)
            }

            async fn record_new_submissions(&mut self, rows: &[RecordedSubmission]) -> StoreResult<u64> {
                let now = crate::sync::now_ms();
                let mut recorded = 0;
                for chunk in rows.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO sync_submission (id, device_uid, user_uid, kind, status, received_at,
                           device_time, captured_at, future_dated, updated_at, result) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        let c = &r.claim;
                        b.push_bind(&c.id)
                            .push_bind(&c.device)
                            .push_bind(&c.user)
                            .push_bind(&c.kind)
                            .push_bind(&r.status)
                            .push_bind(c.received_at)
                            .push_bind(&c.device_time)
                            .push_bind(&c.captured_at)
                            .push_bind(c.future_dated)
                            .push_bind(now)
                            .push_bind(&r.result);
                    });
                    q.push(" ON CONFLICT (id) DO NOTHING");
                    recorded += q.build().execute(&mut *self.tx).await?.rows_affected();
                }
                Ok(recorded)
            }

            async fn put_completions(&mut self, rows: &[(CompletionWrite, bool)]) -> StoreResult<()> {
                let now = OffsetDateTime::now_utc();
                for chunk in rows.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO complete_registration (data_set_id, period_id, org_unit_id,
                           attribute_option_combo_id, completed, completed_by, completed_at, last_updated) ",
                    );
                    q.push_values(chunk, |mut b, (c, completed)| {
                        b.push_bind(c.data_set_id)
                            .push_bind(c.period_id)
                            .push_bind(c.org_unit_id)
                            .push_bind(c.attribute_option_combo_id)
                            .push_bind(*completed)
                            .push_bind(&c.completed_by)
                            .push_bind(c.completed_at)
                            .push_bind(now);
                    });
                    q.push(
                        " ON CONFLICT (data_set_id, period_id, org_unit_id, attribute_option_combo_id)
                         DO UPDATE SET completed = excluded.completed, completed_by = excluded.completed_by,
                           completed_at = excluded.completed_at, last_updated = excluded.last_updated",
                    );
                    q.build().execute(&mut *self.tx).await?;
                }
                Ok(())
            }

            async fn audit_completions(&mut self, rows: &[CompletionAudit]) -> StoreResult<()> {
                let now = OffsetDateTime::now_utc();
                for chunk in rows.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO completion_audit (data_set_id, period_id, org_unit_id,
                           attribute_option_combo_id, audit_type, modified_by, created, channel, device) ",
                    );
                    q.push_values(chunk, |mut b, a| {
                        let c = &a.completion;
                        b.push_bind(c.data_set_id)
                            .push_bind(c.period_id)
                            .push_bind(c.org_unit_id)
                            .push_bind(c.attribute_option_combo_id)
                            .push_bind(&a.audit_type)
                            .push_bind(&c.completed_by)
                            .push_bind(now)
                            .push_bind(&a.channel)
                            .push_bind(&a.device);
                    });
                    q.build().execute(&mut *self.tx).await?;
                }
                Ok(())
            }

            async fn touch_device(
                &mut self,
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
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            fn sms(&self) -> std::sync::Arc<dyn hisa_sms_gateway::store::SmsStore> {
                std::sync::Arc::new(self.clone())
            }

            fn devices(&self) -> std::sync::Arc<dyn super::sms::DeviceStore> {
                std::sync::Arc::new(self.clone())
            }

            fn approvals(&self) -> std::sync::Arc<dyn super::approval::ApprovalStore> {
                std::sync::Arc::new(self.clone())
            }

            async fn migrate(&self) -> StoreResult<()> {
                sqlx::migrate!($migrations).run(&self.writer).await?;
                Ok(())
            }

            async fn metadata_version(&self) -> StoreResult<i64> {
                let v: i64 = sqlx::query_scalar("SELECT version FROM metadata_version WHERE id = 1")
                    .fetch_one(&self.reader)
                    .await?;
                Ok(v)
            }

            async fn load_metadata(&self) -> StoreResult<Vec<StoredObject>> {
                let rows = sqlx::query(
                    "SELECT id, uid, type, body FROM metadata_object WHERE deleted = FALSE ORDER BY id",
                )
                .fetch_all(&self.reader)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        let Json(body): Json<Value> = row.try_get("body")?;
                        Ok(StoredObject {
                            id: row.try_get("id")?,
                            uid: row.try_get("uid")?,
                            kind: row.try_get("type")?,
                            body,
                        })
                    })
                    .collect()
            }

            async fn apply_metadata(&self, change: &MetadataChange) -> StoreResult<i64> {
                let mut tx = self.writer.begin().await?;
                for o in &change.upserts {
                    sqlx::query(
                        "INSERT INTO metadata_object (uid, type, code, name, body, created, last_updated, deleted)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE)
                         ON CONFLICT (uid) DO UPDATE SET type = excluded.type, code = excluded.code,
                           name = excluded.name, body = excluded.body,
                           last_updated = excluded.last_updated, deleted = FALSE",
                    )
                    .bind(&o.uid)
                    .bind(&o.kind)
                    .bind(&o.code)
                    .bind(&o.name)
                    .bind(Json(&o.body))
                    .bind(o.created)
                    .bind(o.last_updated)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_unique)?;
                }
                for ou in &change.org_units {
                    sqlx::query(
                        "INSERT INTO organisation_unit (object_id, uid, parent_id, path, level, opening_date, closed_date)
                         SELECT m.id, m.uid, (SELECT p.object_id FROM organisation_unit p WHERE p.uid = $2), $3, $4, $5, $6
                         FROM metadata_object m WHERE m.uid = $1
                         ON CONFLICT (object_id) DO UPDATE SET parent_id = excluded.parent_id,
                           path = excluded.path, level = excluded.level,
                           opening_date = excluded.opening_date, closed_date = excluded.closed_date",
                    )
                    .bind(&ou.uid)
                    .bind(&ou.parent_uid)
                    .bind(&ou.path)
                    .bind(ou.level)
                    .bind(ou.opening_date)
                    .bind(ou.closed_date)
                    .execute(&mut *tx)
                    .await?;
                }
                let now = OffsetDateTime::now_utc();
                for uid in &change.deletes {
                    sqlx::query(
                        "UPDATE metadata_object SET deleted = TRUE, last_updated = $2 WHERE uid = $1",
                    )
                    .bind(uid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                for c in &change.credentials {
                    sqlx::query(
                        "INSERT INTO user_credential (user_id, username, username_key, password_hash, disabled, password_last_updated)
                         SELECT m.id, $2, $3, $4, $5, CASE WHEN $4 IS NULL THEN NULL ELSE $6 END
                         FROM metadata_object m WHERE m.uid = $1
                         ON CONFLICT (user_id) DO UPDATE SET username = excluded.username,
                           username_key = excluded.username_key,
                           password_hash = COALESCE(excluded.password_hash, user_credential.password_hash),
                           password_last_updated = COALESCE(excluded.password_last_updated, user_credential.password_last_updated),
                           disabled = excluded.disabled",
                    )
                    .bind(&c.user_uid)
                    .bind(&c.username)
                    .bind(c.username.to_lowercase())
                    .bind(&c.password_hash)
                    .bind(c.disabled)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_unique)?;
                }
                let version: i64 = sqlx::query_scalar(
                    "UPDATE metadata_version SET version = version + 1 WHERE id = 1 RETURNING version",
                )
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(version)
            }

            async fn credential_by_username(&self, username: &str) -> StoreResult<Option<Credential>> {
                let row = sqlx::query(
                    "SELECT c.user_id, m.uid, c.username, c.password_hash, c.disabled
                     FROM user_credential c JOIN metadata_object m ON m.id = c.user_id
                     WHERE c.username_key = $1 AND m.deleted = FALSE",
                )
                .bind(username.to_lowercase())
                .fetch_optional(&self.reader)
                .await?;
                row.map(|r| credential_from_row(&r)).transpose()
            }

            async fn credential_by_user_uid(&self, user_uid: &str) -> StoreResult<Option<Credential>> {
                let row = sqlx::query(
                    "SELECT c.user_id, m.uid, c.username, c.password_hash, c.disabled
                     FROM user_credential c JOIN metadata_object m ON m.id = c.user_id
                     WHERE m.uid = $1 AND m.deleted = FALSE",
                )
                .bind(user_uid)
                .fetch_optional(&self.reader)
                .await?;
                row.map(|r| credential_from_row(&r)).transpose()
            }

            async fn set_password(&self, user_uid: &str, password_hash: &str) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE user_credential SET password_hash = $2, password_last_updated = $3
                     WHERE user_id = (SELECT id FROM metadata_object WHERE uid = $1)",
                )
                .bind(user_uid)
                .bind(password_hash)
                .bind(OffsetDateTime::now_utc())
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn record_login(&self, user_uid: &str, at: OffsetDateTime) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE user_credential SET last_login = $2
                     WHERE user_id = (SELECT id FROM metadata_object WHERE uid = $1)",
                )
                .bind(user_uid)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn create_api_token(
                &self,
                uid: &str,
                user_uid: &str,
                token_hash: &str,
                expires_at: Option<OffsetDateTime>,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO api_token (uid, user_id, token_hash, expires_at, created)
                     SELECT $1, m.id, $3, $4, $5 FROM metadata_object m WHERE m.uid = $2",
                )
                .bind(uid)
                .bind(user_uid)
                .bind(token_hash)
                .bind(expires_at)
                .bind(OffsetDateTime::now_utc())
                .execute(&self.writer)
                .await
                .map_err(map_unique)?;
                Ok(())
            }

            async fn api_token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ApiTokenRecord>> {
                let row = sqlx::query(
                    "SELECT t.uid, m.uid AS user_uid, t.expires_at FROM api_token t
                     JOIN metadata_object m ON m.id = t.user_id
                     WHERE t.token_hash = $1 AND m.deleted = FALSE",
                )
                .bind(token_hash)
                .fetch_optional(&self.reader)
                .await?;
                row.map(|r| {
                    Ok(ApiTokenRecord {
                        uid: r.try_get("uid")?,
                        user_uid: r.try_get("user_uid")?,
                        expires_at: r.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn create_session(&self, s: &SessionRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO user_session (id_hash, user_id, csrf_token, created, expires_at)
                     SELECT $1, m.id, $3, $4, $5 FROM metadata_object m WHERE m.uid = $2",
                )
                .bind(&s.id_hash)
                .bind(&s.user_uid)
                .bind(&s.csrf_token)
                .bind(OffsetDateTime::now_utc())
                .bind(s.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn session_by_hash(&self, id_hash: &str) -> StoreResult<Option<SessionRecord>> {
                let row = sqlx::query(
                    "SELECT s.id_hash, m.uid AS user_uid, s.csrf_token, s.expires_at FROM user_session s
                     JOIN metadata_object m ON m.id = s.user_id WHERE s.id_hash = $1",
                )
                .bind(id_hash)
                .fetch_optional(&self.reader)
                .await?;
                row.map(|r| {
                    Ok(SessionRecord {
                        id_hash: r.try_get("id_hash")?,
                        user_uid: r.try_get("user_uid")?,
                        csrf_token: r.try_get("csrf_token")?,
                        expires_at: r.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn delete_session(&self, id_hash: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM user_session WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn ensure_periods(&self, periods: &[PeriodRow]) -> StoreResult<Vec<(String, i64)>> {
                let mut tx = self.writer.begin().await?;
                let mut out = Vec::with_capacity(periods.len());
                for p in periods {
                    sqlx::query(
                        "INSERT INTO period (iso, period_type, start_date, end_date) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (iso) DO NOTHING",
                    )
                    .bind(&p.iso)
                    .bind(&p.period_type)
                    .bind(p.start_date)
                    .bind(p.end_date)
                    .execute(&mut *tx)
                    .await?;
                    let id: i64 = sqlx::query_scalar("SELECT id FROM period WHERE iso = $1")
                        .bind(&p.iso)
                        .fetch_one(&mut *tx)
                        .await?;
                    out.push((p.iso.clone(), id));
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn object_ids(&self, uids: &[String]) -> StoreResult<Vec<(String, i64)>> {
                let mut out = Vec::with_capacity(uids.len());
                for chunk in uids.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> =
                        QueryBuilder::new("SELECT uid, id FROM metadata_object WHERE uid IN (");
                    let mut sep = q.separated(", ");
                    for uid in chunk {
                        sep.push_bind(uid);
                    }
                    q.push(")");
                    for row in q.build().fetch_all(&self.reader).await? {
                        out.push((row.try_get("uid")?, row.try_get("id")?));
                    }
                }
                Ok(out)
            }

            async fn put_data_values(&self, values: &[DataValueWrite]) -> StoreResult<()> {
                // The same upsert a data import makes, in a transaction of its own.
                let mut tx = self.begin_data().await?;
                tx.put_values(values).await?;
                tx.commit().await
            }

            async fn put_completions(&self, completions: &[CompletionWrite]) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                for chunk in completions.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO complete_registration (data_set_id, period_id, org_unit_id, attribute_option_combo_id,
                           completed, completed_by, completed_at, last_updated) ",
                    );
                    q.push_values(chunk, |mut b, c| {
                        b.push_bind(c.data_set_id)
                            .push_bind(c.period_id)
                            .push_bind(c.org_unit_id)
                            .push_bind(c.attribute_option_combo_id)
                            .push_bind(true)
                            .push_bind(&c.completed_by)
                            .push_bind(c.completed_at)
                            .push_bind(c.completed_at);
                    });
                    q.push(
                        " ON CONFLICT (data_set_id, period_id, org_unit_id, attribute_option_combo_id)
                          DO UPDATE SET completed = excluded.completed, completed_by = excluded.completed_by,
                          completed_at = excluded.completed_at, last_updated = excluded.last_updated",
                    );
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn put_events(&self, events: &[EventWrite]) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                for chunk in events.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO event (uid, program_id, program_stage_id, org_unit_id, attribute_option_combo_id,
                           occurred_at, status, stored_by, data_values, created, last_updated, deleted) ",
                    );
                    q.push_values(chunk, |mut b, e| {
                        b.push_bind(&e.uid)
                            .push_bind(e.program_id)
                            .push_bind(e.program_stage_id)
                            .push_bind(e.org_unit_id)
                            .push_bind(e.attribute_option_combo_id)
                            .push_bind(e.occurred_at)
                            .push_bind(&e.status)
                            .push_bind(&e.stored_by)
                            .push_bind(Json(&e.data_values))
                            .push_bind(e.created)
                            .push_bind(e.last_updated)
                            .push_bind(false);
                    });
                    q.push(
                        " ON CONFLICT (uid) DO UPDATE SET occurred_at = excluded.occurred_at, status = excluded.status,
                          data_values = excluded.data_values, last_updated = excluded.last_updated, deleted = FALSE",
                    );
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn data_counts(&self) -> StoreResult<DataCounts> {
                let data_values: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM data_value WHERE deleted = FALSE")
                        .fetch_one(&self.reader)
                        .await?;
                let completions: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM complete_registration WHERE completed = TRUE")
                        .fetch_one(&self.reader)
                        .await?;
                let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event WHERE deleted = FALSE")
                    .fetch_one(&self.reader)
                    .await?;
                Ok(DataCounts {
                    data_values,
                    completions,
                    events,
                })
            }

            async fn count_data_values_in_subtrees(&self, paths: &[String]) -> StoreResult<i64> {
                let mut total = 0i64;
                for path in paths {
                    let (lo, hi) = subtree_bounds(path);
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM data_value d JOIN organisation_unit o ON o.object_id = d.org_unit_id
                         WHERE d.deleted = FALSE AND o.path >= $1 AND o.path < $2",
                    )
                    .bind(lo)
                    .bind(hi)
                    .fetch_one(&self.reader)
                    .await?;
                    total += n;
                }
                Ok(total)
            }

            async fn events_by_uid(&self, uids: &[String]) -> StoreResult<Vec<EventRow>> {
                let mut out = Vec::new();
                for chunk in uids.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> = QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM event e WHERE e.uid IN ("));
                    let mut sep = q.separated(", ");
                    for u in chunk {
                        sep.push_bind(u);
                    }
                    q.push(")");
                    for row in q.build().fetch_all(&self.reader).await? {
                        out.push(event_from_row(&row)?);
                    }
                }
                Ok(out)
            }

            async fn write_events(
                &self,
                upserts: &[EventWrite],
                deletes: &[String],
                audits: &[EventAudit],
            ) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                for e in upserts {
                    sqlx::query(
                        "INSERT INTO event (uid, program_id, program_stage_id, org_unit_id, attribute_option_combo_id,
                           occurred_at, status, stored_by, data_values, created, last_updated, deleted)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, FALSE)
                         ON CONFLICT (uid) DO UPDATE SET program_stage_id = excluded.program_stage_id,
                           org_unit_id = excluded.org_unit_id, attribute_option_combo_id = excluded.attribute_option_combo_id,
                           occurred_at = excluded.occurred_at, status = excluded.status, stored_by = excluded.stored_by,
                           data_values = excluded.data_values, last_updated = excluded.last_updated, deleted = FALSE",
                    )
                    .bind(&e.uid)
                    .bind(e.program_id)
                    .bind(e.program_stage_id)
                    .bind(e.org_unit_id)
                    .bind(e.attribute_option_combo_id)
                    .bind(e.occurred_at)
                    .bind(&e.status)
                    .bind(&e.stored_by)
                    .bind(Json(&e.data_values))
                    .bind(e.created)
                    .bind(e.last_updated)
                    .execute(&mut *tx)
                    .await?;
                }
                let now = OffsetDateTime::now_utc();
                for uid in deletes {
                    sqlx::query("UPDATE event SET deleted = TRUE, last_updated = $2 WHERE uid = $1")
                        .bind(uid)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                for a in audits {
                    sqlx::query(
                        "INSERT INTO event_audit (event_uid, audit_type, previous, modified_by, created, channel, device)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&a.event_uid)
                    .bind(&a.audit_type)
                    .bind(&a.previous)
                    .bind(&a.modified_by)
                    .bind(now)
                    .bind(&a.channel)
                    .bind(&a.device)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn query_events(&self, query: &EventQuery) -> StoreResult<Vec<EventRow>> {
                let mut q: QueryBuilder<$db> = QueryBuilder::new(format!(
                    "SELECT {EVENT_COLUMNS} FROM event e JOIN organisation_unit o ON o.object_id = e.org_unit_id WHERE 1 = 1"
                ));
                let values = ValueQuery {
                    org_unit_ids: query.org_unit_ids.clone(),
                    org_unit_paths: query.org_unit_paths.clone(),
                    ..ValueQuery::default()
                };
                push_value_filters!(q, values, "e");
                if !query.program_ids.is_empty() {
                    q.push(" AND e.program_id IN (");
                    let mut sep = q.separated(", ");
                    for id in &query.program_ids {
                        sep.push_bind(*id);
                    }
                    q.push(")");
                }
                if !query.include_deleted {
                    q.push(" AND e.deleted = FALSE");
                }
                if let Some(d) = query.occurred_after {
                    q.push(" AND e.occurred_at >= ");
                    q.push_bind(d);
                }
                if let Some(d) = query.occurred_before {
                    q.push(" AND e.occurred_at <= ");
                    q.push_bind(d);
                }
                if let Some(t) = query.updated_after {
                    q.push(" AND e.last_updated >= ");
                    q.push_bind(t);
                }
                q.push(" ORDER BY e.occurred_at DESC, e.id DESC LIMIT ");
                q.push_bind(query.limit);
                q.push(" OFFSET ");
                q.push_bind(query.offset);
                let rows = q.build().fetch_all(&self.reader).await?;
                rows.iter().map(event_from_row).collect()
            }

            async fn begin_data(&self) -> StoreResult<Box<dyn DataTx>> {
                Ok(Box::new($tx {
                    tx: self.writer.begin().await?,
                    written: ValueLog::default(),
                    feed: self.feed.clone(),
                }))
            }

            async fn period_ids(&self, isos: &[String]) -> StoreResult<Vec<(String, i64)>> {
                let mut out = Vec::new();
                for chunk in isos.chunks(BATCH_ROWS) {
                    let mut q: QueryBuilder<$db> =
                        QueryBuilder::new("SELECT iso, id FROM period WHERE iso IN (");
                    let mut sep = q.separated(", ");
                    for iso in chunk {
                        sep.push_bind(iso);
                    }
                    q.push(")");
                    for row in q.build().fetch_all(&self.reader).await? {
                        out.push((row.try_get("iso")?, row.try_get("id")?));
                    }
                }
                Ok(out)
            }

            async fn period_ids_within(&self, start: Date, end: Date) -> StoreResult<Vec<(String, i64)>> {
                let rows = sqlx::query("SELECT iso, id FROM period WHERE start_date >= $1 AND end_date <= $2")
                    .bind(start)
                    .bind(end)
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("iso")?, r.try_get("id")?)))
                    .collect()
            }

            fn value_feed(&self) -> &ValueFeed {
                &self.feed
            }

            async fn analytics_values(
                &self,
                data_element_ids: &[i64],
                period_ids: &[i64],
                since: Option<OffsetDateTime>,
                sink: &mut (dyn FnMut(ValueChange) + Send),
            ) -> StoreResult<()> {
                use futures::TryStreamExt;
                let mut q: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT org_unit_id, period_id, data_element_id, category_option_combo_id, \
                     attribute_option_combo_id, value, deleted, last_updated FROM data_value WHERE 1 = 1",
                );
                push_in!(q, "data_element_id", data_element_ids.iter().copied());
                push_in!(q, "period_id", period_ids.iter().copied());
                if let Some(since) = since {
                    q.push(" AND last_updated >= ");
                    q.push_bind(since);
                } else {
                    // A first load wants what is there, not what was.
                    q.push(" AND deleted = FALSE");
                }
                // Streamed: a national element is millions of rows, and
                // holding them all as rows first would multiply the memory.
                let mut rows = q.build().fetch(&self.reader);
                while let Some(r) = rows.try_next().await? {
                    sink(ValueChange {
                        key: ValueKey {
                            org_unit_id: r.try_get("org_unit_id")?,
                            period_id: r.try_get("period_id")?,
                            data_element_id: r.try_get("data_element_id")?,
                            category_option_combo_id: r.try_get("category_option_combo_id")?,
                            attribute_option_combo_id: r.try_get("attribute_option_combo_id")?,
                        },
                        value: r.try_get("value")?,
                        deleted: r.try_get("deleted")?,
                        last_updated: r.try_get("last_updated")?,
                    });
                }
                Ok(())
            }

            async fn all_periods(&self) -> StoreResult<Vec<(i64, String)>> {
                let rows = sqlx::query("SELECT id, iso FROM period")
                    .fetch_all(&self.reader)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("id")?, r.try_get("iso")?)))
                    .collect()
            }

            async fn query_values(&self, query: &ValueQuery) -> StoreResult<Vec<StoredValue>> {
                let mut q: QueryBuilder<$db> = QueryBuilder::new(format!(
                    "SELECT {VALUE_COLUMNS} FROM data_value d JOIN period p ON p.id = d.period_id
                     JOIN organisation_unit o ON o.object_id = d.org_unit_id WHERE 1 = 1"
                ));
                push_value_filters!(q, query, "d");
                if !query.include_deleted {
                    q.push(" AND d.deleted = FALSE");
                }
                if let Some(since) = query.last_updated_since {
                    q.push(" AND d.last_updated >= ");
                    q.push_bind(since);
                }
                if let Some(k) = query.after {
                    q.push(" AND (d.org_unit_id, d.period_id, d.data_element_id, d.category_option_combo_id, d.attribute_option_combo_id) > (");
                    let mut sep = q.separated(", ");
                    sep.push_bind(k.org_unit_id)
                        .push_bind(k.period_id)
                        .push_bind(k.data_element_id)
                        .push_bind(k.category_option_combo_id)
                        .push_bind(k.attribute_option_combo_id);
                    q.push(")");
                }
                q.push(" ORDER BY d.org_unit_id, d.period_id, d.data_element_id, d.category_option_combo_id, d.attribute_option_combo_id LIMIT ");
                q.push_bind(query.limit);
                let rows = q.build().fetch_all(&self.reader).await?;
                rows.iter().map(stored_value_from_row).collect()
            }

            async fn query_completions(&self, query: &CompletionQuery) -> StoreResult<Vec<CompletionRow>> {
                let mut q: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT c.data_set_id, p.iso, c.org_unit_id, c.attribute_option_combo_id, c.completed,
                            c.completed_by, c.completed_at, c.last_updated
                     FROM complete_registration c JOIN period p ON p.id = c.period_id
                     JOIN organisation_unit o ON o.object_id = c.org_unit_id WHERE c.completed = TRUE",
                );
                let values = ValueQuery {
                    period_ids: query.period_ids.clone(),
                    org_unit_ids: query.org_unit_ids.clone(),
                    org_unit_paths: query.org_unit_paths.clone(),
                    ..ValueQuery::default()
                };
                push_value_filters!(q, values, "c");
                if !query.data_set_ids.is_empty() {
                    q.push(" AND c.data_set_id IN (");
                    let mut sep = q.separated(", ");
                    for id in &query.data_set_ids {
                        sep.push_bind(*id);
                    }
                    q.push(")");
                }
                q.push(" ORDER BY c.org_unit_id, c.period_id, c.data_set_id LIMIT ");
                q.push_bind(query.limit);
                let rows = q.build().fetch_all(&self.reader).await?;
                rows.iter().map(completion_from_row).collect()
            }

            async fn query_audits(&self, query: &ValueQuery, offset: i64) -> StoreResult<Vec<AuditRow>> {
                let mut q: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT a.data_element_id, a.period_id, a.org_unit_id, a.category_option_combo_id,
                            a.attribute_option_combo_id, a.previous_value, a.value, a.audit_type, a.modified_by,
                            a.created, a.channel, a.device, p.iso
                     FROM data_value_audit a JOIN period p ON p.id = a.period_id
                     JOIN organisation_unit o ON o.object_id = a.org_unit_id WHERE 1 = 1",
                );
                push_value_filters!(q, query, "a");
                q.push(" ORDER BY a.id DESC LIMIT ");
                q.push_bind(query.limit);
                q.push(" OFFSET ");
                q.push_bind(offset);
                let rows = q.build().fetch_all(&self.reader).await?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditRow {
                            audit: AuditWrite {
                                key: ValueKey {
                                    org_unit_id: r.try_get("org_unit_id")?,
                                    period_id: r.try_get("period_id")?,
                                    data_element_id: r.try_get("data_element_id")?,
                                    category_option_combo_id: r.try_get("category_option_combo_id")?,
                                    attribute_option_combo_id: r.try_get("attribute_option_combo_id")?,
                                },
                                previous_value: r.try_get("previous_value")?,
                                value: r.try_get("value")?,
                                audit_type: r.try_get("audit_type")?,
                                modified_by: r.try_get("modified_by")?,
                                created: r.try_get("created")?,
                                channel: r.try_get("channel")?,
                                device: r.try_get("device")?,
                            },
                            period_iso: r.try_get("iso")?,
                        })
                    })
                    .collect()
            }
        }
    };
}

fn credential_from_row<R: Row>(r: &R) -> StoreResult<Credential>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Credential {
        user_id: r.try_get("user_id")?,
        user_uid: r.try_get("uid")?,
        username: r.try_get("username")?,
        password_hash: r.try_get("password_hash")?,
        disabled: r.try_get("disabled")?,
    })
}

const EVENT_COLUMNS: &str = "e.uid, e.program_id, e.program_stage_id, e.org_unit_id, \
     e.attribute_option_combo_id, e.occurred_at, e.status, e.stored_by, e.data_values, e.created, \
     e.last_updated, e.deleted";

fn event_from_row<R: Row>(r: &R) -> StoreResult<EventRow>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> OffsetDateTime: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> time::Date: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Json<Value>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let Json(data_values): Json<Value> = r.try_get("data_values")?;
    Ok(EventRow {
        uid: r.try_get("uid")?,
        program_id: r.try_get("program_id")?,
        program_stage_id: r.try_get("program_stage_id")?,
        org_unit_id: r.try_get("org_unit_id")?,
        attribute_option_combo_id: r.try_get("attribute_option_combo_id")?,
        occurred_at: r.try_get("occurred_at")?,
        status: r.try_get("status")?,
        stored_by: r.try_get("stored_by")?,
        data_values,
        created: r.try_get("created")?,
        last_updated: r.try_get("last_updated")?,
        deleted: r.try_get("deleted")?,
    })
}

/// Current rows for a batch of keys. SQLite has one writer, so no row locks
/// are needed. The keys are a table the query walks, one key lookup each
/// (`CROSS JOIN` fixes that order): as a row-value `IN` list, SQLite's
/// planner may scan the whole `data_value` table instead.
async fn existing_values_sqlite(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    keys: &[ValueKey],
) -> StoreResult<Vec<StoredValue>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let mut q: QueryBuilder<sqlx::Sqlite> =
            QueryBuilder::new("WITH k (ou, pe, de, coc, aoc) AS (VALUES ");
        for (i, k) in chunk.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.push("(");
            let mut sep = q.separated(", ");
            sep.push_bind(k.org_unit_id)
                .push_bind(k.period_id)
                .push_bind(k.data_element_id)
                .push_bind(k.category_option_combo_id)
                .push_bind(k.attribute_option_combo_id);
            q.push(")");
        }
        q.push(format!(
            ") SELECT {VALUE_COLUMNS} FROM k CROSS JOIN data_value d
               ON d.org_unit_id = k.ou AND d.period_id = k.pe AND d.data_element_id = k.de
              AND d.category_option_combo_id = k.coc AND d.attribute_option_combo_id = k.aoc
             JOIN period p ON p.id = d.period_id"
        ));
        for row in q.build().fetch_all(&mut **tx).await? {
            out.push(stored_value_from_row(&row)?);
        }
    }
    Ok(out)
}

/// Current rows for a batch of keys, locked against concurrent imports.
/// The keys travel as five arrays: one statement text whatever the batch
/// size, so PostgreSQL plans it once instead of re-planning thousands of
/// parameters per batch.
async fn existing_values_pg(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    keys: &[ValueKey],
) -> StoreResult<Vec<StoredValue>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(5000) {
        let column = |f: fn(&ValueKey) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
        let rows = sqlx::query(&format!(
            "SELECT {VALUE_COLUMNS} FROM data_value d JOIN period p ON p.id = d.period_id
             JOIN UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) AS k(ou, pe, de, coc, aoc)
               ON d.org_unit_id = k.ou AND d.period_id = k.pe AND d.data_element_id = k.de
              AND d.category_option_combo_id = k.coc AND d.attribute_option_combo_id = k.aoc
             FOR UPDATE OF d"
        ))
        .bind(column(|k| k.org_unit_id))
        .bind(column(|k| k.period_id))
        .bind(column(|k| k.data_element_id))
        .bind(column(|k| k.category_option_combo_id))
        .bind(column(|k| k.attribute_option_combo_id))
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            out.push(stored_value_from_row(&row)?);
        }
    }
    Ok(out)
}

async fn put_values_sqlite(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    values: &[DataValueWrite],
) -> StoreResult<()> {
    for chunk in values.chunks(BATCH_ROWS) {
        let mut q: QueryBuilder<sqlx::Sqlite> = QueryBuilder::new(INSERT_VALUES);
        q.push_values(chunk, |mut b, v| {
            b.push_bind(v.org_unit_id)
                .push_bind(v.period_id)
                .push_bind(v.data_element_id)
                .push_bind(v.category_option_combo_id)
                .push_bind(v.attribute_option_combo_id)
                .push_bind(&v.value)
                .push_bind(&v.comment)
                .push_bind(v.follow_up)
                .push_bind(&v.stored_by)
                .push_bind(v.created)
                .push_bind(v.last_updated)
                .push_bind(v.deleted);
        });
        q.push(UPSERT_VALUES);
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn put_audits_sqlite(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    audits: &[AuditWrite],
) -> StoreResult<()> {
    for chunk in audits.chunks(BATCH_ROWS) {
        let mut q: QueryBuilder<sqlx::Sqlite> = QueryBuilder::new(
                        "INSERT INTO data_value_audit (data_element_id, period_id, org_unit_id,
                           category_option_combo_id, attribute_option_combo_id, previous_value, value,
                           audit_type, modified_by, created, channel, device) ",
                    );
        q.push_values(chunk, |mut b, a| {
            b.push_bind(a.key.data_element_id)
                .push_bind(a.key.period_id)
                .push_bind(a.key.org_unit_id)
                .push_bind(a.key.category_option_combo_id)
                .push_bind(a.key.attribute_option_combo_id)
                .push_bind(&a.previous_value)
                .push_bind(&a.value)
                .push_bind(&a.audit_type)
                .push_bind(&a.modified_by)
                .push_bind(a.created)
                .push_bind(&a.channel)
                .push_bind(&a.device);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// PostgreSQL takes a batch as one array per column: a fixed statement text
/// with a dozen parameters, planned once, instead of thousands per batch.
async fn put_values_pg(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    values: &[DataValueWrite],
) -> StoreResult<()> {
    for chunk in values.chunks(5000) {
        let ids = |f: fn(&DataValueWrite) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
        let texts = |f: fn(&DataValueWrite) -> Option<String>| {
            chunk.iter().map(f).collect::<Vec<Option<String>>>()
        };
        let flags = |f: fn(&DataValueWrite) -> bool| chunk.iter().map(f).collect::<Vec<bool>>();
        let times = |f: fn(&DataValueWrite) -> OffsetDateTime| {
            chunk.iter().map(f).collect::<Vec<OffsetDateTime>>()
        };
        sqlx::query(&format!(
            "{INSERT_VALUES} SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
               $6::text[], $7::text[], $8::bool[], $9::text[], $10::timestamptz[], $11::timestamptz[], $12::bool[])
             {UPSERT_VALUES}"
        ))
        .bind(ids(|v| v.org_unit_id))
        .bind(ids(|v| v.period_id))
        .bind(ids(|v| v.data_element_id))
        .bind(ids(|v| v.category_option_combo_id))
        .bind(ids(|v| v.attribute_option_combo_id))
        .bind(texts(|v| v.value.clone()))
        .bind(texts(|v| v.comment.clone()))
        .bind(flags(|v| v.follow_up))
        .bind(texts(|v| v.stored_by.clone()))
        .bind(times(|v| v.created))
        .bind(times(|v| v.last_updated))
        .bind(flags(|v| v.deleted))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn put_audits_pg(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    audits: &[AuditWrite],
) -> StoreResult<()> {
    for chunk in audits.chunks(5000) {
        let ids = |f: fn(&AuditWrite) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
        let texts = |f: fn(&AuditWrite) -> Option<String>| {
            chunk.iter().map(f).collect::<Vec<Option<String>>>()
        };
        sqlx::query(
            "INSERT INTO data_value_audit (data_element_id, period_id, org_unit_id,
               category_option_combo_id, attribute_option_combo_id, previous_value, value,
               audit_type, modified_by, created, channel, device)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
               $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::text[])",
        )
        .bind(ids(|a| a.key.data_element_id))
        .bind(ids(|a| a.key.period_id))
        .bind(ids(|a| a.key.org_unit_id))
        .bind(ids(|a| a.key.category_option_combo_id))
        .bind(ids(|a| a.key.attribute_option_combo_id))
        .bind(texts(|a| a.previous_value.clone()))
        .bind(texts(|a| a.value.clone()))
        .bind(texts(|a| Some(a.audit_type.clone())))
        .bind(texts(|a| a.modified_by.clone()))
        .bind(chunk.iter().map(|a| a.created).collect::<Vec<OffsetDateTime>>())
        .bind(texts(|a| Some(a.channel.clone())))
        .bind(texts(|a| a.device.clone()))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn completion_from_row<R: Row>(r: &R) -> StoreResult<CompletionRow>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> OffsetDateTime: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(CompletionRow {
        data_set_id: r.try_get("data_set_id")?,
        period_iso: r.try_get("iso")?,
        org_unit_id: r.try_get("org_unit_id")?,
        attribute_option_combo_id: r.try_get("attribute_option_combo_id")?,
        completed: r.try_get("completed")?,
        completed_by: r.try_get("completed_by")?,
        completed_at: r.try_get("completed_at")?,
        last_updated: r.try_get("last_updated")?,
    })
}

impl_store!(
    SqliteStore,
    sqlx::Sqlite,
    Backend::Sqlite,
    "migrations/sqlite",
    SqliteDataTx,
    existing_values_sqlite,
    put_values_sqlite,
    put_audits_sqlite
);
impl_store!(
    PgStore,
    sqlx::Postgres,
    Backend::Postgres,
    "migrations/postgres",
    PgDataTx,
    existing_values_pg,
    put_values_pg,
    put_audits_pg
);

#[cfg(test)]
mod tests {
    use super::*;

    /// "Accepted" must survive a power cut: every connection that writes
    /// syncs each commit (FULL = 2), and the writer leaves checkpoints to
    /// the checkpointer.
    #[tokio::test]
    async fn sqlite_commits_are_synced_and_the_writer_never_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hisa.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(synchronous, 2);
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(autocheckpoint, 0);
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
    }
}
