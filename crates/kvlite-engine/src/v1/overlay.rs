//! The migration's view of a v1 database: its files as stored, read-only,
//! under an in-memory layer that takes every write SQLite makes while it
//! recovers them (a hot journal rolled back, a WAL checkpointed, a journal
//! mode switched). The stored v1 data is never written; nothing goes to
//! local disk. Memory holds only what recovery rewrote (bounded by the
//! journal's or WAL's size) plus a bounded read-ahead of stored chunks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use kvlite_api::{Error, Result, V1_CHUNK_SIZE, V1File, V1Files};

use super::store::{V1Inventory, V1Store};
use crate::cache::lock;

const CHUNK: u64 = V1_CHUNK_SIZE as u64;
/// Stored chunks fetched per read (one KV round trip).
const RUN_CHUNKS: u64 = 64;
/// Runs kept (64 × 256 KiB = 16 MiB).
const RUNS_KEPT: usize = 64;

#[derive(Default)]
struct File {
    /// None: the file does not exist (or was deleted).
    size: Option<u64>,
    /// Stored bytes below this offset show through where no chunk was
    /// rewritten (a truncation lowers it: what it cut never comes back).
    stored_visible: u64,
    /// The stored file's size (chunk lengths are checked against it).
    stored_size: u64,
    rewritten: BTreeMap<u64, Vec<u8>>,
}

struct State {
    files: HashMap<V1File, File>,
    runs: HashMap<(V1File, u64), Arc<Vec<Vec<u8>>>>,
    run_order: VecDeque<(V1File, u64)>,
    touched: Vec<V1File>,
    /// Bytes of rewritten chunks and cached runs, and their high-water mark.
    held: u64,
    peak: u64,
}

impl State {
    fn hold(&mut self, n: usize) {
        self.held += n as u64;
        self.peak = self.peak.max(self.held);
    }

    fn release(&mut self, n: usize) {
        debug_assert!(self.held >= n as u64, "overlay accounting");
        self.held = self.held.saturating_sub(n as u64);
    }

    fn rewrite(&mut self, file: V1File, index: u64, chunk: Vec<u8>) {
        self.hold(chunk.len());
        let old = self
            .files
            .entry(file)
            .or_default()
            .rewritten
            .insert(index, chunk);
        if let Some(old) = old {
            self.release(old.len());
        }
    }

    fn touch(&mut self, file: V1File) {
        if !self.touched.contains(&file) {
            self.touched.push(file);
        }
    }
}

/// One database's files for one migration job.
pub(crate) struct Overlay {
    /// The stored files (read, never written).
    store: V1Store,
    db: String,
    state: Mutex<State>,
    /// The first store error SQLite hit, kept typed: SQLite only reports an
    /// I/O error code.
    first_error: Mutex<Option<Error>>,
}

impl Overlay {
    pub fn new(store: V1Store, db: &str, inv: &V1Inventory) -> Overlay {
        let mut files = HashMap::new();
        for f in [V1File::Main, V1File::Journal, V1File::Wal] {
            let size = inv.size(f);
            files.insert(
                f,
                File {
                    size,
                    stored_visible: size.unwrap_or(0),
                    stored_size: size.unwrap_or(0),
                    rewritten: BTreeMap::new(),
                },
            );
        }
        Overlay::with(store, db, files)
    }

    fn with(store: V1Store, db: &str, files: HashMap<V1File, File>) -> Overlay {
        Overlay {
            store,
            db: db.to_string(),
            state: Mutex::new(State {
                files,
                runs: HashMap::new(),
                run_order: VecDeque::new(),
                touched: Vec::new(),
                held: 0,
                peak: 0,
            }),
            first_error: Mutex::new(None),
        }
    }

    /// Whether SQLite changed `file` (wrote, truncated or deleted it).
    pub fn touched(&self, file: V1File) -> bool {
        lock(&self.state).touched.contains(&file)
    }

    /// The most memory this overlay held at once (rewritten chunks and
    /// read-ahead): what a migration costs beyond one part's buffer.
    pub fn peak_bytes(&self) -> u64 {
        lock(&self.state).peak
    }

