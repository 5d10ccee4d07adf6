//! `kill -9` the server (a child process on the embedded store) during a
//! stream of commits, start it again on the same port and files: the client
//! reconnects by itself, every acknowledged commit is there, no commit is
//! half-applied, and `PRAGMA integrity_check` is ok.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{rows, unique};
use kvlite_client::{RemoteOptions, RemoteTransport};
use kvlite_vfs::{Vfs, VfsConfig};

const DIR_ENV: &str = "KVLITE_SERVER_CHILD_DIR";
const PORT_ENV: &str = "KVLITE_SERVER_CHILD_PORT";

/// The server process the restart tests kill (run by them with
/// `--ignored`).
#[test]
#[ignore = "the child process of the restart tests"]
fn server_child() {
    let (Ok(dir), Ok(port)) = (std::env::var(DIR_ENV), std::env::var(PORT_ENV)) else {
        panic!("run by the restart tests, with {DIR_ENV} and {PORT_ENV} set");
    };
    let kv = kvlite_kv::Kv::open_embedded(std::path::Path::new(&dir)).expect("open store");
    let mut registry = prometheus_client::registry::Registry::default();
    let engine = kvlite_engine::Engine::new(kv, Default::default(), &mut registry);
    let config =
        kvlite_server::ServerConfig::new(format!("127.0.0.1:{port}").parse().expect("addr"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let bound = kvlite_server::BoundServer::bind(engine, registry, config)
            .await
            .expect("bind");
        println!("\nREADY");
        bound.serve(std::future::pending()).await.expect("serve");
    });
}

fn spawn_server(dir: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "server_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(PORT_ENV, port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in lines.by_ref() {
        if line.expect("line").starts_with("READY") {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn killing_the_server_mid_stream_loses_no_acknowledged_commit() {
    if std::env::var(DIR_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut server = spawn_server(dir.path(), port);
    let transport = Arc::new(
        RemoteTransport::connect(
            &format!("ws://127.0.0.1:{port}"),
            None,
            RemoteOptions::default(),
        )
        .expect("connect"),
    );
    let vfs = Vfs::register(&unique("restart"), transport.clone(), VfsConfig::default())
        .expect("register");
    let conn = vfs.open("stream").expect("open");
    conn.execute_batch(
        "CREATE TABLE log(i INTEGER PRIMARY KEY, payload BLOB);
         CREATE TABLE mirror(i INTEGER PRIMARY KEY, len INTEGER);",
    )
    .expect("schema");

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                // Two tables in one transaction: both rows or neither.
                let r = conn.execute_batch(&format!(
                    "BEGIN; INSERT INTO log VALUES ({i}, randomblob(20000));
                     INSERT INTO mirror VALUES ({i}, 20000); COMMIT;"
                ));
                match r {
                    Ok(()) => acked.store(i, Ordering::SeqCst),
                    Err(e) => {
                        failures.push(format!("commit {i}: {e}"));
                        let _ = conn.execute_batch("ROLLBACK");
                        break;
                    }
                }
            }
            (conn, failures)
        })
    };
    // Wait for 40 more acknowledged commits, or for the writer to give up
    // (then the join below reports why instead of this test hanging).
    let forty_more = || {
        let target = acked.load(Ordering::SeqCst) + 40;
        while acked.load(Ordering::SeqCst) < target && !writer.is_finished() {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    for round in 0..3 {
        forty_more();
        server.kill().expect("kill -9");
        server.wait().expect("reap");
        std::thread::sleep(Duration::from_millis(100 * round));
        server = spawn_server(dir.path(), port);
    }
    forty_more();
    stop.store(true, Ordering::SeqCst);
    let (conn, failures) = writer.join().expect("writer");
    assert!(
        failures.is_empty(),
        "the client rode out every restart: {failures:?}"
    );
    assert!(
        transport.reconnects() >= 3,
        "{} reconnects",
        transport.reconnects()
    );
    let n = acked.load(Ordering::SeqCst);
    assert_eq!(
        rows(&conn, "SELECT count(*), max(i) FROM log"),
        vec![vec![format!("i{n}"), format!("i{n}")]]
    );
    // A fresh connection sees the same, consistent state.
    let check = vfs.open("stream").expect("reopen");
    assert_eq!(
        rows(&check, "SELECT count(*) FROM log"),
        vec![vec![format!("i{n}")]]
    );
    assert_eq!(
        rows(
            &check,
            "SELECT count(*) FROM log JOIN mirror USING (i) WHERE length(payload) = len"
        ),
        vec![vec![format!("i{n}")]],
        "no half-applied commit"
    );
    assert_eq!(
        rows(&check, "PRAGMA integrity_check"),
        vec![vec!["t\"ok\"".to_string()]]
    );
    drop(check);
    let _ = server.kill();
    let _ = server.wait();
}
