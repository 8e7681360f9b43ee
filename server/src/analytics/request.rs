//! `GET /api/analytics` parameters, read into a [`Plan`]: every dimension
//! item resolved against the metadata, relative periods and org unit
//! keywords expanded, the caller's view checked. Anything that cannot be
//! resolved is refused here, naming the offending part, before any data is
//! read.

use std::collections::HashSet;

use hisa_shared::aggregation::{Span, Window};
use hisa_shared::expression::{self, ExprContext, ReportingMetric};
use hisa_shared::metadata::AggregationType;
use hisa_shared::period::{relative_periods, Period, PeriodType};
use serde_json::Value;
use time::Date;

use crate::api::Params;
use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::metadata::Snapshot;

/// A data item of the `dx` dimension.
#[derive(Debug, Clone, PartialEq)]
pub enum DxItem {
    /// A data element's total, or an operand narrowed to one category option
    /// combo and/or attribute option combo.
    Element {
        id: String,
        element: String,
        coc: Option<String>,
        aoc: Option<String>,
    },
    Indicator {
        id: String,
    },
    ReportingRate {
        id: String,
        data_set: String,
        metric: ReportingMetric,
    },
}

impl DxItem {
    pub fn id(&self) -> &str {
        match self {
            DxItem::Element { id, .. }
            | DxItem::Indicator { id }
            | DxItem::ReportingRate { id, .. } => id,
        }
    }
}

/// One item of the `pe` dimension (or all period filters, as one).
#[derive(Debug, Clone)]
pub struct PeItem {
    pub id: String,
    pub periods: Vec<Period>,
    pub window: Window,
}

/// One item of the `ou` dimension (or all org unit filters, as one): the
/// subtrees it aggregates.
#[derive(Debug, Clone)]
pub struct OuItem {
    pub id: String,
    pub roots: Vec<String>,
}

