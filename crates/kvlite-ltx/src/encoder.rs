//! In-memory LTX encoder.

// All indexing below is into `self.buf` after `reserve_tail` guaranteed the
// range exists; page lengths are validated before use. No caller input can
// make an index go out of bounds.
#![allow(clippy::indexing_slicing)]

use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};

use crate::checksum::{DatabaseChecksum, Digest, lock_pgno};
use crate::error::EncodeError;
use crate::header::{FRAME_HEADER_SIZE, HEADER_SIZE, Header, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE};
use crate::varint;

/// Builds an LTX file in memory.
///
/// Pages must be added in strictly ascending page number order. Each page is
/// LZ4-compressed directly into the output buffer and hashed incrementally,
/// so encoding makes no per-page allocation. Reuse output buffers across
/// files with [`Encoder::with_buffer`].
///
/// ```
/// # use kvlite_ltx::{Encoder, Header, CHECKSUM_FLAG, DatabaseChecksum};
/// let header = Header { page_size: 512, commit: 1, min_txid: 1, max_txid: 1, ..Header::default() };
/// let page = [7u8; 512];
/// let mut sum = DatabaseChecksum::new();
/// sum.add_page(1, &page);
/// let mut enc = Encoder::new(header)?;
/// enc.add_page(1, &page)?;
/// let bytes = enc.finish(sum.value())?;
/// # Ok::<(), kvlite_ltx::EncodeError>(())
/// ```
pub struct Encoder {
    header: Header,
    page_size: usize,
    lock_pgno: u32,
    /// Output. `buf[..len]` is the encoded prefix; bytes past `len` are
    /// scratch space (kept initialized so it is never re-zeroed).
    buf: Vec<u8>,
    len: usize,
    /// Encoded index entries (without terminator), built as pages arrive.
    index: Vec<u8>,
    digest: Digest,
    table: CompressTable,
    max_compressed: usize,
    prev_pgno: u32,
    page_count: u64,
    /// Running database checksum, for snapshots that track checksums.
    db_checksum: Option<DatabaseChecksum>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("header", &self.header)
            .field("len", &self.len)
            .field("page_count", &self.page_count)
            .field("prev_pgno", &self.prev_pgno)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Starts a file with `header` (validated).
    pub fn new(header: Header) -> Result<Self, EncodeError> {
        Self::with_buffer(header, Vec::new())
    }

    /// Like [`new`](Self::new), writing into `buf` (its contents are
    /// discarded; its allocation is reused). Pass back the `Vec` returned by a
    /// previous [`finish`](Self::finish) to avoid reallocating.
    pub fn with_buffer(header: Header, mut buf: Vec<u8>) -> Result<Self, EncodeError> {
        header.validate()?;
        let page_size = header.page_size as usize;
        let max_compressed = get_maximum_output_size(page_size);
        let table = if page_size >= usize::from(u16::MAX) {
            CompressTable::large()
        } else {
            CompressTable::small()
        };
        if buf.len() < HEADER_SIZE {
            buf.resize(HEADER_SIZE, 0);
        }
        buf[..HEADER_SIZE].copy_from_slice(&header.to_bytes());
        let mut digest = Digest::new();
        digest.update(&buf[..HEADER_SIZE]);
        let db_checksum =
            (header.is_snapshot() && !header.no_checksum()).then(DatabaseChecksum::new);
        Ok(Self {
            header,
            page_size,
            lock_pgno: lock_pgno(header.page_size),
            buf,
            len: HEADER_SIZE,
            index: Vec::new(),
            digest,
            table,
            max_compressed,
            prev_pgno: 0,
            page_count: 0,
            db_checksum,
        })
    }

    /// The header being encoded.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of pages added so far.
    pub fn page_count(&self) -> u64 {
        self.page_count
    }

    /// Bytes encoded so far (header and frames).
    pub fn encoded_len(&self) -> usize {
        self.len
    }

    /// For snapshots that track checksums: the database checksum of the pages
    /// added so far, which is the required post-apply checksum once all pages
    /// are added. `None` for other files.
    pub fn computed_post_apply_checksum(&self) -> Option<u64> {
        self.db_checksum.map(DatabaseChecksum::value)
    }

