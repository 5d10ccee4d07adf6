//! Reaching the engine: the global options, the transport built from them,
//! and SQLite connections on the kvlite VFS over that transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kvlite_api::{Error, Transport};
use kvlite_client::{RemoteOptions, RemoteTransport};
use kvlite_engine::{Engine, EngineConfig, LocalTransport};
use kvlite_kv::{Kv, KvError};
use kvlite_vfs::{V1Vfs, Vfs, VfsConfig};
use prometheus_client::registry::Registry;
use rusqlite::Connection;

/// Options every subcommand takes.
#[derive(clap::Args, Debug)]
pub struct GlobalOpts {
    /// Data directory of the embedded store (created by `sql` and `import`
    /// if absent) [default: ./kvlite-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Keep data in PostgreSQL instead (a postgresql:// URL); the engine
    /// runs in this process. `serve` and `move` take it several times: one
    /// deployment over several clusters, the first holding the placement
    /// records
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "KVLITE_POSTGRES",
        conflicts_with = "server"
    )]
    pub postgres: Vec<String>,
    /// Use a kvlite server (ws://host:port) instead of a local store
    #[arg(long, global = true, value_name = "URL", env = "KVLITE_SERVER")]
    pub server: Option<String>,
    /// Bearer token for --server
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "KVLITE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// How long to wait for a data directory another process holds before
    /// giving up (like SQLite's busy_timeout): e.g. 5s, 500ms, 0
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub busy_timeout: Duration,
    /// How log lines on stderr look: text for people, json (one object per
    /// line) for log shippers
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The form of log lines on stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Which layout a command works on.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// The legacy layout: SQLite files as raw 4 KiB chunks
    V1,
    /// LTX deltas, page index and shards (what kvlite writes)
    #[default]
    V2,
}

/// SQLite connections on one of the layouts.
pub enum Sqlite {
    V2(Vfs),
    V1(V1Vfs),
}

impl Sqlite {
    /// Open database `db` (created if absent).
    pub fn open(&self, db: &str) -> Result<Connection> {
        match self {
            Sqlite::V2(vfs) => open(vfs, db),
            Sqlite::V1(vfs) => vfs
                .open(db)
                .map_err(|e| anyhow!("cannot open v1 database {db:?}: {e}")),
        }
    }

    /// Open database `db` read-only: no takeover, so its writer goes on
    /// undisturbed; the database must exist.
    pub fn open_readonly(&self, db: &str) -> Result<Connection> {
        match self {
            Sqlite::V2(vfs) => vfs
                .open_readonly(db)
                .map_err(|e| anyhow!("cannot open database {db:?} read-only: {e}")),
            Sqlite::V1(_) => bail!("--read-only works on the v2 layout only"),
        }
    }

    /// Open database `db` read-only as it was at `point`.
    pub fn open_at(&self, db: &str, point: kvlite_api::ReadPoint) -> Result<Connection> {
        match self {
            Sqlite::V2(vfs) => vfs.open_at(db, point).map_err(|e| {
                let why = vfs.last_error(db).unwrap_or_else(|| e.to_string());
                anyhow!("cannot open database {db:?} in the past: {why}")
            }),
            Sqlite::V1(_) => bail!("--at works on the v2 layout only"),
        }
    }

    /// A SQLite error on `db`, with the VFS's detailed reason when it has one.
    pub fn error(&self, db: &str, e: rusqlite::Error) -> anyhow::Error {
        match self {
            Sqlite::V2(vfs) => sql_error(vfs, db, e),
            Sqlite::V1(vfs) => anyhow!("{}", vfs.sqlite_error(db, e)),
        }
    }
}

impl GlobalOpts {
    /// One store per command: naming two is a mistake to report, not to
    /// resolve silently (clap's own conflicts do not reach global options
    /// given on both sides of the subcommand).
    pub fn check_conflicts(&self) -> Result<()> {
        let named: Vec<&str> = [
            (self.data.is_some(), "--data"),
            (!self.postgres.is_empty(), "--postgres (or KVLITE_POSTGRES)"),
            (self.server.is_some(), "--server (or KVLITE_SERVER)"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if named.len() > 1 {
            bail!(
                "{} cannot be used together: choose one store",
                named.join(" and ")
            );
        }
        Ok(())
    }

    /// The embedded store's directory: `--data`, or `./kvlite-data`.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| PathBuf::from("./kvlite-data"))
    }
}

/// The PostgreSQL table kvlite keeps its key space in.
pub const POSTGRES_TABLE: &str = "kvlite";

/// Whether a command may create the store it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Writing commands: create the data directory if absent.
    Create,
    /// Administrative commands: the data must already exist.
    Existing,
    /// Reading commands (`ls`, `inspect`, `dump`, `export`, `doctor`): the
    /// embedded store is opened read-only, so its file is never written and
    /// a read-only directory or a backup copy works. A store that needs the
    /// repair a crash leaves behind is opened writable once, when allowed.
    Read,
}

