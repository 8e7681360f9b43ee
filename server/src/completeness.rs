//! Completeness and timeliness of a data set's reports: how many reports
//! were expected from an org unit's subtree for a period, how many came,
//! how many on time. Expected reports follow the data set's assignment and
//! each unit's opening and closing dates; on time means completed within
//! `timelyDays` after the period ended. DHIS2's reporting-rate metrics
//! (`REPORTING_RATE`, `REPORTING_RATE_ON_TIME`, `ACTUAL_REPORTS`,
//! `ACTUAL_REPORTS_ON_TIME`, `EXPECTED_REPORTS`) are these numbers.

use std::collections::HashMap;

use hisa_shared::period::Period;
use serde::Serialize;

use crate::error::{ServerError, ServerResult};
use crate::metadata::Snapshot;
use crate::state::Services;
use crate::store::{period_filter, CompletionQuery};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportingRates {
    pub expected_reports: u64,
    pub actual_reports: u64,
    pub actual_reports_on_time: u64,
    /// Percent; `None` when no report was expected.
    pub reporting_rate: Option<f64>,
    pub reporting_rate_on_time: Option<f64>,
}

impl ReportingRates {
    fn finish(mut self) -> ReportingRates {
        let pct = |n: u64| {
            (self.expected_reports > 0).then(|| 100.0 * n as f64 / self.expected_reports as f64)
        };
        self.reporting_rate = pct(self.actual_reports);
        self.reporting_rate_on_time = pct(self.actual_reports_on_time);
        self
    }
}

/// Rates for `data_set` and `period` in the subtree of each of `roots`.
pub async fn rates(
    svc: &Services,
    snap: &Snapshot,
    data_set: &str,
    period: &Period,
    roots: &[String],
) -> ServerResult<Vec<(String, ReportingRates)>> {
    let index = snap.data_index();
    let ds = index.data_sets.get(data_set).ok_or_else(|| {
        ServerError::conflict(format!("Data set `{data_set}` does not exist"), "E7600")
    })?;
    if ds.period_type != Some(period.period_type()) {
        return Err(ServerError::conflict(
            format!(
                "Period `{}` is not of data set `{data_set}`'s period type",
                period.iso()
            ),
            "E7601",
        ));
    }
    let sets: Vec<Vec<String>> = roots.iter().map(|r| vec![r.clone()]).collect();
    for root in roots {
        if snap.org_unit(root).is_none() {
            return Err(ServerError::conflict(
                format!("Org unit `{root}` does not exist"),
                "E7603",
            ));
        }
    }
    let rates = rates_over(svc, snap, data_set, std::slice::from_ref(period), &sets).await?;
    Ok(roots.iter().cloned().zip(rates).collect())
}

/// Rates of `data_set` over several of its periods together (a quarter of a
/// monthly data set), for each set of subtrees: every (unit, period) pair
/// where the unit was assigned and open is one expected report.
pub async fn rates_over(
    svc: &Services,
    snap: &Snapshot,
    data_set: &str,
    periods: &[Period],
    root_sets: &[Vec<String>],
) -> ServerResult<Vec<ReportingRates>> {
    let index = snap.data_index();
    let Some(ds) = index.data_sets.get(data_set) else {
        return Ok(vec![ReportingRates::default().finish(); root_sets.len()]);
    };
    let isos: Vec<String> = periods.iter().map(Period::iso).collect();
    let period_ids = period_filter(&*svc.store, &isos).await?;
    let assigned: Vec<&crate::metadata::snapshot::TreeNode> = ds
        .org_units
        .iter()
        .filter_map(|uid| snap.org_unit(uid))
        .collect();
    let unit_ids: Vec<i64> = assigned.iter().map(|n| n.id).collect();
    let completions = if unit_ids.is_empty() || periods.is_empty() {
        Vec::new()
    } else {
        svc.store
            .query_completions(&CompletionQuery {
                data_set_ids: vec![ds.id],
                period_ids,
                org_unit_ids: unit_ids,
                limit: 10_000_000,
                ..Default::default()
            })
            .await?
    };
    // A unit reports once per period, whatever its attribute option combos.
    let deadline = |p: &Period| {
        p.end_date().midnight().assume_utc()
            + time::Duration::days(1)
            + time::Duration::seconds_f64(ds.timely_days.max(0.0) * 86_400.0)
    };
    let deadlines: HashMap<String, time::OffsetDateTime> =
        periods.iter().map(|p| (p.iso(), deadline(p))).collect();
    let mut done: HashMap<(i64, &str), bool> = HashMap::new();
    for c in completions.iter().filter(|c| c.completed) {
        let Some(due) = deadlines.get(&c.period_iso) else {
            continue;
        };
        let entry = done
            .entry((c.org_unit_id, c.period_iso.as_str()))
            .or_insert(false);
        *entry |= c.completed_at <= *due;
    }
    let mut out = Vec::with_capacity(root_sets.len());
    for roots in root_sets {
        let paths: Vec<&str> = roots
            .iter()
            .filter_map(|r| snap.org_unit(r).map(|n| n.path.as_str()))
            .collect();
        let mut r = ReportingRates::default();
        for n in assigned.iter().filter(|n| {
            paths
                .iter()
                .any(|p| crate::metadata::snapshot::is_path_within(&n.path, p))
        }) {
            for p in periods {
                // Expected when open for any of the period.
                let open = n.opening_date.is_none_or(|o| o <= p.end_date())
                    && n.closed_date.is_none_or(|c| c >= p.start_date());
                if !open {
                    continue;
                }
                r.expected_reports += 1;
                if let Some(on_time) = done.get(&(n.id, p.iso().as_str())) {
                    r.actual_reports += 1;
                    if *on_time {
                        r.actual_reports_on_time += 1;
                    }
                }
            }
        }
        out.push(r.finish());
    }
    Ok(out)
}