    /// Makes `buf[len..len + n]` available as scratch space.
    fn reserve_tail(&mut self, n: usize) {
        let need = self.len + n;
        if self.buf.len() < need {
            let target = need.max(self.buf.len().saturating_mul(2));
            self.buf.resize(target, 0);
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.reserve_tail(bytes.len());
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends page `pgno`. Rejects page 0, pages beyond the commit size, the
    /// lock page, data whose length is not the page size, and page numbers
    /// not strictly greater than the previous one. Snapshots must add pages
    /// 1, 2, 3, ... (skipping the lock page).
    pub fn add_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), EncodeError> {
        if pgno == 0 {
            return Err(EncodeError::PageNumberZero);
        }
        if data.len() != self.page_size {
            return Err(EncodeError::PageSize {
                pgno,
                expected: self.page_size,
                actual: data.len(),
            });
        }
        if pgno > self.header.commit {
            return Err(EncodeError::PageBeyondCommit {
                pgno,
                commit: self.header.commit,
            });
        }
        if pgno == self.lock_pgno {
            return Err(EncodeError::LockPage { pgno });
        }
        if self.header.is_snapshot() {
            let mut expected = self.prev_pgno.saturating_add(1);
            if expected == self.lock_pgno {
                expected = expected.saturating_add(1);
            }
            if pgno != expected {
                return Err(EncodeError::SnapshotNonSequential { expected, pgno });
            }
        } else if pgno <= self.prev_pgno {
            return Err(EncodeError::PageOutOfOrder {
                prev: self.prev_pgno,
                pgno,
            });
        }

        let offset = self.len;
        self.reserve_tail(FRAME_HEADER_SIZE + self.max_compressed);
        let frame = &mut self.buf[offset..offset + FRAME_HEADER_SIZE + self.max_compressed];
        let (head, payload) = frame.split_at_mut(FRAME_HEADER_SIZE);
        let n = compress_into_with_table(data, payload, &mut self.table)?;
        head[..4].copy_from_slice(&pgno.to_be_bytes());
        head[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        // n <= max_compressed(65536) < u32::MAX.
        head[6..10].copy_from_slice(&(n as u32).to_be_bytes());
        self.digest.update(head);
        self.digest.update(data);
        let frame_size = FRAME_HEADER_SIZE + n;
        self.len += frame_size;

        varint::put(&mut self.index, u64::from(pgno));
        varint::put(&mut self.index, offset as u64);
        varint::put(&mut self.index, frame_size as u64);

        if let Some(sum) = &mut self.db_checksum {
            sum.add_page(pgno, data);
        }
        self.prev_pgno = pgno;
        self.page_count += 1;
        Ok(())
    }

    /// Writes the page block terminator, index and trailer and returns the
    /// file bytes.
    ///
    /// `post_apply_checksum` must be 0 with `NO_CHECKSUM`, otherwise have bit
    /// 63 set, be exactly [`CHECKSUM_FLAG`](crate::CHECKSUM_FLAG) when
    /// `commit == 0`, and for snapshots equal the checksum of the pages
    /// added (see [`computed_post_apply_checksum`](Self::computed_post_apply_checksum)).
    /// A snapshot must contain every page up to the commit size.
    pub fn finish(mut self, post_apply_checksum: u64) -> Result<Vec<u8>, EncodeError> {
        self.header
            .validate_post_apply_checksum(post_apply_checksum)?;
        if self.header.is_snapshot() {
            let commit = u64::from(self.header.commit);
            let expected = commit - u64::from(self.lock_pgno <= self.header.commit);
            if self.page_count != expected {
                return Err(EncodeError::SnapshotIncomplete {
                    expected,
                    actual: self.page_count,
                });
            }
        }
        if let Some(sum) = self.db_checksum
            && sum.value() != post_apply_checksum
        {
            return Err(EncodeError::DatabaseChecksumMismatch {
                given: post_apply_checksum,
                computed: sum.value(),
            });
        }

        let tail_start = self.len;
        self.push(&[0u8; PAGE_HEADER_SIZE]);
        self.index.push(0); // terminator
        let index = std::mem::take(&mut self.index);
        self.push(&index);
        self.push(&(index.len() as u64).to_be_bytes());
        self.push(&post_apply_checksum.to_be_bytes());
        self.digest.update(&self.buf[tail_start..self.len]);
        let file_checksum = crate::CHECKSUM_FLAG | self.digest.clone().finalize();
        self.push(&file_checksum.to_be_bytes());

        let mut out = self.buf;
        out.truncate(self.len);
        Ok(out)
    }
}

/// Encodes a whole file: `pages` yields `(pgno, data)` in strictly ascending
/// order. See [`Encoder`] for the rules.
pub fn encode<'p, I>(
    header: &Header,
    pages: I,
    post_apply_checksum: u64,
) -> Result<Vec<u8>, EncodeError>
where
    I: IntoIterator<Item = (u32, &'p [u8])>,
{
    let mut enc = Encoder::new(*header)?;
    for (pgno, data) in pages {
        enc.add_page(pgno, data)?;
    }
    enc.finish(post_apply_checksum)
}
