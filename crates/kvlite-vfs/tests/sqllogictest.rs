//! SQLite's sqllogictest scripts, each on a fresh database on the kvlite VFS
//! (embedded store), with SQLite's expected results.
//!
//! Runs every `*.test` in `testdata/sqllogictest/` (a copy of the project's
//! `shared/sqllogictest/`) and in `$KVLITE_SLT_DIR` when set.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Backend, setup};
use kvlite_testkit::sql::{corpus_files, run_sqllogictest};

#[test]
fn sqllogictest_corpus_on_kvlite() {
    let files = corpus_files();
    assert!(
        files.len() >= 17,
        "expected the 17-file corpus, found {}",
        files.len()
    );
    let s = setup(Backend::Embedded);
    let mut failures = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let vfs = s.vfs.clone();
        let db = format!("slt-{i}");
        if let Err(report) =
            run_sqllogictest(path, move || vfs.open(&db).map_err(|e| e.to_string()))
        {
            failures.push(format!("{}: {report}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
