//! `kvlite bench`: the same SQLite workloads on plain SQLite (a local file,
//! WAL and DELETE journals, synchronous=FULL) and on kvlite (embedded store
//! in process, through a loopback `kvlite serve`, on PostgreSQL), in one
//! run, alternating systems run by run to cancel machine drift. The
//! transaction workloads also run on the legacy v1 layout (SQLite's own
//! journal on raw chunks, one KV transaction per file operation) on the
//! embedded store, beside v2 on the same store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvlite_api::{
    CommitRequest, CommitResult, CommitStatus, DbStat, LargeCommit, OpenResponse, Preload, ReadAt,
    ReadState, Transport,
};
use kvlite_api::{V1File, V1Files};
use kvlite_client::{RemoteOptions, RemoteTransport};
use kvlite_engine::LocalTransport;
use kvlite_engine::{Engine, EngineConfig};
use kvlite_kv::Kv;
use kvlite_vfs::{V1Vfs, Vfs, VfsConfig};
use prometheus_client::registry::Registry;
use rusqlite::Connection;

use crate::BenchError;
use crate::stats::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SystemId {
    SqliteWal,
    SqliteDelete,
    KvliteEmbedded,
    KvliteServer,
    KvlitePostgres,
    /// The legacy v1 layout on the embedded store.
    KvliteV1,
}

impl SystemId {
    pub fn id(self) -> &'static str {
        match self {
            SystemId::SqliteWal => "sqlite_wal",
            SystemId::SqliteDelete => "sqlite_delete",
            SystemId::KvliteEmbedded => "kvlite_embedded",
            SystemId::KvliteServer => "kvlite_server",
            SystemId::KvlitePostgres => "kvlite_postgres",
            SystemId::KvliteV1 => "kvlite_v1_embedded",
        }
    }

    pub fn is_sqlite(self) -> bool {
        matches!(self, SystemId::SqliteWal | SystemId::SqliteDelete)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    Txn5Mib,
    Txn1MibTiny,
    Txn1MibMedium,
    Txn1MibOneRow,
    EmptyRtt,
    SmallTxns,
    ColdOpenPoint,
    ColdOpenScan,
    PointReadsCached,
    PointReadsUncached,
    Txn256Mib,
}

impl Workload {
    pub const ALL: [Workload; 11] = [
        Workload::Txn5Mib,
        Workload::Txn1MibTiny,
        Workload::Txn1MibMedium,
        Workload::Txn1MibOneRow,
        Workload::EmptyRtt,
        Workload::SmallTxns,
        Workload::ColdOpenPoint,
        Workload::ColdOpenScan,
        Workload::PointReadsCached,
        Workload::PointReadsUncached,
        Workload::Txn256Mib,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Workload::Txn5Mib => "txn_5mib",
            Workload::Txn1MibTiny => "txn_1mib_tiny",
            Workload::Txn1MibMedium => "txn_1mib_medium",
            Workload::Txn1MibOneRow => "txn_1mib_onerow",
            Workload::EmptyRtt => "empty_rtt",
            Workload::SmallTxns => "small_txns",
            Workload::ColdOpenPoint => "cold_open_point",
            Workload::ColdOpenScan => "cold_open_scan",
            Workload::PointReadsCached => "point_reads_cached",
            Workload::PointReadsUncached => "point_reads_uncached",
            Workload::Txn256Mib => "txn_256mib",
        }
    }

    pub fn parse(id: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.id() == id)
    }

    /// Whether it runs on the v1 layout too: the transaction workloads
    /// (a huge transaction or thousands of them would take minutes there).
    pub fn runs_on_v1(self) -> bool {
        matches!(
            self,
            Workload::Txn5Mib
                | Workload::Txn1MibTiny
                | Workload::Txn1MibMedium
                | Workload::Txn1MibOneRow
                | Workload::EmptyRtt
        )
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Scratch directory for stores and SQLite files (on the disk to measure).
    pub dir: PathBuf,
    /// A small version that finishes in about a minute.
    pub quick: bool,
    pub workloads: Vec<Workload>,
    /// Include kvlite on this PostgreSQL server.
    pub postgres_url: Option<String>,
    /// One-way delay added to every message of the remote transport.
    pub latency: Duration,
    /// Override the number of runs per workload and system.
    pub runs: Option<usize>,
    /// Tiny sizes, for tests of the harness itself.
    #[doc(hidden)]
    pub tiny: bool,
}

