//! Compaction: fold deltas into shards so reads stay one blob per shard and
//! overwritten pages stop costing storage.
//!
//! A pass plans from a snapshot (the page index grouped by shard, and how
//! many entries reference each delta), then folds shards in batches bounded
//! by bytes. Each batch is built in a read snapshot (reading and decoding
//! blobs, encoding new shards: the slow part) and written by a short write
//! transaction, which:
//! - re-reads META and stops the pass, writing nothing, if the generation
//!   changed (a takeover happened) — a stale compaction never writes;
//! - re-reads each shard's record and the database size, and writes the
//!   shard only if they are what the batch was built from;
//! - removes only the page-index entries still identical to the ones the
//!   shard was built from: a page committed meanwhile keeps its newer entry,
//!   which shadows the shard's older copy (the index always wins), so a
//!   racing commit is never rewound and hot shards still make progress;
//! - deletes deltas whose references reached zero (a bounded number) and
//!   bumps META's `version` (page index) and `shard_epoch`.
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
use crate::cache::{Loc, PageIndex, lock};
use crate::commit::{credit, debit, delete_delta};
use crate::error::{Fail, Result, corrupt};
use crate::keys::DbKeys;
use crate::meta::Meta;
use crate::records::{SLIST_ENTRY_BYTES, ShardInfo};
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
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            min_deltas: 64,
            min_page_index_entries: 8192,
            max_concurrent: 2,
            bytes_per_transaction: 4 << 20,
            max_deltas_deleted_per_transaction: 2048,
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

