//! The seam between kvlite clients and a storage engine.
//!
//! [`Transport`] is what the VFS and the CLI call; [`LocalTransport`] runs the
//! engine in this process. Both speak the engine's own request and response
//! types; errors are [`ClientError`], which adds what only a network can do
//! (a lost connection, an unknown commit outcome) to the engine's errors.
//! [`RemoteTransport`] reaches `kvlite serve` over one shared WebSocket.

mod remote;

use std::sync::Arc;

pub use remote::{RemoteOptions, RemoteTransport};

pub use kvlite_engine::{
    CommitRequest, CommitResult, CommitStatus, CompactionReport, DbStat, Engine, EngineError,
    FenceReason, OpenResponse, PAGE_SIZE, PageRef, Preload,
};

/// Every way a client request fails. Matched by variant, never by message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Another writer took the database over, or its head moved.
    #[error("database {db:?} fenced: {reason}")]
    Fenced { db: String, reason: FenceReason },
    #[error("database {0:?} not found")]
    NotFound(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("quota exceeded: {used} bytes used + {needed} needed > {quota} quota")]
    QuotaExceeded { used: u64, needed: u64, quota: u64 },
    #[error("corrupt data: {0}")]
    Corruption(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The store or server is temporarily unavailable; nothing was changed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A commit was sent but its outcome could not be learned.
    #[error("commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ClientError {
    /// Fenced or of unknown outcome: the connection must stop writing.
    pub fn poisons(&self) -> bool {
        matches!(
            self,
            ClientError::Fenced { .. } | ClientError::OutcomeUnknown(_)
        )
    }
}

impl From<EngineError> for ClientError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Fenced { db, reason } => ClientError::Fenced { db, reason },
            EngineError::NotFound(db) => ClientError::NotFound(db),
            EngineError::InvalidRequest(m) => ClientError::InvalidRequest(m),
            EngineError::TooLarge(m) => ClientError::TooLarge(m),
            EngineError::QuotaExceeded {
                used,
                needed,
                quota,
                ..
            } => ClientError::QuotaExceeded {
                used,
                needed,
                quota,
            },
            EngineError::Corruption { db, what } => {
                ClientError::Corruption(format!("{db}: {what}"))
            }
            EngineError::Kv(kvlite_engine::KvErrorKind::CommitUnknown(m)) => {
                ClientError::OutcomeUnknown(m)
            }
            EngineError::Kv(e) => ClientError::Unavailable(e.to_string()),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A large commit: parts of at most `fast_path_limit` bytes of pages each.
pub struct LargeCommit<'a> {
    pub db: &'a str,
    pub generation: u64,
    pub expected_head: u64,
    pub new_size: u32,
    pub commit_id: u64,
    pub parts: &'a [&'a [PageRef<'a>]],
}

/// How a client reaches an engine.
pub trait Transport: Send + Sync {
    /// Take the database over (creating it if absent) and preload pages.
    fn open(&self, db: &str, preload: &Preload) -> Result<OpenResponse>;
    fn get_pages(&self, db: &str, generation: u64, pgnos: &[u32]) -> Result<Vec<Option<Vec<u8>>>>;
    /// The one-round-trip commit.
    fn commit(&self, req: &CommitRequest<'_>) -> Result<CommitResult>;
    /// Reserve, upload every part, finish. Implementations may send parts
    /// without waiting for each acknowledgement.
    fn commit_large(&self, req: &LargeCommit<'_>) -> Result<CommitResult>;
    fn commit_status(&self, db: &str, commit_id: u64) -> Result<CommitStatus>;
    fn stat(&self, db: &str) -> Result<DbStat>;
    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>>;
    fn delete(&self, db: &str) -> Result<bool>;
    /// Fold the database's deltas into shards now.
    fn compact(&self, db: &str) -> Result<CompactionReport>;
    fn set_quota(&self, db: &str, quota_bytes: u64) -> Result<()>;
}

/// The engine in this process.
#[derive(Clone)]
pub struct LocalTransport {
    engine: Arc<Engine>,
}

impl LocalTransport {
    pub fn new(engine: Arc<Engine>) -> Self {
        LocalTransport { engine }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl Transport for LocalTransport {
    fn open(&self, db: &str, preload: &Preload) -> Result<OpenResponse> {
        Ok(self.engine.open(db, preload)?)
    }

    fn get_pages(&self, db: &str, generation: u64, pgnos: &[u32]) -> Result<Vec<Option<Vec<u8>>>> {
        Ok(self.engine.get_pages(db, generation, pgnos)?)
    }

    fn commit(&self, req: &CommitRequest<'_>) -> Result<CommitResult> {
        Ok(self.engine.commit(req)?)
    }

    fn commit_large(&self, req: &LargeCommit<'_>) -> Result<CommitResult> {
        let e = &self.engine;
        let txid = e.commit_begin(req.db, req.generation, req.expected_head, req.new_size)?;
        for (i, part) in req.parts.iter().enumerate() {
            e.commit_chunk(req.db, req.generation, txid, i as u32, part)?;
        }
        Ok(e.commit_finish(
            req.db,
            req.generation,
            req.expected_head,
            txid,
            req.parts.len() as u32,
            req.commit_id,
        )?)
    }

    fn commit_status(&self, db: &str, commit_id: u64) -> Result<CommitStatus> {
        Ok(self.engine.commit_status(db, commit_id)?)
    }

    fn stat(&self, db: &str) -> Result<DbStat> {
        Ok(self.engine.stat(db)?)
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        Ok(self.engine.list(prefix, after, limit)?)
    }

    fn delete(&self, db: &str) -> Result<bool> {
        Ok(self.engine.delete(db)?)
    }

    fn compact(&self, db: &str) -> Result<CompactionReport> {
        Ok(self.engine.compact(db)?)
    }

    fn set_quota(&self, db: &str, quota_bytes: u64) -> Result<()> {
        Ok(self.engine.set_quota(db, quota_bytes)?)
    }
}
