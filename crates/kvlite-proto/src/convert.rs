//! Conversions between the current types ([`crate::msg`]) and each version's.
//!
//! Downgrades (`msg -> vN`) are `TryFrom<&msg::…>`: they borrow page data
//! rather than copy it, and fail with [`ProtoError::NotInVersion`] for what
//! the version cannot express (never dropping it silently), or with
//! [`ProtoError::TooLarge`] for a list over the version's cap. Upgrades
//! (`vN -> msg`) are `From` and always succeed.
//!
//! Errors, database state and results are `kvlite_api` types in `msg`; each
//! version's wire form of them is converted here and nowhere else: one
//! function per direction per version ([`error_to_v1`] / [`error_from_v1`],
//! [`error_to_v3`] / [`error_from_v3`], and likewise for stats). What an older
//! version does not carry (the database of an error, kinds, the caller's own
//! generation) comes back empty, zero or `Unknown(0)`; the client fills in its
//! side with [`kvlite_api::Error::with_request_context`].
//!
//! These live outside the frozen `vN` modules because they grow with `msg`.

use kvlite_api::{
    CommitResult, CommitStatus, CompactionReport, CorruptionKind, DbStat, Error, FenceReason,
    InvalidKind, OpenResponse, Origin, PageData, ReadAt, ReadState, TooLargeKind,
};

use crate::codec::{Bounded, Data};
use crate::{ProtoError, msg, v1, v2, v3, v4, v5, v6};

fn not_in(version: u16, what: &'static str) -> ProtoError {
    ProtoError::NotInVersion { version, what }
}

fn bounded<T, const MAX: usize>(items: Vec<T>) -> Result<Bounded<T, MAX>, ProtoError> {
    if items.len() > MAX {
        return Err(ProtoError::TooLarge {
            len: items.len(),
            max: MAX,
        });
    }
    Ok(Bounded(items))
}

fn pages_out<const MAX: usize>(
    pages: &[msg::Page],
) -> Result<Bounded<v1::Page<'_>, MAX>, ProtoError> {
    if pages.len() > MAX {
        return Err(ProtoError::TooLarge {
            len: pages.len(),
            max: MAX,
        });
    }
    Ok(Bounded(
        pages
            .iter()
            .map(|p| v1::Page {
                pgno: p.pgno,
                data: Data::from(p.data.as_slice()),
            })
            .collect(),
    ))
}

fn pages_in<const MAX: usize>(pages: Bounded<v1::Page<'_>, MAX>) -> Vec<msg::Page> {
    pages
        .0
        .into_iter()
        .map(|p| msg::Page {
            pgno: p.pgno,
            data: p.data.into_vec(),
        })
        .collect()
}

fn maybe_pages_out<const MAX: usize>(
    pages: &[Option<PageData>],
) -> Result<Bounded<Option<Data<'_>>, MAX>, ProtoError> {
    if pages.len() > MAX {
        return Err(ProtoError::TooLarge {
            len: pages.len(),
            max: MAX,
        });
    }
    Ok(Bounded(
        pages
            .iter()
            .map(|p| p.as_ref().map(|p| Data::from(&p[..])))
            .collect(),
    ))
}

fn maybe_pages_in<const MAX: usize>(
    pages: Bounded<Option<Data<'_>>, MAX>,
) -> Vec<Option<PageData>> {
    pages
        .0
        .into_iter()
        .map(|p| p.map(|d| PageData::from(d.into_vec())))
        .collect()
}

fn range_out(r: &msg::PageRange) -> v1::PageRange {
    v1::PageRange {
        first: r.first,
        last: r.last,
    }
}

fn range_in(r: v1::PageRange) -> msg::PageRange {
    msg::PageRange {
        first: r.first,
        last: r.last,
    }
}

fn status_out(s: &CommitStatus) -> v1::CommitState {
    match *s {
        CommitStatus::Landed(r) => v1::CommitState::Landed {
            txid: r.txid,
            size_pages: r.size_pages,
        },
        CommitStatus::NotLanded {
            generation,
            head_txid,
        } => v1::CommitState::NotLanded {
            generation,
            head_txid,
        },
    }
}

fn status_in(s: v1::CommitState) -> CommitStatus {
    match s {
        v1::CommitState::Landed { txid, size_pages } => {
            CommitStatus::Landed(CommitResult { txid, size_pages })
        }
        v1::CommitState::NotLanded {
            generation,
            head_txid,
        } => CommitStatus::NotLanded {
            generation,
            head_txid,
        },
    }
}

fn opened_pages_out<const MAX: usize>(
    pages: &[(u32, PageData)],
) -> Result<Bounded<v1::Page<'_>, MAX>, ProtoError> {
    if pages.len() > MAX {
        return Err(ProtoError::TooLarge {
            len: pages.len(),
            max: MAX,
        });
    }
    Ok(Bounded(
        pages
            .iter()
            .map(|(pgno, data)| v1::Page {
                pgno: *pgno,
                data: Data::from(&data[..]),
            })
            .collect(),
    ))
}

fn opened_pages_in<const MAX: usize>(pages: Bounded<v1::Page<'_>, MAX>) -> Vec<(u32, PageData)> {
    pages
        .0
        .into_iter()
        .map(|p| (p.pgno, PageData::from(p.data.into_vec())))
        .collect()
}

/// A database state built from `$s`, with the fields every version
/// carries copied and `$extra` supplying the rest.
macro_rules! stat {
    ($s:ident => $($T:ident)::+ { $($extra:tt)* }) => {
        $($T)::+ {
            $($extra)*
            generation: $s.generation,
            head_txid: $s.head_txid,
            next_txid: $s.next_txid,
            materialized_txid: $s.materialized_txid,
            size_pages: $s.size_pages,
            page_size: $s.page_size,
            created_ms: $s.created_ms,
            page_index_entries: $s.page_index_entries,
            deltas: $s.deltas,
            delta_bytes: $s.delta_bytes,
            shards: $s.shards,
            shard_bytes: $s.shard_bytes,
            used_bytes: $s.used_bytes,
            quota_bytes: $s.quota_bytes,
            pending_commits: $s.pending_commits,
        }
    };
}

/// Version 1's database state (also version 2's): no id, shard size,
/// origin or fast-path limit.
pub fn stat_to_v1(s: &DbStat) -> v1::DbStat {
    stat!(s => v1::DbStat { name: s.name.clone(), })
}

/// What version 1 does not carry reads as unknown: id 0, the layout's
/// shard size, a native origin, fast-path limit 0.
pub fn stat_from_v1(s: v1::DbStat) -> DbStat {
    stat!(s => DbStat {
        name: s.name,
        id: 0,
        shard_pages: kvlite_api::SHARD_PAGES,
        origin: Origin::Native,
        fast_path_limit: 0,
        history_floor: 0,
        retention_ms: 0,
        history_bytes: 0,
        kept_versions: 0,
        pins: 0,
        forked_from: None,
    })
}

