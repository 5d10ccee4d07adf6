//! The legacy v1 layout and the v1 → v2 migration, on the memory, embedded
//! and PostgreSQL stores: SQLite on v1 files (the v1 VFS), migration of many
//! shapes of database, hot journals and WALs left by writers cut off at
//! every write and killed with `kill -9`, migrations killed at every step,
//! leases, races, and every rejection with its typed error and the v1 data
//! untouched.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Backend, Store, engine_with};
use kvlite_api::{V1File, V1Files};
use kvlite_engine::metrics::MigrationPhase;
use kvlite_engine::{
    CorruptionKind, Engine, EngineConfig, Error, InvalidKind, Layout, LocalTransport,
    MigrateOptions, MigrationConfig, MigrationOutcome, MigrationStep, Origin, Preload, V1Store,
};
use kvlite_kv::{Kv, KvRead, ScanOptions};
use kvlite_testkit::sql::dump;
use kvlite_vfs::{V1Vfs, Vfs, VfsConfig};
use rusqlite::Connection;

fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn quick_config() -> EngineConfig {
    EngineConfig {
        migration: MigrationConfig {
            lease: Duration::from_millis(400),
            wait: Duration::from_secs(120),
            poll: Duration::from_millis(10),
        },
        ..EngineConfig::default()
    }
}

/// An engine with its v1 VFS (over the store's v1 files) and its v2 VFS.
struct Env {
    engine: Arc<Engine>,
    v1: V1Vfs,
    v2: Vfs,
}

impl Env {
    fn new(kv: Kv, config: EngineConfig) -> Env {
        let engine = engine_with(kv, config);
        Env::on(engine)
    }

    fn on(engine: Arc<Engine>) -> Env {
        let v1 = V1Vfs::register(&unique("v1"), Arc::new(engine.v1_files())).expect("v1 vfs");
        let v2 = Vfs::register(
            &unique("v2"),
            Arc::new(LocalTransport::new(engine.clone())),
            VfsConfig::default(),
        )
        .expect("v2 vfs");
        Env { engine, v1, v2 }
    }

    fn v1_sql(&self, db: &str, sql: &str) {
        let conn = self.v1.open(db).expect("v1 open");
        conn.execute_batch(sql).expect("v1 sql");
    }

    /// Logical dump and integrity of the database opened as v2 (migrating
    /// it first if it is v1).
    fn v2_dump(&self, db: &str) -> Vec<String> {
        let conn = self.v2.open(db).expect("v2 open");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(ok, "ok", "{db}");
        dump(&conn)
    }
}

/// Every key of the v1 key space with its value.
fn v1_keys(kv: &Kv) -> Vec<(Vec<u8>, Vec<u8>)> {
    kv.read(|txn| txn.scan(&[0x02], &[0x03], ScanOptions::ALL))
        .expect("scan v1")
}

/// Every key of the v2 key space (directory, META, data, tombstones).
fn v2_keys(kv: &Kv) -> Vec<Vec<u8>> {
    kv.read(|txn| txn.scan(&[0x00], &[0x02], ScanOptions::ALL))
        .expect("scan v2")
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.as_slice() != kvlite_engine::keys::NEXT_DB_ID)
        .collect()
}

fn assert_store_clean(engine: &Engine) {
    let audit = engine.audit_store().expect("audit store");
    assert!(audit.is_clean(), "{audit:#?}");
    assert_eq!(audit.deleted_not_swept, 0, "{audit:#?}");
    assert_eq!(engine.migrations_in_process(), 0);
}

fn plain_sqlite(dir: &std::path::Path, name: &str, setup: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let conn = Connection::open(&path).expect("plain sqlite");
    conn.execute_batch(setup).expect("setup");
    drop(conn);
    path
}

fn plain_dump(path: &std::path::Path) -> Vec<String> {
    dump(&Connection::open(path).expect("open plain"))
}

fn import_file(engine: &Engine, db: &str, path: &std::path::Path) -> u64 {
    let mut f = std::fs::File::open(path).expect("file");
    engine.v1_files().import(db, &mut f).expect("import v1")
}

// ---------- the v1 VFS itself ----------

/// SQLite on v1 files behaves as SQLite on a local file: the random
/// differential workload (transactions, rollbacks, VACUUM, blobs) through
/// the v1 VFS, compared step by step with plain SQLite.
#[test]
fn v1_vfs_matches_plain_sqlite() {
    let env = Env::new(Kv::memory(), EngineConfig::default());
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    kvlite_testkit::sql::differential(seed, 300, || env.v1.open("diff").expect("open"));
    assert_eq!(env.v1.open_databases(), 0);
    let files = env.engine.v1_files().inventory("diff").expect("inventory");
    assert!(files.main.unwrap() > 0);
    assert_eq!(
        files.journal, None,
        "a finished transaction deletes its journal"
    );
}

