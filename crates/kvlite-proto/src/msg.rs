//! The current message types: what the server and the client work with.
//!
//! They are the newest protocol version's messages (or a superset of them),
//! independent of any wire form: [`crate::encode_request`] and friends convert
//! them to and from the negotiated version. These types may change freely; the
//! `vN` modules may not.

use std::collections::HashSet;
use std::fmt;

use crate::{MAX_DB_NAME_BYTES, MAX_LIST_LIMIT, MAX_PAGE_NUMBER, MAX_PAGES_PER_REQUEST, PAGE_SIZE};

/// A request and the id its response will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub request_id: u64,
    pub request: Request,
}

/// A response to the request with the same id. Responses may come in any order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    pub request_id: u64,
    pub response: Response,
}

/// An inclusive range of page numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub first: u32,
    pub last: u32,
}

/// A page: its number (from 1) and its [`PAGE_SIZE`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub pgno: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Take the database over (creating it if absent) and preload page 1 plus
    /// the listed pages and ranges. The server answers with at most
    /// [`MAX_PAGES_PER_REQUEST`] preloaded pages, and may answer with fewer.
    Open {
        db: String,
        preload_pages: Vec<u32>,
        preload_ranges: Vec<PageRange>,
    },
    /// Read pages at the head of `generation`; answered in request order.
    GetPages {
        db: String,
        generation: u64,
        pgnos: Vec<u32>,
    },
    /// A whole commit in one message (at most the server's fast-path limit).
    Commit {
        db: String,
        generation: u64,
        expected_head: u64,
        new_size: u32,
        commit_id: u64,
        pages: Vec<Page>,
    },
    /// Start a commit too large for one message; answered with its txid.
    CommitBegin {
        db: String,
        generation: u64,
        expected_head: u64,
        new_size: u32,
    },
    /// One part of a large commit.
    CommitChunk {
        db: String,
        generation: u64,
        txid: u64,
        part: u32,
        pages: Vec<Page>,
    },
    /// Land a large commit of `parts` parts.
    CommitFinish {
        db: String,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
    },
    /// Did the commit with this client-chosen id land?
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
    /// Database names starting with `prefix`, after `after`, at most `limit`.
    List {
        prefix: String,
        after: Option<String>,
        limit: u32,
    },
    Close {
        db: String,
    },
    Ping,
    /// Since version 2.
    Compact {
        db: String,
    },
    /// Since version 2.
    SetQuota {
        db: String,
        quota_bytes: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Opened {
        generation: u64,
        head_txid: u64,
        size_pages: u32,
        page_size: u32,
        fast_path_limit: u64,
        created: bool,
        pages: Vec<Page>,
    },
    /// One entry per requested page number, in request order; `None` for a
    /// page that does not exist.
    Pages {
        pages: Vec<Option<Vec<u8>>>,
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
        names: Vec<String>,
    },
    Closed,
    Pong,
    Error(ErrorBody),
    /// Since version 2.
    Compacted {
        pages_folded: u64,
        deltas_deleted: u64,
        shards_written: u64,
    },
    /// Since version 2.
    QuotaSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitState {
    Landed {
        txid: u64,
        size_pages: u32,
    },
    /// Not among the recent commits; the database is at this state.
    NotLanded {
        generation: u64,
        head_txid: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorBody {
    /// Another opener took over (`stale_generation`), or the head moved
    /// since the client last saw it (`!stale_generation`).
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
        supported: Vec<u16>,
    },
    Corruption {
        what: String,
    },
    Internal {
        message: String,
    },
    /// Trouble with the server's store; retrying later may succeed.
    Unavailable {
        reason: String,
    },
}

impl ErrorBody {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ErrorBody::Unavailable { .. })
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorBody::Fenced {
                current_generation,
                current_head,
                stale_generation: true,
            } => write!(
                f,
                "fenced: generation is stale (current generation {current_generation}, \
                 head {current_head})"
            ),
            ErrorBody::Fenced {
                current_generation,
                current_head,
                stale_generation: false,
            } => write!(
                f,
                "fenced: head moved (current generation {current_generation}, \
                 head {current_head})"
            ),
            ErrorBody::TooLarge { reason } => write!(f, "too large: {reason}"),
            ErrorBody::QuotaExceeded {
                used,
                needed,
                quota,
            } => write!(
                f,
                "quota exceeded: {used} bytes used + {needed} needed > {quota} quota"
            ),
            ErrorBody::NotFound { db } => write!(f, "database {db:?} not found"),
            ErrorBody::InvalidRequest { reason } => write!(f, "invalid request: {reason}"),
            ErrorBody::Unauthorized { reason } => write!(f, "unauthorized: {reason}"),
            ErrorBody::UnsupportedVersion { supported } => {
                write!(
                    f,
                    "unsupported protocol version; server speaks {supported:?}"
                )
            }
            ErrorBody::Corruption { what } => write!(f, "corruption: {what}"),
            ErrorBody::Internal { message } => write!(f, "internal error: {message}"),
            ErrorBody::Unavailable { reason } => write!(f, "unavailable: {reason}"),
        }
    }
}

