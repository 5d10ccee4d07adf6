//! Encoder and decoder for the LTX file format, the transaction file format of
//! LiteFS and Litestream, as specified by the Go reference implementation
//! (`github.com/superfly/ltx`, format version 3, magic `LTX1`).
//!
//! # File layout
//!
//! All fixed-width integers are big-endian. An LTX file has four sections:
//! header, page block, page index and trailer.
//!
//! ## Header (100 bytes)
//!
//! | Offset | Size | Field              | Notes                                               |
//! | ------ | ---- | ------------------ | --------------------------------------------------- |
//! | 0      | 4    | magic              | `"LTX1"` (format versions 2 and 3 share it)         |
//! | 4      | 4    | flags              | only [`HeaderFlags::NO_CHECKSUM`] (`0x2`) is valid  |
//! | 8      | 4    | page size          | power of two, 512..=65536                           |
//! | 12     | 4    | commit             | database size in pages after applying the file      |
//! | 16     | 8    | min TXID           | non-zero                                            |
//! | 24     | 8    | max TXID           | non-zero, `>= min TXID`                             |
//! | 32     | 8    | timestamp          | milliseconds since the Unix epoch (signed)          |
//! | 40     | 8    | pre-apply checksum | database checksum before applying the file          |
//! | 48     | 8    | WAL offset         | signed, `>= 0`; zero for a rollback journal         |
//! | 56     | 8    | WAL size           | signed, `>= 0`; requires a non-zero WAL offset      |
//! | 64     | 4    | WAL salt 1         | non-zero salts require a non-zero WAL offset        |
//! | 68     | 4    | WAL salt 2         |                                                     |
//! | 72     | 8    | node ID            | zero if unset                                       |
//! | 80     | 20   | reserved           | written as zero; ignored when reading (as in Go)    |
//!
//! A file with `min TXID == 1` is a *snapshot*: it contains every page
//! `1..=commit` except the SQLite lock page and its pre-apply checksum is zero.
//! Otherwise the pre-apply checksum is non-zero with bit 63 set, unless the
//! `NO_CHECKSUM` flag is set, in which case both database checksums are zero.
//!
//! ## Page block
//!
//! One frame per page, in strictly ascending page number order:
//!
//! | Offset | Size | Field           | Notes                                      |
//! | ------ | ---- | --------------- | ------------------------------------------ |
//! | 0      | 4    | pgno            | non-zero, `<= commit`, never the lock page |
//! | 4      | 2    | page flags      | always `0x0001` (`PageHeaderFlagSize`)     |
//! | 6      | 4    | compressed size | length `N` of the payload                  |
//! | 10     | N    | payload         | one LZ4 *block* decompressing to page size |
//!
//! The block ends with a 6-byte all-zero page header (pgno 0, flags 0), with no
//! size field and no payload. Version-3 frames without the size flag (legacy
//! LZ4 *frame* payloads written by older Go encoders) are rejected with
//! [`DecodeError::UnsupportedPageFlags`].
//!
//! ## Page index
//!
//! Immediately after the zero page header: for every page, in ascending page
//! number order, three unsigned LEB128 varints (Go `binary.Uvarint`):
//! page number, absolute file offset of the frame, and frame size
//! (`10 + N`). A single zero varint terminates the entries. Then a `u64`
//! holding the byte length of the varint entries *including* the terminator
//! (excluding the length field itself).
//!
//! ## Trailer (16 bytes)
//!
//! | Offset | Size | Field               |
//! | ------ | ---- | ------------------- |
//! | 0      | 8    | post-apply checksum |
//! | 8      | 8    | file checksum       |
//!
//! ## File checksum
//!
//! CRC-64/GO-ISO (Go `crc64.ISO`, [`crc::CRC_64_GO_ISO`]) over, in order:
//! the 100 header bytes; for each frame its 10 header bytes (pgno, flags,
//! compressed size) followed by the *decompressed* page data; the 6-byte zero
//! page header; the page index bytes including terminator and length field;
//! the 8-byte post-apply checksum. The stored value has bit 63
//! ([`CHECKSUM_FLAG`]) set. Note that the compressed payload bytes themselves
//! are not hashed, only what they decompress to (plus their length).
//!
//! ## Database checksum
//!
//! The pre/post-apply checksums are database checksums: for every page except
//! the lock page, `page_checksum = CHECKSUM_FLAG | crc64(pgno as u32 BE ++ page
//! data)`; the database checksum is the XOR of all page checksums with bit 63
//! forced on. An empty database has checksum [`CHECKSUM_FLAG`] (a `commit == 0`
//! file must carry exactly that post-apply checksum when checksums are
//! tracked). See [`DatabaseChecksum`]. When the `NO_CHECKSUM` header flag is
//! set both database checksums must be zero; the file checksum is still
//! required.
//!
//! # Usage
//!
//! ```
//! use kvlite_ltx::{Encoder, Header, HeaderFlags, LtxFile};
//!
//! let header = Header {
//!     flags: HeaderFlags::NO_CHECKSUM,
//!     page_size: 4096,
//!     commit: 3,
//!     min_txid: 5,
//!     max_txid: 5,
//!     timestamp: 1_700_000_000_000,
//!     ..Header::default()
//! };
//! let mut enc = Encoder::new(header)?;
//! enc.add_page(1, &[1u8; 4096])?;
//! enc.add_page(3, &[3u8; 4096])?;
//! let bytes = enc.finish(0)?;
//!
//! let file = LtxFile::parse(&bytes)?;
//! assert_eq!(file.pgnos().collect::<Vec<_>>(), vec![1, 3]);
//! assert_eq!(file.page(3)?.as_deref(), Some(&[3u8; 4096][..]));
//! let pages = file.decode_all()?; // verifies the file checksum
//! assert_eq!(pages.get(1), Some(&[1u8; 4096][..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod checksum;
mod decoder;
mod encoder;
mod error;
mod header;
mod varint;

pub use checksum::{
    CHECKSUM_FLAG, DatabaseChecksum, PENDING_BYTE, crc64, database_checksum, lock_pgno,
    page_checksum,
};
pub use decoder::{DecodedPages, DecodedPagesIter, LtxFile, PageFrame};
pub use encoder::{Encoder, encode};
pub use error::{DecodeError, EncodeError, HeaderError, TrailerError};
pub use header::{
    FORMAT_VERSION, FRAME_HEADER_SIZE, HEADER_SIZE, Header, HeaderFlags, MAGIC, MAX_PAGE_SIZE,
    MIN_FILE_SIZE, MIN_PAGE_SIZE, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE, Trailer,
    is_valid_page_size,
};
