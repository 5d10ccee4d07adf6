//! Every stored record's codec, in one place: META ([`meta`]) and the small
//! fixed-width records below. Each record's encoded length is a constant
//! next to its encoder, and the bytes quota counts for an entry (key +
//! value) are derived from those constants and the key layout, never written
//! as literals elsewhere. All integers are big-endian.

pub mod meta;

use crate::keys;

/// Bytes of one page-index entry (key + value); quota counts them.
pub const PIDX_ENTRY_BYTES: u64 = (keys::PIDX_KEY_LEN + PIDX_VALUE_LEN) as u64;
/// A PIDX value: the part of the delta (named by the key's txid).
const PIDX_VALUE_LEN: usize = 4;
// A legacy entry (txid in the value) is exactly as large, so the count
// stays one constant whichever entries a database still holds.
const _: () = assert!(keys::LEGACY_PIDX_KEY_LEN + Loc::LEN == keys::PIDX_KEY_LEN + PIDX_VALUE_LEN);
/// Bytes of one SLIST entry (key + value), counted as shard bytes.
pub const SLIST_ENTRY_BYTES: u64 = (keys::SLIST_KEY_LEN + ShardInfo::LEN) as u64;
/// Bytes of one HIDX entry (a kept version: same shape as a PIDX entry).
pub const HIDX_ENTRY_BYTES: u64 = PIDX_ENTRY_BYTES;
/// Bytes of one BASE record (key + value), counted as base bytes.
pub const BASE_ENTRY_BYTES: u64 = (keys::BASE_KEY_LEN + HistoryBase::LEN) as u64;
/// Bytes of one PIN entry (key + value).
pub const PIN_ENTRY_BYTES: u64 = (keys::PIN_KEY_LEN + 4) as u64;
/// Bytes of one HREF entry (key + value).
pub const HREF_ENTRY_BYTES: u64 = (keys::HREF_KEY_LEN + 4) as u64;

/// Reads fixed-width big-endian fields; every method is `None` past the end.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(u8::from_be_bytes(self.array()?))
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
    /// `Some(())` if nothing is left.
    pub fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// The value of a versioned page-index entry.
pub fn encode_pidx(part: u32) -> [u8; PIDX_VALUE_LEN] {
    part.to_be_bytes()
}

/// A page-index entry (either shape) as the page and where that version
/// lives; `None` if malformed.
pub fn decode_pidx(key: &[u8], value: &[u8]) -> Option<(u32, Loc)> {
    match keys::DbKeys::pidx_key(key)? {
        (pgno, Some(txid)) => {
            let part = u32::from_be_bytes(value.try_into().ok()?);
            Some((pgno, Loc { txid, part }))
        }
        (pgno, None) => Some((pgno, Loc::decode(value)?)),
    }
}

/// Where one version of a page lives: the delta (and part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loc {
    pub txid: u64,
    pub part: u32,
}

impl Loc {
    pub const LEN: usize = 8 + 4;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let (txid, part) = b.split_at_mut(8);
        txid.copy_from_slice(&self.txid.to_be_bytes());
        part.copy_from_slice(&self.part.to_be_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Option<Loc> {
        let mut r = Reader(bytes);
        let loc = Loc {
            txid: r.u64()?,
            part: r.u32()?,
        };
        r.end()?;
        Some(loc)
    }
}

/// DLIST value: one commit's record — its delta's stored bytes, part and
/// page counts, the database size after it, when it landed, and (when few
/// enough to list) which pages it wrote, so a reader moving from one commit
/// to a later one invalidates exactly those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeltaInfo {
    pub bytes: u64,
    pub parts: u32,
    pub pages: u32,
    /// `None` in a record written before sizes were kept.
    pub size_pages: Option<u32>,
    /// Milliseconds since the epoch; 0 in a record written before times were kept.
    pub time_ms: u64,
    /// `None` when the commit wrote more than [`DeltaInfo::MAX_LISTED_PAGES`]
    /// pages (or the record predates page lists).
    pub pgnos: Option<Vec<u32>>,
}

