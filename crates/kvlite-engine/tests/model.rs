//! Model-based test: random sequences of opens, fast and large commits,
//! truncations, reads, restarts, stale writers and abandoned large commits,
//! with readers holding earlier commits (each read at a reader's commit
//! must equal the model as it was then, however the database moved on),
//! checked step by step against an in-memory model of the pages; also on a
//! store that injects faults (lost stores, conflicts, unknown commit
//! outcomes with and without the writes applied) with fresh seeds every run.
//! Set KVLITE_SEED to replay one seed.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use common::{
    Backend, Store, assert_clean, audit_in_debug, commit, commit_large, open, page, read_all,
};
use std::cell::RefCell;

use kvlite_engine::{CompactionStep, Error, InvalidKind, PAGE_SIZE, ReadState};

/// A reader holding the commit its transaction began at, and the model as
/// it was then.
struct Reader {
    id: u64,
    state: ReadState,
    then: Model,
    /// False once the engine that held its pin restarted: reads at its
    /// commit may then be refused (never answered wrongly).
    pinned: bool,
}

/// Start (or move) a reader's transaction to the head, checking that what
/// the engine says changed covers every page that differs.
fn begin(engine: &kvlite_engine::Engine, db: &str, reader: &mut Reader, model: &Model, ctx: &str) {
    let state = engine
        .begin_read(db, reader.id, reader.state.head_txid)
        .expect(ctx);
    assert_eq!(state.size_pages, model.size, "{ctx}: reader size");
    if let Some(changed) = &state.changed {
        // With a lost pin the engine can only say "nothing changed".
        assert!(
            reader.pinned || state.head_txid == reader.state.head_txid,
            "{ctx}: changes listed for a lost pin"
        );
        // Pages past the new size are gone by the size alone.
        for p in 1..=model.size {
            if reader.then.get(p) != model.get(p) {
                assert!(
                    changed.binary_search(&p).is_ok(),
                    "{ctx}: page {p} changed but is not listed (sizes {} -> {}, heads {} -> {}, listed {changed:?})",
                    reader.then.size,
                    model.size,
                    reader.state.head_txid,
                    state.head_txid
                );
            }
        }
    }
    reader.state = state;
    reader.then = model.clone();
    reader.pinned = true;
}

/// Read random pages at a reader's commit: exactly the model then, or (only
/// for a reader whose pin was lost) refused as history no longer kept.
fn read_at(
    engine: &kvlite_engine::Engine,
    db: &str,
    rng: &mut fastrand::Rng,
    reader: &Reader,
    ctx: &str,
) {
    let n = rng.usize(1..40);
    let pgnos: Vec<u32> = (0..n).map(|_| rng.u32(1..=reader.then.size + 3)).collect();
    match engine.get_pages_at(db, reader.id, reader.state.at(), &pgnos) {
        Ok(got) => {
            for (p, d) in pgnos.iter().zip(got) {
                assert!(
                    d == reader.then.get(*p),
                    "{ctx}: page {p} at commit {} differs from the model then",
                    reader.state.head_txid
                );
            }
        }
        Err(e) if !reader.pinned && e.invalid_kind() == Some(InvalidKind::HistoryUnavailable) => {}
        Err(e) => panic!("{ctx}: read at commit {}: {e}", reader.state.head_txid),
    }
}

#[derive(Default, Clone)]
struct Model {
    pages: BTreeMap<u32, Vec<u8>>,
    size: u32,
}

impl Model {
    fn apply(&mut self, new_size: u32, pages: &[(u32, Vec<u8>)]) {
        if new_size < self.size {
            self.pages.split_off(&(new_size + 1));
        }
        self.size = new_size;
        for (p, d) in pages {
            self.pages.insert(*p, d.clone());
        }
    }

    fn get(&self, pgno: u32) -> Option<Vec<u8>> {
        (pgno <= self.size).then(|| {
            self.pages
                .get(&pgno)
                .cloned()
                .unwrap_or_else(|| vec![0; PAGE_SIZE])
        })
    }
}

