//! Measures the embedded KV candidates on what kvlite does with them:
//! fsynced commits of one LTX delta (chunked into ≤100 KB values) plus one
//! page-index key per page and a META key; batched point reads of delta
//! chunks; prefix scans of small page-index keys; disk use under overwrites.
//!
//! Also measures, per store, the bytes written and the latency of kvlite's
//! smallest commit (a one-row SQL insert: META + one page-index key + one
//! ~1.6 KB delta chunk + a commit record), against plain SQLite doing the
//! same insert itself.
//!
//! Run: `cargo run --release --manifest-path tools/embedded-choice/Cargo.toml --
//! [--only bench|small-commit] [--store NAME,...] DIR`
//! (DIR on the disk the data directory will live on; it is deleted first).
//! Stores: redb, fjall, sqlite-wal-4k, sqlite-wal-1k (SQLite in WAL mode with
//! `synchronous=FULL` as the KV store, page size 4096 / 1024), and, for
//! `small-commit` only, sqlite-plain (the baseline: SQLite itself).
//! `--store sqlite-wal-4k-rowid` adds a rowid-table variant of sqlite-wal-4k.
//!
//! Syscall counts: run `--only small-commit` under
//! `strace -f -s 128 -o TRACE -e trace=fsync,fdatasync,pwrite64,write,...`
//! and count the calls between the `@@mark` lines this tool writes to stderr
//! (`tools/embedded-choice/strace-window.py TRACE`). `bench` writes a mark
//! before each of its phases too.

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
    /// Move buffered data to its final place, waiting for it: fjall flushes
    /// its memtable, SQLite checkpoints its WAL. Used only to bracket the
    /// small-commit measurement so its write bytes include that work.
    fn settle(&self) {}
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
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
        dir_bytes(&self.dir)
    }
    fn settle(&self) {
        // Flush the memtable (journal -> SST/blob files) and wait for it.
        self.ks.inner().rotate_memtable_and_wait().expect("flush");
    }
}

/// SQLite in WAL mode as the KV store: one `kv` table, one
/// `BEGIN IMMEDIATE ... COMMIT` per commit, `synchronous=FULL` (an fsync of
/// the WAL per commit), default autocheckpoint (1,000 pages) and cache.
struct SqliteKv {
    conn: rusqlite::Connection,
    dir: PathBuf,
    name: &'static str,
}

fn sqlite_open(path: &Path, page_size: u32) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("sqlite open");
    // page_size must be set before the database has any content.
    conn.execute_batch(&format!("PRAGMA page_size = {page_size};")).expect("page_size");
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).expect("wal");
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA synchronous = FULL;").expect("synchronous");
    conn
}

impl SqliteKv {
    /// `rowid`: an ordinary rowid table (k in a separate index) instead of
    /// `WITHOUT ROWID`. Opt-in only (`--store sqlite-wal-4k-rowid`): in a
    /// WITHOUT ROWID table every key comparison against a cell whose record
    /// overflows its page reads the whole record (sqlite3BtreeIndexMoveto),
    /// i.e. all ~25 overflow pages of a 100 KB chunk.
    fn open(dir: &Path, page_size: u32, rowid: bool) -> Self {
        let dir = dir.join("sqlite");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let conn = sqlite_open(&dir.join("kv.db"), page_size);
        let schema = if rowid {
            "CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB);"
        } else {
            "CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;"
        };
        conn.execute_batch(schema).expect("create");
        let ps: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("page_size");
        assert_eq!(ps, page_size);
        let name = match (page_size, rowid) {
            (4096, false) => "sqlite-wal-4k",
            (1024, false) => "sqlite-wal-1k",
            (4096, true) => "sqlite-wal-4k-rowid",
            _ => "sqlite-wal",
        };
        SqliteKv { conn, dir, name }
    }
}

