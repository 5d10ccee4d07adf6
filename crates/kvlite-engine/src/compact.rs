//! Compaction: fold deltas into shards so reads stay one blob per shard and
//! overwritten pages stop costing storage.
//!
//! A pass folds every page version at or before its *fold point*: the head,
//! or the oldest commit a live reader is reading at (readers pin the
//! versions they may still need; see `readers.rs`). It plans from a
//! snapshot (the page-index versions up to the fold point grouped by shard,
//! how many versions reference each delta, and the database size at the fold
//! point), then folds shards in batches bounded by bytes. Each batch is built
//! in a read snapshot (reading and decoding blobs, encoding new shards: the
//! slow part) and written by a short write transaction, which:
//! - re-reads META and stops the pass, writing nothing, if the generation
//!   changed (a takeover happened) — a stale compaction never writes;
//! - re-reads each shard's record and writes the shard only if it is what
//!   the batch was built from (another pass may have written it);
//! - removes exactly the versions the shard was built from. Versions are
//!   immutable keys (page, txid): a commit meanwhile adds a newer one, which
//!   shadows the shard's copy, and never changes one a pass folds;
//! - deletes deltas at or before the fold point that no version references
//!   any more (a bounded number), and bumps META's `version` and
//!   `shard_epoch`.
//!
//! A shard is stored as of its fold point (its LTX txid): a read at an
//! earlier commit must not use it, and the read path checks that. Pages past
//! the size at the fold point (a truncation) are dropped from shards and
//! their versions removed; shards wholly past it are deleted.
//!
//! Engines sharing a store (several servers on one PostgreSQL) run at most
//! one pass per database at a time: a pass that finds the database's
//! compaction lease (holder, expiry) held by another live engine does
//! nothing; otherwise its first batch's write transaction takes the lease,
//! each later one renews it (stopping like a stale pass if another engine
//! took it over: it expired, the holder stalled), and the last drops it. A
//! pass that writes nothing (a full store) writes no lease either. The
//! lease only avoids duplicated work; safety rests on the checks above.
//!
//! Keeping the write transaction short matters on PostgreSQL, where it
//! competes with commits for META under serializable isolation.
//!
//! Deleting by counted references is safe because references to an existing
//! delta only ever disappear (a commit references only its own new txid): a
//! count taken from the plan's snapshot can only overestimate, so a delta is
//! deleted late, never early. `materialized_txid` only moves forward.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kvlite_kv::{KvRead, ScanOptions, WriteTxn};

use kvlite_api::{CompactionReport, CorruptionKind, Error};

use crate::blob::{self, BlobRef};
use crate::cache::{Loc, lock};
use crate::commit::{credit, debit, delete_delta};
use crate::error::{Fail, Result, corrupt};
use crate::keys::DbKeys;
use crate::meta::Meta;
use crate::records::{DeltaInfo, SLIST_ENTRY_BYTES, ShardInfo, decode_pidx};
use crate::{Engine, LOCK_PAGE, SHARD_PAGES, validate_name};

/// Where a test can pause a pass (to run a commit or takeover "during" it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionStep {
    /// The plan is made; nothing written yet.
    Planned,
    /// Before batch `n` (0-based) is built.
    BeforeTransaction(u64),
    /// Batch `n` is built; its write transaction is next.
    BeforeWrite(u64),
}

/// Tuning of compaction.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// Start a pass when a database has at least this many deltas...
    pub min_deltas: u64,
    /// ...or this many page-index entries.
    pub min_page_index_entries: u64,
    /// Databases compacted at the same time by the background worker.
    pub max_concurrent: usize,
    /// New shard bytes written per transaction (bounds its size and time).
    pub bytes_per_transaction: usize,
    /// Deltas deleted per transaction (likewise).
    pub max_deltas_deleted_per_transaction: usize,
    /// How long a pass's compaction lease keeps other engines sharing the
    /// store off the database without being renewed (every batch renews
    /// it): how long a pass that died holds up the next one. Zero turns
    /// the exclusion off.
    pub lease: std::time::Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            min_deltas: 64,
            min_page_index_entries: 8192,
            max_concurrent: 2,
            bytes_per_transaction: 4 << 20,
            max_deltas_deleted_per_transaction: 2048,
            lease: std::time::Duration::from_secs(30),
        }
    }
}

