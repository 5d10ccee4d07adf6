//! [`V1Store`]: the v1 layout's files in the KV store ([`V1Files`]), one
//! KV transaction per call, plus what migration and administration need:
//! a database's file inventory, listing, bulk import and purge.

use kvlite_api::{
    CorruptionKind, Error, InvalidKind, V1_CHUNK_SIZE, V1_FORMAT_VERSION, V1File, V1Files,
    validate_name,
};
use kvlite_kv::{Kv, KvRead, ScanOptions, WriteTxn};

use super::keys;
use crate::error::{Fail, Result, corrupt, invalid};

const CHUNK: u64 = V1_CHUNK_SIZE as u64;
/// Chunks one purge transaction removes (4 MiB).
const PURGE_CHUNKS: usize = 1024;

/// A v1 file's metadata record: format version (u16 LE) and size (u64 LE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileRecord {
    pub size: u64,
}

impl FileRecord {
    const LEN: usize = 10;

    pub fn encode(self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..2].copy_from_slice(&V1_FORMAT_VERSION.to_le_bytes());
        out[2..].copy_from_slice(&self.size.to_le_bytes());
        out
    }

    pub fn decode(db: &str, file: V1File, v: &[u8]) -> Result<FileRecord> {
        let version = v
            .get(..2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_le_bytes);
        match version {
            Some(V1_FORMAT_VERSION) => {}
            Some(other) => {
                return Err(corrupt(
                    db,
                    CorruptionKind::V1Version,
                    format!(
                        "v1 {} file record has format version {other}; this build reads version {V1_FORMAT_VERSION}",
                        file.as_str()
                    ),
                ));
            }
            None => {}
        }
        let size = v
            .get(2..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .filter(|_| version.is_some())
            .ok_or_else(|| {
                corrupt(
                    db,
                    CorruptionKind::Record,
                    format!(
                        "malformed v1 {} file record ({} bytes)",
                        file.as_str(),
                        v.len()
                    ),
                )
            })?;
        Ok(FileRecord { size })
    }
}

/// The bytes chunk `index` of a file of `size` bytes must hold.
fn chunk_len(size: u64, index: u64) -> usize {
    size.saturating_sub(index * CHUNK).min(CHUNK) as usize
}

/// Check a stored chunk against the length its file's size gives it.
pub(crate) fn checked_chunk(
    db: &str,
    file: V1File,
    size: u64,
    index: u64,
    value: Option<Vec<u8>>,
) -> Result<Vec<u8>> {
    let want = chunk_len(size, index);
    match value {
        Some(v) if v.len() == want => Ok(v),
        Some(v) => Err(corrupt(
            db,
            CorruptionKind::V1Chunks,
            format!(
                "chunk {index} of the v1 {} file holds {} bytes; its size ({size}) says {want}",
                file.as_str(),
                v.len()
            ),
        )),
        None => Err(corrupt(
            db,
            CorruptionKind::V1Chunks,
            format!(
                "chunk {index} of the v1 {} file ({size} bytes) is missing",
                file.as_str()
            ),
        )),
    }
}

/// A database's v1 files and their sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Inventory {
    pub main: Option<u64>,
    pub journal: Option<u64>,
    pub wal: Option<u64>,
    pub shm: Option<u64>,
}

impl V1Inventory {
    pub fn size(&self, file: V1File) -> Option<u64> {
        match file {
            V1File::Main => self.main,
            V1File::Journal => self.journal,
            V1File::Wal => self.wal,
            V1File::Shm => self.shm,
        }
    }

    fn set(&mut self, file: V1File, size: u64) {
        let slot = match file {
            V1File::Main => &mut self.main,
            V1File::Journal => &mut self.journal,
            V1File::Wal => &mut self.wal,
            V1File::Shm => &mut self.shm,
        };
        *slot = Some(size);
    }

    /// Bytes of every file.
    pub fn total_bytes(&self) -> u64 {
        V1File::ALL
            .iter()
            .filter_map(|&f| self.size(f))
            .fold(0, u64::saturating_add)
    }
}

/// The v1 files of the KV store's databases.
#[derive(Clone)]
pub struct V1Store {
    kv: Kv,
}

impl V1Store {
    pub fn new(kv: Kv) -> Self {
        V1Store { kv }
    }

