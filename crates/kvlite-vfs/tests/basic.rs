// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Backend, rows, setup};

#[test]
fn smoke() {
    let s = setup(Backend::Memory);
    let conn = s.vfs.open("smoke").expect("open");
    conn.execute_batch("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
        .expect("create");
    conn.execute_batch("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .expect("insert");
    assert_eq!(
        rows(&conn, "SELECT * FROM t ORDER BY a"),
        vec![vec!["1", "one"], vec!["2", "two"]]
    );
    let m = s.vfs.metrics();
    assert!(m.batch_commits >= 1, "{m:?}");
    drop(conn);
    let conn = s.vfs.open("smoke").expect("reopen");
    assert_eq!(rows(&conn, "SELECT count(*) FROM t"), vec![vec!["2"]]);
    assert_eq!(rows(&conn, "PRAGMA integrity_check"), vec![vec!["ok"]]);
}
