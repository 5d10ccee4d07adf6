//! Inspection and administration: stat, list, delete, quota, audit.

use std::collections::{BTreeMap, BTreeSet};

use kvlite_kv::{KvRead, ScanOptions, prefix_end};

use kvlite_api::{DbStat, Result};

use crate::cache::Loc;
use crate::error::Fail;
use crate::keys::{self, DbKeys};
use crate::records::{
    DeltaInfo, HistoryBase, PIDX_ENTRY_BYTES, Part, SLIST_ENTRY_BYTES, ShardInfo, decode_pidx,
};
use crate::{Engine, decode_id, validate_name};

/// Blobs (deltas or shards) of a deleted database one sweep transaction
/// removes at most.
const SWEEP_BLOBS: usize = 64;

/// Where a database's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Legacy v1 files only: migrated when first opened.
    V1,
    /// A migration is copying it (clients that open it wait).
    Migrating,
    V2,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::V1 => "v1",
            Layout::Migrating => "migrating",
            Layout::V2 => "v2",
        }
    }
}

/// The whole store's bookkeeping of databases.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreAudit {
    /// Databases with a name.
    pub databases: u64,
    /// Deleted databases whose keys are still being swept.
    pub deleted_not_swept: u64,
    /// Deleted databases kept because forks still read them.
    pub kept_for_forks: u64,
    /// Ids with keys but neither a name nor a tombstone (empty when healthy).
    pub orphaned: Vec<u64>,
    /// Databases still holding v1 data only (not migrated yet).
    pub v1_databases: u64,
    /// Migration leases left where no migration can be running: on a
    /// database without v1 data or with a finished v2 head.
    pub stale_leases: Vec<String>,
}

impl StoreAudit {
    pub fn is_clean(&self) -> bool {
        self.orphaned.is_empty() && self.stale_leases.is_empty()
    }
}

/// Usage and references recomputed from a full scan, next to META's figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audit {
    pub meta_used_bytes: u64,
    pub scanned_used_bytes: u64,
    pub meta_page_index_entries: u64,
    pub scanned_page_index_entries: u64,
    pub meta_deltas: u64,
    pub scanned_deltas: u64,
    pub meta_shards: u64,
    pub scanned_shards: u64,
    /// Inconsistencies found (empty for a healthy database).
    pub problems: Vec<String>,
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
            && self.meta_used_bytes == self.scanned_used_bytes
            && self.meta_page_index_entries == self.scanned_page_index_entries
            && self.meta_deltas == self.scanned_deltas
            && self.meta_shards == self.scanned_shards
    }
}

