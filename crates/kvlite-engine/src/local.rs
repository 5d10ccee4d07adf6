//! The engine as a [`Transport`]: what an application running the engine in
//! its own process hands to the VFS.

use std::sync::Arc;

use kvlite_api::{
    CommitRequest, CommitResult, CommitStatus, CompactionReport, DbStat, DoctorReport, Forked,
    HistoryPage, LargeCommit, OpenResponse, PageData, PageRef, Preload, ReadAt, ReadPoint,
    ReadState, Restored, Result, Transport,
};

use crate::Engine;

/// The engine in this process, as a [`Transport`].
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
        self.engine.open(db, preload)
    }

    fn get_pages(&self, db: &str, generation: u64, pgnos: &[u32]) -> Result<Vec<Option<PageData>>> {
        self.engine.get_pages(db, generation, pgnos)
    }

    fn commit(&self, req: &CommitRequest<'_>) -> Result<CommitResult> {
        self.engine.commit(req)
    }

    fn commit_large(&self, req: &LargeCommit<'_>) -> Result<CommitResult> {
        let e = &self.engine;
        let txid = e.commit_begin(req.db, req.generation, req.expected_head, req.new_size)?;
        for (i, part) in req.parts.iter().enumerate() {
            e.commit_chunk(req.db, req.generation, txid, i as u32, part)?;
        }
        e.commit_finish(
            req.db,
            req.generation,
            req.expected_head,
            txid,
            req.parts.len() as u32,
            req.commit_id,
        )
    }

    fn commit_status(&self, db: &str, commit_id: u64) -> Result<CommitStatus> {
        self.engine.commit_status(db, commit_id)
    }

    fn stat(&self, db: &str) -> Result<DbStat> {
        self.engine.stat(db)
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.engine.list(prefix, after, limit)
    }

    fn delete(&self, db: &str) -> Result<bool> {
        self.engine.delete(db)
    }

    fn compact(&self, db: &str) -> Result<CompactionReport> {
        self.engine.compact(db)
    }

    fn set_quota(&self, db: &str, quota_bytes: u64) -> Result<()> {
        self.engine.set_quota(db, quota_bytes)
    }

    fn begin_read(&self, db: &str, reader: u64, since_txid: u64) -> Result<ReadState> {
        self.engine.begin_read(db, reader, since_txid)
    }

    fn get_pages_at(
        &self,
        db: &str,
        reader: u64,
        at: ReadAt,
        pgnos: &[u32],
    ) -> Result<Vec<Option<PageData>>> {
        self.engine.get_pages_at(db, reader, at, pgnos)
    }

    fn end_read(&self, db: &str, reader: u64) -> Result<()> {
        self.engine.end_read(db, reader);
        Ok(())
    }

    fn newest_generation(&self, db: &str) -> Option<(u64, u64)> {
        self.engine.newest_generation(db)
    }

    fn begin_read_at(&self, db: &str, reader: u64, point: ReadPoint) -> Result<ReadState> {
        self.engine.begin_read_at(db, reader, point)
    }

    fn history(&self, db: &str, before: Option<u64>, limit: usize) -> Result<HistoryPage> {
        self.engine.history(db, before, limit)
    }

    fn fork(&self, src: &str, dst: &str, point: Option<ReadPoint>) -> Result<Forked> {
        self.engine.fork(src, dst, point)
    }

    fn restore(&self, db: &str, point: ReadPoint) -> Result<Restored> {
        self.engine.restore(db, point)
    }

    fn set_retention(&self, db: &str, retention_ms: Option<u64>) -> Result<()> {
        self.engine.set_retention(db, retention_ms)
    }

    fn doctor(&self, db: &str) -> Result<DoctorReport> {
        self.engine.doctor(db)
    }

    fn commit_begin(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        new_size: u32,
    ) -> Result<u64> {
        self.engine
            .commit_begin(db, generation, expected_head, new_size)
    }

    fn commit_chunk(
        &self,
        db: &str,
        generation: u64,
        txid: u64,
        part: u32,
        pages: &[PageRef<'_>],
    ) -> Result<()> {
        self.engine.commit_chunk(db, generation, txid, part, pages)
    }

    fn commit_finish(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
    ) -> Result<CommitResult> {
        self.engine
            .commit_finish(db, generation, expected_head, txid, parts, commit_id)
    }
}
