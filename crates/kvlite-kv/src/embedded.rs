//! The embedded on-disk backend: one redb file per data directory.
//!
//! redb gives exactly the contract: MVCC snapshot readers that never block,
//! one writer at a time (so commits are trivially serializable), and
//! `Durability::Immediate` — every commit is fsynced before it returns and a
//! `kill -9` loses nothing acknowledged. Why redb and not fjall or RocksDB is
//! measured in ARCHITECTURE.md.
//!
//! After an I/O error (a full disk, typically) redb refuses all further
//! work on that handle ("previous I/O error"). The backend then reopens the
//! file once the transactions still using the old handle have ended: the
//! failed write reported [`KvError::StoreFull`], reads go on working, and
//! writes succeed again as soon as space is back, without a restart.
//!
//! Group commit: a write transaction commits without an fsync
//! (`Durability::None`), then waits until a durable commit made after it
//! has returned — one fsync for every transaction that committed while the
//! previous fsync ran (the first waiter to find none running makes it).
//! So a commit is acknowledged only once durable, and many writers share
//! each fsync. A read transaction likewise waits until everything it could
//! see is durable, so nobody reads a commit a crash could still take back
//! (except the thread of an open write transaction, whose own commit waits
//! for the same fsync, and which must not wait for a flush its own writer
//! lock would block).
//!
//! [`EmbeddedBackend::open_read_only`] opens a store without ever writing
//! its file (a read-only directory, a backup copy): reads work, a write
//! transaction is [`KvError::ReadOnly`]. redb refuses such an open while a
//! writer holds the file, and when the file needs the repair that follows
//! a crash (a repair writes).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::backend::{Backend, BackendTxn, KeyValue};
use crate::group_commit::{GroupCommit, WritingGuard};
use crate::{KvError, Result, WriteSet};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// The file inside the data directory.
pub const FILE_NAME: &str = "kvlite.redb";

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// redb's page cache.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            cache_bytes: 256 << 20,
        }
    }
}

/// The open file: writable, or opened so that nothing is ever written.
enum Handle {
    Writable(redb::Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

impl Handle {
    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Handle::Writable(db) => db.begin_read(),
            Handle::ReadOnly(db) => db.begin_read(),
        }
    }
}

pub struct EmbeddedBackend {
    /// `None` only while being reopened.
    db: RwLock<Option<Arc<Handle>>>,
    group: GroupCommit,
    path: PathBuf,
    options: EmbeddedOptions,
    read_only: bool,
    closed: AtomicBool,
    /// Set by an I/O error: redb refuses the handle from then on, so the
    /// next transaction reopens the file.
    broken: Arc<AtomicBool>,
}

/// How long a reopen waits for transactions on the old handle to end.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// Classify a redb error, and note an I/O failure (after which redb
/// refuses the handle) in `broken`.
fn classify(broken: &AtomicBool, e: impl Into<redb::Error>) -> KvError {
    match e.into() {
        redb::Error::Io(io) => {
            broken.store(true, Ordering::SeqCst);
            if io.kind() == std::io::ErrorKind::StorageFull {
                KvError::StoreFull(format!("the disk is full: {io}"))
            } else {
                KvError::backend(io)
            }
        }
        // Another operation's I/O error poisoned the handle: nothing was
        // done, and the reopen it triggers makes the retry work.
        redb::Error::PreviousIo => {
            broken.store(true, Ordering::SeqCst);
            KvError::Unavailable("the store is reopening after an I/O error".into())
        }
        other => KvError::backend(other),
    }
}

fn open_handle(path: &Path, options: &EmbeddedOptions, read_only: bool) -> Result<Handle> {
    let builder = {
        let mut b = redb::Builder::new();
        b.set_cache_size(options.cache_bytes);
        b
    };
    let opened = if read_only {
        builder.open_read_only(path).map(Handle::ReadOnly)
    } else {
        builder.create(path).map(Handle::Writable)
    };
    opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => KvError::InUse(path.to_path_buf()),
        redb::DatabaseError::RepairAborted if read_only => KvError::NeedsRepair(path.to_path_buf()),
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => match io.kind() {
            std::io::ErrorKind::StorageFull => {
                KvError::StoreFull(format!("the disk is full: {io}"))
            }
            std::io::ErrorKind::NotFound if read_only => KvError::NotAStore(path.to_path_buf()),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                if !read_only =>
            {
                KvError::ReadOnly(path.to_path_buf())
            }
            _ => KvError::backend(io),
        },
        other => KvError::backend(redb::Error::from(other)),
    })
}

