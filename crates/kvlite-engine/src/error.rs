use kvlite_kv::{KvError, Retryable};

/// Why a request was fenced out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// Another opener took the database over; `head` is the current head.
    StaleGeneration { current: u64, yours: u64, head: u64 },
    /// The database's head moved since the caller last saw it.
    HeadMismatch { current: u64, expected: u64 },
}

impl std::fmt::Display for FenceReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FenceReason::StaleGeneration { current, yours, .. } => {
                write!(f, "generation {yours} is stale (current {current})")
            }
            FenceReason::HeadMismatch { current, expected } => {
                write!(f, "expected head txid {expected}, actual {current}")
            }
        }
    }
}

/// Every way an engine operation fails. Callers match on variants.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("database {db:?} fenced: {reason}")]
    Fenced { db: String, reason: FenceReason },
    #[error("database {0:?} not found")]
    NotFound(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("database {db:?} over quota: {used} bytes used + {needed} needed > {quota} quota")]
    QuotaExceeded {
        db: String,
        used: u64,
        needed: u64,
        quota: u64,
    },
    #[error("database {db:?} corrupt: {what}")]
    Corruption { db: String, what: String },
    #[error(transparent)]
    Kv(#[from] KvError),
}

impl Retryable for EngineError {
    fn is_retryable(&self) -> bool {
        matches!(self, EngineError::Kv(e) if e.is_retryable())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

pub(crate) fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidRequest(msg.into())
}
