//! Placement over several clusters: where new databases go, moves (fenced,
//! verified, resumable from every step), stale routers following a move,
//! forks and restores staying with their source. On memory stores (fast)
//! and on three private PostgreSQL clusters.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use kvlite_api::{CommitRequest, Error, FenceReason, InvalidKind, PAGE_SIZE, Preload, ReadPoint};
use kvlite_engine::{Engine, EngineConfig};
use kvlite_kv::Kv;
use kvlite_placement::{MoveStep, Placement};
use prometheus_client::registry::Registry;

/// The stores of a deployment: each `deployment()` is one "server" (its
/// own engines, caches and routes) over the same stores.
struct Stores {
    kvs: Vec<Kv>,
    _clusters: Vec<kvlite_testkit::PgCluster>,
}

impl Stores {
    fn memory(n: usize) -> Self {
        Stores {
            kvs: (0..n).map(|_| Kv::memory()).collect(),
            _clusters: Vec::new(),
        }
    }

    fn postgres(n: usize) -> Self {
        let clusters: Vec<_> = (0..n)
            .map(|_| kvlite_testkit::PgCluster::start().expect("a private PostgreSQL cluster"))
            .collect();
        let kvs = clusters
            .iter()
            .map(|c| Kv::connect_postgres(&c.url(), "kvlite").expect("connect"))
            .collect();
        Stores {
            kvs,
            _clusters: clusters,
        }
    }

    /// A deployment over the first `n` stores.
    fn deployment(&self, n: usize) -> Placement {
        let engines: Vec<Arc<Engine>> = self.kvs[..n]
            .iter()
            .map(|kv| {
                Engine::new(
                    kv.clone(),
                    EngineConfig::default(),
                    &mut Registry::default(),
                )
            })
            .collect();
        Placement::new(engines).expect("placement")
    }
}

fn page(pgno: u32, version: u64) -> Vec<u8> {
    let mut p = vec![(pgno as u8) ^ (version as u8); PAGE_SIZE];
    p[..8].copy_from_slice(&version.to_be_bytes());
    p[8..12].copy_from_slice(&pgno.to_be_bytes());
    p
}

/// A writer of one database through a deployment.
struct Writer {
    db: String,
    generation: u64,
    head: u64,
    size: u32,
}

impl Writer {
    fn open(p: &Placement, db: &str) -> Writer {
        let o = p
            .route(db, true, |e| e.open(db, &Preload::default()))
            .expect("open");
        Writer {
            db: db.to_string(),
            generation: o.generation,
            head: o.head_txid,
            size: o.size_pages,
        }
    }

    /// Rewrite pages 1..=size as `version`.
    fn commit(&mut self, p: &Placement, size: u32, version: u64) -> kvlite_api::Result<()> {
        let pages: Vec<(u32, Vec<u8>)> = (1..=size).map(|n| (n, page(n, version))).collect();
        let refs: Vec<(u32, &[u8])> = pages.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let r = p.route(&self.db, false, |e| {
            e.commit(&CommitRequest {
                db: &self.db,
                generation: self.generation,
                expected_head: self.head,
                new_size: size,
                commit_id: fastrand_id(),
                pages: &refs,
            })
        })?;
        self.head = r.txid;
        self.size = size;
        Ok(())
    }
}

fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) << 20 ^ u64::from(std::process::id())
}

/// Every page of `db` as a new opener sees it.
fn contents(p: &Placement, db: &str) -> Vec<Vec<u8>> {
    let w = Writer::open(p, db);
    let pgnos: Vec<u32> = (1..=w.size).collect();
    p.route(db, false, |e| e.get_pages(db, w.generation, &pgnos))
        .expect("read")
        .into_iter()
        .map(|d| d.expect("inside").to_vec())
        .collect()
}

fn expected(size: u32, version: u64) -> Vec<Vec<u8>> {
    (1..=size).map(|n| page(n, version)).collect()
}

fn audits_clean(p: &Placement) {
    for (i, e) in p.engines().iter().enumerate() {
        let store = e.audit_store().expect("store audit");
        assert!(store.orphaned.is_empty(), "cluster {i}: {store:?}");
        for name in e.list("", None, 10_000).expect("list") {
            let a = e.audit(&name).expect("audit");
            assert!(a.is_clean(), "cluster {i}, {name}: {a:#?}");
        }
    }
}

