//! Golden bytes of protocol version 4: what it added to version 3 (readers),
//! written out by hand from the BARE rules (see `golden_v1.rs` for them).
//! Everything else in version 4 is version 3's, with the same bytes.
//!
//! If one of these fails once version 4 is published, an edit changed what
//! it puts on the wire: revert it and make a new version instead.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kvlite_api::{ReadAt, ReadState};
use kvlite_proto::msg::{ClientMessage, Request, Response, ServerMessage};
use kvlite_proto::{decode_request, decode_response, encode_request, encode_response};

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
fn v4_requests_have_pinned_bytes() {
    let id = u64le(1);
    let goldens = vec![
        (
            Request::BeginRead {
                db: "a".into(),
                reader: 2,
                since_txid: 3,
            },
            cat(&[&id, &[14], &[1, b'a'], &u64le(2), &u64le(3)]),
        ),
        (
            Request::GetPagesAt {
                db: "a".into(),
                reader: 2,
                at: ReadAt {
                    incarnation: 4,
                    txid: 5,
                    size_pages: 6,
                },
                pgnos: vec![1, 7],
            },
            cat(&[
                &id,
                &[15],
                &[1, b'a'],
                &u64le(2),
                &u64le(4),
                &u64le(5),
                &u32le(6),
                &[2],
                &u32le(1),
                &u32le(7),
            ]),
        ),
        (
            Request::EndRead {
                db: "a".into(),
                reader: 2,
            },
            cat(&[&id, &[16], &[1, b'a'], &u64le(2)]),
        ),
    ];
    for (request, expected) in goldens {
        let m = ClientMessage {
            request_id: 1,
            request,
        };
        assert_eq!(encode_request(4, &m).as_ref(), Ok(&expected), "{m:?}");
        assert_eq!(decode_request(4, &expected).as_ref(), Ok(&m));
        assert!(encode_request(3, &m).is_err(), "not a version 3 request");
    }
}

#[test]
fn v4_responses_have_pinned_bytes() {
    let id = u64le(1);
    let state = |changed| {
        Response::ReadBegun(ReadState {
            incarnation: 4,
            head_txid: 5,
            size_pages: 6,
            page_size: 4096,
            changed,
        })
    };
    let fixed = cat(&[&u64le(4), &u64le(5), &u32le(6), &u32le(4096)]);
    let goldens = vec![
        (
            state(Some(vec![1, 2])),
            cat(&[&id, &[14], &fixed, &[1, 2], &u32le(1), &u32le(2)]),
        ),
        (state(None), cat(&[&id, &[14], &fixed, &[0]])),
        (Response::ReadEnded, cat(&[&id, &[15]])),
        (
            Response::Error(kvlite_api::Error::Fenced {
                db: "d".into(),
                reason: kvlite_api::FenceReason::StaleGeneration {
                    current: 3,
                    yours: 2,
                    head: 9,
                    since_ms: 1_796_184_000_000,
                },
            }),
            cat(&[
                &id,
                &[11], // Error
                &[0],  // Fenced
                &[1, b'd'],
                &[0], // StaleGeneration
                &u64le(3),
                &u64le(2),
                &u64le(9),
                &u64le(1_796_184_000_000),
            ]),
        ),
    ];
    for (response, expected) in goldens {
        let m = ServerMessage {
            request_id: 1,
            response,
        };
        assert_eq!(encode_response(4, &m).as_ref(), Ok(&expected), "{m:?}");
        assert_eq!(decode_response(4, &expected).as_ref(), Ok(&m));
        if !matches!(m.response, Response::Error(_)) {
            assert!(encode_response(3, &m).is_err(), "not a version 3 response");
        }
    }
}

/// Version 4 keeps version 3's members byte for byte.
#[test]
fn v3_messages_keep_their_bytes_in_v4() {
    let m = ClientMessage {
        request_id: 5,
        request: Request::SetQuota {
            db: "x".into(),
            quota_bytes: 9,
        },
    };
    let v3 = encode_request(3, &m).expect("v3");
    assert_eq!(encode_request(4, &m).as_ref(), Ok(&v3));
    let r = ServerMessage {
        request_id: 5,
        response: Response::QuotaSet,
    };
    let v3 = encode_response(3, &r).expect("v3");
    assert_eq!(encode_response(4, &r).as_ref(), Ok(&v3));
    assert_eq!(decode_response(4, &v3).as_ref(), Ok(&r));
}
