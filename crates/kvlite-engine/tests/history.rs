//! History, forks and restores, one promise at a time (the model test
//! mixes them all at random): every commit in the retention window reads
//! back exactly, what falls out of the window is refused and its storage
//! returned, forks are O(1) and independent, a deleted source keeps its
//! forks whole, restores fence the writer and can be undone.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Store, assert_clean, commit, open, page, read_all};
use kvlite_engine::{Engine, Error, InvalidKind, MAX_FORK_DEPTH, ReadPoint, TooLargeKind};
use kvlite_kv::{KvRead, ScanOptions};

on_every_backend!(
    every_commit_in_the_window_reads_back_after_compaction,
    the_window_moves_and_gives_its_storage_back,
    a_fork_is_constant_work_and_independent,
    a_deleted_source_keeps_its_forks_whole,
    forks_chain_to_a_stated_depth,
    a_restore_fences_the_writer_and_can_be_undone,
    a_database_over_its_quota_gives_up_its_history,
    an_idle_database_gives_up_expired_history,
    a_dead_readers_pin_expires
);

fn pages(range: std::ops::RangeInclusive<u32>, version: u64) -> Vec<(u32, Vec<u8>)> {
    range.map(|p| (p, page(p, version))).collect()
}

/// The pages of `db` as of `point`, read as a reader of the past does.
fn read_past(engine: &Engine, db: &str, point: ReadPoint) -> kvlite_engine::Result<Vec<Vec<u8>>> {
    let reader = fastrand::u64(..);
    let state = engine.begin_read_at(db, reader, point)?;
    let pgnos: Vec<u32> = (1..=state.size_pages).collect();
    let got = engine.get_pages_at(db, reader, state.at(), &pgnos);
    engine.end_read(db, reader);
    Ok(got?
        .into_iter()
        .map(|p| p.expect("inside the database").to_vec())
        .collect())
}

fn unavailable(r: kvlite_engine::Result<Vec<Vec<u8>>>) -> bool {
    matches!(r, Err(e) if e.invalid_kind() == Some(InvalidKind::HistoryUnavailable))
}

/// Commit `rounds` rewrites of pages 1..=size (each round a different
/// subset), compacting every few; returns each commit's txid and pages.
fn churn(
    engine: &Engine,
    db: &str,
    rounds: u64,
    size: u32,
    step: Duration,
) -> Vec<(u64, Vec<Vec<u8>>)> {
    let o = open(engine, db);
    let (g, mut head) = (o.generation, o.head_txid);
    let mut now: Vec<Vec<u8>> = read_all(engine, db, g, o.size_pages);
    now.resize(size as usize, vec![0; kvlite_engine::PAGE_SIZE]);
    let mut commits = Vec::new();
    for round in 1..=rounds {
        engine.advance_clock(step);
        let written: Vec<(u32, Vec<u8>)> = (1..=size)
            .filter(|p| (*p as u64 + round).is_multiple_of(3) || *p == 1)
            .map(|p| (p, page(p, round * 1000)))
            .collect();
        for (p, d) in &written {
            now[*p as usize - 1] = d.clone();
        }
        head = commit(engine, db, g, head, size, &written)
            .expect("commit")
            .txid;
        commits.push((head, now.clone()));
        if round % 7 == 0 {
            engine.compact(db).expect("compact");
        }
    }
    commits
}

fn every_commit_in_the_window_reads_back_after_compaction(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let commits = churn(&engine, "h", 40, 150, Duration::from_secs(1));
    engine.compact("h").expect("compact");
    let stat = engine.stat("h").expect("stat");
    assert_eq!(stat.page_index_entries, 0, "everything folded");
    assert!(stat.kept_versions > 0 && stat.history_bytes > 0, "{stat:?}");
    for (txid, want) in &commits {
        let got = read_past(&engine, "h", ReadPoint::Txid(*txid)).expect("read in the past");
        assert!(got == *want, "commit {txid} reads back as it was");
    }
    let report = engine.doctor("h").expect("doctor");
    assert!(report.is_healthy(), "{report:?}");
    // The history list names every commit, newest first.
    let h = engine.history("h", None, 1000).expect("history");
    let listed: Vec<u64> = h.commits.iter().map(|c| c.txid).collect();
    let mut want: Vec<u64> = commits.iter().map(|c| c.0).collect();
    want.reverse();
    assert_eq!(listed, want);
    assert!(
        h.commits
            .iter()
            .all(|c| c.size_pages == 150 && c.time_ms > 0)
    );
    assert_clean(&engine, "h");
}

