//! META: a database's head record, read and rewritten by every commit.
//!
//! Fixed-width big-endian fields behind a magic and an encoding version, so
//! the record's length never depends on the usage figure it contains (quota
//! counts META's own bytes; a fixed width makes that exact without iterating
//! to a fixed point).

pub use kvlite_api::Origin;

use super::{HIDX_ENTRY_BYTES, HREF_ENTRY_BYTES, PIDX_ENTRY_BYTES, PIN_ENTRY_BYTES, Reader};
use crate::keys::META_KEY_LEN;

const MAGIC: &[u8; 4] = b"KVLM";
/// Encoding 4 adds history (retention, floor, kept-history counters), the
/// parent of a fork and the ghost flag; encoding 3 (read, never written)
/// recorded when the current generation took over; encoding 2 did not;
/// encoding 1 did not remember each recent commit's generation either.
const ENCODING: u8 = 4;
const ENCODING_WITHOUT_HISTORY: u8 = 3;
const ENCODING_WITHOUT_TAKEOVER_TIME: u8 = 2;
const ENCODING_WITHOUT_GENERATIONS: u8 = 1;
/// Recent commit ids kept for `commit_status` and idempotent retries.
pub const RECENT_COMMITS: usize = 32;

/// Layout version of the database's data (the v2 layout of DESIGN.md).
pub const FORMAT_V2: u16 = 2;

/// A commit that landed, remembered by its client-chosen id and the
/// generation of the writer that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentCommit {
    pub commit_id: u64,
    /// 0 when read from an encoding that did not keep it (never a real
    /// generation: they start at `id << 32`).
    pub generation: u64,
    pub txid: u64,
    pub size_pages: u32,
}

impl RecentCommit {
    /// Whether this is the commit a writer of `generation` sent as `commit_id`.
    pub fn is(&self, commit_id: u64, generation: u64) -> bool {
        self.commit_id == commit_id && (self.generation == generation || self.generation == 0)
    }
}

/// The database a fork reads the pages it never wrote from: `id` as of
/// commit `txid` (when it had `size_pages` pages). `depth` counts the
/// ancestors (1 for a fork of a database that is no fork).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub id: u64,
    pub txid: u64,
    pub size_pages: u32,
    pub depth: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub format: u16,
    pub page_size: u32,
    pub shard_pages: u32,
    pub origin: Origin,
    pub created_ms: u64,
    /// Bumped by every takeover; requests carrying an older one are fenced.
    pub generation: u64,
    /// When the current generation took over (ms since the epoch; 0 if the
    /// record predates encoding 3), for telling a fenced writer when.
    pub taken_over_ms: u64,
    /// The newest committed transaction. 1 is the empty database's creation.
    pub head_txid: u64,
    /// Next txid to hand out (fast commit or large-commit reservation).
    pub next_txid: u64,
    /// Every delta with txid <= this has been folded into shards.
    pub materialized_txid: u64,
    pub size_pages: u32,
    /// Bumped whenever the page index may change; tags the in-memory
    /// page-index memo.
    pub version: u64,
    /// Bumped whenever any shard changes (compaction, truncation): a shard
    /// read at one epoch is immutable, so its decoded pages can be cached.
    pub shard_epoch: u64,
    pub quota_bytes: u64,
    /// Largest raw dirty-page payload accepted by the one-round-trip commit.
    pub fast_path_limit: u64,
    pub pidx_count: u64,
    pub delta_count: u64,
    pub delta_bytes: u64,
    pub shard_count: u64,
    pub shard_bytes: u64,
    /// How long commits stay readable (ms); `None`: the engine's default.
    pub retention_ms: Option<u64>,
    /// The oldest commit reads may ask for (reads at a commit a fork or
    /// restore pins are allowed below it): what only older reads needed
    /// may be gone.
    pub history_floor: u64,
    /// The database's size and time at the floor commit (its record may be
    /// gone when no history is kept: the floor is then the head it was).
    pub history_floor_size: u32,
    pub history_floor_time_ms: u64,
    /// Kept (folded) page versions, HREF records, history bases (records and
    /// stored shards, in bytes) and pins forks hold on this database.
    pub hidx_count: u64,
    pub href_count: u64,
    pub base_count: u64,
    pub base_bytes: u64,
    pub pin_count: u64,
    /// Set for a fork (and a restore's new incarnation).
    pub parent: Option<Parent>,
    /// The commit this incarnation starts at: 1, or for a fork or restore
    /// the commit after its parent's (a read at an earlier commit reads the
    /// parent there: the database's history before it existed as this
    /// incarnation).
    pub created_txid: u64,
    /// Deleted, but kept for the forks that still read it (no name).
    pub ghost: bool,
    /// Oldest first.
    pub recent_commits: Vec<RecentCommit>,
}