impl CompactionConfig {
    /// Whether a database with this backlog is due a pass (the background
    /// compactor's trigger, and the CLI's when it runs the engine itself).
    pub fn is_due(&self, deltas: u64, page_index_entries: u64) -> bool {
        deltas >= self.min_deltas.max(1) || page_index_entries >= self.min_page_index_entries.max(1)
    }
}

/// The plan of a pass: the fold point, the shards to fold, and references
/// per delta.
struct Plan {
    generation: u64,
    /// Every version at or before this commit is folded.
    upto: u64,
    /// The database size at `upto`.
    size: u32,
    shards: Vec<u32>,
    refs: HashMap<u64, u64>,
}

/// One page-index entry as read: its key (removed exactly), page, location.
type Entry = (Vec<u8>, u32, Loc);

impl Engine {
    /// Fold every unfolded page of `db` into shards and delete what no page
    /// references any more (`kvlite compact DB`).
    pub fn compact(&self, db: &str) -> kvlite_api::Result<CompactionReport> {
        let r = self.compact_stepping(db, &|_| {});
        self.observe_write(r)
    }

    /// [`Engine::compact`] with a callback at each step (tests inject
    /// concurrent commits and takeovers there).
    #[cfg(feature = "test-hooks")]
    pub fn compact_with(
        &self,
        db: &str,
        on_step: &dyn Fn(CompactionStep),
    ) -> kvlite_api::Result<CompactionReport> {
        self.compact_stepping(db, on_step)
    }

    /// Passes on `db` running or waiting for their turn (tests use it to
    /// know a second pass is queued behind the first).
    #[cfg(feature = "test-hooks")]
    pub fn compaction_passes_queued(&self, db: &str) -> usize {
        // The map holds one reference; each pass running or waiting, one more.
        self.compaction_gates.queued(db)
    }

    fn compact_stepping(
        &self,
        db: &str,
        on_step: &dyn Fn(CompactionStep),
    ) -> kvlite_api::Result<CompactionReport> {
        validate_name(db)?;
        Ok(self
            .compaction_gates
            .run(db, || self.timed_pass(db, on_step))?)
    }

    fn timed_pass(&self, db: &str, on_step: &dyn Fn(CompactionStep)) -> Result<CompactionReport> {
        let started = Instant::now();
        let result = self.compact_pass(db, on_step);
        let m = &self.metrics;
        match &result {
            Ok(r) => {
                m.compaction(if r.stale { "stale" } else { "ok" }, started.elapsed());
                m.pages_folded.inc_by(r.pages_folded);
                m.deltas_deleted.inc_by(r.deltas_deleted);
                m.shards_written.inc_by(r.shards_written);
            }
            Err(_) => m.compaction("error", started.elapsed()),
        }
        result
    }