fn the_window_moves_and_gives_its_storage_back(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    open(&engine, "w");
    engine
        .set_retention("w", Some(60_000))
        .expect("a minute of history");
    // A commit every 10 s for 300 s.
    let commits = churn(&engine, "w", 30, 100, Duration::from_secs(10));
    engine.compact("w").expect("compact");
    let stat = engine.stat("w").expect("stat");
    let young = commits.iter().rev().take(5);
    for (txid, want) in young {
        let got = read_past(&engine, "w", ReadPoint::Txid(*txid)).expect("inside the window");
        assert!(got == *want, "commit {txid}");
    }
    let (oldest, _) = commits[0];
    assert!(stat.history_floor > oldest, "{stat:?}");
    assert!(unavailable(read_past(
        &engine,
        "w",
        ReadPoint::Txid(oldest)
    )));
    // By time: a commit's time reads it; before the window is refused.
    let h = engine.history("w", None, 1000).expect("history");
    let newest = &h.commits[0];
    let got = read_past(&engine, "w", ReadPoint::TimeMs(newest.time_ms + 1)).expect("by time");
    assert!(got == commits.last().unwrap().1);
    assert!(unavailable(read_past(
        &engine,
        "w",
        ReadPoint::TimeMs(engine.now_ms() - 200_000)
    )));
    // An hour later the whole window has passed: a pass keeps nothing.
    let with_history = engine.stat("w").expect("stat");
    engine.advance_clock(Duration::from_secs(3600));
    engine.compact("w").expect("compact");
    let after = engine.stat("w").expect("stat");
    assert_eq!(
        (after.kept_versions, after.history_bytes),
        (0, 0),
        "{after:?}"
    );
    assert!(after.deltas <= 1, "{after:?}");
    assert!(
        after.used_bytes * 3 < with_history.used_bytes,
        "{} vs {}",
        after.used_bytes,
        with_history.used_bytes
    );
    assert_eq!(after.history_floor, after.head_txid);
    let (head, want) = commits.last().unwrap();
    assert!(read_past(&engine, "w", ReadPoint::Txid(*head)).expect("the head") == *want);
    assert_clean(&engine, "w");
}

/// Keys and bytes the store holds under one database id.
fn stored(store: &Store, id: u64) -> (usize, usize) {
    let keys = kvlite_engine::keys::DbKeys { id };
    let (start, end) = keys.all();
    let all = store
        .kv()
        .read(|t| t.scan(&start, &end, ScanOptions::ALL))
        .expect("scan");
    (all.len(), all.iter().map(|(k, v)| k.len() + v.len()).sum())
}