/// One workload on one system.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub workload: Workload,
    pub system: SystemId,
    pub summary: Summary,
    /// Engine round trips per run (median); `None` for plain SQLite.
    pub round_trips: Option<u64>,
    /// Round trips to the store per run (median; background compaction
    /// included): PostgreSQL's; `None` for stores in process.
    pub store_round_trips: Option<u64>,
    /// Bytes this process wrote to storage per run (median, from
    /// `/proc/self/io`; background compaction included); `None` on
    /// PostgreSQL, whose server does the writing.
    pub bytes_written: Option<u64>,
    /// median / the better plain SQLite mode's median.
    pub ratio_to_best_sqlite: Option<f64>,
    /// For the v1 layout: median / kvlite_embedded's (v2 on the same store).
    pub ratio_v1_to_v2: Option<f64>,
}

/// Counts calls to v1 files: each one is a KV transaction.
struct CountingV1 {
    inner: kvlite_engine::V1Store,
    calls: AtomicU64,
}

impl CountingV1 {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

impl V1Files for CountingV1 {
    fn read(&self, db: &str, f: V1File, o: u64, b: &mut [u8]) -> kvlite_api::Result<usize> {
        self.tick();
        self.inner.read(db, f, o, b)
    }
    fn write(&self, db: &str, f: V1File, o: u64, d: &[u8]) -> kvlite_api::Result<()> {
        self.tick();
        self.inner.write(db, f, o, d)
    }
    fn truncate(&self, db: &str, f: V1File, s: u64) -> kvlite_api::Result<()> {
        self.tick();
        self.inner.truncate(db, f, s)
    }
    fn size(&self, db: &str, f: V1File) -> kvlite_api::Result<Option<u64>> {
        self.tick();
        self.inner.size(db, f)
    }
    fn create(&self, db: &str, f: V1File) -> kvlite_api::Result<()> {
        self.tick();
        self.inner.create(db, f)
    }
    fn delete(&self, db: &str, f: V1File) -> kvlite_api::Result<()> {
        self.tick();
        self.inner.delete(db, f)
    }
}

/// Counts calls to a transport: each one is an engine round trip.
struct Counting<T> {
    inner: T,
    calls: AtomicU64,
}

impl<T: Transport> Counting<T> {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: Transport> Transport for Counting<T> {
    fn open(&self, db: &str, p: &Preload) -> kvlite_api::Result<OpenResponse> {
        self.tick();
        self.inner.open(db, p)
    }
    fn get_pages(
        &self,
        db: &str,
        g: u64,
        p: &[u32],
    ) -> kvlite_api::Result<Vec<Option<kvlite_api::PageData>>> {
        self.tick();
        self.inner.get_pages(db, g, p)
    }
    fn commit(&self, r: &CommitRequest<'_>) -> kvlite_api::Result<CommitResult> {
        self.tick();
        self.inner.commit(r)
    }
    fn commit_large(&self, r: &LargeCommit<'_>) -> kvlite_api::Result<CommitResult> {
        // begin + one per part + finish
        self.calls
            .fetch_add(r.parts.len() as u64 + 2, Ordering::Relaxed);
        self.inner.commit_large(r)
    }
    fn commit_status(&self, db: &str, id: u64) -> kvlite_api::Result<CommitStatus> {
        self.tick();
        self.inner.commit_status(db, id)
    }
    fn stat(&self, db: &str) -> kvlite_api::Result<DbStat> {
        self.tick();
        self.inner.stat(db)
    }
    fn list(&self, p: &str, a: Option<&str>, l: usize) -> kvlite_api::Result<Vec<String>> {
        self.tick();
        self.inner.list(p, a, l)
    }
    fn delete(&self, db: &str) -> kvlite_api::Result<bool> {
        self.tick();
        self.inner.delete(db)
    }
    fn compact(&self, db: &str) -> kvlite_api::Result<kvlite_api::CompactionReport> {
        self.inner.compact(db)
    }
    fn set_quota(&self, db: &str, q: u64) -> kvlite_api::Result<()> {
        self.inner.set_quota(db, q)
    }
    fn begin_read(&self, db: &str, r: u64, since: u64) -> kvlite_api::Result<ReadState> {
        self.tick();
        self.inner.begin_read(db, r, since)
    }
    fn get_pages_at(
        &self,
        db: &str,
        r: u64,
        at: ReadAt,
        p: &[u32],
    ) -> kvlite_api::Result<Vec<Option<kvlite_api::PageData>>> {
        self.tick();
        self.inner.get_pages_at(db, r, at, p)
    }
    fn end_read(&self, db: &str, r: u64) -> kvlite_api::Result<()> {
        self.tick();
        self.inner.end_read(db, r)
    }
}

/// A place SQLite databases live.
struct Target {
    kind: Kind,
    /// A connection kept open across runs (steady-state workloads).
    warm: std::cell::RefCell<Option<Connection>>,
}

enum Kind {
    Sqlite {
        dir: PathBuf,
        wal: bool,
    },
    Kvlite {
        vfs: Vfs,
        small_cache_vfs: Vfs,
        round_trips: Box<dyn Fn() -> u64>,
        /// The store's round trips so far (`None`: a store in process).
        store_round_trips: Box<dyn Fn() -> Option<u64>>,
        /// Empties the engine's caches before a cold open, so "cold" means
        /// what it would after a restart of everything but the OS page cache
        /// (which plain SQLite keeps too).
        clear_engine_caches: Box<dyn Fn()>,
        /// Fold a database completely, so what is measured after building
        /// it is the steady state, not a compaction backlog competing for
        /// the CPU.
        settle: Settle,
        /// In-process engines compact in the background, as applications do.
        _compactor: Option<kvlite_engine::Compactor>,
    },
    KvliteV1 {
        vfs: V1Vfs,
        files: Arc<CountingV1>,
    },
}

/// Folds a database (or, given `None`, every one) completely (see
/// `Kind::Kvlite::settle`).
type Settle = Box<dyn Fn(Option<&str>) -> kvlite_api::Result<()>>;

/// Server thread for kvlite_server; dropped at the end of the run.
pub(crate) struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn start_server(
    kv: Kv,
) -> Result<(std::net::SocketAddr, ServerThread, Arc<Engine>), BenchError> {
    let mut registry = Registry::default();
    let engine = Engine::new(kv, EngineConfig::default(), &mut registry);
    let handle = engine.clone();
    // Like `kvlite serve`, compact in the background.
    let compactor = engine.start_compactor();
    let config = kvlite_server::ServerConfig::new(([127, 0, 0, 1], 0).into());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let bound = match kvlite_server::BoundServer::bind(engine, registry, config).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = addr_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = addr_tx.send(bound.local_addr().map_err(|e| e.to_string()));
            let _ = bound
                .serve(async move {
                    let _ = stopped.await;
                })
                .await;
            compactor.stop();
        });
    });
    let addr = addr_rx
        .recv()
        .map_err(|_| BenchError::Other("server thread died".into()))?
        .map_err(BenchError::Other)?;
    Ok((
        addr,
        ServerThread {
            stop: Some(stop),
            thread: Some(thread),
        },
        handle,
    ))
}