    fn compact_pass(&self, db: &str, on_step: &dyn Fn(CompactionStep)) -> Result<CompactionReport> {
        let (plan, keys) = self
            .kv
            .read(|txn| {
                let (_, keys, meta) = self.resolve(txn, db)?;
                if self.lease_held_elsewhere(txn, &keys)? {
                    return Ok(None);
                }
                self.metrics.backlog_deltas.observe(meta.delta_count as f64);
                self.metrics
                    .lag_txids
                    .observe(meta.head_txid.saturating_sub(meta.materialized_txid) as f64);
                // Pins are read after this snapshot's META: a reader pinning
                // later reads at a head no older than this snapshot's.
                let upto = self
                    .readers
                    .oldest_pin(db)
                    .map_or(meta.head_txid, |pin| pin.min(meta.head_txid));
                let size = self.size_at(txn, db, &keys, &meta, upto)?;
                let plan = plan_pass(txn, db, &keys, &meta, upto, size)?;
                Ok::<_, Fail>(Some((plan, keys)))
            })?
            .map_or((None, None), |(p, k)| (Some(p), Some(k)));
        let (Some(plan), Some(keys)) = (plan, keys) else {
            tracing::debug!(db, "another engine is compacting it");
            return Ok(CompactionReport::default());
        };
        on_step(CompactionStep::Planned);
        let mut report = CompactionReport::default();
        let mut refs = plan.refs.clone();
        let mut remaining: &[u32] = &plan.shards;
        let mut first = true;
        let mut garbage_left = false;
        while first || !remaining.is_empty() || garbage_left {
            first = false;
            on_step(CompactionStep::BeforeTransaction(report.transactions));
            let batch = self
                .kv
                .read(|txn| self.prepare(txn, db, &keys, &plan, remaining))?;
            let Some((prepared, consumed)) = batch else {
                report.stale = true;
                return Ok(report);
            };
            on_step(CompactionStep::BeforeWrite(report.transactions));
            let leased = report.transactions > 0;
            let outcome = self.kv.transact(|txn| {
                let mut local_refs = refs.clone();
                if !self.renew_lease(txn, &keys, leased)? {
                    return Ok::<_, Fail>((Folded::Stale, local_refs));
                }
                let r = self.apply(txn, db, &keys, &plan, &prepared, &mut local_refs)?;
                let last = match &r {
                    Folded::Done { garbage_left, .. } => {
                        !garbage_left && remaining.len() <= consumed
                    }
                    Folded::Stale => true,
                };
                if last {
                    txn.clear(&keys.compaction_lease())?;
                }
                Ok::<_, Fail>((r, local_refs))
            })?;
            let (step, new_refs) = outcome;
            match step {
                Folded::Stale => {
                    report.stale = true;
                    return Ok(report);
                }
                Folded::Done {
                    pages,
                    deltas,
                    written,
                    old_version,
                    new_version,
                    cleared,
                    garbage_left: more,
                } => {
                    garbage_left = more;
                    refs = new_refs;
                    remaining = remaining.get(consumed..).unwrap_or_default();
                    report.transactions += 1;
                    report.pages_folded += pages;
                    report.deltas_deleted += deltas;
                    report.shards_written += written;
                    self.after_fold(db, old_version, new_version, &cleared);
                }
            }
        }
        Ok(report)
    }

    /// The database size after commit `txid` (its DLIST record; META's at
    /// the head). `None` if no record says (one written before sizes were
    /// kept, or already folded away).
    fn size_at(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        txid: u64,
    ) -> Result<Option<u32>> {
        if txid == meta.head_txid {
            return Ok(Some(meta.size_pages));
        }
        match txn.get(&keys.dlist(txid))? {
            Some(v) => Ok(DeltaInfo::decode(&v)
                .ok_or_else(|| {
                    corrupt(
                        db,
                        CorruptionKind::Record,
                        format!("malformed DLIST {txid}"),
                    )
                })?
                .size_pages),
            None => Ok(None),
        }
    }

    /// Keep a current page-index memo current: a page whose newest version
    /// was folded is now served by its shard.
    fn after_fold(&self, db: &str, old_version: u64, new_version: u64, cleared: &[(u32, Loc)]) {
        let Some(state) = self.states.get(db) else {
            return;
        };
        let mut s = lock(&state);
        let Some(mut pidx) = s.pidx.take() else {
            return;
        };
        if pidx.version != old_version {
            self.states.adjust(pidx.entries.len(), 0);
            return;
        }
        let before = pidx.entries.len();
        for (pgno, loc) in cleared {
            if pidx.entries.get(pgno) == Some(loc) {
                pidx.entries.remove(pgno);
            }
        }
        pidx.version = new_version;
        self.states.adjust(before, pidx.entries.len());
        s.pidx = Some(pidx);
        if let Some(meta) = s.meta.as_mut() {
            meta.version = new_version;
        }
    }

    /// Build new shards for the first shards of `shards` (until the byte
    /// budget is spent) from a read snapshot. `None` if the database was
    /// taken over since the plan. Returns the batch and how many shards it
    /// covered.
    fn prepare(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        plan: &Plan,
        shards: &[u32],
    ) -> Result<Option<(Vec<Prepared>, usize)>> {
        let meta = self.meta_in(txn, db, keys)?;
        if meta.generation != plan.generation {
            return Ok(None);
        }
        let mut budget = self.config.compaction.bytes_per_transaction;
        let mut out = Vec::new();
        let mut consumed = 0;
        for &shard in shards {
            // At least one shard per batch, whatever the budget: a pass
            // always makes progress.
            if budget == 0 && consumed > 0 {
                break;
            }
            consumed += 1;
            let Some(p) = self.prepare_shard(txn, db, keys, &meta, plan, shard)? else {
                continue;
            };
            budget = budget.saturating_sub(p.ltx.as_ref().map_or(0, Vec::len));
            out.push(p);
        }
        Ok(Some((out, consumed)))
    }

