//! `kvlite serve`: the storage engine behind kvlite's versioned binary
//! protocol over WebSocket, with bearer-token namespaces and Prometheus
//! metrics.
//!
//! - `GET /ws`: the protocol. `Authorization: Bearer TOKEN` is checked before
//!   the upgrade (no storage work for a wrong or missing token). The first
//!   binary message is the version-independent hello; then each message is
//!   one request in the negotiated version. Requests run concurrently and
//!   their responses may come out of order. Anything wrong with a request
//!   that still has a readable request id gets a typed error response on
//!   that id; the connection and every other database on it keep working.
//!   Bytes that cannot be parsed at all close only that connection.
//! - `GET /metrics`: Prometheus text (the engine's metrics and the server's).
//! - `GET /health`: `ok`, or HTTP 503 saying what is degraded (a full
//!   store).
//!
//! One engine per process serves every connection. Graceful shutdown stops
//! accepting connections and requests, finishes the requests in flight, then
//! closes every connection.

mod auth;
mod budget;
mod conn;
mod dispatch;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use kvlite_engine::Engine;
use kvlite_placement::Placement;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

pub use auth::{DEFAULT_NAMESPACE, Namespace, Tokens, valid_namespace};
pub use metrics::ServerMetrics;

/// Where a test can make the server drop a connection abruptly, to see what
/// a client does when a request's outcome is unknown.
#[cfg(feature = "test-hooks")]
pub trait FaultHooks: Send + Sync {
    /// After a request is decoded, before the engine sees it.
    fn before_engine(&self, _op: &str) -> bool {
        false
    }
    /// After the engine answered, before the reply is sent.
    fn before_reply(&self, _op: &str) -> bool {
        false
    }
}

#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Empty: everyone is in the default namespace, and the server refuses
    /// to listen anywhere but loopback.
    pub tokens: Tokens,
    /// Requests of one connection served at the same time.
    pub max_in_flight_per_connection: usize,
    /// Bytes all requests in flight may hold at once (messages, what the
    /// engine builds for them, answers); a request waiting for room stops
    /// its connection's reads.
    pub max_in_flight_bytes: usize,
    /// The same, per namespace: one tenant cannot take the whole budget.
    pub max_in_flight_bytes_per_namespace: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    #[cfg(feature = "test-hooks")]
    pub hooks: Option<Arc<dyn FaultHooks>>,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            tokens: Tokens::default(),
            max_in_flight_per_connection: 64,
            max_in_flight_bytes: 256 << 20,
            max_in_flight_bytes_per_namespace: 128 << 20,
            shutdown_grace: Duration::from_secs(30),
            #[cfg(feature = "test-hooks")]
            hooks: None,
        }
    }
}

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("refusing to listen on {0} without tokens: configure --tokens or listen on loopback")]
    InsecureListen(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) struct App {
    /// The clusters and where each database lives (one engine when the
    /// server has one store).
    placement: Arc<Placement>,
    registry: Registry,
    metrics: ServerMetrics,
    budgets: budget::Budgets,
    config: ServerConfig,
    shutdown: watch::Receiver<bool>,
    connections: TaskTracker,
    /// The connections that opened each database as its writer: told when
    /// another takes it over.
    writers: conn::Writers,
}

/// A server bound to its address, not yet serving.
pub struct BoundServer {
    listener: TcpListener,
    placement: Arc<Placement>,
    registry: Registry,
    config: ServerConfig,
}

impl BoundServer {
    /// Bind `config.listen`. `registry` should already hold the engine's
    /// metrics; the server adds its own.
    pub async fn bind(
        engine: Arc<Engine>,
        registry: Registry,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        Self::bind_placement(Arc::new(Placement::single(engine)), registry, config).await
    }

