//! Evaluates a [`Plan`]: every data element operand the plan needs (its own
//! `dx` items and the items inside its indicators) is aggregated from the
//! live cube in one pass over the periods that matter; indicators are then
//! computed per cell from those aggregates, reporting rates from the
//! completions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hisa_shared::aggregation::{
    self, counts_zero, is_additive, Placement, SeriesAcc, Span, Window,
};
use hisa_shared::expression::{
    ComboRef, ElementRef, Item, MissingValueStrategy, QueryMods, Value as ExprValue, ValueSource,
};
use hisa_shared::metadata::AggregationType;
use hisa_shared::period::Period;
use serde_json::Value;

use super::cube::{Column, Cube, SeriesKey};
use super::request::{indicator, refs, Axis, DxItem, IndicatorDef, Plan};
use crate::completeness;
use crate::error::{ServerError, ServerResult};
use crate::metadata::Snapshot;
use crate::state::Services;

/// A cell of the result: indexes into the plan's dx, pe and ou items and
/// the combination of row category items (0 without category rows).
pub type CellKey = (usize, usize, usize, usize);

/// Which category option combos an operand takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CocSel {
    Any,
    One(String),
    /// Combos holding this category option.
    Option(String),
    /// Combos with an option in each of these option groups.
    Groups(Vec<String>),
}

/// One data element aggregate the plan needs, for every (pe, ou) cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Fetch {
    element: String,
    coc: CocSel,
    aoc: Option<String>,
    period_offset: i32,
    year_to_date: bool,
    aggregation_type: Option<AggregationType>,
    /// Split by the row category dimensions.
    split: bool,
}

type Aggregates = HashMap<(usize, usize, usize), f64>;

/// What an evaluation produced: a value per cell, and for indicators the
/// parts `includeNumDen` shows.
#[derive(Debug, Default)]
pub struct Outcome {
    pub values: HashMap<CellKey, f64>,
    pub num_den: HashMap<CellKey, (Option<f64>, Option<f64>, f64)>,
}

/// An indicator's value in one cell, with the parts `includeNumDen` shows.
#[derive(Debug, Default)]
struct IndicatorParts {
    value: Option<f64>,
    numerator: Option<f64>,
    denominator: Option<f64>,
    factor: f64,
}

struct Ctx<'a> {
    svc: &'a Services,
    snap: &'a Snapshot,
    plan: &'a Plan,
    cube: &'a Arc<Cube>,
    /// Row category dimensions' positions in `plan.categories` and sizes.
    row_cats: Vec<(usize, usize)>,
}

