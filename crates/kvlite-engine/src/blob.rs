//! Deltas and shards: LTX files stored as chunked KV values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use kvlite_kv::{KvRead, WriteTxn, chunked};
use kvlite_ltx::{Encoder, Header, HeaderFlags, LtxFile};

use kvlite_api::{CorruptionKind, Error, PageData};

use crate::PAGE_SIZE;
use crate::error::{Fail, Result};
use crate::keys::DbKeys;

/// Where the newest copy of a page lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobRef {
    Delta {
        txid: u64,
        part: u32,
    },
    Shard(u32),
    /// The stored history base of a shard, as of commit `as_of`.
    Base {
        shard: u32,
        as_of: u64,
    },
}

impl BlobRef {
    pub fn prefix(&self, keys: &DbKeys) -> Vec<u8> {
        match *self {
            BlobRef::Delta { txid, part } => keys.delta_part(txid, part),
            BlobRef::Shard(shard) => keys.shard(shard),
            BlobRef::Base { shard, .. } => keys.base_blob(shard),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Encode pages (strictly ascending) as one LTX file for transaction `txid`
/// of a database that has `commit_size` pages afterwards. Database checksums
/// are not tracked (the NO_CHECKSUM flag); the file checksum always is.
pub fn encode<'p>(
    txid: u64,
    commit_size: u32,
    pages: impl IntoIterator<Item = (u32, &'p [u8])>,
) -> Result<Vec<u8>> {
    let header = Header {
        flags: HeaderFlags::NO_CHECKSUM,
        page_size: PAGE_SIZE as u32,
        commit: commit_size,
        min_txid: txid,
        max_txid: txid,
        timestamp: now_ms() as i64,
        ..Header::default()
    };
    // The engine checks every page before encoding it: the encoder refusing
    // one is a bug, not bad input.
    let bad = |e: kvlite_ltx::EncodeError| Fail::Api(Error::Internal(format!("LTX encoding: {e}")));
    let mut encoder = Encoder::new(header).map_err(bad)?;
    for (pgno, data) in pages {
        encoder.add_page(pgno, data).map_err(bad)?;
    }
    encoder.finish(0).map_err(bad)
}

/// Store an encoded blob; returns the bytes it occupies (keys + values).
pub fn store(txn: &mut WriteTxn<'_>, prefix: &[u8], ltx: &[u8]) -> Result<u64> {
    let chunks = chunked::write(txn, prefix, ltx)? as u64;
    Ok(stored_bytes(prefix.len(), chunks, ltx.len()))
}

/// [`store`] under a prefix that has never held a blob (a delta of a txid
/// just taken from META: txids are never reused).
pub fn store_new(txn: &mut WriteTxn<'_>, prefix: &[u8], ltx: &[u8]) -> Result<u64> {
    let chunks = chunked::write_new(txn, prefix, ltx)? as u64;
    Ok(stored_bytes(prefix.len(), chunks, ltx.len()))
}

/// Bytes a blob of `len` bytes occupies in `chunks` chunks under a prefix.
pub fn stored_bytes(prefix_len: usize, chunks: u64, len: usize) -> u64 {
    chunks * (prefix_len as u64 + 4) + len as u64
}

/// Identity of an immutable blob: a delta part (txids are never reused, and a
/// recreated database gets a new id) or a shard at a shard epoch (META's
/// `shard_epoch` moves whenever any shard changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CacheKey {
    Delta {
        db: u64,
        txid: u64,
        part: u32,
    },
    Shard {
        db: u64,
        shard: u32,
        epoch: u64,
    },
    /// A history base never changes once its `as_of` is known.
    Base {
        db: u64,
        shard: u32,
        as_of: u64,
    },
}

/// Decoded blobs, served from memory without reading or verifying them
/// again.
pub struct BlobCache {
    inner: Mutex<BlobLru>,
}

struct BlobLru {
    parts: lru::LruCache<CacheKey, Arc<Decoded>>,
    bytes: usize,
    limit: usize,
}

impl BlobCache {
    pub fn new(limit: usize) -> Self {
        BlobCache {
            inner: Mutex::new(BlobLru {
                parts: lru::LruCache::unbounded(),
                bytes: 0,
                limit,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BlobLru> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn clear(&self) {
        let mut c = self.lock();
        c.parts.clear();
        c.bytes = 0;
    }

    fn get(&self, key: CacheKey) -> Option<Arc<Decoded>> {
        self.lock().parts.get(&key).cloned()
    }

    fn insert(&self, key: CacheKey, pages: Arc<Decoded>) {
        let size = pages.len() * PAGE_SIZE;
        let mut c = self.lock();
        if size > c.limit {
            return;
        }
        if let Some(old) = c.parts.put(key, pages) {
            c.bytes -= old.len() * PAGE_SIZE;
        }
        c.bytes += size;
        while c.bytes > c.limit {
            match c.parts.pop_lru() {
                Some((_, evicted)) => c.bytes -= evicted.len() * PAGE_SIZE,
                None => break,
            }
        }
    }
}

/// Fetch and decode blobs, each once, verifying every file checksum; blobs
/// come from `cache` when it has them (shards as of `shard_epoch`). A missing
/// blob is absent from the map; a corrupt one is an error. Returns the map and
/// how many blobs were read from the store.
pub fn fetch(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    cache: &BlobCache,
    shard_epoch: u64,
    refs: impl IntoIterator<Item = BlobRef>,
) -> Result<(HashMap<BlobRef, Arc<Decoded>>, usize)> {
    fetch_with(txn, db, keys, cache, shard_epoch, refs, &HashMap::new())
}

/// [`fetch`], taking first the blobs `read_ahead` already holds (read in
/// this transaction: there even when the cache could not keep them).
pub fn fetch_with(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    cache: &BlobCache,
    shard_epoch: u64,
    refs: impl IntoIterator<Item = BlobRef>,
    read_ahead: &HashMap<BlobRef, Arc<Decoded>>,
) -> Result<(HashMap<BlobRef, Arc<Decoded>>, usize)> {
    let mut out = HashMap::new();
    let mut missing: Vec<(BlobRef, CacheKey)> = Vec::new();
    for (blob, cache_key) in distinct(keys, shard_epoch, refs) {
        if let Some(pages) = read_ahead.get(&blob) {
            out.insert(blob, pages.clone());
            continue;
        }
        match cache.get(cache_key) {
            Some(hit) => {
                out.insert(blob, hit);
            }
            None => missing.push((blob, cache_key)),
        }
    }
    // Every blob the cache lacks in one batched read (one round trip on a
    // networked store).
    let prefixes: Vec<Vec<u8>> = missing.iter().map(|(b, _)| b.prefix(keys)).collect();
    let prefix_refs: Vec<&[u8]> = prefixes.iter().map(Vec::as_slice).collect();
    let mut read = 0;
    for ((blob, cache_key), bytes) in missing
        .into_iter()
        .zip(chunked::read_many(txn, &prefix_refs)?)
    {
        let Some(bytes) = bytes else {
            continue;
        };
        read += 1;
        out.insert(blob, admit(db, keys, cache, blob, cache_key, &bytes)?);
    }
    Ok((out, read))
}

/// Each blob of `refs` once, with its cache key.
fn distinct(
    keys: &DbKeys,
    shard_epoch: u64,
    refs: impl IntoIterator<Item = BlobRef>,
) -> Vec<(BlobRef, CacheKey)> {
    let mut seen = std::collections::HashSet::new();
    refs.into_iter()
        .filter(|blob| seen.insert(*blob))
        .map(|blob| {
            let cache_key = match blob {
                BlobRef::Delta { txid, part } => CacheKey::Delta {
                    db: keys.id,
                    txid,
                    part,
                },
                BlobRef::Shard(shard) => CacheKey::Shard {
                    db: keys.id,
                    shard,
                    epoch: shard_epoch,
                },
                BlobRef::Base { shard, as_of } => CacheKey::Base {
                    db: keys.id,
                    shard,
                    as_of,
                },
            };
            (blob, cache_key)
        })
        .collect()
}

/// Decode a blob read from the store and keep it in the cache.
fn admit(
    db: &str,
    keys: &DbKeys,
    cache: &BlobCache,
    blob: BlobRef,
    cache_key: CacheKey,
    bytes: &[u8],
) -> Result<Arc<Decoded>> {
    let pages = Arc::new(decode(db, keys, blob, bytes)?);
    cache.insert(cache_key, pages.clone());
    Ok(pages)
}

/// Blobs of `refs` the cache lacks (shards as of `shard_epoch`): what a
/// batched read ahead ([`Prefetch`]) should ask for.
pub fn prefetch(
    keys: &DbKeys,
    cache: &BlobCache,
    shard_epoch: u64,
    refs: impl IntoIterator<Item = BlobRef>,
) -> Prefetch {
    let blobs = distinct(keys, shard_epoch, refs)
        .into_iter()
        .filter(|(_, cache_key)| cache.get(*cache_key).is_none())
        .collect();
    Prefetch { blobs }
}

/// Blobs to read ahead, inside a batched read made for other reasons too.
pub struct Prefetch {
    blobs: Vec<(BlobRef, CacheKey)>,
}

impl Prefetch {
    /// The key ranges holding them (one per blob, in order).
    pub fn ranges(&self, keys: &DbKeys) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.blobs
            .iter()
            .map(|(blob, _)| chunked::chunk_range(&blob.prefix(keys)))
            .collect()
    }

    /// Decode and cache what the read of [`Prefetch::ranges`] found (one
    /// list of entries per range, in order): the blobs decoded. Deltas are
    /// immutable under their keys; a shard's key is rewritten at every
    /// compaction, so shards are kept only when `shards_current` (the
    /// read's snapshot has the epoch they were asked for) — cached under an
    /// epoch they are not, they would answer a reader of that epoch
    /// wrongly. Best effort: a blob that does not decode is left out (a
    /// read that needs it reads it again and reports it).
    pub fn admit(
        self,
        db: &str,
        keys: &DbKeys,
        cache: &BlobCache,
        shards_current: bool,
        found: impl IntoIterator<Item = Vec<kvlite_kv::KeyValue>>,
    ) -> HashMap<BlobRef, Arc<Decoded>> {
        let mut out = HashMap::new();
        for ((blob, cache_key), entries) in self.blobs.into_iter().zip(found) {
            if matches!(blob, BlobRef::Shard(_)) && !shards_current {
                continue;
            }
            let decoded = chunked::assemble(&blob.prefix(keys), entries)
                .map_err(Fail::from)
                .and_then(|bytes| match bytes {
                    Some(bytes) => admit(db, keys, cache, blob, cache_key, &bytes).map(Some),
                    None => Ok(None),
                });
            match decoded {
                Ok(Some(pages)) => {
                    out.insert(blob, pages);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(db, ?blob, error = %e, "a blob read ahead is left out"),
            }
        }
        out
    }
}

/// The pages of a verified blob, each its own allocation: a read hands
/// them on (to the VFS's cache, to an answer) by reference count, and a
/// page kept there holds only its own memory, never its blob's.
#[derive(Debug)]
pub struct Decoded {
    max_txid: u64,
    /// Ascending.
    pgnos: Vec<u32>,
    pages: Vec<PageData>,
}

impl Decoded {
    /// The newest transaction the blob holds.
    pub fn max_txid(&self) -> u64 {
        self.max_txid
    }

    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn get(&self, pgno: u32) -> Option<&PageData> {
        let i = self.pgnos.binary_search(&pgno).ok()?;
        self.pages.get(i)
    }

    /// `(pgno, data)` in ascending page order, each page shared.
    pub fn iter_shared(&self) -> impl ExactSizeIterator<Item = (u32, &PageData)> + '_ {
        self.pgnos.iter().copied().zip(self.pages.iter())
    }

    /// `(pgno, data)` in ascending page order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u32, &[u8])> + '_ {
        self.iter_shared().map(|(pgno, page)| (pgno, &page[..]))
    }
}

/// Decode a stored blob, verifying its checksum; errors name the blob's key.
pub fn decode(db: &str, keys: &DbKeys, blob: BlobRef, bytes: &[u8]) -> Result<Decoded> {
    let corrupt = |what: String| {
        crate::error::corrupt(
            db,
            CorruptionKind::Blob,
            format!("{blob:?} at key {}: {what}", hex(&blob.prefix(keys))),
        )
    };
    let file = LtxFile::parse(bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.page_size() != PAGE_SIZE {
        return Err(corrupt(format!("page size {}", file.page_size())));
    }
    let pages = file.decode_each().map_err(|e| corrupt(e.to_string()))?;
    debug_assert!(file.pgnos().is_sorted(), "parse checks the order");
    Ok(Decoded {
        max_txid: file.header().max_txid,
        pgnos: file.pgnos().collect(),
        pages: pages.into_iter().map(PageData::from).collect(),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
