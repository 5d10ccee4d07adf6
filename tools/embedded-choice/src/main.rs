//! Measures the embedded KV candidates on what kvlite does with them:
//! fsynced commits of one LTX delta (chunked into ≤100 KB values) plus one
//! page-index key per page and a META key; batched point reads of delta
//! chunks; prefix scans of small page-index keys; disk use under overwrites.
//!
//! Run: `cargo run --release --manifest-path tools/embedded-choice/Cargo.toml -- DIR`
//! (DIR on the disk the data directory will live on).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

const CHUNK: usize = 100_000;
const PAGE: usize = 4096;

trait Store {
    fn name(&self) -> &'static str;
    /// One durable transaction writing all `puts`.
    fn commit(&self, puts: &[(Vec<u8>, Vec<u8>)]);
    /// One snapshot reading all `keys`; returns total bytes read.
    fn multi_get(&self, keys: &[Vec<u8>]) -> usize;
    /// One snapshot scanning every key with `prefix`; returns the count.
    fn scan_prefix(&self, prefix: &[u8]) -> usize;
    fn disk_bytes(&self) -> u64;
}

struct Redb {
    db: redb::Database,
    path: PathBuf,
}
const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

impl Redb {
    fn open(dir: &Path) -> Self {
        let path = dir.join("redb.db");
        let db = redb::Database::create(&path).expect("redb create");
        Redb { db, path }
    }
}

