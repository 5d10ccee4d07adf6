//! A long random workload on kvlite and plain SQLite side by side.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Backend, setup};

fn run(backend: Backend, seeds: &[u64], steps: usize) {
    let s = setup(backend);
    for &seed in seeds {
        let db = format!("diff-{seed}");
        kvlite_testkit::sql::differential(seed, steps, || s.vfs.open(&db).expect("open"));
        let audit = s.engine.audit(&db).expect("audit");
        assert!(audit.is_clean(), "{audit:?}");
    }
}

#[test]
fn differential_memory() {
    run(Backend::Memory, &[1, 2, 3], 400);
}

#[test]
fn differential_embedded() {
    run(Backend::Embedded, &[4, 5], 300);
}