/// The v1 files are the bytes SQLite wrote: chunked at 4 KiB, a file
/// record with version 1 and the size, readable back byte for byte.
#[test]
fn v1_files_hold_sqlites_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = plain_sqlite(
        dir.path(),
        "a.db",
        "PRAGMA page_size=1024; CREATE TABLE t(x); INSERT INTO t SELECT randomblob(3000) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 20) SELECT value FROM s);",
    );
    let bytes = std::fs::read(&path).unwrap();
    let kv = Kv::memory();
    let store = V1Store::new(kv.clone());
    let mut r = bytes.as_slice();
    assert_eq!(store.import("a", &mut r).unwrap(), bytes.len() as u64);
    let mut back = vec![0u8; bytes.len() + 100];
    assert_eq!(
        store.read("a", V1File::Main, 0, &mut back).unwrap(),
        bytes.len()
    );
    assert_eq!(&back[..bytes.len()], &bytes[..]);
    assert!(back[bytes.len()..].iter().all(|&b| b == 0));
    let keys = v1_keys(&kv);
    let chunks = keys.iter().filter(|(k, _)| k[1] == b'c').count();
    assert_eq!(chunks, bytes.len().div_ceil(4096));
    let record = keys.iter().find(|(k, _)| k[1] == b'f').unwrap();
    assert_eq!(&record.1[..2], &1u16.to_le_bytes());
    assert_eq!(&record.1[2..], &(bytes.len() as u64).to_le_bytes());
    assert!(keys.iter().all(|(_, v)| v.len() <= 4096));
    // Writes across chunk boundaries and past the end.
    store.write("a", V1File::Wal, 4000, &[7u8; 200]).unwrap();
    assert_eq!(store.size("a", V1File::Wal).unwrap(), Some(4200));
    let mut b = [1u8; 4200];
    store.read("a", V1File::Wal, 0, &mut b).unwrap();
    assert!(b[..4000].iter().all(|&x| x == 0) && b[4000..].iter().all(|&x| x == 7));
    store.truncate("a", V1File::Wal, 4050).unwrap();
    assert_eq!(store.size("a", V1File::Wal).unwrap(), Some(4050));
    store.delete("a", V1File::Wal).unwrap();
    assert_eq!(store.size("a", V1File::Wal).unwrap(), None);
    // Importing over an existing database is refused.
    let mut r = bytes.as_slice();
    assert_eq!(
        store.import("a", &mut r).unwrap_err().invalid_kind(),
        Some(InvalidKind::Layout)
    );
}

// ---------- happy path: shapes ----------

fn shapes_on(backend: Backend) {
    let store = Store::new(backend);
    let env = Env::new(store.kv(), EngineConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let big_rows = 100;
    let shapes: Vec<(&str, String)> = vec![
        ("one_page", "PRAGMA user_version = 7;".into()),
        (
            "indexes_blobs",
            "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, body BLOB);
             CREATE INDEX t_name ON t(name);
             CREATE TABLE u(a, b, UNIQUE(a, b));
             INSERT INTO t(name, body) SELECT 'n' || value, randomblob(value * 97 % 30000)
               FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 300) SELECT value FROM s);
             INSERT INTO u SELECT value % 17, value FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 2000) SELECT value FROM s);
             CREATE VIEW v AS SELECT name FROM t WHERE id < 10;
             CREATE TRIGGER tr AFTER INSERT ON u BEGIN SELECT 1; END;"
                .into(),
        ),
        (
            "big",
            // ~100 MiB of incompressible blobs.
            format!(
                "CREATE TABLE b(x BLOB); INSERT INTO b SELECT randomblob(1048576) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < {big_rows}) SELECT value FROM s);"
            ),
        ),
        (
            "page_1024",
            "PRAGMA page_size = 1024; CREATE TABLE t(x TEXT); CREATE INDEX tx ON t(x);
             INSERT INTO t SELECT hex(randomblob(200)) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 500) SELECT value FROM s);"
                .into(),
        ),
        (
            "page_65536",
            "PRAGMA page_size = 65536; CREATE TABLE t(x); INSERT INTO t SELECT randomblob(5000) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 40) SELECT value FROM s);"
                .into(),
        ),
        (
            "wal_mode",
            "PRAGMA journal_mode = WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);".into(),
        ),
    ];
    for (name, setup) in &shapes {
        let path = plain_sqlite(dir.path(), name, setup);
        let expected = plain_dump(&path);
        import_file(&env.engine, name, &path);
        assert_eq!(env.engine.layout(name).unwrap(), Some(Layout::V1));
        let before = v1_keys(&store.kv());
        let report = env
            .engine
            .migrate_v1(name, &MigrateOptions { dry_run: true })
            .expect("dry run");
        assert_eq!(report.outcome, MigrationOutcome::WouldMigrate, "{name}");
        assert_eq!(v1_keys(&store.kv()), before, "a dry run changes nothing");
        assert_eq!(env.engine.layout(name).unwrap(), Some(Layout::V1));
        if *name == "big" {
            // Streamed: memory bounded by the read-ahead, not the size.
            let r = env
                .engine
                .migrate_v1(name, &MigrateOptions::default())
                .unwrap();
            assert_eq!(r.outcome, MigrationOutcome::Migrated);
            assert!(r.pages > 25_000, "{r:?}");
            assert!(r.overlay_peak_bytes <= 17 << 20, "{r:?}");
            println!(
                "{backend:?}: 100 MiB migrated, overlay peak {} KiB",
                r.overlay_peak_bytes >> 10
            );
        }
        // Opening migrates.
        assert_eq!(env.v2_dump(name), expected, "{name} on {backend:?}");
        assert_eq!(env.engine.layout(name).unwrap(), Some(Layout::V2));
        let stat = env.engine.stat(name).unwrap();
        assert_eq!(stat.origin, Origin::MigratedFromV1);
        common::assert_clean(&env.engine, name);
        // The v1 data stays, untouched and read-only.
        assert_eq!(v1_keys(&store.kv()), before, "{name}");
        let refused = env.engine.v1_files().write(name, V1File::Main, 0, b"x");
        assert_eq!(
            refused.unwrap_err().invalid_kind(),
            Some(InvalidKind::V1ReadOnly)
        );
        // Migrating again is a no-op.
        let again = env
            .engine
            .migrate_v1(name, &MigrateOptions::default())
            .unwrap();
        assert_eq!(again.outcome, MigrationOutcome::AlreadyMigrated);
    }
    // An empty v1 file (created, never written).
    env.engine
        .v1_files()
        .import("empty", &mut std::io::empty())
        .unwrap();
    assert_eq!(env.v2_dump("empty"), Vec::<String>::new());
    assert_eq!(
        env.engine.stat("empty").unwrap().origin,
        Origin::MigratedFromV1
    );
    // The v1 shapes made by SQLite on the v1 VFS itself.
    env.v1_sql(
        "via_vfs",
        "CREATE TABLE t(a, b); INSERT INTO t SELECT value, randomblob(700) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 50) SELECT value FROM s);",
    );
    let expected = dump(&env.v1.open("via_vfs").unwrap());
    assert_eq!(env.v2_dump("via_vfs"), expected);
    let m = &env.engine.metrics().migration;
    assert_eq!(m.successes.get(), shapes.len() as u64 + 2);
    assert_eq!(m.attempts.get(), m.successes.get());
    assert!(m.pages_copied.get() > 25 * 256);
    // Purging v1 data: only once migrated; the v2 data is unaffected.
    let keep = env.v2_dump("indexes_blobs");
    assert!(env.engine.purge_v1("indexes_blobs").unwrap() > 0);
    assert!(
        v1_keys(&store.kv())
            .iter()
            .all(|(k, _)| !k.windows(14).any(|w| w == b"indexes_blobs\0"))
    );
    assert_eq!(env.v2_dump("indexes_blobs"), keep);
    assert_store_clean(&env.engine);
}