impl Engine {
    pub fn stat(&self, db: &str) -> Result<DbStat> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            let (start, end) = keys.pending_all();
            let pending = txn
                .scan(&start, &end, ScanOptions::ALL)?
                .iter()
                .filter(|(k, _)| DbKeys::pending_part_number(k).is_none())
                .count() as u64;
            Ok::<_, Fail>(DbStat {
                name: db.to_string(),
                id: keys.id,
                generation: meta.generation,
                head_txid: meta.head_txid,
                next_txid: meta.next_txid,
                materialized_txid: meta.materialized_txid,
                size_pages: meta.size_pages,
                page_size: meta.page_size,
                shard_pages: meta.shard_pages,
                origin: meta.origin,
                created_ms: meta.created_ms,
                page_index_entries: meta.pidx_count,
                deltas: meta.delta_count,
                delta_bytes: meta.delta_bytes,
                shards: meta.shard_count,
                shard_bytes: meta.shard_bytes,
                used_bytes: meta.used_bytes(),
                quota_bytes: meta.quota_bytes,
                fast_path_limit: meta.fast_path_limit,
                pending_commits: pending,
                history_floor: meta.history_floor,
                retention_ms: crate::history::retention_of(&meta, self.config.history_retention),
                history_bytes: meta.history_bytes(),
                kept_versions: meta.hidx_count,
                pins: meta.pin_count,
                forked_from: match meta.parent {
                    Some(p) => Some(self.origin_of(txn, p)?),
                    None => None,
                },
            })
        })?)
    }

    /// Names of databases starting with `prefix`, after `after` (exclusive),
    /// at most `limit`, in byte order: v2 databases and v1 ones not migrated.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let mut names = self.list_v2(prefix, after, limit)?;
        names.extend(self.v1_files().list(prefix, after, limit)?);
        names.sort_unstable();
        names.dedup();
        names.truncate(limit);
        Ok(names)
    }

    /// Where `db`'s data is: `None` if it does not exist.
    pub fn layout(&self, db: &str) -> Result<Option<Layout>> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| {
            Ok::<_, Fail>(match crate::v1::lease::v2_origin(txn, db)? {
                Some(kvlite_api::Origin::MigratingFromV1) => Some(Layout::Migrating),
                Some(_) => Some(Layout::V2),
                None if crate::v1::has_v1_data(txn, db)? => Some(Layout::V1),
                None => None,
            })
        })?)
    }

    fn list_v2(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let start = match after {
            Some(a) if a >= prefix => {
                let mut k = keys::dir(a);
                k.push(0);
                k
            }
            _ => keys::dir(prefix),
        };
        // Databases moving in (staging names) are not listed unless asked.
        let past_staging = keys::dir("\u{2}");
        let start = if prefix.is_empty() && start < past_staging {
            past_staging
        } else {
            start
        };
        let end = prefix_end(&keys::dir(prefix)).unwrap_or_else(|| keys::dir_range().1);
        let entries = self
            .kv
            .read(|txn| txn.scan(&start, &end, ScanOptions::limit(limit)))
            .map_err(Fail::from)?;
        Ok(entries
            .iter()
            .filter_map(|(k, _)| keys::dir_name(k).map(str::to_string))
            .collect())
    }

    /// Remove a database and every key it has. Returns false if it did not
    /// exist. One transaction removes the name and META and leaves a
    /// tombstone; the keys are then swept in bounded transactions and the
    /// tombstone goes last. A sweep cut short (a crash, a lost store) is
    /// finished by [`Engine::sweep_deleted`], which the background
    /// compactor runs when it starts.
    pub fn delete(&self, db: &str) -> Result<bool> {
        let (existed, sweep, had_v1) = self.mark_deleted(db)?;
        if had_v1 {
            crate::v1::V1Store::purge_chunks(&self.kv, db)?;
        }
        for id in sweep {
            self.sweep(id)?;
        }
        Ok(existed || had_v1)
    }

    /// Only the first transaction of [`Engine::delete`], as if the process
    /// died right after it (tests of the sweep that finishes the job).
    #[cfg(feature = "test-hooks")]
    pub fn delete_without_sweep(&self, db: &str) -> Result<bool> {
        let (existed, _, had_v1) = self.mark_deleted(db)?;
        Ok(existed || had_v1)
    }

    /// The transaction of [`Engine::delete`] that removes the name: whether
    /// the database existed, the ids to sweep (itself, unless forks still
    /// read it, and ancestors nothing reads any more), and whether it had
    /// v1 data (whose file records and lease go in the same transaction,
    /// its chunks after). Idempotent: a retry after an unknown outcome
    /// whose first attempt landed still answers that it existed (its
    /// tombstone or ghost marker is there).
    fn mark_deleted(&self, db: &str) -> Result<(bool, Vec<u64>, bool)> {
        validate_name(db)?;
        let mut seen: Option<u64> = None;
        let mut seen_v1 = false;
        let done = self.kv.transact(|txn| {
            let (fs, fe) = crate::v1::keys::files_of(db);
            if !txn.scan(&fs, &fe, ScanOptions::limit(1))?.is_empty() {
                seen_v1 = true;
                txn.clear_range(&fs, &fe)?;
            }
            txn.clear(&crate::v1::keys::lease(db))?;
            let Some(v) = txn.get(&keys::dir(db))? else {
                return match seen {
                    Some(id)
                        if txn.get(&keys::tombstone(id))?.is_some()
                            || txn.get(&keys::ghost(id))?.is_some() =>
                    {
                        Ok((true, vec![id]))
                    }
                    _ => Ok::<_, Fail>((false, Vec::new())),
                };
            };
            let id = decode_id(db, &v)?;
            seen = Some(id);
            let keys = DbKeys { id };
            let meta = match txn.get(&keys.meta())? {
                Some(v) => Some(crate::decode_meta(db, &v)?),
                None => None,
            };
            let sweep = self.unname_in(txn, db, id, meta)?;
            Ok((true, sweep))
        })?;
        self.states.remove(db);
        Ok((done.0, done.1, seen_v1))
    }

    /// Remove the keys of deleted database `id`, a bounded amount per
    /// transaction (deltas and shards by their lists, then the small keys in
    /// one range), then its tombstone.
    pub(crate) fn sweep(&self, id: u64) -> Result<()> {
        let keys = DbKeys { id };
        loop {
            let done = self.kv.transact(|txn| {
                // A ghost is kept while forks read it; only a tombstone is
                // swept.
                if txn.get(&keys::tombstone(id))?.is_none() {
                    return Ok::<_, Fail>(true);
                }
                // Chunked blobs first, each through its list entry, so no
                // transaction holds more than a bounded number of them.
                let (ds, de) = keys.dlist_all();
                let deltas = txn.scan(&ds, &de, ScanOptions::limit(SWEEP_BLOBS))?;
                for (k, _) in &deltas {
                    if let Some(txid) = DbKeys::dlist_txid(k) {
                        let (cs, ce) = keys.delta_txids(txid, txid.saturating_add(1));
                        txn.clear_range(&cs, &ce)?;
                    }
                    txn.clear(k)?;
                }
                if !deltas.is_empty() {
                    return Ok(false);
                }
                let (ss, se) = keys.slist_from(0);
                let shards = txn.scan(&ss, &se, ScanOptions::limit(SWEEP_BLOBS))?;
                for (k, _) in &shards {
                    if let Some(shard) = DbKeys::slist_shard(k) {
                        kvlite_kv::chunked::clear(txn, &keys.shard(shard))?;
                    }
                    txn.clear(k)?;
                }
                if !shards.is_empty() {
                    return Ok(false);
                }
                // What is left is small: page index, reservations, META, and
                // chunks of unfinished large commits (bounded by the
                // reservations a database may hold).
                let (start, end) = keys.all();
                txn.clear_range(&start, &end)?;
                txn.clear(&keys::tombstone(id))?;
                Ok(true)
            })?;
            if done {
                return Ok(());
            }
        }
    }

    /// Finish sweeping every deleted database (after a crash or a lost
    /// store cut a sweep short). Returns how many were swept.
    pub fn sweep_deleted(&self) -> Result<u64> {
        let (start, end) = keys::tombstone_range();
        let mut swept = 0;
        loop {
            let batch = self
                .kv
                .read(|txn| txn.scan(&start, &end, ScanOptions::limit(256)))
                .map_err(Fail::from)?;
            if batch.is_empty() {
                return Ok(swept);
            }
            for (k, _) in &batch {
                if let Some(id) = keys::tombstone_id(k) {
                    self.sweep(id)?;
                    swept += 1;
                }
            }
        }
    }

    /// The store as a whole: every database's keys belong to a name or to a
    /// tombstone being swept; nothing is orphaned. Scans every name and
    /// every database's first key (meant for tests and `kvlite doctor`).
    pub fn audit_store(&self) -> Result<StoreAudit> {
        Ok(self.kv.read(|txn| {
            let mut named = BTreeSet::new();
            let (ds, de) = keys::dir_range();
            let mut cursor = ds;
            loop {
                let page = txn.scan(&cursor, &de, ScanOptions::limit(1024))?;
                let Some((last, _)) = page.last() else { break };
                cursor = last.clone();
                cursor.push(0);
                for (k, v) in &page {
                    let name = keys::dir_name(k).unwrap_or("?");
                    named.insert(decode_id(name, v)?);
                }
            }
            let (ts, te) = keys::tombstone_range();
            let tombstones: BTreeSet<u64> = txn
                .scan(&ts, &te, ScanOptions::ALL)?
                .iter()
                .filter_map(|(k, _)| keys::tombstone_id(k))
                .collect();
            let (gs, ge) = keys::ghost_range();
            let ghosts: BTreeSet<u64> = txn
                .scan(&gs, &ge, ScanOptions::ALL)?
                .iter()
                .filter_map(|(k, _)| keys::ghost_id(k))
                .collect();
            let mut audit = StoreAudit {
                databases: named.len() as u64,
                deleted_not_swept: tombstones.len() as u64,
                kept_for_forks: ghosts.len() as u64,
                orphaned: Vec::new(),
                v1_databases: 0,
                stale_leases: Vec::new(),
            };
            let (ls, le) = crate::v1::keys::all_leases();
            for (k, _) in txn.scan(&ls, &le, ScanOptions::ALL)? {
                let name = crate::v1::keys::lease_name(&k).unwrap_or("?").to_string();
                let live = crate::v1::has_v1_data(txn, &name)?
                    && matches!(
                        crate::v1::lease::v2_origin(txn, &name)?,
                        None | Some(kvlite_api::Origin::MigratingFromV1)
                    );
                if !live {
                    audit.stale_leases.push(name);
                }
            }
            let (fs, fe) = crate::v1::keys::all_files();
            let mut cursor = fs;
            loop {
                let page = txn.scan(&cursor, &fe, ScanOptions::limit(1024))?;
                let Some((last, _)) = page.last() else { break };
                for (k, _) in &page {
                    if let Some((name, Some(kvlite_api::V1File::Main))) =
                        crate::v1::keys::parse_file(k)
                        && crate::v1::lease::v2_origin(txn, name)?.is_none()
                    {
                        audit.v1_databases += 1;
                    }
                }
                cursor = last.clone();
                cursor.push(0);
            }
            let (mut cursor, end) = keys::all_databases();
            loop {
                let first = txn.scan(&cursor, &end, ScanOptions::limit(1))?;
                let Some((k, _)) = first.first() else { break };
                let Some(id) = keys::db_id_of(k) else {
                    audit.orphaned.push(u64::MAX);
                    break;
                };
                if !named.contains(&id) && !tombstones.contains(&id) && !ghosts.contains(&id) {
                    audit.orphaned.push(id);
                }
                let (_, next) = (DbKeys { id }).all();
                if next <= cursor {
                    break;
                }
                cursor = next;
            }
            Ok::<_, Fail>(audit)
        })?)
    }

    pub fn set_quota(&self, db: &str, quota_bytes: u64) -> Result<()> {
        validate_name(db)?;
        let meta = self.kv.transact(|txn| {
            let (_, keys, mut meta) = self.resolve(txn, db)?;
            meta.quota_bytes = quota_bytes;
            txn.set(&keys.meta(), &meta.encode())?;
            Ok::<_, Fail>(meta)
        })?;
        if let Some(state) = self.states.get(db) {
            crate::cache::lock(&state).meta = Some(meta);
        }
        Ok(())
    }

    /// Recompute usage and check references from a full scan of the
    /// database (one snapshot; meant for tests and `kvlite inspect --audit`).
    pub fn audit(&self, db: &str) -> Result<Audit> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            // META as stored (an older encoding is rewritten, at its new
            // length, by the next write).
            let stored_meta = txn
                .get(&keys.meta())?
                .map_or(0, |v| (keys.meta().len() + v.len()) as u64);
            let mut a = Audit {
                meta_used_bytes: meta
                    .used_bytes()
                    .saturating_sub(meta.stored_len())
                    .saturating_add(stored_meta),
                meta_page_index_entries: meta.pidx_count,
                meta_deltas: meta.delta_count,
                meta_shards: meta.shard_count,
                ..Audit::default()
            };
            // Chunks of unfinished large commits are not counted yet: their
            // deltas, and the shards direct ones stored in place.
            let (ps, pe) = keys.pending_all();
            let pending_records = txn.scan(&ps, &pe, ScanOptions::ALL)?;
            let pending: BTreeSet<u64> = pending_records
                .iter()
                .filter_map(|(k, _)| DbKeys::pending_txid(k))
                .collect();
            let pending_shards: BTreeSet<u32> = pending_records
                .iter()
                .filter(|(k, _)| DbKeys::pending_part_number(k).is_some())
                .filter_map(|(_, v)| Part::decode(v))
                .flat_map(|p| p.shards.into_iter().map(|(s, _)| s))
                .collect();
            let (start, end) = keys.all();
            let mut pidx: Vec<(u32, Loc)> = Vec::new();
            let mut dlist: BTreeMap<u64, DeltaInfo> = BTreeMap::new();
            let mut delta_chunk_bytes: BTreeMap<u64, u64> = BTreeMap::new();
            let mut shards: BTreeMap<u32, ShardInfo> = BTreeMap::new();
            let mut shard_chunk_bytes: BTreeMap<u32, u64> = BTreeMap::new();
            let mut kept: Vec<(u32, u64)> = Vec::new();
            let mut bases: BTreeMap<u32, HistoryBase> = BTreeMap::new();
            let mut base_chunk_bytes: BTreeMap<u32, u64> = BTreeMap::new();
            let mut hrefs: BTreeMap<u64, u32> = BTreeMap::new();
            let mut pins = 0u64;
            let mut cursor = start;
            loop {
                let page = txn.scan(&cursor, &end, ScanOptions::limit(256))?;
                let Some((last, _)) = page.last() else { break };
                cursor = last.clone();
                cursor.push(0);
                for (k, v) in &page {
                    let bytes = (k.len() + v.len()) as u64;
                    match k.get(9) {
                        Some(0) => a.scanned_used_bytes += bytes,
                        Some(1) => {
                            a.scanned_used_bytes += bytes;
                            a.scanned_page_index_entries += 1;
                            if bytes != PIDX_ENTRY_BYTES {
                                a.problems
                                    .push(format!("page-index entry of {bytes} bytes"));
                            }
                            match decode_pidx(k, v) {
                                Some(entry) => pidx.push(entry),
                                None => {
                                    a.problems.push(format!("malformed page-index entry {k:?}"))
                                }
                            }
                        }
                        Some(2) => {
                            let txid = DbKeys::dlist_txid(k).unwrap_or(0);
                            if pending.contains(&txid) {
                                continue; // an unfinished large commit: not yet counted
                            }
                            if txid > meta.head_txid {
                                a.problems.push(format!(
                                    "delta chunk above the head ({txid}) without a reservation"
                                ));
                                continue;
                            }
                            a.scanned_used_bytes += bytes;
                            *delta_chunk_bytes.entry(txid).or_default() += bytes;
                        }
                        Some(3) => {
                            a.scanned_used_bytes += bytes;
                            a.scanned_deltas += 1;
                            match (DbKeys::dlist_txid(k), DeltaInfo::decode(v)) {
                                (Some(t), Some(info)) => {
                                    dlist.insert(t, info);
                                }
                                _ => a.problems.push(format!("malformed DLIST entry {k:?}")),
                            }
                        }
                        Some(4) => {
                            let shard = DbKeys::chunk_shard(k).unwrap_or(u32::MAX);
                            *shard_chunk_bytes.entry(shard).or_default() += bytes;
                        }
                        Some(5) => {
                            a.scanned_used_bytes += bytes;
                            a.scanned_shards += 1;
                            match (DbKeys::slist_shard(k), ShardInfo::decode(v)) {
                                (Some(s), Some(info)) if bytes == SLIST_ENTRY_BYTES => {
                                    shards.insert(s, info);
                                }
                                _ => a.problems.push(format!("malformed SLIST entry {k:?}")),
                            }
                        }
                        // Pending reservations and the compaction lease:
                        // bookkeeping, not usage.
                        Some(6 | 7) => {}
                        Some(&keys::HIDX_TAG) => {
                            a.scanned_used_bytes += bytes;
                            match (DbKeys::hidx_key(k), crate::records::decode_u32(v)) {
                                (Some(version), Some(_)) => kept.push(version),
                                _ => a.problems.push(format!("malformed kept version {k:?}")),
                            }
                        }
                        Some(&keys::BASE_TAG) => {
                            a.scanned_used_bytes += bytes;
                            match (DbKeys::history_base_shard(k), HistoryBase::decode(v)) {
                                (Some(s), Some(b)) => {
                                    bases.insert(s, b);
                                }
                                _ => a.problems.push(format!("malformed BASE {k:?}")),
                            }
                        }
                        Some(&keys::BASE_CHUNK_TAG) => {
                            a.scanned_used_bytes += bytes;
                            let shard = DbKeys::chunk_shard(k).unwrap_or(u32::MAX);
                            *base_chunk_bytes.entry(shard).or_default() += bytes;
                        }
                        Some(&keys::PIN_TAG) => {
                            a.scanned_used_bytes += bytes;
                            pins += 1;
                            if DbKeys::pin_key(k).is_none()
                                || crate::records::decode_u32(v).is_none()
                            {
                                a.problems.push(format!("malformed PIN {k:?}"));
                            }
                        }
                        Some(&keys::HREF_TAG) => {
                            a.scanned_used_bytes += bytes;
                            match (DbKeys::href_txid(k), crate::records::decode_u32(v)) {
                                (Some(t), Some(n)) => {
                                    hrefs.insert(t, n);
                                }
                                _ => a.problems.push(format!("malformed HREF {k:?}")),
                            }
                        }
                        _ => a.problems.push(format!("unexpected key {k:?}")),
                    }
                }
            }
            for (txid, info) in &dlist {
                let chunks = delta_chunk_bytes.get(txid).copied().unwrap_or(0);
                if chunks != info.bytes {
                    a.problems.push(format!(
                        "delta {txid}: DLIST says {} bytes, chunks hold {chunks}",
                        info.bytes
                    ));
                }
            }
            for txid in delta_chunk_bytes.keys() {
                if !dlist.contains_key(txid) {
                    a.problems
                        .push(format!("delta {txid} has chunks but no DLIST entry"));
                }
            }
            // Each shard's chunks are what its record says; chunks without
            // a record are only a direct large commit's, not landed yet.
            for (shard, &chunks) in &shard_chunk_bytes {
                match shards.get(shard) {
                    Some(info) => {
                        a.scanned_used_bytes += chunks;
                        if chunks != info.bytes {
                            a.problems.push(format!(
                                "shard {shard}: SLIST says {} bytes, chunks hold {chunks}",
                                info.bytes
                            ));
                        }
                    }
                    None if pending_shards.contains(shard) => {}
                    None => {
                        a.scanned_used_bytes += chunks;
                        a.problems
                            .push(format!("shard {shard} has chunks but no SLIST entry"));
                    }
                }
            }
            for shard in shards.keys() {
                if !shard_chunk_bytes.contains_key(shard) {
                    a.problems
                        .push(format!("shard {shard} is listed but has no chunks"));
                }
            }
            // History: kept versions, their counts per delta, the chains
            // they belong to, and META's counters of all of it.
            let mut named: BTreeMap<u64, u32> = BTreeMap::new();
            for &(pgno, txid) in &kept {
                *named.entry(txid).or_default() += 1;
                if !dlist.contains_key(&txid) {
                    a.problems
                        .push(format!("kept version {txid} of page {pgno} names a missing delta"));
                }
                match bases.get(&(pgno / crate::SHARD_PAGES)) {
                    None => a.problems.push(format!(
                        "kept version {txid} of page {pgno} outside any kept history"
                    )),
                    Some(b) if txid <= b.as_of || txid > b.chain_end => a.problems.push(format!(
                        "kept version {txid} of page {pgno} outside its chain ({}, {}]",
                        b.as_of, b.chain_end
                    )),
                    Some(_) => {}
                }
            }
            if named != hrefs {
                a.problems.push(format!(
                    "kept-version counts per delta {hrefs:?} differ from the kept versions {named:?}"
                ));
            }
            let mut base_bytes = 0u64;
            for (shard, b) in &bases {
                base_bytes += b.stored_len();
                let chunks = base_chunk_bytes.get(shard).copied().unwrap_or(0);
                if chunks != b.stored.unwrap_or(0) {
                    a.problems.push(format!(
                        "history base of shard {shard}: record says {:?} bytes, chunks hold {chunks}",
                        b.stored
                    ));
                }
                if let Some(info) = shards.get(shard)
                    && info.txid != b.chain_end
                {
                    a.problems.push(format!(
                        "history of shard {shard} ends at {} but the shard is folded at {}",
                        b.chain_end, info.txid
                    ));
                }
            }
            for shard in base_chunk_bytes.keys() {
                if !bases.contains_key(shard) {
                    a.problems
                        .push(format!("stored history base of shard {shard} without a record"));
                }
            }
            for (what, meta_says, scanned) in [
                ("kept versions", meta.hidx_count, kept.len() as u64),
                ("kept-version counts", meta.href_count, hrefs.len() as u64),
                ("history bases", meta.base_count, bases.len() as u64),
                ("history base bytes", meta.base_bytes, base_bytes),
                ("pins", meta.pin_count, pins),
            ] {
                if meta_says != scanned {
                    a.problems
                        .push(format!("META counts {meta_says} {what}, the store holds {scanned}"));
                }
            }
            if meta.history_floor > meta.head_txid {
                a.problems.push(format!(
                    "history floor {} past the head {}",
                    meta.history_floor, meta.head_txid
                ));
            }
            // Versions past the end stay (for readers of earlier commits)
            // until compaction folds past the truncation; shards likewise.
            for (pgno, loc) in &pidx {
                if !dlist.contains_key(&loc.txid) {
                    a.problems
                        .push(format!("page {pgno} points at missing delta {}", loc.txid));
                }
                if loc.txid <= meta.materialized_txid {
                    a.problems.push(format!(
                        "page {pgno} version {} is at or before the materialized txid {}",
                        loc.txid, meta.materialized_txid
                    ));
                }
                if loc.txid > meta.head_txid {
                    a.problems
                        .push(format!("page {pgno} version {} is past the head", loc.txid));
                }
            }
            Ok::<_, Fail>(a)
        })?)
    }
}
