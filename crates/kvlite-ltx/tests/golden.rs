//! Golden-bytes tests.
//!
//! * `hand_golden_*`: a file assembled field by field from the format spec.
//!   Its bytes (and file checksum) were also accepted by the Go reference
//!   decoder (`ltx.Decoder.Verify`) during development.
//! * `go_reference_*`: files written by the Go reference encoder
//!   (`tests/data/go_*.ltx`, see `tests/data/README.md`).
//!
//! The exact LZ4 block bytes are whatever lz4_flex emits; if an lz4_flex
//! upgrade changes its block output, the byte-exact encoder assertions (not
//! the decoding ones) need new golden values.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{data_file, encode_case, go_cases};
use kvlite_ltx::{CHECKSUM_FLAG, Header, LtxFile, crc64, encode};

/// LZ4 block for 4096 copies of `b`, derived by hand: one sequence with one
/// literal `b` and a match at offset 1 of length 4089 (4 + 15 in the token
/// nibble, then 15 × 255 + 245 extension bytes), then a final literal-only
/// sequence of 6 bytes.
fn lz4_run_4096(b: u8) -> Vec<u8> {
    let mut v = vec![0x1f, b, 0x01, 0x00];
    v.extend_from_slice(&[0xff; 15]);
    v.push(0xf5);
    v.push(0x60);
    v.extend_from_slice(&[b; 6]);
    // 4 + 15 + 15 * 255 + 245 = 4089 and 1 + 4089 + 6 = 4096.
    assert_eq!(
        lz4_flex::block::decompress(&v, 4096).unwrap(),
        vec![b; 4096]
    );
    v
}

fn hand_header() -> Header {
    Header {
        page_size: 4096,
        commit: 3,
        min_txid: 2,
        max_txid: 3,
        timestamp: 1_700_000_000_000,
        pre_apply_checksum: CHECKSUM_FLAG | 1,
        wal_offset: 0x1020,
        wal_size: 0x2040,
        wal_salt1: 0x1122_3344,
        wal_salt2: 0x5566_7788,
        node_id: 7,
        ..Header::default()
    }
}

const HAND_FILE_CHECKSUM: u64 = 0xde0f_09ce_9ed6_6341;

/// Returns (file bytes, bytes covered by the file checksum).
fn hand_golden() -> (Vec<u8>, Vec<u8>) {
    let mut header = Vec::new();
    header.extend_from_slice(b"LTX1");
    header.extend_from_slice(&[0, 0, 0, 0]); // flags
    header.extend_from_slice(&[0, 0, 0x10, 0]); // page size 4096
    header.extend_from_slice(&[0, 0, 0, 3]); // commit
    header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]); // min txid
    header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]); // max txid
    header.extend_from_slice(&[0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00]); // 1_700_000_000_000 ms
    header.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 1]); // pre-apply checksum
    header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x10, 0x20]); // wal offset
    header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x20, 0x40]); // wal size
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]); // salt1
    header.extend_from_slice(&[0x55, 0x66, 0x77, 0x88]); // salt2
    header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]); // node id
    header.extend_from_slice(&[0; 20]); // reserved
    assert_eq!(header.len(), 100);

    let z = lz4_run_4096(0x00);
    let u = lz4_run_4096(0x55);
    assert_eq!(z.len(), 27);
    let frame_head = |pgno: u8| [0, 0, 0, pgno, 0, 1, 0, 0, 0, 27];

    let mut file = header.clone();
    let mut hashed = header;
    for (pgno, payload, fill) in [(1u8, &z, 0x00u8), (3, &u, 0x55)] {
        file.extend_from_slice(&frame_head(pgno));
        file.extend_from_slice(payload);
        hashed.extend_from_slice(&frame_head(pgno));
        hashed.extend_from_slice(&[fill; 4096]); // decompressed data is hashed
    }
    // Frames at 100 and 137, 37 bytes each. Zero page header at 174.
    let tail: Vec<u8> = [
        &[0u8; 6][..],                // page block terminator
        &[0x01, 0x64, 0x25],          // pgno 1, offset 100, size 37
        &[0x03, 0x89, 0x01, 0x25],    // pgno 3, offset 137, size 37
        &[0x00],                      // index terminator
        &[0, 0, 0, 0, 0, 0, 0, 8],    // index length
        &[0x80, 0, 0, 0, 0, 0, 0, 2], // post-apply checksum
    ]
    .concat();
    file.extend_from_slice(&tail);
    hashed.extend_from_slice(&tail);
    file.extend_from_slice(&HAND_FILE_CHECKSUM.to_be_bytes());
    assert_eq!(file.len(), 212);
    (file, hashed)
}

