//! Fencing, idempotent commits, quota, truncation, bad requests and
//! corruption — on every backend.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[macro_use]
mod common;

use common::{Backend, Store, assert_clean, commit, commit_large, open, page, read_all};
use kvlite_engine::{
    CommitRequest, CommitStatus, CorruptionKind, EngineConfig, Error, FenceReason, InvalidKind,
    LOCK_PAGE, MAX_PAGES, PAGE_SIZE, Preload, TooLargeKind,
};
use kvlite_kv::{KvError, KvRead, ScanOptions};

fn pages(range: std::ops::RangeInclusive<u32>, version: u64) -> Vec<(u32, Vec<u8>)> {
    range.map(|p| (p, page(p, version))).collect()
}

/// Owned pages as the references commits take.
fn as_refs(pages: &[(u32, Vec<u8>)]) -> Vec<(u32, &[u8])> {
    pages.iter().map(|(p, d)| (*p, d.as_slice())).collect()
}

fn fencing(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let first = open(&engine, "fenced");
    let r = commit(
        &engine,
        "fenced",
        first.generation,
        first.head_txid,
        10,
        &pages(1..=10, 1),
    )
    .expect("commit");
    let before = read_all(&engine, "fenced", first.generation, 10);

    let second = engine
        .open("fenced", &Preload::default())
        .expect("second open");
    assert!(second.generation > first.generation);
    assert_eq!((second.head_txid, second.size_pages), (r.txid, 10));
    let stale = first.generation;
    let is_stale = |e: &Error| {
        matches!(e, Error::Fenced { reason: FenceReason::StaleGeneration { current, yours, .. }, .. }
            if *current == second.generation && *yours == stale)
    };
    let e = commit(&engine, "fenced", stale, r.txid, 11, &pages(11..=11, 2)).unwrap_err();
    assert!(is_stale(&e), "{e}");
    let e = engine.get_pages("fenced", stale, &[1]).unwrap_err();
    assert!(is_stale(&e), "{e}");
    let e = engine
        .commit_begin("fenced", stale, r.txid, 20)
        .unwrap_err();
    assert!(is_stale(&e), "{e}");

    // A large commit begun before the takeover cannot be continued or finished.
    let third_gen = {
        let txid = engine
            .commit_begin("fenced", second.generation, r.txid, 12)
            .expect("begin");
        let refs: Vec<(u32, &[u8])> = vec![(11, &[1u8; PAGE_SIZE][..])];
        engine
            .commit_chunk("fenced", second.generation, txid, 0, &refs)
            .expect("chunk");
        let third = open(&engine, "fenced");
        let e = engine
            .commit_chunk("fenced", second.generation, txid, 1, &refs)
            .unwrap_err();
        assert!(matches!(e, Error::Fenced { .. }), "{e}");
        let e = engine
            .commit_finish("fenced", second.generation, r.txid, txid, 1, 9)
            .unwrap_err();
        assert!(matches!(e, Error::Fenced { .. }), "{e}");
        third.generation
    };

    // A stale expected head is fenced too.
    let e = commit(
        &engine,
        "fenced",
        third_gen,
        r.txid - 1,
        10,
        &pages(1..=1, 3),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Fenced { reason: FenceReason::HeadMismatch { current, expected, .. }, .. }
            if current == r.txid && expected == r.txid - 1),
        "{e}"
    );
    assert_eq!(
        read_all(&engine, "fenced", third_gen, 10),
        before,
        "fenced requests changed nothing"
    );
    assert_eq!(engine.stat("fenced").expect("stat").pending_commits, 0);
    assert_clean(&engine, "fenced");
}

fn recreated_database_fences_old_writers(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let old = open(&engine, "phoenix");
    assert!(engine.delete("phoenix").expect("delete"));
    let new = open(&engine, "phoenix");
    assert!(new.created);
    assert_ne!(
        new.generation, old.generation,
        "generations are unique across incarnations"
    );
    let e = commit(
        &engine,
        "phoenix",
        old.generation,
        new.head_txid,
        1,
        &pages(1..=1, 1),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Fenced { .. }), "{e}");
}

fn idempotent_commits(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "idem");
    let data = pages(1..=3, 1);
    let refs = as_refs(&data);
    let req = CommitRequest {
        db: "idem",
        generation: o.generation,
        expected_head: o.head_txid,
        new_size: 3,
        commit_id: 0xC0FFEE,
        pages: &refs,
    };
    assert_eq!(
        engine.commit_status("idem", 0xC0FFEE).expect("status"),
        CommitStatus::NotLanded {
            generation: o.generation,
            head_txid: o.head_txid
        }
    );
    let first = engine.commit(&req).expect("commit");
    let again = engine
        .commit(&req)
        .expect("a retried commit returns the original result");
    assert_eq!(first, again);
    assert_eq!(engine.stat("idem").expect("stat").deltas, 1, "applied once");
    assert_eq!(
        engine.commit_status("idem", 0xC0FFEE).expect("status"),
        CommitStatus::Landed(first)
    );

    // Also for large commits, and from a fresh engine (state is in the KV).
    let txid = engine
        .commit_begin("idem", o.generation, first.txid, 4)
        .expect("begin");
    let big = pages(1..=4, 2);
    let refs = as_refs(&big);
    engine
        .commit_chunk("idem", o.generation, txid, 0, &refs)
        .expect("chunk");
    let done = engine
        .commit_finish("idem", o.generation, first.txid, txid, 1, 77)
        .expect("finish");
    let fresh = store.engine();
    assert_eq!(
        fresh.commit_status("idem", 77).expect("status"),
        CommitStatus::Landed(done)
    );
    let again = fresh
        .commit_finish("idem", o.generation, first.txid, txid, 1, 77)
        .expect("retried finish");
    assert_eq!(again, done);
    assert_eq!(
        read_all(&fresh, "idem", o.generation, 4),
        big.into_iter().map(|p| p.1).collect::<Vec<_>>()
    );
    assert_clean(&fresh, "idem");
}

/// A commit id is its writer's: another writer sending the same id (a
/// collision, or a client that reuses ids) commits, instead of being told
/// the first writer's commit was its own (regression: its pages were
/// silently dropped).
fn commit_ids_are_per_writer(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let by = |o: &kvlite_engine::OpenResponse, version: u64| {
        engine.commit(&CommitRequest {
            db: "ids",
            generation: o.generation,
            expected_head: o.head_txid,
            new_size: 1,
            commit_id: 42,
            pages: &[(1, &page(1, version))],
        })
    };
    let a = open(&engine, "ids");
    let first = by(&a, 1).expect("first writer");
    assert_eq!(by(&a, 1), Ok(first), "the same writer's retry is answered");
    let b = open(&engine, "ids");
    let second = by(&b, 2).expect("second writer, same id");
    assert!(second.txid > first.txid, "{first:?} {second:?}");
    assert_eq!(read_all(&engine, "ids", b.generation, 1), [page(1, 2)]);
    assert_clean(&engine, "ids");
}

fn quota(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    // Learn the exact cost of a commit on one database...
    let probe = open(&engine, "q0");
    let used0 = engine.stat("q0").expect("stat").used_bytes;
    let data = pages(1..=8, 5);
    commit(&engine, "q0", probe.generation, probe.head_txid, 8, &data).expect("commit");
    let cost = engine.stat("q0").expect("stat").used_bytes - used0;

    // ...then exactly at the limit succeeds and one byte under fails.
    for (db, quota, ok) in [("q1", used0 + cost, true), ("q2", used0 + cost - 1, false)] {
        let o = open(&engine, db);
        assert_eq!(engine.stat(db).expect("stat").used_bytes, used0);
        engine.set_quota(db, quota).expect("set quota");
        let r = commit(&engine, db, o.generation, o.head_txid, 8, &data);
        let stat = engine.stat(db).expect("stat");
        if ok {
            r.expect("exactly at the quota");
            assert_eq!(stat.used_bytes, quota);
        } else {
            let e = r.unwrap_err();
            assert!(
                matches!(e, Error::QuotaExceeded { quota: q, .. } if q == quota),
                "{e}"
            );
            assert_eq!(
                (stat.head_txid, stat.size_pages, stat.used_bytes),
                (o.head_txid, 0, used0),
                "nothing changed"
            );
            // A large commit over quota fails too and leaves nothing behind.
            let e = commit_large(&engine, db, o.generation, o.head_txid, 8, &data, 3).unwrap_err();
            assert!(matches!(e, Error::QuotaExceeded { .. }), "{e}");
            let stat = engine.stat(db).expect("stat");
            assert_eq!(
                (stat.head_txid, stat.pending_commits, stat.used_bytes),
                (o.head_txid, 0, used0)
            );
        }
        assert_clean(&engine, db);
    }
}