impl DeltaInfo {
    /// The first encoding: bytes, parts, pages.
    const LEN_V1: usize = 8 + 4 + 4;
    /// The current encoding's fixed part: then size, time, a page-list flag.
    const FIXED_LEN: usize = Self::LEN_V1 + 4 + 8 + 1;
    /// Pages listed at most (4 KiB of page numbers).
    pub const MAX_LISTED_PAGES: usize = 1024;
    /// The largest record: a DLIST value never exceeds this.
    pub const MAX_LEN: usize = Self::FIXED_LEN + 4 * Self::MAX_LISTED_PAGES;

    /// A new commit's record; `pgnos` ascending.
    pub fn new(bytes: u64, parts: u32, size_pages: u32, time_ms: u64, pgnos: &[u32]) -> Self {
        DeltaInfo {
            bytes,
            parts,
            pages: pgnos.len() as u32,
            size_pages: Some(size_pages),
            time_ms,
            pgnos: (pgnos.len() <= Self::MAX_LISTED_PAGES).then(|| pgnos.to_vec()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let listed = self.pgnos.as_deref().unwrap_or_default();
        let mut b = Vec::with_capacity(Self::FIXED_LEN + 4 * listed.len());
        b.extend_from_slice(&self.bytes.to_be_bytes());
        b.extend_from_slice(&self.parts.to_be_bytes());
        b.extend_from_slice(&self.pages.to_be_bytes());
        b.extend_from_slice(&self.size_pages.unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&self.time_ms.to_be_bytes());
        b.push(u8::from(self.pgnos.is_some()));
        for p in listed {
            b.extend_from_slice(&p.to_be_bytes());
        }
        debug_assert!(b.len() <= Self::MAX_LEN);
        b
    }

    /// Bytes of this record's DLIST entry (key + value), counted as delta bytes.
    pub fn entry_bytes(&self) -> u64 {
        let listed = self.pgnos.as_ref().map_or(0, Vec::len);
        (keys::DLIST_KEY_LEN + Self::FIXED_LEN + 4 * listed) as u64
    }

    /// Bytes of a stored DLIST entry with this value (either encoding).
    pub fn stored_entry_bytes(value: &[u8]) -> u64 {
        (keys::DLIST_KEY_LEN + value.len()) as u64
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        let (bytes, parts, pages) = (r.u64()?, r.u32()?, r.u32()?);
        if b.len() == Self::LEN_V1 {
            return Some(DeltaInfo {
                bytes,
                parts,
                pages,
                size_pages: None,
                time_ms: 0,
                pgnos: None,
            });
        }
        let (size, time_ms, listed) = (r.u32()?, r.u64()?, r.u8()?);
        let pgnos = match listed {
            0 => {
                r.end()?;
                None
            }
            1 => {
                if r.0.len() % 4 != 0 || r.0.len() / 4 != pages as usize {
                    return None;
                }
                let mut v = Vec::with_capacity(r.0.len() / 4);
                while !r.0.is_empty() {
                    v.push(r.u32()?);
                }
                Some(v)
            }
            _ => return None,
        };
        Some(DeltaInfo {
            bytes,
            parts,
            pages,
            size_pages: Some(size),
            time_ms,
            pgnos,
        })
    }
}

/// SLIST value: a shard's stored bytes and the newest txid folded into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShardInfo {
    pub bytes: u64,
    pub txid: u64,
}

impl ShardInfo {
    pub const LEN: usize = 8 + 8;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let (bytes, txid) = b.split_at_mut(8);
        bytes.copy_from_slice(&self.bytes.to_be_bytes());
        txid.copy_from_slice(&self.txid.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        let info = ShardInfo {
            bytes: r.u64()?,
            txid: r.u64()?,
        };
        r.end()?;
        Some(info)
    }
}

/// BASE value: where the kept history of one shard starts. Reads at a
/// commit `T` with `as_of <= T` before the shard's current version find
/// the page's newest kept version in `(as_of, T]`, else the base's copy.
/// Invariant: every version of the shard's pages folded after `as_of` and
/// up to `chain_end` (the current shard's fold point, or the fold that
/// removed it) is kept as an HIDX entry unless no read the database still
/// allows can want it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryBase {
    pub as_of: u64,
    pub chain_end: u64,
    /// `Some(stored bytes)`: the shard as of `as_of` is stored under the
    /// BASE chunk prefix; `None`: the base is the database's creation
    /// (nothing for a new database, the parent's pages for a fork).
    pub stored: Option<u64>,
}