#[test]
fn shapes_migrate_memory() {
    shapes_on(Backend::Memory);
}

#[test]
fn shapes_migrate_embedded() {
    shapes_on(Backend::Embedded);
}

#[test]
fn shapes_migrate_postgres() {
    shapes_on(Backend::Postgres);
}

// ---------- hot journals and WALs, every cut point ----------

/// v1 files whose store "dies" after a number of writes: every later
/// write fails, as if the writer had been killed right there (what it wrote
/// stays; nothing after it lands).
struct Dying {
    inner: V1Store,
    writes_left: AtomicI64,
}

impl Dying {
    fn spend(&self) -> kvlite_api::Result<()> {
        if self.writes_left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(Error::Unavailable("the writer died".into()));
        }
        Ok(())
    }
    fn died(&self) -> bool {
        self.writes_left.load(Ordering::SeqCst) < 0
    }
}

impl V1Files for Dying {
    fn read(&self, db: &str, f: V1File, o: u64, b: &mut [u8]) -> kvlite_api::Result<usize> {
        self.inner.read(db, f, o, b)
    }
    fn write(&self, db: &str, f: V1File, o: u64, d: &[u8]) -> kvlite_api::Result<()> {
        self.spend()?;
        self.inner.write(db, f, o, d)
    }
    fn truncate(&self, db: &str, f: V1File, s: u64) -> kvlite_api::Result<()> {
        self.spend()?;
        self.inner.truncate(db, f, s)
    }
    fn size(&self, db: &str, f: V1File) -> kvlite_api::Result<Option<u64>> {
        self.inner.size(db, f)
    }
    fn create(&self, db: &str, f: V1File) -> kvlite_api::Result<()> {
        self.spend()?;
        self.inner.create(db, f)
    }
    fn delete(&self, db: &str, f: V1File) -> kvlite_api::Result<()> {
        self.spend()?;
        self.inner.delete(db, f)
    }
}

/// Transaction `v`: every row set to `v`, 40 more inserted, enough pages
/// for a multi-chunk journal or many frames. Deterministic, so plain SQLite
/// can say what the state before and after it is.
fn txn_sql(v: u32) -> String {
    format!(
        "BEGIN; UPDATE t SET v = {v}, pad = printf('%.300d', id * {v}); \
         INSERT INTO t(v, pad) SELECT {v}, printf('%.300d', value) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 40) SELECT value FROM s); COMMIT;"
    )
}

const SETUP_SQL: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, v, pad);
     INSERT INTO t(v, pad) SELECT 0, printf('%.300d', value) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 40) SELECT value FROM s);";

