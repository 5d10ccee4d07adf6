//! One WebSocket connection: handshake, then concurrent requests with
//! out-of-order responses.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use kvlite_api::{Error, InvalidKind, TooLargeKind};
use kvlite_proto::msg::{self, ServerMessage};
use kvlite_proto::{HelloReply, MAX_MESSAGE_BYTES};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Namespace;
use crate::budget;
use crate::dispatch::{dispatch, outcome};
use crate::metrics::{OpLabel, RequestLabels};
use crate::{App, authorize};

/// Messages a little over the protocol limit still get a typed "too large"
/// answer; beyond this the WebSocket layer closes the connection. The
/// largest message read into memory is thus the protocol limit.
const HARD_MESSAGE_LIMIT: usize = MAX_MESSAGE_BYTES + (64 << 10);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

enum Outgoing {
    Frame(Vec<u8>),
    Close(u16, &'static str),
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// The connection's sending half. A request's task writes its answer
/// itself, on the thread that ran it: handing it to another task woke a
/// sleeping worker after every commit's flush (~40 µs on this VM, `perf
/// sched timehist`). Notices and the closing frame go through the writer
/// task's queue, which writes through the same lock.
#[derive(Clone)]
struct Outbox {
    sink: Arc<tokio::sync::Mutex<Option<Sink>>>,
    /// Set by an injected fault: nothing more is written.
    #[cfg(feature = "test-hooks")]
    gone: Arc<std::sync::atomic::AtomicBool>,
    bytes_out: prometheus_client::metrics::counter::Counter,
}

impl Outbox {
    /// Write one frame; a broken connection drops it (the reader sees the
    /// connection end).
    async fn frame(&self, bytes: Vec<u8>) {
        let mut sink = self.sink.lock().await;
        #[cfg(feature = "test-hooks")]
        if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
            *sink = None;
            return;
        }
        let Some(s) = sink.as_mut() else {
            return;
        };
        self.bytes_out.inc_by(bytes.len() as u64);
        if s.send(Message::Binary(bytes.into())).await.is_err() {
            *sink = None;
        }
    }

    async fn close(&self, close: Option<(u16, &'static str)>) {
        let mut sink = self.sink.lock().await;
        if let Some(mut s) = sink.take() {
            match close {
                Some((code, reason)) => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = s.send(Message::Close(Some(frame))).await;
                }
                None => {
                    let _ = s.close().await;
                }
            }
        }
    }

    /// Drop the connection without a word (an injected fault): a frame
    /// being written finishes, nothing after it is written, and the next
    /// writer (or this call, when nobody writes) drops the socket.
    #[cfg(feature = "test-hooks")]
    fn vanish(&self) {
        self.gone.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut sink) = self.sink.try_lock() {
            *sink = None;
        }
    }
}

pub(crate) async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ns = match authorize(&app.config.tokens, &headers) {
        Ok(ns) => ns,
        Err(reason) => {
            app.metrics.reject("unauthorized");
            return (StatusCode::UNAUTHORIZED, reason).into_response();
        }
    };
    if *app.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let tracker = app.connections.clone();
    ws.max_message_size(HARD_MESSAGE_LIMIT)
        .max_frame_size(HARD_MESSAGE_LIMIT)
        .on_upgrade(move |socket| tracker.track_future(connection(app, ns, socket)))
}

struct Gauge(Arc<App>);

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}