    /// Whether `db` may be written as v1: not while a migration holds its
    /// lease, never once it has a v2 head (its v1 data is then a read-only
    /// safety net). Read in the writing transaction, so a write and a
    /// migration's start are serialized by the store.
    fn check_writable(txn: &mut WriteTxn<'_>, db: &str) -> Result<()> {
        if txn.get(&keys::lease(db))?.is_some() {
            return Err(invalid(
                InvalidKind::V1ReadOnly,
                format!(
                    "database {db:?} is being migrated to the v2 layout; its v1 data is read-only"
                ),
            ));
        }
        if txn.get(&crate::keys::dir(db))?.is_some() {
            return Err(invalid(
                InvalidKind::V1ReadOnly,
                format!("database {db:?} has migrated to the v2 layout; its v1 data is read-only"),
            ));
        }
        Ok(())
    }

    pub(crate) fn record(
        txn: &mut impl KvRead,
        db: &str,
        file: V1File,
    ) -> Result<Option<FileRecord>> {
        txn.get(&keys::file(db, file))?
            .map(|v| FileRecord::decode(db, file, &v))
            .transpose()
    }

    /// Every file `db` has, read in one snapshot.
    pub fn inventory(&self, db: &str) -> kvlite_api::Result<V1Inventory> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| Self::inventory_in(txn, db))?)
    }

    pub(crate) fn inventory_in(txn: &mut impl KvRead, db: &str) -> Result<V1Inventory> {
        let (start, end) = keys::files_of(db);
        let mut inv = V1Inventory::default();
        for (k, v) in txn.scan(&start, &end, ScanOptions::ALL)? {
            match keys::parse_file(&k) {
                Some((_, Some(file))) => inv.set(file, FileRecord::decode(db, file, &v)?.size),
                _ => {
                    return Err(corrupt(
                        db,
                        CorruptionKind::Record,
                        "a v1 file record with an unknown file tag",
                    ));
                }
            }
        }
        Ok(inv)
    }

    /// Chunks `[from, from+count)` of a file of `size` bytes, checked.
    pub(crate) fn read_chunks(
        &self,
        db: &str,
        file: V1File,
        size: u64,
        from: u64,
        count: u64,
    ) -> kvlite_api::Result<Vec<Vec<u8>>> {
        let end = from.saturating_add(count).min(size.div_ceil(CHUNK));
        if from >= end {
            return Ok(Vec::new());
        }
        let ks: Vec<Vec<u8>> = (from..end)
            .map(|i| keys::chunk(db, file, i as u32))
            .collect();
        let refs: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
        let values = self
            .kv
            .read(|txn| txn.get_many(&refs))
            .map_err(Fail::from)?;
        Ok(values
            .into_iter()
            .zip(from..end)
            .map(|(v, i)| checked_chunk(db, file, size, i, v))
            .collect::<Result<_>>()?)
    }

    /// Names of v1 databases starting with `prefix`, after `after`, at most
    /// `limit`, in byte order.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> kvlite_api::Result<Vec<String>> {
        let (all_start, all_end) = keys::all_files();
        let mut start = all_start.clone();
        start.extend_from_slice(prefix.as_bytes());
        if let Some(a) = after.filter(|a| *a >= prefix) {
            start = keys::after_files_of(a);
        }
        let mut end_prefix = all_start;
        end_prefix.extend_from_slice(prefix.as_bytes());
        let end = kvlite_kv::prefix_end(&end_prefix).unwrap_or(all_end);
        let mut names: Vec<String> = Vec::new();
        while names.len() < limit {
            // At most four records per database.
            let want = (limit - names.len()).saturating_mul(4).max(4);
            let page = self
                .kv
                .read(|txn| txn.scan(&start, &end, ScanOptions::limit(want)))
                .map_err(Fail::from)?;
            let Some((last, _)) = page.last() else { break };
            for (k, _) in &page {
                if let Some((name, _)) = keys::parse_file(k)
                    && names.last().is_none_or(|l| l != name)
                    && names.len() < limit
                {
                    names.push(name.to_string());
                }
            }
            let Some((name, _)) = keys::parse_file(last) else {
                break;
            };
            start = keys::after_files_of(name);
            if page.len() < want {
                break;
            }
        }
        Ok(names)
    }

    /// Store `data` as `db`'s v1 main file (`kvlite import --layout v1`).
    /// The chunks go in bounded transactions and the file record last, so
    /// an import cut short leaves no database behind.
    pub fn import(&self, db: &str, data: &mut dyn std::io::Read) -> kvlite_api::Result<u64> {
        validate_name(db)?;
        let exists = self.kv.read(|txn| {
            Ok::<_, Fail>(
                txn.get(&keys::file(db, V1File::Main))?.is_some()
                    || txn.get(&crate::keys::dir(db))?.is_some(),
            )
        })?;
        if exists {
            return Err(Error::invalid(
                InvalidKind::Layout,
                format!("database {db:?} already exists"),
            ));
        }
        let mut size = 0u64;
        let mut batch = vec![0u8; 512 * V1_CHUNK_SIZE];
        loop {
            let n = read_full(data, &mut batch).map_err(|e| {
                Error::invalid(
                    InvalidKind::Config,
                    format!("reading the file to import: {e}"),
                )
            })?;
            if n == 0 {
                break;
            }
            let first = size / CHUNK;
            let filled = batch.get(..n).unwrap_or_default();
            self.kv.transact(|txn| {
                Self::check_writable(txn, db)?;
                for (i, c) in filled.chunks(V1_CHUNK_SIZE).enumerate() {
                    txn.set(&keys::chunk(db, V1File::Main, (first + i as u64) as u32), c)?;
                }
                Ok::<_, Fail>(())
            })?;
            size += n as u64;
            if n < batch.len() {
                break;
            }
        }
        self.kv.transact(|txn| {
            Self::check_writable(txn, db)?;
            txn.set(&keys::file(db, V1File::Main), &FileRecord { size }.encode())?;
            Ok::<_, Fail>(())
        })?;
        Ok(size)
    }

    /// Remove every v1 key of `db`: the file records and lease first, in
    /// one transaction (the database is then gone as v1), then the chunks
    /// in bounded transactions.
    pub(crate) fn purge(kv: &Kv, db: &str) -> kvlite_api::Result<()> {
        kv.transact(|txn| {
            let (s, e) = keys::files_of(db);
            txn.clear_range(&s, &e)?;
            txn.clear(&keys::lease(db))?;
            Ok::<_, Fail>(())
        })?;
        Self::purge_chunks(kv, db)
    }

    /// Remove `db`'s chunks, [`PURGE_CHUNKS`] per transaction.
    pub(crate) fn purge_chunks(kv: &Kv, db: &str) -> kvlite_api::Result<()> {
        let (start, end) = keys::chunks_of(db);
        loop {
            let done = kv.transact(|txn| {
                let batch = txn.scan(&start, &end, ScanOptions::limit(PURGE_CHUNKS))?;
                let Some((last, _)) = batch.last() else {
                    return Ok::<_, Fail>(true);
                };
                let mut to = last.clone();
                to.push(0);
                txn.clear_range(&start, &to)?;
                Ok(batch.len() < PURGE_CHUNKS)
            })?;
            if done {
                return Ok(());
            }
        }
    }

    fn write_in(
        txn: &mut WriteTxn<'_>,
        db: &str,
        file: V1File,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let size = Self::record(txn, db, file)?.map_or(0, |r| r.size);
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| invalid(InvalidKind::Size, "a v1 write past the largest offset"))?;
        if end.div_ceil(CHUNK) > u64::from(u32::MAX) {
            return Err(invalid(InvalidKind::Size, "a v1 file over 16 TiB"));
        }
        let new_size = size.max(end);
        // From the chunk holding the old end (a write past the end fills the
        // gap with zeros) or the first one written, to the last one written.
        let first = (offset / CHUNK).min(size / CHUNK);
        let last = if data.is_empty() {
            return Ok(());
        } else {
            (end - 1) / CHUNK
        };
        // Existing chunks the write does not cover entirely must be merged.
        let partial: Vec<u64> = (first..=last)
            .filter(|&i| {
                let have = chunk_len(size, i) as u64;
                let (cs, ce) = (i * CHUNK, i * CHUNK + have);
                have > 0 && !(offset <= cs && end >= ce)
            })
            .collect();
        let ks: Vec<Vec<u8>> = partial
            .iter()
            .map(|&i| keys::chunk(db, file, i as u32))
            .collect();
        let refs: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
        let mut existing = std::collections::HashMap::new();
        for (v, &i) in txn.get_many(&refs)?.into_iter().zip(&partial) {
            existing.insert(i, checked_chunk(db, file, size, i, v)?);
        }
        for i in first..=last {
            let start = i * CHUNK;
            let mut chunk = existing.remove(&i).unwrap_or_default();
            chunk.resize(chunk_len(new_size, i), 0);
            let from = offset.max(start);
            let to = end.min(start + CHUNK);
            if from < to {
                let dst = chunk
                    .get_mut((from - start) as usize..(to - start) as usize)
                    .ok_or_else(|| invalid(InvalidKind::Size, "v1 chunk arithmetic"))?;
                let src = data
                    .get((from - offset) as usize..(to - offset) as usize)
                    .ok_or_else(|| invalid(InvalidKind::Size, "v1 chunk arithmetic"))?;
                dst.copy_from_slice(src);
            }
            txn.set(&keys::chunk(db, file, i as u32), &chunk)?;
        }
        txn.set(
            &keys::file(db, file),
            &FileRecord { size: new_size }.encode(),
        )?;
        Ok(())
    }
}

