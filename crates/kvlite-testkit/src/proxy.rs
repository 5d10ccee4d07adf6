//! A TCP proxy in front of a PostgreSQL server that can cut a session at the
//! one moment no retry can see past: its COMMIT.
//!
//! Armed with [`Cut::BeforeCommit`], the next `COMMIT` a client sends is
//! never forwarded (the server rolls the transaction back when the session
//! drops); with [`Cut::AfterCommit`] it is forwarded, the server is given
//! time to commit, and then the session is dropped before its answer comes
//! back. Either way the client sees its connection die during COMMIT: an
//! unknown outcome. A cut drops every other session too and then refuses new
//! connections for a while, as a server that went away would (so a retry
//! cannot simply ask another pooled session).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The simple-query message `COMMIT` (the postgres client ends transactions
/// with it): type `Q`, length 11 (big-endian, itself included), the text.
const COMMIT: &[u8] = b"Q\x00\x00\x00\x0bCOMMIT\x00";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Drop the session instead of forwarding its COMMIT.
    BeforeCommit,
    /// Forward the COMMIT, let it land, then drop the session.
    AfterCommit,
}

struct State {
    upstream: String,
    /// 0: not armed; 1: before; 2: after.
    armed: AtomicU8,
    /// Cut only a COMMIT sent after other messages in the same write.
    after_writes_only: AtomicBool,
    refuse_for: Mutex<Duration>,
    refuse_until: Mutex<Option<Instant>>,
    cuts: AtomicU64,
    /// Client sends that followed an answer from the server, over every
    /// session: the round trips clients made (see [`CutProxy::exchanges`]).
    exchanges: AtomicU64,
    stop: AtomicBool,
    /// Every session's two sockets, to drop them all at a cut.
    open: Mutex<Vec<(TcpStream, TcpStream)>>,
}

/// A proxy listening on a loopback port.
pub struct CutProxy {
    port: u16,
    state: Arc<State>,
}

impl CutProxy {
    /// Start proxying to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> std::io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            armed: AtomicU8::new(0),
            after_writes_only: AtomicBool::new(false),
            refuse_for: Mutex::new(Duration::ZERO),
            refuse_until: Mutex::new(None),
            cuts: AtomicU64::new(0),
            exchanges: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        std::thread::Builder::new()
            .name("cut-proxy".into())
            .spawn(move || accept(listener, s))?;
        Ok(CutProxy { port, state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cut the next COMMIT any session sends; afterwards refuse new
    /// connections for `refuse_for`.
    pub fn arm(&self, cut: Cut, refuse_for: Duration) {
        self.arm_with(cut, refuse_for, false);
    }

    /// Cut the next COMMIT that ends writes: one sent in the same write as
    /// the statements before it. kvlite's PostgreSQL backend sends a
    /// transaction's writes and its COMMIT together, and ends a transaction
    /// that wrote nothing with a COMMIT of its own, sent alone;
    /// [`CutProxy::arm`] would cut whichever came first (a background
    /// check's, say).
    pub fn arm_after_writes(&self, cut: Cut, refuse_for: Duration) {
        self.arm_with(cut, refuse_for, true);
    }

    fn arm_with(&self, cut: Cut, refuse_for: Duration, after_writes_only: bool) {
        *self
            .state
            .refuse_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = refuse_for;
        self.state
            .after_writes_only
            .store(after_writes_only, Ordering::SeqCst);
        let code = match cut {
            Cut::BeforeCommit => 1,
            Cut::AfterCommit => 2,
        };
        self.state.armed.store(code, Ordering::SeqCst);
    }

    /// Whether the armed cut has happened.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// How many times, over every session, a client sent something after
    /// the server had last answered: the exchanges a client needed, each at
    /// least one network round trip. Requests sent together (pipelined)
    /// count once; a request sent only after the answer to the one before
    /// counts again. (A request sent without waiting for its answer counts
    /// too: nothing here can tell it from one the client then waits for.)
    pub fn exchanges(&self) -> u64 {
        self.state.exchanges.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn refusing(state: &State) -> bool {
    let until = *state
        .refuse_until
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    until.is_some_and(|t| Instant::now() < t)
}

fn accept(listener: TcpListener, state: Arc<State>) {
    for client in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if refusing(&state) {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(&state.upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
            state
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((c, s));
        }
        // A cut sets the refusal before it drops the open sessions: a
        // session accepted just before it and listed just after it would
        // otherwise live through the outage.
        if refusing(&state) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            continue;
        }
        let s = state.clone();
        // Set before a COMMIT is forwarded, so its answer never reaches the
        // client.
        let muted = Arc::new(AtomicBool::new(false));
        let m = muted.clone();
        // The server spoke since the client last sent (true at first: the
        // client's first send is an exchange).
        let answered = Arc::new(AtomicBool::new(true));
        let a = answered.clone();
        std::thread::spawn(move || upstream_pump(client, server, s, m, a));
        std::thread::spawn(move || downstream_pump(server2, client2, muted, answered));
    }
}

/// Client to server, watching for COMMIT.
fn upstream_pump(
    mut client: TcpStream,
    mut server: TcpStream,
    state: Arc<State>,
    muted: Arc<AtomicBool>,
    answered: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    // The end of the previous read, so a COMMIT split across reads is seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        if answered.swap(false, Ordering::SeqCst) {
            state.exchanges.fetch_add(1, Ordering::SeqCst);
        }
        let mut window = std::mem::take(&mut tail);
        // A COMMIT starting past here came after other bytes of this write.
        let after = window.len();
        window.extend_from_slice(chunk);
        let armed = state.armed.load(Ordering::SeqCst);
        let after_writes_only = state.after_writes_only.load(Ordering::SeqCst);
        let found = armed != 0
            && window
                .windows(COMMIT.len())
                .enumerate()
                .any(|(i, w)| w == COMMIT && (!after_writes_only || i > after));
        if found && state.armed.swap(0, Ordering::SeqCst) == armed {
            muted.store(true, Ordering::SeqCst);
            if armed == 2 {
                let _ = server.write_all(chunk);
                let _ = server.flush();
                // Long enough for a loopback server to commit.
                std::thread::sleep(Duration::from_millis(200));
            }
            let refuse = *state
                .refuse_for
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *state
                .refuse_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + refuse);
            state.cuts.fetch_add(1, Ordering::SeqCst);
            for (c, s) in state
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
            {
                let _ = c.shutdown(Shutdown::Both);
                let _ = s.shutdown(Shutdown::Both);
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        if server.write_all(chunk).is_err() {
            break;
        }
        let keep = window.len().saturating_sub(COMMIT.len() - 1);
        tail = window.get(keep..).unwrap_or_default().to_vec();
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

/// Server to client (nothing once muted).
fn downstream_pump(
    mut server: TcpStream,
    mut client: TcpStream,
    muted: Arc<AtomicBool>,
    answered: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if muted.load(Ordering::SeqCst) {
            // The upstream side ends the session, at the moment it chose.
            return;
        }
        // Before the client can see it, so its next send counts.
        answered.store(true, Ordering::SeqCst);
        if client.write_all(buf.get(..n).unwrap_or_default()).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
