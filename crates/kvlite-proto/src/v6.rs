//! Protocol version 6.
//!
//! **Frozen once published**, like [`crate::v1`]. Version 6 is version 5
//! with history, forks and restores — five requests and three responses
//! appended to the unions — and `Stat` answered with a database state that
//! carries the history figures; everything else is version 5's types
//! unchanged:
//!
//! ```text
//! type ReadPoint union { Txid: u64 | TimeMs: u64 }
//! type BeginReadAt struct { db: str reader: u64 point: ReadPoint }      # answered by ReadBegun
//! type History struct { db: str before: optional<u64> limit: u32 }
//! type Fork struct { src: str dst: str point: optional<ReadPoint> }
//! type Restore struct { db: str point: ReadPoint }
//! type SetRetention struct { db: str retention_ms: optional<u64> }
//! type Request union { <version 5's 18 members> | BeginReadAt | History | Fork
//!                      | Restore | SetRetention }                       # tags 18..22
//!
//! type ForkOrigin struct { name: optional<str> id: u64 txid: u64 size_pages: u32 }
//! type DbStat struct { <version 3's DbStat fields> history_floor: u64
//!                      retention_ms: u64 history_bytes: u64 kept_versions: u64
//!                      pins: u64 forked_from: optional<ForkOrigin> }
//! type CommitInfo struct { txid: u64 time_ms: u64 size_pages: u32 pages: u32 bytes: u64
//!                          origin: optional<ForkOrigin> }
//! type HistoryPage struct { incarnation: u64 head_txid: u64 floor_txid: u64
//!                           retention_ms: u64 retention_set: bool
//!                           commits: []CommitInfo forked_from: optional<ForkOrigin> }
//! type Forked struct { id: u64 source_txid: u64 size_pages: u32 }
//! type Restored struct { backup: str source_txid: u64 size_pages: u32 }
//! type RetentionSet void
//! type TakenOver struct { db: str generation: u64 since_ms: u64 }
//! type Response union { <version 5's 17 members, Stat carrying this DbStat>
//!                       | History | Forked | Restored | RetentionSet
//!                       | TakenOver }                                   # tags 17..21
//! ```
//!
//! `TakenOver` answers no request: the server sends it, with request id
//! [`crate::PUSH_REQUEST_ID`], to every other connection that opened the
//! database as its writer when a connection opens it (or a restore
//! replaces it), so their writers learn of the fence at their next
//! transaction without asking.
//!
//! A history page lists at most [`MAX_HISTORY_COMMITS`] commits.

use serde::{Deserialize, Serialize};

use crate::codec::{Bounded, Data};
pub use crate::v3::OriginCode;
pub use crate::v5::{
    CommitState, DamagedBlob, DoctorReport, ErrorBody, FenceReason, MAX_CHANGED_PAGES,
    MAX_LIST_NAMES, MAX_LIST_PAGES, MAX_LIST_VERSIONS, MAX_REPORT_ITEMS, Page, PageRange,
};

/// Most commits one [`HistoryPage`] lists.
pub const MAX_HISTORY_COMMITS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadPoint {
    Txid(u64),
    TimeMs(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    pub name: Option<String>,
    pub id: u64,
    pub txid: u64,
    pub size_pages: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStat {
    pub name: String,
    pub id: u64,
    pub generation: u64,
    pub head_txid: u64,
    pub next_txid: u64,
    pub materialized_txid: u64,
    pub size_pages: u32,
    pub page_size: u32,
    pub shard_pages: u32,
    pub origin: OriginCode,
    pub created_ms: u64,
    pub page_index_entries: u64,
    pub deltas: u64,
    pub delta_bytes: u64,
    pub shards: u64,
    pub shard_bytes: u64,
    pub used_bytes: u64,
    pub quota_bytes: u64,
    pub fast_path_limit: u64,
    pub pending_commits: u64,
    pub history_floor: u64,
    pub retention_ms: u64,
    pub history_bytes: u64,
    pub kept_versions: u64,
    pub pins: u64,
    pub forked_from: Option<ForkOrigin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub txid: u64,
    pub time_ms: u64,
    pub size_pages: u32,
    pub pages: u32,
    pub bytes: u64,
    pub origin: Option<ForkOrigin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub incarnation: u64,
    pub head_txid: u64,
    pub floor_txid: u64,
    pub retention_ms: u64,
    pub retention_set: bool,
    pub commits: Bounded<CommitInfo, MAX_HISTORY_COMMITS>,
    pub forked_from: Option<ForkOrigin>,
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
    BeginReadAt {
        db: String,
        reader: u64,
        point: ReadPoint,
    },
    History {
        db: String,
        before: Option<u64>,
        limit: u32,
    },
    Fork {
        src: String,
        dst: String,
        point: Option<ReadPoint>,
    },
    Restore {
        db: String,
        point: ReadPoint,
    },
    SetRetention {
        db: String,
        retention_ms: Option<u64>,
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
    History(HistoryPage),
    Forked {
        id: u64,
        source_txid: u64,
        size_pages: u32,
    },
    Restored {
        backup: String,
        source_txid: u64,
        size_pages: u32,
    },
    RetentionSet,
    TakenOver {
        db: String,
        generation: u64,
        since_ms: u64,
    },
}
