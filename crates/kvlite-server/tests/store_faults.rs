//! Faults of the server's own store, seen by a client through a real
//! server: PostgreSQL losing the session during COMMIT, and PostgreSQL
//! killing sessions over and over while a client writes.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, rows, unique};
use kvlite_kv::{Kv, RetryPolicy};
use kvlite_server::Tokens;
use kvlite_testkit::{Cut, CutProxy, PgCluster};

/// A KV on a fresh PostgreSQL database reached through a cutting proxy,
/// retrying only a few times and waiting little for a connection (so a
/// store outage outlasts the engine's retries and reaches the client as an
/// unknown outcome).
fn proxied_kv() -> (Kv, CutProxy) {
    let cluster = PgCluster::shared().expect("PostgreSQL test cluster");
    let url = cluster.fresh_database().expect("database");
    let dbname = url.rsplit('/').next().expect("db name").to_string();
    let proxy = CutProxy::start(&format!("{}:{}", cluster.host(), cluster.port())).expect("proxy");
    let via = format!(
        "postgresql://{}@127.0.0.1:{}/{dbname}",
        cluster.user(),
        proxy.port()
    );
    let mut options = kvlite_kv::postgres::PostgresOptions::new("kv");
    options.connect_timeout = Duration::from_millis(200);
    let backend = kvlite_kv::postgres::PostgresBackend::connect(&via, options)
        .expect("connect through the proxy");
    let kv = Kv::new(std::sync::Arc::new(backend)).with_retry_policy(RetryPolicy {
        max_attempts: 3,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    });
    (kv, proxy)
}

/// PostgreSQL loses the session while COMMIT is in flight and stays away
/// longer than the engine retries: the client gets "outcome unknown" from
/// the server, resolves it through the commit id once the store is back,
/// and SQLite sees the truth (regression: it was answered as "unavailable",
/// reported as a failed commit, and SQLite's retry was then fenced).
#[test]
fn a_commit_cut_at_the_store_is_resolved_not_misreported() {
    for cut in [Cut::AfterCommit, Cut::BeforeCommit] {
        let (kv, proxy) = proxied_kv();
        let server = TestServer::start_with(kv, Tokens::default(), None);
        let (vfs, _transport) = server.vfs();
        let db = unique("cut");
        let conn = vfs.open(&db).expect("open");
        conn.execute_batch("CREATE TABLE t(x INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)")
            .expect("write");
        // The insert's COMMIT, not a read's that happens to come first.
        proxy.arm_after_writes(cut, Duration::from_millis(1500));
        let started = Instant::now();
        conn.execute("INSERT INTO t VALUES (2)", [])
            .unwrap_or_else(|e| panic!("{cut:?}: {e} ({:?})", vfs.last_error(&db)));
        assert_eq!(proxy.cuts(), 1, "{cut:?}: the COMMIT was cut");
        assert!(
            started.elapsed() >= Duration::from_millis(1400),
            "{cut:?}: the outage outlasted the engine's retries"
        );
        conn.execute("INSERT INTO t VALUES (3)", [])
            .expect("the connection still writes");
        drop(conn);
        let again = vfs.open(&db).expect("reopen");
        assert_eq!(
            rows(&again, "SELECT x FROM t ORDER BY x"),
            vec![vec!["i1"], vec!["i2"], vec!["i3"]],
            "{cut:?}: every commit once"
        );
    }
}