static NEXT_VFS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn register(
    transport: Arc<dyn Transport>,
    cache_bytes: usize,
) -> Result<Vfs, BenchError> {
    let name = format!(
        "kvlite-bench-{}-{}",
        std::process::id(),
        NEXT_VFS.fetch_add(1, Ordering::Relaxed)
    );
    Vfs::register(
        &name,
        transport,
        VfsConfig {
            cache_bytes,
            ..VfsConfig::default()
        },
    )
    .map_err(|e| BenchError::Other(e.to_string()))
}

/// Cache sizes: "fits the cache" and "does not" (10 MiB).
const BIG_CACHE: usize = 256 << 20;
const SMALL_CACHE: usize = 10 << 20;

fn kvlite_target(
    transport: Arc<dyn Transport>,
    round_trips: Box<dyn Fn() -> u64>,
    engine: Arc<Engine>,
    compactor: Option<kvlite_engine::Compactor>,
) -> Result<Target, BenchError> {
    Ok(Target::new(Kind::Kvlite {
        vfs: register(transport.clone(), BIG_CACHE)?,
        small_cache_vfs: register(transport, SMALL_CACHE)?,
        round_trips,
        store_round_trips: Box::new({
            let kv = engine.kv().clone();
            move || kv.round_trips()
        }),
        clear_engine_caches: Box::new({
            let engine = engine.clone();
            move || engine.clear_caches()
        }),
        settle: Box::new(move |db| {
            // `None`: every database (what earlier workloads left).
            let names = match db {
                Some(db) => vec![db.to_string()],
                None => engine.list("", None, 1 << 20)?,
            };
            for name in names {
                // Passes fold in bounded batches: until one finds nothing.
                while engine.compact(&name)?.pages_folded > 0 {}
            }
            Ok(())
        }),
        _compactor: compactor,
    }))
}