fn a_fork_is_constant_work_and_independent(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let mut written_by_fork = Vec::new();
    for (src, size) in [("small", 3u32), ("large", 3000)] {
        let o = open(&engine, src);
        let head = common::commit_large(
            &engine,
            src,
            o.generation,
            o.head_txid,
            size,
            &pages(1..=size, 1),
            1000,
        )
        .expect("fill")
        .txid;
        engine.compact(src).expect("compact");
        let before = stored(&store, o.generation >> 32);
        let f = engine
            .fork(src, &format!("{src}-fork"), None)
            .expect("fork");
        assert_eq!((f.source_txid, f.size_pages), (head, size));
        let after = stored(&store, o.generation >> 32);
        let fork = stored(&store, f.id);
        // The source gains one pin (and its META changes); the fork is a
        // META: nothing is copied, whatever the size.
        assert_eq!(after.0, before.0 + 1, "one key on the source");
        assert_eq!(fork.0, 1, "the fork is one key");
        written_by_fork.push(fork.1 + after.1 - before.1);
        let g = open(&engine, &format!("{src}-fork")).generation;
        assert_eq!(
            read_all(&engine, &format!("{src}-fork"), g, size),
            read_all(&engine, src, o.generation, size),
            "a fork reads its source"
        );
    }
    assert_eq!(
        written_by_fork[0], written_by_fork[1],
        "forking 3,000 pages writes what forking 3 does"
    );
    // Writes on either side never show on the other.
    let src = open(&engine, "large");
    let fork = open(&engine, "large-fork");
    commit(
        &engine,
        "large",
        src.generation,
        src.head_txid,
        3000,
        &pages(1..=10, 2),
    )
    .expect("src");
    common::commit_large(
        &engine,
        "large-fork",
        fork.generation,
        fork.head_txid,
        3001,
        &pages(5..=3001, 3),
        1000,
    )
    .expect("fork");
    for db in ["large", "large-fork"] {
        engine.compact(db).expect("compact");
    }
    let s = read_all(&engine, "large", src.generation, 3000);
    let f = read_all(&engine, "large-fork", fork.generation, 3001);
    assert_eq!(s[0], page(1, 2));
    assert_eq!(s[20], page(21, 1));
    assert_eq!(f[0], page(1, 1), "the source's write is not the fork's");
    assert_eq!(f[5], page(6, 3));
    assert_eq!(f[3000], page(3001, 3));
    assert_clean(&engine, "large");
    assert_clean(&engine, "large-fork");
}

fn a_deleted_source_keeps_its_forks_whole(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "src");
    let src_id = o.generation >> 32;
    let head = commit(
        &engine,
        "src",
        o.generation,
        o.head_txid,
        200,
        &pages(1..=200, 1),
    )
    .expect("fill")
    .txid;
    commit(&engine, "src", o.generation, head, 200, &pages(1..=50, 2)).expect("more");
    engine
        .fork("src", "child", Some(ReadPoint::Txid(head)))
        .expect("fork at the first commit");
    engine
        .fork("child", "grandchild", None)
        .expect("fork of a fork");
    assert!(engine.delete("src").expect("delete"));
    assert!(engine.delete("child").expect("delete"));
    let store_audit = engine.audit_store().expect("audit store");
    assert!(store_audit.is_clean(), "{store_audit:?}");
    assert_eq!(
        store_audit.kept_for_forks, 2,
        "both kept while the grandchild reads them"
    );
    let g = open(&engine, "grandchild").generation;
    assert_eq!(
        read_all(&engine, "grandchild", g, 200),
        pages(1..=200, 1)
            .into_iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
    );
    // The last fork gone, its ancestors go too: no key of theirs is left.
    assert!(engine.delete("grandchild").expect("delete"));
    let store_audit = engine.audit_store().expect("audit store");
    assert!(store_audit.is_clean(), "{store_audit:?}");
    assert_eq!(
        (store_audit.kept_for_forks, store_audit.deleted_not_swept),
        (0, 0)
    );
    assert_eq!(stored(&store, src_id).0, 0, "the source's keys are gone");
}

fn forks_chain_to_a_stated_depth(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "d0");
    commit(
        &engine,
        "d0",
        o.generation,
        o.head_txid,
        70,
        &pages(1..=70, 0),
    )
    .expect("fill");
    for depth in 1..=u32::from(MAX_FORK_DEPTH) {
        let (src, dst) = (format!("d{}", depth - 1), format!("d{depth}"));
        engine.fork(&src, &dst, None).expect("fork");
        // Each level rewrites one page of its own.
        let o = open(&engine, &dst);
        commit(
            &engine,
            &dst,
            o.generation,
            o.head_txid,
            70,
            &[(depth, page(depth, depth.into()))],
        )
        .expect("commit");
    }
    let last = format!("d{MAX_FORK_DEPTH}");
    let g = open(&engine, &last).generation;
    let got = read_all(&engine, &last, g, 70);
    for p in 1..=70u32 {
        let v = if p <= u32::from(MAX_FORK_DEPTH) {
            p.into()
        } else {
            0
        };
        assert_eq!(got[p as usize - 1], page(p, v), "page {p} from its level");
    }
    for db in [last.as_str(), "d1", "d8"] {
        let report = engine.doctor(db).expect("doctor");
        assert!(report.is_healthy(), "{db}: {report:?}");
    }
    let e = engine.fork(&last, "too-deep", None).unwrap_err();
    assert!(
        matches!(&e, Error::TooLarge(t) if t.kind == TooLargeKind::ForkDepth),
        "{e}"
    );
    assert!(matches!(engine.stat("too-deep"), Err(Error::NotFound(_))));
    let e = engine.fork("d0", "d1", None).unwrap_err();
    assert_eq!(e.invalid_kind(), Some(InvalidKind::NameTaken), "{e}");
}

