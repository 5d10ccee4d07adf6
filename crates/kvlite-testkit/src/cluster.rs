use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::bins::{Binaries, ensure_binaries};
use crate::error::{PgError, Result};
use crate::keeper::spawn_tied_to_process;
use crate::util::{
    children_of, file_tail, is_root, lookup_user, output_tail, process_alive, status_string,
};

/// OS user the server runs as when the tests run as root.
const SERVER_OS_USER: &str = "postgres";
/// Database superuser created by initdb (and used in every URL).
const DB_USER: &str = "postgres";
const HOST: &str = "127.0.0.1";
/// Prefix of the per-cluster temporary directories: `kvlite-pg-<pid>-<random>`.
const DIR_PREFIX: &str = "kvlite-pg-";
/// Overrides the directory the cluster directories are created in (default: the temp dir).
pub const TMPDIR_ENV: &str = "KVLITE_PG_TMPDIR";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 40;

/// Settings good for tests: nothing is durable, everything is fast.
const SERVER_SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
    "shared_buffers=128MB",
];

/// A primary whose commits are acknowledged only once a synchronous standby
/// has them: what a failover that loses no acknowledged commit needs.
/// (`fsync=off` stays: the tests kill processes, not the machine, so the
/// page cache survives.)
const PRIMARY_SETTINGS: &[&str] = &[
    "synchronous_commit=on",
    "synchronous_standby_names=*",
    "wal_level=replica",
    "max_wal_senders=10",
];

/// How long to wait for a new standby to become the synchronous one.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// A private PostgreSQL server for tests, listening on a free loopback port.
///
/// The server is a direct child of this process. Dropping the `PgCluster` stops it (fast
/// shutdown, then `SIGKILL` after a timeout) and deletes its directory. If this process
/// dies without dropping it, the kernel sends the server `SIGQUIT` (immediate shutdown)
/// and the next cluster started on this machine deletes the leftover directory.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    bins: Binaries,
    server_pid: u32,
    /// `-c` settings the server runs with.
    settings: Vec<String>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    child: Option<Child>,
    tmp: Option<TempDir>,
}

