//! One validated request → one engine call → one response. Runs on a
//! blocking thread; every failure becomes a typed error response.

use kvlite_api::Error;
use kvlite_engine::{CommitRequest, Preload};
use kvlite_placement::Placement;
use kvlite_proto::msg::{Page, Request, Response};

use crate::auth::Namespace;

/// How a request ended, for the metrics label.
pub(crate) fn outcome(response: &Response) -> &'static str {
    match response {
        Response::Error(e) => match e {
            Error::Fenced { .. } => "fenced",
            Error::TooLarge(_) => "too_large",
            Error::QuotaExceeded { .. } => "quota_exceeded",
            Error::NotFound(_) => "not_found",
            Error::InvalidRequest(_) => "invalid",
            Error::Unauthorized(_) => "unauthorized",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::Corruption { .. } => "corruption",
            Error::Unavailable(_) => "unavailable",
            Error::StoreFull(_) => "store_full",
            Error::OutcomeUnknown(_) => "outcome_unknown",
            _ => "internal",
        },
        _ => "ok",
    }
}

/// An engine error as the client should see it: names in the client's
/// namespace, not the engine's.
fn error(e: Error, ns: &Namespace) -> Response {
    let client = |db: String| ns.client_name(&db).map(str::to_string).unwrap_or(db);
    Response::Error(match e {
        Error::Fenced { db, reason } => Error::Fenced {
            db: client(db),
            reason,
        },
        Error::NotFound(db) => Error::NotFound(client(db)),
        Error::QuotaExceeded {
            db,
            used,
            needed,
            quota,
        } => Error::QuotaExceeded {
            db: client(db),
            used,
            needed,
            quota,
        },
        Error::Corruption { db, kind, what } => Error::Corruption {
            db: client(db),
            kind,
            what,
        },
        other => other,
    })
}

fn pages(list: &[Page]) -> Vec<(u32, &[u8])> {
    list.iter().map(|p| (p.pgno, p.data.as_slice())).collect()
}

fn answer<T>(
    result: kvlite_api::Result<T>,
    ns: &Namespace,
    ok: impl FnOnce(T) -> Response,
) -> Response {
    match result {
        Ok(v) => ok(v),
        Err(e) => error(e, ns),
    }
}