pub fn stat_to_v3(s: &DbStat) -> v3::DbStat {
    stat!(s => v3::DbStat {
        name: s.name.clone(),
        id: s.id,
        shard_pages: s.shard_pages,
        origin: v3::OriginCode(s.origin),
        fast_path_limit: s.fast_path_limit,
    })
}

pub fn stat_from_v3(s: v3::DbStat) -> DbStat {
    stat!(s => DbStat {
        name: s.name,
        id: s.id,
        shard_pages: s.shard_pages,
        origin: s.origin.0,
        fast_path_limit: s.fast_path_limit,
        history_floor: 0,
        retention_ms: 0,
        history_bytes: 0,
        kept_versions: 0,
        pins: 0,
        forked_from: None,
    })
}

/// Version 1's error union (also version 2's). Errors it has no member for
/// travel as the nearest one that leads an old client to the same action:
/// a full store as "unavailable" (nothing changed, try later), an unknown
/// commit outcome as "internal" (never as "unavailable", which would tell
/// the client nothing landed).
pub fn error_to_v1(e: &Error) -> Result<v1::ErrorBody, ProtoError> {
    Ok(match e {
        Error::Fenced { reason, .. } => match *reason {
            FenceReason::StaleGeneration { current, head, .. } => v1::ErrorBody::Fenced {
                current_generation: current,
                current_head: head,
                stale_generation: true,
            },
            FenceReason::HeadMismatch {
                generation,
                current,
                ..
            } => v1::ErrorBody::Fenced {
                current_generation: generation,
                current_head: current,
                stale_generation: false,
            },
            // No version carries a move: to the client it is a takeover.
            FenceReason::Moved { .. } => v1::ErrorBody::Fenced {
                current_generation: 0,
                current_head: 0,
                stale_generation: true,
            },
        },
        Error::NotFound(db) => v1::ErrorBody::NotFound { db: db.clone() },
        Error::InvalidRequest(i) => v1::ErrorBody::InvalidRequest {
            reason: i.detail.clone(),
        },
        Error::TooLarge(t) => v1::ErrorBody::TooLarge {
            reason: t.detail.clone(),
        },
        Error::QuotaExceeded {
            used,
            needed,
            quota,
            ..
        } => v1::ErrorBody::QuotaExceeded {
            used: *used,
            needed: *needed,
            quota: *quota,
        },
        Error::Corruption { what, .. } => v1::ErrorBody::Corruption { what: what.clone() },
        Error::Unauthorized(reason) => v1::ErrorBody::Unauthorized {
            reason: reason.clone(),
        },
        Error::UnsupportedVersion { supported } => v1::ErrorBody::UnsupportedVersion {
            supported: bounded(supported.clone())?,
        },
        Error::Unavailable(reason) => v1::ErrorBody::Unavailable {
            reason: reason.clone(),
        },
        Error::StoreFull(_) => v1::ErrorBody::Unavailable {
            reason: e.to_string(),
        },
        Error::Internal(message) => v1::ErrorBody::Internal {
            message: message.clone(),
        },
        other => v1::ErrorBody::Internal {
            message: other.to_string(),
        },
    })
}

pub fn error_from_v1(e: v1::ErrorBody) -> Error {
    match e {
        v1::ErrorBody::Fenced {
            current_generation,
            current_head,
            stale_generation,
        } => Error::Fenced {
            db: String::new(),
            reason: if stale_generation {
                FenceReason::StaleGeneration {
                    current: current_generation,
                    yours: 0,
                    head: current_head,
                    since_ms: 0,
                }
            } else {
                FenceReason::HeadMismatch {
                    generation: current_generation,
                    current: current_head,
                    expected: 0,
                }
            },
        },
        v1::ErrorBody::TooLarge { reason } => Error::too_large(TooLargeKind::Unknown(0), reason),
        v1::ErrorBody::QuotaExceeded {
            used,
            needed,
            quota,
        } => Error::QuotaExceeded {
            db: String::new(),
            used,
            needed,
            quota,
        },
        v1::ErrorBody::NotFound { db } => Error::NotFound(db),
        v1::ErrorBody::InvalidRequest { reason } => Error::invalid(InvalidKind::Unknown(0), reason),
        v1::ErrorBody::Unauthorized { reason } => Error::Unauthorized(reason),
        v1::ErrorBody::UnsupportedVersion { supported } => Error::UnsupportedVersion {
            supported: supported.0,
        },
        v1::ErrorBody::Corruption { what } => Error::corrupt("", CorruptionKind::Unknown(0), what),
        v1::ErrorBody::Internal { message } => Error::Internal(message),
        v1::ErrorBody::Unavailable { reason } => Error::Unavailable(reason),
    }
}

/// `Error -> $v::ErrorBody` for the versions with typed errors (3 on);
/// `$fence` converts the fence reason, the one part that differs.
macro_rules! error_out {
    ($v:ident, $e:expr, $fence:expr) => {
        Ok(match $e {
        Error::Fenced { db, reason } => $v::ErrorBody::Fenced {
            db: db.clone(),
            reason: $fence(reason),
        },
        Error::NotFound(db) => $v::ErrorBody::NotFound { db: db.clone() },
        Error::InvalidRequest(i) => $v::ErrorBody::InvalidRequest {
            kind: i.kind.code(),
            detail: i.detail.clone(),
        },
        Error::TooLarge(t) => $v::ErrorBody::TooLarge {
            kind: t.kind.code(),
            detail: t.detail.clone(),
        },
        Error::QuotaExceeded {
            db,
            used,
            needed,
            quota,
        } => $v::ErrorBody::QuotaExceeded {
            db: db.clone(),
            used: *used,
            needed: *needed,
            quota: *quota,
        },
        Error::Corruption { db, kind, what } => $v::ErrorBody::Corruption {
            db: db.clone(),
            kind: kind.code(),
            what: what.clone(),
        },
        Error::Unauthorized(reason) => $v::ErrorBody::Unauthorized {
            reason: reason.clone(),
        },
        Error::UnsupportedVersion { supported } => $v::ErrorBody::UnsupportedVersion {
            supported: bounded(supported.clone())?,
        },
        Error::Unavailable(reason) => $v::ErrorBody::Unavailable {
            reason: reason.clone(),
        },
        Error::StoreFull(reason) => $v::ErrorBody::StoreFull {
            reason: reason.clone(),
        },
        Error::OutcomeUnknown(reason) => $v::ErrorBody::OutcomeUnknown {
            reason: reason.clone(),
        },
        Error::Internal(message) => $v::ErrorBody::Internal {
            message: message.clone(),
        },
        other => $v::ErrorBody::Internal {
            message: other.to_string(),
        },
    })
    };
}