pub async fn evaluate(svc: &Services, snap: &Snapshot, plan: &Plan) -> ServerResult<Outcome> {
    let row_cats: Vec<(usize, usize)> = plan
        .axes
        .iter()
        .filter_map(|a| match a {
            Axis::Category(i) => Some((*i, plan.categories[*i].items.len())),
            _ => None,
        })
        .collect();
    let cube = &svc.analytics;
    let ctx = Ctx {
        svc,
        snap,
        plan,
        cube,
        row_cats,
    };
    let mut indicators: HashMap<String, IndicatorDef> = HashMap::new();
    for d in &plan.dx {
        if let DxItem::Indicator { id } = d {
            collect_indicators(snap, id, &mut indicators, &mut Vec::new())?;
        }
    }
    // Every aggregate needed, each computed once.
    let mut fetches: Vec<Fetch> = Vec::new();
    let mut want = |f: Fetch| {
        if !fetches.contains(&f) {
            fetches.push(f);
        }
    };
    for f in plan.dx.iter().filter_map(|d| element_fetch(d, plan)) {
        want(f);
    }
    for def in indicators.values() {
        for expr in [&def.numerator, &def.denominator] {
            for r in expr.item_requests() {
                for f in fetches_of(snap, &r.item, &r.modifiers, plan)? {
                    want(f);
                }
            }
        }
    }
    let aggregates = ctx.fetch_all(&fetches).await?;
    let mut out = Outcome::default();
    let cat_cells: usize = ctx
        .row_cats
        .iter()
        .map(|(_, n)| *n)
        .product::<usize>()
        .max(1);
    // Reporting rates, per data set, for every (pe, ou) cell.
    let mut rates: HashMap<String, HashMap<(usize, usize), completeness::ReportingRates>> =
        HashMap::new();
    let mut rate_sets: Vec<String> = Vec::new();
    for d in &plan.dx {
        if let DxItem::ReportingRate { data_set, .. } = d {
            rate_sets.push(data_set.clone());
        }
    }
    for def in indicators.values() {
        for expr in [&def.numerator, &def.denominator] {
            for item in expr.items() {
                if let Item::ReportingRate { data_set, .. } = item {
                    rate_sets.push(data_set);
                }
            }
        }
    }
    rate_sets.sort();
    rate_sets.dedup();
    for ds in rate_sets {
        rates.insert(ds.clone(), ctx.rates(&ds).await?);
    }

    let mut memo: HashMap<(String, usize, usize), Option<f64>> = HashMap::new();
    for (di, d) in plan.dx.iter().enumerate() {
        for pi in 0..plan.pe.len() {
            for oi in 0..plan.ou.len() {
                match d {
                    DxItem::Element { .. } => {
                        let a = element_fetch(d, plan).and_then(|f| aggregates.get(&f));
                        if let Some(a) = a {
                            for ci in 0..cat_cells {
                                if let Some(v) = a.get(&(pi, oi, ci)) {
                                    out.values.insert((di, pi, oi, ci), *v);
                                }
                            }
                        }
                    }
                    DxItem::ReportingRate {
                        data_set, metric, ..
                    } => {
                        let r = rates.get(data_set).and_then(|m| m.get(&(pi, oi)));
                        if let Some(v) = r.and_then(|r| rate_value(r, *metric)) {
                            out.values.insert((di, pi, oi, 0), v);
                        }
                    }
                    DxItem::Indicator { id } => {
                        let mut stack = Vec::new();
                        let parts = ctx.indicator_value(
                            id,
                            pi,
                            oi,
                            &indicators,
                            &aggregates,
                            &rates,
                            &mut memo,
                            &mut stack,
                        )?;
                        if let Some(v) = parts.value {
                            out.values.insert((di, pi, oi, 0), v);
                        }
                        out.num_den.insert(
                            (di, pi, oi, 0),
                            (parts.numerator, parts.denominator, parts.factor),
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The aggregate a data element (or operand) `dx` item reads, split by the
/// row categories.
fn element_fetch(d: &DxItem, plan: &Plan) -> Option<Fetch> {
    let DxItem::Element {
        element, coc, aoc, ..
    } = d
    else {
        return None;
    };
    Some(Fetch {
        element: element.clone(),
        coc: coc.clone().map_or(CocSel::Any, CocSel::One),
        aoc: aoc.clone(),
        period_offset: 0,
        year_to_date: false,
        aggregation_type: plan.aggregation_type,
        split: true,
    })
}

fn rate_value(
    r: &completeness::ReportingRates,
    metric: hisa_shared::expression::ReportingMetric,
) -> Option<f64> {
    use hisa_shared::expression::ReportingMetric as M;
    if r.expected_reports == 0 {
        return None;
    }
    Some(match metric {
        M::ReportingRate => r.reporting_rate?.min(100.0),
        M::ReportingRateOnTime => r.reporting_rate_on_time?.min(100.0),
        M::ActualReports => r.actual_reports as f64,
        M::ActualReportsOnTime => r.actual_reports_on_time as f64,
        M::ExpectedReports => r.expected_reports as f64,
    })
}

/// `id` and every indicator it reaches through `N{…}`; a cycle is refused.
fn collect_indicators(
    snap: &Snapshot,
    id: &str,
    out: &mut HashMap<String, IndicatorDef>,
    path: &mut Vec<String>,
) -> ServerResult<()> {
    if path.iter().any(|p| p == id) {
        return Err(ServerError::conflict(
            format!(
                "Indicator `{id}` refers to itself through {}",
                path.join(" → ")
            ),
            "E7116",
        ));
    }
    if out.contains_key(id) {
        return Ok(());
    }
    let def = indicator(snap, id)?;
    path.push(id.to_string());
    let nested: Vec<String> = [&def.numerator, &def.denominator]
        .iter()
        .flat_map(|e| e.items())
        .filter_map(|i| match i {
            Item::Indicator(n) => Some(n),
            _ => None,
        })
        .collect();
    out.insert(id.to_string(), def);
    for n in nested {
        collect_indicators(snap, &n, out, path)?;
    }
    path.pop();
    Ok(())
}

fn parse_aggregation_type(text: &str) -> Option<AggregationType> {
    serde_json::from_value(Value::String(text.to_string())).ok()
}

/// The aggregates an expression item reads (a data element group reads one
/// per member).
fn fetches_of(
    snap: &Snapshot,
    item: &Item,
    mods: &QueryMods,
    plan: &Plan,
) -> ServerResult<Vec<Fetch>> {
    let Item::DataElement {
        element,
        combo,
        attribute_combo,
    } = item
    else {
        return Ok(Vec::new());
    };
    let elements = match element {
        ElementRef::Element(e) => vec![e.clone()],
        ElementRef::Group(g) => group_members(snap, g),
    };
    let coc = match combo {
        None => CocSel::Any,
        Some(ComboRef::Combo(c)) => CocSel::One(c.clone()),
        Some(ComboRef::Option(o)) => CocSel::Option(o.clone()),
        Some(ComboRef::OptionGroups(g)) => CocSel::Groups(g.clone()),
    };
    let aggregation_type = match &mods.aggregation_type {
        Some(t) => Some(parse_aggregation_type(t).ok_or_else(|| {
            ServerError::conflict(format!("aggregationType `{t}` is not valid"), "E7132")
        })?),
        None => plan.aggregation_type,
    };
    Ok(elements
        .into_iter()
        .map(|e| Fetch {
            element: e,
            coc: coc.clone(),
            aoc: attribute_combo.clone(),
            period_offset: mods.period_offset,
            year_to_date: mods.year_to_date,
            aggregation_type,
            split: false,
        })
        .collect())
}

fn group_members(snap: &Snapshot, group: &str) -> Vec<String> {
    snap.get_of("dataElementGroups", group)
        .map(|b| refs(b, "dataElements"))
        .unwrap_or_default()
}

/// Org unit id → the plan's ou items whose subtrees hold it, worked out once
/// per unit met.
struct OuMemo<'a> {
    snap: &'a Snapshot,
    roots: HashMap<&'a str, Vec<usize>>,
    memo: HashMap<i64, Vec<usize>>,
}

impl<'a> OuMemo<'a> {
    fn new(snap: &'a Snapshot, plan: &'a Plan) -> OuMemo<'a> {
        let mut roots: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, item) in plan.ou.iter().enumerate() {
            for r in &item.roots {
                let v = roots.entry(r.as_str()).or_default();
                if !v.contains(&i) {
                    v.push(i);
                }
            }
        }
        OuMemo {
            snap,
            roots,
            memo: HashMap::new(),
        }
    }

    fn items(&mut self, org_unit: i64) -> &[usize] {
        let (snap, roots) = (self.snap, &self.roots);
        self.memo.entry(org_unit).or_insert_with(|| {
            let Some(node) = snap.uid_of(org_unit).and_then(|u| snap.org_unit(u)) else {
                return Vec::new();
            };
            let mut out: Vec<usize> = Vec::new();
            for seg in node.path.split('/').filter(|s| !s.is_empty()) {
                if let Some(items) = roots.get(seg) {
                    for i in items {
                        // An item with overlapping roots counts a unit once.
                        if !out.contains(i) {
                            out.push(*i);
                        }
                    }
                }
            }
            out
        })
    }
}

impl Ctx<'_> {
    /// The windows of the plan's pe items, as an operand's modifiers move them.
    fn windows(&self, offset: i32, year_to_date: bool) -> Vec<Window> {
        self.plan
            .pe
            .iter()
            .map(|item| {
                if item.periods.is_empty() {
                    return item.window.clone();
                }
                Window::new(item.periods.iter().map(|p| {
                    let mut p = *p;
                    for _ in 0..offset.unsigned_abs() {
                        p = if offset > 0 { p.next() } else { p.previous() };
                    }
                    if year_to_date {
                        let end = p.end_date();
                        let start =
                            time::Date::from_calendar_date(end.year(), time::Month::January, 1)
                                .unwrap_or(end);
                        Span::new(start.to_julian_day(), end.to_julian_day())
                    } else {
                        Span::of(&p)
                    }
                }))
            })
            .collect()
    }

    /// Which row category cell a combo falls in; `None` when a category
    /// filter (or an unsplit row category) leaves it out.
    fn category_cell(&self, coc: &str, split: bool) -> Option<usize> {
        let mut cell = 0usize;
        for (ci, dim) in self.plan.categories.iter().enumerate() {
            let in_rows = self.row_cats.iter().position(|(i, _)| *i == ci);
            let item = dim.items.iter().position(|(_, cocs)| cocs.contains(coc));
            match (in_rows, item) {
                (_, None) => return None,
                (Some(_), Some(i)) if split => cell = cell * dim.items.len() + i,
                _ => {}
            }
        }
        Some(cell)
    }

    async fn fetch_all(&self, fetches: &[Fetch]) -> ServerResult<HashMap<Fetch, Aggregates>> {
        let index = self.snap.data_index();
        let ids: Vec<i64> = fetches
            .iter()
            .filter_map(|f| index.elements.get(&f.element).map(|e| e.id))
            .collect::<HashSet<i64>>()
            .into_iter()
            .collect();
        let columns = self.cube.columns(&ids).await?;
        let period_ids: HashSet<i64> = columns
            .values()
            .flat_map(|c| {
                c.read()
                    .map(|c| c.by_period.keys().copied().collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect();
        let periods = self.cube.periods(period_ids).await?;
        let mut out = HashMap::new();
        let mut ou_memo = OuMemo::new(self.snap, self.plan);
        for f in fetches {
            let Some(rules) = index.elements.get(&f.element) else {
                out.insert(f.clone(), Aggregates::new());
                continue;
            };
            let Some(column) = columns.get(&rules.id) else {
                continue;
            };
            let kind = match f.aggregation_type.unwrap_or(rules.aggregation_type) {
                AggregationType::Default | AggregationType::Custom => AggregationType::Sum,
                k => k,
            };
            let coc_ok = self.coc_filter(&f.coc);
            let aoc = f
                .aoc
                .as_deref()
                .and_then(|a| self.snap.get(a))
                .map(|o| o.id);
            let mut cat_memo: HashMap<i64, Option<usize>> = HashMap::new();
            let windows = self.windows(f.period_offset, f.year_to_date);
            let column = column.read().unwrap_or_else(|e| e.into_inner());
            let mut values = aggregate_column(
                &column,
                &periods,
                &windows,
                kind,
                counts_zero(kind, rules.zero_is_significant),
                |key: &SeriesKey| {
                    if aoc.is_some_and(|a| a != key.aoc) {
                        return None;
                    }
                    *cat_memo.entry(key.coc).or_insert_with(|| {
                        let uid = self.snap.uid_of(key.coc)?;
                        if !coc_ok(uid) {
                            return None;
                        }
                        self.category_cell(uid, f.split)
                    })
                },
                &mut ou_memo,
            );
            if kind == AggregationType::Average && rules.value_type.is_boolean() {
                // The share of "yes" answers, in percent.
                for v in values.values_mut() {
                    *v *= 100.0;
                }
            }
            out.insert(f.clone(), values);
        }
        Ok(out)
    }

    fn coc_filter(&self, sel: &CocSel) -> Box<dyn Fn(&str) -> bool + '_> {
        let index = self.snap.data_index();
        match sel {
            CocSel::Any => Box::new(|_| true),
            CocSel::One(c) => {
                let c = c.clone();
                Box::new(move |coc| coc == c)
            }
            CocSel::Option(o) => {
                let o = o.clone();
                Box::new(move |coc| {
                    index
                        .coc_options
                        .get(coc)
                        .is_some_and(|opts| opts.contains(&o))
                })
            }
            CocSel::Groups(groups) => {
                let members: Vec<HashSet<String>> = groups
                    .iter()
                    .map(|g| {
                        self.snap
                            .get_of("categoryOptionGroups", g)
                            .map(|b| refs(b, "categoryOptions").into_iter().collect())
                            .unwrap_or_default()
                    })
                    .collect();
                Box::new(move |coc| {
                    let opts = index.coc_options.get(coc);
                    members
                        .iter()
                        .all(|g| opts.is_some_and(|o| o.iter().any(|x| g.contains(x))))
                })
            }
        }
    }

    /// Reporting rates of a data set for every (pe, ou) cell.
    async fn rates(
        &self,
        ds: &str,
    ) -> ServerResult<HashMap<(usize, usize), completeness::ReportingRates>> {
        let index = self.snap.data_index();
        let Some(rules) = index.data_sets.get(ds) else {
            return Ok(HashMap::new());
        };
        let Some(pt) = rules.period_type else {
            return Ok(HashMap::new());
        };
        let mut out = HashMap::new();
        for (pi, item) in self.plan.pe.iter().enumerate() {
            let window = &item.window;
            let start = time::Date::from_julian_day(window.start()).ok();
            let end = time::Date::from_julian_day(window.end()).ok();
            let (Some(start), Some(end)) = (start, end) else {
                continue;
            };
            let periods: Vec<Period> = Period::range(pt, start, end)
                .into_iter()
                .filter(|p| window.place(Span::of(p)) == Some(Placement::Inside))
                .collect();
            let roots: Vec<Vec<String>> = self.plan.ou.iter().map(|o| o.roots.clone()).collect();
            let rates = completeness::rates_over(self.svc, self.snap, ds, &periods, &roots).await?;
            for (oi, r) in rates.into_iter().enumerate() {
                out.insert((pi, oi), r);
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn indicator_value(
        &self,
        id: &str,
        pi: usize,
        oi: usize,
        defs: &HashMap<String, IndicatorDef>,
        aggregates: &HashMap<Fetch, Aggregates>,
        rates: &HashMap<String, HashMap<(usize, usize), completeness::ReportingRates>>,
        memo: &mut HashMap<(String, usize, usize), Option<f64>>,
        stack: &mut Vec<String>,
    ) -> ServerResult<IndicatorParts> {
        let Some(def) = defs.get(id) else {
            return Ok(IndicatorParts::default());
        };
        // Nested indicators first, so the source can answer `N{…}`.
        let mut nested: HashMap<String, Option<f64>> = HashMap::new();
        for expr in [&def.numerator, &def.denominator] {
            for item in expr.items() {
                if let Item::Indicator(n) = item {
                    if stack.contains(&n) {
                        return Err(ServerError::conflict(
                            format!("Indicator `{n}` refers to itself"),
                            "E7116",
                        ));
                    }
                    let key = (n.clone(), pi, oi);
                    let v = match memo.get(&key) {
                        Some(v) => *v,
                        None => {
                            stack.push(id.to_string());
                            let v = self
                                .indicator_value(&n, pi, oi, defs, aggregates, rates, memo, stack)?
                                .value;
                            stack.pop();
                            memo.insert(key, v);
                            v
                        }
                    };
                    nested.insert(n, v);
                }
            }
        }
        let window = &self.plan.pe[pi].window;
        let source = CellSource {
            ctx: self,
            pi,
            oi,
            aggregates,
            rates,
            nested: &nested,
            days: window.days() as f64,
        };
        let eval = |e: &hisa_shared::expression::Expr| -> Option<f64> {
            e.evaluate(&source, MissingValueStrategy::SkipIfAllValuesMissing)
                .ok()
                .and_then(|v| v.as_number())
                .filter(|v| v.is_finite())
        };
        let num = eval(&def.numerator);
        let den = eval(&def.denominator);
        let mut factor = def.factor;
        if def.annualized {
            factor *= 365.0 / window.days().max(1) as f64;
        }
        let value = match (num, den) {
            (Some(n), Some(d)) if d != 0.0 => Some(n * factor / d).filter(|v| v.is_finite()),
            _ => None,
        };
        let value = match (value, def.decimals, self.plan.skip_rounding) {
            (Some(v), Some(d), false) => Some(round_to(v, d)),
            (v, _, _) => v,
        };
        Ok(IndicatorParts {
            value,
            numerator: num,
            denominator: den,
            factor,
        })
    }
}

fn round_to(v: f64, decimals: u32) -> f64 {
    let m = 10f64.powi(decimals.min(10) as i32);
    (v * m).round() / m
}

/// A stored period that matters, and how it lies in each pe item's window.
type RelevantPeriod = (i64, Span, Vec<(usize, Placement)>);

/// One element's column aggregated into every (pe, ou, category) cell.
/// `select` says which category cell a series falls in (or none).
fn aggregate_column(
    column: &Column,
    periods: &HashMap<i64, (Span, String)>,
    windows: &[Window],
    kind: AggregationType,
    keep_zero: bool,
    mut select: impl FnMut(&SeriesKey) -> Option<usize>,
    ou_memo: &mut OuMemo,
) -> Aggregates {
    // Which periods matter, and to which pe items, decided once per period.
    let relevant: Vec<RelevantPeriod> = column
        .by_period
        .keys()
        .filter_map(|pid| {
            let (span, _) = periods.get(pid)?;
            let places: Vec<(usize, Placement)> = windows
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.place_for(kind, *span).map(|p| (i, p)))
                .collect();
            (!places.is_empty()).then_some((*pid, *span, places))
        })
        .collect();
    let mut out = Aggregates::new();
    if is_additive(kind) {
        let count = kind == AggregationType::Count;
        for (pid, _, places) in &relevant {
            for (key, cell) in &column.by_period[pid] {
                let v = cell.value;
                if v.is_nan() || (!keep_zero && v == 0.0) {
                    continue;
                }
                let Some(ci) = select(key) else { continue };
                let add = if count { 1.0 } else { v };
                for &oi in ou_memo.items(key.org_unit) {
                    for (pi, _) in places {
                        *out.entry((*pi, oi, ci)).or_insert(0.0) += add;
                    }
                }
            }
        }
        return out;
    }
    let mut series: HashMap<(usize, usize, usize), HashMap<SeriesKey, SeriesAcc>> = HashMap::new();
    for (pid, span, places) in &relevant {
        for (key, cell) in &column.by_period[pid] {
            let v = cell.value;
            if v.is_nan() || (!keep_zero && v == 0.0) {
                continue;
            }
            let Some(ci) = select(key) else { continue };
            for &oi in ou_memo.items(key.org_unit) {
                for (pi, place) in places {
                    series
                        .entry((*pi, oi, ci))
                        .or_default()
                        .entry(*key)
                        .or_default()
                        .add(*place, *span, v);
                }
            }
        }
    }
    for (cell, accs) in series {
        if let Some(v) = aggregation::finish(kind, &windows[cell.0], accs.values()) {
            out.insert(cell, v);
        }
    }
    out
}

/// Answers an indicator's items for one (pe, ou) cell.
struct CellSource<'a> {
    ctx: &'a Ctx<'a>,
    pi: usize,
    oi: usize,
    aggregates: &'a HashMap<Fetch, Aggregates>,
    rates: &'a HashMap<String, HashMap<(usize, usize), completeness::ReportingRates>>,
    nested: &'a HashMap<String, Option<f64>>,
    days: f64,
}

impl CellSource<'_> {
    fn element(&self, item: &Item, mods: &QueryMods) -> Option<f64> {
        let fetches = fetches_of(self.ctx.snap, item, mods, self.ctx.plan).ok()?;
        let mut out: Option<f64> = None;
        for f in fetches {
            if let Some(v) = self
                .aggregates
                .get(&f)
                .and_then(|a| a.get(&(self.pi, self.oi, 0)))
            {
                *out.get_or_insert(0.0) += v;
            }
        }
        out
    }
}

impl ValueSource for CellSource<'_> {
    fn item(&self, item: &Item) -> Option<f64> {
        let snap = self.ctx.snap;
        match item {
            Item::DataElement { .. } => self.element(item, &QueryMods::default()),
            Item::Constant(c) => snap
                .get_of("constants", c)
                .and_then(|b| b.get("value"))
                .and_then(Value::as_f64),
            Item::OrgUnitGroupCount(g) => {
                let members = refs(
                    snap.get_of("organisationUnitGroups", g)?,
                    "organisationUnits",
                );
                let roots = &self.ctx.plan.ou[self.oi].roots;
                Some(members.iter().filter(|m| snap.within_any(m, roots)).count() as f64)
            }
            Item::ReportingRate { data_set, metric } => self
                .rates
                .get(data_set)
                .and_then(|m| m.get(&(self.pi, self.oi)))
                .and_then(|r| rate_value(r, *metric)),
            Item::Indicator(n) => self.nested.get(n).copied().flatten(),
            _ => None,
        }
    }

    fn modified_item(&self, item: &Item, mods: &QueryMods) -> ExprValue {
        if mods.min_date.is_some() || mods.max_date.is_some() {
            // Not supported: no value rather than a wrong one.
            return ExprValue::Null;
        }
        match item {
            Item::DataElement { .. } => self
                .element(item, mods)
                .map_or(ExprValue::Null, ExprValue::Number),
            _ => self.item_value(item),
        }
    }

    fn days(&self) -> Option<f64> {
        Some(self.days)
    }

    fn period_in_year(&self) -> Option<f64> {
        let (index, _) = place_in_year(self.ctx.plan.pe[self.pi].periods.as_slice())?;
        Some(index as f64)
    }

    fn yearly_period_count(&self) -> Option<f64> {
        let (_, count) = place_in_year(self.ctx.plan.pe[self.pi].periods.as_slice())?;
        Some(count as f64)
    }
}

/// A single period's position (1-based) among the periods of its type in
/// its calendar year, and how many there are; none for several periods.
fn place_in_year(periods: &[Period]) -> Option<(usize, usize)> {
    let [p] = periods else { return None };
    let year = p.start_date().year();
    let first = time::Date::from_calendar_date(year, time::Month::January, 1).ok()?;
    let last = time::Date::from_calendar_date(year, time::Month::December, 31).ok()?;
    let all = Period::range(p.period_type(), first, last);
    let index = all.iter().position(|q| q == p)? + 1;
    Some((index, all.len()))
}