const FIXED_LEN: usize = FIXED_LEN_WITHOUT_HISTORY + HISTORY_LEN;
/// Encoding 3.
const FIXED_LEN_WITHOUT_HISTORY: usize = FIXED_LEN_WITHOUT_TAKEOVER_TIME + 8;
/// Retention, floor (txid, size, time), five counters, parent (id, txid,
/// size, depth), ghost, the creation commit.
const HISTORY_LEN: usize = 8 * 7 + 4 + 8 + 8 + 8 + 4 + 1 + 1 + 8;
/// Encodings 1 and 2.
const FIXED_LEN_WITHOUT_TAKEOVER_TIME: usize = 4 + 1 + 2 + 4 + 4 + 1 + 8 * 6 + 4 + 8 * 9 + 2;
const RECENT_LEN: usize = 8 + 8 + 8 + 4;
#[cfg(test)]
const RECENT_LEN_WITHOUT_GENERATION: usize = 8 + 8 + 4;

impl Meta {
    pub fn new(created_ms: u64, quota_bytes: u64, fast_path_limit: u64) -> Self {
        Meta {
            format: FORMAT_V2,
            page_size: crate::PAGE_SIZE as u32,
            shard_pages: crate::SHARD_PAGES,
            origin: Origin::Native,
            created_ms,
            generation: 0,
            taken_over_ms: 0,
            head_txid: 1,
            next_txid: 2,
            materialized_txid: 1,
            size_pages: 0,
            version: 0,
            shard_epoch: 0,
            quota_bytes,
            fast_path_limit,
            pidx_count: 0,
            delta_count: 0,
            delta_bytes: 0,
            shard_count: 0,
            shard_bytes: 0,
            retention_ms: None,
            history_floor: 1,
            history_floor_size: 0,
            history_floor_time_ms: created_ms,
            hidx_count: 0,
            href_count: 0,
            base_count: 0,
            base_bytes: 0,
            pin_count: 0,
            parent: None,
            ghost: false,
            created_txid: 1,
            recent_commits: Vec::new(),
        }
    }

    /// Bytes of kept history (versions, their references, bases and pins);
    /// the deltas those versions name count as delta bytes.
    pub fn history_bytes(&self) -> u64 {
        self.hidx_count
            .saturating_mul(HIDX_ENTRY_BYTES)
            .saturating_add(self.href_count.saturating_mul(HREF_ENTRY_BYTES))
            .saturating_add(self.base_bytes)
            .saturating_add(self.pin_count.saturating_mul(PIN_ENTRY_BYTES))
    }

    /// Bytes of META itself (key + value) as stored.
    pub fn stored_len(&self) -> u64 {
        (META_KEY_LEN + FIXED_LEN + self.recent_commits.len() * RECENT_LEN) as u64
    }

    /// Holds nothing: no pages, page versions, shards, history or parent.
    /// A large commit reserved on a blank database may store whole shards
    /// in place (nothing else can be folded into them until it lands).
    pub fn is_blank(&self) -> bool {
        self.size_pages == 0
            && self.pidx_count == 0
            && self.shard_count == 0
            && self.hidx_count == 0
            && self.base_count == 0
            && self.parent.is_none()
    }

    /// Storage this database uses: META, page index, deltas and shards.
    /// Saturates: counters a damaged META holds must not overflow here (the
    /// commit that would move them reports the corruption).
    pub fn used_bytes(&self) -> u64 {
        self.stored_len()
            .saturating_add(self.pidx_count.saturating_mul(PIDX_ENTRY_BYTES))
            .saturating_add(self.delta_bytes)
            .saturating_add(self.shard_bytes)
            .saturating_add(self.history_bytes())
    }

    /// The recent commit with this id (whoever sent it).
    pub fn find_commit(&self, commit_id: u64) -> Option<RecentCommit> {
        self.recent_commits
            .iter()
            .rev()
            .find(|c| c.commit_id == commit_id)
            .copied()
    }

