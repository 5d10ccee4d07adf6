//! Zero-copy LTX decoder with random page access.

use lz4_flex::block::{DecompressError, decompress_into};

use crate::checksum::{CHECKSUM_FLAG, DatabaseChecksum, Digest, lock_pgno};
use crate::error::{DecodeError, TrailerError};
use crate::header::{
    FRAME_HEADER_SIZE, HEADER_SIZE, Header, MIN_FILE_SIZE, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE,
    TRAILER_SIZE, Trailer,
};
use crate::varint::{self, VarintError};

/// Location of one page frame in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageFrame {
    /// Page number.
    pub pgno: u32,
    /// Absolute offset of the frame (its page header).
    pub offset: usize,
    /// Frame size: 10-byte frame header plus compressed payload.
    pub size: usize,
}

impl PageFrame {
    fn payload<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        let start = self.offset.checked_add(FRAME_HEADER_SIZE)?;
        let end = self.offset.checked_add(self.size)?;
        data.get(start..end)
    }

    fn head<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        data.get(self.offset..self.offset.checked_add(FRAME_HEADER_SIZE)?)
    }
}

/// A parsed, structurally validated LTX file borrowing its bytes.
///
/// [`parse`](Self::parse) validates the header, trailer, page index and
/// every frame header against the index without decompressing anything.
/// Page payloads are decompressed on demand:
///
/// * [`page`](Self::page) / [`read_page_into`](Self::read_page_into)
///   decompress a single page. They check that the payload is valid LZ4 and
///   decompresses to exactly one page, but cannot check the file checksum
///   (which covers all pages): call [`verify_checksum`](Self::verify_checksum)
///   once, or use [`parse_verified`](Self::parse_verified), when the bytes are
///   not already trusted.
/// * [`decode_all`](Self::decode_all) decompresses every page and verifies
///   the file checksum before returning anything.
#[derive(Debug, Clone)]
pub struct LtxFile<'a> {
    data: &'a [u8],
    header: Header,
    trailer: Trailer,
    frames: Vec<PageFrame>,
    /// Offset of the zero page header ending the page block.
    block_end: usize,
}

fn be_u16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(b.try_into().ok()?))
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    let b = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn bad_index(reason: &'static str) -> DecodeError {
    DecodeError::BadIndex { reason }
}

fn varint_err(e: VarintError) -> DecodeError {
    match e {
        VarintError::Truncated => bad_index("truncated varint or missing terminator"),
        VarintError::Overflow => bad_index("varint overflows u64"),
    }
}

