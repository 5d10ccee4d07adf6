//! Page reads: resolve every requested page to a blob (delta part or shard),
//! fetch each distinct blob once in one snapshot, decode each once, answer in
//! request order.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvlite_kv::KvRead;

use kvlite_api::{CorruptionKind, Error, InvalidKind};

use crate::blob::{self, BlobRef};
use crate::cache::{DbState, PageIndex, lock};
use crate::error::{Result, corrupt};
use crate::keys::DbKeys;
use crate::meta::Meta;
use crate::metrics::CacheResult;
use crate::{Engine, LOCK_PAGE, MAX_PAGES, PAGE_SIZE, SHARD_PAGES, validate_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageSource {
    /// Past the end of the database.
    Absent,
    /// SQLite's lock page: never stored.
    Zero,
    Blob(BlobRef),
}

pub(crate) fn source(pidx: &PageIndex, meta: &Meta, pgno: u32) -> PageSource {
    if pgno > meta.size_pages {
        PageSource::Absent
    } else if pgno == LOCK_PAGE {
        PageSource::Zero
    } else if let Some(loc) = pidx.entries.get(&pgno) {
        PageSource::Blob(BlobRef::Delta {
            txid: loc.txid,
            part: loc.part,
        })
    } else {
        PageSource::Blob(BlobRef::Shard(pgno / SHARD_PAGES))
    }
}

impl Engine {
    /// Pages `pgnos` of `db` as the writer of `generation` sees them: `None`
    /// past the end. Page 0 is an error; a missing page below the end is
    /// corruption, never zeros.
    pub fn get_pages(
        &self,
        db: &str,
        generation: u64,
        pgnos: &[u32],
    ) -> kvlite_api::Result<Vec<Option<Vec<u8>>>> {
        let started = Instant::now();
        validate_name(db)?;
        if pgnos.contains(&0) {
            return Err(Error::invalid(
                InvalidKind::PageNumber,
                "page numbers start at 1",
            ));
        }
        if let Some(p) = pgnos.iter().find(|&&p| p > MAX_PAGES) {
            return Err(Error::invalid(
                InvalidKind::PageNumber,
                format!("page {p} is beyond the largest page number {MAX_PAGES}"),
            ));
        }
        let pages = self.kv.read(|txn| {
            let (state, keys, meta) = self.resolve(txn, db)?;
            self.fence(db, &meta, generation)?;
            self.read_pages(txn, db, &state, &keys, &meta, pgnos)
        })?;
        self.metrics
            .get_pages_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.get_pages_pages.observe(pgnos.len() as f64);
        Ok(pages)
    }

    pub(crate) fn read_pages(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        state: &Arc<Mutex<DbState>>,
        keys: &DbKeys,
        meta: &Meta,
        pgnos: &[u32],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let sources = if self.index_too_large(state, meta) {
            // Too big to hold for one read: look up just these pages.
            self.point_sources(txn, db, keys, meta, pgnos)?
        } else {
            self.with_page_index(txn, db, state, keys, meta, |pidx| {
                pgnos
                    .iter()
                    .map(|&p| source(pidx, meta, p))
                    .collect::<Vec<_>>()
            })?
        };
        let refs = sources.iter().filter_map(|s| match s {
            PageSource::Blob(b) => Some(*b),
            _ => None,
        });
        let (blobs, read) = blob::fetch(txn, db, keys, &self.blob_cache, meta.shard_epoch, refs)?;
        self.metrics.blobs_fetched.inc_by(read as u64);
        pgnos
            .iter()
            .zip(sources)
            .map(|(&pgno, src)| match src {
                PageSource::Absent => Ok(None),
                PageSource::Zero => Ok(Some(vec![0; PAGE_SIZE])),
                PageSource::Blob(b) => match blobs.get(&b).and_then(|d| d.get(pgno)) {
                    Some(data) => Ok(Some(data.to_vec())),
                    None => Err(corrupt(
                        db,
                        CorruptionKind::MissingPage,
                        format!("page {pgno} not found in {b:?}"),
                    )),
                },
            })
            .collect()
    }

    /// Whether the page index as of `meta` is too large to load (and is not
    /// already held): then reads look up their pages one by one.
    pub(crate) fn index_too_large(&self, state: &Arc<Mutex<DbState>>, meta: &Meta) -> bool {
        meta.pidx_count > self.config.max_loaded_page_index_entries
            && lock(state).pidx_at(meta.version).is_none()
    }

    /// Where each page lives, from point reads of its page-index entry
    /// (one batched read), without the whole index.
    fn point_sources(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        pgnos: &[u32],
    ) -> Result<Vec<PageSource>> {
        let wanted: Vec<Vec<u8>> = pgnos.iter().map(|&p| keys.pidx(p)).collect();
        let refs: Vec<&[u8]> = wanted.iter().map(Vec::as_slice).collect();
        let found = txn.get_many(&refs)?;
        pgnos
            .iter()
            .zip(found)
            .map(|(&pgno, entry)| {
                Ok(if pgno > meta.size_pages {
                    PageSource::Absent
                } else if pgno == LOCK_PAGE {
                    PageSource::Zero
                } else if let Some(v) = entry {
                    let loc = crate::records::Loc::decode(&v).ok_or_else(|| {
                        corrupt(
                            db,
                            CorruptionKind::Record,
                            format!("malformed page-index entry for page {pgno}"),
                        )
                    })?;
                    PageSource::Blob(BlobRef::Delta {
                        txid: loc.txid,
                        part: loc.part,
                    })
                } else {
                    PageSource::Blob(BlobRef::Shard(pgno / SHARD_PAGES))
                })
            })
            .collect()
    }

    /// Run `f` on the page index as of `meta`: the cached one if current,
    /// else one loaded from this transaction's snapshot (cached unless it
    /// is larger than one database may keep in memory).
    pub(crate) fn with_page_index<T>(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        state: &Arc<Mutex<DbState>>,
        keys: &DbKeys,
        meta: &Meta,
        f: impl FnOnce(&PageIndex) -> T,
    ) -> Result<T> {
        {
            let s = lock(state);
            if let Some(pidx) = s.pidx_at(meta.version) {
                self.metrics.cache(CacheResult::Hit);
                return Ok(f(pidx));
            }
        }
        self.metrics.cache(CacheResult::Miss);
        let pidx = PageIndex::load(txn, db, keys, meta.version)?;
        let out = f(&pidx);
        if pidx.entries.len() as u64 > self.config.max_loaded_page_index_entries {
            return Ok(out);
        }
        let mut s = lock(state);
        if s.pidx.as_ref().is_none_or(|p| p.version < pidx.version) {
            self.states.set_pidx(&mut s, Some(pidx));
        }
        drop(s);
        self.states.evict(db);
        Ok(out)
    }
}