/// How this process reaches an engine.
pub struct Store {
    pub transport: Arc<dyn Transport>,
    /// The engine itself when it runs in this process (the embedded store):
    /// then nobody else compacts, so the CLI does (see [`Store::compact`]).
    /// A server compacts on its own; a remote store leaves this `None`.
    local: Option<Arc<Engine>>,
}

impl Store {
    /// Whether this store was opened read-only (a data directory this
    /// process may only read, or a reading command's open).
    pub fn is_read_only(&self) -> bool {
        self.local.as_ref().is_some_and(|e| e.kv().is_read_only())
    }
}

/// The one place that turns global options into a way of reaching an engine.
pub fn open_store(opts: &GlobalOpts, access: Access) -> Result<Store> {
    opts.check_conflicts()?;
    if let Some(url) = &opts.server {
        let transport =
            RemoteTransport::connect(url, opts.token.as_deref(), RemoteOptions::default())
                .map_err(|e| anyhow!("cannot use server {url}: {e}"))?;
        return Ok(Store {
            transport: Arc::new(transport),
            local: None,
        });
    }
    let engine = Engine::new(
        open_kv_with(opts, access, COMMAND_STORE_CACHE)?,
        EngineConfig {
            blob_cache_bytes: COMMAND_BLOB_CACHE,
            ..EngineConfig::default()
        },
        &mut Registry::default(),
    );
    Ok(Store {
        transport: Arc::new(LocalTransport::new(engine.clone())),
        local: Some(engine),
    })
}

/// Cache sizes of a one-shot command's store, engine and VFS (a server keeps
/// the larger defaults): with them an import or export of any size stays
/// far under 256 MiB of memory.
const COMMAND_STORE_CACHE: usize = 64 << 20;
const COMMAND_BLOB_CACHE: usize = 32 << 20;
const COMMAND_VFS_CACHE: usize = 32 << 20;
const COMMAND_SQLITE_CACHE_KIB: u32 = 8 << 10;

/// The KV store the global options name: PostgreSQL or the embedded store
/// (with the server's cache size).
pub fn open_kv(opts: &GlobalOpts, access: Access) -> Result<Kv> {
    open_kv_with(
        opts,
        access,
        kvlite_kv::embedded::EmbeddedOptions::default().cache_bytes,
    )
}

