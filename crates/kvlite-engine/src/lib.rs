//! kvlite's storage engine: SQLite pages for many databases, stored as LTX
//! deltas plus a page index (and, after compaction, shards) in a
//! transactional KV store. Transport-free: the VFS calls it in process, the
//! server calls it for remote clients.
//!
//! Invariants (each operation keeps them inside one KV transaction):
//! - every page `1..=size` except SQLite's lock page is either named by a
//!   page-index entry (→ a committed delta) or held by its shard;
//! - page-index entries and the head txid change together, so a reader never
//!   sees a head whose pages it cannot find;
//! - delta chunks above the head belong to unfinished large commits, are
//!   tracked by PENDING records, are invisible, and are removed by takeover;
//! - META's usage counters equal the bytes of META, page index, deltas and
//!   shards (checked by [`Engine::audit`]);
//! - generations are unique across a name's incarnations (they start at
//!   `id << 32`), so a fenced-out writer can never write into a recreated
//!   database of the same name.

mod admin;
mod blob;
mod cache;
mod commit;
mod compact;
mod compactor;
mod doctor;
mod error;
mod fork;
mod gate;
mod history;
pub mod keys;
mod large;
mod local;
pub mod metrics;
mod moving;
mod read;
mod readers;
pub mod records;
mod v1;

use std::sync::{Arc, Mutex};

use kvlite_kv::{Kv, KvRead, WriteTxn};
use prometheus_client::registry::Registry;

pub use admin::{Audit, Layout, StoreAudit};
pub use compact::CompactionConfig;
#[cfg(feature = "test-hooks")]
pub use compact::CompactionStep;
pub use compactor::Compactor;
pub use history::{CREATION_TXID, DEFAULT_RETENTION};
pub use kvlite_api::{
    CommitInfo, CommitRequest, CommitResult, CommitStatus, CompactionReport, CorruptionKind,
    DbStat, Error, FenceReason, ForkOrigin, Forked, HistoryPage, InvalidKind, LOCK_PAGE,
    LargeCommit, MAX_FORK_DEPTH, MAX_NAME_LEN, MAX_PAGES, OpenResponse, Origin, PAGE_SIZE, PageRef,
    Preload, ReadAt, ReadPoint, ReadState, Restored, Result, SHARD_PAGES, TooLargeKind,
    validate_name,
};
pub use large::{MAX_RESERVATIONS, max_commit_pages};
pub use local::LocalTransport;
pub use metrics::EngineMetrics;
pub use moving::PlacementRecord;
pub use readers::READER_LEASE;
pub use records::meta::{self, Meta};
pub use v1::{
    MigrateOptions, MigrationConfig, MigrationOutcome, MigrationReport, MigrationStep, V1Inventory,
    V1Store,
};

use cache::{DbState, StateTable, lock};
use error::{Fail, corrupt, too_large};
use keys::DbKeys;

pub(crate) static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Quota of a newly created database.
    pub default_quota_bytes: u64,
    /// Largest raw dirty payload of a one-round-trip commit (and of one part
    /// of a large commit); capped so a commit fits one KV transaction.
    pub fast_path_limit: u64,
    /// Byte budget for pages preloaded by `open`.
    pub preload_budget: usize,
    /// Page-index entries cached across all databases.
    pub max_cached_pidx_entries: usize,
    /// Largest page index of one database that is loaded whole (and
    /// cached); reads of a larger one look up their pages one by one, and
    /// compaction plans it in pieces.
    pub max_loaded_page_index_entries: u64,
    /// Decoded blobs (delta parts, shards) cached across all databases: a
    /// read would otherwise decode a whole part or shard for one page.
    pub blob_cache_bytes: usize,
    pub compaction: CompactionConfig,
    pub migration: MigrationConfig,
    /// How long a database's commits stay readable (reads in the past,
    /// restores, forks) unless the database sets its own retention; zero
    /// keeps no history.
    pub history_retention: std::time::Duration,
    /// Whether reads of pages read ahead (`Engine::read_ahead`: META, page
    /// index and blobs in one batched read, by the engine's last view).
    /// `None`: where the store is a network away (it counts round trips).
    pub read_ahead: Option<bool>,
    /// Whether a writer's commit trusts this engine's last view of META
    /// instead of reading it first: the KV commit applies only if META (and
    /// the directory entry) still hold what the view says
    /// (`WriteTxn::expect`), else it is read and the commit tried again.
    /// On PostgreSQL a small commit is then one round trip. `None`: where
    /// the store is a network away.
    pub guarded_commits: Option<bool>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_quota_bytes: 10 << 30,
            fast_path_limit: 8 << 20,
            preload_budget: 1 << 20,
            max_cached_pidx_entries: 4_000_000,
            max_loaded_page_index_entries: 262_144,
            blob_cache_bytes: 256 << 20,
            compaction: CompactionConfig::default(),
            migration: MigrationConfig::default(),
            history_retention: history::DEFAULT_RETENTION,
            read_ahead: None,
            guarded_commits: None,
        }
    }
}

