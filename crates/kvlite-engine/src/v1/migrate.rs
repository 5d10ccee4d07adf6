//! The v1 → v2 migration job (steps in the [module docs](super)).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvlite_api::{
    CorruptionKind, Error, LOCK_PAGE, Origin, PAGE_SIZE, PageRef, SHARD_PAGES, V1File, V1Files,
    validate_name,
};
use kvlite_kv::KvRead;

use super::lease::{self, Heartbeat, Take};
use super::overlay::Overlay;
use super::store::{V1Inventory, V1Store};
use super::{check_migrating, keys};
use crate::error::Fail;
use crate::keys::DbKeys;
use crate::metrics::MigrationPhase as Phase;
use crate::{Engine, decode_id, decode_meta};

#[derive(Debug, Clone)]
pub struct MigrationConfig {
    /// How long a lease lives without a heartbeat: a job that died holds a
    /// database this long. The heartbeat renews it every quarter of it.
    pub lease: Duration,
    /// How long an open (or `kvlite migrate`) waits for another job's
    /// migration of the same database before giving up.
    pub wait: Duration,
    /// How often a waiter looks at the lease.
    pub poll: Duration,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            lease: Duration::from_secs(10),
            wait: Duration::from_secs(30 * 60),
            poll: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    /// Recover and verify in memory, report, change nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// This call migrated the database.
    Migrated,
    /// It already had a v2 head (another job, or an earlier call).
    AlreadyMigrated,
    /// A dry run found it can be migrated.
    WouldMigrate,
}

/// What a migration did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub db: String,
    pub outcome: MigrationOutcome,
    /// The v1 files found.
    pub files: V1Inventory,
    /// The v1 database's page size.
    pub page_size: u32,
    /// 4 KiB pages of the v2 database.
    pub pages: u64,
    /// A hot rollback journal was rolled back.
    pub journal_recovered: bool,
    /// A WAL with frames was checkpointed into the database.
    pub wal_checkpointed: bool,
    /// The most memory the in-memory overlay held at once (rewritten
    /// chunks, read-ahead; a page-size conversion holds the whole image).
    /// The copy adds one part's buffer (at most the fast-path limit).
    pub overlay_peak_bytes: u64,
    pub elapsed: Duration,
}

/// Points of a job a test can act at (`migrate_v1_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationStep {
    LeaseTaken,
    /// Recovered and verified in memory; nothing of v2 written yet.
    Recovered,
    /// A part of a large commit stored; pages copied so far.
    PartWritten(u64),
    /// Every page stored; the switching commit is next.
    BeforeSwitch,
    AfterSwitch,
}

/// Why a job stopped.
pub(super) enum JobError {
    /// Another job took the lease over: wait for it.
    LeaseLost,
    Failed(Phase, Error),
}

pub(super) type JobResult<T> = std::result::Result<T, JobError>;

pub(super) fn at(phase: Phase) -> impl Fn(Error) -> JobError {
    move |e| JobError::Failed(phase, e)
}

/// A database recovered in memory, ready to copy.
pub(super) struct Recovered {
    pub(super) overlay: Arc<Overlay>,
    pub(super) page_size: u32,
    pub(super) pages: u64,
    pub(super) journal_recovered: bool,
    pub(super) wal_checkpointed: bool,
}

impl Engine {
    /// The v1 files of this engine's store (`kvlite sql --layout v1`,
    /// `kvlite import --layout v1`, tests).
    pub fn v1_files(&self) -> V1Store {
        V1Store::new(self.kv.clone())
    }

    /// Migrate `db` from the v1 layout to v2 (see the module docs). Waits
    /// for another job migrating it; returns `NotFound` if it has no v1
    /// data and no v2 head.
    pub fn migrate_v1(
        &self,
        db: &str,
        options: &MigrateOptions,
    ) -> kvlite_api::Result<MigrationReport> {
        self.migrate_v1_hooked(db, options, &|_| {})
    }

    /// [`Engine::migrate_v1`], calling `on_step` at each step.
    #[cfg(feature = "test-hooks")]
    pub fn migrate_v1_with(
        &self,
        db: &str,
        options: &MigrateOptions,
        on_step: &dyn Fn(MigrationStep),
    ) -> kvlite_api::Result<MigrationReport> {
        self.migrate_v1_hooked(db, options, on_step)
    }

    /// Databases with a migration job of this engine queued or running
    /// (tests: the table holds only those).
    pub fn migrations_in_process(&self) -> usize {
        self.migration_gates.len()
    }

    fn migrate_v1_hooked(
        &self,
        db: &str,
        options: &MigrateOptions,
        hook: &dyn Fn(MigrationStep),
    ) -> kvlite_api::Result<MigrationReport> {
        validate_name(db)?;
        if options.dry_run {
            return self.dry_run(db);
        }
        self.migration_gates
            .run(db, || self.migrate_gated(db, hook))
    }