/// `$v::ErrorBody -> Error`, likewise.
macro_rules! error_in {
    ($v:ident, $e:expr, $fence:expr) => {
        match $e {
        $v::ErrorBody::Fenced { db, reason } => Error::Fenced {
            db,
            reason: $fence(reason),
        },
        $v::ErrorBody::NotFound { db } => Error::NotFound(db),
        $v::ErrorBody::InvalidRequest { kind, detail } => {
            Error::invalid(InvalidKind::from_code(kind), detail)
        }
        $v::ErrorBody::TooLarge { kind, detail } => {
            Error::too_large(TooLargeKind::from_code(kind), detail)
        }
        $v::ErrorBody::QuotaExceeded {
            db,
            used,
            needed,
            quota,
        } => Error::QuotaExceeded {
            db,
            used,
            needed,
            quota,
        },
        $v::ErrorBody::Corruption { db, kind, what } => Error::Corruption {
            db,
            kind: CorruptionKind::from_code(kind),
            what,
        },
        $v::ErrorBody::Unauthorized { reason } => Error::Unauthorized(reason),
        $v::ErrorBody::UnsupportedVersion { supported } => Error::UnsupportedVersion {
            supported: supported.0,
        },
        $v::ErrorBody::Unavailable { reason } => Error::Unavailable(reason),
        $v::ErrorBody::StoreFull { reason } => Error::StoreFull(reason),
        $v::ErrorBody::OutcomeUnknown { reason } => Error::OutcomeUnknown(reason),
        $v::ErrorBody::Internal { message } => Error::Internal(message),
    }
    };
}

pub fn error_to_v3(e: &Error) -> Result<v3::ErrorBody, ProtoError> {
    error_out!(v3, e, |r: &FenceReason| match *r {
        // Version 3 does not carry when the takeover happened.
        FenceReason::StaleGeneration {
            current,
            yours,
            head,
            ..
        } => v3::FenceReason::StaleGeneration {
            current,
            yours,
            head,
        },
        FenceReason::HeadMismatch {
            generation,
            current,
            expected,
        } => v3::FenceReason::HeadMismatch {
            generation,
            current,
            expected,
        },
        FenceReason::Moved { .. } => v3::FenceReason::StaleGeneration {
            current: 0,
            yours: 0,
            head: 0,
        },
    })
}

pub fn error_from_v3(e: v3::ErrorBody) -> Error {
    error_in!(v3, e, |r: v3::FenceReason| match r {
        v3::FenceReason::StaleGeneration {
            current,
            yours,
            head,
        } => FenceReason::StaleGeneration {
            current,
            yours,
            head,
            since_ms: 0,
        },
        v3::FenceReason::HeadMismatch {
            generation,
            current,
            expected,
        } => FenceReason::HeadMismatch {
            generation,
            current,
            expected,
        },
    })
}

pub fn error_to_v4(e: &Error) -> Result<v4::ErrorBody, ProtoError> {
    error_out!(v4, e, |r: &FenceReason| match *r {
        FenceReason::StaleGeneration {
            current,
            yours,
            head,
            since_ms,
        } => v4::FenceReason::StaleGeneration {
            current,
            yours,
            head,
            since_ms,
        },
        FenceReason::HeadMismatch {
            generation,
            current,
            expected,
        } => v4::FenceReason::HeadMismatch {
            generation,
            current,
            expected,
        },
        FenceReason::Moved { .. } => v4::FenceReason::StaleGeneration {
            current: 0,
            yours: 0,
            head: 0,
            since_ms: 0,
        },
    })
}

pub fn error_from_v4(e: v4::ErrorBody) -> Error {
    error_in!(v4, e, |r: v4::FenceReason| match r {
        v4::FenceReason::StaleGeneration {
            current,
            yours,
            head,
            since_ms,
        } => FenceReason::StaleGeneration {
            current,
            yours,
            head,
            since_ms,
        },
        v4::FenceReason::HeadMismatch {
            generation,
            current,
            expected,
        } => FenceReason::HeadMismatch {
            generation,
            current,
            expected,
        },
    })
}

/// `msg::Request -> $v::Request` for the members every version has; `$extra`
/// holds the arms for the rest.
macro_rules! request_out {
    ($v:ident, $req:expr, $($extra:tt)*) => {
        match $req {
            msg::Request::Open {
                db,
                preload_pages,
                preload_ranges,
            } => $v::Request::Open {
                db: db.clone(),
                preload_pages: bounded(preload_pages.clone())?,
                preload_ranges: bounded(preload_ranges.iter().map(range_out).collect())?,
            },
            msg::Request::GetPages {
                db,
                generation,
                pgnos,
            } => $v::Request::GetPages {
                db: db.clone(),
                generation: *generation,
                pgnos: bounded(pgnos.clone())?,
            },
            msg::Request::Commit {
                db,
                generation,
                expected_head,
                new_size,
                commit_id,
                pages,
            } => $v::Request::Commit {
                db: db.clone(),
                generation: *generation,
                expected_head: *expected_head,
                new_size: *new_size,
                commit_id: *commit_id,
                pages: pages_out(pages)?,
            },
            msg::Request::CommitBegin {
                db,
                generation,
                expected_head,
                new_size,
            } => $v::Request::CommitBegin {
                db: db.clone(),
                generation: *generation,
                expected_head: *expected_head,
                new_size: *new_size,
            },
            msg::Request::CommitChunk {
                db,
                generation,
                txid,
                part,
                pages,
            } => $v::Request::CommitChunk {
                db: db.clone(),
                generation: *generation,
                txid: *txid,
                part: *part,
                pages: pages_out(pages)?,
            },
            msg::Request::CommitFinish {
                db,
                generation,
                expected_head,
                txid,
                parts,
                commit_id,
            } => $v::Request::CommitFinish {
                db: db.clone(),
                generation: *generation,
                expected_head: *expected_head,
                txid: *txid,
                parts: *parts,
                commit_id: *commit_id,
            },
            msg::Request::CommitStatus { db, commit_id } => $v::Request::CommitStatus {
                db: db.clone(),
                commit_id: *commit_id,
            },
            msg::Request::Stat { db } => $v::Request::Stat { db: db.clone() },
            msg::Request::Delete { db } => $v::Request::Delete { db: db.clone() },
            msg::Request::List {
                prefix,
                after,
                limit,
            } => $v::Request::List {
                prefix: prefix.clone(),
                after: after.clone(),
                limit: *limit,
            },
            msg::Request::Close { db } => $v::Request::Close { db: db.clone() },
            msg::Request::Ping => $v::Request::Ping,
            $($extra)*
        }
    };
}

