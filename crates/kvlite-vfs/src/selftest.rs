//! A transport that keeps one scratch database in this process's memory,
//! for the start-up self-test only: it proves SQLite batches this build's
//! transactions without involving (or depending on) a storage engine.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kvlite_api::{
    CommitRequest, CommitResult, CommitStatus, CompactionReport, DbStat, Error, LargeCommit,
    OpenResponse, PAGE_SIZE, PageData, PageRef, Preload, ReadAt, ReadState, Result, Transport,
};

#[derive(Default)]
pub(crate) struct ScratchTransport {
    db: Mutex<Scratch>,
}

#[derive(Default)]
struct Scratch {
    pages: BTreeMap<u32, Vec<u8>>,
    size: u32,
    head: u64,
}

impl ScratchTransport {
    fn db(&self) -> std::sync::MutexGuard<'_, Scratch> {
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply<'a>(
        &self,
        pages: impl IntoIterator<Item = &'a PageRef<'a>>,
        new_size: u32,
    ) -> CommitResult {
        let mut db = self.db();
        for (pgno, data) in pages {
            db.pages.insert(*pgno, data.to_vec());
        }
        db.pages.retain(|&p, _| p <= new_size);
        db.size = new_size;
        db.head += 1;
        CommitResult {
            txid: db.head,
            size_pages: new_size,
        }
    }
}

fn unsupported(what: &str) -> Error {
    Error::Internal(format!("the self-test transport does not {what}"))
}

impl Transport for ScratchTransport {
    fn open(&self, _db: &str, _preload: &Preload) -> Result<OpenResponse> {
        let db = self.db();
        Ok(OpenResponse {
            generation: 1,
            head_txid: db.head,
            size_pages: db.size,
            page_size: PAGE_SIZE as u32,
            fast_path_limit: u64::MAX,
            created: db.head == 0,
            pages: Vec::new(),
        })
    }

    fn get_pages(
        &self,
        _db: &str,
        _generation: u64,
        pgnos: &[u32],
    ) -> Result<Vec<Option<PageData>>> {
        let db = self.db();
        Ok(pgnos
            .iter()
            .map(|p| {
                (*p <= db.size)
                    .then(|| PageData::from(db.pages.get(p).cloned().unwrap_or(vec![0; PAGE_SIZE])))
            })
            .collect())
    }

    fn commit(&self, req: &CommitRequest<'_>) -> Result<CommitResult> {
        Ok(self.apply(req.pages, req.new_size))
    }

    fn commit_large(&self, req: &LargeCommit<'_>) -> Result<CommitResult> {
        Ok(self.apply(req.parts.iter().flat_map(|p| p.iter()), req.new_size))
    }

    fn commit_status(&self, _db: &str, _commit_id: u64) -> Result<CommitStatus> {
        Err(unsupported("track commit ids"))
    }

    fn stat(&self, _db: &str) -> Result<DbStat> {
        Err(unsupported("keep statistics"))
    }

    fn list(&self, _prefix: &str, _after: Option<&str>, _limit: usize) -> Result<Vec<String>> {
        Err(unsupported("list databases"))
    }

    fn delete(&self, _db: &str) -> Result<bool> {
        Err(unsupported("delete databases"))
    }

    fn compact(&self, _db: &str) -> Result<CompactionReport> {
        Err(unsupported("compact"))
    }

    fn set_quota(&self, _db: &str, _quota_bytes: u64) -> Result<()> {
        Err(unsupported("keep quotas"))
    }

    fn begin_read(&self, _db: &str, _reader: u64, _since_txid: u64) -> Result<ReadState> {
        Err(unsupported("serve readers"))
    }

    fn get_pages_at(
        &self,
        _db: &str,
        _reader: u64,
        _at: ReadAt,
        _pgnos: &[u32],
    ) -> Result<Vec<Option<PageData>>> {
        Err(unsupported("serve readers"))
    }

    fn end_read(&self, _db: &str, _reader: u64) -> Result<()> {
        Err(unsupported("serve readers"))
    }
}
