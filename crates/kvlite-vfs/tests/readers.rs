//! Read-only connections: they never take a database over, each read
//! transaction sees one committed state however long it runs (while the
//! writer commits and compaction folds), and they cannot write.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Backend, setup};
use kvlite_testkit::sql::states::{self, commit as write_one, create, read_transaction};
use rusqlite::ErrorCode;

fn count(conn: &rusqlite::Connection) -> i64 {
    states::counter(conn).expect("counter")
}

fn a_reader_never_fences_the_writer(backend: Backend) {
    let s = setup(backend);
    let writer = s.vfs.open("app").expect("writer");
    create(&writer);
    for n in 1..=20 {
        write_one(&writer, n);
    }
    let generation = s.engine.stat("app").expect("stat").generation;
    let reader = s.vfs.open_readonly("app").expect("reader");
    assert_eq!(read_transaction(&reader), Ok(20));
    // The writer goes on as if nobody had looked.
    for n in 21..=40 {
        write_one(&writer, n);
    }
    assert_eq!(
        s.engine.stat("app").expect("stat").generation,
        generation,
        "no takeover"
    );
    // Each new read transaction sees the newest commit.
    assert_eq!(read_transaction(&reader), Ok(40));
    let m = s.vfs.metrics();
    assert!(m.read_transactions >= 2, "{m:?}");
    assert!(
        m.pages_invalidated > 0 && m.cache_resets == 0,
        "exactly the changed pages were dropped: {m:?}"
    );
    // It cannot write, and says so.
    let err = reader
        .execute("INSERT INTO t VALUES (99, 1, NULL)", [])
        .unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::ReadOnly), "{err}");
    assert_eq!(count(&writer), 40, "the writer was not disturbed");
    write_one(&writer, 41);
    assert_eq!(read_transaction(&reader), Ok(41));
}

#[test]
fn a_reader_never_fences_the_writer_memory() {
    a_reader_never_fences_the_writer(Backend::Memory);
}

#[test]
fn a_reader_never_fences_the_writer_embedded() {
    a_reader_never_fences_the_writer(Backend::Embedded);
}

#[test]
fn a_reader_never_fences_the_writer_postgres() {
    a_reader_never_fences_the_writer(Backend::Postgres);
}