fn local(kv: Kv) -> Result<Target, BenchError> {
    let engine = Engine::new(kv, EngineConfig::default(), &mut Registry::default());
    let compactor = engine.start_compactor();
    let counting = Arc::new(Counting {
        inner: LocalTransport::new(engine.clone()),
        calls: AtomicU64::new(0),
    });
    let counter = counting.clone();
    kvlite_target(
        counting,
        Box::new(move || counter.calls.load(Ordering::Relaxed)),
        engine,
        Some(compactor),
    )
}

/// The v1 layout on its own embedded store (so its writes and v2's do not
/// share a file).
fn v1_target(kv: Kv) -> Result<Target, BenchError> {
    let files = Arc::new(CountingV1 {
        inner: kvlite_engine::V1Store::new(kv),
        calls: AtomicU64::new(0),
    });
    let name = format!(
        "kvlite-bench-v1-{}-{}",
        std::process::id(),
        NEXT_VFS.fetch_add(1, Ordering::Relaxed)
    );
    let vfs =
        V1Vfs::register(&name, files.clone()).map_err(|e| BenchError::Other(e.to_string()))?;
    Ok(Target::new(Kind::KvliteV1 { vfs, files }))
}

/// Time `f`, counting the engine round trips it made.
/// One timed run: its duration, round trips and bytes written.
struct Run {
    elapsed: Duration,
    trips: Option<u64>,
    store_trips: Option<u64>,
    written: u64,
}

fn timed(target: &Target, f: impl FnOnce() -> Result<(), BenchError>) -> Result<Run, BenchError> {
    let before = target.round_trips();
    let store_before = target.store_round_trips();
    let written = crate::migration::written_bytes();
    let t = Instant::now();
    f()?;
    let elapsed = t.elapsed();
    let written = crate::migration::written_bytes().saturating_sub(written);
    let since = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    Ok(Run {
        elapsed,
        trips: since(before, target.round_trips()),
        store_trips: since(store_before, target.store_round_trips()),
        written,
    })
}

impl Target {
    fn new(kind: Kind) -> Self {
        Target {
            kind,
            warm: Default::default(),
        }
    }

    /// A connection to `db` with a large (or a 10 MiB) page cache.
    fn open(&self, db: &str, small_cache: bool) -> Result<Connection, BenchError> {
        let cache_kib = if small_cache {
            SMALL_CACHE >> 10
        } else {
            BIG_CACHE >> 10
        };
        let sql = |e: rusqlite::Error| BenchError::Other(format!("{db}: {e}"));
        match &self.kind {
            Kind::Sqlite { dir, wal } => {
                let conn = Connection::open(dir.join(format!("{db}.sqlite"))).map_err(sql)?;
                conn.execute_batch(&format!(
                    "PRAGMA page_size = 4096; PRAGMA journal_mode = {}; PRAGMA synchronous = FULL; PRAGMA cache_size = -{cache_kib};",
                    if *wal { "WAL" } else { "DELETE" }
                ))
                .map_err(sql)?;
                Ok(conn)
            }
            Kind::Kvlite {
                vfs,
                small_cache_vfs,
                ..
            } => {
                let v = if small_cache { small_cache_vfs } else { vfs };
                let conn = v.open(db).map_err(|e| BenchError::Other(e.to_string()))?;
                // SQLite's own cache: the VFS cache is the one that matters.
                conn.execute_batch(&format!(
                    "PRAGMA cache_size = -{};",
                    if small_cache { 2048 } else { 32768 }
                ))
                .map_err(sql)?;
                Ok(conn)
            }
            Kind::KvliteV1 { vfs, .. } => {
                let conn = vfs.open(db).map_err(|e| BenchError::Other(e.to_string()))?;
                conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))
                    .map_err(sql)?;
                Ok(conn)
            }
        }
    }

    fn settle(&self, db: Option<&str>) -> Result<(), BenchError> {
        if let Kind::Kvlite { settle, .. } = &self.kind {
            settle(db).map_err(|e| BenchError::Other(format!("compacting: {e}")))?;
        }
        Ok(())
    }

    fn clear_engine_caches(&self) {
        if let Kind::Kvlite {
            clear_engine_caches,
            ..
        } = &self.kind
        {
            clear_engine_caches();
        }
    }

    fn store_round_trips(&self) -> Option<u64> {
        match &self.kind {
            Kind::Kvlite {
                store_round_trips, ..
            } => store_round_trips(),
            Kind::Sqlite { .. } | Kind::KvliteV1 { .. } => None,
        }
    }

    fn round_trips(&self) -> Option<u64> {
        match &self.kind {
            Kind::Sqlite { .. } => None,
            Kind::Kvlite { round_trips, .. } => Some(round_trips()),
            Kind::KvliteV1 { files, .. } => Some(files.calls.load(Ordering::Relaxed)),
        }
    }
}

