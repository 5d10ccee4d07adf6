//! Conversions between the current types ([`crate::msg`]) and each version's.
//!
//! Downgrades (`msg -> vN`) are `TryFrom<&msg::…>`: they borrow page data
//! rather than copy it, and fail with [`ProtoError::NotInVersion`] for what
//! the version cannot express (never dropping it silently), or with
//! [`ProtoError::TooLarge`] for a list over the version's cap. Upgrades
//! (`vN -> msg`) are `From` and always succeed.
//!
//! These live outside the frozen `vN` modules because they grow with `msg`.

use crate::codec::{Bounded, Data};
use crate::{ProtoError, msg, v1, v2};

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
    pages: &[Option<Vec<u8>>],
) -> Result<Bounded<Option<Data<'_>>, MAX>, ProtoError> {
    if pages.len() > MAX {
        return Err(ProtoError::TooLarge {
            len: pages.len(),
            max: MAX,
        });
    }
    Ok(Bounded(
        pages.iter().map(|p| p.as_deref().map(Data::from)).collect(),
    ))
}

fn maybe_pages_in<const MAX: usize>(pages: Bounded<Option<Data<'_>>, MAX>) -> Vec<Option<Vec<u8>>> {
    pages.0.into_iter().map(|p| p.map(Data::into_vec)).collect()
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

fn state_out(s: &msg::CommitState) -> v1::CommitState {
    match *s {
        msg::CommitState::Landed { txid, size_pages } => {
            v1::CommitState::Landed { txid, size_pages }
        }
        msg::CommitState::NotLanded {
            generation,
            head_txid,
        } => v1::CommitState::NotLanded {
            generation,
            head_txid,
        },
    }
}

fn state_in(s: v1::CommitState) -> msg::CommitState {
    match s {
        v1::CommitState::Landed { txid, size_pages } => {
            msg::CommitState::Landed { txid, size_pages }
        }
        v1::CommitState::NotLanded {
            generation,
            head_txid,
        } => msg::CommitState::NotLanded {
            generation,
            head_txid,
        },
    }
}

fn stat_out(s: &msg::DbStat) -> v1::DbStat {
    v1::DbStat {
        name: s.name.clone(),
        generation: s.generation,
        head_txid: s.head_txid,
        next_txid: s.next_txid,
        materialized_txid: s.materialized_txid,
        size_pages: s.size_pages,
        page_size: s.page_size,
        page_index_entries: s.page_index_entries,
        deltas: s.deltas,
        delta_bytes: s.delta_bytes,
        shards: s.shards,
        shard_bytes: s.shard_bytes,
        used_bytes: s.used_bytes,
        quota_bytes: s.quota_bytes,
        pending_commits: s.pending_commits,
        created_ms: s.created_ms,
    }
}

fn stat_in(s: v1::DbStat) -> msg::DbStat {
    msg::DbStat {
        name: s.name,
        generation: s.generation,
        head_txid: s.head_txid,
        next_txid: s.next_txid,
        materialized_txid: s.materialized_txid,
        size_pages: s.size_pages,
        page_size: s.page_size,
        page_index_entries: s.page_index_entries,
        deltas: s.deltas,
        delta_bytes: s.delta_bytes,
        shards: s.shards,
        shard_bytes: s.shard_bytes,
        used_bytes: s.used_bytes,
        quota_bytes: s.quota_bytes,
        pending_commits: s.pending_commits,
        created_ms: s.created_ms,
    }
}

/// Version 1's error union (also version 2's).
impl TryFrom<&msg::ErrorBody> for v1::ErrorBody {
    type Error = ProtoError;

    fn try_from(e: &msg::ErrorBody) -> Result<Self, ProtoError> {
        Ok(match e {
            msg::ErrorBody::Fenced {
                current_generation,
                current_head,
                stale_generation,
            } => v1::ErrorBody::Fenced {
                current_generation: *current_generation,
                current_head: *current_head,
                stale_generation: *stale_generation,
            },
            msg::ErrorBody::TooLarge { reason } => v1::ErrorBody::TooLarge {
                reason: reason.clone(),
            },
            msg::ErrorBody::QuotaExceeded {
                used,
                needed,
                quota,
            } => v1::ErrorBody::QuotaExceeded {
                used: *used,
                needed: *needed,
                quota: *quota,
            },
            msg::ErrorBody::NotFound { db } => v1::ErrorBody::NotFound { db: db.clone() },
            msg::ErrorBody::InvalidRequest { reason } => v1::ErrorBody::InvalidRequest {
                reason: reason.clone(),
            },
            msg::ErrorBody::Unauthorized { reason } => v1::ErrorBody::Unauthorized {
                reason: reason.clone(),
            },
            msg::ErrorBody::UnsupportedVersion { supported } => v1::ErrorBody::UnsupportedVersion {
                supported: bounded(supported.clone())?,
            },
            msg::ErrorBody::Corruption { what } => v1::ErrorBody::Corruption { what: what.clone() },
            msg::ErrorBody::Internal { message } => v1::ErrorBody::Internal {
                message: message.clone(),
            },
            msg::ErrorBody::Unavailable { reason } => v1::ErrorBody::Unavailable {
                reason: reason.clone(),
            },
        })
    }
}

impl From<v1::ErrorBody> for msg::ErrorBody {
    fn from(e: v1::ErrorBody) -> Self {
        match e {
            v1::ErrorBody::Fenced {
                current_generation,
                current_head,
                stale_generation,
            } => msg::ErrorBody::Fenced {
                current_generation,
                current_head,
                stale_generation,
            },
            v1::ErrorBody::TooLarge { reason } => msg::ErrorBody::TooLarge { reason },
            v1::ErrorBody::QuotaExceeded {
                used,
                needed,
                quota,
            } => msg::ErrorBody::QuotaExceeded {
                used,
                needed,
                quota,
            },
            v1::ErrorBody::NotFound { db } => msg::ErrorBody::NotFound { db },
            v1::ErrorBody::InvalidRequest { reason } => msg::ErrorBody::InvalidRequest { reason },
            v1::ErrorBody::Unauthorized { reason } => msg::ErrorBody::Unauthorized { reason },
            v1::ErrorBody::UnsupportedVersion { supported } => msg::ErrorBody::UnsupportedVersion {
                supported: supported.0,
            },
            v1::ErrorBody::Corruption { what } => msg::ErrorBody::Corruption { what },
            v1::ErrorBody::Internal { message } => msg::ErrorBody::Internal { message },
            v1::ErrorBody::Unavailable { reason } => msg::ErrorBody::Unavailable { reason },
        }
    }
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

/// `msg::Response -> $v::Response` for the members every version has.
macro_rules! response_out {
    ($v:ident, $resp:expr, $($extra:tt)*) => {
        match $resp {
            msg::Response::Opened {
                generation,
                head_txid,
                size_pages,
                page_size,
                fast_path_limit,
                created,
                pages,
            } => $v::Response::Opened {
                generation: *generation,
                head_txid: *head_txid,
                size_pages: *size_pages,
                page_size: *page_size,
                fast_path_limit: *fast_path_limit,
                created: *created,
                pages: pages_out(pages)?,
            },
            msg::Response::Pages { pages } => $v::Response::Pages {
                pages: maybe_pages_out(pages)?,
            },
            msg::Response::Committed { txid, size_pages } => $v::Response::Committed {
                txid: *txid,
                size_pages: *size_pages,
            },
            msg::Response::Begun { txid } => $v::Response::Begun { txid: *txid },
            msg::Response::ChunkStored => $v::Response::ChunkStored,
            msg::Response::Status(s) => $v::Response::Status(state_out(s)),
            msg::Response::Stat(s) => $v::Response::Stat(stat_out(s)),
            msg::Response::Deleted { existed } => $v::Response::Deleted { existed: *existed },
            msg::Response::Listed { names } => $v::Response::Listed {
                names: bounded(names.clone())?,
            },
            msg::Response::Closed => $v::Response::Closed,
            msg::Response::Pong => $v::Response::Pong,
            msg::Response::Error(e) => $v::Response::Error(v1::ErrorBody::try_from(e)?),
            $($extra)*
        }
    };
}

/// `$v::Response -> msg::Response` for the members every version has.
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
            } => msg::Response::Opened {
                generation,
                head_txid,
                size_pages,
                page_size,
                fast_path_limit,
                created,
                pages: pages_in(pages),
            },
            $v::Response::Pages { pages } => msg::Response::Pages {
                pages: maybe_pages_in(pages),
            },
            $v::Response::Committed { txid, size_pages } => {
                msg::Response::Committed { txid, size_pages }
            }
            $v::Response::Begun { txid } => msg::Response::Begun { txid },
            $v::Response::ChunkStored => msg::Response::ChunkStored,
            $v::Response::Status(s) => msg::Response::Status(state_in(s)),
            $v::Response::Stat(s) => msg::Response::Stat(stat_in(s)),
            $v::Response::Deleted { existed } => msg::Response::Deleted { existed },
            $v::Response::Listed { names } => msg::Response::Listed { names: names.0 },
            $v::Response::Closed => msg::Response::Closed,
            $v::Response::Pong => msg::Response::Pong,
            $v::Response::Error(e) => msg::Response::Error(e.into()),
            $($extra)*
        }
    };
}