static SHARED: OnceLock<std::result::Result<PgCluster, Arc<PgError>>> = OnceLock::new();
static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PgCluster {
    /// Starts a new server: finds (or installs) the binaries, runs `initdb` in a fresh
    /// temporary directory, starts `postgres` on a free loopback port and waits until it
    /// accepts connections.
    pub fn start() -> Result<PgCluster> {
        PgCluster::start_with(&[])
    }

    /// Starts the primary of a synchronous pair: a commit is acknowledged
    /// only once the standby made by [`PgCluster::start_standby`] has it, so
    /// promoting that standby after this server dies loses no acknowledged
    /// commit. Until a standby is attached, commits wait.
    pub fn start_primary() -> Result<PgCluster> {
        PgCluster::start_with(PRIMARY_SETTINGS)
    }

    fn start_with(extra_settings: &[&str]) -> Result<PgCluster> {
        let mut cluster = PgCluster::prepare(extra_settings)?;
        let run_as = run_as()?;
        cluster.initdb(run_as)?;
        cluster.launch(run_as)?;
        Ok(cluster)
    }

    /// Starts a streaming standby of this server (`pg_basebackup -R`) and
    /// waits until this server reports it as its synchronous standby. The
    /// standby accepts read-only sessions until [`PgCluster::promote`].
    pub fn start_standby(&self) -> Result<PgCluster> {
        let basebackup = self.bins.bindir.join("pg_basebackup");
        if !basebackup.is_file() {
            return Err(PgError::BinariesNotFound {
                searched: format!("pg_basebackup in {}", self.bins.bindir.display()),
            });
        }
        let mut standby = PgCluster::prepare(&[])?;
        let run_as = run_as()?;
        let mut cmd = standby.server_command(&basebackup, run_as);
        cmd.arg("-D")
            .arg(&standby.data_dir)
            .args(["-h", HOST, "-p", &self.port.to_string(), "-U", DB_USER])
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"]);
        let out = cmd
            .output()
            .map_err(PgError::io(format!("running {}", basebackup.display())))?;
        if !out.status.success() {
            return Err(PgError::StartFailed {
                reason: format!("pg_basebackup failed ({})", status_string(out.status)),
                log_tail: output_tail(&out, LOG_TAIL_LINES),
            });
        }
        standby.launch(run_as)?;
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let sync =
                self.query("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")?;
            if sync.trim() != "0" {
                return Ok(standby);
            }
            if Instant::now() >= deadline {
                return Err(PgError::StartTimeout {
                    timeout: SYNC_TIMEOUT,
                    log_tail: file_tail(&standby.log_path, LOG_TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Promotes this standby to a primary and returns once it accepts
    /// writes.
    pub fn promote(&self) -> Result<()> {
        let done = self.query("SELECT pg_promote(true, 60)")?;
        if done.trim() == "t" {
            Ok(())
        } else {
            Err(PgError::StartFailed {
                reason: format!("pg_promote answered {:?}", done.trim()),
                log_tail: file_tail(&self.log_path, LOG_TAIL_LINES),
            })
        }
    }

    /// Kills the server as a lost machine would: the postmaster is stopped
    /// (so it forks nothing more), every process of the server gets
    /// `SIGKILL`, and nothing gets to clean up or say goodbye to clients.
    /// The data directory stays until the `PgCluster` is dropped.
    pub fn kill_hard(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut child) = state.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: `pid` is our own unreaped child, so it cannot have been
            // recycled; its children are the server's processes.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            for backend in children_of(pid) {
                // SAFETY: a child of a stopped postmaster: it exists until
                // killed (a zombie at worst), so the pid is not recycled.
                unsafe { libc::kill(backend, libc::SIGKILL) };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A directory for a new server, owned by the server's OS user.
    fn prepare(extra_settings: &[&str]) -> Result<PgCluster> {
        let _ = remove_stale_dirs();
        let bins = ensure_binaries()?;
        let run_as = run_as()?;
        let base = base_dir();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(&base)
            .map_err(PgError::io(format!(
                "creating a temporary directory in {}",
                base.display()
            )))?;
        let dir = tmp.path().to_path_buf();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(PgError::io(format!(
                "chown {} to {SERVER_OS_USER}",
                dir.display()
            )))?;
        }

        let name = |s: &str| s.split('=').next().unwrap_or_default().to_string();
        let overridden: Vec<String> = extra_settings.iter().map(|s| name(s)).collect();
        let settings = SERVER_SETTINGS
            .iter()
            .filter(|s| !overridden.contains(&name(s)))
            .chain(extra_settings)
            .map(|s| s.to_string())
            .collect();
        // From here on, dropping the cluster cleans up whatever was created.
        Ok(PgCluster {
            port: 0,
            data_dir: dir.join("data"),
            log_path: dir.join("server.log"),
            dir,
            bins,
            server_pid: 0,
            settings,
            state: Mutex::new(State {
                child: None,
                tmp: Some(tmp),
            }),
        })
    }

    /// Runs one statement with `psql -At` and returns its output.
    pub fn query(&self, sql: &str) -> Result<String> {
        let out = self.run_psql(sql, &["-A", "-t"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The cluster shared by every test in this process, started on first use.
    ///
    /// It is never dropped; it is stopped and its directory removed when the process exits
    /// (an `atexit` hook, and the parent-death signal if the process is killed).
    /// If starting it failed, every call returns that failure.
    pub fn shared() -> Result<&'static PgCluster> {
        let started = SHARED.get_or_init(|| {
            let started = PgCluster::start().map_err(Arc::new);
            if started.is_ok() {
                // SAFETY: registering a plain `extern "C" fn()`; it never unwinds.
                unsafe { libc::atexit(stop_shared_at_exit) };
            }
            started
        });
        match started {
            Ok(cluster) => Ok(cluster),
            Err(e) => Err(PgError::SharedStartFailed(Arc::clone(e))),
        }
    }

    /// URL of the `postgres` database, e.g. `postgresql://postgres@127.0.0.1:5433/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// URL of database `dbname` on this server.
    pub fn url_for(&self, dbname: &str) -> String {
        format!("postgresql://{DB_USER}@{HOST}:{}/{dbname}", self.port)
    }

    /// TCP port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host the server listens on: `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// Database superuser name: `postgres` (no password; trust authentication).
    pub fn user(&self) -> &str {
        DB_USER
    }

    /// Directory holding the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log file (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Directory of the PostgreSQL binaries in use.
    pub fn bindir(&self) -> &Path {
        &self.bins.bindir
    }

    /// Process id of the postmaster.
    pub fn server_pid(&self) -> u32 {
        self.server_pid
    }

    /// Creates database `name` and returns its URL. Names are restricted to
    /// `[A-Za-z_][A-Za-z0-9_]{0,62}` so they need no quoting anywhere.
    pub fn create_database(&self, name: &str) -> Result<String> {
        if !valid_db_name(name) {
            return Err(PgError::InvalidDatabaseName(name.to_string()));
        }
        self.psql(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url_for(name))
    }

    /// Creates a database with a name unique within this process and returns its URL.
    pub fn fresh_database(&self) -> Result<String> {
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("test_{n}"))
    }

    fn psql(&self, sql: &str) -> Result<()> {
        self.run_psql(sql, &[]).map(drop)
    }

    fn run_psql(&self, sql: &str, flags: &[&str]) -> Result<std::process::Output> {
        let psql = self
            .bins
            .psql
            .as_ref()
            .ok_or_else(|| PgError::BinariesNotFound {
                searched: format!("psql in {} and on PATH", self.bins.bindir.display()),
            })?;
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                HOST,
                "-U",
                DB_USER,
            ])
            .args(flags)
            .args(["-d", "postgres", "-p", &self.port.to_string(), "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::null())
            .output()
            .map_err(PgError::io(format!("running {}", psql.display())))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(PgError::SqlFailed {
                sql: sql.to_string(),
                status: status_string(out.status),
                output: output_tail(&out, LOG_TAIL_LINES),
            })
        }
    }

    /// `program` (a PostgreSQL binary) run in this server's directory, as
    /// the server's OS user, in the C locale, without stdin.
    fn server_command(&self, program: &Path, run_as: Option<(u32, u32)>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self, run_as: Option<(u32, u32)>) -> Result<()> {
        let mut cmd = self.server_command(&self.bins.initdb, run_as);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", DB_USER, "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        let out = cmd.output().map_err(PgError::io(format!(
            "running {}",
            self.bins.initdb.display()
        )))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(PgError::InitdbFailed {
                status: status_string(out.status),
                output: output_tail(&out, 200),
            })
        }
    }

    fn launch(&mut self, run_as: Option<(u32, u32)>) -> Result<()> {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port()?;
            let log = File::create(&self.log_path)
                .map_err(PgError::io(format!("creating {}", self.log_path.display())))?;
            let log2 = log
                .try_clone()
                .map_err(PgError::io("duplicating the log file handle"))?;
            let mut cmd = Command::new(&self.bins.postgres);
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&self.dir);
            for setting in &self.settings {
                cmd.args(["-c", setting]);
            }
            cmd.current_dir(&self.dir)
                .env("LC_ALL", "C")
                .env_remove("PGDATA")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            if let Some((uid, gid)) = run_as {
                cmd.uid(uid).gid(gid);
            }
            let child = spawn_tied_to_process(cmd, libc::SIGQUIT).map_err(PgError::io(format!(
                "starting {}",
                self.bins.postgres.display()
            )))?;
            self.server_pid = child.id();
            self.port = port;
            let child = state.child.insert(child);

            match wait_ready(child, &self.data_dir, port, START_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(NotReady::TimedOut) => {
                    return Err(PgError::StartTimeout {
                        timeout: START_TIMEOUT,
                        log_tail: file_tail(&self.log_path, LOG_TAIL_LINES),
                    });
                }
                Err(NotReady::Io(e)) => {
                    return Err(PgError::io("waiting for the server to start")(e));
                }
                Err(NotReady::Exited(status)) => {
                    state.child = None;
                    let log_tail = file_tail(&self.log_path, LOG_TAIL_LINES);
                    let port_taken = log_tail.contains("could not bind")
                        || log_tail.contains("could not create any TCP/IP sockets");
                    if port_taken && attempt < PORT_ATTEMPTS {
                        continue; // Someone grabbed the port in between; pick another.
                    }
                    return Err(PgError::StartFailed {
                        reason: format!("server exited with {status} before accepting connections"),
                        log_tail,
                    });
                }
            }
        }
        Err(PgError::StartFailed {
            reason: format!("no free port after {PORT_ATTEMPTS} attempts"),
            log_tail: file_tail(&self.log_path, LOG_TAIL_LINES),
        })
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        shutdown(state, libc::SIGINT, Duration::from_secs(10));
    }
}

/// Stops the shared cluster at normal process exit (statics are never dropped).
extern "C" fn stop_shared_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let Some(Ok(cluster)) = SHARED.get() else {
            return;
        };
        let mut state = match cluster.state.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        shutdown(&mut state, libc::SIGQUIT, Duration::from_secs(5));
    });
}

