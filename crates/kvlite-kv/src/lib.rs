//! kvlite's transactional key-value contract.
//!
//! Serializable transactions over one ordered byte-key space, shaped like
//! FoundationDB's so any backend fits: snapshot reads, buffered writes with
//! read-your-writes, one atomic commit, retryable conflicts, and FDB's limits
//! (key ≤ 10 KB, value ≤ 100 KB, ≤ 10 MB written and ≤ 5 s per transaction)
//! enforced identically for every backend. Larger logical values are stored as
//! chunks ([`chunked`]).
//!
//! Backends: [`memory`] (tests), [`sqlite_file`] (the on-disk default: one
//! SQLite file in WAL mode), [`embedded`] (redb: the on-disk store before it,
//! still opened where its file exists) and [`postgres`] (a shared PostgreSQL
//! server).

pub mod backend;
pub mod chunked;
pub mod embedded;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod group_commit;
pub mod memory;
pub mod postgres;
pub mod sqlite_file;
mod txn;
mod writeset;

use std::sync::Arc;
use std::time::Duration;

pub use backend::{Backend, BackendTxn, Joined, KeyValue, SpaceReclaimed, Watch};
pub use error::{KvError, Result, Retryable};
pub use txn::{KvRead, ReadTxn, ScanOptions, WriteTxn};
pub use writeset::WriteSet;

/// FoundationDB's key size limit.
pub const MAX_KEY_SIZE: usize = 10_000;
/// FoundationDB's value size limit.
pub const MAX_VALUE_SIZE: usize = 100_000;
/// FoundationDB's transaction size limit (bytes of mutations).
pub const MAX_TXN_BYTES: usize = 10_000_000;
/// FoundationDB's transaction lifetime.
pub const MAX_TXN_DURATION: Duration = Duration::from_secs(5);

/// Per-transaction limits. Every backend enforces the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_size: usize,
    pub max_value_size: usize,
    pub max_txn_bytes: usize,
    pub max_txn_duration: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_size: MAX_KEY_SIZE,
            max_value_size: MAX_VALUE_SIZE,
            max_txn_bytes: MAX_TXN_BYTES,
            max_txn_duration: MAX_TXN_DURATION,
        }
    }
}

/// A handle on a store; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Kv {
    backend: Arc<dyn Backend>,
    limits: Limits,
    retry: RetryPolicy,
}

/// How [`Kv::transact`] and [`Kv::read`] retry retryable errors.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 60,
            first_backoff: Duration::from_micros(500),
            max_backoff: Duration::from_millis(100),
        }
    }
}

impl Kv {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Kv {
            backend,
            limits: Limits::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// An empty in-memory store.
    pub fn memory() -> Self {
        Kv::new(Arc::new(memory::MemoryBackend::new()))
    }

    /// Open (creating if needed) the embedded on-disk store in directory
    /// `dir`: a SQLite file, or the redb file of a directory made before
    /// SQLite became the embedded store.
    pub fn open_embedded(dir: &std::path::Path) -> Result<Self> {
        Self::open_embedded_with(dir, embedded::EmbeddedOptions::default())
    }

    /// [`Kv::open_embedded`] with these options (e.g. a smaller cache).
    pub fn open_embedded_with(
        dir: &std::path::Path,
        options: embedded::EmbeddedOptions,
    ) -> Result<Self> {
        if holds_redb(dir) {
            return Ok(Kv::new(Arc::new(embedded::EmbeddedBackend::open(
                dir, options,
            )?)));
        }
        Ok(Kv::new(Arc::new(sqlite_file::SqliteFileBackend::open(
            dir,
            options.into(),
        )?)))
    }

    /// Open the existing embedded store in directory `dir` read-only: its
    /// file is never written, and write transactions fail with
    /// [`KvError::ReadOnly`].
    pub fn open_embedded_read_only(dir: &std::path::Path) -> Result<Self> {
        Self::open_embedded_read_only_with(dir, embedded::EmbeddedOptions::default())
    }

    /// [`Kv::open_embedded_read_only`] with these options.
    pub fn open_embedded_read_only_with(
        dir: &std::path::Path,
        options: embedded::EmbeddedOptions,
    ) -> Result<Self> {
        if holds_redb(dir) {
            return Ok(Kv::new(Arc::new(
                embedded::EmbeddedBackend::open_read_only(dir, options)?,
            )));
        }
        Ok(Kv::new(Arc::new(
            sqlite_file::SqliteFileBackend::open_read_only(dir, options.into())?,
        )))
    }