async fn connection(app: Arc<App>, ns: Namespace, socket: WebSocket) {
    app.metrics.connections.inc();
    app.metrics.connections_total.inc();
    let _gauge = Gauge(app.clone());
    let (mut sink, mut stream) = socket.split();
    let Some(version) = handshake(&app, &mut sink, &mut stream).await else {
        return;
    };
    let outbox = Outbox {
        sink: Arc::new(tokio::sync::Mutex::new(Some(sink))),
        #[cfg(feature = "test-hooks")]
        gone: Arc::default(),
        bytes_out: app.metrics.bytes_out.clone(),
    };
    let (tx, mut rx) = mpsc::channel::<Outgoing>(256);
    let writer_outbox = outbox.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outgoing::Frame(bytes) => writer_outbox.frame(bytes).await,
                Outgoing::Close(code, reason) => {
                    writer_outbox.close(Some((code, reason))).await;
                    return;
                }
            }
        }
        writer_outbox.close(None).await;
    });
    let cancel = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(
        app.config.max_in_flight_per_connection.max(1),
    ));
    let in_flight = TaskTracker::new();
    let readers = Readers::default();
    let me = Holder {
        id: NEXT_CONNECTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        tx: tx.downgrade(),
        version,
        ns: ns.clone(),
    };
    let mut shutdown = app.shutdown.clone();
    let mut close = None;
    loop {
        let next = tokio::select! {
            _ = shutdown.changed() => {
                close = Some((1001, "server shutting down"));
                break;
            }
            _ = cancel.cancelled() => break,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(Message::Binary(bytes))) => {
                app.metrics.bytes_in.inc_by(bytes.len() as u64);
                if let Err(reason) = request(
                    &app, &ns, version, bytes, &outbox, &slots, &in_flight, &cancel, &readers, &me,
                )
                .await
                {
                    tracing::warn!(namespace = ns.name(), reason, "closing connection");
                    app.metrics.reject("malformed");
                    close = Some((1002, reason));
                    break;
                }
            }
            Some(Ok(Message::Text(_))) => {
                app.metrics.reject("text_frame");
                close = Some((1003, "text frames are not part of the protocol"));
                break;
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {} // ping/pong: answered by the WebSocket layer
            Some(Err(e)) => {
                if client_went_away(&e) {
                    tracing::debug!(namespace = ns.name(), error = %e, "client went away");
                } else {
                    tracing::warn!(namespace = ns.name(), error = %e, "connection failed");
                    app.metrics.reject("read_error");
                }
                break;
            }
        }
    }
    in_flight.close();
    if cancel.is_cancelled() {
        // An injected fault: vanish without answering or closing cleanly.
        #[cfg(feature = "test-hooks")]
        outbox.vanish();
        writer.abort();
        readers.release(&app);
        app.writers.forget(me.id);
        return;
    }
    in_flight.wait().await;
    readers.release(&app);
    app.writers.forget(me.id);
    if let Some((code, reason)) = close {
        let _ = tx.send(Outgoing::Close(code, reason)).await;
    }
    drop(tx);
    let _ = writer.await;
}

