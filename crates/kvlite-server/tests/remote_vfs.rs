//! The VFS through a real server on a loopback port: the same SQL suites as
//! in process, on the embedded store and on PostgreSQL; lost connections at
//! every point of a commit; many databases on one connection.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Backend, TestServer, rows, unique};
use kvlite_api::Transport;
use kvlite_client::{RemoteOptions, RemoteTransport};
use kvlite_kv::Kv;
use kvlite_server::{FaultHooks, Tokens};
use kvlite_testkit::sql::{corpus_files, differential, run_sqllogictest};
use kvlite_vfs::{Vfs, VfsConfig};
use rusqlite::ErrorCode;

fn sqllogictest_through(backend: Backend) {
    let server = TestServer::start(backend);
    let (vfs, transport) = server.vfs();
    let mut failures = Vec::new();
    let files = corpus_files();
    assert!(files.len() >= 17, "the corpus has {} files", files.len());
    for (i, path) in files.iter().enumerate() {
        let vfs = vfs.clone();
        let db = format!("slt-{i}");
        if let Err(report) =
            run_sqllogictest(path, move || vfs.open(&db).map_err(|e| e.to_string()))
        {
            failures.push(format!("{}: {report}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(transport.reconnects(), 0);
}

fn differential_through(backend: Backend, seed: u64, steps: usize) {
    let server = TestServer::start(backend);
    let (vfs, _) = server.vfs();
    let db = format!("diff-{seed}");
    differential(seed, steps, || vfs.open(&db).expect("open"));
    assert!(server.engine.audit(&db).expect("audit").is_clean());
}

fn stale_writer_through(backend: Backend) {
    let server = TestServer::start(backend);
    // Two hosts: two transports (two connections), like two processes.
    let (vfs_a, _) = server.vfs();
    let (vfs_b, _) = server.vfs();
    // The server tells the first connection at once: its writer stops
    // answering from its cache, with no round trip of its own.
    let (first, second) = taken_over_while_cached(&vfs_a, &vfs_b);
    let err = first.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    assert_eq!(err.sqlite_error_code(), Some(ErrorCode::ReadOnly), "{err}");
    assert!(
        vfs_a
            .last_error("shared")
            .expect("reason")
            .contains("fenced")
    );
    assert_eq!(
        rows(&second, "SELECT count(*) FROM t"),
        vec![vec!["i1".to_string()]],
        "the stale write changed nothing"
    );
    second
        .execute("INSERT INTO t VALUES (3)", [])
        .expect("the new writer writes");
    assert_eq!(rows(&second, "SELECT count(*) FROM t"), vec![vec!["i2"]]);
    // A restore through a third connection fences the second writer too.
    let (_, admin) = server.vfs();
    let head = server.engine.stat("shared").expect("stat").head_txid;
    admin
        .restore("shared", kvlite_api::ReadPoint::Txid(head - 1))
        .expect("restore");
    fails_soon(&second);
}

/// Two servers on one PostgreSQL store (two processes' engines): a
/// takeover through one reaches the writer on the other at once (the store
/// announces it), so its cached reads fail too, not only its next commit.
#[test]
fn a_takeover_through_another_server_stops_cached_reads() {
    let cluster = kvlite_testkit::PgCluster::shared().expect("PostgreSQL test cluster");
    let table = unique("two").replace('-', "_");
    let connect = || Kv::connect_postgres(&cluster.url(), &table).expect("connect");
    let one = TestServer::start_with(connect(), Tokens::default(), None);
    let other = TestServer::start_with(connect(), Tokens::default(), None);
    let (vfs_a, _) = one.vfs();
    let (vfs_b, _) = other.vfs();
    let (_first, second) = taken_over_while_cached(&vfs_a, &vfs_b);
    second
        .execute("INSERT INTO t VALUES (2)", [])
        .expect("the new writer writes");
}

/// A writer through `vfs_a` that reads from its cache, then a takeover
/// through `vfs_b`: the first writer's cached reads must soon fail, saying
/// another writer opened the database. Returns (first, second).
fn taken_over_while_cached(
    vfs_a: &Vfs,
    vfs_b: &Vfs,
) -> (rusqlite::Connection, rusqlite::Connection) {
    let first = vfs_a.open("shared").expect("open");
    first
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .expect("write");
    assert_eq!(rows(&first, "SELECT count(*) FROM t"), vec![vec!["i1"]]);
    let second = vfs_b.open("shared").expect("takeover");
    let err = fails_soon(&first);
    assert!(
        vfs_a
            .last_error("shared")
            .expect("reason")
            .contains("another writer opened it"),
        "{err}"
    );
    (first, second)
}

/// A writer's cached read, repeated until it fails (the takeover notice
/// travels on its own): it must fail with SQLite's read-only code.
fn fails_soon(conn: &rusqlite::Connection) -> rusqlite::Error {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)) {
            Err(e) => {
                assert_eq!(e.sqlite_error_code(), Some(ErrorCode::ReadOnly), "{e}");
                return e;
            }
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(n) => panic!("a fenced writer still answers from its cache ({n} rows)"),
        }
    }
}

/// A writer on one connection and four readers on another, through the
/// server (protocol v4), with the server's compactor folding as it goes:
/// the writer is never fenced and every read transaction sees one state.
fn readers_through(backend: Backend) {
    use kvlite_testkit::sql::states;
    let server = TestServer::start(backend);
    let compactor = server.engine.start_compactor();
    let (writer_vfs, _) = server.vfs();
    let (reader_vfs, _) = server.vfs();
    let writer = writer_vfs.open("watched").expect("writer");
    states::create(&writer);
    for n in 1..=30 {
        states::commit(&writer, n);
    }
    let generation = server.engine.stat("watched").expect("stat").generation;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (vfs, stop) = (reader_vfs.clone(), stop.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let conn = vfs.open_readonly("watched").map_err(|e| e.to_string())?;
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    states::read_transaction(&conn)?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut n = 30;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        n += 1;
        states::commit(&writer, n);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let done = r.join().expect("reader thread").expect("reader");
        assert!(done > 0, "a reader finished no transaction");
    }
    drop(compactor);
    assert_eq!(states::counter(&writer), Ok(n));
    assert_eq!(
        server.engine.stat("watched").expect("stat").generation,
        generation,
        "no reader took the database over"
    );
    assert!(server.engine.audit("watched").expect("audit").is_clean());
}

/// A reader whose connection goes away without ending its read (a process
/// killed) no longer holds compaction back: the server releases its pin.
#[test]
fn a_dropped_connection_releases_its_readers_pins() {
    let server = TestServer::start(Backend::Memory);
    let (vfs, _) = server.vfs();
    let writer = vfs.open("pinned").expect("writer");
    writer
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .expect("write");
    let reader = server.transport(None);
    reader.begin_read("pinned", 7, 0).expect("begin a read");
    writer
        .execute_batch("INSERT INTO t VALUES (2)")
        .expect("write");
    server.engine.compact("pinned").expect("compact");
    assert!(
        server
            .engine
            .stat("pinned")
            .expect("stat")
            .page_index_entries
            > 0,
        "the live reader holds the newer versions"
    );
    drop(reader);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        server.engine.compact("pinned").expect("compact");
        if server
            .engine
            .stat("pinned")
            .expect("stat")
            .page_index_entries
            == 0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pin outlived its connection"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn readers_through_the_server_embedded() {
    readers_through(Backend::Embedded);
}

#[test]
fn readers_through_the_server_postgres() {
    readers_through(Backend::Postgres);
}

#[test]
fn sqllogictest_through_the_server_embedded() {
    sqllogictest_through(Backend::Embedded);
}

#[test]
fn sqllogictest_through_the_server_postgres() {
    sqllogictest_through(Backend::Postgres);
}

#[test]
fn differential_through_the_server_embedded() {
    differential_through(Backend::Embedded, 11, 250);
}

#[test]
fn differential_through_the_server_postgres() {
    differential_through(Backend::Postgres, 12, 150);
}

#[test]
fn stale_writer_through_the_server_embedded() {
    stale_writer_through(Backend::Embedded);
}

#[test]
fn stale_writer_through_the_server_postgres() {
    stale_writer_through(Backend::Postgres);
}

/// Drops the connection at a chosen point of the next `count` matching ops.
#[derive(Default)]
struct Cut {
    before_engine: AtomicU32,
    before_reply: AtomicU32,
}

impl FaultHooks for Cut {
    fn before_engine(&self, op: &str) -> bool {
        is_commit(op) && take(&self.before_engine)
    }
    fn before_reply(&self, op: &str) -> bool {
        is_commit(op) && take(&self.before_reply)
    }
}

fn is_commit(op: &str) -> bool {
    op == "commit" || op == "commit_finish"
}

fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[test]
fn a_connection_cut_at_any_point_of_a_commit_loses_nothing_and_applies_once() {
    let hooks = Arc::new(Cut::default());
    let server = TestServer::start_with(Kv::memory(), Tokens::default(), Some(hooks.clone()));
    let transport = server.transport(None);
    let vfs =
        Vfs::register(&unique("cut"), transport.clone(), VfsConfig::default()).expect("register");
    let conn = vfs.open("cut").expect("open");
    conn.execute_batch("CREATE TABLE t(i INTEGER PRIMARY KEY, b BLOB)")
        .expect("create");
    let mut expected = 0;
    // Small commits take the fast path; 12 MiB ones the large path (finish).
    for (point, large) in [
        ("before send", false),
        ("after send, before the engine", false),
        ("after the engine committed, before the reply", false),
        ("before send", true),
        ("after send, before the engine", true),
        ("after the engine committed, before the reply", true),
    ] {
        match point {
            "before send" => transport.cut_before_next_commit(),
            "after send, before the engine" => hooks.before_engine.store(1, Ordering::SeqCst),
            _ => hooks.before_reply.store(1, Ordering::SeqCst),
        }
        let reconnects = transport.reconnects();
        let deltas = server.engine.stat("cut").expect("stat").deltas;
        let n = if large { 3000 } else { 10 };
        conn.execute(
            "INSERT INTO t(b) SELECT randomblob(4000) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT x FROM c)",
            [n],
        )
        .unwrap_or_else(|e| panic!("{point} (large: {large}): {e} / {:?}", vfs.last_error("cut")));
        expected += n;
        assert!(
            transport.reconnects() > reconnects,
            "{point}: the connection really dropped"
        );
        assert_eq!(
            server.engine.stat("cut").expect("stat").deltas,
            deltas + 1,
            "{point}: applied exactly once"
        );
        assert_eq!(
            rows(&conn, "SELECT count(*) FROM t"),
            vec![vec![format!("i{expected}")]],
            "{point}"
        );
    }
    assert_eq!(
        vfs.metrics().poisonings,
        0,
        "a network blip never poisons the connection"
    );
    let again = vfs.open("cut").expect("reopen");
    assert_eq!(
        rows(&again, "SELECT count(*) FROM t"),
        vec![vec![format!("i{expected}")]]
    );
    assert_eq!(
        rows(&again, "PRAGMA integrity_check"),
        vec![vec!["t\"ok\"".to_string()]]
    );
}

#[test]
fn a_thousand_databases_over_one_connection() {
    let server = TestServer::start(Backend::Embedded);
    let (vfs, transport) = server.vfs();
    let before = transport.round_trips();
    for i in 0..1000 {
        let conn = vfs.open(&format!("tenant-{i:04}")).expect("open");
        conn.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
            .expect("create");
        conn.execute("INSERT INTO kv VALUES ('me', ?)", [format!("tenant {i}")])
            .expect("insert");
    }
    let names = transport.list("tenant-", None, 5000).expect("list");
    assert_eq!(names.len(), 1000);
    for i in [0, 499, 999] {
        let conn = vfs.open(&format!("tenant-{i:04}")).expect("reopen");
        assert_eq!(
            rows(&conn, "SELECT v FROM kv"),
            vec![vec![format!("t\"tenant {i}\"")]]
        );
    }
    assert_eq!(transport.reconnects(), 0, "one connection throughout");
    assert!(transport.round_trips() - before >= 3000);
}

#[test]
fn an_unauthorized_token_is_a_clear_error() {
    let tokens = Tokens::parse("alpha alpha-token-0123456789").expect("tokens");
    let server = TestServer::start_with(Kv::memory(), tokens, None);
    let err = RemoteTransport::connect(
        &server.url(),
        Some("nope-nope-nope-nope"),
        RemoteOptions::default(),
    )
    .err()
    .expect("refused");
    assert!(matches!(err, kvlite_api::Error::Unauthorized(_)), "{err}");
    let ok = RemoteTransport::connect(
        &server.url(),
        Some("alpha-token-0123456789"),
        RemoteOptions::default(),
    );
    assert!(ok.is_ok());
}

#[test]
fn unusable_urls_and_options_fail_at_once() {
    // InvalidRequest, not Unavailable: refused before any connection
    // attempt instead of retried until the request deadline.
    for (url, options) in [
        ("wss://127.0.0.1:1", RemoteOptions::default()),
        ("http://127.0.0.1:1", RemoteOptions::default()),
        (
            "ws://127.0.0.1:1",
            RemoteOptions {
                added_latency: std::time::Duration::from_secs(u64::MAX / 4),
                ..RemoteOptions::default()
            },
        ),
    ] {
        let err = RemoteTransport::connect(url, None, options)
            .err()
            .expect("refused");
        assert!(
            matches!(err, kvlite_api::Error::InvalidRequest(_)),
            "{url}: {err}"
        );
    }
}

/// Through the server a client sees the engine's own state and errors:
/// every stat field (no invented id, origin or fast-path limit), typed
/// error kinds, and database names in its own namespace.
#[test]
fn stats_and_errors_through_the_server_are_the_engines() {
    use kvlite_api::{Error, InvalidKind, Preload, Transport};
    let tokens = Tokens::parse("alpha alpha-token-0123456789").expect("tokens");
    let server = TestServer::start_with(Kv::memory(), tokens, None);
    let remote = server.transport(Some("alpha-token-0123456789"));
    let o = remote.open("app", &Preload::default()).expect("open");
    remote
        .commit(&kvlite_api::CommitRequest {
            db: "app",
            generation: o.generation,
            expected_head: o.head_txid,
            new_size: 2,
            commit_id: 7,
            pages: &[(1, &[1u8; 4096]), (2, &[2u8; 4096])],
        })
        .expect("commit");
    let through = remote.stat("app").expect("remote stat");
    let local = server.engine.stat("alpha:app").expect("engine stat");
    assert_eq!(
        through,
        kvlite_api::DbStat {
            name: "app".into(),
            ..local
        }
    );
    assert_ne!(through.id, 0);
    assert_ne!(through.fast_path_limit, 0);
    // A stale head: the reason in full, the database as the client names it.
    let e = remote
        .commit(&kvlite_api::CommitRequest {
            db: "app",
            generation: o.generation,
            expected_head: o.head_txid,
            new_size: 1,
            commit_id: 8,
            pages: &[(1, &[3u8; 4096])],
        })
        .unwrap_err();
    match e {
        Error::Fenced { db, reason } => {
            assert_eq!(db, "app");
            assert_eq!(
                reason,
                kvlite_api::FenceReason::HeadMismatch {
                    generation: o.generation,
                    current: o.head_txid + 1,
                    expected: o.head_txid
                }
            );
        }
        other => panic!("{other:?}"),
    }
    let e = remote.get_pages("app", o.generation, &[0]).unwrap_err();
    assert_eq!(e.invalid_kind(), Some(InvalidKind::PageNumber), "{e}");
    // Compaction is an administrator's call.
    let e = remote.compact("app").unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e}");
}

