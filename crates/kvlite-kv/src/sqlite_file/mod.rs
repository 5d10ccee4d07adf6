//! The embedded on-disk backend: one SQLite file in WAL mode per data
//! directory, holding the ordered table `kv(k, v)`.
//!
//! Why SQLite and not redb (the store before it, still opened where its file
//! exists): a commit appends its changed b-tree pages to the WAL, one
//! sequential write, where redb's copy-on-write tree rewrote every page from
//! each changed leaf to the root plus its allocator state (measured in
//! ARCHITECTURE.md).
//!
//! Durability and group commit: the writer connection commits with
//! `synchronous=NORMAL` (no fsync at COMMIT; WAL headers and checkpoints are
//! still synced, so a crash cannot corrupt the file), then the committer
//! waits until an `fdatasync` of the WAL begun after its commit returns
//! ([`GroupCommit`]). That fsync runs outside the writer lock, so the next
//! transactions commit while it runs and share the next one. Readers wait
//! until what they could see is durable.
//!
//! Checkpoints run on a thread of their own (`wal_checkpoint(PASSIVE)`,
//! which never blocks the writer) once enough has been committed since the
//! last one.
//!
//! One process owns a data directory: it holds an exclusive `flock` on the
//! store file (read-only opens hold a shared one).
//!
//! A failed fsync poisons the handle (the kernel may have dropped the pages
//! it could not write, so a later fsync succeeding proves nothing): the
//! commits it covered are `CommitUnknown`, and nothing more is written or
//! read through it until the store is opened again.

mod conn;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use libsqlite3_sys as ffi;

use self::conn::{Connection, FORMAT, SCHEMA, SqliteError};
use crate::backend::{Backend, BackendTxn, Joined, KeyValue, SpaceReclaimed};
use crate::group_commit::GroupCommit;
use crate::{KvError, Result, WriteSet};

/// The store file inside the data directory.
pub const FILE_NAME: &str = "kvlite.sqlite3";

/// WAL bytes after which the checkpointer copies it back into the file.
const CHECKPOINT_BYTES: u64 = 8 << 20;
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 12;
/// The store file's page size. Smaller pages write fewer bytes per small
/// commit (a commit rewrites a few whole leaf pages); larger ones read big
/// values faster (fewer overflow pages). Measured in ARCHITECTURE.md.
pub const PAGE_SIZE: u32 = 2048;

#[derive(Debug, Clone)]
pub struct SqliteFileOptions {
    /// SQLite's page caches together: the writer's takes a quarter, each
    /// idle reader's a sixteenth (at most twelve idle readers are kept).
    pub cache_bytes: usize,
    /// The store file's page size, fixed when the file is created.
    pub page_size: u32,
}

impl Default for SqliteFileOptions {
    fn default() -> Self {
        crate::embedded::EmbeddedOptions::default().into()
    }
}

impl From<crate::embedded::EmbeddedOptions> for SqliteFileOptions {
    fn from(options: crate::embedded::EmbeddedOptions) -> Self {
        SqliteFileOptions {
            cache_bytes: options.cache_bytes,
            page_size: PAGE_SIZE,
        }
    }
}

pub struct SqliteFileBackend {
    path: PathBuf,
    wal_path: PathBuf,
    options: SqliteFileOptions,
    read_only: bool,
    /// The one connection that writes (`None` when read-only).
    writer: Option<Arc<Mutex<Connection>>>,
    readers: Mutex<Vec<Connection>>,
    group: GroupCommit,
    /// The WAL, opened at the first flush (SQLite creates it).
    wal: Mutex<Option<File>>,
    /// A flush failed: what the page cache holds of the WAL is unknown, so
    /// nothing more is written through this handle.
    poisoned: AtomicBool,
    closed: AtomicBool,
    checkpoints: Arc<Checkpoints>,
    checkpointer: Option<JoinHandle<()>>,
    _lock: File,
}

