//! Inspection and administration: stat, list, delete, quota, audit.

use std::collections::{BTreeMap, BTreeSet};

use kvlite_kv::{KvRead, ScanOptions, prefix_end};

use kvlite_api::{DbStat, Result};

use crate::cache::Loc;
use crate::error::Fail;
use crate::keys::{self, DbKeys};
use crate::records::{
    DLIST_ENTRY_BYTES, DeltaInfo, PIDX_ENTRY_BYTES, SLIST_ENTRY_BYTES, ShardInfo,
};
use crate::{Engine, decode_id, validate_name};

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
            })
        })?)
    }

    /// Names of databases starting with `prefix`, after `after` (exclusive),
    /// at most `limit`, in byte order.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let start = match after {
            Some(a) if a >= prefix => {
                let mut k = keys::dir(a);
                k.push(0);
                k
            }
            _ => keys::dir(prefix),
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
    /// exist. The name disappears atomically first; its data follows.
    pub fn delete(&self, db: &str) -> Result<bool> {
        validate_name(db)?;
        let id = self.kv.transact(|txn| {
            let Some(v) = txn.get(&keys::dir(db))? else {
                return Ok::<_, Fail>(None);
            };
            let id = decode_id(db, &v)?;
            txn.clear(&keys::dir(db))?;
            txn.clear(&DbKeys { id }.meta())?;
            Ok(Some(id))
        })?;
        self.states.remove(db);
        let Some(id) = id else {
            return Ok(false);
        };
        let (start, end) = DbKeys { id }.all();
        self.kv
            .transact(|txn| txn.clear_range(&start, &end))
            .map_err(Fail::from)?;
        Ok(true)
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
                meta_used_bytes: meta.used_bytes() - meta.stored_len() + stored_meta,
                meta_page_index_entries: meta.pidx_count,
                meta_deltas: meta.delta_count,
                meta_shards: meta.shard_count,
                ..Audit::default()
            };
            // Chunks of unfinished large commits are not counted yet.
            let (ps, pe) = keys.pending_all();
            let pending: BTreeSet<u64> = txn
                .scan(&ps, &pe, ScanOptions::ALL)?
                .iter()
                .filter_map(|(k, _)| DbKeys::pending_txid(k))
                .collect();
            let (start, end) = keys.all();
            let mut pidx: BTreeMap<u32, Loc> = BTreeMap::new();
            let mut dlist: BTreeMap<u64, DeltaInfo> = BTreeMap::new();
            let mut delta_chunk_bytes: BTreeMap<u64, u64> = BTreeMap::new();
            let mut shards: BTreeSet<u32> = BTreeSet::new();
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
                            if let (Some(p), Some(loc)) = (DbKeys::pidx_pgno(k), Loc::decode(v)) {
                                pidx.insert(p, loc);
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
                            if bytes != DLIST_ENTRY_BYTES {
                                a.problems.push(format!("DLIST entry of {bytes} bytes"));
                            }
                            if let (Some(t), Some(info)) =
                                (DbKeys::dlist_txid(k), DeltaInfo::decode(v))
                            {
                                dlist.insert(t, info);
                            }
                        }
                        Some(4) => a.scanned_used_bytes += bytes,
                        Some(5) => {
                            a.scanned_used_bytes += bytes;
                            a.scanned_shards += 1;
                            if bytes != SLIST_ENTRY_BYTES || ShardInfo::decode(v).is_none() {
                                a.problems.push(format!("malformed SLIST entry {k:?}"));
                            }
                            if let Some(s) = DbKeys::slist_shard(k) {
                                shards.insert(s);
                            }
                        }
                        Some(6) => {}
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
            for (pgno, loc) in &pidx {
                if *pgno > meta.size_pages {
                    a.problems
                        .push(format!("page-index entry for page {pgno} past the end"));
                }
                if !dlist.contains_key(&loc.txid) {
                    a.problems
                        .push(format!("page {pgno} points at missing delta {}", loc.txid));
                }
            }
            if let Some(&last) = shards.last()
                && last > meta.size_pages / crate::SHARD_PAGES
            {
                a.problems.push(format!("shard {last} past the end"));
            }
            Ok::<_, Fail>(a)
        })?)
    }
}