/// A loopback listener that answers every connection with `reply` (after
/// reading the request), or closes the first `drop_first` connections at
/// once and forwards the rest to `forward`.
fn fake_server(reply: Option<&'static [u8]>, drop_first: usize, forward: Option<String>) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            if n < drop_first {
                drop(conn);
                continue;
            }
            if let Some(reply) = reply {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(reply);
                continue;
            }
            if let Some(to) = &forward {
                let Ok(up) = std::net::TcpStream::connect(to) else {
                    continue;
                };
                let (mut a, mut b) = (
                    conn.try_clone().expect("clone"),
                    up.try_clone().expect("clone"),
                );
                let (mut c, mut d) = (conn, up);
                std::thread::spawn(move || std::io::copy(&mut a, &mut b));
                std::thread::spawn(move || std::io::copy(&mut d, &mut c));
            }
        }
    });
    port
}

/// What is at the other end decides at once, with a specific error:
/// nothing listening, the wrong path, an HTTP server that is not kvlite,
/// something that does not speak HTTP (regression: each was "connection
/// lost during the handshake" after 30 s).
#[test]
fn what_is_not_a_kvlite_server_fails_at_once_and_says_what_it_is() {
    let server = TestServer::start(Backend::Memory);
    let http = fake_server(
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"),
        0,
        None,
    );
    let garbage = fake_server(Some(b"SSH-2.0-OpenSSH_9.2\r\n"), 0, None);
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cases = [
        (format!("ws://127.0.0.1:{refused}"), "connection refused"),
        (format!("{}/nope", server.url()), "404"),
        (
            format!("ws://127.0.0.1:{http}"),
            "200 OK: not a kvlite server",
        ),
        (format!("ws://127.0.0.1:{garbage}"), "not a kvlite server"),
    ];
    for (url, says) in cases {
        let started = std::time::Instant::now();
        let err = RemoteTransport::connect(&url, None, RemoteOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{url} connected"));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{url}: took {:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains(says), "{url}: {err}");
    }
}

/// Drops the connection instead of answering the first `n` pings.
struct DropPings(AtomicU32);

impl FaultHooks for DropPings {
    fn before_engine(&self, op: &str) -> bool {
        op == "ping" && take(&self.0)
    }
}

/// A connection dropped during the opening exchange (before the TCP
/// handshake completes, or with the first ping in flight) is tried again
/// within the deadline (regression: the client gave up at once).
#[test]
fn a_connection_dropped_during_the_handshake_is_retried() {
    let server = TestServer::start(Backend::Memory);
    let flaky = fake_server(None, 2, Some(server.addr.to_string()));
    let transport = RemoteTransport::connect(
        &format!("ws://127.0.0.1:{flaky}"),
        None,
        RemoteOptions::default(),
    )
    .expect("connected on the third try");
    transport.ping().expect("ping");

    let hooks = Arc::new(DropPings(AtomicU32::new(2)));
    let server = TestServer::start_with(Kv::memory(), Tokens::default(), Some(hooks.clone()));
    let transport = RemoteTransport::connect(&server.url(), None, RemoteOptions::default())
        .expect("connected although two opening pings were dropped");
    assert_eq!(hooks.0.load(Ordering::SeqCst), 0);
    assert_eq!(transport.reconnects(), 2);
}

/// A remote client opening a v1 database: the server migrates it first (the
/// v1 bytes never cross the network: the open plus a few page reads), then
/// serves it as v2; the data is what SQLite wrote as v1.
fn v1_database_through(backend: Backend) {
    let server = TestServer::start(backend);
    let v1 = kvlite_vfs::V1Vfs::register(&unique("v1"), Arc::new(server.engine.v1_files()))
        .expect("v1 vfs");
    let conn = v1.open("legacy").expect("v1 open");
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 400)
         INSERT INTO t(body) SELECT randomblob(2000) FROM s;
         CREATE INDEX tb ON t(length(body));",
    )
    .expect("v1 writes");
    let expected = rows(&conn, "SELECT id, hex(body) FROM t ORDER BY id");
    drop(conn);
    let (vfs, transport) = server.vfs();
    assert_eq!(
        transport.list("", None, 10).expect("list"),
        vec!["legacy".to_string()]
    );
    let before = transport.round_trips();
    let remote = vfs.open("legacy").expect("open migrates");
    assert_eq!(
        rows(&remote, "SELECT id, hex(body) FROM t ORDER BY id"),
        expected
    );
    assert_eq!(
        rows(&remote, "PRAGMA integrity_check"),
        vec![vec!["t\"ok\"".to_string()]]
    );
    // ~230 pages of data read in batches, never the v1 chunks one by one.
    let trips = transport.round_trips() - before;
    assert!(trips < 40, "{trips} round trips");
    let stat = transport.stat("legacy").expect("stat");
    assert_eq!(stat.origin, kvlite_api::Origin::MigratedFromV1);
    let m = &server.engine.metrics().migration;
    assert_eq!((m.attempts.get(), m.successes.get()), (1, 1));
    let text = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("read");
        body
    };
    assert!(
        text.contains("kvlite_engine_migration_successes_total 1"),
        "{text}"
    );
}

