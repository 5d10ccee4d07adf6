//! Shared test helpers: deterministic page generators matching the ones used
//! to produce `tests/data/go_*.ltx` with the Go reference encoder.
#![allow(dead_code)]

use kvlite_ltx::{DatabaseChecksum, Header, HeaderFlags};

const FOX: &[u8] = b"The quick brown fox jumps over the lazy dog. ";

/// Repeating English text with the page number in the first 4 bytes.
pub fn pattern(pgno: u32, size: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..size).map(|j| FOX[j % FOX.len()]).collect();
    b[..4].copy_from_slice(&pgno.to_be_bytes());
    b
}

/// Incompressible xorshift32 bytes seeded by the page number.
pub fn random(pgno: u32, size: usize) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ pgno;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn fill(v: u8, size: usize) -> Vec<u8> {
    vec![v; size]
}

pub fn db_checksum(pages: &[(u32, Vec<u8>)]) -> u64 {
    let mut c = DatabaseChecksum::new();
    for (pgno, data) in pages {
        c.add_page(*pgno, data);
    }
    c.value()
}

/// One golden case: a header, its pages and post-apply checksum.
pub struct Case {
    pub name: &'static str,
    pub header: Header,
    pub pages: Vec<(u32, Vec<u8>)>,
    pub post_apply_checksum: u64,
}

/// The cases written by the Go reference encoder into `tests/data/go_*.ltx`.
pub fn go_cases() -> Vec<Case> {
    const FLAG: u64 = kvlite_ltx::CHECKSUM_FLAG;
    let snap = |page_size, commit, ts| Header {
        page_size,
        commit,
        min_txid: 1,
        max_txid: 1,
        timestamp: ts,
        ..Header::default()
    };
    let mut cases = Vec::new();

    let pages = vec![(1, fill(0, 4096)), (2, pattern(2, 4096))];
    cases.push(Case {
        name: "go_snapshot_2x4096",
        header: snap(4096, 2, 1_700_000_000_000),
        post_apply_checksum: db_checksum(&pages),
        pages,
    });

    let pages = vec![
        (1, pattern(1, 4096)),
        (2, fill(0, 4096)),
        (3, random(3, 4096)),
        (4, fill(0xAB, 4096)),
    ];
    cases.push(Case {
        name: "go_snapshot_mixed_4096",
        header: Header {
            max_txid: 3,
            node_id: 42,
            ..snap(4096, 4, 1_700_000_000_123)
        },
        post_apply_checksum: db_checksum(&pages),
        pages,
    });

    cases.push(Case {
        name: "go_incremental_1024",
        header: Header {
            page_size: 1024,
            commit: 10,
            min_txid: 5,
            max_txid: 7,
            timestamp: 1_700_000_001_000,
            pre_apply_checksum: FLAG | 0x1234,
            wal_offset: 32,
            wal_size: 4128,
            wal_salt1: 0xdead_beef,
            wal_salt2: 0x0102_0304,
            node_id: 0x0102_0304_0506_0708,
            ..Header::default()
        },
        pages: vec![
            (2, pattern(2, 1024)),
            (5, random(5, 1024)),
            (9, fill(0x11, 1024)),
        ],
        post_apply_checksum: FLAG | 0xabcd,
    });

    cases.push(Case {
        name: "go_nochecksum_512",
        header: Header {
            flags: HeaderFlags::NO_CHECKSUM,
            page_size: 512,
            commit: 4,
            min_txid: 2,
            max_txid: 2,
            timestamp: 1_700_000_002_000,
            ..Header::default()
        },
        pages: vec![(1, random(1, 512)), (4, pattern(4, 512))],
        post_apply_checksum: 0,
    });

    cases.push(Case {
        name: "go_commit_zero",
        header: Header {
            page_size: 4096,
            commit: 0,
            min_txid: 3,
            max_txid: 3,
            timestamp: 1_700_000_003_000,
            pre_apply_checksum: FLAG | 7,
            ..Header::default()
        },
        pages: vec![],
        post_apply_checksum: FLAG,
    });

    let pages = vec![(1, random(1, 65536)), (2, pattern(2, 65536))];
    cases.push(Case {
        name: "go_snapshot_65536",
        header: snap(65536, 2, 1_700_000_004_000),
        post_apply_checksum: db_checksum(&pages),
        pages,
    });
    cases
}

