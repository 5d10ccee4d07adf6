//! The current message types: what the server and the client work with.
//!
//! They are the newest protocol version's messages (or a superset of them),
//! independent of any wire form: [`crate::encode_request`] and friends convert
//! them to and from the negotiated version. These types may change freely; the
//! `vN` modules may not. Results and errors are the API's own types
//! ([`kvlite_api`]): what the engine returns is what the protocol carries.

use std::collections::HashSet;

pub use kvlite_api::{
    CommitInfo, CommitResult, CommitStatus, CompactionReport, DamagedBlob, DbStat, DoctorReport,
    Error, ForkOrigin, Forked, HistoryPage, OpenResponse, Origin, ReadAt, ReadPoint, ReadState,
    Restored,
};
use kvlite_api::{InvalidKind, PageData};

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

/// A request. Its variants are in wire order (each version's union lists
/// them in this order, later versions appending), and their snake_case names
/// are the operation names of metrics and logs ([`Request::op_name`]).
#[derive(
    Debug, Clone, PartialEq, Eq, strum::IntoStaticStr, strum::VariantNames, strum::EnumCount,
)]
#[strum(serialize_all = "snake_case")]
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
    /// Since version 4: start a read transaction (no takeover).
    BeginRead {
        db: String,
        reader: u64,
        since_txid: u64,
    },
    /// Since version 4: pages as of a reader's commit; answered with `Pages`.
    GetPagesAt {
        db: String,
        reader: u64,
        at: ReadAt,
        pgnos: Vec<u32>,
    },
    /// Since version 4.
    EndRead {
        db: String,
        reader: u64,
    },
    /// Since version 5: check the database's stored form (admin only).
    Doctor {
        db: String,
    },
    /// Since version 6: a reader of a past commit (answered by `ReadBegun`).
    BeginReadAt {
        db: String,
        reader: u64,
        point: ReadPoint,
    },
    /// Since version 6: the commits kept, newest first.
    History {
        db: String,
        before: Option<u64>,
        limit: u32,
    },
    /// Since version 6: a copy-on-write fork.
    Fork {
        src: String,
        dst: String,
        point: Option<ReadPoint>,
    },
    /// Since version 6: restore a database to a past state.
    Restore {
        db: String,
        point: ReadPoint,
    },
    /// Since version 6: how long commits stay readable (admin only).
    SetRetention {
        db: String,
        retention_ms: Option<u64>,
    },
}

