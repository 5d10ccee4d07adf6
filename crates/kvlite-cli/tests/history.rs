//! History from the command line, on the embedded store and through
//! `kvlite serve` with tenants: `kvlite history`, `sql --at`, `restore`
//! (fences nothing it should not, undone by restoring to the commit before
//! it), `fork`, `retention`.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Command, Output};

use common::{Env, free_port, serve_on};

/// The commits `kvlite history --json` lists (txid, whether a fork's or
/// restore's creation), newest first.
fn commits(json: &str) -> Vec<(u64, bool)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("history JSON");
    v["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .map(|c| (c["txid"].as_u64().expect("txid"), !c["starts_as"].is_null()))
        .collect()
}

/// What `sql` prints for `SELECT group_concat(x) FROM t` on `db` (at a
/// point when given).
fn values(run: &dyn Fn(&[&str]) -> Output, db: &str, at: Option<&str>) -> String {
    let mut args = vec!["sql"];
    if let Some(at) = at {
        args.extend(["--at", at]);
    }
    args.extend([db, "SELECT group_concat(x) FROM t"]);
    let out = run(&args);
    assert!(
        out.status.success(),
        "sql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The whole walk: commit, list, read in the past, restore, undo, fork.
fn walk(run: &dyn Fn(&[&str]) -> Output) {
    ok(run(&[
        "sql",
        "app",
        "CREATE TABLE t(x); INSERT INTO t VALUES (1)",
    ]));
    ok(run(&["sql", "app", "INSERT INTO t VALUES (2)"]));
    ok(run(&["sql", "app", "INSERT INTO t VALUES (3)"]));
    let listed = commits(&ok(run(&["history", "app", "--json"])));
    assert!(listed.len() >= 3, "{listed:?}");
    let (head, with_two) = (listed[0].0, listed[1].0);
    assert_eq!(values(run, "app", None), "1,2,3");
    assert_eq!(values(run, "app", Some(&with_two.to_string())), "1,2");
    assert_eq!(values(run, "app", Some("-0s")), "1,2,3", "a time ago");
    // The past is read-only, and says so.
    let e = failed(run(&[
        "sql",
        "--at",
        &with_two.to_string(),
        "app",
        "INSERT INTO t VALUES (9)",
    ]));
    assert!(e.contains("the past is read-only"), "{e}");
    // Before the database existed: refused with the reason.
    let e = failed(run(&["sql", "--at", "-3d", "app", "SELECT 1"]));
    assert!(e.contains("keeps no commit as old"), "{e}");
    let e = failed(run(&["sql", "--at", "tuesday", "app", "SELECT 1"]));
    assert!(e.contains("is not a point in history"), "{e}");

    // Restore to the state with two rows; the history goes on through it.
    let said = ok(run(&["restore", "app", "--at", &with_two.to_string()]));
    assert!(
        said.contains(&format!("undo: kvlite restore app --at {head}")),
        "{said}"
    );
    assert_eq!(values(run, "app", None), "1,2");
    ok(run(&["sql", "app", "INSERT INTO t VALUES (4)"]));
    assert_eq!(values(run, "app", None), "1,2,4");
    let listed = commits(&ok(run(&["history", "app", "--json"])));
    let restore_at = listed
        .iter()
        .find(|c| c.1)
        .expect("the restore is listed")
        .0;
    assert_eq!(restore_at, head + 1);
    assert!(listed.iter().any(|c| c.0 == head), "{listed:?}");
    assert_eq!(
        values(run, "app", Some(&head.to_string())),
        "1,2,3",
        "before the restore"
    );
    // Undo: back to the head before the restore.
    ok(run(&["restore", "app", "--at", &head.to_string()]));
    assert_eq!(values(run, "app", None), "1,2,3");

    // A fork shares the pages and goes its own way.
    let said = ok(run(&["fork", "app", "copy", "--at", &with_two.to_string()]));
    assert!(said.contains("nothing copied"), "{said}");
    ok(run(&["sql", "copy", "INSERT INTO t VALUES (5)"]));
    assert_eq!(values(run, "copy", None), "1,2,5");
    assert_eq!(values(run, "app", None), "1,2,3");
    let e = failed(run(&["fork", "app", "copy"]));
    assert!(e.contains("already exists"), "{e}");
    let inspected = ok(run(&["inspect", "copy", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&inspected).expect("inspect JSON");
    assert_eq!(
        v["forked_from"]["txid"].as_u64(),
        Some(with_two),
        "{inspected}"
    );
    // Deleting the source keeps the fork whole.
    ok(run(&["rm", "app"]));
    assert_eq!(values(run, "copy", None), "1,2,5");
}

#[test]
fn history_restore_and_fork_on_the_embedded_store() {
    let env = Env::new();
    walk(&|args| env.run(args));
    // Retention: shown, set, and back to the default.
    assert_eq!(env.ok(&["retention", "copy"]), "1day (the default)\n");
    env.ok(&["retention", "copy", "7d"]);
    assert_eq!(env.ok(&["retention", "copy"]), "7days\n");
    env.ok(&["retention", "copy", "default"]);
    assert_eq!(env.ok(&["retention", "copy"]), "1day (the default)\n");
    let e = env.fail(&["retention", "copy", "forever"]);
    assert!(e.contains("invalid retention"), "{e}");
}

#[test]
fn history_restore_and_fork_through_a_server_inside_a_namespace() {
    let env = Env::new();
    let tokens = env.path("tokens");
    std::fs::write(
        &tokens,
        "alpha alpha-secret-0123456789\nbeta beta-secret-0123456789\nops ops-secret-0123456789 admin\n",
    )
    .expect("tokens");
    let port = free_port();
    let data = env.data();
    let mut server = serve_on(
        &["--data", data.to_str().expect("path")],
        port,
        &[
            "--tokens",
            tokens.to_str().expect("path"),
            "--retention",
            "2h",
        ],
    );
    let url = format!("ws://127.0.0.1:{port}");
    let as_token = |token: &'static str| {
        let url = url.clone();
        move |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_kvlite"))
                .args(["--server", &url, "--token", token])
                .args(args)
                .output()
                .expect("run kvlite")
        }
    };
    let alpha = as_token("alpha-secret-0123456789");
    walk(&alpha);
    // Everything stayed in alpha's namespace.
    let beta = as_token("beta-secret-0123456789");
    assert_eq!(ok(beta(&["ls"])), "");
    let names = ok(alpha(&["ls"]));
    assert!(names.lines().any(|n| n == "copy"), "{names}");
    assert!(
        names.lines().any(|n| n.starts_with("app@before-restore-")),
        "the backups are alpha's: {names}"
    );
    // Beta can neither fork nor read alpha's databases.
    failed(beta(&["fork", "copy", "mine"]));
    failed(beta(&["history", "copy"]));
    // The server's default retention, and only an administrator sets one.
    assert_eq!(ok(alpha(&["retention", "copy"])), "2h (the default)\n");
    let e = failed(alpha(&["retention", "copy", "30d"]));
    assert!(e.contains("needs an admin token"), "{e}");
    let ops = as_token("ops-secret-0123456789");
    ok(ops(&["retention", "alpha:copy", "30d"]));
    assert_eq!(ok(alpha(&["retention", "copy"])), "30days\n");
    let _ = server.kill();
    let _ = server.wait();
}
