//! DHIS2's analytics grid: headers, metaData (item names and each
//! dimension's items), rows of strings, height and width; and its CSV.

use hisa_shared::period::{Period, PeriodType};
use serde_json::{json, Map, Value};

use super::engine::{CellKey, Outcome};
use super::request::{Axis, DxItem, OutputScheme, Plan};
use crate::error::{ServerError, ServerResult};
use crate::metadata::Snapshot;

/// DHIS2's default cap on rows.
pub const ROW_LIMIT: usize = 50_000;

pub struct Grid {
    pub headers: Vec<Value>,
    pub meta_data: Option<Value>,
    pub rows: Vec<Vec<String>>,
}

impl Grid {
    pub fn to_json(&self) -> Value {
        let width = self.headers.len();
        let mut v = json!({
            "headers": self.headers,
            "rows": self.rows,
            "height": self.rows.len(),
            "width": width,
            "headerWidth": width,
        });
        if let Some(m) = &self.meta_data {
            v["metaData"] = m.clone();
        }
        v
    }

    pub fn to_csv(&self) -> ServerResult<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let names: Vec<&str> = self
            .headers
            .iter()
            .map(|h| h.get("name").and_then(Value::as_str).unwrap_or(""))
            .collect();
        let internal = |e: csv::Error| ServerError::Internal(format!("CSV output: {e}"));
        w.write_record(&names).map_err(internal)?;
        for r in &self.rows {
            w.write_record(r).map_err(internal)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| ServerError::Internal(format!("CSV output: {e}")))?;
        String::from_utf8(bytes).map_err(|e| ServerError::Internal(format!("CSV output: {e}")))
    }
}

fn header(name: &str, column: &str, meta: bool, number: bool) -> Value {
    json!({
        "name": name,
        "column": column,
        "valueType": if number { "NUMBER" } else { "TEXT" },
        "type": if number { "java.lang.Double" } else { "java.lang.String" },
        "hidden": false,
        "meta": meta,
    })
}

/// A value as DHIS2 writes it in a grid: whole numbers bare, others rounded
/// (one decimal from 1 up, two significant digits below) unless asked not to.
pub fn format_value(v: f64, skip_rounding: bool) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    if skip_rounding {
        return format!("{v}");
    }
    let rounded = if v.abs() >= 1.0 {
        (v * 10.0).round() / 10.0
    } else {
        let digits = 2 - (v.abs().log10().floor() as i32) - 1;
        let m = 10f64.powi(digits.clamp(0, 12));
        (v * m).round() / m
    };
    if rounded.fract() == 0.0 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded}")
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A period's display name, as DHIS2 shows it ("March 2024",
/// "January - March 2024", "Week 5 2024-01-29 - 2024-02-04").
pub fn period_name(p: &Period) -> String {
    let (s, e) = (p.start_date(), p.end_date());
    let month = |d: time::Date| MONTHS[usize::from(u8::from(d.month())) - 1];
    use PeriodType::*;
    match p.period_type() {
        Daily => s.to_string(),
        Monthly => format!("{} {}", month(s), s.year()),
        Yearly => s.year().to_string(),
        Weekly | WeeklyWednesday | WeeklyThursday | WeeklyFriday | WeeklySaturday
        | WeeklySunday | BiWeekly => {
            let iso = p.iso();
            let n = iso
                .rsplit(['W'])
                .next()
                .unwrap_or_default()
                .trim_start_matches('0');
            let label = if p.period_type() == BiWeekly {
                "Bi-Week"
            } else {
                "Week"
            };
            format!("{label} {n} {s} - {e}")
        }
        _ if s.year() == e.year() => {
            format!("{} - {} {}", month(s), month(e), s.year())
        }
        _ => format!("{} {} - {} {}", month(s), s.year(), month(e), e.year()),
    }
}

