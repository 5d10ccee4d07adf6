//! The background compaction coordinator: one per engine. Commits and
//! takeovers signal it (never blocking) when a database's backlog passes the
//! thresholds; it runs at most one pass per database at a time, and up to
//! `max_concurrent` databases at once.

use std::collections::HashSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Engine;
use crate::cache::lock;
use crate::meta::Meta;

/// Handle on a running compactor; dropping it (or [`Compactor::stop`]) stops
/// it after the passes in progress.
pub struct Compactor {
    engine: Weak<Engine>,
    thread: Option<JoinHandle<()>>,
    sweeper: Option<JoinHandle<()>>,
}

impl Compactor {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            lock(&engine.compaction_signal).take();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.sweeper.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Engine {
    /// Start compacting in the background. The worker first finishes any
    /// deletion a crash cut short ([`Engine::sweep_deleted`]).
    pub fn start_compactor(self: &Arc<Self>) -> Compactor {
        let (tx, rx) = mpsc::channel::<String>();
        *lock(&self.compaction_signal) = Some(tx);
        let weak = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("kvlite-compactor".into())
            .spawn(move || {
                if let Some(engine) = weak.upgrade() {
                    match engine.sweep_deleted() {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(databases = n, "finished interrupted deletions"),
                        Err(e) => tracing::warn!(error = %e, "cannot finish interrupted deletions"),
                    }
                }
                coordinate(weak, rx)
            })
            .ok();
        let every = self.config.compaction.history_sweep;
        let weak = Arc::downgrade(self);
        let sweeper = (!every.is_zero())
            .then(|| {
                std::thread::Builder::new()
                    .name("kvlite-history-sweep".into())
                    .spawn(move || sweep_history(weak, every))
                    .ok()
            })
            .flatten();
        Compactor {
            engine: Arc::downgrade(self),
            thread,
            sweeper,
        }
    }

    /// Signal a pass on every database whose history floor has fallen out
    /// of its retention window (its pass will drop what only reads before
    /// the window needed). Returns how many were signalled.
    pub fn signal_expired_history(&self) -> crate::Result<u64> {
        let now = self.now_ms();
        let mut after: Option<String> = None;
        let mut signalled = 0;
        loop {
            let names = self.list("", after.as_deref(), 1000)?;
            let Some(last) = names.last().cloned() else {
                return Ok(signalled);
            };
            for name in names {
                let meta = self.kv.read(|txn| match self.resolve(txn, &name) {
                    Ok((_, _, meta)) => Ok(Some(meta)),
                    Err(crate::error::Fail::Api(crate::Error::NotFound(_))) => Ok(None),
                    Err(e) => Err(e),
                });
                let Some(meta) = meta? else { continue };
                let retention = crate::history::retention_of(&meta, self.config.history_retention);
                let expired = meta.history_floor < meta.head_txid
                    && now.saturating_sub(meta.history_floor_time_ms) > retention;
                if expired && let Some(tx) = lock(&self.compaction_signal).as_ref() {
                    let _ = tx.send(name);
                    signalled += 1;
                }
            }
            if after.as_ref().is_some_and(|a| last <= *a) {
                return Ok(signalled);
            }
            after = Some(last);
        }
    }

    /// Tell the compactor (if one runs) that `db` may need a pass: its
    /// backlog (commits not folded yet, page-index entries; deltas kept for
    /// history do not count) passed the thresholds, or it is over its quota (a pass
    /// reclaims what the commits allowed over it replaced).
    pub(crate) fn maybe_signal_compaction(&self, db: &str, meta: &Meta) {
        let over_quota = meta.quota_bytes > 0 && meta.used_bytes() > meta.quota_bytes;
        if (over_quota
            || self.config.compaction.is_due(
                meta.head_txid.saturating_sub(meta.materialized_txid),
                meta.pidx_count,
            ))
            && let Some(tx) = lock(&self.compaction_signal).as_ref()
        {
            let _ = tx.send(db.to_string());
        }
    }
}

/// Every `every`, signal the databases whose kept history has expired,
/// until the compactor stops (the engine's signal goes).
fn sweep_history(engine: Weak<Engine>, every: Duration) {
    let step = Duration::from_millis(50).min(every);
    let mut waited = Duration::ZERO;
    loop {
        std::thread::sleep(step);
        waited += step;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if lock(&engine.compaction_signal).is_none() {
            return;
        }
        if waited < every {
            continue;
        }
        waited = Duration::ZERO;
        match engine.signal_expired_history() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(databases = n, "history past its window"),
            Err(e) => tracing::warn!(error = %e, "cannot look for expired history"),
        }
    }
}

/// Pause after a pass failed on a full store, doubling up to the maximum:
/// compaction writes too, and hammering a full disk helps nobody.
const FULL_BACKOFF_FIRST: Duration = Duration::from_millis(500);
const FULL_BACKOFF_MAX: Duration = Duration::from_secs(60);

fn coordinate(engine: Weak<Engine>, rx: mpsc::Receiver<String>) {
    // Each finished pass: its database, and whether the store was full.
    let (done_tx, done_rx) = mpsc::channel::<(String, bool)>();
    let mut paused_until: Option<std::time::Instant> = None;
    let mut backoff = FULL_BACKOFF_FIRST;
    let mut waiting: Vec<String> = Vec::new();
    let mut queued: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut again: HashSet<String> = HashSet::new();
    let mut open = true;
    while open || !running.is_empty() {
        if open {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(db) => {
                    if running.contains(&db) {
                        again.insert(db);
                    } else if queued.insert(db.clone()) {
                        waiting.push(db);
                    }
                    while let Ok(db) = rx.try_recv() {
                        if running.contains(&db) {
                            again.insert(db);
                        } else if queued.insert(db.clone()) {
                            waiting.push(db);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
        while let Ok((db, full)) = done_rx.try_recv() {
            running.remove(&db);
            if full {
                paused_until = Some(std::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(FULL_BACKOFF_MAX);
                // Try this database again once the pause is over.
                again.insert(db.clone());
            } else {
                backoff = FULL_BACKOFF_FIRST;
            }
            if again.remove(&db) && queued.insert(db.clone()) {
                waiting.push(db);
            }
        }
        if paused_until.is_some_and(|t| std::time::Instant::now() < t) {
            continue;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine
            .metrics
            .compaction_queue
            .set((waiting.len() + running.len()) as i64);
        let max = engine.config.compaction.max_concurrent.max(1);
        while open && running.len() < max && !waiting.is_empty() {
            let db = waiting.remove(0);
            queued.remove(&db);
            running.insert(db.clone());
            let (engine, done, name) = (engine.clone(), done_tx.clone(), db.clone());
            let spawned = std::thread::Builder::new()
                .name("kvlite-compact".into())
                .spawn(move || {
                    let full = match engine.compact(&name) {
                        Ok(_) => false,
                        Err(e @ crate::Error::StoreFull(_)) => {
                            tracing::warn!(db = name, error = %e, "compaction paused: the store is full");
                            true
                        }
                        Err(e) => {
                            tracing::warn!(db = name, error = %e, "compaction pass failed");
                            false
                        }
                    };
                    let _ = done.send((name, full));
                });
            if spawned.is_err() {
                running.remove(&db);
                break;
            }
        }
    }
}
