//! PostgreSQL failover under load: two `kvlite serve` processes on a
//! primary with a synchronous standby, writers committing through both; the
//! primary is killed as a lost machine would be (every process, `SIGKILL`)
//! in the middle of the commit stream and the standby promoted. The servers
//! find the new primary by themselves (a multi-host URL with
//! `target_session_attrs=read-write`), commits resume, no acknowledged
//! commit is lost, no commit reported as failed landed, and every commit
//! whose answer was cut off is resolved through its commit id.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvlite_testkit::PgCluster;
use kvlite_vfs::Vfs;
use rusqlite::ffi;

use common::free_port;

const WRITERS: usize = 4;
/// Commits each writer must see acknowledged after the promotion.
const AFTER_PROMOTION: usize = 30;

fn client(port: u16) -> Vfs {
    // Long enough to outlast the failover: a commit cut off by it is
    // resolved, not given up on.
    common::remote_vfs(port, Duration::from_secs(60)).expect("server up")
}

#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<i64>,
    /// Reported failed: must not be in the database.
    failed: BTreeSet<i64>,
    /// Reported with an unknown outcome (the connection poisoned).
    unknown: BTreeSet<i64>,
    acked_after_promotion: usize,
    /// Commits sent before the cut and answered after the promotion.
    across_the_cut: usize,
}

fn open_retrying(vfs: &Vfs, db: &str) -> rusqlite::Connection {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match vfs.open(db).and_then(|c| {
            c.execute_batch("CREATE TABLE IF NOT EXISTS t(i INTEGER PRIMARY KEY, v BLOB)")
                .map_err(|e| vfs.sqlite_error(db, e))?;
            Ok(c)
        }) {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "{db}: cannot open: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn postgres_failover_loses_no_acknowledged_commit() {
    let primary = PgCluster::start_primary().expect("primary");
    let standby = primary.start_standby().expect("standby");
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let ports = [free_port(), free_port()];
    let mut servers: Vec<common::Server> = ports
        .iter()
        .map(|&p| common::serve_on(&["--postgres", &url], p, &[]))
        .collect();

    let cut = Arc::new(AtomicBool::new(false));
    let promoted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Vec<Arc<Mutex<Outcomes>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (cut, promoted, stop, out) = (
                cut.clone(),
                promoted.clone(),
                stop.clone(),
                outcomes[w].clone(),
            );
            let port = ports[w % ports.len()];
            std::thread::spawn(move || {
                let db = format!("writer{w}");
                let vfs = client(port);
                let mut conn = open_retrying(&vfs, &db);
                let mut next = 1i64;
                while !stop.load(Ordering::SeqCst) {
                    let after = promoted.load(Ordering::SeqCst);
                    let before_cut = !cut.load(Ordering::SeqCst);
                    let result = conn.execute("INSERT INTO t VALUES (?1, randomblob(500))", [next]);
                    let mut out = out.lock().unwrap();
                    if before_cut && promoted.load(Ordering::SeqCst) {
                        out.across_the_cut += 1;
                    }
                    match result {
                        Ok(_) => {
                            out.acked.insert(next);
                            if after {
                                out.acked_after_promotion += 1;
                            }
                        }
                        Err(e) => {
                            let code = e.sqlite_error().map(|e| e.extended_code);
                            if code == Some(ffi::SQLITE_READONLY_DBMOVED) {
                                out.unknown.insert(next);
                            } else {
                                out.failed.insert(next);
                            }
                            drop(out);
                            // Start over on a fresh connection, as an
                            // application would after a failed commit.
                            drop(conn);
                            conn = open_retrying(&vfs, &db);
                        }
                    }
                    next += 1;
                }
                drop(conn);
                (db, vfs)
            })
        })
        .collect();

    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let acked = |o: &Arc<Mutex<Outcomes>>| o.lock().unwrap().acked.len();
    wait_for("commits before the cut", &|| {
        outcomes.iter().all(|o| acked(o) >= 40)
    });

    // The primary's machine is lost in the middle of the commit stream.
    let before_cut: usize = outcomes.iter().map(acked).sum();
    // The cut is when the machine is gone: a commit begun before that and
    // answered after the promotion was in flight when it died.
    primary.kill_hard();
    cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    standby.promote().expect("promote");
    promoted.store(true, Ordering::SeqCst);
    wait_for("commits after the promotion", &|| {
        outcomes
            .iter()
            .all(|o| o.lock().unwrap().acked_after_promotion >= AFTER_PROMOTION)
    });
    let resumed_in = cut_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let dbs: Vec<(String, Vfs)> = writers.into_iter().map(|h| h.join().unwrap()).collect();

    for (w, (db, _)) in dbs.iter().enumerate() {
        let out = outcomes[w].lock().unwrap();
        assert!(
            out.unknown.is_empty(),
            "{db}: commits {:?} left unresolved",
            out.unknown
        );
        // Read back through both servers: both reach the new primary.
        for &port in &ports {
            let vfs = client(port);
            let conn = vfs.open_readonly(db).unwrap();
            let mut stmt = conn.prepare("SELECT i FROM t").unwrap();
            let present: BTreeSet<i64> = stmt
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let lost: Vec<_> = out.acked.difference(&present).collect();
            assert!(
                lost.is_empty(),
                "{db} via :{port}: acknowledged, lost: {lost:?}"
            );
            let wrong: Vec<_> = out.failed.intersection(&present).collect();
            assert!(
                wrong.is_empty(),
                "{db} via :{port}: reported failed, landed: {wrong:?}"
            );
        }
    }
    let total: usize = outcomes.iter().map(acked).sum();
    let failed: usize = outcomes
        .iter()
        .map(|o| o.lock().unwrap().failed.len())
        .sum();
    let across: usize = outcomes
        .iter()
        .map(|o| o.lock().unwrap().across_the_cut)
        .sum();
    eprintln!(
        "failover: {before_cut} commits acknowledged before the cut, {total} in all, \
         {failed} reported failed, {across} in flight at the cut and answered after it; \
         commits resumed on every writer {resumed_in:?} after the cut"
    );
    // The cut fell in the middle of the stream: some commits were on their
    // way and were answered (landed or not, per the checks above) after it.
    assert!(across > 0, "no commit was in flight at the cut");

    for s in &mut servers {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    // The promoted standby alone now: the store is whole.
    for (db, _) in &dbs {
        common::assert_doctor_healthy(&["--postgres", &url], db);
    }
}