impl EmbeddedBackend {
    /// Open the store in `dir`, creating the directory and file if needed.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(KvError::backend)?;
        let path = dir.join(FILE_NAME);
        let db = match open_handle(&path, &options, false)? {
            Handle::Writable(db) => db,
            Handle::ReadOnly(_) => return Err(KvError::ReadOnly(path)),
        };
        let broken = Arc::new(AtomicBool::new(false));
        // Create the table once so read transactions can always open it.
        let be = |e: redb::Error| classify(&broken, e);
        let txn = db.begin_write().map_err(|e| be(e.into()))?;
        txn.open_table(TABLE).map_err(|e| be(e.into()))?;
        txn.commit().map_err(|e| be(e.into()))?;
        Ok(EmbeddedBackend {
            db: RwLock::new(Some(Arc::new(Handle::Writable(db)))),
            path,
            options,
            read_only: false,
            group: GroupCommit::default(),
            closed: AtomicBool::new(false),
            broken,
        })
    }

    /// Open the existing store in `dir` without ever writing to it.
    pub fn open_read_only(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let db = open_handle(&path, &options, true)?;
        let backend = EmbeddedBackend {
            db: RwLock::new(Some(Arc::new(db))),
            path,
            options,
            read_only: true,
            group: GroupCommit::default(),
            closed: AtomicBool::new(false),
            broken: Arc::new(AtomicBool::new(false)),
        };
        // A redb file that kvlite never wrote has no table: not a store.
        drop(backend.begin_read().map_err(|e| match e {
            KvError::Backend(_) => KvError::NotAStore(backend.path.clone()),
            e => e,
        })?);
        Ok(backend)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle to use, reopening the file first if an I/O error broke
    /// the current one.
    fn database(&self) -> Result<Arc<Handle>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(KvError::Closed);
        }
        if !self.broken.load(Ordering::SeqCst)
            && let Some(db) = self.db.read().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            return Ok(db.clone());
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if self.broken.load(Ordering::SeqCst) {
            // Transactions on the old handle hold the file's lock: wait for
            // them to end (they fail fast on a broken handle).
            if let Some(old) = slot.take() {
                let deadline = Instant::now() + REOPEN_WAIT;
                let mut old = Some(old);
                while let Some(db) = old.take() {
                    match Arc::try_unwrap(db) {
                        Ok(db) => drop(db),
                        Err(db) if Instant::now() < deadline => {
                            old = Some(db);
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(db) => {
                            *slot = Some(db);
                            return Err(KvError::Unavailable(
                                "the store waits for transactions to end before reopening".into(),
                            ));
                        }
                    }
                }
            }
            let db = open_handle(&self.path, &self.options, self.read_only)?;
            tracing::info!(path = %self.path.display(), "reopened the store after an I/O error");
            *slot = Some(Arc::new(db));
            self.group.reopened();
            self.broken.store(false, Ordering::SeqCst);
        }
        slot.as_ref()
            .cloned()
            .ok_or_else(|| KvError::Unavailable("the store is reopening after an I/O error".into()))
    }
}

