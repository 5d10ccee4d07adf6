//! VFS behaviour: fencing, persistence, one commit per transaction, the
//! batch and sync paths, large transactions, read-ahead, VACUUM and temp
//! files, quota and refused journal modes.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use common::{Backend, rows, setup, setup_with, unique};
use kvlite_engine::LocalTransport;
use kvlite_engine::{Engine, EngineConfig};
use kvlite_kv::Kv;
use kvlite_vfs::{Vfs, VfsConfig};
use prometheus_client::registry::Registry;
use rusqlite::ErrorCode;

fn code(e: &rusqlite::Error) -> Option<ErrorCode> {
    e.sqlite_error_code()
}

/// Insert `mib` MiB of 4000-byte pseudo-random blobs into table `t` in one
/// transaction.
fn fill(conn: &rusqlite::Connection, mib: usize) {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB)")
        .expect("create");
    let tx = conn.unchecked_transaction().expect("begin");
    {
        let mut stmt = tx
            .prepare("INSERT INTO t(b) VALUES (randomblob(4000))")
            .expect("prepare");
        for _ in 0..(mib << 20) / 4096 {
            stmt.execute([]).expect("insert");
        }
    }
    tx.commit().expect("commit");
}

#[test]
fn stale_writer_is_fenced_and_changes_nothing() {
    for backend in [Backend::Memory, Backend::Embedded] {
        let s = setup(backend);
        let first = s.vfs.open("shared").expect("open");
        first
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            .expect("write");
        let second = s.vfs.open("shared").expect("second open takes over");
        let err = first.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::ReadOnly), "{err}");
        let reason = s.vfs.last_error("shared").expect("a detailed reason");
        assert!(reason.contains("fenced"), "{reason}");
        // Still poisoned: later writes fail too, with a clear message.
        let err = first.execute("INSERT INTO t VALUES (3)", []).unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::ReadOnly), "{err}");
        assert!(
            s.vfs
                .sqlite_error("shared", err)
                .to_string()
                .contains("reopen")
        );
        // Reads fail too: what it cached may be older than the database.
        // The message names the database, the other writer, and when.
        let err = first
            .query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::ReadOnly), "{err}");
        let reason = s.vfs.last_error("shared").expect("a detailed reason");
        assert!(
            reason.contains("database \"shared\" fenced: another writer opened it at 20")
                && reason.contains("can no longer read or write it"),
            "{reason}"
        );
        assert_eq!(
            rows(&second, "SELECT x FROM t"),
            vec![vec!["1"]],
            "the stale writer changed nothing"
        );
        second
            .execute("INSERT INTO t VALUES (4)", [])
            .expect("the new writer writes");
        assert_eq!(rows(&second, "SELECT count(*) FROM t"), vec![vec!["2"]]);
    }
}

/// A cold open answers with the first pages (the roots of the tables made
/// first): a point query on a two-level table then asks for its leaf only.
#[test]
fn a_cold_open_brings_the_first_tables_roots() {
    for (preload_pages, requests) in [(8, 1), (1, 2)] {
        let s = setup_with(
            Backend::Memory,
            VfsConfig {
                preload_pages,
                ..VfsConfig::default()
            },
        );
        {
            let conn = s.vfs.open("roots").expect("open");
            conn.execute_batch(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO t SELECT i, randomblob(1000) FROM n;",
            )
            .expect("fill");
        }
        // A new connection: nothing cached but what the open answered.
        let conn = s.vfs.open("roots").expect("cold open");
        let before = s.vfs.metrics().page_requests;
        assert_eq!(
            rows(&conn, "SELECT length(b) FROM t WHERE id = 1234"),
            vec![vec!["1000"]]
        );
        assert_eq!(
            s.vfs.metrics().page_requests - before,
            requests,
            "preloading {preload_pages} pages"
        );
    }
}

/// A cold scan fetches its next windows ahead of SQLite, on other threads,
/// and reads every row right; point queries never fetch ahead.
#[test]
fn a_scan_fetches_ahead_and_point_queries_do_not() {
    let s = setup(Backend::Memory);
    fill(&s.vfs.open("ahead").expect("open"), 12);
    let conn = s.vfs.open("ahead").expect("cold open");
    let before = s.vfs.metrics();
    for id in [17, 3000, 1234, 555] {
        assert_eq!(
            rows(&conn, &format!("SELECT length(b) FROM t WHERE id = {id}")),
            vec![vec!["4000"]]
        );
    }
    assert_eq!(s.vfs.metrics().prefetches, before.prefetches);
    assert_eq!(
        rows(&conn, "SELECT count(*), sum(length(b)) FROM t"),
        vec![vec!["3072", "12288000"]]
    );
    let m = s.vfs.metrics();
    assert!(m.prefetches_used > 0, "{m:?}");
    assert!(
        m.page_requests - before.page_requests < 40,
        "{} requests",
        m.page_requests - before.page_requests
    );
}

