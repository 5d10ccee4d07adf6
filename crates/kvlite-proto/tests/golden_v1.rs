//! Golden bytes of protocol version 1 (and of version 2's additions).
//!
//! Every expected byte vector here is written out by hand from the BARE
//! encoding rules, not produced by the encoder: u16/u32/u64 are fixed-width
//! little-endian; `uint` (union tags, lengths) is LEB128; `str` and `data` are
//! a uint length then the bytes; a list is a uint count then the items;
//! `optional` is a byte 0/1 then the value; a bool is a byte 0/1; a struct is
//! its fields in order; a union is its uint tag then the member; `void` is
//! nothing.
//!
//! Version 1 is published. If one of these tests fails, an edit changed what
//! version 1 puts on the wire: revert it and make a new version instead.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashSet;
use std::mem::discriminant;

use kvlite_api::{
    CommitResult, CommitStatus, CompactionReport, CorruptionKind, DbStat, Error, FenceReason,
    InvalidKind, OpenResponse, Origin, PageData, TooLargeKind,
};
use kvlite_proto::msg::{ClientMessage, Page, PageRange, Request, Response, ServerMessage};
use kvlite_proto::{decode_request, decode_response, encode_request, encode_response};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn s(x: &str) -> String {
    x.to_owned()
}