fn cut_points(wal: bool) {
    let kv = Kv::memory();
    let env = Env::new(kv.clone(), EngineConfig::default());
    let mut outcomes = (0, 0);
    let mut n = 0;
    loop {
        let db = format!("cut{n}");
        let dying = Arc::new(Dying {
            inner: env.engine.v1_files(),
            writes_left: AtomicI64::new(i64::MAX),
        });
        let vfs = V1Vfs::register(&unique("dying"), dying.clone()).unwrap();
        let conn = vfs.open(&db).unwrap();
        let mode = if wal { "WAL" } else { "DELETE" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = {mode}; PRAGMA wal_autocheckpoint = 0; {SETUP_SQL}"
        ))
        .unwrap();
        let reference = Connection::open_in_memory().unwrap();
        reference.execute_batch(SETUP_SQL).unwrap();
        if wal {
            // Committed frames the cut transaction's must not hide.
            conn.execute_batch(&txn_sql(1)).unwrap();
            reference.execute_batch(&txn_sql(1)).unwrap();
        }
        let before = dump(&reference);
        assert_eq!(dump(&conn), before);
        reference.execute_batch(&txn_sql(2)).unwrap();
        let after = dump(&reference);
        dying.writes_left.store(n, Ordering::SeqCst);
        let result = conn.execute_batch(&txn_sql(2));
        drop(conn);
        let died = dying.died();
        drop(vfs);
        let files = env.engine.v1_files().inventory(&db).unwrap();
        let migrated = env.v2_dump(&db);
        if !died {
            assert!(result.is_ok());
            assert_eq!(migrated, after, "{db}: the transaction completed");
            break;
        }
        // Before the commit point (the journal's deletion, the commit
        // frame) the old state, after it the new one; never a mix.
        if migrated == before {
            outcomes.0 += 1;
        } else {
            assert_eq!(migrated, after, "{db}: a torn state ({files:?})");
            outcomes.1 += 1;
        }
        if result.is_ok() {
            assert_eq!(
                migrated, after,
                "{db}: a commit SQLite reported must survive"
            );
        }
        n += 1;
    }
    println!("wal={wal}: {n} cut points, {outcomes:?} (old, new)");
    assert!(n > 20, "the transaction makes many writes");
    // The commit point is the last write (the journal's deletion, the
    // commit frame): a cut anywhere before leaves the old state.
    assert!(outcomes.0 > 20, "{outcomes:?}");
    let m = &env.engine.metrics().migration;
    if wal {
        assert!(m.wals_checkpointed.get() > 0);
    } else {
        assert!(m.journals_recovered.get() > 0);
    }
    assert_eq!(m.failures_in(MigrationPhase::Recover), 0);
    assert_store_clean(&env.engine);
}

#[test]
fn hot_journal_cut_at_every_write() {
    cut_points(false);
}

#[test]
fn wal_cut_at_every_write() {
    cut_points(true);
}

// ---------- child processes ----------

const CHILD_ENV: &str = "KVLITE_V1_CHILD";
const STORE_ENV: &str = "KVLITE_V1_STORE";

/// Where a child finds the store: an embedded directory or a PostgreSQL
/// url and table.
fn store_spec(store: &Store, dir: Option<&std::path::Path>) -> String {
    match (store.backend, dir) {
        (Backend::Embedded, Some(d)) => format!("embedded {}", d.display()),
        (Backend::Postgres, _) => {
            let (url, table) = store.pg().expect("pg");
            format!("postgres {url} {table}")
        }
        other => panic!("no child store for {other:?}"),
    }
}

fn open_spec(spec: &str) -> Kv {
    let parts: Vec<&str> = spec.splitn(3, ' ').collect();
    match parts.as_slice() {
        ["embedded", dir] => Kv::open_embedded(std::path::Path::new(dir)).expect("embedded"),
        ["postgres", url, table] => Kv::connect_postgres(url, table).expect("postgres"),
        _ => panic!("bad store spec {spec}"),
    }
}

fn spawn_child(role: &str, spec: &str) -> kvlite_testkit::KillOnDrop {
    let child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "v1_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .env(STORE_ENV, spec)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    kvlite_testkit::KillOnDrop(child)
}

fn say(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{line}").unwrap();
    out.flush().unwrap();
}