/// A takeover fences the old writer before it answers anything from its
/// caches (SQLite's page cache and the VFS's): its very next transaction —
/// a read of pages it holds — fails, naming the database, the other writer
/// and when, and with no request to the engine. Also after a restore.
#[test]
fn a_fenced_writer_answers_nothing_from_its_caches() {
    for backend in [Backend::Memory, Backend::Embedded] {
        let s = setup(backend);
        let first = s.vfs.open("cached").expect("open");
        first
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            .expect("write");
        // Everything it reads now comes from its caches.
        assert_eq!(rows(&first, "SELECT x FROM t"), vec![vec!["1"]]);
        let requests = s.vfs.metrics().page_requests;
        let second = s.vfs.open("cached").expect("second open takes over");
        second
            .execute("INSERT INTO t VALUES (2)", [])
            .expect("the new writer writes");
        let asked = s.vfs.metrics().page_requests;
        let err = first
            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::ReadOnly), "{err}");
        let reason = s.vfs.last_error("cached").expect("a detailed reason");
        assert!(
            reason.contains("database \"cached\" fenced: another writer opened it at 20")
                && reason.contains("can no longer read or write it"),
            "{reason}"
        );
        assert_eq!(
            s.vfs.metrics().page_requests,
            asked,
            "found out without asking the engine"
        );
        assert!(asked >= requests);
        // A restore fences the writer of the incarnation it replaced.
        let head = s.engine.stat("cached").expect("stat").head_txid;
        assert_eq!(rows(&second, "SELECT count(*) FROM t"), vec![vec!["2"]]);
        s.engine
            .restore("cached", kvlite_api::ReadPoint::Txid(head - 1))
            .expect("restore");
        let err = second
            .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::ReadOnly), "{err}");
        let third = s.vfs.open("cached").expect("reopen");
        assert_eq!(rows(&third, "SELECT count(*) FROM t"), vec![vec!["1"]]);
    }
}

/// The store loses the reply to a commit that did land: the connection
/// cannot know its state any more, so it refuses writes (and reads, which
/// SQLite would answer from a cache the engine may have moved past) until
/// reopened; the reopened database has the landed commit.
#[test]
fn an_unknown_commit_outcome_poisons_until_reopen() {
    let backend = Arc::new(kvlite_kv::memory::MemoryBackend::new());
    let kv = Kv::new(backend.clone()).with_retry_policy(kvlite_kv::RetryPolicy {
        max_attempts: 3,
        first_backoff: std::time::Duration::from_micros(10),
        max_backoff: std::time::Duration::from_micros(100),
    });
    let engine = Engine::new(kv, EngineConfig::default(), &mut Registry::default());
    let vfs = Vfs::register(
        &unique("unknown"),
        Arc::new(LocalTransport::new(engine)),
        VfsConfig::default(),
    )
    .expect("register");
    let conn = vfs.open("blip").expect("open");
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .expect("write");
    backend.lose_next_commit_reply();
    assert!(conn.execute("INSERT INTO t VALUES (2)", []).is_err());
    let reason = vfs.last_error("blip").expect("a detailed reason");
    assert!(
        reason.contains("unknown") || reason.contains("may have"),
        "{reason}"
    );
    backend.heal();
    // Still poisoned with the store back: nothing guesses.
    let err = conn.execute("INSERT INTO t VALUES (3)", []).unwrap_err();
    assert!(
        vfs.sqlite_error("blip", err).to_string().contains("reopen"),
        "the error says what to do"
    );
    assert!(
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .is_err()
    );
    drop(conn);
    let conn = vfs.open("blip").expect("reopen");
    assert_eq!(
        rows(&conn, "SELECT x FROM t ORDER BY x"),
        vec![vec!["1"], vec!["2"]]
    );
    assert_eq!(rows(&conn, "PRAGMA integrity_check"), vec![vec!["ok"]]);
    conn.execute("INSERT INTO t VALUES (4)", [])
        .expect("writes again");
}

