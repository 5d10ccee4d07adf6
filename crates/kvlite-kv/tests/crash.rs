//! The embedded store keeps every acknowledged commit across `kill -9`.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use kvlite_kv::{Kv, KvError, KvRead, chunked};

const CHILD_ENV: &str = "KVLITE_KV_CRASH_CHILD_DIR";

fn value_for(i: u64) -> Vec<u8> {
    (0..150_000u64)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8)
        .collect()
}

/// Child mode: commit forever, printing `ACK i` after each commit returns.
fn child(dir: &str) -> ! {
    let kv = Kv::open_embedded(std::path::Path::new(dir)).expect("open");
    let mut out = std::io::stdout();
    for i in 0u64.. {
        kv.transact(|t| {
            t.set(format!("n/{i:08}").as_bytes(), &i.to_be_bytes())?;
            chunked::write(t, format!("blob/{i:08}/").as_bytes(), &value_for(i))?;
            Ok::<_, KvError>(())
        })
        .expect("commit");
        writeln!(out, "ACK {i}").expect("stdout");
        out.flush().expect("flush");
    }
    unreachable!()
}

#[test]
fn embedded_store_survives_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proc = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "embedded_store_survives_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = proc.stdout.take().expect("stdout");
    let mut acked = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("ACK ") {
            let n: u64 = n.parse().expect("number");
            acked = Some(n);
            if n >= 40 {
                break;
            }
        }
    }
    proc.kill().expect("SIGKILL");
    proc.wait().expect("reap");
    let acked = acked.expect("child acknowledged commits");

    let kv = Kv::open_embedded(dir.path()).expect("reopen after kill -9");
    kv.read(|t| {
        for i in 0..=acked {
            assert_eq!(
                t.get(format!("n/{i:08}").as_bytes())?,
                Some(i.to_be_bytes().to_vec()),
                "commit {i} lost"
            );
            assert_eq!(
                chunked::read(t, format!("blob/{i:08}/").as_bytes())?,
                Some(value_for(i))
            );
        }
        // A commit in flight at the kill is entirely there or entirely absent.
        let next = acked + 1;
        let counter = t.get(format!("n/{next:08}").as_bytes())?;
        let blob = chunked::read(t, format!("blob/{next:08}/").as_bytes())?;
        assert_eq!(counter.is_some(), blob.is_some(), "half-applied commit");
        Ok::<_, KvError>(())
    })
    .expect("verify");
}

const CONCURRENT_CHILD_ENV: &str = "KVLITE_KV_CRASH_CONCURRENT_CHILD_DIR";

/// Writers committing at once share fsyncs (group commit); each commit is
/// acknowledged only once durable.
const WRITERS: u64 = 8;

/// Child mode: `WRITERS` threads commit forever, each printing `ACK w i`
/// after commit `i` of writer `w` returns.
fn concurrent_child(dir: &str) -> ! {
    let kv = Kv::open_embedded(std::path::Path::new(dir)).expect("open");
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let kv = kv.clone();
            s.spawn(move || {
                for i in 0u64.. {
                    kv.transact(|t| t.set(format!("w{w}/{i:08}").as_bytes(), &i.to_be_bytes()))
                        .expect("commit");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {w} {i}").expect("stdout");
                    out.flush().expect("flush");
                }
            });
        }
    });
    unreachable!()
}

#[test]
fn concurrent_commits_are_acknowledged_only_once_durable() {
    if let Ok(dir) = std::env::var(CONCURRENT_CHILD_ENV) {
        concurrent_child(&dir);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proc = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "concurrent_commits_are_acknowledged_only_once_durable",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CONCURRENT_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = proc.stdout.take().expect("stdout");
    let mut acked = vec![None::<u64>; WRITERS as usize];
    let mut total = 0;
    // Kept open until the kill: a closed pipe would fail the child's writes.
    let mut lines = BufReader::new(stdout).lines();
    for line in &mut lines {
        let line = line.expect("line");
        let Some(rest) = line.strip_prefix("ACK ") else {
            continue;
        };
        let (w, i) = rest.split_once(' ').expect("ACK w i");
        let (w, i): (usize, u64) = (w.parse().expect("w"), i.parse().expect("i"));
        acked[w] = Some(i);
        total += 1;
        if total >= 2000 {
            break;
        }
    }
    proc.kill().expect("SIGKILL");
    proc.wait().expect("reap");
    drop(lines);

    let kv = Kv::open_embedded(dir.path()).expect("reopen after kill -9");
    kv.read(|t| {
        for (w, last) in acked.iter().enumerate() {
            for i in 0..=last.expect("every writer acknowledged commits") {
                assert_eq!(
                    t.get(format!("w{w}/{i:08}").as_bytes())?,
                    Some(i.to_be_bytes().to_vec()),
                    "writer {w}'s acknowledged commit {i} lost"
                );
            }
        }
        Ok::<_, KvError>(())
    })
    .expect("verify");
}
