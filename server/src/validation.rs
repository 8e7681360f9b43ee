//! Validation rules: one form (`/api/validation/dataSet/{ds}`), or a batch
//! over an org unit subtree, a date range and an optional rule group
//! (`/api/dataAnalysis/validationRules`), with the violations persisted for
//! follow-up (`/api/validationResults`). The expressions are `shared`'s
//! language, the same code the phone runs offline.

use std::collections::HashMap;

use hisa_shared::expression::{
    self, compare, ComboRef, ElementRef, ExprContext, Item, MissingValueStrategy, Operator,
    ValueSource,
};
use hisa_shared::metadata::ValidationRule;
use hisa_shared::period::{Period, PeriodType};
use serde::Serialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ServerError, ServerResult};
use crate::metadata::Snapshot;
use crate::state::Services;

/// A rule ready to evaluate.
pub struct Rule {
    pub uid: String,
    pub name: String,
    pub description: Option<String>,
    pub instruction: Option<String>,
    pub importance: String,
    pub period_type: PeriodType,
    pub operator: Operator,
    left: expression::Expr,
    left_missing: MissingValueStrategy,
    right: expression::Expr,
    right_missing: MissingValueStrategy,
    /// The data elements either side reads.
    pub elements: Vec<String>,
}

fn missing(text: &Option<String>) -> MissingValueStrategy {
    text.as_deref()
        .and_then(|t| serde_json::from_value(Value::String(t.to_string())).ok())
        .unwrap_or_default()
}

/// Every rule that parses; a broken one is logged and left out, not fatal.
pub fn rules(snap: &Snapshot) -> Vec<Rule> {
    let groups = |g: &str| -> Vec<String> {
        snap.get_of("dataElementGroups", g)
            .and_then(|o| o.get("dataElements").and_then(Value::as_array))
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for body in snap.all_of("validationRules") {
        let Ok(r) = serde_json::from_value::<ValidationRule>(body.clone()) else {
            continue;
        };
        let Ok(operator) = serde_json::from_value::<Operator>(Value::String(r.operator.clone()))
        else {
            tracing::warn!(rule = %r.id, operator = %r.operator, "validation rule with an unknown operator skipped");
            continue;
        };
        let (Ok(left), Ok(right)) = (
            expression::parse(&r.left_side.expression, ExprContext::ValidationRule),
            expression::parse(&r.right_side.expression, ExprContext::ValidationRule),
        ) else {
            tracing::warn!(rule = %r.id, "validation rule whose expression does not parse skipped");
            continue;
        };
        let mut elements = Vec::new();
        for item in left.items().into_iter().chain(right.items()) {
            if let Item::DataElement { element, .. } = item {
                match element {
                    ElementRef::Element(de) => elements.push(de),
                    ElementRef::Group(g) => elements.extend(groups(&g)),
                }
            }
        }
        elements.sort();
        elements.dedup();
        out.push(Rule {
            uid: r.id.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
            instruction: r.instruction.clone(),
            importance: r.importance.clone().unwrap_or_else(|| "MEDIUM".into()),
            period_type: r.period_type.unwrap_or(PeriodType::Monthly),
            operator,
            left_missing: missing(&r.left_side.missing_value_strategy),
            right_missing: missing(&r.right_side.missing_value_strategy),
            left,
            right,
            elements,
        });
    }
    out
}

/// (data element, category option combo) → numeric value.
type CellValues = HashMap<(String, String), f64>;

/// The values of one org unit, period and attribute option combo.
struct Cell<'a> {
    snap: &'a Snapshot,
    /// (data element, category option combo) → value.
    values: &'a CellValues,
}

