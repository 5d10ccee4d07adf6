//! Golden bytes of protocol version 3: what it changed from version 2 (the
//! database state, typed errors, the whole compaction report), written out
//! by hand from the BARE rules (see `golden_v1.rs` for them). Everything
//! else in version 3 is version 2's, with the same bytes.
//!
//! If one of these fails once version 3 is published, an edit changed what
//! it puts on the wire: revert it and make a new version instead.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kvlite_api::{
    CompactionReport, CorruptionKind, DbStat, Error, FenceReason, InvalidKind, Origin, TooLargeKind,
};
use kvlite_proto::msg::{Request, Response, ServerMessage};
use kvlite_proto::{decode_request, decode_response, encode_request, encode_response};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn u64le(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn goldens() -> Vec<(Response, Vec<u8>)> {
    let id = u64le(1);
    let err = |e: Error| Response::Error(e);
    vec![
        (
            Response::Stat(DbStat {
                name: "x".into(),
                id: 21,
                generation: 1,
                head_txid: 2,
                next_txid: 3,
                materialized_txid: 4,
                size_pages: 5,
                page_size: 4096,
                shard_pages: 64,
                origin: Origin::MigratedFromV1,
                created_ms: 14,
                page_index_entries: 6,
                deltas: 7,
                delta_bytes: 8,
                shards: 9,
                shard_bytes: 10,
                used_bytes: 11,
                quota_bytes: 12,
                fast_path_limit: 8 << 20,
                pending_commits: 13,
                history_floor: 0,
                retention_ms: 0,
                history_bytes: 0,
                kept_versions: 0,
                pins: 0,
                forked_from: None,
            }),
            cat(&[
                &id,
                &[0x06],
                &[1, b'x'],
                &u64le(21),
                &u64le(1),
                &u64le(2),
                &u64le(3),
                &u64le(4),
                &[5, 0, 0, 0],
                &[0x00, 0x10, 0, 0],
                &[64, 0, 0, 0],
                &[2], // origin: migrated from v1
                &u64le(14),
                &u64le(6),
                &u64le(7),
                &u64le(8),
                &u64le(9),
                &u64le(10),
                &u64le(11),
                &u64le(12),
                &u64le(8 << 20),
                &u64le(13),
            ]),
        ),
        (
            err(Error::Fenced {
                db: "d".into(),
                reason: FenceReason::StaleGeneration {
                    current: 3,
                    yours: 2,
                    head: 9,
                    since_ms: 0,
                },
            }),
            cat(&[
                &id,
                &[0x0B, 0x00], // Error, Fenced
                &[1, b'd'],
                &[0x00], // StaleGeneration
                &u64le(3),
                &u64le(2),
                &u64le(9),
            ]),
        ),
        (
            err(Error::Fenced {
                db: "d".into(),
                reason: FenceReason::HeadMismatch {
                    generation: 3,
                    current: 9,
                    expected: 8,
                },
            }),
            cat(&[
                &id,
                &[0x0B, 0x00],
                &[1, b'd'],
                &[0x01], // HeadMismatch
                &u64le(3),
                &u64le(9),
                &u64le(8),
            ]),
        ),
        (
            err(Error::NotFound("d".into())),
            cat(&[&id, &[0x0B, 0x01], &[1, b'd']]),
        ),
        (
            err(Error::invalid(InvalidKind::PageNumber, "p")),
            cat(&[&id, &[0x0B, 0x02], &[2, 0], &[1, b'p']]),
        ),
        (
            err(Error::too_large(TooLargeKind::FastPath, "t")),
            cat(&[&id, &[0x0B, 0x03], &[1, 0], &[1, b't']]),
        ),
        (
            err(Error::QuotaExceeded {
                db: "d".into(),
                used: 1,
                needed: 2,
                quota: 3,
            }),
            cat(&[
                &id,
                &[0x0B, 0x04],
                &[1, b'd'],
                &u64le(1),
                &u64le(2),
                &u64le(3),
            ]),
        ),
        (
            err(Error::corrupt("d", CorruptionKind::Blob, "w")),
            cat(&[&id, &[0x0B, 0x05], &[1, b'd'], &[1, 0], &[1, b'w']]),
        ),
        (
            err(Error::Unauthorized("u".into())),
            cat(&[&id, &[0x0B, 0x06], &[1, b'u']]),
        ),
        (
            err(Error::UnsupportedVersion {
                supported: vec![1, 3],
            }),
            cat(&[&id, &[0x0B, 0x07], &[2, 1, 0, 3, 0]]),
        ),
        (
            err(Error::Unavailable("r".into())),
            cat(&[&id, &[0x0B, 0x08], &[1, b'r']]),
        ),
        (
            err(Error::StoreFull("f".into())),
            cat(&[&id, &[0x0B, 0x09], &[1, b'f']]),
        ),
        (
            err(Error::OutcomeUnknown("o".into())),
            cat(&[&id, &[0x0B, 0x0A], &[1, b'o']]),
        ),
        (
            err(Error::Internal("m".into())),
            cat(&[&id, &[0x0B, 0x0B], &[1, b'm']]),
        ),
        (
            Response::Compacted(CompactionReport {
                pages_folded: 1,
                deltas_deleted: 2,
                shards_written: 3,
                transactions: 4,
                stale: true,
            }),
            cat(&[
                &id,
                &[0x0C],
                &u64le(1),
                &u64le(2),
                &u64le(3),
                &u64le(4),
                &[1],
            ]),
        ),
    ]
}

#[test]
fn v3_changes_have_pinned_bytes() {
    for (response, expected) in goldens() {
        let m = ServerMessage {
            request_id: 1,
            response,
        };
        assert_eq!(
            encode_response(3, &m).as_ref(),
            Ok(&expected),
            "encoding of {m:?}"
        );
        assert_eq!(decode_response(3, &expected).as_ref(), Ok(&m));
    }
}

/// A kind code this build does not know reads as `Unknown`, keeping the code.
#[test]
fn unknown_kind_codes_keep_their_code() {
    let bytes = cat(&[&u64le(1), &[0x0B, 0x02], &[0xff, 0x7f], &[1, b'p']]);
    let m = decode_response(3, &bytes).expect("decode");
    assert_eq!(
        m.response,
        Response::Error(Error::invalid(InvalidKind::Unknown(0x7fff), "p"))
    );
}

/// Version 3's requests are version 2's, byte for byte.
#[test]
fn v3_requests_are_v2_requests() {
    let m = kvlite_proto::msg::ClientMessage {
        request_id: 5,
        request: Request::SetQuota {
            db: "x".into(),
            quota_bytes: 9,
        },
    };
    let v2 = encode_request(2, &m).expect("v2");
    assert_eq!(encode_request(3, &m).as_ref(), Ok(&v2));
    assert_eq!(decode_request(3, &v2).as_ref(), Ok(&m));
}
