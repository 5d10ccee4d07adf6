//! A SQLite VFS whose database files live in a kvlite storage engine.
//!
//! Each transaction becomes exactly one engine commit, by one of two paths:
//! - the batch path: the database file reports `SQLITE_IOCAP_BATCH_ATOMIC`,
//!   SQLite brackets the transaction's writes with BEGIN/COMMIT_ATOMIC_WRITE
//!   and the VFS commits them at COMMIT_ATOMIC_WRITE;
//! - the sync path (SQLite does not batch the first transaction on an empty
//!   database, a transaction that spilled its page cache, or a multi-database
//!   commit): writes are buffered and served to reads until the database
//!   file's sync (`SQLITE_FCNTL_SYNC`, sent even with `synchronous=OFF`),
//!   then sent as one commit. A truncation SQLite performs after the commit
//!   (VACUUM, auto-vacuum) is committed at `SQLITE_FCNTL_COMMIT_PHASETWO`.
//!
//! Journals and temporary files live in memory: the engine never holds a
//! partial transaction, so there is never a hot journal to recover. WAL mode
//! is refused. The connection owns its generation, head txid and size; a
//! fence or an ambiguous commit failure poisons it for writing.

mod cache;
mod ffi;
mod file;
mod memfile;
mod metrics;
mod readahead;
#[cfg(feature = "rusqlite")]
mod selftest;
#[cfg(feature = "rusqlite")]
pub mod sql_text;
mod sys;
mod v1;

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex, PoisonError};

use kvlite_api::{Error, Transport};
#[cfg(feature = "rusqlite")]
use rusqlite::{Connection, OpenFlags};

pub use metrics::{MetricsSnapshot, VfsMetrics};
pub use v1::V1Vfs;

/// Tuning of one registered VFS.
#[derive(Debug, Clone)]
pub struct VfsConfig {
    /// Bytes of committed pages cached per open database. A scan holds up
    /// to half as much again in windows fetched ahead.
    pub cache_bytes: usize,
    /// Largest read-ahead, in pages, for one request.
    pub max_readahead_pages: u32,
    /// SQLite's own page cache per connection, in KiB. Transactions larger
    /// than this spill and take the sync path (still one commit).
    pub sqlite_cache_kib: u32,
    /// Pages `1..=preload_pages` come with the open's answer (page 1 always
    /// does): the roots of the tables and indexes created first sit there,
    /// so a first query on a cold open skips a round trip for its root.
    pub preload_pages: u32,
}

