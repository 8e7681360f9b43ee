//! How data values aggregate, by each data element's `aggregationType`:
//! first over time within one *series* (one org unit × category option combo
//! × attribute option combo), then across the series of an org unit's
//! subtree. DHIS2 names each type by these two steps ("average over time,
//! sum in the org unit hierarchy"); categories add up like org units.
//!
//! The caller walks its stored values once, places each against the
//! requested [`Window`] and feeds a [`SeriesAcc`] per series; [`finish`]
//! folds the series into one number. The server's analytics and the property
//! tests beside it share this code, so the semantics live in one place.

use crate::metadata::AggregationType;

/// How far `FIRST`/`LAST` look back before the end of the requested period.
pub const LOOKBACK_DAYS: i32 = 3653;

/// A closed range of days (Julian day numbers), such as one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: i32,
    pub end: i32,
}

impl Span {
    pub fn new(start: i32, end: i32) -> Span {
        Span { start, end }
    }

    pub fn of(period: &crate::period::Period) -> Span {
        Span {
            start: period.start_date().to_julian_day(),
            end: period.end_date().to_julian_day(),
        }
    }

    pub fn days(&self) -> i64 {
        i64::from(self.end) - i64::from(self.start) + 1
    }
}

/// What was asked for along time: one period, or several (a filter of many
/// periods) treated as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Sorted, with touching spans merged: a quarterly value lies inside
    /// January + February + March.
    merged: Vec<Span>,
    days: i64,
}

/// Where a stored value's period lies relative to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Wholly inside the window: aggregated.
    Inside,
    /// A longer period containing the whole window (a yearly population in a
    /// monthly request): used by average types when a series has nothing inside.
    Covering,
    /// Ends before the window does, within the look-back: `FIRST`/`LAST` only.
    Earlier,
}

impl Window {
    pub fn new(spans: impl IntoIterator<Item = Span>) -> Window {
        let mut spans: Vec<Span> = spans.into_iter().collect();
        spans.sort();
        let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
        for s in spans {
            match merged.last_mut() {
                Some(last) if s.start <= last.end.saturating_add(1) => {
                    last.end = last.end.max(s.end);
                }
                _ => merged.push(s),
            }
        }
        let days = merged.iter().map(Span::days).sum();
        Window { merged, days }
    }

    pub fn days(&self) -> i64 {
        self.days
    }

    pub fn start(&self) -> i32 {
        self.merged.first().map_or(0, |s| s.start)
    }

    pub fn end(&self) -> i32 {
        self.merged.last().map_or(0, |s| s.end)
    }

    /// Where a value of period `span` lies; `None` when it plays no part.
    pub fn place(&self, span: Span) -> Option<Placement> {
        if self.merged.is_empty() {
            return None;
        }
        if self
            .merged
            .iter()
            .any(|m| m.start <= span.start && span.end <= m.end)
        {
            return Some(Placement::Inside);
        }
        if span.start <= self.start() && span.end >= self.end() {
            return Some(Placement::Covering);
        }
        if span.end <= self.end() && span.start >= self.end() - LOOKBACK_DAYS {
            return Some(Placement::Earlier);
        }
        None
    }

    /// Where a value of period `span` lies as aggregation type `kind` reads
    /// it: `None` when that type does not use it. A longer period ending
    /// with the window covers it for averages and is simply earlier for
    /// `FIRST`/`LAST`.
    pub fn place_for(&self, kind: AggregationType, span: Span) -> Option<Placement> {
        let back =
            looks_back(kind) && span.end <= self.end() && span.start >= self.end() - LOOKBACK_DAYS;
        match self.place(span)? {
            Placement::Inside => Some(Placement::Inside),
            Placement::Covering if uses_covering(kind) => Some(Placement::Covering),
            _ if back => Some(Placement::Earlier),
            _ => None,
        }
    }
}

/// One series' values seen against a window.
#[derive(Debug, Clone, Copy)]
pub struct SeriesAcc {
    count: u32,
    sum: f64,
    sum_sq: f64,
    /// Σ value × days of its period, for day-weighted averages.
    weighted: f64,
    min: f64,
    max: f64,
    /// Inside the window: earliest by start, latest by end.
    first_inside: Option<(i32, f64)>,
    last_inside: Option<(i32, f64)>,
    /// Inside or earlier, within the look-back.
    first_back: Option<(i32, f64)>,
    last_back: Option<(i32, f64)>,
    /// The shortest covering period's value.
    covering: Option<(i64, f64)>,
}

