//! CRC-64/GO-ISO helpers and the LTX database checksum.

use crc_fast::CrcAlgorithm;

/// Bit 63, set on every non-zero LTX checksum so that it is never zero.
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// SQLite's `PENDING_BYTE` offset; the page containing it is the lock page.
pub const PENDING_BYTE: u64 = 0x4000_0000;

/// Incremental CRC-64/GO-ISO (Go `crc64.ISO`) state, computed with
/// carry-less multiplication where the CPU has it: checksums are verified
/// on every blob read, so their speed bounds a scan's.
#[derive(Clone)]
pub(crate) struct Digest(crc_fast::Digest);

impl Digest {
    pub fn new() -> Self {
        Digest(crc_fast::Digest::new(CrcAlgorithm::Crc64GoIso))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finalize(&self) -> u64 {
        self.0.finalize()
    }
}

/// Plain CRC-64/GO-ISO of `data` (no flag bit).
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64GoIso, data)
}

/// Page number of the SQLite lock page (the page holding [`PENDING_BYTE`]) for
/// `page_size`. The lock page is never stored in an LTX file and is excluded
/// from database checksums. Returns 0 (never a valid page number) for a zero
/// page size.
pub fn lock_pgno(page_size: u32) -> u32 {
    match PENDING_BYTE.checked_div(u64::from(page_size)) {
        // PENDING_BYTE / 1 + 1 still fits in u32.
        Some(q) => u32::try_from(q + 1).unwrap_or(u32::MAX),
        None => 0,
    }
}

/// Checksum of one database page: `CHECKSUM_FLAG | crc64(pgno BE ++ data)`.
pub fn page_checksum(pgno: u32, data: &[u8]) -> u64 {
    let mut digest = Digest::new();
    digest.update(&pgno.to_be_bytes());
    digest.update(data);
    CHECKSUM_FLAG | digest.finalize()
}

/// Rolling database checksum: the XOR of the [`page_checksum`] of every page
/// except the lock page, with bit 63 forced on.
///
/// XOR is its own inverse, so a page change is applied by removing the old
/// page checksum and adding the new one. The checksum of an empty database is
/// [`DatabaseChecksum::EMPTY`] (`CHECKSUM_FLAG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DatabaseChecksum(u64);

impl Default for DatabaseChecksum {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl DatabaseChecksum {
    /// Checksum of an empty database.
    pub const EMPTY: Self = Self(CHECKSUM_FLAG);

    /// Starts from the empty database.
    pub const fn new() -> Self {
        Self::EMPTY
    }

    /// Resumes from a previously computed checksum value (e.g. a pre-apply
    /// checksum read from an LTX header).
    pub const fn from_value(value: u64) -> Self {
        Self(value | CHECKSUM_FLAG)
    }

    /// The checksum value (always has bit 63 set).
    pub const fn value(self) -> u64 {
        self.0
    }

    /// XORs a page checksum in or out.
    pub fn toggle(&mut self, page_checksum: u64) {
        self.0 = CHECKSUM_FLAG | (self.0 ^ page_checksum);
    }

    /// Adds page `pgno` with contents `data`. The page size is `data.len()`;
    /// the lock page for that page size is ignored.
    pub fn add_page(&mut self, pgno: u32, data: &[u8]) {
        if !is_lock_page(pgno, data.len()) {
            self.toggle(page_checksum(pgno, data));
        }
    }

    /// Removes page `pgno` whose previous contents were `data` (same
    /// operation as [`add_page`](Self::add_page), named for readability).
    pub fn remove_page(&mut self, pgno: u32, data: &[u8]) {
        self.add_page(pgno, data);
    }

