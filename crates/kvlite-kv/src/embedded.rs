//! The embedded on-disk backend: one redb file per data directory.
//!
//! redb gives exactly the contract: MVCC snapshot readers that never block,
//! one writer at a time (so commits are trivially serializable), and
//! `Durability::Immediate` — every commit is fsynced before it returns and a
//! `kill -9` loses nothing acknowledged. Why redb and not fjall or RocksDB is
//! measured in ARCHITECTURE.md.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
    db: redb::Database,
    path: PathBuf,
    closed: AtomicBool,
}

fn be(e: impl Into<redb::Error>) -> KvError {
    match e.into() {
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            KvError::StoreFull(io.to_string())
        }
        other => KvError::backend(other),
    }
}

impl EmbeddedBackend {
    /// Open the store in `dir`, creating the directory and file if needed.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(KvError::backend)?;
        let path = dir.join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => KvError::InUse(path.clone()),
                other => be(other),
            })?;
        // Create the table once so read transactions can always open it.
        let txn = db.begin_write().map_err(be)?;
        txn.open_table(TABLE).map_err(be)?;
        txn.commit().map_err(be)?;
        Ok(EmbeddedBackend {
            db,
            path,
            closed: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(KvError::Closed);
        }
        Ok(())
    }
}

impl Backend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn begin_read(&self) -> Result<Box<dyn BackendTxn + '_>> {
        self.check_open()?;
        let txn = self.db.begin_read().map_err(be)?;
        let table = txn.open_table(TABLE).map_err(be)?;
        Ok(Box::new(ReadTxn { table }))
    }

    fn begin_write(&self) -> Result<Box<dyn BackendTxn + '_>> {
        self.check_open()?;
        let txn = self.db.begin_write().map_err(be)?;
        Ok(Box::new(WriteTxn { txn }))
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

fn scan_table(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    end: &[u8],
    limit: usize,
    reverse: bool,
) -> Result<Vec<KeyValue>> {
    if start >= end {
        return Ok(Vec::new());
    }
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

struct ReadTxn {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl BackendTxn for ReadTxn {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.table.get(key).map_err(be)?.map(|v| v.value().to_vec()))
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        scan_table(&self.table, start, end, limit, reverse)
    }

    fn commit(self: Box<Self>, _writes: WriteSet) -> Result<()> {
        Ok(())
    }
}

struct WriteTxn {
    txn: redb::WriteTransaction,
}

impl BackendTxn for WriteTxn {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table = self.txn.open_table(TABLE).map_err(be)?;
        let value = table.get(key).map_err(be)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let table = self.txn.open_table(TABLE).map_err(be)?;
        keys.iter()
            .map(|k| Ok(table.get(*k).map_err(be)?.map(|v| v.value().to_vec())))
            .collect()
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        let table = self.txn.open_table(TABLE).map_err(be)?;
        scan_table(&table, start, end, limit, reverse)
    }

    fn commit(self: Box<Self>, writes: WriteSet) -> Result<()> {
        if writes.is_empty() {
            // Nothing to make durable; dropping aborts without an fsync.
            return Ok(());
        }
        {
            let mut table = self.txn.open_table(TABLE).map_err(be)?;
            for (start, end) in writes.cleared_ranges() {
                table
                    .retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| false)
                    .map_err(be)?;
            }
            for (key, value) in writes.points() {
                match value {
                    Some(v) => {
                        table.insert(key, v).map_err(be)?;
                    }
                    None => {
                        table.remove(key).map_err(be)?;
                    }
                }
            }
        }
        self.txn.commit().map_err(be)
    }
}