/// A read transaction held open while the writer commits, truncates
/// (VACUUM) and compaction folds everything it can: it keeps reading
/// exactly the state it began at.
fn a_long_read_sees_one_state(backend: Backend) {
    let s = setup(backend);
    let writer = s.vfs.open("long").expect("writer");
    create(&writer);
    for n in 1..=60 {
        write_one(&writer, n);
    }
    let reader = s.vfs.open_readonly("long").expect("reader");
    reader.execute_batch("BEGIN").expect("begin");
    assert_eq!(count(&reader), 60);
    // Change and shrink the database under the open transaction.
    writer
        .execute_batch("DELETE FROM t WHERE k > 10; UPDATE counter SET n = 10;")
        .expect("delete");
    writer.execute_batch("VACUUM").expect("vacuum");
    for _ in 0..3 {
        s.engine.compact("long").expect("compact");
    }
    let (rows, sum): (i64, i64) = reader
        .query_row("SELECT count(*), sum(v) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("scan at the old state");
    assert_eq!((rows, sum), (60, 7 * 60 * 61 / 2));
    reader.execute_batch("COMMIT").expect("end");
    // The next transaction sees the shrunken database.
    assert_eq!(read_transaction(&reader), Ok(10));
    // With no reader left, compaction folds the rest.
    drop(reader);
    s.engine.compact("long").expect("compact");
    let stat = s.engine.stat("long").expect("stat");
    assert_eq!(stat.page_index_entries, 0, "{stat:?}");
    let audit = s.engine.audit("long").expect("audit");
    assert!(audit.is_clean(), "{audit:#?}");
    assert_eq!(count(&writer), 10);
}

#[test]
fn a_long_read_sees_one_state_memory() {
    a_long_read_sees_one_state(Backend::Memory);
}

#[test]
fn a_long_read_sees_one_state_embedded() {
    a_long_read_sees_one_state(Backend::Embedded);
}

#[test]
fn a_long_read_sees_one_state_postgres() {
    a_long_read_sees_one_state(Backend::Postgres);
}

#[test]
fn a_read_only_open_of_a_missing_database_fails_and_creates_nothing() {
    let s = setup(Backend::Memory);
    let err = s.vfs.open_readonly("nothing-here").unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert!(s.engine.list("", None, 10).expect("list").is_empty());
}

/// A writer committing continuously while 8 readers run long scans, with
/// the background compactor folding as it goes: no failure anywhere, and
/// every read transaction sees exactly one committed state.
fn eight_readers_and_a_writer(backend: Backend) {
    let s = setup(backend);
    let compactor = s.engine.start_compactor();
    let writer = s.vfs.open("busy").expect("writer");
    create(&writer);
    for n in 1..=50 {
        write_one(&writer, n);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let transactions = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (vfs, stop, transactions) = (s.vfs.clone(), stop.clone(), transactions.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let conn = vfs.open_readonly("busy").map_err(|e| e.to_string())?;
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = read_transaction(&conn)?;
                    if n < last {
                        return Err(format!("went back from {last} to {n}"));
                    }
                    last = n;
                    transactions.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let mut n = 50;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < deadline || transactions.load(Ordering::Relaxed) < 40 {
        n += 1;
        write_one(&writer, n);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader thread").expect("reader");
    }
    drop(compactor);
    assert_eq!(count(&writer), n, "every writer commit landed");
    let audit = s.engine.audit("busy").expect("audit");
    assert!(audit.is_clean(), "{audit:#?}");
}

#[test]
fn eight_readers_and_a_writer_memory() {
    eight_readers_and_a_writer(Backend::Memory);
}

#[test]
fn eight_readers_and_a_writer_embedded() {
    eight_readers_and_a_writer(Backend::Embedded);
}

#[test]
fn eight_readers_and_a_writer_postgres() {
    eight_readers_and_a_writer(Backend::Postgres);
}

/// A connection at a past commit (`Vfs::open_at`) reads exactly that state,
/// named by its commit or by a time, after the writer went on, deleted,
/// vacuumed and compacted; it never takes the database over, cannot write,
/// and a point the database no longer keeps is refused with the reason.
fn a_connection_in_the_past_reads_that_commit(backend: Backend) {
    use kvlite_api::ReadPoint;
    let s = setup(backend);
    let writer = s.vfs.open("past").expect("writer");
    create(&writer);
    let mut points = Vec::new();
    for n in 1..=25 {
        write_one(&writer, n);
        points.push((n, s.engine.stat("past").expect("stat").head_txid));
        // Commits a few milliseconds apart, so each has its own time.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    writer
        .execute_batch("DELETE FROM t WHERE k > 5; UPDATE counter SET n = 5; VACUUM;")
        .expect("shrink");
    s.engine.compact("past").expect("compact");
    let generation = s.engine.stat("past").expect("stat").generation;
    let times = s
        .engine
        .history("past", None, 1000)
        .expect("history")
        .commits;
    for &(n, txid) in &points {
        let at = s
            .vfs
            .open_at("past", ReadPoint::Txid(txid))
            .expect("open at");
        assert_eq!(read_transaction(&at), Ok(n), "commit {txid}");
        let time = times
            .iter()
            .find(|c| c.txid == txid)
            .expect("listed")
            .time_ms;
        let by_time = s
            .vfs
            .open_at("past", ReadPoint::TimeMs(time))
            .expect("open at a time");
        assert_eq!(read_transaction(&by_time), Ok(n), "at {time} ms");
        let err = at
            .execute("INSERT INTO t VALUES (99, 1, NULL)", [])
            .unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(ErrorCode::ReadOnly), "{err}");
    }
    assert_eq!(count(&writer), 5, "the writer was not disturbed");
    assert_eq!(s.engine.stat("past").expect("stat").generation, generation);
    // Without history, the past goes at the next pass, and says so.
    s.engine.set_retention("past", Some(0)).expect("no history");
    write_one(&writer, 6);
    s.engine.compact("past").expect("compact");
    let err = s
        .vfs
        .open_at("past", ReadPoint::Txid(points[0].1))
        .expect_err("gone");
    let why = s.vfs.last_error("past").unwrap_or_default();
    assert!(why.contains("no longer keeps"), "{err}: {why}");
}

#[test]
fn a_connection_in_the_past_reads_that_commit_memory() {
    a_connection_in_the_past_reads_that_commit(Backend::Memory);
}

#[test]
fn a_connection_in_the_past_reads_that_commit_embedded() {
    a_connection_in_the_past_reads_that_commit(Backend::Embedded);
}

#[test]
fn a_connection_in_the_past_reads_that_commit_postgres() {
    a_connection_in_the_past_reads_that_commit(Backend::Postgres);
}

/// A row updated in place (no page count change) is seen by the reader's
/// next transaction: SQLite's own page cache is dropped when the reader
/// moves to a newer commit (its page 1 carries a change counter of its
/// own), not only the VFS's.
fn a_reader_sees_updates_in_place(backend: Backend) {
    let s = setup(backend);
    let writer = s.vfs.open("inplace").expect("writer");
    writer
        .execute_batch("CREATE TABLE c(id INTEGER PRIMARY KEY, n); INSERT INTO c VALUES (1, 0);")
        .expect("create");
    let reader = s.vfs.open_readonly("inplace").expect("reader");
    for n in 1..=5 {
        writer
            .execute("UPDATE c SET n = ?1 WHERE id = 1", [n])
            .expect("update");
        let got: i64 = reader
            .query_row("SELECT n FROM c WHERE id = 1", [], |r| r.get(0))
            .expect("read");
        assert_eq!(got, n, "the reader's next transaction sees update {n}");
    }
    assert_eq!(
        rows_of(&reader, "PRAGMA integrity_check"),
        "ok",
        "the counter a reader sees keeps SQLite's header consistent"
    );
}

fn rows_of(conn: &rusqlite::Connection, sql: &str) -> String {
    conn.query_row(sql, [], |r| r.get::<_, String>(0))
        .expect("query")
}

#[test]
fn a_reader_sees_updates_in_place_memory() {
    a_reader_sees_updates_in_place(Backend::Memory);
}

#[test]
fn a_reader_sees_updates_in_place_embedded() {
    a_reader_sees_updates_in_place(Backend::Embedded);
}

/// A reader's scan fetches its next windows on other threads. Windows still
/// under way when its read transaction ends were read at that commit: after
/// the writer changes their pages, the reader's next transaction must not
/// take them in.
fn a_reader_never_takes_in_a_window_fetched_before_a_commit(backend: Backend) {
    let s = setup(backend);
    let writer = s.vfs.open("scan").expect("writer");
    writer
        .execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO t SELECT i, 1, randomblob(4000) FROM n;",
        )
        .expect("fill");
    let reader = s.vfs.open_readonly("scan").expect("reader");
    {
        let mut stmt = reader
            .prepare("SELECT v FROM t ORDER BY id")
            .expect("prepare");
        let mut rows = stmt.query([]).expect("scan");
        for _ in 0..150 {
            rows.next().expect("step").expect("a row");
        }
    }
    let m = s.vfs.metrics();
    assert!(m.prefetches > m.prefetches_used, "windows under way: {m:?}");
    writer
        .execute("UPDATE t SET v = 2 WHERE id BETWEEN 160 AND 2500", [])
        .expect("update");
    let (changed, sum): (i64, i64) = reader
        .query_row(
            "SELECT count(*), sum(v) FROM t WHERE id BETWEEN 160 AND 2500",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("read");
    assert_eq!(sum, 2 * changed, "every row as the writer left it");
    assert_eq!(rows_of(&reader, "PRAGMA integrity_check"), "ok");
}

#[test]
fn a_reader_never_takes_in_a_window_fetched_before_a_commit_memory() {
    a_reader_never_takes_in_a_window_fetched_before_a_commit(Backend::Memory);
}

#[test]
fn a_reader_never_takes_in_a_window_fetched_before_a_commit_embedded() {
    a_reader_never_takes_in_a_window_fetched_before_a_commit(Backend::Embedded);
}
