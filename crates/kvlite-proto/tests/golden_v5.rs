//! Golden bytes of protocol version 5: what it added to version 4
//! (`doctor`), written out by hand from the BARE rules (see `golden_v1.rs`
//! for them). Everything else in version 5 is version 4's, with the same
//! bytes.
//!
//! If one of these fails once version 5 is published, an edit changed what
//! it puts on the wire: revert it and make a new version instead.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kvlite_api::{DamagedBlob, DoctorReport, ReadAt};
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

fn report() -> DoctorReport {
    DoctorReport {
        head_txid: 2,
        size_pages: 3,
        blobs_checked: 4,
        blob_bytes: 5,
        damaged_blobs: vec![DamagedBlob {
            blob: "s".into(),
            key: "k".into(),
            error: "e".into(),
        }],
        damaged_blob_count: 6,
        pages_compared: 7,
        mismatched_pages: vec![8],
        mismatched_page_count: 9,
        unreadable_pages: vec![],
        unreadable_page_count: 10,
        audit_problems: vec!["p".into()],
    }
}

#[test]
fn v5_messages_have_pinned_bytes() {
    let id = u64le(1);
    let m = ClientMessage {
        request_id: 1,
        request: Request::Doctor { db: "a".into() },
    };
    let bytes = cat(&[&id, &[17], &[1, b'a']]);
    assert_eq!(encode_request(5, &m).unwrap(), bytes);
    assert_eq!(decode_request(5, &bytes).unwrap(), m);

    let m = ServerMessage {
        request_id: 1,
        response: Response::Doctored(report()),
    };
    let bytes = cat(&[
        &id,
        &[16],
        &u64le(2),
        &u32le(3),
        &u64le(4),
        &u64le(5),
        &[1, 1, b's', 1, b'k', 1, b'e'],
        &u64le(6),
        &u64le(7),
        &[1],
        &u32le(8),
        &u64le(9),
        &[0],
        &u64le(10),
        &[1, 1, b'p'],
    ]);
    assert_eq!(encode_response(5, &m).unwrap(), bytes);
    assert_eq!(decode_response(5, &bytes).unwrap(), m);
}

/// Version 4's messages keep their bytes in version 5 (members were only
/// appended), and what version 4 lacks is refused by name, not dropped.
#[test]
fn v5_extends_v4() {
    let read = ClientMessage {
        request_id: 3,
        request: Request::GetPagesAt {
            db: "a".into(),
            reader: 2,
            at: ReadAt {
                incarnation: 4,
                txid: 5,
                size_pages: 6,
            },
            pgnos: vec![1, 7],
        },
    };
    assert_eq!(
        encode_request(5, &read).unwrap(),
        encode_request(4, &read).unwrap()
    );
    let doctor = ClientMessage {
        request_id: 3,
        request: Request::Doctor { db: "a".into() },
    };
    assert!(matches!(
        encode_request(4, &doctor),
        Err(ProtoError::NotInVersion { version: 4, .. })
    ));
    let answer = ServerMessage {
        request_id: 3,
        response: Response::Doctored(report()),
    };
    assert!(matches!(
        encode_response(4, &answer),
        Err(ProtoError::NotInVersion { version: 4, .. })
    ));
    // A report over the version's list cap is refused, not truncated.
    let mut big = report();
    big.mismatched_pages = vec![1; kvlite_proto::v5::MAX_REPORT_ITEMS + 1];
    assert!(
        encode_response(
            5,
            &ServerMessage {
                request_id: 3,
                response: Response::Doctored(big),
            }
        )
        .is_err()
    );
}