fn random_pages(
    rng: &mut fastrand::Rng,
    model: &Model,
    max: usize,
    version: &mut u64,
) -> (u32, Vec<(u32, Vec<u8>)>) {
    let limit = (model.size + 3).clamp(1, 600);
    let n = rng.usize(1..=max);
    let mut pgnos: Vec<u32> = (0..n).map(|_| rng.u32(1..=limit)).collect();
    pgnos.sort_unstable();
    pgnos.dedup();
    let mut new_size = model.size.max(*pgnos.last().unwrap_or(&1));
    if rng.u8(..) < 20 {
        new_size += rng.u32(0..4); // grow past the written pages: zero-filled
    }
    *version += 1;
    let pages = pgnos.into_iter().map(|p| (p, page(p, *version))).collect();
    (new_size, pages)
}

/// Every page equals the model (after every step).
fn verify_pages(
    engine: &kvlite_engine::Engine,
    db: &str,
    generation: u64,
    model: &Model,
    ctx: &str,
) {
    let all = read_all(engine, db, generation, model.size);
    for (i, data) in all.iter().enumerate() {
        let pgno = i as u32 + 1;
        assert!(
            Some(data) == model.get(pgno).as_ref(),
            "{ctx}: page {pgno} differs from the model"
        );
    }
    let past = engine
        .get_pages(db, generation, &[model.size + 1])
        .expect("read past the end");
    assert_eq!(past, vec![None], "{ctx}: a page past the end");
}

/// Pages and the storage accounting (a full scan: every 100 steps).
fn verify(engine: &kvlite_engine::Engine, db: &str, generation: u64, model: &Model) {
    verify_pages(engine, db, generation, model, "final");
    assert_clean(engine, db);
}