    /// [`BoundServer::bind`] for a deployment over several stores: each
    /// request goes to the engine of the cluster holding its database.
    pub async fn bind_placement(
        placement: Arc<Placement>,
        registry: Registry,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        if config.tokens.is_empty() && !config.listen.ip().is_loopback() {
            return Err(ServerError::InsecureListen(config.listen));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(BoundServer {
            listener,
            placement,
            registry,
            config,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` completes, then drain gracefully.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let BoundServer {
            listener,
            placement,
            mut registry,
            config,
        } = self;
        let metrics = ServerMetrics::new(&mut registry);
        let (stop_tx, stop_rx) = watch::channel(false);
        let grace = config.shutdown_grace;
        let budgets = budget::Budgets::new(
            config.max_in_flight_bytes,
            config.max_in_flight_bytes_per_namespace,
            metrics.in_flight_bytes.clone(),
        );
        let app = Arc::new(App {
            placement,
            registry,
            metrics,
            budgets,
            config,
            shutdown: stop_rx,
            connections: TaskTracker::new(),
            writers: Default::default(),
        });
        let router = Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics_text))
            .route("/ws", get(conn::upgrade))
            .with_state(app.clone());
        let listening = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        listen_for_takeovers(&app, &listening);
        let stopping = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_tx.send(true);
        };
        // Requests and responses are small messages that must not wait for
        // Nagle's algorithm.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(stopping)
            .await?;
        app.connections.close();
        if tokio::time::timeout(grace, app.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace period");
        }
        listening.store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// Takeovers through other servers on the same store (PostgreSQL's
/// announcements), passed on to this server's writer connections of those
/// databases as they are to a takeover through this one.
fn listen_for_takeovers(app: &Arc<App>, listening: &Arc<std::sync::atomic::AtomicBool>) {
    for engine in app.placement.engines() {
        let Some(watch) = engine.watch_takeovers() else {
            continue;
        };
        let (app, listening) = (app.clone(), listening.clone());
        let started = std::thread::Builder::new()
            .name("kvlite-takeovers".into())
            .spawn(move || {
                while listening.load(std::sync::atomic::Ordering::Acquire) {
                    match watch.next(std::time::Duration::from_millis(250)) {
                        Ok(Some(notice)) => {
                            app.writers.taken_over(
                                &notice.db,
                                notice.generation,
                                notice.since_ms,
                                None,
                            );
                        }
                        Ok(None) => {}
                        Err(()) => return,
                    }
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot listen for other servers' takeovers");
        }
    }
}

/// `ok`, or 503 with what is degraded (a load balancer takes the server
/// out; an operator reads why).
async fn health(State(app): State<Arc<App>>) -> Response {
    // The worst of the clusters' stores.
    let health = app
        .placement
        .engines()
        .iter()
        .map(|e| e.store_health())
        .find(|h| !matches!(h, kvlite_engine::StoreHealth::Ok))
        .unwrap_or(kvlite_engine::StoreHealth::Ok);
    match health {
        kvlite_engine::StoreHealth::Ok => "ok\n".into_response(),
        kvlite_engine::StoreHealth::Full { since_ms } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "degraded: the store is full (since {since_ms} ms after the epoch): \
                 reads work, writes fail until space is freed\n"
            ),
        )
            .into_response(),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &app.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The namespace a request's bearer token opens.
pub(crate) fn authorize(tokens: &Tokens, headers: &HeaderMap) -> Result<Namespace, &'static str> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if tokens.is_empty() {
        // Without tokens the server listens on loopback only: whoever can
        // reach it owns the machine anyway.
        return Ok(Namespace::admin(DEFAULT_NAMESPACE));
    }
    match presented {
        None => Err("missing bearer token"),
        Some(t) => tokens
            .grant_for(t)
            .map(|g| {
                if g.admin {
                    Namespace::admin(&g.namespace)
                } else {
                    Namespace::new(&g.namespace)
                }
            })
            .ok_or("invalid bearer token"),
    }
}

/// Cap glibc's malloc at a few arenas. By default it keeps one per thread
/// that ever allocated (up to 8 per core), and memory freed by the threads
/// that served big requests stays mapped in all of them: measured, 20
/// concurrent 100 MiB uploads peaked at 1,033 MiB with the default and 802
/// MiB with two arenas. Call it first thing in a server process.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tunable of this process's allocator;
    // M_ARENA_MAX takes any positive count.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Resolve when the process gets SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
