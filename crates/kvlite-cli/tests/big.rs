//! Import and export stream: a database larger than the memory bound goes
//! in and comes out byte for byte with the process's peak memory under it.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::Env;

/// The bound the README states for import and export of any size.
const RSS_BOUND_KIB: i64 = 256 << 10;

/// Run to completion; exit success and peak RSS in KiB (`wait4`'s rusage).
fn run_measured(mut c: Command) -> (bool, i64) {
    let child = c.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unwaited child; both pointers are live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    std::mem::forget(child);
    (
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage.ru_maxrss,
    )
}

#[test]
fn import_and_export_of_a_300_mib_file_stay_in_bounded_memory() {
    let env = Env::new();
    let source = env.path("big.sqlite");
    {
        let conn = rusqlite::Connection::open(&source).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 76800)
             INSERT INTO t SELECT x, randomblob(3900) FROM c;",
        )
        .unwrap();
    }
    let bytes = std::fs::metadata(&source).unwrap().len();
    assert!(bytes > 300 << 20, "{bytes}");

    let (ok, import_kib) = run_measured(env.command(&["import", "big", "big.sqlite"]));
    assert!(ok, "import failed");
    let (ok, export_kib) = run_measured(env.command(&["export", "big", "out.sqlite"]));
    assert!(ok, "export failed");
    assert!(
        std::fs::read(&source).unwrap() == std::fs::read(env.path("out.sqlite")).unwrap(),
        "the exported file differs from the imported one"
    );
    assert!(
        import_kib < RSS_BOUND_KIB,
        "import peaked at {import_kib} KiB"
    );
    assert!(
        export_kib < RSS_BOUND_KIB,
        "export peaked at {export_kib} KiB"
    );
}
