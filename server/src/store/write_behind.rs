//! A [`DataTx`] that holds its writes in memory until commit.
//!
//! Device uploads write many small forms. Written one by one, each form
//! cost a dozen statements and a savepoint: on SQLite every statement is a
//! hand-off to the connection's thread and every savepoint journals the
//! pages it touches again, so one writer spent most of its time waiting on
//! itself. Here reads go to the database (answered over what is held), the
//! writes of many forms wait in memory, savepoints are marks in those
//! buffers, and commit sends each kind of row in one multi-row statement.
//!
//! Invariants:
//! - A read sees every write held before it, as the database would.
//! - A submission id is recorded once per transaction; one stored before
//!   is not recorded again unless it is a dead request's claim. Should
//!   another transaction record an id after it was read here (possible on
//!   PostgreSQL), commit fails with [`StoreError::Conflict`] and nothing is
//!   written: the caller writes again the slow way, where that id is seen.
//! - Period ids learnt here are shared only once the transaction commits:
//!   a period row inserted by a transaction that rolls back never existed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    AuditWrite, Claim, CompletionAudit, CompletionRow, CompletionWrite, DataTx, DataValueWrite,
    PeriodRow, RecordedSubmission, StoreError, StoreResult, StoredClaim, StoredValue,
    SubmissionClaim, ValueKey,
};

/// Period ids by ISO string, shared by the transactions of one writer.
/// Period rows are never deleted, so a committed id stays true.
#[derive(Clone, Default)]
pub struct PeriodIds(Arc<Mutex<HashMap<String, i64>>>);

impl PeriodIds {
    fn get(&self, iso: &str) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(iso)
            .copied()
    }

    fn learn(&self, ids: impl IntoIterator<Item = (String, i64)>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(ids);
    }
}

/// A device's contact, as [`DataTx::touch_device`] takes it.
struct Touch {
    uid: String,
    at: i64,
    app_version: Option<String>,
    pending: Option<i64>,
    clock_skew_ms: Option<i64>,
}

/// A submission held for recording; `takeover` when it replaces a dead
/// request's claim (then `stale_before` is what made it dead).
struct Recorded {
    row: RecordedSubmission,
    takeover: Option<i64>,
}

/// How long each buffer was when a savepoint opened.
#[derive(Clone, Copy)]
struct Lengths {
    values: usize,
    audits: usize,
    completions: usize,
    completion_audits: usize,
    recorded: usize,
    touches: usize,
}

pub struct WriteBehindTx {
    inner: Box<dyn DataTx>,
    periods: PeriodIds,
    /// Period ids seen in this transaction, both ways.
    period_ids: HashMap<String, i64>,
    period_isos: HashMap<i64, String>,
    values: Vec<DataValueWrite>,
    /// The latest held write of each key.
    value_at: HashMap<ValueKey, usize>,
    audits: Vec<AuditWrite>,
    completions: Vec<(CompletionWrite, bool)>,
    completion_audits: Vec<CompletionAudit>,
    /// Stored rows of ids asked about; `None`: no row.
    known: HashMap<String, Option<StoredClaim>>,
    recorded: Vec<Recorded>,
    recorded_at: HashMap<String, usize>,
    touches: Vec<Touch>,
    marks: Vec<(&'static str, Lengths)>,
    /// Stored rows of keys read ahead ([`WriteBehindTx::read_values`]);
    /// a key asked about and absent has no entry in `stored`.
    read_ahead: std::collections::HashSet<ValueKey>,
    stored: HashMap<ValueKey, StoredValue>,
}

impl WriteBehindTx {
    pub fn new(inner: Box<dyn DataTx>, periods: PeriodIds) -> WriteBehindTx {
        WriteBehindTx {
            inner,
            periods,
            period_ids: HashMap::new(),
            period_isos: HashMap::new(),
            values: Vec::new(),
            value_at: HashMap::new(),
            audits: Vec::new(),
            completions: Vec::new(),
            completion_audits: Vec::new(),
            known: HashMap::new(),
            recorded: Vec::new(),
            recorded_at: HashMap::new(),
            touches: Vec::new(),
            marks: Vec::new(),
            read_ahead: std::collections::HashSet::new(),
            stored: HashMap::new(),
        }
    }

