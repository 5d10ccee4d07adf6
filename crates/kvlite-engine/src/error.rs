//! The engine's errors are the API taxonomy ([`kvlite_api::Error`]). Inside
//! the engine a failure may also be a KV error, whose kind decides whether
//! the KV retry loop runs the transaction again; it becomes an API error
//! once, here, when it leaves the engine.

use kvlite_api::{CorruptionKind, Error, InvalidKind, TooLargeKind};
use kvlite_kv::{KvError, Retryable};

/// A failure inside the engine: an API error, or a KV error not yet
/// classified for the caller.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fail {
    #[error(transparent)]
    Api(#[from] Error),
    #[error(transparent)]
    Kv(#[from] KvError),
}

impl Retryable for Fail {
    fn is_retryable(&self) -> bool {
        matches!(self, Fail::Kv(e) if e.is_retryable())
    }
}

impl From<Fail> for Error {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Api(e) => e,
            Fail::Kv(e) => kv_error(e),
        }
    }
}

/// What a KV failure means to the engine's caller.
fn kv_error(e: KvError) -> Error {
    let text = e.to_string();
    match e {
        KvError::CommitUnknown(_) => Error::OutcomeUnknown(text),
        // Retries exhausted (conflicts, an unreachable store) or a store
        // shutting down: nothing was changed, and later may work.
        KvError::Conflict | KvError::Unavailable(_) | KvError::Closed | KvError::InUse(_) => {
            Error::Unavailable(text)
        }
        KvError::StoreFull(_) => Error::StoreFull(text),
        KvError::ReadOnly(_) => Error::invalid(InvalidKind::ReadOnlyStore, text),
        KvError::TransactionTooLarge { .. } => Error::too_large(TooLargeKind::Transaction, text),
        KvError::BrokenChunks { .. } => Error::corrupt("", CorruptionKind::MissingData, text),
        // Keys or values over the limits and transactions over their time
        // are engine bugs, not input; a backend's own failure is internal.
        _ => Error::Internal(text),
    }
}

pub(crate) type Result<T, E = Fail> = std::result::Result<T, E>;

pub(crate) fn invalid(kind: InvalidKind, detail: impl Into<String>) -> Fail {
    Fail::Api(Error::invalid(kind, detail))
}

pub(crate) fn too_large(kind: TooLargeKind, detail: impl Into<String>) -> Fail {
    Fail::Api(Error::too_large(kind, detail))
}

pub(crate) fn corrupt(db: &str, kind: CorruptionKind, what: impl Into<String>) -> Fail {
    Fail::Api(Error::corrupt(db, kind, what))
}