/// A database at or over its quota can always shrink or rewrite what it
/// has (DELETE, DROP TABLE and VACUUM must work on a full database); only
/// growth is refused. A quota of 0 is no limit (what `inspect` says).
fn an_over_quota_database_can_shrink(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "full");
    let g = o.generation;
    let mut head = commit(&engine, "full", g, o.head_txid, 16, &pages(1..=16, 1))
        .expect("fill")
        .txid;
    let used = engine.stat("full").expect("stat").used_bytes;
    engine.set_quota("full", used).expect("quota");
    let e = commit(&engine, "full", g, head, 17, &pages(17..=17, 1)).unwrap_err();
    assert!(
        matches!(e, Error::QuotaExceeded { .. }),
        "growth is refused: {e}"
    );
    // Rewrites in place, fast and large, go through over the quota.
    head = commit(&engine, "full", g, head, 16, &pages(1..=8, 2))
        .expect("a rewrite over the quota")
        .txid;
    head = commit_large(&engine, "full", g, head, 16, &pages(1..=16, 3), 5)
        .expect("a large rewrite (VACUUM) over the quota")
        .txid;
    let stat = engine.stat("full").expect("stat");
    assert!(stat.used_bytes > stat.quota_bytes, "{stat:?}");
    // So does a truncation, and compaction brings usage back under.
    head = commit(&engine, "full", g, head, 4, &[])
        .expect("truncate")
        .txid;
    engine.compact("full").expect("compact");
    let stat = engine.stat("full").expect("stat");
    assert!(stat.used_bytes <= stat.quota_bytes, "{stat:?}");
    head = commit(&engine, "full", g, head, 5, &pages(5..=5, 4))
        .expect("growth under the quota again")
        .txid;
    assert_eq!(
        read_all(&engine, "full", g, 5),
        [page(1, 3), page(2, 3), page(3, 3), page(4, 3), page(5, 4)]
    );
    // Quota 0: no limit.
    engine.set_quota("full", 0).expect("no quota");
    commit(&engine, "full", g, head, 300, &pages(6..=300, 5)).expect("unlimited growth");
    assert_clean(&engine, "full");
}

/// Without history, compaction after a truncation frees what the pages
/// past the end held (`history.rs` covers the same with history kept).
fn truncation_frees_storage(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine_without_history();
    let o = open(&engine, "shrink");
    let mut head = o.head_txid;
    for v in 0..4u64 {
        head = commit(
            &engine,
            "shrink",
            o.generation,
            head,
            200,
            &pages(1..=200, v),
        )
        .expect("commit")
        .txid;
    }
    let big = engine.stat("shrink").expect("stat");
    assert_eq!(big.deltas, 4);
    head = commit(&engine, "shrink", o.generation, head, 10, &pages(1..=2, 9))
        .expect("shrink")
        .txid;
    let shrunk = engine.stat("shrink").expect("stat");
    assert_eq!(shrunk.size_pages, 10);
    // The shrinking commit only records the size: readers of earlier
    // commits may still read the pages past it, until compaction folds.
    assert_eq!(shrunk.deltas, 5);
    assert_clean(&engine, "shrink");
    engine.compact("shrink").expect("compact");
    let small = engine.stat("shrink").expect("stat");
    assert_eq!(small.size_pages, 10);
    assert_eq!(
        (small.page_index_entries, small.deltas, small.shards),
        (0, 0, 1)
    );
    assert!(
        small.used_bytes * 3 < big.used_bytes,
        "{} vs {}",
        small.used_bytes,
        big.used_bytes
    );
    assert_clean(&engine, "shrink");
    // Growing again reads zeros, never the truncated data.
    commit(
        &engine,
        "shrink",
        o.generation,
        head,
        20,
        &pages(20..=20, 10),
    )
    .expect("grow");
    let got = engine
        .get_pages("shrink", o.generation, &[11, 19, 20, 21])
        .expect("read");
    assert_eq!(got[0].as_deref(), Some(&[0u8; PAGE_SIZE][..]));
    assert_eq!(got[1].as_deref(), Some(&[0u8; PAGE_SIZE][..]));
    assert_eq!(got[2], Some(kvlite_api::PageData::from(page(20, 10))));
    assert_eq!(got[3], None, "past the end");
    assert_clean(&engine, "shrink");
}

fn bad_requests(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "bad");
    let g = o.generation;
    let h = o.head_txid;
    let ok = page(1, 1);
    let short = vec![0u8; 100];
    fn invalid<T: std::fmt::Debug>(r: kvlite_engine::Result<T>, kind: InvalidKind) -> String {
        match r {
            Err(Error::InvalidRequest(m)) if m.kind == kind => m.detail,
            other => panic!("expected InvalidRequest of kind {kind:?}, got {other:?}"),
        }
    }
    let req = |pages: &[(u32, &[u8])], new_size: u32| {
        engine.commit(&CommitRequest {
            db: "bad",
            generation: g,
            expected_head: h,
            new_size,
            commit_id: 1,
            pages,
        })
    };
    assert!(invalid(req(&[(0, &ok)], 1), InvalidKind::PageNumber).contains("start at 1"));
    assert!(invalid(req(&[(1, &short)], 1), InvalidKind::PageLength).contains("100 bytes"));
    assert!(invalid(req(&[(1, &ok), (1, &ok)], 1), InvalidKind::DuplicatePage).contains("twice"));
    assert!(invalid(req(&[(5, &ok)], 3), InvalidKind::PagePastSize).contains("past the new size"));
    assert!(invalid(req(&[(1, &ok)], MAX_PAGES + 1), InvalidKind::Size).contains("exceeds"));
    assert!(
        invalid(
            req(&[(LOCK_PAGE, &ok)], LOCK_PAGE + 1),
            InvalidKind::LockPage
        )
        .contains("lock page")
    );
    let e = req(&[(1, &ok)], MAX_PAGES).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge(_)),
        "zero-filling a huge growth is refused: {e}"
    );
    assert!(
        invalid(
            engine.get_pages("bad", g, &[3, 0]).map(|_| ()),
            InvalidKind::PageNumber
        )
        .contains("start at 1")
    );
    assert!(
        invalid(
            engine.get_pages("bad", g, &[3, MAX_PAGES + 1]).map(|_| ()),
            InvalidKind::PageNumber
        )
        .contains("beyond")
    );
    assert!(matches!(
        engine.get_pages("nope", 1, &[1]),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(engine.stat("nope"), Err(Error::NotFound(_))));
    assert!(
        invalid(
            engine.open("", &Preload::default()).map(|_| ()),
            InvalidKind::Name
        )
        .contains("names")
    );
    assert!(
        invalid(
            engine
                .open(&"x".repeat(513), &Preload::default())
                .map(|_| ()),
            InvalidKind::Name
        )
        .contains("names")
    );
    let e = engine.commit_finish("bad", g, h, h + 1, 0, 5).unwrap_err();
    assert!(matches!(e, Error::InvalidRequest(_)), "{e}");
    // A large commit with a missing part cannot finish.
    let txid = engine.commit_begin("bad", g, h, 2).expect("begin");
    engine
        .commit_chunk("bad", g, txid, 1, &[(2, &ok)])
        .expect("part 1");
    assert!(
        invalid(
            engine.commit_finish("bad", g, h, txid, 2, 6).map(|_| ()),
            InvalidKind::LargeCommit
        )
        .contains("arrived")
    );
    engine
        .commit_chunk("bad", g, txid, 0, &[(2, &ok)])
        .expect("part 0");
    assert!(
        invalid(
            engine.commit_finish("bad", g, h, txid, 2, 6).map(|_| ()),
            InvalidKind::DuplicatePage
        )
        .contains("two parts")
    );
    // Oversized fast commits are refused with a typed error.
    let small = store_with_small_limit(&store);
    let o2 = open(&small, "bad2");
    let e = commit(
        &small,
        "bad2",
        o2.generation,
        o2.head_txid,
        64,
        &pages(1..=64, 1),
    )
    .unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
    let stat = engine.stat("bad").expect("stat");
    assert_eq!(
        (stat.head_txid, stat.size_pages),
        (h, 0),
        "nothing was written"
    );
}

fn store_with_small_limit(store: &Store) -> std::sync::Arc<kvlite_engine::Engine> {
    common::engine_with(
        store.kv(),
        EngineConfig {
            fast_path_limit: 16 * PAGE_SIZE as u64,
            ..EngineConfig::default()
        },
    )
}

fn corruption_is_detected(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "rot");
    let r = commit(
        &engine,
        "rot",
        o.generation,
        o.head_txid,
        4,
        &pages(1..=4, 1),
    )
    .expect("commit");
    let kv = store.kv();
    let stat = engine.stat("rot").expect("stat");
    let keys = kvlite_engine::keys::DbKeys { id: stat.id };
    let (start, end) = keys.delta_txids(r.txid, r.txid + 1);
    // Flip one byte inside the stored delta.
    kv.transact(|t| {
        let chunks = t.scan(&start, &end, ScanOptions::ALL)?;
        let (k, mut v) = chunks.into_iter().next().expect("a chunk");
        let mid = v.len() / 2;
        v[mid] ^= 0x40;
        t.set(&k, &v)
    })
    .expect("corrupt");
    let fresh = store.engine();
    let e = fresh.get_pages("rot", o.generation, &[2]).unwrap_err();
    match e {
        Error::Corruption { db, kind, what } => {
            assert_eq!(db, "rot");
            assert_eq!(kind, CorruptionKind::Blob);
            assert!(what.contains("key"), "names the key: {what}");
        }
        other => panic!("expected Corruption, got {other}"),
    }
    // A page whose delta vanished is corruption too, never zeros.
    kv.transact(|t| t.clear_range(&start, &end))
        .expect("remove");
    let e = fresh.get_pages("rot", o.generation, &[3]).unwrap_err();
    assert!(
        matches!(&e, Error::Corruption { kind: CorruptionKind::MissingPage, what, .. } if what.contains("page 3")),
        "{e}"
    );
    let _ = KvError::Closed;
}