    /// Give the file system back the space the store no longer uses
    /// ([`Backend::reclaim_space`]); `None` where the backend cannot.
    pub fn reclaim_space(&self) -> Result<Option<SpaceReclaimed>> {
        self.backend.reclaim_space()
    }

    /// Connect to PostgreSQL at `url`, keeping data in `table` (created if absent).
    pub fn connect_postgres(url: &str, table: &str) -> Result<Self> {
        Ok(Kv::new(Arc::new(postgres::PostgresBackend::connect(
            url,
            postgres::PostgresOptions::new(table),
        )?)))
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// See [`Backend::round_trips`].
    pub fn round_trips(&self) -> Option<u64> {
        self.backend.round_trips()
    }

    /// See [`Backend::announce`].
    pub fn announce(&self, message: &str) {
        self.backend.announce(message);
    }

    /// See [`Backend::watch`].
    pub fn watch(&self) -> Option<Watch> {
        self.backend.watch()
    }

    /// Whether this store was opened read-only (writes fail with
    /// [`KvError::ReadOnly`]).
    pub fn is_read_only(&self) -> bool {
        self.backend.is_read_only()
    }

    pub fn begin_read(&self) -> Result<ReadTxn<'_>> {
        Ok(ReadTxn::new(self.backend.begin_read()?, self.limits))
    }

    pub fn begin_write(&self) -> Result<WriteTxn<'_>> {
        Ok(WriteTxn::new(self.backend.begin_write()?, self.limits))
    }

    /// Refuse new transactions; later calls fail with [`KvError::Closed`].
    pub fn close(&self) {
        self.backend.close();
    }

    /// Run `f` in a read-write transaction and commit it, re-running both on
    /// retryable errors with jittered exponential backoff. `f` must be
    /// idempotent: it may run several times, and after
    /// [`KvError::CommitUnknown`] an earlier run may have committed.
    pub fn transact<T, E>(
        &self,
        mut f: impl FnMut(&mut WriteTxn<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<KvError> + Retryable,
    {
        // Once an attempt's commit had an unknown outcome, a later attempt
        // that fails for a transient reason must not hide that: the caller
        // would take "unavailable" for "not committed".
        let mut maybe_committed = false;
        let result: Result<T, E> = self.with_retries(|| {
            let mut txn = self.begin_write()?;
            let value = f(&mut txn)?;
            if let Err(e) = txn.commit() {
                maybe_committed |= matches!(e, KvError::CommitUnknown(_));
                return Err(e.into());
            }
            Ok(value)
        });
        match result {
            Err(e) if maybe_committed && e.is_retryable() => Err(E::from(KvError::CommitUnknown(
                "an attempt may have committed; the retries after it failed".into(),
            ))),
            other => other,
        }
    }

    /// Run `f` in a read-only snapshot, retrying on retryable errors.
    pub fn read<T, E>(&self, mut f: impl FnMut(&mut ReadTxn<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<KvError> + Retryable,
    {
        self.with_retries(|| {
            let mut txn = self.begin_read()?;
            f(&mut txn)
        })
    }

    fn with_retries<T, E>(&self, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E>
    where
        E: Retryable,
    {
        let mut backoff = self.retry.first_backoff;
        let mut tries = 1;
        loop {
            match attempt() {
                Err(e) if e.is_retryable() && tries < self.retry.max_attempts => {
                    tries += 1;
                    // Full jitter: sleep a uniform fraction of the current step.
                    let nanos = backoff.as_nanos().min(u64::MAX as u128) as u64;
                    std::thread::sleep(Duration::from_nanos(fastrand::u64(0..=nanos)));
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
                result => return result,
            }
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, i.e. the
/// exclusive end of the prefix's range. `None` if no such key exists (the
/// prefix is empty or all `0xff`).
/// Whether `dir` holds the redb file of an embedded store made before
/// SQLite became the embedded store (and no SQLite store beside it).
fn holds_redb(dir: &std::path::Path) -> bool {
    dir.join(embedded::FILE_NAME).exists() && !dir.join(sqlite_file::FILE_NAME).exists()
}

pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