/// What the checkpointer thread waits on.
#[derive(Default)]
struct Checkpoints {
    /// The WAL's length in bytes after the last commit.
    wal_bytes: AtomicU64,
    /// Its length when the last checkpoint began (0 once it started over).
    checkpointed: AtomicU64,
    state: Mutex<bool>,
    wake: Condvar,
}

impl Checkpoints {
    /// Bytes committed to the WAL since the last checkpoint began.
    fn since_last(&self) -> (u64, u64) {
        let wal = self.wal_bytes.load(Ordering::Relaxed);
        let mut at = self.checkpointed.load(Ordering::Relaxed);
        if wal < at {
            // The writer started the WAL over after a complete checkpoint.
            at = 0;
            self.checkpointed.store(0, Ordering::Relaxed);
        }
        (wal, wal - at)
    }

    fn wal_grew(&self, bytes: u64) {
        self.wal_bytes.store(bytes, Ordering::Relaxed);
        if self.since_last().1 >= CHECKPOINT_BYTES {
            // Under the mutex, so the wake-up cannot fall between the
            // checkpointer's look and its wait.
            let _state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_one();
        }
    }

    fn stop(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_one();
    }

    /// Wait until a checkpoint is due; `false` once stopped.
    fn due(&self) -> bool {
        let mut stopped = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if *stopped {
                return false;
            }
            let (wal, since) = self.since_last();
            if since >= CHECKPOINT_BYTES {
                self.checkpointed.store(wal, Ordering::Relaxed);
                return true;
            }
            stopped = self.wake.wait(stopped).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The checkpointer: copies the WAL back while commits go on, then once
/// more holding the writer lock, so the copy completes (nothing is added
/// meanwhile) and the next commit starts the WAL over instead of growing it.
fn checkpoint_loop(conn: Connection, checkpoints: &Checkpoints, writer: &Mutex<Connection>) {
    while checkpoints.due() {
        let copied = conn
            .execute("PRAGMA wal_checkpoint(PASSIVE)")
            .and_then(|()| {
                let _writer = writer.lock().unwrap_or_else(|p| p.into_inner());
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            });
        if let Err(e) = copied {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }
}

fn classify(path: &Path, e: SqliteError) -> KvError {
    match e.primary() {
        ffi::SQLITE_FULL => KvError::StoreFull(format!("the disk is full: {}", e.message)),
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => KvError::Unavailable(e.message),
        ffi::SQLITE_READONLY => KvError::ReadOnly(path.to_path_buf()),
        ffi::SQLITE_NOTADB => KvError::NotAStore(path.to_path_buf()),
        _ => KvError::backend(e),
    }
}

fn io_error(e: std::io::Error) -> KvError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        KvError::StoreFull(format!("the disk is full: {e}"))
    } else {
        KvError::backend(e)
    }
}

/// Lock the store file (`flock`, which SQLite's own `fcntl` locks do not
/// touch): exclusively for a writer, shared for a reader. The handle must
/// outlive every connection: closing any descriptor of a file drops the
/// process's `fcntl` locks on it.
fn lock(dir: &Path, exclusive: bool) -> Result<File> {
    let path = dir.join(FILE_NAME);
    let file = if exclusive {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
    } else {
        File::open(&path)
    }
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            KvError::ReadOnly(path.clone())
        }
        std::io::ErrorKind::NotFound => KvError::NotAStore(path.clone()),
        _ => io_error(e),
    })?;
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(KvError::InUse(path)),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(e)),
    }
}

/// The backend uses connections from several threads (one at a time each):
/// a SQLite built single-threaded (a loadable extension's host may be)
/// cannot run it.
fn check_thread_safe() -> Result<()> {
    // SAFETY: a plain query of a compile-time option.
    if unsafe { ffi::sqlite3_threadsafe() } == 0 {
        return Err(KvError::backend(std::io::Error::other(
            "this SQLite was built without thread safety (SQLITE_THREADSAFE=0); \
             the embedded store needs it",
        )));
    }
    Ok(())
}