#[test]
fn v1_database_through_the_server_embedded() {
    v1_database_through(Backend::Embedded);
}

#[test]
fn v1_database_through_the_server_postgres() {
    v1_database_through(Backend::Postgres);
}

/// An open that waits on the server for a migration longer than the
/// client's request timeout still gets its answer: here the lease of a dead
/// job must expire (2 s) before the server can migrate, and the client's
/// request timeout is 500 ms.
#[test]
fn an_open_waits_for_a_migration_past_the_request_timeout() {
    let server = TestServer::start(Backend::Memory);
    server
        .engine
        .v1_files()
        .import("slow", &mut std::io::empty())
        .expect("import");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut lease = vec![1u8];
    lease.extend_from_slice(&9u128.to_be_bytes());
    lease.extend_from_slice(&(now + 2000).to_be_bytes());
    server
        .engine
        .kv()
        .transact(|txn| {
            txn.set(&[&[0x02, b'l'][..], b"slow"].concat(), &lease)?;
            Ok::<_, kvlite_kv::KvError>(())
        })
        .expect("plant a dead job's lease");
    let transport = RemoteTransport::connect(
        &server.url(),
        None,
        RemoteOptions {
            request_timeout: std::time::Duration::from_millis(500),
            ..RemoteOptions::default()
        },
    )
    .expect("connect");
    let started = std::time::Instant::now();
    let opened = transport
        .open("slow", &kvlite_api::Preload::default())
        .expect("the open waits for the migration");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    assert_eq!(opened.size_pages, 0);
    assert_eq!(
        transport.stat("slow").expect("stat").origin,
        kvlite_api::Origin::MigratedFromV1
    );
}