    pub fn remember_commit(&mut self, commit: RecentCommit) {
        if self.recent_commits.len() >= RECENT_COMMITS {
            self.recent_commits.remove(0);
        }
        self.recent_commits.push(commit);
    }

    pub fn encode(&self) -> Vec<u8> {
        // What decode refuses must never be written: it would wedge the
        // database.
        debug_assert!(
            self.head_txid < self.next_txid && self.materialized_txid <= self.head_txid,
            "META txids out of order: {self:?}"
        );
        debug_assert!(self.recent_commits.len() <= RECENT_COMMITS);
        let mut b = Vec::with_capacity(FIXED_LEN + self.recent_commits.len() * RECENT_LEN);
        b.extend_from_slice(MAGIC);
        b.push(ENCODING);
        b.extend_from_slice(&self.format.to_be_bytes());
        b.extend_from_slice(&self.page_size.to_be_bytes());
        b.extend_from_slice(&self.shard_pages.to_be_bytes());
        b.push(self.origin as u8);
        for v in [
            self.created_ms,
            self.generation,
            self.head_txid,
            self.next_txid,
            self.materialized_txid,
            self.version,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&self.size_pages.to_be_bytes());
        for v in [
            self.quota_bytes,
            self.fast_path_limit,
            self.pidx_count,
            self.delta_count,
            self.delta_bytes,
            self.shard_count,
            self.shard_bytes,
            self.used_bytes(),
            self.shard_epoch,
            self.taken_over_ms,
            self.retention_ms.unwrap_or(u64::MAX),
            self.history_floor,
            self.hidx_count,
            self.href_count,
            self.base_count,
            self.base_bytes,
            self.pin_count,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&self.history_floor_size.to_be_bytes());
        b.extend_from_slice(&self.history_floor_time_ms.to_be_bytes());
        let parent = self.parent.unwrap_or(Parent {
            id: 0,
            txid: 0,
            size_pages: 0,
            depth: 0,
        });
        b.extend_from_slice(&parent.id.to_be_bytes());
        b.extend_from_slice(&parent.txid.to_be_bytes());
        b.extend_from_slice(&parent.size_pages.to_be_bytes());
        b.push(parent.depth);
        b.push(u8::from(self.ghost));
        b.extend_from_slice(&self.created_txid.to_be_bytes());
        b.extend_from_slice(&(self.recent_commits.len() as u16).to_be_bytes());
        for c in &self.recent_commits {
            b.extend_from_slice(&c.commit_id.to_be_bytes());
            b.extend_from_slice(&c.generation.to_be_bytes());
            b.extend_from_slice(&c.txid.to_be_bytes());
            b.extend_from_slice(&c.size_pages.to_be_bytes());
        }
        debug_assert_eq!((b.len() + META_KEY_LEN) as u64, self.stored_len());
        b
    }