#[test]
fn data_survives_a_restart_of_the_whole_stack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open_stack = || {
        let kv = Kv::open_embedded(dir.path()).expect("open store");
        let engine = Engine::new(kv, EngineConfig::default(), &mut Registry::default());
        Vfs::register(
            &unique("restart"),
            Arc::new(LocalTransport::new(engine)),
            VfsConfig::default(),
        )
        .expect("register")
    };
    {
        let vfs = open_stack();
        let conn = vfs.open("durable").expect("open");
        conn.execute_batch(
            "CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB); CREATE INDEX kv_v ON kv(v);",
        )
        .expect("schema");
        for i in 0..500 {
            conn.execute(
                "INSERT INTO kv VALUES (?, randomblob(?))",
                rusqlite::params![format!("k{i}"), i * 7],
            )
            .expect("insert");
        }
        fill(&conn, 10); // a large (multi-part) commit too
    }
    // Every handle is gone (the VFS registration lives on, but its engine
    // and store are dropped with the connection); reopen from disk.
    let vfs = open_stack();
    let conn = vfs.open("durable").expect("reopen");
    // randomblob(0) is one byte.
    let bytes: i64 = (0..500).map(|i| (i * 7).max(1)).sum();
    assert_eq!(
        rows(&conn, "SELECT count(*), sum(length(v)) FROM kv"),
        vec![vec!["500".to_string(), bytes.to_string()]]
    );
    assert_eq!(
        rows(&conn, "SELECT count(*) FROM t"),
        vec![vec![((10 << 20) / 4096).to_string()]]
    );
    assert_eq!(rows(&conn, "PRAGMA integrity_check"), vec![vec!["ok"]]);
}

#[test]
fn each_transaction_is_exactly_one_engine_commit() {
    let s = setup(Backend::Memory);
    let conn = s.vfs.open("one").expect("open");
    conn.execute_batch("CREATE TABLE t(x)").expect("create");
    let deltas = |db: &str| s.engine.stat(db).expect("stat").deltas;
    let before = (deltas("one"), s.vfs.metrics());
    conn.execute_batch("BEGIN; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); UPDATE t SET x = x + 1; COMMIT;")
        .expect("txn");
    let after = (deltas("one"), s.vfs.metrics());
    assert_eq!(after.0 - before.0, 1, "one delta");
    assert_eq!(after.1.commits - before.1.commits, 1, "one engine commit");
    assert_eq!(
        after.1.batch_commits - before.1.batch_commits,
        1,
        "through the batch window"
    );
    // Read-only work and pragmas commit nothing and cost no round trip.
    let before = s.vfs.metrics();
    rows(&conn, "SELECT * FROM t");
    conn.execute_batch("PRAGMA user_version; BEGIN; SELECT 1; COMMIT;")
        .expect("read only");
    assert_eq!(s.vfs.metrics().commits, before.commits);
    // A rolled-back transaction sends nothing.
    conn.execute_batch("BEGIN; INSERT INTO t VALUES (9); ROLLBACK;")
        .expect("rollback");
    assert_eq!(s.vfs.metrics().commits, before.commits);
    assert_eq!(rows(&conn, "SELECT count(*) FROM t"), vec![vec!["2"]]);
}

#[test]
fn transactions_larger_than_the_page_cache_commit_atomically() {
    // A 256 KiB SQLite cache makes a 20 MiB transaction spill pages to the
    // file before its commit; they and the rest still make one commit.
    let s = setup_with(
        Backend::Embedded,
        VfsConfig {
            sqlite_cache_kib: 256,
            ..VfsConfig::default()
        },
    );
    let conn = s.vfs.open("spill").expect("open");
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        .expect("create");
    let before = (
        s.vfs.metrics(),
        s.engine.stat("spill").expect("stat").deltas,
    );
    fill(&conn, 20);
    let after = (
        s.vfs.metrics(),
        s.engine.stat("spill").expect("stat").deltas,
    );
    assert_eq!(after.0.commits - before.0.commits, 1, "one engine commit");
    assert_eq!(
        after.0.large_commits - before.0.large_commits,
        1,
        "as a large commit"
    );
    assert_eq!(after.1 - before.1, 1, "one delta");
    // A spilled transaction that rolls back leaves no trace.
    let head = s.engine.stat("spill").expect("stat").head_txid;
    let tx = conn.unchecked_transaction().expect("begin");
    tx.execute_batch("DELETE FROM t").expect("delete");
    for _ in 0..3000 {
        tx.execute("INSERT INTO t(b) VALUES (randomblob(4000))", [])
            .expect("insert");
    }
    tx.rollback().expect("rollback");
    assert_eq!(
        s.engine.stat("spill").expect("stat").head_txid,
        head,
        "nothing committed"
    );
    assert_eq!(
        rows(&conn, "SELECT count(*) FROM t"),
        vec![vec![((20 << 20) / 4096).to_string()]]
    );
    assert_eq!(rows(&conn, "PRAGMA integrity_check"), vec![vec!["ok"]]);
    let conn2 = s.vfs.open("spill").expect("reopen");
    assert_eq!(
        rows(&conn2, "SELECT count(*) FROM t"),
        vec![vec![((20 << 20) / 4096).to_string()]]
    );
}