    /// The new contents of one shard as of the plan's fold point: its
    /// current pages, overlaid with the newest version of each page at or
    /// before it, without pages past the size there. `ltx` is `None` when
    /// the shard is wholly past the end (it is deleted).
    fn prepare_shard(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        plan: &Plan,
        shard: u32,
    ) -> Result<Option<Prepared>> {
        let lo = (shard * SHARD_PAGES).max(1);
        let hi = (shard * SHARD_PAGES + SHARD_PAGES - 1).min(plan.size);
        let entries: Vec<Entry> = shard_entries(txn, db, keys, shard)?
            .into_iter()
            .filter(|(_, _, loc)| loc.txid <= plan.upto)
            .collect();
        let old = shard_info(txn, db, keys, shard)?;
        if lo > hi {
            if entries.is_empty() && old.is_none() {
                return Ok(None);
            }
            return Ok(Some(Prepared {
                shard,
                entries,
                old,
                ltx: None,
            }));
        }
        if entries.is_empty() {
            return Ok(None);
        }
        // Versions ascend within a page: the last one at or before the fold
        // point is the page there.
        let mut newest: BTreeMap<u32, Loc> = BTreeMap::new();
        for (_, pgno, loc) in &entries {
            if *pgno <= hi {
                newest.insert(*pgno, *loc);
            }
        }
        let mut refs: Vec<BlobRef> = newest
            .values()
            .map(|l| BlobRef::Delta {
                txid: l.txid,
                part: l.part,
            })
            .collect();
        if old.is_some() {
            refs.push(BlobRef::Shard(shard));
        }
        let (blobs, _) = blob::fetch(txn, db, keys, &self.blob_cache, meta.shard_epoch, refs)?;
        let mut pages: BTreeMap<u32, &[u8]> = BTreeMap::new();
        if old.is_some() {
            let current = blobs.get(&BlobRef::Shard(shard)).ok_or_else(|| {
                corrupt(
                    db,
                    CorruptionKind::MissingData,
                    format!("shard {shard} listed but missing"),
                )
            })?;
            for (p, d) in current.iter() {
                if p <= hi {
                    pages.insert(p, d);
                }
            }
        }
        for (&pgno, loc) in &newest {
            let blob = BlobRef::Delta {
                txid: loc.txid,
                part: loc.part,
            };
            let data = blobs.get(&blob).and_then(|d| d.get(pgno)).ok_or_else(|| {
                corrupt(
                    db,
                    CorruptionKind::MissingPage,
                    format!("page {pgno} not found in {blob:?}"),
                )
            })?;
            pages.insert(pgno, data);
        }
        for p in lo..=hi {
            if p != LOCK_PAGE && !pages.contains_key(&p) {
                return Err(corrupt(
                    db,
                    CorruptionKind::MissingPage,
                    format!("page {p} is in neither the page index nor shard {shard}"),
                ));
            }
        }
        let ltx = blob::encode(plan.upto, plan.size, pages)?;
        Ok(Some(Prepared {
            shard,
            entries,
            old,
            ltx: Some(ltx),
        }))
    }