/// The child process of these tests (run by them with `--ignored`).
#[test]
#[ignore]
fn v1_child() {
    let (Ok(role), Ok(spec)) = (std::env::var(CHILD_ENV), std::env::var(STORE_ENV)) else {
        panic!("run by the v1 tests, with {CHILD_ENV} and {STORE_ENV} set");
    };
    let kv = open_spec(&spec);
    let words: Vec<&str> = role.split(' ').collect();
    match words.as_slice() {
        // A v1 writer committing transaction after transaction until killed.
        ["writer", db, mode] => {
            let engine = engine_with(kv, EngineConfig::default());
            let vfs = V1Vfs::register(&unique("w"), Arc::new(engine.v1_files())).unwrap();
            let conn = vfs.open(db).unwrap();
            conn.execute_batch(&format!(
                "PRAGMA journal_mode = {mode}; PRAGMA wal_autocheckpoint = 0; {SETUP_SQL}"
            ))
            .unwrap();
            say("COMMITTED 0".into());
            for v in 1.. {
                conn.execute_batch(&txn_sql(v)).unwrap();
                say(format!("COMMITTED {v}"));
            }
        }
        // A migration that stops (to be killed) at a step.
        ["migrate", db, step] => {
            let config = EngineConfig {
                fast_path_limit: 64 << 10,
                ..quick_config()
            };
            let engine = engine_with(kv, config);
            let step = step.to_string();
            let r = engine.migrate_v1_with(db, &MigrateOptions::default(), &|s| {
                let name = match s {
                    MigrationStep::LeaseTaken => "lease",
                    MigrationStep::Recovered => "recovered",
                    MigrationStep::PartWritten(_) => "part",
                    MigrationStep::BeforeSwitch => "before_switch",
                    MigrationStep::AfterSwitch => "after_switch",
                };
                if name == step {
                    say(format!("AT {name}"));
                    loop {
                        std::thread::sleep(Duration::from_secs(60));
                    }
                }
            });
            r.expect("migrate");
            say("DONE".into());
        }
        // An opener racing others: reports the attempts it made and what
        // it opened (opening takes the database over, so the data is read
        // by the parent once every opener is done).
        ["open", db] => {
            let engine = engine_with(kv, quick_config());
            let o = engine.open(db, &Preload::default()).expect("open");
            let attempts = engine.metrics().migration.attempts.get();
            say(format!(
                "OPENED {attempts} {} {}",
                o.size_pages, o.head_txid
            ));
        }
        _ => panic!("unknown role {role}"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Read the child's lines until `stop` says so; returns the last line read.
fn read_until(
    lines: &mut std::io::Lines<BufReader<std::process::ChildStdout>>,
    mut stop: impl FnMut(&str) -> bool,
) -> String {
    for line in lines.by_ref() {
        let line = line.expect("child output");
        if stop(&line) {
            return line;
        }
    }
    panic!("the child ended early");
}

/// Which `v` every row of a migrated writer's table holds.
fn writer_state(d: &[String]) -> (u32, usize) {
    let rows: Vec<&String> = d.iter().filter(|r| r.starts_with("t: ")).collect();
    let vs: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| {
            let v = r.split(',').nth(2).expect("v column");
            v.strip_prefix('i').unwrap_or(v)
        })
        .collect();
    assert_eq!(vs.len(), 1, "a torn state: {vs:?}");
    (vs.iter().next().unwrap().parse().unwrap(), rows.len())
}

fn killed_writers_on(backend: Backend) {
    let mut store = Store::new(backend);
    let dir = match backend {
        Backend::Embedded => Some(store.dir().to_path_buf()),
        _ => None,
    };
    let spec = store_spec(&store, dir.as_deref());
    let mut mid_transaction = 0;
    for (round, mode) in ["DELETE", "WAL"].iter().cycle().take(8).enumerate() {
        let db = format!("killed{round}");
        // The embedded store has one process at a time.
        let parent_kv = (backend == Backend::Postgres).then(|| store.kv());
        if backend == Backend::Embedded {
            store.release();
        }
        let mut child = spawn_child(&format!("writer {db} {mode}"), &spec);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 2 + fastrand::u32(0..6);
        let last = read_until(&mut lines, |l| {
            l.strip_prefix("COMMITTED ")
                .is_some_and(|v| v.parse::<u32>().unwrap() >= target)
        });
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..30)));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked: u32 = last.strip_prefix("COMMITTED ").unwrap().parse().unwrap();
        // What the child printed after `last` (not read yet) was also acked.
        let mut acked_all = acked;
        for l in lines.map_while(Result::ok) {
            if let Some(v) = l.strip_prefix("COMMITTED ") {
                acked_all = v.parse().unwrap();
            }
        }
        drop(parent_kv);
        if backend == Backend::Embedded {
            store.reacquire();
        }
        let env = Env::new(store.kv(), quick_config());
        let files = env.engine.v1_files().inventory(&db).unwrap();
        let d = env.v2_dump(&db);
        let (v, rows) = writer_state(&d);
        assert!(
            v == acked_all || v == acked_all + 1,
            "{db} ({mode}): migrated state {v}, last acknowledged {acked_all} ({files:?})"
        );
        assert_eq!(rows, 40 * (v as usize + 1), "{db}: a torn state");
        let m = &env.engine.metrics().migration;
        let r = (m.journals_recovered.get(), m.wals_checkpointed.get());
        println!(
            "{db} ({mode}): acked {acked_all}, migrated {v}, recovered {r:?}, files {files:?}"
        );
        if *mode == "WAL" {
            // Autocheckpoint is off: frames are always left behind.
            assert_eq!(r, (0, 1), "{db}");
        } else if files.journal.is_some() {
            // Killed inside a transaction: the journal is hot (rolled back)
            // if the main file was being written, else SQLite ignores it.
            mid_transaction += 1;
        }
        assert_store_clean(&env.engine);
    }
    // Most kills land inside a transaction (which writes far longer than
    // the gap between two).
    assert!(
        mid_transaction >= 1,
        "no round was killed inside a transaction"
    );
}

#[test]
fn killed_v1_writers_embedded() {
    killed_writers_on(Backend::Embedded);
}

#[test]
fn killed_v1_writers_postgres() {
    killed_writers_on(Backend::Postgres);
}

// ---------- crash during migration ----------

fn migration_killed_on(backend: Backend) {
    let mut store = Store::new(backend);
    let dir = match backend {
        Backend::Embedded => Some(store.dir().to_path_buf()),
        _ => None,
    };
    let spec = store_spec(&store, dir.as_deref());
    let tmp = tempfile::tempdir().unwrap();
    let path = plain_sqlite(
        tmp.path(),
        "src.db",
        "CREATE TABLE t(x, y); CREATE INDEX ty ON t(y);
         INSERT INTO t SELECT randomblob(900), value FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 1500) SELECT value FROM s);",
    );
    let expected = plain_dump(&path);
    for step in [
        "lease",
        "recovered",
        "part",
        "before_switch",
        "after_switch",
    ] {
        let db = format!("mk_{step}");
        {
            let env = Env::new(store.kv(), quick_config());
            import_file(&env.engine, &db, &path);
        }
        if backend == Backend::Embedded {
            store.release();
        }
        let mut child = spawn_child(&format!("migrate {db} {step}"), &spec);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        read_until(&mut lines, |l| l.starts_with("AT "));
        child.kill().unwrap();
        child.wait().unwrap();
        if backend == Backend::Embedded {
            store.reacquire();
        }
        let env = Env::new(store.kv(), quick_config());
        let layout = env.engine.layout(&db).unwrap();
        match step {
            "lease" | "recovered" => assert_eq!(layout, Some(Layout::V1), "{step}"),
            "part" | "before_switch" => assert_eq!(layout, Some(Layout::Migrating), "{step}"),
            _ => assert_eq!(layout, Some(Layout::V2), "{step}"),
        }
        // The next open finishes the job (after the dead job's lease ends).
        assert_eq!(env.v2_dump(&db), expected, "killed at {step}");
        assert_eq!(env.engine.stat(&db).unwrap().origin, Origin::MigratedFromV1);
        common::assert_clean(&env.engine, &db);
        assert_store_clean(&env.engine);
        let attempts = env.engine.metrics().migration.attempts.get();
        assert_eq!(attempts, u64::from(step != "after_switch"), "{step}");
    }
}