    /// Read the stored rows of these submission ids in one statement, so
    /// that recording them asks nothing more of the database.
    pub async fn read_claims(&mut self, ids: &[String]) -> StoreResult<()> {
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !self.known.contains_key(*id))
            .cloned()
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let stored = self.inner.claims(&unknown).await?;
        for id in unknown {
            self.known.insert(id, None);
        }
        for claim in stored {
            self.known.insert(claim.id.clone(), Some(claim));
        }
        Ok(())
    }

    /// Read the stored rows of these keys (periods not yet resolved, as
    /// [`crate::sms::PreparedForm::value_keys`] gives them) in as few
    /// statements as the database allows: the forms of a group then read
    /// their values from memory.
    pub async fn read_values(&mut self, keys: Vec<(ValueKey, PeriodRow)>) -> StoreResult<()> {
        let mut periods: Vec<PeriodRow> = Vec::new();
        for (_, p) in &keys {
            if !self.period_ids.contains_key(&p.iso) && !periods.iter().any(|q| q.iso == p.iso) {
                periods.push(p.clone());
            }
        }
        if !periods.is_empty() {
            self.ensure_periods(&periods).await?;
        }
        let mut resolved = Vec::with_capacity(keys.len());
        for (mut key, p) in keys {
            if let Some(&id) = self.period_ids.get(&p.iso) {
                key.period_id = id;
                if !self.read_ahead.contains(&key) {
                    resolved.push(key);
                }
            }
        }
        if resolved.is_empty() {
            return Ok(());
        }
        // In key order: PostgreSQL locks the rows it reads, and groups
        // committing at once should take shared rows in the same order.
        resolved.sort_unstable();
        resolved.dedup();
        for v in self.inner.existing_values(&resolved).await? {
            self.stored.insert(v.key, v);
        }
        self.read_ahead.extend(resolved);
        Ok(())
    }

    fn lengths(&self) -> Lengths {
        Lengths {
            values: self.values.len(),
            audits: self.audits.len(),
            completions: self.completions.len(),
            completion_audits: self.completion_audits.len(),
            recorded: self.recorded.len(),
            touches: self.touches.len(),
        }
    }

    fn mark(&self, name: &'static str) -> StoreResult<usize> {
        self.marks
            .iter()
            .rposition(|(n, _)| *n == name)
            .ok_or_else(|| StoreError::Corrupt(format!("no savepoint {name} is open")))
    }

    fn truncate(&mut self, to: Lengths) {
        self.values.truncate(to.values);
        self.audits.truncate(to.audits);
        self.completions.truncate(to.completions);
        self.completion_audits.truncate(to.completion_audits);
        self.recorded.truncate(to.recorded);
        self.touches.truncate(to.touches);
        // Undoing is rare (a repeated id): rebuilding the indexes is simpler
        // than undoing them.
        self.value_at = index_values(&self.values);
        self.recorded_at = self
            .recorded
            .iter()
            .enumerate()
            .map(|(i, r)| (r.row.claim.id.clone(), i))
            .collect();
    }

    fn held_value(&self, key: &ValueKey) -> Option<StoredValue> {
        let w = &self.values[*self.value_at.get(key)?];
        Some(StoredValue {
            key: *key,
            period_iso: self
                .period_isos
                .get(&w.period_id)
                .cloned()
                .unwrap_or_default(),
            value: w.value.clone(),
            comment: w.comment.clone(),
            follow_up: w.follow_up,
            stored_by: w.stored_by.clone(),
            created: w.created,
            last_updated: w.last_updated,
            deleted: w.deleted,
        })
    }

    async fn stored_claim(&mut self, id: &str) -> StoreResult<Option<StoredClaim>> {
        if !self.known.contains_key(id) {
            self.read_claims(&[id.to_string()]).await?;
        }
        Ok(self.known.get(id).cloned().flatten())
    }