fn preload(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "pre");
    assert!(
        o.pages.is_empty(),
        "an empty database has nothing to preload"
    );
    commit(
        &engine,
        "pre",
        o.generation,
        o.head_txid,
        600,
        &pages(1..=600, 1),
    )
    .expect("commit");
    let o = engine
        .open(
            "pre",
            &Preload {
                pages: vec![500, 9999],
                ranges: vec![(10, 12)],
            },
        )
        .expect("open");
    let got: Vec<u32> = o.pages.iter().map(|p| p.0).collect();
    assert_eq!(got, vec![1, 10, 11, 12, 500]);
    assert!(o.pages.iter().all(|(p, d)| *d == page(*p, 1)));
    let o = engine
        .open(
            "pre",
            &Preload {
                pages: vec![],
                ranges: vec![(1, 600)],
            },
        )
        .expect("open");
    assert_eq!(
        o.pages.len(),
        (1 << 20) / PAGE_SIZE,
        "within the byte budget"
    );
}

fn many_databases(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    for i in 0..30 {
        let db = format!("tenant/{i:03}");
        let o = open(&engine, &db);
        commit(&engine, &db, o.generation, o.head_txid, 1, &pages(1..=1, i)).expect("commit");
    }
    let all = engine.list("tenant/", None, 1000).expect("list");
    assert_eq!(all.len(), 30);
    let page2 = engine.list("tenant/", Some("tenant/009"), 5).expect("list");
    assert_eq!(
        page2,
        (10..15)
            .map(|i| format!("tenant/{i:03}"))
            .collect::<Vec<_>>()
    );
    assert!(engine.delete("tenant/005").expect("delete"));
    assert!(!engine.delete("tenant/005").expect("delete again"));
    assert_eq!(engine.list("tenant/", None, 1000).expect("list").len(), 29);
    let kv = store.kv();
    let leftover = kv
        .read(|t| t.scan(&[1], &[2], ScanOptions::ALL))
        .expect("scan")
        .len();
    assert!(leftover > 0);
    for i in 0..30 {
        let db = format!("tenant/{i:03}");
        if i != 5 {
            engine.delete(&db).expect("delete");
        }
    }
    let leftover = kv
        .read(|t| t.scan(&[1], &[2], ScanOptions::ALL))
        .expect("scan");
    assert!(
        leftover.is_empty(),
        "delete removes every key: {} left",
        leftover.len()
    );
}

fn large_deltas_are_decoded_once(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "big");
    // Not blank, so the commit is one delta (not shards stored in place).
    let first = commit(
        &engine,
        "big",
        o.generation,
        o.head_txid,
        1,
        &pages(1..=1, 0),
    )
    .expect("commit");
    let data = pages(1..=2000, 1);
    common::commit_large(&engine, "big", o.generation, first.txid, 2000, &data, 2000)
        .expect("one 8 MB part");
    let fresh = store.engine();
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..200 {
        let p = rng.u32(1..=2000);
        let got = fresh.get_pages("big", o.generation, &[p]).expect("read");
        assert_eq!(got[0].as_deref(), Some(data[p as usize - 1].1.as_slice()));
    }
    assert_eq!(
        fresh.metrics().blobs_fetched.get(),
        1,
        "the part was read and verified once, then served from memory"
    );
}

/// Unfinished large commits: their parts count against the quota (or a
/// writer that never finishes could store without bound), a huge growth is
/// refused before anything is listed, and a backlog bigger than one cleanup
/// transaction is still removed completely by the next takeover.
fn unfinished_large_commits(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();

    // A growth to the maximum size is refused at finish, cheaply.
    let o = open(&engine, "grow");
    let txid = engine
        .commit_begin("grow", o.generation, o.head_txid, MAX_PAGES)
        .expect("begin");
    let e = engine
        .commit_finish("grow", o.generation, o.head_txid, txid, 0, 1)
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
    let stat = engine.stat("grow").expect("stat");
    assert_eq!((stat.head_txid, stat.size_pages), (o.head_txid, 0));

    // Parked parts count against the quota.
    let o = open(&engine, "parked");
    let used0 = engine.stat("parked").expect("stat").used_bytes;
    let part = pages(1..=4, 1);
    let refs = as_refs(&part);
    engine
        .set_quota("parked", used0 + 6 * 4 * PAGE_SIZE as u64)
        .expect("quota");
    // (A size of 5: the parts do not hold shard 0 whole, so they are plain
    // deltas even in this blank database.)
    let txid = engine
        .commit_begin("parked", o.generation, o.head_txid, 5)
        .expect("begin");
    let mut stored = 0;
    let e = loop {
        match engine.commit_chunk("parked", o.generation, txid, stored, &refs) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 64, "parts kept landing past the quota");
    };
    assert!(matches!(e, Error::QuotaExceeded { .. }), "{e}");
    assert!(stored >= 3, "only {stored} parts fit a quota of six pages");
    // The rejected commit is gone, parts and all.
    let stat = engine.stat("parked").expect("stat");
    assert_eq!((stat.pending_commits, stat.used_bytes), (0, used0));
    assert!(
        engine
            .commit_chunk("parked", o.generation, txid, 0, &refs)
            .is_err()
    );
    // Re-sending a stored part replaces it rather than adding to it.
    let txid = engine
        .commit_begin("parked", o.generation, o.head_txid, 5)
        .expect("begin");
    for _ in 0..stored + 2 {
        engine
            .commit_chunk("parked", o.generation, txid, 0, &refs)
            .expect("re-sent part");
    }

    // A backlog of more part records than one cleanup transaction takes.
    let o = open(&engine, "backlog");
    let parts = 1100u32;
    let data = pages(1..=parts, 2);
    let txid = engine
        .commit_begin("backlog", o.generation, o.head_txid, parts)
        .expect("begin");
    for (i, (pgno, d)) in data.iter().enumerate() {
        engine
            .commit_chunk(
                "backlog",
                o.generation,
                txid,
                i as u32,
                &[(*pgno, d.as_slice())],
            )
            .expect("part");
    }
    assert_eq!(engine.stat("backlog").expect("stat").pending_commits, 1);
    let o = open(&engine, "backlog");
    let stat = engine.stat("backlog").expect("stat");
    assert_eq!((stat.pending_commits, stat.head_txid), (0, o.head_txid));
    let keys = kvlite_engine::keys::DbKeys { id: stat.id };
    let (ps, pe) = keys.pending_all();
    let (ds, de) = keys.delta_txids(stat.head_txid + 1, u64::MAX);
    let left = store
        .kv()
        .read(|t| {
            Ok::<_, KvError>(
                t.scan(&ps, &pe, ScanOptions::ALL)?.len()
                    + t.scan(&ds, &de, ScanOptions::ALL)?.len(),
            )
        })
        .expect("scan");
    assert_eq!(left, 0, "keys of the abandoned commit remain");
    assert_clean(&engine, "backlog");
    // The new writer commits normally.
    let r = commit(
        &engine,
        "backlog",
        o.generation,
        o.head_txid,
        8,
        &pages(1..=8, 3),
    )
    .expect("commit");
    assert_eq!(r.size_pages, 8);
    assert_eq!(read_all(&engine, "backlog", o.generation, 8)[7], page(8, 3));
}

/// A writer that reserved two large commits and finishes the older one must
/// not hand the newer one's txid out again: the next commit would write its
/// delta where the unfinished commit's parts are, and the takeover that
/// removes those parts would then remove committed pages.
fn finishing_an_older_reservation_never_reuses_a_txid(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "twice");
    let (g, h) = (o.generation, o.head_txid);
    let first = engine.commit_begin("twice", g, h, 2).expect("begin");
    let second = engine.commit_begin("twice", g, h, 2).expect("begin again");
    assert!(second > first);
    let part = pages(1..=2, 1);
    let refs = as_refs(&part);
    engine
        .commit_chunk("twice", g, second, 0, &refs)
        .expect("part of the second");
    engine
        .commit_chunk("twice", g, first, 0, &refs)
        .expect("part of the first");
    let r = engine
        .commit_finish("twice", g, h, first, 1, 77)
        .expect("finish the first");
    assert_eq!(r.txid, first);
    let next = commit(&engine, "twice", g, r.txid, 3, &pages(3..=3, 2)).expect("commit");
    assert!(
        next.txid > second,
        "txid {} handed out again while reservation {second} exists",
        next.txid
    );
    // A takeover cleans the unfinished reservation and nothing committed.
    let o = open(&engine, "twice");
    assert_eq!(o.head_txid, next.txid);
    let all = read_all(&engine, "twice", o.generation, 3);
    assert_eq!(all, vec![page(1, 1), page(2, 1), page(3, 2)]);
    assert_eq!(engine.stat("twice").expect("stat").pending_commits, 0);
    assert_clean(&engine, "twice");
}

