//! VFS-side counters, readable through [`crate::Vfs::metrics`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct VfsMetrics {
    pub(crate) commits: AtomicU64,
    pub(crate) batch_commits: AtomicU64,
    pub(crate) sync_commits: AtomicU64,
    pub(crate) large_commits: AtomicU64,
    pub(crate) empty_commits: AtomicU64,
    pub(crate) failed_commits: AtomicU64,
    pub(crate) commit_nanos: AtomicU64,
    pub(crate) commit_prepare_nanos: AtomicU64,
    pub(crate) commit_send_nanos: AtomicU64,
    pub(crate) pages_committed: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) page_requests: AtomicU64,
    pub(crate) pages_fetched: AtomicU64,
    pub(crate) bytes_fetched: AtomicU64,
    pub(crate) fetch_nanos: AtomicU64,
    pub(crate) prefetches: AtomicU64,
    pub(crate) prefetches_used: AtomicU64,
    pub(crate) poisonings: AtomicU64,
    pub(crate) read_transactions: AtomicU64,
    pub(crate) pages_invalidated: AtomicU64,
    pub(crate) cache_resets: AtomicU64,
}

/// A point-in-time copy of [`VfsMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Engine commits sent (fast and large).
    pub commits: u64,
    /// Commits that came through BEGIN/COMMIT_ATOMIC_WRITE.
    pub batch_commits: u64,
    /// Commits made at the database file's sync (buffered writes).
    pub sync_commits: u64,
    /// Commits that took the large (multi-part) path.
    pub large_commits: u64,
    /// Commit points with nothing to write (no round trip).
    pub empty_commits: u64,
    pub failed_commits: u64,
    /// Total time in commits, and its two phases: preparing the dirty pages,
    /// and the round trip(s) to the engine.
    pub commit_time: Duration,
    pub commit_prepare_time: Duration,
    pub commit_send_time: Duration,
    pub pages_committed: u64,
    pub bytes_sent: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// get_pages round trips (prefetches included).
    pub page_requests: u64,
    pub pages_fetched: u64,
    pub bytes_fetched: u64,
    /// Time SQLite waited for missed pages.
    pub fetch_time: Duration,
    /// Windows of a scan fetched ahead on another thread, and those whose
    /// answer was used (the others were discarded: the scan stopped or
    /// jumped, or a commit or a new read transaction came first).
    pub prefetches: u64,
    pub prefetches_used: u64,
    pub poisonings: u64,
    /// Read transactions a read-only connection began (shared locks).
    pub read_transactions: u64,
    /// Cached pages a reader dropped because a later commit changed them.
    pub pages_invalidated: u64,
    /// Times a reader dropped its whole cache (the engine could not list
    /// the changes).
    pub cache_resets: u64,
}

impl VfsMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let n = |a: &AtomicU64| a.load(Relaxed);
        MetricsSnapshot {
            commits: n(&self.commits),
            batch_commits: n(&self.batch_commits),
            sync_commits: n(&self.sync_commits),
            large_commits: n(&self.large_commits),
            empty_commits: n(&self.empty_commits),
            failed_commits: n(&self.failed_commits),
            commit_time: Duration::from_nanos(n(&self.commit_nanos)),
            commit_prepare_time: Duration::from_nanos(n(&self.commit_prepare_nanos)),
            commit_send_time: Duration::from_nanos(n(&self.commit_send_nanos)),
            pages_committed: n(&self.pages_committed),
            bytes_sent: n(&self.bytes_sent),
            cache_hits: n(&self.cache_hits),
            cache_misses: n(&self.cache_misses),
            page_requests: n(&self.page_requests),
            pages_fetched: n(&self.pages_fetched),
            bytes_fetched: n(&self.bytes_fetched),
            fetch_time: Duration::from_nanos(n(&self.fetch_nanos)),
            prefetches: n(&self.prefetches),
            prefetches_used: n(&self.prefetches_used),
            poisonings: n(&self.poisonings),
            read_transactions: n(&self.read_transactions),
            pages_invalidated: n(&self.pages_invalidated),
            cache_resets: n(&self.cache_resets),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, v: u64) {
        counter.fetch_add(v, Relaxed);
    }

    pub(crate) fn time(counter: &AtomicU64, d: Duration) {
        counter.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }
}