    /// Send what is held, oldest kind of dependency first: claims (so that
    /// on PostgreSQL a concurrent request for the same id is met before
    /// anything else is written), values, audits, completions, touches.
    async fn flush(&mut self) -> StoreResult<()> {
        let (fresh, takeovers): (Vec<&Recorded>, Vec<&Recorded>) =
            self.recorded.iter().partition(|r| r.takeover.is_none());
        // Every kind of row is written in key order: two groups committing
        // at once (PostgreSQL's writer lanes, other instances) then lock
        // shared rows in the same order and wait for each other instead of
        // deadlocking.
        let mut fresh: Vec<RecordedSubmission> = fresh.into_iter().map(|r| r.row.clone()).collect();
        fresh.sort_by(|a, b| a.claim.id.cmp(&b.claim.id));
        if !fresh.is_empty()
            && self.inner.record_new_submissions(&fresh).await? < fresh.len() as u64
        {
            return Err(StoreError::Conflict(
                "a submission id was recorded by another request meanwhile".into(),
            ));
        }
        for r in takeovers {
            let taken = self
                .inner
                .record_submission(
                    &r.row.claim,
                    &r.row.status,
                    &r.row.result,
                    r.takeover.unwrap_or(i64::MIN),
                )
                .await?;
            if !taken {
                return Err(StoreError::Conflict(format!(
                    "submission {} was taken over by another request meanwhile",
                    r.row.claim.id
                )));
            }
        }
        if !self.values.is_empty() {
            // One statement may touch a row once: the last write of a key wins.
            let last = index_values(&self.values);
            let mut writes: Vec<DataValueWrite> = self
                .values
                .iter()
                .enumerate()
                .filter(|(i, w)| last.get(&w.key()) == Some(i))
                .map(|(_, w)| w.clone())
                .collect();
            writes.sort_by_key(DataValueWrite::key);
            self.inner.put_values(&writes).await?;
        }
        if !self.audits.is_empty() {
            self.inner.put_audits(&self.audits).await?;
        }
        if !self.completions.is_empty() {
            let mut last: HashMap<(i64, i64, i64, i64), usize> = HashMap::new();
            for (i, (c, _)) in self.completions.iter().enumerate() {
                last.insert(completion_key(c), i);
            }
            let mut rows: Vec<(CompletionWrite, bool)> = self
                .completions
                .iter()
                .enumerate()
                .filter(|(i, (c, _))| last.get(&completion_key(c)) == Some(i))
                .map(|(_, row)| row.clone())
                .collect();
            rows.sort_by_key(|(c, _)| completion_key(c));
            self.inner.put_completions(&rows).await?;
        }
        if !self.completion_audits.is_empty() {
            self.inner
                .audit_completions(&self.completion_audits)
                .await?;
        }
        // Touches of one device fold into one, as the statements would
        // have left the row: the latest time, each field's latest value.
        let mut touches: Vec<Touch> = Vec::new();
        for t in &self.touches {
            match touches.iter_mut().find(|m| m.uid == t.uid) {
                Some(m) => {
                    m.at = t.at;
                    m.app_version = t.app_version.clone().or(m.app_version.take());
                    m.pending = t.pending.or(m.pending);
                    m.clock_skew_ms = t.clock_skew_ms.or(m.clock_skew_ms);
                }
                None => touches.push(Touch {
                    uid: t.uid.clone(),
                    at: t.at,
                    app_version: t.app_version.clone(),
                    pending: t.pending,
                    clock_skew_ms: t.clock_skew_ms,
                }),
            }
        }
        touches.sort_by(|a, b| a.uid.cmp(&b.uid));
        for t in &touches {
            self.inner
                .touch_device(
                    &t.uid,
                    t.at,
                    t.app_version.as_deref(),
                    t.pending,
                    t.clock_skew_ms,
                )
                .await?;
        }
        Ok(())
    }
}

fn index_values(values: &[DataValueWrite]) -> HashMap<ValueKey, usize> {
    values
        .iter()
        .enumerate()
        .map(|(i, w)| (w.key(), i))
        .collect()
}

fn completion_key(c: &CompletionWrite) -> (i64, i64, i64, i64) {
    (
        c.data_set_id,
        c.period_id,
        c.org_unit_id,
        c.attribute_option_combo_id,
    )
}

