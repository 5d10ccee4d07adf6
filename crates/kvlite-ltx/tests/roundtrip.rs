//! Encode → parse → page()/decode_all() round trips on random page sets.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Rng, page_of_kind};
use kvlite_ltx::{
    CHECKSUM_FLAG, DatabaseChecksum, Encoder, Header, HeaderFlags, LtxFile, encode, lock_pgno,
};
use proptest::prelude::*;

struct Input {
    header: Header,
    pages: Vec<(u32, Vec<u8>)>,
    post: u64,
}

fn build(page_size: u32, n_pages: usize, seed: u64, snapshot: bool, no_checksum: bool) -> Input {
    let mut rng = Rng(seed | 1);
    let size = page_size as usize;
    let pgnos: Vec<u32> = if snapshot {
        (1..=n_pages as u32).collect()
    } else {
        // Strictly ascending with random gaps; may start anywhere.
        let mut p = rng.below(1000) as u32;
        (0..n_pages)
            .map(|_| {
                let max_gap = if rng.below(4) == 0 { 50 } else { 2 };
                p += 1 + rng.below(max_gap) as u32;
                p
            })
            .collect()
    };
    let pages: Vec<(u32, Vec<u8>)> = pgnos
        .iter()
        .map(|&pgno| {
            let kind = rng.below(5);
            (pgno, page_of_kind(kind, &mut rng, size))
        })
        .collect();
    let last = pgnos.last().copied().unwrap_or(0);
    let commit = if snapshot {
        last
    } else {
        last + rng.below(3) as u32
    };
    let min_txid = if snapshot { 1 } else { 2 + rng.below(1 << 40) };
    let mut header = Header {
        flags: if no_checksum {
            HeaderFlags::NO_CHECKSUM
        } else {
            HeaderFlags::empty()
        },
        page_size,
        commit,
        min_txid,
        max_txid: min_txid + rng.below(100),
        timestamp: rng.next_u64() as i64 >> 1,
        node_id: rng.next_u64(),
        ..Header::default()
    };
    if !snapshot && !no_checksum {
        header.pre_apply_checksum = CHECKSUM_FLAG | rng.next_u64();
    }
    if rng.below(2) == 0 {
        header.wal_offset = 32 + rng.below(1 << 30) as i64;
        header.wal_size = rng.below(1 << 30) as i64;
        header.wal_salt1 = rng.next_u64() as u32;
        header.wal_salt2 = rng.next_u64() as u32;
    }
    let post = if no_checksum {
        0
    } else if snapshot {
        let mut c = DatabaseChecksum::new();
        for (p, d) in &pages {
            c.add_page(*p, d);
        }
        c.value()
    } else {
        CHECKSUM_FLAG | rng.next_u64()
    };
    Input {
        header,
        pages,
        post,
    }
}

