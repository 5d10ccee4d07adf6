//! Compaction: what a full pass leaves behind, the background trigger, and
//! crash safety of a pass.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Backend, Store, assert_clean, audit_in_debug, commit, engine_with, open, page, read_all,
};
use kvlite_engine::{CompactionConfig, CompactionStep, EngineConfig, PAGE_SIZE, SHARD_PAGES};
use kvlite_kv::Kv;

const SIZE: u32 = 1000;

/// Write pages 1..=SIZE, then overwrite random subsets many times.
fn churn(engine: &kvlite_engine::Engine, db: &str) -> (u64, u64) {
    let o = open(engine, db);
    let (g, mut head) = (o.generation, o.head_txid);
    let all: Vec<(u32, Vec<u8>)> = (1..=SIZE).map(|p| (p, page(p, 0))).collect();
    head = commit(engine, db, g, head, SIZE, &all).expect("load").txid;
    let mut rng = fastrand::Rng::with_seed(9);
    for v in 1..=60u64 {
        let mut pgnos: Vec<u32> = (0..40).map(|_| rng.u32(1..=SIZE)).collect();
        pgnos.sort_unstable();
        pgnos.dedup();
        let pages: Vec<(u32, Vec<u8>)> = pgnos.iter().map(|&p| (p, page(p, v))).collect();
        head = commit(engine, db, g, head, SIZE, &pages)
            .expect("overwrite")
            .txid;
    }
    (g, head)
}

fn full_compaction(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine_without_history();
    let (g, _) = churn(&engine, "churned");
    let expected = read_all(&engine, "churned", g, SIZE);
    let before = engine.stat("churned").expect("stat");
    assert_eq!(before.deltas, 61);
    let report = engine.compact("churned").expect("compact");
    assert!(!report.stale);
    assert_eq!(report.deltas_deleted, 61);
    let after = engine.stat("churned").expect("stat");
    assert_eq!(after.deltas, 0, "no delta is left");
    assert_eq!(after.page_index_entries, 0, "the page index is empty");
    assert_eq!(after.shards as u32, SIZE / SHARD_PAGES + 1);
    assert_eq!(after.materialized_txid, after.head_txid);
    // Storage is the shards (the compressed live pages) plus META (at
    // most ~1.1 KiB with 32 recent commits).
    assert!(after.used_bytes < after.shard_bytes + 1200, "{after:?}");
    assert!(
        after.used_bytes * 3 < before.used_bytes,
        "{} -> {}",
        before.used_bytes,
        after.used_bytes
    );
    assert_clean(&engine, "churned");
    // Reads need exactly one blob per shard, and return the same pages.
    let fresh = store.engine_without_history();
    let blobs = fresh.metrics().blobs_fetched.get();
    let pgnos: Vec<u32> = (1..=SIZE).collect();
    let got = fresh.get_pages("churned", g, &pgnos).expect("read");
    assert_eq!(
        fresh.metrics().blobs_fetched.get() - blobs,
        after.shards,
        "one blob per shard"
    );
    assert!(
        got.into_iter()
            .map(|p| p.expect("page"))
            .eq(expected.iter().cloned())
    );
    // Compacting again has nothing to do.
    let again = engine.compact("churned").expect("compact again");
    assert_eq!(
        (
            again.pages_folded,
            again.deltas_deleted,
            again.shards_written
        ),
        (0, 0, 0)
    );
}

#[test]
fn full_compaction_memory() {
    full_compaction(Backend::Memory);
}

#[test]
fn full_compaction_embedded() {
    full_compaction(Backend::Embedded);
}

#[test]
fn full_compaction_postgres() {
    full_compaction(Backend::Postgres);
}

