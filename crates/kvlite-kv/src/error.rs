use std::path::PathBuf;

/// Everything a KV operation can fail with. Callers classify errors by variant
/// (see [`Retryable`]); nobody should parse the message.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Another transaction changed data this one read; run it again.
    #[error("transaction conflict (retryable)")]
    Conflict,
    /// The connection broke while COMMIT was in flight: the transaction may or
    /// may not have landed. Retrying is only safe for idempotent transactions,
    /// which is why every kvlite transaction re-reads what it depends on.
    #[error("commit outcome unknown: {0}")]
    CommitUnknown(String),
    /// The backend is temporarily unreachable and nothing was committed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("key is {len} bytes, over the {limit}-byte limit")]
    KeyTooLarge { len: usize, limit: usize },
    #[error("value is {len} bytes, over the {limit}-byte limit")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("transaction writes {bytes} bytes, over the {limit}-byte limit")]
    TransactionTooLarge { bytes: usize, limit: usize },
    #[error("transaction ran for {elapsed_ms} ms, over the {limit_ms} ms limit")]
    TransactionTooOld { elapsed_ms: u128, limit_ms: u128 },
    /// A logical (chunked) value whose chunks are not 0..n.
    #[error("chunked value under {prefix:?} is incomplete: {reason}")]
    BrokenChunks { prefix: Vec<u8>, reason: String },
    /// The store's disk is full: nothing was committed.
    #[error("the store is full: {0}")]
    StoreFull(String),
    #[error("the store at {0} is in use by another process")]
    InUse(PathBuf),
    #[error("the store is closed")]
    Closed,
    /// A write to a store opened read-only, or a writable open of a store
    /// this process may only read (permissions, a read-only file system).
    #[error("the store at {0} is read-only")]
    ReadOnly(PathBuf),
    /// A read-only open of a store that was not closed cleanly (a crash, or
    /// a copy taken while it was in use): the repair it needs writes.
    #[error(
        "the store at {0} was not closed cleanly and needs a repair, which a read-only open cannot make (open it once with write access, or copy it somewhere writable)"
    )]
    NeedsRepair(PathBuf),
    /// The path holds no kvlite store.
    #[error("no kvlite store at {0}")]
    NotAStore(PathBuf),
    #[error("backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl KvError {
    pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        KvError::Backend(Box::new(e))
    }
}

/// Whether an error means "run the transaction again". Implemented by the
/// error types of layers above so [`crate::Kv::transact`] can retry them.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

impl Retryable for KvError {
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            // A transaction over its time would be just as slow again: not
            // retryable (FoundationDB retries it because its reads might be
            // stale; ours are bounded by design, so running over is a bug).
            KvError::Conflict | KvError::CommitUnknown(_) | KvError::Unavailable(_)
        )
    }
}

pub type Result<T, E = KvError> = std::result::Result<T, E>;
