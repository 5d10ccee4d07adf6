//! In-memory backend for tests. Writers take turns (one write transaction at
//! a time, like redb), readers get O(1) snapshots of a persistent map. It can
//! inject conflicts at commit so callers' retry paths run in unit tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use imbl::OrdMap;

use crate::backend::{Backend, BackendTxn, KeyValue};
use crate::{KvError, Result, WriteSet};

type Map = OrdMap<Vec<u8>, Vec<u8>>;

pub struct MemoryBackend {
    current: RwLock<Map>,
    writer: Mutex<()>,
    closed: AtomicBool,
    /// Fail this fraction of write commits with a conflict.
    conflict_rate: Mutex<Option<(f64, fastrand::Rng)>>,
    /// The next write commit applies, then reports an unknown outcome, and
    /// the store is unreachable until [`MemoryBackend::heal`].
    lose_next_commit_reply: AtomicBool,
    unreachable: AtomicBool,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    pub fn new() -> Self {
        MemoryBackend {
            current: RwLock::new(Map::new()),
            writer: Mutex::new(()),
            closed: AtomicBool::new(false),
            conflict_rate: Mutex::new(None),
            lose_next_commit_reply: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
        }
    }

    /// Simulate a network store dying mid-commit: the next write commit is
    /// applied but answers [`KvError::CommitUnknown`], and every transaction
    /// after it fails with [`KvError::Unavailable`] until [`Self::heal`].
    pub fn lose_next_commit_reply(&self) {
        self.lose_next_commit_reply.store(true, Ordering::SeqCst);
    }

    /// Make the store reachable again.
    pub fn heal(&self) {
        self.unreachable.store(false, Ordering::SeqCst);
    }

    /// Make a seeded-random `rate` (0..=1) of write commits fail with
    /// [`KvError::Conflict`] without applying anything.
    pub fn inject_conflicts(&self, rate: f64, seed: u64) {
        *lock(&self.conflict_rate) = Some((rate, fastrand::Rng::with_seed(seed)));
    }

    fn snapshot(&self) -> Result<Map> {
        if self.closed.load(Ordering::Acquire) {
            return Err(KvError::Closed);
        }
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(KvError::Unavailable("injected: store unreachable".into()));
        }
        Ok(self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    /// Total bytes of keys and values stored (for tests and stats).
    pub fn stored_bytes(&self) -> usize {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn begin_read(&self) -> Result<Box<dyn BackendTxn + '_>> {
        Ok(Box::new(MemoryTxn {
            backend: self,
            snapshot: self.snapshot()?,
            _writer: None,
        }))
    }

    fn begin_write(&self) -> Result<Box<dyn BackendTxn + '_>> {
        let guard = lock(&self.writer);
        Ok(Box::new(MemoryTxn {
            backend: self,
            snapshot: self.snapshot()?,
            _writer: Some(guard),
        }))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

struct MemoryTxn<'a> {
    backend: &'a MemoryBackend,
    snapshot: Map,
    /// Held by write transactions until they end.
    _writer: Option<MutexGuard<'a, ()>>,
}

impl BackendTxn for MemoryTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snapshot.get(key).cloned())
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let range = self.snapshot.range(start.to_vec()..end.to_vec());
        let pick = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(if reverse {
            range.rev().take(limit).map(pick).collect()
        } else {
            range.take(limit).map(pick).collect()
        })
    }

    fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        if self._writer.is_none() || writes.is_empty() {
            return Ok(());
        }
        if self.backend.closed.load(Ordering::Acquire) {
            return Err(KvError::Closed);
        }
        if let Some((rate, rng)) = lock(&self.backend.conflict_rate).as_mut()
            && rng.f64() < *rate
        {
            return Err(KvError::Conflict);
        }
        let mut next = self.snapshot;
        for (start, end) in writes.cleared_ranges() {
            let doomed: Vec<Vec<u8>> = next
                .range(start.clone()..end.clone())
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                next.remove(&k);
            }
        }
        for (key, value) in writes.points() {
            match value {
                Some(v) => {
                    next.insert(key.to_vec(), v.to_vec());
                }
                None => {
                    next.remove(key);
                }
            }
        }
        *self
            .backend
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next;
        if self
            .backend
            .lose_next_commit_reply
            .swap(false, Ordering::SeqCst)
        {
            self.backend.unreachable.store(true, Ordering::SeqCst);
            return Err(KvError::CommitUnknown(
                "injected: connection lost during commit".into(),
            ));
        }
        Ok(())
    }
}