/// A part record damaged in the store is corruption at finish, never pages
/// in the page index (regression: its page numbers were trusted) or shards
/// of the database.
fn a_damaged_part_record_is_corruption(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "parts");
    // Not blank: the large commit's parts are plain deltas.
    let first = commit(
        &engine,
        "parts",
        o.generation,
        o.head_txid,
        1,
        &pages(1..=1, 1),
    )
    .expect("commit");
    let (g, h) = (o.generation, first.txid);
    let txid = engine.commit_begin("parts", g, h, 2).expect("begin");
    let part = pages(1..=2, 1);
    let refs = as_refs(&part);
    engine
        .commit_chunk("parts", g, txid, 0, &refs)
        .expect("part");
    let id = engine.stat("parts").expect("stat").id;
    let key = kvlite_engine::keys::DbKeys { id }.pending_part(txid, 0);
    store
        .kv()
        .transact(|t| {
            let mut v = t.get(&key)?.expect("part record");
            v.truncate(8);
            v.extend_from_slice(&1u32.to_be_bytes());
            v.extend_from_slice(&99u32.to_be_bytes()); // past the new size
            t.set(&key, &v)
        })
        .expect("damage");
    let e = engine.commit_finish("parts", g, h, txid, 1, 5).unwrap_err();
    assert!(
        matches!(&e, Error::Corruption { kind: CorruptionKind::Record, what, .. } if what.contains("page 99")),
        "{e}"
    );
    let stat = engine.stat("parts").expect("stat");
    assert_eq!(
        (stat.head_txid, stat.size_pages, stat.page_index_entries),
        (h, 1, 1)
    );

    // A direct commit's record naming a shard outside the database.
    let o = open(&engine, "direct-parts");
    let (g, h) = (o.generation, o.head_txid);
    let txid = engine.commit_begin("direct-parts", g, h, 2).expect("begin");
    engine
        .commit_chunk("direct-parts", g, txid, 0, &refs)
        .expect("part");
    let id = engine.stat("direct-parts").expect("stat").id;
    let key = kvlite_engine::keys::DbKeys { id }.pending_part(txid, 0);
    store
        .kv()
        .transact(|t| {
            let mut v = t.get(&key)?.expect("part record");
            assert_eq!(v[0], 1, "a record with shards in place");
            let shard_at = v.len() - 12;
            v[shard_at..shard_at + 4].copy_from_slice(&100u32.to_be_bytes());
            t.set(&key, &v)
        })
        .expect("damage");
    let e = engine
        .commit_finish("direct-parts", g, h, txid, 1, 5)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Corruption { kind: CorruptionKind::Record, what, .. } if what.contains("shard 100")),
        "{e}"
    );
    let stat = engine.stat("direct-parts").expect("stat");
    assert_eq!((stat.head_txid, stat.size_pages, stat.shards), (h, 0, 0));
}

/// A large commit into a blank database stores its whole shards in place
/// (no page-index entries, no fold to do afterwards); the pages of shards
/// a part holds only in part, and the growth fill, go through the page
/// index as usual. On a database that is not blank nothing is stored in
/// place.
fn a_large_commit_into_a_blank_database_stores_whole_shards(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "direct");
    let (g, h) = (o.generation, o.head_txid);
    // Shards at 200 pages: 0 (1-63), 1 (64-127), 2 (128-191), 3 (192-200).
    // Part 0 holds shard 0 whole and shard 1 in part; part 1 the rest of
    // shard 1, shard 2 without page 150 (filled with zeros at finish) and
    // shard 3 whole.
    let mut data = pages(1..=200, 4);
    data.retain(|(p, _)| *p != 150);
    let (first, second) = data.split_at(100);
    let txid = engine.commit_begin("direct", g, h, 200).expect("begin");
    for (part, chunk) in [first, second].into_iter().enumerate() {
        let refs = as_refs(chunk);
        engine
            .commit_chunk("direct", g, txid, part as u32, &refs)
            .expect("part");
    }
    assert_clean(&engine, "direct"); // shards in place are not counted yet
    assert_eq!(engine.stat("direct").expect("stat").shards, 0);
    let done = engine
        .commit_finish("direct", g, h, txid, 2, 7)
        .expect("finish");
    let stat = engine.stat("direct").expect("stat");
    assert_eq!(
        (stat.shards, stat.page_index_entries),
        (2, 200 - 63 - 9),
        "shards 0 and 3 in place; shards 1 and 2 (page 150 a zero fill) indexed"
    );
    assert_eq!(
        stat.materialized_txid,
        done.txid - 1,
        "all before it is folded; its indexed pages are not"
    );
    let mut expected: Vec<Vec<u8>> = (1..=200).map(|p| page(p, 4)).collect();
    expected[149] = vec![0; PAGE_SIZE];
    assert_eq!(read_all(&engine, "direct", g, 200), expected);
    assert_clean(&engine, "direct");
    let report = engine.doctor("direct").expect("doctor");
    assert!(report.is_healthy(), "{report:#?}");
    // The commit before it still reads as the blank database.
    let reader = engine.begin_read("direct", 1, 0).expect("reader");
    assert_eq!(reader.head_txid, done.txid);
    engine.end_read("direct", 1);
    // A second engine (nothing cached) reads the same.
    let other = store.engine();
    assert_eq!(read_all(&other, "direct", g, 200), expected);

    let report = engine.compact("direct").expect("compact");
    assert_eq!(report.pages_folded, 200 - 63 - 9);
    let stat = engine.stat("direct").expect("stat");
    assert_eq!((stat.shards, stat.page_index_entries), (4, 0));
    assert_eq!(read_all(&engine, "direct", g, 200), expected);
    assert_clean(&engine, "direct");

    // Not blank any more: the next large commit is indexed as usual.
    let next = commit_large(&engine, "direct", g, done.txid, 200, &pages(1..=64, 5), 64)
        .expect("large commit");
    let stat = engine.stat("direct").expect("stat");
    assert_eq!((stat.shards, stat.page_index_entries), (4, 64));
    expected[..64]
        .iter_mut()
        .zip(1..)
        .for_each(|(d, p)| *d = page(p, 5));
    assert_eq!(read_all(&engine, "direct", g, 200), expected);
    assert_eq!(next.size_pages, 200);
    assert_clean(&engine, "direct");

    // Parts on shard boundaries: every page lands in a shard, nothing is
    // left to fold.
    let o = open(&engine, "aligned");
    let data = pages(1..=300, 6);
    let (first, rest) = data.split_at(127);
    let txid = engine
        .commit_begin("aligned", o.generation, o.head_txid, 300)
        .expect("begin");
    for (part, chunk) in [first, rest].into_iter().enumerate() {
        let refs = as_refs(chunk);
        engine
            .commit_chunk("aligned", o.generation, txid, part as u32, &refs)
            .expect("part");
    }
    let done = engine
        .commit_finish("aligned", o.generation, o.head_txid, txid, 2, 8)
        .expect("finish");
    let stat = engine.stat("aligned").expect("stat");
    assert_eq!(
        (stat.shards, stat.page_index_entries, stat.materialized_txid),
        (5, 0, done.txid)
    );
    let report = engine.compact("aligned").expect("compact");
    assert_eq!(report.pages_folded, 0);
    let expected: Vec<Vec<u8>> = data.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(read_all(&engine, "aligned", o.generation, 300), expected);
    assert!(engine.doctor("aligned").expect("doctor").is_healthy());
    assert_clean(&engine, "aligned");
}

/// Only a reservation made while the database is blank and no other is
/// reserved stores shards in place: a second one, on the same blank
/// database, is a plain delta (two direct commits would write the same
/// shards' keys).
fn only_the_one_reservation_on_a_blank_database_is_direct(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "two");
    let (g, h) = (o.generation, o.head_txid);
    let first = engine.commit_begin("two", g, h, 64).expect("begin");
    let second = engine.commit_begin("two", g, h, 64).expect("begin");
    let data = pages(1..=64, 1);
    let refs = as_refs(&data);
    engine
        .commit_chunk("two", g, second, 0, &refs)
        .expect("part of the second");
    engine
        .commit_chunk("two", g, first, 0, &refs[..63])
        .expect("part of the first");
    engine
        .commit_finish("two", g, h, second, 1, 1)
        .expect("the second lands");
    let stat = engine.stat("two").expect("stat");
    assert_eq!((stat.shards, stat.page_index_entries), (0, 64));
    let expected: Vec<Vec<u8>> = data.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(read_all(&engine, "two", g, 64), expected);
    assert!(engine.commit_finish("two", g, h, first, 1, 2).is_err());
    let o = open(&engine, "two");
    assert_eq!(read_all(&engine, "two", o.generation, 64), expected);
    assert_clean(&engine, "two");
}

