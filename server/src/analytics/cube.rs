//! The live cube: numeric data values of the data elements analytics has
//! been asked about, held in memory by data element and period, kept
//! current from the store's value feed (this instance's writes, applied as
//! they commit) and a poll (other instances' writes, on PostgreSQL).
//!
//! DHIS2 rebuilds analytics tables at night; here a value is in the cube the
//! moment its transaction commits, and a query scans only the periods it
//! needs of the elements it names. A data element's column is read from the
//! store once, on first use; writes that commit while it loads are queued
//! and replayed over it, and every cell keeps its write time so a late or
//! repeated change never overwrites a newer one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};

use hisa_shared::aggregation::Span;
use hisa_shared::period::Period;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::error::ServerResult;
use crate::store::{Store, ValueChange, Written};

/// The series of a value: org unit × category option combo × attribute option combo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub org_unit: i64,
    pub coc: i64,
    pub aoc: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Cell {
    /// `NaN` marks a deleted (or non-numeric) value, kept for its time.
    pub value: f64,
    /// Unix milliseconds of the write.
    pub at: i64,
}

/// One data element's values by period.
#[derive(Debug, Default)]
pub struct Column {
    pub by_period: HashMap<i64, HashMap<SeriesKey, Cell>>,
    pub cells: usize,
}

impl Column {
    fn apply(&mut self, c: &ValueChange) {
        let value = if c.deleted {
            f64::NAN
        } else {
            numeric(c.value.as_deref())
        };
        let at = millis(c.last_updated);
        let key = SeriesKey {
            org_unit: c.key.org_unit_id,
            coc: c.key.category_option_combo_id,
            aoc: c.key.attribute_option_combo_id,
        };
        let cells = self.by_period.entry(c.key.period_id).or_default();
        match cells.get_mut(&key) {
            Some(cell) if cell.at > at => {}
            Some(cell) => *cell = Cell { value, at },
            None => {
                cells.insert(key, Cell { value, at });
                self.cells += 1;
            }
        }
    }
}