/// The storage engine. One per process; share it behind an `Arc`.
pub struct Engine {
    kv: Kv,
    config: EngineConfig,
    states: StateTable,
    blob_cache: blob::BlobCache,
    metrics: EngineMetrics,
    /// Set while a background compactor runs: where to signal it.
    compaction_signal: Mutex<Option<std::sync::mpsc::Sender<compactor::Signal>>>,
    /// Passes on the same database (background and explicit) take turns.
    compaction_gates: gate::Gates,
    /// So do migrations: one job per database in this process (others in
    /// other processes are kept out by the lease).
    migration_gates: gate::Gates,
    /// When a write last failed because the store was full (ms since the
    /// epoch; 0: no write failed so since the last one that succeeded).
    store_full_since_ms: std::sync::atomic::AtomicU64,
    /// What live readers read at: compaction folds no further.
    readers: readers::ReaderPins,
    /// This engine among all that share the store (compaction leases).
    instance: u128,
    /// Added to the wall clock for commit times and retention (tests move
    /// time forward instead of waiting).
    clock_offset_ms: std::sync::atomic::AtomicU64,
}

/// What the engine knows of its store's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    Ok,
    /// Writes fail for lack of space (since this many ms after the epoch);
    /// reads work, and writes that free space do.
    Full {
        since_ms: u64,
    },
}

/// A database as a transaction found it: its cached state, keys and META.
pub(crate) type Resolved = (Arc<Mutex<DbState>>, DbKeys, Meta);