/// Sizes of the workloads (smaller in quick mode).
struct Scale {
    big_db_mib: usize,
    huge_txn_mib: usize,
    small_txns: usize,
    point_reads: usize,
    runs: usize,
    rtt_runs: usize,
}

fn scale(config: &BenchConfig) -> Scale {
    let s = if config.tiny {
        Scale {
            big_db_mib: 2,
            huge_txn_mib: 4,
            small_txns: 50,
            point_reads: 200,
            runs: 1,
            rtt_runs: 3,
        }
    } else if config.quick {
        Scale {
            big_db_mib: 16,
            huge_txn_mib: 32,
            small_txns: 500,
            point_reads: 5000,
            runs: 3,
            rtt_runs: 30,
        }
    } else {
        Scale {
            big_db_mib: 100,
            huge_txn_mib: 256,
            small_txns: 10_000,
            point_reads: 100_000,
            runs: 5,
            rtt_runs: 200,
        }
    };
    match config.runs {
        Some(r) => Scale {
            runs: r.max(1),
            rtt_runs: (r * 40).max(1),
            ..s
        },
        None => s,
    }
}

fn blob(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

fn sql_err(e: rusqlite::Error) -> BenchError {
    BenchError::Other(e.to_string())
}

fn payloads(rows: usize, size: usize, rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
    (0..rows).map(|_| blob(rng, size)).collect()
}

/// Insert the payloads in one transaction (BEGIN to COMMIT).
fn insert_txn(conn: &Connection, payloads: &[Vec<u8>]) -> Result<(), BenchError> {
    let tx = conn.unchecked_transaction().map_err(sql_err)?;
    {
        let mut stmt = tx.prepare("INSERT INTO t(b) VALUES (?)").map_err(sql_err)?;
        for p in payloads {
            stmt.execute([p]).map_err(sql_err)?;
        }
    }
    tx.commit().map_err(sql_err)
}

/// Build a table of `mib` MiB (4 KiB rows) if it does not exist yet.
fn build_big(conn: &Connection, mib: usize, rng: &mut fastrand::Rng) -> Result<usize, BenchError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB)")
        .map_err(sql_err)?;
    let have: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .map_err(sql_err)?;
    let have = have.max(0) as usize;
    let rows = (mib << 20) / 4096;
    let mut left = rows.saturating_sub(have);
    while left > 0 {
        let n = left.min(2048);
        insert_txn(conn, &payloads(n, 4000, rng))?;
        left -= n;
    }
    Ok(rows)
}

