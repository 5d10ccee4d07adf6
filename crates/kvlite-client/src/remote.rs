//! The remote transport: one WebSocket to `kvlite serve` per process, shared
//! by every database, with automatic reconnection.
//!
//! Callers block; an I/O thread owns the connection. Requests carry ids and
//! their responses may arrive in any order. When the connection drops:
//! - a request that was never written is simply sent again after
//!   reconnecting;
//! - a read (or any idempotent request) is sent again;
//! - a commit whose request may have been written has an unknown outcome; it
//!   is resolved through `commit_status` (the engine remembers recent commit
//!   ids): landed → done; not landed and still this writer's generation and
//!   head → sent again with the same id (so it can never apply twice);
//!   another generation → fenced. Only a fence (or an outcome that cannot be
//!   resolved before the deadline) reaches the VFS as an error that poisons.

use std::collections::{HashMap, VecDeque};
#[cfg(feature = "test-hooks")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kvlite_api::{
    CommitRequest, CommitResult, CommitStatus, CompactionReport, DbStat, DoctorReport, Error,
    FenceReason, Forked, HistoryPage, InvalidKind, LargeCommit, OpenResponse, PageData, PageRef,
    Preload, ReadAt, ReadPoint, ReadState, Restored, Result, Transport,
};
use kvlite_proto::msg::{ClientMessage, Page, PageRange, Request, Response, ServerMessage};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// How long a request may take, reconnections included, before it fails.
    pub request_timeout: Duration,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// Extra one-way delay on every message in both directions (benchmarks:
    /// round trips under realistic network latency).
    pub added_latency: Duration,
    /// How long an open, once sent, may wait for its answer: opening a v1
    /// database migrates it on the server first, which takes as long as the
    /// database is big. Sending it is still bounded by `request_timeout`.
    pub open_timeout: Duration,
    /// How long to keep trying to reconnect after the server said it was
    /// shutting down (WebSocket close 1001): a restart is back by then; a
    /// server that stopped for good fails requests now, not at their timeout.
    pub restart_wait: Duration,
    /// How long a caller waits for the answer to a read or a ping awake
    /// (polling, yielding its core to any thread that wants it) before it
    /// sleeps, when it is the only caller of the process waiting. On a
    /// machine whose idle cores halt (a VM), waking a thread on one costs
    /// tens of microseconds: a loopback ping took 87-124 µs with the caller
    /// asleep and 29-40 µs polling. Polling spends that much CPU a request
    /// at most; writes (which end in the server's flush to disk) never
    /// poll; zero always sleeps.
    pub spin_wait: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            request_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(2),
            added_latency: Duration::ZERO,
            open_timeout: Duration::from_secs(60 * 60),
            restart_wait: Duration::from_secs(5),
            spin_wait: Duration::from_micros(SPIN_WAIT_MICROS),
        }
    }
}

/// [`RemoteOptions::spin_wait`]'s default.
const SPIN_WAIT_MICROS: u64 = 200;

/// Whether the server answers `request` without writing to its store
/// (reads, pings): a caller waits for those awake. Writes end in a flush
/// to disk that outlasts any polling worth its CPU.
fn answered_quickly(request: &Request) -> bool {
    matches!(
        request,
        Request::Ping
            | Request::GetPages { .. }
            | Request::GetPagesAt { .. }
            | Request::BeginRead { .. }
            | Request::BeginReadAt { .. }
            | Request::EndRead { .. }
            | Request::CommitStatus { .. }
            | Request::Stat { .. }
            | Request::List { .. }
    )
}

/// Callers of this process waiting for an answer now.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// A caller waiting for its answer. It stays awake only while it is the
/// only one waiting (with several, polling would take cores from the
/// others and the server) and for its spin budget at most.
struct Waiting {
    awake_until: Option<Instant>,
}

impl Waiting {
    fn start(spin: Duration) -> Waiting {
        let others = WAITING.fetch_add(1, Ordering::AcqRel);
        Waiting {
            awake_until: (others == 0 && !spin.is_zero()).then(|| Instant::now() + spin),
        }
    }