#[test]
fn the_sync_path_commits_each_transaction_once() {
    // synchronous=OFF and a file journal (DELETE) both make SQLite skip the
    // batch window; writes are buffered and committed at the sync point.
    for (setup_sql, spill) in [
        ("PRAGMA synchronous = OFF", false),
        ("PRAGMA journal_mode = DELETE", true),
    ] {
        let cache = if spill { 256 } else { 32 << 10 };
        let s = setup_with(
            Backend::Memory,
            VfsConfig {
                sqlite_cache_kib: cache,
                ..VfsConfig::default()
            },
        );
        let conn = s.vfs.open("sync").expect("open");
        conn.execute_batch(setup_sql).expect("pragma");
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
            .expect("create");
        let before = s.vfs.metrics();
        fill(&conn, 4);
        conn.execute_batch("BEGIN; UPDATE t SET b = zeroblob(10) WHERE id < 10; DELETE FROM t WHERE id > 1000; COMMIT;")
            .expect("txn");
        let after = s.vfs.metrics();
        assert_eq!(
            after.commits - before.commits,
            2,
            "{setup_sql}: one commit per transaction"
        );
        // synchronous=OFF never batches; with a file journal SQLite still
        // batches a transaction that fits its cache (the spilled one syncs).
        let (sync, batch) = (
            after.sync_commits - before.sync_commits,
            after.batch_commits - before.batch_commits,
        );
        assert_eq!(sync + batch, 2, "{setup_sql}");
        if spill {
            assert!(
                sync >= 1,
                "{setup_sql}: the spilled one through the sync path"
            );
        } else {
            assert_eq!(sync, 2, "{setup_sql}: through the sync path");
        }
        let again = s.vfs.open("sync").expect("reopen");
        assert_eq!(
            rows(&again, "SELECT count(*), sum(length(b)) FROM t"),
            vec![vec!["1000", &(9 * 10 + 991 * 4000).to_string()]]
        );
        assert_eq!(rows(&again, "PRAGMA integrity_check"), vec![vec!["ok"]]);
    }
}

/// A transport whose commits fail (transiently, nothing written) while
/// `fail_next` is positive, and (with `land_unseen`) land but answer as a
/// lost reply's re-send would: the head moved under the writer's own
/// generation.
struct Flaky {
    inner: LocalTransport,
    fail_next: std::sync::atomic::AtomicU32,
    land_unseen: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn trip(&self) -> Result<(), kvlite_api::Error> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .fail_next
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(kvlite_api::Error::Unavailable("injected failure".into()));
        }
        Ok(())
    }
}