impl Store for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn commit(&self, puts: &[(Vec<u8>, Vec<u8>)]) {
        let txn = self.db.begin_write().expect("begin");
        {
            let mut t = txn.open_table(TABLE).expect("table");
            for (k, v) in puts {
                t.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    fn multi_get(&self, keys: &[Vec<u8>]) -> usize {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().expect("read");
        let t = txn.open_table(TABLE).expect("table");
        keys.iter()
            .map(|k| t.get(k.as_slice()).expect("get").map_or(0, |v| v.value().len()))
            .sum()
    }
    fn scan_prefix(&self, prefix: &[u8]) -> usize {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().expect("read");
        let t = txn.open_table(TABLE).expect("table");
        let mut end = prefix.to_vec();
        *end.last_mut().expect("prefix") += 1;
        t.range(prefix..end.as_slice()).expect("range").count()
    }
    fn disk_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

struct Fjall {
    db: fjall::SingleWriterTxDatabase,
    ks: fjall::SingleWriterTxKeyspace,
    dir: PathBuf,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let dir = dir.join("fjall");
        let db = fjall::SingleWriterTxDatabase::builder(&dir).open().expect("fjall open");
        let ks = db
            .keyspace("kv", || {
                fjall::KeyspaceCreateOptions::default()
                    .data_block_compression_policy(fjall::config::CompressionPolicy::disabled())
                    .with_kv_separation(Some(
                        fjall::KvSeparationOptions::default()
                            .compression(fjall::CompressionType::None),
                    ))
            })
            .expect("keyspace");
        Fjall { db, ks, dir }
    }
}

impl Store for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn commit(&self, puts: &[(Vec<u8>, Vec<u8>)]) {
        let mut tx = self.db.write_tx().durability(Some(fjall::PersistMode::SyncAll));
        for (k, v) in puts {
            tx.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        tx.commit().expect("commit");
    }
    fn multi_get(&self, keys: &[Vec<u8>]) -> usize {
        use fjall::Readable;
        let snap = self.db.read_tx();
        keys.iter()
            .map(|k| snap.get(&self.ks, k).expect("get").map_or(0, |v| v.len()))
            .sum()
    }
    fn scan_prefix(&self, prefix: &[u8]) -> usize {
        use fjall::Readable;
        let snap = self.db.read_tx();
        snap.prefix(&self.ks, prefix).count()
    }
    fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else { return 0 };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }
}

/// The writes of one kvlite commit of `bytes` of dirty pages (already-compressed
/// LTX chunks are modelled as incompressible random bytes).
fn commit_puts(rng: &mut StdRng, db: u32, txid: u64, bytes: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut puts = Vec::new();
    let mut blob = vec![0u8; bytes];
    rng.fill_bytes(&mut blob);
    for (i, c) in blob.chunks(CHUNK).enumerate() {
        let mut k = format!("d{db:08}/DELTA/").into_bytes();
        k.extend_from_slice(&txid.to_be_bytes());
        k.extend_from_slice(&(i as u32).to_be_bytes());
        puts.push((k, c.to_vec()));
    }
    for p in 0..bytes.div_ceil(PAGE) {
        let mut k = format!("d{db:08}/PIDX/").into_bytes();
        k.extend_from_slice(&(rng.random_range(1..25_600u32) + p as u32).to_be_bytes());
        puts.push((k, txid.to_be_bytes().to_vec()));
    }
    puts.push((format!("d{db:08}/META").into_bytes(), vec![7u8; 120]));
    puts
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn bench(store: &dyn Store, rng: &mut StdRng) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut txid = 0u64;
    for (label, bytes, n) in [
        ("commit 4 KiB", 4 << 10, 200),
        ("commit 64 KiB", 64 << 10, 100),
        ("commit 1 MiB", 1 << 20, 40),
        ("commit 8 MiB", 8 << 20, 10),
    ] {
        let mut times = Vec::new();
        for _ in 0..n {
            txid += 1;
            let puts = commit_puts(rng, 1, txid, bytes);
            let t = Instant::now();
            store.commit(&puts);
            times.push(t.elapsed());
        }
        out.push((label.to_string(), fmt(median(times))));
    }

    // Load 100 databases × 1,000 page-index keys and 64 MiB of delta chunks.
    for db in 100..200u32 {
        let mut puts = Vec::new();
        for p in 0..1000u32 {
            let mut k = format!("d{db:08}/PIDX/").into_bytes();
            k.extend_from_slice(&p.to_be_bytes());
            puts.push((k, 1u64.to_be_bytes().to_vec()));
        }
        store.commit(&puts);
    }
    let mut chunk_keys = Vec::new();
    for t in 0..64u64 {
        let puts = commit_puts(rng, 2, 1000 + t, 1 << 20);
        chunk_keys.extend(puts.iter().filter(|(k, _)| k.windows(5).any(|w| w == b"DELTA")).map(|(k, _)| k.clone()));
        store.commit(&puts);
    }
    let mut times = Vec::new();
    for _ in 0..200 {
        let keys: Vec<Vec<u8>> = (0..64).map(|_| chunk_keys[rng.random_range(0..chunk_keys.len())].clone()).collect();
        let t = Instant::now();
        let n = store.multi_get(&keys);
        times.push(t.elapsed());
        assert!(n > 0);
    }
    out.push(("get 64 × 100 KB chunks".into(), fmt(median(times))));
    let mut times = Vec::new();
    for _ in 0..500 {
        let db = rng.random_range(100..200u32);
        let t = Instant::now();
        let n = store.scan_prefix(format!("d{db:08}/PIDX/").as_bytes());
        times.push(t.elapsed());
        assert_eq!(n, 1000);
    }
    out.push(("scan 1,000 PIDX keys".into(), fmt(median(times))));

    // Space amplification: overwrite the same 64 MiB of chunks 4 more times.
    for round in 0..4u64 {
        for t in 0..64u64 {
            let _ = round;
            store.commit(&commit_puts(rng, 2, 1000 + t, 1 << 20));
        }
    }
    // Small commits again, now that the store holds data and its files have grown.
    let mut times = Vec::new();
    for _ in 0..300 {
        txid += 1;
        let puts = commit_puts(rng, 1, txid, 4 << 10);
        let t = Instant::now();
        store.commit(&puts);
        times.push(t.elapsed());
    }
    out.push(("commit 4 KiB (steady state)".into(), fmt(median(times))));
    std::thread::sleep(Duration::from_secs(2));
    out.push(("disk after 5× overwrite of ~64 MiB live".into(), format!("{} MiB", store.disk_bytes() >> 20)));
    out
}

fn main() {
    let base = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/tmp/embedded-choice".into()));
    let _ = std::fs::remove_dir_all(&base);
    let mut results = Vec::new();
    for which in ["redb", "fjall"] {
        let dir = base.join(which);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let store: Box<dyn Store> = match which {
            "redb" => Box::new(Redb::open(&dir)),
            _ => Box::new(Fjall::open(&dir)),
        };
        let mut rng = StdRng::seed_from_u64(42);
        results.push((store.name(), bench(store.as_ref(), &mut rng)));
    }
    println!("| workload | {} |", results.iter().map(|r| r.0).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---|".repeat(results.len()));
    for i in 0..results[0].1.len() {
        let cells: Vec<&str> = results.iter().map(|r| r.1[i].1.as_str()).collect();
        println!("| {} | {} |", results[0].1[i].0, cells.join(" | "));
    }
    let _ = std::fs::remove_dir_all(&base);
}
