//! History: every commit stays readable for a retention window, and forks
//! and restores pin the commits they read.
//!
//! A read at commit `T` takes, per page, the newest version at or before
//! `T`, else the page's shard as of its fold point. Compaction folds
//! versions into shards; when something may still read before the new
//! fold point, it keeps what those reads need instead of deleting it:
//! - the folded versions move from the page index (PIDX) to the kept
//!   versions (HIDX), same shape, with a count per delta of the kept
//!   versions that name it (HREF), so a delta goes only when none does;
//! - the shard's *history base* (BASE) records where the kept history of
//!   the shard starts: the shard as it was when the chain started (its
//!   bytes copied under the BASE chunk prefix) or the database's creation
//!   (empty; a fork's parent). Every version folded since is kept, so a
//!   read at `T` before the current shard's fold point takes the newest
//!   kept version in `(base, T]`, else the base's copy. A shard folded
//!   again while its chain runs is not copied: the chain already covers it.
//!
//! What reads may still come is [`Keep`]: every commit from the *floor*
//! (the newest commit at least the retention window old, no newer than the
//! oldest live reader) to the head, plus each commit a fork or restore
//! pins. Compaction raises META's `history_floor` (reads below it are
//! refused, except at a pinned commit) in the transaction that starts
//! dropping what only older reads needed, and drops a kept version only
//! when no allowed read can want it: per page it keeps every version after
//! the floor, the newest at or before the floor, and the newest at or
//! before each pin. A chain is dropped whole once every allowed read is at
//! or after its end.

use std::collections::BTreeMap;

use kvlite_kv::{KvRead, ScanOptions, WriteTxn};

use kvlite_api::CorruptionKind;

use crate::error::{Result, corrupt};
use crate::keys::DbKeys;
use crate::meta::Meta;
use crate::records::{DeltaInfo, HistoryBase, decode_u32, encode_u32};

/// The commit every database starts at (empty, or a fork's parent's pages).
pub const CREATION_TXID: u64 = 1;

/// How long commits stay readable when neither the database nor the
/// engine says otherwise.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The reads a pass must keep possible: every commit from `floor` on, and
/// each pinned commit (with the database's size there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keep {
    pub floor: u64,
    /// The size and time at the floor (META keeps them: the floor's own
    /// record goes when no history is kept).
    pub floor_size: u32,
    pub floor_time_ms: u64,
    /// Ascending, unique.
    pub pins: Vec<u64>,
}

impl Keep {
    /// The oldest commit anything may read.
    pub fn oldest(&self) -> u64 {
        self.pins.first().map_or(self.floor, |&p| p.min(self.floor))
    }

    /// Whether anything may read before commit `txid`.
    pub fn reads_before(&self, txid: u64) -> bool {
        self.oldest() < txid
    }

    /// Which of one shard's versions (sorted by page, then txid) some
    /// allowed read still needs: per page, every version after the floor,
    /// the newest at or before the floor, and the newest at or before each
    /// pin. (Versions at the new fold point count too: the new shard is
    /// replaced without a copy by the next fold while the chain runs, and
    /// reads between the two need them.)
    pub fn needed(&self, versions: &[(u32, u64)]) -> Vec<bool> {
        let mut needed = vec![false; versions.len()];
        let mut start = 0;
        while start < versions.len() {
            let pgno = versions.get(start).map_or(0, |v| v.0);
            let end = start
                + versions
                    .get(start..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|v| v.0 == pgno)
                    .count();
            let page = versions.get(start..end).unwrap_or_default();
            for (i, v) in page.iter().enumerate() {
                if v.1 > self.floor
                    && let Some(n) = needed.get_mut(start + i)
                {
                    *n = true;
                }
            }
            for t in std::iter::once(self.floor).chain(self.pins.iter().copied()) {
                if let Some(i) = page.iter().rposition(|v| v.1 <= t)
                    && let Some(n) = needed.get_mut(start + i)
                {
                    *n = true;
                }
            }
            start = end;
        }
        needed
    }
}

