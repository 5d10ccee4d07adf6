//! Compaction: fold deltas into shards so reads stay one blob per shard and
//! overwritten pages stop costing storage.
//!
//! A pass plans from a snapshot (the page index grouped by shard, and how
//! many entries reference each delta), then folds shards in bounded write
//! transactions. Each transaction:
//! - re-reads META and stops the pass, writing nothing, if the generation
//!   changed (a takeover happened) — a stale compaction never writes;
//! - re-reads the page-index entries of the shards it folds, so a commit that
//!   landed since the plan is folded too, never rewound;
//! - writes each new shard (old shard + newest page copies), clears those
//!   entries, and deletes every delta whose references reached zero.
//!
//! Deleting by counted references is safe because references to an existing
//! delta only ever disappear (a commit references only its own new txid): a
//! count taken from the plan's snapshot can only overestimate, so a delta is
//! deleted late, never early. `materialized_txid` only moves forward.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kvlite_kv::{KvRead, ScanOptions, WriteTxn, chunked};

use crate::blob::{self, BlobRef};
use crate::cache::{Loc, PageIndex, lock};
use crate::commit::{DLIST_ENTRY_BYTES, DeltaInfo, SLIST_ENTRY_BYTES, ShardInfo, corrupt};
use crate::keys::DbKeys;
use crate::meta::Meta;
use crate::{Engine, EngineError, LOCK_PAGE, Result, SHARD_PAGES, validate_name};

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub pages_folded: u64,
    pub deltas_deleted: u64,
    pub shards_written: u64,
    pub transactions: u64,
    /// The pass stopped because the database was taken over meanwhile.
    pub stale: bool,
}