    /// Replaces the contents of page `pgno`: removes `old`, adds `new`.
    pub fn replace_page(&mut self, pgno: u32, old: &[u8], new: &[u8]) {
        self.remove_page(pgno, old);
        self.add_page(pgno, new);
    }
}

fn is_lock_page(pgno: u32, page_size: usize) -> bool {
    u32::try_from(page_size).is_ok_and(|ps| pgno == lock_pgno(ps))
}

/// Database checksum of a whole database image (`db.len()` must be a multiple
/// of `page_size`, which must be a valid page size). Returns `None` otherwise.
/// The empty image yields [`CHECKSUM_FLAG`] (Go's `ChecksumReader` returns 0
/// for an empty input; every non-empty database gives the same value in both).
pub fn database_checksum(page_size: u32, db: &[u8]) -> Option<u64> {
    if !crate::is_valid_page_size(page_size) {
        return None;
    }
    let ps = usize::try_from(page_size).ok()?;
    if !db.len().is_multiple_of(ps) {
        return None;
    }
    let mut sum = DatabaseChecksum::new();
    for (i, page) in db.chunks_exact(ps).enumerate() {
        let pgno = u32::try_from(i).ok()?.checked_add(1)?;
        sum.add_page(pgno, page);
    }
    Some(sum.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_go_iso_check_value() {
        // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO))
        assert_eq!(crc64(b"123456789"), 0xb909_56c7_75a4_1001);
    }

    /// The fast CRC against the table-driven one, on every length up to a
    /// few SIMD blocks and on updates split anywhere (the frames' pieces).
    #[test]
    fn fast_crc_matches_the_table_driven_one() {
        let reference = crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_GO_ISO);
        let data: Vec<u8> = (0..5_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for len in (0..300).chain([4_095, 4_096, 4_100, 5_000]) {
            let d = &data[..len];
            assert_eq!(crc64(d), reference.checksum(d), "length {len}");
            for split in [0, 1, 4, len / 3, len.saturating_sub(1)] {
                let split = split.min(len);
                let mut digest = Digest::new();
                digest.update(&d[..split]);
                digest.update(&d[split..]);
                assert_eq!(
                    digest.finalize(),
                    reference.checksum(d),
                    "{len} split at {split}"
                );
            }
        }
    }

    #[test]
    fn lock_pgno_values() {
        assert_eq!(lock_pgno(4096), 262_145);
        assert_eq!(lock_pgno(512), 2_097_153);
        assert_eq!(lock_pgno(65536), 16_385);
        assert_eq!(lock_pgno(0), 0);
    }

    fn db(pages: &[(u32, Vec<u8>)]) -> u64 {
        let mut c = DatabaseChecksum::new();
        for (pgno, data) in pages {
            c.add_page(*pgno, data);
        }
        c.value()
    }

    // Vectors from the Go reference tests (decoder_test.go, compactor_test.go,
    // ltx_test.go), where the decoder verifies snapshot post-apply checksums.
    #[test]
    fn go_reference_vectors() {
        assert_eq!(db(&[(1, vec![b'1'; 512])]), 0xeb1a_9992_3104_4ddd);
        assert_eq!(
            db(&[(1, vec![b'2'; 1024]), (2, vec![b'3'; 1024])]),
            0xe189_9b6d_587a_aaaa
        );
        assert_eq!(
            db(&[(1, vec![b'2'; 512]), (2, vec![b'3'; 512])]),
            0x8b87_423e_eeee_eeee
        );
        assert_eq!(
            db(&[
                (1, vec![0x81; 1024]),
                (2, vec![0x82; 1024]),
                (3, vec![0x83; 1024])
            ]),
            0x8a24_9272_ad9f_7dea
        );
        let mut image = vec![1u8; 512];
        image.extend_from_slice(&[2u8; 512]);
        image.extend_from_slice(&[3u8; 512]);
        assert_eq!(database_checksum(512, &image), Some(0xefff_ffff_ecd9_9000));
    }

    #[test]
    fn toggle_is_self_inverse() {
        let mut c = DatabaseChecksum::new();
        c.add_page(1, &[7u8; 512]);
        let one = c;
        c.add_page(2, &[8u8; 512]);
        c.remove_page(2, &[8u8; 512]);
        assert_eq!(c, one);
        c.replace_page(1, &[7u8; 512], &[9u8; 512]);
        assert_eq!(c.value(), db(&[(1, vec![9u8; 512])]));
    }

    #[test]
    fn database_checksum_rejects_bad_sizes() {
        assert_eq!(database_checksum(1000, &[0u8; 1000]), None);
        assert_eq!(database_checksum(512, &[0u8; 100]), None);
        assert_eq!(database_checksum(512, &[]), Some(CHECKSUM_FLAG));
    }

    /// Go decoder_test.go `DecodeDatabaseTo/WithLockPage`: 4096-byte pages of
    /// `'x'` up to lock page + 10, lock page (zeroed) excluded.
    #[test]
    fn go_reference_lock_page_vector() {
        let lock = lock_pgno(4096);
        let page = vec![b'x'; 4096];
        let zero = vec![0u8; 4096];
        let mut c = DatabaseChecksum::new();
        for pgno in 1..=lock + 10 {
            c.add_page(pgno, if pgno == lock { &zero } else { &page });
        }
        assert_eq!(c.value(), 0xc19b_668c_3766_62c7);
    }
}
