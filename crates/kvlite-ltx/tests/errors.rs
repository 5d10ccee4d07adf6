//! Every validation error, produced by a crafted input.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{RawFrame, assemble, pattern, random};
use kvlite_ltx::{
    CHECKSUM_FLAG, DecodeError, EncodeError, Encoder, Header, HeaderError, HeaderFlags, LtxFile,
    TrailerError, encode, lock_pgno,
};

const PS: usize = 1024;

fn incr_header() -> Header {
    Header {
        page_size: PS as u32,
        commit: 10,
        min_txid: 5,
        max_txid: 6,
        timestamp: 1000,
        pre_apply_checksum: CHECKSUM_FLAG | 5,
        ..Header::default()
    }
}

fn snap_header(commit: u32) -> Header {
    Header {
        page_size: PS as u32,
        commit,
        min_txid: 1,
        max_txid: 1,
        timestamp: 1000,
        ..Header::default()
    }
}

/// Incremental file with pages 2, 5, 9.
fn valid_file() -> Vec<u8> {
    encode(
        &incr_header(),
        [
            (2u32, &pattern(2, PS)[..]),
            (5, &random(5, PS)[..]),
            (9, &vec![0u8; PS][..]),
        ],
        CHECKSUM_FLAG | 6,
    )
    .unwrap()
}

fn parse_err(bytes: &[u8]) -> DecodeError {
    LtxFile::parse(bytes).expect_err("parse should fail")
}

fn patch(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + with.len()].copy_from_slice(with);
    b
}

/// Offset of the page index, from the length field.
fn index_start(b: &[u8]) -> usize {
    let n = u64::from_be_bytes(b[b.len() - 24..b.len() - 16].try_into().unwrap()) as usize;
    b.len() - 24 - n
}

// ---------------------------------------------------------------- decoding

