//! Protocol version 3.
//!
//! **Frozen once published**, like [`crate::v1`]. Requests are version 2's,
//! unchanged. Responses keep version 2's union members and tags, with three
//! members carrying richer types: `Stat` the whole database state, `Error`
//! typed errors (kinds as stable codes, the database named, fence reasons in
//! full, and "commit outcome unknown" and "store full" of their own), and
//! `Compacted` the whole pass report:
//!
//! ```text
//! type DbStat struct { name: str id: u64 generation: u64 head_txid: u64 next_txid: u64
//!                      materialized_txid: u64 size_pages: u32 page_size: u32
//!                      shard_pages: u32 origin: u8 created_ms: u64
//!                      page_index_entries: u64 deltas: u64 delta_bytes: u64 shards: u64
//!                      shard_bytes: u64 used_bytes: u64 quota_bytes: u64
//!                      fast_path_limit: u64 pending_commits: u64 }
//! type FenceReason union { StaleGeneration | HeadMismatch }
//! type StaleGeneration struct { current: u64 yours: u64 head: u64 }
//! type HeadMismatch struct { generation: u64 current: u64 expected: u64 }
//! type ErrorBody union { Fenced | NotFound | InvalidRequest | TooLarge | QuotaExceeded
//!                      | Corruption | Unauthorized | UnsupportedVersion | Unavailable
//!                      | StoreFull | OutcomeUnknown | Internal }
//! type Fenced struct { db: str reason: FenceReason }
//! type NotFound struct { db: str }
//! type InvalidRequest struct { kind: u16 detail: str }
//! type TooLarge struct { kind: u16 detail: str }
//! type QuotaExceeded struct { db: str used: u64 needed: u64 quota: u64 }
//! type Corruption struct { db: str kind: u16 what: str }
//! type Unauthorized struct { reason: str }
//! type UnsupportedVersion struct { supported: []u16 }
//! type Unavailable struct { reason: str }
//! type StoreFull struct { reason: str }
//! type OutcomeUnknown struct { reason: str }
//! type Internal struct { message: str }
//! type Compacted struct { pages_folded: u64 deltas_deleted: u64 shards_written: u64
//!                         transactions: u64 stale: bool }
//! type Response union { <version 2's 14 members, with Stat → DbStat, Error → ErrorBody
//!                        and Compacted → Compacted of this version> }
//! ```
//!
//! Kind codes are `kvlite_api`'s `InvalidKind::code` and friends; a code this
//! build does not know decodes as `Unknown(code)`, so new kinds need no new
//! version. Origin codes are `kvlite_api::Origin`'s; an origin code this
//! build does not know is malformed (decoding it as some other origin would
//! accept two encodings of one message), so a new origin needs a new version.

use serde::{Deserialize, Serialize};

use crate::codec::{Bounded, Data};
pub use crate::v2::{
    ClientMessage, CommitState, MAX_LIST_NAMES, MAX_LIST_PAGES, MAX_LIST_VERSIONS, Page, PageRange,
    Request,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMessage<'a> {
    pub request_id: u64,
    pub response: Response<'a>,
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
}

/// An origin as its one-byte code, refused on decode unless it is one of
/// `kvlite_api::Origin`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginCode(pub kvlite_api::Origin);

impl Serialize for OriginCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.0 as u8).serialize(s)
    }
}

impl<'de> Deserialize<'de> for OriginCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u8::deserialize(d)?;
        kvlite_api::Origin::from_u8(code)
            .map(OriginCode)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown origin code {code}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceReason {
    StaleGeneration {
        current: u64,
        yours: u64,
        head: u64,
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
