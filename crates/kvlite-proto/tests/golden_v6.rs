//! Golden bytes of protocol version 6: what it added to version 5
//! (history, forks, restores, and the database state with its history
//! figures), written out by hand from the BARE rules (see `golden_v1.rs`
//! for them). Everything else in version 6 is version 5's, with the same
//! bytes.
//!
//! If one of these fails once version 6 is published, an edit changed what
//! it puts on the wire: revert it and make a new version instead.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kvlite_api::{
    CommitInfo, DbStat, ForkOrigin, Forked, HistoryPage, Origin, ReadPoint, Restored,
};
use kvlite_proto::msg::{ClientMessage, Request, Response, ServerMessage};
use kvlite_proto::{ProtoError, decode_request, decode_response, encode_request, encode_response};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn u64le(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn u32le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

#[test]
fn v6_requests_have_pinned_bytes() {
    let id = u64le(1);
    let goldens = vec![
        (
            Request::BeginReadAt {
                db: "a".into(),
                reader: 2,
                point: ReadPoint::Txid(3),
            },
            cat(&[&id, &[18], &[1, b'a'], &u64le(2), &[0], &u64le(3)]),
        ),
        (
            Request::History {
                db: "a".into(),
                before: Some(9),
                limit: 4,
            },
            cat(&[&id, &[19], &[1, b'a'], &[1], &u64le(9), &u32le(4)]),
        ),
        (
            Request::Fork {
                src: "a".into(),
                dst: "b".into(),
                point: Some(ReadPoint::TimeMs(5)),
            },
            cat(&[&id, &[20], &[1, b'a'], &[1, b'b'], &[1, 1], &u64le(5)]),
        ),
        (
            Request::Fork {
                src: "a".into(),
                dst: "b".into(),
                point: None,
            },
            cat(&[&id, &[20], &[1, b'a'], &[1, b'b'], &[0]]),
        ),
        (
            Request::Restore {
                db: "a".into(),
                point: ReadPoint::TimeMs(6),
            },
            cat(&[&id, &[21], &[1, b'a'], &[1], &u64le(6)]),
        ),
        (
            Request::SetRetention {
                db: "a".into(),
                retention_ms: None,
            },
            cat(&[&id, &[22], &[1, b'a'], &[0]]),
        ),
    ];
    for (request, expected) in goldens {
        let m = ClientMessage {
            request_id: 1,
            request,
        };
        assert_eq!(encode_request(6, &m).unwrap(), expected, "{m:?}");
        assert_eq!(decode_request(6, &expected).unwrap(), m);
        // None of them exists in version 5: refused by name.
        assert!(matches!(
            encode_request(5, &m),
            Err(ProtoError::NotInVersion { version: 5, .. })
        ));
    }
}

fn origin() -> ForkOrigin {
    ForkOrigin {
        name: Some("p".into()),
        id: 7,
        txid: 8,
        size_pages: 9,
    }
}

fn origin_bytes() -> Vec<u8> {
    cat(&[&[1], &[1, 1, b'p'], &u64le(7), &u64le(8), &u32le(9)])
}

#[test]
fn v6_responses_have_pinned_bytes() {
    let id = u64le(1);
    let stat = DbStat {
        name: "a".into(),
        id: 1,
        generation: 2,
        head_txid: 3,
        next_txid: 4,
        materialized_txid: 5,
        size_pages: 6,
        page_size: 4096,
        shard_pages: 64,
        origin: Origin::MigratedFromV1,
        created_ms: 7,
        page_index_entries: 8,
        deltas: 9,
        delta_bytes: 10,
        shards: 11,
        shard_bytes: 12,
        used_bytes: 13,
        quota_bytes: 14,
        fast_path_limit: 15,
        pending_commits: 16,
        history_floor: 17,
        retention_ms: 18,
        history_bytes: 19,
        kept_versions: 20,
        pins: 21,
        forked_from: Some(origin()),
    };
    let stat_bytes = cat(&[
        &id,
        &[6],
        &[1, b'a'],
        &u64le(1),
        &u64le(2),
        &u64le(3),
        &u64le(4),
        &u64le(5),
        &u32le(6),
        &u32le(4096),
        &u32le(64),
        &[2],
        &u64le(7),
        &u64le(8),
        &u64le(9),
        &u64le(10),
        &u64le(11),
        &u64le(12),
        &u64le(13),
        &u64le(14),
        &u64le(15),
        &u64le(16),
        &u64le(17),
        &u64le(18),
        &u64le(19),
        &u64le(20),
        &u64le(21),
        &origin_bytes(),
    ]);
    let history = HistoryPage {
        incarnation: 1,
        head_txid: 2,
        floor_txid: 3,
        retention_ms: 4,
        retention_set: true,
        commits: vec![CommitInfo {
            txid: 5,
            time_ms: 6,
            size_pages: 7,
            pages: 8,
            bytes: 9,
            origin: Some(origin()),
        }],
        forked_from: None,
    };
    let history_bytes = cat(&[
        &id,
        &[17],
        &u64le(1),
        &u64le(2),
        &u64le(3),
        &u64le(4),
        &[1],
        &[1],
        &u64le(5),
        &u64le(6),
        &u32le(7),
        &u32le(8),
        &u64le(9),
        &origin_bytes(),
        &[0],
    ]);
    let goldens = vec![
        (Response::Stat(stat.clone()), stat_bytes),
        (Response::History(history), history_bytes),
        (
            Response::Forked(Forked {
                id: 2,
                source_txid: 3,
                size_pages: 4,
            }),
            cat(&[&id, &[18], &u64le(2), &u64le(3), &u32le(4)]),
        ),
        (
            Response::Restored(Restored {
                backup: "b".into(),
                source_txid: 3,
                size_pages: 4,
            }),
            cat(&[&id, &[19], &[1, b'b'], &u64le(3), &u32le(4)]),
        ),
        (Response::RetentionSet, cat(&[&id, &[20]])),
        (
            Response::TakenOver {
                db: "a".into(),
                generation: 7,
                since_ms: 8,
            },
            cat(&[&id, &[21], &[1, b'a'], &u64le(7), &u64le(8)]),
        ),
    ];
    for (response, expected) in goldens {
        let m = ServerMessage {
            request_id: 1,
            response,
        };
        assert_eq!(encode_response(6, &m).unwrap(), expected, "{m:?}");
        assert_eq!(decode_response(6, &expected).unwrap(), m);
    }
    // Version 5 carries a database state without the history figures: they
    // arrive empty.
    let m = ServerMessage {
        request_id: 1,
        response: Response::Stat(stat),
    };
    let old = decode_response(5, &encode_response(5, &m).unwrap()).unwrap();
    let Response::Stat(old) = old.response else {
        panic!("a stat")
    };
    assert_eq!(
        (
            old.history_floor,
            old.kept_versions,
            old.forked_from,
            old.head_txid
        ),
        (0, 0, None, 3)
    );
}

/// Version 5's messages keep their bytes in version 6 (members were only
/// appended; `Stat`'s payload is version 6's own).
#[test]
fn v6_extends_v5() {
    for request in [
        Request::Doctor { db: "a".into() },
        Request::EndRead {
            db: "a".into(),
            reader: 2,
        },
        Request::Ping,
    ] {
        let m = ClientMessage {
            request_id: 3,
            request,
        };
        assert_eq!(
            encode_request(6, &m).unwrap(),
            encode_request(5, &m).unwrap()
        );
    }
    let m = ServerMessage {
        request_id: 3,
        response: Response::Pong,
    };
    assert_eq!(
        encode_response(6, &m).unwrap(),
        encode_response(5, &m).unwrap()
    );
    // A history over the version's list cap is refused, not truncated.
    let big = HistoryPage {
        incarnation: 1,
        head_txid: 1,
        floor_txid: 1,
        retention_ms: 0,
        retention_set: false,
        commits: vec![
            CommitInfo {
                txid: 1,
                time_ms: 1,
                size_pages: 1,
                pages: 1,
                bytes: 1,
                origin: None,
            };
            kvlite_proto::v6::MAX_HISTORY_COMMITS + 1
        ],
        forked_from: None,
    };
    assert!(
        encode_response(
            6,
            &ServerMessage {
                request_id: 3,
                response: Response::History(big),
            }
        )
        .is_err()
    );
}