/// Where a test can pause a pass (to run a commit or takeover "during" it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionStep {
    /// The plan is made; nothing written yet.
    Planned,
    /// Before write transaction `n` (0-based).
    BeforeTransaction(u64),
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
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            min_deltas: 64,
            min_page_index_entries: 8192,
            max_concurrent: 2,
            bytes_per_transaction: 4 << 20,
        }
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
    pub fn compact(&self, db: &str) -> Result<CompactionReport> {
        self.compact_with(db, &|_| {})
    }

    /// [`Engine::compact`] with a callback at each step (tests inject
    /// concurrent commits and takeovers there).
    pub fn compact_with(
        &self,
        db: &str,
        on_step: &dyn Fn(CompactionStep),
    ) -> Result<CompactionReport> {
        validate_name(db)?;
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
            let plan =
                self.with_page_index(txn, db, &state, &keys, &meta, |pidx| plan(pidx, &meta))?;
            // Deltas no entry references at all (fully overwritten) are
            // garbage already.
            let (start, end) = keys.dlist_all();
            let mut plan = plan;
            for (k, _) in txn.scan(&start, &end, ScanOptions::ALL)? {
                if let Some(t) = DbKeys::dlist_txid(&k) {
                    plan.refs.entry(t).or_insert(0);
                }
            }
            Ok::<_, EngineError>((plan, keys))
        })?;
        on_step(CompactionStep::Planned);
        let mut report = CompactionReport::default();
        let mut refs = plan.refs.clone();
        let mut remaining: &[u32] = &plan.shards;
        let mut first = true;
        while first || !remaining.is_empty() {
            first = false;
            on_step(CompactionStep::BeforeTransaction(report.transactions));
            let outcome = self.kv.transact(|txn| {
                let mut local_refs = refs.clone();
                let r = self.fold_some(txn, db, &keys, &plan, remaining, &mut local_refs)?;
                Ok::<_, EngineError>((r, local_refs))
            })?;
            let (step, new_refs) = outcome;
            match step {
                Folded::Stale => {
                    report.stale = true;
                    return Ok(report);
                }
                Folded::Done {
                    shards,
                    pages,
                    deltas,
                    written,
                    old_version,
                    new_version,
                    cleared,
                } => {
                    refs = new_refs;
                    remaining = &remaining[shards..];
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
        for &shard in cleared {
            let lo = shard * SHARD_PAGES;
            let doomed: Vec<u32> = pidx
                .entries
                .range(lo..lo + SHARD_PAGES)
                .map(|(p, _)| *p)
                .collect();
            for p in doomed {
                pidx.entries.remove(&p);
            }
        }
        pidx.version = new_version;
        self.states.adjust(before, pidx.entries.len());
        s.pidx = Some(pidx);
        if let Some(meta) = s.meta.as_mut() {
            meta.version = new_version;
        }
    }

    /// One write transaction of a pass: fold shards from `shards` until the
    /// byte budget is spent, then delete unreferenced deltas.
    #[allow(clippy::too_many_arguments)]
    fn fold_some(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        keys: &DbKeys,
        plan: &Plan,
        shards: &[u32],
        refs: &mut HashMap<u64, u64>,
    ) -> Result<Folded> {
        let mut meta = self.meta_in(txn, db, keys)?;
        if meta.generation != plan.generation {
            return Ok(Folded::Stale);
        }
        let old_version = meta.version;
        let (mut done, mut pages, mut written, mut budget) = (
            0usize,
            0u64,
            0u64,
            self.config.compaction.bytes_per_transaction,
        );
        let mut cleared = Vec::new();
        for &shard in shards {
            if budget == 0 {
                break;
            }
            let folded = self.fold_shard(txn, db, keys, &mut meta, shard, refs)?;
            done += 1;
            pages += folded.pages;
            if folded.wrote {
                written += 1;
                budget = budget.saturating_sub(folded.bytes as usize);
                cleared.push(shard);
            }
        }
        let mut deltas = 0;
        let garbage: Vec<u64> = refs
            .iter()
            .filter(|&(_, &n)| n == 0)
            .map(|(&t, _)| t)
            .collect();
        for txid in garbage {
            if let Some(v) = txn.get(&keys.dlist(txid))? {
                let info = DeltaInfo::decode(&v)
                    .ok_or_else(|| corrupt(db, format!("malformed DLIST {txid}")))?;
                let (ds, de) = keys.delta_txids(txid, txid + 1);
                txn.clear_range(&ds, &de)?;
                txn.clear(&keys.dlist(txid))?;
                meta.delta_count -= 1;
                meta.delta_bytes -= info.bytes + DLIST_ENTRY_BYTES;
                deltas += 1;
            }
            refs.remove(&txid);
        }
        if meta.pidx_count == 0 {
            meta.materialized_txid = meta.materialized_txid.max(meta.head_txid);
        } else if let Some(&oldest) = refs.keys().min() {
            meta.materialized_txid = meta
                .materialized_txid
                .max(oldest.saturating_sub(1))
                .min(meta.head_txid);
        }
        if pages > 0 || deltas > 0 {
            meta.version += 1;
            txn.set(&keys.meta(), &meta.encode(keys.meta().len()))?;
        }
        Ok(Folded::Done {
            shards: done,
            pages,
            deltas,
            written,
            old_version,
            new_version: meta.version,
            cleared,
        })
    }

    /// Fold the page-index entries of one shard (read now, in this
    /// transaction) into a new shard.
    #[allow(clippy::too_many_arguments)]
    fn fold_shard(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        keys: &DbKeys,
        meta: &mut Meta,
        shard: u32,
        refs: &mut HashMap<u64, u64>,
    ) -> Result<FoldedShard> {
        let lo = (shard * SHARD_PAGES).max(1);
        let hi = (shard * SHARD_PAGES + SHARD_PAGES - 1).min(meta.size_pages);
        let (start, _) = keys.pidx_from(lo);
        let end = keys.pidx(shard * SHARD_PAGES + SHARD_PAGES);
        let entries: Vec<(u32, Loc)> = txn
            .scan(&start, &end, ScanOptions::ALL)?
            .into_iter()
            .map(|(k, v)| match (DbKeys::pidx_pgno(&k), Loc::decode(&v)) {
                (Some(p), Some(l)) => Ok((p, l)),
                _ => Err(corrupt(db, format!("malformed page-index entry {k:?}"))),
            })
            .collect::<Result<_>>()?;
        if entries.is_empty() || lo > hi {
            return Ok(FoldedShard {
                pages: 0,
                bytes: 0,
                wrote: false,
            });
        }
        // The shard's current pages, then the newest copies on top.
        let mut pages: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let slist = keys.slist(shard);
        let old = match txn.get(&slist)? {
            Some(v) => Some(
                ShardInfo::decode(&v)
                    .ok_or_else(|| corrupt(db, format!("malformed SLIST {shard}")))?,
            ),
            None => None,
        };
        let prefix = keys.shard(shard);
        if old.is_some() {
            let bytes = chunked::read(txn, &prefix)?
                .ok_or_else(|| corrupt(db, format!("shard {shard} listed but missing")))?;
            for (p, d) in blob::decode(db, keys, BlobRef::Shard(shard), &bytes)?.iter() {
                if p <= hi {
                    pages.insert(p, d.to_vec());
                }
            }
        }
        let mut newest_txid = old.map_or(0, |o| o.txid);
        for &(pgno, loc) in &entries {
            let blob = BlobRef::Delta {
                txid: loc.txid,
                part: loc.part,
            };
            let (mut fetched, _) = blob::fetch(txn, db, keys, &self.delta_cache, [blob])?;
            let decoded = fetched
                .remove(&blob)
                .ok_or_else(|| corrupt(db, format!("{blob:?} is referenced but missing")))?;
            let data = decoded
                .get(pgno)
                .ok_or_else(|| corrupt(db, format!("page {pgno} not found in {blob:?}")))?;
            pages.insert(pgno, data.to_vec());
            newest_txid = newest_txid.max(loc.txid);
            if let Some(n) = refs.get_mut(&loc.txid) {
                *n = n.saturating_sub(1);
            }
        }
        for p in lo..=hi {
            if p != LOCK_PAGE && !pages.contains_key(&p) {
                return Err(corrupt(
                    db,
                    format!("page {p} is in neither the page index nor shard {shard}"),
                ));
            }
        }
        let ltx = blob::encode(
            newest_txid,
            meta.size_pages,
            pages.iter().map(|(p, d)| (*p, d.as_slice())),
        )?;
        let stored = blob::store(txn, &prefix, &ltx)?;
        txn.set(
            &slist,
            &ShardInfo {
                bytes: stored,
                txid: newest_txid,
            }
            .encode(),
        )?;
        match old {
            Some(o) => meta.shard_bytes = meta.shard_bytes - o.bytes + stored,
            None => {
                meta.shard_count += 1;
                meta.shard_bytes += stored + SLIST_ENTRY_BYTES;
            }
        }
        txn.clear_range(&start, &end)?;
        meta.pidx_count -= entries.len() as u64;
        Ok(FoldedShard {
            pages: entries.len() as u64,
            bytes: stored,
            wrote: true,
        })
    }
}

struct FoldedShard {
    pages: u64,
    bytes: u64,
    wrote: bool,
}

enum Folded {
    Stale,
    Done {
        shards: usize,
        pages: u64,
        deltas: u64,
        written: u64,
        old_version: u64,
        new_version: u64,
        cleared: Vec<u32>,
    },
}

fn shard_of_page(pgno: u32) -> u32 {
    pgno / SHARD_PAGES
}

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