/// `$v::Request -> msg::Request` for the members every version has.
macro_rules! request_in {
    ($v:ident, $req:expr, $($extra:tt)*) => {
        match $req {
            $v::Request::Open {
                db,
                preload_pages,
                preload_ranges,
            } => msg::Request::Open {
                db,
                preload_pages: preload_pages.0,
                preload_ranges: preload_ranges.0.into_iter().map(range_in).collect(),
            },
            $v::Request::GetPages {
                db,
                generation,
                pgnos,
            } => msg::Request::GetPages {
                db,
                generation,
                pgnos: pgnos.0,
            },
            $v::Request::Commit {
                db,
                generation,
                expected_head,
                new_size,
                commit_id,
                pages,
            } => msg::Request::Commit {
                db,
                generation,
                expected_head,
                new_size,
                commit_id,
                pages: pages_in(pages),
            },
            $v::Request::CommitBegin {
                db,
                generation,
                expected_head,
                new_size,
            } => msg::Request::CommitBegin {
                db,
                generation,
                expected_head,
                new_size,
            },
            $v::Request::CommitChunk {
                db,
                generation,
                txid,
                part,
                pages,
            } => msg::Request::CommitChunk {
                db,
                generation,
                txid,
                part,
                pages: pages_in(pages),
            },
            $v::Request::CommitFinish {
                db,
                generation,
                expected_head,
                txid,
                parts,
                commit_id,
            } => msg::Request::CommitFinish {
                db,
                generation,
                expected_head,
                txid,
                parts,
                commit_id,
            },
            $v::Request::CommitStatus { db, commit_id } => {
                msg::Request::CommitStatus { db, commit_id }
            }
            $v::Request::Stat { db } => msg::Request::Stat { db },
            $v::Request::Delete { db } => msg::Request::Delete { db },
            $v::Request::List {
                prefix,
                after,
                limit,
            } => msg::Request::List {
                prefix,
                after,
                limit,
            },
            $v::Request::Close { db } => msg::Request::Close { db },
            $v::Request::Ping => msg::Request::Ping,
            $($extra)*
        }
    };
}

/// `msg::Response -> $v::Response` for the members whose form every
/// version shares; `$extra` holds the arms for the rest.
macro_rules! response_out {
    ($v:ident, $resp:expr, $($extra:tt)*) => {
        match $resp {
            msg::Response::Opened(o) => $v::Response::Opened {
                generation: o.generation,
                head_txid: o.head_txid,
                size_pages: o.size_pages,
                page_size: o.page_size,
                fast_path_limit: o.fast_path_limit,
                created: o.created,
                pages: opened_pages_out(&o.pages)?,
            },
            msg::Response::Pages { pages } => $v::Response::Pages {
                pages: maybe_pages_out(pages)?,
            },
            msg::Response::Committed(r) => $v::Response::Committed {
                txid: r.txid,
                size_pages: r.size_pages,
            },
            msg::Response::Begun { txid } => $v::Response::Begun { txid: *txid },
            msg::Response::ChunkStored => $v::Response::ChunkStored,
            msg::Response::Status(s) => $v::Response::Status(status_out(s)),
            msg::Response::Deleted { existed } => $v::Response::Deleted { existed: *existed },
            msg::Response::Listed { names } => $v::Response::Listed {
                names: bounded(names.clone())?,
            },
            msg::Response::Closed => $v::Response::Closed,
            msg::Response::Pong => $v::Response::Pong,
            $($extra)*
        }
    };
}

/// `$v::Response -> msg::Response` for the members whose form every
/// version shares.
macro_rules! response_in {
    ($v:ident, $resp:expr, $($extra:tt)*) => {
        match $resp {
            $v::Response::Opened {
                generation,
                head_txid,
                size_pages,
                page_size,
                fast_path_limit,
                created,
                pages,
            } => msg::Response::Opened(OpenResponse {
                generation,
                head_txid,
                size_pages,
                page_size,
                fast_path_limit,
                created,
                pages: opened_pages_in(pages),
            }),
            $v::Response::Pages { pages } => msg::Response::Pages {
                pages: maybe_pages_in(pages),
            },
            $v::Response::Committed { txid, size_pages } => {
                msg::Response::Committed(CommitResult { txid, size_pages })
            }
            $v::Response::Begun { txid } => msg::Response::Begun { txid },
            $v::Response::ChunkStored => msg::Response::ChunkStored,
            $v::Response::Status(s) => msg::Response::Status(status_in(s)),
            $v::Response::Deleted { existed } => msg::Response::Deleted { existed },
            $v::Response::Listed { names } => msg::Response::Listed { names: names.0 },
            $v::Response::Closed => msg::Response::Closed,
            $v::Response::Pong => msg::Response::Pong,
            $($extra)*
        }
    };
}

/// The request and response envelopes are the same in every version: only
/// the request and response they carry are converted. A version whose
/// requests are an older version's uses that version's client envelope.
macro_rules! client_envelope {
    ($v:ident) => {
        impl<'a> TryFrom<&'a msg::ClientMessage> for $v::ClientMessage<'a> {
            type Error = ProtoError;

            fn try_from(m: &'a msg::ClientMessage) -> Result<Self, ProtoError> {
                Ok($v::ClientMessage {
                    request_id: m.request_id,
                    request: (&m.request).try_into()?,
                })
            }
        }

        impl From<$v::ClientMessage<'_>> for msg::ClientMessage {
            fn from(m: $v::ClientMessage<'_>) -> Self {
                msg::ClientMessage {
                    request_id: m.request_id,
                    request: m.request.into(),
                }
            }
        }
    };
}

macro_rules! server_envelope {
    ($v:ident) => {
        impl<'a> TryFrom<&'a msg::ServerMessage> for $v::ServerMessage<'a> {
            type Error = ProtoError;

            fn try_from(m: &'a msg::ServerMessage) -> Result<Self, ProtoError> {
                Ok($v::ServerMessage {
                    request_id: m.request_id,
                    response: (&m.response).try_into()?,
                })
            }
        }

        impl From<$v::ServerMessage<'_>> for msg::ServerMessage {
            fn from(m: $v::ServerMessage<'_>) -> Self {
                msg::ServerMessage {
                    request_id: m.request_id,
                    response: m.response.into(),
                }
            }
        }
    };
}

// ---- version 1 ----

