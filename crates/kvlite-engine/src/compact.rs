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

use kvlite_api::{CompactionReport, CorruptionKind, Error, PageData};

use crate::blob::{self, BlobRef};
use crate::cache::{Loc, lock};
use crate::commit::{credit, debit, delete_delta, drop_delta_pages};
use crate::error::{Fail, Result, corrupt};
use crate::history::{self, Keep};
use crate::keys::DbKeys;
use crate::meta::Meta;
use crate::records::{
    DeltaInfo, HistoryBase, SLIST_ENTRY_BYTES, ShardInfo, decode_pidx, encode_pidx,
};
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
    /// A database due a pass while commits keep arriving waits for a pause
    /// this long between them, until its backlog reaches `urgent_factor`
    /// times the thresholds above: a pass competes with commits for the
    /// database's META (on PostgreSQL a serialization failure for one side
    /// or the other), and folding a stream in fewer, larger passes writes
    /// the hot shards fewer times. Zero starts passes at once.
    pub quiet: std::time::Duration,
    /// See `quiet` (at least 1).
    pub urgent_factor: u64,
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
    /// How often the background compactor looks for databases whose kept
    /// history has fallen out of their retention window (an idle database
    /// gets no pass from commits); zero never looks.
    pub history_sweep: std::time::Duration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            min_deltas: 64,
            min_page_index_entries: 8192,
            quiet: std::time::Duration::from_millis(10),
            urgent_factor: 4,
            max_concurrent: 2,
            bytes_per_transaction: 4 << 20,
            max_deltas_deleted_per_transaction: 2048,
            lease: std::time::Duration::from_secs(30),
            history_sweep: std::time::Duration::from_secs(300),
        }
    }
}

impl CompactionConfig {
    /// Whether a database with this backlog is due a pass (the background
    /// compactor's trigger, and the CLI's when it runs the engine itself).
    pub fn is_due(&self, deltas: u64, page_index_entries: u64) -> bool {
        deltas >= self.min_deltas.max(1) || page_index_entries >= self.min_page_index_entries.max(1)
    }

    /// Whether the backlog is so large that a pass should not wait for a
    /// pause in commits (see `quiet`).
    pub fn is_urgent(&self, deltas: u64, page_index_entries: u64) -> bool {
        let factor = self.urgent_factor.max(1);
        deltas >= self.min_deltas.max(1).saturating_mul(factor)
            || page_index_entries >= self.min_page_index_entries.max(1).saturating_mul(factor)
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
    /// Page-index versions naming each delta (and a zero for every delta
    /// that may go if nothing else names it).
    refs: HashMap<u64, u64>,
    /// What reads the pass keeps possible.
    keep: Keep,
    /// Whether commit records from the floor on are kept (history is kept;
    /// otherwise every delta folded and unnamed goes).
    keeps_records: bool,
    /// Deltas before the floor kept versions named when planning.
    kept_deltas: std::collections::HashSet<u64>,
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
                let (fold_pin, reader_pin) = self.readers.oldest_pins(db, keys.id, self.now_ms());
                let upto = fold_pin.map_or(meta.head_txid, |pin| pin.min(meta.head_txid));
                let keep = self.keep_of(txn, db, &keys, &meta, reader_pin)?;
                let size = self.size_at(txn, db, &keys, &meta, upto)?;
                let plan = plan_pass(txn, db, &keys, &meta, upto, size, keep)?;
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
                    folded,
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
                    self.after_fold(db, old_version, &folded, &cleared);
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

    /// Keep a current view current: the cached META becomes the folded
    /// one (only if it was the one folded: an older view stays as old as it
    /// was, never half new), and in a current page-index memo a page whose
    /// newest version was folded is now served by its shard.
    fn after_fold(&self, db: &str, old_version: u64, folded: &Meta, cleared: &[(u32, Loc)]) {
        let Some(state) = self.states.get(db) else {
            return;
        };
        let new_version = folded.version;
        let mut s = lock(&state);
        if s.meta.as_ref().is_some_and(|m| m.version == old_version) {
            s.meta = Some(folded.clone());
        }
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
            budget = budget.saturating_sub(
                match &p.write {
                    ShardWrite::Replace(ltx) => ltx.len(),
                    _ => 0,
                } + p.old_raw.as_ref().map_or(0, Vec::len),
            );
            out.push(p);
        }
        Ok(Some((out, consumed)))
    }

