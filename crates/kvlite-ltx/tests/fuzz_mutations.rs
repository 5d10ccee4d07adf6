//! Mutation fuzzing with proptest: valid files are corrupted (bit flips,
//! truncation, insertions, deletions, overwritten length fields) and every
//! decoder entry point must neither panic nor return wrong data: a
//! successful `decode_all` of a mutated file must equal the original pages.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Rng, page_of_kind};
use kvlite_ltx::{CHECKSUM_FLAG, DatabaseChecksum, Header, HeaderFlags, LtxFile, encode};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        n: usize,
    },
    SetU32 {
        at: usize,
        value: u32,
    },
    SetU64 {
        at: usize,
        value: u64,
    },
    /// Overwrite the page index length field (8 bytes before the trailer).
    IndexLen {
        value: u64,
    },
    /// Overwrite the compressed size of one frame (picked modulo the count).
    FrameSize {
        frame: usize,
        value: u32,
    },
    /// Overwrite an index byte (picked modulo the index length).
    IndexByte {
        at: usize,
        value: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let small_u32 = prop_oneof![0u32..64, 4090u32..4200, any::<u32>()];
    let small_u64 = prop_oneof![0u64..64, 0u64..100_000, any::<u64>()];
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..24).prop_map(|(at, n)| Mutation::Delete { at, n }),
        1 => (any::<usize>(), small_u32.clone()).prop_map(|(at, value)| Mutation::SetU32 { at, value }),
        1 => (any::<usize>(), small_u64.clone()).prop_map(|(at, value)| Mutation::SetU64 { at, value }),
        1 => small_u64.prop_map(|value| Mutation::IndexLen { value }),
        2 => (any::<usize>(), small_u32).prop_map(|(frame, value)| Mutation::FrameSize { frame, value }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::IndexByte { at, value }),
    ]
}

fn apply(bytes: &mut Vec<u8>, frames: &[(usize, usize)], index: (usize, usize), m: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        return;
    }
    match m {
        Mutation::FlipBit { at, bit } => bytes[at % len] ^= 1 << bit,
        Mutation::SetByte { at, value } => bytes[at % len] = *value,
        Mutation::Truncate { len: n } => bytes.truncate(n % len),
        Mutation::Insert { at, bytes: ins } => {
            let at = at % (len + 1);
            bytes.splice(at..at, ins.iter().copied());
        }
        Mutation::Delete { at, n } => {
            let at = at % len;
            let end = (at + n).min(len);
            bytes.drain(at..end);
        }
        Mutation::SetU32 { at, value } => {
            if len >= 4 {
                let at = at % (len - 3);
                bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
        }
        Mutation::SetU64 { at, value } => {
            if len >= 8 {
                let at = at % (len - 7);
                bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
            }
        }
        Mutation::IndexLen { value } => {
            if len >= 24 {
                bytes[len - 24..len - 16].copy_from_slice(&value.to_be_bytes());
            }
        }
        Mutation::FrameSize { frame, value } => {
            if !frames.is_empty() {
                let (off, _) = frames[frame % frames.len()];
                if off + 10 <= len {
                    bytes[off + 6..off + 10].copy_from_slice(&value.to_be_bytes());
                }
            }
        }
        Mutation::IndexByte { at, value } => {
            let (start, end) = index;
            if end > start && end <= len {
                bytes[start + at % (end - start)] = *value;
            }
        }
    }
}

struct Original {
    header: Header,
    pages: Vec<(u32, Vec<u8>)>,
    bytes: Vec<u8>,
}