impl<'a> TryFrom<&'a msg::Request> for v1::Request<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Request) -> Result<Self, ProtoError> {
        Ok(request_out!(v1, r,
            msg::Request::Compact { .. } => return Err(not_in(1, "Request::Compact")),
            msg::Request::SetQuota { .. } => return Err(not_in(1, "Request::SetQuota")),
            msg::Request::BeginRead { .. } => return Err(not_in(1, "Request::BeginRead")),
            msg::Request::GetPagesAt { .. } => return Err(not_in(1, "Request::GetPagesAt")),
            msg::Request::EndRead { .. } => return Err(not_in(1, "Request::EndRead")),
            msg::Request::Doctor { .. } => return Err(not_in(1, "Request::Doctor")),
            msg::Request::BeginReadAt { .. } => return Err(not_in(1, "Request::BeginReadAt")),
            msg::Request::History { .. } => return Err(not_in(1, "Request::History")),
            msg::Request::Fork { .. } => return Err(not_in(1, "Request::Fork")),
            msg::Request::Restore { .. } => return Err(not_in(1, "Request::Restore")),
            msg::Request::SetRetention { .. } => return Err(not_in(1, "Request::SetRetention")),
        ))
    }
}

impl From<v1::Request<'_>> for msg::Request {
    fn from(r: v1::Request<'_>) -> Self {
        request_in!(v1, r,)
    }
}

impl<'a> TryFrom<&'a msg::Response> for v1::Response<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Response) -> Result<Self, ProtoError> {
        Ok(response_out!(v1, r,
            msg::Response::Stat(s) => v1::Response::Stat(stat_to_v1(s)),
            msg::Response::Error(e) => v1::Response::Error(error_to_v1(e)?),
            msg::Response::Compacted(_) => return Err(not_in(1, "Response::Compacted")),
            msg::Response::QuotaSet => return Err(not_in(1, "Response::QuotaSet")),
            msg::Response::ReadBegun(_) => return Err(not_in(1, "Response::ReadBegun")),
            msg::Response::ReadEnded => return Err(not_in(1, "Response::ReadEnded")),
            msg::Response::Doctored(_) => return Err(not_in(1, "Response::Doctored")),
            msg::Response::History(_) => return Err(not_in(1, "Response::History")),
            msg::Response::Forked(_) => return Err(not_in(1, "Response::Forked")),
            msg::Response::Restored(_) => return Err(not_in(1, "Response::Restored")),
            msg::Response::RetentionSet => return Err(not_in(1, "Response::RetentionSet")),
            msg::Response::TakenOver { .. } => return Err(not_in(1, "Response::TakenOver")),
        ))
    }
}

impl From<v1::Response<'_>> for msg::Response {
    fn from(r: v1::Response<'_>) -> Self {
        response_in!(v1, r,
            v1::Response::Stat(s) => msg::Response::Stat(stat_from_v1(s)),
            v1::Response::Error(e) => msg::Response::Error(error_from_v1(e)),
        )
    }
}

client_envelope!(v1);
server_envelope!(v1);

// ---- version 2 (its requests are also version 3's) ----

impl<'a> TryFrom<&'a msg::Request> for v2::Request<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Request) -> Result<Self, ProtoError> {
        Ok(request_out!(v2, r,
            msg::Request::Compact { db } => v2::Request::Compact { db: db.clone() },
            msg::Request::SetQuota { db, quota_bytes } => v2::Request::SetQuota {
                db: db.clone(),
                quota_bytes: *quota_bytes,
            },
            msg::Request::BeginRead { .. } => return Err(not_in(3, "Request::BeginRead")),
            msg::Request::GetPagesAt { .. } => return Err(not_in(3, "Request::GetPagesAt")),
            msg::Request::EndRead { .. } => return Err(not_in(3, "Request::EndRead")),
            msg::Request::Doctor { .. } => return Err(not_in(3, "Request::Doctor")),
            msg::Request::BeginReadAt { .. } => return Err(not_in(3, "Request::BeginReadAt")),
            msg::Request::History { .. } => return Err(not_in(3, "Request::History")),
            msg::Request::Fork { .. } => return Err(not_in(3, "Request::Fork")),
            msg::Request::Restore { .. } => return Err(not_in(3, "Request::Restore")),
            msg::Request::SetRetention { .. } => return Err(not_in(3, "Request::SetRetention")),
        ))
    }
}

impl From<v2::Request<'_>> for msg::Request {
    fn from(r: v2::Request<'_>) -> Self {
        request_in!(v2, r,
            v2::Request::Compact { db } => msg::Request::Compact { db },
            v2::Request::SetQuota { db, quota_bytes } => msg::Request::SetQuota { db, quota_bytes },
        )
    }
}

impl<'a> TryFrom<&'a msg::Response> for v2::Response<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Response) -> Result<Self, ProtoError> {
        Ok(response_out!(v2, r,
            msg::Response::Stat(s) => v2::Response::Stat(stat_to_v1(s)),
            msg::Response::Error(e) => v2::Response::Error(error_to_v1(e)?),
            msg::Response::Compacted(c) => v2::Response::Compacted {
                pages_folded: c.pages_folded,
                deltas_deleted: c.deltas_deleted,
                shards_written: c.shards_written,
            },
            msg::Response::QuotaSet => v2::Response::QuotaSet,
            msg::Response::ReadBegun(_) => return Err(not_in(2, "Response::ReadBegun")),
            msg::Response::ReadEnded => return Err(not_in(2, "Response::ReadEnded")),
            msg::Response::Doctored(_) => return Err(not_in(2, "Response::Doctored")),
            msg::Response::History(_) => return Err(not_in(2, "Response::History")),
            msg::Response::Forked(_) => return Err(not_in(2, "Response::Forked")),
            msg::Response::Restored(_) => return Err(not_in(2, "Response::Restored")),
            msg::Response::RetentionSet => return Err(not_in(2, "Response::RetentionSet")),
            msg::Response::TakenOver { .. } => return Err(not_in(2, "Response::TakenOver")),
        ))
    }
}

impl From<v2::Response<'_>> for msg::Response {
    fn from(r: v2::Response<'_>) -> Self {
        response_in!(v2, r,
            v2::Response::Stat(s) => msg::Response::Stat(stat_from_v1(s)),
            v2::Response::Error(e) => msg::Response::Error(error_from_v1(e)),
            v2::Response::Compacted {
                pages_folded,
                deltas_deleted,
                shards_written,
            } => msg::Response::Compacted(CompactionReport {
                pages_folded,
                deltas_deleted,
                shards_written,
                ..CompactionReport::default()
            }),
            v2::Response::QuotaSet => msg::Response::QuotaSet,
        )
    }
}

client_envelope!(v2);
server_envelope!(v2);

// ---- version 3 ----