impl kvlite_api::Transport for Flaky {
    fn open(
        &self,
        db: &str,
        p: &kvlite_api::Preload,
    ) -> kvlite_api::Result<kvlite_api::OpenResponse> {
        self.inner.open(db, p)
    }
    fn get_pages(
        &self,
        db: &str,
        g: u64,
        p: &[u32],
    ) -> kvlite_api::Result<Vec<Option<kvlite_api::PageData>>> {
        self.inner.get_pages(db, g, p)
    }
    fn commit(
        &self,
        r: &kvlite_api::CommitRequest<'_>,
    ) -> kvlite_api::Result<kvlite_api::CommitResult> {
        self.trip()?;
        let landed = self.inner.commit(r)?;
        if self
            .land_unseen
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(kvlite_api::Error::Fenced {
                db: r.db.to_string(),
                reason: kvlite_api::FenceReason::HeadMismatch {
                    generation: r.generation,
                    current: landed.txid,
                    expected: r.expected_head,
                },
            });
        }
        Ok(landed)
    }
    fn commit_large(
        &self,
        r: &kvlite_api::LargeCommit<'_>,
    ) -> kvlite_api::Result<kvlite_api::CommitResult> {
        self.trip()?;
        self.inner.commit_large(r)
    }
    fn commit_status(&self, db: &str, id: u64) -> kvlite_api::Result<kvlite_api::CommitStatus> {
        self.inner.commit_status(db, id)
    }
    fn stat(&self, db: &str) -> kvlite_api::Result<kvlite_api::DbStat> {
        self.inner.stat(db)
    }
    fn list(&self, p: &str, a: Option<&str>, l: usize) -> kvlite_api::Result<Vec<String>> {
        self.inner.list(p, a, l)
    }
    fn delete(&self, db: &str) -> kvlite_api::Result<bool> {
        self.inner.delete(db)
    }
    fn compact(&self, db: &str) -> kvlite_api::Result<kvlite_api::CompactionReport> {
        self.inner.compact(db)
    }
    fn set_quota(&self, db: &str, q: u64) -> kvlite_api::Result<()> {
        self.inner.set_quota(db, q)
    }
    fn begin_read(
        &self,
        db: &str,
        r: u64,
        since: u64,
    ) -> kvlite_api::Result<kvlite_api::ReadState> {
        self.inner.begin_read(db, r, since)
    }
    fn get_pages_at(
        &self,
        db: &str,
        r: u64,
        at: kvlite_api::ReadAt,
        p: &[u32],
    ) -> kvlite_api::Result<Vec<Option<kvlite_api::PageData>>> {
        self.inner.get_pages_at(db, r, at, p)
    }
    fn end_read(&self, db: &str, r: u64) -> kvlite_api::Result<()> {
        self.inner.end_read(db, r)
    }
}

/// A head that moved under the connection's own generation means one of
/// its commits landed without its answer: the connection may hold pages
/// older than the engine's, so it refuses reads as well as writes until it
/// is reopened (regression: it read a mix of old cached and new pages).
#[test]
fn a_commit_that_landed_unseen_poisons_reads_too() {
    let engine = Engine::new(
        Kv::memory(),
        EngineConfig::default(),
        &mut Registry::default(),
    );
    let flaky = Arc::new(Flaky {
        inner: LocalTransport::new(engine.clone()),
        fail_next: 0.into(),
        land_unseen: false.into(),
    });
    let vfs =
        Vfs::register(&unique("unseen"), flaky.clone(), VfsConfig::default()).expect("register");
    let conn = vfs.open("unseen").expect("open");
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .expect("write");
    flaky
        .land_unseen
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = conn.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::ReadOnly), "{err}");
    let err = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        .unwrap_err();
    assert!(
        vfs.last_error("unseen")
            .is_some_and(|m| m.contains("poisoned")),
        "{err}"
    );
    drop(conn);
    let again = vfs.open("unseen").expect("reopen");
    assert_eq!(
        rows(&again, "SELECT x FROM t ORDER BY x"),
        vec![vec!["1"], vec!["2"]],
        "the commit did land"
    );
}

#[test]
fn a_failed_batch_commit_is_retried_by_sqlite_without_losing_spilled_pages() {
    // The commit at COMMIT_ATOMIC_WRITE fails with an I/O error; SQLite
    // undoes the batch (ROLLBACK_ATOMIC_WRITE) and retries the same
    // transaction through its journal path. Pages it spilled before the
    // batch must still be part of what is finally committed.
    let engine = Engine::new(
        Kv::memory(),
        EngineConfig::default(),
        &mut Registry::default(),
    );
    let flaky = Arc::new(Flaky {
        inner: LocalTransport::new(engine.clone()),
        fail_next: 0.into(),
        land_unseen: false.into(),
    });
    let vfs = Vfs::register(
        &unique("flaky"),
        flaky.clone(),
        VfsConfig {
            sqlite_cache_kib: 256,
            ..VfsConfig::default()
        },
    )
    .expect("register");
    let reference = rusqlite::Connection::open_in_memory().expect("reference");
    let conn = vfs.open("retry").expect("open");
    for c in [&conn, &reference] {
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
            .expect("create");
    }
    flaky
        .fail_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let before = vfs.metrics();
    for c in [&conn, &reference] {
        c.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO t(b) SELECT zeroblob(3000) || (i * 7919) FROM n;",
        )
        .expect("the transaction succeeds on SQLite's retry");
    }
    let after = vfs.metrics();
    assert_eq!(
        after.failed_commits - before.failed_commits,
        1,
        "the injected failure happened"
    );
    assert_eq!(after.commits - before.commits, 1);
    let dump = kvlite_testkit::sql::dump;
    assert_eq!(dump(&conn), dump(&reference));
    let again = vfs.open("retry").expect("reopen");
    assert_eq!(
        dump(&again),
        dump(&reference),
        "what was committed is the whole transaction"
    );
    assert_eq!(rows(&again, "PRAGMA integrity_check"), vec![vec!["ok"]]);
}