    fn migrate_gated(
        &self,
        db: &str,
        hook: &dyn Fn(MigrationStep),
    ) -> kvlite_api::Result<MigrationReport> {
        let m = &self.metrics.migration;
        let config = &self.config.migration;
        let started = Instant::now();
        let holder = fastrand::u128(1..);
        let mut waited_for: Option<lease::Lease> = None;
        loop {
            let taken = lease::take(&self.kv, db, holder, config.lease).map_err(|e| {
                m.failure(Phase::Lease);
                Error::from(e)
            })?;
            match taken {
                Take::Taken => {}
                Take::Done => return self.already_migrated(db, started),
                Take::NotV1 => return Err(Error::NotFound(db.to_string())),
                Take::Held(l) => {
                    if waited_for != Some(l) {
                        tracing::info!(db, "waiting for another job's migration");
                        waited_for = Some(l);
                    }
                    if started.elapsed() >= config.wait {
                        return Err(Error::Unavailable(format!(
                            "database {db:?} is being migrated by another job; waited {:?}",
                            config.wait
                        )));
                    }
                    std::thread::sleep(config.poll);
                    continue;
                }
            }
            m.attempts.inc();
            m.running.inc();
            tracing::info!(db, "migrating from the v1 layout");
            let heartbeat = Heartbeat::start(self.kv.clone(), db, holder, config.lease);
            hook(MigrationStep::LeaseTaken);
            let r = self.run_job(db, holder, &heartbeat, hook);
            let r = match r {
                Err(JobError::Failed(phase, e)) if heartbeat.lost() => {
                    tracing::info!(db, ?phase, error = %e, "migration lost its lease");
                    Err(JobError::LeaseLost)
                }
                r => r,
            };
            drop(heartbeat);
            m.running.dec();
            match r {
                Ok(mut report) => {
                    report.elapsed = started.elapsed();
                    m.successes.inc();
                    m.seconds.observe(report.elapsed.as_secs_f64());
                    m.pages.observe(report.pages as f64);
                    tracing::info!(db, pages = report.pages, elapsed = ?report.elapsed, "migrated");
                    return Ok(report);
                }
                // The job that took the lease finishes the work; wait for it.
                Err(JobError::LeaseLost) => continue,
                Err(JobError::Failed(phase, e)) => {
                    m.failure(phase);
                    tracing::warn!(db, ?phase, error = %e, "migration failed");
                    if let Err(cleanup) = self.abandon_migration(db, holder) {
                        tracing::warn!(db, %cleanup, "could not clean up the failed migration");
                    }
                    return Err(e);
                }
            }
        }
    }

    fn already_migrated(&self, db: &str, started: Instant) -> kvlite_api::Result<MigrationReport> {
        let files = self.v1_files().inventory(db)?;
        let stat = self.stat(db)?;
        Ok(MigrationReport {
            db: db.to_string(),
            outcome: MigrationOutcome::AlreadyMigrated,
            files,
            page_size: PAGE_SIZE as u32,
            pages: u64::from(stat.size_pages),
            journal_recovered: false,
            wal_checkpointed: false,
            overlay_peak_bytes: 0,
            elapsed: started.elapsed(),
        })
    }

    fn dry_run(&self, db: &str) -> kvlite_api::Result<MigrationReport> {
        let started = Instant::now();
        let state = self.kv.read(|txn| {
            Ok::<_, Fail>((lease::v2_origin(txn, db)?, super::has_v1_data(txn, db)?))
        })?;
        match state {
            (Some(Origin::MigratingFromV1), _) | (None, true) => {}
            (Some(_), _) => return self.already_migrated(db, started),
            (None, false) => return Err(Error::NotFound(db.to_string())),
        }
        let files = self.v1_files().inventory(db)?;
        let job = format!("dry-run-{:032x}", fastrand::u128(..));
        let r = self.recover(db, &job, &files).map_err(|e| match e {
            JobError::Failed(_, e) => e,
            JobError::LeaseLost => Error::Internal("a dry run holds no lease".into()),
        })?;
        Ok(MigrationReport {
            db: db.to_string(),
            outcome: MigrationOutcome::WouldMigrate,
            files,
            page_size: r.page_size,
            pages: r.pages,
            journal_recovered: r.journal_recovered,
            wal_checkpointed: r.wal_checkpointed,
            overlay_peak_bytes: r.overlay.peak_bytes(),
            elapsed: started.elapsed(),
        })
    }