impl<'a> TryFrom<&'a msg::Response> for v3::Response<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Response) -> Result<Self, ProtoError> {
        Ok(response_out!(v3, r,
            msg::Response::Stat(s) => v3::Response::Stat(stat_to_v3(s)),
            msg::Response::Error(e) => v3::Response::Error(error_to_v3(e)?),
            msg::Response::Compacted(c) => v3::Response::Compacted {
                pages_folded: c.pages_folded,
                deltas_deleted: c.deltas_deleted,
                shards_written: c.shards_written,
                transactions: c.transactions,
                stale: c.stale,
            },
            msg::Response::QuotaSet => v3::Response::QuotaSet,
            msg::Response::ReadBegun(_) => return Err(not_in(3, "Response::ReadBegun")),
            msg::Response::ReadEnded => return Err(not_in(3, "Response::ReadEnded")),
            msg::Response::Doctored(_) => return Err(not_in(3, "Response::Doctored")),
            msg::Response::History(_) => return Err(not_in(3, "Response::History")),
            msg::Response::Forked(_) => return Err(not_in(3, "Response::Forked")),
            msg::Response::Restored(_) => return Err(not_in(3, "Response::Restored")),
            msg::Response::RetentionSet => return Err(not_in(3, "Response::RetentionSet")),
            msg::Response::TakenOver { .. } => return Err(not_in(3, "Response::TakenOver")),
        ))
    }
}

impl From<v3::Response<'_>> for msg::Response {
    fn from(r: v3::Response<'_>) -> Self {
        response_in!(v3, r,
            v3::Response::Stat(s) => msg::Response::Stat(stat_from_v3(s)),
            v3::Response::Error(e) => msg::Response::Error(error_from_v3(e)),
            v3::Response::Compacted {
                pages_folded,
                deltas_deleted,
                shards_written,
                transactions,
                stale,
            } => msg::Response::Compacted(CompactionReport {
                pages_folded,
                deltas_deleted,
                shards_written,
                transactions,
                stale,
            }),
            v3::Response::QuotaSet => msg::Response::QuotaSet,
        )
    }
}

server_envelope!(v3);

// ---- version 4 ----

/// [`request_out!`] with the members version 4 added, for version 4 and later.
macro_rules! request_out_v4 {
    ($v:ident, $r:expr, $($extra:tt)*) => {
        request_out!($v, $r,
            msg::Request::Compact { db } => $v::Request::Compact { db: db.clone() },
            msg::Request::SetQuota { db, quota_bytes } => $v::Request::SetQuota {
                db: db.clone(),
                quota_bytes: *quota_bytes,
            },
            msg::Request::BeginRead {
                db,
                reader,
                since_txid,
            } => $v::Request::BeginRead {
                db: db.clone(),
                reader: *reader,
                since_txid: *since_txid,
            },
            msg::Request::GetPagesAt {
                db,
                reader,
                at,
                pgnos,
            } => $v::Request::GetPagesAt {
                db: db.clone(),
                reader: *reader,
                incarnation: at.incarnation,
                txid: at.txid,
                size_pages: at.size_pages,
                pgnos: bounded(pgnos.clone())?,
            },
            msg::Request::EndRead { db, reader } => $v::Request::EndRead {
                db: db.clone(),
                reader: *reader,
            },
            $($extra)*
        )
    };
}

/// [`request_in!`] with the members version 4 added, for version 4 and later.
macro_rules! request_in_v4 {
    ($v:ident, $r:expr, $($extra:tt)*) => {
        request_in!($v, $r,
            $v::Request::Compact { db } => msg::Request::Compact { db },
            $v::Request::SetQuota { db, quota_bytes } => msg::Request::SetQuota { db, quota_bytes },
            $v::Request::BeginRead {
                db,
                reader,
                since_txid,
            } => msg::Request::BeginRead {
                db,
                reader,
                since_txid,
            },
            $v::Request::GetPagesAt {
                db,
                reader,
                incarnation,
                txid,
                size_pages,
                pgnos,
            } => msg::Request::GetPagesAt {
                db,
                reader,
                at: ReadAt {
                    incarnation,
                    txid,
                    size_pages,
                },
                pgnos: pgnos.0,
            },
            $v::Request::EndRead { db, reader } => msg::Request::EndRead { db, reader },
            $($extra)*
        )
    };
}

/// [`response_out!`] with the members version 4 added, for version 4 and later.
macro_rules! response_out_v4 {
    ($v:ident, $r:expr, stat $stat_to:ident, $($extra:tt)*) => {
        response_out!($v, $r,
            msg::Response::Stat(s) => $v::Response::Stat($stat_to(s)),
            msg::Response::Error(e) => $v::Response::Error(error_to_v4(e)?),
            msg::Response::Compacted(c) => $v::Response::Compacted {
                pages_folded: c.pages_folded,
                deltas_deleted: c.deltas_deleted,
                shards_written: c.shards_written,
                transactions: c.transactions,
                stale: c.stale,
            },
            msg::Response::QuotaSet => $v::Response::QuotaSet,
            msg::Response::ReadBegun(r) => $v::Response::ReadBegun {
                incarnation: r.incarnation,
                head_txid: r.head_txid,
                size_pages: r.size_pages,
                page_size: r.page_size,
                changed: match &r.changed {
                    Some(c) => Some(bounded(c.clone())?),
                    None => None,
                },
            },
            msg::Response::ReadEnded => $v::Response::ReadEnded,
            $($extra)*
        )
    };
}

/// [`response_in!`] with the members version 4 added, for version 4 and later.
macro_rules! response_in_v4 {
    ($v:ident, $r:expr, stat $stat_from:ident, $($extra:tt)*) => {
        response_in!($v, $r,
            $v::Response::Stat(s) => msg::Response::Stat($stat_from(s)),
            $v::Response::Error(e) => msg::Response::Error(error_from_v4(e)),
            $v::Response::Compacted {
                pages_folded,
                deltas_deleted,
                shards_written,
                transactions,
                stale,
            } => msg::Response::Compacted(CompactionReport {
                pages_folded,
                deltas_deleted,
                shards_written,
                transactions,
                stale,
            }),
            $v::Response::QuotaSet => msg::Response::QuotaSet,
            $v::Response::ReadBegun {
                incarnation,
                head_txid,
                size_pages,
                page_size,
                changed,
            } => msg::Response::ReadBegun(ReadState {
                incarnation,
                head_txid,
                size_pages,
                page_size,
                changed: changed.map(|c| c.0),
            }),
            $v::Response::ReadEnded => msg::Response::ReadEnded,
            $($extra)*
        )
    };
}