    /// Write a prepared batch: each shard whose inputs are unchanged, then
    /// delete unreferenced deltas and update META.
    fn apply(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        keys: &DbKeys,
        plan: &Plan,
        prepared: &[Prepared],
        refs: &mut HashMap<u64, u64>,
    ) -> Result<Folded> {
        // Claim META first: on PostgreSQL a steady stream of short commits
        // would otherwise win every serialization conflict and starve the
        // pass; claimed, they wait for this short transaction and retry.
        let mut meta = match txn.get_for_update(&keys.meta())? {
            Some(v) => crate::decode_meta(db, &v)?,
            None => return Err(Fail::Api(Error::NotFound(db.to_string()))),
        };
        if meta.generation != plan.generation {
            return Ok(Folded::Stale);
        }
        let old_version = meta.version;
        let (mut pages, mut written) = (0u64, 0u64);
        let mut cleared: Vec<(u32, Loc)> = Vec::new();
        // Three reads however many shards: on PostgreSQL every round trip
        // here widens the window in which a commit can conflict with us.
        let current_entries: Vec<Entry> = match (prepared.first(), prepared.last()) {
            (Some(first), Some(last)) => {
                let (start, end) = keys.pidx_pages(
                    first.shard * SHARD_PAGES,
                    (last.shard * SHARD_PAGES).saturating_add(SHARD_PAGES),
                );
                entries_of(db, txn.scan(&start, &end, ScanOptions::ALL)?)?
            }
            _ => Vec::new(),
        };
        let slist_keys: Vec<Vec<u8>> = prepared.iter().map(|p| keys.slist(p.shard)).collect();
        let slist_refs: Vec<&[u8]> = slist_keys.iter().map(Vec::as_slice).collect();
        let current_infos = txn.get_many(&slist_refs)?;
        for (p, info) in prepared.iter().zip(current_infos) {
            let info = match info {
                Some(v) => Some(ShardInfo::decode(&v).ok_or_else(|| {
                    corrupt(
                        db,
                        CorruptionKind::Record,
                        format!("malformed SLIST {}", p.shard),
                    )
                })?),
                None => None,
            };
            if info != p.old {
                continue; // another pass wrote the shard since the batch was built
            }
            let lo = p.shard * SHARD_PAGES;
            let in_shard = |pgno: u32| pgno >= lo && pgno - lo < SHARD_PAGES;
            let current: std::collections::HashSet<&[u8]> = current_entries
                .iter()
                .filter(|(_, pgno, _)| in_shard(*pgno))
                .map(|(k, _, _)| k.as_slice())
                .collect();
            // Versions are immutable: the ones still stored are exactly as
            // the shard was built from them.
            let folded: Vec<&Entry> = p
                .entries
                .iter()
                .filter(|(k, _, _)| current.contains(k.as_slice()))
                .collect();
            debug_assert!(folded.iter().all(|(_, pgno, _)| in_shard(*pgno)));
            let prefix = keys.shard(p.shard);
            match (&p.ltx, p.old) {
                (Some(ltx), old) => {
                    let stored = blob::store(txn, &prefix, ltx)?;
                    txn.set(
                        &keys.slist(p.shard),
                        &ShardInfo {
                            bytes: stored,
                            txid: plan.upto,
                        }
                        .encode(),
                    )?;
                    match old {
                        Some(o) => {
                            debit(db, &mut meta.shard_bytes, o.bytes, "shard bytes")?;
                            credit(db, &mut meta.shard_bytes, stored, "shard bytes")?;
                        }
                        None => {
                            credit(db, &mut meta.shard_count, 1, "shard count")?;
                            credit(
                                db,
                                &mut meta.shard_bytes,
                                stored + SLIST_ENTRY_BYTES,
                                "shard bytes",
                            )?;
                        }
                    }
                }
                (None, Some(o)) => {
                    kvlite_kv::chunked::clear(txn, &prefix)?;
                    txn.clear(&keys.slist(p.shard))?;
                    debit(db, &mut meta.shard_count, 1, "shard count")?;
                    debit(
                        db,
                        &mut meta.shard_bytes,
                        o.bytes + SLIST_ENTRY_BYTES,
                        "shard bytes",
                    )?;
                }
                (None, None) => {}
            }
            if folded.len() == current.len() {
                let (start, end) = keys.pidx_pages(lo, lo.saturating_add(SHARD_PAGES));
                txn.clear_range(&start, &end)?;
            } else {
                for (k, _, _) in &folded {
                    txn.clear(k)?;
                }
            }
            debit(
                db,
                &mut meta.pidx_count,
                folded.len() as u64,
                "page-index count",
            )?;
            for (_, _, loc) in &folded {
                if let Some(n) = refs.get_mut(&loc.txid) {
                    *n = n.saturating_sub(1);
                }
            }
            pages += folded.len() as u64;
            written += 1;
            cleared.extend(folded.iter().map(|(_, pgno, loc)| (*pgno, *loc)));
        }
        let mut deltas = 0;
        // Oldest first, and a bounded number per transaction: after many
        // overwrites there can be tens of thousands.
        // A delta past the fold point stays whatever it holds: a reader
        // there lists the pages it changed from its record.
        let mut garbage: Vec<u64> = refs
            .iter()
            .filter(|&(&t, &n)| n == 0 && t <= plan.upto)
            .map(|(&t, _)| t)
            .collect();
        garbage.sort_unstable();
        let cap = self
            .config
            .compaction
            .max_deltas_deleted_per_transaction
            .max(1);
        let garbage_left = garbage.len() > cap;
        garbage.truncate(cap);
        let dlist_keys: Vec<Vec<u8>> = garbage.iter().map(|&t| keys.dlist(t)).collect();
        let dlist_refs: Vec<&[u8]> = dlist_keys.iter().map(Vec::as_slice).collect();
        let infos = txn.get_many(&dlist_refs)?;
        for (&txid, info) in garbage.iter().zip(infos) {
            if let Some(v) = info {
                delete_delta(txn, db, keys, txid, &v, &mut meta)?;
                deltas += 1;
            }
            refs.remove(&txid);
        }
        debug_assert_eq!(cleared.len() as u64, pages);
        // Everything before the oldest delta still referenced (and at most
        // the fold point) is folded.
        let oldest_live = refs.iter().filter(|&(_, &n)| n > 0).map(|(&t, _)| t).min();
        let folded_through = oldest_live.map_or(plan.upto, |t| t.saturating_sub(1).min(plan.upto));
        meta.materialized_txid = meta
            .materialized_txid
            .max(folded_through)
            .min(meta.head_txid);
        // A written shard changes META's shard bytes and epoch even when no
        // entry folded (a commit replaced them all since the build).
        if pages > 0 || deltas > 0 || written > 0 {
            meta.version += 1;
            if written > 0 {
                meta.shard_epoch += 1;
            }
            txn.set(&keys.meta(), &meta.encode())?;
        }
        Ok(Folded::Done {
            pages,
            deltas,
            written,
            old_version,
            new_version: meta.version,
            cleared,
            garbage_left,
        })
    }
}