/// A commit that lands after a batch was built and before it is written
/// must survive: its shard is skipped, never rewound.
fn commit_between_build_and_write(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine_without_history();
    let (g, head) = churn(&engine, "window");
    let head = std::cell::Cell::new(head);
    let report = engine
        .compact_with("window", &|step| {
            audit_in_debug(&engine, "window");
            if step == CompactionStep::BeforeWrite(0) {
                let r = commit(
                    &engine,
                    "window",
                    g,
                    head.get(),
                    SIZE,
                    &[(5, page(5, 999)), (700, page(700, 999))],
                )
                .expect("commit between build and write");
                head.set(r.txid);
            }
        })
        .expect("compact");
    assert!(!report.stale);
    let got = engine.get_pages("window", g, &[5, 700]).expect("read");
    assert_eq!(
        got[0],
        Some(kvlite_api::PageData::from(page(5, 999))),
        "the racing commit was not rewound"
    );
    assert_eq!(got[1], Some(kvlite_api::PageData::from(page(700, 999))));
    assert_clean(&engine, "window");
    // The skipped shards fold on the next pass.
    engine.compact("window").expect("next pass");
    let stat = engine.stat("window").expect("stat");
    assert_eq!((stat.page_index_entries, stat.deltas), (0, 0));
    assert_eq!(
        engine.get_pages("window", g, &[5]).expect("read")[0],
        Some(kvlite_api::PageData::from(page(5, 999)))
    );
}

#[test]
fn commit_between_build_and_write_memory() {
    commit_between_build_and_write(Backend::Memory);
}

#[test]
fn commit_between_build_and_write_postgres() {
    commit_between_build_and_write(Backend::Postgres);
}

#[test]
fn commit_between_build_and_write_embedded() {
    commit_between_build_and_write(Backend::Embedded);
}

/// Every page a built shard came from is rewritten by a commit before the
/// write: the shard is still written and the versions it was built from
/// fold, while the newer versions stay in the index and shadow it.
fn every_entry_of_a_shard_rewritten_between_build_and_write(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine_without_history();
    let o = open(&engine, "rewritten");
    let (g, mut head) = (o.generation, o.head_txid);
    // One shard's worth of pages, as deltas.
    let size = SHARD_PAGES - 1;
    let all: Vec<(u32, Vec<u8>)> = (1..=size).map(|p| (p, page(p, 1))).collect();
    head = commit(&engine, "rewritten", g, head, size, &all)
        .expect("load")
        .txid;
    let head = std::cell::Cell::new(head);
    let report = engine
        .compact_with("rewritten", &|step| {
            audit_in_debug(&engine, "rewritten");
            if step == CompactionStep::BeforeWrite(0) {
                let again: Vec<(u32, Vec<u8>)> = (1..=size).map(|p| (p, page(p, 2))).collect();
                let r = commit(&engine, "rewritten", g, head.get(), size, &again)
                    .expect("rewrite every page of the shard");
                head.set(r.txid);
            }
        })
        .expect("compact");
    assert!(!report.stale);
    assert_eq!(
        report.pages_folded,
        u64::from(size),
        "the versions the shard was built from fold; the rewrite's shadow them"
    );
    assert_clean(&engine, "rewritten");
    let want: Vec<Vec<u8>> = (1..=size).map(|p| page(p, 2)).collect();
    assert_eq!(read_all(&engine, "rewritten", g, size), want);
    // A later pass folds the rewrite and reads stay right.
    engine.compact("rewritten").expect("next pass");
    assert_clean(&engine, "rewritten");
    assert_eq!(read_all(&engine, "rewritten", g, size), want);
}

#[test]
fn every_entry_of_a_shard_rewritten_between_build_and_write_memory() {
    every_entry_of_a_shard_rewritten_between_build_and_write(Backend::Memory);
}

#[test]
fn every_entry_of_a_shard_rewritten_between_build_and_write_embedded() {
    every_entry_of_a_shard_rewritten_between_build_and_write(Backend::Embedded);
}

#[test]
fn every_entry_of_a_shard_rewritten_between_build_and_write_postgres() {
    every_entry_of_a_shard_rewritten_between_build_and_write(Backend::Postgres);
}

