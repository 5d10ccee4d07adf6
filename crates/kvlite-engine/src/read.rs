//! Page reads: resolve every requested page to a blob (delta part or shard),
//! fetch each distinct blob once in one snapshot, decode each once, answer in
//! request order.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvlite_kv::KvRead;

use kvlite_api::{CorruptionKind, Error, InvalidKind, MAX_CHANGED_PAGES, ReadAt, ReadState};

use crate::blob::{self, BlobRef};
use crate::cache::{DbState, PageIndex, lock};
use crate::commit::check_size;
use crate::error::{Fail, Result, corrupt};
use crate::keys::DbKeys;
use crate::meta::Meta;
use crate::metrics::CacheResult;
use crate::records::DeltaInfo;
use crate::{Engine, LOCK_PAGE, MAX_PAGES, PAGE_SIZE, SHARD_PAGES, validate_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageSource {
    /// Past the end of the database.
    Absent,
    /// SQLite's lock page: never stored.
    Zero,
    Blob(BlobRef),
    /// The page index must be read for this page's version (the memo is
    /// not loaded, or holds a version newer than the read point).
    Lookup,
}

/// The commit a writer reads at: the head.
fn head(keys: &DbKeys, meta: &Meta) -> ReadAt {
    ReadAt {
        incarnation: keys.id,
        txid: meta.head_txid,
        size_pages: meta.size_pages,
    }
}

/// Where page `pgno` lives at `at`, from the memo of the newest versions
/// (which covers pages up to the current size).
pub(crate) fn source(pidx: Option<&PageIndex>, meta: &Meta, at: ReadAt, pgno: u32) -> PageSource {
    if pgno > at.size_pages {
        PageSource::Absent
    } else if pgno == LOCK_PAGE {
        PageSource::Zero
    } else {
        match pidx {
            Some(pidx) if pgno <= meta.size_pages => match pidx.entries.get(&pgno) {
                Some(loc) if loc.txid <= at.txid => PageSource::Blob(BlobRef::Delta {
                    txid: loc.txid,
                    part: loc.part,
                }),
                Some(_) => PageSource::Lookup,
                None => PageSource::Blob(BlobRef::Shard(pgno / SHARD_PAGES)),
            },
            _ => PageSource::Lookup,
        }
    }
}

/// A read at a commit the database no longer keeps (or does not have yet).
fn history_unavailable(detail: String) -> Fail {
    Fail::Api(Error::invalid(InvalidKind::HistoryUnavailable, detail))
}

/// Page numbers a client asks for: from 1, at most [`MAX_PAGES`].
fn check_pgnos(pgnos: &[u32]) -> kvlite_api::Result<()> {
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
    Ok(())
}

/// The pages commits `since+1..=head` wrote, from their records; `None` if
/// a record does not list them or there are too many to be worth listing.
fn changed_since(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    since: u64,
    head: u64,
) -> Result<Option<Vec<u32>>> {
    let (start, end) = keys.dlist_range(since.saturating_add(1), head.saturating_add(1));
    let mut changed = std::collections::BTreeSet::new();
    for (k, v) in txn.scan(&start, &end, kvlite_kv::ScanOptions::ALL)? {
        let info = DeltaInfo::decode(&v)
            .ok_or_else(|| corrupt(db, CorruptionKind::Record, format!("malformed DLIST {k:?}")))?;
        let Some(pgnos) = info.pgnos else {
            return Ok(None);
        };
        changed.extend(pgnos);
        if changed.len() > MAX_CHANGED_PAGES {
            return Ok(None);
        }
    }
    Ok(Some(changed.into_iter().collect()))
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
        check_pgnos(pgnos)?;
        let pages = self.kv.read(|txn| {
            let (state, keys, meta) = self.resolve(txn, db)?;
            self.fence(db, &meta, generation)?;
            self.read_pages(txn, db, &state, &keys, &meta, pgnos, head(&keys, &meta))
        })?;
        self.observe_read(started, pgnos.len());
        Ok(pages)
    }

    /// Start a read transaction: the head, pinned for `reader`, and the pages
    /// changed since `since_txid` when its pin held them (its previous
    /// transaction's commit). Takes nothing over.
    pub fn begin_read(
        &self,
        db: &str,
        reader: u64,
        since_txid: u64,
    ) -> kvlite_api::Result<ReadState> {
        validate_name(db)?;
        // Pin before reading the head: a pass planning after this sees the
        // pin; one that planned before folds to a head no newer than ours.
        let held = self.readers.live(db, reader).filter(|&t| t == since_txid);
        if held.is_none() {
            self.readers.pin(db, reader, 0)?;
        }
        let state = self.kv.read(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            let changed = match held {
                _ if since_txid == meta.head_txid => Some(Vec::new()),
                Some(since) if since < meta.head_txid => {
                    changed_since(txn, db, &keys, since, meta.head_txid)?
                }
                _ => None,
            };
            Ok::<_, Fail>(ReadState {
                incarnation: keys.id,
                head_txid: meta.head_txid,
                size_pages: meta.size_pages,
                page_size: meta.page_size,
                changed,
            })
        });
        match state {
            Ok(state) => {
                self.readers.pin(db, reader, state.head_txid)?;
                Ok(state)
            }
            Err(e) => {
                self.readers.release(db, reader);
                Err(e.into())
            }
        }
    }

    /// Pages as of the commit a reader's [`ReadState`] named.
    pub fn get_pages_at(
        &self,
        db: &str,
        reader: u64,
        at: ReadAt,
        pgnos: &[u32],
    ) -> kvlite_api::Result<Vec<Option<Vec<u8>>>> {
        let started = Instant::now();
        validate_name(db)?;
        check_pgnos(pgnos)?;
        check_size(at.size_pages)?;
        // Refresh the pin (a dead one stays dead: the read below then
        // refuses whatever was folded past it).
        let _ = self.readers.live(db, reader);
        let pages = self.kv.read(|txn| {
            let (state, keys, meta) = self.resolve(txn, db)?;
            if keys.id != at.incarnation {
                return Err(Fail::Api(Error::NotFound(format!(
                    "{db} (the database this reader read was deleted)"
                ))));
            }
            if at.txid > meta.head_txid {
                return Err(history_unavailable(format!(
                    "{db:?} has no commit {} yet (head {})",
                    at.txid, meta.head_txid
                )));
            }
            self.read_pages(txn, db, &state, &keys, &meta, pgnos, at)
        })?;
        self.observe_read(started, pgnos.len());
        Ok(pages)
    }

    fn observe_read(&self, started: Instant, pages: usize) {
        self.metrics
            .get_pages_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.get_pages_pages.observe(pages as f64);
    }

    /// The reader is done: its pin goes.
    pub fn end_read(&self, db: &str, reader: u64) {
        self.readers.release(db, reader);
    }

    /// Pages `pgnos` as of `at` (the head or an earlier commit), from this
    /// transaction's snapshot.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_pages(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        state: &Arc<Mutex<DbState>>,
        keys: &DbKeys,
        meta: &Meta,
        pgnos: &[u32],
        at: ReadAt,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        debug_assert!(at.txid <= meta.head_txid);
        let mut sources = if self.index_too_large(state, meta) {
            pgnos
                .iter()
                .map(|&p| source(None, meta, at, p))
                .collect::<Vec<_>>()
        } else {
            self.with_page_index(txn, db, state, keys, meta, |pidx| {
                pgnos
                    .iter()
                    .map(|&p| source(Some(pidx), meta, at, p))
                    .collect::<Vec<_>>()
            })?
        };
        self.look_up_versions(txn, db, keys, at, pgnos, &mut sources)?;
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
                PageSource::Lookup => Err(Fail::Api(Error::Internal(format!(
                    "page {pgno} left unresolved"
                )))),
                PageSource::Blob(b) => {
                    let decoded = blobs.get(&b);
                    // A shard holds its pages as of the commit it was folded
                    // at: newer than the read point, it no longer has this
                    // commit's copy (compaction passed an expired reader).
                    if let (BlobRef::Shard(_), Some(d)) = (b, decoded)
                        && d.max_txid() > at.txid
                    {
                        let folded_at = d.max_txid();
                        return Err(history_unavailable(format!(
                            "{db:?} no longer keeps commit {} (folded into shards at {folded_at})",
                            at.txid
                        )));
                    }
                    match decoded.and_then(|d| d.get(pgno)) {
                        Some(data) => Ok(Some(data.to_vec())),
                        // Folded past the read point: its versions are gone.
                        None if at.txid < meta.materialized_txid => {
                            Err(history_unavailable(format!(
                                "{db:?} no longer keeps commit {} (folded through commit {})",
                                at.txid, meta.materialized_txid
                            )))
                        }
                        None => Err(corrupt(
                            db,
                            CorruptionKind::MissingPage,
                            format!("page {pgno} not found in {b:?}"),
                        )),
                    }
                }
            })
            .collect()
    }

    /// Whether the page index as of `meta` is too large to load (and is not
    /// already held): then reads look up their pages one by one.
    pub(crate) fn index_too_large(&self, state: &Arc<Mutex<DbState>>, meta: &Meta) -> bool {
        meta.pidx_count > self.config.max_loaded_page_index_entries
            && lock(state).pidx_at(meta.version).is_none()
    }

    /// Resolve every [`PageSource::Lookup`] from the stored versions of its
    /// page (one batched read): the newest at or before `at`, else the shard.
    fn look_up_versions(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        at: ReadAt,
        pgnos: &[u32],
        sources: &mut [PageSource],
    ) -> Result<()> {
        // (index into the request, the key range of that page's versions)
        type Wanted = (usize, (Vec<u8>, Vec<u8>));
        let wanted: Vec<Wanted> = sources
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == PageSource::Lookup)
            .filter_map(|(i, _)| Some((i, keys.pidx_versions_upto(*pgnos.get(i)?, at.txid))))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let ranges: Vec<(&[u8], &[u8])> = wanted
            .iter()
            .map(|(_, (s, e))| (s.as_slice(), e.as_slice()))
            .collect();
        let found = txn.scan_many(&ranges)?;
        for ((i, _), versions) in wanted.iter().zip(found) {
            let (Some(&pgno), Some(slot)) = (pgnos.get(*i), sources.get_mut(*i)) else {
                continue;
            };
            *slot = match versions.last() {
                Some((k, v)) => {
                    let (_, loc) = crate::records::decode_pidx(k, v).ok_or_else(|| {
                        corrupt(
                            db,
                            CorruptionKind::Record,
                            format!("malformed page-index entry for page {pgno}"),
                        )
                    })?;
                    if loc.txid > at.txid {
                        // Only a legacy entry (its txid in the value) can be
                        // newer than the range that found it.
                        return Err(history_unavailable(format!(
                            "{db:?} no longer keeps page {pgno} as of commit {}",
                            at.txid
                        )));
                    }
                    PageSource::Blob(BlobRef::Delta {
                        txid: loc.txid,
                        part: loc.part,
                    })
                }
                None => PageSource::Blob(BlobRef::Shard(pgno / SHARD_PAGES)),
            };
        }
        Ok(())
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
        let pidx = PageIndex::load(txn, db, keys, meta)?;
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
