//! Throughput benchmark for the LTX encoder/decoder.
//!
//! Run with `cargo run --release -p kvlite-ltx --example ltx_bench [MiB]`.
//!
//! Data: 4 KiB pages, ~16 MiB by default, mixing SQLite-like b-tree pages
//! (text records + free space), zero / sparse pages and incompressible random
//! pages. Throughput is in MB/s (10^6 bytes) of *uncompressed page data*.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use kvlite_ltx::{CHECKSUM_FLAG, Encoder, Header, LtxFile, crc64};
use lz4_flex::block::{
    CompressTable, compress_into_with_table, decompress_into, get_maximum_output_size,
};

const PAGE: usize = 4096;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn sqlite_like(rng: &mut Rng) -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    p[0] = 0x0d;
    // Fill 40..95% of the page with records, growing down from the end.
    let target = PAGE * (40 + rng.below(56) as usize) / 100;
    let mut end = PAGE;
    let mut cells = 0;
    while PAGE - end < target {
        let rec = format!(
            "{}|user{:05}@example.com|{}|{}|status={}|",
            rng.below(10_000_000),
            rng.below(100_000),
            rng.below(1_000_000_000),
            ["alpha", "beta", "gamma", "delta"][rng.below(4) as usize],
            ["active", "inactive", "pending"][rng.below(3) as usize],
        );
        let b = rec.as_bytes();
        if end < b.len() + 12 + 2 * (cells + 1) {
            break;
        }
        end -= b.len();
        p[end..end + b.len()].copy_from_slice(b);
        p[8 + 2 * cells..10 + 2 * cells].copy_from_slice(&(end as u16).to_be_bytes());
        cells += 1;
    }
    p
}

fn make_pages(total_mib: usize) -> Vec<Vec<u8>> {
    let n = total_mib * 1024 * 1024 / PAGE;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    (0..n)
        .map(|_| match rng.below(100) {
            0..=59 => sqlite_like(&mut rng),
            60..=69 => vec![0u8; PAGE],
            70..=74 => {
                let mut p = vec![0u8; PAGE];
                for _ in 0..16 {
                    let i = rng.below(PAGE as u64) as usize;
                    p[i] = rng.next() as u8;
                }
                p
            }
            _ => {
                let mut p = vec![0u8; PAGE];
                for c in p.chunks_mut(8) {
                    c.copy_from_slice(&rng.next().to_le_bytes());
                }
                p
            }
        })
        .collect()
}

/// Runs `f` repeatedly for at least `min` (and at least 3 times); returns the
/// best time per run.
fn bench(min: Duration, mut f: impl FnMut()) -> Duration {
    let mut best = Duration::MAX;
    let start = Instant::now();
    let mut runs = 0;
    while runs < 3 || start.elapsed() < min {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let pages = make_pages(mib);
    let n = pages.len();
    let raw = n * PAGE;
    let header = Header {
        page_size: PAGE as u32,
        commit: n as u32,
        min_txid: 2,
        max_txid: 2,
        timestamp: 1_700_000_000_000,
        pre_apply_checksum: CHECKSUM_FLAG | 1,
        ..Header::default()
    };
    let min = Duration::from_secs(2);

    // Encoder, reusing the output buffer between runs as the engine would.
    let mut out = Vec::new();
    let enc_t = bench(min, || {
        let mut enc = Encoder::with_buffer(header, std::mem::take(&mut out)).unwrap();
        for (i, p) in pages.iter().enumerate() {
            enc.add_page(i as u32 + 1, p).unwrap();
        }
        out = enc.finish(CHECKSUM_FLAG | 2).unwrap();
    });
    let file = out.clone();
    let enc_fresh_t = bench(min, || {
        let mut enc = Encoder::new(header).unwrap();
        for (i, p) in pages.iter().enumerate() {
            enc.add_page(i as u32 + 1, p).unwrap();
        }
        black_box(enc.finish(CHECKSUM_FLAG | 2).unwrap());
    });

    // Decoder.
    let parse_t = bench(min, || {
        black_box(LtxFile::parse(black_box(&file)).unwrap());
    });
    let mut dec_buf = Vec::new();
    let dec_t = bench(min, || {
        let f = LtxFile::parse(&file).unwrap();
        let all = f
            .decode_all_with_buffer(std::mem::take(&mut dec_buf))
            .unwrap();
        dec_buf = all.into_data();
    });
    let verify_t = bench(min, || {
        LtxFile::parse(&file).unwrap().verify_checksum().unwrap();
    });
    let f = LtxFile::parse(&file).unwrap();
    let mut page_buf = vec![0u8; PAGE];
    let random_t = bench(min, || {
        let mut rng = Rng(7);
        for _ in 0..n {
            let pgno = rng.below(n as u64) as u32 + 1;
            f.read_page_into(pgno, &mut page_buf).unwrap();
            black_box(&page_buf);
        }
    });

    // Raw lz4_flex block API on the same pages.
    let mut table = CompressTable::small();
    let mut cbuf = vec![0u8; n * get_maximum_output_size(PAGE)];
    let mut sizes = vec![0usize; n];
    let lz4c_t = bench(min, || {
        let mut at = 0;
        for (i, p) in pages.iter().enumerate() {
            let len = compress_into_with_table(p, &mut cbuf[at..], &mut table).unwrap();
            sizes[i] = len;
            at += len;
        }
    });
    let mut dbuf = vec![0u8; raw];
    let lz4d_t = bench(min, || {
        let mut at = 0;
        for (i, out) in dbuf.chunks_exact_mut(PAGE).enumerate() {
            let len = decompress_into(&cbuf[at..at + sizes[i]], out).unwrap();
            assert_eq!(len, PAGE);
            at += sizes[i];
        }
    });

    // Raw CRC-64/GO-ISO (slice-by-16) over the same bytes.
    let crc_t = bench(min, || {
        black_box(crc64(black_box(&dbuf)));
    });

    println!(
        "data: {n} pages x {PAGE} B = {:.1} MiB; LTX file {:.1} MiB (ratio {:.2})",
        raw as f64 / 1048576.0,
        file.len() as f64 / 1048576.0,
        raw as f64 / file.len() as f64
    );
    let row = |name: &str, d: Duration| {
        println!(
            "{name:<44} {:>9.1} MB/s  ({:.2} ms)",
            mbps(raw, d),
            d.as_secs_f64() * 1e3
        )
    };
    row("encode (reused buffer)", enc_t);
    row("encode (fresh buffer)", enc_fresh_t);
    row("parse only (index + frame walk)", parse_t);
    row("decode: parse + decode_all (checksum verified)", dec_t);
    row("verify: parse + verify_checksum", verify_t);
    row("random read_page_into x page count", random_t);
    row("raw lz4_flex compress_into_with_table", lz4c_t);
    row("raw lz4_flex decompress_into", lz4d_t);
    row("raw CRC-64/GO-ISO", crc_t);
}