fn golden_requests() -> Vec<(ClientMessage, Vec<u8>)> {
    let cm = |request_id, request| ClientMessage {
        request_id,
        request,
    };
    vec![
        (
            cm(
                1,
                Request::Open {
                    db: s("a"),
                    preload_pages: vec![2, 3],
                    preload_ranges: vec![PageRange { first: 5, last: 9 }],
                },
            ),
            cat(&[
                &[1, 0, 0, 0, 0, 0, 0, 0],    // request_id u64
                &[0x00],                      // Request tag 0: Open
                &[1, b'a'],                   // db
                &[2, 2, 0, 0, 0, 3, 0, 0, 0], // preload_pages: 2 × u32
                &[1, 5, 0, 0, 0, 9, 0, 0, 0], // preload_ranges: 1 × {first, last}
            ]),
        ),
        (
            cm(
                2,
                Request::GetPages {
                    db: s("db"),
                    generation: 7,
                    pgnos: vec![1, 0x0102_0304],
                },
            ),
            cat(&[
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[0x01],
                &[2, b'd', b'b'],
                &[7, 0, 0, 0, 0, 0, 0, 0],
                &[2, 1, 0, 0, 0, 0x04, 0x03, 0x02, 0x01],
            ]),
        ),
        (
            cm(
                3,
                Request::Commit {
                    db: s("x"),
                    generation: 3,
                    expected_head: 10,
                    new_size: 4,
                    commit_id: 0xAABB,
                    pages: vec![Page {
                        pgno: 4,
                        data: vec![0xDE, 0xAD],
                    }],
                },
            ),
            cat(&[
                &[3, 0, 0, 0, 0, 0, 0, 0],
                &[0x02],
                &[1, b'x'],
                &[3, 0, 0, 0, 0, 0, 0, 0],       // generation
                &[10, 0, 0, 0, 0, 0, 0, 0],      // expected_head
                &[4, 0, 0, 0],                   // new_size
                &[0xBB, 0xAA, 0, 0, 0, 0, 0, 0], // commit_id
                &[1, 4, 0, 0, 0, 2, 0xDE, 0xAD], // pages: 1 × {pgno, data}
            ]),
        ),
        (
            cm(
                4,
                Request::CommitBegin {
                    db: s("x"),
                    generation: 1,
                    expected_head: 2,
                    new_size: 300,
                },
            ),
            cat(&[
                &[4, 0, 0, 0, 0, 0, 0, 0],
                &[0x03],
                &[1, b'x'],
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[0x2C, 0x01, 0, 0], // 300
            ]),
        ),
        (
            cm(
                5,
                Request::CommitChunk {
                    db: s("x"),
                    generation: 1,
                    txid: 9,
                    part: 0,
                    pages: vec![Page {
                        pgno: 1,
                        data: vec![0x5A; 130],
                    }],
                },
            ),
            cat(&[
                &[5, 0, 0, 0, 0, 0, 0, 0],
                &[0x04],
                &[1, b'x'],
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[9, 0, 0, 0, 0, 0, 0, 0],
                &[0, 0, 0, 0],
                &[1, 1, 0, 0, 0],
                &[0x82, 0x01], // data length 130 as a two-byte uint
                &[0x5A; 130],
            ]),
        ),
        (
            cm(
                6,
                Request::CommitFinish {
                    db: s("x"),
                    generation: 1,
                    expected_head: 2,
                    txid: 9,
                    parts: 3,
                    commit_id: 5,
                },
            ),
            cat(&[
                &[6, 0, 0, 0, 0, 0, 0, 0],
                &[0x05],
                &[1, b'x'],
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[9, 0, 0, 0, 0, 0, 0, 0],
                &[3, 0, 0, 0],
                &[5, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        (
            cm(
                7,
                Request::CommitStatus {
                    db: s("x"),
                    commit_id: 5,
                },
            ),
            cat(&[
                &[7, 0, 0, 0, 0, 0, 0, 0],
                &[0x06],
                &[1, b'x'],
                &[5, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        (
            cm(8, Request::Stat { db: s("é") }),
            cat(&[&[8, 0, 0, 0, 0, 0, 0, 0], &[0x07], &[2, 0xC3, 0xA9]]),
        ),
        (
            cm(9, Request::Delete { db: s("x") }),
            cat(&[&[9, 0, 0, 0, 0, 0, 0, 0], &[0x08], &[1, b'x']]),
        ),
        (
            cm(
                10,
                Request::List {
                    prefix: s("p/"),
                    after: Some(s("p/b")),
                    limit: 100,
                },
            ),
            cat(&[
                &[10, 0, 0, 0, 0, 0, 0, 0],
                &[0x09],
                &[2, b'p', b'/'],
                &[1, 3, b'p', b'/', b'b'], // optional: present
                &[100, 0, 0, 0],
            ]),
        ),
        (
            cm(
                11,
                Request::List {
                    prefix: s(""),
                    after: None,
                    limit: 10,
                },
            ),
            cat(&[
                &[11, 0, 0, 0, 0, 0, 0, 0],
                &[0x09],
                &[0], // empty prefix
                &[0], // optional: absent
                &[10, 0, 0, 0],
            ]),
        ),
        (
            cm(12, Request::Close { db: s("x") }),
            cat(&[&[12, 0, 0, 0, 0, 0, 0, 0], &[0x0A], &[1, b'x']]),
        ),
        (
            cm(0x0102_0304_0506_0708, Request::Ping),
            cat(&[&[0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01], &[0x0B]]),
        ),
    ]
}

fn golden_responses() -> Vec<(ServerMessage, Vec<u8>)> {
    let sm = |request_id, response| ServerMessage {
        request_id,
        response,
    };
    let err = |request_id, body| ServerMessage {
        request_id,
        response: Response::Error(body),
    };
    // Version 1 errors name no database and no kind; the caller's own
    // generation and head are not sent back either.
    let no_db = String::new;
    vec![
        (
            sm(
                1,
                Response::Opened(OpenResponse {
                    generation: 2,
                    head_txid: 5,
                    size_pages: 3,
                    page_size: 4096,
                    fast_path_limit: 8 << 20,
                    created: true,
                    pages: vec![(1, PageData::from(vec![1, 2, 3]))],
                }),
            ),
            cat(&[
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[0x00],
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[5, 0, 0, 0, 0, 0, 0, 0],
                &[3, 0, 0, 0],
                &[0x00, 0x10, 0, 0],          // 4096
                &[0, 0, 0x80, 0, 0, 0, 0, 0], // 8 MiB
                &[1],                         // created
                &[1, 1, 0, 0, 0, 3, 1, 2, 3], // pages
            ]),
        ),
        (
            sm(
                2,
                Response::Pages {
                    pages: vec![Some(PageData::from(vec![7])), None, Some(PageData::new())],
                },
            ),
            cat(&[
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[0x01],
                &[3],
                &[1, 1, 7],
                &[0],
                &[1, 0],
            ]),
        ),
        (
            sm(
                3,
                Response::Committed(CommitResult {
                    txid: 6,
                    size_pages: 4,
                }),
            ),
            cat(&[
                &[3, 0, 0, 0, 0, 0, 0, 0],
                &[0x02],
                &[6, 0, 0, 0, 0, 0, 0, 0],
                &[4, 0, 0, 0],
            ]),
        ),
        (
            sm(4, Response::Begun { txid: 7 }),
            cat(&[
                &[4, 0, 0, 0, 0, 0, 0, 0],
                &[0x03],
                &[7, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        (
            sm(5, Response::ChunkStored),
            cat(&[&[5, 0, 0, 0, 0, 0, 0, 0], &[0x04]]),
        ),
        (
            sm(
                6,
                Response::Status(CommitStatus::Landed(CommitResult {
                    txid: 6,
                    size_pages: 4,
                })),
            ),
            cat(&[
                &[6, 0, 0, 0, 0, 0, 0, 0],
                &[0x05],
                &[0x00], // CommitState tag 0: Landed
                &[6, 0, 0, 0, 0, 0, 0, 0],
                &[4, 0, 0, 0],
            ]),
        ),
        (
            sm(
                7,
                Response::Status(CommitStatus::NotLanded {
                    generation: 2,
                    head_txid: 5,
                }),
            ),
            cat(&[
                &[7, 0, 0, 0, 0, 0, 0, 0],
                &[0x05],
                &[0x01], // CommitState tag 1: NotLanded
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[5, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        (
            sm(
                8,
                // Version 1 has no id, shard size, origin or fast-path
                // limit: they come back as 0, the layout's, native and 0.
                Response::Stat(DbStat {
                    name: s("x"),
                    id: 0,
                    shard_pages: 64,
                    origin: Origin::Native,
                    fast_path_limit: 0,
                    generation: 1,
                    head_txid: 2,
                    next_txid: 3,
                    materialized_txid: 4,
                    size_pages: 5,
                    page_size: 4096,
                    page_index_entries: 6,
                    deltas: 7,
                    delta_bytes: 8,
                    shards: 9,
                    shard_bytes: 10,
                    used_bytes: 11,
                    quota_bytes: 12,
                    pending_commits: 13,
                    created_ms: 14,
                    history_floor: 0,
                    retention_ms: 0,
                    history_bytes: 0,
                    kept_versions: 0,
                    pins: 0,
                    forked_from: None,
                }),
            ),
            cat(&[
                &[8, 0, 0, 0, 0, 0, 0, 0],
                &[0x06],
                &[1, b'x'],
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[3, 0, 0, 0, 0, 0, 0, 0],
                &[4, 0, 0, 0, 0, 0, 0, 0],
                &[5, 0, 0, 0],
                &[0x00, 0x10, 0, 0],
                &[6, 0, 0, 0, 0, 0, 0, 0],
                &[7, 0, 0, 0, 0, 0, 0, 0],
                &[8, 0, 0, 0, 0, 0, 0, 0],
                &[9, 0, 0, 0, 0, 0, 0, 0],
                &[10, 0, 0, 0, 0, 0, 0, 0],
                &[11, 0, 0, 0, 0, 0, 0, 0],
                &[12, 0, 0, 0, 0, 0, 0, 0],
                &[13, 0, 0, 0, 0, 0, 0, 0],
                &[14, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        (
            sm(9, Response::Deleted { existed: true }),
            cat(&[&[9, 0, 0, 0, 0, 0, 0, 0], &[0x07], &[1]]),
        ),
        (
            sm(10, Response::Deleted { existed: false }),
            cat(&[&[10, 0, 0, 0, 0, 0, 0, 0], &[0x07], &[0]]),
        ),
        (
            sm(
                11,
                Response::Listed {
                    names: vec![s("a"), s("bc")],
                },
            ),
            cat(&[
                &[11, 0, 0, 0, 0, 0, 0, 0],
                &[0x08],
                &[2, 1, b'a', 2, b'b', b'c'],
            ]),
        ),
        (
            sm(12, Response::Closed),
            cat(&[&[12, 0, 0, 0, 0, 0, 0, 0], &[0x09]]),
        ),
        (
            sm(13, Response::Pong),
            cat(&[&[13, 0, 0, 0, 0, 0, 0, 0], &[0x0A]]),
        ),
        (
            err(
                20,
                Error::Fenced {
                    db: no_db(),
                    reason: FenceReason::HeadMismatch {
                        generation: 3,
                        current: 4,
                        expected: 0,
                    },
                },
            ),
            cat(&[
                &[20, 0, 0, 0, 0, 0, 0, 0],
                &[0x0B], // Response tag 11: Error
                &[0x00], // ErrorBody tag 0: Fenced
                &[3, 0, 0, 0, 0, 0, 0, 0],
                &[4, 0, 0, 0, 0, 0, 0, 0],
                &[0],
            ]),
        ),
        (
            err(21, Error::too_large(TooLargeKind::Unknown(0), "big")),
            cat(&[
                &[21, 0, 0, 0, 0, 0, 0, 0],
                &[0x0B, 0x01],
                &[3, b'b', b'i', b'g'],
            ]),
        ),
        (
            err(
                22,
                Error::QuotaExceeded {
                    db: no_db(),
                    used: 1,
                    needed: 2,
                    quota: 3,
                },
            ),
            cat(&[
                &[22, 0, 0, 0, 0, 0, 0, 0],
                &[0x0B, 0x02],
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[3, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        (
            err(23, Error::NotFound(s("x"))),
            cat(&[&[23, 0, 0, 0, 0, 0, 0, 0], &[0x0B, 0x03], &[1, b'x']]),
        ),
        (
            err(24, Error::invalid(InvalidKind::Unknown(0), "no")),
            cat(&[&[24, 0, 0, 0, 0, 0, 0, 0], &[0x0B, 0x04], &[2, b'n', b'o']]),
        ),
        (
            err(25, Error::Unauthorized(s("no"))),
            cat(&[&[25, 0, 0, 0, 0, 0, 0, 0], &[0x0B, 0x05], &[2, b'n', b'o']]),
        ),
        (
            err(
                26,
                Error::UnsupportedVersion {
                    supported: vec![1, 2],
                },
            ),
            cat(&[
                &[26, 0, 0, 0, 0, 0, 0, 0],
                &[0x0B, 0x06],
                &[2, 1, 0, 2, 0], // 2 × u16
            ]),
        ),
        (
            err(27, Error::corrupt("", CorruptionKind::Unknown(0), "w")),
            cat(&[&[27, 0, 0, 0, 0, 0, 0, 0], &[0x0B, 0x07], &[1, b'w']]),
        ),
        (
            err(28, Error::Internal(s("m"))),
            cat(&[&[28, 0, 0, 0, 0, 0, 0, 0], &[0x0B, 0x08], &[1, b'm']]),
        ),
        (
            err(29, Error::Unavailable(s("r"))),
            cat(&[&[29, 0, 0, 0, 0, 0, 0, 0], &[0x0B, 0x09], &[1, b'r']]),
        ),
    ]
}

#[test]
fn v1_requests_have_pinned_bytes() {
    for (m, expected) in golden_requests() {
        let encoded = encode_request(1, &m).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(encoded, expected, "encoding of {m:?}");
        assert_eq!(decode_request(1, &expected).as_ref(), Ok(&m));
    }
}

#[test]
fn v1_responses_have_pinned_bytes() {
    for (m, expected) in golden_responses() {
        let encoded = encode_response(1, &m).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(encoded, expected, "encoding of {m:?}");
        assert_eq!(decode_response(1, &expected).as_ref(), Ok(&m));
    }
}

/// The golden lists cover every member of every version-1 union.
#[test]
fn golden_lists_cover_every_v1_variant() {
    let requests: HashSet<_> = golden_requests()
        .iter()
        .map(|(m, _)| m.request.op_name())
        .collect();
    assert_eq!(requests.len(), 12);
    let responses: HashSet<_> = golden_responses()
        .iter()
        .map(|(m, _)| discriminant(&m.response))
        .collect();
    assert_eq!(responses.len(), 12);
    let errors: HashSet<_> = golden_responses()
        .iter()
        .filter_map(|(m, _)| match &m.response {
            Response::Error(e) => Some(discriminant(e)),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 10);
    let states: HashSet<_> = golden_responses()
        .iter()
        .filter_map(|(m, _)| match &m.response {
            Response::Status(s) => Some(discriminant(s)),
            _ => None,
        })
        .collect();
    assert_eq!(states.len(), 2);
}

/// Version 2 only appends: every version-1 message has the same bytes in it.
#[test]
fn v2_keeps_v1_bytes() {
    for (m, expected) in golden_requests() {
        assert_eq!(encode_request(2, &m).as_ref(), Ok(&expected));
        assert_eq!(decode_request(2, &expected).as_ref(), Ok(&m));
    }
    for (m, expected) in golden_responses() {
        assert_eq!(encode_response(2, &m).as_ref(), Ok(&expected));
        assert_eq!(decode_response(2, &expected).as_ref(), Ok(&m));
    }
}

#[test]
fn v2_additions_have_pinned_bytes() {
    let requests = [
        (
            Request::Compact { db: s("x") },
            cat(&[&[1, 0, 0, 0, 0, 0, 0, 0], &[0x0C], &[1, b'x']]),
        ),
        (
            Request::SetQuota {
                db: s("x"),
                quota_bytes: 1 << 30,
            },
            cat(&[
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[0x0D],
                &[1, b'x'],
                &[0, 0, 0, 0x40, 0, 0, 0, 0],
            ]),
        ),
    ];
    for (request, expected) in requests {
        let m = ClientMessage {
            request_id: 1,
            request,
        };
        assert_eq!(encode_request(2, &m).as_ref(), Ok(&expected));
        assert_eq!(decode_request(2, &expected).as_ref(), Ok(&m));
    }
    let responses = [
        (
            Response::Compacted(CompactionReport {
                pages_folded: 1,
                deltas_deleted: 2,
                shards_written: 3,
                ..CompactionReport::default()
            }),
            cat(&[
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[0x0C],
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[2, 0, 0, 0, 0, 0, 0, 0],
                &[3, 0, 0, 0, 0, 0, 0, 0],
            ]),
        ),
        (
            Response::QuotaSet,
            cat(&[&[1, 0, 0, 0, 0, 0, 0, 0], &[0x0D]]),
        ),
    ];
    for (response, expected) in responses {
        let m = ServerMessage {
            request_id: 1,
            response,
        };
        assert_eq!(encode_response(2, &m).as_ref(), Ok(&expected));
        assert_eq!(decode_response(2, &expected).as_ref(), Ok(&m));
    }
}