fn a_restore_fences_the_writer_and_can_be_undone(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let o = open(&engine, "r");
    let g = o.generation;
    let good = commit(&engine, "r", g, o.head_txid, 40, &pages(1..=40, 1))
        .expect("good")
        .txid;
    let bad = commit(&engine, "r", g, good, 20, &pages(1..=20, 66))
        .expect("a bad change")
        .txid;
    engine.compact("r").expect("compact");
    let restored = engine.restore("r", ReadPoint::Txid(good)).expect("restore");
    assert_eq!((restored.source_txid, restored.size_pages), (good, 40));
    // The writer that made the bad change is fenced, reads included.
    let e = commit(&engine, "r", g, bad, 20, &pages(1..=1, 67)).unwrap_err();
    assert!(matches!(e, Error::Fenced { .. }), "{e}");
    assert!(matches!(
        engine.get_pages("r", g, &[1]),
        Err(Error::Fenced { .. })
    ));
    let now = open(&engine, "r");
    assert_eq!(
        now.head_txid,
        bad + 1,
        "its commits go on after the old head"
    );
    assert_eq!(
        read_all(&engine, "r", now.generation, 40),
        pages(1..=40, 1)
            .into_iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
    );
    // Its history goes on through the restore: the commits before it read
    // as they were.
    let listed: Vec<u64> = engine
        .history("r", None, 10)
        .expect("history")
        .commits
        .iter()
        .map(|c| c.txid)
        .collect();
    assert_eq!(listed, vec![bad + 1, bad, good], "the restore is listed");
    assert_eq!(
        read_past(&engine, "r", ReadPoint::Txid(bad)).expect("before the restore"),
        pages(1..=20, 66)
            .into_iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
    );
    // The state before is also kept under the backup name, whole.
    let b = open(&engine, &restored.backup);
    assert_eq!((b.head_txid, b.size_pages), (bad, 20));
    assert_eq!(
        read_all(&engine, &restored.backup, b.generation, 20),
        pages(1..=20, 66)
            .into_iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
    );
    // A fork at a commit from before the restore forks the incarnation
    // that had it.
    engine
        .fork("r", "r-then", Some(ReadPoint::Txid(bad)))
        .expect("fork before the restore");
    let then = open(&engine, "r-then");
    assert_eq!(
        read_all(&engine, "r-then", then.generation, 20),
        pages(1..=20, 66)
            .into_iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
    );
    // Undo: restore to the commit before the restore.
    let undo = engine.restore("r", ReadPoint::Txid(bad)).expect("undo");
    let again = open(&engine, "r");
    assert_eq!((again.size_pages, again.head_txid), (20, bad + 2));
    assert_eq!(read_all(&engine, "r", again.generation, 20)[0], page(1, 66));
    // Restores in quick succession each take effect, each with its own
    // backup.
    let first = engine.restore("r", ReadPoint::Txid(good)).expect("again");
    let second = engine.restore("r", ReadPoint::Txid(bad)).expect("and back");
    assert_ne!(first.backup, second.backup);
    let last = open(&engine, "r");
    assert_eq!((last.size_pages, last.head_txid), (20, bad + 4));
    for db in [
        "r",
        "r-then",
        &restored.backup,
        &undo.backup,
        &first.backup,
        &second.backup,
    ] {
        assert_clean(&engine, db);
        let report = engine.doctor(db).expect("doctor");
        assert!(report.is_healthy(), "{db}: {report:?}");
    }
    assert!(engine.audit_store().expect("audit").is_clean());
}