/// A shard one part stored in place is refused to another part of the same
/// commit, and a part sent again never clears a shard another part holds
/// (regression: a part sent again without the shard removed it while the
/// first part's record still named it).
fn a_shard_in_place_belongs_to_one_part(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "owned");
    let (g, h) = (o.generation, o.head_txid);
    let txid = engine.commit_begin("owned", g, h, 127).expect("begin");
    let data = pages(1..=127, 2);
    let refs = as_refs(&data);
    engine
        .commit_chunk("owned", g, txid, 0, &refs[..63])
        .expect("part 0: shard 0");
    let duplicate = |e: Error| {
        assert!(
            matches!(&e, Error::InvalidRequest(i) if i.kind == InvalidKind::DuplicatePage),
            "{e}"
        )
    };
    duplicate(
        engine
            .commit_chunk("owned", g, txid, 1, &refs[..63])
            .unwrap_err(),
    );
    engine
        .commit_chunk("owned", g, txid, 1, &refs[63..])
        .expect("part 1: shard 1");
    // Sent again with part 0's shard besides its own: refused.
    duplicate(engine.commit_chunk("owned", g, txid, 1, &refs).unwrap_err());
    // Sent again holding shard 1 in part only: its own shard goes, part
    // 0's stays.
    engine
        .commit_chunk("owned", g, txid, 1, &refs[63..126])
        .expect("part 1 again, without page 127");
    engine
        .commit_finish("owned", g, h, txid, 2, 4)
        .expect("finish");
    let stat = engine.stat("owned").expect("stat");
    assert_eq!((stat.shards, stat.page_index_entries), (1, 64));
    let mut expected: Vec<Vec<u8>> = data.iter().map(|(_, d)| d.clone()).collect();
    expected[126] = vec![0; PAGE_SIZE];
    assert_eq!(read_all(&engine, "owned", g, 127), expected);
    assert!(engine.doctor("owned").expect("doctor").is_healthy());
    assert_clean(&engine, "owned");
}

/// A direct commit that never lands leaves nothing behind: a takeover
/// removes the shards it stored in place with its parts; a part sent again
/// removes the shards it no longer holds.
fn shards_in_place_that_never_land_are_removed(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "orphan");
    let txid = engine
        .commit_begin("orphan", o.generation, o.head_txid, 128)
        .expect("begin");
    let data = pages(1..=128, 1);
    let refs = as_refs(&data);
    engine
        .commit_chunk("orphan", o.generation, txid, 0, &refs)
        .expect("part");
    open(&engine, "orphan"); // a takeover: the commit is abandoned
    assert_eq!(engine.stat("orphan").expect("stat").pending_commits, 0);
    assert_clean(&engine, "orphan"); // no shard chunks without a record
    // Stray shard chunks in a blank database with nothing reserved (what
    // an engine that did not know shards in place leaves when it cleans
    // such a commit) go at the next takeover.
    let id = engine.stat("orphan").expect("stat").id;
    let stray = kvlite_engine::keys::DbKeys { id }.shard(3);
    store
        .kv()
        .transact(|t| t.set(&kvlite_kv::chunked::chunk_key(&stray, 0), b"stray"))
        .expect("stray chunk");
    assert!(!engine.audit("orphan").expect("audit").is_clean());
    let o = open(&engine, "orphan");
    assert_clean(&engine, "orphan");
    let r = commit(
        &engine,
        "orphan",
        o.generation,
        o.head_txid,
        2,
        &pages(1..=2, 2),
    )
    .expect("the database works on");
    assert_eq!(r.size_pages, 2);
    assert_clean(&engine, "orphan");

    // Sent again without page 64, part 0 holds shard 0 whole but not
    // shard 1: shard 1's chunks go.
    let o = open(&engine, "resend");
    let (g, h) = (o.generation, o.head_txid);
    let txid = engine.commit_begin("resend", g, h, 128).expect("begin");
    engine
        .commit_chunk("resend", g, txid, 0, &refs)
        .expect("part");
    let without: Vec<(u32, &[u8])> = refs.iter().copied().filter(|(p, _)| *p != 64).collect();
    engine
        .commit_chunk("resend", g, txid, 0, &without)
        .expect("part sent again");
    engine
        .commit_finish("resend", g, h, txid, 1, 9)
        .expect("finish");
    let stat = engine.stat("resend").expect("stat");
    assert_eq!(
        (stat.shards, stat.page_index_entries),
        (2, 64),
        "shards 0 and 2 (page 128) whole; 65-127 indexed, 64 a zero fill"
    );
    let mut expected: Vec<Vec<u8>> = data.iter().map(|(_, d)| d.clone()).collect();
    expected[63] = vec![0; PAGE_SIZE];
    assert_eq!(read_all(&engine, "resend", g, 128), expected);
    assert_clean(&engine, "resend");
}

/// Shards stored in place never overwrite, nor remove, a shard the database
/// has: when a commit lands during a direct commit (so that one can no
/// longer finish) and is folded, a part arriving after the fold is refused,
/// and a part stored before it is overwritten by the fold and not removed
/// with the abandoned commit.
fn shards_in_place_never_replace_the_databases_shards(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let current = pages(1..=64, 1);
    let expected: Vec<Vec<u8>> = current.iter().map(|(_, d)| d.clone()).collect();
    let late = pages(1..=63, 2);
    let late = as_refs(&late);
    for part_first in [false, true] {
        let db = if part_first {
            "early-part"
        } else {
            "late-part"
        };
        let o = open(&engine, db);
        let (g, h) = (o.generation, o.head_txid);
        let txid = engine.commit_begin(db, g, h, 64).expect("begin");
        if part_first {
            engine.commit_chunk(db, g, txid, 0, &late).expect("part");
        }
        commit(&engine, db, g, h, 64, &current).expect("a commit lands meanwhile");
        engine.compact(db).expect("compact");
        assert_eq!(engine.stat(db).expect("stat").shards, 2);
        if !part_first {
            let e = engine.commit_chunk(db, g, txid, 0, &late).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidRequest(i) if i.kind == InvalidKind::LargeCommit),
                "{e}"
            );
        }
        assert_eq!(read_all(&engine, db, g, 64), expected);
        let parts = u32::from(part_first);
        let e = engine.commit_finish(db, g, h, txid, parts, 3).unwrap_err();
        assert!(matches!(e, Error::Fenced { .. }), "{e}");
        let o = open(&engine, db); // a takeover drops the abandoned commit
        assert_eq!(read_all(&engine, db, o.generation, 64), expected);
        assert_eq!(engine.stat(db).expect("stat").pending_commits, 0);
        assert_clean(&engine, db);
    }
}

/// A pass folding to a commit before a direct commit (a reader holds the
/// fold point there) leaves the shards that commit stored alone, though the
/// database was empty at its fold point.
fn a_pass_behind_a_direct_commit_keeps_its_shards(backend: Backend) {
    let store = Store::new(backend);
    let engine = common::engine_with(store.kv(), EngineConfig::default());
    let o = open(&engine, "behind");
    let (g, h) = (o.generation, o.head_txid);
    // An empty commit gives the fold point a record: the size there is 0.
    let empty = commit(&engine, "behind", g, h, 0, &[]).expect("empty commit");
    let reader = engine.begin_read("behind", 42, 0).expect("reader");
    assert_eq!(reader.head_txid, empty.txid);
    let data = pages(1..=192, 3);
    let done = commit_large(&engine, "behind", g, empty.txid, 192, &data, 96).expect("import");
    assert_eq!(engine.stat("behind").expect("stat").shards, 3);
    let report = engine.doctor("behind").expect("doctor");
    assert!(report.is_healthy(), "{report:#?}");
    engine.compact("behind").expect("compact");
    let expected: Vec<Vec<u8>> = data.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(engine.stat("behind").expect("stat").shards, 3);
    assert_eq!(read_all(&engine, "behind", g, 192), expected);
    assert_clean(&engine, "behind");
    engine.end_read("behind", 42);
    engine.compact("behind").expect("compact");
    assert_eq!(read_all(&engine, "behind", g, 192), expected);
    assert_eq!(engine.stat("behind").expect("stat").head_txid, done.txid);
    assert_clean(&engine, "behind");
}

