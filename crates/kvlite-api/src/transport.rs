//! The seam between kvlite clients and a storage engine.

use crate::{
    CommitRequest, CommitResult, CommitStatus, CompactionReport, DbStat, DoctorReport, Error,
    InvalidKind, LargeCommit, OpenResponse, PageRef, Preload, ReadAt, ReadState, Result,
};

fn not_here(what: &str) -> Error {
    Error::invalid(
        InvalidKind::Protocol,
        format!("this transport cannot {what}"),
    )
}

/// How a client reaches an engine: in this process (the engine implements
/// it) or over the network (`kvlite_client::RemoteTransport`).
pub trait Transport: Send + Sync {
    /// Take the database over (creating it if absent) and preload pages.
    fn open(&self, db: &str, preload: &Preload) -> Result<OpenResponse>;
    /// Pages at the head of `generation`'s writer, in request order; `None`
    /// past the end.
    fn get_pages(&self, db: &str, generation: u64, pgnos: &[u32]) -> Result<Vec<Option<Vec<u8>>>>;
    /// The one-round-trip commit.
    fn commit(&self, req: &CommitRequest<'_>) -> Result<CommitResult>;
    /// Reserve, upload every part, finish. Implementations may send parts
    /// without waiting for each acknowledgement.
    fn commit_large(&self, req: &LargeCommit<'_>) -> Result<CommitResult>;
    fn commit_status(&self, db: &str, commit_id: u64) -> Result<CommitStatus>;
    fn stat(&self, db: &str) -> Result<DbStat>;
    /// Names starting with `prefix`, after `after` (exclusive), at most
    /// `limit`, in byte order.
    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>>;
    /// Remove a database; false if it did not exist.
    fn delete(&self, db: &str) -> Result<bool>;
    /// Fold the database's deltas into shards now.
    fn compact(&self, db: &str) -> Result<CompactionReport>;
    fn set_quota(&self, db: &str, quota_bytes: u64) -> Result<()>;
    /// Start a read transaction of reader `reader` (an id the caller picks
    /// at random): the newest commit, and what changed since `since_txid`
    /// (the commit its last transaction read; 0 for none). Never takes the
    /// database over, never fences its writer; the database must exist.
    fn begin_read(&self, db: &str, reader: u64, since_txid: u64) -> Result<ReadState>;
    /// Pages as of the commit `at` names, in request order; `None` past
    /// its end.
    fn get_pages_at(
        &self,
        db: &str,
        reader: u64,
        at: ReadAt,
        pgnos: &[u32],
    ) -> Result<Vec<Option<Vec<u8>>>>;
    /// The reader is done: what it pinned may be folded.
    fn end_read(&self, db: &str, reader: u64) -> Result<()>;
    /// Check the database's stored form end to end (`kvlite doctor`):
    /// damage is in the report; an error means the check could not run.
    fn doctor(&self, db: &str) -> Result<DoctorReport> {
        let _ = db;
        Err(not_here("check databases"))
    }
    /// A large commit made part by part, for a caller that produces its
    /// pages as it goes (an import streaming a file) and so never holds
    /// them all: reserve the txid ...
    fn commit_begin(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        new_size: u32,
    ) -> Result<u64> {
        let _ = (db, generation, expected_head, new_size);
        Err(not_here("stream a large commit"))
    }
    /// ... store part `part` (sending a part again replaces it) ...
    fn commit_chunk(
        &self,
        db: &str,
        generation: u64,
        txid: u64,
        part: u32,
        pages: &[PageRef<'_>],
    ) -> Result<()> {
        let _ = (db, generation, txid, part, pages);
        Err(not_here("stream a large commit"))
    }
    /// ... and finish with parts `0..parts`, atomically, as [`Transport::commit_large`] does.
    fn commit_finish(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
    ) -> Result<CommitResult> {
        let _ = (db, generation, expected_head, txid, parts, commit_id);
        Err(not_here("stream a large commit"))
    }
}