#[test]
fn hand_golden_checksum_is_crc64_iso_of_spec_input() {
    let (_, hashed) = hand_golden();
    assert_eq!(CHECKSUM_FLAG | crc64(&hashed), HAND_FILE_CHECKSUM);
}

#[test]
fn hand_golden_encoder_produces_exact_bytes() {
    let (want, _) = hand_golden();
    let got = encode(
        &hand_header(),
        [(1u32, &[0u8; 4096][..]), (3, &[0x55u8; 4096][..])],
        CHECKSUM_FLAG | 2,
    )
    .unwrap();
    assert_eq!(got, want);
}

#[test]
fn hand_golden_decodes() {
    let (bytes, _) = hand_golden();
    let f = LtxFile::parse(&bytes).unwrap();
    assert_eq!(*f.header(), hand_header());
    assert_eq!(f.pgnos().collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(f.post_apply_checksum(), CHECKSUM_FLAG | 2);
    assert_eq!(f.file_checksum(), HAND_FILE_CHECKSUM);
    assert_eq!(f.frames()[1].offset, 137);
    assert_eq!(f.frames()[1].size, 37);
    assert_eq!(f.page(1).unwrap().unwrap(), vec![0u8; 4096]);
    assert_eq!(f.page(3).unwrap().unwrap(), vec![0x55u8; 4096]);
    assert_eq!(f.page(2).unwrap(), None);
    f.verify_checksum().unwrap();
    let all = f.decode_all().unwrap();
    assert_eq!(all.pgnos(), &[1, 3]);
    assert_eq!(all.get(3).unwrap(), &[0x55u8; 4096][..]);
}

#[test]
fn go_reference_files_decode() {
    for case in go_cases() {
        let bytes = data_file(&format!("{}.ltx", case.name));
        let f = LtxFile::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(*f.header(), case.header, "{}", case.name);
        assert_eq!(f.post_apply_checksum(), case.post_apply_checksum);
        assert_eq!(
            f.pgnos().collect::<Vec<_>>(),
            case.pages.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        for (pgno, data) in &case.pages {
            assert_eq!(f.page(*pgno).unwrap().as_ref(), Some(data), "{}", case.name);
        }
        f.verify_checksum()
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let all = f.decode_all().unwrap();
        let got: Vec<(u32, Vec<u8>)> = all.iter().map(|(p, d)| (p, d.to_vec())).collect();
        assert_eq!(got, case.pages, "{}", case.name);
    }
}

#[test]
fn go_reference_file_checksums() {
    // Values printed by the Go reference encoder for tests/data/go_*.ltx.
    let want = [
        ("go_snapshot_2x4096", 0xf09a_0458_9aaf_76a0u64),
        ("go_snapshot_mixed_4096", 0x85f2_ff5a_8815_cb95),
        ("go_incremental_1024", 0xb477_2b47_d180_c7bb),
        ("go_nochecksum_512", 0xd439_4433_c093_fba5),
        ("go_commit_zero", 0xceb8_449e_d803_d87d),
        ("go_snapshot_65536", 0xa653_e96e_71e6_deb0),
    ];
    for (name, sum) in want {
        let bytes = data_file(&format!("{name}.ltx"));
        assert_eq!(
            LtxFile::parse(&bytes).unwrap().file_checksum(),
            sum,
            "{name}"
        );
    }
}

/// Our encoder's output for the Go cases. Go's LZ4 compressor (pierrec/lz4)
/// emits different (equally valid) blocks for compressible pages, so files
/// differ in payload bytes, sizes and hence file checksum; each of these
/// outputs was accepted by the Go reference decoder during development.
/// Where no page is compressible differently (the deletion file) the bytes
/// are identical.
#[test]
fn encoder_matches_go_verified_outputs() {
    let want = [
        ("go_snapshot_2x4096", 0xaad8_8f39_9e71_a0deu64, 261usize),
        ("go_snapshot_mixed_4096", 0xe30e_c2a1_3851_f43a, 4431),
        ("go_incremental_1024", 0xb991_8a66_05c9_7b6e, 1281),
        ("go_nochecksum_512", 0xc841_bc01_d093_fbb3, 736),
        ("go_commit_zero", 0xceb8_449e_d803_d87d, 131),
        ("go_snapshot_65536", 0xdebb_5192_663f_be70, 66273),
    ];
    let cases = go_cases();
    for (name, sum, len) in want {
        let case = cases.iter().find(|c| c.name == name).unwrap();
        let bytes = encode_case(case);
        assert_eq!(bytes.len(), len, "{name}");
        let f = LtxFile::parse_verified(&bytes).unwrap();
        assert_eq!(f.file_checksum(), sum, "{name}");
    }
    let zero = cases.iter().find(|c| c.name == "go_commit_zero").unwrap();
    assert_eq!(encode_case(zero), data_file("go_commit_zero.ltx"));
}