#[test]
fn migration_killed_at_every_step_embedded() {
    migration_killed_on(Backend::Embedded);
}

#[test]
fn migration_killed_at_every_step_postgres() {
    migration_killed_on(Backend::Postgres);
}

/// On the memory store a job that dies is one whose thread unwinds at a
/// step: its lease stays until it expires; the next open takes over.
#[test]
fn migration_abandoned_at_every_step_memory() {
    let kv = Kv::memory();
    let dir = tempfile::tempdir().unwrap();
    let path = plain_sqlite(
        dir.path(),
        "src.db",
        "CREATE TABLE t(x); INSERT INTO t SELECT randomblob(3000) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 400) SELECT value FROM s);",
    );
    let expected = plain_dump(&path);
    let steps = [
        MigrationStep::LeaseTaken,
        MigrationStep::Recovered,
        MigrationStep::PartWritten(16),
        MigrationStep::BeforeSwitch,
    ];
    for (i, step) in steps.into_iter().enumerate() {
        let db = format!("ab{i}");
        let config = EngineConfig {
            fast_path_limit: 64 << 10,
            ..quick_config()
        };
        let dying = engine_with(kv.clone(), config.clone());
        import_file(&dying, &db, &path);
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dying.migrate_v1_with(&db, &MigrateOptions::default(), &|s| {
                if s == step {
                    panic!("the job dies at {s:?}");
                }
            })
        }));
        assert!(died.is_err());
        drop(dying);
        let env = Env::new(kv.clone(), config);
        assert_eq!(env.v2_dump(&db), expected, "{step:?}");
        common::assert_clean(&env.engine, &db);
        assert_store_clean(&env.engine);
    }
}

// ---------- leases ----------

/// A live job keeps its lease however long it takes (many lease periods):
/// a second engine on the same store waits and finds it migrated.
#[test]
fn a_live_jobs_heartbeat_keeps_others_out() {
    for backend in [Backend::Memory, Backend::Postgres] {
        let store = Store::new(backend);
        let config = EngineConfig {
            fast_path_limit: 64 << 10,
            migration: MigrationConfig {
                lease: Duration::from_millis(200),
                wait: Duration::from_secs(60),
                poll: Duration::from_millis(10),
            },
            ..EngineConfig::default()
        };
        let slow = engine_with(store.kv(), config.clone());
        let other = engine_with(store.kv(), config);
        let dir = tempfile::tempdir().unwrap();
        let path = plain_sqlite(
            dir.path(),
            "s.db",
            "CREATE TABLE t(x); INSERT INTO t SELECT randomblob(2000) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 200) SELECT value FROM s);",
        );
        import_file(&slow, "slow", &path);
        let started = Arc::new(Barrier::new(2));
        let job = {
            let (slow, started) = (slow.clone(), started.clone());
            std::thread::spawn(move || {
                let first = std::sync::atomic::AtomicBool::new(true);
                slow.migrate_v1_with("slow", &MigrateOptions::default(), &|s| {
                    if matches!(s, MigrationStep::PartWritten(_))
                        && first.swap(false, Ordering::SeqCst)
                    {
                        started.wait();
                        // Ten lease periods between two parts.
                        std::thread::sleep(Duration::from_secs(2));
                    }
                })
            })
        };
        started.wait();
        let second = other
            .migrate_v1("slow", &MigrateOptions::default())
            .unwrap();
        assert_eq!(second.outcome, MigrationOutcome::AlreadyMigrated);
        let first = job.join().unwrap().unwrap();
        assert_eq!(first.outcome, MigrationOutcome::Migrated);
        assert_eq!(slow.metrics().migration.attempts.get(), 1);
        assert_eq!(other.metrics().migration.attempts.get(), 0);
        assert_eq!(dump_of(&other, "slow"), plain_dump(&path));
        assert_store_clean(&other);
    }
}

fn dump_of(engine: &Arc<Engine>, db: &str) -> Vec<String> {
    Env::on(engine.clone()).v2_dump(db)
}