/// A category dimension (`co`, or a category's id): which option combos
/// each of its items takes.
#[derive(Debug, Clone)]
pub struct CategoryDim {
    pub id: String,
    pub name: String,
    /// Item id → the option combos it takes.
    pub items: Vec<(String, HashSet<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Dx,
    Pe,
    Ou,
    Category(usize),
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Row dimensions, in the order asked.
    pub axes: Vec<Axis>,
    pub dx: Vec<DxItem>,
    pub pe: Vec<PeItem>,
    pub ou: Vec<OuItem>,
    /// Category dimensions and filters; those in `axes` split rows, the
    /// others only restrict.
    pub categories: Vec<CategoryDim>,
    pub dimension_items: Vec<(String, Vec<String>)>,
    pub aggregation_type: Option<AggregationType>,
    pub measure_criteria: Vec<(String, f64)>,
    pub skip_meta: bool,
    pub skip_data: bool,
    pub skip_rounding: bool,
    pub include_num_den: bool,
    pub short_names: bool,
    pub ignore_limit: bool,
    /// How items are named in rows and metaData: `UID` (default), `CODE`, `NAME`.
    pub output_scheme: OutputScheme,
    pub today: Date,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputScheme {
    Uid,
    Code,
    Name,
}

fn bad(message: String, code: &'static str) -> ServerError {
    ServerError::conflict(message, code)
}

/// `id:item;item` (or a bare `id`).
fn split_dimension(text: &str) -> (String, Vec<String>) {
    match text.split_once(':') {
        Some((id, items)) => (
            id.trim().to_string(),
            items
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        None => (text.trim().to_string(), Vec::new()),
    }
}

pub fn plan(params: &Params, snap: &Snapshot, caller: &Caller, today: Date) -> ServerResult<Plan> {
    let mut dims: Vec<(String, Vec<String>)> = Vec::new();
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in &params.0 {
        match k.as_str() {
            "dimension" => dims.extend(v.split(',').filter(|s| !s.is_empty()).map(split_dimension)),
            "filter" => filters.extend(v.split(',').filter(|s| !s.is_empty()).map(split_dimension)),
            _ => {}
        }
    }
    if dims.is_empty() {
        return Err(bad(
            "At least one dimension must be specified".into(),
            "E7101",
        ));
    }
    let mut seen = HashSet::new();
    for (id, _) in dims.iter().chain(filters.iter()) {
        if !seen.insert(id.clone()) {
            return Err(bad(
                format!("Dimension `{id}` is given more than once"),
                "E7103",
            ));
        }
    }
    let flag = |k: &str| params.flag(k);
    let today = match params.get("relativePeriodDate") {
        Some(d) => hisa_shared::metadata::parse_date(d)
            .ok_or_else(|| bad(format!("relativePeriodDate `{d}` is not a date"), "E7100"))?,
        None => today,
    };
    let aggregation_type = match params.get("aggregationType") {
        Some(t) => Some(
            serde_json::from_value::<AggregationType>(Value::String(t.to_string()))
                .map_err(|_| bad(format!("aggregationType `{t}` is not valid"), "E7100"))?,
        ),
        None => None,
    };
    let measure_criteria = match params.get("measureCriteria") {
        Some(text) => measure_criteria(text)?,
        None => Vec::new(),
    };

    let mut plan = Plan {
        axes: Vec::new(),
        dx: Vec::new(),
        pe: Vec::new(),
        ou: Vec::new(),
        categories: Vec::new(),
        dimension_items: Vec::new(),
        aggregation_type,
        measure_criteria,
        skip_meta: flag("skipMeta"),
        skip_data: flag("skipData"),
        skip_rounding: flag("skipRounding"),
        include_num_den: flag("includeNumDen"),
        short_names: params
            .get("displayProperty")
            .is_some_and(|p| p.eq_ignore_ascii_case("SHORTNAME")),
        ignore_limit: flag("ignoreLimit"),
        output_scheme: match params
            .get("outputIdScheme")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("UID") => OutputScheme::Uid,
            Some("CODE") => OutputScheme::Code,
            Some("NAME") => OutputScheme::Name,
            Some(other) => {
                return Err(bad(
                    format!("outputIdScheme `{other}` is not one of UID, CODE, NAME"),
                    "E7100",
                ))
            }
        },
        today,
    };
    let user_roots = user_org_units(params, snap, caller)?;

    let mut has_dx = false;
    let mut has_pe = false;
    let mut has_ou = false;
    for (is_dim, (id, items)) in dims
        .iter()
        .map(|d| (true, d))
        .chain(filters.iter().map(|f| (false, f)))
    {
        match id.as_str() {
            "dx" => {
                has_dx = true;
                let resolved = dx_items(snap, items)?;
                if !is_dim {
                    let indicators = resolved
                        .iter()
                        .filter(|d| !matches!(d, DxItem::Element { .. }))
                        .count();
                    if indicators > 0 && resolved.len() > 1 {
                        return Err(bad(
                            "Only a single indicator or reporting rate can be specified as filter"
                                .into(),
                            "E7108",
                        ));
                    }
                } else {
                    plan.axes.push(Axis::Dx);
                }
                plan.dimension_items.push((
                    "dx".into(),
                    resolved.iter().map(|d| d.id().to_string()).collect(),
                ));
                plan.dx = resolved;
            }
            "pe" => {
                has_pe = true;
                let periods = pe_items(items, today)?;
                plan.dimension_items
                    .push(("pe".into(), periods.iter().map(Period::iso).collect()));
                if is_dim {
                    plan.axes.push(Axis::Pe);
                    plan.pe = periods
                        .into_iter()
                        .map(|p| PeItem {
                            id: p.iso(),
                            window: Window::new([Span::of(&p)]),
                            periods: vec![p],
                        })
                        .collect();
                } else {
                    plan.pe = vec![PeItem {
                        id: periods
                            .iter()
                            .map(Period::iso)
                            .collect::<Vec<_>>()
                            .join(";"),
                        window: Window::new(periods.iter().map(Span::of)),
                        periods,
                    }];
                }
            }
            "ou" => {
                has_ou = true;
                let units = ou_items(snap, caller, items, &user_roots)?;
                plan.dimension_items.push(("ou".into(), units.clone()));
                if is_dim {
                    plan.axes.push(Axis::Ou);
                    plan.ou = units
                        .into_iter()
                        .map(|u| OuItem {
                            id: u.clone(),
                            roots: vec![u],
                        })
                        .collect();
                } else {
                    plan.ou = vec![OuItem {
                        id: units.join(";"),
                        roots: units,
                    }];
                }
            }
            other => {
                let dim = category_dimension(snap, other, items)?;
                plan.dimension_items.push((
                    dim.id.clone(),
                    dim.items.iter().map(|(i, _)| i.clone()).collect(),
                ));
                if is_dim {
                    plan.axes.push(Axis::Category(plan.categories.len()));
                }
                plan.categories.push(dim);
            }
        }
    }
    if !has_dx {
        return Err(bad(
            "At least one data dimension item (dx) must be specified".into(),
            "E7102",
        ));
    }
    if !has_pe {
        match (params.get("startDate"), params.get("endDate")) {
            (Some(s), Some(e)) => {
                let parse = |d: &str| {
                    hisa_shared::metadata::parse_date(d)
                        .ok_or_else(|| bad(format!("`{d}` is not a date"), "E7104"))
                };
                let (start, end) = (parse(s)?, parse(e)?);
                if end < start {
                    return Err(bad("endDate is before startDate".into(), "E7104"));
                }
                let span = Span::new(start.to_julian_day(), end.to_julian_day());
                plan.pe = vec![PeItem {
                    id: format!("{s}_{e}"),
                    periods: Vec::new(),
                    window: Window::new([span]),
                }];
            }
            _ => {
                return Err(bad(
                    "At least one period must be specified as dimension or filter, or startDate and endDate given".into(),
                    "E7104",
                ))
            }
        }
    }
    if !has_ou {
        // No org unit: the caller's own units, aggregated.
        plan.ou = vec![OuItem {
            id: user_roots.join(";"),
            roots: user_roots,
        }];
    }
    let splits_categories = plan.axes.iter().any(|a| matches!(a, Axis::Category(_)));
    if splits_categories && plan.dx.iter().any(|d| !matches!(d, DxItem::Element { .. })) {
        return Err(bad(
            "Indicators and reporting rates cannot be split by category dimensions".into(),
            "E7112",
        ));
    }
    Ok(plan)
}

fn measure_criteria(text: &str) -> ServerResult<Vec<(String, f64)>> {
    text.split(';')
        .filter(|s| !s.is_empty())
        .map(|c| {
            let (op, v) = c
                .split_once(':')
                .ok_or_else(|| bad(format!("measureCriteria `{c}` is not OP:value"), "E7100"))?;
            let op = op.to_ascii_uppercase();
            if !["EQ", "GT", "GE", "LT", "LE"].contains(&op.as_str()) {
                return Err(bad(
                    format!("measureCriteria operator `{op}` is not valid"),
                    "E7100",
                ));
            }
            let v: f64 = v.parse().map_err(|_| {
                bad(
                    format!("measureCriteria value `{v}` is not a number"),
                    "E7100",
                )
            })?;
            Ok((op, v))
        })
        .collect()
}

/// The org units `USER_ORGUNIT` means: `userOrgUnit=` if given, else the
/// caller's capture units, else their view units; a superuser without any
/// gets the roots of the hierarchy.
fn user_org_units(params: &Params, snap: &Snapshot, caller: &Caller) -> ServerResult<Vec<String>> {
    if let Some(list) = params.get("userOrgUnit") {
        let units: Vec<String> = list
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        for u in &units {
            if snap.org_unit(u).is_none() {
                return Err(bad(
                    format!("Org unit `{u}` in userOrgUnit does not exist"),
                    "E7124",
                ));
            }
        }
        return Ok(units);
    }
    if !caller.capture_roots.is_empty() {
        return Ok(caller.capture_roots.clone());
    }
    if !caller.view_roots.is_empty() {
        return Ok(caller.view_roots.clone());
    }
    let mut roots: Vec<String> = snap
        .org_units()
        .filter(|(_, n)| n.parent.is_none())
        .map(|(uid, _)| uid.clone())
        .collect();
    roots.sort();
    Ok(roots)
}

fn dx_items(snap: &Snapshot, items: &[String]) -> ServerResult<Vec<DxItem>> {
    if items.is_empty() {
        return Err(bad(
            "Dimension `dx` is present in query without any valid dimension options".into(),
            "E7124",
        ));
    }
    let mut out: Vec<DxItem> = Vec::new();
    let mut push = |d: DxItem| {
        if !out.contains(&d) {
            out.push(d);
        }
    };
    for item in items {
        if let Some(group) = item.strip_prefix("DE_GROUP-") {
            let body = snap.get_of("dataElementGroups", group).ok_or_else(|| {
                bad(
                    format!("Data element group `{group}` does not exist"),
                    "E7124",
                )
            })?;
            for de in refs(body, "dataElements") {
                push(DxItem::Element {
                    id: de.clone(),
                    element: de,
                    coc: None,
                    aoc: None,
                });
            }
            continue;
        }
        if let Some(group) = item.strip_prefix("IN_GROUP-") {
            let body = snap
                .get_of("indicatorGroups", group)
                .ok_or_else(|| bad(format!("Indicator group `{group}` does not exist"), "E7124"))?;
            for id in refs(body, "indicators") {
                push(DxItem::Indicator { id });
            }
            continue;
        }
        let parts: Vec<&str> = item.split('.').collect();
        let unknown = || {
            bad(
                format!("Data item `{item}` does not exist or is not supported in analytics"),
                "E7124",
            )
        };
        match parts.as_slice() {
            [uid] => {
                if snap.get_of("dataElements", uid).is_some() {
                    push(DxItem::Element {
                        id: item.clone(),
                        element: uid.to_string(),
                        coc: None,
                        aoc: None,
                    });
                } else if snap.get_of("indicators", uid).is_some() {
                    push(DxItem::Indicator { id: item.clone() });
                } else if snap.get_of("dataSets", uid).is_some() {
                    push(DxItem::ReportingRate {
                        id: item.clone(),
                        data_set: uid.to_string(),
                        metric: ReportingMetric::ReportingRate,
                    });
                } else {
                    return Err(unknown());
                }
            }
            [uid, second] if snap.get_of("dataSets", uid).is_some() => {
                let metric = ReportingMetric::from_name(second).ok_or_else(|| {
                    bad(
                        format!("`{second}` in `{item}` is not a reporting rate metric"),
                        "E7124",
                    )
                })?;
                push(DxItem::ReportingRate {
                    id: item.clone(),
                    data_set: uid.to_string(),
                    metric,
                });
            }
            [uid, coc] | [uid, coc, "*"] => push(operand(snap, item, uid, coc, None)?),
            [uid, coc, aoc] => push(operand(snap, item, uid, coc, Some(aoc))?),
            _ => return Err(unknown()),
        }
    }
    Ok(out)
}

fn operand(
    snap: &Snapshot,
    item: &str,
    de: &str,
    coc: &str,
    aoc: Option<&str>,
) -> ServerResult<DxItem> {
    if snap.get_of("dataElements", de).is_none() {
        return Err(bad(
            format!("Data element `{de}` in `{item}` does not exist"),
            "E7124",
        ));
    }
    let combo = |c: &str| -> ServerResult<Option<String>> {
        if c == "*" {
            Ok(None)
        } else if snap.get_of("categoryOptionCombos", c).is_some() {
            Ok(Some(c.to_string()))
        } else {
            Err(bad(
                format!("Category option combo `{c}` in `{item}` does not exist"),
                "E7124",
            ))
        }
    };
    Ok(DxItem::Element {
        id: item.to_string(),
        element: de.to_string(),
        coc: combo(coc)?,
        aoc: match aoc {
            Some(a) => combo(a)?,
            None => None,
        },
    })
}

/// The ids of a metadata object's reference list (`[{"id": …}, …]`).
pub(crate) fn refs(body: &Value, field: &str) -> Vec<String> {
    body.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn pe_items(items: &[String], today: Date) -> ServerResult<Vec<Period>> {
    if items.is_empty() {
        return Err(bad(
            "Dimension `pe` is present in query without any valid dimension options".into(),
            "E7124",
        ));
    }
    let mut out: Vec<Period> = Vec::new();
    for item in items {
        let periods = match Period::parse(item) {
            Ok(p) => vec![p],
            Err(_) => relative_periods(item, today, PeriodType::FinancialOct).map_err(|_| {
                bad(
                    format!("Period `{item}` is neither an ISO period nor a relative period"),
                    "E7124",
                )
            })?,
        };
        for p in periods {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

fn ou_items(
    snap: &Snapshot,
    caller: &Caller,
    items: &[String],
    user_roots: &[String],
) -> ServerResult<Vec<String>> {
    if items.is_empty() {
        return Err(bad(
            "Dimension `ou` is present in query without any valid dimension options".into(),
            "E7124",
        ));
    }
    let mut bounds: Vec<String> = Vec::new();
    let mut levels: Vec<u32> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for item in items {
        match item.as_str() {
            "USER_ORGUNIT" => bounds.extend(user_roots.iter().cloned()),
            "USER_ORGUNIT_CHILDREN" => {
                for r in user_roots {
                    bounds.extend(snap.children_of(r).iter().cloned());
                }
            }
            "USER_ORGUNIT_GRANDCHILDREN" => {
                for r in user_roots {
                    for c in snap.children_of(r) {
                        bounds.extend(snap.children_of(c).iter().cloned());
                    }
                }
            }
            other => {
                if let Some(level) = other.strip_prefix("LEVEL-") {
                    let n = match level.parse::<u32>() {
                        Ok(n) if n >= 1 => n,
                        _ => snap
                            .get_of("organisationUnitLevels", level)
                            .and_then(|l| l.get("level"))
                            .and_then(Value::as_u64)
                            .map(|n| n as u32)
                            .ok_or_else(|| {
                                bad(format!("Org unit level `{other}` is not valid"), "E7124")
                            })?,
                    };
                    levels.push(n);
                } else if let Some(group) = other.strip_prefix("OU_GROUP-") {
                    if snap.get_of("organisationUnitGroups", group).is_none() {
                        return Err(bad(
                            format!("Org unit group `{group}` does not exist"),
                            "E7124",
                        ));
                    }
                    groups.push(group.to_string());
                } else if snap.org_unit(other).is_some() {
                    bounds.push(other.to_string());
                } else {
                    return Err(bad(format!("Org unit `{other}` does not exist"), "E7124"));
                }
            }
        }
    }
    let mut units: Vec<String> = Vec::new();
    if levels.is_empty() && groups.is_empty() {
        units = bounds;
    } else {
        // Levels and groups select within the other items, or within the
        // caller's own units when there are none.
        let within = if bounds.is_empty() {
            user_roots.to_vec()
        } else {
            bounds
        };
        let mut candidates: Vec<(&String, &crate::metadata::snapshot::TreeNode)> = snap
            .org_units()
            .filter(|(uid, _)| snap.within_any(uid, &within))
            .collect();
        candidates.sort_by(|a, b| a.1.path.cmp(&b.1.path));
        for level in &levels {
            units.extend(
                candidates
                    .iter()
                    .filter(|(_, n)| n.level == *level)
                    .map(|(u, _)| (*u).clone()),
            );
        }
        for g in &groups {
            let members: HashSet<String> = snap
                .get_of("organisationUnitGroups", g)
                .map(|b| refs(b, "organisationUnits").into_iter().collect())
                .unwrap_or_default();
            units.extend(
                candidates
                    .iter()
                    .filter(|(u, _)| members.contains(*u))
                    .map(|(u, _)| (*u).clone()),
            );
        }
    }
    let mut seen = HashSet::new();
    units.retain(|u| seen.insert(u.clone()));
    for u in &units {
        if !caller.can_view(snap, u) {
            return Err(bad(
                format!(
                    "User `{}` is not allowed to view org unit `{u}`",
                    caller.username
                ),
                "E7120",
            ));
        }
    }
    Ok(units)
}

fn category_dimension(snap: &Snapshot, id: &str, items: &[String]) -> ServerResult<CategoryDim> {
    let index = snap.data_index();
    if id == "co" {
        let mut cocs: Vec<&String> = index.coc_options.keys().collect();
        cocs.sort();
        let wanted: Vec<(String, HashSet<String>)> = if items.is_empty() {
            cocs.into_iter()
                .map(|c| (c.clone(), [c.clone()].into_iter().collect()))
                .collect()
        } else {
            items
                .iter()
                .map(|c| {
                    if index.coc_options.contains_key(c) {
                        Ok((c.clone(), [c.clone()].into_iter().collect()))
                    } else {
                        Err(bad(
                            format!("Category option combo `{c}` does not exist"),
                            "E7124",
                        ))
                    }
                })
                .collect::<ServerResult<_>>()?
        };
        return Ok(CategoryDim {
            id: "co".into(),
            name: "Category option combo".into(),
            items: wanted,
        });
    }
    let Some(category) = snap.get_of("categories", id) else {
        return Err(bad(
            format!("Dimension `{id}` is not a fixed dimension (dx, pe, ou, co) nor a category"),
            "E7125",
        ));
    };
    let options = refs(category, "categoryOptions");
    let chosen: Vec<String> = if items.is_empty() {
        options.clone()
    } else {
        for i in items {
            if !options.contains(i) {
                return Err(bad(
                    format!("Category option `{i}` is not an option of category `{id}`"),
                    "E7124",
                ));
            }
        }
        items.to_vec()
    };
    let dim_items = chosen
        .into_iter()
        .map(|opt| {
            let cocs: HashSet<String> = index
                .coc_options
                .iter()
                .filter(|(_, opts)| opts.contains(&opt))
                .map(|(coc, _)| coc.clone())
                .collect();
            (opt, cocs)
        })
        .collect();
    Ok(CategoryDim {
        id: id.to_string(),
        name: category
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_string(),
        items: dim_items,
    })
}

/// An indicator's parts as analytics needs them.
#[derive(Debug, Clone)]
pub struct IndicatorDef {
    pub numerator: expression::Expr,
    pub denominator: expression::Expr,
    pub factor: f64,
    pub annualized: bool,
    pub decimals: Option<u32>,
}

pub fn indicator(snap: &Snapshot, uid: &str) -> ServerResult<IndicatorDef> {
    let body = snap
        .get_of("indicators", uid)
        .ok_or_else(|| bad(format!("Indicator `{uid}` does not exist"), "E7124"))?;
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let parse = |k: &str| {
        expression::parse(&text(k), ExprContext::Indicator).map_err(|e| {
            bad(
                format!("The {k} of indicator `{uid}` is not a valid expression: {e}"),
                "E7132",
            )
        })
    };
    let factor = body
        .get("indicatorType")
        .and_then(|t| t.get("id"))
        .and_then(Value::as_str)
        .and_then(|t| snap.get_of("indicatorTypes", t))
        .and_then(|t| t.get("factor"))
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    Ok(IndicatorDef {
        numerator: parse("numerator")?,
        denominator: parse("denominator")?,
        factor,
        annualized: body
            .get("annualized")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        decimals: body
            .get("decimals")
            .and_then(Value::as_u64)
            .map(|d| d as u32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredObject;
    use proptest::prelude::*;
    use serde_json::json;

    fn snapshot() -> Snapshot {
        let objects = [
            (
                "organisationUnits",
                json!({"id": "OuRoot00001", "name": "Root", "path": "/OuRoot00001", "level": 1}),
            ),
            (
                "organisationUnits",
                json!({"id": "OuChild0001", "name": "Child", "parent": {"id": "OuRoot00001"},
                "path": "/OuRoot00001/OuChild0001", "level": 2}),
            ),
            (
                "organisationUnitGroups",
                json!({"id": "OugGroup001", "name": "G", "organisationUnits": [{"id": "OuChild0001"}]}),
            ),
            (
                "dataElements",
                json!({"id": "DeElement01", "name": "E", "valueType": "NUMBER", "aggregationType": "SUM"}),
            ),
            (
                "dataSets",
                json!({"id": "DsSet000001", "name": "S", "periodType": "Monthly"}),
            ),
            (
                "indicatorTypes",
                json!({"id": "ItType00001", "name": "T", "factor": 100}),
            ),
            (
                "indicators",
                json!({"id": "InIndic0001", "name": "I", "indicatorType": {"id": "ItType00001"},
                "numerator": "#{DeElement01}", "denominator": "1"}),
            ),
            (
                "indicators",
                json!({"id": "InIndic0002", "name": "J", "indicatorType": {"id": "ItType00001"},
                "numerator": "#{DeElement01", "denominator": "1"}),
            ),
            (
                "categories",
                json!({"id": "CatCat00001", "name": "C", "categoryOptions": [{"id": "CoOpt000001"}]}),
            ),
        ];
        Snapshot::build(
            1,
            objects
                .into_iter()
                .enumerate()
                .map(|(i, (kind, body))| StoredObject {
                    id: i as i64 + 1,
                    uid: body["id"].as_str().unwrap_or_default().to_string(),
                    kind: kind.to_string(),
                    body,
                })
                .collect(),
        )
    }

    fn today() -> Date {
        time::macros::date!(2026 - 11 - 27)
    }

    fn run(query: &str) -> ServerResult<Plan> {
        plan(
            &Params::parse(Some(query)),
            &snapshot(),
            &Caller::operator("test"),
            today(),
        )
    }

    #[test]
    fn a_query_resolves_into_rows_and_filters() {
        let p = run("dimension=dx:DeElement01;InIndic0001;DsSet000001.ACTUAL_REPORTS&dimension=ou:OuRoot00001;LEVEL-2&filter=pe:LAST_3_MONTHS").unwrap();
        assert_eq!(p.axes, vec![Axis::Dx, Axis::Ou]);
        assert_eq!(p.dx.len(), 3);
        // A level selects within the other items, which bound it, as in DHIS2.
        assert_eq!(
            p.ou.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["OuChild0001"]
        );
        assert_eq!(p.pe.len(), 1, "a period filter is one window");
        assert_eq!(p.pe[0].periods.len(), 3);
        assert_eq!(p.pe[0].periods[0].iso(), "202608");
    }

    #[test]
    fn bad_parts_are_named() {
        for (q, part) in [
            ("dimension=dx:DeElement01;Nope", "Nope"),
            ("dimension=dx:DeElement01&dimension=pe:2026M13", "2026M13"),
            (
                "dimension=dx:DeElement01&dimension=pe:202601&dimension=ou:OU_GROUP-Missing0001",
                "Missing0001",
            ),
            (
                "dimension=dx:DeElement01&dimension=pe:202601&dimension=CatCat00001:Other000001",
                "Other000001",
            ),
            (
                "dimension=dx:DeElement01&dimension=pe:202601&dimension=dx:DeElement01",
                "dx",
            ),
            (
                "dimension=dx:DeElement01&startDate=2026-02-01&endDate=2026-01-01",
                "endDate",
            ),
        ] {
            let e = run(q).unwrap_err();
            assert!(e.to_string().contains(part), "{q}: {e}");
        }
    }

    proptest! {
        /// Whatever the URL, a plan or a clear refusal: never a panic.
        #[test]
        fn any_query_is_resolved_or_refused(
            parts in prop::collection::vec(
                prop::sample::select(vec![
                    "dimension=", "filter=", "dx:", "pe:", "ou:", "co", "CatCat00001", ":", ";", "&", ",",
                    "DeElement01", "InIndic0001", "InIndic0002", "DsSet000001", ".", "REPORTING_RATE", "*",
                    "OuRoot00001", "LEVEL-", "LEVEL-2", "OU_GROUP-OugGroup001", "USER_ORGUNIT", "USER_ORGUNIT_CHILDREN",
                    "202601", "2026Q1", "2026W53", "LAST_12_MONTHS", "THIS_YEAR", "9999", "-1",
                    "startDate=2026-01-01", "endDate=2026-13-40", "aggregationType=LAST", "measureCriteria=GE:",
                    "relativePeriodDate=2026-02-30", "outputIdScheme=CODE", "userOrgUnit=", "%", "\u{0}", "é",
                ]),
                0..24,
            )
        ) {
            let q: String = parts.concat();
            let _ = run(&q);
        }
    }
}