/// The plan of a pass: shards with unfolded pages, and references per delta.
struct Plan {
    generation: u64,
    shards: Vec<u32>,
    refs: HashMap<u64, u64>,
}

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
        let (plan, keys) = self.kv.read(|txn| {
            let (state, keys, meta) = self.resolve(txn, db)?;
            self.metrics.backlog_deltas.observe(meta.delta_count as f64);
            self.metrics
                .lag_txids
                .observe(meta.head_txid.saturating_sub(meta.materialized_txid) as f64);
            let plan = if self.index_too_large(&state, &meta) {
                plan_in_pieces(txn, db, &keys, &meta)?
            } else {
                self.with_page_index(txn, db, &state, &keys, &meta, |pidx| plan(pidx, &meta))?
            };
            // Deltas no entry references at all (fully overwritten) are
            // garbage already.
            let (start, end) = keys.dlist_all();
            let mut plan = plan;
            for (k, _) in txn.scan(&start, &end, ScanOptions::ALL)? {
                if let Some(t) = DbKeys::dlist_txid(&k) {
                    plan.refs.entry(t).or_insert(0);
                }
            }
            Ok::<_, Fail>((plan, keys))
        })?;
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
            let outcome = self.kv.transact(|txn| {
                let mut local_refs = refs.clone();
                let r = self.apply(txn, db, &keys, &plan, &prepared, &mut local_refs)?;
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

    /// Keep a current page-index memo current: drop the folded entries.
    fn after_fold(&self, db: &str, old_version: u64, new_version: u64, cleared: &[u32]) {
        // `cleared`: the pages whose entries the transaction removed.
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
        for pgno in cleared {
            pidx.entries.remove(pgno);
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
            let Some(p) = self.prepare_shard(txn, db, keys, &meta, shard)? else {
                continue;
            };
            budget = budget.saturating_sub(p.ltx.len());
            out.push(p);
        }
        Ok(Some((out, consumed)))
    }

    /// The new contents of one shard: its current pages, overlaid with the
    /// newest copies the page index names.
    fn prepare_shard(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        shard: u32,
    ) -> Result<Option<Prepared>> {
        let lo = (shard * SHARD_PAGES).max(1);
        let hi = (shard * SHARD_PAGES + SHARD_PAGES - 1).min(meta.size_pages);
        let entries = shard_entries(txn, db, keys, shard)?;
        if entries.is_empty() || lo > hi {
            return Ok(None);
        }
        let old = shard_info(txn, db, keys, shard)?;
        let mut refs: Vec<BlobRef> = entries
            .iter()
            .map(|(_, l)| BlobRef::Delta {
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
        let mut newest_txid = old.map_or(0, |o| o.txid);
        for &(pgno, loc) in &entries {
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
            newest_txid = newest_txid.max(loc.txid);
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
        let ltx = blob::encode(newest_txid, meta.size_pages, pages)?;
        Ok(Some(Prepared {
            shard,
            entries,
            old,
            size_pages: meta.size_pages,
            ltx,
            newest_txid,
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
        let mut cleared = Vec::new();
        // Three reads however many shards: on PostgreSQL every round trip
        // here widens the window in which a commit can conflict with us.
        let current_entries = match (prepared.first(), prepared.last()) {
            (Some(first), Some(last)) => {
                let (start, _) = keys.pidx_from(first.shard * SHARD_PAGES);
                let end = keys.pidx(last.shard * SHARD_PAGES + SHARD_PAGES);
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
            let lo = p.shard * SHARD_PAGES;
            if meta.size_pages != p.size_pages || info != p.old {
                continue; // the shard itself changed since the batch was built
            }
            // Fold the entries that are still what the shard was built from.
            // A page committed since keeps its newer entry, which shadows the
            // shard's older copy until a later pass folds it.
            let current: HashMap<u32, Loc> = current_entries
                .iter()
                .filter(|(pgno, _)| *pgno >= lo && *pgno < lo + SHARD_PAGES)
                .copied()
                .collect();
            let folded: Vec<(u32, Loc)> = p
                .entries
                .iter()
                .filter(|(pgno, loc)| current.get(pgno) == Some(loc))
                .copied()
                .collect();
            // Only entries still current, and only this shard's, are removed.
            debug_assert!(folded.len() <= current.len());
            debug_assert!(
                folded
                    .iter()
                    .all(|(pgno, _)| *pgno >= lo && *pgno < lo + SHARD_PAGES)
            );
            let prefix = keys.shard(p.shard);
            let stored = blob::store(txn, &prefix, &p.ltx)?;
            txn.set(
                &keys.slist(p.shard),
                &ShardInfo {
                    bytes: stored,
                    txid: p.newest_txid,
                }
                .encode(),
            )?;
            match p.old {
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
            if folded.len() == current.len() {
                let (start, _) = keys.pidx_from(lo);
                let end = keys.pidx(lo + SHARD_PAGES);
                txn.clear_range(&start, &end)?;
            } else {
                for (pgno, _) in &folded {
                    txn.clear(&keys.pidx(*pgno))?;
                }
            }
            debit(
                db,
                &mut meta.pidx_count,
                folded.len() as u64,
                "page-index count",
            )?;
            for (_, loc) in &folded {
                if let Some(n) = refs.get_mut(&loc.txid) {
                    *n = n.saturating_sub(1);
                }
            }
            pages += folded.len() as u64;
            written += 1;
            cleared.extend(folded.iter().map(|(pgno, _)| *pgno));
        }
        let mut deltas = 0;
        // Oldest first, and a bounded number per transaction: after many
        // overwrites there can be tens of thousands.
        let mut garbage: Vec<u64> = refs
            .iter()
            .filter(|&(_, &n)| n == 0)
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
        if meta.pidx_count == 0 {
            meta.materialized_txid = meta.materialized_txid.max(meta.head_txid);
        } else if let Some(&oldest) = refs.keys().min() {
            meta.materialized_txid = meta
                .materialized_txid
                .max(oldest.saturating_sub(1))
                .min(meta.head_txid);
        }
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
    entries: Vec<(u32, Loc)>,
    old: Option<ShardInfo>,
    size_pages: u32,
    ltx: Vec<u8>,
    newest_txid: u64,
}

fn shard_entries(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    shard: u32,
) -> Result<Vec<(u32, Loc)>> {
    let (start, _) = keys.pidx_from(shard * SHARD_PAGES);
    let end = keys.pidx(shard * SHARD_PAGES + SHARD_PAGES);
    entries_of(db, txn.scan(&start, &end, ScanOptions::ALL)?)
}

fn entries_of(db: &str, scanned: Vec<kvlite_kv::KeyValue>) -> Result<Vec<(u32, Loc)>> {
    scanned
        .into_iter()
        .map(|(k, v)| match (DbKeys::pidx_pgno(&k), Loc::decode(&v)) {
            (Some(p), Some(l)) => Ok((p, l)),
            _ => Err(corrupt(
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
        /// Pages whose page-index entries were removed.
        cleared: Vec<u32>,
        /// Unreferenced deltas this transaction had no room to delete.
        garbage_left: bool,
    },
}

fn shard_of_page(pgno: u32) -> u32 {
    pgno / SHARD_PAGES
}

/// [`plan`] from the stored page index read in bounded pieces: memory
/// follows the shards and deltas it names, not its entries.
fn plan_in_pieces(txn: &mut impl KvRead, db: &str, keys: &DbKeys, meta: &Meta) -> Result<Plan> {
    let mut shards: Vec<u32> = Vec::new();
    let mut refs: HashMap<u64, u64> = HashMap::new();
    let (mut cursor, end) = keys.pidx_from(0);
    loop {
        let piece = txn.scan(&cursor, &end, ScanOptions::limit(PLAN_PIECE))?;
        let Some((last, _)) = piece.last() else { break };
        cursor = last.clone();
        cursor.push(0);
        for (pgno, loc) in entries_of(db, piece)? {
            if shards.last() != Some(&shard_of_page(pgno)) {
                shards.push(shard_of_page(pgno));
            }
            *refs.entry(loc.txid).or_default() += 1;
        }
    }
    Ok(Plan {
        generation: meta.generation,
        shards,
        refs,
    })
}

/// Page-index entries read at a time when planning in pieces.
const PLAN_PIECE: usize = 16_384;

fn plan(pidx: &PageIndex, meta: &Meta) -> Plan {
    let mut shards: Vec<u32> = pidx.entries.keys().map(|&p| shard_of_page(p)).collect();
    shards.dedup();
    let mut refs: HashMap<u64, u64> = HashMap::new();
    for loc in pidx.entries.values() {
        *refs.entry(loc.txid).or_default() += 1;
    }
    Plan {
        generation: meta.generation,
        shards,
        refs,
    }
}