impl Store for SqliteKv {
    fn name(&self) -> &'static str {
        self.name
    }
    fn commit(&self, puts: &[(Vec<u8>, Vec<u8>)]) {
        self.conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        {
            let mut st = self
                .conn
                .prepare_cached("INSERT INTO kv(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v")
                .expect("prepare");
            for (k, v) in puts {
                st.execute((k.as_slice(), v.as_slice())).expect("insert");
            }
        }
        self.conn.execute_batch("COMMIT").expect("commit");
    }
    fn multi_get(&self, keys: &[Vec<u8>]) -> usize {
        self.conn.execute_batch("BEGIN").expect("begin");
        let mut total = 0;
        {
            let mut st = self.conn.prepare_cached("SELECT v FROM kv WHERE k = ?1").expect("prepare");
            for k in keys {
                let mut rows = st.query([k.as_slice()]).expect("query");
                if let Some(r) = rows.next().expect("row") {
                    total += r.get_ref(0).expect("v").as_blob().expect("blob").len();
                }
            }
        }
        self.conn.execute_batch("COMMIT").expect("end read");
        total
    }
    fn scan_prefix(&self, prefix: &[u8]) -> usize {
        let mut end = prefix.to_vec();
        *end.last_mut().expect("prefix") += 1;
        self.conn.execute_batch("BEGIN").expect("begin");
        let mut n = 0;
        {
            let mut st = self.conn.prepare_cached("SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2").expect("prepare");
            let mut rows = st.query((prefix, end.as_slice())).expect("query");
            while let Some(r) = rows.next().expect("row") {
                let _ = r.get_ref(1).expect("v");
                n += 1;
            }
        }
        self.conn.execute_batch("COMMIT").expect("end read");
        n
    }
    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
    fn settle(&self) {
        let (busy, _, _): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("checkpoint");
        assert_eq!(busy, 0);
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
        mark(&format!("{} {label}", store.name()));
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
    mark(&format!("{} load", store.name()));
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
    mark(&format!("{} get", store.name()));
    let mut times = Vec::new();
    for _ in 0..200 {
        let keys: Vec<Vec<u8>> = (0..64).map(|_| chunk_keys[rng.random_range(0..chunk_keys.len())].clone()).collect();
        let t = Instant::now();
        let n = store.multi_get(&keys);
        times.push(t.elapsed());
        assert!(n > 0);
    }
    out.push(("get 64 × 100 KB chunks".into(), fmt(median(times))));
    mark(&format!("{} scan", store.name()));
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
    mark(&format!("{} overwrite", store.name()));
    for round in 0..4u64 {
        for t in 0..64u64 {
            let _ = round;
            store.commit(&commit_puts(rng, 2, 1000 + t, 1 << 20));
        }
    }
    // Small commits again, now that the store holds data and its files have grown.
    mark(&format!("{} steady", store.name()));
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
    // Live data: ~127 MiB of db 1 deltas + 64 MiB of db 2 chunks + page index.
    out.push(("disk after 5× overwrite of 64 MiB (~190 MiB live)".into(), format!("{} MiB", store.disk_bytes() >> 20)));
    out
}

/// `write_bytes` and `cancelled_write_bytes` of this process (all threads)
/// from /proc/self/io: bytes this process caused to be sent to the block
/// layer (page-granular: dirtying a clean 4 KiB page cache page counts 4 KiB).
fn proc_io() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse::<u64>().expect("number")))
            .expect("field")
    };
    (field("write_bytes:"), field("cancelled_write_bytes:"))
}

/// A line in stderr (one `write(2, ...)`) that strace-window.py splits on.
fn mark(what: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("@@mark {what}\n").as_bytes());
}

const SMALL_WARMUP: u64 = 500;
const SMALL_COMMITS: u64 = 2000;
const SMALL_DB_ID: u64 = 7;