impl SqliteFileBackend {
    /// Open the store in `dir`, creating the directory and file if needed.
    pub fn open(dir: &Path, options: SqliteFileOptions) -> Result<Self> {
        check_thread_safe()?;
        std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                KvError::ReadOnly(dir.to_path_buf())
            }
            _ => io_error(e),
        })?;
        let lock = lock(dir, true)?;
        let path = dir.join(FILE_NAME);
        let be = |e| classify(&path, e);
        let mut writer = Connection::open(&path).map_err(be)?;
        writer
            .execute(&format!(
                "PRAGMA page_size = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {}; \
                 PRAGMA cache_size = -{}; PRAGMA busy_timeout = 5000;",
                options.page_size,
                64 << 20,
                options.cache_bytes / 4 / 1024,
            ))
            .map_err(be)?;
        match writer.query_int(c"PRAGMA user_version").map_err(be)? {
            FORMAT => {}
            // A new file: made a store. Any other SQLite file is not one.
            0 if writer
                .query_int(c"SELECT count(*) FROM sqlite_schema")
                .map_err(be)?
                == 0 =>
            {
                writer
                    .execute(&format!(
                        "BEGIN IMMEDIATE; {SCHEMA}; PRAGMA user_version = {FORMAT}; COMMIT"
                    ))
                    .map_err(be)?;
            }
            _ => return Err(KvError::NotAStore(path)),
        }
        writer.prepare().map_err(be)?;
        let checkpoints = Arc::new(Checkpoints::default());
        {
            let checkpoints = checkpoints.clone();
            let frame = u64::from(options.page_size) + 24;
            writer.set_wal_hook(Box::new(move |frames| {
                checkpoints.wal_grew(u64::from(frames) * frame)
            }));
        }
        let writer = Arc::new(Mutex::new(writer));
        let checkpointer = {
            let conn = Connection::open(&path).map_err(be)?;
            conn.execute("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000")
                .map_err(be)?;
            let checkpoints = checkpoints.clone();
            let writer = writer.clone();
            std::thread::Builder::new()
                .name("kvlite-checkpoint".into())
                .spawn(move || checkpoint_loop(conn, &checkpoints, &writer))
                .map_err(KvError::backend)?
        };
        Ok(SqliteFileBackend {
            wal_path: dir.join(format!("{FILE_NAME}-wal")),
            path,
            options,
            read_only: false,
            writer: Some(writer),
            readers: Mutex::new(Vec::new()),
            group: GroupCommit::default(),
            wal: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            checkpoints,
            checkpointer: Some(checkpointer),
            _lock: lock,
        })
    }

    /// Open the existing store in `dir` without ever writing to it (nor
    /// beside it). A store whose last writer did not close it (a crash, a
    /// copy of a live store) still has a WAL to fold in, which takes
    /// writing: [`KvError::NeedsRepair`].
    pub fn open_read_only(dir: &Path, options: SqliteFileOptions) -> Result<Self> {
        check_thread_safe()?;
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Err(KvError::NotAStore(path));
        }
        let lock = lock(dir, false)?;
        let wal = dir.join(format!("{FILE_NAME}-wal"));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return Err(KvError::NeedsRepair(path));
        }
        let backend = SqliteFileBackend {
            wal_path: dir.join(format!("{FILE_NAME}-wal")),
            path,
            options,
            read_only: true,
            writer: None,
            readers: Mutex::new(Vec::new()),
            group: GroupCommit::default(),
            wal: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            checkpoints: Arc::new(Checkpoints::default()),
            checkpointer: None,
            _lock: lock,
        };
        // A file kvlite never wrote has no table: not a store.
        let reader = backend.reader()?;
        backend.give_back(reader);
        Ok(backend)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_reader(&self) -> Result<Connection> {
        let be = |e| classify(&self.path, e);
        let mut conn = if self.read_only {
            Connection::open_immutable(&self.path)
        } else {
            Connection::open(&self.path)
        }
        .map_err(be)?;
        conn.execute(&format!(
            "PRAGMA cache_size = -{}; PRAGMA busy_timeout = 5000",
            self.options.cache_bytes / 16 / 1024
        ))
        .map_err(be)?;
        if conn.query_int(c"PRAGMA user_version").map_err(be)? != FORMAT {
            return Err(KvError::NotAStore(self.path.clone()));
        }
        conn.prepare().map_err(be)?;
        Ok(conn)
    }

    fn reader(&self) -> Result<Connection> {
        let idle = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.open_reader(),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }

    /// Refuse new work on a closed or poisoned handle.
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(KvError::Closed);
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(KvError::Unavailable(
                "an fsync of the store failed: reopen the store".into(),
            ));
        }
        Ok(())
    }

    /// Make every commit so far durable: one `fdatasync` of the WAL.
    fn flush(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(KvError::CommitUnknown(
                "an earlier fsync of the store failed: reopen the store".into(),
            ));
        }
        let mut wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
        if wal.is_none() {
            *wal = Some(File::open(&self.wal_path).map_err(KvError::backend)?);
        }
        // Not `StoreFull` even for ENOSPC: the commits are in the WAL, and
        // a later checkpoint may still fold them in.
        let synced = match wal.as_ref() {
            Some(file) => file.sync_data().map_err(KvError::backend),
            None => Ok(()),
        };
        if synced.is_err() {
            // After a failed fsync the kernel may have dropped the dirty
            // pages: a later fsync succeeding would not mean they are on disk.
            self.poisoned.store(true, Ordering::SeqCst);
        }
        synced
    }
}