    pub fn first_error(&self) -> Option<Error> {
        lock(&self.first_error).clone()
    }

    fn keep_error<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            lock(&self.first_error).get_or_insert_with(|| e.clone());
        }
        r
    }

    /// Bytes of chunk `index` as the file now has them (`len` of them).
    fn chunk(&self, st: &mut State, file: V1File, index: u64, len: usize) -> Result<Vec<u8>> {
        let (visible, stored_size, rewritten) = match st.files.get(&file) {
            Some(f) => (
                f.stored_visible,
                f.stored_size,
                f.rewritten.get(&index).cloned(),
            ),
            None => (0, 0, None),
        };
        let mut out = match rewritten {
            Some(c) => c,
            None if index * CHUNK < visible => {
                let run = index / RUN_CHUNKS;
                let chunks = match st.runs.get(&(file, run)) {
                    Some(c) => c.clone(),
                    None => {
                        let store = &self.store;
                        let c = Arc::new(store.read_chunks(
                            &self.db,
                            file,
                            stored_size,
                            run * RUN_CHUNKS,
                            RUN_CHUNKS,
                        )?);
                        if st.run_order.len() >= RUNS_KEPT
                            && let Some(old) = st.run_order.pop_front()
                            && let Some(gone) = st.runs.remove(&old)
                        {
                            st.release(gone.iter().map(Vec::len).sum());
                        }
                        st.run_order.push_back((file, run));
                        st.hold(c.iter().map(Vec::len).sum());
                        st.runs.insert((file, run), c.clone());
                        c
                    }
                };
                let mut c = chunks
                    .get((index % RUN_CHUNKS) as usize)
                    .cloned()
                    .unwrap_or_default();
                c.truncate(visible.saturating_sub(index * CHUNK).min(CHUNK) as usize);
                c
            }
            None => Vec::new(),
        };
        out.resize(len, 0);
        Ok(out)
    }
}

impl V1Files for Overlay {
    fn read(&self, _db: &str, file: V1File, offset: u64, buf: &mut [u8]) -> Result<usize> {
        buf.fill(0);
        let r = (|| {
            let mut st = lock(&self.state);
            let size = st.files.get(&file).and_then(|f| f.size).unwrap_or(0);
            let end = offset.saturating_add(buf.len() as u64).min(size);
            if offset >= end {
                return Ok(0);
            }
            for i in offset / CHUNK..=(end - 1) / CHUNK {
                let start = i * CHUNK;
                let len = size.saturating_sub(start).min(CHUNK) as usize;
                let c = self.chunk(&mut st, file, i, len)?;
                let (from, to) = (offset.max(start), end.min(start + CHUNK));
                if let (Some(dst), Some(src)) = (
                    buf.get_mut((from - offset) as usize..(to - offset) as usize),
                    c.get((from - start) as usize..(to - start) as usize),
                ) {
                    dst.copy_from_slice(src);
                }
            }
            Ok((end - offset) as usize)
        })();
        self.keep_error(r)
    }

