//! Header and trailer.

use crate::checksum::{CHECKSUM_FLAG, lock_pgno};
use crate::error::{DecodeError, HeaderError, TrailerError};

/// The LTX magic number.
pub const MAGIC: [u8; 4] = *b"LTX1";
/// Format version implemented (not stored in the file).
pub const FORMAT_VERSION: u32 = 3;
/// Header size in bytes.
pub const HEADER_SIZE: usize = 100;
/// Page header size (pgno + flags), also the size of the page block
/// terminator.
pub const PAGE_HEADER_SIZE: usize = 6;
/// Page header plus the 4-byte compressed size field.
pub const FRAME_HEADER_SIZE: usize = PAGE_HEADER_SIZE + 4;
/// Trailer size in bytes.
pub const TRAILER_SIZE: usize = 16;
/// Smallest possible file: header, block terminator, 1-byte index
/// terminator, index length field, trailer.
pub const MIN_FILE_SIZE: usize = HEADER_SIZE + PAGE_HEADER_SIZE + 1 + 8 + TRAILER_SIZE;
/// Smallest valid page size.
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest valid page size.
pub const MAX_PAGE_SIZE: u32 = 65536;
/// Page header flag: a 4-byte compressed size follows and the payload is an
/// LZ4 block. Always set by current encoders.
pub const PAGE_FLAG_SIZE: u16 = 1;

/// Returns true if `page_size` is a power of two in 512..=65536.
pub const fn is_valid_page_size(page_size: u32) -> bool {
    page_size.is_power_of_two() && page_size >= MIN_PAGE_SIZE && page_size <= MAX_PAGE_SIZE
}

/// Header flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeaderFlags(u32);

impl HeaderFlags {
    /// Database checksum tracking is disabled: pre- and post-apply checksums
    /// are zero. (The file checksum is still present.)
    pub const NO_CHECKSUM: Self = Self(1 << 1);
    /// All valid flag bits.
    pub const ALL: Self = Self::NO_CHECKSUM;

    /// No flags.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Raw bits (may include invalid bits if built with
    /// [`from_bits_retain`](Self::from_bits_retain)).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits, or `None` if unknown bits are set.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// Flags from raw bits, keeping unknown bits (header validation rejects
    /// them).
    pub const fn from_bits_retain(bits: u32) -> Self {
        Self(bits)
    }

    /// True if every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for HeaderFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// The 100-byte LTX header.
///
/// `Default` gives an all-zero header, which is invalid (page size and TXIDs
/// must be set); it is meant as a base for struct update syntax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Header {
    /// Header flags.
    pub flags: HeaderFlags,
    /// Database page size in bytes.
    pub page_size: u32,
    /// Database size in pages after applying this file.
    pub commit: u32,
    /// Minimum transaction ID (1 for a snapshot).
    pub min_txid: u64,
    /// Maximum transaction ID.
    pub max_txid: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Database checksum before applying this file (0 for snapshots and with
    /// `NO_CHECKSUM`).
    pub pre_apply_checksum: u64,
    /// Offset in the original WAL; zero for a rollback journal.
    pub wal_offset: i64,
    /// Size of the original WAL segment; zero for a rollback journal.
    pub wal_size: i64,
    /// First WAL salt; zero for a journal or compaction.
    pub wal_salt1: u32,
    /// Second WAL salt; zero for a journal or compaction.
    pub wal_salt2: u32,
    /// Creating node ID; zero if unset.
    pub node_id: u64,
}

impl Header {
    /// True if this file is a snapshot (min TXID 1): it holds every page of
    /// the database.
    pub const fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    /// True if database checksum tracking is disabled.
    pub const fn no_checksum(&self) -> bool {
        self.flags.contains(HeaderFlags::NO_CHECKSUM)
    }

    /// The SQLite lock page number for this page size.
    pub fn lock_pgno(&self) -> u32 {
        lock_pgno(self.page_size)
    }