impl Drop for SqliteFileBackend {
    fn drop(&mut self) {
        self.checkpoints.stop();
        if let Some(thread) = self.checkpointer.take() {
            let _ = thread.join();
        }
    }
}

impl Backend for SqliteFileBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn begin_read(&self) -> Result<Box<dyn BackendTxn + '_>> {
        self.check_open()?;
        let conn = self.reader()?;
        let begun = conn.begin().and_then(|()| {
            // The snapshot starts at the first read: take it now.
            conn.get(b"").map(drop)
        });
        let txn = Box::new(ReadTxn {
            conn: Some(conn),
            backend: self,
        });
        begun.map_err(|e| classify(&self.path, e))?;
        // Commits are counted before they become visible, so every commit
        // this snapshot shows is counted now: wait until they are durable.
        self.group.wait_readable()?;
        Ok(txn)
    }

    fn begin_write(&self) -> Result<Box<dyn BackendTxn + '_>> {
        self.check_open()?;
        let Some(writer) = &self.writer else {
            return Err(KvError::ReadOnly(self.path.clone()));
        };
        let conn = writer.lock().unwrap_or_else(|p| p.into_inner());
        // Again under the lock: a flush may have failed while it waited.
        self.check_open()?;
        // A transaction a panic left open is rolled back first.
        conn.rollback();
        conn.begin_immediate()
            .map_err(|e| classify(&self.path, e))?;
        Ok(Box::new(WriteTxn {
            conn: Some(conn),
            backend: self,
        }))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// `VACUUM` (rebuilds the file without its free pages, through the
    /// WAL), made durable, then a `TRUNCATE` checkpoint, which copies it
    /// back and cuts the file and the WAL to size. Writers wait meanwhile;
    /// readers go on (their snapshots stay valid).
    fn reclaim_space(&self) -> Result<Option<SpaceReclaimed>> {
        self.check_open()?;
        let Some(writer) = &self.writer else {
            return Err(KvError::ReadOnly(self.path.clone()));
        };
        let on_disk = || {
            [&self.path, &self.wal_path]
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum::<u64>()
        };
        let bytes_before = on_disk();
        let be = |e| classify(&self.path, e);
        let conn = writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.rollback();
        conn.execute("VACUUM").map_err(be)?;
        let needed = self.group.committed();
        self.group.wait(needed, || self.flush())?;
        // The checkpointer thread or a reader's snapshot may be in the way
        // for a moment; past that, the file keeps its size until the next
        // checkpoints copy the WAL back (nothing is lost either way).
        // Without SQLite's busy wait, so writers wait at most the 2 s here.
        conn.execute("PRAGMA busy_timeout = 0").map_err(be)?;
        let mut truncated = Ok(false);
        for _ in 0..100 {
            truncated = conn.checkpoint_truncate();
            if !matches!(truncated, Ok(false)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        conn.execute("PRAGMA busy_timeout = 5000").map_err(be)?;
        truncated.map_err(be)?;
        drop(conn);
        Ok(Some(SpaceReclaimed {
            bytes_before,
            bytes_after: on_disk(),
        }))
    }
}

/// Reads, alike in read and write transactions. An empty range or a zero
/// limit needs no check here: the query itself returns no rows.
impl SqliteFileBackend {
    fn get_on(&self, conn: &Connection, key: &[u8]) -> Result<Option<Vec<u8>>> {
        conn.get(key).map_err(|e| classify(&self.path, e))
    }

    fn scan_on(
        &self,
        conn: &Connection,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        conn.scan(start, end, limit, reverse)
            .map_err(|e| classify(&self.path, e))
    }

    fn scan_joined_on(&self, conn: &Connection, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Joined>> {
        conn.scan_joined_many(ranges)
            .map_err(|e| classify(&self.path, e))
    }
}

struct ReadTxn<'a> {
    conn: Option<Connection>,
    backend: &'a SqliteFileBackend,
}

impl ReadTxn<'_> {
    fn conn(&self) -> Result<&Connection> {
        self.conn.as_ref().ok_or(KvError::Closed)
    }
}