/// A takeover after the pass built its shards (the check inside the write
/// transaction, not the one at planning): the pass writes nothing.
fn takeover_between_build_and_write(backend: Backend) {
    let store = Store::new(backend);
    let engine = store.engine_without_history();
    let (g, _) = churn(&engine, "usurped");
    let before = engine.stat("usurped").expect("stat");
    let model = read_all(&engine, "usurped", g, SIZE);
    let new_generation = std::cell::Cell::new(0);
    let report = engine
        .compact_with("usurped", &|step| {
            audit_in_debug(&engine, "usurped");
            if step == CompactionStep::BeforeWrite(0) {
                new_generation.set(open(&engine, "usurped").generation);
            }
        })
        .expect("compact");
    assert!(report.stale, "{report:?}");
    assert_eq!(
        (
            report.pages_folded,
            report.shards_written,
            report.deltas_deleted
        ),
        (0, 0, 0)
    );
    let after = engine.stat("usurped").expect("stat");
    assert_eq!(
        (
            after.deltas,
            after.shards,
            after.page_index_entries,
            after.used_bytes
        ),
        (
            before.deltas,
            before.shards,
            before.page_index_entries,
            before.used_bytes
        ),
        "a stale pass changed storage"
    );
    assert_eq!(
        read_all(&engine, "usurped", new_generation.get(), SIZE),
        model
    );
    assert_clean(&engine, "usurped");
}

#[test]
fn takeover_between_build_and_write_memory() {
    takeover_between_build_and_write(Backend::Memory);
}

#[test]
fn takeover_between_build_and_write_embedded() {
    takeover_between_build_and_write(Backend::Embedded);
}

#[test]
fn takeover_between_build_and_write_postgres() {
    takeover_between_build_and_write(Backend::Postgres);
}

#[test]
fn passes_on_one_database_take_turns() {
    // An explicit `kvlite compact` and the background worker may ask at the
    // same time; the second pass starts only after the first ends.
    let store = Store::new(Backend::Memory);
    let engine = store.engine_without_history();
    churn(&engine, "turns");
    churn(&engine, "other");
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    std::thread::scope(|s| {
        s.spawn(|| {
            engine
                .compact_with("turns", &|step| {
                    if step == CompactionStep::Planned {
                        let _ = entered_tx.send(());
                        let _ = release_rx.lock().map(|rx| rx.recv());
                    }
                })
                .expect("first pass");
        });
        entered_rx.recv().expect("first pass started");
        // Another database is not held up.
        engine.compact("other").expect("other database");
        let second = s.spawn(|| {
            engine
                .compact_with("turns", &|step| {
                    if step == CompactionStep::Planned {
                        // The first pass, held at its plan, has written
                        // nothing yet; once it has ended nothing is left.
                        let stat = engine.stat("turns").expect("stat");
                        assert_eq!(
                            (stat.deltas, stat.page_index_entries),
                            (0, 0),
                            "two passes on one database at once"
                        );
                    }
                })
                .expect("second pass")
        });
        // Release the first pass only once the second waits for its turn.
        while engine.compaction_passes_queued("turns") < 2 {
            std::thread::yield_now();
        }
        release_tx.send(()).expect("release");
        let report = second.join().expect("second pass");
        assert_eq!(
            report.pages_folded, 0,
            "the first pass left nothing to fold"
        );
    });
    assert_clean(&engine, "turns");
}

#[test]
fn a_pass_racing_commits_on_postgres_never_loses_them() {
    // On PostgreSQL, compaction and commits run concurrently for real; the
    // serializable transactions and the re-read page index keep both right.
    let store = Store::new(Backend::Postgres);
    let engine = store.engine_without_history();
    let (g, mut head) = churn(&engine, "race");
    let mut model: Vec<Vec<u8>> = read_all(&engine, "race", g, SIZE);
    std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            for _ in 0..5 {
                engine.compact("race").expect("compact");
            }
        });
        for v in 100..160u64 {
            let p = (v as u32 * 37) % SIZE + 1;
            head = commit(&engine, "race", g, head, SIZE, &[(p, page(p, v))])
                .expect("commit")
                .txid;
            model[p as usize - 1] = page(p, v);
        }
        compactor.join().expect("compactor");
    });
    engine.compact("race").expect("final pass");
    assert_eq!(read_all(&engine, "race", g, SIZE), model);
    assert_clean(&engine, "race");
}