    /// Validates field combinations exactly like the Go reference
    /// `Header.Validate`.
    pub fn validate(&self) -> Result<(), HeaderError> {
        if HeaderFlags::from_bits(self.flags.bits()).is_none() {
            return Err(HeaderError::UnsupportedFlags(self.flags.bits()));
        }
        if !is_valid_page_size(self.page_size) {
            return Err(HeaderError::InvalidPageSize(self.page_size));
        }
        if self.min_txid == 0 {
            return Err(HeaderError::MinTxidRequired);
        }
        if self.max_txid == 0 {
            return Err(HeaderError::MaxTxidRequired);
        }
        if self.min_txid > self.max_txid {
            return Err(HeaderError::TxidOutOfOrder {
                min: self.min_txid,
                max: self.max_txid,
            });
        }
        if self.wal_offset < 0 {
            return Err(HeaderError::NegativeWalOffset(self.wal_offset));
        }
        if self.wal_size < 0 {
            return Err(HeaderError::NegativeWalSize(self.wal_size));
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return Err(HeaderError::WalOffsetRequiredForSalt);
        }
        if self.wal_offset == 0 && self.wal_size != 0 {
            return Err(HeaderError::WalOffsetRequiredForSize);
        }
        let pre = self.pre_apply_checksum;
        if self.is_snapshot() {
            if pre != 0 {
                return Err(HeaderError::SnapshotPreApplyChecksum(pre));
            }
        } else if self.no_checksum() {
            if pre != 0 {
                return Err(HeaderError::PreApplyChecksumNotAllowed(pre));
            }
        } else if pre == 0 {
            return Err(HeaderError::PreApplyChecksumRequired);
        } else if pre & CHECKSUM_FLAG == 0 {
            return Err(HeaderError::InvalidPreApplyChecksumFormat(pre));
        }
        Ok(())
    }

    /// Validates a post-apply checksum for this header: zero with
    /// `NO_CHECKSUM`, otherwise non-zero with bit 63 set, and exactly
    /// `CHECKSUM_FLAG` (the empty database) when `commit == 0`.
    pub fn validate_post_apply_checksum(&self, post: u64) -> Result<(), TrailerError> {
        if self.no_checksum() {
            if post != 0 {
                return Err(TrailerError::PostApplyChecksumNotAllowed(post));
            }
        } else if post == 0 {
            return Err(TrailerError::PostApplyChecksumRequired);
        } else if post & CHECKSUM_FLAG == 0 {
            return Err(TrailerError::InvalidPostApplyChecksumFormat(post));
        } else if self.commit == 0 && post != CHECKSUM_FLAG {
            return Err(TrailerError::EmptyDatabaseChecksum(post));
        }
        Ok(())
    }

    /// Serializes the header (reserved bytes zero). Does not validate.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let fields: [&[u8]; 12] = [
            &self.flags.bits().to_be_bytes(),
            &self.page_size.to_be_bytes(),
            &self.commit.to_be_bytes(),
            &self.min_txid.to_be_bytes(),
            &self.max_txid.to_be_bytes(),
            &self.timestamp.to_be_bytes(),
            &self.pre_apply_checksum.to_be_bytes(),
            &self.wal_offset.to_be_bytes(),
            &self.wal_size.to_be_bytes(),
            &self.wal_salt1.to_be_bytes(),
            &self.wal_salt2.to_be_bytes(),
            &self.node_id.to_be_bytes(),
        ];
        let mut out = b.iter_mut();
        for byte in MAGIC.iter().chain(fields.into_iter().flatten()) {
            if let Some(slot) = out.next() {
                *slot = *byte;
            }
        }
        b
    }

    /// Parses and validates a header from the first 100 bytes of `data`.
    /// Reserved bytes 80..100 are ignored, as in the Go reference.
    pub fn from_bytes(data: &[u8]) -> Result<Self, DecodeError> {
        if let Some(magic) = data.first_chunk::<4>()
            && *magic != MAGIC
        {
            return Err(DecodeError::BadMagic(*magic));
        }
        let b: &[u8; HEADER_SIZE] = data.first_chunk().ok_or(DecodeError::Truncated {
            len: data.len(),
            min: HEADER_SIZE,
        })?;
        let mut r = FieldReader { b, pos: 4 };
        let header = Header {
            flags: HeaderFlags::from_bits_retain(r.u32()),
            page_size: r.u32(),
            commit: r.u32(),
            min_txid: r.u64(),
            max_txid: r.u64(),
            timestamp: r.u64() as i64,
            pre_apply_checksum: r.u64(),
            wal_offset: r.u64() as i64,
            wal_size: r.u64() as i64,
            wal_salt1: r.u32(),
            wal_salt2: r.u32(),
            node_id: r.u64(),
        };
        header.validate()?;
        Ok(header)
    }
}

/// Sequential big-endian reads within the fixed-size header array; every
/// position is a compile-time-known offset below 80, so reads cannot fail.
struct FieldReader<'a> {
    b: &'a [u8; HEADER_SIZE],
    pos: usize,
}

impl FieldReader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.b.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