fn new_databases_spread_and_a_new_cluster_takes_them(stores: &Stores) {
    let two = stores.deployment(2);
    for i in 0..10 {
        Writer::open(&two, &format!("spread-{i}"));
    }
    assert_eq!(two.home().placed_counts(3).expect("counts"), vec![5, 5, 0]);
    for (i, e) in two.engines().iter().enumerate() {
        assert_eq!(
            e.list("spread-", None, 100).expect("list").len(),
            5,
            "cluster {i}"
        );
    }
    // A third cluster joins: new databases go there until it catches up.
    let three = stores.deployment(3);
    for i in 10..15 {
        Writer::open(&three, &format!("spread-{i}"));
    }
    assert_eq!(
        three.home().placed_counts(3).expect("counts"),
        vec![5, 5, 5]
    );
    assert_eq!(
        three.engines()[2]
            .list("spread-", None, 100)
            .expect("list")
            .len(),
        5,
        "all five went to the new cluster"
    );
    Writer::open(&three, "spread-15");
    assert_eq!(
        three.home().placed_counts(3).expect("counts"),
        vec![6, 5, 5]
    );
    assert_eq!(three.list("spread-", None, 100).expect("list").len(), 16);
    // Every name is found again, by a router that has seen none of them.
    let fresh = stores.deployment(3);
    for i in 0..16 {
        assert!(
            fresh
                .locate(&format!("spread-{i}"))
                .expect("locate")
                .is_some()
        );
    }
    assert_eq!(fresh.locate("nowhere").expect("locate"), None);
    // The clusters in another order would misroute everything: refused.
    let swapped: Vec<Arc<Engine>> = [1, 0, 2]
        .iter()
        .map(|&i| {
            Engine::new(
                stores.kvs[i].clone(),
                EngineConfig::default(),
                &mut Registry::default(),
            )
        })
        .collect();
    let err = Placement::new(swapped).err().expect("refused");
    assert_eq!(err.invalid_kind(), Some(InvalidKind::Config), "{err}");
    assert!(err.to_string().contains("same order"), "{err}");
    assert!(matches!(
        fresh.route("nowhere", false, |e| e.stat("nowhere")),
        Err(Error::NotFound(_))
    ));
}

fn a_move_fences_the_writer_and_keeps_every_commit(stores: &Stores) {
    let server_a = stores.deployment(2);
    let server_b = stores.deployment(2);
    let db = "mover";
    let mut w = Writer::open(&server_a, db);
    for v in 1..=5 {
        w.commit(&server_a, 40, v).expect("commit");
    }
    let from = server_a.locate(db).expect("locate").expect("placed");
    let to = 1 - from;
    let report = server_b.move_db(db, to).expect("move");
    assert_eq!((report.from, report.to, report.pages), (from, to, 40));
    assert_eq!(report.head_txid, w.head);
    // The writer (through the other server, whose route is stale) is
    // fenced: its next commit lands nowhere.
    let err = w.commit(&server_a, 40, 6).expect_err("fenced");
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert_eq!(
        server_a.locate(db).expect("locate"),
        Some(to),
        "followed the move"
    );
    // It reopens (there) and goes on.
    assert_eq!(contents(&server_a, db), expected(40, 5));
    let mut w = Writer::open(&server_a, db);
    w.commit(&server_a, 50, 7).expect("commit after the move");
    assert_eq!(contents(&server_b, db), expected(50, 7));
    assert!(
        !server_a.engines()[from as usize]
            .exists(db)
            .expect("exists")
    );
    assert!(matches!(
        server_a.engines()[from as usize].stat(db),
        Err(Error::Fenced {
            reason: FenceReason::Moved { .. },
            ..
        })
    ));
    // Settings came along.
    assert_eq!(
        server_b
            .route(db, false, |e| e.stat(db))
            .expect("stat")
            .quota_bytes,
        EngineConfig::default().default_quota_bytes
    );
    // And back again.
    server_a.move_db(db, from).expect("move back");
    assert_eq!(contents(&server_b, db), expected(50, 7));
    assert!(server_b.move_db(db, from).expect("again").already_there);
    audits_clean(&server_a);
}

