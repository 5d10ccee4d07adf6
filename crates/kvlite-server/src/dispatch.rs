//! One validated request → one engine call → one response. Runs on a
//! blocking thread; every failure becomes a typed error response.

use kvlite_engine::{CommitRequest, Engine, EngineError, FenceReason, Preload};
use kvlite_proto::msg::{CommitState, DbStat, ErrorBody, Page, Request, Response};

use crate::auth::Namespace;

/// How a request ended, for the metrics label.
pub(crate) fn outcome(response: &Response) -> &'static str {
    match response {
        Response::Error(e) => match e {
            ErrorBody::Fenced { .. } => "fenced",
            ErrorBody::TooLarge { .. } => "too_large",
            ErrorBody::QuotaExceeded { .. } => "quota_exceeded",
            ErrorBody::NotFound { .. } => "not_found",
            ErrorBody::InvalidRequest { .. } => "invalid",
            ErrorBody::Unauthorized { .. } => "unauthorized",
            ErrorBody::UnsupportedVersion { .. } => "unsupported_version",
            ErrorBody::Corruption { .. } => "corruption",
            ErrorBody::Internal { .. } => "internal",
            ErrorBody::Unavailable { .. } => "unavailable",
        },
        _ => "ok",
    }
}

fn invalid(reason: impl Into<String>) -> Response {
    Response::Error(ErrorBody::InvalidRequest {
        reason: reason.into(),
    })
}

fn error(e: EngineError, ns: &Namespace, generation: u64) -> Response {
    Response::Error(match e {
        EngineError::Fenced { reason, .. } => match reason {
            FenceReason::StaleGeneration { current, head, .. } => ErrorBody::Fenced {
                current_generation: current,
                current_head: head,
                stale_generation: true,
            },
            FenceReason::HeadMismatch { current, .. } => ErrorBody::Fenced {
                current_generation: generation,
                current_head: current,
                stale_generation: false,
            },
        },
        EngineError::NotFound(db) => ErrorBody::NotFound {
            db: ns.client_name(&db).unwrap_or(&db).to_string(),
        },
        EngineError::InvalidRequest(reason) => ErrorBody::InvalidRequest { reason },
        EngineError::TooLarge(reason) => ErrorBody::TooLarge { reason },
        EngineError::QuotaExceeded {
            used,
            needed,
            quota,
            ..
        } => ErrorBody::QuotaExceeded {
            used,
            needed,
            quota,
        },
        EngineError::Corruption { what, .. } => ErrorBody::Corruption { what },
        EngineError::Kv(e) if kvlite_engine::Retryable::is_retryable(&e) => {
            ErrorBody::Unavailable {
                reason: e.to_string(),
            }
        }
        EngineError::Kv(e) => ErrorBody::Internal {
            message: e.to_string(),
        },
    })
}

fn pages(list: &[Page]) -> Vec<(u32, &[u8])> {
    list.iter().map(|p| (p.pgno, p.data.as_slice())).collect()
}

