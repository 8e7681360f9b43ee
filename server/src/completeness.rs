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
    // A unit is expected to report when assigned and open for any of the period.
    let expected: Vec<(&String, &crate::metadata::snapshot::TreeNode)> = ds
        .org_units
        .iter()
        .filter_map(|uid| snap.org_unit(uid).map(|n| (uid, n)))
        .filter(|(_, n)| {
            n.opening_date.is_none_or(|o| o <= period.end_date())
                && n.closed_date.is_none_or(|c| c >= period.start_date())
        })
        .collect();
    let deadline = period.end_date().midnight().assume_utc()
        + time::Duration::days(1)
        + time::Duration::seconds_f64(ds.timely_days.max(0.0) * 86_400.0);
    let period_ids = period_filter(&*svc.store, &[period.iso()]).await?;
    let unit_ids: Vec<i64> = expected.iter().map(|(_, n)| n.id).collect();
    let completions = if unit_ids.is_empty() {
        Vec::new()
    } else {
        svc.store
            .query_completions(&CompletionQuery {
                data_set_ids: vec![ds.id],
                period_ids,
                org_unit_ids: unit_ids,
                limit: 1_000_000,
                ..Default::default()
            })
            .await?
    };
    // A unit reports once, whatever its attribute option combos.
    let mut done: HashMap<i64, bool> = HashMap::new();
    for c in completions.iter().filter(|c| c.completed) {
        let on_time = c.completed_at <= deadline;
        let entry = done.entry(c.org_unit_id).or_insert(false);
        *entry |= on_time;
    }
    let mut out = Vec::with_capacity(roots.len());
    for root in roots {
        let node = snap.org_unit(root).ok_or_else(|| {
            ServerError::conflict(format!("Org unit `{root}` does not exist"), "E7603")
        })?;
        let prefix = format!("{}/", node.path);
        let mut r = ReportingRates::default();
        for (_, n) in expected
            .iter()
            .filter(|(_, n)| n.path == node.path || n.path.starts_with(&prefix))
        {
            r.expected_reports += 1;
            if let Some(on_time) = done.get(&n.id) {
                r.actual_reports += 1;
                if *on_time {
                    r.actual_reports_on_time += 1;
                }
            }
        }
        out.push((root.clone(), r.finish()));
    }
    Ok(out)
}