#[test]
fn compaction_on_postgres_makes_progress_under_a_commit_stream() {
    // Without claiming META first, each pass lost every serialization
    // conflict to the short commits and failed after its retries.
    let store = Store::new(Backend::Postgres);
    let engine = store.engine_without_history();
    let (g, head) = churn(&engine, "stream");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let landed = std::sync::atomic::AtomicU64::new(0);
    /// Stops the writer even when an assertion fails (the scope joins it).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut head = head;
            let mut v = 1000u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                v += 1;
                let p = (v as u32 * 13) % SIZE + 1;
                head = commit(&engine, "stream", g, head, SIZE, &[(p, page(p, v))])
                    .expect("commit")
                    .txid;
                landed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let guard = StopOnDrop(&stop);
        while landed.load(std::sync::atomic::Ordering::SeqCst) < 20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = landed.load(std::sync::atomic::Ordering::SeqCst);
        let mut folded = 0;
        for _ in 0..3 {
            let r = engine
                .compact("stream")
                .expect("a pass completes despite the stream");
            folded += r.pages_folded + r.deltas_deleted;
        }
        assert!(folded > 0, "the passes made progress");
        let during = landed.load(std::sync::atomic::Ordering::SeqCst) - before;
        drop(guard);
        writer.join().expect("writer");
        assert!(during > 0, "commits landed while the passes ran");
    });
    assert_clean(&engine, "stream");
}

/// Budgets of zero still make progress: each batch holds at least one shard
/// and deletes at least one delta (regression: a zero byte budget looped
/// forever).
#[test]
fn zero_budgets_still_finish_a_pass() {
    let config = EngineConfig {
        compaction: CompactionConfig {
            bytes_per_transaction: 0,
            max_deltas_deleted_per_transaction: 0,
            ..CompactionConfig::default()
        },
        ..common::no_history()
    };
    let engine = engine_with(Kv::memory(), config);
    churn(&engine, "zero");
    let (tx, rx) = std::sync::mpsc::channel();
    let e = engine.clone();
    std::thread::spawn(move || {
        let _ = tx.send(e.compact("zero"));
    });
    let report = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the pass ends")
        .expect("compact");
    assert!(report.transactions > 1, "{report:?}");
    let stat = engine.stat("zero").expect("stat");
    assert_eq!((stat.page_index_entries, stat.deltas), (0, 0));
    assert_clean(&engine, "zero");
}

#[test]
fn thousands_of_garbage_deltas_are_deleted_in_bounded_transactions() {
    let config = EngineConfig {
        compaction: CompactionConfig {
            max_deltas_deleted_per_transaction: 100,
            ..CompactionConfig::default()
        },
        ..common::no_history()
    };
    let engine = engine_with(Kv::memory(), config);
    let o = open(&engine, "garbage");
    let (g, mut head) = (o.generation, o.head_txid);
    for v in 0..1000u64 {
        head = commit(
            &engine,
            "garbage",
            g,
            head,
            3,
            &[(1, page(1, v)), (2, page(2, 0)), (3, page(3, 0))],
        )
        .expect("commit")
        .txid;
    }
    let r = engine.compact("garbage").expect("compact");
    assert_eq!(r.deltas_deleted, 1000);
    assert!(
        r.transactions >= 10,
        "{} transactions for 1000 deletions of at most 100",
        r.transactions
    );
    let stat = engine.stat("garbage").expect("stat");
    assert_eq!((stat.deltas, stat.page_index_entries), (0, 0));
    assert_eq!(
        engine.get_pages("garbage", g, &[1]).expect("read")[0],
        Some(kvlite_api::PageData::from(page(1, 999)))
    );
    assert_clean(&engine, "garbage");
}

