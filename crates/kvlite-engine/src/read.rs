//! Page reads: resolve every requested page to a blob (delta part or shard),
//! fetch each distinct blob once in one snapshot, decode each once, answer in
//! request order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvlite_kv::KvRead;

use kvlite_api::{
    CorruptionKind, Error, InvalidKind, MAX_CHANGED_PAGES, PageData, ReadAt, ReadState,
};

use crate::blob::{self, BlobRef};
use crate::cache::{DbState, PageIndex, lock};
use crate::commit::check_size;
use crate::error::{Fail, Result, corrupt};
use crate::history;
use crate::keys::{self, DbKeys};
use crate::meta::Meta;
use crate::meta::Parent;
use crate::metrics::CacheResult;
use crate::records::{DeltaInfo, HistoryBase, Loc, ShardInfo};
use crate::{Engine, LOCK_PAGE, MAX_PAGES, SHARD_PAGES, ZERO_PAGE, validate_name};

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

impl PageSource {
    /// The blob serving the page, if one does.
    fn blob(&self) -> Option<BlobRef> {
        match self {
            PageSource::Blob(b) => Some(*b),
            _ => None,
        }
    }
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

/// Whether `at` is a commit reads may still ask for: from the floor on,
/// or one a fork or restore pins; and not past the head.
pub(crate) fn check_readable(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    meta: &Meta,
    at: ReadAt,
) -> Result<()> {
    if at.txid > meta.head_txid {
        return Err(history_unavailable(format!(
            "{db:?} has no commit {} yet (head {})",
            at.txid, meta.head_txid
        )));
    }
    if at.txid < meta.history_floor && history::pinned_at(txn, db, keys, at.txid)?.is_none() {
        return Err(history_unavailable(format!(
            "{db:?} no longer keeps commit {} (its history starts at commit {})",
            at.txid, meta.history_floor
        )));
    }
    Ok(())
}

/// The current shards' records (fold points), for those that exist.
fn shard_infos(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    shards: &[u32],
) -> Result<std::collections::HashMap<u32, ShardInfo>> {
    let ks: Vec<Vec<u8>> = shards.iter().map(|&s| keys.slist(s)).collect();
    let refs: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
    let mut out = std::collections::HashMap::new();
    for (&shard, v) in shards.iter().zip(txn.get_many(&refs)?) {
        if let Some(v) = v {
            let info = ShardInfo::decode(&v).ok_or_else(|| {
                corrupt(
                    db,
                    CorruptionKind::Record,
                    format!("malformed SLIST {shard}"),
                )
            })?;
            out.insert(shard, info);
        }
    }
    Ok(out)
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
    ) -> kvlite_api::Result<Vec<Option<PageData>>> {
        let started = Instant::now();
        validate_name(db)?;
        check_pgnos(pgnos)?;
        let pages = self.kv.read(|txn| {
            let ((state, keys, meta), read_ahead) = match self.read_ahead(txn, db, pgnos)? {
                Some((resolved, blobs)) => (resolved, blobs),
                None => (self.resolve(txn, db)?, HashMap::new()),
            };
            self.fence(db, &meta, generation)?;
            self.read_pages_with(
                txn,
                db,
                Some(&state),
                &keys,
                &meta,
                pgnos,
                head(&keys, &meta),
                &read_ahead,
            )
        })?;
        self.observe_read(started, pgnos.len());
        Ok(pages)
    }