/// A response, in wire order like [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Opened(OpenResponse),
    /// One entry per requested page number, in request order; `None` for a
    /// page that does not exist.
    Pages {
        pages: Vec<Option<PageData>>,
    },
    Committed(CommitResult),
    Begun {
        txid: u64,
    },
    ChunkStored,
    Status(CommitStatus),
    Stat(DbStat),
    Deleted {
        existed: bool,
    },
    Listed {
        names: Vec<String>,
    },
    Closed,
    Pong,
    Error(Error),
    /// Since version 2.
    Compacted(CompactionReport),
    /// Since version 2.
    QuotaSet,
    /// Since version 4.
    ReadBegun(ReadState),
    /// Since version 4.
    ReadEnded,
    /// Since version 5.
    Doctored(DoctorReport),
    /// Since version 6.
    History(HistoryPage),
    /// Since version 6.
    Forked(Forked),
    /// Since version 6.
    Restored(Restored),
    /// Since version 6.
    RetentionSet,
    /// Since version 6, sent by the server on its own (request id
    /// [`crate::PUSH_REQUEST_ID`]): another connection took `db` over.
    TakenOver {
        db: String,
        generation: u64,
        since_ms: u64,
    },
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
            | Request::SetQuota { db, .. }
            | Request::BeginRead { db, .. }
            | Request::GetPagesAt { db, .. }
            | Request::EndRead { db, .. }
            | Request::Doctor { db }
            | Request::BeginReadAt { db, .. }
            | Request::History { db, .. }
            | Request::Restore { db, .. }
            | Request::SetRetention { db, .. } => Some(db),
            // A fork names two: `src` here, `dst` by `second_db_name`.
            Request::Fork { src, .. } => Some(src),
            Request::List { .. } | Request::Ping => None,
        }
    }

    /// The other database a request names (a fork's target), which must
    /// pass the same checks as the first.
    pub fn second_db_name(&self) -> Option<&str> {
        match self {
            Request::Fork { dst, .. } => Some(dst),
            _ => None,
        }
    }

    /// A stable snake_case name for metrics labels and logs.
    pub fn op_name(&self) -> &'static str {
        self.into()
    }

    /// Every value [`Request::op_name`] returns, for registering metrics up front.
    pub const OP_NAMES: &'static [&'static str] = <Request as strum::VariantNames>::VARIANTS;

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
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(db) = self.db_name() {
            check_name("database name", db, false)?;
        }
        if let Some(db) = self.second_db_name() {
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
                    let (first, last) = (r.first, r.last);
                    if first == 0 {
                        return Err(range(format!(
                            "preload_ranges[{i}] ({first}..={last}) starts at page 0; pages start at 1"
                        )));
                    }
                    // `last` may run past the end ("to the end"); `first` may not.
                    if first > MAX_PAGE_NUMBER {
                        return Err(range(format!(
                            "preload_ranges[{i}] ({first}..={last}) starts beyond page {MAX_PAGE_NUMBER}"
                        )));
                    }
                    if first > last {
                        return Err(range(format!(
                            "preload_ranges[{i}] ({first}..={last}) has first > last"
                        )));
                    }
                }
                Ok(())
            }
            Request::GetPages { pgnos, .. } => {
                check_count("pgnos", pgnos.len())?;
                check_pgnos("pgnos", pgnos)
            }
            Request::GetPagesAt { at, pgnos, .. } => {
                check_size(at.size_pages)?;
                check_count("pgnos", pgnos.len())?;
                check_pgnos("pgnos", pgnos)
            }
            Request::Commit {
                new_size, pages, ..
            } => {
                check_size(*new_size)?;
                check_pages(pages)?;
                match pages.iter().find(|p| p.pgno > *new_size) {
                    Some(p) => Err(Error::invalid(
                        InvalidKind::PagePastSize,
                        format!("page {} is past the new size of {new_size} pages", p.pgno),
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
                    return Err(Error::invalid(
                        InvalidKind::ListLimit,
                        format!("list limit {limit} exceeds the maximum of {MAX_LIST_LIMIT}"),
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
            | Request::SetQuota { .. }
            | Request::BeginRead { .. }
            | Request::EndRead { .. }
            | Request::Doctor { .. }
            | Request::BeginReadAt { .. }
            | Request::Fork { .. }
            | Request::Restore { .. }
            | Request::SetRetention { .. } => Ok(()),
            Request::History { limit, .. } => {
                if *limit as usize > crate::v6::MAX_HISTORY_COMMITS {
                    return Err(Error::invalid(
                        InvalidKind::ListLimit,
                        format!(
                            "history limit {limit} exceeds the maximum of {}",
                            crate::v6::MAX_HISTORY_COMMITS
                        ),
                    ));
                }
                Ok(())
            }
        }
    }
}

fn range(detail: String) -> Error {
    Error::invalid(InvalidKind::Range, detail)
}

fn check_name(what: &str, name: &str, may_be_empty: bool) -> Result<(), Error> {
    let bad = |detail: String| Err(Error::invalid(InvalidKind::Name, detail));
    if name.is_empty() && !may_be_empty {
        return bad(format!("{what} is empty"));
    }
    if name.len() > MAX_DB_NAME_BYTES {
        return bad(format!(
            "{what} is {} bytes; the maximum is {MAX_DB_NAME_BYTES}",
            name.len()
        ));
    }
    if name.contains('\0') {
        return bad(format!("{what} {name:?} contains a NUL character"));
    }
    Ok(())
}

fn check_count(what: &str, n: usize) -> Result<(), Error> {
    if n > MAX_PAGES_PER_REQUEST {
        return Err(Error::invalid(
            InvalidKind::Protocol,
            format!("{what} has {n} entries; the maximum is {MAX_PAGES_PER_REQUEST}"),
        ));
    }
    Ok(())
}

fn check_size(new_size: u32) -> Result<(), Error> {
    if new_size > MAX_PAGE_NUMBER {
        return Err(Error::invalid(
            InvalidKind::Size,
            format!("new size {new_size} exceeds the maximum of {MAX_PAGE_NUMBER} pages"),
        ));
    }
    Ok(())
}

fn check_pgno(what: &str, i: usize, pgno: u32) -> Result<(), Error> {
    if pgno == 0 {
        return Err(Error::invalid(
            InvalidKind::PageNumber,
            format!("{what}[{i}] is page 0; pages start at 1"),
        ));
    }
    if pgno > MAX_PAGE_NUMBER {
        return Err(Error::invalid(
            InvalidKind::PageNumber,
            format!("{what}[{i}] is page {pgno}, beyond the largest page number {MAX_PAGE_NUMBER}"),
        ));
    }
    Ok(())
}

fn check_pgnos(what: &str, pgnos: &[u32]) -> Result<(), Error> {
    for (i, &p) in pgnos.iter().enumerate() {
        check_pgno(what, i, p)?;
    }
    Ok(())
}

fn check_pages(pages: &[Page]) -> Result<(), Error> {
    check_count("pages", pages.len())?;
    let mut seen = HashSet::with_capacity(pages.len());
    for (i, p) in pages.iter().enumerate() {
        check_pgno("pages", i, p.pgno)?;
        if p.data.len() != PAGE_SIZE {
            return Err(Error::invalid(
                InvalidKind::PageLength,
                format!(
                    "page {} is {} bytes; pages are {PAGE_SIZE}",
                    p.pgno,
                    p.data.len()
                ),
            ));
        }
        if !seen.insert(p.pgno) {
            return Err(Error::invalid(
                InvalidKind::DuplicatePage,
                format!("page {} appears twice", p.pgno),
            ));
        }
    }
    Ok(())
}