/// A shard built from a snapshot, written only if its inputs are unchanged.
struct Prepared {
    shard: u32,
    /// The versions it folds (at or before the fold point).
    entries: Vec<Entry>,
    old: Option<ShardInfo>,
    /// `None`: the shard is wholly past the end and goes.
    ltx: Option<Vec<u8>>,
}

fn shard_entries(txn: &mut impl KvRead, db: &str, keys: &DbKeys, shard: u32) -> Result<Vec<Entry>> {
    let (start, end) = keys.pidx_pages(
        shard * SHARD_PAGES,
        (shard * SHARD_PAGES).saturating_add(SHARD_PAGES),
    );
    entries_of(db, txn.scan(&start, &end, ScanOptions::ALL)?)
}

fn entries_of(db: &str, scanned: Vec<kvlite_kv::KeyValue>) -> Result<Vec<Entry>> {
    scanned
        .into_iter()
        .map(|(k, v)| match decode_pidx(&k, &v) {
            Some((p, l)) => Ok((k, p, l)),
            None => Err(corrupt(
                db,
                CorruptionKind::Record,
                format!("malformed page-index entry {k:?}"),
            )),
        })
        .collect()
}

fn shard_info(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    shard: u32,
) -> Result<Option<ShardInfo>> {
    match txn.get(&keys.slist(shard))? {
        Some(v) => Ok(Some(ShardInfo::decode(&v).ok_or_else(|| {
            corrupt(
                db,
                CorruptionKind::Record,
                format!("malformed SLIST {shard}"),
            )
        })?)),
        None => Ok(None),
    }
}

enum Folded {
    Stale,
    Done {
        pages: u64,
        deltas: u64,
        written: u64,
        old_version: u64,
        new_version: u64,
        /// The versions the transaction removed.
        cleared: Vec<(u32, Loc)>,
        /// Unreferenced deltas this transaction had no room to delete.
        garbage_left: bool,
    },
}

fn shard_of_page(pgno: u32) -> u32 {
    pgno / SHARD_PAGES
}

