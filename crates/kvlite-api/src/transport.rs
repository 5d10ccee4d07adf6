//! The seam between kvlite clients and a storage engine.

use crate::{
    CommitRequest, CommitResult, CommitStatus, CompactionReport, DbStat, DoctorReport, Error,
    Forked, HistoryPage, InvalidKind, LargeCommit, OpenResponse, PageData, PageRef, Preload,
    ReadAt, ReadPoint, ReadState, Restored, Result,
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
    fn get_pages(&self, db: &str, generation: u64, pgnos: &[u32]) -> Result<Vec<Option<PageData>>>;
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
    ) -> Result<Vec<Option<PageData>>>;
    /// The reader is done: what it pinned may be folded.
    fn end_read(&self, db: &str, reader: u64) -> Result<()>;
    /// The newest generation of `db` this transport has seen (from a
    /// takeover it made, or was told of) and when it took over: a hint a
    /// writer checks at each transaction's start, without a round trip, to
    /// learn it was fenced before reading from its caches. `None` when it
    /// knows none (the engine still refuses a stale generation).
    fn newest_generation(&self, db: &str) -> Option<(u64, u64)> {
        let _ = db;
        None
    }
    /// Start a read at a past commit: like [`Transport::begin_read`], but
    /// at the newest commit at or before `point`, and a reader that stays
    /// there (never moving to newer commits).
    fn begin_read_at(&self, db: &str, reader: u64, point: ReadPoint) -> Result<ReadState> {
        let _ = (db, reader, point);
        Err(not_here("read in the past"))
    }
    /// The database's commits, newest first, before `before` (from the
    /// head when `None`), at most `limit`.
    fn history(&self, db: &str, before: Option<u64>, limit: usize) -> Result<HistoryPage> {
        let _ = (db, before, limit);
        Err(not_here("list history"))
    }
    /// Create `dst` as a copy-on-write fork of `src` at `point` (its head
    /// when `None`).
    fn fork(&self, src: &str, dst: &str, point: Option<ReadPoint>) -> Result<Forked> {
        let _ = (src, dst, point);
        Err(not_here("fork"))
    }
    /// Make `db`'s state what it was at `point`; the state before stays as
    /// the returned backup database (and in `db`'s history).
    fn restore(&self, db: &str, point: ReadPoint) -> Result<Restored> {
        let _ = (db, point);
        Err(not_here("restore"))
    }
    /// How long `db`'s commits stay readable (ms; `None`: the default).
    fn set_retention(&self, db: &str, retention_ms: Option<u64>) -> Result<()> {
        let _ = (db, retention_ms);
        Err(not_here("set retention"))
    }
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