fn a_database_over_its_quota_gives_up_its_history(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    let commits = churn(&engine, "q", 20, 100, Duration::from_secs(1));
    engine.compact("q").expect("compact");
    let stat = engine.stat("q").expect("stat");
    assert!(stat.history_bytes > 0);
    engine
        .set_quota("q", stat.used_bytes - stat.history_bytes / 2)
        .expect("a quota below what history takes");
    engine.compact("q").expect("compact");
    let after = engine.stat("q").expect("stat");
    assert_eq!(after.kept_versions, 0, "{after:?}");
    assert!(after.used_bytes <= after.quota_bytes, "{after:?}");
    assert_eq!(after.history_floor, after.head_txid);
    assert!(unavailable(read_past(
        &engine,
        "q",
        ReadPoint::Txid(commits[0].0)
    )));
    assert_clean(&engine, "q");
}

/// No commit comes to trigger a pass: the background compactor's sweep
/// finds the history that fell out of the window and a pass drops it.
fn an_idle_database_gives_up_expired_history(backend: Backend) {
    let store = Store::new(backend);
    let config = kvlite_engine::EngineConfig {
        compaction: kvlite_engine::CompactionConfig {
            history_sweep: Duration::from_millis(20),
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = common::engine_with(store.kv(), config);
    open(&engine, "idle");
    engine
        .set_retention("idle", Some(60_000))
        .expect("a minute of history");
    churn(&engine, "idle", 12, 100, Duration::from_secs(1));
    engine.compact("idle").expect("compact");
    let before = engine.stat("idle").expect("stat");
    assert!(before.kept_versions > 0, "{before:?}");
    let compactor = engine.start_compactor();
    engine.advance_clock(Duration::from_secs(3600));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = engine.stat("idle").expect("stat");
        if now.kept_versions == 0 && now.history_bytes == 0 {
            assert!(now.used_bytes < before.used_bytes, "{now:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "history kept: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    compactor.stop();
    assert_clean(&engine, "idle");
}

/// A reader's pin keeps its commit readable with no retention window at
/// all, as long as it reads; one that stops reading for longer than the
/// lease (a crashed client) no longer holds history back.
fn a_dead_readers_pin_expires(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine();
    open(&engine, "r");
    engine.set_retention("r", Some(0)).expect("no window");
    let commits = churn(&engine, "r", 5, 60, Duration::from_millis(1));
    let (txid, want) = commits.last().cloned().expect("commits");
    let reader = 42;
    let state = engine.begin_read("r", reader, 0).expect("begin read");
    assert_eq!(state.head_txid, txid);
    let pgnos: Vec<u32> = (1..=state.size_pages).collect();
    let read = || engine.get_pages_at("r", reader, state.at(), &pgnos);
    churn(&engine, "r", 20, 60, Duration::from_millis(1));
    engine.compact("r").expect("compact");
    // Just under the lease between reads: still pinned.
    engine.advance_clock(kvlite_engine::READER_LEASE - Duration::from_secs(1));
    let got: Vec<Vec<u8>> = read()
        .expect("a live reader's commit")
        .into_iter()
        .map(|p| p.expect("inside").to_vec())
        .collect();
    assert!(got == want, "the reader sees its commit");
    churn(&engine, "r", 10, 60, Duration::from_millis(1));
    engine.compact("r").expect("compact");
    assert!(read().is_ok(), "the read refreshed the pin");
    // Silent for longer than the lease: the next pass drops the commit.
    engine.advance_clock(kvlite_engine::READER_LEASE + Duration::from_secs(1));
    churn(&engine, "r", 10, 60, Duration::from_millis(1));
    engine.compact("r").expect("compact");
    let err = read().expect_err("the dead pin kept nothing");
    assert_eq!(
        err.invalid_kind(),
        Some(InvalidKind::HistoryUnavailable),
        "{err}"
    );
    engine.end_read("r", reader);
    assert_clean(&engine, "r");
}