    fn write(&self, _db: &str, file: V1File, offset: u64, data: &[u8]) -> Result<()> {
        let r = (|| {
            let mut st = lock(&self.state);
            let size = st.files.get(&file).and_then(|f| f.size).unwrap_or(0);
            let end = offset.saturating_add(data.len() as u64);
            let new_size = size.max(end);
            if !data.is_empty() {
                for i in offset / CHUNK..=(end - 1) / CHUNK {
                    let start = i * CHUNK;
                    let len = new_size.saturating_sub(start).min(CHUNK) as usize;
                    let mut c = self.chunk(&mut st, file, i, len)?;
                    let (from, to) = (offset.max(start), end.min(start + CHUNK));
                    if let (Some(dst), Some(src)) = (
                        c.get_mut((from - start) as usize..(to - start) as usize),
                        data.get((from - offset) as usize..(to - offset) as usize),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    st.rewrite(file, i, c);
                }
            }
            let f = st.files.entry(file).or_default();
            f.size = Some(new_size);
            st.touch(file);
            Ok(())
        })();
        self.keep_error(r)
    }

    fn truncate(&self, _db: &str, file: V1File, size: u64) -> Result<()> {
        let mut st = lock(&self.state);
        st.touch(file);
        let f = st.files.entry(file).or_default();
        let old = f.size.unwrap_or(0);
        f.size = Some(size);
        let mut freed = 0;
        if size < old {
            f.stored_visible = f.stored_visible.min(size);
            let keep = size.div_ceil(CHUNK);
            freed += f
                .rewritten
                .split_off(&keep)
                .values()
                .map(Vec::len)
                .sum::<usize>();
            if let Some(last) = f.rewritten.get_mut(&(size / CHUNK)) {
                let before = last.len();
                last.truncate(size.saturating_sub((size / CHUNK) * CHUNK) as usize);
                freed += before - last.len();
            }
        }
        st.release(freed);
        Ok(())
    }

    fn size(&self, _db: &str, file: V1File) -> Result<Option<u64>> {
        Ok(lock(&self.state).files.get(&file).and_then(|f| f.size))
    }

    fn create(&self, _db: &str, file: V1File) -> Result<()> {
        let mut st = lock(&self.state);
        let f = st.files.entry(file).or_default();
        if f.size.is_none() {
            *f = File {
                size: Some(0),
                ..File::default()
            };
            st.touch(file);
        }
        Ok(())
    }

    fn delete(&self, _db: &str, file: V1File) -> Result<()> {
        let mut st = lock(&self.state);
        if let Some(old) = st.files.insert(file, File::default()) {
            st.release(old.rewritten.values().map(Vec::len).sum());
        }
        st.touch(file);
        Ok(())
    }
}

/// The one v1 VFS migrations in this process run SQLite on; each job's
/// overlays are registered under names of their own and removed when it
/// ends, so the table holds only running jobs.
#[derive(Default)]
pub(crate) struct Router {
    jobs: Mutex<HashMap<String, Arc<Overlay>>>,
}

impl Router {
    fn get(&self, name: &str) -> Result<Arc<Overlay>> {
        lock(&self.jobs)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    pub fn insert(&self, name: &str, overlay: Arc<Overlay>) {
        lock(&self.jobs).insert(name.to_string(), overlay);
    }

    pub fn remove(&self, name: &str) {
        lock(&self.jobs).remove(name);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.jobs).len()
    }
}

impl V1Files for Router {
    fn read(&self, db: &str, file: V1File, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.get(db)?.read(db, file, offset, buf)
    }
    fn write(&self, db: &str, file: V1File, offset: u64, data: &[u8]) -> Result<()> {
        self.get(db)?.write(db, file, offset, data)
    }
    fn truncate(&self, db: &str, file: V1File, size: u64) -> Result<()> {
        self.get(db)?.truncate(db, file, size)
    }
    fn size(&self, db: &str, file: V1File) -> Result<Option<u64>> {
        match self.get(db) {
            Ok(o) => o.size(db, file),
            Err(_) => Ok(None),
        }
    }
    fn create(&self, db: &str, file: V1File) -> Result<()> {
        self.get(db)?.create(db, file)
    }
    fn delete(&self, db: &str, file: V1File) -> Result<()> {
        self.get(db)?.delete(db, file)
    }
}

/// The process's migration VFS and its router.
#[cfg(feature = "v1-migration")]
pub(crate) fn migration_vfs() -> Result<&'static (kvlite_vfs::V1Vfs, Arc<Router>)> {
    static VFS: OnceLock<std::result::Result<(kvlite_vfs::V1Vfs, Arc<Router>), String>> =
        OnceLock::new();
    VFS.get_or_init(|| {
        let router = Arc::new(Router::default());
        let name = format!("kvlite-v1-migration-{}", std::process::id());
        kvlite_vfs::V1Vfs::register(&name, router.clone())
            .map(|vfs| (vfs, router))
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Internal(format!("registering the migration VFS: {e}")))
}
