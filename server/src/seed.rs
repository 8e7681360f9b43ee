//! Loading the demo country: its metadata through the ordinary import (so
//! the demo proves the importer), then its data values, completions and
//! events in batches, streamed from the generator without holding them all.

use std::collections::HashMap;

use hisa_shared::period::Period;
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use crate::demo::{generate, DemoCountry, DemoLogin, DemoOptions};
use crate::error::{ServerError, ServerResult};
use crate::metadata::import::ImportParams;
use crate::metadata::Snapshot;
use crate::state::Services;
use crate::store::{CompletionWrite, DataValueWrite, EventWrite, PeriodRow};

const BATCH: usize = 5_000;

#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub logins: Vec<DemoLogin>,
    pub data_values: u64,
    pub completions: u64,
    pub events: u64,
}

/// Seed the demo country, unless org units already exist (then `None`).
pub async fn seed_demo(
    svc: &Services,
    options: DemoOptions,
    progress: Option<ProgressBar>,
) -> ServerResult<Option<SeedReport>> {
    if svc.metadata.snapshot().await?.count_of("organisationUnits") > 0 {
        return Ok(None);
    }
    let mut country = tokio::task::spawn_blocking(move || generate(&options))
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let report = svc
        .metadata
        .import(
            std::mem::take(&mut country.metadata),
            ImportParams::default(),
        )
        .await?;
    if report.has_errors() {
        let first: Vec<String> = report.errors().take(5).map(|e| e.message.clone()).collect();
        return Err(ServerError::Internal(format!(
            "the demo metadata did not import: {}",
            first.join("; ")
        )));
    }
    let snap = svc.metadata.snapshot().await?;
    let country = std::sync::Arc::new(country);
    // The generator dates late reports up to weeks after their period; the
    // last months' reports would otherwise be stamped in the future.
    let now = time::OffsetDateTime::now_utc();
    let mut periods = PeriodIds::default();
    let mut out = SeedReport {
        logins: country.logins.clone(),
        ..SeedReport::default()
    };

    // Data values: the generator runs on a blocking thread and hands over batches.
    let (tx, mut rx) = mpsc::channel::<Vec<crate::demo::DemoDataValue>>(4);
    let gen = country.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(BATCH);
        gen.for_each_data_value(|v| {
            batch.push(v);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                let _ = tx.blocking_send(full);
            }
        });
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
    });
    while let Some(batch) = rx.recv().await {
        periods
            .ensure(svc, batch.iter().map(|v| v.period.as_str()))
            .await?;
        let mut rows = Vec::with_capacity(batch.len());
        for v in &batch {
            rows.push(DataValueWrite {
                data_element_id: id_of(&snap, &v.data_element)?,
                period_id: periods.get(&v.period)?,
                org_unit_id: id_of(&snap, &v.org_unit)?,
                category_option_combo_id: id_of(&snap, &v.category_option_combo)?,
                attribute_option_combo_id: id_of(&snap, &v.attribute_option_combo)?,
                value: Some(v.value.clone()),
                comment: v.comment.clone(),
                follow_up: false,
                stored_by: Some(v.stored_by.clone()),
                created: v.created.min(now),
                last_updated: v.created.min(now),
                deleted: false,
            });
        }
        svc.store.put_data_values(&rows).await?;
        out.data_values += rows.len() as u64;
        if let Some(p) = &progress {
            p.inc(rows.len() as u64);
        }
    }
    producer
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?;

    out.completions = seed_completions(svc, &snap, &country, &mut periods, now).await?;
    out.events = seed_events(svc, &snap, &country, now).await?;
    Ok(Some(out))
}

async fn seed_completions(
    svc: &Services,
    snap: &Snapshot,
    country: &DemoCountry,
    periods: &mut PeriodIds,
    now: time::OffsetDateTime,
) -> ServerResult<u64> {
    let mut all = Vec::new();
    country.for_each_completion(|c| all.push(c));
    periods
        .ensure(svc, all.iter().map(|c| c.period.as_str()))
        .await?;
    let mut rows = Vec::with_capacity(all.len());
    for c in &all {
        rows.push(CompletionWrite {
            data_set_id: id_of(snap, &c.data_set)?,
            period_id: periods.get(&c.period)?,
            org_unit_id: id_of(snap, &c.org_unit)?,
            attribute_option_combo_id: id_of(snap, &c.attribute_option_combo)?,
            completed_by: Some(c.completed_by.clone()),
            completed_at: c.completed_at.min(now),
        });
    }
    for chunk in rows.chunks(BATCH) {
        svc.store.put_completions(chunk).await?;
    }
    Ok(rows.len() as u64)
}

async fn seed_events(
    svc: &Services,
    snap: &Snapshot,
    country: &DemoCountry,
    now: time::OffsetDateTime,
) -> ServerResult<u64> {
    let mut all = Vec::new();
    country.for_each_event(|e| all.push(e));
    let default_aoc = id_of(snap, hisa_shared::metadata::defaults::CATEGORY_OPTION_COMBO)?;
    let mut rows = Vec::with_capacity(all.len());
    for e in &all {
        let values: Vec<serde_json::Value> = e
            .values
            .iter()
            .map(|(de, v)| serde_json::json!({"dataElement": de, "value": v}))
            .collect();
        rows.push(EventWrite {
            uid: e.uid.clone(),
            program_id: id_of(snap, &e.program)?,
            program_stage_id: id_of(snap, &e.program_stage)?,
            org_unit_id: id_of(snap, &e.org_unit)?,
            attribute_option_combo_id: default_aoc,
            occurred_at: e.occurred_at,
            status: "COMPLETED".into(),
            stored_by: Some(e.stored_by.clone()),
            data_values: serde_json::Value::Array(values),
            created: e.created.min(now),
            last_updated: e.created.min(now),
        });
    }
    for chunk in rows.chunks(BATCH) {
        svc.store.put_events(chunk).await?;
    }
    Ok(rows.len() as u64)
}

fn id_of(snap: &Snapshot, uid: &str) -> ServerResult<i64> {
    snap.get(uid)
        .map(|o| o.id)
        .ok_or_else(|| ServerError::Internal(format!("demo data refers to unknown object {uid}")))
}

/// Period ids, fetched from the store the first time each ISO string is seen.
#[derive(Default)]
struct PeriodIds {
    ids: HashMap<String, i64>,
}

impl PeriodIds {
    async fn ensure<'a>(
        &mut self,
        svc: &Services,
        isos: impl Iterator<Item = &'a str>,
    ) -> ServerResult<()> {
        let mut missing: Vec<PeriodRow> = Vec::new();
        for iso in isos {
            if self.ids.contains_key(iso) || missing.iter().any(|p| p.iso == iso) {
                continue;
            }
            let p = Period::parse(iso)
                .map_err(|e| ServerError::Internal(format!("demo period {iso}: {e}")))?;
            missing.push(PeriodRow::of(&p));
        }
        if !missing.is_empty() {
            for (iso, id) in svc.store.ensure_periods(&missing).await? {
                self.ids.insert(iso, id);
            }
        }
        Ok(())
    }

    fn get(&self, iso: &str) -> ServerResult<i64> {
        self.ids
            .get(iso)
            .copied()
            .ok_or_else(|| ServerError::Internal(format!("period {iso} was not stored")))
    }
}