/// The plan of a pass folding to `upto`, from the stored page index read in
/// bounded pieces: memory follows the shards and deltas it names, not its
/// entries. With no size known at `upto`, nothing is folded.
fn plan_pass(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    meta: &Meta,
    upto: u64,
    size: Option<u32>,
) -> Result<Plan> {
    let mut shards: Vec<u32> = Vec::new();
    let mut refs: HashMap<u64, u64> = HashMap::new();
    let known = size.is_some();
    let (upto, size) = match size {
        Some(size) => (upto, size),
        None => (meta.materialized_txid, 0),
    };
    // Nothing new to fold (a reader holds the fold point back): skip the
    // index scan, which would otherwise run on every signal while it waits.
    // Versions are all newer than `materialized_txid`, so deltas at or
    // before it are unreferenced (leftovers of a capped deletion).
    if upto > meta.materialized_txid {
        let (mut cursor, end) = keys.pidx_from(0);
        loop {
            let piece = txn.scan(&cursor, &end, ScanOptions::limit(PLAN_PIECE))?;
            let Some((last, _)) = piece.last() else { break };
            cursor = last.clone();
            cursor.push(0);
            for (_, pgno, loc) in entries_of(db, piece)? {
                if loc.txid <= upto && shards.last() != Some(&shard_of_page(pgno)) {
                    shards.push(shard_of_page(pgno));
                }
                *refs.entry(loc.txid).or_default() += 1;
            }
        }
    }
    // (Never below what is already folded: shards there hold later commits.)
    if known && upto >= meta.materialized_txid {
        // Shards wholly past the size at the fold point go (a truncation).
        let (start, end) = keys.slist_from(size / SHARD_PAGES + 1);
        for (k, _) in txn.scan(&start, &end, ScanOptions::ALL)? {
            if let Some(s) = DbKeys::slist_shard(&k) {
                shards.push(s);
            }
        }
        shards.sort_unstable();
        shards.dedup();
    }
    // Deltas no version references at all are garbage once folded past.
    let (start, end) = keys.dlist_all();
    for (k, _) in txn.scan(&start, &end, ScanOptions::ALL)? {
        if let Some(t) = DbKeys::dlist_txid(&k) {
            refs.entry(t).or_insert(0);
        }
    }
    Ok(Plan {
        generation: meta.generation,
        upto,
        size,
        shards,
        refs,
    })
}

/// Page-index entries read at a time when planning.
const PLAN_PIECE: usize = 16_384;

fn decode_lease(v: &[u8]) -> Option<(u128, u64)> {
    let holder = u128::from_be_bytes(v.get(..16)?.try_into().ok()?);
    let expires = u64::from_be_bytes(v.get(16..24)?.try_into().ok()?);
    (v.len() == 24).then_some((holder, expires))
}

impl Engine {
    /// Whether another engine holds `keys`' compaction lease (live).
    fn lease_held_elsewhere(&self, txn: &mut impl KvRead, keys: &DbKeys) -> Result<bool> {
        let current = txn
            .get(&keys.compaction_lease())?
            .and_then(|v| decode_lease(&v));
        Ok(current.is_some_and(|(h, expires)| h != self.instance && expires > blob::now_ms()))
    }

    /// Make this engine the compaction lease's holder for another lease
    /// period, unless another engine's lease is live (or, with `held`,
    /// unless this engine no longer holds it). A malformed record counts
    /// as expired.
    fn renew_lease(&self, txn: &mut WriteTxn<'_>, keys: &DbKeys, held: bool) -> Result<bool> {
        let period = self.config.compaction.lease;
        if period.is_zero() {
            return Ok(true);
        }
        let key = keys.compaction_lease();
        let now = blob::now_ms();
        let current = txn.get_for_update(&key)?.and_then(|v| decode_lease(&v));
        let ours = current.is_some_and(|(h, _)| h == self.instance);
        let live_elsewhere = current.is_some_and(|(h, e)| h != self.instance && e > now);
        if live_elsewhere || (held && !ours) {
            return Ok(false);
        }
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.instance.to_be_bytes());
        v.extend_from_slice(&now.saturating_add(period.as_millis() as u64).to_be_bytes());
        txn.set(&key, &v)?;
        Ok(true)
    }
}