fn original(seed: u64, n_pages: usize, page_size: u32, snapshot: bool, nc: bool) -> Original {
    let mut rng = Rng(seed | 1);
    let size = page_size as usize;
    let mut pgno = if snapshot { 0 } else { rng.below(20) as u32 };
    let pages: Vec<(u32, Vec<u8>)> = (0..n_pages)
        .map(|_| {
            pgno += if snapshot { 1 } else { 1 + rng.below(3) as u32 };
            let kind = rng.below(5);
            (pgno, page_of_kind(kind, &mut rng, size))
        })
        .collect();
    let header = Header {
        flags: if nc {
            HeaderFlags::NO_CHECKSUM
        } else {
            HeaderFlags::empty()
        },
        page_size,
        commit: pgno,
        min_txid: if snapshot { 1 } else { 9 },
        max_txid: 10,
        timestamp: 1_700_000_000_000,
        pre_apply_checksum: if snapshot || nc { 0 } else { CHECKSUM_FLAG | 3 },
        ..Header::default()
    };
    let post = if nc {
        0
    } else if snapshot {
        let mut c = DatabaseChecksum::new();
        for (p, d) in &pages {
            c.add_page(*p, d);
        }
        c.value()
    } else if header.commit == 0 {
        CHECKSUM_FLAG // empty database
    } else {
        CHECKSUM_FLAG | 4
    };
    let bytes = encode(&header, pages.iter().map(|(p, d)| (*p, d.as_slice())), post).unwrap();
    Original {
        header,
        pages,
        bytes,
    }
}

/// Runs every decoder entry point on `bytes`; panics only if corrupted data
/// is returned as valid.
fn exercise(bytes: &[u8], orig: &Original) {
    let Ok(f) = LtxFile::parse(bytes) else {
        return;
    };
    let pgnos: Vec<u32> = f.pgnos().collect();
    let mut buf = vec![0u8; f.page_size()];
    for &p in &pgnos {
        let _ = f.page(p);
        let _ = f.read_page_into(p, &mut buf);
    }
    let _ = f.page(0);
    let _ = f.page(u32::MAX);
    let verified = f.verify_checksum();
    match f.decode_all() {
        Ok(all) => {
            assert!(verified.is_ok(), "verify and decode_all disagree");
            assert_eq!(*f.header(), orig.header, "corrupt header accepted");
            let got: Vec<(u32, Vec<u8>)> = all.iter().map(|(p, d)| (p, d.to_vec())).collect();
            assert!(got == orig.pages, "corrupt pages accepted");
        }
        Err(_) => assert!(verified.is_err(), "verify and decode_all disagree"),
    }
    match f.decode_each() {
        Ok(each) => {
            assert!(verified.is_ok(), "verify and decode_each disagree");
            let got: Vec<(u32, Vec<u8>)> = f.pgnos().zip(each).collect();
            assert!(got == orig.pages, "corrupt pages accepted page by page");
        }
        Err(_) => assert!(verified.is_err(), "verify and decode_each disagree"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_decode_wrong(
        seed in any::<u64>(),
        n_pages in 0usize..6,
        ps_idx in 0usize..3,
        snapshot in any::<bool>(),
        nc in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let page_size = [512u32, 1024, 4096][ps_idx];
        let orig = original(seed, n_pages, page_size, snapshot, nc);
        let (frames, index) = {
            let f = LtxFile::parse_verified(&orig.bytes).unwrap();
            let frames: Vec<(usize, usize)> = f.frames().iter().map(|fr| (fr.offset, fr.size)).collect();
            let len = orig.bytes.len();
            let idx_len = u64::from_be_bytes(orig.bytes[len - 24..len - 16].try_into().unwrap()) as usize;
            (frames, (len - 24 - idx_len, len - 24))
        };
        let mut bytes = orig.bytes.clone();
        for m in &mutations {
            apply(&mut bytes, &frames, index, m);
        }
        exercise(&bytes, &orig);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..600),
        with_magic in any::<bool>(),
    ) {
        let mut bytes = if with_magic { b"LTX1".to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&body);
        if let Ok(f) = LtxFile::parse(&bytes) {
            for p in f.pgnos().collect::<Vec<_>>() {
                let _ = f.page(p);
            }
            let _ = f.verify_checksum();
            let _ = f.decode_all();
            let _ = f.decode_each();
        }
    }
}
