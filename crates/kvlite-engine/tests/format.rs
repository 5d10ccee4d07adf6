//! The stored format is a deliberate, versioned decision: a data directory
//! written by an earlier build (checked in under `testdata/format/`) must
//! open in every later build and read back exactly the same data.
//!
//! To make a new fixture after a deliberate format change, add a directory
//! beside the old ones (never replace one) with
//! `KVLITE_FIXTURE_OUT=testdata/format/NAME cargo test -p kvlite-engine
//! --test format -- --ignored write_fixture`.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use kvlite_engine::{CommitRequest, Engine, EngineConfig, PAGE_SIZE, Preload};
use kvlite_kv::Kv;
use prometheus_client::registry::Registry;

/// Deterministic, compressible page contents (the fixture stays small).
fn page(pgno: u32, version: u32) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_SIZE];
    let stamp = format!("page {pgno} version {version};");
    for (i, b) in stamp
        .bytes()
        .cycle()
        .take(64 + (pgno as usize % 200))
        .enumerate()
    {
        p[i] = b;
    }
    p
}

fn engine(kv: Kv) -> std::sync::Arc<Engine> {
    Engine::new(kv, EngineConfig::default(), &mut Registry::default())
}

fn commit(
    e: &Engine,
    db: &str,
    generation: u64,
    head: u64,
    size: u32,
    pages: &[(u32, Vec<u8>)],
) -> u64 {
    let refs: Vec<(u32, &[u8])> = pages.iter().map(|(p, d)| (*p, d.as_slice())).collect();
    e.commit(&CommitRequest {
        db,
        generation,
        expected_head: head,
        new_size: size,
        commit_id: u64::from(size) << 32 | head,
        pages: &refs,
    })
    .expect("commit")
    .txid
}

/// What the fixture holds: per database, its size and each page's version
/// (0 = a zero page).
fn expected() -> Vec<(&'static str, u32, Vec<u32>)> {
    // Commit i (0..10) wrote pages 1..=20-i: page p was last written by
    // commit min(9, 20-p), as version min(10, 21-p).
    let deltas: Vec<u32> = (1..=20u32).map(|p| (21 - p).min(10)).collect();
    let mut shards = vec![1; 300];
    for v in shards.iter_mut().skip(100).take(10) {
        *v = 2; // rewritten after the fold: page-index entries over shards
    }
    let large = vec![3; 600];
    let truncated = vec![4; 40];
    vec![
        ("deltas", 20, deltas),
        ("shards", 300, shards),
        ("large", 600, large),
        ("truncated", 40, truncated),
    ]
}

/// Write the fixture's databases with this build.
fn build(e: &Engine) {
    // Ten commits, each rewriting pages 1..=20-i.
    let o = e.open("deltas", &Preload::default()).expect("open");
    let mut head = o.head_txid;
    for i in 0..10u32 {
        let pages: Vec<_> = (1..=20 - i).map(|p| (p, page(p, i + 1))).collect();
        head = commit(e, "deltas", o.generation, head, 20, &pages);
    }
    // Folded into shards, then ten pages rewritten.
    let o = e.open("shards", &Preload::default()).expect("open");
    let pages: Vec<_> = (1..=300).map(|p| (p, page(p, 1))).collect();
    let head = commit(e, "shards", o.generation, o.head_txid, 300, &pages);
    e.compact("shards").expect("compact");
    let pages: Vec<_> = (101..=110).map(|p| (p, page(p, 2))).collect();
    commit(e, "shards", o.generation, head, 300, &pages);
    // One large commit in six parts.
    let o = e.open("large", &Preload::default()).expect("open");
    let txid = e
        .commit_begin("large", o.generation, o.head_txid, 600)
        .expect("begin");
    for part in 0..6u32 {
        let pages: Vec<_> = (part * 100 + 1..=part * 100 + 100)
            .map(|p| (p, page(p, 3)))
            .collect();
        let refs: Vec<(u32, &[u8])> = pages.iter().map(|(p, d)| (*p, d.as_slice())).collect();
        e.commit_chunk("large", o.generation, txid, part, &refs)
            .expect("part");
    }
    e.commit_finish("large", o.generation, o.head_txid, txid, 6, 99)
        .expect("finish");
    // Grown to 100 pages, then truncated to 40.
    let o = e.open("truncated", &Preload::default()).expect("open");
    let pages: Vec<_> = (1..=100).map(|p| (p, page(p, 4))).collect();
    let head = commit(e, "truncated", o.generation, o.head_txid, 100, &pages);
    commit(e, "truncated", o.generation, head, 40, &[]);
}

/// Every database reads back as [`expected`] says, and audits clean.
fn verify(e: &Engine) {
    for (db, size, versions) in expected() {
        let o = e.open(db, &Preload::default()).expect(db);
        assert_eq!(o.size_pages, size, "{db}");
        let pgnos: Vec<u32> = (1..=size).collect();
        let got = e.get_pages(db, o.generation, &pgnos).expect(db);
        for ((pgno, data), version) in pgnos.iter().zip(got).zip(versions) {
            let want = if version == 0 {
                vec![0; PAGE_SIZE]
            } else {
                page(*pgno, version)
            };
            assert!(data.as_deref() == Some(&want[..]), "{db}: page {pgno}");
        }
        let audit = e.audit(db).expect("audit");
        assert!(audit.is_clean(), "{db}: {audit:#?}");
    }
    let mut names = e.list("", None, 100).expect("list");
    names.sort();
    assert_eq!(names, ["deltas", "large", "shards", "truncated"]);
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/format");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("testdata/format")
        .map(|d| d.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn every_checked_in_data_directory_opens_and_reads_the_same() {
    let dirs = fixtures();
    assert!(!dirs.is_empty(), "no fixtures under testdata/format");
    for dir in dirs {
        // A copy: opening takes databases over, which writes.
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_dir(&dir.join("embedded"), tmp.path());
        let e = engine(Kv::open_embedded(tmp.path()).expect("open the fixture"));
        verify(&e);
        // This build folds what an earlier one wrote and reads it the same.
        for (db, _, _) in expected() {
            e.compact(db).expect(db);
        }
        verify(&e);
    }
}

#[test]
fn this_build_writes_what_the_fixture_checks() {
    let e = engine(Kv::memory());
    build(&e);
    verify(&e);
}

/// Writes a fixture (see the module docs); not part of the suite.
#[test]
#[ignore]
fn write_fixture() {
    let out = PathBuf::from(std::env::var("KVLITE_FIXTURE_OUT").expect("KVLITE_FIXTURE_OUT"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(out)
        .join("embedded");
    assert!(
        !dir.exists(),
        "{} exists: fixtures are never replaced",
        dir.display()
    );
    let kv = Kv::open_embedded(&dir).expect("create");
    build(&engine(kv.clone()));
    kv.close();
}