impl Engine {
    pub fn new(kv: Kv, mut config: EngineConfig, registry: &mut Registry) -> Arc<Self> {
        config.fast_path_limit = config
            .fast_path_limit
            .min(max_fast_path_bytes(kv.limits().max_txn_bytes));
        Arc::new(Engine {
            states: StateTable::new(config.max_cached_pidx_entries),
            blob_cache: blob::BlobCache::new(config.blob_cache_bytes),
            metrics: EngineMetrics::new(registry),
            kv,
            config,
            compaction_signal: Mutex::new(None),
            compaction_gates: Default::default(),
            migration_gates: Default::default(),
            store_full_since_ms: std::sync::atomic::AtomicU64::new(0),
            readers: Default::default(),
            instance: fastrand::u128(..),
            clock_offset_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The engine's time (ms since the epoch): when commits land, and what
    /// retention windows are measured against.
    pub fn now_ms(&self) -> u64 {
        blob::now_ms().saturating_add(
            self.clock_offset_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Move this engine's clock forward (tests of retention windows).
    #[cfg(feature = "test-hooks")]
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.clock_offset_ms.fetch_add(
            by.as_millis().min(u128::from(u64::MAX)) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    /// Whether writes currently fail for lack of space.
    pub fn store_health(&self) -> StoreHealth {
        match self
            .store_full_since_ms
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => StoreHealth::Ok,
            since_ms => StoreHealth::Full { since_ms },
        }
    }

    /// Note how a data write (a commit, a compaction pass) ended: a full
    /// store sets the degraded state, a successful one clears it.
    pub(crate) fn observe_write<T>(&self, r: Result<T>) -> Result<T> {
        use std::sync::atomic::Ordering::Relaxed;
        match &r {
            Ok(_) => {
                self.store_full_since_ms.store(0, Relaxed);
            }
            Err(Error::StoreFull(_)) => {
                let _ = self.store_full_since_ms.compare_exchange(
                    0,
                    blob::now_ms().max(1),
                    Relaxed,
                    Relaxed,
                );
            }
            Err(_) => {}
        }
        r
    }

    /// The newest generation of `db` this engine has seen and when it took
    /// over (from its cached META: every takeover and commit through this
    /// engine updates it): what a writer in this process checks, without a
    /// KV read, to learn another opener fenced it.
    pub fn newest_generation(&self, db: &str) -> Option<(u64, u64)> {
        let state = self.states.get(db)?;
        let s = lock(&state);
        s.meta.as_ref().map(|m| (m.generation, m.taken_over_ms))
    }

    /// Tell the other processes on this store (other servers on one
    /// PostgreSQL) that `db` was taken over at `generation`: they tell
    /// their writers of it, which then answer nothing more from their
    /// caches. A hint: the commit path fences whether or not it arrives.
    pub(crate) fn announce_takeover(&self, db: &str, generation: u64, since_ms: u64) {
        self.kv
            .announce(&format!("{TAKEOVER_NOTICE} {generation} {since_ms} {db}"));
    }

    /// Takeovers announced by any process on this store from now on (see
    /// [`TakeoverWatch`]); `None` on a store only this process uses.
    pub fn watch_takeovers(&self) -> Option<TakeoverWatch> {
        self.kv.watch().map(|watch| TakeoverWatch { watch })
    }

    /// Forget cached page indexes and decoded blobs, as a freshly started
    /// process would have none (benchmarks of cold opens).
    pub fn clear_caches(&self) {
        self.states.clear();
        self.blob_cache.clear();
    }

    /// Take a database over (creating it if absent): bump its generation,
    /// remove whatever an earlier writer left unfinished, and return its head
    /// with page 1 and the requested pages preloaded.
    pub fn open(&self, db: &str, preload: &Preload) -> Result<OpenResponse> {
        if db.starts_with(keys::STAGING_MARK) {
            return Err(Error::invalid(
                InvalidKind::Name,
                format!("{db:?} names a database moving in; it cannot be opened"),
            ));
        }
        self.open_as(db, preload, false)
    }

    /// [`Engine::open`], or (`staging`) the takeover of a database moving
    /// in under its staging name.
    pub(crate) fn open_as(
        &self,
        db: &str,
        preload: &Preload,
        staging: bool,
    ) -> Result<OpenResponse> {
        let r = self.take_over(db, preload, staging);
        // A takeover's write is tiny: it may fit where data does not, so it
        // never counts as the store having room again.
        match r {
            Ok(o) => Ok(o),
            Err(e) => self.observe_write(Err(e)),
        }
    }

    fn take_over(&self, db: &str, preload: &Preload, staging: bool) -> Result<OpenResponse> {
        validate_name(db)?;
        // Leftovers of unfinished large commits go in the takeover's own
        // transaction; only a backlog too big for one continues in bounded
        // transactions after it. A database with v1 data and no finished v2
        // head is migrated first (and a concurrent delete may undo that, so
        // the loop is bounded, not endless).
        let mut migrations = 0;
        let (id, meta, created, cleaned) = loop {
            let taken = self.kv.transact(|txn| {
                let Some((id, meta, created)) = self.takeover_txn(txn, db, staging)? else {
                    return Ok::<_, Fail>(None);
                };
                // (A bounded read of the leftovers: one more round trip on
                // a networked store, but a takeover's work stays bounded
                // however much an abandoned large commit parked.)
                let cleaned = created || large::clean_some_orphans(txn, &DbKeys { id }, &meta)?;
                Ok(Some((id, meta, created, cleaned)))
            })?;
            match taken {
                Some(t) => break t,
                None if migrations < 3 => {
                    migrations += 1;
                    match self.migrate_v1(db, &MigrateOptions::default()) {
                        // Deleted meanwhile: the next round sees what is left.
                        Ok(_) | Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    return Err(Error::Unavailable(format!(
                        "database {db:?} is still being migrated from the v1 layout"
                    )));
                }
            }
        };
        self.metrics.takeovers.inc();
        if !staging {
            self.announce_takeover(db, meta.generation, meta.taken_over_ms);
        }
        if !cleaned {
            self.clean_orphans(db, id, meta.generation)?;
        }
        let state = self.states.get_or_insert(db, id);
        {
            // The bumped META version already invalidates the cached index;
            // dropping it frees the memory now.
            let mut s = lock(&state);
            self.states.set_pidx(&mut s, None);
            s.meta = Some(meta.clone());
        }
        // Only the lowest `budget` pages survive the truncation below, so no
        // range needs to contribute more than that many.
        let budget_pages = self.config.preload_budget / PAGE_SIZE;
        let mut wanted = vec![1];
        wanted.extend(&preload.pages);
        for &(from, to) in &preload.ranges {
            wanted.extend((from.max(1)..=to.min(meta.size_pages)).take(budget_pages));
        }
        wanted.sort_unstable();
        wanted.dedup();
        wanted.retain(|&p| p >= 1 && p <= meta.size_pages);
        wanted.truncate(budget_pages);
        let pages = if wanted.is_empty() {
            Vec::new()
        } else {
            let got = self.get_pages(db, meta.generation, &wanted)?;
            wanted
                .into_iter()
                .zip(got)
                .filter_map(|(p, d)| d.map(|d| (p, d)))
                .collect()
        };
        self.maybe_signal_compaction(db, &meta, compactor::Cause::Other);
        Ok(OpenResponse {
            generation: meta.generation,
            head_txid: meta.head_txid,
            size_pages: meta.size_pages,
            page_size: PAGE_SIZE as u32,
            fast_path_limit: meta.fast_path_limit,
            created,
            pages,
        })
    }

    /// A client's takeover: `None` (before writing anything) when the
    /// database must be migrated from v1 first.
    fn takeover_txn(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        staging: bool,
    ) -> error::Result<Option<(u64, Meta, bool)>> {
        let (id, meta, created) = match txn.get(&keys::dir(db))? {
            Some(v) => {
                let id = decode_id(db, &v)?;
                let meta = self.meta_in(txn, db, &DbKeys { id }).map_err(|e| match e {
                    Fail::Api(Error::NotFound(_)) => corrupt(
                        db,
                        CorruptionKind::MissingData,
                        "directory entry without META",
                    ),
                    e => e,
                })?;
                if meta.origin == Origin::MigratingFromV1 {
                    return Ok(None);
                }
                (id, meta, false)
            }
            None if staging => {
                let (id, meta) = self.create_in(txn, db, Origin::Native)?;
                (id, meta, true)
            }
            None if v1::has_v1_data(txn, db)? => return Ok(None),
            None => {
                // Never re-create a database that moved away here.
                moved_check(txn, db)?;
                kvlite_api::validate_new_name(db)?;
                let (id, meta) = self.create_in(txn, db, Origin::Native)?;
                (id, meta, true)
            }
        };
        Ok(Some((id, self.bump_in(txn, id, meta)?, created)))
    }

    /// Name a new database (its META is written by [`Engine::bump_in`]).
    pub(crate) fn create_in(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        origin: Origin,
    ) -> error::Result<(u64, Meta)> {
        let id = match txn.get(keys::NEXT_DB_ID)? {
            Some(v) => decode_id(db, &v)?,
            None => 1,
        };
        if id >= 1 << 31 {
            return Err(too_large(
                TooLargeKind::DatabaseIds,
                "database ids exhausted",
            ));
        }
        txn.set(keys::NEXT_DB_ID, &(id + 1).to_be_bytes())?;
        txn.set(&keys::dir(db), &id.to_be_bytes())?;
        // (A fork or restore made the name live here again.)
        txn.clear(&keys::moved(db))?;
        let mut meta = Meta::new(
            self.now_ms(),
            self.config.default_quota_bytes,
            self.config.fast_path_limit,
        );
        meta.generation = id << 32;
        meta.origin = origin;
        Ok((id, meta))
    }

    /// The takeover's write: a new generation fences out every earlier writer.
    pub(crate) fn bump_in(
        &self,
        txn: &mut WriteTxn<'_>,
        id: u64,
        mut meta: Meta,
    ) -> error::Result<Meta> {
        meta.generation += 1;
        meta.taken_over_ms = self.now_ms();
        meta.version += 1;
        meta.fast_path_limit = self.config.fast_path_limit;
        txn.set(&DbKeys { id }.meta(), &meta.encode())?;
        Ok(meta)
    }

    /// Remove large-commit leftovers above the head, in bounded transactions
    /// fenced on the new generation; correct if interrupted (the next
    /// takeover continues).
    fn clean_orphans(&self, db: &str, id: u64, generation: u64) -> error::Result<()> {
        let keys = DbKeys { id };
        loop {
            let done = self.kv.transact(|txn| {
                let meta = self.meta_in(txn, db, &keys)?;
                if meta.generation != generation {
                    return Ok(true); // a newer takeover owns the cleanup now
                }
                large::clean_some_orphans(txn, &keys, &meta)
            })?;
            if done {
                return Ok(());
            }
        }
    }

    pub(crate) fn meta_in(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
    ) -> error::Result<Meta> {
        match txn.get(&keys.meta())? {
            Some(v) => decode_meta(db, &v),
            None => Err(Error::NotFound(db.to_string()).into()),
        }
    }

    /// Resolve a name to its id and current META inside a transaction: the
    /// directory entry and the META of the id cached for the name in one
    /// batched read; the cached id is used only while the name still names
    /// it (a restore points the name at another id, whose predecessor's
    /// META lives on under the backup name).
    pub(crate) fn resolve(&self, txn: &mut impl KvRead, db: &str) -> error::Result<Resolved> {
        let dir_key = keys::dir(db);
        let cached = self.states.get(db).map(|state| {
            let id = lock(&state).id;
            (state, DbKeys { id })
        });
        let (dir, cached_meta) = match &cached {
            Some((_, keys)) => {
                let meta_key = keys.meta();
                let mut got = txn.get_many(&[&dir_key, &meta_key])?.into_iter();
                (got.next().flatten(), got.next().flatten())
            }
            None => (txn.get(&dir_key)?, None),
        };
        let Some(dir) = dir else {
            moved_check(txn, db)?;
            return Err(Error::NotFound(db.to_string()).into());
        };
        let id = decode_id(db, &dir)?;
        if let (Some((state, keys)), Some(meta)) = (cached, cached_meta)
            && keys.id == id
        {
            return Ok((state, keys, decode_meta(db, &meta)?));
        }
        let keys = DbKeys { id };
        let meta = self.meta_in(txn, db, &keys)?;
        Ok((self.states.get_or_insert(db, keys.id), keys, meta))
    }

    /// Whether to trade work for round trips (read ahead, guarded
    /// commits): as `setting` says, else where the store is a network away
    /// (it counts round trips). In process a read is cheap, and guessing
    /// can only add work.
    pub(crate) fn saves_round_trips(&self, setting: Option<bool>) -> bool {
        setting.unwrap_or_else(|| self.kv.round_trips().is_some())
    }

    pub(crate) fn fence(&self, db: &str, meta: &Meta, generation: u64) -> error::Result<()> {
        if meta.generation != generation {
            self.metrics.fence_rejections.inc();
            return Err(Fail::Api(Error::Fenced {
                db: db.to_string(),
                reason: FenceReason::StaleGeneration {
                    current: meta.generation,
                    yours: generation,
                    head: meta.head_txid,
                    since_ms: meta.taken_over_ms,
                },
            }));
        }
        Ok(())
    }

    pub(crate) fn fence_head(
        &self,
        db: &str,
        meta: &Meta,
        generation: u64,
        head: u64,
    ) -> error::Result<()> {
        self.fence(db, meta, generation)?;
        if meta.head_txid != head {
            self.metrics.fence_rejections.inc();
            return Err(Fail::Api(Error::Fenced {
                db: db.to_string(),
                reason: FenceReason::HeadMismatch {
                    generation: meta.generation,
                    current: meta.head_txid,
                    expected: head,
                },
            }));
        }
        Ok(())
    }
}

/// The largest raw payload whose worst-case encoding (incompressible pages,
/// LTX framing, page-index entries, chunk keys) plus a margin for META and
/// truncation work stays within a transaction of `max_txn_bytes`.
pub fn max_fast_path_bytes(max_txn_bytes: usize) -> u64 {
    let margin = 1 << 20;
    let per_page =
        PAGE_SIZE as u64 + PAGE_SIZE as u64 / 255 + 16 + 10 + 24 + records::PIDX_ENTRY_BYTES;
    let pages = (max_txn_bytes as u64).saturating_sub(margin) / per_page;
    pages * PAGE_SIZE as u64
}

pub(crate) fn decode_id(db: &str, v: &[u8]) -> error::Result<u64> {
    let bytes: [u8; 8] = v
        .try_into()
        .map_err(|_| corrupt(db, CorruptionKind::Record, "malformed database id"))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn decode_meta(db: &str, v: &[u8]) -> error::Result<Meta> {
    Meta::decode(v).ok_or_else(|| corrupt(db, CorruptionKind::Record, "malformed META"))
}

const TAKEOVER_NOTICE: &str = "taken-over";

/// Takeovers announced on a store shared with other processes.
pub struct TakeoverWatch {
    watch: kvlite_kv::Watch,
}

/// One announced takeover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeoverNotice {
    pub db: String,
    pub generation: u64,
    pub since_ms: u64,
}

impl TakeoverWatch {
    /// The next takeover, waiting up to `timeout`: `Ok(None)` when none
    /// came, `Err(())` once nothing more can come. Malformed announcements
    /// are skipped.
    #[allow(clippy::result_unit_err)]
    pub fn next(
        &self,
        timeout: std::time::Duration,
    ) -> std::result::Result<Option<TakeoverNotice>, ()> {
        match self.watch.next(timeout) {
            Ok(message) => Ok(parse_takeover(&message)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(()),
        }
    }
}

fn parse_takeover(message: &str) -> Option<TakeoverNotice> {
    let mut parts = message.splitn(4, ' ');
    if parts.next()? != TAKEOVER_NOTICE {
        return None;
    }
    let generation = parts.next()?.parse().ok()?;
    let since_ms = parts.next()?.parse().ok()?;
    let db = parts.next()?.to_string();
    Some(TakeoverNotice {
        db,
        generation,
        since_ms,
    })
}

/// A name with no database here: if it moved to another cluster, say so
/// (a router follows it) rather than "not found".
pub(crate) fn moved_check(txn: &mut impl KvRead, db: &str) -> error::Result<()> {
    if let Some(cluster) = moved_marker(txn, db)? {
        return Err(Error::Fenced {
            db: db.to_string(),
            reason: FenceReason::Moved { cluster },
        }
        .into());
    }
    Ok(())
}

/// The cluster `db` moved to from this store, if it did.
pub(crate) fn moved_marker(txn: &mut impl KvRead, db: &str) -> error::Result<Option<u32>> {
    txn.get(&keys::moved(db))?
        .map(|v| {
            <[u8; 4]>::try_from(v.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt(db, CorruptionKind::Record, "malformed moved marker"))
        })
        .transpose()
}
