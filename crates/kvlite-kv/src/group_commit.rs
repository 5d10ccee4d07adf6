//! Group commit for the embedded stores: a write transaction commits
//! without an fsync, then waits until a flush begun after its commit has
//! made it durable. The first waiter to find no flush running makes one, so
//! every transaction that committed while the previous flush ran shares the
//! next. A commit is acknowledged only once durable; a reader waits until
//! everything it could see is durable, so nobody reads a commit a crash
//! could still take back.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crate::{KvError, Result};

/// Commits made without an fsync, and how far durable commits cover them.
#[derive(Default)]
pub(crate) struct GroupCommit {
    /// Write transactions committed so far (each counted once its commit
    /// returned).
    commits: AtomicU64,
    state: Mutex<FlushState>,
    flushed: Condvar,
}

#[derive(Default)]
struct FlushState {
    /// Every commit counted up to here is durable.
    durable: u64,
    /// Every commit counted up to here is durable or was dropped by a
    /// reopen: what a reader can see is durable.
    resolved: u64,
    flushing: bool,
    /// Commits a failed flush did not make durable: the failure broke the
    /// handle, and the reopen drops them.
    failed: Vec<FailedFlush>,
}

/// Commits `after..=upto` (by count) that a flush failed to make durable.
#[derive(Clone, Copy)]
struct FailedFlush {
    after: u64,
    upto: u64,
    /// The disk was full: redb writes the header last, so nothing of them
    /// reached it.
    full: bool,
}

impl FailedFlush {
    fn covers(&self, commit: u64) -> bool {
        self.after < commit && commit <= self.upto
    }
}

/// Failed flushes remembered (each one breaks the handle: they are rare).
const MAX_FAILED_FLUSHES: usize = 64;

thread_local! {
    /// Whether this thread holds an embedded write transaction.
    static WRITING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as holding a write transaction while alive.
pub(crate) struct WritingGuard;

impl WritingGuard {
    pub(crate) fn new() -> Self {
        WRITING.with(|w| w.set(true));
        WritingGuard
    }
}

impl Drop for WritingGuard {
    fn drop(&mut self) {
        WRITING.with(|w| w.set(false));
    }
}

impl GroupCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlushState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits counted so far.
    pub(crate) fn counted(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Count a commit that just returned; the number to wait for.
    pub(crate) fn committed(&self) -> u64 {
        self.commits.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Wait until commit `needed` is durable, making the durable commit
    /// (`flush`) when none is under way.
    pub(crate) fn wait(&self, needed: u64, flush: impl Fn() -> Result<()>) -> Result<()> {
        let mut st = self.lock();
        loop {
            if let Some(f) = st.failed.iter().find(|f| f.covers(needed)) {
                return Err(if f.full {
                    KvError::StoreFull("the disk is full: the commit was not made durable".into())
                } else {
                    KvError::CommitUnknown("an I/O error while making the commit durable".into())
                });
            }
            if st.durable >= needed {
                return Ok(());
            }
            if st.flushing {
                st = self.flushed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.flushing = true;
            // Everything counted now committed before the flush begins.
            let target = self.commits.load(Ordering::SeqCst);
            drop(st);
            let flushed = flush();
            st = self.lock();
            st.flushing = false;
            match flushed {
                Ok(()) => st.durable = st.durable.max(target),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make commits durable");
                    if st.failed.len() == MAX_FAILED_FLUSHES {
                        st.failed.remove(0);
                    }
                    let failed = FailedFlush {
                        after: st.durable,
                        upto: target,
                        full: matches!(e, KvError::StoreFull(_)),
                    };
                    st.failed.push(failed);
                }
            }
            self.flushed.notify_all();
        }
    }

    /// Wait, without flushing, until every commit made so far is durable
    /// (a reader; committers make the flushes). Not on a thread holding a
    /// write transaction: the flush would wait for its writer lock.
    pub(crate) fn wait_readable(&self) -> Result<()> {
        if WRITING.with(Cell::get) {
            return Ok(());
        }
        let needed = self.commits.load(Ordering::SeqCst);
        let mut st = self.lock();
        loop {
            if st.durable >= needed || st.resolved >= needed {
                return Ok(());
            }
            if st.failed.iter().any(|f| f.covers(needed)) {
                // Retried after the reopen, which drops what was not durable.
                return Err(KvError::Unavailable(
                    "the store is reopening after an I/O error".into(),
                ));
            }
            st = self.flushed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A reopen dropped every commit not yet durable.
    pub(crate) fn reopened(&self) {
        let mut st = self.lock();
        st.resolved = self.commits.load(Ordering::SeqCst);
        self.flushed.notify_all();
    }
}