    /// On a store a network away, everything a read of `pgnos` at the head
    /// will need, in one batched read, by this engine's last view of `db`:
    /// its directory entry and META (what [`Engine::resolve`] reads), its
    /// page index when not held, and the blobs that view says serve the
    /// pages (when it can say: the index is held, or there is none). What
    /// it returns is what `resolve` would, with the blobs it read that the
    /// read can use (deltas; shards if META kept the view's epoch); the
    /// page index is kept if the database kept the view's size (the range
    /// read is the whole index then), and the view moves up to the META
    /// read. `None`, having found the view wrong about the database's id
    /// (or having none): resolve as usual.
    #[allow(clippy::type_complexity)]
    fn read_ahead(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        pgnos: &[u32],
    ) -> Result<Option<(crate::Resolved, HashMap<BlobRef, Arc<blob::Decoded>>)>> {
        if !self.saves_round_trips(self.config.read_ahead) {
            return Ok(None);
        }
        let Some(state) = self.states.get(db) else {
            return Ok(None);
        };
        let (keys, view, sources, load_index) = {
            let s = lock(&state);
            let Some(view) = s.meta.clone() else {
                return Ok(None);
            };
            let keys = DbKeys { id: s.id };
            let at = head(&keys, &view);
            let empty = PageIndex {
                version: view.version,
                entries: Default::default(),
            };
            let held = s.pidx_at(view.version);
            let known = held.or((view.pidx_count == 0).then_some(&empty));
            let sources: Vec<PageSource> = match known {
                Some(pidx) => pgnos
                    .iter()
                    .map(|&p| source(Some(pidx), &view, at, p))
                    .collect(),
                None => Vec::new(),
            };
            let load_index =
                held.is_none() && view.pidx_count <= self.config.max_loaded_page_index_entries;
            (keys, view, sources, load_index)
        };
        let prefetch = blob::prefetch(
            &keys,
            &self.blob_cache,
            view.shard_epoch,
            sources.iter().filter_map(PageSource::blob),
        );
        let mut ranges = vec![keys::point(keys::dir(db)), keys::point(keys.meta())];
        if load_index {
            ranges.push(keys.pidx_pages(1, view.size_pages.saturating_add(1)));
        }
        ranges.extend(prefetch.ranges(&keys));
        let borrowed: Vec<(&[u8], &[u8])> = ranges
            .iter()
            .map(|(s, e)| (s.as_slice(), e.as_slice()))
            .collect();
        let mut found = txn.scan_many(&borrowed)?.into_iter();
        let only = |entries: Option<Vec<kvlite_kv::KeyValue>>| {
            entries.and_then(|e| e.into_iter().next()).map(|(_, v)| v)
        };
        let (dir, meta) = (only(found.next()), only(found.next()));
        let index = if load_index { found.next() } else { None };
        let meta = match (dir, meta) {
            (Some(dir), Some(meta)) if crate::decode_id(db, &dir)? == keys.id => {
                Some(crate::decode_meta(db, &meta)?)
            }
            _ => None,
        };
        // A shard's key holds whatever epoch is current: what was read is
        // the view's epoch only if META still says so (same snapshot).
        let shards_current = meta
            .as_ref()
            .is_some_and(|m| m.shard_epoch == view.shard_epoch);
        let blobs = prefetch.admit(db, &keys, &self.blob_cache, shards_current, found);
        self.metrics.blobs_fetched.inc_by(blobs.len() as u64);
        let Some(meta) = meta else {
            return Ok(None);
        };
        let index = index.filter(|entries| {
            meta.size_pages == view.size_pages
                && entries.len() as u64 <= self.config.max_loaded_page_index_entries
        });
        {
            let mut s = lock(&state);
            // The view moves forward to what was read (never back: a commit
            // of this engine's may have moved it further meanwhile).
            if s.meta.as_ref().is_none_or(|m| m.version < meta.version) {
                s.meta = Some(meta.clone());
            }
            if let Some(entries) = index {
                self.metrics.cache(CacheResult::Miss);
                let pidx = PageIndex::from_entries(db, meta.version, entries)?;
                if s.pidx.as_ref().is_none_or(|p| p.version < pidx.version) {
                    self.states.set_pidx(&mut s, Some(pidx));
                }
            }
        }
        self.states.evict(db);
        Ok(Some(((state, keys, meta), blobs)))
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
        // Hold the name before reading the head: a pass planning after this
        // changes nothing until the pin is in; one that planned before
        // folds to a head no newer than ours. A reader still pinned where
        // its last transaction read needs no hold.
        let held = self
            .readers
            .live(db, reader, self.now_ms())
            .filter(|&(_, t)| t == since_txid);
        if held.is_none() {
            self.readers.starting(db);
        }
        let state = self.kv.read(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            let changed = match held {
                // (Another incarnation: a restore. The reader forgets all.)
                Some((id, _)) if id != keys.id => None,
                _ if since_txid == meta.head_txid => Some(Vec::new()),
                Some((_, since)) if since < meta.head_txid => {
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
        let pinned = match state {
            Ok(state) => self
                .readers
                .pin(
                    db,
                    reader,
                    state.incarnation,
                    state.head_txid,
                    true,
                    self.now_ms(),
                )
                .map(|()| state),
            Err(e) => {
                self.readers.release(db, reader);
                Err(e.into())
            }
        };
        if held.is_none() {
            self.readers.started(db);
        }
        pinned
    }

    /// Pages as of the commit a reader's [`ReadState`] named.
    pub fn get_pages_at(
        &self,
        db: &str,
        reader: u64,
        at: ReadAt,
        pgnos: &[u32],
    ) -> kvlite_api::Result<Vec<Option<PageData>>> {
        let started = Instant::now();
        validate_name(db)?;
        check_pgnos(pgnos)?;
        check_size(at.size_pages)?;
        // Refresh the pin (a dead one stays dead: the read below then
        // refuses whatever was folded past it).
        let _ = self.readers.live(db, reader, self.now_ms());
        let pages = self.kv.read(|txn| {
            let (state, keys, meta) = self.resolve(txn, db)?;
            if keys.id != at.incarnation {
                // An earlier incarnation still read (the name was restored
                // to another, or this one is a fork of it): read it as it
                // was, if it is this database's ancestor.
                let (akeys, ameta) = self.ancestor(txn, db, &meta, at.incarnation)?;
                check_readable(txn, db, &akeys, &ameta, at)?;
                return self.read_pages(txn, db, None, &akeys, &ameta, pgnos, at);
            }
            check_readable(txn, db, &keys, &meta, at)?;
            self.read_pages(txn, db, Some(&state), &keys, &meta, pgnos, at)
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
    /// transaction's snapshot. `state` holds the page-index memo of this
    /// database (`None` when reading another one: an ancestor).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_pages(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        state: Option<&Arc<Mutex<DbState>>>,
        keys: &DbKeys,
        meta: &Meta,
        pgnos: &[u32],
        at: ReadAt,
    ) -> Result<Vec<Option<PageData>>> {
        let none = HashMap::new();
        self.read_pages_with(txn, db, state, keys, meta, pgnos, at, &none)
    }

    /// [`Engine::read_pages`] given blobs already read for it (by
    /// [`Engine::read_ahead`]: valid for `meta`).
    #[allow(clippy::too_many_arguments)]
    fn read_pages_with(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        state: Option<&Arc<Mutex<DbState>>>,
        keys: &DbKeys,
        meta: &Meta,
        pgnos: &[u32],
        at: ReadAt,
        read_ahead: &HashMap<BlobRef, Arc<blob::Decoded>>,
    ) -> Result<Vec<Option<PageData>>> {
        debug_assert!(at.txid <= meta.head_txid);
        let mut sources = match state {
            Some(state) if !self.index_too_large(state, meta) => {
                self.with_page_index(txn, db, state, keys, meta, |pidx| {
                    pgnos
                        .iter()
                        .map(|&p| source(Some(pidx), meta, at, p))
                        .collect::<Vec<_>>()
                })?
            }
            _ => pgnos
                .iter()
                .map(|&p| source(None, meta, at, p))
                .collect::<Vec<_>>(),
        };
        self.look_up_versions(txn, db, keys, at, pgnos, &mut sources)?;
        let refs = sources.iter().filter_map(PageSource::blob);
        let (blobs, read) = blob::fetch_with(
            txn,
            db,
            keys,
            &self.blob_cache,
            meta.shard_epoch,
            refs,
            read_ahead,
        )?;
        self.metrics.blobs_fetched.inc_by(read as u64);
        let mut out: Vec<Option<PageData>> = Vec::with_capacity(pgnos.len());
        // Pages the current shards cannot answer at `at`: read through the
        // kept history.
        let mut past: Vec<(usize, u32)> = Vec::new();
        for (i, (&pgno, src)) in pgnos.iter().zip(sources).enumerate() {
            out.push(match src {
                PageSource::Absent => None,
                PageSource::Zero => Some(PageData::from_static(&ZERO_PAGE)),
                PageSource::Lookup => {
                    return Err(Fail::Api(Error::Internal(format!(
                        "page {pgno} left unresolved"
                    ))));
                }
                PageSource::Blob(b) => match (b, blobs.get(&b)) {
                    // A shard holds its pages as of the commit it was
                    // folded at: one folded after `at` no longer has this
                    // commit's copy; nor does a shard that does not exist
                    // (yet: a fork's page is its parent's until folded).
                    (BlobRef::Shard(_), Some(d)) if d.max_txid() > at.txid => {
                        past.push((i, pgno));
                        None
                    }
                    (BlobRef::Shard(_), None) => {
                        past.push((i, pgno));
                        None
                    }
                    (b, decoded) => match decoded.and_then(|d| d.get(pgno)) {
                        Some(data) => Some(data.clone()),
                        None => {
                            return Err(corrupt(
                                db,
                                CorruptionKind::MissingPage,
                                format!("page {pgno} not found in {b:?}"),
                            ));
                        }
                    },
                },
            });
        }
        if !past.is_empty() {
            let want: Vec<u32> = past.iter().map(|&(_, p)| p).collect();
            let got = self.read_history(txn, db, keys, meta, at, &want)?;
            for ((i, _), data) in past.into_iter().zip(got) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(data);
                }
            }
        }
        Ok(out)
    }

    /// Pages no current shard holds as of `at`: per page, the newest kept
    /// version after its shard's history base and at or before `at`, else
    /// the base's copy (a stored shard; the database's creation: a fork's
    /// parent). Every page asked is inside the database at `at`.
    #[allow(clippy::too_many_arguments)]
    fn read_history(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        at: ReadAt,
        pgnos: &[u32],
    ) -> Result<Vec<PageData>> {
        let mut shards: Vec<u32> = pgnos.iter().map(|p| p / SHARD_PAGES).collect();
        shards.sort_unstable();
        shards.dedup();
        let bases: std::collections::HashMap<u32, Option<HistoryBase>> = shards
            .iter()
            .copied()
            .zip(history::bases(txn, db, keys, &shards)?)
            .collect();
        let infos = shard_infos(txn, db, keys, &shards)?;
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = pgnos
            .iter()
            .map(|&p| keys.hidx_versions_upto(p, at.txid))
            .collect();
        let borrowed: Vec<(&[u8], &[u8])> = ranges
            .iter()
            .map(|(s, e)| (s.as_slice(), e.as_slice()))
            .collect();
        let newest_kept = txn.last_many(&borrowed)?;
        enum From {
            Blob(BlobRef),
            Parent,
        }
        let mut from: Vec<From> = Vec::with_capacity(pgnos.len());
        for (&pgno, kept) in pgnos.iter().zip(newest_kept) {
            let shard = pgno / SHARD_PAGES;
            let unavailable = || {
                history_unavailable(format!(
                    "{db:?} no longer keeps page {pgno} as of commit {} (its history starts later)",
                    at.txid
                ))
            };
            // Where this shard's pages stood before the kept versions.
            let base = match (bases.get(&shard).copied().flatten(), infos.get(&shard)) {
                (Some(b), _) if b.as_of <= at.txid => b,
                (Some(_), _) => return Err(unavailable()),
                // No shard and no kept history: the creation (versions
                // cover every page written since; never folded).
                (None, None) => HistoryBase {
                    as_of: history::CREATION_TXID,
                    chain_end: history::CREATION_TXID,
                    stored: None,
                },
                (None, Some(_)) => return Err(unavailable()),
            };
            let version = match kept {
                Some((k, v)) => {
                    let txid = DbKeys::hidx_key(&k).map(|(_, t)| t);
                    let part = crate::records::decode_u32(&v);
                    match (txid, part) {
                        (Some(txid), Some(part)) => Some(Loc { txid, part }),
                        _ => {
                            return Err(corrupt(
                                db,
                                CorruptionKind::Record,
                                format!("malformed kept version of page {pgno}"),
                            ));
                        }
                    }
                }
                None => None,
            };
            from.push(match (version, base.stored) {
                (Some(loc), _) if loc.txid > base.as_of => From::Blob(BlobRef::Delta {
                    txid: loc.txid,
                    part: loc.part,
                }),
                (_, Some(_)) => From::Blob(BlobRef::Base {
                    shard,
                    as_of: base.as_of,
                }),
                (_, None) => From::Parent,
            });
        }
        let refs = from.iter().filter_map(|f| match f {
            From::Blob(b) => Some(*b),
            From::Parent => None,
        });
        let (blobs, read) = blob::fetch(txn, db, keys, &self.blob_cache, meta.shard_epoch, refs)?;
        self.metrics.blobs_fetched.inc_by(read as u64);
        let parents: Vec<u32> = pgnos
            .iter()
            .zip(&from)
            .filter(|(_, f)| matches!(f, From::Parent))
            .map(|(p, _)| *p)
            .collect();
        let mut from_parent = match (parents.is_empty(), meta.parent) {
            (true, _) => Vec::new(),
            (false, Some(parent)) => self.parent_pages(txn, db, parent, &parents)?,
            (false, None) => vec![None; parents.len()],
        }
        .into_iter();
        pgnos
            .iter()
            .zip(from)
            .map(|(&pgno, f)| {
                let data = match f {
                    From::Blob(b) => {
                        let decoded = blobs.get(&b);
                        if let (BlobRef::Base { as_of, .. }, Some(d)) = (b, decoded)
                            && d.max_txid() != as_of
                        {
                            return Err(corrupt(
                                db,
                                CorruptionKind::Blob,
                                format!("{b:?} holds commit {}", d.max_txid()),
                            ));
                        }
                        decoded.and_then(|d| d.get(pgno)).cloned()
                    }
                    From::Parent => from_parent.next().flatten(),
                };
                data.ok_or_else(|| {
                    corrupt(
                        db,
                        CorruptionKind::MissingPage,
                        format!("page {pgno} as of commit {} is in no blob", at.txid),
                    )
                })
            })
            .collect()
    }

    /// Pages of a fork's parent as of the commit the fork started from
    /// (`None` past the parent's size there).
    pub(crate) fn parent_pages(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        parent: Parent,
        pgnos: &[u32],
    ) -> Result<Vec<Option<PageData>>> {
        let keys = DbKeys { id: parent.id };
        let meta = match txn.get(&keys.meta())? {
            Some(v) => crate::decode_meta(db, &v)?,
            None => {
                return Err(corrupt(
                    db,
                    CorruptionKind::MissingData,
                    format!("the database it was forked from (id {}) is gone", parent.id),
                ));
            }
        };
        if meta.parent.is_some_and(|p| p.depth >= parent.depth) {
            return Err(corrupt(
                db,
                CorruptionKind::Record,
                "fork ancestry does not shrink toward the root",
            ));
        }
        let at = ReadAt {
            incarnation: parent.id,
            txid: parent.txid,
            size_pages: parent.size_pages,
        };
        if at.txid > meta.head_txid {
            return Err(corrupt(
                db,
                CorruptionKind::Record,
                format!(
                    "forked at commit {} of a parent whose head is {}",
                    at.txid, meta.head_txid
                ),
            ));
        }
        let pgnos: Vec<u32> = pgnos.to_vec();
        self.read_pages(txn, db, None, &keys, &meta, &pgnos, at)
    }

    /// The database `id` if it is `db`'s current incarnation's ancestor (a
    /// restore or fork reads it): its keys and META.
    pub(crate) fn ancestor(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        meta: &Meta,
        id: u64,
    ) -> Result<(DbKeys, Meta)> {
        let gone = || {
            Fail::Api(Error::NotFound(format!(
                "{db} (the database this reader read was deleted)"
            )))
        };
        let mut parent = meta.parent;
        while let Some(p) = parent {
            let keys = DbKeys { id: p.id };
            let Some(v) = txn.get(&keys.meta())? else {
                return Err(gone());
            };
            let m = crate::decode_meta(db, &v)?;
            if p.id == id {
                return Ok((keys, m));
            }
            if m.parent.is_some_and(|q| q.depth >= p.depth) {
                return Err(gone());
            }
            parent = m.parent;
        }
        Err(gone())
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
        let found = txn.last_many(&ranges)?;
        for ((i, _), newest) in wanted.iter().zip(found) {
            let (Some(&pgno), Some(slot)) = (pgnos.get(*i), sources.get_mut(*i)) else {
                continue;
            };
            *slot = match newest {
                Some((k, v)) => {
                    let (_, loc) = crate::records::decode_pidx(&k, &v).ok_or_else(|| {
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