fn run_once(
    target: &Target,
    w: Workload,
    s: &Scale,
    run: usize,
    rng: &mut fastrand::Rng,
) -> Result<Run, BenchError> {
    let salt = rng.u32(..);
    let fresh = |tag: &str| format!("{}-{tag}-{run}-{salt}", w.id());
    let create = |conn: &Connection| {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB)")
            .map_err(sql_err)
    };
    match w {
        Workload::Txn5Mib
        | Workload::Txn1MibTiny
        | Workload::Txn1MibMedium
        | Workload::Txn1MibOneRow
        | Workload::Txn256Mib => {
            let (rows, size) = match w {
                Workload::Txn5Mib => (1280, 4096),
                Workload::Txn1MibTiny => (4096, 256),
                Workload::Txn1MibMedium => (256, 4096),
                Workload::Txn1MibOneRow => (1, 1 << 20),
                _ => ((s.huge_txn_mib << 20) / 4096, 4096),
            };
            let conn = target.open(&fresh("db"), false)?;
            create(&conn)?;
            // A first small transaction so the measured one is not the
            // database's very first.
            conn.execute("INSERT INTO t(b) VALUES (x'00')", [])
                .map_err(sql_err)?;
            let data = payloads(rows, size, rng);
            timed(target, || insert_txn(&conn, &data))
        }
        Workload::EmptyRtt => {
            let mut warm = target.warm.borrow_mut();
            if warm.is_none() {
                let conn = target.open("empty_rtt", false)?;
                create(&conn)?;
                *warm = Some(conn);
            }
            let conn = warm
                .as_ref()
                .ok_or_else(|| BenchError::Other("no connection".into()))?;
            timed(target, || {
                conn.execute("INSERT INTO t(b) VALUES (x'01')", [])
                    .map_err(sql_err)?;
                Ok(())
            })
        }
        Workload::SmallTxns => {
            let conn = target.open(&fresh("db"), false)?;
            create(&conn)?;
            let mut stmt = conn
                .prepare("INSERT INTO t(b) VALUES (?)")
                .map_err(sql_err)?;
            let payload = blob(rng, 100);
            timed(target, || {
                for _ in 0..s.small_txns {
                    stmt.execute([&payload]).map_err(sql_err)?;
                }
                Ok(())
            })
        }
        Workload::ColdOpenPoint | Workload::ColdOpenScan => {
            let rows = (s.big_db_mib << 20) / 4096;
            let key = rng.usize(1..=rows);
            target.clear_engine_caches();
            timed(target, || {
                let conn = target.open("big", false)?;
                if w == Workload::ColdOpenPoint {
                    let n: i64 = conn
                        .query_row("SELECT length(b) FROM t WHERE id = ?", [key as i64], |r| {
                            r.get(0)
                        })
                        .map_err(sql_err)?;
                    if n != 4000 {
                        return Err(BenchError::Other(format!("row {key} has {n} bytes")));
                    }
                } else {
                    let n: i64 = conn
                        .query_row("SELECT sum(length(b)) FROM t", [], |r| r.get(0))
                        .map_err(sql_err)?;
                    if n != rows as i64 * 4000 {
                        return Err(BenchError::Other(format!("scan read {n} bytes")));
                    }
                }
                Ok(())
            })
        }
        Workload::PointReadsCached | Workload::PointReadsUncached => {
            let small = w == Workload::PointReadsUncached;
            let conn = target.open("big", small)?;
            let rows = (s.big_db_mib << 20) / 4096;
            let mut stmt = conn
                .prepare("SELECT length(b) FROM t WHERE id = ?")
                .map_err(sql_err)?;
            if !small {
                // Warm: the database fits the cache.
                let _: i64 = conn
                    .query_row("SELECT sum(length(b)) FROM t", [], |r| r.get(0))
                    .map_err(sql_err)?;
            }
            let keys: Vec<i64> = (0..s.point_reads)
                .map(|_| rng.i64(1..=rows as i64))
                .collect();
            timed(target, || {
                for k in keys {
                    let _: i64 = stmt.query_row([k], |r| r.get(0)).map_err(sql_err)?;
                }
                Ok(())
            })
        }
    }
}

/// Progress callback: (done, total, what).
pub type Progress<'a> = &'a dyn Fn(usize, usize, &str);