/// Stops the server (`signal`, then `SIGQUIT`, then `SIGKILL`) and removes the directory.
fn shutdown(state: &mut State, signal: libc::c_int, grace: Duration) {
    if let Some(mut child) = state.child.take() {
        let escalation = [(signal, grace), (libc::SIGQUIT, Duration::from_secs(2))];
        let mut exited = false;
        for (sig, wait) in escalation {
            if signal_and_wait(&mut child, sig, wait) {
                exited = true;
                break;
            }
        }
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    if let Some(tmp) = state.tmp.take() {
        let _ = tmp.close();
    }
}

/// Sends `sig` unless the child already exited; true once it has exited within `wait`.
fn signal_and_wait(child: &mut Child, sig: libc::c_int, wait: Duration) -> bool {
    match child.try_wait() {
        Ok(Some(_)) => return true,
        Ok(None) => {}
        Err(_) => return false,
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: `pid` is our own unreaped child, so it cannot have been recycled.
        unsafe { libc::kill(pid, sig) };
    }
    let deadline = Instant::now() + wait;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return false,
        }
    }
}

enum NotReady {
    Exited(ExitStatus),
    TimedOut,
    Io(io::Error),
}

/// Waits until the postmaster reports "ready" in `postmaster.pid` and accepts TCP
/// connections on `port`.
fn wait_ready(
    child: &mut Child,
    data_dir: &Path,
    port: u16,
    timeout: Duration,
) -> std::result::Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    let pid_file = data_dir.join("postmaster.pid");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(status) = child.try_wait().map_err(NotReady::Io)? {
            return Err(NotReady::Exited(status));
        }
        if postmaster_ready(&pid_file, port)
            && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotReady::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `postmaster.pid` line 4 is the port and line 8 the status (PostgreSQL 10
/// and later): `ready`, or `standby` for a standby accepting read-only
/// sessions.
fn postmaster_ready(pid_file: &Path, port: u16) -> bool {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines.get(3) == Some(&port.to_string().as_str())
        && matches!(lines.get(7), Some(&"ready") | Some(&"standby"))
}

/// The OS user the server runs as: `postgres` when the tests run as root
/// (PostgreSQL refuses root), else this user.
fn run_as() -> Result<Option<(u32, u32)>> {
    if !is_root() {
        return Ok(None);
    }
    lookup_user(SERVER_OS_USER)
        .map(Some)
        .ok_or_else(|| PgError::UserNotFound {
            user: SERVER_OS_USER.to_string(),
        })
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(PgError::io("binding 127.0.0.1:0 to find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(PgError::io("reading the bound port"))?
        .port();
    Ok(port)
}

fn base_dir() -> PathBuf {
    std::env::var_os(TMPDIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn valid_db_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

/// Removes leftover `kvlite-pg-<pid>-*` directories of processes that no longer exist and
/// whose server is no longer running. Returns how many were removed. Called by
/// [`PgCluster::start`]; errors on individual directories are ignored.
pub fn remove_stale_dirs() -> io::Result<usize> {
    let own_pid = std::process::id();
    let mut removed = 0;
    for entry in fs::read_dir(base_dir())? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own_pid || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if process_alive(pid as i32) || server_alive(&entry.path().join("data")) {
            continue;
        }
        if fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether the postmaster recorded in `data_dir/postmaster.pid` is still running.
fn server_alive(data_dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    text.lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .is_some_and(process_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_names() {
        assert!(valid_db_name("abc_1"));
        assert!(valid_db_name("_x"));
        assert!(!valid_db_name(""));
        assert!(!valid_db_name("1abc"));
        assert!(!valid_db_name("a-b"));
        assert!(!valid_db_name("a\"b"));
        assert!(!valid_db_name(&"a".repeat(64)));
    }
}