/// An answer that does not decode fails its request at once with a typed
/// error: the caller neither waits out the request timeout nor sends the
/// request again and again (the client decodes answers on the caller's
/// thread, so it learns at once that its own answer was bad).
#[test]
fn an_answer_that_does_not_decode_fails_the_request_at_once() {
    use std::time::{Duration, Instant};
    use tokio_tungstenite::tungstenite::{self, Message};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicU32::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(conn) else {
                    return;
                };
                // The hello, accepted in the newest version.
                if ws.read().is_err() {
                    return;
                }
                let reply = kvlite_proto::encode_hello_reply(&kvlite_proto::HelloReply::Accepted {
                    version: kvlite_proto::LATEST_VERSION,
                })
                .expect("hello reply");
                if ws.send(Message::Binary(reply.into())).is_err() {
                    return;
                }
                // Every request: its id, then a response tag no version has.
                while let Ok(Message::Binary(request)) = ws.read() {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let id = kvlite_proto::peek_request_id(&request).unwrap_or(0);
                    let mut answer = id.to_le_bytes().to_vec();
                    answer.extend_from_slice(&[0xff, 0xff, 0xff, 0x0f]);
                    if ws.send(Message::Binary(answer.into())).is_err() {
                        return;
                    }
                }
            });
        }
    });
    // The transport's first request (a ping, inside `connect`) gets such
    // an answer.
    let started = Instant::now();
    let err = RemoteTransport::connect(
        &format!("ws://127.0.0.1:{port}"),
        None,
        RemoteOptions::default(),
    )
    .err()
    .expect("a malformed answer");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the request waited {:?} for an answer it had",
        started.elapsed()
    );
    assert!(matches!(err, kvlite_api::Error::Internal(_)), "{err:?}");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "the request was sent again"
    );
}
