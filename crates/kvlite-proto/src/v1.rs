//! Protocol version 1.
//!
//! **Frozen.** Version 1 is published: nothing in this file may change, ever
//! (not a field, not its order, not a variant, not a list cap). New things go
//! into a new version module beside this one. `tests/golden_v1.rs` pins the
//! exact bytes of every message below and fails on any edit.
//!
//! Schema, in the BARE schema language (union tags are the implicit 0, 1, …
//! of member order; `type` names are for reading only, they are not encoded):
//!
//! ```text
//! type PageRange struct { first: u32 last: u32 }
//! type Page struct { pgno: u32 data: data }
//!
//! type Open struct { db: str preload_pages: []u32 preload_ranges: []PageRange }
//! type GetPages struct { db: str generation: u64 pgnos: []u32 }
//! type Commit struct { db: str generation: u64 expected_head: u64 new_size: u32
//!                      commit_id: u64 pages: []Page }
//! type CommitBegin struct { db: str generation: u64 expected_head: u64 new_size: u32 }
//! type CommitChunk struct { db: str generation: u64 txid: u64 part: u32 pages: []Page }
//! type CommitFinish struct { db: str generation: u64 expected_head: u64 txid: u64
//!                            parts: u32 commit_id: u64 }
//! type CommitStatus struct { db: str commit_id: u64 }
//! type Stat struct { db: str }
//! type Delete struct { db: str }
//! type List struct { prefix: str after: optional<str> limit: u32 }
//! type Close struct { db: str }
//! type Ping void
//! type Request union { Open | GetPages | Commit | CommitBegin | CommitChunk
//!                    | CommitFinish | CommitStatus | Stat | Delete | List | Close | Ping }
//! type ClientMessage struct { request_id: u64 request: Request }
//!
//! type Opened struct { generation: u64 head_txid: u64 size_pages: u32 page_size: u32
//!                      fast_path_limit: u64 created: bool pages: []Page }
//! type Pages struct { pages: []optional<data> }
//! type Committed struct { txid: u64 size_pages: u32 }
//! type Begun struct { txid: u64 }
//! type ChunkStored void
//! type CommitState union { Landed | NotLanded }
//! type Landed struct { txid: u64 size_pages: u32 }
//! type NotLanded struct { generation: u64 head_txid: u64 }
//! type DbStat struct { name: str generation: u64 head_txid: u64 next_txid: u64
//!                      materialized_txid: u64 size_pages: u32 page_size: u32
//!                      page_index_entries: u64 deltas: u64 delta_bytes: u64 shards: u64
//!                      shard_bytes: u64 used_bytes: u64 quota_bytes: u64
//!                      pending_commits: u64 created_ms: u64 }
//! type Deleted struct { existed: bool }
//! type Listed struct { names: []str }
//! type Closed void
//! type Pong void
//! type ErrorBody union { Fenced | TooLarge | QuotaExceeded | NotFound | InvalidRequest
//!                      | Unauthorized | UnsupportedVersion | Corruption | Internal
//!                      | Unavailable }
//! type Fenced struct { current_generation: u64 current_head: u64 stale_generation: bool }
//! type TooLarge struct { reason: str }
//! type QuotaExceeded struct { used: u64 needed: u64 quota: u64 }
//! type NotFound struct { db: str }
//! type InvalidRequest struct { reason: str }
//! type Unauthorized struct { reason: str }
//! type UnsupportedVersion struct { supported: []u16 }
//! type Corruption struct { what: str }
//! type Internal struct { message: str }
//! type Unavailable struct { reason: str }
//! type Response union { Opened | Pages | Committed | Begun | ChunkStored | CommitState
//!                     | DbStat | Deleted | Listed | Closed | Pong | ErrorBody }
//! type ServerMessage struct { request_id: u64 response: Response }
//! ```
//!
//! (`Status` carries a `CommitState`, `Stat` a `DbStat` and `Error` an
//! `ErrorBody`, each a nested union or struct.)
//!
//! Decoding limits of version 1: a list of pages, page numbers or page ranges
//! holds at most [`MAX_LIST_PAGES`] items, `Listed.names` at most
//! [`MAX_LIST_NAMES`], `UnsupportedVersion.supported` at most
//! [`MAX_LIST_VERSIONS`]. Only the canonical encoding is accepted (bools and
//! optional tags 0 or 1, shortest uints, no trailing bytes).

use serde::{Deserialize, Serialize};

use crate::codec::{Bounded, Data};

/// Most items in a version-1 list of pages, page numbers or page ranges.
pub const MAX_LIST_PAGES: usize = 8192;
/// Most names in a version-1 `Listed` response.
pub const MAX_LIST_NAMES: usize = 10_000;
/// Most versions in a version-1 `UnsupportedVersion` error.
pub const MAX_LIST_VERSIONS: usize = 255;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRange {
    pub first: u32,
    pub last: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<'a> {
    pub pgno: u32,
    pub data: Data<'a>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitState {
    Landed { txid: u64, size_pages: u32 },
    NotLanded { generation: u64, head_txid: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStat {
    pub name: String,
    pub generation: u64,
    pub head_txid: u64,
    pub next_txid: u64,
    pub materialized_txid: u64,
    pub size_pages: u32,
    pub page_size: u32,
    pub page_index_entries: u64,
    pub deltas: u64,
    pub delta_bytes: u64,
    pub shards: u64,
    pub shard_bytes: u64,
    pub used_bytes: u64,
    pub quota_bytes: u64,
    pub pending_commits: u64,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorBody {
    Fenced {
        current_generation: u64,
        current_head: u64,
        stale_generation: bool,
    },
    TooLarge {
        reason: String,
    },
    QuotaExceeded {
        used: u64,
        needed: u64,
        quota: u64,
    },
    NotFound {
        db: String,
    },
    InvalidRequest {
        reason: String,
    },
    Unauthorized {
        reason: String,
    },
    UnsupportedVersion {
        supported: Bounded<u16, MAX_LIST_VERSIONS>,
    },
    Corruption {
        what: String,
    },
    Internal {
        message: String,
    },
    Unavailable {
        reason: String,
    },
}
