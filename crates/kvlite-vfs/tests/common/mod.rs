#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kvlite_engine::LocalTransport;
use kvlite_engine::{Engine, EngineConfig};
use kvlite_kv::Kv;
use kvlite_vfs::{Vfs, VfsConfig};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Embedded,
    Postgres,
}

/// A store, an engine on it, and a VFS registered for that engine.
pub struct Setup {
    pub vfs: Vfs,
    pub engine: Arc<Engine>,
    pub kv: Kv,
    _dir: Option<tempfile::TempDir>,
}

pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn kv_for(backend: Backend) -> (Kv, Option<tempfile::TempDir>) {
    match backend {
        Backend::Memory => (Kv::memory(), None),
        Backend::Embedded => {
            let dir = tempfile::tempdir().expect("tempdir");
            (Kv::open_embedded(dir.path()).expect("open"), Some(dir))
        }
        Backend::Postgres => {
            let cluster = kvlite_testkit::PgCluster::shared().expect("PostgreSQL test cluster");
            let table = unique("vfs").replace('-', "_");
            (
                Kv::connect_postgres(&cluster.url(), &table).expect("connect"),
                None,
            )
        }
    }
}

pub fn setup(backend: Backend) -> Setup {
    setup_with(backend, VfsConfig::default())
}

pub fn setup_with(backend: Backend, config: VfsConfig) -> Setup {
    let (kv, dir) = kv_for(backend);
    let engine = Engine::new(
        kv.clone(),
        EngineConfig::default(),
        &mut Registry::default(),
    );
    let vfs = Vfs::register(
        &unique("kvlite"),
        Arc::new(LocalTransport::new(engine.clone())),
        config,
    )
    .expect("register");
    Setup {
        vfs,
        engine,
        kv,
        _dir: dir,
    }
}

/// Every row of a query as strings (NULL as "NULL"), for comparisons.
pub fn rows(conn: &rusqlite::Connection, sql: &str) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(sql).expect("prepare");
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => "NULL".to_string(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => format!("{v:?}"),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(b) => format!(
                        "x'{}'",
                        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                    ),
                })
            })
            .collect()
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}