/// Run the benchmark.
pub fn run(config: &BenchConfig, progress: Progress<'_>) -> Result<Vec<Measurement>, BenchError> {
    let s = scale(config);
    std::fs::create_dir_all(&config.dir)?;
    let mut systems: Vec<(SystemId, Target)> = Vec::new();
    for (id, name, wal) in [
        (SystemId::SqliteWal, "sqlite_wal", true),
        (SystemId::SqliteDelete, "sqlite_delete", false),
    ] {
        let dir = config.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        systems.push((id, Target::new(Kind::Sqlite { dir, wal })));
    }
    systems.push((
        SystemId::KvliteEmbedded,
        local(Kv::open_embedded(&config.dir.join("kvlite_embedded"))?)?,
    ));
    let (addr, _server, server_engine) =
        start_server(Kv::open_embedded(&config.dir.join("kvlite_server"))?)?;
    let remote = Arc::new(
        RemoteTransport::connect(
            &format!("ws://{addr}"),
            None,
            RemoteOptions {
                added_latency: config.latency,
                ..RemoteOptions::default()
            },
        )
        .map_err(|e| BenchError::Other(e.to_string()))?,
    );
    let counter = remote.clone();
    systems.push((
        SystemId::KvliteServer,
        kvlite_target(
            remote,
            Box::new(move || counter.round_trips()),
            server_engine,
            None,
        )?,
    ));
    if let Some(url) = &config.postgres_url {
        let table = format!("kvlite_bench_{}", std::process::id());
        systems.push((
            SystemId::KvlitePostgres,
            local(Kv::connect_postgres(url, &table)?)?,
        ));
    }
    if config.workloads.iter().any(|w| w.runs_on_v1()) {
        systems.push((
            SystemId::KvliteV1,
            v1_target(Kv::open_embedded(&config.dir.join("kvlite_v1"))?)?,
        ));
    }

    let needs_big = config.workloads.iter().any(|w| {
        matches!(
            w,
            Workload::ColdOpenPoint
                | Workload::ColdOpenScan
                | Workload::PointReadsCached
                | Workload::PointReadsUncached
        )
    });
    let mut rng = fastrand::Rng::with_seed(2026);
    if needs_big {
        for (i, (id, target)) in systems
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| *id != SystemId::KvliteV1)
        {
            progress(
                i,
                systems.len(),
                &format!("building a {} MiB database on {}", s.big_db_mib, id.id()),
            );
            let conn = target.open("big", false)?;
            build_big(&conn, s.big_db_mib, &mut rng)?;
            drop(conn);
            target.settle(Some("big"))?;
        }
    }

    let mut out = Vec::new();
    let total = config.workloads.len() * systems.len();
    let mut done = 0;
    for &w in &config.workloads {
        let runs = if w == Workload::EmptyRtt {
            s.rtt_runs
        } else if w == Workload::Txn256Mib {
            s.runs.min(3)
        } else {
            s.runs
        };
        // Per system: its durations, round trips (engine and store) and
        // bytes written.
        let mut acc: Vec<Acc> = vec![Acc::default(); systems.len()];
        progress(done, total, w.id());
        for run in 0..runs {
            // Rotate the order every run so drift hits every system alike.
            for k in 0..systems.len() {
                let i = (k + run) % systems.len();
                let (Some((id, target)), Some(acc)) = (systems.get(i), acc.get_mut(i)) else {
                    continue;
                };
                if *id == SystemId::KvliteV1 && !w.runs_on_v1() {
                    continue;
                }
                progress(
                    done,
                    total,
                    &format!("{} on {} (run {}/{runs})", w.id(), id.id(), run + 1),
                );
                let r = run_once(target, w, &s, run, &mut rng)?;
                acc.samples.push(r.elapsed);
                acc.trips.extend(r.trips);
                acc.store_trips.extend(r.store_trips);
                if *id != SystemId::KvlitePostgres {
                    acc.written.push(r.written);
                }
            }
        }
        let mut rows: Vec<Measurement> = systems
            .iter()
            .zip(acc)
            .filter(|(_, acc)| !acc.samples.is_empty())
            .map(|((id, _), acc)| Measurement {
                workload: w,
                system: *id,
                summary: Summary::of(&acc.samples),
                round_trips: median_of(acc.trips),
                store_round_trips: median_of(acc.store_trips),
                bytes_written: median_of(acc.written),
                ratio_to_best_sqlite: None,
                ratio_v1_to_v2: None,
            })
            .collect();
        set_ratios(&mut rows);
        done += systems.len();
        out.extend(rows);
        // What this workload left to compact must not run into the next
        // one's timings.
        for (id, target) in &systems {
            progress(
                done,
                total,
                &format!("compacting what {} left on {}", w.id(), id.id()),
            );
            target.settle(None)?;
        }
    }
    progress(total, total, "done");
    Ok(out)
}

/// One system's samples of one workload.
#[derive(Clone, Default)]
struct Acc {
    samples: Vec<Duration>,
    trips: Vec<u64>,
    store_trips: Vec<u64>,
    written: Vec<u64>,
}