/// The number analytics reads from a stored value: numbers as written,
/// booleans as 1 and 0, anything else none.
pub fn numeric(value: Option<&str>) -> f64 {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("true") => 1.0,
        Some(v) if v.eq_ignore_ascii_case("false") => 0.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

enum Slot {
    /// Being read from the store; changes wait here. `stale` when a write
    /// too large to replay committed meanwhile: the load is then thrown
    /// away and read again.
    Loading {
        queue: Vec<ValueChange>,
        stale: bool,
    },
    Ready(Arc<RwLock<Column>>),
}

struct State {
    columns: HashMap<i64, Slot>,
    /// When each column was last asked for, for eviction.
    used: HashMap<i64, std::time::Instant>,
    /// Period id → its span and ISO string.
    periods: HashMap<i64, (Span, String)>,
    /// Latest write time seen, for the poll.
    watermark: Option<OffsetDateTime>,
}

pub struct Cube {
    store: Arc<dyn Store>,
    /// Cells held before the least recently used columns are dropped.
    max_cells: usize,
    state: Mutex<State>,
    loaded: Notify,
    /// Set when a warm-up has finished.
    warm: tokio::sync::watch::Sender<bool>,
}

/// How far back a poll re-reads: a transaction on another instance that
/// stamps its values earlier than it commits is still seen if it commits
/// within this time.
const POLL_OVERLAP: time::Duration = time::Duration::seconds(10);

impl Cube {
    /// A cube over `store`, subscribed to its value feed.
    pub fn new(store: Arc<dyn Store>, max_cells: usize) -> Arc<Cube> {
        let cube = Arc::new(Cube {
            store: store.clone(),
            max_cells,
            state: Mutex::new(State {
                columns: HashMap::new(),
                used: HashMap::new(),
                periods: HashMap::new(),
                watermark: None,
            }),
            loaded: Notify::new(),
            warm: tokio::sync::watch::channel(false).0,
        });
        let weak: Weak<Cube> = Arc::downgrade(&cube);
        store.value_feed().subscribe(move |written| {
            if let Some(cube) = weak.upgrade() {
                match written {
                    Written::Values(changes) => cube.apply(changes),
                    Written::Elements(elements) => cube.invalidate(elements),
                }
            }
        });
        cube
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply committed writes to the columns held (others are read fresh
    /// when first asked for).
    pub fn apply(&self, changes: &[ValueChange]) {
        let mut state = self.lock();
        for c in changes {
            if state.watermark.is_none_or(|w| c.last_updated > w) {
                state.watermark = Some(c.last_updated);
            }
            match state.columns.get_mut(&c.key.data_element_id) {
                Some(Slot::Loading { queue, .. }) => queue.push(c.clone()),
                Some(Slot::Ready(column)) => {
                    column.write().unwrap_or_else(|e| e.into_inner()).apply(c)
                }
                None => {}
            }
        }
    }

    /// The columns of `elements`, reading from the store those not held.
    pub async fn columns(
        &self,
        elements: &[i64],
    ) -> ServerResult<HashMap<i64, Arc<RwLock<Column>>>> {
        loop {
            let mut to_load = Vec::new();
            let mut waiting = false;
            let mut out = HashMap::new();
            {
                let mut state = self.lock();
                for &de in elements {
                    match state.columns.get(&de) {
                        Some(Slot::Ready(c)) => {
                            out.insert(de, c.clone());
                        }
                        Some(Slot::Loading { .. }) => waiting = true,
                        None => {
                            state.columns.insert(
                                de,
                                Slot::Loading {
                                    queue: Vec::new(),
                                    stale: false,
                                },
                            );
                            to_load.push(de);
                        }
                    }
                }
            }
            if !to_load.is_empty() {
                self.load(&to_load).await?;
                continue;
            }
            if waiting {
                let notified = self.loaded.notified();
                // Another request is loading: wait for it, then look again.
                let still = {
                    let state = self.lock();
                    elements
                        .iter()
                        .any(|de| matches!(state.columns.get(de), Some(Slot::Loading { .. })))
                };
                if still {
                    notified.await;
                }
                continue;
            }
            self.evict(elements);
            return Ok(out);
        }
    }

    /// Drop the least recently used columns (never those of `keep`) while
    /// more than `max_cells` cells are held. A query already holding a
    /// dropped column finishes with it; the next one reads it again.
    fn evict(&self, keep: &[i64]) {
        let mut state = self.lock();
        let now = std::time::Instant::now();
        for de in keep {
            state.used.insert(*de, now);
        }
        let mut sizes: Vec<(std::time::Instant, i64, usize)> = state
            .columns
            .iter()
            .filter_map(|(de, slot)| match slot {
                Slot::Ready(c) => Some((
                    state.used.get(de).copied().unwrap_or(now),
                    *de,
                    c.read().map(|c| c.cells).unwrap_or(0),
                )),
                Slot::Loading { .. } => None,
            })
            .collect();
        let mut total: usize = sizes.iter().map(|s| s.2).sum();
        sizes.sort();
        for (_, de, cells) in sizes {
            if total <= self.max_cells {
                break;
            }
            if keep.contains(&de) {
                continue;
            }
            state.columns.remove(&de);
            state.used.remove(&de);
            total -= cells;
            tracing::info!(
                data_element = de,
                cells,
                "analytics: column dropped to stay under the cell limit"
            );
        }
    }

    async fn load(&self, elements: &[i64]) -> ServerResult<()> {
        let mut columns: HashMap<i64, Column> =
            elements.iter().map(|de| (*de, Column::default())).collect();
        let mut newest: Option<OffsetDateTime> = None;
        let read = self
            .store
            .analytics_values(elements, &[], None, &mut |r| {
                if newest.is_none_or(|n| r.last_updated > n) {
                    newest = Some(r.last_updated);
                }
                if let Some(c) = columns.get_mut(&r.key.data_element_id) {
                    c.apply(&r);
                }
            })
            .await;
        match read {
            Ok(()) => {}
            Err(e) => {
                // Give the slots back so the next request tries again.
                let mut state = self.lock();
                for de in elements {
                    state.columns.remove(de);
                }
                drop(state);
                self.loaded.notify_waiters();
                return Err(e.into());
            }
        }
        let mut state = self.lock();
        for (de, mut column) in columns {
            match state.columns.remove(&de) {
                // Too much was written meanwhile to replay: read it again.
                Some(Slot::Loading { stale: true, .. }) => continue,
                Some(Slot::Loading { queue, .. }) => {
                    for c in &queue {
                        column.apply(c);
                    }
                }
                _ => {}
            }
            state
                .columns
                .insert(de, Slot::Ready(Arc::new(RwLock::new(column))));
        }
        if let Some(max) = newest {
            if state.watermark.is_none_or(|w| max > w) {
                state.watermark = Some(max);
            }
        }
        drop(state);
        self.loaded.notify_waiters();
        Ok(())
    }

    /// Spans of these period ids, reading the period table again when one
    /// is new.
    pub async fn periods(
        &self,
        ids: impl IntoIterator<Item = i64>,
    ) -> ServerResult<HashMap<i64, (Span, String)>> {
        let ids: Vec<i64> = ids.into_iter().collect();
        let missing = {
            let state = self.lock();
            ids.iter().any(|id| !state.periods.contains_key(id))
        };
        if missing {
            let all = self.store.all_periods().await?;
            let mut state = self.lock();
            for (id, iso) in all {
                if let Ok(p) = Period::parse(&iso) {
                    state.periods.insert(id, (Span::of(&p), iso));
                }
            }
        }
        let state = self.lock();
        Ok(ids
            .into_iter()
            .filter_map(|id| state.periods.get(&id).map(|p| (id, p.clone())))
            .collect())
    }

    /// Read these elements into memory one by one, in the background after
    /// start, so that the first analytics query does not wait for them;
    /// stops at 80% of the cell limit. A query for an element not yet read
    /// reads it itself.
    pub async fn warm_up(self: Arc<Self>, elements: Vec<i64>) {
        let started = std::time::Instant::now();
        let mut read = 0usize;
        for de in elements {
            if self.cells() >= self.max_cells / 5 * 4 {
                break;
            }
            if let Err(e) = self.columns(&[de]).await {
                tracing::warn!("analytics warm-up stopped: {e}");
                break;
            }
            read += 1;
        }
        self.warm.send_replace(true);
        tracing::info!(
            elements = read,
            cells = self.cells(),
            seconds = started.elapsed().as_secs_f64(),
            "analytics: data in memory"
        );
    }

    /// Resolves once a warm-up has finished (never without one).
    pub async fn warmed(&self) {
        let mut rx = self.warm.subscribe();
        let _ = rx.wait_for(|w| *w).await;
    }

    /// Read what other instances wrote since the last poll.
    pub async fn poll(&self) -> ServerResult<usize> {
        let since = {
            let state = self.lock();
            if state.columns.is_empty() {
                return Ok(0);
            }
            state.watermark.map(|w| w - POLL_OVERLAP)
        };
        let Some(since) = since else { return Ok(0) };
        let held: Vec<i64> = self.lock().columns.keys().copied().collect();
        let mut changes = Vec::new();
        self.store
            .analytics_values(&held, &[], Some(since), &mut |c| changes.push(c))
            .await?;
        let n = changes.len();
        self.apply(&changes);
        Ok(n)
    }

    /// Forget these elements' columns: a write too large to replay value
    /// by value touched them. They are read again when next asked for.
    pub fn invalidate(&self, elements: &HashSet<i64>) {
        let mut state = self.lock();
        for de in elements {
            match state.columns.get_mut(de) {
                Some(Slot::Loading { stale, .. }) => *stale = true,
                Some(Slot::Ready(_)) => {
                    state.columns.remove(de);
                }
                None => {}
            }
        }
    }

    /// Cells held, over all columns.
    pub fn cells(&self) -> usize {
        self.lock()
            .columns
            .values()
            .map(|s| match s {
                Slot::Ready(c) => c.read().map(|c| c.cells).unwrap_or(0),
                Slot::Loading { .. } => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_booleans_are_read_and_text_is_not() {
        assert_eq!(numeric(Some("12")), 12.0);
        assert_eq!(numeric(Some(" 2.5 ")), 2.5);
        assert_eq!(numeric(Some("true")), 1.0);
        assert_eq!(numeric(Some("false")), 0.0);
        assert!(numeric(Some("abc")).is_nan());
        assert!(numeric(Some("inf")).is_nan());
        assert!(numeric(None).is_nan());
    }

    #[test]
    fn an_older_write_never_overwrites_a_newer_one() {
        let mut col = Column::default();
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let change = |v: &str, t: i64, deleted: bool| ValueChange {
            key: crate::store::ValueKey {
                org_unit_id: 1,
                period_id: 2,
                data_element_id: 3,
                category_option_combo_id: 4,
                attribute_option_combo_id: 5,
            },
            value: Some(v.into()),
            deleted,
            last_updated: at(t),
        };
        col.apply(&change("5", 10, false));
        col.apply(&change("7", 9, false));
        let cell = |c: &Column| c.by_period[&2].values().next().copied().unwrap();
        assert_eq!(cell(&col).value, 5.0);
        col.apply(&change("5", 11, true));
        assert!(cell(&col).value.is_nan());
        assert_eq!(col.cells, 1);
    }
}