/// PostgreSQL terminates kvlite's sessions every 20-150 ms while a client
/// inserts unique ids through the server: no acknowledged insert is lost,
/// and none reported as failed had landed (regression: 7 of 4,485 were
/// misreported and 968 failed outright in the outside chaos run).
#[test]
fn sessions_killed_under_a_writer_lose_and_misreport_nothing() {
    let cluster = PgCluster::shared().expect("PostgreSQL test cluster");
    let url = cluster.fresh_database().expect("database");
    let dbname = url.rsplit('/').next().expect("db name").to_string();
    let kv = Kv::connect_postgres(&url, "kv").expect("connect");
    let server = TestServer::start_with(kv, Tokens::default(), None);
    let (vfs, _transport) = server.vfs();
    let db = unique("chaos");
    let mut conn = vfs.open(&db).expect("open");
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        .expect("create");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let admin_url = cluster.url();
        std::thread::spawn(move || {
            let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls).expect("admin");
            let mut rng = fastrand::Rng::with_seed(5);
            let mut killed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(rng.u64(20..150)));
                let r = admin
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[&dbname],
                    )
                    .expect("terminate");
                killed += r.len() as u64;
            }
            killed
        })
    };
    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(12);
    let mut id = 0i64;
    while Instant::now() < until {
        id += 1;
        match conn.execute("INSERT INTO t VALUES (?1)", [id]) {
            Ok(_) => acked.push(id),
            Err(e) => {
                failed.push((id, format!("{e} ({:?})", vfs.last_error(&db))));
                conn = vfs.open(&db).expect("reopen after a failure");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let killed = killer.join().expect("killer");
    assert!(killed >= 20, "only {killed} sessions were terminated");

    let check = vfs.open(&db).expect("reopen");
    let stored: std::collections::BTreeSet<i64> = rows(&check, "SELECT id FROM t")
        .into_iter()
        .map(|r| r[0].trim_start_matches('i').parse().expect("id"))
        .collect();
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|i| !stored.contains(i))
        .collect();
    let misreported: Vec<&(i64, String)> =
        failed.iter().filter(|(i, _)| stored.contains(i)).collect();
    assert!(lost.is_empty(), "acknowledged inserts lost: {lost:?}");
    assert!(
        misreported.is_empty(),
        "reported failed but landed: {misreported:?}"
    );
    // PostgreSQL was reachable throughout (only sessions died): every
    // failure is a bug of retrying.
    assert!(
        failed.is_empty(),
        "{} of {} inserts failed while the store was reachable: {:?}",
        failed.len(),
        id,
        failed.iter().take(3).collect::<Vec<_>>()
    );
    eprintln!("{} inserts, {killed} sessions terminated", acked.len());
}

/// The embedded store's disk fills up under a writer: the writer gets a
/// clear "disk full", reads keep working, `/health` says the server is
/// degraded, and once space is back everything works again without a
/// restart (regression: one ENOSPC wedged every database until restart).
#[test]
fn a_full_disk_is_a_clear_error_and_recovers_by_itself() {
    let fs = kvlite_testkit::Tmpfs::mount(24 << 20).expect("a tmpfs (tests run as root)");
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 << 20]).expect("ballast");
    let kv = Kv::open_embedded(&fs.path().join("store")).expect("open");
    let server = TestServer::start_with(kv, Tokens::default(), None);
    let health = || -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read");
        body
    };
    assert!(health().starts_with("HTTP/1.1 200"), "{}", health());
    let (vfs, _transport) = server.vfs();
    let db = unique("full");
    let conn = vfs.open(&db).expect("open");
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        .expect("create");
    let mut acked = 0i64;
    let err = loop {
        match conn.execute("INSERT INTO t VALUES (?1, randomblob(200000))", [acked + 1]) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 1000, "the disk never filled");
    };
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull),
        "{err}"
    );
    let reason = vfs.last_error(&db).expect("a reason");
    assert!(reason.contains("full"), "{reason}");
    let h = health();
    assert!(
        h.starts_with("HTTP/1.1 503") && h.contains("store is full"),
        "{h}"
    );
    // Reads keep working, and see every acknowledged row.
    assert_eq!(
        rows(&conn, "SELECT count(*) FROM t"),
        vec![vec![format!("i{acked}")]]
    );
    // Space comes back: writes work again, and health with them.
    std::fs::remove_file(&ballast).expect("free space");
    conn.execute("INSERT INTO t VALUES (?1, randomblob(1000))", [acked + 1])
        .expect("a write once space is back");
    assert!(health().starts_with("HTTP/1.1 200"), "{}", health());
    drop(conn);
    let again = vfs.open(&db).expect("reopen");
    assert_eq!(
        rows(&again, "SELECT count(*) FROM t"),
        vec![vec![format!("i{}", acked + 1)]]
    );
    assert_eq!(
        rows(&again, "PRAGMA integrity_check"),
        vec![vec!["t\"ok\""]]
    );
}
