//! `kvlite serve` killed with `kill -9` over and over while several clients
//! write to several databases: after every restart every acknowledged write
//! is there, and nothing reported as failed-and-not-landed landed.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: usize = 3;
const KILLS: usize = 8;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Start `kvlite serve` on `data` and wait until it serves.
fn serve(data: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvlite"))
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("server output").expect("line");
        if line.contains("kvlite serving") {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

/// What one writer saw.
#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<i64>,
    /// Reported failed, with the error.
    failed: Vec<(i64, String)>,
}

#[test]
fn kill_9_of_the_server_under_concurrent_writers_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut server = serve(&data, port);

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Vec<Arc<Mutex<Outcomes>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, out, url) = (stop.clone(), outcomes[w].clone(), url.clone());
            std::thread::spawn(move || {
                let transport = Arc::new(
                    kvlite_client::RemoteTransport::connect(
                        &url,
                        None,
                        kvlite_client::RemoteOptions {
                            request_timeout: Duration::from_secs(20),
                            max_backoff: Duration::from_millis(100),
                            ..Default::default()
                        },
                    )
                    .expect("connect"),
                );
                let vfs = kvlite_vfs::Vfs::register(
                    &format!("chaos-{port}-{w}"),
                    transport,
                    Default::default(),
                )
                .expect("register");
                let db = format!("db{w}");
                let open = || loop {
                    match vfs.open(&db) {
                        Ok(c) => break c,
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                };
                let mut conn = open();
                while conn
                    .execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
                    .is_err()
                {
                    conn = open();
                }
                let mut id = 0i64;
                while !stop.load(Ordering::SeqCst) {
                    id += 1;
                    match conn.execute("INSERT INTO t VALUES (?1, randomblob(2000))", [id]) {
                        Ok(_) => {
                            out.lock().unwrap().acked.insert(id);
                        }
                        Err(e) => {
                            let reason = vfs.last_error(&db).unwrap_or_default();
                            out.lock()
                                .unwrap()
                                .failed
                                .push((id, format!("{e} ({reason})")));
                            conn = open();
                        }
                    }
                }
            })
        })
        .collect();

    let mut rng = fastrand::Rng::with_seed(0xC4A05);
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1200)));
        server.kill().expect("kill -9");
        server.wait().expect("reap");
        std::thread::sleep(Duration::from_millis(rng.u64(0..300)));
        server = serve(&data, port);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer");
    }
    server.kill().expect("kill -9");
    server.wait().expect("reap");

    // Read every database straight from the store the server left.
    for (w, out) in outcomes.iter().enumerate() {
        let out = out.lock().unwrap();
        let listed = Command::new(env!("CARGO_BIN_EXE_kvlite"))
            .arg("--data")
            .arg(&data)
            .args(["sql", &format!("db{w}"), "SELECT id FROM t ORDER BY id"])
            .output()
            .expect("kvlite sql");
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let stored: BTreeSet<i64> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(|l| l.trim().parse().expect("id"))
            .collect();
        let lost: Vec<&i64> = out.acked.difference(&stored).collect();
        assert!(lost.is_empty(), "db{w}: acknowledged writes lost: {lost:?}");
        // A failure is either "not landed" or, said as such, unknown.
        for (id, why) in &out.failed {
            if stored.contains(id) {
                assert!(
                    why.contains("outcome unknown") || why.contains("poisoned"),
                    "db{w}: write {id} reported failed ({why}) but landed"
                );
            }
        }
        assert!(
            out.acked.len() > 20,
            "db{w}: only {} writes acknowledged",
            out.acked.len()
        );
        eprintln!(
            "db{w}: {} acknowledged, {} failed across {KILLS} kills",
            out.acked.len(),
            out.failed.len()
        );
    }
}