/// Serve one request for a client in namespace `ns`.
pub(crate) fn dispatch(placement: &Placement, ns: &Namespace, request: Request) -> Response {
    if let Err(e) = request.validate() {
        return Response::Error(e);
    }
    let name = match request.db_name().map(|n| ns.engine_name(n)) {
        Some(Ok(name)) => name,
        Some(Err(e)) => return Response::Error(e),
        None => String::new(),
    };
    let db = name.as_str();
    // The engine of the cluster holding `db`, following a move.
    macro_rules! on {
        ($op:expr) => {
            placement.route(db, false, $op)
        };
    }
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
            answer(
                placement.route(db, true, |e| e.open(db, &preload)),
                ns,
                |mut o| {
                    o.pages.truncate(kvlite_proto::MAX_PAGES_PER_REQUEST);
                    Response::Opened(o)
                },
            )
        }
        Request::GetPages {
            generation, pgnos, ..
        } => answer(on!(|e| e.get_pages(db, generation, &pgnos)), ns, |pages| {
            Response::Pages { pages }
        }),
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
            answer(on!(|e| e.commit(&req)), ns, Response::Committed)
        }
        Request::CommitBegin {
            generation,
            expected_head,
            new_size,
            ..
        } => answer(
            on!(|e| e.commit_begin(db, generation, expected_head, new_size)),
            ns,
            |txid| Response::Begun { txid },
        ),
        Request::CommitChunk {
            generation,
            txid,
            part,
            pages: list,
            ..
        } => answer(
            on!(|e| e.commit_chunk(db, generation, txid, part, &pages(&list))),
            ns,
            |()| Response::ChunkStored,
        ),
        Request::CommitFinish {
            generation,
            expected_head,
            txid,
            parts,
            commit_id,
            ..
        } => answer(
            on!(|e| e.commit_finish(db, generation, expected_head, txid, parts, commit_id)),
            ns,
            Response::Committed,
        ),
        Request::CommitStatus { commit_id, .. } => answer(
            on!(|e| e.commit_status(db, commit_id)),
            ns,
            Response::Status,
        ),
        Request::Stat { db: client_name } => answer(on!(|e| e.stat(db)), ns, |s| {
            Response::Stat(kvlite_api::DbStat {
                name: client_name,
                forked_from: client_origin(s.forked_from.clone(), ns),
                ..s
            })
        }),
        Request::Delete { .. } => answer(delete(placement, db), ns, |existed| Response::Deleted {
            existed,
        }),
        Request::List {
            prefix,
            after,
            limit,
        } => list(placement, ns, &prefix, after.as_deref(), limit as usize),
        Request::Close { .. } => Response::Closed,
        Request::Ping => Response::Pong,
        // A pass is heavy work on shared storage: an administrator's call.
        // A doctor reads every blob of the database: likewise.
        // Retention decides how much a database stores, like its quota.
        Request::Compact { .. }
        | Request::SetQuota { .. }
        | Request::Doctor { .. }
        | Request::SetRetention { .. }
            if !ns.is_admin() =>
        {
            Response::Error(Error::Unauthorized(format!(
                "{} needs an admin token",
                request.op_name()
            )))
        }
        Request::Compact { .. } => answer(on!(|e| e.compact(db)), ns, Response::Compacted),
        Request::SetQuota { quota_bytes, .. } => {
            answer(on!(|e| e.set_quota(db, quota_bytes)), ns, |()| {
                Response::QuotaSet
            })
        }
        Request::BeginRead {
            reader, since_txid, ..
        } => answer(
            on!(|e| e.begin_read(db, reader, since_txid)),
            ns,
            Response::ReadBegun,
        ),
        Request::GetPagesAt {
            reader, at, pgnos, ..
        } => answer(
            on!(|e| e.get_pages_at(db, reader, at, &pgnos)),
            ns,
            |pages| Response::Pages { pages },
        ),
        Request::EndRead { reader, .. } => {
            let _ = on!(|e| {
                e.end_read(db, reader);
                Ok(())
            });
            Response::ReadEnded
        }
        Request::Doctor { .. } => answer(on!(|e| e.doctor(db)), ns, Response::Doctored),
        Request::BeginReadAt { reader, point, .. } => answer(
            on!(|e| e.begin_read_at(db, reader, point)),
            ns,
            Response::ReadBegun,
        ),
        Request::History { before, limit, .. } => {
            answer(on!(|e| e.history(db, before, limit as usize)), ns, |h| {
                Response::History(kvlite_api::HistoryPage {
                    forked_from: client_origin(h.forked_from.clone(), ns),
                    ..h
                })
            })
        }
        // Both names are the caller's namespace's: a tenant forks only
        // inside its own.
        Request::Fork { dst, point, .. } => match ns.engine_name(&dst) {
            Ok(dst) => answer(placement.fork(db, &dst, point), ns, Response::Forked),
            Err(e) => Response::Error(e),
        },
        Request::Restore { point, .. } => answer(placement.restore(db, point), ns, |r| {
            let backup = ns
                .client_name(&r.backup)
                .map(str::to_string)
                .unwrap_or_else(|| r.backup.clone());
            Response::Restored(kvlite_api::Restored { backup, ..r })
        }),
        Request::SetRetention { retention_ms, .. } => {
            answer(on!(|e| e.set_retention(db, retention_ms)), ns, |()| {
                Response::RetentionSet
            })
        }
    }
}

/// A fork's source as the client may see it: named in its namespace, or
/// nameless when it is another namespace's (an administrator's fork).
fn client_origin(
    origin: Option<kvlite_api::ForkOrigin>,
    ns: &Namespace,
) -> Option<kvlite_api::ForkOrigin> {
    origin.map(|o| kvlite_api::ForkOrigin {
        name: o
            .name
            .as_deref()
            .and_then(|n| ns.client_name(n))
            .map(str::to_string),
        ..o
    })
}

fn list(
    placement: &Placement,
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
        (Err(e), _) | (_, Err(e)) => return Response::Error(e),
    };
    // The default namespace shares the unprefixed names with every other
    // namespace's `ns:` prefix; skip those, fetching until the page is full.
    let mut names = Vec::new();
    let mut cursor = after;
    loop {
        let batch = match placement.list(&prefix, cursor.as_deref(), limit.max(1)) {
            Ok(b) => b,
            Err(e) => return error(e, ns),
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

/// Delete `db` wherever it is (a name nowhere is "did not exist").
fn delete(placement: &Placement, db: &str) -> kvlite_api::Result<bool> {
    match placement.route(db, false, |e| e.delete(db)) {
        Err(Error::NotFound(_)) => Ok(false),
        r => r,
    }
}
