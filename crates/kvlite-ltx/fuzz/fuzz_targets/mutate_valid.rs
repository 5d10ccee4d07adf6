//! Builds a valid file from fuzzer-chosen pages, applies fuzzer-chosen byte
//! edits, and checks that a successful `decode_all` returns exactly the
//! original pages (corruption is detected, never returned as data).
#![no_main]

use kvlite_ltx::{CHECKSUM_FLAG, Header, HeaderFlags, LtxFile, encode};
use libfuzzer_sys::fuzz_target;

const PAGE: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    // Up to 8 pages whose contents come from the input (repeated to fill).
    let n_pages = usize::from(control & 7);
    let seed: &[u8] = if rest.is_empty() { &[0] } else { rest };
    let mut pages: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut pgno = 0u32;
    for i in 0..n_pages {
        pgno += 1 + u32::from(seed[i % seed.len()] & 3);
        let page: Vec<u8> = if control & 0x10 != 0 && i % 2 == 0 {
            vec![seed[i % seed.len()]; PAGE]
        } else {
            seed.iter().cycle().skip(i).take(PAGE).copied().collect()
        };
        pages.push((pgno, page));
    }
    let no_checksum = control & 0x20 != 0;
    let header = Header {
        flags: if no_checksum {
            HeaderFlags::NO_CHECKSUM
        } else {
            HeaderFlags::empty()
        },
        page_size: PAGE as u32,
        commit: pgno.max(1),
        min_txid: 2,
        max_txid: 3,
        timestamp: 1,
        pre_apply_checksum: if no_checksum { 0 } else { CHECKSUM_FLAG | 1 },
        ..Header::default()
    };
    let post = if no_checksum { 0 } else { CHECKSUM_FLAG | 2 };
    let Ok(mut bytes) = encode(&header, pages.iter().map(|(p, d)| (*p, d.as_slice())), post) else {
        return;
    };

    // Edits: (position, value) pairs from the tail of the input.
    let edits = rest
        .chunks_exact(3)
        .rev()
        .take(usize::from(control >> 6) + 1);
    for e in edits {
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(u16::from_be_bytes([e[0], e[1]])) % bytes.len();
        match e[2] % 4 {
            0 => bytes[at] ^= 1 << (e[2] >> 5),
            1 => bytes[at] = e[2],
            2 => bytes.truncate(at),
            _ => {
                bytes.insert(at, e[2]);
            }
        }
    }

    let Ok(file) = LtxFile::parse(&bytes) else {
        return;
    };
    for pgno in file.pgnos().collect::<Vec<_>>() {
        let _ = file.page(pgno);
    }
    if let Ok(all) = file.decode_all() {
        assert_eq!(*file.header(), header);
        let got: Vec<(u32, Vec<u8>)> = all.iter().map(|(p, d)| (p, d.to_vec())).collect();
        assert_eq!(got, pages);
    }
});
