//! The v1 file type: SQLite running directly on the legacy v1 layout's
//! files ([`kvlite_api::V1Files`]). Reads and writes map to chunk reads and
//! writes, one store transaction per call; the rollback journal and the WAL
//! are real files in the store, with SQLite's ordinary locking (between the
//! connections of this process) and journal semantics, so a writer killed
//! mid-transaction leaves a hot journal — or WAL frames — behind, as v1 did.
//!
//! It exists to keep serving v1 databases that have not migrated, to make
//! genuine v1 data in tests, to let the engine's migration recover a v1
//! database with SQLite itself (over an in-memory overlay), and to show in
//! benchmarks what the v2 layout gains.

mod ffi;
pub(crate) mod locks;

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use kvlite_api::{V1File, V1Files};
#[cfg(feature = "rusqlite")]
use rusqlite::{Connection, OpenFlags};

use crate::memfile;
use crate::{VfsError, last_error_in};

/// Locks and WAL index of one database, shared by this process's
/// connections to it; dropped with the last of them.
#[derive(Default)]
pub(crate) struct DbShared {
    pub file_lock: Mutex<locks::FileLock>,
    pub shm: Mutex<locks::Shm>,
}

pub(crate) struct V1Shared {
    pub files: Arc<dyn V1Files>,
    pub memfiles: memfile::Registry,
    /// Only databases with an open connection have an entry.
    pub dbs: Mutex<HashMap<String, Weak<DbShared>>>,
    pub last_errors: Mutex<HashMap<String, String>>,
    pub next_id: AtomicU64,
}

impl V1Shared {
    pub fn set_last_error(&self, db: &str, message: String) {
        tracing::debug!(db, %message, "kvlite v1 vfs error");
        self.last_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(db.to_string(), message);
    }

    pub fn db_shared(&self, db: &str) -> Arc<DbShared> {
        let mut dbs = self.dbs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = dbs.get(db).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(DbShared::default());
        dbs.insert(db.to_string(), Arc::downgrade(&s));
        s
    }

    /// Forget `db`'s entry once no connection holds it.
    pub fn release(&self, db: &str, shared: Arc<DbShared>) {
        let mut dbs = self.dbs.lock().unwrap_or_else(PoisonError::into_inner);
        drop(shared);
        if dbs.get(db).is_some_and(|w| w.strong_count() == 0) {
            dbs.remove(db);
        }
    }
}

/// Which v1 file a SQLite file name names: `db`, `db-journal`, `db-wal`.
pub(crate) fn parse_name(name: &str) -> (&str, V1File) {
    for file in [V1File::Journal, V1File::Wal] {
        if let Some(db) = name.strip_suffix(file.suffix())
            && !db.is_empty()
        {
            return (db, file);
        }
    }
    (name, V1File::Main)
}

/// A registered v1 VFS. Dropping the last clone unregisters it.
#[derive(Clone)]
pub struct V1Vfs {
    name: String,
    shared: Arc<V1Shared>,
    _registration: Arc<ffi::Registration>,
}

impl V1Vfs {
    /// Register a VFS called `name` that runs SQLite on the v1 files of
    /// `files`.
    pub fn register(name: &str, files: Arc<dyn V1Files>) -> Result<V1Vfs, VfsError> {
        let shared = Arc::new(V1Shared {
            files,
            memfiles: Default::default(),
            dbs: Mutex::new(HashMap::new()),
            last_errors: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let cname =
            CString::new(name).map_err(|_| VfsError::AlreadyRegistered(name.to_string()))?;
        let registration = ffi::register(cname, shared.clone())
            .map_err(|()| VfsError::AlreadyRegistered(name.to_string()))?;
        Ok(V1Vfs {
            name: name.to_string(),
            shared,
            _registration: Arc::new(registration),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    #[cfg(feature = "rusqlite")]
    /// Open v1 database `db` for reading and writing, creating it if absent.
    /// SQLite's defaults apply (rollback journal in DELETE mode, any page
    /// size); a busy timeout lets connections of this process wait for each
    /// other's locks.
    pub fn open(&self, db: &str) -> Result<Connection, VfsError> {
        self.open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }

    #[cfg(feature = "rusqlite")]
    /// Open with explicit flags (read-only, no create).
    pub fn open_with_flags(&self, db: &str, flags: OpenFlags) -> Result<Connection, VfsError> {
        let suffixed = [V1File::Journal, V1File::Wal, V1File::Shm]
            .iter()
            .any(|f| db.ends_with(f.suffix()));
        if kvlite_api::validate_name(db).is_err()
            || db == ":memory:"
            || db.starts_with("file:")
            || suffixed
        {
            return Err(VfsError::InvalidName(db.to_string()));
        }
        let conn = Connection::open_with_flags_and_vfs(db, flags, self.name.as_str())
            .map_err(|e| self.sqlite_error(db, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.sqlite_error(db, e))?;
        Ok(conn)
    }

    /// The detailed reason behind the last error on database `db`, if any.
    pub fn last_error(&self, db: &str) -> Option<String> {
        last_error_in(&self.shared.last_errors, db)
    }

    #[cfg(feature = "rusqlite")]
    /// Wrap a SQLite error with the VFS's detailed reason, if it has one.
    pub fn sqlite_error(&self, db: &str, e: rusqlite::Error) -> VfsError {
        VfsError::sqlite(e, self.last_error(db))
    }

    /// Databases with an open connection in this process (tests: the table
    /// must not grow without bound).
    pub fn open_databases(&self) -> usize {
        self.shared
            .dbs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_their_files() {
        assert_eq!(parse_name("app"), ("app", V1File::Main));
        assert_eq!(parse_name("app-journal"), ("app", V1File::Journal));
        assert_eq!(parse_name("app-wal"), ("app", V1File::Wal));
        assert_eq!(parse_name("-wal"), ("-wal", V1File::Main));
    }
}