fn read_full(r: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl V1Files for V1Store {
    fn read(
        &self,
        db: &str,
        file: V1File,
        offset: u64,
        buf: &mut [u8],
    ) -> kvlite_api::Result<usize> {
        buf.fill(0);
        let n = self.kv.read(|txn| {
            let Some(rec) = Self::record(txn, db, file)? else {
                return Ok::<_, Fail>(0);
            };
            let end = offset.saturating_add(buf.len() as u64).min(rec.size);
            if offset >= end {
                return Ok(0);
            }
            let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
            let ks: Vec<Vec<u8>> = (first..=last)
                .map(|i| keys::chunk(db, file, i as u32))
                .collect();
            let refs: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
            for (v, i) in txn.get_many(&refs)?.into_iter().zip(first..=last) {
                let chunk = checked_chunk(db, file, rec.size, i, v)?;
                let start = i * CHUNK;
                let from = offset.max(start);
                let to = end.min(start + chunk.len() as u64);
                if let (Some(dst), Some(src)) = (
                    buf.get_mut((from - offset) as usize..(to - offset) as usize),
                    chunk.get((from - start) as usize..(to - start) as usize),
                ) {
                    dst.copy_from_slice(src);
                }
            }
            Ok((end - offset) as usize)
        })?;
        Ok(n)
    }

    fn write(&self, db: &str, file: V1File, offset: u64, data: &[u8]) -> kvlite_api::Result<()> {
        Ok(self.kv.transact(|txn| {
            Self::check_writable(txn, db)?;
            Self::write_in(txn, db, file, offset, data)
        })?)
    }

    fn truncate(&self, db: &str, file: V1File, size: u64) -> kvlite_api::Result<()> {
        Ok(self.kv.transact(|txn| {
            Self::check_writable(txn, db)?;
            let old = Self::record(txn, db, file)?.map_or(0, |r| r.size);
            if size > old {
                // Growing: the new bytes are zeros.
                let zeros = vec![0u8; (size - old).min(16 << 20) as usize];
                if (zeros.len() as u64) < size - old {
                    return Err(invalid(
                        InvalidKind::Size,
                        "a v1 truncate growing a file by over 16 MiB",
                    ));
                }
                return Self::write_in(txn, db, file, old, &zeros);
            }
            let keep = size.div_ceil(CHUNK);
            let (s, e) = keys::chunks_from(db, file, keep.min(u64::from(u32::MAX)) as u32);
            txn.clear_range(&s, &e)?;
            let tail = chunk_len(size, size / CHUNK);
            if tail > 0 && tail < V1_CHUNK_SIZE {
                let i = size / CHUNK;
                let k = keys::chunk(db, file, i as u32);
                let mut chunk = checked_chunk(db, file, old, i, txn.get(&k)?)?;
                chunk.truncate(tail);
                txn.set(&k, &chunk)?;
            }
            txn.set(&keys::file(db, file), &FileRecord { size }.encode())?;
            Ok(())
        })?)
    }

    fn size(&self, db: &str, file: V1File) -> kvlite_api::Result<Option<u64>> {
        Ok(self
            .kv
            .read(|txn| Self::record(txn, db, file))?
            .map(|r| r.size))
    }

    fn create(&self, db: &str, file: V1File) -> kvlite_api::Result<()> {
        Ok(self.kv.transact(|txn| {
            if Self::record(txn, db, file)?.is_some() {
                return Ok(());
            }
            Self::check_writable(txn, db)?;
            txn.set(&keys::file(db, file), &FileRecord { size: 0 }.encode())?;
            Ok::<_, Fail>(())
        })?)
    }

    fn delete(&self, db: &str, file: V1File) -> kvlite_api::Result<()> {
        Ok(self.kv.transact(|txn| {
            if Self::record(txn, db, file)?.is_none() {
                return Ok(());
            }
            Self::check_writable(txn, db)?;
            txn.clear(&keys::file(db, file))?;
            let (s, e) = keys::chunks_from(db, file, 0);
            txn.clear_range(&s, &e)?;
            Ok::<_, Fail>(())
        })?)
    }
}