fn name_of(snap: &Snapshot, uid: &str, short: bool) -> Option<String> {
    let body = &snap.get(uid)?.body;
    let pick = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    if short {
        pick("shortName").or_else(|| pick("name"))
    } else {
        pick("name")
    }
}

fn dx_name(snap: &Snapshot, d: &DxItem, short: bool) -> String {
    match d {
        DxItem::Element {
            id,
            element,
            coc,
            aoc,
        } => {
            let mut name = name_of(snap, element, short).unwrap_or_else(|| id.clone());
            for c in [coc, aoc].into_iter().flatten() {
                if let Some(n) = name_of(snap, c, short) {
                    name.push(' ');
                    name.push_str(&n);
                }
            }
            name
        }
        DxItem::Indicator { id } => name_of(snap, id, short).unwrap_or_else(|| id.clone()),
        DxItem::ReportingRate {
            id,
            data_set,
            metric,
        } => {
            let ds = name_of(snap, data_set, short).unwrap_or_else(|| id.clone());
            let what = match metric.as_str() {
                "REPORTING_RATE" => "Reporting rate",
                "REPORTING_RATE_ON_TIME" => "Reporting rate on time",
                "ACTUAL_REPORTS" => "Actual reports",
                "ACTUAL_REPORTS_ON_TIME" => "Actual reports on time",
                _ => "Expected reports",
            };
            format!("{ds} - {what}")
        }
    }
}

pub fn build(snap: &Snapshot, plan: &Plan, outcome: &Outcome) -> ServerResult<Grid> {
    let mut headers: Vec<Value> = Vec::new();
    for a in &plan.axes {
        headers.push(match a {
            Axis::Dx => header("dx", "Data", true, false),
            Axis::Pe => header("pe", "Period", true, false),
            Axis::Ou => header("ou", "Organisation unit", true, false),
            Axis::Category(i) => {
                let c = &plan.categories[*i];
                header(&c.id, &c.name, true, false)
            }
        });
    }
    headers.push(header("value", "Value", false, true));
    if plan.include_num_den {
        for (n, c) in [
            ("numerator", "Numerator"),
            ("denominator", "Denominator"),
            ("factor", "Factor"),
            ("multiplier", "Multiplier"),
            ("divisor", "Divisor"),
        ] {
            headers.push(header(n, c, false, true));
        }
    }
    let row_cats: Vec<usize> = plan
        .axes
        .iter()
        .filter_map(|a| match a {
            Axis::Category(i) => Some(*i),
            _ => None,
        })
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    if !plan.skip_data {
        let mut cells: Vec<(&CellKey, &f64)> = outcome.values.iter().collect();
        cells.sort_by(|a, b| a.0.cmp(b.0));
        for (key, v) in cells {
            if !passes(&plan.measure_criteria, *v) {
                continue;
            }
            let &(di, pi, oi, ci) = key;
            // Unpack the category cell into one item per row category.
            let mut cat_items: Vec<&str> = Vec::with_capacity(row_cats.len());
            let mut rest = ci;
            for &c in row_cats.iter().rev() {
                let n = plan.categories[c].items.len().max(1);
                cat_items.push(&plan.categories[c].items[rest % n].0);
                rest /= n;
            }
            cat_items.reverse();
            let mut row = Vec::with_capacity(headers.len());
            let mut cats = cat_items.into_iter();
            for a in &plan.axes {
                row.push(match a {
                    Axis::Dx => output_id(snap, plan, plan.dx[di].id()),
                    Axis::Pe => plan.pe[pi].id.clone(),
                    Axis::Ou => output_id(snap, plan, &plan.ou[oi].id),
                    Axis::Category(_) => output_id(snap, plan, cats.next().unwrap_or_default()),
                });
            }
            row.push(format_value(*v, plan.skip_rounding));
            if plan.include_num_den {
                let fmt = |x: Option<f64>| {
                    x.map(|x| format_value(x, plan.skip_rounding))
                        .unwrap_or_default()
                };
                match outcome.num_den.get(key) {
                    Some((n, d, f)) => {
                        row.extend([fmt(*n), fmt(*d), fmt(Some(*f)), fmt(Some(*f)), "1".into()])
                    }
                    None => row.extend(std::iter::repeat_n(String::new(), 5)),
                }
            }
            rows.push(row);
        }
    }
    if rows.len() > ROW_LIMIT && !plan.ignore_limit {
        return Err(ServerError::conflict(
            format!(
                "Query result set exceeded max limit of {ROW_LIMIT} rows ({} rows); narrow the query or use ignoreLimit",
                rows.len()
            ),
            "E7128",
        ));
    }
    let meta_data = (!plan.skip_meta).then(|| meta(snap, plan));
    Ok(Grid {
        headers,
        meta_data,
        rows,
    })
}