impl BackendTxn for ReadTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.backend.get_on(self.conn()?, key)
    }

    fn scan_joined_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Joined>> {
        self.backend.scan_joined_on(self.conn()?, ranges)
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        self.backend
            .scan_on(self.conn()?, start, end, limit, reverse)
    }

    fn commit(self: Box<Self>, _writes: WriteSet) -> Result<()> {
        Ok(())
    }
}

impl Drop for ReadTxn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.rollback();
            self.backend.give_back(conn);
        }
    }
}

struct WriteTxn<'a> {
    /// The writer connection, its lock held for the whole transaction.
    conn: Option<MutexGuard<'a, Connection>>,
    backend: &'a SqliteFileBackend,
}

impl WriteTxn<'_> {
    fn conn(&self) -> Result<&Connection> {
        self.conn.as_deref().ok_or(KvError::Closed)
    }
}

impl BackendTxn for WriteTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.backend.get_on(self.conn()?, key)
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        self.backend
            .scan_on(self.conn()?, start, end, limit, reverse)
    }

    fn commit(mut self: Box<Self>, writes: WriteSet) -> Result<()> {
        let backend = self.backend;
        let be = |e| classify(&backend.path, e);
        let Some(conn) = self.conn.take() else {
            return Err(KvError::Closed);
        };
        if writes.is_empty() {
            conn.rollback();
            // What it read may include commits not yet durable.
            let seen = backend.group.counted();
            drop(conn);
            return backend.group.wait(seen, || backend.flush());
        }
        // Counted before COMMIT makes it visible (readers wait for every
        // commit counted when their snapshot began), under the writer lock,
        // so counts follow commit order.
        let needed = backend.group.committed();
        let applied = (|| {
            for (start, end) in writes.cleared_ranges() {
                conn.delete_range(start, end)?;
            }
            for (key, value) in writes.points() {
                match value {
                    Some(v) => conn.put(key, v)?,
                    None => conn.delete(key)?,
                }
            }
            conn.commit()
        })();
        if let Err(e) = applied {
            conn.rollback();
            drop(conn);
            // Readers may wait for this count: flush it all the same.
            let _ = backend.group.wait(needed, || backend.flush());
            return Err(be(e));
        }
        drop(conn);
        backend.group.wait(needed, || backend.flush())
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.rollback();
        }
    }
}