/// A lease whose holder is gone is taken once it expires.
#[test]
fn a_dead_jobs_lease_expires() {
    let kv = Kv::memory();
    let engine = engine_with(kv.clone(), quick_config());
    engine
        .v1_files()
        .import("d", &mut std::io::empty())
        .unwrap();
    // A lease of a job that never beats again, valid for 300 ms more.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut lease = vec![1u8];
    lease.extend_from_slice(&7u128.to_be_bytes());
    lease.extend_from_slice(&(now + 300).to_be_bytes());
    kv.transact(|txn| {
        txn.set(&[&[0x02, b'l'][..], b"d"].concat(), &lease)?;
        Ok::<_, kvlite_kv::KvError>(())
    })
    .unwrap();
    // A live lease is not a leftover.
    assert!(engine.audit_store().unwrap().stale_leases.is_empty());
    let t = std::time::Instant::now();
    let r = engine.migrate_v1("d", &MigrateOptions::default()).unwrap();
    assert_eq!(r.outcome, MigrationOutcome::Migrated);
    // Not taken while it was valid.
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(engine.metrics().migration.attempts.get(), 1);
    assert_store_clean(&engine);
}

// ---------- races ----------

fn race_threads_on(backend: Backend) {
    let store = Store::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let path = plain_sqlite(
        dir.path(),
        "r.db",
        "CREATE TABLE t(x, y); INSERT INTO t SELECT randomblob(1000), value FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 800) SELECT value FROM s);",
    );
    let expected = plain_dump(&path);
    import_file(&engine_with(store.kv(), quick_config()), "race", &path);
    let barrier = Arc::new(Barrier::new(8));
    let engines: Vec<Arc<Engine>> = (0..8)
        .map(|_| engine_with(store.kv(), quick_config()))
        .collect();
    let threads: Vec<_> = engines
        .iter()
        .cloned()
        .map(|e| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                // An opener whose takeover another one replaced before it
                // read its first pages is fenced: it opens again.
                loop {
                    match e.open("race", &Preload::default()) {
                        Err(Error::Fenced { .. }) => continue,
                        r => break r.map(|o| o.size_pages),
                    }
                }
            })
        })
        .collect();
    let sizes: Vec<u32> = threads
        .into_iter()
        .map(|t| t.join().unwrap().expect("open"))
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
    let attempts: u64 = engines
        .iter()
        .map(|e| e.metrics().migration.attempts.get())
        .sum();
    assert_eq!(attempts, 1, "one migration");
    for e in &engines {
        assert_eq!(e.migrations_in_process(), 0);
    }
    assert_eq!(dump_of(&engines[0], "race"), expected);
    assert_store_clean(&engines[0]);
}

#[test]
fn eight_threads_race_memory() {
    race_threads_on(Backend::Memory);
}

#[test]
fn eight_threads_race_embedded() {
    race_threads_on(Backend::Embedded);
}

#[test]
fn eight_threads_race_postgres() {
    race_threads_on(Backend::Postgres);
}

/// Two processes (and this one) open the same v1 database on PostgreSQL at
/// once: one migration among them, the same data everywhere.
#[test]
fn two_processes_race_postgres() {
    let store = Store::new(Backend::Postgres);
    let spec = store_spec(&store, None);
    let dir = tempfile::tempdir().unwrap();
    let path = plain_sqlite(
        dir.path(),
        "p.db",
        "CREATE TABLE t(x); INSERT INTO t SELECT randomblob(1500) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 2000) SELECT value FROM s);",
    );
    let expected = plain_dump(&path);
    import_file(&engine_with(store.kv(), quick_config()), "prace", &path);
    let children: Vec<_> = (0..2).map(|_| spawn_child("open prace", &spec)).collect();
    let mut total = 0;
    let mut heads = Vec::new();
    for mut c in children {
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        let line = read_until(&mut lines, |l| l.starts_with("OPENED "));
        c.kill().unwrap();
        c.wait().unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        total += words[1].parse::<u64>().unwrap();
        heads.push((words[2].to_string(), words[3].to_string()));
    }
    assert_eq!(total, 1, "one migration across the processes");
    let engine = engine_with(store.kv(), quick_config());
    let stat = engine.stat("prace").unwrap();
    for h in heads {
        assert_eq!(h, (stat.size_pages.to_string(), stat.head_txid.to_string()));
    }
    assert_eq!(dump_of(&engine, "prace"), expected);
    assert_store_clean(&engine);
}

// ---------- rejections ----------