/// The 16-byte LTX trailer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Trailer {
    /// Database checksum after applying the file (0 with `NO_CHECKSUM`).
    pub post_apply_checksum: u64,
    /// CRC-64/GO-ISO file checksum with bit 63 set.
    pub file_checksum: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Header {
        Header {
            page_size: 1024,
            commit: 2,
            min_txid: 3,
            max_txid: 4,
            pre_apply_checksum: CHECKSUM_FLAG,
            wal_salt1: 5,
            wal_salt2: 6,
            wal_offset: 7,
            wal_size: 8,
            ..Header::default()
        }
    }

    #[test]
    fn page_sizes() {
        for ps in [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
            assert!(is_valid_page_size(ps), "{ps}");
        }
        for ps in [0, 1, 256, 511, 513, 1000, 4095, 131072, u32::MAX] {
            assert!(!is_valid_page_size(ps), "{ps}");
        }
    }

    #[test]
    fn validate_like_go() {
        assert_eq!(valid().validate(), Ok(()));
        let cases: Vec<(Header, HeaderError)> = vec![
            (
                Header {
                    flags: HeaderFlags::from_bits_retain(1 << 3),
                    ..valid()
                },
                HeaderError::UnsupportedFlags(8),
            ),
            (
                Header {
                    page_size: 1000,
                    ..valid()
                },
                HeaderError::InvalidPageSize(1000),
            ),
            (
                Header {
                    min_txid: 0,
                    ..valid()
                },
                HeaderError::MinTxidRequired,
            ),
            (
                Header {
                    max_txid: 0,
                    ..valid()
                },
                HeaderError::MaxTxidRequired,
            ),
            (
                Header {
                    min_txid: 3,
                    max_txid: 2,
                    ..valid()
                },
                HeaderError::TxidOutOfOrder { min: 3, max: 2 },
            ),
            (
                Header {
                    wal_offset: -1000,
                    ..valid()
                },
                HeaderError::NegativeWalOffset(-1000),
            ),
            (
                Header {
                    wal_size: -1000,
                    ..valid()
                },
                HeaderError::NegativeWalSize(-1000),
            ),
            (
                Header {
                    wal_offset: 0,
                    wal_size: 0,
                    ..valid()
                },
                HeaderError::WalOffsetRequiredForSalt,
            ),
            (
                Header {
                    wal_offset: 0,
                    wal_salt1: 0,
                    wal_salt2: 0,
                    ..valid()
                },
                HeaderError::WalOffsetRequiredForSize,
            ),
            (
                Header {
                    min_txid: 1,
                    pre_apply_checksum: 1,
                    ..valid()
                },
                HeaderError::SnapshotPreApplyChecksum(1),
            ),
            (
                Header {
                    flags: HeaderFlags::NO_CHECKSUM,
                    ..valid()
                },
                HeaderError::PreApplyChecksumNotAllowed(CHECKSUM_FLAG),
            ),
            (
                Header {
                    pre_apply_checksum: 0,
                    ..valid()
                },
                HeaderError::PreApplyChecksumRequired,
            ),
            (
                Header {
                    pre_apply_checksum: 1,
                    ..valid()
                },
                HeaderError::InvalidPreApplyChecksumFormat(1),
            ),
        ];
        for (h, want) in cases {
            assert_eq!(h.validate(), Err(want), "{h:?}");
        }
    }

    #[test]
    fn post_apply_rules() {
        let h = valid();
        assert_eq!(h.validate_post_apply_checksum(CHECKSUM_FLAG | 1), Ok(()));
        assert_eq!(
            h.validate_post_apply_checksum(0),
            Err(TrailerError::PostApplyChecksumRequired)
        );
        assert_eq!(
            h.validate_post_apply_checksum(1),
            Err(TrailerError::InvalidPostApplyChecksumFormat(1))
        );
        let zero = Header { commit: 0, ..h };
        assert_eq!(zero.validate_post_apply_checksum(CHECKSUM_FLAG), Ok(()));
        assert_eq!(
            zero.validate_post_apply_checksum(CHECKSUM_FLAG | 1),
            Err(TrailerError::EmptyDatabaseChecksum(CHECKSUM_FLAG | 1))
        );
        let nc = Header {
            flags: HeaderFlags::NO_CHECKSUM,
            pre_apply_checksum: 0,
            ..h
        };
        assert_eq!(nc.validate_post_apply_checksum(0), Ok(()));
        assert_eq!(
            nc.validate_post_apply_checksum(CHECKSUM_FLAG),
            Err(TrailerError::PostApplyChecksumNotAllowed(CHECKSUM_FLAG))
        );
    }

    #[test]
    fn bytes_round_trip() {
        let h = Header {
            timestamp: -5,
            node_id: 0x0102_0304_0506_0708,
            ..valid()
        };
        let b = h.to_bytes();
        assert_eq!(&b[..4], b"LTX1");
        assert_eq!(&b[8..12], &1024u32.to_be_bytes());
        assert_eq!(&b[72..80], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(b[80..].iter().all(|&x| x == 0));
        assert_eq!(Header::from_bytes(&b).ok(), Some(h));
    }
}