impl<'a> LtxFile<'a> {
    /// Parses and structurally validates `data`. Does not decompress pages or
    /// verify the file checksum.
    pub fn parse(data: &'a [u8]) -> Result<Self, DecodeError> {
        let header = Header::from_bytes(data)?;
        let len = data.len();
        if len < MIN_FILE_SIZE {
            return Err(DecodeError::Truncated {
                len,
                min: MIN_FILE_SIZE,
            });
        }

        // Trailer.
        let trailer_start = len - TRAILER_SIZE;
        let trailer = Trailer {
            post_apply_checksum: be_u64(data, trailer_start).unwrap_or_default(),
            file_checksum: be_u64(data, trailer_start + 8).unwrap_or_default(),
        };
        header.validate_post_apply_checksum(trailer.post_apply_checksum)?;
        if trailer.file_checksum == 0 {
            return Err(TrailerError::FileChecksumRequired.into());
        }
        if trailer.file_checksum & CHECKSUM_FLAG == 0 {
            return Err(TrailerError::InvalidFileChecksumFormat(trailer.file_checksum).into());
        }

        // Index, located from the end. `len >= MIN_FILE_SIZE` keeps these
        // subtractions in range.
        let size_at = trailer_start - 8;
        let index_len = be_u64(data, size_at).unwrap_or_default();
        let max_index_len = size_at - HEADER_SIZE - PAGE_HEADER_SIZE;
        let index_len = usize::try_from(index_len)
            .ok()
            .filter(|n| (1..=max_index_len).contains(n))
            .ok_or_else(|| bad_index("index size field out of range"))?;
        let index_start = size_at - index_len;
        let block_end = index_start - PAGE_HEADER_SIZE;
        let index = data.get(index_start..size_at).unwrap_or_default();

        // Every frame takes at least FRAME_HEADER_SIZE bytes of the block,
        // which bounds the entry count (and this allocation) by the input.
        let max_frames = (block_end - HEADER_SIZE) / FRAME_HEADER_SIZE;
        let mut frames: Vec<PageFrame> = Vec::with_capacity((index_len / 3).min(max_frames));
        let mut pos = 0usize;
        loop {
            let pgno = varint::read(index, &mut pos).map_err(varint_err)?;
            if pgno == 0 {
                break;
            }
            if frames.len() == max_frames {
                return Err(bad_index("more index entries than the page block can hold"));
            }
            let offset = varint::read(index, &mut pos).map_err(varint_err)?;
            let size = varint::read(index, &mut pos).map_err(varint_err)?;
            let pgno = u32::try_from(pgno).map_err(|_| bad_index("page number exceeds u32"))?;
            if frames.last().is_some_and(|prev| pgno <= prev.pgno) {
                return Err(bad_index("page numbers not strictly ascending"));
            }
            let offset =
                usize::try_from(offset).map_err(|_| bad_index("page offset out of range"))?;
            let size = usize::try_from(size).map_err(|_| bad_index("frame size out of range"))?;
            frames.push(PageFrame { pgno, offset, size });
        }
        if pos != index.len() {
            return Err(bad_index("trailing bytes after index terminator"));
        }

        // Walk the frames and check they are exactly what the index says.
        let mut at = HEADER_SIZE;
        for f in &frames {
            let mismatch = |offset, reason| DecodeError::IndexFrameMismatch {
                pgno: f.pgno,
                offset,
                reason,
            };
            if f.offset != at {
                return Err(mismatch(at, "index offset does not match frame position"));
            }
            if at
                .checked_add(FRAME_HEADER_SIZE)
                .is_none_or(|head_end| head_end > block_end)
            {
                return Err(mismatch(at, "frame header extends past page block"));
            }
            let fpgno = be_u32(data, at).unwrap_or_default();
            let flags = be_u16(data, at + 4).unwrap_or_default();
            let csize = be_u32(data, at + 6).unwrap_or_default();
            if fpgno != f.pgno {
                return Err(mismatch(at, "frame page number differs from index"));
            }
            if flags != PAGE_FLAG_SIZE {
                return Err(DecodeError::UnsupportedPageFlags { pgno: fpgno, flags });
            }
            let frame_size = FRAME_HEADER_SIZE
                .checked_add(csize as usize)
                .ok_or_else(|| mismatch(at, "frame size overflows"))?;
            if frame_size != f.size {
                return Err(mismatch(at, "frame size differs from index"));
            }
            at = at
                .checked_add(frame_size)
                .filter(|&e| e <= block_end)
                .ok_or_else(|| mismatch(at, "frame extends past page block"))?;
        }
        if at != block_end {
            return Err(DecodeError::IndexFrameMismatch {
                pgno: 0,
                offset: at,
                reason: "page block contains data not covered by the index",
            });
        }
        if data.get(block_end..index_start) != Some(&[0u8; PAGE_HEADER_SIZE][..]) {
            return Err(DecodeError::MissingPageBlockTerminator { offset: block_end });
        }

        // Page numbers against the header.
        let lock = lock_pgno(header.page_size);
        for f in &frames {
            if f.pgno > header.commit {
                return Err(DecodeError::PageBeyondCommit {
                    pgno: f.pgno,
                    commit: header.commit,
                });
            }
            if f.pgno == lock {
                return Err(DecodeError::LockPage { pgno: f.pgno });
            }
        }
        if header.is_snapshot() {
            // Strictly ascending, within 1..=commit and never the lock page:
            // complete iff the count matches.
            let commit = u64::from(header.commit);
            let expected = commit - u64::from(lock <= header.commit);
            let actual = frames.len() as u64;
            if actual != expected {
                return Err(DecodeError::SnapshotIncomplete { expected, actual });
            }
        }

        Ok(Self {
            data,
            header,
            trailer,
            frames,
            block_end,
        })
    }