/// Run the model; returns the faults injected, on a faulty store.
fn run(backend: Backend, seed: u64, steps: usize) -> Option<kvlite_kv::faults::FaultCounts> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut store = Store::new(backend);
    let mut engine = store.engine();
    let db = "model";
    let o = open(&engine, db);
    let (mut generation, mut head) = (o.generation, o.head_txid);
    let mut model = Model::default();
    let mut version = 0u64;
    let mut readers: Vec<Reader> = Vec::new();
    let mut reads_in_the_past = 0u64;
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        // Readers come, move to the head, read at their commit, and go.
        match rng.u32(0..100) {
            0..=3 if readers.len() < 3 => {
                let mut r = Reader {
                    id: rng.u64(..),
                    state: ReadState {
                        incarnation: 0,
                        head_txid: 0,
                        size_pages: 0,
                        page_size: 0,
                        changed: None,
                    },
                    then: Model::default(),
                    pinned: true,
                };
                begin(&engine, db, &mut r, &model, &ctx);
                readers.push(r);
            }
            4..=9 if !readers.is_empty() => {
                let i = rng.usize(..readers.len());
                begin(&engine, db, &mut readers[i], &model, &ctx);
            }
            10 if !readers.is_empty() => {
                let r = readers.swap_remove(rng.usize(..readers.len()));
                engine.end_read(db, r.id);
            }
            _ => {}
        }
        for r in &readers {
            if rng.u8(..) < 80 {
                read_at(&engine, db, &mut rng, r, &ctx);
                if r.state.head_txid < head {
                    reads_in_the_past += 1;
                }
            }
        }
        match rng.u32(0..100) {
            0..=39 => {
                let (new_size, pages) = random_pages(&mut rng, &model, 24, &mut version);
                let r = commit(&engine, db, generation, head, new_size, &pages).expect(&ctx);
                assert!(r.txid > head, "{ctx}: head moves forward");
                head = r.txid;
                model.apply(new_size, &pages);
            }
            40..=49 => {
                let (new_size, pages) = random_pages(&mut rng, &model, 300, &mut version);
                let per_part = rng.usize(1..=80);
                let r = commit_large(&engine, db, generation, head, new_size, &pages, per_part)
                    .expect(&ctx);
                head = r.txid;
                model.apply(new_size, &pages);
            }
            50..=56 => {
                let new_size = rng.u32(0..=model.size);
                version += 1;
                let pages: Vec<(u32, Vec<u8>)> = if new_size > 0 && rng.bool() {
                    let p = rng.u32(1..=new_size);
                    vec![(p, page(p, version))]
                } else {
                    Vec::new()
                };
                let r = commit(&engine, db, generation, head, new_size, &pages).expect(&ctx);
                head = r.txid;
                model.apply(new_size, &pages);
            }
            57..=74 => {
                let n = rng.usize(1..40);
                let pgnos: Vec<u32> = (0..n).map(|_| rng.u32(1..=model.size + 5)).collect();
                let got = engine.get_pages(db, generation, &pgnos).expect(&ctx);
                for (p, d) in pgnos.iter().zip(got) {
                    assert!(d == model.get(*p), "{ctx}: page {p}");
                }
            }
            75..=79 => {
                // Restart the engine (caches gone), then take over again.
                drop(engine);
                if rng.bool() {
                    store.reopen();
                }
                engine = store.engine();
                for r in &mut readers {
                    r.pinned = false;
                }
                let o = open(&engine, db);
                assert!(
                    o.generation > generation,
                    "{ctx}: takeover bumps the generation"
                );
                assert_eq!(
                    (o.head_txid, o.size_pages),
                    (head, model.size),
                    "{ctx}: state survives restart"
                );
                (generation, head) = (o.generation, o.head_txid);
            }
            80..=85 => {
                // A stale writer: another opener fences this generation out.
                let old = generation;
                let o = open(&engine, db);
                (generation, head) = (o.generation, o.head_txid);
                let (new_size, pages) = random_pages(&mut rng, &model, 5, &mut version);
                let err = commit(&engine, db, old, head, new_size, &pages).unwrap_err();
                assert!(matches!(err, Error::Fenced { .. }), "{ctx}: {err}");
                let err = engine.get_pages(db, old, &[1]).unwrap_err();
                assert!(matches!(err, Error::Fenced { .. }), "{ctx}: {err}");
            }
            86..=90 => {
                // Abandon a large commit part-way; the next takeover removes it.
                let (new_size, pages) = random_pages(&mut rng, &model, 100, &mut version);
                let txid = engine
                    .commit_begin(db, generation, head, new_size)
                    .expect(&ctx);
                for (i, chunk) in pages.chunks(30).enumerate().take(rng.usize(0..4)) {
                    let refs: Vec<(u32, &[u8])> =
                        chunk.iter().map(|(p, d)| (*p, d.as_slice())).collect();
                    engine
                        .commit_chunk(db, generation, txid, i as u32, &refs)
                        .expect(&ctx);
                }
                let o = open(&engine, db);
                assert_eq!(o.head_txid, head, "{ctx}: unfinished commit is invisible");
                generation = o.generation;
                let stat = engine.stat(db).expect(&ctx);
                assert_eq!(
                    stat.pending_commits, 0,
                    "{ctx}: takeover removed the unfinished commit"
                );
            }
            91..=93 => {
                let r = engine.compact(db).expect(&ctx);
                assert!(!r.stale, "{ctx}");
                let stat = engine.stat(db).expect(&ctx);
                // Live readers hold back what the pass may fold.
                if !readers.iter().any(|r| r.pinned) {
                    assert_eq!(
                        stat.page_index_entries, 0,
                        "{ctx}: a full pass folds everything"
                    );
                    assert_eq!(stat.deltas, 0, "{ctx}: every delta is folded and deleted");
                }
            }
            94..=95 => {
                // A commit lands while a pass is between its transactions;
                // or, after the first batch is built, a commit rewrites
                // every page of the first shard, so none of the entries it
                // was built from is current when it is written.
                let whole_shard = step % 2 == 0 && model.size > 0;
                let (new_size, pages) = if whole_shard {
                    version += 1;
                    let last = model.size.min(kvlite_engine::SHARD_PAGES - 1);
                    let pages: Vec<(u32, Vec<u8>)> =
                        (1..=last).map(|p| (p, page(p, version))).collect();
                    (model.size, pages)
                } else {
                    random_pages(&mut rng, &model, 20, &mut version)
                };
                let injected = RefCell::new(None);
                let at = if whole_shard {
                    CompactionStep::BeforeWrite(0)
                } else if rng.bool() {
                    CompactionStep::BeforeTransaction(rng.u64(0..3))
                } else {
                    CompactionStep::BeforeWrite(rng.u64(0..3))
                };
                let r = engine
                    .compact_with(db, &|step| {
                        audit_in_debug(&engine, db);
                        if step == at && injected.borrow().is_none() {
                            let c = commit(&engine, db, generation, head, new_size, &pages)
                                .expect("commit during a pass");
                            *injected.borrow_mut() = Some(c.txid);
                        }
                    })
                    .expect(&ctx);
                assert!(!r.stale, "{ctx}");
                if let Some(txid) = injected.into_inner() {
                    head = txid;
                    model.apply(new_size, &pages);
                }
            }
            96 => {
                // A takeover while a pass is planned, or after it built its
                // first shards: the pass writes nothing.
                let before = engine.stat(db).expect(&ctx);
                let next = RefCell::new(None);
                let at = if rng.bool() {
                    CompactionStep::Planned
                } else {
                    CompactionStep::BeforeWrite(0)
                };
                let r = engine
                    .compact_with(db, &|step| {
                        audit_in_debug(&engine, db);
                        if step == at {
                            *next.borrow_mut() = Some(open(&engine, db));
                        }
                    })
                    .expect(&ctx);
                assert!(r.stale, "{ctx}: a stale pass reports it");
                assert_eq!(
                    (r.pages_folded, r.deltas_deleted, r.shards_written),
                    (0, 0, 0),
                    "{ctx}"
                );
                let after = engine.stat(db).expect(&ctx);
                assert_eq!(
                    (
                        after.page_index_entries,
                        after.deltas,
                        after.shards,
                        after.used_bytes
                    ),
                    (
                        before.page_index_entries,
                        before.deltas,
                        before.shards,
                        before.used_bytes
                    ),
                    "{ctx}: a stale pass wrote nothing"
                );
                if let Some(o) = next.into_inner() {
                    generation = o.generation;
                }
            }
            _ => verify(&engine, db, generation, &model),
        }
        verify_pages(&engine, db, generation, &model, &ctx);
        // Debug builds audit the storage accounting after every step.
        if cfg!(debug_assertions) || step % 100 == 99 {
            assert_clean(&engine, db);
        }
    }
    verify(&engine, db, generation, &model);
    assert!(
        reads_in_the_past > steps as u64 / 20,
        "seed {seed}: only {reads_in_the_past} reads at an earlier commit"
    );
    store.faults().map(|f| f.counts())
}

