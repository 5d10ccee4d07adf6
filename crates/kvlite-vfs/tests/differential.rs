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

/// The same workload on an engine whose store injects faults of every kind
/// (fresh seeds each run, printed; KVLITE_SEED replays one): SQLite on the
/// VFS must still match plain SQLite statement by statement.
#[test]
fn differential_through_injected_faults() {
    use std::sync::Arc;
    let seeds = match std::env::var("KVLITE_SEED") {
        Ok(s) => vec![s.parse().expect("KVLITE_SEED is a number")],
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(11, |d| d.as_nanos() as u64);
            vec![base, base ^ 0x5DEECE66D]
        }
    };
    for seed in seeds {
        eprintln!("differential with injected faults: KVLITE_SEED={seed}");
        let faults = Arc::new(kvlite_kv::faults::FaultyBackend::new(
            Arc::new(kvlite_kv::memory::MemoryBackend::new()),
            kvlite_kv::faults::FaultRates::mixed(0.02),
            seed,
        ));
        let kv = kvlite_kv::Kv::new(faults.clone()).with_retry_policy(kvlite_kv::RetryPolicy {
            max_attempts: 60,
            first_backoff: std::time::Duration::from_micros(5),
            max_backoff: std::time::Duration::from_micros(200),
        });
        let engine = kvlite_engine::Engine::new(
            kv,
            kvlite_engine::EngineConfig::default(),
            &mut prometheus_client::registry::Registry::default(),
        );
        let vfs = kvlite_vfs::Vfs::register(
            &common::unique("faulty"),
            Arc::new(kvlite_engine::LocalTransport::new(engine.clone())),
            kvlite_vfs::VfsConfig::default(),
        )
        .expect("register");
        let db = format!("faulty-{seed}");
        kvlite_testkit::sql::differential(seed, 250, || vfs.open(&db).expect("open"));
        let c = faults.counts();
        assert!(
            c.unknown_applied > 0 && c.commit_conflict > 0,
            "seed {seed}: {c:?}"
        );
        faults.set_enabled(false);
        let audit = engine.audit(&db).expect("audit");
        assert!(audit.is_clean(), "seed {seed}: {audit:?}");
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
