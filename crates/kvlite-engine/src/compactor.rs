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
        Compactor {
            engine: Arc::downgrade(self),
            thread,
        }
    }

    /// Tell the compactor (if one runs) that `db` may need a pass: its
    /// backlog passed the thresholds, or it is over its quota (a pass
    /// reclaims what the commits allowed over it replaced).
    pub(crate) fn maybe_signal_compaction(&self, db: &str, meta: &Meta) {
        let over_quota = meta.quota_bytes > 0 && meta.used_bytes() > meta.quota_bytes;
        if (over_quota
            || self
                .config
                .compaction
                .is_due(meta.delta_count, meta.pidx_count))
            && let Some(tx) = lock(&self.compaction_signal).as_ref()
        {
            let _ = tx.send(db.to_string());
        }
    }
}

fn coordinate(engine: Weak<Engine>, rx: mpsc::Receiver<String>) {
    let (done_tx, done_rx) = mpsc::channel::<String>();
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
        while let Ok(db) = done_rx.try_recv() {
            running.remove(&db);
            if again.remove(&db) && queued.insert(db.clone()) {
                waiting.push(db);
            }
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
                    if let Err(e) = engine.compact(&name) {
                        tracing::warn!(db = name, error = %e, "compaction pass failed");
                    }
                    let _ = done.send(name);
                });
            if spawned.is_err() {
                running.remove(&db);
                break;
            }
        }
    }
}