/// The retention of a database: its own setting, else the engine's.
pub(crate) fn retention_of(meta: &Meta, default: std::time::Duration) -> u64 {
    meta.retention_ms
        .unwrap_or(default.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// DLIST records read at a time when looking for the floor.
const FLOOR_PIECE: usize = 1024;

/// The newest commit at least `retention_ms` old (by its record's time),
/// searching forward from META's floor; the head when nothing is kept.
/// Records without a time (written before times were kept) count as old.
pub(crate) fn time_floor(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    meta: &Meta,
    retention_ms: u64,
    now_ms: u64,
) -> Result<u64> {
    if retention_ms == 0 {
        return Ok(meta.head_txid);
    }
    let cutoff = now_ms.saturating_sub(retention_ms);
    let mut floor = meta.history_floor;
    let (mut cursor, end) = keys.dlist_range(meta.history_floor, meta.head_txid.saturating_add(1));
    loop {
        let piece = txn.scan(&cursor, &end, ScanOptions::limit(FLOOR_PIECE))?;
        let Some((last, _)) = piece.last() else {
            return Ok(floor);
        };
        cursor = last.clone();
        cursor.push(0);
        for (k, v) in &piece {
            let info = DeltaInfo::decode(v).ok_or_else(|| {
                corrupt(db, CorruptionKind::Record, format!("malformed DLIST {k:?}"))
            })?;
            if info.time_ms > cutoff {
                return Ok(floor);
            }
            if let Some(t) = DbKeys::dlist_txid(k) {
                floor = floor.max(t);
            }
        }
    }
}

/// Every pinned commit of a database, ascending and unique, with the size
/// the pin recorded.
pub(crate) fn pins(txn: &mut impl KvRead, db: &str, keys: &DbKeys) -> Result<Vec<(u64, u32)>> {
    let (start, end) = keys.pins_all();
    let mut out: Vec<(u64, u32)> = Vec::new();
    for (k, v) in txn.scan(&start, &end, ScanOptions::ALL)? {
        let (Some((txid, _)), Some(size)) = (DbKeys::pin_key(&k), decode_u32(&v)) else {
            return Err(corrupt(
                db,
                CorruptionKind::Record,
                format!("malformed PIN {k:?}"),
            ));
        };
        if out.last().is_none_or(|l| l.0 != txid) {
            out.push((txid, size));
        }
    }
    Ok(out)
}

/// Whether a fork or restore pins commit `txid` (reads there are allowed
/// below the floor), and the size there.
pub(crate) fn pinned_at(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    txid: u64,
) -> Result<Option<u32>> {
    let (start, end) = keys.pins_at(txid);
    match txn.scan(&start, &end, ScanOptions::limit(1))?.pop() {
        Some((k, v)) => Ok(Some(decode_u32(&v).ok_or_else(|| {
            corrupt(db, CorruptionKind::Record, format!("malformed PIN {k:?}"))
        })?)),
        None => Ok(None),
    }
}

/// The history bases of `shards` (one batched read).
pub(crate) fn bases(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    shards: &[u32],
) -> Result<Vec<Option<HistoryBase>>> {
    let ks: Vec<Vec<u8>> = shards.iter().map(|&s| keys.history_base(s)).collect();
    let refs: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
    txn.get_many(&refs)?
        .into_iter()
        .zip(shards)
        .map(|(v, s)| match v {
            Some(v) => HistoryBase::decode(&v).map(Some).ok_or_else(|| {
                corrupt(
                    db,
                    CorruptionKind::Record,
                    format!("malformed BASE of shard {s}"),
                )
            }),
            None => Ok(None),
        })
        .collect()
}

/// Every history base of a database.
pub(crate) fn all_bases(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
) -> Result<Vec<(u32, HistoryBase)>> {
    let (start, end) = keys.history_base_all();
    txn.scan(&start, &end, ScanOptions::ALL)?
        .into_iter()
        .map(
            |(k, v)| match (DbKeys::history_base_shard(&k), HistoryBase::decode(&v)) {
                (Some(s), Some(b)) => Ok((s, b)),
                _ => Err(corrupt(
                    db,
                    CorruptionKind::Record,
                    format!("malformed BASE {k:?}"),
                )),
            },
        )
        .collect()
}

/// Add `delta` (per delta txid) to the HREF counts, removing a count that
/// reaches zero; returns the txids whose count reached zero. `meta`'s
/// HREF record count follows.
pub(crate) fn adjust_hrefs(
    txn: &mut WriteTxn<'_>,
    db: &str,
    keys: &DbKeys,
    delta: &BTreeMap<u64, i64>,
    meta: &mut Meta,
) -> Result<Vec<u64>> {
    let ks: Vec<Vec<u8>> = delta.keys().map(|&t| keys.href(t)).collect();
    let refs: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
    let current = txn.get_many(&refs)?;
    let mut zero = Vec::new();
    for ((&txid, &d), (key, v)) in delta.iter().zip(ks.iter().zip(current)) {
        let had = v.is_some();
        let n = match v {
            Some(v) => i64::from(decode_u32(&v).ok_or_else(|| {
                corrupt(db, CorruptionKind::Record, format!("malformed HREF {txid}"))
            })?),
            None => 0,
        };
        let next = n + d;
        if next < 0 || next > i64::from(u32::MAX) {
            return Err(corrupt(
                db,
                CorruptionKind::Counters,
                format!("delta {txid} would be named by {next} kept versions"),
            ));
        }
        match (had, next) {
            (true, 0) => {
                txn.clear(key)?;
                meta.href_count = meta.href_count.saturating_sub(1);
                zero.push(txid);
            }
            (false, 0) => zero.push(txid),
            (had, n) => {
                txn.set(key, &encode_u32(n as u32))?;
                if !had {
                    meta.href_count += 1;
                }
            }
        }
    }
    Ok(zero)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_needed_after_the_floor_and_as_the_newest_before_it_or_a_pin() {
        let keep = Keep {
            floor: 20,
            floor_size: 0,
            floor_time_ms: 0,
            pins: vec![7],
        };
        let versions = [
            (1, 3),
            (1, 5),
            (1, 8),
            (1, 15),
            (1, 21),
            (1, 30),
            (2, 25),
            (3, 2),
            (3, 9),
        ];
        assert_eq!(
            keep.needed(&versions),
            vec![
                false, true, // 5: the newest at or before pin 7
                false, true, // 15: the newest at or before the floor
                true, true, // after the floor
                true, // after the floor
                true, // 2: the newest at or before pin 7
                true, // 9: the newest at or before the floor
            ]
        );
        assert_eq!(keep.oldest(), 7);
        assert!(keep.reads_before(8) && !keep.reads_before(7));
        let none = Keep {
            floor: 40,
            floor_size: 0,
            floor_time_ms: 0,
            pins: vec![],
        };
        assert!(!none.reads_before(40));
        assert_eq!(
            none.needed(&[(1, 3), (1, 39), (1, 41)]),
            vec![false, true, true]
        );
    }
}