#[test]
fn a_one_gib_transaction_commits_atomically() {
    let s = setup_with(
        Backend::Embedded,
        VfsConfig {
            cache_bytes: 16 << 20,
            ..VfsConfig::default()
        },
    );
    let conn = s.vfs.open("gib").expect("open");
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        .expect("create");
    let before = s.vfs.metrics();
    // 1 GiB of zeroblobs would compress to nothing; randomblob keeps it honest.
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 262144)
         INSERT INTO t(b) SELECT randomblob(4000) FROM n;",
    )
    .expect("1 GiB insert");
    let after = s.vfs.metrics();
    assert_eq!(after.commits - before.commits, 1, "one engine commit");
    assert!(
        after.bytes_sent - before.bytes_sent >= 1 << 30,
        "{} bytes",
        after.bytes_sent - before.bytes_sent
    );
    let stat = s.engine.stat("gib").expect("stat");
    assert!(
        stat.size_pages as u64 * 4096 > 1 << 30,
        "past the lock page: {} pages",
        stat.size_pages
    );
    drop(conn);
    let conn = s.vfs.open("gib").expect("reopen");
    assert_eq!(
        rows(&conn, "SELECT count(*), sum(length(b)) FROM t"),
        vec![vec!["262144", &(262_144u64 * 4000).to_string()]]
    );
    assert!(s.engine.audit("gib").expect("audit").is_clean());
}

#[test]
fn a_cold_full_scan_of_100_mib_needs_few_requests() {
    let s = setup_with(
        Backend::Embedded,
        VfsConfig {
            cache_bytes: 32 << 20,
            ..VfsConfig::default()
        },
    );
    {
        let conn = s.vfs.open("scan").expect("open");
        fill(&conn, 100);
    }
    let conn = s.vfs.open("scan").expect("reopen with a cold cache");
    let before = s.vfs.metrics();
    assert_eq!(
        rows(&conn, "SELECT count(*), sum(length(b)) FROM t"),
        vec![vec!["25600", "102400000"]]
    );
    let requests = s.vfs.metrics().page_requests - before.page_requests;
    assert!(
        requests <= 100,
        "{requests} page requests for a 100 MiB scan"
    );
    assert!(requests >= 3, "the scan really went to the engine");
}

#[test]
fn vacuum_temp_tables_and_large_sorts_work() {
    let s = setup_with(
        Backend::Embedded,
        VfsConfig {
            sqlite_cache_kib: 512,
            ..VfsConfig::default()
        },
    );
    let conn = s.vfs.open("vac").expect("open");
    fill(&conn, 8);
    let big = s.engine.stat("vac").expect("stat").size_pages;
    conn.execute_batch("DELETE FROM t WHERE id % 4 != 0")
        .expect("delete");
    conn.execute_batch("VACUUM").expect("vacuum");
    let small = s.engine.stat("vac").expect("stat");
    assert!(
        small.size_pages * 3 < big,
        "VACUUM shrank the database: {} -> {}",
        big,
        small.size_pages
    );
    assert!(s.engine.audit("vac").expect("audit").is_clean());
    assert_eq!(rows(&conn, "SELECT count(*) FROM t"), vec![vec!["512"]]);
    conn.execute_batch(
        "CREATE TEMP TABLE scratch AS SELECT id, b FROM t; CREATE INDEX temp.s_b ON scratch(b);",
    )
    .expect("temp");
    assert_eq!(
        rows(&conn, "SELECT count(*) FROM scratch"),
        vec![vec!["512"]]
    );
    // A sort far larger than SQLite's cache spills to temp files (in memory).
    let sorted = rows(
        &conn,
        "SELECT id FROM (SELECT id, b FROM t UNION ALL SELECT id, b FROM scratch) ORDER BY b DESC LIMIT 1",
    );
    assert_eq!(sorted.len(), 1);
    assert_eq!(rows(&conn, "PRAGMA integrity_check"), vec![vec!["ok"]]);
    let reopened = s.vfs.open("vac").expect("reopen");
    assert_eq!(rows(&reopened, "SELECT count(*) FROM t"), vec![vec!["512"]]);
    assert_eq!(
        rows(&reopened, "SELECT count(*) FROM sqlite_temp_master"),
        vec![vec!["0"]],
        "temp objects are per connection"
    );
}

