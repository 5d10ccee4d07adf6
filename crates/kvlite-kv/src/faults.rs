//! Deterministic fault injection (feature `fault-injection`, for tests).
//!
//! [`FaultyBackend`] wraps any [`Backend`] and, driven by a seeded random
//! generator, makes operations fail at named points: reads fail as
//! if the store were unreachable, commits fail before anything is applied
//! (unreachable, or a conflict), or report [`KvError::CommitUnknown`] —
//! after applying the writes or without applying them, the two cases a
//! caller can never tell apart — and any point can be delayed. The same
//! seed gives the same faults for the same sequence of operations, so a
//! failing run can be replayed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::backend::{Backend, BackendTxn, Expected, Joined, KeyValue};
use crate::{KvError, Result, WriteSet};

/// How often each fault happens (each a probability in `0.0..=1.0`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// A read fails as unreachable.
    pub read_unavailable: f64,
    /// A commit fails as unreachable; nothing was applied.
    pub commit_unavailable: f64,
    /// A commit fails with a conflict; nothing was applied.
    pub commit_conflict: f64,
    /// A commit reports an unknown outcome and was not applied.
    pub unknown_not_applied: f64,
    /// A commit reports an unknown outcome and was applied.
    pub unknown_applied: f64,
    /// Any point pauses for up to `max_delay` first.
    pub delay: f64,
    pub max_delay: Duration,
}

impl FaultRates {
    /// A mix of every fault, each rare enough that the KV retry loop almost
    /// always gets through.
    pub fn mixed(rate: f64) -> Self {
        FaultRates {
            read_unavailable: rate,
            commit_unavailable: rate,
            commit_conflict: rate,
            unknown_not_applied: rate,
            unknown_applied: rate,
            delay: rate,
            max_delay: Duration::from_micros(200),
        }
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub read_unavailable: u64,
    pub commit_unavailable: u64,
    pub commit_conflict: u64,
    pub unknown_not_applied: u64,
    pub unknown_applied: u64,
    pub delays: u64,
}

#[derive(Default)]
struct Counters {
    read_unavailable: AtomicU64,
    commit_unavailable: AtomicU64,
    commit_conflict: AtomicU64,
    unknown_not_applied: AtomicU64,
    unknown_applied: AtomicU64,
    delays: AtomicU64,
}

struct Shared {
    rates: Mutex<FaultRates>,
    rng: Mutex<fastrand::Rng>,
    enabled: AtomicBool,
    counters: Counters,
}

impl Shared {
    /// Roll for a fault with probability `p` (false while disabled).
    fn roll(&self, p: f64) -> bool {
        p > 0.0
            && self.enabled.load(Ordering::SeqCst)
            && self
                .rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .f64()
                < p
    }

    fn rates(&self) -> FaultRates {
        *self.rates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn maybe_delay(&self) {
        let r = self.rates();
        if self.roll(r.delay) {
            self.counters.delays.fetch_add(1, Ordering::Relaxed);
            let nanos = r.max_delay.as_nanos().min(u64::MAX as u128) as u64;
            let pause = self
                .rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .u64(0..=nanos);
            std::thread::sleep(Duration::from_nanos(pause));
        }
    }

    fn read_fault(&self) -> Result<()> {
        self.maybe_delay();
        if self.roll(self.rates().read_unavailable) {
            self.counters
                .read_unavailable
                .fetch_add(1, Ordering::Relaxed);
            return Err(KvError::Unavailable(
                "injected fault: store unreachable".into(),
            ));
        }
        Ok(())
    }
}

/// A backend whose operations fail at seeded random points.
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    shared: Arc<Shared>,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn Backend>, rates: FaultRates, seed: u64) -> Self {
        FaultyBackend {
            inner,
            shared: Arc::new(Shared {
                rates: Mutex::new(rates),
                rng: Mutex::new(fastrand::Rng::with_seed(seed)),
                enabled: AtomicBool::new(true),
                counters: Counters::default(),
            }),
        }
    }

