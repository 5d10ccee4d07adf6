//! The key layout. Every number is big-endian so range scans come out in
//! numeric order, and every key under a database starts with its id, so one
//! database is one contiguous range.
//!
//! ```text
//! 00 'd' <name>                            -> db id (u64)          directory
//! 00 's'                                   -> next db id (u64)
//! 00 'x' <id u64>                          -> name: a deleted database
//!                                             whose keys are being swept
//! 01 <id u64> 00                           -> META
//! 01 <id u64> 01 <pgno u32> <txid u64>    -> PIDX: part u32 (one key per
//!                                             version of a page not yet
//!                                             folded into its shard)
//! 01 <id u64> 01 <pgno u32>                -> legacy PIDX: txid u64, part u32
//!                                             (written before versions; read,
//!                                             never written)
//! 01 <id u64> 02 <txid u64> <part u32> <chunk u32>  -> DELTA chunk (LTX)
//! 01 <id u64> 03 <txid u64>                -> DLIST: one delta's size
//! 01 <id u64> 04 <shard u32> <chunk u32>   -> SHARD chunk (LTX)
//! 01 <id u64> 05 <shard u32>               -> SLIST: one shard's size
//! 01 <id u64> 06 <txid u64>                -> PENDING large commit
//! 01 <id u64> 06 <txid u64> <part u32>     -> PENDING part: its pages
//! 01 <id u64> 07                           -> COMPACTION lease: holder u128,
//!                                             expiry ms u64
//! 01 <id u64> 08 <pgno u32> <txid u64>    -> HIDX: part u32 (a folded version
//!                                             kept for reads in the past)
//! 01 <id u64> 09 <shard u32>               -> BASE: where the shard's kept
//!                                             history starts (`HistoryBase`)
//! 01 <id u64> 0a <shard u32> <chunk u32>   -> BASE chunk: the shard as of
//!                                             that start (LTX)
//! 01 <id u64> 0b <txid u64> <child u64>    -> PIN: database `child` (a fork,
//!                                             or a restore) reads this one as
//!                                             of `txid`: size u32
//! 01 <id u64> 0c <txid u64>                -> HREF: how many HIDX versions
//!                                             still name delta `txid` (u32)
//! 00 'g' <id u64>                          -> name: a deleted database kept
//!                                             because forks still read it
//! 00 'm' <name>                            -> cluster u32: the database moved
//!                                             to that cluster (set when it
//!                                             leaves, cleared when a database
//!                                             of that name is made here)
//! 00 'p' <name>                            -> placement record (home cluster
//!                                             of a multi-cluster deployment
//!                                             only; `kvlite-placement`)
//! 00 'P' <cluster u32>                     -> databases placed there (u64)
//! 00 'c'                                   -> this store as a cluster of a
//!                                             deployment: deployment id u128,
//!                                             its index u32
//! ```
//!
//! A database moving in is built under [`staging_name`] (a name no client
//! can create) and renamed when it is complete.

use kvlite_kv::prefix_end;

const DIR: [u8; 2] = [0x00, b'd'];
pub const NEXT_DB_ID: &[u8] = &[0x00, b's'];
const TOMBSTONE: [u8; 2] = [0x00, b'x'];
const GHOST: [u8; 2] = [0x00, b'g'];
const MOVED: [u8; 2] = [0x00, b'm'];
const PLACEMENT: [u8; 2] = [0x00, b'p'];
const PLACED_COUNT: [u8; 2] = [0x00, b'P'];
pub const CLUSTER_IDENTITY: &[u8] = &[0x00, b'c'];
const DB: u8 = 0x01;

const META: u8 = 0x00;
const PIDX: u8 = 0x01;
const DELTA: u8 = 0x02;
const DLIST: u8 = 0x03;
const SHARD: u8 = 0x04;
const SLIST: u8 = 0x05;
const PENDING: u8 = 0x06;
const COMPACTION: u8 = 0x07;
const HIDX: u8 = 0x08;
const BASE: u8 = 0x09;
const BASE_CHUNK: u8 = 0x0a;
const PIN: u8 = 0x0b;
const HREF: u8 = 0x0c;
/// Tags of the history keys (HIDX .. HREF), for the audit.
pub const HIDX_TAG: u8 = HIDX;
pub const BASE_TAG: u8 = BASE;
pub const BASE_CHUNK_TAG: u8 = BASE_CHUNK;
pub const PIN_TAG: u8 = PIN;
pub const HREF_TAG: u8 = HREF;