#[test]
fn quota_exhaustion_is_sqlite_full_and_the_connection_recovers() {
    let s = setup(Backend::Memory);
    let conn = s.vfs.open("quota").expect("open");
    conn.execute_batch("CREATE TABLE t(b BLOB); INSERT INTO t VALUES (randomblob(100))")
        .expect("write");
    let used = s.engine.stat("quota").expect("stat").used_bytes;
    s.engine
        .set_quota("quota", used + 50_000)
        .expect("set quota");
    let err = conn
        .execute("INSERT INTO t VALUES (randomblob(200000))", [])
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::DiskFull), "{err}");
    assert!(s.vfs.last_error("quota").expect("reason").contains("quota"));
    assert_eq!(
        rows(&conn, "SELECT count(*) FROM t"),
        vec![vec!["1"]],
        "nothing changed"
    );
    conn.execute("INSERT INTO t VALUES (randomblob(1000))", [])
        .expect("a small write still fits");
    assert_eq!(rows(&conn, "SELECT count(*) FROM t"), vec![vec!["2"]]);
}

/// A database over its quota can still delete, drop and vacuum (regression:
/// they failed with "quota exceeded"), and once compaction reclaims the
/// space it grows again.
#[test]
fn a_full_database_can_delete_drop_and_vacuum() {
    let s = setup(Backend::Memory);
    let conn = s.vfs.open("full").expect("open");
    conn.execute_batch(
        "CREATE TABLE keep(b BLOB); CREATE TABLE big(b BLOB); CREATE INDEX big_b ON big(b);
         INSERT INTO keep VALUES (randomblob(3000));
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO big SELECT randomblob(3000) FROM n;",
    )
    .expect("fill");
    let used = s.engine.stat("full").expect("stat").used_bytes;
    s.engine
        .set_quota("full", used)
        .expect("quota at the current size");
    let err = conn
        .execute("INSERT INTO big VALUES (randomblob(100000))", [])
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::DiskFull), "{err}");
    conn.execute("DELETE FROM big WHERE rowid % 2 = 0", [])
        .expect("DELETE on a full database");
    conn.execute_batch("DROP INDEX big_b; DROP TABLE big;")
        .expect("DROP on a full database");
    conn.execute_batch("VACUUM")
        .expect("VACUUM on a full database");
    s.engine.compact("full").expect("compact");
    let stat = s.engine.stat("full").expect("stat");
    assert!(stat.used_bytes < used, "{stat:?}");
    conn.execute("INSERT INTO keep VALUES (randomblob(3000))", [])
        .expect("room again after compaction");
    assert_eq!(rows(&conn, "SELECT count(*) FROM keep"), vec![vec!["2"]]);
    assert_eq!(rows(&conn, "PRAGMA integrity_check"), vec![vec!["ok"]]);
}

#[test]
fn wal_mode_is_refused_and_data_stays_safe() {
    let s = setup(Backend::Memory);
    let conn = s.vfs.open("walless").expect("open");
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .expect("write");
    for mode in ["WAL", "off"] {
        let err = conn
            .query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| {
                r.get::<_, String>(0)
            })
            .unwrap_err();
        assert!(err.to_string().contains("not WAL or OFF"), "{err}");
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode.to_lowercase(), "memory");
    conn.execute("INSERT INTO t VALUES (2)", [])
        .expect("still writes");
    let again = s.vfs.open("walless").expect("reopen");
    assert_eq!(rows(&again, "SELECT count(*) FROM t"), vec![vec!["2"]]);
}

#[test]
fn invalid_names_are_rejected() {
    let s = setup(Backend::Memory);
    for name in ["", ":memory:", "file:x?mode=ro", "a\0b"] {
        assert!(s.vfs.open(name).is_err(), "{name:?}");
    }
    assert!(s.vfs.open(&"n".repeat(600)).is_err());
}

#[test]
fn batch_atomic_writes_are_compiled_in() {
    assert!(kvlite_vfs::batch_atomic_compiled());
}