fn an_interrupted_move_is_finished_by_a_rerun_or_a_router(stores: &Stores) {
    for (i, step) in [
        MoveStep::Marked,
        MoveStep::Copied,
        MoveStep::HandedOff,
        MoveStep::Adopted,
    ]
    .into_iter()
    .enumerate()
    {
        let mover = stores.deployment(2);
        let db = format!("interrupted-{i}");
        let mut w = Writer::open(&mover, &db);
        w.commit(&mover, 30, 1).expect("commit");
        let from = mover.locate(&db).expect("locate").expect("placed");
        let to = 1 - from;
        let err = mover
            .move_db_with(&db, to, &|at| {
                if at == step {
                    return Err(Error::Unavailable(format!("stopped after {at:?}")));
                }
                Ok(())
            })
            .expect_err("interrupted");
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        // Another server, meanwhile, reads it whole wherever it is.
        let other = stores.deployment(2);
        assert_eq!(contents(&other, &db), expected(30, 1), "after {step:?}");
        // Running the move again finishes it.
        let again = stores.deployment(2);
        again.move_db(&db, to).expect("rerun");
        assert_eq!(
            again.home().placement_of(&db).expect("record"),
            Some(kvlite_engine::PlacementRecord {
                cluster: to,
                moving_to: None
            })
        );
        assert_eq!(contents(&again, &db), expected(30, 1));
        assert!(!again.engines()[from as usize].exists(&db).expect("exists"));
        audits_clean(&again);
    }
}

/// A writer that comes back while the copy runs: the hand-off refuses the
/// stale copy and the move starts over, so its commit is in the result.
fn a_writer_during_the_copy_makes_the_move_start_over(stores: &Stores) {
    let p = stores.deployment(2);
    let db = "busy";
    let mut w = Writer::open(&p, db);
    w.commit(&p, 20, 1).expect("commit");
    let from = p.locate(db).expect("locate").expect("placed");
    let came_back = std::sync::atomic::AtomicBool::new(false);
    let report = p
        .move_db_with(db, 1 - from, &|step| {
            if step == MoveStep::Copied
                && !came_back.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let mut back = Writer::open(&p, db);
                back.commit(&p, 24, 2).expect("the writer came back");
            }
            Ok(())
        })
        .expect("move");
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(report.pages, 24);
    assert_eq!(contents(&p, db), expected(24, 2));
    audits_clean(&p);
}

fn forks_and_restores_stay_with_their_source(stores: &Stores) {
    let p = stores.deployment(2);
    // Fill cluster 0 first so the source lands on cluster 1 for variety.
    let db = "origin";
    let mut w = Writer::open(&p, db);
    w.commit(&p, 10, 1).expect("commit");
    let first = w.head;
    w.commit(&p, 10, 2).expect("commit");
    let home = p.locate(db).expect("locate").expect("placed");
    p.fork(db, "child", Some(ReadPoint::Txid(first)))
        .expect("fork");
    assert_eq!(p.locate("child").expect("locate"), Some(home));
    assert_eq!(contents(&p, "child"), expected(10, 1));
    // A name placed elsewhere cannot be a fork of it.
    let elsewhere = (0..50)
        .map(|i| format!("other-{i}"))
        .find(|n| {
            Writer::open(&p, n);
            p.locate(n).expect("locate") != Some(home)
        })
        .expect("some database lands on the other cluster");
    p.engines()[(1 - home) as usize]
        .delete(&elsewhere)
        .expect("delete");
    let err = p.fork(db, &elsewhere, None).expect_err("placed elsewhere");
    assert_eq!(err.invalid_kind(), Some(InvalidKind::NameTaken), "{err}");
    let restored = p.restore(db, ReadPoint::Txid(first)).expect("restore");
    assert_eq!(p.locate(&restored.backup).expect("locate"), Some(home));
    assert_eq!(contents(&p, db), expected(10, 1));
    assert_eq!(contents(&p, &restored.backup), expected(10, 2));
    // Moving a fork's source away keeps the fork whole.
    p.move_db(db, 1 - home).expect("move");
    assert_eq!(contents(&p, "child"), expected(10, 1));
    assert_eq!(contents(&p, db), expected(10, 1));
    audits_clean(&p);
}

macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $test() { super::$test(&super::Stores::memory(3)) })*
        }
        /// One set of three private clusters for all (each test uses its
        /// own names).
        #[test]
        fn on_three_private_postgresql_clusters() {
            let stores = Stores::postgres(3);
            $($test(&stores);)*
        }
    };
}

on_both!(
    new_databases_spread_and_a_new_cluster_takes_them,
    a_move_fences_the_writer_and_keeps_every_commit,
    an_interrupted_move_is_finished_by_a_rerun_or_a_router,
    a_writer_during_the_copy_makes_the_move_start_over,
    forks_and_restores_stay_with_their_source,
);
