//! `scale`: one `kvlite serve` process with many databases open by one
//! client connection, each committing a few times a minute, with the
//! server's background compaction running: the server's memory, commit
//! latency under that load next to an idle server's, and the compaction
//! backlog at the end.
//!
//! The server is this executable (`kvlite`) started as a child, so its
//! memory is its own; the client drives the transport directly (one page
//! per commit), not SQLite, so the client stays light.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvlite_api::{CommitRequest, PAGE_SIZE, Preload, Transport};
use kvlite_client::{RemoteOptions, RemoteTransport};

use crate::BenchError;
use crate::stats::{Summary, ms};

#[derive(Debug, Clone)]
pub struct Report {
    pub store: &'static str,
    pub databases: usize,
    pub commits: u64,
    pub seconds: f64,
    pub idle_p50_ms: f64,
    pub idle_p99_ms: f64,
    pub loaded_p50_ms: f64,
    pub loaded_p99_ms: f64,
    /// The server's resident memory at the end, and its peak (KiB).
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// The most deltas any database had left at the end (compaction lag).
    pub max_deltas: u64,
}

fn other(e: impl std::fmt::Display) -> BenchError {
    BenchError::Other(e.to_string())
}

/// VmRSS and VmHWM of process `pid`, in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(store: &[String]) -> Result<(Server, String), BenchError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg("serve")
        .args(store)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server(child);
    let url = format!("ws://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(other("the server did not start"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, url))
}

/// One database's writer state: (generation, head).
type Handle = (u64, u64);

fn commit(
    t: &dyn Transport,
    db: &str,
    h: &mut Handle,
    rng: &mut fastrand::Rng,
) -> Result<Duration, BenchError> {
    let mut page = vec![0u8; PAGE_SIZE];
    for b in page.iter_mut().take(256) {
        *b = rng.u8(..);
    }
    let pgno = rng.u32(1..=4);
    let started = Instant::now();
    let r = t.commit(&CommitRequest {
        db,
        generation: h.0,
        expected_head: h.1,
        new_size: 4,
        commit_id: rng.u64(..),
        pages: &[(pgno, &page)],
    })?;
    h.1 = r.txid;
    Ok(started.elapsed())
}

/// Run with `databases` databases (`quick`: fewer, shorter) on the embedded
/// store in `dir`, or on PostgreSQL at `postgres_url`.
pub fn run(dir: &Path, postgres_url: Option<&str>, quick: bool) -> Result<Vec<Report>, BenchError> {
    let databases = if quick { 500 } else { 10_000 };
    let duration = Duration::from_secs(if quick { 3 } else { 60 });
    let mut stores: Vec<(&'static str, Vec<String>)> = vec![(
        "embedded",
        vec!["--data".into(), dir.join("scale").display().to_string()],
    )];
    if let Some(url) = postgres_url {
        stores.push(("postgres", vec!["--postgres".into(), url.to_string()]));
    }
    let mut reports = Vec::new();
    for (store, args) in stores {
        reports.push(run_one(store, &args, databases, duration)?);
    }
    Ok(reports)
}

fn run_one(
    store: &'static str,
    args: &[String],
    databases: usize,
    duration: Duration,
) -> Result<Report, BenchError> {
    let (server, url) = start_server(args)?;
    let transport: Arc<dyn Transport> = Arc::new(RemoteTransport::connect(
        &url,
        None,
        RemoteOptions::default(),
    )?);
    let run_id = fastrand::u32(..);
    let names: Vec<String> = (0..databases)
        .map(|i| format!("scale-{run_id}-{i}"))
        .collect();
    let mut rng = fastrand::Rng::with_seed(5);
    // Idle: one database, one commit at a time.
    let mut idle = Vec::new();
    let first = names.first().ok_or_else(|| other("no databases"))?;
    let o = transport.open(first, &Preload::default())?;
    let mut h = (o.generation, o.head_txid);
    for _ in 0..200 {
        idle.push(commit(transport.as_ref(), first, &mut h, &mut rng)?);
    }
    // Open every database (one connection carries them all).
    let mut handles: Vec<Handle> = Vec::with_capacity(databases);
    for name in &names {
        let o = transport.open(name, &Preload::default())?;
        handles.push((o.generation, o.head_txid));
    }
    // Load: each database a few commits a minute, spread over writers.
    let per_minute = 3.0;
    let rate = databases as f64 * per_minute / 60.0;
    let writers = 8usize;
    let interval = Duration::from_secs_f64(writers as f64 / rate.max(1e-9));
    let handles = Arc::new(std::sync::Mutex::new(handles));
    let names = Arc::new(names);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let samples: Vec<Result<Vec<Duration>, BenchError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..writers)
            .map(|w| {
                let (t, handles, names, next) = (
                    transport.clone(),
                    handles.clone(),
                    names.clone(),
                    next.clone(),
                );
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(100 + w as u64);
                    let mut out = Vec::new();
                    let mut due = Instant::now();
                    while started.elapsed() < duration {
                        due += interval;
                        let i = next.fetch_add(1, Ordering::Relaxed) % names.len();
                        let (Some(name), Some(mut h)) =
                            (names.get(i), handles.lock().map_err(other)?.get(i).copied())
                        else {
                            break;
                        };
                        out.push(commit(t.as_ref(), name, &mut h, &mut rng)?);
                        if let Some(slot) = handles.lock().map_err(other)?.get_mut(i) {
                            *slot = h;
                        }
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(other("a writer panicked"))))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut loaded = Vec::new();
    for s in samples {
        loaded.extend(s?);
    }
    let (idle, loaded) = (Summary::of(&idle), Summary::of(&loaded));
    let (rss_kib, peak_rss_kib) = rss(server.0.id());
    let mut max_deltas = 0;
    for name in names.iter() {
        max_deltas = max_deltas.max(transport.stat(name)?.deltas);
    }
    Ok(Report {
        store,
        databases,
        commits: loaded.runs as u64,
        seconds,
        idle_p50_ms: ms(idle.median),
        idle_p99_ms: ms(idle.p99),
        loaded_p50_ms: ms(loaded.median),
        loaded_p99_ms: ms(loaded.p99),
        rss_kib,
        peak_rss_kib,
        max_deltas,
    })
}

pub fn render(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<9} {:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10}\n",
        "store",
        "databases",
        "commits",
        "idle p50",
        "idle p99",
        "load p50",
        "load p99",
        "RSS MiB",
        "peak MiB",
        "max deltas"
    );
    for r in reports {
        out += &format!(
            "{:<9} {:>9} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>9.0} {:>9.0} {:>10}\n",
            r.store,
            r.databases,
            r.commits,
            r.idle_p50_ms,
            r.idle_p99_ms,
            r.loaded_p50_ms,
            r.loaded_p99_ms,
            r.rss_kib as f64 / 1024.0,
            r.peak_rss_kib as f64 / 1024.0,
            r.max_deltas
        );
    }
    out
}