/// Bytes every key under a database starts with: `01 <id u64> <tag>`.
const DB_KEY_BASE: usize = 1 + 8 + 1;
/// Length of the META key.
pub const META_KEY_LEN: usize = DB_KEY_BASE;
/// Length of a PIDX key (page number and txid).
pub const PIDX_KEY_LEN: usize = DB_KEY_BASE + 4 + 8;
/// Length of a legacy PIDX key (page number only; its value names the txid).
pub const LEGACY_PIDX_KEY_LEN: usize = DB_KEY_BASE + 4;
/// Length of a DLIST key.
pub const DLIST_KEY_LEN: usize = DB_KEY_BASE + 8;
/// Length of an SLIST key.
pub const SLIST_KEY_LEN: usize = DB_KEY_BASE + 4;
/// Length of a BASE key.
pub const BASE_KEY_LEN: usize = DB_KEY_BASE + 4;
/// Length of a PIN key.
pub const PIN_KEY_LEN: usize = DB_KEY_BASE + 8 + 8;
/// Length of an HREF key.
pub const HREF_KEY_LEN: usize = DB_KEY_BASE + 8;
/// Length of a PENDING part key (a reservation key is 4 bytes shorter).
const PENDING_PART_KEY_LEN: usize = DB_KEY_BASE + 8 + 4;

/// The key range holding exactly `key` (for batched reads that mix keys
/// and ranges).
pub fn point(key: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut end = key.clone();
    end.push(0);
    (key, end)
}