impl<'a> TryFrom<&'a msg::Request> for v4::Request<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Request) -> Result<Self, ProtoError> {
        Ok(request_out_v4!(v4, r,
            msg::Request::Doctor { .. } => return Err(not_in(4, "Request::Doctor")),
            msg::Request::BeginReadAt { .. } => return Err(not_in(4, "Request::BeginReadAt")),
            msg::Request::History { .. } => return Err(not_in(4, "Request::History")),
            msg::Request::Fork { .. } => return Err(not_in(4, "Request::Fork")),
            msg::Request::Restore { .. } => return Err(not_in(4, "Request::Restore")),
            msg::Request::SetRetention { .. } => return Err(not_in(4, "Request::SetRetention")),
        ))
    }
}

impl From<v4::Request<'_>> for msg::Request {
    fn from(r: v4::Request<'_>) -> Self {
        request_in_v4!(v4, r,)
    }
}

impl<'a> TryFrom<&'a msg::Response> for v4::Response<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Response) -> Result<Self, ProtoError> {
        Ok(response_out_v4!(v4, r, stat stat_to_v3,
            msg::Response::Doctored(_) => return Err(not_in(4, "Response::Doctored")),
            msg::Response::History(_) => return Err(not_in(4, "Response::History")),
            msg::Response::Forked(_) => return Err(not_in(4, "Response::Forked")),
            msg::Response::Restored(_) => return Err(not_in(4, "Response::Restored")),
            msg::Response::RetentionSet => return Err(not_in(4, "Response::RetentionSet")),
            msg::Response::TakenOver { .. } => return Err(not_in(4, "Response::TakenOver")),
        ))
    }
}

impl From<v4::Response<'_>> for msg::Response {
    fn from(r: v4::Response<'_>) -> Self {
        response_in_v4!(v4, r, stat stat_from_v3,)
    }
}

client_envelope!(v4);
server_envelope!(v4);

// ---- version 5 ----

fn doctor_to_v5(d: &msg::DoctorReport) -> Result<v5::DoctorReport, ProtoError> {
    Ok(v5::DoctorReport {
        head_txid: d.head_txid,
        size_pages: d.size_pages,
        blobs_checked: d.blobs_checked,
        blob_bytes: d.blob_bytes,
        damaged_blobs: bounded(
            d.damaged_blobs
                .iter()
                .map(|b| v5::DamagedBlob {
                    blob: b.blob.clone(),
                    key: b.key.clone(),
                    error: b.error.clone(),
                })
                .collect(),
        )?,
        damaged_blob_count: d.damaged_blob_count,
        pages_compared: d.pages_compared,
        mismatched_pages: bounded(d.mismatched_pages.clone())?,
        mismatched_page_count: d.mismatched_page_count,
        unreadable_pages: bounded(d.unreadable_pages.clone())?,
        unreadable_page_count: d.unreadable_page_count,
        audit_problems: bounded(d.audit_problems.clone())?,
    })
}

fn doctor_from_v5(d: v5::DoctorReport) -> msg::DoctorReport {
    msg::DoctorReport {
        head_txid: d.head_txid,
        size_pages: d.size_pages,
        blobs_checked: d.blobs_checked,
        blob_bytes: d.blob_bytes,
        damaged_blobs: d
            .damaged_blobs
            .0
            .into_iter()
            .map(|b| msg::DamagedBlob {
                blob: b.blob,
                key: b.key,
                error: b.error,
            })
            .collect(),
        damaged_blob_count: d.damaged_blob_count,
        pages_compared: d.pages_compared,
        mismatched_pages: d.mismatched_pages.0,
        mismatched_page_count: d.mismatched_page_count,
        unreadable_pages: d.unreadable_pages.0,
        unreadable_page_count: d.unreadable_page_count,
        audit_problems: d.audit_problems.0,
    }
}

impl<'a> TryFrom<&'a msg::Request> for v5::Request<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Request) -> Result<Self, ProtoError> {
        Ok(request_out_v4!(v5, r,
            msg::Request::Doctor { db } => v5::Request::Doctor { db: db.clone() },
            msg::Request::BeginReadAt { .. } => return Err(not_in(5, "Request::BeginReadAt")),
            msg::Request::History { .. } => return Err(not_in(5, "Request::History")),
            msg::Request::Fork { .. } => return Err(not_in(5, "Request::Fork")),
            msg::Request::Restore { .. } => return Err(not_in(5, "Request::Restore")),
            msg::Request::SetRetention { .. } => return Err(not_in(5, "Request::SetRetention")),
        ))
    }
}

impl From<v5::Request<'_>> for msg::Request {
    fn from(r: v5::Request<'_>) -> Self {
        request_in_v4!(v5, r,
            v5::Request::Doctor { db } => msg::Request::Doctor { db },
        )
    }
}

impl<'a> TryFrom<&'a msg::Response> for v5::Response<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Response) -> Result<Self, ProtoError> {
        Ok(response_out_v4!(v5, r, stat stat_to_v3,
            msg::Response::Doctored(d) => v5::Response::Doctored(doctor_to_v5(d)?),
            msg::Response::History(_) => return Err(not_in(5, "Response::History")),
            msg::Response::Forked(_) => return Err(not_in(5, "Response::Forked")),
            msg::Response::Restored(_) => return Err(not_in(5, "Response::Restored")),
            msg::Response::RetentionSet => return Err(not_in(5, "Response::RetentionSet")),
            msg::Response::TakenOver { .. } => return Err(not_in(5, "Response::TakenOver")),
        ))
    }
}

impl From<v5::Response<'_>> for msg::Response {
    fn from(r: v5::Response<'_>) -> Self {
        response_in_v4!(v5, r, stat stat_from_v3,
            v5::Response::Doctored(d) => msg::Response::Doctored(doctor_from_v5(d)),
        )
    }
}

client_envelope!(v5);
server_envelope!(v5);

// ---- version 6 ----

fn point_to_v6(p: &msg::ReadPoint) -> v6::ReadPoint {
    match *p {
        msg::ReadPoint::Txid(t) => v6::ReadPoint::Txid(t),
        msg::ReadPoint::TimeMs(t) => v6::ReadPoint::TimeMs(t),
    }
}

fn point_from_v6(p: v6::ReadPoint) -> msg::ReadPoint {
    match p {
        v6::ReadPoint::Txid(t) => msg::ReadPoint::Txid(t),
        v6::ReadPoint::TimeMs(t) => msg::ReadPoint::TimeMs(t),
    }
}

fn origin_to_v6(o: &Option<msg::ForkOrigin>) -> Option<v6::ForkOrigin> {
    o.as_ref().map(|o| v6::ForkOrigin {
        name: o.name.clone(),
        id: o.id,
        txid: o.txid,
        size_pages: o.size_pages,
    })
}