impl Default for VfsConfig {
    fn default() -> Self {
        VfsConfig {
            cache_bytes: 64 << 20,
            max_readahead_pages: 1024,
            sqlite_cache_kib: 32 << 10,
            preload_pages: 8,
        }
    }
}

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    #[error(
        "this SQLite was built without SQLITE_ENABLE_BATCH_ATOMIC_WRITE; kvlite needs it (see .cargo/config.toml)"
    )]
    NoBatchAtomicWrite,
    #[error("batch atomic writes are not in effect: {0}")]
    BatchSelfTest(String),
    #[error("a VFS named {0:?} is already registered")]
    AlreadyRegistered(String),
    #[error("invalid database name {0:?}: names are 1..=512 bytes, without NUL, not \":memory:\"")]
    InvalidName(String),
    #[cfg(feature = "rusqlite")]
    #[error("{message}")]
    Sqlite {
        message: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Client(#[from] Error),
}

#[cfg(feature = "rusqlite")]
impl VfsError {
    /// A SQLite error with the VFS's detailed reason, if it has one (SQLite
    /// itself carries only a result code back).
    pub(crate) fn sqlite(e: rusqlite::Error, reason: Option<String>) -> Self {
        let message = match reason {
            Some(reason) => format!("{e} ({reason})"),
            None => e.to_string(),
        };
        VfsError::Sqlite { message, source: e }
    }
}

/// The detailed reason kept for database `db`, in either file type's table.
pub(crate) fn last_error_in(errors: &Mutex<HashMap<String, String>>, db: &str) -> Option<String> {
    errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(db)
        .cloned()
}

/// Picks the engine a database opened by SQLite lives on, from its name and
/// the URI parameters of the open (`file:app?vfs=kvlite&server=...`): how a
/// VFS registered by the loadable extension serves databases in many places.
pub trait Router: Send + Sync {
    /// The transport for database `db`; `param` reads a URI parameter. An
    /// error fails the open, with the message as its detailed reason.
    fn route(
        &self,
        db: &str,
        param: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn Transport>, String>;
}

/// Where the VFS's databases live.
pub(crate) enum Source {
    Fixed(Arc<dyn Transport>),
    Routed(Arc<dyn Router>),
}

/// State shared by the VFS and every file it opens.
pub(crate) struct Shared {
    pub source: Source,
    pub config: VfsConfig,
    pub metrics: Arc<VfsMetrics>,
    /// Named in-memory files (journals), so xAccess and xDelete see them.
    pub memfiles: memfile::Registry,
    /// Detailed reason for the last error per database, since SQLite only
    /// carries a result code back to the application.
    pub last_errors: Mutex<HashMap<String, String>>,
}

impl Shared {
    pub fn set_last_error(&self, db: &str, message: String) {
        tracing::debug!(db, %message, "kvlite vfs error");
        self.last_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(db.to_string(), message);
    }
}

/// A registered kvlite VFS.
/// Dropping the last clone unregisters the VFS and releases its transport
/// (connections still open keep working until they close).
#[derive(Clone)]
pub struct Vfs {
    name: String,
    shared: Arc<Shared>,
    _registration: Arc<ffi::Registration>,
}

impl Vfs {
    /// Register a VFS called `name` that stores databases through `transport`.
    pub fn register(
        name: &str,
        transport: Arc<dyn Transport>,
        config: VfsConfig,
    ) -> Result<Vfs, VfsError> {
        if !batch_atomic_compiled() {
            return Err(VfsError::NoBatchAtomicWrite);
        }
        Self::register_source(name, Source::Fixed(transport), config)
    }

    /// Register a VFS whose databases live wherever `router` says, for a
    /// SQLite this crate does not control (the loadable extension's host):
    /// without batch atomic writes every transaction takes the sync path,
    /// still one engine commit.
    pub fn register_routed(
        name: &str,
        router: Arc<dyn Router>,
        config: VfsConfig,
    ) -> Result<Vfs, VfsError> {
        Self::register_source(name, Source::Routed(router), config)
    }

    fn register_source(name: &str, source: Source, config: VfsConfig) -> Result<Vfs, VfsError> {
        let shared = Arc::new(Shared {
            source,
            config,
            metrics: Arc::new(VfsMetrics::default()),
            memfiles: Default::default(),
            last_errors: Mutex::new(HashMap::new()),
        });
        let cname =
            CString::new(name).map_err(|_| VfsError::AlreadyRegistered(name.to_string()))?;
        let registration = ffi::register(cname, shared.clone())
            .map_err(|()| VfsError::AlreadyRegistered(name.to_string()))?;
        Ok(Vfs {
            name: name.to_string(),
            shared,
            _registration: Arc::new(registration),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The transport of a VFS registered with one (not a routed one).
    pub fn transport(&self) -> Option<&Arc<dyn Transport>> {
        match &self.shared.source {
            Source::Fixed(t) => Some(t),
            Source::Routed(_) => None,
        }
    }

    /// Counters of this VFS (all its files).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    pub fn metrics_handle(&self) -> Arc<VfsMetrics> {
        self.shared.metrics.clone()
    }

    /// The detailed reason behind the last error on database `db`, if any.
    pub fn last_error(&self, db: &str) -> Option<String> {
        last_error_in(&self.shared.last_errors, db)
    }

    #[cfg(feature = "rusqlite")]
    /// Open database `db` (created if absent) with the settings kvlite
    /// needs: 4 KiB pages, an in-memory rollback journal.
    /// Opening takes the database over: an earlier writer is fenced out.
    pub fn open(&self, db: &str) -> Result<Connection, VfsError> {
        check_name(db)?;
        if let Err(reason) = batch_self_test() {
            return Err(VfsError::BatchSelfTest(reason.clone()));
        }
        self.open_unchecked(db)
    }

    #[cfg(feature = "rusqlite")]
    /// Open database `db` read-only: no takeover, so its writer is never
    /// fenced. Each read transaction sees the newest commit as of its start
    /// and keeps seeing exactly that commit however long it runs; the
    /// database must exist.
    pub fn open_readonly(&self, db: &str) -> Result<Connection, VfsError> {
        check_name(db)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags_and_vfs(db, flags, self.name.as_str())
            .map_err(|e| self.sqlite_error(db, e))?;
        // Normal locking: SQLite takes a shared lock per read transaction,
        // which is where a reader moves to the newest commit.
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{};",
            self.shared.config.sqlite_cache_kib
        ))
        .map_err(|e| self.sqlite_error(db, e))?;
        Ok(conn)
    }

    #[cfg(feature = "rusqlite")]
    /// Open database `db` read-only as it was at `point` (a commit, or the
    /// newest commit at or before a time): every read transaction sees
    /// exactly that state, however long the connection lives. Takes nothing
    /// over; the point must be inside what the database keeps.
    pub fn open_at(&self, db: &str, point: kvlite_api::ReadPoint) -> Result<Connection, VfsError> {
        check_name(db)?;
        let uri = format!("file:{}?at={}", uri_path(db), point_param(point));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags_and_vfs(&uri, flags, self.name.as_str())
            .map_err(|e| self.sqlite_error(db, e))?;
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{};",
            self.shared.config.sqlite_cache_kib
        ))
        .map_err(|e| self.sqlite_error(db, e))?;
        Ok(conn)
    }

    #[cfg(feature = "rusqlite")]
    fn open_unchecked(&self, db: &str) -> Result<Connection, VfsError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags_and_vfs(db, flags, self.name.as_str())
            .map_err(|e| self.sqlite_error(db, e))?;
        // Normal locking: SQLite takes a shared lock at each transaction's
        // start, where the file learns (without a round trip) whether
        // another writer took the database over, before SQLite answers
        // anything from its page cache. (The cache stays: only this
        // connection changes the file's change counter.)
        let setup = format!(
            "PRAGMA page_size = 4096;
             PRAGMA cache_size = -{};",
            self.shared.config.sqlite_cache_kib
        );
        conn.execute_batch(&setup)
            .map_err(|e| self.sqlite_error(db, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = MEMORY", [], |r| r.get(0))
            .map_err(|e| self.sqlite_error(db, e))?;
        if !mode.eq_ignore_ascii_case("memory") {
            return Err(VfsError::BatchSelfTest(format!(
                "journal_mode is {mode}, not memory"
            )));
        }
        Ok(conn)
    }

    #[cfg(feature = "rusqlite")]
    /// Wrap a SQLite error with the VFS's detailed reason, if it has one.
    pub fn sqlite_error(&self, db: &str, e: rusqlite::Error) -> VfsError {
        VfsError::sqlite(e, self.last_error(db))
    }
}

/// A database name as the path of a `file:` URI: every byte but the
/// unreserved ones percent-encoded (SQLite decodes them back).
#[cfg(feature = "rusqlite")]
fn uri_path(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `at=` URI parameter naming a point: `txid:N` or `ms:N`.
pub fn point_param(point: kvlite_api::ReadPoint) -> String {
    match point {
        kvlite_api::ReadPoint::Txid(t) => format!("txid:{t}"),
        kvlite_api::ReadPoint::TimeMs(ms) => format!("ms:{ms}"),
    }
}

/// Read an `at=` URI parameter: `txid:N` (or a bare `N`) names a commit,
/// `ms:N` a time in milliseconds since the epoch.
pub fn parse_point(value: &str) -> Result<kvlite_api::ReadPoint, String> {
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("at={value:?}: expected txid:N, ms:N or a commit number"))
    };
    match value.split_once(':') {
        Some(("txid", n)) => Ok(kvlite_api::ReadPoint::Txid(number(n)?)),
        Some(("ms", n)) => Ok(kvlite_api::ReadPoint::TimeMs(number(n)?)),
        Some(_) => Err(format!(
            "at={value:?}: expected txid:N, ms:N or a commit number"
        )),
        None => Ok(kvlite_api::ReadPoint::Txid(number(value)?)),
    }
}

