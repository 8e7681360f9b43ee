//! Small tables read whole on hot paths, kept in memory between writes.
//!
//! Every sync upload read all device policies (for the instructions in its
//! answer) and every form all data approvals (for the locks): two whole
//! tables per upload through the reader pool. They change rarely and only
//! through this store, so a copy is kept until this process writes them.
//! Several instances over one PostgreSQL do not see each other's writes,
//! so there a copy is also dropped once it is older than its time to live.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ApprovalRow, PolicyRecord};

pub struct TableCache<T> {
    /// Bumped by every write: a copy loaded under an older generation is
    /// not kept, as the write may have committed while it was read.
    generation: AtomicU64,
    copy: Mutex<Option<(u64, Instant, Vec<T>)>>,
    ttl: Option<Duration>,
}

impl<T: Clone> TableCache<T> {
    pub fn new(ttl: Option<Duration>) -> TableCache<T> {
        TableCache {
            generation: AtomicU64::new(0),
            copy: Mutex::new(None),
            ttl,
        }
    }

    /// The rows, if a copy is current.
    pub fn get(&self) -> Option<Vec<T>> {
        let copy = self.copy.lock().unwrap_or_else(|e| e.into_inner());
        let (generation, at, rows) = copy.as_ref()?;
        let fresh = self.ttl.is_none_or(|ttl| at.elapsed() < ttl);
        (*generation == self.generation.load(Ordering::Acquire) && fresh).then(|| rows.clone())
    }

    /// Call before reading the table; hand the result to [`TableCache::keep`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keep rows read under `generation`, unless a write came since.
    pub fn keep(&self, generation: u64, rows: &[T]) {
        let mut copy = self.copy.lock().unwrap_or_else(|e| e.into_inner());
        if generation == self.generation.load(Ordering::Acquire) {
            *copy = Some((generation, Instant::now(), rows.to_vec()));
        }
    }

    /// After a write has committed.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        *self.copy.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The store's cached tables.
pub struct StoreCaches {
    pub approvals: TableCache<ApprovalRow>,
    pub policies: TableCache<PolicyRecord>,
}

impl StoreCaches {
    /// `ttl`: `None` when this process is the database's only writer.
    pub fn new(ttl: Option<Duration>) -> StoreCaches {
        StoreCaches {
            approvals: TableCache::new(ttl),
            policies: TableCache::new(ttl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_during_a_read_drops_what_was_read() {
        let cache: TableCache<u32> = TableCache::new(None);
        assert_eq!(cache.get(), None);
        let before = cache.generation();
        cache.keep(before, &[1]);
        assert_eq!(cache.get(), Some(vec![1]));
        // A read starts, a write commits, the read ends: its rows are stale.
        let reading = cache.generation();
        cache.invalidate();
        cache.keep(reading, &[2]);
        assert_eq!(cache.get(), None);
        let after = cache.generation();
        cache.keep(after, &[3]);
        assert_eq!(cache.get(), Some(vec![3]));
    }

    #[test]
    fn a_copy_older_than_its_time_to_live_is_not_used() {
        let cache: TableCache<u32> = TableCache::new(Some(Duration::ZERO));
        let g = cache.generation();
        cache.keep(g, &[1]);
        assert_eq!(cache.get(), None);
    }
}