    /// Stop (or resume) injecting faults, e.g. to check the store's state
    /// without them.
    pub fn set_enabled(&self, on: bool) {
        self.shared.enabled.store(on, Ordering::SeqCst);
    }

    pub fn set_rates(&self, rates: FaultRates) {
        *self
            .shared
            .rates
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = rates;
    }

    pub fn counts(&self) -> FaultCounts {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FaultCounts {
            read_unavailable: get(&c.read_unavailable),
            commit_unavailable: get(&c.commit_unavailable),
            commit_conflict: get(&c.commit_conflict),
            unknown_not_applied: get(&c.unknown_not_applied),
            unknown_applied: get(&c.unknown_applied),
            delays: get(&c.delays),
        }
    }
}

impl Backend for FaultyBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn begin_read(&self) -> Result<Box<dyn BackendTxn + '_>> {
        self.shared.read_fault()?;
        Ok(Box::new(FaultyTxn {
            inner: self.inner.begin_read()?,
            shared: &self.shared,
        }))
    }

    fn begin_write(&self) -> Result<Box<dyn BackendTxn + '_>> {
        self.shared.read_fault()?;
        Ok(Box::new(FaultyTxn {
            inner: self.inner.begin_write()?,
            shared: &self.shared,
        }))
    }

    fn close(&self) {
        self.inner.close();
    }
}

struct FaultyTxn<'a> {
    inner: Box<dyn BackendTxn + 'a>,
    shared: &'a Shared,
}

impl BackendTxn for FaultyTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shared.read_fault()?;
        self.inner.get(key)
    }

    fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        self.shared.read_fault()?;
        self.inner.get_many(keys)
    }

    fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shared.read_fault()?;
        self.inner.get_for_update(key)
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        self.shared.read_fault()?;
        self.inner.scan(start, end, limit, reverse)
    }

    fn scan_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Vec<KeyValue>>> {
        self.shared.read_fault()?;
        self.inner.scan_many(ranges)
    }

    fn scan_joined_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Joined>> {
        self.shared.read_fault()?;
        self.inner.scan_joined_many(ranges)
    }

    fn last_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Option<KeyValue>>> {
        self.shared.read_fault()?;
        self.inner.last_many(ranges)
    }

    fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        (*self).commit_faulty(writes, |inner, writes| inner.commit(writes))
    }

    /// Passed through (the backend's own way of checking, e.g. in the
    /// commit's round trip on PostgreSQL), with the same faults as `commit`.
    fn commit_if(self: Box<Self>, expected: &[Expected], writes: WriteSet) -> Result<()> {
        (*self).commit_faulty(writes, |inner, writes| inner.commit_if(expected, writes))
    }
}

impl<'a> FaultyTxn<'a> {
    fn commit_faulty(
        self,
        writes: WriteSet,
        commit: impl FnOnce(Box<dyn BackendTxn + 'a>, WriteSet) -> Result<()>,
    ) -> Result<()> {
        let s = self.shared;
        if writes.is_empty() {
            return commit(self.inner, writes);
        }
        s.maybe_delay();
        let r = s.rates();
        let c = &s.counters;
        // Before the backend applies anything.
        if s.roll(r.commit_unavailable) {
            c.commit_unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(KvError::Unavailable(
                "injected fault: unreachable before commit".into(),
            ));
        }
        if s.roll(r.commit_conflict) {
            c.commit_conflict.fetch_add(1, Ordering::Relaxed);
            return Err(KvError::Conflict);
        }
        if s.roll(r.unknown_not_applied) {
            c.unknown_not_applied.fetch_add(1, Ordering::Relaxed);
            return Err(KvError::CommitUnknown(
                "injected fault: connection lost before the commit arrived".into(),
            ));
        }
        commit(self.inner, writes)?;
        // After it applied the writes.
        s.maybe_delay();
        if s.roll(r.unknown_applied) {
            c.unknown_applied.fetch_add(1, Ordering::Relaxed);
            return Err(KvError::CommitUnknown(
                "injected fault: connection lost after the commit applied".into(),
            ));
        }
        Ok(())
    }
}