/// [`open_kv`] with an embedded store cache of `cache_bytes`.
fn open_kv_with(opts: &GlobalOpts, access: Access, cache_bytes: usize) -> Result<Kv> {
    let options = kvlite_kv::embedded::EmbeddedOptions { cache_bytes };
    opts.check_conflicts()?;
    if opts.postgres.len() > 1 {
        bail!(
            "several --postgres clusters are one deployment: `kvlite serve` serves it \
             (use --server), and `kvlite move` moves databases between its clusters"
        );
    }
    if let Some(url) = opts.postgres.first() {
        return connect_postgres(url);
    }
    let dir = &opts.data_dir();
    if access != Access::Create && !dir.exists() {
        bail!(
            "data directory {} does not exist (choose another with --data DIR)",
            dir.display()
        );
    }
    let deadline = Instant::now() + opts.busy_timeout;
    loop {
        let opened = match access {
            Access::Read => match Kv::open_embedded_read_only_with(dir, options.clone()) {
                Err(KvError::NeedsRepair(path)) => Kv::open_embedded_with(dir, options.clone())
                    .map_err(|e| match e {
                        KvError::ReadOnly(_) => KvError::NeedsRepair(path),
                        e => e,
                    }),
                opened => opened,
            },
            // A directory this process may only read still serves reads;
            // a write then fails naming the read-only store.
            Access::Create | Access::Existing => match Kv::open_embedded_with(dir, options.clone())
            {
                Err(KvError::ReadOnly(_)) => Kv::open_embedded_read_only_with(dir, options.clone()),
                opened => opened,
            },
        };
        match opened {
            Ok(kv) => {
                if !kv.is_read_only() {
                    note_holder(dir, None);
                }
                return Ok(kv);
            }
            Err(KvError::InUse(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(KvError::InUse(_)) => bail!("{}", in_use(dir, opts.busy_timeout)),
            Err(e @ (KvError::NeedsRepair(_) | KvError::NotAStore(_) | KvError::ReadOnly(_))) => {
                bail!("cannot open data directory {}: {e}", dir.display())
            }
            Err(e) => {
                return Err(anyhow!(e))
                    .with_context(|| format!("cannot open data directory {}", dir.display()));
            }
        }
    }
}

/// `--busy-timeout`: a humantime duration (`5s`, `500ms`) or seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 5s, 500ms)"))
}

/// Beside the store, who holds it: this process's id, command and, for a
/// server, where to reach it. Advisory: only read when the store is in use.
const HOLDER_FILE: &str = "kvlite.holder";

/// Record this process as the data directory's holder (best effort: a
/// read-only directory just goes without).
pub fn note_holder(dir: &Path, serving: Option<&str>) {
    let command: Vec<String> = std::env::args().take(3).collect();
    let text = format!(
        "{}\n{}\n{}\n",
        std::process::id(),
        command.join(" "),
        serving.unwrap_or("")
    );
    let _ = std::fs::write(dir.join(HOLDER_FILE), text);
}

/// Why a data directory cannot be opened now, naming the process that holds
/// it when it is known (and how to reach it, when it is a server).
fn in_use(dir: &Path, waited: Duration) -> String {
    let waited = humantime::format_duration(Duration::from_millis(waited.as_millis() as u64));
    let text = std::fs::read_to_string(dir.join(HOLDER_FILE)).unwrap_or_default();
    let mut lines = text.lines();
    let (pid, command, serving) = (lines.next(), lines.next(), lines.next());
    let alive = pid.is_some_and(|p| Path::new("/proc").join(p).exists());
    match (pid, command, serving) {
        (Some(pid), _, Some(url)) if alive && !url.is_empty() => format!(
            "data directory {} is in use by `kvlite serve` (process {pid}); reach it with --server {url}",
            dir.display()
        ),
        (Some(pid), Some(command), _) if alive => format!(
            "data directory {} is in use by process {pid} ({command}); waited {waited} (--busy-timeout)",
            dir.display()
        ),
        _ => format!(
            "data directory {} is in use by another process; waited {waited} (--busy-timeout; is `kvlite serve` running? use --server)",
            dir.display()
        ),
    }
}

impl Store {
    /// The engine, when it runs in this process; `what` names the command
    /// that needs it, for the error a server store gets.
    pub fn local_engine(&self, what: &str) -> Result<&Arc<Engine>> {
        self.local.as_ref().ok_or_else(|| {
            anyhow!(
                "{what} works on a store this process opens (--data or --postgres), not through --server"
            )
        })
    }

    /// SQLite connections on `layout`: the kvlite VFS, or the v1 file type
    /// directly on the store's v1 data (local stores only).
    pub fn sqlite(&self, layout: Layout) -> Result<Sqlite> {
        match layout {
            Layout::V2 => Ok(Sqlite::V2(self.vfs()?)),
            Layout::V1 => {
                let engine = self.local_engine("--layout v1")?;
                V1Vfs::register("kvlite-v1", Arc::new(engine.v1_files()))
                    .map(Sqlite::V1)
                    .map_err(|e| anyhow!("cannot set up the v1 VFS: {e}"))
            }
        }
    }

    /// Where database `db` is stored: "v1", "migrating" or "v2".
    pub fn layout_of(&self, db: &str) -> Result<&'static str> {
        if let Some(engine) = &self.local {
            return match engine.layout(db) {
                Ok(Some(l)) => Ok(l.as_str()),
                Ok(None) => Err(client_error(db, Error::NotFound(db.to_string()))),
                Err(e) => Err(client_error(db, e)),
            };
        }
        // A server lists v1 databases too; only v2 ones have a state.
        match self.transport.stat(db) {
            Ok(s) if s.origin == kvlite_api::Origin::MigratingFromV1 => Ok("migrating"),
            Ok(_) => Ok("v2"),
            Err(Error::NotFound(_)) => Ok("v1"),
            Err(e) => Err(client_error(db, e)),
        }
    }

    /// Register the kvlite VFS on this store's transport. Once per process.
    pub fn vfs(&self) -> Result<Vfs> {
        let config = VfsConfig {
            cache_bytes: COMMAND_VFS_CACHE,
            sqlite_cache_kib: COMMAND_SQLITE_CACHE_KIB,
            ..VfsConfig::default()
        };
        Vfs::register("kvlite", self.transport.clone(), config)
            .map_err(|e| anyhow!("cannot set up the kvlite VFS: {e}"))
    }

    /// Whether database `db` exists, and its size in pages if it does.
    pub fn size_if_exists(&self, db: &str) -> Result<Option<u32>> {
        match self.transport.stat(db) {
            Ok(stat) => Ok(Some(stat.size_pages)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(client_error(db, e)),
        }
    }

    /// Fold `db`'s deltas into shards now, if the engine runs in this
    /// process. Reads of a database written by one large commit (an import)
    /// are far faster once folded.
    pub fn compact(&self, db: &str) -> Result<()> {
        if let Some(engine) = &self.local {
            let report = engine
                .compact(db)
                .map_err(|e| anyhow!("cannot compact database {db:?}: {e}"))?;
            tracing::debug!(db, ?report, "compacted");
        }
        Ok(())
    }

    /// [`Store::compact`] when `db`'s backlog has reached the engine's
    /// compaction thresholds (what a server's background compactor uses).
    pub fn compact_if_due(&self, db: &str) -> Result<()> {
        let Some(engine) = &self.local else {
            return Ok(());
        };
        let stat = match engine.stat(db) {
            Ok(stat) => stat,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => bail!("cannot read the state of database {db:?}: {e}"),
        };
        if engine.config().compaction.is_due(
            stat.head_txid.saturating_sub(stat.materialized_txid),
            stat.page_index_entries,
        ) {
            self.compact(db)?;
        }
        Ok(())
    }
}

/// Open database `db` on the VFS (creating it if absent).
pub fn open(vfs: &Vfs, db: &str) -> Result<Connection> {
    vfs.open(db)
        .map_err(|e| anyhow!("cannot open database {db:?}: {e}"))
}

/// Open existing database `db` on the VFS read-only: no takeover, so its
/// writer goes on undisturbed.
pub fn open_readonly(vfs: &Vfs, db: &str) -> Result<Connection> {
    vfs.open_readonly(db)
        .map_err(|e| anyhow!("cannot open database {db:?} read-only: {e}"))
}

/// A SQLite error on `db`, with the VFS's detailed reason when it has one.
pub fn sql_error(vfs: &Vfs, db: &str, e: rusqlite::Error) -> anyhow::Error {
    // The message already contains the source's text: keep it out of the chain.
    anyhow!("{}", vfs.sqlite_error(db, e))
}

/// A transport error about database `db`, worded for people.
pub fn client_error(db: &str, e: Error) -> anyhow::Error {
    match e {
        Error::NotFound(_) => anyhow!("database {db:?} not found"),
        // Errors that name the database already say which one.
        other if other.to_string().contains(&format!("{db:?}")) => anyhow!("{other}"),
        other => anyhow!("database {db:?}: {other}"),
    }
}

/// A PostgreSQL store, its error said plainly.
fn connect_postgres(url: &str) -> Result<Kv> {
    Kv::connect_postgres(url, POSTGRES_TABLE).map_err(|e| match e {
        // The cause alone (connection refused, no such host, ...).
        KvError::Unavailable(reason) => anyhow!("cannot use PostgreSQL: {reason}"),
        e => anyhow!("cannot use PostgreSQL: {e}"),
    })
}

/// Every cluster of a multi-cluster deployment (`--postgres` given several
/// times), in order: cluster 0 keeps the placement records.
pub fn open_clusters(opts: &GlobalOpts) -> Result<Vec<Kv>> {
    opts.check_conflicts()?;
    opts.postgres
        .iter()
        .enumerate()
        .map(|(i, url)| connect_postgres(url).with_context(|| format!("cluster {i}")))
        .collect()
}