#[cfg(feature = "rusqlite")]
/// A name SQLite would take for something else (an in-memory database, a
/// URI) or that no database may have.
fn check_name(db: &str) -> Result<(), VfsError> {
    if db.is_empty()
        || db.len() > 512
        || db.contains('\0')
        || db == ":memory:"
        || db.starts_with("file:")
    {
        return Err(VfsError::InvalidName(db.to_string()));
    }
    Ok(())
}

#[cfg(feature = "rusqlite")]
/// Prove, once per process, that SQLite commits through the batch window:
/// two tiny transactions on a scratch database kept in this process's
/// memory (the first on an empty database never batches; the second must).
fn batch_self_test() -> &'static Result<(), String> {
    static RESULT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    // The scratch VFS and its pages are dropped when the test ends.
    RESULT.get_or_init(|| {
        let transport = Arc::new(selftest::ScratchTransport::default());
        let name = format!("kvlite-self-test-{}", std::process::id());
        let vfs =
            Vfs::register(&name, transport, VfsConfig::default()).map_err(|e| e.to_string())?;
        let conn = vfs.open_unchecked("self-test").map_err(|e| e.to_string())?;
        conn.execute_batch("CREATE TABLE t(x)")
            .map_err(|e| e.to_string())?;
        let before = vfs.metrics().batch_commits;
        conn.execute_batch("INSERT INTO t VALUES (1)")
            .map_err(|e| e.to_string())?;
        if vfs.metrics().batch_commits <= before {
            return Err(
                "a small transaction was not committed through BEGIN/COMMIT_ATOMIC_WRITE".into(),
            );
        }
        Ok(())
    })
}

/// Whether the linked SQLite was compiled with batch atomic writes.
pub fn batch_atomic_compiled() -> bool {
    let opt = c"ENABLE_BATCH_ATOMIC_WRITE";
    // SAFETY: a NUL-terminated static string; the function only reads it.
    unsafe { libsqlite3_sys::sqlite3_compileoption_used(opt.as_ptr()) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlite_api::ReadPoint;

    #[test]
    fn points_read_back_from_their_uri_parameter() {
        for p in [ReadPoint::Txid(7), ReadPoint::TimeMs(1_796_000_000_000)] {
            assert_eq!(parse_point(&point_param(p)), Ok(p));
        }
        assert_eq!(parse_point("42"), Ok(ReadPoint::Txid(42)));
        for bad in ["", "x", "ms:", "txid:-1", "when:3", "ms:1.5"] {
            assert!(parse_point(bad).is_err(), "{bad:?}");
        }
    }
}