impl ValueSource for Cell<'_> {
    fn item(&self, item: &Item) -> Option<f64> {
        match item {
            Item::DataElement { element, combo, .. } => {
                let elements: Vec<String> = match element {
                    ElementRef::Element(de) => vec![de.clone()],
                    ElementRef::Group(g) => self
                        .snap
                        .get_of("dataElementGroups", g)
                        .and_then(|o| o.get("dataElements").and_then(Value::as_array))
                        .map(|a| {
                            a.iter()
                                .filter_map(|r| {
                                    r.get("id").and_then(Value::as_str).map(str::to_string)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                let options = &self.snap.data_index().coc_options;
                let mut sum = None;
                for ((de, coc), v) in self.values {
                    if !elements.contains(de) {
                        continue;
                    }
                    let matches = match combo {
                        None => true,
                        Some(ComboRef::Combo(c)) => c == coc,
                        Some(ComboRef::Option(o)) => {
                            options.get(coc).is_some_and(|opts| opts.contains(o))
                        }
                        Some(ComboRef::OptionGroups(_)) => false,
                    };
                    if matches {
                        sum = Some(sum.unwrap_or(0.0) + v);
                    }
                }
                sum
            }
            Item::Constant(c) => self
                .snap
                .get_of("constants", c)
                .and_then(|o| o.get("value"))
                .and_then(Value::as_f64),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub validation_rule_id: String,
    pub validation_rule_description: String,
    pub instruction: Option<String>,
    pub importance: String,
    pub organisation_unit_id: String,
    pub organisation_unit_display_name: String,
    pub period_id: String,
    pub attribute_option_combo_id: String,
    pub left_side_value: Option<f64>,
    pub operator: String,
    pub right_side_value: Option<f64>,
}

/// Evaluate `rules` on every (org unit, period, attribute option combo) of
/// `units` × `periods` that has data for the rule.
pub async fn run(
    svc: &Services,
    snap: &Snapshot,
    rules: &[&Rule],
    units: &[String],
    periods: &[Period],
) -> ServerResult<Vec<Violation>> {
    let mut elements: Vec<String> = rules
        .iter()
        .flat_map(|r| r.elements.iter().cloned())
        .collect();
    elements.sort();
    elements.dedup();
    let element_ids: Vec<i64> = elements
        .iter()
        .filter_map(|de| snap.get(de).map(|o| o.id))
        .collect();
    let unit_ids: HashMap<i64, &String> = units
        .iter()
        .filter_map(|u| snap.org_unit(u).map(|n| (n.id, u)))
        .collect();
    if element_ids.is_empty() || unit_ids.is_empty() || periods.is_empty() {
        return Ok(Vec::new());
    }
    let isos: Vec<String> = periods.iter().map(Period::iso).collect();
    let period_isos: HashMap<i64, String> = svc
        .store
        .period_ids(&isos)
        .await?
        .into_iter()
        .map(|(iso, id)| (id, iso))
        .collect();
    if period_isos.is_empty() {
        return Ok(Vec::new());
    }
    let period_ids: Vec<i64> = period_isos.keys().copied().collect();
    // (ou, period, aoc) → (de, coc) → value; numeric values only. Read by
    // element and period (one index walk), kept for the units asked about.
    let mut cells: HashMap<(String, String, String), CellValues> = HashMap::new();
    svc.store
        .analytics_values(&element_ids, &period_ids, None, &mut |v| {
            let (Some(ou), Some(pe), Some(de), Some(coc), Some(aoc), Some(n)) = (
                unit_ids.get(&v.key.org_unit_id),
                period_isos.get(&v.key.period_id),
                snap.uid_of(v.key.data_element_id),
                snap.uid_of(v.key.category_option_combo_id),
                snap.uid_of(v.key.attribute_option_combo_id),
                v.value
                    .as_deref()
                    .and_then(|t| t.trim().parse::<f64>().ok()),
            ) else {
                return;
            };
            cells
                .entry(((*ou).clone(), pe.clone(), aoc.to_string()))
                .or_default()
                .insert((de.to_string(), coc.to_string()), n);
        })
        .await?;
    let mut keys: Vec<_> = cells.keys().cloned().collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let (ou, pe, aoc) = &key;
        let Ok(period) = Period::parse(pe) else {
            continue;
        };
        let cell = Cell {
            snap,
            values: &cells[&key],
        };
        for rule in rules
            .iter()
            .filter(|r| r.period_type == period.period_type())
        {
            if !rule
                .elements
                .iter()
                .any(|de| cell.values.keys().any(|(d, _)| d == de))
            {
                continue;
            }
            let number = |v: Result<expression::Value, _>| match v {
                Ok(expression::Value::Number(n)) => Some(n),
                Ok(expression::Value::Bool(b)) => Some(if b { 1.0 } else { 0.0 }),
                _ => None,
            };
            let left = number(rule.left.evaluate(&cell, rule.left_missing));
            let right = number(rule.right.evaluate(&cell, rule.right_missing));
            if compare(rule.operator, left, right) == Some(false) {
                out.push(Violation {
                    validation_rule_id: rule.uid.clone(),
                    validation_rule_description: rule
                        .description
                        .clone()
                        .unwrap_or_else(|| rule.name.clone()),
                    instruction: rule.instruction.clone(),
                    importance: rule.importance.clone(),
                    organisation_unit_id: ou.clone(),
                    organisation_unit_display_name: snap
                        .get_of("organisationUnits", ou)
                        .and_then(|o| o.get("name").and_then(Value::as_str))
                        .unwrap_or(ou)
                        .to_string(),
                    period_id: pe.clone(),
                    attribute_option_combo_id: aoc.clone(),
                    left_side_value: left,
                    operator: rule.operator.symbol().to_string(),
                    right_side_value: right,
                });
            }
        }
    }
    Ok(out)
}

/// Keep violations for follow-up (a later run refreshes the same rows).
pub async fn persist(svc: &Services, violations: &[Violation]) -> ServerResult<()> {
    let now = crate::sync::now_ms();
    let rows: Vec<crate::store::ValidationResultRow> = violations
        .iter()
        .map(|v| crate::store::ValidationResultRow {
            uid: hisa_shared::Uid::generate().to_string(),
            validation_rule: v.validation_rule_id.clone(),
            org_unit: v.organisation_unit_id.clone(),
            period: v.period_id.clone(),
            attribute_option_combo: v.attribute_option_combo_id.clone(),
            importance: v.importance.clone(),
            left_value: v.left_side_value,
            right_value: v.right_side_value,
            created_at: now,
            follow_up: false,
        })
        .collect();
    svc.store.approvals().put_validation_results(&rows).await?;
    Ok(())
}

/// One form: the rules whose elements are all in the data set.
pub async fn validate_form(
    svc: &Services,
    caller: &Caller,
    ds: &str,
    pe: &str,
    ou: &str,
) -> ServerResult<Vec<Violation>> {
    let snap = svc.metadata.snapshot().await?;
    let rules_owned = rules(&snap);
    let set =
        snap.data_index().data_sets.get(ds).ok_or_else(|| {
            ServerError::conflict(format!("Data set `{ds}` does not exist"), "E7600")
        })?;
    let period = Period::parse(pe)
        .map_err(|e| ServerError::conflict(format!("Period `{pe}` is not valid: {e}"), "E7601"))?;
    if snap.org_unit(ou).is_none() {
        return Err(ServerError::conflict(
            format!("Org unit `{ou}` does not exist"),
            "E7603",
        ));
    }
    if !caller.can_view(&snap, ou) {
        return Err(ServerError::Forbidden(format!(
            "Org unit `{ou}` is outside your org units"
        )));
    }
    let chosen: Vec<&Rule> = rules_owned
        .iter()
        .filter(|r| !r.elements.is_empty() && r.elements.iter().all(|de| set.elements.contains(de)))
        .collect();
    run(svc, &snap, &chosen, &[ou.to_string()], &[period]).await
}

/// A batch over a subtree, a date range and an optional rule group.
pub async fn analyse(
    svc: &Services,
    caller: &Caller,
    root: &str,
    start: time::Date,
    end: time::Date,
    group: Option<&str>,
) -> ServerResult<Vec<Violation>> {
    let snap = svc.metadata.snapshot().await?;
    let node = snap.org_unit(root).ok_or_else(|| {
        ServerError::conflict(format!("Org unit `{root}` does not exist"), "E7603")
    })?;
    if !caller.can_view(&snap, root) {
        return Err(ServerError::Forbidden(format!(
            "Org unit `{root}` is outside your org units"
        )));
    }
    if end < start {
        return Err(ServerError::conflict(
            "The end date is before the start date",
            "E7602",
        ));
    }
    let rules_owned = rules(&snap);
    let members: Option<Vec<String>> = match group {
        Some(g) => Some(
            snap.get_of("validationRuleGroups", g)
                .ok_or_else(|| {
                    ServerError::conflict(
                        format!("Validation rule group `{g}` does not exist"),
                        "E7604",
                    )
                })?
                .get("validationRules")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        None => None,
    };
    let chosen: Vec<&Rule> = rules_owned
        .iter()
        .filter(|r| members.as_ref().is_none_or(|m| m.contains(&r.uid)))
        .collect();
    let mut types: Vec<PeriodType> = chosen.iter().map(|r| r.period_type).collect();
    types.sort_by_key(|t| t.name());
    types.dedup();
    let periods: Vec<Period> = types
        .iter()
        .flat_map(|t| Period::range(*t, start, end))
        .collect();
    let prefix = format!("{}/", node.path);
    let units: Vec<String> = snap
        .org_units()
        .filter(|(_, n)| n.path == node.path || n.path.starts_with(&prefix))
        .map(|(uid, _)| uid.clone())
        .collect();
    run(svc, &snap, &chosen, &units, &periods).await
}