    /// Decode; `None` for anything that is not a well-formed META record.
    pub fn decode(bytes: &[u8]) -> Option<Meta> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let (with_generations, with_takeover_time, with_history) = match r.u8()? {
            ENCODING => (true, true, true),
            ENCODING_WITHOUT_HISTORY => (true, true, false),
            ENCODING_WITHOUT_TAKEOVER_TIME => (true, false, false),
            ENCODING_WITHOUT_GENERATIONS => (false, false, false),
            _ => return None,
        };
        let format = r.u16()?;
        let page_size = r.u32()?;
        let shard_pages = r.u32()?;
        let origin = Origin::from_u8(r.u8()?)?;
        let created_ms = r.u64()?;
        let generation = r.u64()?;
        let head_txid = r.u64()?;
        let next_txid = r.u64()?;
        let materialized_txid = r.u64()?;
        let version = r.u64()?;
        let size_pages = r.u32()?;
        let quota_bytes = r.u64()?;
        let fast_path_limit = r.u64()?;
        let pidx_count = r.u64()?;
        let delta_count = r.u64()?;
        let delta_bytes = r.u64()?;
        let shard_count = r.u64()?;
        let shard_bytes = r.u64()?;
        let _used = r.u64()?;
        let shard_epoch = r.u64()?;
        let taken_over_ms = if with_takeover_time { r.u64()? } else { 0 };
        let mut history = History {
            // Before history was kept, nothing folded stayed readable; what
            // the floor was is known only when it is the head (and never
            // when: no time resolves to it).
            history_floor: materialized_txid,
            history_floor_size: if materialized_txid == head_txid {
                size_pages
            } else {
                u32::MAX
            },
            history_floor_time_ms: u64::MAX,
            created_txid: 1,
            ..History::default()
        };
        if with_history {
            history = History {
                retention_ms: Some(r.u64()?).filter(|&v| v != u64::MAX),
                history_floor: r.u64()?,
                hidx_count: r.u64()?,
                href_count: r.u64()?,
                base_count: r.u64()?,
                base_bytes: r.u64()?,
                pin_count: r.u64()?,
                history_floor_size: r.u32()?,
                history_floor_time_ms: r.u64()?,
                parent: None,
                ghost: false,
                created_txid: 1,
            };
            let (id, txid, size_pages, depth) = (r.u64()?, r.u64()?, r.u32()?, r.u8()?);
            history.parent = match (id, depth) {
                (0, 0) if txid == 0 && size_pages == 0 => None,
                (0, _) | (_, 0) => return None,
                _ => Some(Parent {
                    id,
                    txid,
                    size_pages,
                    depth,
                }),
            };
            history.ghost = match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            history.created_txid = r.u64()?;
        }
        let n = r.u16()? as usize;
        if n > RECENT_COMMITS {
            return None;
        }
        let mut recent_commits = Vec::with_capacity(n);
        for _ in 0..n {
            let commit_id = r.u64()?;
            let generation = if with_generations { r.u64()? } else { 0 };
            recent_commits.push(RecentCommit {
                commit_id,
                generation,
                txid: r.u64()?,
                size_pages: r.u32()?,
            });
        }
        // Counters that only ever grow by one stay far from the end of
        // their range; a value near it is damage (and would overflow).
        let sane = |v: u64| v < u64::MAX / 2;
        if !r.0.is_empty()
            || head_txid >= next_txid
            || materialized_txid > head_txid
            || history.history_floor > head_txid
            || history.history_floor == 0
            || history.created_txid == 0
            || history.created_txid > head_txid
            || ![next_txid, generation, version, shard_epoch]
                .into_iter()
                .all(sane)
        {
            return None;
        }
        Some(Meta {
            format,
            page_size,
            shard_pages,
            origin,
            created_ms,
            generation,
            taken_over_ms,
            head_txid,
            next_txid,
            materialized_txid,
            size_pages,
            version,
            shard_epoch,
            quota_bytes,
            fast_path_limit,
            pidx_count,
            delta_count,
            delta_bytes,
            shard_count,
            shard_bytes,
            retention_ms: history.retention_ms,
            history_floor: history.history_floor,
            history_floor_size: history.history_floor_size,
            history_floor_time_ms: history.history_floor_time_ms,
            hidx_count: history.hidx_count,
            href_count: history.href_count,
            base_count: history.base_count,
            base_bytes: history.base_bytes,
            pin_count: history.pin_count,
            parent: history.parent,
            ghost: history.ghost,
            created_txid: history.created_txid,
            recent_commits,
        })
    }
}

