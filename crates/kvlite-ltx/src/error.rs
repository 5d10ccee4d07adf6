//! Error types.

use lz4_flex::block::{CompressError, DecompressError};
use thiserror::Error;

/// A header field combination the format does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Flag bits other than `NO_CHECKSUM` are set.
    #[error("unsupported header flags: 0x{0:08x}")]
    UnsupportedFlags(u32),
    /// Page size is not a power of two in 512..=65536.
    #[error("invalid page size: {0}")]
    InvalidPageSize(u32),
    /// Minimum TXID is zero.
    #[error("minimum transaction id required")]
    MinTxidRequired,
    /// Maximum TXID is zero.
    #[error("maximum transaction id required")]
    MaxTxidRequired,
    /// Minimum TXID is greater than maximum TXID.
    #[error("transaction ids out of order: ({min},{max})")]
    TxidOutOfOrder {
        /// Minimum TXID.
        min: u64,
        /// Maximum TXID.
        max: u64,
    },
    /// WAL offset is negative.
    #[error("wal offset cannot be negative: {0}")]
    NegativeWalOffset(i64),
    /// WAL size is negative.
    #[error("wal size cannot be negative: {0}")]
    NegativeWalSize(i64),
    /// WAL salts are set but the WAL offset is zero.
    #[error("wal offset required if salt exists")]
    WalOffsetRequiredForSalt,
    /// WAL size is set but the WAL offset is zero.
    #[error("wal offset required if wal size exists")]
    WalOffsetRequiredForSize,
    /// A snapshot (min TXID 1) carries a non-zero pre-apply checksum.
    #[error("pre-apply checksum must be zero on snapshots: {0:016x}")]
    SnapshotPreApplyChecksum(u64),
    /// `NO_CHECKSUM` is set but the pre-apply checksum is non-zero.
    #[error("pre-apply checksum not allowed with the no-checksum flag: {0:016x}")]
    PreApplyChecksumNotAllowed(u64),
    /// A non-snapshot file tracking checksums has a zero pre-apply checksum.
    #[error("pre-apply checksum required on non-snapshot files")]
    PreApplyChecksumRequired,
    /// Pre-apply checksum lacks bit 63.
    #[error("invalid pre-apply checksum format: {0:016x}")]
    InvalidPreApplyChecksumFormat(u64),
}

/// A trailer checksum value the format does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TrailerError {
    /// `NO_CHECKSUM` is set but the post-apply checksum is non-zero.
    #[error("post-apply checksum not allowed with the no-checksum flag: {0:016x}")]
    PostApplyChecksumNotAllowed(u64),
    /// Checksums are tracked but the post-apply checksum is zero.
    #[error("post-apply checksum required")]
    PostApplyChecksumRequired,
    /// Post-apply checksum lacks bit 63.
    #[error("invalid post-apply checksum format: {0:016x}")]
    InvalidPostApplyChecksumFormat(u64),
    /// A `commit == 0` file tracking checksums must carry the empty-database
    /// checksum (`CHECKSUM_FLAG`).
    #[error("post-apply checksum must be the empty database checksum for commit 0: {0:016x}")]
    EmptyDatabaseChecksum(u64),
    /// The file checksum is zero.
    #[error("file checksum required")]
    FileChecksumRequired,
    /// The file checksum lacks bit 63.
    #[error("invalid file checksum format: {0:016x}")]
    InvalidFileChecksumFormat(u64),
}