fn rejections_on(backend: Backend) {
    let store = Store::new(backend);
    let kv = store.kv();
    let env = Env::new(kv.clone(), quick_config());
    let dir = tempfile::tempdir().unwrap();
    let good = plain_sqlite(
        dir.path(),
        "g.db",
        "CREATE TABLE t(x); CREATE INDEX tx ON t(x); INSERT INTO t SELECT randomblob(600) FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 300) SELECT value FROM s);",
    );
    let bytes = std::fs::read(&good).unwrap();
    let last_chunk = (bytes.len() / 4096 - 1) as u32;
    assert!(last_chunk > 70, "past the first read-ahead run");
    let chunk_key = |db: &str, i: u32| {
        let mut k = vec![0x02, b'c'];
        k.extend_from_slice(db.as_bytes());
        k.push(0);
        k.push(0);
        k.extend_from_slice(&i.to_be_bytes());
        k
    };
    let file_key = |db: &str| {
        let mut k = vec![0x02, b'f'];
        k.extend_from_slice(db.as_bytes());
        k.push(0);
        k.push(0);
        k
    };
    let set = |k: Vec<u8>, v: Vec<u8>| {
        kv.transact(|txn| {
            txn.set(&k, &v)?;
            Ok::<_, kvlite_kv::KvError>(())
        })
        .unwrap()
    };
    let clear = |k: Vec<u8>| {
        kv.transact(|txn| {
            txn.clear(&k)?;
            Ok::<_, kvlite_kv::KvError>(())
        })
        .unwrap()
    };
    type Damage<'a> = Box<dyn Fn(&str) + 'a>;
    let cases: Vec<(&str, Damage, CorruptionKind, MigrationPhase)> = vec![
        (
            "bad_magic",
            Box::new(|db| set(chunk_key(db, 0), vec![0x42; 4096])),
            CorruptionKind::V1Header,
            MigrationPhase::Verify,
        ),
        (
            // Found by SQLite's integrity check reading it.
            "missing_chunk",
            Box::new(|db| clear(chunk_key(db, last_chunk - 1))),
            CorruptionKind::V1Chunks,
            MigrationPhase::Verify,
        ),
        (
            // Found by the header check's read-ahead.
            "oversized_chunk",
            Box::new(|db| set(chunk_key(db, 3), vec![0; 5000])),
            CorruptionKind::V1Chunks,
            MigrationPhase::Read,
        ),
        (
            "not_a_page_multiple",
            Box::new(|db| {
                let size = bytes.len() as u64 + 100;
                let last = (size / 4096) as u32;
                set(chunk_key(db, last), vec![0; (size % 4096) as usize]);
                let mut rec = 1u16.to_le_bytes().to_vec();
                rec.extend_from_slice(&size.to_le_bytes());
                set(file_key(db), rec);
            }),
            CorruptionKind::V1Size,
            MigrationPhase::Verify,
        ),
        (
            "unknown_version",
            Box::new(|db| {
                let mut rec = 2u16.to_le_bytes().to_vec();
                rec.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                set(file_key(db), rec);
            }),
            CorruptionKind::V1Version,
            MigrationPhase::Read,
        ),
        (
            "integrity",
            Box::new(|db| {
                // A b-tree page of the table overwritten with noise.
                let mut noise = vec![0u8; 4096];
                fastrand::fill(&mut noise);
                noise[0] = 0x0D;
                set(chunk_key(db, 2), noise);
            }),
            CorruptionKind::V1Integrity,
            MigrationPhase::Verify,
        ),
    ];
    for (i, (name, damage, kind, phase)) in cases.iter().enumerate() {
        let mut r = bytes.as_slice();
        env.engine.v1_files().import(name, &mut r).unwrap();
        damage(name);
        let before = v1_keys(&kv);
        let v2_before = v2_keys(&kv);
        for attempt in 0..2 {
            let err = env.engine.open(name, &Preload::default()).unwrap_err();
            match &err {
                Error::Corruption { db, kind: k, .. } => {
                    assert_eq!(k, kind, "{name}: {err}");
                    assert_eq!(db, name, "{name}: {err}");
                }
                other => panic!("{name} (attempt {attempt}): {other:?}"),
            }
            assert_eq!(v1_keys(&kv), before, "{name}: v1 data unchanged");
            assert_eq!(v2_keys(&kv), v2_before, "{name}: nothing of v2 left");
            assert_eq!(env.engine.layout(name).unwrap(), Some(Layout::V1));
        }
        assert_eq!(
            env.engine.metrics().migration.failures_in(*phase),
            cases[..=i].iter().filter(|c| c.3 == *phase).count() as u64 * 2,
            "{name} counted as a {phase:?} failure"
        );
        // A dry run names the same problem and changes nothing.
        let dry = env
            .engine
            .migrate_v1(name, &MigrateOptions { dry_run: true });
        assert!(matches!(dry, Err(Error::Corruption { .. })), "{dry:?}");
        assert_eq!(v1_keys(&kv), before);
    }
    // A purge before migration is refused, a delete removes v1 data.
    assert_eq!(
        env.engine.purge_v1("bad_magic").unwrap_err().invalid_kind(),
        Some(InvalidKind::Layout)
    );
    for (name, ..) in &cases {
        assert!(env.engine.delete(name).unwrap());
        assert_eq!(env.engine.layout(name).unwrap(), None);
    }
    assert!(v1_keys(&kv).is_empty());
    assert_store_clean(&env.engine);
    assert_eq!(env.v1.open_databases(), 0);
}

#[test]
fn rejections_memory() {
    rejections_on(Backend::Memory);
}

#[test]
fn rejections_embedded() {
    rejections_on(Backend::Embedded);
}

#[test]
fn rejections_postgres() {
    rejections_on(Backend::Postgres);
}

/// Listing shows v1 databases beside v2 ones, once each, in order.
#[test]
fn list_merges_layouts() {
    let env = Env::new(Kv::memory(), quick_config());
    for db in ["b", "d"] {
        env.engine
            .v1_files()
            .import(db, &mut std::io::empty())
            .unwrap();
    }
    for db in ["a", "c"] {
        env.engine.open(db, &Preload::default()).unwrap();
    }
    assert_eq!(env.engine.list("", None, 10).unwrap(), ["a", "b", "c", "d"]);
    assert_eq!(env.engine.list("", Some("b"), 2).unwrap(), ["c", "d"]);
    env.engine.open("b", &Preload::default()).unwrap();
    assert_eq!(env.engine.list("", None, 10).unwrap(), ["a", "b", "c", "d"]);
    assert_eq!(env.engine.layout("b").unwrap(), Some(Layout::V2));
    assert_eq!(env.engine.layout("d").unwrap(), Some(Layout::V1));
}