#[async_trait]
impl DataTx for WriteBehindTx {
    async fn existing_values(&mut self, keys: &[ValueKey]) -> StoreResult<Vec<StoredValue>> {
        let unread: Vec<ValueKey> = keys
            .iter()
            .filter(|k| !self.read_ahead.contains(k))
            .copied()
            .collect();
        let mut out = if unread.is_empty() {
            Vec::new()
        } else {
            self.inner.existing_values(&unread).await?
        };
        out.retain(|v| !self.value_at.contains_key(&v.key));
        for k in keys {
            if let Some(held) = self.held_value(k) {
                out.push(held);
            } else if let Some(v) = self.stored.get(k) {
                out.push(v.clone());
            }
        }
        Ok(out)
    }

    async fn put_values(&mut self, values: &[DataValueWrite]) -> StoreResult<()> {
        for w in values {
            self.value_at.insert(w.key(), self.values.len());
            self.values.push(w.clone());
        }
        Ok(())
    }

    async fn ensure_periods(&mut self, periods: &[PeriodRow]) -> StoreResult<Vec<(String, i64)>> {
        let mut out = Vec::with_capacity(periods.len());
        let mut missing = Vec::new();
        for p in periods {
            match self
                .period_ids
                .get(&p.iso)
                .copied()
                .or_else(|| self.periods.get(&p.iso))
            {
                Some(id) => out.push((p.iso.clone(), id)),
                None => missing.push(p.clone()),
            }
        }
        if !missing.is_empty() {
            out.extend(self.inner.ensure_periods(&missing).await?);
        }
        for (iso, id) in &out {
            self.period_ids.insert(iso.clone(), *id);
            self.period_isos.insert(*id, iso.clone());
        }
        Ok(out)
    }

    async fn put_audits(&mut self, audits: &[AuditWrite]) -> StoreResult<()> {
        self.audits.extend_from_slice(audits);
        Ok(())
    }

    async fn completion(
        &mut self,
        data_set_id: i64,
        period_id: i64,
        org_unit_id: i64,
        attribute_option_combo_id: i64,
    ) -> StoreResult<Option<CompletionRow>> {
        let key = (
            data_set_id,
            period_id,
            org_unit_id,
            attribute_option_combo_id,
        );
        if let Some((c, completed)) = self
            .completions
            .iter()
            .rev()
            .find(|(c, _)| completion_key(c) == key)
        {
            return Ok(Some(CompletionRow {
                data_set_id,
                period_iso: self
                    .period_isos
                    .get(&period_id)
                    .cloned()
                    .unwrap_or_default(),
                org_unit_id,
                attribute_option_combo_id,
                completed: *completed,
                completed_by: c.completed_by.clone(),
                completed_at: c.completed_at,
                last_updated: OffsetDateTime::now_utc(),
            }));
        }
        self.inner
            .completion(
                data_set_id,
                period_id,
                org_unit_id,
                attribute_option_combo_id,
            )
            .await
    }

    async fn put_completion(&mut self, c: &CompletionWrite, completed: bool) -> StoreResult<()> {
        self.completions.push((c.clone(), completed));
        Ok(())
    }

    async fn audit_completion(
        &mut self,
        c: &CompletionWrite,
        audit_type: &str,
        channel: &str,
        device: Option<&str>,
    ) -> StoreResult<()> {
        self.completion_audits.push(CompletionAudit {
            completion: c.clone(),
            audit_type: audit_type.to_string(),
            channel: channel.to_string(),
            device: device.map(str::to_string),
        });
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        self.flush().await?;
        let WriteBehindTx {
            inner,
            periods,
            period_ids,
            ..
        } = *self;
        inner.commit().await?;
        periods.learn(period_ids);
        Ok(())
    }

    async fn savepoint(&mut self, name: &'static str) -> StoreResult<()> {
        self.marks.push((name, self.lengths()));
        Ok(())
    }

    async fn rollback_to(&mut self, name: &'static str) -> StoreResult<()> {
        let at = self.mark(name)?;
        let lengths = self.marks[at].1;
        self.marks.truncate(at);
        self.truncate(lengths);
        Ok(())
    }

    async fn release(&mut self, name: &'static str) -> StoreResult<()> {
        let at = self.mark(name)?;
        self.marks.truncate(at);
        Ok(())
    }