    fn run_job(
        &self,
        db: &str,
        holder: u128,
        heartbeat: &Heartbeat,
        hook: &dyn Fn(MigrationStep),
    ) -> JobResult<MigrationReport> {
        let m = &self.metrics.migration;
        let files = self.v1_files().inventory(db).map_err(at(Phase::Read))?;
        if files.main.is_none() {
            return Err(JobError::Failed(
                Phase::Read,
                Error::NotFound(db.to_string()),
            ));
        }
        let job = format!("migration-{holder:032x}");
        let recovered = self.recover(db, &job, &files)?;
        if recovered.journal_recovered {
            m.journals_recovered.inc();
        }
        if recovered.wal_checkpointed {
            m.wals_checkpointed.inc();
        }
        hook(MigrationStep::Recovered);
        let (generation, head, replaced) = self.migration_takeover(db, holder)?;
        if let Some(id) = replaced {
            // An earlier job's half-written copy: its keys go now.
            self.sweep(id).map_err(at(Phase::Copy))?;
        }
        self.copy(db, holder, generation, head, &recovered, heartbeat, hook)?;
        hook(MigrationStep::AfterSwitch);
        Ok(MigrationReport {
            db: db.to_string(),
            outcome: MigrationOutcome::Migrated,
            files,
            page_size: recovered.page_size,
            pages: recovered.pages,
            journal_recovered: recovered.journal_recovered,
            wal_checkpointed: recovered.wal_checkpointed,
            overlay_peak_bytes: recovered.overlay.peak_bytes(),
            elapsed: Duration::ZERO,
        })
    }

    /// Without SQLite to recover with, no v1 database can be migrated.
    #[cfg(not(feature = "v1-migration"))]
    fn recover(&self, db: &str, _job: &str, _files: &V1Inventory) -> JobResult<Recovered> {
        Err(JobError::Failed(
            Phase::Recover,
            Error::Unavailable(format!(
                "{db:?} is a v1 database, and this build of kvlite cannot migrate v1 data \
                 (it has no SQLite of its own); open it once with the kvlite CLI or server"
            )),
        ))
    }

    /// Create the v2 database as `MigratingFromV1` under a new generation,
    /// replacing an earlier job's half-written one (whose id is returned
    /// for sweeping); returns the generation and head. Fails if the lease is no longer ours.
    fn migration_takeover(&self, db: &str, holder: u128) -> JobResult<(u64, u64, Option<u64>)> {
        let r = self.kv.transact(|txn| {
            if !lease::holds(txn, db, holder)? {
                return Ok::<_, Fail>(None);
            }
            let mut replaced = None;
            if let Some(v) = txn.get(&crate::keys::dir(db))? {
                let id = decode_id(db, &v)?;
                let keys = DbKeys { id };
                let meta = match txn.get(&keys.meta())? {
                    Some(m) => decode_meta(db, &m)?,
                    None => {
                        return Err(crate::error::corrupt(
                            db,
                            CorruptionKind::MissingData,
                            "directory entry without META",
                        ));
                    }
                };
                if meta.origin != Origin::MigratingFromV1 {
                    return Err(crate::error::invalid(
                        kvlite_api::InvalidKind::Layout,
                        format!("database {db:?} already has a v2 head"),
                    ));
                }
                txn.clear(&crate::keys::dir(db))?;
                txn.clear(&keys.meta())?;
                txn.set(&crate::keys::tombstone(id), db.as_bytes())?;
                replaced = Some(id);
            }
            let (id, meta) = self.create_in(txn, db, Origin::MigratingFromV1)?;
            let meta = self.bump_in(txn, id, meta)?;
            Ok(Some((meta.generation, meta.head_txid, replaced)))
        });
        self.states.remove(db);
        match r {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(JobError::LeaseLost),
            Err(e) => Err(JobError::Failed(Phase::Copy, e.into())),
        }
    }