impl Request {
    /// The database the request is about: `None` for `List` (which names a
    /// prefix) and `Ping`.
    pub fn db_name(&self) -> Option<&str> {
        match self {
            Request::Open { db, .. }
            | Request::GetPages { db, .. }
            | Request::Commit { db, .. }
            | Request::CommitBegin { db, .. }
            | Request::CommitChunk { db, .. }
            | Request::CommitFinish { db, .. }
            | Request::CommitStatus { db, .. }
            | Request::Stat { db }
            | Request::Delete { db }
            | Request::Close { db }
            | Request::Compact { db }
            | Request::SetQuota { db, .. } => Some(db),
            Request::List { .. } | Request::Ping => None,
        }
    }

    /// A stable snake_case name for metrics labels and logs.
    pub fn op_name(&self) -> &'static str {
        match self {
            Request::Open { .. } => "open",
            Request::GetPages { .. } => "get_pages",
            Request::Commit { .. } => "commit",
            Request::CommitBegin { .. } => "commit_begin",
            Request::CommitChunk { .. } => "commit_chunk",
            Request::CommitFinish { .. } => "commit_finish",
            Request::CommitStatus { .. } => "commit_status",
            Request::Stat { .. } => "stat",
            Request::Delete { .. } => "delete",
            Request::List { .. } => "list",
            Request::Close { .. } => "close",
            Request::Ping => "ping",
            Request::Compact { .. } => "compact",
            Request::SetQuota { .. } => "set_quota",
        }
    }

    /// Every value [`Request::op_name`] returns, for registering metrics up front.
    pub const OP_NAMES: &'static [&'static str] = &[
        "open",
        "get_pages",
        "commit",
        "commit_begin",
        "commit_chunk",
        "commit_finish",
        "commit_status",
        "stat",
        "delete",
        "list",
        "close",
        "ping",
        "compact",
        "set_quota",
    ];

    /// Check what the protocol itself requires of a request, and say what is
    /// wrong if anything is:
    ///
    /// - database names: non-empty, at most [`MAX_DB_NAME_BYTES`] bytes, no NUL
    ///   (`List`'s prefix and `after` have the same limits but may be empty);
    /// - page numbers and sizes are at most [`MAX_PAGE_NUMBER`] and page
    ///   numbers start at 1; at most [`MAX_PAGES_PER_REQUEST`] pages, page
    ///   numbers or ranges in one list;
    /// - commit pages are [`PAGE_SIZE`] bytes each, appear once per request,
    ///   and (in a one-message `Commit`) are within `new_size`;
    /// - `GetPages` and `Open` may repeat page numbers; preload ranges have
    ///   `1 <= first <= last`;
    /// - `List`'s limit is at most [`MAX_LIST_LIMIT`].
    ///
    /// The server checks database state (generation, head, quota) itself.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(db) = self.db_name() {
            check_name("database name", db, false)?;
        }
        match self {
            Request::Open {
                preload_pages,
                preload_ranges,
                ..
            } => {
                check_count("preload_pages", preload_pages.len())?;
                check_count("preload_ranges", preload_ranges.len())?;
                check_pgnos("preload_pages", preload_pages)?;
                for (i, r) in preload_ranges.iter().enumerate() {
                    if r.first == 0 {
                        return Err(format!(
                            "preload_ranges[{i}] ({}..={}) starts at page 0; pages start at 1",
                            r.first, r.last
                        ));
                    }
                    // `last` may run past the end ("to the end"); `first` may not.
                    if r.first > MAX_PAGE_NUMBER {
                        return Err(format!(
                            "preload_ranges[{i}] ({}..={}) starts beyond page {MAX_PAGE_NUMBER}",
                            r.first, r.last
                        ));
                    }
                    if r.first > r.last {
                        return Err(format!(
                            "preload_ranges[{i}] ({}..={}) has first > last",
                            r.first, r.last
                        ));
                    }
                }
                Ok(())
            }
            Request::GetPages { pgnos, .. } => {
                check_count("pgnos", pgnos.len())?;
                check_pgnos("pgnos", pgnos)
            }
            Request::Commit {
                new_size, pages, ..
            } => {
                check_size(*new_size)?;
                check_pages(pages)?;
                match pages.iter().find(|p| p.pgno > *new_size) {
                    Some(p) => Err(format!(
                        "page {} is past the new size of {new_size} pages",
                        p.pgno
                    )),
                    None => Ok(()),
                }
            }
            Request::CommitChunk { pages, .. } => check_pages(pages),
            Request::List {
                prefix,
                after,
                limit,
            } => {
                check_name("list prefix", prefix, true)?;
                if let Some(after) = after {
                    check_name("list start (after)", after, true)?;
                }
                if *limit as usize > MAX_LIST_LIMIT {
                    return Err(format!(
                        "list limit {limit} exceeds the maximum of {MAX_LIST_LIMIT}"
                    ));
                }
                Ok(())
            }
            Request::CommitBegin { new_size, .. } => check_size(*new_size),
            Request::CommitFinish { .. }
            | Request::CommitStatus { .. }
            | Request::Stat { .. }
            | Request::Delete { .. }
            | Request::Close { .. }
            | Request::Ping
            | Request::Compact { .. }
            | Request::SetQuota { .. } => Ok(()),
        }
    }
}

