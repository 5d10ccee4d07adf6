//! Protocol version 2.
//!
//! **Frozen once published**, like [`crate::v1`]. Version 2 is version 1 with
//! members appended to the two top-level unions; everything else is version
//! 1's types, re-exported unchanged:
//!
//! ```text
//! type Compact struct { db: str }
//! type SetQuota struct { db: str quota_bytes: u64 }
//! type Request union { <version 1's 12 members> | Compact | SetQuota }    # tags 12, 13
//!
//! type Compacted struct { pages_folded: u64 deltas_deleted: u64 shards_written: u64 }
//! type QuotaSet void
//! type Response union { <version 1's 12 members> | Compacted | QuotaSet } # tags 12, 13
//! ```
//!
//! So every version-1 message is also a version-2 message with the same bytes.

use serde::{Deserialize, Serialize};

use crate::codec::{Bounded, Data};
pub use crate::v1::{
    CommitState, DbStat, ErrorBody, MAX_LIST_NAMES, MAX_LIST_PAGES, MAX_LIST_VERSIONS, Page,
    PageRange,
};

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
    // ---- added in version 2 ----
    Compact {
        db: String,
    },
    SetQuota {
        db: String,
        quota_bytes: u64,
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
    // ---- added in version 2 ----
    Compacted {
        pages_folded: u64,
        deltas_deleted: u64,
        shards_written: u64,
    },
    QuotaSet,
}