    fn stay_awake(&mut self) -> bool {
        let awake = self.awake_until.is_some_and(|until| Instant::now() < until)
            && WAITING.load(Ordering::Acquire) == 1;
        if !awake {
            self.awake_until = None;
        }
        awake
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer on `rx`, polled for up to `spin` (yielding the core to any
/// thread that wants it; only while no other caller waits), then waited for
/// asleep until `deadline`.
fn wait_for<T>(
    rx: &std_mpsc::Receiver<T>,
    spin: Duration,
    deadline: Instant,
) -> Result<T, std_mpsc::RecvTimeoutError> {
    let mut waiting = Waiting::start(spin.min(deadline.saturating_duration_since(Instant::now())));
    while waiting.stay_awake() {
        match rx.try_recv() {
            Ok(answer) => return Ok(answer),
            Err(std_mpsc::TryRecvError::Disconnected) => {
                return Err(std_mpsc::RecvTimeoutError::Disconnected);
            }
            Err(std_mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
}

/// How a call ended at the connection level.
enum Outcome {
    Response(Response),
    /// Not written to the connection: safe to send again.
    NotSent(Error),
    /// Not written, and sending it again cannot succeed.
    Refused(Error),
    /// Written, then the connection dropped before the answer.
    Lost,
    /// Written, and answered with something that does not decode: the
    /// request may have run, and asking again would get the same.
    Malformed(Error),
}

/// What the I/O thread hands a caller: an outcome it knows, or an answer
/// still encoded. The caller decodes its own answer (the pages, the
/// canonical check), so answers to concurrent requests (a scan's windows
/// fetched ahead) decode on their callers' threads at once, not one after
/// another on the I/O thread.
// One per call, moved once: the size of the known outcome costs nothing.
#[allow(clippy::large_enum_variant)]
enum Reply {
    Known(Outcome),
    Encoded { version: u16, bytes: Bytes },
}

impl Reply {
    fn into_outcome(self) -> Outcome {
        match self {
            Reply::Known(outcome) => outcome,
            Reply::Encoded { version, bytes } => {
                match kvlite_proto::decode_response(version, &bytes) {
                    Ok(m) => Outcome::Response(m.response),
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed response from the server");
                        Outcome::Malformed(Error::Internal(format!(
                            "the server's answer does not decode: {e}"
                        )))
                    }
                }
            }
        }
    }
}

struct Call {
    request: Request,
    /// Not sent by then: fails as not sent (the caller waits for the
    /// answer as long as it likes).
    send_by: Instant,
    reply: std_mpsc::SyncSender<Reply>,
}

struct Shared {
    url: String,
    token: Option<String>,
    options: RemoteOptions,
    round_trips: AtomicU64,
    reconnects: AtomicU64,
    /// The newest generation (and takeover time) seen per database, from
    /// this transport's own opens: a second writer in this process fences
    /// the first at its next transaction, without a round trip.
    generations: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// Test hook: drop the connection instead of sending the next commit.
    #[cfg(feature = "test-hooks")]
    cut_before_next_commit: AtomicBool,
}

fn config_error(detail: String) -> Error {
    Error::invalid(InvalidKind::Config, detail)
}

/// Parts of one large commit in flight at once.
pub const LARGE_COMMIT_WINDOW: usize = 4;

/// Most one-way delay a benchmark may inject.
pub const MAX_ADDED_LATENCY: Duration = Duration::from_secs(60);

/// A [`Transport`] to a kvlite server (`ws://host:port`).
pub struct RemoteTransport {
    calls: mpsc::UnboundedSender<Call>,
    shared: Arc<Shared>,
}

impl RemoteTransport {
    /// Connect to `url` (`ws://host:port`, with or without `/ws`) and check
    /// the server answers; fails fast on a refused token or version.
    pub fn connect(url: &str, token: Option<&str>, options: RemoteOptions) -> Result<Self> {
        let url = if url.ends_with("/ws") {
            url.to_string()
        } else {
            format!("{}/ws", url.trim_end_matches('/'))
        };
        if url.starts_with("wss://") {
            // No TLS stack is linked in: say so now rather than fail every
            // reconnect until the deadline.
            return Err(config_error(format!(
                "wss:// (TLS) is not supported by this build; use ws:// ({url})"
            )));
        }
        if !url.starts_with("ws://") {
            return Err(config_error(format!(
                "server URL must start with ws:// ({url})"
            )));
        }
        if options.added_latency > MAX_ADDED_LATENCY {
            return Err(config_error(format!(
                "added latency {:?} exceeds {MAX_ADDED_LATENCY:?}",
                options.added_latency
            )));
        }
        let shared = Arc::new(Shared {
            url,
            token: token.map(str::to_string),
            options,
            round_trips: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            generations: Default::default(),
            #[cfg(feature = "test-hooks")]
            cut_before_next_commit: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let io_shared = shared.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the I/O runtime: {e}")))?;
        std::thread::Builder::new()
            .name("kvlite-remote".into())
            .spawn(move || runtime.block_on(io_loop(io_shared, rx)))
            .map_err(|e| Error::Internal(format!("cannot start the I/O thread: {e}")))?;
        let transport = RemoteTransport { calls: tx, shared };
        // A connection dropped during this first exchange is tried again
        // until the deadline; a server that cannot be one (nothing
        // listening, the wrong path, not kvlite) fails at once.
        transport.ping()?;
        Ok(transport)
    }

    /// One round trip that does no storage work.
    pub fn ping(&self) -> Result<()> {
        match self.call(Request::Ping)? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Requests sent so far (each one a network round trip).
    pub fn round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::Relaxed)
    }

    /// Connections made after the first.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Test hook: drop the connection instead of sending the next commit
    /// (or commit finish) request.
    #[cfg(feature = "test-hooks")]
    pub fn cut_before_next_commit(&self) {
        self.shared
            .cut_before_next_commit
            .store(true, Ordering::SeqCst);
    }

    fn call_once(&self, request: Request, deadline: Instant) -> Outcome {
        self.call_once_by(request, deadline, deadline)
    }

    fn call_once_by(&self, request: Request, send_by: Instant, deadline: Instant) -> Outcome {
        let spin = if answered_quickly(&request) {
            self.shared.options.spin_wait
        } else {
            Duration::ZERO
        };
        let (reply, rx) = std_mpsc::sync_channel::<Reply>(1);
        if self
            .calls
            .send(Call {
                request,
                send_by,
                reply,
            })
            .is_err()
        {
            // Final: retrying cannot bring the thread back.
            return Outcome::Refused(Error::Internal("the I/O thread stopped".into()));
        }
        match wait_for(&rx, spin, deadline) {
            Ok(reply) => reply.into_outcome(),
            // The I/O thread may still send it: treat it like a lost answer.
            Err(_) => Outcome::Lost,
        }
    }

    /// Send a request that must not run twice: resent only while it is
    /// surely unsent; a lost answer is an unknown outcome.
    fn call_once_only(&self, request: Request) -> Result<Response> {
        let deadline = Instant::now() + self.shared.options.request_timeout;
        loop {
            match self.call_once(request.clone(), deadline) {
                Outcome::Response(r) => return Ok(r),
                Outcome::Refused(e) => return Err(e),
                Outcome::NotSent(_) if Instant::now() < deadline => continue,
                Outcome::NotSent(e) => return Err(e),
                Outcome::Lost | Outcome::Malformed(_) => {
                    return Err(Error::OutcomeUnknown(format!(
                        "the answer to {} was lost: it may or may not have happened",
                        request.op_name()
                    )));
                }
            }
        }
    }

    /// Send a request whose repetition is harmless until it gets an answer.
    fn call(&self, request: Request) -> Result<Response> {
        let deadline = Instant::now() + self.shared.options.request_timeout;
        loop {
            match self.call_once(request.clone(), deadline) {
                Outcome::Response(r) => return Ok(r),
                Outcome::Refused(e) | Outcome::Malformed(e) => return Err(e),
                Outcome::NotSent(_) | Outcome::Lost if Instant::now() < deadline => continue,
                Outcome::NotSent(e) => return Err(e),
                Outcome::Lost => {
                    return Err(Error::Unavailable("no answer before the deadline".into()));
                }
            }
        }
    }

    /// A request the server may take long over (an open that migrates
    /// first, a doctor): sent within the request timeout, answered within
    /// the open timeout. Repeating it is harmless.
    fn call_open(&self, request: Request) -> Result<Response> {
        let options = &self.shared.options;
        let started = Instant::now();
        let send_by = started + options.request_timeout;
        let deadline = started + options.open_timeout.max(options.request_timeout);
        loop {
            match self.call_once_by(request.clone(), send_by, deadline) {
                Outcome::Response(r) => return Ok(r),
                Outcome::Refused(e) | Outcome::Malformed(e) => return Err(e),
                Outcome::NotSent(_) if Instant::now() < send_by => continue,
                Outcome::Lost if Instant::now() < deadline => continue,
                Outcome::NotSent(e) => return Err(e),
                Outcome::Lost => {
                    return Err(Error::Unavailable("no answer before the deadline".into()));
                }
            }
        }
    }

    /// Send a commit-like request (fast commit or large-commit finish) and
    /// resolve an unknown outcome through the commit id.
    fn commit_call(
        &self,
        request: Request,
        db: &str,
        generation: u64,
        expected_head: u64,
        commit_id: u64,
    ) -> Result<CommitResult> {
        let deadline = Instant::now() + self.shared.options.request_timeout;
        loop {
            match self.call_once(request.clone(), deadline) {
                Outcome::Response(Response::Committed(r)) => return Ok(r),
                // The server's store lost the commit's reply: resolve it
                // like a reply the network lost.
                Outcome::Response(Response::Error(Error::OutcomeUnknown(reason))) => {
                    tracing::debug!(db, commit_id, %reason, "resolving an unknown commit outcome");
                }
                Outcome::Response(Response::Error(e)) => {
                    return Err(e.with_request_context(db, generation, expected_head));
                }
                Outcome::Response(other) => return Err(unexpected(other)),
                Outcome::Refused(e) => return Err(e),
                Outcome::NotSent(e) if Instant::now() >= deadline => {
                    return Err(e);
                }
                Outcome::NotSent(_) => continue,
                // It may have landed: resolve it like a lost answer.
                Outcome::Lost | Outcome::Malformed(_) => {}
            }
            // The request may have landed: ask (a store that is down for a
            // while answers "unavailable" until it is back).
            let status = loop {
                if Instant::now() >= deadline {
                    return Err(Error::OutcomeUnknown(format!(
                        "commit {commit_id:#x} to {db:?}: connection lost and not resolved in time"
                    )));
                }
                match self.call_once(
                    Request::CommitStatus {
                        db: db.to_string(),
                        commit_id,
                    },
                    deadline,
                ) {
                    Outcome::Response(Response::Status(s)) => break s,
                    Outcome::Response(Response::Error(e)) if e.is_retryable() => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Outcome::Response(Response::Error(e)) => {
                        return Err(e.with_request_context(db, generation, expected_head));
                    }
                    Outcome::Response(other) => return Err(unexpected(other)),
                    Outcome::Refused(e) | Outcome::Malformed(e) => return Err(e),
                    Outcome::NotSent(_) | Outcome::Lost => continue,
                }
            };
            match status {
                CommitStatus::Landed(r) => return Ok(r),
                CommitStatus::NotLanded {
                    generation: g,
                    head_txid,
                } if g == generation && head_txid == expected_head => {
                    continue; // still the writer and nothing landed: send it again
                }
                CommitStatus::NotLanded {
                    generation: g,
                    head_txid,
                } if g != generation => {
                    return Err(Error::Fenced {
                        db: db.to_string(),
                        reason: FenceReason::StaleGeneration {
                            current: g,
                            yours: generation,
                            head: head_txid,
                            since_ms: 0,
                        },
                    });
                }
                CommitStatus::NotLanded { head_txid, .. } => {
                    return Err(Error::OutcomeUnknown(format!(
                        "commit {commit_id:#x} to {db:?} not found, but the head moved to {head_txid}"
                    )));
                }
            }
        }
    }
}

impl Drop for RemoteTransport {
    fn drop(&mut self) {
        // Closing the channel ends the I/O loop and its thread.
    }
}

fn unexpected(r: Response) -> Error {
    Error::Internal(format!("unexpected response: {r:?}"))
}

fn pages(list: &[PageRef<'_>]) -> Vec<Page> {
    list.iter()
        .map(|(pgno, data)| Page {
            pgno: *pgno,
            data: data.to_vec(),
        })
        .collect()
}

impl Transport for RemoteTransport {
    fn open(&self, db: &str, preload: &Preload) -> Result<OpenResponse> {
        let request = Request::Open {
            db: db.to_string(),
            preload_pages: preload.pages.clone(),
            preload_ranges: preload
                .ranges
                .iter()
                .map(|&(first, last)| PageRange { first, last })
                .collect(),
        };
        match self.call_open(request)? {
            Response::Opened(o) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let mut seen = self
                    .shared
                    .generations
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let entry = seen.entry(db.to_string()).or_insert((0, 0));
                if o.generation > entry.0 {
                    *entry = (o.generation, now);
                }
                Ok(o)
            }
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn newest_generation(&self, db: &str) -> Option<(u64, u64)> {
        self.shared
            .generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(db)
            .copied()
    }

    fn get_pages(&self, db: &str, generation: u64, pgnos: &[u32]) -> Result<Vec<Option<PageData>>> {
        let mut out = Vec::with_capacity(pgnos.len());
        for chunk in pgnos.chunks(kvlite_proto::MAX_PAGES_PER_REQUEST) {
            let request = Request::GetPages {
                db: db.to_string(),
                generation,
                pgnos: chunk.to_vec(),
            };
            match self.call(request)? {
                Response::Pages { pages } if pages.len() == chunk.len() => out.extend(pages),
                Response::Error(e) => return Err(e.with_request_context(db, generation, 0)),
                other => return Err(unexpected(other)),
            }
        }
        Ok(out)
    }

    fn commit(&self, req: &CommitRequest<'_>) -> Result<CommitResult> {
        let request = Request::Commit {
            db: req.db.to_string(),
            generation: req.generation,
            expected_head: req.expected_head,
            new_size: req.new_size,
            commit_id: req.commit_id,
            pages: pages(req.pages),
        };
        self.commit_call(
            request,
            req.db,
            req.generation,
            req.expected_head,
            req.commit_id,
        )
    }

    fn commit_large(&self, req: &LargeCommit<'_>) -> Result<CommitResult> {
        let (db, g) = (req.db, req.generation);
        let txid = self.commit_begin(db, g, req.expected_head, req.new_size)?;
        // Keep a bounded window of parts in flight (memory here and at the
        // server stays bounded whatever the commit's size); each part has
        // its own deadline from when it was first sent, and a part lost with
        // the connection is sent again (a re-sent part replaces itself).
        let send_part = |part: u32, deadline: Instant| -> std_mpsc::Receiver<Reply> {
            let (reply, rx) = std_mpsc::sync_channel(1);
            let request = Request::CommitChunk {
                db: db.to_string(),
                generation: g,
                txid,
                part,
                pages: pages(req.parts.get(part as usize).copied().unwrap_or_default()),
            };
            let _ = self.calls.send(Call {
                request,
                send_by: deadline,
                reply,
            });
            rx
        };
        let total = req.parts.len() as u32;
        let mut next = 0u32;
        let mut in_flight: VecDeque<(u32, Instant, std_mpsc::Receiver<Reply>)> = VecDeque::new();
        loop {
            while next < total && in_flight.len() < LARGE_COMMIT_WINDOW {
                let deadline = Instant::now() + self.shared.options.request_timeout;
                in_flight.push_back((next, deadline, send_part(next, deadline)));
                next += 1;
            }
            let Some((part, deadline, rx)) = in_flight.pop_front() else {
                break;
            };
            // Counted as waiting (so no read polls meanwhile), never polling.
            let outcome =
                wait_for(&rx, Duration::ZERO, deadline).map_or(Outcome::Lost, Reply::into_outcome);
            match outcome {
                Outcome::Response(Response::ChunkStored) => {}
                Outcome::Response(Response::Error(e)) => {
                    return Err(e.with_request_context(db, g, req.expected_head));
                }
                Outcome::Response(other) => return Err(unexpected(other)),
                Outcome::Refused(e) | Outcome::Malformed(e) => return Err(e),
                Outcome::NotSent(_) | Outcome::Lost if Instant::now() < deadline => {
                    in_flight.push_front((part, deadline, send_part(part, deadline)));
                }
                Outcome::NotSent(e) => return Err(e),
                Outcome::Lost => {
                    return Err(Error::Unavailable(format!(
                        "part {part} of a large commit got no answer in time"
                    )));
                }
            }
        }
        self.commit_finish(
            db,
            g,
            req.expected_head,
            txid,
            req.parts.len() as u32,
            req.commit_id,
        )
    }

    fn commit_status(&self, db: &str, commit_id: u64) -> Result<CommitStatus> {
        match self.call(Request::CommitStatus {
            db: db.to_string(),
            commit_id,
        })? {
            Response::Status(s) => Ok(s),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn stat(&self, db: &str) -> Result<DbStat> {
        match self.call(Request::Stat { db: db.to_string() })? {
            Response::Stat(s) => Ok(s),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let request = Request::List {
            prefix: prefix.to_string(),
            after: after.map(str::to_string),
            limit: limit.min(kvlite_proto::MAX_LIST_LIMIT) as u32,
        };
        match self.call(request)? {
            Response::Listed { names } => Ok(names),
            Response::Error(e) => Err(e),
            other => Err(unexpected(other)),
        }
    }

    fn delete(&self, db: &str) -> Result<bool> {
        match self.call(Request::Delete { db: db.to_string() })? {
            Response::Deleted { existed } => Ok(existed),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn compact(&self, db: &str) -> Result<CompactionReport> {
        match self.call(Request::Compact { db: db.to_string() })? {
            Response::Compacted(r) => Ok(r),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn set_quota(&self, db: &str, quota_bytes: u64) -> Result<()> {
        match self.call(Request::SetQuota {
            db: db.to_string(),
            quota_bytes,
        })? {
            Response::QuotaSet => Ok(()),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn begin_read(&self, db: &str, reader: u64, since_txid: u64) -> Result<ReadState> {
        match self.call(Request::BeginRead {
            db: db.to_string(),
            reader,
            since_txid,
        })? {
            Response::ReadBegun(r) => Ok(r),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn get_pages_at(
        &self,
        db: &str,
        reader: u64,
        at: ReadAt,
        pgnos: &[u32],
    ) -> Result<Vec<Option<PageData>>> {
        let mut out = Vec::with_capacity(pgnos.len());
        for chunk in pgnos.chunks(kvlite_proto::MAX_PAGES_PER_REQUEST) {
            let request = Request::GetPagesAt {
                db: db.to_string(),
                reader,
                at,
                pgnos: chunk.to_vec(),
            };
            match self.call(request)? {
                Response::Pages { pages } if pages.len() == chunk.len() => out.extend(pages),
                Response::Error(e) => return Err(e.with_request_context(db, 0, 0)),
                other => return Err(unexpected(other)),
            }
        }
        Ok(out)
    }

    fn end_read(&self, db: &str, reader: u64) -> Result<()> {
        match self.call(Request::EndRead {
            db: db.to_string(),
            reader,
        })? {
            Response::ReadEnded => Ok(()),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn commit_begin(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        new_size: u32,
    ) -> Result<u64> {
        let begin = Request::CommitBegin {
            db: db.to_string(),
            generation,
            expected_head,
            new_size,
        };
        match self.call(begin)? {
            Response::Begun { txid } => Ok(txid),
            Response::Error(e) => Err(e.with_request_context(db, generation, expected_head)),
            other => Err(unexpected(other)),
        }
    }

    fn commit_chunk(
        &self,
        db: &str,
        generation: u64,
        txid: u64,
        part: u32,
        pages_: &[PageRef<'_>],
    ) -> Result<()> {
        // A part sent again replaces itself: `call` may repeat it.
        let chunk = Request::CommitChunk {
            db: db.to_string(),
            generation,
            txid,
            part,
            pages: pages(pages_),
        };
        match self.call(chunk)? {
            Response::ChunkStored => Ok(()),
            Response::Error(e) => Err(e.with_request_context(db, generation, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn commit_finish(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
    ) -> Result<CommitResult> {
        let finish = Request::CommitFinish {
            db: db.to_string(),
            generation,
            expected_head,
            txid,
            parts,
            commit_id,
        };
        self.commit_call(finish, db, generation, expected_head, commit_id)
    }

    fn begin_read_at(&self, db: &str, reader: u64, point: ReadPoint) -> Result<ReadState> {
        match self.call(Request::BeginReadAt {
            db: db.to_string(),
            reader,
            point,
        })? {
            Response::ReadBegun(r) => Ok(r),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn history(&self, db: &str, before: Option<u64>, limit: usize) -> Result<HistoryPage> {
        let limit = limit.min(kvlite_proto::v6::MAX_HISTORY_COMMITS) as u32;
        match self.call(Request::History {
            db: db.to_string(),
            before,
            limit,
        })? {
            Response::History(h) => Ok(h),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn fork(&self, src: &str, dst: &str, point: Option<ReadPoint>) -> Result<Forked> {
        // Sent again after a lost answer, the engine recognises its own
        // fork.
        match self.call(Request::Fork {
            src: src.to_string(),
            dst: dst.to_string(),
            point,
        })? {
            Response::Forked(f) => Ok(f),
            Response::Error(e) => Err(e.with_request_context(src, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn restore(&self, db: &str, point: ReadPoint) -> Result<Restored> {
        // A second restore would restore the restored state: never resent.
        match self.call_once_only(Request::Restore {
            db: db.to_string(),
            point,
        })? {
            Response::Restored(r) => Ok(r),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn set_retention(&self, db: &str, retention_ms: Option<u64>) -> Result<()> {
        match self.call(Request::SetRetention {
            db: db.to_string(),
            retention_ms,
        })? {
            Response::RetentionSet => Ok(()),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }

    fn doctor(&self, db: &str) -> Result<DoctorReport> {
        // Reading every blob of a large database takes longer than a
        // request: answered within the open timeout, like a migration.
        match self.call_open(Request::Doctor { db: db.to_string() })? {
            Response::Doctored(report) => Ok(report),
            Response::Error(e) => Err(e.with_request_context(db, 0, 0)),
            other => Err(unexpected(other)),
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Whether a failed connection attempt is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Never: waiting cannot fix it (a bad URL, a refused token, not a
    /// kvlite server).
    Never,
    /// Only if this transport was connected before (a server restarting);
    /// on the first attempt nothing is there to wait for.
    IfEverConnected,
    /// Yes: the connection was lost on the way.
    Later,
}

/// Why a connection attempt failed, and whether to try again.
struct ConnectFailure(Error, Retry);

fn never(e: Error) -> ConnectFailure {
    ConnectFailure(e, Retry::Never)
}

fn later(e: Error) -> ConnectFailure {
    ConnectFailure(e, Retry::Later)
}

/// What the WebSocket handshake's failure says about the other end.
fn handshake_failure(url: &str, e: tungstenite::Error) -> ConnectFailure {
    use tungstenite::Error as WsError;
    use tungstenite::error::ProtocolError;
    match e {
        WsError::Http(r) if r.status() == StatusCode::UNAUTHORIZED => {
            never(Error::Unauthorized(format!("{url} refused the token")))
        }
        // A kvlite server shutting down answers 503: it may be back soon.
        WsError::Http(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => later(
            Error::Unavailable(format!("{url} answered HTTP 503 (shutting down?)")),
        ),
        WsError::Http(r) if r.status() == StatusCode::NOT_FOUND => never(config_error(format!(
            "{url} answered HTTP 404 Not Found: the wrong path, or not a kvlite server \
             (kvlite serves ws://HOST:PORT/ws)"
        ))),
        WsError::Http(r) => never(config_error(format!(
            "{url} answered HTTP {}: not a kvlite server",
            r.status()
        ))),
        WsError::HttpFormat(e) => never(config_error(format!(
            "{url} does not speak HTTP ({e}): not a kvlite server"
        ))),
        WsError::Url(e) => never(config_error(format!("bad server URL {url}: {e}"))),
        WsError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => ConnectFailure(
            Error::Unavailable(format!(
                "nothing is listening at {url} (connection refused)"
            )),
            Retry::IfEverConnected,
        ),
        // Closed half-way: a server going down or a flaky network.
        WsError::Protocol(
            ProtocolError::HandshakeIncomplete | ProtocolError::ResetWithoutClosingHandshake,
        ) => later(Error::Unavailable(format!(
            "{url} closed the connection during the handshake"
        ))),
        // Anything else the handshake trips on: not a WebSocket server.
        WsError::Protocol(p) => never(config_error(format!(
            "{url} is not a WebSocket server ({p}): not a kvlite server"
        ))),
        other => later(Error::Unavailable(format!("cannot reach {url}: {other}"))),
    }
}

/// Connect and negotiate a protocol version.
async fn connect(shared: &Shared) -> std::result::Result<(Socket, u16), ConnectFailure> {
    let mut request = shared
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| never(config_error(format!("bad server URL {}: {e}", shared.url))))?;
    if let Some(token) = &shared.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| never(config_error("the token is not a valid header value".into())))?;
        request.headers_mut().insert("authorization", value);
    }
    let mut config = tungstenite::protocol::WebSocketConfig::default();
    // The protocol's limit (and a little room for the envelope): the most a
    // reply can make this process hold.
    config.max_message_size = Some(kvlite_proto::MAX_MESSAGE_BYTES + (64 << 10));
    config.max_frame_size = Some(kvlite_proto::MAX_MESSAGE_BYTES + (64 << 10));
    let url = shared.url.as_str();
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| handshake_failure(url, e))?;
    let hello = kvlite_proto::encode_hello(kvlite_proto::SUPPORTED_VERSIONS)
        .map_err(|e| never(Error::Internal(e.to_string())))?;
    ws.send(Message::Binary(hello.into()))
        .await
        .map_err(|e| later(Error::Unavailable(format!("{url}: {e}"))))?;
    let not_kvlite =
        |what: String| never(config_error(format!("{url}: {what}: not a kvlite server")));
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                return match kvlite_proto::decode_hello_reply(&bytes) {
                    Ok(kvlite_proto::HelloReply::Accepted { version }) => Ok((ws, version)),
                    Ok(kvlite_proto::HelloReply::Unsupported { supported, message }) => {
                        Err(never(Error::invalid(
                            InvalidKind::UnsupportedVersion,
                            format!("the server speaks protocol versions {supported:?}: {message}"),
                        )))
                    }
                    Err(e) => Err(not_kvlite(format!("malformed hello reply ({e})"))),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => {
                return Err(later(Error::Unavailable(format!(
                    "{url} closed the connection during the handshake"
                ))));
            }
            Some(Ok(other)) => {
                return Err(not_kvlite(format!(
                    "unexpected handshake message {other:?}"
                )));
            }
            Some(Err(e)) => return Err(later(Error::Unavailable(format!("{url}: {e}")))),
        }
    }
}

/// The I/O thread: connect, serve calls until the connection drops, repeat.
async fn io_loop(shared: Arc<Shared>, mut calls: mpsc::UnboundedReceiver<Call>) {
    let mut backoff = Duration::from_millis(20);
    let mut first = true;
    // A call taken off the queue while no connection was up.
    let mut carried: Option<Call> = None;
    // When and why the server said it was going away, until reconnected.
    let mut shut_down: Option<(Instant, String)> = None;
    loop {
        let (ws, version) = match connect(&shared).await {
            Ok(c) => c,
            Err(ConnectFailure(e, retry)) => {
                // Calls that cannot succeed by waiting fail now; others wait.
                let mut permanent = match retry {
                    Retry::Never => true,
                    Retry::IfEverConnected => first,
                    Retry::Later => false,
                };
                let mut e = e;
                if let Some((since, reason)) = &shut_down
                    && since.elapsed() >= shared.options.restart_wait
                {
                    permanent = true;
                    e = Error::Unavailable(format!(
                        "the server at {} shut down ({reason}) and has not come back in {:?}: {e}",
                        shared.url, shared.options.restart_wait
                    ));
                }
                let wait = backoff.mul_f64(0.5 + fastrand::f64());
                backoff = (backoff * 2).min(shared.options.max_backoff);
                let until = Instant::now() + wait;
                loop {
                    let call = match carried.take() {
                        Some(c) => c,
                        None => match tokio::time::timeout_at(until.into(), calls.recv()).await {
                            Ok(Some(c)) => c,
                            Ok(None) => return,
                            Err(_) => break,
                        },
                    };
                    if permanent {
                        let _ = call.reply.send(Reply::Known(Outcome::Refused(e.clone())));
                    } else if Instant::now() >= call.send_by {
                        let _ = call.reply.send(Reply::Known(Outcome::NotSent(e.clone())));
                    } else {
                        carried = Some(call);
                        tokio::time::sleep_until(until.into()).await;
                        break;
                    }
                }
                continue;
            }
        };
        if !first {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        shut_down = None;
        backoff = Duration::from_millis(20);
        match serve(&shared, ws, version, &mut calls, &mut carried).await {
            Served::Closed => return,
            Served::Dropped => continue,
            Served::ShutDown(reason) => shut_down = Some((Instant::now(), reason)),
        }
    }
}

enum Served {
    /// The transport was dropped.
    Closed,
    /// The connection failed; reconnect.
    Dropped,
    /// The server closed it saying it is shutting down (close code 1001,
    /// with its reason); reconnect for a while.
    ShutDown(String),
}

/// Serve calls on one connection. Outgoing and incoming messages pass
/// through delay queues when latency is injected.
async fn serve(
    shared: &Shared,
    ws: Socket,
    version: u16,
    calls: &mut mpsc::UnboundedReceiver<Call>,
    carried: &mut Option<Call>,
) -> Served {
    let (mut sink, mut stream) = ws.split();
    let latency = shared.options.added_latency;
    let mut pending: HashMap<u64, std_mpsc::SyncSender<Reply>> = HashMap::new();
    let mut next_id = 1u64;
    // Delayed delivery of incoming frames (only used with injected latency).
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async {
        while let Some((due, bytes)) = out_rx.recv().await {
            // Tokio's timer rounds up to whole milliseconds: never touch it
            // unless a delay is really due.
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            if sink.send(Message::Binary(bytes.into())).await.is_err() {
                break;
            }
        }
    };
    tokio::pin!(writer);
    let result = loop {
        let call = if let Some(c) = carried.take() {
            Some(c)
        } else {
            tokio::select! {
                biased;
                incoming = in_rx.recv() => {
                    if let Some((due, bytes)) = incoming {
                        if due > Instant::now() {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        deliver(shared, version, bytes, &mut pending);
                    }
                    continue;
                }
                frame = stream.next() => {
                    match frame {
                        Some(Ok(Message::Binary(bytes))) => {
                            if latency.is_zero() {
                                deliver(shared, version, bytes, &mut pending);
                            } else {
                                let _ = in_tx.send((Instant::now() + latency, bytes));
                            }
                            continue;
                        }
                        Some(Ok(Message::Close(Some(frame))))
                            if frame.code == tungstenite::protocol::frame::coding::CloseCode::Away =>
                        {
                            break Served::ShutDown(frame.reason.to_string());
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break Served::Dropped,
                        Some(Ok(_)) => continue,
                    }
                }
                _ = &mut writer => break Served::Dropped,
                call = calls.recv() => call,
            }
        };
        let Some(call) = call else {
            break Served::Closed;
        };
        if Instant::now() >= call.send_by {
            let _ = call
                .reply
                .send(Reply::Known(Outcome::NotSent(Error::Unavailable(
                    "deadline passed before sending".into(),
                ))));
            continue;
        }
        #[cfg(feature = "test-hooks")]
        {
            let is_commit = matches!(
                call.request,
                Request::Commit { .. } | Request::CommitFinish { .. }
            );
            if is_commit && shared.cut_before_next_commit.swap(false, Ordering::SeqCst) {
                *carried = Some(call);
                break Served::Dropped;
            }
        }
        let request_id = next_id;
        next_id += 1;
        let bytes = match kvlite_proto::encode_request(
            version,
            &ClientMessage {
                request_id,
                request: call.request,
            },
        ) {
            Ok(b) => b,
            Err(e) => {
                let _ = call
                    .reply
                    .send(Reply::Known(Outcome::Refused(e.to_error())));
                continue;
            }
        };
        pending.insert(request_id, call.reply);
        shared.round_trips.fetch_add(1, Ordering::Relaxed);
        let _ = out_tx.send((Instant::now() + latency, bytes));
    };
    drop(out_tx);
    // Everything written (or queued to be) has an unknown outcome now.
    for (_, reply) in pending.drain() {
        let _ = reply.send(Reply::Known(Outcome::Lost));
    }
    result
}

fn deliver(
    shared: &Shared,
    version: u16,
    bytes: Bytes,
    pending: &mut HashMap<u64, std_mpsc::SyncSender<Reply>>,
) {
    let Some(request_id) = kvlite_proto::peek_request_id(&bytes) else {
        tracing::warn!("a response too short to name its request");
        return;
    };
    if request_id != kvlite_proto::PUSH_REQUEST_ID {
        if let Some(reply) = pending.remove(&request_id) {
            let _ = reply.send(Reply::Encoded { version, bytes });
        }
        return;
    }
    match kvlite_proto::decode_response(version, &bytes) {
        Ok(ServerMessage {
            response:
                Response::TakenOver {
                    db,
                    generation,
                    since_ms,
                },
            ..
        }) => {
            // Another connection took a database this one writes over: its
            // writers here answer nothing more from their caches.
            let mut seen = shared
                .generations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = seen.entry(db).or_insert((0, 0));
            if generation > entry.0 {
                *entry = (generation, since_ms);
            }
        }
        Ok(other) => {
            tracing::warn!(response = ?other.response, "an unexpected message from the server")
        }
        Err(e) => tracing::warn!(error = %e, "malformed response from the server"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn an_answer_is_taken_awake_asleep_or_not_at_all() {
        let far = Instant::now() + Duration::from_secs(5);
        // Already there: taken at once, with or without polling.
        for spin in [Duration::ZERO, Duration::from_millis(1)] {
            let (tx, rx) = std_mpsc::sync_channel(1);
            tx.send(7).unwrap();
            assert_eq!(wait_for(&rx, spin, far), Ok(7));
        }
        // Arriving after the polling stopped: waited for asleep.
        let (tx, rx) = std_mpsc::sync_channel(1);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            tx.send(8).unwrap();
        });
        let started = Instant::now();
        assert_eq!(wait_for(&rx, Duration::from_micros(100), far), Ok(8));
        assert!(started.elapsed() >= Duration::from_millis(30));
        sender.join().unwrap();
        // Never: the deadline ends the wait, polling included.
        let (_tx, rx) = std_mpsc::sync_channel::<u8>(1);
        let started = Instant::now();
        let soon = started + Duration::from_millis(20);
        assert_eq!(
            wait_for(&rx, Duration::from_secs(10), soon),
            Err(std_mpsc::RecvTimeoutError::Timeout)
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the deadline bounds the polling"
        );
        // While another caller waits, this one sleeps at once.
        let (tx, rx) = std_mpsc::sync_channel(1);
        let other = Waiting::start(Duration::ZERO);
        let mut this = Waiting::start(Duration::from_secs(1));
        assert!(!this.stay_awake(), "not alone");
        drop(this);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            tx.send(9).unwrap();
        });
        assert_eq!(wait_for(&rx, Duration::from_millis(100), far), Ok(9));
        drop(other);
        let mut alone = Waiting::start(Duration::from_secs(1));
        assert!(alone.stay_awake(), "alone again");
        drop(alone);
        sender.join().unwrap();
        // The sender gone: said so at once.
        let (tx, rx) = std_mpsc::sync_channel::<u8>(1);
        drop(tx);
        assert_eq!(
            wait_for(&rx, Duration::from_millis(1), far),
            Err(std_mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