/// An item's id as `outputIdScheme` asks: its code or name where it has
/// one (each part of an operand or reporting rate), else its UID.
fn output_id(snap: &Snapshot, plan: &Plan, id: &str) -> String {
    let field = match plan.output_scheme {
        OutputScheme::Uid => return id.to_string(),
        OutputScheme::Code => "code",
        OutputScheme::Name => "name",
    };
    id.split('.')
        .map(|part| {
            snap.get(part)
                .and_then(|o| o.body.get(field))
                .and_then(Value::as_str)
                .unwrap_or(part)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(if field == "name" { " " } else { "." })
}

fn passes(criteria: &[(String, f64)], v: f64) -> bool {
    criteria.iter().all(|(op, x)| match op.as_str() {
        "EQ" => v == *x,
        "GT" => v > *x,
        "GE" => v >= *x,
        "LT" => v < *x,
        _ => v <= *x,
    })
}

fn meta(snap: &Snapshot, plan: &Plan) -> Value {
    let short = plan.short_names;
    let mut items: Map<String, Value> = Map::new();
    let mut put = |id: &str, name: String| {
        items.insert(output_id(snap, plan, id), json!({ "name": name }));
    };
    put("dx", "Data".into());
    put("pe", "Period".into());
    put("ou", "Organisation unit".into());
    for d in &plan.dx {
        put(d.id(), dx_name(snap, d, short));
    }
    for p in plan.pe.iter().flat_map(|i| i.periods.iter()) {
        put(&p.iso(), period_name(p));
    }
    for o in plan.ou.iter().flat_map(|i| i.roots.iter()) {
        put(o, name_of(snap, o, short).unwrap_or_else(|| o.clone()));
    }
    for c in &plan.categories {
        put(&c.id, c.name.clone());
        for (i, _) in &c.items {
            put(i, name_of(snap, i, short).unwrap_or_else(|| i.clone()));
        }
    }
    let mut dimensions: Map<String, Value> = Map::new();
    dimensions.insert("co".into(), json!([]));
    for (id, list) in &plan.dimension_items {
        let list: Vec<String> = list.iter().map(|i| output_id(snap, plan, i)).collect();
        dimensions.insert(id.clone(), json!(list));
    }
    json!({ "items": items, "dimensions": dimensions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_dhis2_does() {
        assert_eq!(format_value(12.0, false), "12");
        assert_eq!(format_value(294.3548, false), "294.4");
        assert_eq!(format_value(0.04567, false), "0.046");
        assert_eq!(format_value(0.04567, true), "0.04567");
        assert_eq!(format_value(-3.25, false), "-3.3");
    }

    #[test]
    fn period_names() {
        let n = |s: &str| period_name(&Period::parse(s).unwrap());
        assert_eq!(n("202403"), "March 2024");
        assert_eq!(n("2024Q1"), "January - March 2024");
        assert_eq!(n("2024"), "2024");
        assert_eq!(n("20240105"), "2024-01-05");
        assert_eq!(n("2024W5"), "Week 5 2024-01-29 - 2024-02-04");
        assert_eq!(n("2024Oct"), "October 2024 - September 2025");
    }
}