/// Serve one request for a client in namespace `ns`.
pub(crate) fn dispatch(engine: &Engine, ns: &Namespace, request: Request) -> Response {
    if let Err(reason) = request.validate() {
        return invalid(reason);
    }
    let name = match request.db_name().map(|n| ns.engine_name(n)) {
        Some(Ok(name)) => name,
        Some(Err(reason)) => return invalid(reason),
        None => String::new(),
    };
    let db = name.as_str();
    match request {
        Request::Open {
            preload_pages,
            preload_ranges,
            ..
        } => {
            let preload = Preload {
                pages: preload_pages,
                ranges: preload_ranges.iter().map(|r| (r.first, r.last)).collect(),
            };
            match engine.open(db, &preload) {
                Ok(o) => Response::Opened {
                    generation: o.generation,
                    head_txid: o.head_txid,
                    size_pages: o.size_pages,
                    page_size: o.page_size,
                    fast_path_limit: o.fast_path_limit,
                    created: o.created,
                    pages: o
                        .pages
                        .into_iter()
                        .take(kvlite_proto::MAX_PAGES_PER_REQUEST)
                        .map(|(pgno, data)| Page { pgno, data })
                        .collect(),
                },
                Err(e) => error(e, ns, 0),
            }
        }
        Request::GetPages {
            generation, pgnos, ..
        } => match engine.get_pages(db, generation, &pgnos) {
            Ok(pages) => Response::Pages { pages },
            Err(e) => error(e, ns, generation),
        },
        Request::Commit {
            generation,
            expected_head,
            new_size,
            commit_id,
            pages: list,
            ..
        } => {
            let refs = pages(&list);
            let req = CommitRequest {
                db,
                generation,
                expected_head,
                new_size,
                commit_id,
                pages: &refs,
            };
            match engine.commit(&req) {
                Ok(r) => Response::Committed {
                    txid: r.txid,
                    size_pages: r.size_pages,
                },
                Err(e) => error(e, ns, generation),
            }
        }
        Request::CommitBegin {
            generation,
            expected_head,
            new_size,
            ..
        } => match engine.commit_begin(db, generation, expected_head, new_size) {
            Ok(txid) => Response::Begun { txid },
            Err(e) => error(e, ns, generation),
        },
        Request::CommitChunk {
            generation,
            txid,
            part,
            pages: list,
            ..
        } => match engine.commit_chunk(db, generation, txid, part, &pages(&list)) {
            Ok(()) => Response::ChunkStored,
            Err(e) => error(e, ns, generation),
        },
        Request::CommitFinish {
            generation,
            expected_head,
            txid,
            parts,
            commit_id,
            ..
        } => match engine.commit_finish(db, generation, expected_head, txid, parts, commit_id) {
            Ok(r) => Response::Committed {
                txid: r.txid,
                size_pages: r.size_pages,
            },
            Err(e) => error(e, ns, generation),
        },
        Request::CommitStatus { commit_id, .. } => match engine.commit_status(db, commit_id) {
            Ok(kvlite_engine::CommitStatus::Landed(r)) => Response::Status(CommitState::Landed {
                txid: r.txid,
                size_pages: r.size_pages,
            }),
            Ok(kvlite_engine::CommitStatus::NotLanded {
                generation,
                head_txid,
            }) => Response::Status(CommitState::NotLanded {
                generation,
                head_txid,
            }),
            Err(e) => error(e, ns, 0),
        },
        Request::Stat { db: client_name } => match engine.stat(db) {
            Ok(s) => Response::Stat(DbStat {
                name: client_name,
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
            }),
            Err(e) => error(e, ns, 0),
        },
        Request::Delete { .. } => match engine.delete(db) {
            Ok(existed) => Response::Deleted { existed },
            Err(e) => error(e, ns, 0),
        },
        Request::List {
            prefix,
            after,
            limit,
        } => list(engine, ns, &prefix, after.as_deref(), limit as usize),
        Request::Close { .. } => Response::Closed,
        Request::Ping => Response::Pong,
        Request::Compact { .. } => match engine.compact(db) {
            Ok(r) => Response::Compacted {
                pages_folded: r.pages_folded,
                deltas_deleted: r.deltas_deleted,
                shards_written: r.shards_written,
            },
            Err(e) => error(e, ns, 0),
        },
        Request::SetQuota { .. } if !ns.is_admin() => Response::Error(ErrorBody::Unauthorized {
            reason: "changing a quota needs an admin token".into(),
        }),
        Request::SetQuota { quota_bytes, .. } => match engine.set_quota(db, quota_bytes) {
            Ok(()) => Response::QuotaSet,
            Err(e) => error(e, ns, 0),
        },
    }
}

fn list(
    engine: &Engine,
    ns: &Namespace,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Response {
    let (prefix, after) = match (
        ns.engine_name(prefix),
        after.map(|a| ns.engine_name(a)).transpose(),
    ) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(r), _) | (_, Err(r)) => return invalid(r),
    };
    // The default namespace shares the unprefixed names with every other
    // namespace's `ns:` prefix; skip those, fetching until the page is full.
    let mut names = Vec::new();
    let mut cursor = after;
    loop {
        let batch = match engine.list(&prefix, cursor.as_deref(), limit.max(1)) {
            Ok(b) => b,
            Err(e) => return error(e, ns, 0),
        };
        let exhausted = batch.len() < limit.max(1);
        cursor = batch.last().cloned();
        names.extend(
            batch
                .iter()
                .filter_map(|n| ns.client_name(n))
                .map(str::to_string),
        );
        if exhausted || names.len() >= limit {
            names.truncate(limit);
            return Response::Listed { names };
        }
    }
}
