//! Crash safety on the embedded store: a child process runs the engine and is
//! killed with SIGKILL between large-commit parts, between the parts and the
//! finish, and at random moments in a stream of commits. A fresh engine on
//! the same files must then see exactly the last committed state, with no
//! orphan keys after takeover.

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
use std::time::Duration;

use common::{assert_clean, commit, commit_large, engine_with, open, page, read_all};
use kvlite_engine::EngineConfig;
use kvlite_engine::keys::DbKeys;
use kvlite_kv::{Kv, KvRead, ScanOptions};

const POINT_ENV: &str = "KVLITE_ENGINE_CRASH_POINT";
const DIR_ENV: &str = "KVLITE_ENGINE_CRASH_DIR";
const DB: &str = "crash";

/// The pages of committed version `v` (version 0 = empty database).
fn version_pages(v: u64) -> Vec<(u32, Vec<u8>)> {
    let size = 40 + 20 * v as u32;
    (1..=size).map(|p| (p, page(p, v))).collect()
}

/// Databases the deletion crash test fills, then deletes one by one.
const DOOMED: [&str; 4] = ["del0", "del1", "del2", "del3"];

fn child(point: &str, dir: &str) -> ! {
    let kv = Kv::open_embedded(std::path::Path::new(dir)).expect("open store");
    let engine = engine_with(kv, EngineConfig::default());
    if point == "delete" {
        for db in DOOMED {
            let o = open(&engine, db);
            let mut head = o.head_txid;
            for v in 0..200u64 {
                let pages: Vec<_> = (1..=8).map(|p| (p, page(p, v))).collect();
                head = commit(&engine, db, o.generation, head, 8, &pages)
                    .expect("commit")
                    .txid;
            }
            engine.compact(db).expect("compact");
            for v in 200..330u64 {
                let pages: Vec<_> = (1..=8).map(|p| (p, page(p, v))).collect();
                head = commit(&engine, db, o.generation, head, 8, &pages)
                    .expect("commit")
                    .txid;
            }
        }
        println!("\nDELETING");
        for db in DOOMED {
            engine.delete(db).expect("delete");
            println!("\nDELETED {db}");
        }
        println!("\nREADY");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    let o = open(&engine, DB);
    let (g, mut head) = (o.generation, o.head_txid);
    let say = |s: String| println!("\n{s}");
    for v in 1..=3 {
        let pages = version_pages(v);
        head = commit(&engine, DB, g, head, pages.len() as u32, &pages)
            .expect("commit")
            .txid;
        say(format!("COMMITTED {v}"));
    }
    let next = version_pages(4);
    let refs: Vec<(u32, &[u8])> = next.iter().map(|(p, d)| (*p, d.as_slice())).collect();
    match point {
        "between_parts" | "before_finish" => {
            let txid = engine
                .commit_begin(DB, g, head, next.len() as u32)
                .expect("begin");
            let parts: Vec<_> = refs.chunks(30).collect();
            let send = if point == "between_parts" {
                2
            } else {
                parts.len()
            };
            for (i, part) in parts.iter().take(send).enumerate() {
                engine
                    .commit_chunk(DB, g, txid, i as u32, part)
                    .expect("chunk");
            }
            say("READY".into());
        }
        _ => {
            // A stream of large and fast commits, each acknowledged.
            for v in 4.. {
                let pages = version_pages(v);
                let r = if v % 2 == 0 {
                    commit_large(&engine, DB, g, head, pages.len() as u32, &pages, 25)
                } else {
                    commit(&engine, DB, g, head, pages.len() as u32, &pages)
                };
                head = r.expect("commit").txid;
                say(format!("COMMITTED {v}"));
            }
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn spawn_child(point: &str, dir: &std::path::Path) -> kvlite_testkit::KillOnDrop {
    let child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(POINT_ENV, point)
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    kvlite_testkit::KillOnDrop(child)
}

fn crash_at(point: &str, acks_before_kill: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proc = spawn_child(point, dir.path());
    let mut acked = 0;
    let reader = BufReader::new(proc.stdout.take().expect("stdout"));
    let mut lines = reader.lines();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(v) = line.strip_prefix("COMMITTED ") {
            acked = v.trim().parse().expect("version");
            if acked >= acks_before_kill {
                break;
            }
        } else if line.starts_with("READY") {
            break;
        }
    }
    proc.kill().expect("SIGKILL");
    proc.wait().expect("reap");
    drop(lines);

    let kv = Kv::open_embedded(dir.path()).expect("reopen after kill -9");
    let engine = engine_with(kv.clone(), EngineConfig::default());
    let o = open(&engine, DB);
    // The last acknowledged version, or (for the stream) a later one whose
    // commit landed between the acknowledgement we read and the kill.
    let on_disk = (acked..=acked + 3)
        .find(|&v| version_pages(v).len() as u32 == o.size_pages)
        .unwrap_or_else(|| {
            panic!(
                "size {} matches no committed version near {acked}",
                o.size_pages
            )
        });
    let got = read_all(&engine, DB, o.generation, o.size_pages);
    let want: Vec<Vec<u8>> = version_pages(on_disk).into_iter().map(|p| p.1).collect();
    assert!(got == want, "{point}: pages are not version {on_disk}");
    assert_clean(&engine, DB);
    let stat = engine.stat(DB).expect("stat");
    assert_eq!(
        stat.pending_commits, 0,
        "{point}: takeover removed unfinished commits"
    );
    let keys = DbKeys { id: stat.id };
    let (start, end) = keys.delta_txids(stat.head_txid + 1, u64::MAX);
    let orphans = kv
        .read(|t| t.scan(&start, &end, ScanOptions::ALL))
        .expect("scan");
    assert!(
        orphans.is_empty(),
        "{point}: {} orphan chunks above the head",
        orphans.len()
    );
}

/// The child process of these tests (run by them with `--ignored`).
#[test]
#[ignore = "the child process of the crash tests"]
fn crash_child() {
    let (Ok(point), Ok(dir)) = (std::env::var(POINT_ENV), std::env::var(DIR_ENV)) else {
        panic!("run by the crash tests, with {POINT_ENV} and {DIR_ENV} set");
    };
    child(&point, &dir);
}

/// Killed while deleting databases (in the middle of a sweep, or between
/// the name's removal and the sweep): nothing is orphaned, every database
/// is either whole or gone, and the sweep finishes what was started.
#[test]
fn killed_while_deleting() {
    for wait_ms in [0u64, 3, 15] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut proc = spawn_child("delete", dir.path());
        let mut lines = BufReader::new(proc.stdout.take().expect("stdout")).lines();
        let mut deleted = Vec::new();
        for line in lines.by_ref() {
            if line.expect("line").starts_with("DELETING") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        proc.kill().expect("SIGKILL");
        proc.wait().expect("reap");
        for line in lines.map_while(Result::ok) {
            if let Some(db) = line.strip_prefix("DELETED ") {
                deleted.push(db.trim().to_string());
            }
        }

        let kv = Kv::open_embedded(dir.path()).expect("reopen after kill -9");
        let engine = engine_with(kv.clone(), EngineConfig::default());
        let audit = engine.audit_store().expect("audit store");
        assert!(audit.is_clean(), "after {wait_ms} ms: {audit:?}");
        let names = engine.list("", None, 10).expect("list");
        for db in &deleted {
            assert!(!names.contains(db), "{db} was acknowledged as deleted");
        }
        for db in &names {
            let o = open(&engine, db);
            assert_eq!(o.size_pages, 8, "{db} is whole");
            let got = read_all(&engine, db, o.generation, 8);
            assert!(got.iter().zip(1..).all(|(d, p)| *d == page(p, 329)), "{db}");
            assert_clean(&engine, db);
        }
        engine.sweep_deleted().expect("sweep");
        let audit = engine.audit_store().expect("audit store");
        assert_eq!(audit.deleted_not_swept, 0, "{audit:?}");
        assert_eq!(audit.databases as usize, names.len());
        assert!(audit.is_clean(), "{audit:?}");
    }
}

#[test]
fn killed_between_large_commit_parts() {
    crash_at("between_parts", 99);
}

#[test]
fn killed_between_parts_and_finish() {
    crash_at("before_finish", 99);
}

#[test]
fn killed_during_a_stream_of_commits() {
    for acks in [4, 7, 10] {
        crash_at("stream", acks);
    }
}
