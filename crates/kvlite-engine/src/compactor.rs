//! The background compaction coordinator: one per engine. Commits and
//! takeovers signal it (never blocking) when a database's backlog passes the
//! thresholds; it runs at most one pass per database at a time, and up to
//! `max_concurrent` databases at once.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Engine;
use crate::cache::lock;
use crate::meta::Meta;

/// Why a database may need a pass; a greater cause starts it sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cause {
    /// Anything else (an open, a retention change): the pass waits only for
    /// a pause in commits already signalled.
    Other,
    /// A commit landed: more may follow (a pass waits for a pause in them,
    /// `CompactionConfig::quiet`, unless the backlog is urgent).
    Commit,
    /// Start without waiting (a large backlog, over quota, a full store,
    /// expired history).
    Urgent,
}

pub(crate) struct Signal {
    db: String,
    cause: Cause,
}

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
        let (tx, rx) = mpsc::channel::<Signal>();
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
                    let _ = tx.send(Signal {
                        db: name,
                        cause: Cause::Urgent,
                    });
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
    /// reclaims what the commits allowed over it replaced). `cause`: what
    /// happened; a backlog past the urgent mark or over quota makes any
    /// cause urgent.
    pub(crate) fn maybe_signal_compaction(&self, db: &str, meta: &Meta, cause: Cause) {
        let over_quota = meta.quota_bytes > 0 && meta.used_bytes() > meta.quota_bytes;
        let config = &self.config.compaction;
        let backlog = meta.head_txid.saturating_sub(meta.materialized_txid);
        if (over_quota || config.is_due(backlog, meta.pidx_count))
            && let Some(tx) = lock(&self.compaction_signal).as_ref()
        {
            let cause = if over_quota || config.is_urgent(backlog, meta.pidx_count) {
                Cause::Urgent
            } else {
                cause
            };
            let _ = tx.send(Signal {
                db: db.to_string(),
                cause,
            });
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

/// Databases due a pass, not started yet.
#[derive(Default)]
struct Waiting {
    /// In the order they were first signalled.
    order: Vec<String>,
    signals: HashMap<String, Due>,
}

/// What a waiting database was told.
struct Due {
    /// When it was first signalled: it waits at most `MAX_DEFERRAL_QUIETS`
    /// times `quiet` from then, however its commits keep coming.
    first: Instant,
    /// Its latest commit past the thresholds.
    last_commit: Option<Instant>,
    urgent: bool,
}

/// A database due a pass waits for a pause in its commits at most this many
/// times `CompactionConfig::quiet`.
const MAX_DEFERRAL_QUIETS: u32 = 100;

impl Waiting {
    fn add(&mut self, db: String, cause: Cause, at: Instant) {
        let due = self.signals.entry(db.clone()).or_insert_with(|| {
            self.order.push(db);
            Due {
                first: at,
                last_commit: None,
                urgent: false,
            }
        });
        match cause {
            Cause::Commit => due.last_commit = Some(at),
            Cause::Urgent => due.urgent = true,
            Cause::Other => {}
        }
    }

    /// When the database can start: at once if urgent, else once no commit
    /// signalled it for `quiet` (or it has waited long enough).
    fn ready_at(&self, db: &str, quiet: Duration) -> Option<Instant> {
        let due = self.signals.get(db)?;
        if due.urgent {
            return Some(due.first);
        }
        let pause = due.last_commit.map_or(due.first, |t| t + quiet);
        Some(pause.min(due.first + quiet * MAX_DEFERRAL_QUIETS))
    }

    /// The first database ready at `now`, taken out.
    fn take_ready(&mut self, now: Instant, quiet: Duration) -> Option<String> {
        let i = self
            .order
            .iter()
            .position(|db| self.ready_at(db, quiet).is_some_and(|t| t <= now))?;
        let db = self.order.remove(i);
        self.signals.remove(&db);
        Some(db)
    }

    /// The earliest time a waiting database becomes ready.
    fn next_ready(&self, quiet: Duration) -> Option<Instant> {
        self.order
            .iter()
            .filter_map(|db| self.ready_at(db, quiet))
            .min()
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

/// How long the coordinator waits for signals when nothing else wakes it.
const IDLE_WAIT: Duration = Duration::from_millis(50);

fn coordinate(engine: Weak<Engine>, rx: mpsc::Receiver<Signal>) {
    // Each finished pass: its database, and whether the store was full.
    let (done_tx, done_rx) = mpsc::channel::<(String, bool)>();
    let mut paused_until: Option<Instant> = None;
    let mut backoff = FULL_BACKOFF_FIRST;
    let mut waiting = Waiting::default();
    let mut running: HashSet<String> = HashSet::new();
    // Signalled while their pass ran, with the strongest cause: queued
    // again when it ends.
    let mut again: HashMap<String, Cause> = HashMap::new();
    let (quiet, max) = match engine.upgrade() {
        Some(engine) => (
            engine.config.compaction.quiet,
            engine.config.compaction.max_concurrent.max(1),
        ),
        None => return,
    };
    let mut open = true;
    while open || !running.is_empty() {
        if open {
            // Wake for the next database to become ready, unless none can
            // start before a pause ends or a running pass finishes (passes
            // report on their own channel, looked at after each wake).
            let now = Instant::now();
            let wait = match paused_until {
                Some(t) if now < t => t - now,
                _ if running.len() >= max => IDLE_WAIT,
                _ => waiting
                    .next_ready(quiet)
                    .map_or(IDLE_WAIT, |t| t.saturating_duration_since(now)),
            }
            .clamp(Duration::from_millis(1), IDLE_WAIT);
            let mut take = |signal: Signal| {
                if running.contains(&signal.db) {
                    let cause = again.entry(signal.db).or_insert(signal.cause);
                    *cause = (*cause).max(signal.cause);
                } else {
                    waiting.add(signal.db, signal.cause, Instant::now());
                }
            };
            match rx.recv_timeout(wait) {
                Ok(signal) => {
                    take(signal);
                    while let Ok(signal) = rx.try_recv() {
                        take(signal);
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
                paused_until = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(FULL_BACKOFF_MAX);
                // Try this database again once the pause is over.
                again.insert(db.clone(), Cause::Urgent);
            } else {
                backoff = FULL_BACKOFF_FIRST;
            }
            if let Some(cause) = again.remove(&db) {
                waiting.add(db, cause, Instant::now());
            }
        }
        if paused_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine
            .metrics
            .compaction_queue
            .set((waiting.len() + running.len()) as i64);
        while open && running.len() < max {
            let Some(db) = waiting.take_ready(Instant::now(), quiet) else {
                break;
            };
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
