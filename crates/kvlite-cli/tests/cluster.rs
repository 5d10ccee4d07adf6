//! Several `kvlite serve` processes on one PostgreSQL database: actors hop
//! between the servers at random while they write, and servers are killed
//! with `kill -9` and restarted meanwhile. No acknowledged commit is lost,
//! every server reads what the others wrote (no stale cache), a takeover
//! through one server fences the writer on another, and every database
//! passes `kvlite doctor` at the end.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvlite_vfs::Vfs;

const SERVERS: usize = 3;
const ACTORS: usize = 6;
const HOPS: usize = 60;
const ROWS_PER_HOP: i64 = 3;

use common::free_port;

fn serve(url: &str, port: u16) -> common::Server {
    common::serve_on(&["--postgres", url], port, &[])
}

/// A fresh client of the server on `port` (an actor restarting elsewhere),
/// or `None` when nothing listens there now.
fn client(port: u16) -> Option<Vfs> {
    common::remote_vfs(port, Duration::from_secs(20))
}

/// (rows, largest i) of actor table `t`.
fn rows(conn: &rusqlite::Connection) -> (i64, i64) {
    conn.query_row("SELECT count(*), coalesce(max(i), 0) FROM t", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

#[test]
fn actors_hop_between_servers_that_crash_and_lose_nothing() {
    let cluster = kvlite_testkit::PgCluster::shared().expect("PostgreSQL test cluster");
    let url = cluster.fresh_database().expect("database");
    let ports: Vec<u16> = (0..SERVERS).map(|_| free_port()).collect();
    let servers: Arc<Mutex<Vec<common::Server>>> =
        Arc::new(Mutex::new(ports.iter().map(|&p| serve(&url, p)).collect()));
    let done = Arc::new(AtomicBool::new(false));

    // kill -9 a server now and then, and start it again on its port.
    let killer = {
        let (servers, done, ports, url) =
            (servers.clone(), done.clone(), ports.clone(), url.clone());
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(11);
            let mut kills = 0;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(rng.u64(100..400)));
                let victim = rng.usize(..SERVERS);
                let mut s = servers.lock().unwrap();
                s[victim].kill().unwrap();
                s[victim].wait().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                s[victim] = serve(&url, ports[victim]);
                kills += 1;
            }
            kills
        })
    };

    let actors: Vec<_> = (0..ACTORS)
        .map(|a| {
            let ports = ports.clone();
            std::thread::spawn(move || {
                let db = format!("actor{a}");
                let mut rng = fastrand::Rng::with_seed(a as u64);
                let (mut acked, mut hops, mut failures) = (0i64, 0, 0);
                while hops < HOPS {
                    let Some(vfs) = client(ports[rng.usize(..SERVERS)]) else {
                        continue; // that server is down: the actor tries another
                    };
                    let conn = match vfs.open(&db) {
                        Ok(c) => c,
                        Err(_) => {
                            failures += 1;
                            continue;
                        }
                    };
                    if conn
                        .execute_batch(
                            "CREATE TABLE IF NOT EXISTS t(i INTEGER PRIMARY KEY, v BLOB)",
                        )
                        .is_err()
                    {
                        failures += 1;
                        continue;
                    }
                    // Whatever server it lands on sees every acknowledged row
                    // (and at most the one commit whose answer was lost).
                    let (count, max) = rows(&conn);
                    assert_eq!(count, max, "{db}: rows missing in 1..={max}");
                    assert!(
                        max == acked || max == acked + 1,
                        "{db}: acknowledged {acked}, found {max}"
                    );
                    acked = max;
                    for _ in 0..ROWS_PER_HOP {
                        let next = acked + 1;
                        match conn.execute("INSERT INTO t VALUES (?1, randomblob(2000))", [next]) {
                            Ok(_) => acked = next,
                            Err(_) => {
                                failures += 1;
                                break;
                            }
                        }
                    }
                    hops += 1;
                }
                (db, acked, failures)
            })
        })
        .collect();
    let results: Vec<(String, i64, u32)> = actors.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let kills = killer.join().unwrap();
    assert!(kills >= 3, "only {kills} kills during the run");

    // Every server agrees on every database.
    for (db, acked, _) in &results {
        for &port in &ports {
            let vfs = client(port).expect("server up");
            let conn = vfs.open_readonly(db).unwrap();
            let (count, max) = rows(&conn);
            assert_eq!(count, max, "{db} through :{port}");
            assert!(
                max == *acked || max == *acked + 1,
                "{db} through :{port}: {max} vs {acked}"
            );
        }
    }

    // A takeover through one server fences the writer on another.
    let (vfs_a, vfs_b) = (client(ports[0]).unwrap(), client(ports[1]).unwrap());
    let first = vfs_a.open("fence").unwrap();
    first.execute_batch("CREATE TABLE t(i)").unwrap();
    let second = vfs_b.open("fence").unwrap();
    second.execute("INSERT INTO t VALUES (1)", []).unwrap();
    let e = first.execute("INSERT INTO t VALUES (2)", []).unwrap_err();
    let e = vfs_a.sqlite_error("fence", e).to_string();
    assert!(e.contains("another writer opened it"), "{e}");
    drop((first, second));

    for s in servers.lock().unwrap().iter_mut() {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    let mut compacted = 0;
    for (db, _, _) in &results {
        let out = Command::new(env!("CARGO_BIN_EXE_kvlite"))
            .args(["--postgres", &url, "inspect", "--json", db])
            .output()
            .unwrap();
        let stat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if stat["materialized_txid"].as_u64().unwrap() > 1 {
            compacted += 1;
        }
        common::assert_doctor_healthy(&["--postgres", &url], db);
    }
    // The servers' background compactors worked on the same databases.
    assert!(compacted > 0, "no database was compacted");
    eprintln!("{kills} kills, {compacted} databases compacted; actors: {results:?}");
}