pub fn encode_case(c: &Case) -> Vec<u8> {
    kvlite_ltx::encode(
        &c.header,
        c.pages.iter().map(|(p, d)| (*p, d.as_slice())),
        c.post_apply_checksum,
    )
    .expect("encode case")
}

pub fn data_file(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// One frame for [`assemble`]: page number, page header flags, stored
/// payload, and the bytes the file checksum should cover for its data.
pub struct RawFrame {
    pub pgno: u32,
    pub flags: u16,
    pub payload: Vec<u8>,
    pub hashed_data: Vec<u8>,
}

impl RawFrame {
    /// A well-formed frame for `data`.
    pub fn page(pgno: u32, data: &[u8]) -> Self {
        RawFrame {
            pgno,
            flags: 1,
            payload: lz4_flex::block::compress(data),
            hashed_data: data.to_vec(),
        }
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Assembles a file from raw parts, with a correct index and file checksum,
/// without any of the encoder's validation. Used to craft invalid files.
pub fn assemble(header: &[u8; 100], frames: &[RawFrame], post_apply_checksum: u64) -> Vec<u8> {
    let mut file = header.to_vec();
    let mut hashed = header.to_vec();
    let mut index = Vec::new();
    for f in frames {
        let offset = file.len();
        let mut head = Vec::new();
        head.extend_from_slice(&f.pgno.to_be_bytes());
        head.extend_from_slice(&f.flags.to_be_bytes());
        head.extend_from_slice(&(f.payload.len() as u32).to_be_bytes());
        file.extend_from_slice(&head);
        file.extend_from_slice(&f.payload);
        hashed.extend_from_slice(&head);
        hashed.extend_from_slice(&f.hashed_data);
        put_uvarint(&mut index, u64::from(f.pgno));
        put_uvarint(&mut index, offset as u64);
        put_uvarint(&mut index, (10 + f.payload.len()) as u64);
    }
    index.push(0);
    let mut tail = vec![0u8; 6];
    tail.extend_from_slice(&index);
    tail.extend_from_slice(&(index.len() as u64).to_be_bytes());
    tail.extend_from_slice(&post_apply_checksum.to_be_bytes());
    file.extend_from_slice(&tail);
    hashed.extend_from_slice(&tail);
    let sum = kvlite_ltx::CHECKSUM_FLAG | kvlite_ltx::crc64(&hashed);
    file.extend_from_slice(&sum.to_be_bytes());
    file
}

/// Small xorshift64* generator for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A page resembling a SQLite b-tree leaf: header, cell pointer array, free
/// space (zeros) and records with text and integers at the end.
pub fn sqlite_like(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = 0x0d;
    let cells = 4 + rng.below(40) as usize;
    let mut end = size;
    for i in 0..cells {
        let rec = format!(
            "row{:06}|user{}@example.com|{}|status=active|",
            rng.below(1_000_000),
            rng.below(10_000),
            rng.next_u64() % 100_000
        );
        let bytes = rec.as_bytes();
        if end < bytes.len() + 8 + 2 * cells + 8 {
            break;
        }
        end -= bytes.len();
        p[end..end + bytes.len()].copy_from_slice(bytes);
        let ptr = (end as u16).to_be_bytes();
        p[8 + 2 * i..10 + 2 * i].copy_from_slice(&ptr);
    }
    p
}

/// A page of one of several kinds, chosen by `kind % 5`.
pub fn page_of_kind(kind: u64, rng: &mut Rng, size: usize) -> Vec<u8> {
    match kind % 5 {
        0 => vec![0u8; size],
        1 => {
            let mut b = vec![0u8; size];
            rng.fill(&mut b);
            b
        }
        2 => sqlite_like(rng, size),
        3 => vec![rng.next_u64() as u8; size],
        _ => {
            // Mostly zero with a few random bytes.
            let mut b = vec![0u8; size];
            for _ in 0..8 {
                let i = rng.below(size as u64) as usize;
                b[i] = rng.next_u64() as u8;
            }
            b
        }
    }
}