impl Backend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn begin_read(&self) -> Result<Box<dyn BackendTxn + '_>> {
        // First the handle (reopening a broken one), then what it shows.
        let db = self.database()?;
        self.group.wait_readable()?;
        let broken = &*self.broken;
        let txn = db.begin_read().map_err(|e| classify(broken, e))?;
        let table = txn.open_table(TABLE).map_err(|e| classify(broken, e))?;
        Ok(Box::new(ReadTxn {
            table,
            broken,
            _db: db,
        }))
    }

    fn begin_write(&self) -> Result<Box<dyn BackendTxn + '_>> {
        let db = self.database()?;
        let Handle::Writable(writable) = &*db else {
            return Err(KvError::ReadOnly(self.path.clone()));
        };
        let broken = &*self.broken;
        let writing = WritingGuard::new();
        let mut txn = writable.begin_write().map_err(|e| classify(broken, e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| KvError::backend(redb::Error::from(e)))?;
        Ok(Box::new(WriteTxn {
            txn,
            broken,
            group: &self.group,
            _writing: writing,
            _db: db,
        }))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }
}

fn scan_table(
    broken: &AtomicBool,
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> Result<Vec<KeyValue>> {
    if start >= end {
        return Ok(Vec::new());
    }
    let be = |e: redb::StorageError| classify(broken, e);
    let range = table.range::<&[u8]>(start..end).map_err(be)?;
    let mut out = Vec::new();
    let mut push = |item: std::result::Result<_, redb::StorageError>| -> Result<()> {
        let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) = item.map_err(be)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
        Ok(())
    };
    if reverse {
        for item in range.rev().take(limit) {
            push(item)?;
        }
    } else {
        for item in range.take(limit) {
            push(item)?;
        }
    }
    Ok(out)
}

/// Transactions keep the handle they began on alive, so a reopen knows
/// when they have all ended.
struct ReadTxn<'a> {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    broken: &'a AtomicBool,
    _db: Arc<Handle>,
}

impl BackendTxn for ReadTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .table
            .get(key)
            .map_err(|e| classify(self.broken, e))?
            .map(|v| v.value().to_vec()))
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        scan_table(self.broken, &self.table, start, end, limit, reverse)
    }

    fn commit(self: Box<Self>, _writes: WriteSet) -> Result<()> {
        Ok(())
    }
}

struct WriteTxn<'a> {
    txn: redb::WriteTransaction,
    broken: &'a AtomicBool,
    group: &'a GroupCommit,
    _writing: WritingGuard,
    _db: Arc<Handle>,
}

impl WriteTxn<'_> {
    fn be(&self, e: impl Into<redb::Error>) -> KvError {
        classify(self.broken, e)
    }
}

impl BackendTxn for WriteTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = self.txn.open_table(TABLE).map_err(|e| self.be(e))?;
        let value = table
            .get(key)
            .map_err(|e| self.be(e))?
            .map(|v| v.value().to_vec());
        Ok(value)
    }

    fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let table = self.txn.open_table(TABLE).map_err(|e| self.be(e))?;
        keys.iter()
            .map(|k| {
                Ok(table
                    .get(*k)
                    .map_err(|e| self.be(e))?
                    .map(|v| v.value().to_vec()))
            })
            .collect()
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        let table = self.txn.open_table(TABLE).map_err(|e| self.be(e))?;
        scan_table(self.broken, &table, start, end, limit, reverse)
    }

    fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        if writes.is_empty() {
            // Nothing to make durable; dropping aborts without an fsync.
            return Ok(());
        }
        let broken = self.broken;
        let be = |e: redb::Error| classify(broken, e);
        {
            let mut table = self.txn.open_table(TABLE).map_err(|e| be(e.into()))?;
            for (start, end) in writes.cleared_ranges() {
                table
                    .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| false)
                    .map_err(|e| be(e.into()))?;
            }
            for (key, value) in writes.points() {
                match value {
                    Some(v) => {
                        table.insert(key, v).map_err(|e| be(e.into()))?;
                    }
                    None => {
                        table.remove(key).map_err(|e| be(e.into()))?;
                    }
                }
            }
        }
        self.txn.commit().map_err(|e| be(e.into()))?;
        let needed = self.group.committed();
        // The writer lock is released: another writer, or the flush, may go.
        drop(self._writing);
        let Handle::Writable(db) = &*self._db else {
            return Err(KvError::ReadOnly(PathBuf::new()));
        };
        self.group.wait(needed, || {
            let txn = db.begin_write().map_err(|e| be(e.into()))?;
            txn.commit().map_err(|e| be(e.into()))
        })
    }
}
