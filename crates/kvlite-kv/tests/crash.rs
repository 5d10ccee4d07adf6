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
