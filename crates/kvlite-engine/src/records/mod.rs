//! Every stored record's codec, in one place: META ([`meta`]) and the small
//! fixed-width records below. Each record's encoded length is a constant
//! next to its encoder, and the bytes quota counts for an entry (key +
//! value) are derived from those constants and the key layout, never written
//! as literals elsewhere. All integers are big-endian.

pub mod meta;

use crate::keys;

/// Bytes of one page-index entry (key + value); quota counts them.
pub const PIDX_ENTRY_BYTES: u64 = (keys::PIDX_KEY_LEN + Loc::LEN) as u64;
/// Bytes of one DLIST entry (key + value), counted as delta bytes.
pub const DLIST_ENTRY_BYTES: u64 = (keys::DLIST_KEY_LEN + DeltaInfo::LEN) as u64;
/// Bytes of one SLIST entry (key + value), counted as shard bytes.
pub const SLIST_ENTRY_BYTES: u64 = (keys::SLIST_KEY_LEN + ShardInfo::LEN) as u64;

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

/// PIDX value: the delta (and part of it) holding a page.
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

/// DLIST value: a delta's stored bytes, part count and page count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeltaInfo {
    pub bytes: u64,
    pub parts: u32,
    pub pages: u32,
}

impl DeltaInfo {
    pub const LEN: usize = 8 + 4 + 4;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let (bytes, rest) = b.split_at_mut(8);
        let (parts, pages) = rest.split_at_mut(4);
        bytes.copy_from_slice(&self.bytes.to_be_bytes());
        parts.copy_from_slice(&self.parts.to_be_bytes());
        pages.copy_from_slice(&self.pages.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        let info = DeltaInfo {
            bytes: r.u64()?,
            parts: r.u32()?,
            pages: r.u32()?,
        };
        r.end()?;
        Some(info)
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

/// PENDING value: a reserved large commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pending {
    pub generation: u64,
    pub new_size: u32,
}

impl Pending {
    pub const LEN: usize = 8 + 4;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let (generation, size) = b.split_at_mut(8);
        generation.copy_from_slice(&self.generation.to_be_bytes());
        size.copy_from_slice(&self.new_size.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        let p = Pending {
            generation: r.u64()?,
            new_size: r.u32()?,
        };
        r.end()?;
        Some(p)
    }
}

/// PENDING part value: a stored part's bytes (chunk keys + values) and its
/// pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub bytes: u64,
    pub pgnos: Vec<u32>,
}

impl Part {
    pub fn encode(bytes: u64, pgnos: &[u32]) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + pgnos.len() * 4);
        b.extend_from_slice(&bytes.to_be_bytes());
        for p in pgnos {
            b.extend_from_slice(&p.to_be_bytes());
        }
        b
    }

    /// The stored bytes of an encoded record, without decoding its pages.
    pub fn stored_bytes(b: &[u8]) -> Option<u64> {
        b.first_chunk::<8>().map(|h| u64::from_be_bytes(*h))
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        let bytes = r.u64()?;
        if r.0.len() % 4 != 0 {
            return None;
        }
        let mut pgnos = Vec::with_capacity(r.0.len() / 4);
        while !r.0.is_empty() {
            pgnos.push(r.u32()?);
        }
        Some(Part { bytes, pgnos })
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
            (k.pidx(3).len() + loc.encode().len()) as u64,
            PIDX_ENTRY_BYTES
        );
        let d = DeltaInfo {
            bytes: 1,
            parts: 2,
            pages: 3,
        };
        assert_eq!(
            (k.dlist(5).len() + d.encode().len()) as u64,
            DLIST_ENTRY_BYTES
        );
        let s = ShardInfo { bytes: 4, txid: 5 };
        assert_eq!(
            (k.slist(5).len() + s.encode().len()) as u64,
            SLIST_ENTRY_BYTES
        );
    }

    #[test]
    fn records_round_trip_and_reject_wrong_lengths() {
        let loc = Loc { txid: 9, part: 2 };
        assert_eq!(Loc::decode(&loc.encode()), Some(loc));
        let d = DeltaInfo {
            bytes: 1,
            parts: 2,
            pages: 3,
        };
        assert_eq!(DeltaInfo::decode(&d.encode()), Some(d));
        let s = ShardInfo { bytes: 4, txid: 5 };
        assert_eq!(ShardInfo::decode(&s.encode()), Some(s));
        let p = Pending {
            generation: 8,
            new_size: 9,
        };
        assert_eq!(Pending::decode(&p.encode()), Some(p));
        let part = Part::encode(77, &[1, 2, 3]);
        assert_eq!(Part::stored_bytes(&part), Some(77));
        assert_eq!(
            Part::decode(&part),
            Some(Part {
                bytes: 77,
                pgnos: vec![1, 2, 3]
            })
        );
        fn rejects_other_lengths<T>(bytes: &[u8], decode: fn(&[u8]) -> Option<T>) {
            let mut long = bytes.to_vec();
            long.push(0);
            assert!(decode(&long).is_none());
            assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        }
        rejects_other_lengths(&loc.encode(), Loc::decode);
        rejects_other_lengths(&d.encode(), DeltaInfo::decode);
        rejects_other_lengths(&s.encode(), ShardInfo::decode);
        rejects_other_lengths(&p.encode(), Pending::decode);
        assert!(Part::decode(&part[..part.len() - 1]).is_none());
    }
}