/// Errors from [`LtxFile`](crate::LtxFile) parsing and page decoding.
///
/// Offsets are absolute byte offsets into the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is shorter than the smallest possible LTX file.
    #[error("truncated LTX file: {len} bytes, need at least {min}")]
    Truncated {
        /// Input length.
        len: usize,
        /// Minimum length of a valid file.
        min: usize,
    },
    /// The first four bytes are not `LTX1`.
    #[error("bad magic: {0:02x?}")]
    BadMagic([u8; 4]),
    /// The header is invalid (flags, page size, TXIDs, WAL fields, checksums).
    #[error("invalid header: {0}")]
    InvalidHeader(#[from] HeaderError),
    /// The trailer checksums are malformed.
    #[error("invalid trailer: {0}")]
    InvalidTrailer(#[from] TrailerError),
    /// The page index is malformed.
    #[error("bad page index: {reason}")]
    BadIndex {
        /// What is wrong.
        reason: &'static str,
    },
    /// The page index does not describe the frames actually present.
    #[error("page index does not match page frames at offset {offset} (pgno {pgno}): {reason}")]
    IndexFrameMismatch {
        /// Page number of the index entry concerned (0 if none).
        pgno: u32,
        /// Offset in the file where the mismatch was found.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The 6-byte zero page header that ends the page block is missing.
    #[error("missing page block terminator at offset {offset}")]
    MissingPageBlockTerminator {
        /// Where the terminator should be.
        offset: usize,
    },
    /// A frame's page header flags are not exactly `PAGE_FLAG_SIZE` (this
    /// includes legacy LZ4-frame encoded pages, flags `0`).
    #[error("unsupported page header flags 0x{flags:04x} for pgno {pgno}")]
    UnsupportedPageFlags {
        /// Page number.
        pgno: u32,
        /// Flags found.
        flags: u16,
    },
    /// A page number exceeds the header's commit size.
    #[error("page {pgno} beyond commit size {commit}")]
    PageBeyondCommit {
        /// Page number.
        pgno: u32,
        /// Commit size in pages.
        commit: u32,
    },
    /// The file contains the SQLite lock page.
    #[error("file contains the lock page {pgno}")]
    LockPage {
        /// The lock page number.
        pgno: u32,
    },
    /// A snapshot does not contain every page `1..=commit` (except the lock
    /// page).
    #[error("snapshot has {actual} pages, expected {expected}")]
    SnapshotIncomplete {
        /// Pages expected.
        expected: u64,
        /// Pages present.
        actual: u64,
    },
    /// A page payload is not valid LZ4 block data.
    #[error("corrupt LZ4 data for page {pgno}: {source}")]
    Lz4 {
        /// Page number.
        pgno: u32,
        /// Decoder error.
        #[source]
        source: DecompressError,
    },
    /// A page payload decompresses to the wrong number of bytes.
    #[error("page {pgno} decompressed to {actual:?} bytes, expected {expected} (None: more)")]
    DecompressedSize {
        /// Page number.
        pgno: u32,
        /// The page size.
        expected: usize,
        /// Bytes produced, or `None` when the payload produces more than the
        /// page size.
        actual: Option<usize>,
    },
    /// The file checksum in the trailer does not match the contents.
    #[error("file checksum mismatch: stored {expected:016x}, computed {actual:016x}")]
    ChecksumMismatch {
        /// Checksum stored in the trailer.
        expected: u64,
        /// Checksum computed from the contents.
        actual: u64,
    },
    /// A snapshot's post-apply checksum does not match its pages.
    #[error(
        "snapshot post-apply checksum mismatch: stored {expected:016x}, computed {actual:016x}"
    )]
    DatabaseChecksumMismatch {
        /// Post-apply checksum stored in the trailer.
        expected: u64,
        /// Checksum computed from the pages.
        actual: u64,
    },
    /// A caller-supplied page buffer has the wrong length.
    #[error("page buffer is {actual} bytes, page size is {expected}")]
    BufferSize {
        /// The page size.
        expected: usize,
        /// Buffer length given.
        actual: usize,
    },
}

/// Errors from [`Encoder`](crate::Encoder).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The header is invalid.
    #[error("invalid header: {0}")]
    InvalidHeader(#[from] HeaderError),
    /// The post-apply checksum is not allowed for this header.
    #[error("invalid trailer: {0}")]
    InvalidTrailer(#[from] TrailerError),
    /// Page number zero.
    #[error("page number required")]
    PageNumberZero,
    /// Page data length differs from the header page size.
    #[error("page {pgno} is {actual} bytes, page size is {expected}")]
    PageSize {
        /// Page number.
        pgno: u32,
        /// The page size.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// Page number exceeds the commit size.
    #[error("page number {pgno} out-of-bounds for commit size {commit}")]
    PageBeyondCommit {
        /// Page number.
        pgno: u32,
        /// Commit size in pages.
        commit: u32,
    },
    /// The SQLite lock page cannot be encoded.
    #[error("cannot encode lock page: pgno={pgno}")]
    LockPage {
        /// The lock page number.
        pgno: u32,
    },
    /// Pages must be given in strictly ascending order.
    #[error("out-of-order page numbers: {prev},{pgno}")]
    PageOutOfOrder {
        /// Previous page number.
        prev: u32,
        /// Page number given.
        pgno: u32,
    },
    /// Snapshots must contain pages 1, 2, ... in sequence (skipping the lock
    /// page).
    #[error("nonsequential page numbers in snapshot: expected {expected}, got {pgno}")]
    SnapshotNonSequential {
        /// The page number required next.
        expected: u32,
        /// Page number given.
        pgno: u32,
    },
    /// A snapshot was finished before all pages up to the commit size were
    /// added.
    #[error("snapshot has {actual} pages, expected {expected}")]
    SnapshotIncomplete {
        /// Pages expected.
        expected: u64,
        /// Pages added.
        actual: u64,
    },
    /// A snapshot's post-apply checksum does not match the pages added.
    #[error("snapshot post-apply checksum {given:016x} does not match pages ({computed:016x})")]
    DatabaseChecksumMismatch {
        /// Checksum passed to `finish`.
        given: u64,
        /// Checksum computed from the pages.
        computed: u64,
    },
    /// LZ4 compression failed (cannot happen with a correctly sized buffer).
    #[error("lz4 compression failed: {0}")]
    Compress(#[from] CompressError),
}