fn seeds() -> Vec<u64> {
    match std::env::var("KVLITE_SEED") {
        Ok(s) => vec![s.parse().expect("KVLITE_SEED is a number")],
        Err(_) => vec![1, 2],
    }
}

#[test]
fn model_memory() {
    for seed in seeds() {
        run(Backend::Memory, seed, 5000);
    }
}

#[test]
fn model_embedded() {
    for seed in seeds() {
        run(Backend::Embedded, seed, 2500);
    }
}

/// The model through seeded faults of every kind, with a fresh seed each
/// run (printed, and named in every failure, so a failing run replays with
/// KVLITE_SEED). The engine's retries must make every operation land
/// exactly once: a lost or doubled commit breaks the page check or fences
/// the next commit, and `audit` runs after every step.
#[test]
fn model_memory_with_injected_faults() {
    let seeds = match std::env::var("KVLITE_SEED") {
        Ok(s) => vec![s.parse().expect("KVLITE_SEED is a number")],
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64);
            (0..6).map(|i| base.wrapping_add(i * 0x9E37_79B9)).collect()
        }
    };
    for seed in seeds {
        eprintln!("model with injected faults: KVLITE_SEED={seed}");
        let backend = Backend::FaultyMemory {
            seed,
            per_mille: 20,
        };
        let counts = run(backend, seed, 1200);
        let c = counts.expect("a faulty store");
        assert!(
            c.unknown_applied > 0 && c.unknown_not_applied > 0 && c.commit_conflict > 0,
            "seed {seed}: every kind of fault struck: {c:?}"
        );
    }
}

#[test]
fn model_postgres() {
    for seed in seeds() {
        run(Backend::Postgres, seed, 600);
    }
}