    /// [`parse`](Self::parse) followed by [`verify_checksum`](Self::verify_checksum).
    pub fn parse_verified(data: &'a [u8]) -> Result<Self, DecodeError> {
        let file = Self::parse(data)?;
        file.verify_checksum()?;
        Ok(file)
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The trailer.
    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// Post-apply database checksum from the trailer.
    pub fn post_apply_checksum(&self) -> u64 {
        self.trailer.post_apply_checksum
    }

    /// File checksum from the trailer.
    pub fn file_checksum(&self) -> u64 {
        self.trailer.file_checksum
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> usize {
        self.header.page_size as usize
    }

    /// Number of pages in the file.
    pub fn page_count(&self) -> usize {
        self.frames.len()
    }

    /// Page numbers in ascending order.
    pub fn pgnos(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.frames.iter().map(|f| f.pgno)
    }

    /// Frame locations in ascending page number order.
    pub fn frames(&self) -> &[PageFrame] {
        &self.frames
    }

    /// True if the file contains page `pgno`.
    pub fn contains(&self, pgno: u32) -> bool {
        self.find(pgno).is_some()
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    fn find(&self, pgno: u32) -> Option<&PageFrame> {
        let i = self.frames.binary_search_by_key(&pgno, |f| f.pgno).ok()?;
        self.frames.get(i)
    }

    fn decompress(&self, frame: &PageFrame, out: &mut [u8]) -> Result<(), DecodeError> {
        let pgno = frame.pgno;
        // Bounds were validated by `parse`.
        let payload = frame
            .payload(self.data)
            .ok_or(DecodeError::IndexFrameMismatch {
                pgno,
                offset: frame.offset,
                reason: "frame out of bounds",
            })?;
        match decompress_into(payload, out) {
            Ok(n) if n == out.len() => Ok(()),
            Ok(n) => Err(DecodeError::DecompressedSize {
                pgno,
                expected: out.len(),
                actual: Some(n),
            }),
            Err(DecompressError::OutputTooSmall { .. }) => Err(DecodeError::DecompressedSize {
                pgno,
                expected: out.len(),
                actual: None,
            }),
            Err(source) => Err(DecodeError::Lz4 { pgno, source }),
        }
    }

    /// Decompresses page `pgno` into `buf` (which must be exactly one page
    /// long). Returns `Ok(false)` if the file does not contain the page.
    /// Does not verify the file checksum.
    pub fn read_page_into(&self, pgno: u32, buf: &mut [u8]) -> Result<bool, DecodeError> {
        if buf.len() != self.page_size() {
            return Err(DecodeError::BufferSize {
                expected: self.page_size(),
                actual: buf.len(),
            });
        }
        match self.find(pgno) {
            Some(frame) => {
                self.decompress(frame, buf)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Decompresses page `pgno`, or returns `None` if the file does not
    /// contain it. Does not verify the file checksum.
    pub fn page(&self, pgno: u32) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.find(pgno) {
            Some(frame) => {
                let mut buf = vec![0u8; self.page_size()];
                self.decompress(frame, &mut buf)?;
                Ok(Some(buf))
            }
            None => Ok(None),
        }
    }

    /// Decompresses every page in order into `dest` while computing the file
    /// checksum (and the database checksum for snapshots); returns an error
    /// if either does not match.
    fn scan(&self, dest: &mut Dest<'_>) -> Result<(), DecodeError> {
        let page_size = self.page_size();
        let mut digest = Digest::new();
        digest.update(self.data.get(..HEADER_SIZE).unwrap_or_default());
        let mut db =
            (self.header.is_snapshot() && !self.header.no_checksum()).then(DatabaseChecksum::new);
        for (i, frame) in self.frames.iter().enumerate() {
            let page = dest.slot(i, page_size, self.frames.len())?;
            self.decompress(frame, page)?;
            digest.update(frame.head(self.data).unwrap_or_default());
            digest.update(page);
            if let Some(db) = &mut db {
                db.add_page(frame.pgno, page);
            }
        }
        // Zero page header, index, index length and post-apply checksum are
        // contiguous.
        let tail_end = self.data.len().saturating_sub(8);
        digest.update(self.data.get(self.block_end..tail_end).unwrap_or_default());
        let actual = CHECKSUM_FLAG | digest.finalize();
        if actual != self.trailer.file_checksum {
            return Err(DecodeError::ChecksumMismatch {
                expected: self.trailer.file_checksum,
                actual,
            });
        }
        if let Some(db) = db
            && db.value() != self.trailer.post_apply_checksum
        {
            return Err(DecodeError::DatabaseChecksumMismatch {
                expected: self.trailer.post_apply_checksum,
                actual: db.value(),
            });
        }
        Ok(())
    }

    /// Decompresses every page and verifies the file checksum, and for
    /// snapshots tracking checksums also the post-apply database checksum
    /// (as the Go reference decoder does). Uses a single page buffer.
    pub fn verify_checksum(&self) -> Result<(), DecodeError> {
        let mut page = vec![0u8; self.page_size()];
        self.scan(&mut Dest::Single(&mut page))
    }

    /// Decompresses all pages and verifies checksums (see
    /// [`verify_checksum`](Self::verify_checksum)). Nothing is returned
    /// unless verification succeeds, so a corrupt file never yields a wrong
    /// page.
    pub fn decode_all(&self) -> Result<DecodedPages, DecodeError> {
        self.decode_all_with_buffer(Vec::new())
    }

    /// Like [`decode_all`](Self::decode_all), each page in an allocation of
    /// its own (in the order of [`pgnos`](Self::pgnos)): pages that outlive
    /// the file one by one (a page cache) then hold only their own memory,
    /// and are handed on without a copy.
    pub fn decode_each(&self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let mut pages = Vec::new();
        self.scan(&mut Dest::Each(&mut pages))?;
        Ok(pages)
    }

    /// Like [`decode_all`](Self::decode_all), reusing the allocation of
    /// `buf` (e.g. from [`DecodedPages::into_data`]); its contents are
    /// overwritten. A buffer that is already large enough is not re-zeroed.
    pub fn decode_all_with_buffer(&self, mut buf: Vec<u8>) -> Result<DecodedPages, DecodeError> {
        let page_size = self.page_size();
        let total = self.frames.len().saturating_mul(page_size);
        // The buffer grows geometrically as pages decode successfully, so a
        // hostile file declaring many tiny frames cannot trigger a huge
        // allocation up front.
        buf.truncate(total);
        self.scan(&mut Dest::All(&mut buf))?;
        buf.truncate(total);
        Ok(DecodedPages {
            page_size,
            max_txid: self.header().max_txid,
            pgnos: self.frames.iter().map(|f| f.pgno).collect(),
            data: buf,
        })
    }
}

/// Where [`LtxFile::scan`] decompresses pages to.
enum Dest<'b> {
    /// One reused page buffer.
    Single(&'b mut [u8]),
    /// Page `i` at `i * page_size` of a growable buffer.
    All(&'b mut Vec<u8>),
    /// Page `i` in a buffer of its own, the `i`th.
    Each(&'b mut Vec<Vec<u8>>),
}

impl Dest<'_> {
    fn slot(&mut self, i: usize, page_size: usize, count: usize) -> Result<&mut [u8], DecodeError> {
        match self {
            Dest::Single(page) => Ok(&mut **page),
            Dest::All(buf) => {
                let start = i.saturating_mul(page_size);
                let end = start.saturating_add(page_size);
                if buf.len() < end {
                    let total = count.saturating_mul(page_size);
                    let grow = end.max(buf.len().saturating_mul(2)).max(1 << 20);
                    buf.resize(grow.min(total).max(end), 0);
                }
                let actual = buf.len();
                buf.get_mut(start..end).ok_or(DecodeError::BufferSize {
                    expected: end,
                    actual,
                })
            }
            Dest::Each(pages) => {
                if pages.len() <= i {
                    pages.resize_with(i + 1, || vec![0; page_size]);
                }
                let actual = pages.len();
                pages
                    .get_mut(i)
                    .map(Vec::as_mut_slice)
                    .ok_or(DecodeError::BufferSize {
                        expected: i + 1,
                        actual,
                    })
            }
        }
    }
}

/// All pages of a verified LTX file, stored contiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPages {
    page_size: usize,
    max_txid: u64,
    pgnos: Vec<u32>,
    data: Vec<u8>,
}

impl DecodedPages {
    /// The newest transaction the file holds (its header's `max_txid`).
    pub fn max_txid(&self) -> u64 {
        self.max_txid
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.pgnos.len()
    }

    /// True if there are no pages.
    pub fn is_empty(&self) -> bool {
        self.pgnos.is_empty()
    }

    /// Page numbers in ascending order.
    pub fn pgnos(&self) -> &[u32] {
        &self.pgnos
    }

    /// Data of page `pgno`, if present.
    pub fn get(&self, pgno: u32) -> Option<&[u8]> {
        let i = self.pgnos.binary_search(&pgno).ok()?;
        self.page_at(i)
    }

    fn page_at(&self, i: usize) -> Option<&[u8]> {
        let start = i.checked_mul(self.page_size)?;
        self.data.get(start..start.checked_add(self.page_size)?)
    }

    /// Iterates `(pgno, data)` in ascending page number order.
    pub fn iter(&self) -> DecodedPagesIter<'_> {
        DecodedPagesIter {
            pgnos: self.pgnos.iter(),
            chunks: self.data.chunks_exact(self.page_size.max(1)),
        }
    }

    /// The concatenated page data, to reuse its allocation.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

/// Iterator over [`DecodedPages`].
#[derive(Debug, Clone)]
pub struct DecodedPagesIter<'p> {
    pgnos: std::slice::Iter<'p, u32>,
    chunks: std::slice::ChunksExact<'p, u8>,
}

impl<'p> Iterator for DecodedPagesIter<'p> {
    type Item = (u32, &'p [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        Some((*self.pgnos.next()?, self.chunks.next()?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.pgnos.size_hint()
    }
}

impl ExactSizeIterator for DecodedPagesIter<'_> {}

impl<'p> IntoIterator for &'p DecodedPages {
    type Item = (u32, &'p [u8]);
    type IntoIter = DecodedPagesIter<'p>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