/// kvlite's writes for a one-row SQL insert committed as one LTX delta.
fn small_commit_puts(rng: &mut StdRng, txid: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut prefix = vec![1u8];
    prefix.extend_from_slice(&SMALL_DB_ID.to_be_bytes());
    let key = |tag: u8, rest: &[&[u8]]| {
        let mut k = prefix.clone();
        k.push(tag);
        for r in rest {
            k.extend_from_slice(r);
        }
        k
    };
    let pgno: u32 = rng.random_range(2..200);
    let mut val = |n: usize| {
        let mut v = vec![0u8; n];
        rng.fill_bytes(&mut v);
        v
    };
    let meta = (key(0, &[]), val(120));
    let pidx = (key(1, &[&pgno.to_be_bytes(), &txid.to_be_bytes()]), val(20));
    let delta = (key(2, &[&txid.to_be_bytes(), &0u32.to_be_bytes(), &0u32.to_be_bytes()]), val(1600));
    let rec = (key(3, &[&txid.to_be_bytes()]), val(80));
    vec![meta, pidx, delta, rec]
}

struct SmallResult {
    name: String,
    mean: Duration,
    p50: Duration,
    p99: Duration,
    /// write_bytes per measured commit: during the commits; after also
    /// settling (fjall memtable flush / SQLite checkpoint); after also
    /// closing the store and waiting 1 s.
    bytes: [f64; 3],
    cancelled: f64,
}

/// Warm up, settle, then time `SMALL_COMMITS` calls of `op`, counting the
/// process's write bytes. Everything between the `start` and `end` marks
/// belongs to the measured commits.
fn small_commit_run<T>(name: &str, store: T, settle: impl Fn(&T), mut op: impl FnMut(&T, u64) -> Duration) -> SmallResult {
    for txid in 1..=SMALL_WARMUP {
        op(&store, txid);
    }
    settle(&store);
    std::thread::sleep(Duration::from_millis(500));
    mark(&format!("{name} start"));
    let (w0, c0) = proc_io();
    let mut times = Vec::with_capacity(SMALL_COMMITS as usize);
    for txid in SMALL_WARMUP + 1..=SMALL_WARMUP + SMALL_COMMITS {
        times.push(op(&store, txid));
    }
    let (w1, _) = proc_io();
    mark(&format!("{name} commits-done"));
    settle(&store);
    let (w2, _) = proc_io();
    mark(&format!("{name} settled"));
    drop(store);
    std::thread::sleep(Duration::from_secs(1));
    let (w3, c3) = proc_io();
    mark(&format!("{name} end"));
    let n = SMALL_COMMITS as f64;
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    times.sort();
    SmallResult {
        name: name.to_string(),
        mean,
        p50: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
        bytes: [(w1 - w0) as f64 / n, (w2 - w0) as f64 / n, (w3 - w0) as f64 / n],
        cancelled: (c3 - c0) as f64 / n,
    }
}

fn small_commit_store(store: Box<dyn Store>) -> SmallResult {
    let name = store.name();
    let mut rng = StdRng::seed_from_u64(7);
    small_commit_run(name, store, |s| s.settle(), move |s, txid| {
        let puts = small_commit_puts(&mut rng, txid);
        let t = Instant::now();
        s.commit(&puts);
        t.elapsed()
    })
}

/// The baseline: SQLite itself doing the one-row insert (autocommit).
fn small_commit_sqlite_plain(dir: &Path) -> SmallResult {
    let conn = sqlite_open(&dir.join("plain.db"), 4096);
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);").expect("create");
    let mut rng = StdRng::seed_from_u64(7);
    small_commit_run(
        "sqlite-plain",
        conn,
        |c| {
            let _: i64 = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0)).expect("checkpoint");
        },
        move |c, _| {
            let v: String = (0..100).map(|_| rng.random_range(b'a'..=b'z') as char).collect();
            let t = Instant::now();
            c.prepare_cached("INSERT INTO t(v) VALUES (?1)").expect("prepare").execute([v]).expect("insert");
            t.elapsed()
        },
    )
}

