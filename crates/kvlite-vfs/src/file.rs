//! The main database file of one connection.

use std::collections::{BTreeMap, VecDeque};
use std::os::raw::c_int;
use std::sync::Arc;
use std::time::Instant;

use kvlite_api::{
    CommitRequest, Error, FenceReason, InvalidKind, LargeCommit, PAGE_SIZE, PageData, PageRef,
    Preload, ReadAt, ReadPoint, ReadState, SHARD_PAGES, Transport, growth_fill_count,
};
use libsqlite3_sys as ffi;

use crate::Shared;
use crate::cache::PageCache;
use crate::metrics::VfsMetrics;
use crate::readahead::ReadAhead;

/// Where a commit was triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitPoint {
    /// COMMIT_ATOMIC_WRITE closing a batch.
    Batch,
    /// The database file's sync (buffered writes of a non-batched transaction).
    Sync,
    /// After the transaction: a truncation SQLite made past its commit.
    PhaseTwo,
}

/// Why the connection no longer writes.
#[derive(Debug, Clone)]
enum Poison {
    /// Another opener took over: cached pages are still this connection's
    /// committed state; the engine refuses anything else.
    Fenced(String),
    /// A commit's outcome is unknown: nothing cached can be trusted.
    Unknown(String),
}

/// A read-only connection: each read transaction reads at the commit that
/// was the head when it began (SQLite's shared lock), never taking the
/// database over.
struct Reader {
    /// Picked at random: the engine pins what this reader reads at by it.
    id: u64,
    incarnation: u64,
    /// Inside a read transaction (between SQLite's shared lock and unlock).
    locked: bool,
    /// A reader of one past commit: it never moves.
    fixed: bool,
}

pub(crate) struct DbFile {
    name: String,
    /// `Some` for a read-only connection.
    reader: Option<Reader>,
    shared: Arc<Shared>,
    /// Where this database lives (the VFS's one transport, or the one its
    /// URI parameters chose).
    transport: Arc<dyn Transport>,
    generation: u64,
    head: u64,
    /// Committed size in pages.
    size: u32,
    fast_path_limit: u64,
    cache: PageCache,
    /// Pages written by the current transaction, not yet committed.
    dirty: BTreeMap<u32, Page>,
    /// Size SQLite sees during the current transaction.
    pending_size: u32,
    poisoned: Option<Poison>,
    readahead: ReadAhead,
    /// Inside BEGIN/COMMIT_ATOMIC_WRITE: what the buffer held before the
    /// batch, so ROLLBACK_ATOMIC_WRITE undoes the batch's writes only. Pages
    /// spilled before the batch (SQLite writes them early when its cache
    /// overflows) belong to the same transaction and must survive it.
    batch_undo: Option<BatchUndo>,
    /// The next windows of a sequential scan, oldest first, each being
    /// fetched on a thread of its own.
    prefetch: VecDeque<Prefetch>,
}

/// A page the current transaction wrote (SQLite may write parts of it).
type Page = Box<[u8]>;

/// Windows of a scan fetched ahead at once, at most.
const PREFETCH_DEPTH: usize = 3;

/// Pages answered by one request, in the order asked.
type Fetched = Result<Vec<Option<PageData>>, Error>;

/// A read-ahead request running on its own thread while SQLite works
/// through the pages before it (the engine decodes, or the network
/// carries, the next window meanwhile). Its answer is used only if the file
/// is still where it was when the request went out: the same commit, size,
/// generation and read transaction; any change (a commit of its own, a new
/// read transaction) discards it.
struct Prefetch {
    at: FileState,
    pages: Vec<u32>,
    answer: std::sync::mpsc::Receiver<Fetched>,
}

/// What a page answer depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    head: u64,
    size: u32,
    generation: u64,
    incarnation: Option<u64>,
}

struct BatchUndo {
    /// Each page the batch touched, with its buffered state before.
    pages: BTreeMap<u32, Option<Page>>,
    size: u32,
}

/// Whether a page needs no fetching: cached, or written by the current
/// transaction.
fn held<'a>(cache: &'a PageCache, dirty: &'a BTreeMap<u32, Page>) -> impl Fn(u32) -> bool + 'a {
    move |p| cache.contains(p) || dirty.contains_key(&p)
}

