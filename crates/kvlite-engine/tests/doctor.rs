//! `Engine::doctor` on every backend: a healthy database is healthy after
//! commits, compaction, truncation and large commits; a damaged delta, a
//! damaged shard and a page-index entry gone missing are each found, and
//! named.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[macro_use]
mod common;

use common::{Backend, Store, commit, commit_large, open, page};
use kvlite_engine::keys::DbKeys;
use kvlite_engine::{Engine, SHARD_PAGES};
use kvlite_kv::{Kv, KvRead, ScanOptions, prefix_end};

fn pages(range: std::ops::RangeInclusive<u32>, version: u64) -> Vec<(u32, Vec<u8>)> {
    range.map(|p| (p, page(p, version))).collect()
}

/// A database with shards, folded and unfolded deltas, a truncation and a
/// large commit: 2 shards' worth of pages, then changes on top.
/// Returns (txid of the last fast commit, txid of the large one).
fn build(engine: &Engine, db: &str) -> (u64, u64) {
    let o = open(engine, db);
    let size = 2 * SHARD_PAGES;
    let r = commit(
        engine,
        db,
        o.generation,
        o.head_txid,
        size,
        &pages(1..=size, 1),
    )
    .unwrap();
    engine.compact(db).unwrap();
    // Truncate, then grow again past the old end with new content.
    let r = commit(engine, db, o.generation, r.txid, 70, &pages(3..=5, 2)).unwrap();
    let r = commit(engine, db, o.generation, r.txid, 90, &pages(71..=90, 3)).unwrap();
    let large = commit_large(engine, db, o.generation, r.txid, 90, &pages(40..=60, 4), 7).unwrap();
    let last = commit(engine, db, o.generation, large.txid, 90, &pages(2..=3, 5)).unwrap();
    (last.txid, large.txid)
}

fn flip_a_byte(kv: &Kv, prefix: &[u8]) {
    kv.transact(|t| {
        let chunks = t.scan(prefix, &prefix_end(prefix).unwrap(), ScanOptions::ALL)?;
        let (k, mut v) = chunks.into_iter().next().expect("a chunk");
        let mid = v.len() / 2;
        v[mid] ^= 0x40;
        t.set(&k, &v)
    })
    .unwrap();
}

/// (Without history, so every delta still holds its pages and the count of
/// blobs read is exact; `history.rs` runs doctor on databases with history.)
fn healthy_database(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine_without_history();
    build(&engine, "ok");
    let stat = engine.stat("ok").unwrap();
    let report = engine.doctor("ok").unwrap();
    assert!(report.is_healthy(), "{report:#?}");
    assert_eq!(report.head_txid, stat.head_txid);
    assert_eq!(report.size_pages, 90);
    assert_eq!(report.pages_compared, 90);
    // Every shard and every delta part was read: the large commit has 3 parts.
    assert_eq!(report.blobs_checked, stat.shards + stat.deltas + 2);
    // A fresh engine (nothing cached) agrees.
    assert!(
        store
            .engine_without_history()
            .doctor("ok")
            .unwrap()
            .is_healthy()
    );
    assert!(matches!(
        engine.doctor("absent"),
        Err(kvlite_engine::Error::NotFound(_))
    ));
}

fn damaged_delta(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let (_, large) = build(&engine, "rot");
    let id = engine.stat("rot").unwrap().id;
    // Part 1 of the large commit holds pages 47..=53; none is written later.
    flip_a_byte(&store.kv(), &DbKeys { id }.delta_part(large, 1));
    let report = store.engine().doctor("rot").unwrap();
    assert!(!report.is_healthy());
    assert_eq!(report.damaged_blob_count, 1, "{report:#?}");
    assert_eq!(
        report.damaged_blobs[0].blob,
        format!("delta {large} part 1")
    );
    assert_eq!(report.unreadable_pages, (47..=53).collect::<Vec<u32>>());
    assert_eq!(report.mismatched_page_count, 0, "{report:#?}");
    assert_eq!(report.pages_compared, 90 - 7);
}

fn damaged_shard(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    build(&engine, "rot");
    let id = engine.stat("rot").unwrap().id;
    // Shard 0 holds pages 1..=63 (shard n: pgno / SHARD_PAGES == n); later
    // deltas rewrote 2..=5 and 40..=60.
    flip_a_byte(&store.kv(), &DbKeys { id }.shard(0));
    let report = store.engine().doctor("rot").unwrap();
    assert_eq!(report.damaged_blob_count, 1, "{report:#?}");
    assert_eq!(report.damaged_blobs[0].blob, "shard 0");
    let expected: Vec<u32> = (1..SHARD_PAGES)
        .filter(|p| !(2..=5).contains(p) && !(40..=60).contains(p))
        .collect();
    assert_eq!(report.unreadable_pages, expected);
    assert_eq!(report.mismatched_page_count, 0, "{report:#?}");
}

fn lost_page_index_entry(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let (last, _) = build(&engine, "lost");
    let id = engine.stat("lost").unwrap().id;
    // Page 3's newest version is gone from the index: the read path falls
    // back to an older one, which the replay of the deltas contradicts.
    let key = DbKeys { id }.pidx(3, last);
    store
        .kv()
        .transact(|t| {
            assert!(t.get(&key)?.is_some());
            t.clear(&key)
        })
        .unwrap();
    let report = store.engine().doctor("lost").unwrap();
    assert_eq!(report.mismatched_pages, vec![3], "{report:#?}");
    assert_eq!(report.damaged_blob_count, 0);
    assert!(
        report
            .audit_problems
            .iter()
            .any(|p| p.contains("page-index entries")),
        "{report:#?}"
    );
}

on_every_backend!(
    healthy_database,
    damaged_delta,
    damaged_shard,
    lost_page_index_entry
);