impl Default for SeriesAcc {
    fn default() -> Self {
        SeriesAcc {
            count: 0,
            sum: 0.0,
            sum_sq: 0.0,
            weighted: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first_inside: None,
            last_inside: None,
            first_back: None,
            last_back: None,
            covering: None,
        }
    }
}

fn earlier(a: Option<(i32, f64)>, at: i32, v: f64) -> Option<(i32, f64)> {
    match a {
        Some((t, _)) if t <= at => a,
        _ => Some((at, v)),
    }
}

fn later(a: Option<(i32, f64)>, at: i32, v: f64) -> Option<(i32, f64)> {
    match a {
        Some((t, _)) if t >= at => a,
        _ => Some((at, v)),
    }
}

impl SeriesAcc {
    pub fn add(&mut self, placement: Placement, span: Span, value: f64) {
        match placement {
            Placement::Inside => {
                self.count += 1;
                self.sum += value;
                self.sum_sq += value * value;
                self.weighted += value * span.days() as f64;
                self.min = self.min.min(value);
                self.max = self.max.max(value);
                self.first_inside = earlier(self.first_inside, span.start, value);
                self.last_inside = later(self.last_inside, span.end, value);
                self.first_back = earlier(self.first_back, span.start, value);
                self.last_back = later(self.last_back, span.end, value);
            }
            Placement::Earlier => {
                self.first_back = earlier(self.first_back, span.start, value);
                self.last_back = later(self.last_back, span.end, value);
            }
            Placement::Covering => {
                let days = span.days();
                if self.covering.is_none_or(|(d, _)| days < d) {
                    self.covering = Some((days, value));
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.covering.is_none() && self.last_back.is_none()
    }
}

/// Whether a type reads longer periods' values when nothing lies inside.
pub fn uses_covering(kind: AggregationType) -> bool {
    matches!(
        kind,
        AggregationType::Average | AggregationType::AverageSumOrgUnit
    )
}

/// Whether a type needs values before the window.
pub fn looks_back(kind: AggregationType) -> bool {
    use AggregationType::*;
    matches!(
        kind,
        First
            | FirstAverageOrgUnit
            | FirstFirstOrgUnit
            | Last
            | LastAverageOrgUnit
            | LastLastOrgUnit
    )
}

/// Whether a type only sums (over time and across series), so a caller may
/// add values straight into one accumulator without keeping series apart.
pub fn is_additive(kind: AggregationType) -> bool {
    use AggregationType::*;
    matches!(kind, Sum | Count | Default | Custom)
}

/// One value for the window from its series; `None` when there is no data.
/// `days` of the window weight `AVERAGE_SUM_ORG_UNIT`.
pub fn finish<'a>(
    kind: AggregationType,
    window: &Window,
    series: impl IntoIterator<Item = &'a SeriesAcc>,
) -> Option<f64> {
    use AggregationType::*;
    let days = window.days().max(1) as f64;
    // Per-series value over time, and its position in time for the
    // FIRST_FIRST / LAST_LAST types.
    let over_time = |s: &SeriesAcc| -> Option<(i32, f64)> {
        match kind {
            Sum | Default | Custom => (s.count > 0).then_some((0, s.sum)),
            Count => (s.count > 0).then_some((0, f64::from(s.count))),
            AverageSumOrgUnit => {
                if s.count > 0 {
                    Some((0, s.weighted / days))
                } else {
                    s.covering.map(|(_, v)| (0, v))
                }
            }
            MinSumOrgUnit => (s.count > 0).then_some((0, s.min)),
            MaxSumOrgUnit => (s.count > 0).then_some((0, s.max)),
            First | FirstAverageOrgUnit | FirstFirstOrgUnit => s.first_back,
            Last | LastAverageOrgUnit | LastLastOrgUnit => s.last_back,
            LastInPeriod | LastInPeriodAverageOrgUnit => s.last_inside,
            // Global types are folded below without a per-series step.
            Average | Min | Max | Stddev | Variance | None => Option::None,
        }
    };
    match kind {
        Average => {
            let (mut n, mut sum) = (0u64, 0.0);
            let (mut cn, mut csum) = (0u64, 0.0);
            for s in series {
                n += u64::from(s.count);
                sum += s.sum;
                if s.count == 0 {
                    if let Some((_, v)) = s.covering {
                        cn += 1;
                        csum += v;
                    }
                }
            }
            // A series with values inside counts by them; series with only
            // a covering value count once each.
            let total = n + cn;
            (total > 0).then(|| (sum + csum) / total as f64)
        }
        Min | Max => {
            let mut out: Option<f64> = Option::None;
            for s in series.into_iter().filter(|s| s.count > 0) {
                let v = if kind == Min { s.min } else { s.max };
                out = Some(match out {
                    Some(o) if kind == Min => o.min(v),
                    Some(o) => o.max(v),
                    Option::None => v,
                });
            }
            out
        }
        Stddev | Variance => {
            let (mut n, mut sum, mut sq) = (0u64, 0.0, 0.0);
            for s in series {
                n += u64::from(s.count);
                sum += s.sum;
                sq += s.sum_sq;
            }
            if n == 0 {
                return Option::None;
            }
            let mean = sum / n as f64;
            let var = (sq / n as f64 - mean * mean).max(0.0);
            Some(if kind == Variance { var } else { var.sqrt() })
        }
        None => {
            // No aggregation: a value only where exactly one was stored.
            let mut found: Option<f64> = Option::None;
            let mut n = 0u64;
            for s in series {
                n += u64::from(s.count);
                if s.count == 1 {
                    found = Some(s.sum);
                }
            }
            if n == 1 {
                found
            } else {
                Option::None
            }
        }
        FirstAverageOrgUnit | LastAverageOrgUnit | LastInPeriodAverageOrgUnit => {
            let (mut n, mut sum) = (0u64, 0.0);
            for v in series.into_iter().filter_map(over_time) {
                n += 1;
                sum += v.1;
            }
            (n > 0).then(|| sum / n as f64)
        }
        FirstFirstOrgUnit | LastLastOrgUnit => {
            let mut best: Option<(i32, f64)> = Option::None;
            for (at, v) in series.into_iter().filter_map(over_time) {
                best = match best {
                    Some((b, bv))
                        if (kind == FirstFirstOrgUnit && b < at)
                            || (kind == LastLastOrgUnit && b > at)
                            || (b == at && bv >= v) =>
                    {
                        best
                    }
                    _ => Some((at, v)),
                };
            }
            best.map(|(_, v)| v)
        }
        Sum | Default | Custom | Count | AverageSumOrgUnit | MinSumOrgUnit | MaxSumOrgUnit
        | First | Last | LastInPeriod => {
            let mut out: Option<f64> = Option::None;
            for (_, v) in series.into_iter().filter_map(over_time) {
                *out.get_or_insert(0.0) += v;
            }
            out
        }
    }
}

/// Stored zeros of an element whose zeros are not significant are left out,
/// except for average types (DHIS2 stores those zeros on import).
pub fn counts_zero(kind: AggregationType, zero_is_significant: bool) -> bool {
    zero_is_significant
        || matches!(
            kind,
            AggregationType::Average | AggregationType::AverageSumOrgUnit
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use AggregationType as A;

    fn month(m: i32) -> Span {
        // 30-day "months" keep the arithmetic in the tests readable.
        Span::new(m * 30, m * 30 + 29)
    }

    fn run(kind: A, window: &Window, values: &[(usize, Span, f64)]) -> Option<f64> {
        let mut series: Vec<SeriesAcc> = vec![SeriesAcc::default(); 8];
        for &(s, span, v) in values {
            if let Some(p) = window.place_for(kind, span) {
                series[s].add(p, span, v);
            }
        }
        finish(kind, window, &series)
    }

    #[test]
    fn sum_adds_inside_values_only() {
        let w = Window::new([month(1), month(2)]);
        let v = [(0, month(1), 3.0), (1, month(2), 4.0), (0, month(3), 100.0)];
        assert_eq!(run(A::Sum, &w, &v), Some(7.0));
        assert_eq!(run(A::Count, &w, &v), Some(2.0));
        assert_eq!(run(A::Sum, &w, &[]), None);
    }

    #[test]
    fn average_sum_org_unit_is_day_weighted_and_uses_covering_values() {
        let q = Window::new([month(1), month(2), month(3)]);
        // One unit reports 10 in two of three months: 10 × 60 / 90.
        let v = [(0, month(1), 10.0), (0, month(2), 10.0)];
        let got = run(A::AverageSumOrgUnit, &q, &v).unwrap();
        assert!((got - 20.0 / 3.0).abs() < 1e-9);
        // A yearly population serves each month; two units add up.
        let year = Span::new(0, 400);
        let m = Window::new([month(4)]);
        let v = [(0, year, 1000.0), (1, year, 500.0)];
        assert_eq!(run(A::AverageSumOrgUnit, &m, &v), Some(1500.0));
        // SUM never spreads a longer period over a shorter one.
        assert_eq!(run(A::Sum, &m, &v), None);
    }

    #[test]
    fn last_looks_back_and_sums_units() {
        let w = Window::new([month(5)]);
        let v = [
            (0, month(2), 7.0),
            (0, month(3), 8.0),
            (1, month(5), 1.0),
            (1, month(6), 99.0),
        ];
        assert_eq!(run(A::Last, &w, &v), Some(9.0));
        assert_eq!(run(A::LastAverageOrgUnit, &w, &v), Some(4.5));
        assert_eq!(run(A::LastLastOrgUnit, &w, &v), Some(1.0));
        assert_eq!(run(A::LastInPeriod, &w, &v), Some(1.0));
        assert_eq!(run(A::First, &w, &v), Some(8.0));
        assert_eq!(run(A::FirstFirstOrgUnit, &w, &v), Some(7.0));
    }

    #[test]
    fn min_max_and_statistics() {
        let w = Window::new([month(1), month(2)]);
        let v = [(0, month(1), 2.0), (0, month(2), 4.0), (1, month(1), 6.0)];
        assert_eq!(run(A::Min, &w, &v), Some(2.0));
        assert_eq!(run(A::Max, &w, &v), Some(6.0));
        assert_eq!(run(A::MinSumOrgUnit, &w, &v), Some(8.0));
        assert_eq!(run(A::MaxSumOrgUnit, &w, &v), Some(10.0));
        assert_eq!(run(A::Average, &w, &v), Some(4.0));
        let var = run(A::Variance, &w, &v).unwrap();
        assert!((var - 8.0 / 3.0).abs() < 1e-9);
        assert_eq!(run(A::None, &w, &v), None);
        assert_eq!(run(A::None, &w, &v[..1]), Some(2.0));
    }

    #[test]
    fn a_quarterly_value_lies_inside_three_monthly_filter_periods() {
        let w = Window::new([month(3), month(1), month(2)]);
        assert_eq!(w.days(), 90);
        assert_eq!(
            w.place(Span::new(month(1).start, month(3).end)),
            Some(Placement::Inside)
        );
        let gap = Window::new([month(1), month(3)]);
        assert_ne!(
            gap.place(Span::new(month(1).start, month(3).end)),
            Some(Placement::Inside)
        );
    }

    type Pick<'a> = &'a dyn Fn(&[(Span, f64)]) -> Option<(i32, f64)>;

    /// The brute-force definition of each type, written from DHIS2's table
    /// without accumulators: per series, pick values by period; then fold.
    fn brute(kind: A, window: &Window, values: &[(usize, Span, f64)]) -> Option<f64> {
        // The windows tested are one unbroken run of months.
        let inside = |s: &Span| s.start >= window.start() && s.end <= window.end();
        let mut by_series: std::collections::BTreeMap<usize, Vec<(Span, f64)>> = Default::default();
        for &(s, span, v) in values {
            by_series.entry(s).or_default().push((span, v));
        }
        let all_inside: Vec<f64> = values
            .iter()
            .filter(|(_, s, _)| inside(s))
            .map(|(_, _, v)| *v)
            .collect();
        let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
        let per_series =
            |f: Pick| -> Vec<(i32, f64)> { by_series.values().filter_map(|vs| f(vs)).collect() };
        let sum_of = |xs: Vec<(i32, f64)>| (!xs.is_empty()).then(|| xs.iter().map(|x| x.1).sum());
        let back = |vs: &[(Span, f64)], last: bool| -> Option<(i32, f64)> {
            let mut c: Vec<(Span, f64)> = vs
                .iter()
                .copied()
                .filter(|(s, _)| s.end <= window.end() && s.start >= window.end() - LOOKBACK_DAYS)
                .collect();
            if last {
                c.sort_by_key(|(s, _)| s.end);
                c.last().map(|(s, v)| (s.end, *v))
            } else {
                c.sort_by_key(|(s, _)| s.start);
                c.first().map(|(s, v)| (s.start, *v))
            }
        };
        match kind {
            A::Sum => (!all_inside.is_empty()).then(|| all_inside.iter().sum()),
            A::Count => (!all_inside.is_empty()).then_some(all_inside.len() as f64),
            A::Min => all_inside.iter().copied().reduce(f64::min),
            A::Max => all_inside.iter().copied().reduce(f64::max),
            A::Average => {
                let mut xs = all_inside.clone();
                for vs in by_series.values() {
                    if !vs.iter().any(|(s, _)| inside(s)) {
                        let mut cov: Vec<(Span, f64)> = vs
                            .iter()
                            .copied()
                            .filter(|(s, _)| s.start <= window.start() && s.end >= window.end())
                            .collect();
                        cov.sort_by_key(|(s, _)| s.days());
                        if let Some((_, v)) = cov.first() {
                            xs.push(*v);
                        }
                    }
                }
                mean(&xs)
            }
            A::AverageSumOrgUnit => sum_of(per_series(&|vs| {
                let ins: Vec<&(Span, f64)> = vs.iter().filter(|(s, _)| inside(s)).collect();
                if ins.is_empty() {
                    let mut cov: Vec<(Span, f64)> = vs
                        .iter()
                        .copied()
                        .filter(|(s, _)| s.start <= window.start() && s.end >= window.end())
                        .collect();
                    cov.sort_by_key(|(s, _)| s.days());
                    cov.first().map(|(_, v)| (0, *v))
                } else {
                    Some((
                        0,
                        ins.iter().map(|(s, v)| v * s.days() as f64).sum::<f64>()
                            / window.days() as f64,
                    ))
                }
            })),
            A::Last => sum_of(per_series(&|vs| back(vs, true))),
            A::First => sum_of(per_series(&|vs| back(vs, false))),
            A::LastAverageOrgUnit => mean(
                &per_series(&|vs| back(vs, true))
                    .iter()
                    .map(|x| x.1)
                    .collect::<Vec<_>>(),
            ),
            A::MinSumOrgUnit => sum_of(per_series(&|vs| {
                vs.iter()
                    .filter(|(s, _)| inside(s))
                    .map(|(_, v)| *v)
                    .reduce(f64::min)
                    .map(|v| (0, v))
            })),
            _ => unreachable!("not compared"),
        }
    }

    proptest! {
        #[test]
        fn accumulators_agree_with_the_definitions(
            values in prop::collection::vec((0usize..8, 0i32..24, 1i32..4, -50i32..200), 0..40),
            from in 0i32..20,
            len in 1i32..6,
            kind in prop::sample::select(vec![
                A::Sum, A::Count, A::Min, A::Max, A::Average, A::AverageSumOrgUnit,
                A::Last, A::First, A::LastAverageOrgUnit, A::MinSumOrgUnit,
            ]),
        ) {
            // Periods of 1–3 "months" starting anywhere; the window a run of months.
            let values: Vec<(usize, Span, f64)> = values
                .into_iter()
                .map(|(s, m, n, v)| (s, Span::new(month(m).start, month(m + n - 1).end), f64::from(v)))
                .collect();
            // One value per series and period, and no two periods of a series
            // starting or ending together: ties have no defined order.
            let mut seen = std::collections::HashSet::new();
            let values: Vec<(usize, Span, f64)> = values
                .into_iter()
                .filter(|(s, span, _)| seen.insert((*s, 0, span.start)) & seen.insert((*s, 1, span.end)))
                .collect();
            let window = Window::new((from..from + len).map(month));
            let got = run(kind, &window, &values);
            let want = brute(kind, &window, &values);
            match (got, want) {
                (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-6, "{kind:?}: {a} vs {b}"),
                (a, b) => prop_assert_eq!(a, b, "{:?}", kind),
            }
        }
    }
}