fn page_of(offset: u64) -> Option<(u32, usize)> {
    let pgno = u32::try_from(offset / PAGE_SIZE as u64)
        .ok()?
        .checked_add(1)?;
    Some((pgno, (offset % PAGE_SIZE as u64) as usize))
}

impl DbFile {
    pub fn open(
        name: &str,
        shared: Arc<Shared>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, Error> {
        let preload = Preload {
            pages: Vec::new(),
            ranges: match shared.config.preload_pages {
                0 | 1 => Vec::new(),
                last => vec![(2, last)],
            },
        };
        let resp = transport.open(name, &preload)?;
        check_page_size(name, resp.page_size)?;
        let mut file = DbFile::new(
            name,
            shared,
            transport,
            None,
            resp.head_txid,
            resp.size_pages,
        );
        for (pgno, data) in resp.pages {
            if data.len() == PAGE_SIZE {
                file.cache.insert(pgno, data);
            }
        }
        file.generation = resp.generation;
        file.fast_path_limit = resp.fast_path_limit.max(PAGE_SIZE as u64);
        Ok(file)
    }

    /// Open `name` read-only: no takeover; the database must exist.
    pub fn open_reader(
        name: &str,
        shared: Arc<Shared>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, Error> {
        let id = fastrand::u64(..);
        let state = transport.begin_read(name, id, 0)?;
        if let Err(e) = check_page_size(name, state.page_size) {
            let _ = transport.end_read(name, id);
            return Err(e);
        }
        let reader = Reader {
            id,
            incarnation: state.incarnation,
            locked: false,
            fixed: false,
        };
        Ok(DbFile::new(
            name,
            shared,
            transport,
            Some(reader),
            state.head_txid,
            state.size_pages,
        ))
    }

    /// Open `name` read-only at the newest commit at or before `point`, for
    /// good: every read transaction sees that commit.
    pub fn open_reader_at(
        name: &str,
        shared: Arc<Shared>,
        transport: Arc<dyn Transport>,
        point: ReadPoint,
    ) -> Result<Self, Error> {
        let id = fastrand::u64(..);
        let state = transport.begin_read_at(name, id, point)?;
        if let Err(e) = check_page_size(name, state.page_size) {
            let _ = transport.end_read(name, id);
            return Err(e);
        }
        let reader = Reader {
            id,
            incarnation: state.incarnation,
            locked: false,
            fixed: true,
        };
        Ok(DbFile::new(
            name,
            shared,
            transport,
            Some(reader),
            state.head_txid,
            state.size_pages,
        ))
    }

    /// A file at commit `head` of `size` pages, nothing cached yet.
    fn new(
        name: &str,
        shared: Arc<Shared>,
        transport: Arc<dyn Transport>,
        reader: Option<Reader>,
        head: u64,
        size: u32,
    ) -> Self {
        let cache = PageCache::new(shared.config.cache_bytes);
        let max_readahead = shared
            .config
            .max_readahead_pages
            .min(cache.batch_pages() as u32);
        DbFile {
            name: name.to_string(),
            reader,
            transport,
            generation: 0,
            head,
            size,
            pending_size: size,
            fast_path_limit: PAGE_SIZE as u64,
            cache,
            dirty: BTreeMap::new(),
            poisoned: None,
            readahead: ReadAhead::new(max_readahead),
            batch_undo: None,
            prefetch: VecDeque::new(),
            shared,
        }
    }

    /// SQLite's lock moved to `level`. A reader's shared lock starts a read
    /// transaction: it moves to the newest commit and forgets exactly the
    /// cached pages that changed since the one it read before (all of them
    /// when the engine cannot say), so SQLite's change counter on page 1
    /// agrees with what it then reads.
    pub fn lock(&mut self, level: c_int) -> Result<(), c_int> {
        let Some(reader) = &self.reader else {
            return self.writer_lock(level);
        };
        if level > ffi::SQLITE_LOCK_SHARED {
            self.fail("the connection is read-only".to_string());
            return Err(ffi::SQLITE_READONLY);
        }
        if level < ffi::SQLITE_LOCK_SHARED || reader.locked {
            return Ok(());
        }
        if reader.fixed {
            if let Some(r) = &mut self.reader {
                r.locked = true;
            }
            return Ok(());
        }
        let (id, incarnation) = (reader.id, reader.incarnation);
        let state = match self.transport.begin_read(&self.name, id, self.head) {
            Ok(s) => s,
            Err(e) => {
                self.fail(format!("starting a read: {e}"));
                return Err(ffi::SQLITE_IOERR_LOCK);
            }
        };
        self.move_to(&state, incarnation);
        if let Some(r) = &mut self.reader {
            r.incarnation = state.incarnation;
            r.locked = true;
        }
        Ok(())
    }

    /// A writer's transaction starts (SQLite takes its shared lock): if its
    /// transport has seen a newer generation (another opener took the
    /// database over), it is fenced before it answers anything from its
    /// caches — no round trip. A fenced or poisoned connection refuses
    /// every transaction.
    fn writer_lock(&mut self, level: c_int) -> Result<(), c_int> {
        if level != ffi::SQLITE_LOCK_SHARED {
            return Ok(());
        }
        if self.poisoned.is_none()
            && self.generation != 0
            && let Some((newest, since_ms)) = self.transport.newest_generation(&self.name)
            && newest > self.generation
        {
            let fenced = Error::Fenced {
                db: self.name.clone(),
                reason: FenceReason::StaleGeneration {
                    current: newest,
                    yours: self.generation,
                    head: self.head,
                    since_ms,
                },
            };
            self.poison(Poison::Fenced(fenced.to_string()));
        }
        match &self.poisoned {
            Some(Poison::Fenced(reason)) => {
                self.fail(format!(
                    "{reason}; this connection can no longer read or write it: reopen the database"
                ));
                Err(ffi::SQLITE_READONLY_DBMOVED)
            }
            Some(Poison::Unknown(reason)) => {
                self.fail(format!(
                    "connection poisoned ({reason}); reopen the database"
                ));
                Err(ffi::SQLITE_READONLY_DBMOVED)
            }
            None => Ok(()),
        }
    }

    pub fn unlock(&mut self, level: c_int) {
        if let Some(r) = &mut self.reader
            && level < ffi::SQLITE_LOCK_SHARED
        {
            r.locked = false;
        }
    }

    fn move_to(&mut self, state: &ReadState, incarnation: u64) {
        let m = &self.shared.metrics;
        VfsMetrics::add(&m.read_transactions, 1);
        if state.head_txid == self.head && state.incarnation == incarnation {
            return;
        }
        match &state.changed {
            Some(pages) if state.incarnation == incarnation => {
                VfsMetrics::add(&m.pages_invalidated, pages.len() as u64);
                for &p in pages {
                    self.cache.remove(p);
                }
            }
            _ => {
                VfsMetrics::add(&m.cache_resets, 1);
                self.cache.clear();
            }
        }
        if state.size_pages < self.size {
            self.cache.truncate(state.size_pages);
        }
        self.head = state.head_txid;
        self.size = state.size_pages;
        self.pending_size = state.size_pages;
    }

    fn fail(&self, message: String) {
        self.shared.set_last_error(&self.name, message);
    }

    pub fn file_size(&self) -> u64 {
        self.pending_size as u64 * PAGE_SIZE as u64
    }

    /// Read into `buf`; returns false for a short read (rest zero-filled).
    pub fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool, c_int> {
        match &self.poisoned {
            Some(Poison::Unknown(reason)) => {
                self.fail(format!(
                    "connection poisoned ({reason}); reopen the database"
                ));
                return Err(ffi::SQLITE_IOERR_READ);
            }
            // Another writer owns the database now: what this connection
            // cached may be older than the database, so it reads nothing.
            Some(Poison::Fenced(reason)) => {
                self.fail(format!(
                    "{reason}; this connection can no longer read or write it: reopen the database"
                ));
                return Err(ffi::SQLITE_READONLY_DBMOVED);
            }
            None => {}
        }
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let Some((pgno, off)) = page_of(pos) else {
                return Err(ffi::SQLITE_IOERR_READ);
            };
            let n = (PAGE_SIZE - off).min(rest.len());
            if pgno > self.pending_size {
                rest.fill(0);
                return Ok(false);
            }
            let Some((chunk, tail)) = rest.split_at_mut_checked(n) else {
                return Err(ffi::SQLITE_IOERR_READ);
            };
            self.copy_page(pgno, off, chunk)?;
            if pgno == 1 && self.reader.is_some() {
                reader_change_counter(self.head, off, chunk);
            }
            rest = tail;
            pos += n as u64;
        }
        Ok(true)
    }

    /// Copy part of page `pgno` (as this transaction sees it) into `dst`.
    fn copy_page(&mut self, pgno: u32, off: usize, dst: &mut [u8]) -> Result<(), c_int> {
        if let Some(page) = self.dirty.get(&pgno) {
            return copy_from(page, off, dst);
        }
        if pgno > self.size {
            // Inside the file SQLite sees but never written: a hole.
            dst.fill(0);
            return Ok(());
        }
        if let Some(page) = self.cache.get(pgno) {
            VfsMetrics::add(&self.shared.metrics.cache_hits, 1);
            return copy_from(page, off, dst);
        }
        VfsMetrics::add(&self.shared.metrics.cache_misses, 1);
        self.fetch(pgno)?;
        match self.cache.get(pgno) {
            Some(page) => copy_from(page, off, dst),
            None => Err(ffi::SQLITE_IOERR_READ),
        }
    }

    fn state(&self) -> FileState {
        FileState {
            head: self.head,
            size: self.size,
            generation: self.generation,
            incarnation: self.reader.as_ref().map(|r| r.incarnation),
        }
    }

    /// One request for `pages` at the file's state.
    fn request(
        transport: &dyn Transport,
        name: &str,
        reader: Option<u64>,
        at: FileState,
        pages: &[u32],
    ) -> Fetched {
        match (reader, at.incarnation) {
            (Some(id), Some(incarnation)) => transport.get_pages_at(
                name,
                id,
                ReadAt {
                    incarnation,
                    txid: at.head,
                    size_pages: at.size,
                },
                pages,
            ),
            _ => transport.get_pages(name, at.generation, pages),
        }
    }

    /// Fetch a missed page and what the read-ahead predicts: from a window
    /// fetched ahead when one holds the page, else in one request. During
    /// a scan, the windows after it then start on other threads.
    fn fetch(&mut self, pgno: u32) -> Result<(), c_int> {
        let started = Instant::now();
        let m = self.shared.metrics.clone();
        // Windows asked at another state (a commit, a new read transaction
        // since) are dropped. One holding the missed page is waited for,
        // with those before it (a scan reaches them first); later ones stay
        // under way.
        if self.prefetch.front().is_some_and(|p| p.at != self.state()) {
            self.drop_prefetches();
        }
        if let Some(i) = self.prefetch.iter().position(|p| p.pages.contains(&pgno)) {
            let ready: Vec<Prefetch> = self.prefetch.drain(..=i).collect();
            for p in ready {
                // A failed window is fetched again by the request below.
                if let Ok(Ok(pages)) = p.answer.recv() {
                    self.insert_fetched(&p.pages, pages)?;
                    VfsMetrics::add(&m.prefetches_used, 1);
                }
            }
            if self.cache.contains(pgno) {
                VfsMetrics::time(&m.fetch_nanos, started.elapsed());
                self.prefetch_next();
                return Ok(());
            }
        }
        let batch = self.cache.batch_pages();
        let (cache, dirty) = (&self.cache, &self.dirty);
        let mut want = self.readahead.plan(pgno, self.size, held(cache, dirty));
        want.truncate(batch);
        let reader = self.reader.as_ref().map(|r| r.id);
        let result = Self::request(
            self.transport.as_ref(),
            &self.name,
            reader,
            self.state(),
            &want,
        );
        VfsMetrics::add(&m.page_requests, 1);
        VfsMetrics::time(&m.fetch_nanos, started.elapsed());
        let pages = match result {
            Ok(p) => p,
            Err(e) => {
                if let Error::Fenced { .. } = e {
                    self.poison(Poison::Fenced(e.to_string()));
                }
                self.fail(format!("reading page {pgno}: {e}"));
                return Err(ffi::SQLITE_IOERR_READ);
            }
        };
        self.insert_fetched(&want, pages)?;
        self.prefetch_next();
        Ok(())
    }

    /// Forget the windows under way (their threads finish on their own;
    /// nobody takes their answers): the scan resumes from the first of them.
    fn drop_prefetches(&mut self) {
        if let Some(first) = self.prefetch.front().and_then(|p| p.pages.first()) {
            self.readahead.rewind(*first);
        }
        self.prefetch.clear();
    }

    /// Cache the answer to a request for `want`, the first page last (so
    /// the batch cannot evict it).
    fn insert_fetched(&mut self, want: &[u32], pages: Vec<Option<PageData>>) -> Result<(), c_int> {
        let m = self.shared.metrics.clone();
        VfsMetrics::add(&m.pages_fetched, pages.len() as u64);
        if pages.len() != want.len() {
            self.fail(format!(
                "the engine answered {} pages for {} asked",
                pages.len(),
                want.len()
            ));
            return Err(ffi::SQLITE_IOERR_READ);
        }
        for (p, data) in want.iter().zip(pages).rev() {
            match data {
                Some(d) if d.len() == PAGE_SIZE => {
                    VfsMetrics::add(&m.bytes_fetched, PAGE_SIZE as u64);
                    self.cache.insert(*p, d);
                }
                _ => {
                    self.fail(format!(
                        "the engine has no page {p} below size {}",
                        self.size
                    ));
                    return Err(ffi::SQLITE_IOERR_READ);
                }
            }
        }
        Ok(())
    }

    /// Start fetching the scan's next windows, up to [`PREFETCH_DEPTH`]
    /// under way and [`PageCache::batch_pages`] pages in all, each on a thread of
    /// its own (so the engine decodes them on as many cores).
    fn prefetch_next(&mut self) {
        while self.prefetch.len() < PREFETCH_DEPTH {
            let in_flight: usize = self.prefetch.iter().map(|p| p.pages.len()).sum();
            let room = self.cache.batch_pages().saturating_sub(in_flight);
            if room == 0 || !self.prefetch_one(room) {
                break;
            }
        }
    }

    /// Start fetching the next window (at most `room` pages); false when
    /// there is none.
    fn prefetch_one(&mut self, room: usize) -> bool {
        let (cache, dirty) = (&self.cache, &self.dirty);
        let pages = self
            .readahead
            .next_window(self.size, room, held(cache, dirty));
        let Some(&first) = pages.first() else {
            return false;
        };
        let (tx, answer) = std::sync::mpsc::sync_channel(1);
        let (transport, name) = (self.transport.clone(), self.name.clone());
        let (reader, at, asked) = (
            self.reader.as_ref().map(|r| r.id),
            self.state(),
            pages.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("kvlite-prefetch".into())
            .spawn(move || {
                // The file may have stopped waiting: then nobody receives.
                let _ = tx.send(Self::request(transport.as_ref(), &name, reader, at, &asked));
            });
        if spawned.is_err() {
            self.readahead.rewind(first);
            return false;
        }
        VfsMetrics::add(&self.shared.metrics.page_requests, 1);
        VfsMetrics::add(&self.shared.metrics.prefetches, 1);
        self.prefetch.push_back(Prefetch { at, pages, answer });
        true
    }

    pub fn write(&mut self, buf: &[u8], offset: u64) -> Result<(), c_int> {
        self.refuse_if_reader()?;
        let mut pos = offset;
        let mut rest = buf;
        while !rest.is_empty() {
            let Some((pgno, off)) = page_of(pos) else {
                return Err(ffi::SQLITE_FULL);
            };
            let n = (PAGE_SIZE - off).min(rest.len());
            let Some((chunk, tail)) = rest.split_at_checked(n) else {
                return Err(ffi::SQLITE_IOERR_WRITE);
            };
            let page = if off == 0 && n == PAGE_SIZE {
                chunk.into()
            } else {
                let mut page = vec![0u8; PAGE_SIZE].into_boxed_slice();
                if pgno <= self.pending_size {
                    self.copy_page(pgno, 0, &mut page)?;
                }
                page.get_mut(off..off + n)
                    .ok_or(ffi::SQLITE_IOERR_WRITE)?
                    .copy_from_slice(chunk);
                page
            };
            self.remember_for_undo(pgno);
            self.dirty.insert(pgno, page);
            self.pending_size = self.pending_size.max(pgno);
            rest = tail;
            pos += n as u64;
        }
        Ok(())
    }

    pub fn truncate(&mut self, bytes: u64) -> Result<(), c_int> {
        self.refuse_if_reader()?;
        let pages = u32::try_from(bytes.div_ceil(PAGE_SIZE as u64))
            .map_err(|_| ffi::SQLITE_IOERR_TRUNCATE)?;
        let doomed: Vec<u32> = self.dirty.range(pages + 1..).map(|(p, _)| *p).collect();
        for p in doomed {
            self.remember_for_undo(p);
            self.dirty.remove(&p);
        }
        self.pending_size = pages;
        Ok(())
    }

    fn remember_for_undo(&mut self, pgno: u32) {
        if let Some(undo) = &mut self.batch_undo {
            undo.pages
                .entry(pgno)
                .or_insert_with(|| self.dirty.get(&pgno).cloned());
        }
    }

    fn refuse_if_reader(&self) -> Result<(), c_int> {
        if self.reader.is_some() {
            self.fail("the connection is read-only".to_string());
            return Err(ffi::SQLITE_READONLY);
        }
        Ok(())
    }

    /// The reason writes are refused, if they are.
    fn refuse_writes(&self) -> Result<(), c_int> {
        self.refuse_if_reader()?;
        if let Some(p) = &self.poisoned {
            let reason = match p {
                Poison::Fenced(r) | Poison::Unknown(r) => r,
            };
            self.fail(format!(
                "connection poisoned for writing ({reason}); reopen the database"
            ));
            return Err(ffi::SQLITE_READONLY_DBMOVED);
        }
        Ok(())
    }

    pub fn begin_batch(&mut self) -> Result<(), c_int> {
        self.refuse_writes()?;
        self.batch_undo = Some(BatchUndo {
            pages: BTreeMap::new(),
            size: self.pending_size,
        });
        Ok(())
    }

    /// ROLLBACK_ATOMIC_WRITE: undo the batch's writes, keep earlier ones.
    pub fn rollback_batch(&mut self) {
        if let Some(undo) = self.batch_undo.take() {
            for (pgno, before) in undo.pages {
                match before {
                    Some(page) => self.dirty.insert(pgno, page),
                    None => self.dirty.remove(&pgno),
                };
            }
            self.pending_size = undo.size;
        }
    }

    fn poison(&mut self, p: Poison) {
        if self.poisoned.is_none() {
            VfsMetrics::add(&self.shared.metrics.poisonings, 1);
        }
        if let Poison::Unknown(_) = p {
            // The engine may be ahead of everything cached here.
            self.cache = PageCache::new(self.shared.config.cache_bytes);
        }
        self.poisoned = Some(p);
    }

    /// Send the current transaction to the engine as one commit.
    pub fn commit(&mut self, point: CommitPoint) -> Result<(), c_int> {
        let m = self.shared.metrics.clone();
        // Pages rewritten with their committed content (SQLite plays its
        // journal back through the file when a spilled transaction rolls
        // back, then syncs) need no commit.
        let cache = &mut self.cache;
        self.dirty.retain(|pgno, page| {
            cache
                .get(*pgno)
                .is_none_or(|committed| committed[..] != page[..])
        });
        // SQLite bumps page 1's change counter at every commit (normal
        // locking): a page 1 that changed in nothing else is not worth a
        // page in the store. It stays in this connection's cache (SQLite
        // compares the counter at each transaction's start); readers see a
        // counter of their own (`reader_change_counter`).
        let counter_only = match (self.dirty.get(&1), self.cache.get(1)) {
            (Some(new), Some(old)) if only_change_counter_differs(old, new) => {
                self.dirty.remove(&1)
            }
            _ => None,
        };
        if self.dirty.is_empty() && self.pending_size == self.size {
            if let Some(page) = counter_only {
                self.cache.insert(1, page.into());
            }
            VfsMetrics::add(&m.empty_commits, 1);
            self.batch_undo = None;
            return Ok(());
        }
        self.refuse_writes()?;
        let started = Instant::now();
        let pages: Vec<PageRef<'_>> = self.dirty.iter().map(|(p, d)| (*p, &d[..])).collect();
        let fill = growth_fill_count(self.size, self.pending_size, pages.iter().map(|p| p.0));
        let raw = (pages.len() as u64 + fill) * PAGE_SIZE as u64;
        let commit_id = fastrand::u64(..);
        let prepared = Instant::now();
        VfsMetrics::time(&m.commit_prepare_nanos, prepared - started);
        let result = if raw <= self.fast_path_limit {
            self.transport.commit(&CommitRequest {
                db: &self.name,
                generation: self.generation,
                expected_head: self.head,
                new_size: self.pending_size,
                commit_id,
                pages: &pages,
            })
        } else {
            let per_part = (self.fast_path_limit as usize / PAGE_SIZE).max(1);
            let parts = parts_on_shard_boundaries(&pages, per_part);
            VfsMetrics::add(&m.large_commits, 1);
            self.transport.commit_large(&LargeCommit {
                db: &self.name,
                generation: self.generation,
                expected_head: self.head,
                new_size: self.pending_size,
                commit_id,
                parts: &parts,
            })
        };
        let sent = pages.len() as u64;
        drop(pages);
        VfsMetrics::time(&m.commit_send_nanos, prepared.elapsed());
        match result {
            Ok(r) => {
                self.head = r.txid;
                if r.size_pages < self.size {
                    self.cache.truncate(r.size_pages);
                }
                self.size = r.size_pages;
                self.pending_size = r.size_pages;
                for (pgno, page) in std::mem::take(&mut self.dirty) {
                    self.cache.insert(pgno, page.into());
                }
                if let Some(page) = counter_only {
                    self.cache.insert(1, page.into());
                }
                self.batch_undo = None;
                VfsMetrics::add(&m.commits, 1);
                VfsMetrics::add(
                    match point {
                        CommitPoint::Batch => &m.batch_commits,
                        CommitPoint::Sync | CommitPoint::PhaseTwo => &m.sync_commits,
                    },
                    1,
                );
                VfsMetrics::add(&m.pages_committed, sent);
                VfsMetrics::add(&m.bytes_sent, sent * PAGE_SIZE as u64);
                VfsMetrics::time(&m.commit_nanos, started.elapsed());
                Ok(())
            }
            Err(e) => {
                if let Some(page) = counter_only {
                    self.dirty.insert(1, page);
                }
                VfsMetrics::add(&m.failed_commits, 1);
                self.fail(format!("commit failed: {e}"));
                let code = match &e {
                    // Only this connection writes under its generation: a
                    // head that moved under it means one of its own commits
                    // landed unseen, so nothing cached can be trusted.
                    Error::Fenced {
                        reason: FenceReason::HeadMismatch { generation, .. },
                        ..
                    } if *generation == self.generation => {
                        self.poison(Poison::Unknown(format!(
                            "{e}: a commit of this connection landed without its answer"
                        )));
                        ffi::SQLITE_READONLY_DBMOVED
                    }
                    Error::Fenced { .. } => {
                        self.poison(Poison::Fenced(e.to_string()));
                        ffi::SQLITE_READONLY_DBMOVED
                    }
                    Error::OutcomeUnknown(_) => {
                        self.poison(Poison::Unknown(e.to_string()));
                        ffi::SQLITE_READONLY_DBMOVED
                    }
                    Error::QuotaExceeded { .. } | Error::TooLarge(_) | Error::StoreFull(_) => {
                        ffi::SQLITE_FULL
                    }
                    _ if point == CommitPoint::Batch => ffi::SQLITE_IOERR_WRITE,
                    _ => ffi::SQLITE_IOERR_FSYNC,
                };
                // The buffer stays as SQLite left it, like a file whose sync
                // failed: SQLite undoes the batch (ROLLBACK_ATOMIC_WRITE) or
                // plays its journal back through it.
                Err(code)
            }
        }
    }
}

impl Drop for DbFile {
    fn drop(&mut self) {
        if let Some(r) = &self.reader {
            // Best effort: an unreleased pin expires by itself.
            let _ = self.transport.end_read(&self.name, r.id);
        }
    }
}

/// Where page 1 holds SQLite's file change counter and the "version valid
/// for" number that must equal it.
const CHANGE_COUNTER: usize = 24;
const VERSION_VALID_FOR: usize = 92;

/// Whether two versions of page 1 differ only in the change counter (and
/// its "version valid for" copy).
fn only_change_counter_differs(old: &[u8], new: &[u8]) -> bool {
    old.len() == new.len()
        && old.iter().zip(new).enumerate().all(|(i, (a, b))| {
            a == b
                || (CHANGE_COUNTER..CHANGE_COUNTER + 4).contains(&i)
                || (VERSION_VALID_FOR..VERSION_VALID_FOR + 4).contains(&i)
        })
}

/// A reader's page 1 carries a change counter of its own, the commit it
/// reads (low 32 bits, in both places SQLite keeps it): SQLite drops its
/// page cache exactly when the reader moves to another commit, whatever
/// the stored counter says. `chunk` is page 1's bytes from offset `off`.
fn reader_change_counter(head: u64, off: usize, chunk: &mut [u8]) {
    let counter = (head as u32).to_be_bytes();
    for field in [CHANGE_COUNTER, VERSION_VALID_FOR] {
        for (i, byte) in counter.iter().enumerate() {
            if let Some(at) = (field + i).checked_sub(off)
                && let Some(b) = chunk.get_mut(at)
            {
                *b = *byte;
            }
        }
    }
}

/// kvlite stores 4 KiB pages only.
fn check_page_size(name: &str, page_size: u32) -> Result<(), Error> {
    if page_size as usize != PAGE_SIZE {
        return Err(Error::invalid(
            InvalidKind::PageSize,
            format!(
                "database {name:?} has {page_size}-byte pages; kvlite stores {PAGE_SIZE}-byte pages"
            ),
        ));
    }
    Ok(())
}

/// A large commit's pages (ascending) in parts of at most `per_part`, each
/// ending where a shard ends when the part holds a shard boundary: into a
/// blank database the engine stores the shards a part holds whole in
/// place, so a shard cut between two parts would go through a delta.
fn parts_on_shard_boundaries<'p, 'd>(
    pages: &'p [PageRef<'d>],
    per_part: usize,
) -> Vec<&'p [PageRef<'d>]> {
    let shard = |p: &PageRef<'_>| p.0 / SHARD_PAGES;
    let mut parts = Vec::with_capacity(pages.len() / per_part.max(1) + 1);
    let mut rest = pages;
    while !rest.is_empty() {
        let mut end = per_part.max(1).min(rest.len());
        if end < rest.len() {
            // The last boundary between two shards inside the part, if any.
            if let Some(cut) = (1..=end)
                .rev()
                .find(|&i| matches!((rest.get(i - 1), rest.get(i)), (Some(a), Some(b)) if shard(a) != shard(b)))
            {
                end = cut;
            }
        }
        let (part, tail) = rest.split_at(end);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// Copy `dst.len()` bytes of `page` from `off`; a range outside the page is
/// an I/O error for SQLite, never a panic.
fn copy_from(page: &[u8], off: usize, dst: &mut [u8]) -> Result<(), c_int> {
    let src = page
        .get(off..off + dst.len())
        .ok_or(ffi::SQLITE_IOERR_READ)?;
    dst.copy_from_slice(src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(parts: &[&[PageRef<'_>]]) -> Vec<Vec<u32>> {
        parts
            .iter()
            .map(|p| p.iter().map(|r| r.0).collect())
            .collect()
    }

    #[test]
    fn large_commit_parts_end_on_shard_boundaries() {
        let page = [0u8; PAGE_SIZE];
        let all: Vec<PageRef<'_>> = (1..=5000).map(|p| (p, &page[..])).collect();
        let parts = parts_on_shard_boundaries(&all, 2048);
        let got = numbers(&parts);
        assert_eq!(got.len(), 3);
        assert_eq!(got.concat(), (1..=5000).collect::<Vec<u32>>());
        for part in &got[..got.len() - 1] {
            assert!(part.len() <= 2048);
            assert_eq!(part.last().map(|p| p % SHARD_PAGES), Some(SHARD_PAGES - 1));
        }
        // No boundary inside a part: cut at the limit.
        let one_shard: Vec<PageRef<'_>> = (64..=70).map(|p| (p, &page[..])).collect();
        assert_eq!(
            numbers(&parts_on_shard_boundaries(&one_shard, 3)),
            vec![vec![64, 65, 66], vec![67, 68, 69], vec![70]]
        );
        // Scattered pages: each part still ends where its last shard does.
        let scattered: Vec<PageRef<'_>> = [1, 2, 63, 64, 65, 200, 201, 300]
            .into_iter()
            .map(|p| (p, &page[..]))
            .collect();
        assert_eq!(
            numbers(&parts_on_shard_boundaries(&scattered, 4)),
            vec![vec![1, 2, 63], vec![64, 65, 200, 201], vec![300]]
        );
        assert!(parts_on_shard_boundaries(&[], 4).is_empty());
    }
}
