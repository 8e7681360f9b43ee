//! What supervisors review: approvals, their audit trail, user messages and
//! persisted validation rule violations, on both databases.

use async_trait::async_trait;
use sqlx::Row;

use super::{PgStore, SqliteStore, StoreError, StoreResult};

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRow {
    pub workflow: String,
    pub period: String,
    pub org_unit: String,
    pub attribute_option_combo: String,
    pub level: String,
    pub accepted: bool,
    pub approved_by: String,
    pub approved_at: i64,
    pub accepted_by: Option<String>,
    pub accepted_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalAudit {
    pub workflow: String,
    pub period: String,
    pub org_unit: String,
    pub attribute_option_combo: String,
    pub action: String,
    pub by_user: String,
    pub at: i64,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserMessage {
    pub uid: String,
    pub recipient: String,
    pub sender: Option<String>,
    pub subject: String,
    pub text: String,
    /// JSON naming what the message is about (a returned form's key).
    pub context: Option<String>,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValidationResultRow {
    pub uid: String,
    pub validation_rule: String,
    pub org_unit: String,
    pub period: String,
    pub attribute_option_combo: String,
    pub importance: String,
    pub left_value: Option<f64>,
    pub right_value: Option<f64>,
    pub created_at: i64,
    pub follow_up: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ValidationResultQuery {
    pub org_units: Vec<String>,
    pub periods: Vec<String>,
    pub rules: Vec<String>,
    pub follow_up: Option<bool>,
    pub limit: i64,
    pub offset: i64,
}

#[async_trait]
pub trait ApprovalStore: Send + Sync + 'static {
    /// Insert or refresh by (rule, org unit, period, combo); the follow-up flag stays.
    async fn put_validation_results(&self, rows: &[ValidationResultRow]) -> StoreResult<()>;
    async fn validation_results(
        &self,
        q: &ValidationResultQuery,
    ) -> StoreResult<Vec<ValidationResultRow>>;
    async fn set_follow_up(&self, uid: &str, follow_up: bool) -> StoreResult<bool>;
    /// Every approval (a small table: one row per approved unit and period).
    async fn all_approvals(&self) -> StoreResult<Vec<ApprovalRow>>;
    async fn approvals(&self, workflow: &str, period: &str) -> StoreResult<Vec<ApprovalRow>>;
    /// False when it was approved already.
    async fn approve(&self, row: &ApprovalRow, audit: &ApprovalAudit) -> StoreResult<bool>;
    /// False when it was not approved (or is accepted: unaccept first).
    async fn unapprove(&self, audit: &ApprovalAudit) -> StoreResult<bool>;
    async fn set_accepted(&self, accepted: bool, audit: &ApprovalAudit) -> StoreResult<bool>;
    async fn record(&self, audit: &ApprovalAudit) -> StoreResult<()>;
    async fn audits(
        &self,
        workflow: &str,
        period: &str,
        org_unit: &str,
    ) -> StoreResult<Vec<ApprovalAudit>>;
    async fn put_message(&self, m: &UserMessage) -> StoreResult<()>;
    /// Newest first.
    async fn messages_for(&self, recipient: &str, limit: i64) -> StoreResult<Vec<UserMessage>>;
}

fn approval_from<R: Row>(r: &R) -> Result<ApprovalRow, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ApprovalRow {
        workflow: r.try_get("workflow")?,
        period: r.try_get("period")?,
        org_unit: r.try_get("org_unit")?,
        attribute_option_combo: r.try_get("attribute_option_combo")?,
        level: r.try_get("level")?,
        accepted: r.try_get("accepted")?,
        approved_by: r.try_get("approved_by")?,
        approved_at: r.try_get("approved_at")?,
        accepted_by: r.try_get("accepted_by")?,
        accepted_at: r.try_get("accepted_at")?,
    })
}

const COLUMNS: &str = "workflow, period, org_unit, attribute_option_combo, level, accepted, \
     approved_by, approved_at, accepted_by, accepted_at";

macro_rules! impl_approval_store {
    ($store:ty, $db:ty) => {
        async fn insert_audit(
            tx: &mut sqlx::Transaction<'static, $db>,
            a: &ApprovalAudit,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO data_approval_audit (workflow, period, org_unit, attribute_option_combo,
                   action, by_user, at, comment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&a.workflow)
            .bind(&a.period)
            .bind(&a.org_unit)
            .bind(&a.attribute_option_combo)
            .bind(&a.action)
            .bind(&a.by_user)
            .bind(a.at)
            .bind(&a.comment)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        #[async_trait]
        impl ApprovalStore for $store {
            async fn put_validation_results(&self, rows: &[ValidationResultRow]) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                for r in rows {
                    sqlx::query(
                        "INSERT INTO validation_result (uid, validation_rule, org_unit, period,
                           attribute_option_combo, importance, left_value, right_value, created_at, follow_up)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE)
                         ON CONFLICT (validation_rule, org_unit, period, attribute_option_combo) DO UPDATE SET
                           importance = excluded.importance, left_value = excluded.left_value,
                           right_value = excluded.right_value, created_at = excluded.created_at",
                    )
                    .bind(&r.uid)
                    .bind(&r.validation_rule)
                    .bind(&r.org_unit)
                    .bind(&r.period)
                    .bind(&r.attribute_option_combo)
                    .bind(&r.importance)
                    .bind(r.left_value)
                    .bind(r.right_value)
                    .bind(r.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn validation_results(&self, q: &ValidationResultQuery) -> StoreResult<Vec<ValidationResultRow>> {
                let mut b = sqlx::QueryBuilder::new(
                    "SELECT uid, validation_rule, org_unit, period, attribute_option_combo, importance,
                       left_value, right_value, created_at, follow_up FROM validation_result WHERE 1 = 1",
                );
                push_in!(b, "org_unit", q.org_units.iter().cloned());
                push_in!(b, "period", q.periods.iter().cloned());
                push_in!(b, "validation_rule", q.rules.iter().cloned());
                if let Some(f) = q.follow_up {
                    b.push(" AND follow_up = ").push_bind(f);
                }
                b.push(" ORDER BY period DESC, org_unit, validation_rule LIMIT ")
                    .push_bind(q.limit.max(1))
                    .push(" OFFSET ")
                    .push_bind(q.offset.max(0));
                let rows = b.build().fetch_all(&self.reader).await?;
                rows.iter()
                    .map(|r| {
                        Ok(ValidationResultRow {
                            uid: r.try_get("uid")?,
                            validation_rule: r.try_get("validation_rule")?,
                            org_unit: r.try_get("org_unit")?,
                            period: r.try_get("period")?,
                            attribute_option_combo: r.try_get("attribute_option_combo")?,
                            importance: r.try_get("importance")?,
                            left_value: r.try_get("left_value")?,
                            right_value: r.try_get("right_value")?,
                            created_at: r.try_get("created_at")?,
                            follow_up: r.try_get("follow_up")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError::from)
            }

            async fn set_follow_up(&self, uid: &str, follow_up: bool) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE validation_result SET follow_up = $2 WHERE uid = $1")
                    .bind(uid)
                    .bind(follow_up)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn all_approvals(&self) -> StoreResult<Vec<ApprovalRow>> {
                let cache = &self.caches.approvals;
                if let Some(rows) = cache.get() {
                    return Ok(rows);
                }
                let generation = cache.generation();
                let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM data_approval"))
                    .fetch_all(&self.reader)
                    .await?;
                let rows: Vec<ApprovalRow> =
                    rows.iter().map(approval_from).collect::<Result<_, _>>().map_err(StoreError::from)?;
                cache.keep(generation, &rows);
                Ok(rows)
            }

            async fn approvals(&self, workflow: &str, period: &str) -> StoreResult<Vec<ApprovalRow>> {
                let rows = sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM data_approval WHERE workflow = $1 AND period = $2"
                ))
                .bind(workflow)
                .bind(period)
                .fetch_all(&self.reader)
                .await?;
                rows.iter().map(approval_from).collect::<Result<_, _>>().map_err(StoreError::from)
            }

            async fn approve(&self, row: &ApprovalRow, audit: &ApprovalAudit) -> StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let done = sqlx::query(
                    "INSERT INTO data_approval (workflow, period, org_unit, attribute_option_combo, level,
                       accepted, approved_by, approved_at) VALUES ($1, $2, $3, $4, $5, FALSE, $6, $7)
                     ON CONFLICT (workflow, period, org_unit, attribute_option_combo) DO NOTHING",
                )
                .bind(&row.workflow)
                .bind(&row.period)
                .bind(&row.org_unit)
                .bind(&row.attribute_option_combo)
                .bind(&row.level)
                .bind(&row.approved_by)
                .bind(row.approved_at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                self.caches.approvals.invalidate();
                Ok(true)
            }

            async fn unapprove(&self, a: &ApprovalAudit) -> StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let done = sqlx::query(
                    "DELETE FROM data_approval WHERE workflow = $1 AND period = $2 AND org_unit = $3
                       AND attribute_option_combo = $4 AND accepted = FALSE",
                )
                .bind(&a.workflow)
                .bind(&a.period)
                .bind(&a.org_unit)
                .bind(&a.attribute_option_combo)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, a).await?;
                tx.commit().await?;
                self.caches.approvals.invalidate();
                Ok(true)
            }

            async fn set_accepted(&self, accepted: bool, a: &ApprovalAudit) -> StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let done = sqlx::query(
                    "UPDATE data_approval SET accepted = $5, accepted_by = $6, accepted_at = $7
                     WHERE workflow = $1 AND period = $2 AND org_unit = $3 AND attribute_option_combo = $4
                       AND accepted = $8",
                )
                .bind(&a.workflow)
                .bind(&a.period)
                .bind(&a.org_unit)
                .bind(&a.attribute_option_combo)
                .bind(accepted)
                .bind(accepted.then_some(a.by_user.clone()))
                .bind(accepted.then_some(a.at))
                .bind(!accepted)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                insert_audit(&mut tx, a).await?;
                tx.commit().await?;
                self.caches.approvals.invalidate();
                Ok(true)
            }

            async fn record(&self, a: &ApprovalAudit) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                insert_audit(&mut tx, a).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn audits(&self, workflow: &str, period: &str, org_unit: &str) -> StoreResult<Vec<ApprovalAudit>> {
                let rows = sqlx::query(
                    "SELECT workflow, period, org_unit, attribute_option_combo, action, by_user, at, comment
                     FROM data_approval_audit WHERE workflow = $1 AND period = $2 AND org_unit = $3 ORDER BY at, id",
                )
                .bind(workflow)
                .bind(period)
                .bind(org_unit)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(ApprovalAudit {
                            workflow: r.try_get("workflow")?,
                            period: r.try_get("period")?,
                            org_unit: r.try_get("org_unit")?,
                            attribute_option_combo: r.try_get("attribute_option_combo")?,
                            action: r.try_get("action")?,
                            by_user: r.try_get("by_user")?,
                            at: r.try_get("at")?,
                            comment: r.try_get("comment")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError::from)
            }

            async fn put_message(&self, m: &UserMessage) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO user_message (uid, recipient, sender, subject, text, context, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&m.uid)
                .bind(&m.recipient)
                .bind(&m.sender)
                .bind(&m.subject)
                .bind(&m.text)
                .bind(&m.context)
                .bind(m.created_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn messages_for(&self, recipient: &str, limit: i64) -> StoreResult<Vec<UserMessage>> {
                let rows = sqlx::query(
                    "SELECT uid, recipient, sender, subject, text, context, created_at, read_at
                     FROM user_message WHERE recipient = $1 ORDER BY created_at DESC, uid LIMIT $2",
                )
                .bind(recipient)
                .bind(limit)
                .fetch_all(&self.reader)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(UserMessage {
                            uid: r.try_get("uid")?,
                            recipient: r.try_get("recipient")?,
                            sender: r.try_get("sender")?,
                            subject: r.try_get("subject")?,
                            text: r.try_get("text")?,
                            context: r.try_get("context")?,
                            created_at: r.try_get("created_at")?,
                            read_at: r.try_get("read_at")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError::from)
            }
        }
    };
}

mod sqlite {
    use super::*;
    impl_approval_store!(SqliteStore, sqlx::Sqlite);
}

mod postgres {
    use super::*;
    impl_approval_store!(PgStore, sqlx::Postgres);
}