async fn handshake(
    app: &App,
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Option<u16> {
    let first = match tokio::time::timeout(HELLO_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(Message::Binary(bytes)))) => bytes,
        _ => {
            app.metrics.reject("no_hello");
            return None;
        }
    };
    let reply = match kvlite_proto::decode_hello(&first) {
        Ok(versions) => kvlite_proto::reply_to_hello(&versions),
        Err(e) => {
            tracing::warn!(error = %e, "malformed hello");
            app.metrics.reject("bad_hello");
            let frame = CloseFrame {
                code: 1002,
                reason: "malformed hello".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
            return None;
        }
    };
    let bytes = kvlite_proto::encode_hello_reply(&reply).ok()?;
    sink.send(Message::Binary(bytes.into())).await.ok()?;
    match reply {
        HelloReply::Accepted { version } => Some(version),
        HelloReply::Unsupported { .. } => {
            app.metrics.reject("unsupported_version");
            let frame = CloseFrame {
                code: 1002,
                reason: "unsupported protocol version".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
            None
        }
    }
}

async fn send(out: &Outbox, version: u16, request_id: u64, response: msg::Response) {
    let message = ServerMessage {
        request_id,
        response,
    };
    let bytes = match kvlite_proto::encode_response(version, &message) {
        Ok(b) => b,
        Err(e) => {
            let fallback = ServerMessage {
                request_id,
                response: msg::Response::Error(Error::Internal(format!(
                    "cannot encode response: {e}"
                ))),
            };
            match kvlite_proto::encode_response(version, &fallback) {
                Ok(b) => b,
                Err(_) => return,
            }
        }
    };
    out.frame(bytes).await;
}

/// Take one request off the wire. `Err` closes the connection: the bytes
/// cannot even be tied to a request.
#[allow(clippy::too_many_arguments)]
async fn request(
    app: &Arc<App>,
    ns: &Namespace,
    version: u16,
    bytes: axum::body::Bytes,
    out: &Outbox,
    slots: &Arc<Semaphore>,
    in_flight: &TaskTracker,
    cancel: &CancellationToken,
    readers: &Readers,
    me: &Holder,
) -> Result<(), &'static str> {
    // A tag no version knows means the bytes are not our protocol at all;
    // a tag of a later version than the connection's gets a typed answer.
    let answerable = kvlite_proto::peek_request_id(&bytes)
        .filter(|_| kvlite_proto::has_request_tag(kvlite_proto::LATEST_VERSION, &bytes));
    if let Some(id) = answerable.filter(|_| !kvlite_proto::has_request_tag(version, &bytes)) {
        let reason = format!("this request is not part of protocol version {version}");
        send(
            out,
            version,
            id,
            msg::Response::Error(Error::invalid(InvalidKind::Protocol, reason)),
        )
        .await;
        count(app, "unknown", "invalid");
        return Ok(());
    }
    if bytes.len() > MAX_MESSAGE_BYTES {
        let Some(id) = answerable else {
            return Err("oversized message without a request header");
        };
        let reason = format!(
            "message of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
            bytes.len()
        );
        send(
            out,
            version,
            id,
            msg::Response::Error(Error::too_large(TooLargeKind::Message, reason)),
        )
        .await;
        count(app, "unknown", "too_large");
        return Ok(());
    }
    let message = match kvlite_proto::decode_request(version, &bytes) {
        Ok(m) => m,
        Err(e) => {
            let Some(id) = answerable else {
                return Err("malformed message");
            };
            send(out, version, id, msg::Response::Error(e.to_error())).await;
            count(app, "unknown", "invalid");
            return Ok(());
        }
    };
    let Ok(permit) = slots.clone().acquire_owned().await else {
        return Err("connection closing");
    };
    // Bytes this request may hold while it runs (the message, its decoded
    // form, what the engine builds, the answer), from the tenant's budget
    // and then the server's. Waiting here stops this connection's reads:
    // memory stays bounded however much clients send.
    let cost = budget::cost(
        &message.request,
        bytes.len(),
        app.placement.home().config().preload_budget,
    );
    drop(bytes);
    let Some(bytes_permit) = app.budgets.acquire(ns.name(), cost).await else {
        return Err("server shutting down");
    };
    let (app, ns, out, readers, me) = (
        app.clone(),
        ns.clone(),
        out.clone(),
        readers.clone(),
        me.clone(),
    );
    #[cfg(feature = "test-hooks")]
    let cancel = cancel.clone();
    #[cfg(not(feature = "test-hooks"))]
    let _ = cancel;
    in_flight.spawn(async move {
        let op = message.request.op_name();
        let started = Instant::now();
        #[cfg(feature = "test-hooks")]
        let hooks = app.config.hooks.clone();
        #[cfg(feature = "test-hooks")]
        if hooks.as_ref().is_some_and(|h| h.before_engine(op)) {
            cancel.cancel();
            return;
        }
        let placement = app.placement.clone();
        let request = message.request;
        let reader = readers.key(&ns, &request);
        let takeover = match &request {
            msg::Request::Open { db, .. } => ns.engine_name(db).ok().map(|n| (n, true)),
            msg::Request::Restore { db, .. } => ns.engine_name(db).ok().map(|n| (n, false)),
            _ => None,
        };
        // A writer that reconnected holds its database again from its first
        // commit on this connection.
        let committing = match &request {
            msg::Request::Commit { db, .. } | msg::Request::CommitFinish { db, .. } => {
                ns.engine_name(db).ok()
            }
            _ => None,
        };
        // On a multi-threaded runtime the engine call runs on this worker
        // (its other tasks move to another): no hand-off to the blocking
        // pool and back, which costs more than a cached read itself.
        let multi = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let response = if multi {
            tokio::task::block_in_place(move || dispatch(&placement, &ns, request))
        } else {
            tokio::task::spawn_blocking(move || dispatch(&placement, &ns, request))
                .await
                .unwrap_or_else(|_| {
                    msg::Response::Error(Error::Internal("request handler failed".into()))
                })
        };
        if let Some((key, began)) = reader {
            readers.record(key, began, &response);
        }
        match (takeover, &response) {
            // This connection's writer fences the others'.
            (Some((name, true)), msg::Response::Opened(o)) => {
                app.writers
                    .taken_over(&name, o.generation, now_ms(), Some(&me));
            }
            // A restore fences every writer of the incarnation it replaced.
            (Some((name, false)), msg::Response::Restored(_)) => {
                if let Some((generation, since_ms)) = app
                    .placement
                    .route(&name, false, |e| Ok(e.newest_generation(&name)))
                    .ok()
                    .flatten()
                {
                    app.writers.taken_over(&name, generation, since_ms, None);
                }
            }
            _ => {}
        }
        if let (Some(name), msg::Response::Committed(_)) = (committing, &response) {
            app.writers.holds(&name, &me);
        }
        #[cfg(feature = "test-hooks")]
        if hooks.as_ref().is_some_and(|h| h.before_reply(op)) {
            cancel.cancel();
            return;
        }
        app.metrics
            .request_seconds
            .get_or_create(&OpLabel { op: op.to_string() })
            .observe(started.elapsed().as_secs_f64());
        count(&app, op, outcome(&response));
        send(&out, version, message.request_id, response).await;
        drop(bytes_permit);
        drop(permit);
    });
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Connection ids, unique in this process.
static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A connection as a writer of databases: where to tell it another took one
/// over.
#[derive(Clone)]
pub(crate) struct Holder {
    id: u64,
    /// Weak: the registry must not keep a closing connection's writer
    /// task waiting for its channel to end.
    tx: mpsc::WeakSender<Outgoing>,
    version: u16,
    ns: Namespace,
}

/// The connections that opened each database (engine name) as its writer.
/// Entries live as long as their connection: bounded by what clients keep
/// open.
#[derive(Default)]
pub(crate) struct Writers(Mutex<HashMap<String, HashMap<u64, Holder>>>);

impl Writers {
    /// `db` was taken over at `generation` (by `by`, which becomes one of
    /// its writers; `None`: a restore, or a takeover through another
    /// server): every other writer connection is told at once, without
    /// waiting (a full queue skips the notice: it is a hint, the engine
    /// still refuses a stale generation). Only `by` adds an entry, so
    /// notices about databases nobody here writes cost nothing.
    pub(crate) fn taken_over(&self, db: &str, generation: u64, since_ms: u64, by: Option<&Holder>) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for h in all.get(db).into_iter().flat_map(HashMap::values) {
            if by.is_some_and(|b| b.id == h.id) || h.version < 6 {
                continue;
            }
            let Some(client_db) = h.ns.client_name(db) else {
                continue;
            };
            let message = ServerMessage {
                request_id: kvlite_proto::PUSH_REQUEST_ID,
                response: msg::Response::TakenOver {
                    db: client_db.to_string(),
                    generation,
                    since_ms,
                },
            };
            if let (Ok(bytes), Some(tx)) = (
                kvlite_proto::encode_response(h.version, &message),
                h.tx.upgrade(),
            ) {
                let _ = tx.try_send(Outgoing::Frame(bytes));
            }
        }
        if let Some(b) = by {
            all.entry(db.to_string())
                .or_default()
                .insert(b.id, b.clone());
        }
    }

    /// `by` writes `db` (it committed): it hears of the next takeover.
    fn holds(&self, db: &str, by: &Holder) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Every commit lands here: the usual case allocates nothing.
        if all.get(db).is_some_and(|h| h.contains_key(&by.id)) {
            return;
        }
        all.entry(db.to_string())
            .or_default()
            .insert(by.id, by.clone());
    }

    /// A connection ended: it holds no database any more.
    fn forget(&self, id: u64) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|_, holders| {
            holders.remove(&id);
            !holders.is_empty()
        });
    }
}