fn median_of(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Ratios of one workload's rows: to the better plain SQLite mode, and v1
/// to v2 on the same store.
fn set_ratios(rows: &mut [Measurement]) {
    let best = rows
        .iter()
        .filter(|m| m.system.is_sqlite())
        .map(|m| m.summary.median)
        .min()
        .unwrap_or_default();
    let v2 = rows
        .iter()
        .find(|m| m.system == SystemId::KvliteEmbedded)
        .map(|m| m.summary.median);
    for m in rows.iter_mut() {
        m.ratio_to_best_sqlite =
            Some(m.summary.median.as_secs_f64() / best.as_secs_f64().max(1e-9));
        if m.system == SystemId::KvliteV1 {
            m.ratio_v1_to_v2 =
                v2.map(|v2| m.summary.median.as_secs_f64() / v2.as_secs_f64().max(1e-9));
        }
    }
}

/// The suite run several times (`--repeat`), as one set of rows: each
/// row's median, min and max are over the passes' medians (so its spread
/// is the drift between passes), its runs the total, its round trips and
/// bytes the median pass's.
pub fn merge_passes(passes: &[Vec<Measurement>]) -> Vec<Measurement> {
    let first = match passes {
        [] => return Vec::new(),
        [only] => return only.clone(),
        [first, ..] => first,
    };
    let mut out: Vec<Measurement> = Vec::new();
    for m in first {
        let same: Vec<&Measurement> = passes
            .iter()
            .filter_map(|p| {
                p.iter()
                    .find(|x| x.workload == m.workload && x.system == m.system)
            })
            .collect();
        let medians: Vec<Duration> = same.iter().map(|x| x.summary.median).collect();
        let mut summary = Summary::of(&medians);
        summary.runs = same.iter().map(|x| x.summary.runs).sum();
        out.push(Measurement {
            workload: m.workload,
            system: m.system,
            summary,
            round_trips: median_of(same.iter().filter_map(|x| x.round_trips).collect()),
            store_round_trips: median_of(same.iter().filter_map(|x| x.store_round_trips).collect()),
            bytes_written: median_of(same.iter().filter_map(|x| x.bytes_written).collect()),
            ratio_to_best_sqlite: None,
            ratio_v1_to_v2: None,
        });
    }
    let workloads: Vec<Workload> = out.iter().map(|m| m.workload).collect();
    for w in workloads {
        let mut rows: Vec<Measurement> = out.iter().filter(|m| m.workload == w).cloned().collect();
        set_ratios(&mut rows);
        for r in rows {
            if let Some(m) = out
                .iter_mut()
                .find(|m| m.workload == r.workload && m.system == r.system)
            {
                *m = r;
            }
        }
    }
    out
}

/// A readable table.
pub fn render_table(rows: &[Measurement]) -> String {
    let mut s = format!(
        "{:<22} {:<18} {:>4} {:>11} {:>11} {:>11} {:>9} {:>7} {:>8} {:>12} {:>7}\n",
        "workload",
        "system",
        "runs",
        "median ms",
        "min ms",
        "max ms",
        "vs sqlite",
        "trips",
        "store RT",
        "written B",
        "v1/v2"
    );
    for m in rows {
        s.push_str(&format!(
            "{:<22} {:<18} {:>4} {:>11.3} {:>11.3} {:>11.3} {:>8.2}x {:>7} {:>8} {:>12} {:>7}\n",
            m.workload.id(),
            m.system.id(),
            m.summary.runs,
            crate::stats::ms(m.summary.median),
            crate::stats::ms(m.summary.min),
            crate::stats::ms(m.summary.max),
            m.ratio_to_best_sqlite.unwrap_or(f64::NAN),
            m.round_trips.map_or("-".to_string(), |t| t.to_string()),
            m.store_round_trips
                .map_or("-".to_string(), |t| t.to_string()),
            m.bytes_written.map_or("-".to_string(), |b| b.to_string()),
            m.ratio_v1_to_v2
                .map_or("-".to_string(), |r| format!("{r:.1}x")),
        ));
    }
    s
}

/// One line per measurement whose runs spread wider than
/// [`crate::stats::WIDE_SPREAD`] (max/min): its ratio is not to be trusted.
pub fn spread_warnings(rows: &[Measurement]) -> Vec<String> {
    rows.iter()
        .filter(|m| m.summary.is_wide())
        .map(|m| {
            format!(
                "{} on {}: runs spread {:.1}x ({:.3}..{:.3} ms); rerun or add --runs",
                m.workload.id(),
                m.system.id(),
                m.summary.spread(),
                crate::stats::ms(m.summary.min),
                crate::stats::ms(m.summary.max),
            )
        })
        .collect()
}

/// One JSON object per line.
pub fn render_json(rows: &[Measurement]) -> String {
    let mut s = String::new();
    for m in rows {
        let line = serde_json::json!({
            "workload": m.workload.id(),
            "system": m.system.id(),
            "runs": m.summary.runs,
            "median_ms": crate::stats::ms(m.summary.median),
            "min_ms": crate::stats::ms(m.summary.min),
            "max_ms": crate::stats::ms(m.summary.max),
            "ratio_to_best_sqlite": m.ratio_to_best_sqlite,
            "round_trips": m.round_trips,
            "store_round_trips": m.store_round_trips,
            "bytes_written": m.bytes_written,
            "ratio_v1_to_v2": m.ratio_v1_to_v2,
        });
        s.push_str(&line.to_string());
        s.push('\n');
    }
    s
}

/// Where the bench writes its scratch data when not told.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join(format!("kvlite-bench-{}", std::process::id()))
}

pub fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