fn check(input: &Input) {
    let bytes = encode(
        &input.header,
        input.pages.iter().map(|(p, d)| (*p, d.as_slice())),
        input.post,
    )
    .unwrap();
    let f = LtxFile::parse(&bytes).unwrap();
    assert_eq!(*f.header(), input.header);
    assert_eq!(f.post_apply_checksum(), input.post);
    assert_eq!(f.page_count(), input.pages.len());
    assert!(
        f.pgnos().eq(input.pages.iter().map(|p| p.0)),
        "pgnos differ"
    );
    // Random access, including absent pages.
    for (pgno, data) in &input.pages {
        assert_eq!(f.page(*pgno).unwrap().as_ref(), Some(data));
        assert!(f.contains(*pgno));
    }
    if let Some((first, _)) = input.pages.first() {
        assert_eq!(f.page(first - 1).unwrap(), None);
    }
    if !f.contains(u32::MAX) {
        assert_eq!(f.page(u32::MAX).unwrap(), None);
    }
    f.verify_checksum().unwrap();
    let all = f.decode_all().unwrap();
    assert_eq!(all.len(), input.pages.len());
    for ((p, d), (ep, ed)) in all.iter().zip(&input.pages) {
        assert_eq!(p, *ep);
        assert_eq!(d, &ed[..]);
    }
    // Page by page, each in its own buffer: the same pages.
    let each = f.decode_each().unwrap();
    assert_eq!(each.len(), input.pages.len());
    for (d, (_, ed)) in each.iter().zip(&input.pages) {
        assert_eq!(d, ed);
    }
    // Buffer reuse gives identical results.
    let again = f.decode_all_with_buffer(all.clone().into_data()).unwrap();
    assert_eq!(again, all);
    // A larger buffer with stale contents is overwritten, not trusted.
    let stale = vec![0xAA; (input.pages.len() + 3) * input.header.page_size as usize];
    assert_eq!(f.decode_all_with_buffer(stale).unwrap(), all);
    let mut enc = Encoder::with_buffer(input.header, bytes.clone()).unwrap();
    for (p, d) in &input.pages {
        enc.add_page(*p, d).unwrap();
    }
    assert_eq!(enc.finish(input.post).unwrap(), bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(
        ps_idx in 0usize..5,
        n_pages in 1usize..=300,
        seed in any::<u64>(),
        snapshot in any::<bool>(),
        no_checksum in any::<bool>(),
    ) {
        let page_size = [512u32, 1024, 4096, 8192, 65536][ps_idx];
        // Keep 64 KiB cases small.
        let n_pages = if page_size == 65536 { n_pages.min(24) } else { n_pages };
        check(&build(page_size, n_pages, seed, snapshot, no_checksum));
    }
}

#[test]
fn round_trip_extremes() {
    for ps in [512u32, 65536] {
        for snapshot in [false, true] {
            for no_checksum in [false, true] {
                check(&build(ps, 1, 7, snapshot, no_checksum));
                check(&build(ps, 40, 8, snapshot, no_checksum));
            }
        }
    }
    // Page numbers up to u32::MAX - 1 (largest commit) in an incremental file.
    let header = Header {
        page_size: 512,
        commit: u32::MAX,
        min_txid: 2,
        max_txid: 2,
        pre_apply_checksum: CHECKSUM_FLAG,
        ..Header::default()
    };
    let pages = vec![
        (1u32, vec![1u8; 512]),
        (1 << 28, vec![2u8; 512]),
        (u32::MAX, vec![3u8; 512]),
    ];
    check(&Input {
        header,
        pages,
        post: CHECKSUM_FLAG,
    });
}

/// A snapshot spanning the lock page (1 GiB database of 64 KiB zero pages):
/// the encoder skips it, the decoder accepts the gap, and the database
/// checksum excludes it. Decoded with `verify_checksum` (one page buffer).
#[test]
fn snapshot_across_lock_page() {
    let ps = 65536u32;
    let lock = lock_pgno(ps);
    let commit = lock + 2;
    let zero = vec![0u8; ps as usize];
    let header = Header {
        page_size: ps,
        commit,
        min_txid: 1,
        max_txid: 1,
        ..Header::default()
    };
    let mut enc = Encoder::new(header).unwrap();
    for pgno in 1..=commit {
        if pgno != lock {
            enc.add_page(pgno, &zero).unwrap();
        }
    }
    let post = enc.computed_post_apply_checksum().unwrap();
    let mut expect = DatabaseChecksum::new();
    for pgno in 1..=commit {
        expect.add_page(pgno, &zero); // add_page skips the lock page itself
    }
    assert_eq!(post, expect.value());
    let bytes = enc.finish(post).unwrap();
    let f = LtxFile::parse_verified(&bytes).unwrap();
    assert_eq!(f.page_count() as u32, commit - 1);
    assert!(!f.contains(lock));
    assert_eq!(f.page(lock + 1).unwrap(), Some(zero));
}