    /// The new contents of one shard as of the plan's fold point: its
    /// current pages, overlaid with the newest version of each page at or
    /// before it, without pages past the size there (the shard goes when it
    /// is wholly past the end) — and what its kept history holds. `None`
    /// when there is nothing to do for it.
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
        // A shard stored as of a commit after the fold point (a large
        // commit into a blank database stores whole shards in place) holds
        // pages this pass must not fold into or remove; a later pass can.
        if old.is_some_and(|o| o.txid > plan.upto) {
            return Ok(None);
        }
        let base = history::bases(txn, db, keys, &[shard])?.pop().flatten();
        let kept = if base.is_some() {
            kept_entries(txn, db, keys, shard)?
        } else {
            Vec::new()
        };
        let write = if lo > hi {
            if entries.is_empty() && old.is_none() {
                ShardWrite::Keep
            } else {
                ShardWrite::Remove
            }
        } else if entries.is_empty() {
            ShardWrite::Keep
        } else {
            ShardWrite::Replace(self.build_shard(txn, db, keys, meta, plan, shard, &entries, old)?)
        };
        if matches!(write, ShardWrite::Keep)
            && base.is_none_or(|b| plan.keep.oldest() < b.chain_end)
        {
            return Ok(None);
        }
        // A fold that keeps history and has no chain to continue starts one
        // with the shard as it is now: its stored bytes are copied.
        let folds = !matches!(write, ShardWrite::Keep);
        let restarts = base.is_none_or(|b| plan.keep.oldest() >= b.chain_end);
        let old_raw = match old {
            Some(_) if folds && restarts && plan.keep.reads_before(plan.upto) => Some(
                kvlite_kv::chunked::read(txn, &keys.shard(shard))?.ok_or_else(|| {
                    corrupt(
                        db,
                        CorruptionKind::MissingData,
                        format!("shard {shard} listed but missing"),
                    )
                })?,
            ),
            _ => None,
        };
        Ok(Some(Prepared {
            shard,
            entries,
            old,
            write,
            base,
            kept,
            old_raw,
        }))
    }

    /// Encode shard `shard` as of the plan's fold point from its current
    /// version (or, where it has none, the database's creation: nothing, or
    /// a fork's parent) and the versions `entries` fold into it.
    #[allow(clippy::too_many_arguments)]
    fn build_shard(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        plan: &Plan,
        shard: u32,
        entries: &[Entry],
        old: Option<ShardInfo>,
    ) -> Result<Vec<u8>> {
        let lo = (shard * SHARD_PAGES).max(1);
        let hi = (shard * SHARD_PAGES + SHARD_PAGES - 1).min(plan.size);
        // Versions ascend within a page: the last one at or before the fold
        // point is the page there.
        let mut newest: BTreeMap<u32, Loc> = BTreeMap::new();
        for (_, pgno, loc) in entries {
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
        let mut pages: BTreeMap<u32, PageData> = BTreeMap::new();
        if old.is_some() {
            let current = blobs.get(&BlobRef::Shard(shard)).ok_or_else(|| {
                corrupt(
                    db,
                    CorruptionKind::MissingData,
                    format!("shard {shard} listed but missing"),
                )
            })?;
            for (p, d) in current.iter_shared() {
                if p <= hi {
                    pages.insert(p, d.clone());
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
            pages.insert(pgno, data.clone());
        }
        let missing: Vec<u32> = (lo..=hi)
            .filter(|&p| p != LOCK_PAGE && !pages.contains_key(&p))
            .collect();
        if !missing.is_empty() {
            // A fork's pages it never wrote are its parent's.
            let from_parent = match (old, meta.parent) {
                (None, Some(parent)) => self.parent_pages(txn, db, parent, &missing)?,
                _ => vec![None; missing.len()],
            };
            for (p, data) in missing.iter().zip(from_parent) {
                let data = data.ok_or_else(|| {
                    corrupt(
                        db,
                        CorruptionKind::MissingPage,
                        format!("page {p} is in neither the page index nor shard {shard}"),
                    )
                })?;
                pages.insert(*p, data);
            }
        }
        blob::encode(
            plan.upto,
            plan.size,
            pages.iter().map(|(p, d)| (*p, &d[..])),
        )
    }

    /// Write a prepared batch: each shard whose inputs are unchanged, with
    /// its history, then delete unreferenced deltas and update META.
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
        let old_floor = meta.history_floor;
        // Reads below the new floor are refused from this transaction on:
        // only then may what they alone needed go.
        if plan.keep.floor > meta.history_floor && plan.keep.floor <= meta.head_txid {
            meta.history_floor = plan.keep.floor;
            meta.history_floor_size = plan.keep.floor_size;
            meta.history_floor_time_ms = plan.keep.floor_time_ms;
        }
        let (mut pages, mut written) = (0u64, 0u64);
        let mut cleared: Vec<(u32, Loc)> = Vec::new();
        // Changes to the counts of kept versions naming each delta.
        let mut hrefs: BTreeMap<u64, i64> = BTreeMap::new();
        let mut history_changed = false;
        // Few reads however many shards: on PostgreSQL every round trip
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
        let mut info_keys: Vec<Vec<u8>> = prepared.iter().map(|p| keys.slist(p.shard)).collect();
        info_keys.extend(prepared.iter().map(|p| keys.history_base(p.shard)));
        let info_refs: Vec<&[u8]> = info_keys.iter().map(Vec::as_slice).collect();
        let mut current = txn.get_many(&info_refs)?;
        let current_bases = current.split_off(prepared.len());
        let keeps_history = plan.keep.reads_before(plan.upto);
        for ((p, info), base_now) in prepared.iter().zip(current).zip(current_bases) {
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
            let base_now = match base_now {
                Some(v) => Some(HistoryBase::decode(&v).ok_or_else(|| {
                    corrupt(
                        db,
                        CorruptionKind::Record,
                        format!("malformed BASE of shard {}", p.shard),
                    )
                })?),
                None => None,
            };
            if info != p.old || base_now != p.base {
                continue; // another pass changed the shard since the batch was built
            }
            let lo = p.shard * SHARD_PAGES;
            let in_shard = |pgno: u32| pgno >= lo && pgno - lo < SHARD_PAGES;
            // A chain every allowed read is past is no longer needed.
            let chain_done = p.base.is_some_and(|b| plan.keep.oldest() >= b.chain_end);
            let prefix = keys.shard(p.shard);
            let new_shard = match &p.write {
                ShardWrite::Keep => {
                    if let (true, Some(b)) = (chain_done, p.base) {
                        self.drop_chain(txn, db, keys, p.shard, b, &mut meta, &mut hrefs)?;
                        history_changed = true;
                    }
                    continue;
                }
                ShardWrite::Replace(ltx) => Some(ltx),
                ShardWrite::Remove => None,
            };
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
            // History first: a chain that starts now copies the shard as it
            // is before the new version replaces it.
            if let Some(b) = p.base
                && (chain_done || !keeps_history)
            {
                self.drop_chain(txn, db, keys, p.shard, b, &mut meta, &mut hrefs)?;
                history_changed = true;
            }
            if keeps_history {
                let continues = p.base.filter(|_| !chain_done);
                let mut base = match continues {
                    Some(b) => b,
                    None => {
                        let stored = match (p.old, &p.old_raw) {
                            (Some(_), Some(raw)) => {
                                Some(blob::store(txn, &keys.base_blob(p.shard), raw)?)
                            }
                            (None, _) => None,
                            (Some(_), None) => {
                                return Err(Fail::Api(Error::Internal(format!(
                                    "shard {} of {db:?}: its history starts without its bytes",
                                    p.shard
                                ))));
                            }
                        };
                        let b = HistoryBase {
                            as_of: p.old.map_or(history::CREATION_TXID, |o| o.txid),
                            chain_end: plan.upto,
                            stored,
                        };
                        credit(db, &mut meta.base_count, 1, "base count")?;
                        credit(db, &mut meta.base_bytes, b.stored_len(), "base bytes")?;
                        b
                    }
                };
                base.chain_end = plan.upto;
                txn.set(&keys.history_base(p.shard), &base.encode())?;
                // The kept versions (those of a continued chain) and the
                // folded ones, by page then txid: what no allowed read needs
                // goes, the rest of the folded ones are kept.
                let mut all: Vec<(u32, u64, bool, &Entry)> =
                    folded.iter().map(|e| (e.1, e.2.txid, true, *e)).collect();
                if continues.is_some() {
                    all.extend(p.kept.iter().map(|e| (e.1, e.2.txid, false, e)));
                }
                all.sort_by_key(|(pgno, txid, _, _)| (*pgno, *txid));
                let versions: Vec<(u32, u64)> = all.iter().map(|v| (v.0, v.1)).collect();
                let needed = plan.keep.needed(&versions);
                let mut dropped: Vec<&Entry> = Vec::new();
                for ((_, txid, is_folded, e), needed) in all.iter().zip(needed) {
                    match (is_folded, needed) {
                        (true, true) => {
                            txn.set(&keys.hidx(e.1, *txid), &encode_pidx(e.2.part))?;
                            credit(db, &mut meta.hidx_count, 1, "kept versions")?;
                            *hrefs.entry(*txid).or_default() += 1;
                        }
                        (false, false) => dropped.push(e),
                        _ => {}
                    }
                }
                self.drop_kept(txn, db, &dropped, &mut meta, &mut hrefs)?;
                history_changed = true;
            }
            match (new_shard, p.old) {
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
        // Deltas no kept version names any more may go once the floor has
        // passed them.
        let unnamed = history::adjust_hrefs(txn, db, keys, &hrefs, &mut meta)?;
        let mut deltas = 0;
        // Oldest first, and a bounded number per transaction: after many
        // overwrites there can be tens of thousands. A delta the page index
        // or a kept version names stays; so does every delta from the floor
        // on (its record says what the commit was: reads and the history
        // list need it), unless no history is kept at all.
        // A delta from the floor on keeps its record (what the commit was:
        // the history list and reads there need it) and drops only its
        // pages; one before the floor (or any, when no history is kept)
        // goes whole.
        let deletable = |t: u64| t <= plan.upto;
        let goes_whole = |t: u64| t < plan.keep.floor || !plan.keeps_records;
        let named_from_plan = &plan.kept_deltas;
        let mut garbage: Vec<u64> = refs
            .iter()
            .filter(|&(&t, &n)| n == 0 && deletable(t) && !named_from_plan.contains(&t))
            .map(|(&t, _)| t)
            .chain(
                unnamed
                    .iter()
                    .copied()
                    .filter(|&t| deletable(t) && refs.get(&t).is_none_or(|&n| n == 0)),
            )
            .collect();
        garbage.sort_unstable();
        garbage.dedup();
        let cap = self
            .config
            .compaction
            .max_deltas_deleted_per_transaction
            .max(1);
        let garbage_left = garbage.len() > cap;
        garbage.truncate(cap);
        // A kept version may name one now (the plan's view is older).
        let href_keys: Vec<Vec<u8>> = garbage.iter().map(|&t| keys.href(t)).collect();
        let href_refs: Vec<&[u8]> = href_keys.iter().map(Vec::as_slice).collect();
        let named_now = txn.get_many(&href_refs)?;
        let checked = garbage.clone();
        let garbage: Vec<u64> = garbage
            .into_iter()
            .zip(named_now)
            .filter(|(_, named)| named.is_none())
            .map(|(t, _)| t)
            .collect();
        let dlist_keys: Vec<Vec<u8>> = garbage.iter().map(|&t| keys.dlist(t)).collect();
        let dlist_refs: Vec<&[u8]> = dlist_keys.iter().map(Vec::as_slice).collect();
        let infos = txn.get_many(&dlist_refs)?;
        for (&txid, info) in garbage.iter().zip(infos) {
            match info {
                Some(v) if goes_whole(txid) => {
                    delete_delta(txn, db, keys, txid, &v, &mut meta)?;
                    deltas += 1;
                }
                Some(v) => {
                    deltas += u64::from(drop_delta_pages(txn, db, keys, txid, &v, &mut meta)?);
                }
                None => {}
            }
        }
        // Checked candidates are settled either way: deleted, or named by
        // a kept version (their count going to zero brings them back).
        for t in checked {
            refs.remove(&t);
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
        if pages > 0
            || deltas > 0
            || written > 0
            || history_changed
            || meta.history_floor != old_floor
        {
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
            folded: Box::new(meta),
            cleared,
            garbage_left,
        })
    }

    /// Drop shard `shard`'s whole kept history: its base (record and stored
    /// shard) and every kept version of its pages (read here, so the counts
    /// are exact).
    #[allow(clippy::too_many_arguments)]
    fn drop_chain(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        keys: &DbKeys,
        shard: u32,
        base: HistoryBase,
        meta: &mut Meta,
        hrefs: &mut BTreeMap<u64, i64>,
    ) -> Result<()> {
        let kept = kept_entries(txn, db, keys, shard)?;
        let (start, end) = keys.hidx_pages(
            shard * SHARD_PAGES,
            (shard * SHARD_PAGES).saturating_add(SHARD_PAGES),
        );
        txn.clear_range(&start, &end)?;
        debit(db, &mut meta.hidx_count, kept.len() as u64, "kept versions")?;
        for (_, _, loc) in &kept {
            *hrefs.entry(loc.txid).or_default() -= 1;
        }
        txn.clear(&keys.history_base(shard))?;
        kvlite_kv::chunked::clear(txn, &keys.base_blob(shard))?;
        debit(db, &mut meta.base_count, 1, "base count")?;
        debit(db, &mut meta.base_bytes, base.stored_len(), "base bytes")
    }

    /// Drop kept versions read earlier: only those still stored (counts
    /// stay exact whatever else ran since).
    fn drop_kept(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        dropped: &[&Entry],
        meta: &mut Meta,
        hrefs: &mut BTreeMap<u64, i64>,
    ) -> Result<()> {
        if dropped.is_empty() {
            return Ok(());
        }
        let ks: Vec<&[u8]> = dropped.iter().map(|e| e.0.as_slice()).collect();
        let present = txn.get_many(&ks)?;
        for (e, v) in dropped.iter().zip(present) {
            if v.is_some() {
                txn.clear(&e.0)?;
                debit(db, &mut meta.hidx_count, 1, "kept versions")?;
                *hrefs.entry(e.2.txid).or_default() -= 1;
            }
        }
        Ok(())
    }
}

/// A shard built from a snapshot, written only if its inputs are unchanged.
struct Prepared {
    shard: u32,
    /// The versions it folds (at or before the fold point).
    entries: Vec<Entry>,
    old: Option<ShardInfo>,
    write: ShardWrite,
    /// Its history base and kept versions, as read.
    base: Option<HistoryBase>,
    kept: Vec<Entry>,
    /// The current shard's stored bytes, when this fold starts a chain with
    /// it.
    old_raw: Option<Vec<u8>>,
}

/// What a batch does to one shard.
enum ShardWrite {
    /// Leave it (only its history changes).
    Keep,
    /// A new version as of the fold point.
    Replace(Vec<u8>),
    /// Wholly past the end: it goes.
    Remove,
}

fn kept_entries(txn: &mut impl KvRead, db: &str, keys: &DbKeys, shard: u32) -> Result<Vec<Entry>> {
    let (start, end) = keys.hidx_pages(
        shard * SHARD_PAGES,
        (shard * SHARD_PAGES).saturating_add(SHARD_PAGES),
    );
    txn.scan(&start, &end, ScanOptions::ALL)?
        .into_iter()
        .map(
            |(k, v)| match (DbKeys::hidx_key(&k), crate::records::decode_u32(&v)) {
                (Some((pgno, txid)), Some(part)) => Ok((k, pgno, Loc { txid, part })),
                _ => Err(corrupt(
                    db,
                    CorruptionKind::Record,
                    format!("malformed kept version {k:?}"),
                )),
            },
        )
        .collect()
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
        /// META as the fold left it.
        folded: Box<Meta>,
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
    keep: Keep,
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
    // Chains every allowed read is past go, folded or not.
    for (shard, base) in history::all_bases(txn, db, keys)? {
        if keep.oldest() >= base.chain_end {
            shards.push(shard);
        }
    }
    shards.sort_unstable();
    shards.dedup();
    // Deltas no version references at all are garbage once folded past and
    // (when history is kept) past the floor: only those are candidates, so
    // the scan stays as short as what may go.
    let keeps_records = keep.floor < meta.head_txid;
    let until = if keeps_records {
        keep.floor
    } else {
        upto.saturating_add(1)
    };
    let (start, end) = keys.dlist_range(0, until);
    for (k, _) in txn.scan(&start, &end, ScanOptions::ALL)? {
        if let Some(t) = DbKeys::dlist_txid(&k) {
            refs.entry(t).or_insert(0);
        }
    }
    let (hs, _) = keys.href_all();
    let he = keys.href(until);
    let kept_deltas = txn
        .scan(&hs, &he, ScanOptions::ALL)?
        .iter()
        .filter_map(|(k, _)| DbKeys::href_txid(k))
        .collect();
    Ok(Plan {
        generation: meta.generation,
        upto,
        size,
        shards,
        refs,
        keep,
        keeps_records,
        kept_deltas,
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
    /// What reads a pass on `db` must keep possible: from the floor (the
    /// newest commit at least the retention old, never past the oldest live
    /// reader, never below META's floor) to the head, and every pin. A
    /// ghost (deleted, kept for its forks) and a database over its quota
    /// keep their pins (and live readers' commits) only.
    pub(crate) fn keep_of(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        reader_pin: Option<u64>,
    ) -> Result<Keep> {
        // A database over its quota gives up its history first (pins
        // and live readers aside), so rewrites and truncations free space
        // at once; a ghost keeps its pins only.
        let over_quota = meta.quota_bytes > 0 && meta.used_bytes() > meta.quota_bytes;
        let by_time = if meta.ghost || over_quota {
            meta.head_txid
        } else {
            let retention = history::retention_of(meta, self.config.history_retention);
            history::time_floor(txn, db, keys, meta, retention, self.now_ms())?
        };
        let mut floor = by_time
            .min(reader_pin.unwrap_or(u64::MAX))
            .min(meta.head_txid)
            .max(meta.history_floor);
        // What the floor commit was: META's record of the old floor, the
        // head's, or the floor commit's own record (kept from the old
        // floor on). A commit whose record says no size cannot be a floor.
        let (mut floor_size, mut floor_time_ms) =
            (meta.history_floor_size, meta.history_floor_time_ms);
        if floor > meta.history_floor {
            match txn.get(&keys.dlist(floor))? {
                Some(v) => {
                    let info = DeltaInfo::decode(&v).ok_or_else(|| {
                        corrupt(
                            db,
                            CorruptionKind::Record,
                            format!("malformed DLIST {floor}"),
                        )
                    })?;
                    match info.size_pages {
                        Some(size) => (floor_size, floor_time_ms) = (size, info.time_ms),
                        None => floor = meta.history_floor,
                    }
                }
                None if floor == meta.head_txid => {
                    (floor_size, floor_time_ms) = (meta.size_pages, self.now_ms());
                }
                None => floor = meta.history_floor,
            }
        }
        let pins = history::pins(txn, db, keys)?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        Ok(Keep {
            floor,
            floor_size,
            floor_time_ms,
            pins,
        })
    }

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