/// The limits hold at their edges: a one-round-trip commit of exactly the
/// fast-path limit of incompressible pages fits one KV transaction, and a
/// large commit begun by one engine is finished by another (its state lives
/// in the store, not in the engine that began it).
fn limits_at_the_edges(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "edge");
    let n = (o.fast_path_limit / PAGE_SIZE as u64) as u32;
    let mut rng = fastrand::Rng::with_seed(n as u64);
    let noise: Vec<(u32, Vec<u8>)> = (1..=n)
        .map(|p| (p, (0..PAGE_SIZE).map(|_| rng.u8(..)).collect()))
        .collect();
    let r = commit(&engine, "edge", o.generation, o.head_txid, n, &noise)
        .expect("a full fast-path commit of incompressible pages");
    let more = commit(
        &engine,
        "edge",
        o.generation,
        r.txid,
        n + 1,
        &pages(1..=n + 1, 9),
    );
    assert!(matches!(more, Err(Error::TooLarge(_))), "{more:?}");
    let got = engine
        .get_pages("edge", o.generation, &[1, n])
        .expect("read");
    assert_eq!(got[1].as_deref(), Some(noise[n as usize - 1].1.as_slice()));

    let data = pages(1..=64, 3);
    let txid = engine
        .commit_begin("edge", o.generation, r.txid, 64)
        .expect("begin");
    for (i, chunk) in data.chunks(16).enumerate() {
        let refs = as_refs(chunk);
        engine
            .commit_chunk("edge", o.generation, txid, i as u32, &refs)
            .expect("part");
    }
    drop(engine);
    let other = store.engine();
    let done = other
        .commit_finish("edge", o.generation, r.txid, txid, 4, 77)
        .expect("another engine finishes it");
    assert_eq!((done.txid, done.size_pages), (txid, 64));
    assert_eq!(
        read_all(&other, "edge", o.generation, 64),
        data.into_iter().map(|(_, d)| d).collect::<Vec<_>>()
    );
    assert_clean(&other, "edge");
}

on_every_backend!(
    fencing,
    recreated_database_fences_old_writers,
    idempotent_commits,
    commit_ids_are_per_writer,
    quota,
    an_over_quota_database_can_shrink,
    truncation_frees_storage,
    bad_requests,
    corruption_is_detected,
    preload,
    many_databases,
    large_deltas_are_decoded_once,
    unfinished_large_commits,
    finishing_an_older_reservation_never_reuses_a_txid,
    a_damaged_part_record_is_corruption,
    a_large_commit_into_a_blank_database_stores_whole_shards,
    shards_in_place_that_never_land_are_removed,
    shards_in_place_never_replace_the_databases_shards,
    a_pass_behind_a_direct_commit_keeps_its_shards,
    only_the_one_reservation_on_a_blank_database_is_direct,
    a_shard_in_place_belongs_to_one_part,
    delete_removes_everything,
    a_delete_cut_short_is_finished,
    limits_at_the_edges
);

/// A writer can park only so much: a few reservations at once, and no
/// more pages in one reservation than its finish could index (regression:
/// reservations were unlimited and parts unbounded outside the quota).
#[test]
fn reservations_and_parked_parts_are_bounded() {
    let kv = kvlite_kv::Kv::memory().with_limits(kvlite_kv::Limits {
        max_txn_bytes: 1_150_000,
        ..kvlite_kv::Limits::default()
    });
    let engine = common::engine_with(kv, EngineConfig::default());
    let o = open(&engine, "parked");
    let (g, h) = (o.generation, o.head_txid);
    let limit = engine.max_commit_pages();
    for _ in 0..kvlite_engine::MAX_RESERVATIONS {
        engine.commit_begin("parked", g, h, 1).expect("begin");
    }
    let e = engine.commit_begin("parked", g, h, 1).unwrap_err();
    assert!(
        matches!(&e, Error::TooLarge(t) if t.kind == TooLargeKind::Commit),
        "{e}"
    );
    // A takeover clears them; then one reservation takes parts up to the
    // commit limit and refuses the part beyond it.
    let o = open(&engine, "parked");
    let (g, h) = (o.generation, o.head_txid);
    let size = (limit + 100) as u32;
    let txid = engine.commit_begin("parked", g, h, size).expect("begin");
    let per_part = (o.fast_path_limit / PAGE_SIZE as u64).max(1) as u32;
    let data = page(1, 1);
    let mut stored = 0u64;
    let mut part = 0u32;
    let err = loop {
        let first = 1 + part * per_part;
        let refs: Vec<(u32, &[u8])> = (first..first + per_part).map(|p| (p, &data[..])).collect();
        match engine.commit_chunk("parked", g, txid, part, &refs) {
            Ok(()) => stored += refs.len() as u64,
            Err(e) => break e,
        }
        part += 1;
        assert!(
            stored <= limit,
            "{stored} pages parked past the limit of {limit}"
        );
    };
    assert!(
        matches!(&err, Error::TooLarge(t) if t.kind == TooLargeKind::Commit),
        "{err}"
    );
    assert!(
        stored + u64::from(per_part) > limit,
        "refused early, at {stored} of {limit}"
    );
}

/// A page index larger than one database may hold is never loaded whole:
/// reads look up their pages, compaction plans in pieces, and every page
/// still reads right (regression: the whole index was loaded for any read).
#[test]
fn a_large_page_index_is_read_piecewise() {
    let mut registry = prometheus_client::registry::Registry::default();
    let engine = kvlite_engine::Engine::new(
        kvlite_kv::Kv::memory(),
        EngineConfig {
            max_loaded_page_index_entries: 50,
            ..EngineConfig::default()
        },
        &mut registry,
    );
    let o = open(&engine, "wide");
    let mut head = o.head_txid;
    for v in 0..4u64 {
        head = commit(
            &engine,
            "wide",
            o.generation,
            head,
            400,
            &pages(1..=400 - v as u32 * 50, v),
        )
        .expect("commit")
        .txid;
    }
    let want: Vec<Vec<u8>> = (1..=400u32)
        .map(|p| page(p, u64::from((400 - p) / 50).min(3)))
        .collect();
    assert_eq!(read_all(&engine, "wide", o.generation, 400), want);
    let misses = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text.lines()
            .find(|l| l.starts_with("kvlite_engine_page_index_cache_total{result=\"miss\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(misses(), 0.0, "the 400-entry index was never loaded");
    let report = engine.compact("wide").expect("compact");
    assert_eq!(
        report.pages_folded,
        400 + 350 + 300 + 250,
        "every version folds"
    );
    assert_eq!(misses(), 0.0, "compaction planned it in pieces");
    assert_eq!(read_all(&engine, "wide", o.generation, 400), want);
    assert_clean(&engine, "wide");
}

/// A META whose usage counters sit near the top of their range (damaged)
/// makes a commit fail as corruption instead of wrapping them around
/// (regression: increments were unchecked).
#[test]
fn counters_near_overflow_are_corruption_not_wraparound() {
    let kv = kvlite_kv::Kv::memory();
    let engine = common::engine_with(kv.clone(), EngineConfig::default());
    let o = open(&engine, "wrap");
    let id = engine.stat("wrap").expect("stat").id;
    let key = kvlite_engine::keys::DbKeys { id }.meta();
    kv.transact(|t| {
        let mut meta = kvlite_engine::Meta::decode(&t.get(&key)?.expect("META")).expect("decode");
        meta.delta_bytes = u64::MAX - 10;
        t.set(&key, &meta.encode())
    })
    .expect("damage META");
    let e = commit(
        &engine,
        "wrap",
        o.generation,
        o.head_txid,
        1,
        &pages(1..=1, 1),
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Corruption {
                kind: CorruptionKind::Counters,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(engine.stat("wrap").expect("stat").head_txid, o.head_txid);
}

/// The registry the server exposes counts what happened.
#[test]
fn metrics_count_what_happened() {
    let mut registry = prometheus_client::registry::Registry::default();
    let engine = kvlite_engine::Engine::new(
        kvlite_kv::Kv::memory(),
        EngineConfig::default(),
        &mut registry,
    );
    let first = open(&engine, "m");
    let second = open(&engine, "m");
    let head = commit(
        &engine,
        "m",
        second.generation,
        second.head_txid,
        4,
        &pages(1..=4, 1),
    )
    .expect("commit")
    .txid;
    // A stale writer and a stale head are both fence rejections.
    assert!(commit(&engine, "m", first.generation, head, 4, &pages(1..=4, 2)).is_err());
    assert!(
        commit(
            &engine,
            "m",
            second.generation,
            head - 1,
            4,
            &pages(1..=4, 2)
        )
        .is_err()
    );
    let used = engine.stat("m").expect("stat").used_bytes;
    engine.set_quota("m", used).expect("quota");
    // Growth is what a quota refuses.
    assert!(matches!(
        commit(&engine, "m", second.generation, head, 5, &pages(1..=5, 3)),
        Err(Error::QuotaExceeded { .. })
    ));
    engine.set_quota("m", 1 << 30).expect("quota");
    commit_large(
        &engine,
        "m",
        second.generation,
        head,
        40,
        &pages(1..=40, 4),
        16,
    )
    .expect("large commit");
    engine.compact("m").expect("compact");
    engine
        .get_pages("m", second.generation, &[1, 2, 3])
        .expect("read");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sample {prefix:?} in\n{text}"))
    };
    assert_eq!(value("kvlite_engine_takeovers_total "), 2.0);
    assert_eq!(value("kvlite_engine_fence_rejections_total "), 2.0);
    assert_eq!(value("kvlite_engine_quota_rejections_total "), 1.0);
    assert_eq!(
        value("kvlite_engine_commit_seconds_count{path=\"fast\"}"),
        1.0
    );
    assert_eq!(
        value("kvlite_engine_commit_seconds_count{path=\"large\"}"),
        1.0
    );
    // Pages per commit: 4 (fast), 40 (large), and the valid but rejected
    // fast commits: two of 4 (fenced) and one of 5 (over quota).
    assert_eq!(
        value("kvlite_engine_commit_pages_sum "),
        44.0 + 2.0 * 4.0 + 5.0
    );
    assert_eq!(
        value("kvlite_engine_commit_phase_seconds_count{phase=\"kv_write\"}"),
        1.0
    );
    assert_eq!(
        value("kvlite_engine_page_index_cache_total{result=\"miss\"}"),
        1.0
    );
    assert_eq!(
        value("kvlite_engine_compaction_passes_total{result=\"ok\"}"),
        1.0
    );
    // Every version folds: the fast commit's 4 and the large commit's 40.
    assert_eq!(value("kvlite_engine_compaction_pages_folded_total "), 44.0);
    assert_eq!(value("kvlite_engine_get_pages_pages_sum "), 3.0);
}

/// Counts what the engine asks of the store.
struct CountingBackend {
    inner: kvlite_kv::memory::MemoryBackend,
    batched_scans: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ranges: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct CountingTxn<'a> {
    inner: Box<dyn kvlite_kv::BackendTxn + 'a>,
    batched_scans: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ranges: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl kvlite_kv::Backend for CountingBackend {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn begin_read(&self) -> kvlite_kv::Result<Box<dyn kvlite_kv::BackendTxn + '_>> {
        Ok(Box::new(CountingTxn {
            inner: self.inner.begin_read()?,
            batched_scans: self.batched_scans.clone(),
            ranges: self.ranges.clone(),
        }))
    }
    fn begin_write(&self) -> kvlite_kv::Result<Box<dyn kvlite_kv::BackendTxn + '_>> {
        self.inner.begin_write()
    }
}

impl kvlite_kv::BackendTxn for CountingTxn<'_> {
    fn get(&mut self, key: &[u8]) -> kvlite_kv::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> kvlite_kv::Result<Vec<kvlite_kv::KeyValue>> {
        self.inner.scan(start, end, limit, reverse)
    }
    fn scan_many(
        &mut self,
        ranges: &[(&[u8], &[u8])],
    ) -> kvlite_kv::Result<Vec<Vec<kvlite_kv::KeyValue>>> {
        use std::sync::atomic::Ordering;
        self.batched_scans.fetch_add(1, Ordering::SeqCst);
        self.ranges.fetch_add(ranges.len(), Ordering::SeqCst);
        self.inner.scan_many(ranges)
    }
    fn commit(self: Box<Self>, writes: kvlite_kv::WriteSet) -> kvlite_kv::Result<()> {
        self.inner.commit(writes)
    }
}

#[test]
fn get_pages_reads_every_blob_in_one_batch() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let batched_scans = std::sync::Arc::new(AtomicUsize::new(0));
    let ranges = std::sync::Arc::new(AtomicUsize::new(0));
    let kv = kvlite_kv::Kv::new(std::sync::Arc::new(CountingBackend {
        inner: kvlite_kv::memory::MemoryBackend::new(),
        batched_scans: batched_scans.clone(),
        ranges: ranges.clone(),
    }));
    let writer = common::engine_with(kv.clone(), EngineConfig::default());
    let o = open(&writer, "batch");
    let mut head = o.head_txid;
    // Five deltas, each the newest copy of one page.
    for p in 1..=5u32 {
        head = commit(&writer, "batch", o.generation, head, 5, &[(p, page(p, 1))])
            .expect("commit")
            .txid;
    }
    // A fresh engine (no cached blobs) reads all five pages.
    let reader = common::engine_with(kv, EngineConfig::default());
    let o = open(&reader, "batch");
    batched_scans.store(0, Ordering::SeqCst);
    ranges.store(0, Ordering::SeqCst);
    let got = reader
        .get_pages("batch", o.generation, &[5, 4, 3, 2, 1, 2])
        .expect("read");
    assert_eq!(got[0], Some(kvlite_api::PageData::from(page(5, 1))));
    assert_eq!(got[5], Some(kvlite_api::PageData::from(page(2, 1))));
    assert_eq!(
        (
            batched_scans.load(Ordering::SeqCst),
            ranges.load(Ordering::SeqCst)
        ),
        (1, 4),
        "one batched read for the four blobs page 1's preload had not cached"
    );
}