/// Write back the previous store's dirty pages first, so its background
/// writeback does not land in the next store's fsyncs (ext4 journal commits
/// wait for it).
fn sync_disk() {
    let _ = std::process::Command::new("sync").status();
}

/// Run by default; `sqlite-wal-4k-rowid` only when named with `--store`.
const STORES: [&str; 4] = ["redb", "fjall", "sqlite-wal-4k", "sqlite-wal-1k"];

fn open_store(which: &str, dir: &Path) -> Box<dyn Store> {
    std::fs::create_dir_all(dir).expect("mkdir");
    match which {
        "redb" => Box::new(Redb::open(dir)),
        "fjall" => Box::new(Fjall::open(dir)),
        "sqlite-wal-4k" => Box::new(SqliteKv::open(dir, 4096, false)),
        "sqlite-wal-1k" => Box::new(SqliteKv::open(dir, 1024, false)),
        "sqlite-wal-4k-rowid" => Box::new(SqliteKv::open(dir, 4096, true)),
        other => panic!("unknown store {other}"),
    }
}

fn main() {
    let mut only: Option<String> = None;
    let mut stores: Option<Vec<String>> = None;
    let mut base = PathBuf::from("/tmp/embedded-choice");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => only = Some(args.next().expect("--only bench|small-commit")),
            "--store" => stores = Some(args.next().expect("--store NAME,...").split(',').map(String::from).collect()),
            _ if a.starts_with("--") => panic!("unknown option {a}"),
            _ => base = PathBuf::from(a),
        }
    }
    let run_bench = only.as_deref().is_none_or(|o| o == "bench");
    let run_small = only.as_deref().is_none_or(|o| o == "small-commit");
    assert!(run_bench || run_small, "--only takes bench or small-commit");
    let named = |s: &str| stores.as_ref().is_some_and(|v| v.iter().any(|x| x == s));
    let want_bench = |s: &str| named(s) || (stores.is_none() && STORES.contains(&s));
    let want_small = |s: &str| named(s) || (stores.is_none() && s != "sqlite-wal-4k-rowid");

    let _ = std::fs::remove_dir_all(&base);
    if run_bench {
        let mut results = Vec::new();
        for which in STORES.into_iter().chain(["sqlite-wal-4k-rowid"]).filter(|s| want_bench(s)) {
            sync_disk();
            let store = open_store(which, &base.join(which));
            let mut rng = StdRng::seed_from_u64(42);
            results.push((store.name(), bench(store.as_ref(), &mut rng)));
        }
        if !results.is_empty() {
            println!("| workload | {} |", results.iter().map(|r| r.0).collect::<Vec<_>>().join(" | "));
            println!("|---|{}", "---|".repeat(results.len()));
            for i in 0..results[0].1.len() {
                let cells: Vec<&str> = results.iter().map(|r| r.1[i].1.as_str()).collect();
                println!("| {} | {} |", results[0].1[i].0, cells.join(" | "));
            }
            println!();
        }
    }
    if run_small {
        let mut results = Vec::new();
        for which in STORES.into_iter().chain(["sqlite-wal-4k-rowid", "sqlite-plain"]).filter(|s| want_small(s)) {
            sync_disk();
            let dir = base.join(format!("small-{which}"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            results.push(if which == "sqlite-plain" {
                small_commit_sqlite_plain(&dir)
            } else {
                small_commit_store(open_store(which, &dir))
            });
        }
        println!(
            "small commit ({SMALL_COMMITS} after {SMALL_WARMUP} warm-up; write_bytes from /proc/self/io per commit)"
        );
        println!("| store | mean | p50 | p99 | bytes (commits) | + settle | + close | cancelled |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in &results {
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                r.name,
                fmt(r.mean),
                fmt(r.p50),
                fmt(r.p99),
                r.bytes[0],
                r.bytes[1],
                r.bytes[2],
                r.cancelled
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
