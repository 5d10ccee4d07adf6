//! Protocol version 4.
//!
//! **Frozen once published**, like [`crate::v1`]. Version 4 is version 3
//! with readers — three requests and two responses appended to the unions —
//! and a fence reason that says when the other writer took over; everything
//! else is version 3's types unchanged:
//!
//! ```text
//! type StaleGeneration struct { current: u64 yours: u64 head: u64 since_ms: u64 }
//! type FenceReason union { StaleGeneration | HeadMismatch }   # HeadMismatch as in v3
//! type ErrorBody union { <version 3's 12 members, Fenced carrying this FenceReason> }
//! type BeginRead struct { db: str reader: u64 since_txid: u64 }
//! type GetPagesAt struct { db: str reader: u64 incarnation: u64 txid: u64
//!                          size_pages: u32 pgnos: []u32 }
//! type EndRead struct { db: str reader: u64 }
//! type Request union { <version 2's 14 members> | BeginRead | GetPagesAt | EndRead }
//!                                                              # tags 14, 15, 16
//!
//! type ReadBegun struct { incarnation: u64 head_txid: u64 size_pages: u32
//!                         page_size: u32 changed: optional<[]u32> }
//! type ReadEnded void
//! type Response union { <version 3's 14 members> | ReadBegun | ReadEnded } # tags 14, 15
//! ```
//!
//! `GetPagesAt` is answered with `Pages`. A reader never takes a database
//! over: these requests work beside a writer without fencing it.

use serde::{Deserialize, Serialize};

use crate::codec::{Bounded, Data};
pub use crate::v3::{
    CommitState, DbStat, MAX_LIST_NAMES, MAX_LIST_PAGES, MAX_LIST_VERSIONS, Page, PageRange,
};

/// Most pages a `ReadBegun` lists as changed.
pub const MAX_CHANGED_PAGES: usize = 65_536;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceReason {
    StaleGeneration {
        current: u64,
        yours: u64,
        head: u64,
        /// When the takeover happened, ms since the epoch (0: unknown).
        since_ms: u64,
    },
    HeadMismatch {
        generation: u64,
        current: u64,
        expected: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorBody {
    Fenced {
        db: String,
        reason: FenceReason,
    },
    NotFound {
        db: String,
    },
    InvalidRequest {
        kind: u16,
        detail: String,
    },
    TooLarge {
        kind: u16,
        detail: String,
    },
    QuotaExceeded {
        db: String,
        used: u64,
        needed: u64,
        quota: u64,
    },
    Corruption {
        db: String,
        kind: u16,
        what: String,
    },
    Unauthorized {
        reason: String,
    },
    UnsupportedVersion {
        supported: Bounded<u16, MAX_LIST_VERSIONS>,
    },
    Unavailable {
        reason: String,
    },
    StoreFull {
        reason: String,
    },
    OutcomeUnknown {
        reason: String,
    },
    Internal {
        message: String,
    },
}
