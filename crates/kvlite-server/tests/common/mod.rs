#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kvlite_client::{RemoteOptions, RemoteTransport};
use kvlite_engine::{Engine, EngineConfig};
use kvlite_kv::Kv;
use kvlite_server::{BoundServer, FaultHooks, ServerConfig, Tokens};
use kvlite_vfs::{Vfs, VfsConfig};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Embedded,
    Postgres,
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
            let table = unique("srv").replace('-', "_");
            (
                Kv::connect_postgres(&cluster.url(), &table).expect("connect"),
                None,
            )
        }
    }
}

/// A real `kvlite serve` on a loopback port, in this process, with its own
/// runtime thread.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub fn start(backend: Backend) -> TestServer {
        let (kv, dir) = kv_for(backend);
        let mut s = Self::start_with(kv, Tokens::default(), None);
        s._dir = dir;
        s
    }

    pub fn start_with(kv: Kv, tokens: Tokens, hooks: Option<Arc<dyn FaultHooks>>) -> TestServer {
        let mut registry = Registry::default();
        let engine = Engine::new(kv, EngineConfig::default(), &mut registry);
        let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"));
        config.tokens = tokens;
        config.hooks = hooks;
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server_engine = engine.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let bound = BoundServer::bind(server_engine, registry, config)
                    .await
                    .expect("bind");
                addr_tx
                    .send(bound.local_addr().expect("addr"))
                    .expect("send addr");
                bound
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        TestServer {
            addr,
            engine,
            stop: Some(stop),
            thread: Some(thread),
            _dir: None,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn transport(&self, token: Option<&str>) -> Arc<RemoteTransport> {
        Arc::new(
            RemoteTransport::connect(&self.url(), token, RemoteOptions::default())
                .expect("connect"),
        )
    }

    /// A VFS whose databases live on this server.
    pub fn vfs(&self) -> (Vfs, Arc<RemoteTransport>) {
        let transport = self.transport(None);
        let vfs = Vfs::register(&unique("remote"), transport.clone(), VfsConfig::default())
            .expect("register");
        (vfs, transport)
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Every row of a query as strings.
pub fn rows(conn: &rusqlite::Connection, sql: &str) -> Vec<Vec<String>> {
    kvlite_testkit::sql::query(conn, sql)
}