impl HistoryBase {
    pub const LEN: usize = 8 + 8 + 1 + 8;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let (as_of, rest) = b.split_at_mut(8);
        let (chain_end, rest) = rest.split_at_mut(8);
        let (flag, bytes) = rest.split_at_mut(1);
        as_of.copy_from_slice(&self.as_of.to_be_bytes());
        chain_end.copy_from_slice(&self.chain_end.to_be_bytes());
        flag.copy_from_slice(&[u8::from(self.stored.is_some())]);
        bytes.copy_from_slice(&self.stored.unwrap_or(0).to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        let (as_of, chain_end, flag, bytes) = (r.u64()?, r.u64()?, r.u8()?, r.u64()?);
        r.end()?;
        let stored = match flag {
            0 if bytes == 0 => None,
            1 => Some(bytes),
            _ => return None,
        };
        (as_of <= chain_end).then_some(HistoryBase {
            as_of,
            chain_end,
            stored,
        })
    }

    /// Bytes this base occupies: its record and its stored shard.
    pub fn stored_len(&self) -> u64 {
        BASE_ENTRY_BYTES + self.stored.unwrap_or(0)
    }
}

/// A u32 value (PIN: the database size at the pinned commit; HREF: a count).
pub(crate) fn encode_u32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

pub(crate) fn decode_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// PENDING value: a reserved large commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub generation: u64,
    pub new_size: u32,
    /// Reserved on a blank database with no other reservation: its parts
    /// may store whole shards in place (see `large.rs`).
    pub direct: bool,
}

impl Pending {
    /// The first encoding: generation, new size (never direct). A
    /// reservation that is not direct keeps it, so an engine of before
    /// direct commits can still finish or clean it.
    const LEN_V1: usize = 8 + 4;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN_V1 + 1);
        b.extend_from_slice(&self.generation.to_be_bytes());
        b.extend_from_slice(&self.new_size.to_be_bytes());
        if self.direct {
            b.push(1);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        let generation = r.u64()?;
        let new_size = r.u32()?;
        let direct = match r.0.len() {
            0 => false,
            _ => match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            },
        };
        r.end()?;
        Some(Pending {
            generation,
            new_size,
            direct,
        })
    }
}

/// PENDING part value: a stored part's delta bytes (chunk keys + values)
/// and pages, and the whole shards it stored in place (a direct commit's):
/// each shard's number and stored bytes. A part's pages are its delta's
/// and its shards' pages together, each in exactly one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub bytes: u64,
    pub pgnos: Vec<u32>,
    pub shards: Vec<(u32, u64)>,
}

impl Part {
    /// First byte of the encoding with shards. The first encoding (delta
    /// bytes, then pages) starts with the high byte of a part's size, which
    /// is always 0.
    const WITH_SHARDS: u8 = 1;