/// A read hands out the decoded page the blob cache holds, not a copy of
/// it (a scan through the VFS would otherwise copy every page once more
/// and hold it twice), and each page of a blob is its own allocation (a
/// page kept in a cache must not keep its whole blob alive).
#[test]
fn reads_share_the_cached_page_and_pages_are_separate_allocations() {
    let engine = common::engine_with(kvlite_kv::Kv::memory(), common::no_history());
    let o = open(&engine, "shared");
    commit(
        &engine,
        "shared",
        o.generation,
        o.head_txid,
        4,
        &pages(1..=4, 7),
    )
    .expect("commit");
    for compacted in [false, true] {
        if compacted {
            engine.compact("shared").expect("compact");
            assert!(engine.stat("shared").expect("stat").shards > 0);
        }
        let first = engine
            .get_pages("shared", o.generation, &[2, 3])
            .expect("read");
        let again = engine
            .get_pages("shared", o.generation, &[2, 3])
            .expect("read");
        let (two, three) = (
            first[0].clone().expect("page 2"),
            first[1].clone().expect("page 3"),
        );
        assert_eq!(two, page(2, 7));
        assert_eq!(three, page(3, 7));
        assert_eq!(
            two.as_ptr(),
            again[0].as_ref().expect("page 2").as_ptr(),
            "a cached page was copied (compacted: {compacted})"
        );
        assert_ne!(
            two.as_ptr().wrapping_add(two.len()),
            three.as_ptr(),
            "pages of one blob are slices of one buffer (compacted: {compacted})"
        );
    }
}

/// A deleted database leaves no key behind, whatever it held (deltas,
/// shards, an unfinished large commit), and deleting it again says it is
/// gone.
fn delete_removes_everything(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "doomed");
    let (g, mut head) = (o.generation, o.head_txid);
    for v in 0..150u64 {
        head = commit(&engine, "doomed", g, head, 70, &pages(1..=70, v))
            .expect("commit")
            .txid;
        if v == 75 {
            engine.compact("doomed").expect("compact");
        }
    }
    let txid = engine.commit_begin("doomed", g, head, 80).expect("begin");
    let part = pages(71..=80, 9);
    let refs = as_refs(&part);
    engine
        .commit_chunk("doomed", g, txid, 0, &refs)
        .expect("part");
    let kept = open(&engine, "kept");
    commit(
        &engine,
        "kept",
        kept.generation,
        kept.head_txid,
        3,
        &pages(1..=3, 1),
    )
    .expect("kept");
    let id = engine.stat("doomed").expect("stat").id;

    assert!(engine.delete("doomed").expect("delete"));
    let (start, end) = kvlite_engine::keys::DbKeys { id }.all();
    let left = store
        .kv()
        .read(|t| t.scan(&start, &end, ScanOptions::limit(1)))
        .expect("scan");
    assert!(left.is_empty(), "keys of the deleted database remain");
    let audit = engine.audit_store().expect("audit store");
    assert_eq!(
        (audit.databases, audit.deleted_not_swept),
        (1, 0),
        "{audit:?}"
    );
    assert!(audit.is_clean(), "{audit:?}");
    assert!(
        !engine.delete("doomed").expect("delete again"),
        "already gone"
    );
    assert!(matches!(engine.stat("doomed"), Err(Error::NotFound(_))));
    assert_eq!(read_all(&engine, "kept", kept.generation, 3).len(), 3);
}

/// A delete cut short after its first transaction (a crash, a lost store)
/// leaves a tombstone, never an orphan; the sweep finishes it, also when the
/// background compactor starts.
fn a_delete_cut_short_is_finished(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    for name in ["a", "b"] {
        let o = open(&engine, name);
        commit(
            &engine,
            name,
            o.generation,
            o.head_txid,
            20,
            &pages(1..=20, 1),
        )
        .expect("commit");
    }
    assert!(engine.delete_without_sweep("a").expect("mark"));
    let audit = engine.audit_store().expect("audit");
    assert_eq!(audit.deleted_not_swept, 1);
    assert!(audit.is_clean(), "a tombstone is not an orphan: {audit:?}");
    assert_eq!(engine.list("", None, 10).expect("list"), ["b"]);
    // The name is free at once: a new database, not the old data.
    let o = open(&engine, "a");
    assert_eq!((o.size_pages, o.created), (0, true));
    assert!(engine.delete_without_sweep("b").expect("mark"));
    drop(engine);
    // A fresh engine (a restart) finishes both when its compactor starts.
    let engine = store.engine();
    let compactor = engine.start_compactor();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engine.audit_store().expect("audit").deleted_not_swept > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(compactor);
    let audit = engine.audit_store().expect("audit");
    assert_eq!(
        (audit.databases, audit.deleted_not_swept),
        (1, 0),
        "{audit:?}"
    );
    assert!(audit.is_clean(), "{audit:?}");
    assert_eq!(engine.sweep_deleted().expect("nothing left"), 0);
}