    async fn record_submission(
        &mut self,
        claim: &SubmissionClaim,
        status: &str,
        result: &str,
        stale_before: i64,
    ) -> StoreResult<bool> {
        if self.recorded_at.contains_key(&claim.id) {
            return Ok(false);
        }
        let takeover = match self.stored_claim(&claim.id).await? {
            None => None,
            Some(c) if c.status == "IN_PROGRESS" && c.updated_at < stale_before => {
                Some(stale_before)
            }
            Some(_) => return Ok(false),
        };
        self.recorded_at
            .insert(claim.id.clone(), self.recorded.len());
        self.recorded.push(Recorded {
            row: RecordedSubmission {
                claim: claim.clone(),
                status: status.to_string(),
                result: result.to_string(),
            },
            takeover,
        });
        Ok(true)
    }

    async fn submission(&mut self, id: &str) -> StoreResult<Option<Claim>> {
        if let Some(&i) = self.recorded_at.get(id) {
            let r = &self.recorded[i].row;
            return Ok(Some(Claim::Existing {
                status: r.status.clone(),
                result: Some(r.result.clone()),
                received_at: r.claim.received_at,
            }));
        }
        Ok(self.stored_claim(id).await?.map(|c| Claim::Existing {
            status: c.status,
            result: c.result,
            received_at: c.received_at,
        }))
    }

    async fn claims(&mut self, ids: &[String]) -> StoreResult<Vec<StoredClaim>> {
        self.read_claims(ids).await?;
        let now = crate::sync::now_ms();
        Ok(ids
            .iter()
            .filter_map(|id| match self.recorded_at.get(id) {
                Some(&i) => {
                    let r = &self.recorded[i].row;
                    Some(StoredClaim {
                        id: id.clone(),
                        status: r.status.clone(),
                        result: Some(r.result.clone()),
                        received_at: r.claim.received_at,
                        updated_at: now,
                    })
                }
                None => self.known.get(id).cloned().flatten(),
            })
            .collect())
    }

    async fn record_new_submissions(&mut self, rows: &[RecordedSubmission]) -> StoreResult<u64> {
        let mut recorded = 0;
        for r in rows {
            if self
                .record_submission(&r.claim, &r.status, &r.result, i64::MIN)
                .await?
            {
                recorded += 1;
            }
        }
        Ok(recorded)
    }

    async fn put_completions(&mut self, rows: &[(CompletionWrite, bool)]) -> StoreResult<()> {
        self.completions.extend_from_slice(rows);
        Ok(())
    }

