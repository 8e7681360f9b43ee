//! Analytics: aggregates of live data along DHIS2's dimensions (`dx` data
//! elements, operands, indicators and reporting rates; `pe` periods; `ou`
//! org units; category dimensions), served as DHIS2's grid.
//!
//! Module map:
//! - [`cube`]: data values held in memory by element and period, kept current as writes commit.
//! - [`request`]: query parameters resolved into a [`request::Plan`], refusing what cannot be resolved.
//! - [`engine`]: aggregation of the plan's operands, indicators and reporting rates per cell.
//! - [`grid`]: the grid's headers, metaData and rows; JSON and CSV.
//!
//! There is no analytics table and no nightly rebuild: a value is in the
//! cube as soon as its transaction commits (on this instance) or at the
//! next poll (written by another instance on the same PostgreSQL).

pub mod cube;
pub mod engine;
pub mod grid;
pub mod request;

use crate::api::Params;
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::state::Services;

/// Cells a query may ask for before any data is read.
const CELL_LIMIT: usize = 2_000_000;

/// Runs an analytics query for `caller`.
pub async fn query(svc: &Services, caller: &Caller, params: &Params) -> ServerResult<grid::Grid> {
    let snap = svc.metadata.snapshot().await?;
    let (plan, outcome) = evaluate(svc, &snap, caller, params).await?;
    grid::build(&snap, &plan, &outcome)
}

/// The aggregates as a data value set (`/api/analytics/dataValueSet.json`):
/// `dx`, `pe` and `ou` must all be dimensions; an operand's option combos
/// fill `categoryOptionCombo` and `attributeOptionCombo`.
pub async fn data_value_set(
    svc: &Services,
    caller: &Caller,
    params: &Params,
) -> ServerResult<serde_json::Value> {
    let snap = svc.metadata.snapshot().await?;
    let (plan, outcome) = evaluate(svc, &snap, caller, params).await?;
    for (axis, name) in [
        (request::Axis::Dx, "dx"),
        (request::Axis::Pe, "pe"),
        (request::Axis::Ou, "ou"),
    ] {
        if !plan.axes.contains(&axis) {
            return Err(ServerError::conflict(
                format!("A data value set needs `{name}` as a dimension, not a filter"),
                "E7107",
            ));
        }
    }
    let mut cells: Vec<_> = outcome.values.iter().collect();
    cells.sort_by(|a, b| a.0.cmp(b.0));
    let values: Vec<serde_json::Value> = cells
        .into_iter()
        .map(|(&(di, pi, oi, _), v)| {
            let mut dv = serde_json::json!({
                "period": plan.pe[pi].id,
                "orgUnit": plan.ou[oi].id,
                "value": grid::format_value(*v, plan.skip_rounding),
            });
            match &plan.dx[di] {
                request::DxItem::Element {
                    element, coc, aoc, ..
                } => {
                    dv["dataElement"] = element.clone().into();
                    if let Some(c) = coc {
                        dv["categoryOptionCombo"] = c.clone().into();
                    }
                    if let Some(a) = aoc {
                        dv["attributeOptionCombo"] = a.clone().into();
                    }
                }
                other => dv["dataElement"] = other.id().into(),
            }
            dv
        })
        .collect();
    Ok(serde_json::json!({ "dataValues": values }))
}

async fn evaluate(
    svc: &Services,
    snap: &crate::metadata::Snapshot,
    caller: &Caller,
    params: &Params,
) -> ServerResult<(request::Plan, engine::Outcome)> {
    let today = time::OffsetDateTime::now_utc().date();
    let plan = request::plan(params, snap, caller, today)?;
    let cat_cells: usize = plan
        .axes
        .iter()
        .filter_map(|a| match a {
            request::Axis::Category(i) => Some(plan.categories[*i].items.len().max(1)),
            _ => None,
        })
        .product();
    let cells = plan
        .dx
        .len()
        .saturating_mul(plan.pe.len())
        .saturating_mul(plan.ou.len())
        .saturating_mul(cat_cells.max(1));
    if cells > CELL_LIMIT && !plan.ignore_limit {
        return Err(ServerError::conflict(
            format!("The query asks for {cells} cells, more than {CELL_LIMIT}; narrow it"),
            "E7128",
        ));
    }
    let outcome = if plan.skip_data {
        engine::Outcome::default()
    } else {
        engine::evaluate(svc, snap, &plan).await?
    };
    Ok((plan, outcome))
}
