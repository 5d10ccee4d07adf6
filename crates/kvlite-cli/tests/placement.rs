//! One deployment over two private PostgreSQL clusters, served by two
//! `kvlite serve` processes: new databases spread over the clusters, and
//! `kvlite move` moves one while a writer holds it through a server — the
//! writer is fenced, both servers follow the move, nothing is lost.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{check_ok, free_port, remote_vfs, serve_on};

fn kvlite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvlite"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("KVLITE_POSTGRES")
        .output()
        .expect("run kvlite")
}

fn ok(args: &[&str]) -> String {
    check_ok(args, kvlite(args))
}

fn fails(args: &[&str]) -> String {
    let out = kvlite(args);
    assert!(!out.status.success(), "kvlite {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A command on the whole deployment (`store`: its --postgres options).
fn on_both<'a>(store: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    [store, args].concat()
}

/// The databases one cluster holds, seen alone.
fn names(url: &str) -> Vec<String> {
    ok(&["--postgres", url, "ls"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn two_servers_over_two_clusters_and_a_move() {
    let clusters: Vec<_> = (0..2)
        .map(|_| kvlite_testkit::PgCluster::start().expect("a private PostgreSQL cluster"))
        .collect();
    let urls: Vec<String> = clusters.iter().map(|c| c.url()).collect();
    let store = ["--postgres", &urls[0], "--postgres", &urls[1]];
    let ports = [free_port(), free_port()];
    let _servers: Vec<_> = ports.iter().map(|&p| serve_on(&store, p, &[])).collect();
    let server = |i: usize| format!("ws://127.0.0.1:{}", ports[i]);

    for i in 0..6 {
        ok(&[
            "--server",
            &server(i % 2),
            "sql",
            &format!("db{i}"),
            "CREATE TABLE t(i); INSERT INTO t VALUES (1)",
        ]);
    }
    let (in_0, in_1) = (names(&urls[0]), names(&urls[1]));
    assert_eq!((in_0.len(), in_1.len()), (3, 3), "{in_0:?} {in_1:?}");
    assert_eq!(
        ok(&["--server", &server(1), "ls"]).lines().count(),
        6,
        "a server lists every cluster's databases"
    );

    // A writer holds db0 through server 1.
    let vfs = remote_vfs(ports[1], Duration::from_secs(20)).expect("server 1");
    let writer = vfs.open("db0").expect("open");
    writer
        .execute("INSERT INTO t VALUES (2)", [])
        .expect("write");
    let from = usize::from(!in_0.contains(&"db0".to_string()));
    let to = 1 - from;

    let moved = ok(&on_both(&store, &["move", "db0", "--to", &to.to_string()]));
    assert!(
        moved.starts_with(&format!("moved db0 from cluster {from} to cluster {to}: "))
            && moved.contains("verified"),
        "{moved}"
    );
    assert!(names(&urls[to]).contains(&"db0".to_string()));
    assert!(!names(&urls[from]).contains(&"db0".to_string()));

    // The writer is fenced; both servers (their routes stale) follow.
    let err = writer
        .execute("INSERT INTO t VALUES (3)", [])
        .expect_err("fenced by the move");
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly),
        "{err}"
    );
    ok(&[
        "--server",
        &server(0),
        "sql",
        "db0",
        "INSERT INTO t VALUES (4)",
    ]);
    assert_eq!(
        ok(&[
            "--server",
            &server(1),
            "sql",
            "db0",
            "SELECT group_concat(i) FROM t"
        ])
        .trim(),
        "1,2,4"
    );
    common::assert_doctor_healthy(&["--postgres", &urls[to]], "db0");
    // Moving it again to where it is changes nothing.
    let again = ok(&on_both(&store, &["move", "db0", "--to", &to.to_string()]));
    assert!(again.contains("already"), "{again}");

    // Mistakes are refused plainly.
    let e = fails(&on_both(&store, &["move", "db1", "--to", "2"]));
    assert!(e.contains("clusters 0..=1"), "{e}");
    let e = fails(&["--postgres", &urls[0], "move", "db1", "--to", "1"]);
    assert!(e.contains("needs the deployment's clusters"), "{e}");
    let e = fails(&on_both(&store, &["sql", "db1", "SELECT 1"]));
    assert!(e.contains("kvlite serve"), "{e}");
    let e = fails(&on_both(&store, &["move", "nosuch", "--to", "1"]));
    assert!(e.contains("not found"), "{e}");
    let e = fails(&[
        "--postgres",
        &urls[1],
        "--postgres",
        &urls[0],
        "move",
        "db1",
        "--to",
        "0",
    ]);
    assert!(e.contains("same order"), "{e}");
}
