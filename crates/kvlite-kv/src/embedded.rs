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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::backend::{Backend, BackendTxn, KeyValue};
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

pub struct EmbeddedBackend {
    /// `None` only while being reopened.
    db: RwLock<Option<Arc<redb::Database>>>,
    path: PathBuf,
    options: EmbeddedOptions,
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

fn open_database(path: &Path, options: &EmbeddedOptions) -> Result<redb::Database> {
    redb::Builder::new()
        .set_cache_size(options.cache_bytes)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => KvError::InUse(path.to_path_buf()),
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() == std::io::ErrorKind::StorageFull =>
            {
                KvError::StoreFull(format!("the disk is full: {io}"))
            }
            other => KvError::backend(redb::Error::from(other)),
        })
}

impl EmbeddedBackend {
    /// Open the store in `dir`, creating the directory and file if needed.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(KvError::backend)?;
        let path = dir.join(FILE_NAME);
        let db = open_database(&path, &options)?;
        let broken = Arc::new(AtomicBool::new(false));
        // Create the table once so read transactions can always open it.
        let be = |e: redb::Error| classify(&broken, e);
        let txn = db.begin_write().map_err(|e| be(e.into()))?;
        txn.open_table(TABLE).map_err(|e| be(e.into()))?;
        txn.commit().map_err(|e| be(e.into()))?;
        Ok(EmbeddedBackend {
            db: RwLock::new(Some(Arc::new(db))),
            path,
            options,
            closed: AtomicBool::new(false),
            broken,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle to use, reopening the file first if an I/O error broke
    /// the current one.
    fn database(&self) -> Result<Arc<redb::Database>> {
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
            let db = open_database(&self.path, &self.options)?;
            tracing::info!(path = %self.path.display(), "reopened the store after an I/O error");
            *slot = Some(Arc::new(db));
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
        let db = self.database()?;
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
        let broken = &*self.broken;
        let txn = db.begin_write().map_err(|e| classify(broken, e))?;
        Ok(Box::new(WriteTxn {
            txn,
            broken,
            _db: db,
        }))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
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
    _db: Arc<redb::Database>,
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
    _db: Arc<redb::Database>,
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
        self.txn.commit().map_err(|e| be(e.into()))
    }
}