#[test]
fn kvlite_metrics_count_cache_and_traffic() {
    let s = setup(Backend::Memory);
    let conn = s.vfs.open("metered").expect("open");
    fill(&conn, 2);
    let m = s.vfs.metrics();
    assert!(m.bytes_sent >= 2 << 20 && m.pages_committed >= 512, "{m:?}");
    drop(conn);
    let conn = s.vfs.open("metered").expect("reopen");
    let before = s.vfs.metrics();
    rows(&conn, "SELECT sum(length(b)) FROM t");
    rows(&conn, "SELECT sum(length(b)) FROM t");
    let after = s.vfs.metrics();
    assert!(after.cache_misses > before.cache_misses, "cold reads miss");
    assert!(after.cache_hits > before.cache_hits, "warm reads hit");
    assert!(after.pages_fetched - before.pages_fetched >= 500);
    assert!(after.fetch_time > before.fetch_time);
}

/// A routed VFS (what the loadable extension registers) puts each database
/// where its URI parameters say, and an open whose parameters it refuses
/// fails with the router's reason.
#[test]
fn a_routed_vfs_follows_each_opens_uri_parameters() {
    struct ByStore(Vec<(String, Arc<dyn kvlite_api::Transport>)>);
    impl kvlite_vfs::Router for ByStore {
        fn route(
            &self,
            _db: &str,
            param: &dyn Fn(&str) -> Option<String>,
        ) -> Result<Arc<dyn kvlite_api::Transport>, String> {
            let want = param("store").ok_or("no store= parameter")?;
            self.0
                .iter()
                .find(|(name, _)| *name == want)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| format!("unknown store {want:?}"))
        }
    }
    let engines: Vec<Arc<Engine>> = (0..2)
        .map(|_| {
            Engine::new(
                Kv::memory(),
                EngineConfig::default(),
                &mut Registry::default(),
            )
        })
        .collect();
    let router = ByStore(
        ["a", "b"]
            .iter()
            .zip(&engines)
            .map(|(n, e)| {
                let t: Arc<dyn kvlite_api::Transport> = Arc::new(LocalTransport::new(e.clone()));
                (n.to_string(), t)
            })
            .collect(),
    );
    let name = unique("routed");
    let vfs =
        Vfs::register_routed(&name, Arc::new(router), VfsConfig::default()).expect("register");
    assert!(vfs.transport().is_none());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    for (store, value) in [("a", 1), ("b", 2)] {
        let conn = rusqlite::Connection::open_with_flags(
            format!("file:shared?vfs={name}&store={store}"),
            flags,
        )
        .expect("open");
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = MEMORY; CREATE TABLE t(x); INSERT INTO t VALUES ({value});"
        ))
        .expect("write");
    }
    for (engine, value) in engines.iter().zip([1, 2]) {
        let v = Vfs::register(
            &unique("check"),
            Arc::new(LocalTransport::new(engine.clone())),
            VfsConfig::default(),
        )
        .expect("register");
        let conn = v.open("shared").expect("open");
        assert_eq!(
            rows(&conn, "SELECT x FROM t"),
            vec![vec![value.to_string()]]
        );
    }
    let refused =
        rusqlite::Connection::open_with_flags(format!("file:other?vfs={name}&store=zzz"), flags);
    assert!(refused.is_err());
    let reason = vfs.last_error("other").expect("a reason");
    assert!(reason.contains("unknown store \"zzz\""), "{reason}");
}

/// A one-row commit sends one page: SQLite's change counter on page 1
/// (bumped at every commit under normal locking) is not a change worth
/// storing, and no page is asked of the engine while the writer's caches
/// hold them.
#[test]
fn a_one_row_commit_sends_one_page() {
    let s = setup(Backend::Memory);
    let conn = s.vfs.open("small").expect("open");
    conn.execute_batch("CREATE TABLE t(x INTEGER PRIMARY KEY, v)")
        .expect("create");
    for i in 0..200 {
        conn.execute("INSERT INTO t VALUES (?1, 'x')", [i])
            .expect("insert");
    }
    let before = s.vfs.metrics();
    for i in 200..1200 {
        conn.execute("INSERT INTO t VALUES (?1, 'x')", [i])
            .expect("insert");
    }
    let after = s.vfs.metrics();
    let commits = after.commits - before.commits;
    let pages = after.pages_committed - before.pages_committed;
    assert_eq!(commits, 1000);
    // A leaf splits now and then: a few commits write two or three pages.
    assert!(
        pages < commits * 11 / 10,
        "{pages} pages for {commits} commits"
    );
    assert_eq!(after.page_requests, before.page_requests);
    // What the store holds is the database, change counter aside.
    let again = s.vfs.open("small").expect("reopen");
    assert_eq!(rows(&again, "SELECT count(*) FROM t"), vec![vec!["1200"]]);
    assert_eq!(rows(&again, "PRAGMA integrity_check"), vec![vec!["ok"]]);
}