// ---- version 1 ----

/// The request/response envelopes are the same in every version: only the
/// request and response they carry are converted.
macro_rules! envelopes {
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

impl<'a> TryFrom<&'a msg::Request> for v1::Request<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Request) -> Result<Self, ProtoError> {
        Ok(request_out!(v1, r,
            msg::Request::Compact { .. } => return Err(not_in(1, "Request::Compact")),
            msg::Request::SetQuota { .. } => return Err(not_in(1, "Request::SetQuota")),
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
            msg::Response::Compacted { .. } => return Err(not_in(1, "Response::Compacted")),
            msg::Response::QuotaSet => return Err(not_in(1, "Response::QuotaSet")),
        ))
    }
}

impl From<v1::Response<'_>> for msg::Response {
    fn from(r: v1::Response<'_>) -> Self {
        response_in!(v1, r,)
    }
}

envelopes!(v1);

// ---- version 2 ----

impl<'a> TryFrom<&'a msg::Request> for v2::Request<'a> {
    type Error = ProtoError;

    fn try_from(r: &'a msg::Request) -> Result<Self, ProtoError> {
        Ok(request_out!(v2, r,
            msg::Request::Compact { db } => v2::Request::Compact { db: db.clone() },
            msg::Request::SetQuota { db, quota_bytes } => v2::Request::SetQuota {
                db: db.clone(),
                quota_bytes: *quota_bytes,
            },
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
            msg::Response::Compacted {
                pages_folded,
                deltas_deleted,
                shards_written,
            } => v2::Response::Compacted {
                pages_folded: *pages_folded,
                deltas_deleted: *deltas_deleted,
                shards_written: *shards_written,
            },
            msg::Response::QuotaSet => v2::Response::QuotaSet,
        ))
    }
}

impl From<v2::Response<'_>> for msg::Response {
    fn from(r: v2::Response<'_>) -> Self {
        response_in!(v2, r,
            v2::Response::Compacted {
                pages_folded,
                deltas_deleted,
                shards_written,
            } => msg::Response::Compacted {
                pages_folded,
                deltas_deleted,
                shards_written,
            },
            v2::Response::QuotaSet => msg::Response::QuotaSet,
        )
    }
}

envelopes!(v2);