fn origin_from_v6(o: Option<v6::ForkOrigin>) -> Option<msg::ForkOrigin> {
    o.map(|o| msg::ForkOrigin {
        name: o.name,
        id: o.id,
        txid: o.txid,
        size_pages: o.size_pages,
    })
}

pub fn stat_to_v6(s: &DbStat) -> v6::DbStat {
    stat!(s => v6::DbStat {
        name: s.name.clone(),
        id: s.id,
        shard_pages: s.shard_pages,
        origin: v3::OriginCode(s.origin),
        fast_path_limit: s.fast_path_limit,
        history_floor: s.history_floor,
        retention_ms: s.retention_ms,
        history_bytes: s.history_bytes,
        kept_versions: s.kept_versions,
        pins: s.pins,
        forked_from: origin_to_v6(&s.forked_from),
    })
}

pub fn stat_from_v6(s: v6::DbStat) -> DbStat {
    stat!(s => DbStat {
        name: s.name,
        id: s.id,
        shard_pages: s.shard_pages,
        origin: s.origin.0,
        fast_path_limit: s.fast_path_limit,
        history_floor: s.history_floor,
        retention_ms: s.retention_ms,
        history_bytes: s.history_bytes,
        kept_versions: s.kept_versions,
        pins: s.pins,
        forked_from: origin_from_v6(s.forked_from),
    })
}

fn history_to_v6(h: &msg::HistoryPage) -> Result<v6::HistoryPage, ProtoError> {
    Ok(v6::HistoryPage {
        incarnation: h.incarnation,
        head_txid: h.head_txid,
        floor_txid: h.floor_txid,
        retention_ms: h.retention_ms,
        retention_set: h.retention_set,
        commits: bounded(
            h.commits
                .iter()
                .map(|c| v6::CommitInfo {
                    txid: c.txid,
                    time_ms: c.time_ms,
                    size_pages: c.size_pages,
                    pages: c.pages,
                    bytes: c.bytes,
                    origin: origin_to_v6(&c.origin),
                })
                .collect(),
        )?,
        forked_from: origin_to_v6(&h.forked_from),
    })
}

fn history_from_v6(h: v6::HistoryPage) -> msg::HistoryPage {
    msg::HistoryPage {
        incarnation: h.incarnation,
        head_txid: h.head_txid,
        floor_txid: h.floor_txid,
        retention_ms: h.retention_ms,
        retention_set: h.retention_set,
        commits: h
            .commits
            .0
            .into_iter()
            .map(|c| msg::CommitInfo {
                txid: c.txid,
                time_ms: c.time_ms,
                size_pages: c.size_pages,
                pages: c.pages,
                bytes: c.bytes,
                origin: origin_from_v6(c.origin),
            })
            .collect(),
        forked_from: origin_from_v6(h.forked_from),
    }
}

impl<'a> TryFrom<&'a msg::Request> for v6::Request<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Request) -> Result<Self, ProtoError> {
        Ok(request_out_v4!(v6, r,
            msg::Request::Doctor { db } => v6::Request::Doctor { db: db.clone() },
            msg::Request::BeginReadAt { db, reader, point } => v6::Request::BeginReadAt {
                db: db.clone(),
                reader: *reader,
                point: point_to_v6(point),
            },
            msg::Request::History { db, before, limit } => v6::Request::History {
                db: db.clone(),
                before: *before,
                limit: *limit,
            },
            msg::Request::Fork { src, dst, point } => v6::Request::Fork {
                src: src.clone(),
                dst: dst.clone(),
                point: point.as_ref().map(point_to_v6),
            },
            msg::Request::Restore { db, point } => v6::Request::Restore {
                db: db.clone(),
                point: point_to_v6(point),
            },
            msg::Request::SetRetention { db, retention_ms } => v6::Request::SetRetention {
                db: db.clone(),
                retention_ms: *retention_ms,
            },
        ))
    }
}

impl From<v6::Request<'_>> for msg::Request {
    fn from(r: v6::Request<'_>) -> Self {
        request_in_v4!(v6, r,
            v6::Request::Doctor { db } => msg::Request::Doctor { db },
            v6::Request::BeginReadAt { db, reader, point } => msg::Request::BeginReadAt {
                db,
                reader,
                point: point_from_v6(point),
            },
            v6::Request::History { db, before, limit } => msg::Request::History { db, before, limit },
            v6::Request::Fork { src, dst, point } => msg::Request::Fork {
                src,
                dst,
                point: point.map(point_from_v6),
            },
            v6::Request::Restore { db, point } => msg::Request::Restore {
                db,
                point: point_from_v6(point),
            },
            v6::Request::SetRetention { db, retention_ms } => {
                msg::Request::SetRetention { db, retention_ms }
            }
        )
    }
}

impl<'a> TryFrom<&'a msg::Response> for v6::Response<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Response) -> Result<Self, ProtoError> {
        Ok(response_out_v4!(v6, r, stat stat_to_v6,
            msg::Response::Doctored(d) => v6::Response::Doctored(doctor_to_v5(d)?),
            msg::Response::History(h) => v6::Response::History(history_to_v6(h)?),
            msg::Response::Forked(f) => v6::Response::Forked {
                id: f.id,
                source_txid: f.source_txid,
                size_pages: f.size_pages,
            },
            msg::Response::Restored(r) => v6::Response::Restored {
                backup: r.backup.clone(),
                source_txid: r.source_txid,
                size_pages: r.size_pages,
            },
            msg::Response::RetentionSet => v6::Response::RetentionSet,
            msg::Response::TakenOver {
                db,
                generation,
                since_ms,
            } => v6::Response::TakenOver {
                db: db.clone(),
                generation: *generation,
                since_ms: *since_ms,
            },
        ))
    }
}

impl From<v6::Response<'_>> for msg::Response {
    fn from(r: v6::Response<'_>) -> Self {
        response_in_v4!(v6, r, stat stat_from_v6,
            v6::Response::Doctored(d) => msg::Response::Doctored(doctor_from_v5(d)),
            v6::Response::History(h) => msg::Response::History(history_from_v6(h)),
            v6::Response::Forked {
                id,
                source_txid,
                size_pages,
            } => msg::Response::Forked(msg::Forked {
                id,
                source_txid,
                size_pages,
            }),
            v6::Response::Restored {
                backup,
                source_txid,
                size_pages,
            } => msg::Response::Restored(msg::Restored {
                backup,
                source_txid,
                size_pages,
            }),
            v6::Response::RetentionSet => msg::Response::RetentionSet,
            v6::Response::TakenOver {
                db,
                generation,
                since_ms,
            } => msg::Response::TakenOver {
                db,
                generation,
                since_ms,
            },
        )
    }
}

client_envelope!(v6);
server_envelope!(v6);