fn check_name(what: &str, name: &str, may_be_empty: bool) -> Result<(), String> {
    if name.is_empty() && !may_be_empty {
        return Err(format!("{what} is empty"));
    }
    if name.len() > MAX_DB_NAME_BYTES {
        return Err(format!(
            "{what} is {} bytes; the maximum is {MAX_DB_NAME_BYTES}",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Err(format!("{what} {name:?} contains a NUL character"));
    }
    Ok(())
}

fn check_count(what: &str, n: usize) -> Result<(), String> {
    if n > MAX_PAGES_PER_REQUEST {
        return Err(format!(
            "{what} has {n} entries; the maximum is {MAX_PAGES_PER_REQUEST}"
        ));
    }
    Ok(())
}

fn check_size(new_size: u32) -> Result<(), String> {
    if new_size > MAX_PAGE_NUMBER {
        return Err(format!(
            "new size {new_size} exceeds the maximum of {MAX_PAGE_NUMBER} pages"
        ));
    }
    Ok(())
}

fn check_pgno(what: &str, i: usize, pgno: u32) -> Result<(), String> {
    if pgno == 0 {
        return Err(format!("{what}[{i}] is page 0; pages start at 1"));
    }
    if pgno > MAX_PAGE_NUMBER {
        return Err(format!(
            "{what}[{i}] is page {pgno}, beyond the largest page number {MAX_PAGE_NUMBER}"
        ));
    }
    Ok(())
}

fn check_pgnos(what: &str, pgnos: &[u32]) -> Result<(), String> {
    for (i, &p) in pgnos.iter().enumerate() {
        check_pgno(what, i, p)?;
    }
    Ok(())
}

fn check_pages(pages: &[Page]) -> Result<(), String> {
    check_count("pages", pages.len())?;
    let mut seen = HashSet::with_capacity(pages.len());
    for (i, p) in pages.iter().enumerate() {
        check_pgno("pages", i, p.pgno)?;
        if p.data.len() != PAGE_SIZE {
            return Err(format!(
                "page {} is {} bytes; pages are {PAGE_SIZE}",
                p.pgno,
                p.data.len()
            ));
        }
        if !seen.insert(p.pgno) {
            return Err(format!("page {} appears twice", p.pgno));
        }
    }
    Ok(())
}