pub fn dir(name: &str) -> Vec<u8> {
    let mut k = DIR.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Where database `name` went when it moved to another cluster.
pub fn moved(name: &str) -> Vec<u8> {
    let mut k = MOVED.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The placement record of `name` (in the home cluster).
pub fn placement(name: &str) -> Vec<u8> {
    let mut k = PLACEMENT.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// How many databases are placed on `cluster` (in the home cluster).
pub fn placed_count(cluster: u32) -> Vec<u8> {
    let mut k = PLACED_COUNT.to_vec();
    k.extend_from_slice(&cluster.to_be_bytes());
    k
}

/// The first byte of every staging name: a control character, which
/// [`kvlite_api::validate_new_name`] refuses, so no client names one.
pub const STAGING_MARK: char = '\u{1}';

/// The name database `name` is built under while it moves in.
pub fn staging_name(name: &str) -> String {
    format!("{STAGING_MARK}{name}")
}

pub fn dir_range() -> (Vec<u8>, Vec<u8>) {
    (DIR.to_vec(), prefix_end(&DIR).unwrap_or_default())
}

/// The tombstone of deleted database `id`: present from the transaction
/// that removes its name until its last key is swept.
pub fn tombstone(id: u64) -> Vec<u8> {
    let mut k = TOMBSTONE.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn tombstone_range() -> (Vec<u8>, Vec<u8>) {
    (
        TOMBSTONE.to_vec(),
        prefix_end(&TOMBSTONE).unwrap_or_default(),
    )
}

/// The marker of deleted database `id` kept for its forks: present from
/// the transaction that removes its name until the last fork reading it
/// goes.
pub fn ghost(id: u64) -> Vec<u8> {
    let mut k = GHOST.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn ghost_range() -> (Vec<u8>, Vec<u8>) {
    (GHOST.to_vec(), prefix_end(&GHOST).unwrap_or_default())
}

pub fn ghost_id(key: &[u8]) -> Option<u64> {
    let id: [u8; 8] = key.strip_prefix(&GHOST[..])?.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

pub fn tombstone_id(key: &[u8]) -> Option<u64> {
    let id: [u8; 8] = key.strip_prefix(&TOMBSTONE[..])?.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

/// The id of the database whose key `key` is (`01 <id> ...`).
pub fn db_id_of(key: &[u8]) -> Option<u64> {
    let id: [u8; 8] = key.strip_prefix(&[DB])?.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

/// The range of every database's keys.
pub fn all_databases() -> (Vec<u8>, Vec<u8>) {
    (vec![DB], vec![DB + 1])
}

/// The name a directory key holds.
pub fn dir_name(key: &[u8]) -> Option<&str> {
    key.strip_prefix(&DIR[..])
        .and_then(|n| std::str::from_utf8(n).ok())
}

/// Key builder for one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DbKeys {
    pub id: u64,
}

impl DbKeys {
    fn base(&self, tag: u8, extra: usize) -> Vec<u8> {
        let mut k = Vec::with_capacity(DB_KEY_BASE + extra);
        k.push(DB);
        k.extend_from_slice(&self.id.to_be_bytes());
        k.push(tag);
        k
    }

    /// Every key of this database.
    pub fn all(&self) -> (Vec<u8>, Vec<u8>) {
        let mut start = vec![DB];
        start.extend_from_slice(&self.id.to_be_bytes());
        let end = prefix_end(&start).unwrap_or_else(|| vec![DB + 1]);
        (start, end)
    }

    pub fn meta(&self) -> Vec<u8> {
        self.base(META, 0)
    }

    /// The page-index entry of version `txid` of page `pgno`.
    pub fn pidx(&self, pgno: u32, txid: u64) -> Vec<u8> {
        let mut k = self.pidx_page(pgno);
        k.extend_from_slice(&txid.to_be_bytes());
        k
    }

    /// The prefix every version of page `pgno` shares (and the whole key of
    /// its legacy entry, which sorts before them all).
    pub fn pidx_page(&self, pgno: u32) -> Vec<u8> {
        let mut k = self.base(PIDX, 12);
        k.extend_from_slice(&pgno.to_be_bytes());
        k
    }

    /// Page-index keys for pages `>= from`.
    pub fn pidx_from(&self, from: u32) -> (Vec<u8>, Vec<u8>) {
        (self.pidx_page(from), self.base(PIDX + 1, 0))
    }

    /// Page-index keys for pages `from..to`.
    pub fn pidx_pages(&self, from: u32, to: u32) -> (Vec<u8>, Vec<u8>) {
        let start = self.pidx_page(from);
        let end = if to > from {
            self.pidx_page(to)
        } else {
            start.clone()
        };
        (start, end)
    }

    /// Every version of page `pgno` up to and including `txid`.
    pub fn pidx_versions_upto(&self, pgno: u32, txid: u64) -> (Vec<u8>, Vec<u8>) {
        let end = match txid.checked_add(1) {
            Some(t) => self.pidx(pgno, t),
            None => prefix_end(&self.pidx_page(pgno)).unwrap_or_else(|| self.base(PIDX + 1, 0)),
        };
        (self.pidx_page(pgno), end)
    }

    /// The page and, for a versioned key, the txid of a page-index key;
    /// `None` for a key of any other shape.
    pub fn pidx_key(key: &[u8]) -> Option<(u32, Option<u64>)> {
        let pgno = u32::from_be_bytes(key.get(DB_KEY_BASE..LEGACY_PIDX_KEY_LEN)?.try_into().ok()?);
        match key.len() {
            LEGACY_PIDX_KEY_LEN => Some((pgno, None)),
            PIDX_KEY_LEN => Some((
                pgno,
                Some(u64::from_be_bytes(
                    key.get(LEGACY_PIDX_KEY_LEN..)?.try_into().ok()?,
                )),
            )),
            _ => None,
        }
    }

    /// Chunk prefix of one part of a delta.
    pub fn delta_part(&self, txid: u64, part: u32) -> Vec<u8> {
        let mut k = self.base(DELTA, 12);
        k.extend_from_slice(&txid.to_be_bytes());
        k.extend_from_slice(&part.to_be_bytes());
        k
    }

    /// Every chunk of deltas with `from <= txid < to`.
    pub fn delta_txids(&self, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
        let key = |t: u64| {
            let mut k = self.base(DELTA, 8);
            k.extend_from_slice(&t.to_be_bytes());
            k
        };
        (key(from), key(to))
    }

    pub fn dlist(&self, txid: u64) -> Vec<u8> {
        let mut k = self.base(DLIST, 8);
        k.extend_from_slice(&txid.to_be_bytes());
        k
    }

    /// DLIST keys of commits `from..to`.
    pub fn dlist_range(&self, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
        (self.dlist(from), self.dlist(to.max(from)))
    }

    pub fn dlist_all(&self) -> (Vec<u8>, Vec<u8>) {
        (self.base(DLIST, 0), self.base(DLIST + 1, 0))
    }

    pub fn dlist_txid(key: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(
            key.get(DB_KEY_BASE..DB_KEY_BASE + 8)?.try_into().ok()?,
        ))
    }

    /// Chunk prefix of a shard.
    pub fn shard(&self, shard: u32) -> Vec<u8> {
        let mut k = self.base(SHARD, 4);
        k.extend_from_slice(&shard.to_be_bytes());
        k
    }

    /// Every chunk of every shard.
    pub fn shards_all(&self) -> (Vec<u8>, Vec<u8>) {
        (self.base(SHARD, 0), self.base(SHARD + 1, 0))
    }

    pub fn slist(&self, shard: u32) -> Vec<u8> {
        let mut k = self.base(SLIST, 4);
        k.extend_from_slice(&shard.to_be_bytes());
        k
    }

    /// SLIST keys for shards `>= from`.
    pub fn slist_from(&self, from: u32) -> (Vec<u8>, Vec<u8>) {
        (self.slist(from), self.base(SLIST + 1, 0))
    }

    pub fn slist_shard(key: &[u8]) -> Option<u32> {
        Some(u32::from_be_bytes(
            key.get(DB_KEY_BASE..SLIST_KEY_LEN)?.try_into().ok()?,
        ))
    }

    /// The shard a chunk of a shard or of a history base belongs to.
    pub fn chunk_shard(key: &[u8]) -> Option<u32> {
        Some(u32::from_be_bytes(
            key.get(DB_KEY_BASE..DB_KEY_BASE + 4)?.try_into().ok()?,
        ))
    }

    pub fn pending(&self, txid: u64) -> Vec<u8> {
        let mut k = self.base(PENDING, 12);
        k.extend_from_slice(&txid.to_be_bytes());
        k
    }

    pub fn pending_part(&self, txid: u64, part: u32) -> Vec<u8> {
        let mut k = self.pending(txid);
        k.extend_from_slice(&part.to_be_bytes());
        k
    }

    /// The parts recorded under one pending commit (not the record itself).
    pub fn pending_parts(&self, txid: u64) -> (Vec<u8>, Vec<u8>) {
        (
            self.pending_part(txid, 0),
            self.pending(txid.saturating_add(1)),
        )
    }

    pub fn pending_txid(key: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(
            key.get(DB_KEY_BASE..DB_KEY_BASE + 8)?.try_into().ok()?,
        ))
    }

    /// The part number of a PENDING part key (`None` for a reservation key).
    pub fn pending_part_number(key: &[u8]) -> Option<u32> {
        if key.len() != PENDING_PART_KEY_LEN {
            return None;
        }
        Some(u32::from_be_bytes(
            key.get(PENDING_PART_KEY_LEN - 4..)?.try_into().ok()?,
        ))
    }

    /// The compaction lease: which engine runs a pass on this database.
    pub fn compaction_lease(&self) -> Vec<u8> {
        self.base(COMPACTION, 0)
    }

    /// The kept (folded) version `txid` of page `pgno`.
    pub fn hidx(&self, pgno: u32, txid: u64) -> Vec<u8> {
        let mut k = self.base(HIDX, 12);
        k.extend_from_slice(&pgno.to_be_bytes());
        k.extend_from_slice(&txid.to_be_bytes());
        k
    }

    fn hidx_page(&self, pgno: u32) -> Vec<u8> {
        let mut k = self.base(HIDX, 12);
        k.extend_from_slice(&pgno.to_be_bytes());
        k
    }

    /// Kept versions of pages `from..to`.
    pub fn hidx_pages(&self, from: u32, to: u32) -> (Vec<u8>, Vec<u8>) {
        let start = self.hidx_page(from);
        let end = if to > from {
            self.hidx_page(to)
        } else {
            start.clone()
        };
        (start, end)
    }

    /// Every kept version of page `pgno` up to and including `txid`.
    pub fn hidx_versions_upto(&self, pgno: u32, txid: u64) -> (Vec<u8>, Vec<u8>) {
        let end = match txid.checked_add(1) {
            Some(t) => self.hidx(pgno, t),
            None => prefix_end(&self.hidx_page(pgno)).unwrap_or_else(|| self.base(HIDX + 1, 0)),
        };
        (self.hidx_page(pgno), end)
    }

    /// Every kept version of every page.
    pub fn hidx_all(&self) -> (Vec<u8>, Vec<u8>) {
        (self.base(HIDX, 0), self.base(HIDX + 1, 0))
    }

    /// The page and txid of an HIDX key.
    pub fn hidx_key(key: &[u8]) -> Option<(u32, u64)> {
        if key.len() != PIDX_KEY_LEN {
            return None;
        }
        let pgno = u32::from_be_bytes(key.get(DB_KEY_BASE..DB_KEY_BASE + 4)?.try_into().ok()?);
        let txid = u64::from_be_bytes(key.get(DB_KEY_BASE + 4..)?.try_into().ok()?);
        Some((pgno, txid))
    }

    /// The record of where shard `shard`'s kept history starts.
    pub fn history_base(&self, shard: u32) -> Vec<u8> {
        let mut k = self.base(BASE, 4);
        k.extend_from_slice(&shard.to_be_bytes());
        k
    }

    /// Every history-base record.
    pub fn history_base_all(&self) -> (Vec<u8>, Vec<u8>) {
        (self.base(BASE, 0), self.base(BASE + 1, 0))
    }

    pub fn history_base_shard(key: &[u8]) -> Option<u32> {
        if key.len() != BASE_KEY_LEN {
            return None;
        }
        Some(u32::from_be_bytes(key.get(DB_KEY_BASE..)?.try_into().ok()?))
    }

    /// Chunk prefix of the stored shard a history base names.
    pub fn base_blob(&self, shard: u32) -> Vec<u8> {
        let mut k = self.base(BASE_CHUNK, 4);
        k.extend_from_slice(&shard.to_be_bytes());
        k
    }

    /// Every chunk of every stored history base.
    pub fn base_blob_all(&self) -> (Vec<u8>, Vec<u8>) {
        (self.base(BASE_CHUNK, 0), self.base(BASE_CHUNK + 1, 0))
    }

    /// A fork's (or restore's) hold on this database as of `txid`.
    pub fn pin(&self, txid: u64, child: u64) -> Vec<u8> {
        let mut k = self.base(PIN, 16);
        k.extend_from_slice(&txid.to_be_bytes());
        k.extend_from_slice(&child.to_be_bytes());
        k
    }

    /// Every pin at commit `txid`.
    pub fn pins_at(&self, txid: u64) -> (Vec<u8>, Vec<u8>) {
        let mut start = self.base(PIN, 8);
        start.extend_from_slice(&txid.to_be_bytes());
        let end = prefix_end(&start).unwrap_or_else(|| self.base(PIN + 1, 0));
        (start, end)
    }

    pub fn pins_all(&self) -> (Vec<u8>, Vec<u8>) {
        (self.base(PIN, 0), self.base(PIN + 1, 0))
    }

    /// The commit and the child of a PIN key.
    pub fn pin_key(key: &[u8]) -> Option<(u64, u64)> {
        if key.len() != PIN_KEY_LEN {
            return None;
        }
        let txid = u64::from_be_bytes(key.get(DB_KEY_BASE..DB_KEY_BASE + 8)?.try_into().ok()?);
        let child = u64::from_be_bytes(key.get(DB_KEY_BASE + 8..)?.try_into().ok()?);
        Some((txid, child))
    }

    /// How many kept versions still name delta `txid`.
    pub fn href(&self, txid: u64) -> Vec<u8> {
        let mut k = self.base(HREF, 8);
        k.extend_from_slice(&txid.to_be_bytes());
        k
    }

    pub fn href_all(&self) -> (Vec<u8>, Vec<u8>) {
        (self.base(HREF, 0), self.base(HREF + 1, 0))
    }

    pub fn href_txid(key: &[u8]) -> Option<u64> {
        if key.len() != HREF_KEY_LEN {
            return None;
        }
        Some(u64::from_be_bytes(key.get(DB_KEY_BASE..)?.try_into().ok()?))
    }

    /// All pending state (every reservation and part).
    pub fn pending_all(&self) -> (Vec<u8>, Vec<u8>) {
        (self.base(PENDING, 0), self.base(PENDING + 1, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_stay_inside_the_database() {
        let db = DbKeys { id: 7 };
        assert!(db.pidx(255, 9) < db.pidx(256, 1));
        assert!(db.pidx(7, 255) < db.pidx(7, 256));
        assert!(db.pidx_page(7) < db.pidx(7, 0), "a legacy key sorts first");
        let (vs, ve) = db.pidx_versions_upto(7, 10);
        assert!(vs <= db.pidx_page(7) && db.pidx(7, 10) < ve && ve <= db.pidx(7, 11));
        let (ps, pe) = db.pidx_pages(2, 4);
        assert!(ps <= db.pidx(2, 0) && db.pidx(3, u64::MAX) < pe && pe <= db.pidx(4, 0));
        assert!(db.delta_part(255, 0) < db.delta_part(256, 0));
        let (start, end) = db.all();
        for key in [
            db.meta(),
            db.pidx(u32::MAX, u64::MAX),
            db.delta_part(u64::MAX, 9),
            db.pending_part(3, 1),
        ] {
            assert!(key >= start && key < end);
        }
        let other = DbKeys { id: 8 };
        assert!(other.meta() >= end, "databases are disjoint ranges");
        assert_eq!(db.meta().len(), META_KEY_LEN);
        assert_eq!(db.pidx(1, 1).len(), PIDX_KEY_LEN);
        assert_eq!(db.pidx_page(1).len(), LEGACY_PIDX_KEY_LEN);
        assert_eq!(db.dlist(1).len(), DLIST_KEY_LEN);
        assert_eq!(db.slist(1).len(), SLIST_KEY_LEN);
        assert_eq!(db.pending_part(1, 2).len(), PENDING_PART_KEY_LEN);
        assert_eq!(DbKeys::pidx_key(&db.pidx(42, 5)), Some((42, Some(5))));
        assert_eq!(DbKeys::pidx_key(&db.pidx_page(42)), Some((42, None)));
        assert_eq!(DbKeys::pidx_key(&db.dlist(42)), None);
        assert_eq!(DbKeys::dlist_txid(&db.dlist(99)), Some(99));
        assert_eq!(DbKeys::slist_shard(&db.slist(5)), Some(5));
        assert_eq!(
            DbKeys::pending_part_number(&db.pending_part(3, 11)),
            Some(11)
        );
        let (ps, pe) = db.pending_parts(3);
        assert!(
            db.pending(3) < ps,
            "the reservation record is outside its part range"
        );
        assert!(db.pending_part(3, u32::MAX) < pe && pe <= db.pending(4));
        assert_eq!(dir_name(&dir("hello")), Some("hello"));
        assert_eq!(tombstone_id(&tombstone(9)), Some(9));
        let (ts, te) = tombstone_range();
        assert!(tombstone(0) >= ts && tombstone(u64::MAX) < te);
        assert!(
            dir_range().1 <= ts || te <= dir_range().0,
            "disjoint from the directory"
        );
        assert_eq!(db_id_of(&db.pidx(4, 1)), Some(7));
        assert_eq!(DbKeys::hidx_key(&db.hidx(42, 5)), Some((42, 5)));
        let (hs, he) = db.hidx_versions_upto(7, 10);
        assert!(hs <= db.hidx(7, 0) && db.hidx(7, 10) < he && he <= db.hidx(7, 11));
        let (hs, he) = db.hidx_all();
        assert!(hs <= db.hidx(0, 0) && db.hidx(u32::MAX, u64::MAX) < he);
        assert!(
            he <= db.history_base(0),
            "kept versions and bases are apart"
        );
        assert_eq!(DbKeys::history_base_shard(&db.history_base(9)), Some(9));
        assert_eq!(DbKeys::pin_key(&db.pin(3, 4)), Some((3, 4)));
        let (ps, pe) = db.pins_at(3);
        assert!(ps <= db.pin(3, 0) && db.pin(3, u64::MAX) < pe && pe <= db.pin(4, 0));
        assert_eq!(DbKeys::href_txid(&db.href(77)), Some(77));
        assert_eq!(ghost_id(&ghost(5)), Some(5));
        for key in [
            db.hidx(1, 1),
            db.history_base(1),
            db.base_blob(1),
            db.pin(1, 1),
            db.href(1),
        ] {
            assert!(
                key >= start && key < end,
                "history keys stay in the database"
            );
        }
        let (ds, de) = all_databases();
        assert!(db.meta() >= ds && db.delta_part(u64::MAX, 1) < de);
    }
}