    async fn audit_completions(&mut self, rows: &[CompletionAudit]) -> StoreResult<()> {
        self.completion_audits.extend_from_slice(rows);
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
        self.touches.push(Touch {
            uid: uid.to_string(),
            at,
            app_version: app_version.map(str::to_string),
            pending,
            clock_skew_ms,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in memory that logs each statement the wrapper sends.
    #[derive(Default)]
    struct Db {
        values: HashMap<ValueKey, StoredValue>,
        claims: HashMap<String, StoredClaim>,
        /// Fewer new submissions recorded than asked: another request won.
        lose_claims: bool,
        log: Vec<String>,
    }

    struct FakeTx(Arc<Mutex<Db>>);

    impl FakeTx {
        fn db(&self) -> std::sync::MutexGuard<'_, Db> {
            self.0.lock().unwrap()
        }
    }

    #[async_trait]
    impl DataTx for FakeTx {
        async fn existing_values(&mut self, keys: &[ValueKey]) -> StoreResult<Vec<StoredValue>> {
            let mut db = self.db();
            db.log.push(format!("existing_values {}", keys.len()));
            Ok(keys
                .iter()
                .filter_map(|k| db.values.get(k).cloned())
                .collect())
        }
        async fn put_values(&mut self, values: &[DataValueWrite]) -> StoreResult<()> {
            let mut db = self.db();
            db.log.push(format!("put_values {}", values.len()));
            for w in values {
                let v = StoredValue {
                    key: w.key(),
                    period_iso: String::new(),
                    value: w.value.clone(),
                    comment: w.comment.clone(),
                    follow_up: w.follow_up,
                    stored_by: w.stored_by.clone(),
                    created: w.created,
                    last_updated: w.last_updated,
                    deleted: w.deleted,
                };
                db.values.insert(v.key, v);
            }
            Ok(())
        }
        async fn ensure_periods(
            &mut self,
            periods: &[PeriodRow],
        ) -> StoreResult<Vec<(String, i64)>> {
            self.db()
                .log
                .push(format!("ensure_periods {}", periods.len()));
            Ok(periods.iter().map(|p| (p.iso.clone(), 7)).collect())
        }
        async fn put_audits(&mut self, audits: &[AuditWrite]) -> StoreResult<()> {
            self.db().log.push(format!("put_audits {}", audits.len()));
            Ok(())
        }
        async fn completion(
            &mut self,
            _: i64,
            _: i64,
            _: i64,
            _: i64,
        ) -> StoreResult<Option<CompletionRow>> {
            self.db().log.push("completion".into());
            Ok(None)
        }
        async fn put_completion(&mut self, _: &CompletionWrite, _: bool) -> StoreResult<()> {
            self.db().log.push("put_completion".into());
            Ok(())
        }
        async fn audit_completion(
            &mut self,
            _: &CompletionWrite,
            _: &str,
            _: &str,
            _: Option<&str>,
        ) -> StoreResult<()> {
            self.db().log.push("audit_completion".into());
            Ok(())
        }
        async fn commit(self: Box<Self>) -> StoreResult<()> {
            self.db().log.push("commit".into());
            Ok(())
        }
        async fn savepoint(&mut self, _: &'static str) -> StoreResult<()> {
            self.db().log.push("savepoint".into());
            Ok(())
        }
        async fn rollback_to(&mut self, _: &'static str) -> StoreResult<()> {
            self.db().log.push("rollback_to".into());
            Ok(())
        }
        async fn release(&mut self, _: &'static str) -> StoreResult<()> {
            self.db().log.push("release".into());
            Ok(())
        }
        async fn record_submission(
            &mut self,
            c: &SubmissionClaim,
            _: &str,
            _: &str,
            _: i64,
        ) -> StoreResult<bool> {
            self.db().log.push(format!("record_submission {}", c.id));
            Ok(true)
        }
        async fn submission(&mut self, id: &str) -> StoreResult<Option<Claim>> {
            self.db().log.push(format!("submission {id}"));
            Ok(None)
        }
        async fn claims(&mut self, ids: &[String]) -> StoreResult<Vec<StoredClaim>> {
            let mut db = self.db();
            db.log.push(format!("claims {}", ids.len()));
            Ok(ids
                .iter()
                .filter_map(|i| db.claims.get(i).cloned())
                .collect())
        }
        async fn record_new_submissions(
            &mut self,
            rows: &[RecordedSubmission],
        ) -> StoreResult<u64> {
            let mut db = self.db();
            db.log
                .push(format!("record_new_submissions {}", rows.len()));
            let lost = u64::from(db.lose_claims);
            Ok(rows.len() as u64 - lost)
        }
        async fn put_completions(&mut self, rows: &[(CompletionWrite, bool)]) -> StoreResult<()> {
            self.db()
                .log
                .push(format!("put_completions {}", rows.len()));
            Ok(())
        }
        async fn audit_completions(&mut self, rows: &[CompletionAudit]) -> StoreResult<()> {
            self.db()
                .log
                .push(format!("audit_completions {}", rows.len()));
            Ok(())
        }
        async fn touch_device(
            &mut self,
            uid: &str,
            at: i64,
            app_version: Option<&str>,
            pending: Option<i64>,
            skew: Option<i64>,
        ) -> StoreResult<()> {
            self.db().log.push(format!(
                "touch_device {uid} {at} {app_version:?} {pending:?} {skew:?}"
            ));
            Ok(())
        }
    }

    fn key(element: i64) -> ValueKey {
        ValueKey {
            org_unit_id: 1,
            period_id: 7,
            data_element_id: element,
            category_option_combo_id: 2,
            attribute_option_combo_id: 2,
        }
    }

    fn write(element: i64, value: &str) -> DataValueWrite {
        let k = key(element);
        DataValueWrite {
            data_element_id: k.data_element_id,
            period_id: k.period_id,
            org_unit_id: k.org_unit_id,
            category_option_combo_id: k.category_option_combo_id,
            attribute_option_combo_id: k.attribute_option_combo_id,
            value: Some(value.into()),
            comment: None,
            follow_up: false,
            stored_by: Some("chw".into()),
            created: OffsetDateTime::UNIX_EPOCH,
            last_updated: OffsetDateTime::UNIX_EPOCH,
            deleted: false,
        }
    }

    fn claim(id: &str) -> SubmissionClaim {
        SubmissionClaim {
            id: id.into(),
            device: "dev".into(),
            user: "usr".into(),
            kind: "form".into(),
            received_at: 1,
            device_time: None,
            captured_at: None,
            future_dated: false,
        }
    }

    fn held(db: &Arc<Mutex<Db>>) -> WriteBehindTx {
        WriteBehindTx::new(Box::new(FakeTx(db.clone())), PeriodIds::default())
    }

    fn value_of(values: &[StoredValue], element: i64) -> Option<String> {
        values
            .iter()
            .find(|v| v.key.data_element_id == element)
            .and_then(|v| v.value.clone())
    }

    #[tokio::test]
    async fn reads_see_held_writes_and_nothing_is_sent_before_commit() {
        let db = Arc::new(Mutex::new(Db::default()));
        db.lock().unwrap().values.insert(
            key(1),
            StoredValue {
                key: key(1),
                period_iso: "202610".into(),
                value: Some("stored".into()),
                comment: None,
                follow_up: false,
                stored_by: None,
                created: OffsetDateTime::UNIX_EPOCH,
                last_updated: OffsetDateTime::UNIX_EPOCH,
                deleted: false,
            },
        );
        let mut tx = held(&db);
        tx.put_values(&[write(1, "a"), write(2, "b")])
            .await
            .unwrap();
        tx.put_values(&[write(1, "c")]).await.unwrap();
        let read = tx.existing_values(&[key(1), key(2), key(3)]).await.unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(value_of(&read, 1).as_deref(), Some("c"));
        assert_eq!(value_of(&read, 2).as_deref(), Some("b"));
        assert!(!db
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.starts_with("put_values")));
        Box::new(tx).commit().await.unwrap();
        let db = db.lock().unwrap();
        // The last write of a key only, in one statement, then the commit.
        assert!(db.log.contains(&"put_values 2".to_string()), "{:?}", db.log);
        assert_eq!(db.values[&key(1)].value.as_deref(), Some("c"));
        assert_eq!(db.log.last().map(String::as_str), Some("commit"));
    }

    #[tokio::test]
    async fn a_rollback_forgets_the_writes_after_its_savepoint_only() {
        let db = Arc::new(Mutex::new(Db::default()));
        let mut tx = held(&db);
        tx.put_values(&[write(1, "kept")]).await.unwrap();
        tx.savepoint("outer").await.unwrap();
        tx.put_values(&[write(1, "undone"), write(2, "undone")])
            .await
            .unwrap();
        assert!(tx
            .record_submission(&claim("sub-1"), "OK", "{}", 0)
            .await
            .unwrap());
        tx.rollback_to("outer").await.unwrap();
        let read = tx.existing_values(&[key(1), key(2)]).await.unwrap();
        assert_eq!(value_of(&read, 1).as_deref(), Some("kept"));
        assert_eq!(value_of(&read, 2), None);
        // The id is free again, and an unknown savepoint is an error.
        assert!(tx
            .record_submission(&claim("sub-1"), "OK", "{}", 0)
            .await
            .unwrap());
        assert!(tx.release("outer").await.is_err());
        Box::new(tx).commit().await.unwrap();
        let db = db.lock().unwrap();
        assert!(db.log.contains(&"put_values 1".to_string()), "{:?}", db.log);
        assert!(db.log.contains(&"record_new_submissions 1".to_string()));
        assert!(!db
            .log
            .iter()
            .any(|l| l == "savepoint" || l == "rollback_to"));
    }

    #[tokio::test]
    async fn repeated_ids_are_refused_and_dead_claims_taken_over() {
        let db = Arc::new(Mutex::new(Db::default()));
        for (id, status, updated_at) in [
            ("done", "ACCEPTED", 5),
            ("dead", "IN_PROGRESS", 5),
            ("busy", "IN_PROGRESS", 50),
        ] {
            db.lock().unwrap().claims.insert(
                id.into(),
                StoredClaim {
                    id: id.into(),
                    status: status.into(),
                    result: None,
                    received_at: 1,
                    updated_at,
                },
            );
        }
        let mut tx = held(&db);
        let ids: Vec<String> = ["done", "dead", "busy", "new"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        tx.read_claims(&ids).await.unwrap();
        let stale_before = 10;
        // Stored and done, a dead request's, a live request's, new, new again.
        for (id, result, recorded) in [
            ("done", "{}", false),
            ("dead", "{}", true),
            ("busy", "{}", false),
            ("new", "{\"n\":1}", true),
            ("new", "{}", false),
        ] {
            let got = tx
                .record_submission(&claim(id), "OK", result, stale_before)
                .await
                .unwrap();
            assert_eq!(got, recorded, "{id}");
        }
        match tx.submission("new").await.unwrap() {
            Some(Claim::Existing { result, .. }) => {
                assert_eq!(result.as_deref(), Some("{\"n\":1}"))
            }
            other => panic!("{other:?}"),
        }
        Box::new(tx).commit().await.unwrap();
        let db = db.lock().unwrap();
        // One read for all ids, one insert for the new, the takeover alone.
        let statements: Vec<&str> = db.log.iter().map(String::as_str).collect();
        assert_eq!(
            statements,
            [
                "claims 4",
                "record_new_submissions 1",
                "record_submission dead",
                "commit"
            ]
        );
    }

    #[tokio::test]
    async fn a_claim_lost_at_commit_writes_nothing() {
        let db = Arc::new(Mutex::new(Db {
            lose_claims: true,
            ..Db::default()
        }));
        let mut tx = held(&db);
        tx.put_values(&[write(1, "a")]).await.unwrap();
        assert!(tx
            .record_submission(&claim("raced"), "OK", "{}", 0)
            .await
            .unwrap());
        let err = Box::new(tx).commit().await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        let db = db.lock().unwrap();
        assert!(db.values.is_empty());
        assert!(!db.log.iter().any(|l| l == "commit"), "{:?}", db.log);
    }

    #[tokio::test]
    async fn values_read_ahead_answer_later_reads_from_memory() {
        let db = Arc::new(Mutex::new(Db::default()));
        let mut tx = held(&db);
        let period = PeriodRow::of(&hisa_shared::period::Period::parse("202610").unwrap());
        let unresolved = |element| {
            let mut k = key(element);
            k.period_id = 0;
            (k, period.clone())
        };
        tx.read_values(vec![unresolved(1), unresolved(2)])
            .await
            .unwrap();
        tx.put_values(&[write(2, "b")]).await.unwrap();
        let read = tx.existing_values(&[key(1), key(2)]).await.unwrap();
        assert_eq!(value_of(&read, 2).as_deref(), Some("b"));
        let read = tx.existing_values(&[key(3)]).await.unwrap();
        assert!(read.is_empty());
        let db = db.lock().unwrap();
        let statements: Vec<&str> = db.log.iter().map(String::as_str).collect();
        // Periods resolved once; key 3 was not read ahead, so it is asked.
        assert_eq!(
            statements,
            ["ensure_periods 1", "existing_values 2", "existing_values 1"]
        );
    }

    #[tokio::test]
    async fn touches_of_one_device_fold_into_one_statement() {
        let db = Arc::new(Mutex::new(Db::default()));
        let mut tx = held(&db);
        tx.touch_device("d1", 1, Some("1.0"), Some(5), None)
            .await
            .unwrap();
        tx.touch_device("d2", 2, None, None, None).await.unwrap();
        tx.touch_device("d1", 3, None, Some(2), Some(-40))
            .await
            .unwrap();
        Box::new(tx).commit().await.unwrap();
        let db = db.lock().unwrap();
        let statements: Vec<&str> = db.log.iter().map(String::as_str).collect();
        assert_eq!(
            statements,
            [
                "touch_device d1 3 Some(\"1.0\") Some(2) Some(-40)",
                "touch_device d2 2 None None None",
                "commit"
            ]
        );
    }
}