/// The readers a connection began and has not ended: its pins go when it
/// does, whether or not the client said so (a process killed mid-read).
#[derive(Clone, Default)]
struct Readers(Arc<Mutex<HashSet<(String, u64)>>>);

impl Readers {
    /// The engine's name and reader of a reader request, and whether it
    /// begins (rather than ends) a read.
    fn key(&self, ns: &Namespace, request: &msg::Request) -> Option<((String, u64), bool)> {
        let (db, reader, began) = match request {
            msg::Request::BeginRead { db, reader, .. } => (db, *reader, true),
            msg::Request::EndRead { db, reader } => (db, *reader, false),
            _ => return None,
        };
        Some(((ns.engine_name(db).ok()?, reader), began))
    }

    fn record(&self, key: (String, u64), began: bool, response: &msg::Response) {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !began {
            open.remove(&key);
        } else if matches!(response, msg::Response::ReadBegun(_)) {
            open.insert(key);
        }
    }

    fn release(&self, app: &App) {
        let open = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for (db, reader) in open {
            let _ = app.placement.route(&db, false, |e| {
                e.end_read(&db, reader);
                Ok(())
            });
        }
    }
}

fn count(app: &App, op: &str, outcome: &str) {
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            op: op.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Whether a read error is a client ending its connection without a close
/// frame (a process exiting, a reset): ordinary, not worth a warning.
fn client_went_away(e: &axum::Error) -> bool {
    use tungstenite::error::{Error as WsError, ProtocolError};
    let gone = |io: &std::io::Error| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        )
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(ws) = c.downcast_ref::<WsError>() {
            return match ws {
                WsError::ConnectionClosed
                | WsError::AlreadyClosed
                | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
                WsError::Io(io) => gone(io),
                _ => false,
            };
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return gone(io);
        }
        cause = c.source();
    }
    false
}