#[test]
fn truncated() {
    assert!(matches!(
        parse_err(&[]),
        DecodeError::Truncated { len: 0, .. }
    ));
    assert!(matches!(parse_err(b"LTX"), DecodeError::Truncated { .. }));
    let f = valid_file();
    assert!(matches!(
        parse_err(&f[..100]),
        DecodeError::Truncated { len: 100, min: 131 }
    ));
    // A cut anywhere after the header is caught (by the index or trailer
    // checks, since the structure is read from the end).
    for cut in [101, 131, 200, f.len() - 1] {
        assert!(LtxFile::parse(&f[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn bad_magic() {
    let f = patch(&valid_file(), 0, b"LTX2");
    assert!(matches!(parse_err(&f), DecodeError::BadMagic(m) if &m == b"LTX2"));
    assert!(matches!(
        parse_err(b"SQLite format 3"),
        DecodeError::BadMagic(_)
    ));
}

#[test]
fn invalid_header_fields() {
    let f = valid_file();
    let cases: [(usize, &[u8], HeaderError); 6] = [
        (4, &[0, 0, 0, 1], HeaderError::UnsupportedFlags(1)),
        (
            4,
            &[0x80, 0, 0, 0],
            HeaderError::UnsupportedFlags(0x8000_0000),
        ),
        (8, &[0, 0, 0x03, 0xe8], HeaderError::InvalidPageSize(1000)),
        (16, &[0; 8], HeaderError::MinTxidRequired),
        (
            16,
            &[0, 0, 0, 0, 0, 0, 0, 9],
            HeaderError::TxidOutOfOrder { min: 9, max: 6 },
        ),
        (40, &[0; 8], HeaderError::PreApplyChecksumRequired),
    ];
    for (at, bytes, want) in cases {
        match parse_err(&patch(&f, at, bytes)) {
            DecodeError::InvalidHeader(got) => assert_eq!(got, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    // Negative WAL offset.
    let neg = patch(&f, 48, &(-1i64).to_be_bytes());
    assert!(matches!(
        parse_err(&neg),
        DecodeError::InvalidHeader(HeaderError::NegativeWalOffset(-1))
    ));
    // Reserved bytes are ignored by parse (as in Go) but covered by the file
    // checksum.
    let reserved = patch(&f, 90, &[1]);
    let file = LtxFile::parse(&reserved).unwrap();
    assert!(matches!(
        file.verify_checksum(),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
}

#[test]
fn invalid_trailer() {
    let f = valid_file();
    let post_at = f.len() - 16;
    let sum_at = f.len() - 8;
    let e = parse_err(&patch(&f, post_at, &[0; 8]));
    assert!(matches!(
        e,
        DecodeError::InvalidTrailer(TrailerError::PostApplyChecksumRequired)
    ));
    let e = parse_err(&patch(&f, post_at, &[0, 0, 0, 0, 0, 0, 0, 1]));
    assert!(matches!(
        e,
        DecodeError::InvalidTrailer(TrailerError::InvalidPostApplyChecksumFormat(1))
    ));
    let e = parse_err(&patch(&f, sum_at, &[0; 8]));
    assert!(matches!(
        e,
        DecodeError::InvalidTrailer(TrailerError::FileChecksumRequired)
    ));
    let e = parse_err(&patch(&f, sum_at, &[0, 0, 0, 0, 0, 0, 0, 1]));
    assert!(matches!(
        e,
        DecodeError::InvalidTrailer(TrailerError::InvalidFileChecksumFormat(1))
    ));

    // NO_CHECKSUM file with a post-apply checksum.
    let nc = Header {
        flags: HeaderFlags::NO_CHECKSUM,
        pre_apply_checksum: 0,
        ..incr_header()
    };
    let f = assemble(&nc.to_bytes(), &[], CHECKSUM_FLAG | 1);
    assert!(matches!(
        parse_err(&f),
        DecodeError::InvalidTrailer(TrailerError::PostApplyChecksumNotAllowed(_))
    ));
    // commit 0 needs the empty-database checksum.
    let del = Header {
        commit: 0,
        ..incr_header()
    };
    let f = assemble(&del.to_bytes(), &[], CHECKSUM_FLAG | 1);
    assert!(matches!(
        parse_err(&f),
        DecodeError::InvalidTrailer(TrailerError::EmptyDatabaseChecksum(_))
    ));
}

#[test]
fn bad_index() {
    let f = valid_file();
    let len_at = f.len() - 24;
    let reason = |b: &[u8]| match parse_err(b) {
        DecodeError::BadIndex { reason } => reason,
        other => panic!("expected BadIndex, got {other:?}"),
    };
    // Length field larger than the file, zero, and u64::MAX.
    for n in [0u64, f.len() as u64, u64::MAX] {
        assert_eq!(
            reason(&patch(&f, len_at, &n.to_be_bytes())),
            "index size field out of range"
        );
    }
    // Missing terminator: make the last index byte (terminator) non-zero.
    let idx = index_start(&f);
    let term_at = len_at - 1;
    assert_eq!(f[term_at], 0);
    assert_eq!(
        reason(&patch(&f, term_at, &[0x80])),
        "truncated varint or missing terminator"
    );
    // Varint overflow: 10 continuation bytes where the first pgno is.
    let mut b = f.clone();
    b.splice(idx..idx + 1, [0xffu8; 10]);
    let n = (len_at + 9 - idx) as u64;
    let l = b.len();
    b[l - 24..l - 16].copy_from_slice(&n.to_be_bytes());
    assert_eq!(reason(&b), "varint overflows u64");

    // Crafted indexes: rebuild the tail of the valid file.
    let head = &f[..idx];
    let rebuild = |entries: &[u8]| {
        let mut b = head.to_vec();
        b.extend_from_slice(entries);
        b.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        b.extend_from_slice(&f[f.len() - 16..]);
        b
    };
    // pgno > u32::MAX.
    assert_eq!(
        reason(&rebuild(&[0x80, 0x80, 0x80, 0x80, 0x10, 100, 10, 0])),
        "page number exceeds u32"
    );
    // Not ascending (2 then 2).
    let orig_entries = &f[idx..len_at];
    let mut dup = orig_entries[..orig_entries.len() - 1].to_vec();
    let first_entry_len = 1 + 1 + 1; // pgno 2, offset 100, size < 128
    dup.truncate(first_entry_len);
    dup.extend_from_slice(&orig_entries[..first_entry_len]);
    dup.push(0);
    assert_eq!(
        reason(&rebuild(&dup)),
        "page numbers not strictly ascending"
    );
    // Trailing bytes after terminator.
    let mut trailing = orig_entries.to_vec();
    trailing.push(7);
    assert_eq!(
        reason(&rebuild(&trailing)),
        "trailing bytes after index terminator"
    );
}

#[test]
fn index_frame_mismatch() {
    let pages = [(2u32, vec![0u8; PS]), (5, vec![1u8; PS])];
    let f = encode(
        &incr_header(),
        pages.iter().map(|(p, d)| (*p, &d[..])),
        CHECKSUM_FLAG | 6,
    )
    .unwrap();
    let idx = index_start(&f);
    let len_at = f.len() - 24;
    let entries = f[idx..len_at].to_vec();
    let rebuild = |entries: &[u8]| {
        let mut b = f[..idx].to_vec();
        b.extend_from_slice(entries);
        b.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        b.extend_from_slice(&f[f.len() - 16..]);
        b
    };
    let reason = |b: &[u8]| match parse_err(b) {
        DecodeError::IndexFrameMismatch { reason, .. } => reason,
        other => panic!("expected IndexFrameMismatch, got {other:?}"),
    };
    // Entries are [pgno, offset, size] with one byte each here.
    assert_eq!(entries.len(), 7);
    let mut e = entries.clone();
    e[1] = 101; // offset
    assert_eq!(
        reason(&rebuild(&e)),
        "index offset does not match frame position"
    );
    let mut e = entries.clone();
    e[2] += 1; // size
    assert_eq!(reason(&rebuild(&e)), "frame size differs from index");
    let mut e = entries.clone();
    e[3] = 4; // second pgno 5 -> 4
    assert_eq!(reason(&rebuild(&e)), "frame page number differs from index");
    // Index lists only the first frame.
    let mut e = entries[..3].to_vec();
    e.push(0);
    assert_eq!(
        reason(&rebuild(&e)),
        "page block contains data not covered by the index"
    );
    // Frame's compressed size claims more bytes than the page block holds
    // (index agrees with the frame header).
    let mut b = f.clone();
    let huge = 0x00ff_ffffu32;
    b[106..110].copy_from_slice(&huge.to_be_bytes());
    let mut e = entries.clone();
    e.splice(2..3, [0x89, 0x80, 0x80, 0x08]); // varint(10 + 0xffffff)
    let mut b2 = b[..idx].to_vec();
    b2.extend_from_slice(&e);
    b2.extend_from_slice(&(e.len() as u64).to_be_bytes());
    b2.extend_from_slice(&f[f.len() - 16..]);
    assert_eq!(reason(&b2), "frame extends past page block");
}

#[test]
fn missing_page_block_terminator() {
    let f = valid_file();
    let idx = index_start(&f);
    let e = parse_err(&patch(&f, idx - 3, &[1]));
    assert!(matches!(
        e,
        DecodeError::MissingPageBlockTerminator { offset } if offset == idx - 6
    ));
}

#[test]
fn unsupported_page_flags() {
    let h = incr_header().to_bytes();
    for flags in [0u16, 2, 3, 0x8001] {
        let mut frame = RawFrame::page(2, &[7u8; PS]);
        frame.flags = flags;
        let f = assemble(&h, &[frame], CHECKSUM_FLAG | 6);
        assert!(matches!(
            parse_err(&f),
            DecodeError::UnsupportedPageFlags { pgno: 2, flags: got } if got == flags
        ));
    }
}

#[test]
fn page_beyond_commit_and_lock_page() {
    let f = assemble(
        &incr_header().to_bytes(),
        &[RawFrame::page(11, &[1u8; PS])],
        CHECKSUM_FLAG | 6,
    );
    assert!(matches!(
        parse_err(&f),
        DecodeError::PageBeyondCommit {
            pgno: 11,
            commit: 10
        }
    ));
    let big = Header {
        page_size: 65536,
        commit: 20_000,
        ..incr_header()
    };
    let lock = lock_pgno(65536);
    let f = assemble(
        &big.to_bytes(),
        &[RawFrame::page(lock, &[0u8; 65536])],
        CHECKSUM_FLAG | 6,
    );
    assert!(matches!(parse_err(&f), DecodeError::LockPage { pgno } if pgno == lock));
}

#[test]
fn snapshot_incomplete() {
    let pages: Vec<(u32, Vec<u8>)> = (1..=3).map(|p| (p, pattern(p, PS))).collect();
    let post = common::db_checksum(&pages);
    let frames: Vec<RawFrame> = pages.iter().map(|(p, d)| RawFrame::page(*p, d)).collect();
    // Header says 4 pages, file has 3.
    let f = assemble(&snap_header(4).to_bytes(), &frames, post);
    assert!(matches!(
        parse_err(&f),
        DecodeError::SnapshotIncomplete {
            expected: 4,
            actual: 3
        }
    ));
    // Gap: pages 1 and 3 of 3.
    let gap = [
        RawFrame::page(1, &pages[0].1),
        RawFrame::page(3, &pages[2].1),
    ];
    let f = assemble(&snap_header(3).to_bytes(), &gap, post);
    assert!(matches!(
        parse_err(&f),
        DecodeError::SnapshotIncomplete {
            expected: 3,
            actual: 2
        }
    ));
}

#[test]
fn lz4_errors() {
    let h = incr_header().to_bytes();
    // Offset zero in the first sequence.
    let mut frame = RawFrame::page(2, &[0u8; PS]);
    assert_eq!(&frame.payload[..4], &[0x1f, 0x00, 0x01, 0x00]);
    frame.payload[2] = 0;
    let f = assemble(&h, &[frame], CHECKSUM_FLAG | 6);
    let file = LtxFile::parse(&f).unwrap();
    assert!(matches!(
        file.page(2),
        Err(DecodeError::Lz4 { pgno: 2, .. })
    ));
    assert!(matches!(
        file.verify_checksum(),
        Err(DecodeError::Lz4 { .. })
    ));
    assert!(matches!(file.decode_all(), Err(DecodeError::Lz4 { .. })));
    // Offset beyond the output produced so far.
    let mut frame = RawFrame::page(2, &[0u8; PS]);
    frame.payload[2] = 9;
    let f = assemble(&h, &[frame], CHECKSUM_FLAG | 6);
    assert!(matches!(
        LtxFile::parse(&f).unwrap().page(2),
        Err(DecodeError::Lz4 { .. })
    ));
    // Truncated payload.
    let mut frame = RawFrame::page(2, &random(1, PS));
    frame.payload.truncate(100);
    let f = assemble(&h, &[frame], CHECKSUM_FLAG | 6);
    assert!(matches!(
        LtxFile::parse(&f).unwrap().page(2),
        Err(DecodeError::Lz4 { .. })
    ));
    // Empty payload.
    let mut frame = RawFrame::page(2, &random(1, PS));
    frame.payload.clear();
    let f = assemble(&h, &[frame], CHECKSUM_FLAG | 6);
    assert!(matches!(
        LtxFile::parse(&f).unwrap().page(2),
        Err(DecodeError::Lz4 { .. })
    ));
}

#[test]
fn decompressed_size() {
    let h = incr_header().to_bytes();
    let short = RawFrame {
        pgno: 2,
        flags: 1,
        payload: lz4_flex::block::compress(&[5u8; PS - 1]),
        hashed_data: vec![5u8; PS - 1],
    };
    let f = assemble(&h, &[short], CHECKSUM_FLAG | 6);
    let file = LtxFile::parse(&f).unwrap();
    assert!(matches!(
        file.page(2),
        Err(DecodeError::DecompressedSize { pgno: 2, expected: PS, actual: Some(n) }) if n == PS - 1
    ));
    assert!(matches!(
        file.decode_all(),
        Err(DecodeError::DecompressedSize { .. })
    ));
    let long = RawFrame {
        pgno: 2,
        flags: 1,
        payload: lz4_flex::block::compress(&[5u8; PS + 1]),
        hashed_data: vec![5u8; PS + 1],
    };
    let f = assemble(&h, &[long], CHECKSUM_FLAG | 6);
    assert!(matches!(
        LtxFile::parse(&f).unwrap().page(2),
        Err(DecodeError::DecompressedSize { actual: None, .. })
    ));
}

#[test]
fn checksum_mismatch() {
    let f = valid_file();
    // Timestamp changed: structurally valid, checksum wrong.
    let b = patch(&f, 39, &[0x42]);
    let file = LtxFile::parse(&b).unwrap();
    let stored = file.file_checksum();
    match file.verify_checksum() {
        Err(DecodeError::ChecksumMismatch { expected, actual }) => {
            assert_eq!(expected, stored);
            assert_ne!(actual, stored);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        file.decode_all(),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
    assert!(matches!(
        file.decode_each(),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
    assert!(matches!(
        LtxFile::parse_verified(&b),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
    // Changed file checksum value (flag kept).
    let mut b = f.clone();
    let l = b.len();
    b[l - 1] ^= 1;
    assert!(matches!(
        LtxFile::parse(&b).unwrap().verify_checksum(),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
    // A different but valid LZ4 encoding of the same data passes (the
    // checksum covers decompressed data) only if sizes also match; here the
    // frame size changes, which is hashed, so it fails.
    let h = incr_header().to_bytes();
    let data = vec![0u8; PS];
    let mut alt = RawFrame::page(2, &data);
    alt.payload = literal_only_block(&data);
    let good = assemble(&h, &[alt], CHECKSUM_FLAG | 6);
    LtxFile::parse_verified(&good).unwrap();
    let reference = assemble(&h, &[RawFrame::page(2, &data)], CHECKSUM_FLAG | 6);
    let mut spliced = good.clone();
    let (gl, rl) = (good.len(), reference.len());
    spliced[gl - 8..].copy_from_slice(&reference[rl - 8..]);
    assert!(matches!(
        LtxFile::parse(&spliced).unwrap().verify_checksum(),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
}

/// An LZ4 block holding `data` as literals only.
fn literal_only_block(data: &[u8]) -> Vec<u8> {
    let mut v = vec![0xf0];
    let mut n = data.len() - 15;
    while n >= 255 {
        v.push(255);
        n -= 255;
    }
    v.push(n as u8);
    v.extend_from_slice(data);
    v
}

#[test]
fn database_checksum_mismatch() {
    let pages: Vec<(u32, Vec<u8>)> = (1..=2).map(|p| (p, pattern(p, PS))).collect();
    let frames: Vec<RawFrame> = pages.iter().map(|(p, d)| RawFrame::page(*p, d)).collect();
    let wrong = common::db_checksum(&pages) ^ 1;
    let f = assemble(&snap_header(2).to_bytes(), &frames, wrong);
    let file = LtxFile::parse(&f).unwrap();
    assert!(matches!(
        file.verify_checksum(),
        Err(DecodeError::DatabaseChecksumMismatch { expected, .. }) if expected == wrong
    ));
    assert!(matches!(
        file.decode_all(),
        Err(DecodeError::DatabaseChecksumMismatch { .. })
    ));
    // Random access does not check it.
    assert_eq!(file.page(1).unwrap().unwrap(), pages[0].1);
}

#[test]
fn buffer_size() {
    let f = valid_file();
    let file = LtxFile::parse(&f).unwrap();
    let mut small = vec![0u8; PS - 1];
    assert!(matches!(
        file.read_page_into(2, &mut small),
        Err(DecodeError::BufferSize { expected: PS, actual })  if actual == PS - 1
    ));
    let mut ok = vec![0u8; PS];
    assert!(file.read_page_into(2, &mut ok).unwrap());
    assert_eq!(ok, pattern(2, PS));
    assert!(!file.read_page_into(3, &mut ok).unwrap());
}

// ---------------------------------------------------------------- encoding

#[test]
fn encode_invalid_header() {
    let e = Encoder::new(Header {
        page_size: 4000,
        ..incr_header()
    })
    .unwrap_err();
    assert!(matches!(
        e,
        EncodeError::InvalidHeader(HeaderError::InvalidPageSize(4000))
    ));
    let e = Encoder::new(Header {
        flags: HeaderFlags::from_bits_retain(4),
        ..incr_header()
    })
    .unwrap_err();
    assert!(matches!(
        e,
        EncodeError::InvalidHeader(HeaderError::UnsupportedFlags(4))
    ));
}

#[test]
fn encode_page_errors() {
    let mut enc = Encoder::new(incr_header()).unwrap();
    let page = vec![0u8; PS];
    assert!(matches!(
        enc.add_page(0, &page),
        Err(EncodeError::PageNumberZero)
    ));
    assert!(matches!(
        enc.add_page(1, &page[..PS - 1]),
        Err(EncodeError::PageSize {
            pgno: 1,
            expected: PS,
            ..
        })
    ));
    assert!(matches!(
        enc.add_page(1, &[0u8; PS + 1]),
        Err(EncodeError::PageSize { .. })
    ));
    assert!(matches!(
        enc.add_page(11, &page),
        Err(EncodeError::PageBeyondCommit {
            pgno: 11,
            commit: 10
        })
    ));
    enc.add_page(3, &page).unwrap();
    assert!(matches!(
        enc.add_page(3, &page),
        Err(EncodeError::PageOutOfOrder { prev: 3, pgno: 3 })
    ));
    assert!(matches!(
        enc.add_page(2, &page),
        Err(EncodeError::PageOutOfOrder { prev: 3, pgno: 2 })
    ));
    // Errors leave the encoder usable.
    enc.add_page(4, &page).unwrap();
    let bytes = enc.finish(CHECKSUM_FLAG | 9).unwrap();
    let f = LtxFile::parse_verified(&bytes).unwrap();
    assert_eq!(f.pgnos().collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn encode_lock_page() {
    let h = Header {
        page_size: 65536,
        commit: 20_000,
        ..incr_header()
    };
    let lock = lock_pgno(65536);
    let mut enc = Encoder::new(h).unwrap();
    assert!(matches!(
        enc.add_page(lock, &vec![0u8; 65536]),
        Err(EncodeError::LockPage { pgno }) if pgno == lock
    ));
    enc.add_page(lock + 1, &vec![0u8; 65536]).unwrap();
}

#[test]
fn encode_snapshot_rules() {
    let page = pattern(1, PS);
    let mut enc = Encoder::new(snap_header(3)).unwrap();
    assert!(matches!(
        enc.add_page(2, &page),
        Err(EncodeError::SnapshotNonSequential {
            expected: 1,
            pgno: 2
        })
    ));
    enc.add_page(1, &page).unwrap();
    assert!(matches!(
        enc.add_page(3, &page),
        Err(EncodeError::SnapshotNonSequential {
            expected: 2,
            pgno: 3
        })
    ));
    enc.add_page(2, &page).unwrap();
    let post = enc.computed_post_apply_checksum().unwrap();
    assert!(matches!(
        enc.finish(post),
        Err(EncodeError::SnapshotIncomplete {
            expected: 3,
            actual: 2
        })
    ));

    let mut enc = Encoder::new(snap_header(1)).unwrap();
    enc.add_page(1, &page).unwrap();
    let right = common::db_checksum(&[(1, page.clone())]);
    assert_eq!(enc.computed_post_apply_checksum(), Some(right));
    assert!(matches!(
        enc.finish(CHECKSUM_FLAG | 1),
        Err(EncodeError::DatabaseChecksumMismatch { given, computed })
            if given == CHECKSUM_FLAG | 1 && computed == right
    ));
}

#[test]
fn encode_trailer_rules() {
    let finish = |h: Header, post: u64| Encoder::new(h).unwrap().finish(post).unwrap_err();
    assert!(matches!(
        finish(incr_header(), 0),
        EncodeError::InvalidTrailer(TrailerError::PostApplyChecksumRequired)
    ));
    assert!(matches!(
        finish(incr_header(), 5),
        EncodeError::InvalidTrailer(TrailerError::InvalidPostApplyChecksumFormat(5))
    ));
    let nc = Header {
        flags: HeaderFlags::NO_CHECKSUM,
        pre_apply_checksum: 0,
        ..incr_header()
    };
    assert!(matches!(
        finish(nc, CHECKSUM_FLAG),
        EncodeError::InvalidTrailer(TrailerError::PostApplyChecksumNotAllowed(_))
    ));
    let del = Header {
        commit: 0,
        ..incr_header()
    };
    assert!(matches!(
        finish(del, CHECKSUM_FLAG | 3),
        EncodeError::InvalidTrailer(TrailerError::EmptyDatabaseChecksum(_))
    ));
    // Deletion file with the empty checksum, and a no-checksum deletion file.
    let bytes = Encoder::new(del).unwrap().finish(CHECKSUM_FLAG).unwrap();
    assert_eq!(LtxFile::parse_verified(&bytes).unwrap().page_count(), 0);
    let nc_del = Header { commit: 0, ..nc };
    let bytes = Encoder::new(nc_del).unwrap().finish(0).unwrap();
    LtxFile::parse_verified(&bytes).unwrap();
}
