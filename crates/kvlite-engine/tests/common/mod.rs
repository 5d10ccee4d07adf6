#![allow(dead_code, unused_macros)]

/// One `#[test]` per backend for each named `fn(Backend)`.
macro_rules! on_every_backend {
    ($($test:ident),*) => {
        mod memory { use super::*; $(#[test] fn $test() { super::$test(Backend::Memory) })* }
        mod embedded { use super::*; $(#[test] fn $test() { super::$test(Backend::Embedded) })* }
        mod postgres { use super::*; $(#[test] fn $test() { super::$test(Backend::Postgres) })* }
    };
}

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kvlite_engine::{
    CommitRequest, CommitResult, Engine, EngineConfig, OpenResponse, PAGE_SIZE, Preload,
};
use kvlite_kv::Kv;
use prometheus_client::registry::Registry;

/// Which store an engine test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Embedded,
    Postgres,
    /// The memory backend behind seeded fault injection (seed, faults per
    /// operation in thousandths).
    FaultyMemory {
        seed: u64,
        per_mille: u32,
    },
}

/// A store plus what reopening it takes (a fresh handle on the same data).
pub struct Store {
    pub backend: Backend,
    kv: Option<Kv>,
    dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
    faults: Option<Arc<kvlite_kv::faults::FaultyBackend>>,
}

impl Store {
    pub fn new(backend: Backend) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        match backend {
            Backend::Memory => Store {
                backend,
                kv: Some(Kv::memory()),
                dir: None,
                pg: None,
                faults: None,
            },
            Backend::FaultyMemory { seed, per_mille } => {
                let faults = Arc::new(kvlite_kv::faults::FaultyBackend::new(
                    Arc::new(kvlite_kv::memory::MemoryBackend::new()),
                    kvlite_kv::faults::FaultRates::mixed(f64::from(per_mille) / 1000.0),
                    seed,
                ));
                // Quick retries: the faults are rare and brief.
                let kv = Kv::new(faults.clone()).with_retry_policy(kvlite_kv::RetryPolicy {
                    max_attempts: 60,
                    first_backoff: std::time::Duration::from_micros(5),
                    max_backoff: std::time::Duration::from_micros(200),
                });
                Store {
                    backend,
                    kv: Some(kv),
                    dir: None,
                    pg: None,
                    faults: Some(faults),
                }
            }
            Backend::Embedded => {
                let dir = tempfile::tempdir().expect("tempdir");
                let kv = Kv::open_embedded(dir.path()).expect("open embedded");
                Store {
                    backend,
                    kv: Some(kv),
                    dir: Some(dir),
                    pg: None,
                    faults: None,
                }
            }
            Backend::Postgres => {
                let cluster = kvlite_testkit::PgCluster::shared().expect("PostgreSQL test cluster");
                let table = format!(
                    "engine_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let kv = Kv::connect_postgres(&cluster.url(), &table).expect("connect");
                Store {
                    backend,
                    kv: Some(kv),
                    dir: None,
                    pg: Some((cluster.url(), table)),
                    faults: None,
                }
            }
        }
    }

    pub fn kv(&self) -> Kv {
        self.kv.clone().expect("open")
    }

    /// The fault injector, if this store has one.
    pub fn faults(&self) -> Option<&kvlite_kv::faults::FaultyBackend> {
        self.faults.as_deref()
    }

    /// Open the same data through a new handle: a process restart. Every
    /// engine built on the old handle must be dropped first (the embedded
    /// store's file lock is held until its last handle goes).
    pub fn reopen(&mut self) {
        match self.backend {
            Backend::Memory | Backend::FaultyMemory { .. } => {}
            Backend::Embedded => {
                self.kv = None;
                let dir = self.dir.as_ref().expect("dir").path();
                self.kv = Some(Kv::open_embedded(dir).expect("reopen"));
            }
            Backend::Postgres => {
                if let Some(kv) = self.kv.take() {
                    kv.close();
                }
                let (url, table) = self.pg.as_ref().expect("pg");
                self.kv = Some(Kv::connect_postgres(url, table).expect("reconnect"));
            }
        }
    }

    /// The embedded store's directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("an embedded store").path()
    }

    /// The PostgreSQL url and table.
    pub fn pg(&self) -> Option<(String, String)> {
        self.pg.clone()
    }

    /// Let go of the store (another process may open the embedded one);
    /// every engine on it must be dropped first.
    pub fn release(&mut self) {
        if let Some(kv) = self.kv.take() {
            kv.close();
        }
    }

    /// Open it again after [`Store::release`].
    pub fn reacquire(&mut self) {
        self.reopen();
    }

    pub fn engine(&self) -> Arc<Engine> {
        engine_with(self.kv(), EngineConfig::default())
    }

    /// An engine that keeps no history: compaction reclaims everything it
    /// folds (what tests of reclaiming space measure).
    pub fn engine_without_history(&self) -> Arc<Engine> {
        engine_with(self.kv(), no_history())
    }
}

/// The default configuration without history (retention zero).
pub fn no_history() -> EngineConfig {
    EngineConfig {
        history_retention: std::time::Duration::ZERO,
        ..EngineConfig::default()
    }
}

pub fn engine_with(kv: Kv, config: EngineConfig) -> Arc<Engine> {
    Engine::new(kv, config, &mut Registry::default())
}

/// Deterministic page contents: half compressible text-like, half noise.
pub fn page(pgno: u32, version: u64) -> Vec<u8> {
    let mut x = (pgno as u64) << 32 ^ version.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    let mut out = vec![0u8; PAGE_SIZE];
    let noisy = (pgno as u64 + version).is_multiple_of(2);
    for (i, b) in out.iter_mut().enumerate() {
        if noisy || i % 64 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        } else {
            *b = b'a' + (i % 26) as u8;
        }
    }
    out
}

pub fn open(engine: &Engine, db: &str) -> OpenResponse {
    engine.open(db, &Preload::default()).expect("open")
}

/// Commit owned pages on the fast path.
pub fn commit(
    engine: &Engine,
    db: &str,
    generation: u64,
    head: u64,
    new_size: u32,
    pages: &[(u32, Vec<u8>)],
) -> kvlite_engine::Result<CommitResult> {
    let refs: Vec<(u32, &[u8])> = pages.iter().map(|(p, d)| (*p, d.as_slice())).collect();
    engine.commit(&CommitRequest {
        db,
        generation,
        expected_head: head,
        new_size,
        commit_id: fastrand::u64(..),
        pages: &refs,
    })
}

/// Commit through the large path, `per_part` pages per part.
pub fn commit_large(
    engine: &Engine,
    db: &str,
    generation: u64,
    head: u64,
    new_size: u32,
    pages: &[(u32, Vec<u8>)],
    per_part: usize,
) -> kvlite_engine::Result<CommitResult> {
    let txid = engine.commit_begin(db, generation, head, new_size)?;
    let mut parts = 0;
    for chunk in pages.chunks(per_part.max(1)) {
        let refs: Vec<(u32, &[u8])> = chunk.iter().map(|(p, d)| (*p, d.as_slice())).collect();
        engine.commit_chunk(db, generation, txid, parts, &refs)?;
        parts += 1;
    }
    engine.commit_finish(db, generation, head, txid, parts, fastrand::u64(..))
}

/// Every page 1..=size as the engine returns it.
pub fn read_all(engine: &Engine, db: &str, generation: u64, size: u32) -> Vec<Vec<u8>> {
    let pgnos: Vec<u32> = (1..=size).collect();
    let mut out = Vec::new();
    for chunk in pgnos.chunks(512) {
        for (p, d) in chunk
            .iter()
            .zip(engine.get_pages(db, generation, chunk).expect("get_pages"))
        {
            out.push(
                d.unwrap_or_else(|| panic!("page {p} absent below size {size}"))
                    .to_vec(),
            );
        }
    }
    out
}

pub fn assert_clean(engine: &Engine, db: &str) {
    let audit = engine.audit(db).expect("audit");
    assert!(audit.is_clean(), "audit of {db}: {audit:#?}");
}

/// [`assert_clean`] in debug builds (every step of a compaction pass).
pub fn audit_in_debug(engine: &Engine, db: &str) {
    if cfg!(debug_assertions) {
        assert_clean(engine, db);
    }
}