    /// Parts without shards keep the first encoding, so an engine of
    /// before shards in place can still finish or clean them.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(13 + self.pgnos.len() * 4 + self.shards.len() * 12);
        if !self.shards.is_empty() {
            b.push(Self::WITH_SHARDS);
        }
        b.extend_from_slice(&self.bytes.to_be_bytes());
        if !self.shards.is_empty() {
            b.extend_from_slice(&(self.pgnos.len() as u32).to_be_bytes());
        }
        for p in &self.pgnos {
            b.extend_from_slice(&p.to_be_bytes());
        }
        for (shard, bytes) in &self.shards {
            b.extend_from_slice(&shard.to_be_bytes());
            b.extend_from_slice(&bytes.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        if b.first() != Some(&Self::WITH_SHARDS) {
            let bytes = r.u64()?;
            if r.0.len() % 4 != 0 {
                return None;
            }
            let mut pgnos = Vec::with_capacity(r.0.len() / 4);
            while !r.0.is_empty() {
                pgnos.push(r.u32()?);
            }
            return Some(Part {
                bytes,
                pgnos,
                shards: Vec::new(),
            });
        }
        r.u8()?;
        let bytes = r.u64()?;
        let n = r.u32()? as usize;
        // Checked against what is left before allocating from it.
        if n.checked_mul(4)? > r.0.len() || !(r.0.len() - n * 4).is_multiple_of(12) {
            return None;
        }
        let mut pgnos = Vec::with_capacity(n);
        for _ in 0..n {
            pgnos.push(r.u32()?);
        }
        let mut shards = Vec::with_capacity(r.0.len() / 12);
        while !r.0.is_empty() {
            shards.push((r.u32()?, r.u64()?));
        }
        (!shards.is_empty()).then_some(Part {
            bytes,
            pgnos,
            shards,
        })
    }

    /// Bytes the part stored: its delta and its shards.
    pub fn stored_bytes(&self) -> u64 {
        self.shards
            .iter()
            .fold(self.bytes, |sum, (_, b)| sum.saturating_add(*b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DbKeys;

    #[test]
    fn entry_sizes_are_what_the_codecs_and_keys_produce() {
        let k = DbKeys { id: 7 };
        let loc = Loc { txid: 9, part: 2 };
        assert_eq!(
            (k.pidx(3, 9).len() + encode_pidx(2).len()) as u64,
            PIDX_ENTRY_BYTES
        );
        assert_eq!(
            (k.pidx_page(3).len() + loc.encode().len()) as u64,
            PIDX_ENTRY_BYTES
        );
        assert_eq!(decode_pidx(&k.pidx(3, 9), &encode_pidx(2)), Some((3, loc)));
        assert_eq!(decode_pidx(&k.pidx_page(3), &loc.encode()), Some((3, loc)));
        assert_eq!(decode_pidx(&k.pidx(3, 9), &loc.encode()), None);
        for d in [
            DeltaInfo::new(1, 2, 10, 99, &[3, 4, 5]),
            DeltaInfo::new(1, 1, 2000, 99, &(1..=2000).collect::<Vec<_>>()),
        ] {
            assert_eq!(
                (k.dlist(5).len() + d.encode().len()) as u64,
                d.entry_bytes()
            );
            assert_eq!(DeltaInfo::stored_entry_bytes(&d.encode()), d.entry_bytes());
            assert!(d.encode().len() <= DeltaInfo::MAX_LEN);
        }
        assert_eq!(DeltaInfo::new(1, 1, 2000, 0, &vec![1; 2000]).pgnos, None);
        let s = ShardInfo { bytes: 4, txid: 5 };
        assert_eq!(
            (k.slist(5).len() + s.encode().len()) as u64,
            SLIST_ENTRY_BYTES
        );
        assert_eq!(
            (k.hidx(3, 9).len() + encode_pidx(2).len()) as u64,
            HIDX_ENTRY_BYTES
        );
        let b = HistoryBase {
            as_of: 1,
            chain_end: 2,
            stored: None,
        };
        assert_eq!(
            (k.history_base(3).len() + b.encode().len()) as u64,
            BASE_ENTRY_BYTES
        );
        assert_eq!(
            (k.pin(3, 4).len() + encode_u32(1).len()) as u64,
            PIN_ENTRY_BYTES
        );
        assert_eq!(
            (k.href(3).len() + encode_u32(1).len()) as u64,
            HREF_ENTRY_BYTES
        );
    }

    #[test]
    fn records_round_trip_and_reject_wrong_lengths() {
        let loc = Loc { txid: 9, part: 2 };
        assert_eq!(Loc::decode(&loc.encode()), Some(loc));
        let d = DeltaInfo::new(1, 2, 10, 99, &[3, 4, 5]);
        assert_eq!(DeltaInfo::decode(&d.encode()), Some(d.clone()));
        let unlisted = DeltaInfo::new(1, 1, 2000, 99, &vec![7; 2000]);
        assert_eq!(DeltaInfo::decode(&unlisted.encode()), Some(unlisted));
        // The first encoding still reads.
        let mut v1 = Vec::new();
        v1.extend_from_slice(&1u64.to_be_bytes());
        v1.extend_from_slice(&2u32.to_be_bytes());
        v1.extend_from_slice(&3u32.to_be_bytes());
        let old = DeltaInfo::decode(&v1).expect("v1 DLIST");
        assert_eq!(
            (old.bytes, old.parts, old.pages, old.size_pages),
            (1, 2, 3, None)
        );
        let s = ShardInfo { bytes: 4, txid: 5 };
        assert_eq!(ShardInfo::decode(&s.encode()), Some(s));
        for b in [
            HistoryBase {
                as_of: 3,
                chain_end: 9,
                stored: Some(1234),
            },
            HistoryBase {
                as_of: 1,
                chain_end: 1,
                stored: None,
            },
        ] {
            assert_eq!(HistoryBase::decode(&b.encode()), Some(b));
            rejects_other_lengths(&b.encode(), HistoryBase::decode);
        }
        let backwards = HistoryBase {
            as_of: 9,
            chain_end: 3,
            stored: None,
        };
        assert_eq!(
            HistoryBase::decode(&backwards.encode()),
            None,
            "a chain ends after it starts"
        );
        assert_eq!(decode_u32(&encode_u32(77)), Some(77));
        for direct in [false, true] {
            let p = Pending {
                generation: 8,
                new_size: 9,
                direct,
            };
            assert_eq!(Pending::decode(&p.encode()), Some(p));
            let mut long = p.encode();
            long.extend_from_slice(&[1, 0]);
            assert_eq!(Pending::decode(&long), None);
        }
        // A reservation that is not direct keeps the first encoding.
        let first = Pending {
            generation: 8,
            new_size: 9,
            direct: false,
        };
        assert_eq!(first.encode().len(), 12);
        assert_eq!(Pending::decode(&first.encode()[..11]), None);
        let mut zero_flag = first.encode();
        zero_flag.push(0);
        assert_eq!(Pending::decode(&zero_flag), Some(first));
        let mut unknown_flag = first.encode();
        unknown_flag.push(2);
        assert_eq!(Pending::decode(&unknown_flag), None);
        // A part without shards keeps the first encoding (delta bytes, then
        // pages), which an older engine reads.
        let plain = Part {
            bytes: 77,
            pgnos: vec![1, 2, 3],
            shards: Vec::new(),
        };
        let encoded = plain.encode();
        assert_eq!(encoded.len(), 8 + 3 * 4);
        assert_eq!(encoded[..8], 77u64.to_be_bytes());
        assert_eq!(Part::decode(&encoded), Some(plain.clone()));
        assert_eq!(plain.stored_bytes(), 77);
        assert!(Part::decode(&encoded[..encoded.len() - 1]).is_none());
        let with_shards = Part {
            bytes: 5,
            pgnos: vec![64, 200],
            shards: vec![(0, 1000), (2, 2000)],
        };
        let encoded = with_shards.encode();
        assert_eq!(Part::decode(&encoded), Some(with_shards.clone()));
        assert_eq!(with_shards.stored_bytes(), 3005);
        for cut in (1..encoded.len()).filter(|c| c % 12 != 0) {
            assert!(
                Part::decode(&encoded[..encoded.len() - cut]).is_none(),
                "cut {cut}"
            );
        }
        let mut long = encoded.clone();
        long.push(0);
        assert!(Part::decode(&long).is_none());
        // A page count larger than the record is refused, not allocated.
        let mut huge = encoded;
        huge[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Part::decode(&huge).is_none());
        fn rejects_other_lengths<T>(bytes: &[u8], decode: fn(&[u8]) -> Option<T>) {
            let mut long = bytes.to_vec();
            long.push(0);
            assert!(decode(&long).is_none());
            assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        }
        rejects_other_lengths(&loc.encode(), Loc::decode);
        rejects_other_lengths(&d.encode(), DeltaInfo::decode);
        rejects_other_lengths(&s.encode(), ShardInfo::decode);
    }
}