    /// Steps 5–6: the pages as large commits of bounded parts, the last one
    /// switching the origin.
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        db: &str,
        holder: u128,
        generation: u64,
        mut head: u64,
        r: &Recovered,
        heartbeat: &Heartbeat,
        hook: &dyn Fn(MigrationStep),
    ) -> JobResult<()> {
        let m = &self.metrics.migration;
        let copy = Phase::Copy;
        if r.pages == 0 {
            hook(MigrationStep::BeforeSwitch);
            return self.switch_empty(db, holder, generation);
        }
        let part_pages = (self.config.fast_path_limit / PAGE_SIZE as u64).max(1);
        let commit_pages = self.max_commit_pages().max(1);
        let mut copied = 0u64;
        let mut first = 1u64;
        let mut buf = Vec::new();
        while first <= r.pages {
            let last = (first + commit_pages - 1).min(r.pages);
            let final_commit = last == r.pages;
            let txid = self
                .commit_begin(db, generation, head, last as u32)
                .map_err(at(copy))?;
            let mut parts = 0u32;
            let mut from = first;
            while from <= last {
                if heartbeat.lost() {
                    return Err(JobError::LeaseLost);
                }
                // Parts end on shard boundaries where they can: into the
                // blank v2 database, the first commit's whole shards are
                // stored in place.
                let boundary =
                    (from + part_pages) / u64::from(SHARD_PAGES) * u64::from(SHARD_PAGES);
                let end = if boundary > from {
                    boundary
                } else {
                    from + part_pages
                };
                let to = (end - 1).min(last);
                let n = (to - from + 1) as usize;
                buf.resize(n * PAGE_SIZE, 0);
                r.overlay
                    .read(db, V1File::Main, (from - 1) * PAGE_SIZE as u64, &mut buf)
                    .map_err(at(copy))?;
                let pages: Vec<PageRef<'_>> = buf
                    .chunks_exact(PAGE_SIZE)
                    .zip(from..=to)
                    .filter(|&(_, p)| p != u64::from(LOCK_PAGE))
                    .map(|(d, p)| (p as u32, d))
                    .collect();
                if !pages.is_empty() {
                    self.commit_chunk(db, generation, txid, parts, &pages)
                        .map_err(at(copy))?;
                    parts += 1;
                    copied += pages.len() as u64;
                    m.pages_copied.inc_by(pages.len() as u64);
                    hook(MigrationStep::PartWritten(copied));
                }
                from = to + 1;
            }
            let commit_id = fastrand::u64(..);
            let result = if final_commit {
                hook(MigrationStep::BeforeSwitch);
                self.commit_finish_migrated(db, generation, head, txid, parts, commit_id, holder)
                    .map_err(at(Phase::Switch))?
            } else {
                self.commit_finish(db, generation, head, txid, parts, commit_id)
                    .map_err(at(copy))?
            };
            head = result.txid;
            first = last + 1;
            tracing::info!(db, copied, total = r.pages, "migration progress");
        }
        Ok(())
    }

    /// The switch of a database without pages: no head to publish.
    fn switch_empty(&self, db: &str, holder: u128, generation: u64) -> JobResult<()> {
        let meta = self
            .kv
            .transact(|txn| {
                let (_, keys, mut meta) = self.resolve(txn, db)?;
                self.fence(db, &meta, generation)?;
                check_migrating(txn, db, &meta, holder)?;
                meta.origin = Origin::MigratedFromV1;
                meta.version += 1;
                txn.set(&keys.meta(), &meta.encode())?;
                txn.clear(&keys::lease(db))?;
                Ok::<_, Fail>(meta)
            })
            .map_err(|e| JobError::Failed(Phase::Switch, e.into()))?;
        if let Some(state) = self.states.get(db) {
            crate::cache::lock(&state).meta = Some(meta);
        }
        Ok(())
    }

    /// After a failed job: drop its half-written v2 database and release
    /// the lease, if both are still its own; the next attempt starts clean.
    fn abandon_migration(&self, db: &str, holder: u128) -> kvlite_api::Result<()> {
        let dead = self.kv.transact(|txn| {
            if !lease::holds(txn, db, holder)? {
                return Ok::<_, Fail>(None);
            }
            let mut dead = None;
            if let Some(v) = txn.get(&crate::keys::dir(db))? {
                let id = decode_id(db, &v)?;
                let keys = DbKeys { id };
                if let Some(m) = txn.get(&keys.meta())?
                    && decode_meta(db, &m)?.origin == Origin::MigratingFromV1
                {
                    txn.clear(&crate::keys::dir(db))?;
                    txn.clear(&keys.meta())?;
                    txn.set(&crate::keys::tombstone(id), db.as_bytes())?;
                    dead = Some(id);
                }
            }
            txn.clear(&keys::lease(db))?;
            Ok(dead)
        })?;
        self.states.remove(db);
        if let Some(id) = dead {
            self.sweep(id)?;
        }
        Ok(())
    }

    /// Remove `db`'s v1 data once its v2 head is verified (`kvlite migrate
    /// --purge-v1`). Returns the v1 bytes removed.
    pub fn purge_v1(&self, db: &str) -> kvlite_api::Result<u64> {
        validate_name(db)?;
        let origin = self.kv.read(|txn| lease::v2_origin(txn, db))?;
        if origin != Some(Origin::MigratedFromV1) {
            return Err(Error::invalid(
                kvlite_api::InvalidKind::Layout,
                format!("database {db:?} has not been migrated from v1; its v1 data stays"),
            ));
        }
        let audit = self.audit(db)?;
        if !audit.is_clean() {
            return Err(Error::corrupt(
                db,
                CorruptionKind::Counters,
                format!(
                    "the v2 database fails its audit ({:?}); its v1 data stays",
                    audit.problems
                ),
            ));
        }
        let bytes = self.v1_files().inventory(db)?.total_bytes();
        super::store::V1Store::purge(&self.kv, db)?;
        Ok(bytes)
    }
}