#[test]
fn the_background_compactor_keeps_the_backlog_bounded() {
    let config = EngineConfig {
        compaction: CompactionConfig {
            min_deltas: 8,
            ..CompactionConfig::default()
        },
        ..common::no_history()
    };
    let engine = engine_with(Kv::memory(), config);
    let compactor = engine.start_compactor();
    let o = open(&engine, "busy");
    let (g, mut head) = (o.generation, o.head_txid);
    for v in 0..200u64 {
        let p = (v as u32 % 50) + 1;
        head = commit(&engine, "busy", g, head, 50, &[(p, page(p, v))])
            .expect("commit")
            .txid;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.stat("busy").expect("stat").deltas >= 8 {
        assert!(Instant::now() < deadline, "the backlog was never compacted");
        std::thread::sleep(Duration::from_millis(10));
    }
    compactor.stop();
    assert!(engine.metrics().pages_folded.get() > 0);
    assert!(engine.stat("busy").expect("stat").shards > 0);
    assert_clean(&engine, "busy");
}

/// A database due a pass while its commits keep coming waits for a pause
/// in them, unless its backlog reaches the urgent mark: then a pass runs
/// during the stream.
#[test]
fn a_pass_waits_for_a_pause_in_commits_until_the_backlog_is_urgent() {
    let quiet = Duration::from_secs(2);
    let config = EngineConfig {
        compaction: CompactionConfig {
            min_deltas: 8,
            quiet,
            urgent_factor: 4,
            ..CompactionConfig::default()
        },
        ..common::no_history()
    };
    let engine = engine_with(Kv::memory(), config);
    let compactor = engine.start_compactor();
    let o = open(&engine, "stream");
    let (g, mut head) = (o.generation, o.head_txid);
    let folded_upto =
        |engine: &kvlite_engine::Engine| engine.stat("stream").expect("stat").materialized_txid;
    let before = folded_upto(&engine);
    // Past the threshold (8), below the urgent mark (32), as fast as the
    // memory store commits: no pass while they come, nor for `quiet` after.
    for v in 0..20u64 {
        head = commit(&engine, "stream", g, head, 4, &[(1, page(1, v))])
            .expect("commit")
            .txid;
    }
    let last_commit = Instant::now();
    assert_eq!(
        folded_upto(&engine),
        before,
        "a pass started during the stream"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while folded_upto(&engine) == before {
        assert!(Instant::now() < deadline, "the backlog was never compacted");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        last_commit.elapsed() >= quiet,
        "the pass started {:?} after the last commit, before the pause it waits for",
        last_commit.elapsed()
    );
    // A stream that never pauses for `quiet`: passes run once the backlog
    // reaches 32 deltas.
    let folded = folded_upto(&engine);
    let deadline = Instant::now() + Duration::from_secs(30);
    while folded_upto(&engine) == folded {
        assert!(
            Instant::now() < deadline,
            "no pass ran during an endless stream"
        );
        head = commit(&engine, "stream", g, head, 4, &[(1, page(1, head))])
            .expect("commit")
            .txid;
        std::thread::sleep(Duration::from_millis(5));
    }
    let backlog = head - folded_upto(&engine);
    assert!(backlog < 64, "a backlog of {backlog} deltas");
    compactor.stop();
    assert_clean(&engine, "stream");
}

/// Only commits hold a pass back: a database opened again and again (each
/// open reports its backlog) after its commits stopped is folded once they
/// have paused.
#[test]
fn opens_do_not_hold_a_pass_back() {
    let config = EngineConfig {
        compaction: CompactionConfig {
            min_deltas: 8,
            quiet: Duration::from_millis(300),
            ..CompactionConfig::default()
        },
        ..common::no_history()
    };
    let engine = engine_with(Kv::memory(), config);
    let compactor = engine.start_compactor();
    let o = open(&engine, "opened");
    let (g, mut head) = (o.generation, o.head_txid);
    let before = engine.stat("opened").expect("stat").materialized_txid;
    for v in 0..12u64 {
        head = commit(&engine, "opened", g, head, 4, &[(1, page(1, v))])
            .expect("commit")
            .txid;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.stat("opened").expect("stat").materialized_txid == before {
        assert!(
            Instant::now() < deadline,
            "opens every 10 ms held the pass back"
        );
        open(&engine, "opened");
        std::thread::sleep(Duration::from_millis(10));
    }
    compactor.stop();
    assert_clean(&engine, "opened");
}

const DIR_ENV: &str = "KVLITE_COMPACT_CRASH_DIR";
const STEP_ENV: &str = "KVLITE_COMPACT_CRASH_STEP";

/// The child process of the compaction crash test (run by it with
/// `--ignored`).
#[test]
#[ignore = "the child process of a_pass_killed_at_any_transaction_leaves_the_last_committed_state"]
fn compaction_crash_child() {
    let (Ok(dir), Ok(step)) = (std::env::var(DIR_ENV), std::env::var(STEP_ENV)) else {
        panic!("run by the compaction crash test, with {DIR_ENV} and {STEP_ENV} set");
    };
    // `t<n>`: before transaction n is built; `w<n>`: after it is built,
    // before it is written.
    let (kind, n) = step.split_at(1);
    let n: u64 = n.parse().expect("step");
    let step = if kind == "w" {
        CompactionStep::BeforeWrite(n)
    } else {
        CompactionStep::BeforeTransaction(n)
    };
    let config = EngineConfig {
        compaction: CompactionConfig {
            bytes_per_transaction: 64 * PAGE_SIZE,
            // The killed pass's lease would hold the next pass off for its
            // period: this test is about what the kill leaves behind.
            lease: Duration::ZERO,
            ..CompactionConfig::default()
        },
        ..common::no_history()
    };
    let engine = engine_with(
        Kv::open_embedded(std::path::Path::new(&dir)).expect("open"),
        config,
    );
    let _ = engine.compact_with("crashy", &|s| {
        if s == step {
            println!("\nPAUSED");
            std::thread::sleep(Duration::from_secs(600));
        }
    });
    println!("\nFINISHED");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_pass_killed_at_any_transaction_leaves_the_last_committed_state() {
    for step in ["t0", "w0", "t1", "t3", "w3", "w6", "t7"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected = {
            let engine = engine_with(
                Kv::open_embedded(dir.path()).expect("open"),
                common::no_history(),
            );
            let (g, _) = churn(&engine, "crashy");
            read_all(&engine, "crashy", g, SIZE)
        };
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "compaction_crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(STEP_ENV, step)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let mut paused = false;
        for line in BufReader::new(out).lines() {
            let line = line.expect("line");
            if line.starts_with("PAUSED") || line.starts_with("FINISHED") {
                paused = line.starts_with("PAUSED");
                break;
            }
        }
        child.kill().expect("kill -9");
        assert!(paused, "step {step}: the pass ended before reaching it");
        child.wait().expect("reap");
        let engine = engine_with(
            Kv::open_embedded(dir.path()).expect("reopen"),
            common::no_history(),
        );
        let o = open(&engine, "crashy");
        assert_eq!(
            read_all(&engine, "crashy", o.generation, SIZE),
            expected,
            "step {step}: the database is intact"
        );
        assert_clean(&engine, "crashy");
        let report = engine.compact("crashy").expect("a new pass");
        assert!(!report.stale);
        assert!(
            report.pages_folded > 0,
            "step {step}: the killed pass left nothing to do, so this tested nothing"
        );
        let stat = engine.stat("crashy").expect("stat");
        assert_eq!(
            (stat.deltas, stat.page_index_entries),
            (0, 0),
            "step {step}: the new pass finished the job"
        );
        assert_eq!(read_all(&engine, "crashy", o.generation, SIZE), expected);
        assert_clean(&engine, "crashy");
    }
}

/// On a full store compaction fails (it writes too) and the background
/// compactor pauses, doubling the pause, instead of retrying a pass at
/// every signal; once space is back it catches up.
#[test]
fn the_compactor_backs_off_while_the_store_is_full() {
    let fs = kvlite_testkit::Tmpfs::mount(24 << 20).expect("a tmpfs (tests run as root)");
    let kv = Kv::open_embedded(&fs.path().join("store")).expect("open");
    let mut registry = prometheus_client::registry::Registry::default();
    let engine = kvlite_engine::Engine::new(kv, common::no_history(), &mut registry);
    // A backlog past the compaction threshold.
    let o = open(&engine, "full");
    let mut head = o.head_txid;
    for v in 0..80u64 {
        head = commit(&engine, "full", o.generation, head, 64, &[(1, page(1, v))])
            .expect("commit")
            .txid;
    }
    // Fill the disk.
    let ballast = fs.path().join("ballast");
    let mut f = std::fs::File::create(&ballast).expect("ballast");
    let chunk = vec![1u8; 1 << 20];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let failed_passes = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text.lines()
            .find(|l| l.starts_with("kvlite_engine_compaction_passes_total{result=\"error\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The file system is full; the store may still have free pages of its
    // own: commit until it has none either.
    let o = open(&engine, "full");
    let mut head = o.head_txid;
    let mut filled = false;
    for v in 0..100_000u64 {
        match commit(&engine, "full", o.generation, head, 64, &[(2, page(2, v))]) {
            Ok(r) => head = r.txid,
            Err(kvlite_engine::Error::StoreFull(_)) => {
                filled = true;
                break;
            }
            Err(e) => panic!("commit on a filling store: {e}"),
        }
    }
    assert!(filled, "the store never filled up");
    let compactor = engine.start_compactor();
    // Every commit refused for space signals the compactor: 150 of them
    // over ~1.5 s.
    for v in 0..150 {
        let r = commit(&engine, "full", o.generation, head, 64, &[(2, page(2, v))]);
        assert!(
            matches!(r, Err(kvlite_engine::Error::StoreFull(_))),
            "{r:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let failed = failed_passes();
    assert!(failed >= 1.0, "a pass ran and failed on the full store");
    assert!(
        failed <= 4.0,
        "{failed} failed passes in 1.5 s: the compactor did not back off"
    );
    assert!(
        matches!(
            engine.store_health(),
            kvlite_engine::StoreHealth::Full { since_ms } if since_ms > 0
        ),
        "the engine reports the full store"
    );
    // Space is back: the compactor catches up.
    std::fs::remove_file(&ballast).expect("free space");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let _ = engine.open("full", &kvlite_engine::Preload::default());
        if engine.stat("full").expect("stat").deltas < 64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "compaction did not resume"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(compactor);
    assert_eq!(engine.store_health(), kvlite_engine::StoreHealth::Ok);
    assert_clean(&engine, "full");
}

/// Engines sharing a store (servers on one PostgreSQL) run one pass per
/// database at a time: a second engine's pass during the first does
/// nothing, the first finishes, and once it is done the lease is free.
/// A lease whose holder vanished expires.
fn one_pass_at_a_time_across_engines(backend: Backend) {
    let store = Store::new(backend);
    // Small batches: the first pass takes several write transactions.
    let first = engine_with(
        store.kv(),
        EngineConfig {
            compaction: CompactionConfig {
                bytes_per_transaction: 64 * PAGE_SIZE,
                ..CompactionConfig::default()
            },
            ..common::no_history()
        },
    );
    let second = store.engine_without_history();
    churn(&first, "shared");
    let during = std::sync::Mutex::new(None);
    let report = first
        .compact_with("shared", &|step| {
            // After the first batch's write, which took the lease.
            if step == CompactionStep::BeforeTransaction(1) {
                *during.lock().unwrap() = Some(second.compact("shared").expect("second pass"));
            }
        })
        .expect("first pass");
    let during = during.into_inner().unwrap().expect("the second pass ran");
    assert_eq!(during, kvlite_engine::CompactionReport::default());
    assert!(
        report.pages_folded > 0 && report.transactions > 1 && !report.stale,
        "{report:?}"
    );
    assert_clean(&first, "shared");
    // Released: the other engine compacts what came since.
    churn_more(&first, "shared");
    assert!(second.compact("shared").expect("pass").pages_folded > 0);

    // A holder that died: its lease runs out, then another engine takes over.
    let id = first.stat("shared").expect("stat").id;
    let key = kvlite_engine::keys::DbKeys { id }.compaction_lease();
    let expired = [&7u128.to_be_bytes()[..], &1u64.to_be_bytes()[..]].concat();
    store
        .kv()
        .transact(|t| t.set(&key, &expired))
        .expect("stale lease");
    churn_more(&first, "shared");
    assert!(second.compact("shared").expect("pass").pages_folded > 0);
    // A live lease of another holder is respected.
    let live = [&7u128.to_be_bytes()[..], &u64::MAX.to_be_bytes()[..]].concat();
    store
        .kv()
        .transact(|t| t.set(&key, &live))
        .expect("live lease");
    churn_more(&first, "shared");
    assert_eq!(
        second.compact("shared").expect("pass"),
        kvlite_engine::CompactionReport::default()
    );
    assert_clean(&first, "shared");
}

/// A few more overwrites on top of [`churn`]'s database.
fn churn_more(engine: &kvlite_engine::Engine, db: &str) {
    let o = open(engine, db);
    let mut head = o.head_txid;
    for v in 100..110u64 {
        let pages: Vec<(u32, Vec<u8>)> = (1..=20).map(|p| (p * 7, page(p * 7, v))).collect();
        head = commit(engine, db, o.generation, head, SIZE, &pages)
            .expect("overwrite")
            .txid;
    }
}

#[test]
fn one_pass_at_a_time_across_engines_memory() {
    one_pass_at_a_time_across_engines(Backend::Memory);
}

#[test]
fn one_pass_at_a_time_across_engines_postgres() {
    one_pass_at_a_time_across_engines(Backend::Postgres);
}
