//! Per-database state the engine keeps in memory: the database id, the last
//! META it saw, and a memo of the page index.
//!
//! The page-index memo is tagged with the META `version` it was read at, and
//! is only used by a transaction that read that same version — so it is
//! exactly the PIDX of that transaction's snapshot, whoever else writes the
//! store. A commit updates it only if it was already loaded and current
//! (never loads it: that would cost the fast path its single round trip).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kvlite_kv::{KvRead, ScanOptions};

use kvlite_api::CorruptionKind;

use crate::error::{Result, corrupt};
use crate::keys::DbKeys;
use crate::meta::Meta;
pub use crate::records::Loc;

/// The newest version of every page `1..=size` still in the page index
/// (a page without one is in its shard), as of one META version.
#[derive(Debug, Clone)]
pub struct PageIndex {
    /// META version this index reflects.
    pub version: u64,
    pub entries: BTreeMap<u32, Loc>,
}

impl PageIndex {
    /// Read the page index of a database as of `meta`.
    pub fn load(txn: &mut impl KvRead, db: &str, keys: &DbKeys, meta: &Meta) -> Result<Self> {
        let (start, end) = keys.pidx_pages(1, meta.size_pages.saturating_add(1));
        Self::from_entries(db, meta.version, txn.scan(&start, &end, ScanOptions::ALL)?)
    }

    /// The index as of META `version` from its entries (ascending, as a scan
    /// of [`DbKeys::pidx_pages`] returns them).
    pub fn from_entries(db: &str, version: u64, scanned: Vec<kvlite_kv::KeyValue>) -> Result<Self> {
        let mut entries = BTreeMap::new();
        // Versions of a page come oldest first: the last one stays.
        for (k, v) in scanned {
            let (pgno, loc) = crate::records::decode_pidx(&k, &v).ok_or_else(|| {
                corrupt(
                    db,
                    CorruptionKind::Record,
                    format!("malformed page-index entry {k:?}"),
                )
            })?;
            entries.insert(pgno, loc);
        }
        Ok(PageIndex { version, entries })
    }
}

pub struct DbState {
    pub id: u64,
    /// Newest META this engine saw (a hint: always re-checked in a transaction).
    pub meta: Option<Meta>,
    pub pidx: Option<PageIndex>,
    last_used: u64,
}

impl DbState {
    /// The cached page index if it reflects META `version`.
    pub fn pidx_at(&self, version: u64) -> Option<&PageIndex> {
        self.pidx.as_ref().filter(|p| p.version == version)
    }
}

/// All databases' states, with a global bound on cached page-index entries.
pub struct StateTable {
    dbs: Mutex<HashMap<String, Arc<Mutex<DbState>>>>,
    clock: AtomicU64,
    cached_entries: AtomicUsize,
    max_cached_entries: usize,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StateTable {
    pub fn new(max_cached_entries: usize) -> Self {
        StateTable {
            dbs: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            cached_entries: AtomicUsize::new(0),
            max_cached_entries,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Mutex<DbState>>> {
        let state = lock(&self.dbs).get(name).cloned()?;
        lock(&state).last_used = self.clock.fetch_add(1, Ordering::Relaxed);
        Some(state)
    }

    /// The state for `name` with database `id`, replacing a state for another
    /// id (the database was deleted and recreated).
    pub fn get_or_insert(&self, name: &str, id: u64) -> Arc<Mutex<DbState>> {
        let mut dbs = lock(&self.dbs);
        if let Some(state) = dbs.get(name) {
            let mut s = lock(state);
            if s.id == id {
                s.last_used = self.clock.fetch_add(1, Ordering::Relaxed);
                drop(s);
                return state.clone();
            }
        }
        let state = Arc::new(Mutex::new(DbState {
            id,
            meta: None,
            pidx: None,
            last_used: self.clock.fetch_add(1, Ordering::Relaxed),
        }));
        if let Some(old) = dbs.insert(name.to_string(), state.clone()) {
            self.forget_entries(&mut lock(&old));
        }
        state
    }

    /// Forget every cached page index and META (states stay: they only hold
    /// ids, which never change meaning).
    pub fn clear(&self) {
        let states: Vec<_> = lock(&self.dbs).values().cloned().collect();
        for state in states {
            let mut s = lock(&state);
            self.set_pidx(&mut s, None);
            s.meta = None;
        }
    }

    pub fn remove(&self, name: &str) {
        if let Some(old) = lock(&self.dbs).remove(name) {
            self.forget_entries(&mut lock(&old));
        }
    }

    fn forget_entries(&self, state: &mut DbState) {
        if let Some(p) = state.pidx.take() {
            self.cached_entries
                .fetch_sub(p.entries.len(), Ordering::Relaxed);
        }
    }

    /// Replace a state's page index (None to drop it), keeping the global
    /// count right.
    pub fn set_pidx(&self, state: &mut DbState, pidx: Option<PageIndex>) {
        self.forget_entries(state);
        if let Some(p) = &pidx {
            self.cached_entries
                .fetch_add(p.entries.len(), Ordering::Relaxed);
        }
        state.pidx = pidx;
    }

    /// Adjust the global count after entries were added or removed in place.
    pub fn adjust(&self, before: usize, after: usize) {
        if after >= before {
            self.cached_entries
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.cached_entries
                .fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Drop least-recently-used page indexes until under the bound. `keep` is
    /// the caller's own database (its lock is held by the caller).
    pub fn evict(&self, keep: &str) {
        if self.cached_entries.load(Ordering::Relaxed) <= self.max_cached_entries {
            return;
        }
        let mut candidates: Vec<(u64, Arc<Mutex<DbState>>)> = lock(&self.dbs)
            .iter()
            .filter(|(name, _)| name.as_str() != keep)
            .filter_map(|(_, s)| s.try_lock().ok().map(|g| (g.last_used, s.clone())))
            .collect();
        candidates.sort_by_key(|(used, _)| *used);
        for (_, state) in candidates {
            if self.cached_entries.load(Ordering::Relaxed) <= self.max_cached_entries {
                break;
            }
            if let Ok(mut s) = state.try_lock() {
                self.set_pidx(&mut s, None);
            }
        }
    }
}