/// The history fields of encoding 4, as an older encoding implies them.
#[derive(Default)]
struct History {
    retention_ms: Option<u64>,
    history_floor: u64,
    history_floor_size: u32,
    history_floor_time_ms: u64,
    hidx_count: u64,
    href_count: u64,
    base_count: u64,
    base_bytes: u64,
    pin_count: u64,
    parent: Option<Parent>,
    ghost: bool,
    created_txid: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fixed_width() {
        let mut m = Meta::new(1234, 10 << 30, 8 << 20);
        m.generation = 3;
        m.taken_over_ms = 1_796_000_000_000;
        m.size_pages = 99;
        m.delta_bytes = 5;
        for i in 0..40 {
            m.remember_commit(RecentCommit {
                commit_id: i,
                generation: 7,
                txid: i + 2,
                size_pages: 1,
            });
        }
        assert_eq!(m.recent_commits.len(), RECENT_COMMITS);
        assert_eq!(m.find_commit(39).map(|c| c.txid), Some(41));
        assert_eq!(m.find_commit(0), None, "oldest ids roll off");
        let bytes = m.encode();
        assert_eq!(Meta::decode(&bytes), Some(m.clone()));
        let mut bigger = m.clone();
        bigger.delta_bytes = u64::MAX / 4;
        assert_eq!(
            bigger.encode().len(),
            bytes.len(),
            "usage never changes the length"
        );
        for cut in 0..bytes.len() {
            assert_eq!(Meta::decode(&bytes[..cut]), None, "truncated at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(Meta::decode(&extra), None);
        // Counters near the end of their range are damage, refused.
        for damage in [
            |m: &mut Meta| m.next_txid = u64::MAX,
            |m: &mut Meta| m.generation = u64::MAX - 1,
            |m: &mut Meta| m.version = u64::MAX / 2,
            |m: &mut Meta| m.shard_epoch = u64::MAX,
        ] {
            let mut bad = m.clone();
            damage(&mut bad);
            bad.head_txid = bad.head_txid.min(bad.next_txid - 1);
            assert_eq!(Meta::decode(&bad.encode()), None, "{bad:?}");
        }
        // History fields round-trip, and a record without them (encoding 3)
        // still reads: nothing folded was kept, so its floor is the
        // materialized commit.
        let mut h = m.clone();
        h.head_txid = 50;
        h.next_txid = 60;
        h.materialized_txid = 20;
        h.history_floor = 12;
        h.history_floor_size = 33;
        h.history_floor_time_ms = 1_796_000_000_123;
        h.retention_ms = Some(3_600_000);
        h.hidx_count = 5;
        h.href_count = 2;
        h.base_count = 1;
        h.base_bytes = 900;
        h.pin_count = 3;
        h.parent = Some(Parent {
            id: 4,
            txid: 9,
            size_pages: 77,
            depth: 2,
        });
        h.ghost = true;
        h.created_txid = 9;
        let hb = h.encode();
        assert_eq!(Meta::decode(&hb), Some(h.clone()));
        assert_eq!(hb.len(), bytes.len(), "history never changes the length");
        let mut v3 = hb[..FIXED_LEN_WITHOUT_HISTORY - 2].to_vec();
        v3.extend_from_slice(&hb[FIXED_LEN - 2..]);
        v3[4] = ENCODING_WITHOUT_HISTORY;
        let read3 = Meta::decode(&v3).expect("encoding 3");
        assert_eq!(
            (
                read3.history_floor,
                read3.retention_ms,
                read3.parent,
                read3.ghost,
                read3.hidx_count
            ),
            (20, None, None, false, 0)
        );
        let mut floor_past_head = h.clone();
        floor_past_head.history_floor = 51;
        let mut enc = h.encode();
        let at = FIXED_LEN_WITHOUT_HISTORY - 2 + 8;
        enc[at..at + 8].copy_from_slice(&floor_past_head.history_floor.to_be_bytes());
        assert_eq!(Meta::decode(&enc), None, "a floor past the head is damage");
        // An encoding-2 record (no takeover time) still reads.
        let mut m2 = m.clone();
        m2.taken_over_ms = 0;
        m2.history_floor_size = m2.size_pages;
        m2.history_floor_time_ms = u64::MAX;
        let v4 = m2.encode();
        let mut v2 = v4[..FIXED_LEN_WITHOUT_HISTORY - 10].to_vec();
        v2.extend_from_slice(&v4[FIXED_LEN - 2..]);
        v2[4] = ENCODING_WITHOUT_TAKEOVER_TIME;
        assert_eq!(Meta::decode(&v2), Some(m2));
        // An encoding-1 record (no generations) still reads.
        let mut old = bytes[..FIXED_LEN_WITHOUT_HISTORY - 10].to_vec();
        old.extend_from_slice(&bytes[FIXED_LEN - 2..FIXED_LEN]);
        old[4] = ENCODING_WITHOUT_GENERATIONS;
        for c in &m.recent_commits {
            old.extend_from_slice(&c.commit_id.to_be_bytes());
            old.extend_from_slice(&c.txid.to_be_bytes());
            old.extend_from_slice(&c.size_pages.to_be_bytes());
        }
        assert_eq!(
            old.len(),
            FIXED_LEN_WITHOUT_TAKEOVER_TIME + RECENT_COMMITS * RECENT_LEN_WITHOUT_GENERATION
        );
        let read = Meta::decode(&old).expect("encoding 1");
        assert!(read.recent_commits.iter().all(|c| c.generation == 0));
        assert!(read.find_commit(39).is_some_and(|c| c.is(39, 12345)));
        assert!(
            m.find_commit(39)
                .is_some_and(|c| c.is(39, 7) && !c.is(39, 8))
        );
    }
}
