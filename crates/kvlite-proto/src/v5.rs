//! Protocol version 5.
//!
//! **Frozen once published**, like [`crate::v1`]. Version 5 is version 4
//! with `kvlite doctor` through the server — one request and one response
//! appended to the unions; everything else is version 4's types unchanged:
//!
//! ```text
//! type Doctor struct { db: str }
//! type Request union { <version 4's 17 members> | Doctor }           # tag 17
//!
//! type DamagedBlob struct { blob: str key: str error: str }
//! type DoctorReport struct {
//!     head_txid: u64 size_pages: u32 blobs_checked: u64 blob_bytes: u64
//!     damaged_blobs: []DamagedBlob damaged_blob_count: u64
//!     pages_compared: u64
//!     mismatched_pages: []u32 mismatched_page_count: u64
//!     unreadable_pages: []u32 unreadable_page_count: u64
//!     audit_problems: []str
//! }
//! type Response union { <version 4's 16 members> | DoctorReport }    # tag 16
//! ```
//!
//! Each list of a report holds at most [`MAX_REPORT_ITEMS`] entries; the
//! counts count them all.

use serde::{Deserialize, Serialize};

use crate::codec::{Bounded, Data};
pub use crate::v4::{
    CommitState, DbStat, ErrorBody, FenceReason, MAX_CHANGED_PAGES, MAX_LIST_NAMES, MAX_LIST_PAGES,
    MAX_LIST_VERSIONS, Page, PageRange,
};

/// Most entries in each list of a [`DoctorReport`].
pub const MAX_REPORT_ITEMS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedBlob {
    pub blob: String,
    pub key: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorReport {
    pub head_txid: u64,
    pub size_pages: u32,
    pub blobs_checked: u64,
    pub blob_bytes: u64,
    pub damaged_blobs: Bounded<DamagedBlob, MAX_REPORT_ITEMS>,
    pub damaged_blob_count: u64,
    pub pages_compared: u64,
    pub mismatched_pages: Bounded<u32, MAX_REPORT_ITEMS>,
    pub mismatched_page_count: u64,
    pub unreadable_pages: Bounded<u32, MAX_REPORT_ITEMS>,
    pub unreadable_page_count: u64,
    pub audit_problems: Bounded<String, MAX_REPORT_ITEMS>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMessage<'a> {
    pub request_id: u64,
    pub request: Request<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMessage<'a> {
    pub request_id: u64,
    pub response: Response<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    Open {
        db: String,
        preload_pages: Bounded<u32, MAX_LIST_PAGES>,
        preload_ranges: Bounded<PageRange, MAX_LIST_PAGES>,
    },
    GetPages {
        db: String,
        generation: u64,
        pgnos: Bounded<u32, MAX_LIST_PAGES>,
    },
    Commit {
        db: String,
        generation: u64,
        expected_head: u64,
        new_size: u32,
        commit_id: u64,
        pages: Bounded<Page<'a>, MAX_LIST_PAGES>,
    },
    CommitBegin {
        db: String,
        generation: u64,
        expected_head: u64,
        new_size: u32,
    },
    CommitChunk {
        db: String,
        generation: u64,
        txid: u64,
        part: u32,
        pages: Bounded<Page<'a>, MAX_LIST_PAGES>,
    },
    CommitFinish {
        db: String,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
    },
    CommitStatus {
        db: String,
        commit_id: u64,
    },
    Stat {
        db: String,
    },
    Delete {
        db: String,
    },
    List {
        prefix: String,
        after: Option<String>,
        limit: u32,
    },
    Close {
        db: String,
    },
    Ping,
    Compact {
        db: String,
    },
    SetQuota {
        db: String,
        quota_bytes: u64,
    },
    BeginRead {
        db: String,
        reader: u64,
        since_txid: u64,
    },
    GetPagesAt {
        db: String,
        reader: u64,
        incarnation: u64,
        txid: u64,
        size_pages: u32,
        pgnos: Bounded<u32, MAX_LIST_PAGES>,
    },
    EndRead {
        db: String,
        reader: u64,
    },
    Doctor {
        db: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<'a> {
    Opened {
        generation: u64,
        head_txid: u64,
        size_pages: u32,
        page_size: u32,
        fast_path_limit: u64,
        created: bool,
        pages: Bounded<Page<'a>, MAX_LIST_PAGES>,
    },
    Pages {
        pages: Bounded<Option<Data<'a>>, MAX_LIST_PAGES>,
    },
    Committed {
        txid: u64,
        size_pages: u32,
    },
    Begun {
        txid: u64,
    },
    ChunkStored,
    Status(CommitState),
    Stat(DbStat),
    Deleted {
        existed: bool,
    },
    Listed {
        names: Bounded<String, MAX_LIST_NAMES>,
    },
    Closed,
    Pong,
    Error(ErrorBody),
    Compacted {
        pages_folded: u64,
        deltas_deleted: u64,
        shards_written: u64,
        transactions: u64,
        stale: bool,
    },
    QuotaSet,
    ReadBegun {
        incarnation: u64,
        head_txid: u64,
        size_pages: u32,
        page_size: u32,
        changed: Option<Bounded<u32, MAX_CHANGED_PAGES>>,
    },
    ReadEnded,
    Doctored(DoctorReport),
}