/// The first transaction of a delete landed but its reply was lost: the
/// retry still reports that the database existed (regression: "did not
/// exist", and its keys were orphaned).
#[test]
fn a_delete_whose_reply_was_lost_reports_it_existed() {
    let backend = std::sync::Arc::new(kvlite_kv::memory::MemoryBackend::new());
    let engine = common::engine_with(kvlite_kv::Kv::new(backend.clone()), EngineConfig::default());
    let o = open(&engine, "lost");
    commit(
        &engine,
        "lost",
        o.generation,
        o.head_txid,
        5,
        &pages(1..=5, 1),
    )
    .expect("commit");
    backend.lose_next_commit_reply();
    let healer = {
        let backend = backend.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            backend.heal();
        })
    };
    assert!(engine.delete("lost").expect("delete"), "it existed");
    healer.join().expect("healer");
    let audit = engine.audit_store().expect("audit");
    assert_eq!(
        (audit.databases, audit.deleted_not_swept),
        (0, 0),
        "{audit:?}"
    );
    assert!(audit.is_clean(), "{audit:?}");
}

/// What an engine operation costs in waits for PostgreSQL: a small commit
/// by the writer is one round trip (its writes go with BEGIN and COMMIT,
/// guarded by the META it last wrote); a read of a page the engine has not
/// cached is one. (On a networked store round trips are the cost.)
#[test]
fn a_small_commit_on_postgres_is_one_round_trip() {
    let store = Store::new(Backend::Postgres);
    let kv = store.kv();
    let trips = || kv.round_trips().expect("PostgreSQL counts its round trips");
    let writer = common::engine_with(kv.clone(), EngineConfig::default());
    let o = open(&writer, "trips");
    let mut head = o.head_txid;
    for p in 1..=3u32 {
        head = commit(&writer, "trips", o.generation, head, 3, &[(p, page(p, 1))])
            .expect("commit")
            .txid;
    }
    let before = trips();
    let r = commit(&writer, "trips", o.generation, head, 3, &[(2, page(2, 2))]).expect("commit");
    assert_eq!(trips() - before, 1, "a one-page commit");
    let first_generation = o.generation;
    // A second engine, nothing cached: its takeover reads the directory
    // entry, META, the unfinished large commits (a bounded read of its
    // own), then writes; for page 1 (which open returns) META comes again
    // with the page index, then the delta holding it.
    let reader = common::engine_with(kv.clone(), EngineConfig::default());
    let before = trips();
    let o = open(&reader, "trips");
    assert_eq!(o.head_txid, r.txid);
    assert_eq!(o.pages.first().map(|(p, _)| *p), Some(1));
    assert_eq!(trips() - before, 4 + 2, "a cold open");
    let before = trips();
    let got = reader.get_pages("trips", o.generation, &[2]).expect("read");
    assert_eq!(got, vec![Some(kvlite_api::PageData::from(page(2, 2)))]);
    assert_eq!(
        trips() - before,
        1,
        "an uncached page: META, the page index and the blob, read together"
    );
    // The old writer's view is stale now (the takeover wrote META): its
    // guarded commit does not apply, and the retry reads META and is
    // fenced (the refusing transaction's ROLLBACK is waited for) — nothing
    // written.
    let before = trips();
    let fenced = commit(
        &writer,
        "trips",
        first_generation,
        r.txid,
        3,
        &[(3, page(3, 9))],
    );
    assert!(
        matches!(fenced, Err(kvlite_api::Error::Fenced { .. })),
        "{fenced:?}"
    );
    assert_eq!(
        trips() - before,
        3,
        "a guarded commit refused, then a read and its rollback"
    );
    let got = reader.get_pages("trips", o.generation, &[3]).expect("read");
    assert_eq!(
        got,
        vec![Some(kvlite_api::PageData::from(page(3, 1)))],
        "the fenced commit wrote nothing"
    );
}

/// A part of a large commit on PostgreSQL is five round trips, however
/// many shards it stores in place: a read (META; the reservations and
/// parts parked, its own reservation among them), then a write transaction
/// (META; its checks — its reservation, its own earlier record, each shard's
/// SLIST record and first chunk — read together; the writes with COMMIT).
/// Nine before the checks were read together.
#[test]
fn a_large_commit_part_on_postgres_is_five_round_trips() {
    let store = Store::new(Backend::Postgres);
    let kv = store.kv();
    let trips = || kv.round_trips().expect("PostgreSQL counts its round trips");
    let engine = common::engine_with(kv.clone(), EngineConfig::default());
    let o = open(&engine, "parts");
    let (g, h) = (o.generation, o.head_txid);
    let txid = engine.commit_begin("parts", g, h, 256).expect("begin");
    // A direct part: shards 0 (pages 1-63) and 1 (64-127) whole.
    let data = pages(1..=127, 3);
    let before = trips();
    engine
        .commit_chunk("parts", g, txid, 0, &as_refs(&data))
        .expect("part");
    let direct = trips() - before;
    // The same part again: it replaces its own record and shards.
    let before = trips();
    engine
        .commit_chunk("parts", g, txid, 0, &as_refs(&data))
        .expect("part again");
    let again = trips() - before;
    let rest = pages(128..=256, 3);
    let before = trips();
    engine
        .commit_chunk("parts", g, txid, 1, &as_refs(&rest))
        .expect("part");
    let second = trips() - before;
    assert_eq!((direct, again, second), (5, 5, 5), "round trips per part");
    engine
        .commit_finish("parts", g, h, txid, 2, 9)
        .expect("finish");
    assert_eq!(engine.stat("parts").expect("stat").shards, 5);
    let expected: Vec<Vec<u8>> = (1..=256).map(|p| page(p, 3)).collect();
    assert_eq!(read_all(&engine, "parts", g, 256), expected);
}

/// A writer's commit trusts its last view of META only as far as the store
/// agrees: when another engine changed META meanwhile (a compaction here),
/// the guarded commit does not apply and the retry reads, then lands.
#[test]
fn a_guarded_commit_on_a_stale_view_reads_and_lands() {
    let store = Store::new(Backend::Postgres);
    let kv = store.kv();
    let writer = common::engine_with(kv.clone(), EngineConfig::default());
    let o = open(&writer, "guarded");
    let mut head = o.head_txid;
    for round in 1..=3u64 {
        head = commit(
            &writer,
            "guarded",
            o.generation,
            head,
            2,
            &[(1, page(1, round)), (2, page(2, round))],
        )
        .expect("commit")
        .txid;
    }
    let other = common::engine_with(kv.clone(), EngineConfig::default());
    other.compact("guarded").expect("compact");
    let before = kv.round_trips().expect("counted");
    let r = commit(
        &writer,
        "guarded",
        o.generation,
        head,
        2,
        &[(2, page(2, 9))],
    )
    .expect("commit");
    assert!(r.txid > head);
    assert_eq!(
        kv.round_trips().expect("counted") - before,
        3,
        "the guarded attempt, then a read and a commit"
    );
    let got = other
        .get_pages("guarded", o.generation, &[1, 2])
        .expect("read");
    assert_eq!(
        got,
        vec![
            Some(kvlite_api::PageData::from(page(1, 3))),
            Some(kvlite_api::PageData::from(page(2, 9)))
        ]
    );
    // The view is the store's again: the next commit is one round trip.
    let before = kv.round_trips().expect("counted");
    commit(
        &writer,
        "guarded",
        o.generation,
        r.txid,
        2,
        &[(1, page(1, 10))],
    )
    .expect("commit");
    assert_eq!(kv.round_trips().expect("counted") - before, 1);
}

/// The read ahead on a networked store guesses from the engine's last view
/// of a database; when another engine compacted it meanwhile (META, the
/// page index and every shard's content moved), reads still answer the
/// database's pages, never the view's.
#[test]
fn reads_ahead_on_postgres_never_answer_from_a_stale_view() {
    let store = Store::new(Backend::Postgres);
    let kv = store.kv();
    let writer = common::engine_with(kv.clone(), EngineConfig::default());
    let o = open(&writer, "stale");
    let size = 3 * kvlite_api::SHARD_PAGES;
    let mut head = commit(
        &writer,
        "stale",
        o.generation,
        o.head_txid,
        size,
        &pages(1..=size, 1),
    )
    .expect("commit")
    .txid;
    let mut expected: Vec<Vec<u8>> = (1..=size).map(|p| page(p, 1)).collect();
    for round in 2..6u64 {
        // Pages in every shard change as deltas...
        let changed: Vec<(u32, Vec<u8>)> = (1..=size)
            .filter(|p| p % 7 == round as u32 % 7)
            .map(|p| (p, page(p, round)))
            .collect();
        for (p, d) in &changed {
            expected[*p as usize - 1] = d.clone();
        }
        head = commit(&writer, "stale", o.generation, head, size, &changed)
            .expect("commit")
            .txid;
        // ...the writer reads them (its view: META, page index, blobs)...
        assert_eq!(read_all(&writer, "stale", o.generation, size), expected);
        // ...and another engine folds them into new shards.
        let other = common::engine_with(kv.clone(), EngineConfig::default());
        other.compact("stale").expect("compact");
        assert_eq!(
            read_all(&writer, "stale", o.generation, size),
            expected,
            "round {round}"
        );
    }
}
