//! Large commits: `commit_begin` reserves a txid (a PENDING record in the
//! KV, so any engine process can finish or clean it up), `commit_chunk`
//! stores one part — an LTX file of up to the fast-path limit of pages — in
//! its own transaction (parts may arrive in any order, concurrently), and
//! `commit_finish` checks the fence and flips the head, writing page-index
//! entries for every page, in one transaction. Until the flip the parts sit
//! above the head, invisible; a takeover removes them.

use std::time::Instant;

use kvlite_kv::{KvRead, ScanOptions, WriteTxn, chunked};

use kvlite_api::{
    CorruptionKind, Error, InvalidKind, Origin, TooLargeKind, growth_fill, growth_fill_count,
};

use crate::blob;
use crate::cache::{Loc, lock};
use crate::commit::{CommitPlan, Outcome, check_quota, validate_pages};
use crate::error::{Fail, Result, corrupt, invalid, too_large};
use crate::keys::DbKeys;
use crate::meta::Meta;
use crate::metrics::{CommitPath, PathLabel};
use crate::records::{DeltaInfo, PIDX_ENTRY_BYTES, Part, Pending};
use crate::{
    CommitResult, Engine, LOCK_PAGE, MAX_PAGES, PAGE_SIZE, PageRef, SHARD_PAGES, ZERO_PAGE,
    validate_name,
};

/// The most pages one commit may hold on a store whose transactions write
/// at most `max_txn_bytes`: its page-index entries must fit the finishing
/// transaction. With FoundationDB's 10 MB that is ~263k pages (~1 GiB).
pub fn max_commit_pages(max_txn_bytes: usize) -> u64 {
    (max_txn_bytes as u64).saturating_sub(1 << 20) / (PIDX_ENTRY_BYTES + 8)
}

/// Large commits one database may have reserved and not finished.
pub const MAX_RESERVATIONS: usize = 4;

/// Most orphan bytes one cleanup transaction removes.
const CLEANUP_BUDGET: u64 = 64 << 20;

impl Engine {
    /// The most pages one large commit may hold: its page-index entries must
    /// fit the finishing transaction.
    pub fn max_commit_pages(&self) -> u64 {
        max_commit_pages(self.kv.limits().max_txn_bytes)
    }

    /// Reserve a txid for a large commit that will leave the database at
    /// `new_size` pages.
    pub fn commit_begin(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        new_size: u32,
    ) -> kvlite_api::Result<u64> {
        let r = self.commit_begin_unobserved(db, generation, expected_head, new_size);
        self.observe_write(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_begin_unobserved(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        new_size: u32,
    ) -> kvlite_api::Result<u64> {
        validate_name(db)?;
        if new_size > MAX_PAGES {
            return Err(Error::invalid(
                InvalidKind::Size,
                format!("size {new_size} exceeds {MAX_PAGES} pages"),
            ));
        }
        let (txid, meta) = self.kv.transact(|txn| {
            let (_, keys, mut meta) = self.resolve(txn, db)?;
            self.fence_head(db, &meta, generation, expected_head)?;
            // Each reservation may park up to a commit's worth of parts: a
            // writer may hold only a few at once.
            let (ps, pe) = keys.pending_all();
            let reserved = txn
                .scan(&ps, &pe, ScanOptions::ALL)?
                .iter()
                .filter(|(k, _)| DbKeys::pending_part_number(k).is_none())
                .count();
            if reserved >= MAX_RESERVATIONS {
                return Err(too_large(
                    TooLargeKind::Commit,
                    format!(
                        "{reserved} large commits are already in progress on {db:?}; \
                         finish one first (at most {MAX_RESERVATIONS})"
                    ),
                ));
            }
            let txid = meta.next_txid;
            meta.next_txid += 1;
            // With no other reservation, nothing can land on a blank
            // database before this commit does (or until it is abandoned).
            let direct = meta.is_blank() && reserved == 0;
            txn.set(
                &keys.pending(txid),
                &Pending {
                    generation,
                    new_size,
                    direct,
                }
                .encode(),
            )?;
            txn.set(&keys.meta(), &meta.encode())?;
            Ok::<_, Fail>((txid, meta))
        })?;
        if let Some(state) = self.states.get(db) {
            lock(&state).meta = Some(meta);
        }
        Ok(txid)
    }

    /// Store part `part` of large commit `txid`. Re-sending a part replaces it.
    pub fn commit_chunk(
        &self,
        db: &str,
        generation: u64,
        txid: u64,
        part: u32,
        pages: &[PageRef<'_>],
    ) -> kvlite_api::Result<()> {
        let r = self.commit_chunk_unobserved(db, generation, txid, part, pages);
        self.observe_write(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_chunk_unobserved(
        &self,
        db: &str,
        generation: u64,
        txid: u64,
        part: u32,
        pages: &[PageRef<'_>],
    ) -> kvlite_api::Result<()> {
        validate_name(db)?;
        if pages.is_empty() {
            return Err(Error::invalid(
                InvalidKind::EmptyPart,
                "a part holds at least one page",
            ));
        }
        let (pending, parked) = self.kv.read(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            self.fence(db, &meta, generation)?;
            pending_and_parked(txn, db, &keys, (txid, part), generation)
        })?;
        let pages = validate_pages(pages, pending.new_size)?;
        // However many parts it sends, one commit holds at most what its
        // finish can index.
        let holds = parked.pages_of_commit + pages.len() as u64;
        if holds > self.max_commit_pages() {
            return Err(Error::too_large(
                TooLargeKind::Commit,
                format!(
                    "large commit {txid} would hold {holds} pages; a commit holds at most {}",
                    self.max_commit_pages()
                ),
            ));
        }
        let parked = parked.bytes;
        let raw = (pages.len() * PAGE_SIZE) as u64;
        if raw > self.config.fast_path_limit {
            return Err(Error::too_large(
                TooLargeKind::Part,
                format!(
                    "a part of {raw} bytes exceeds the {}-byte part limit",
                    self.config.fast_path_limit
                ),
            ));
        }
        let (shards, rest) = if pending.direct {
            whole_shards(&pages, pending.new_size)
        } else {
            (Vec::new(), pages)
        };
        let ltx = blob::encode(txid, pending.new_size, rest.iter().copied())?;
        let encoded_shards: Vec<(u32, Vec<u8>)> = shards
            .iter()
            .map(|(shard, pages)| {
                Ok((
                    *shard,
                    blob::encode(txid, pending.new_size, pages.iter().copied())?,
                ))
            })
            .collect::<Result<_>>()?;
        let pgnos: Vec<u32> = rest.iter().map(|p| p.0).collect();
        self.kv
            .transact(|txn| {
                let (_, keys, meta) = self.resolve(txn, db)?;
                self.fence(db, &meta, generation)?;
                // What the checks below read, in one read: the reservation,
                // this part's record if it was sent before, and for each
                // shard it stores in place its SLIST record and first chunk.
                let listed: Vec<u32> = encoded_shards.iter().map(|(s, _)| *s).collect();
                let record_key = keys.pending_part(txid, part);
                let mut wanted = vec![keys.pending(txid), record_key.clone()];
                wanted.extend(listed.iter().map(|&s| keys.slist(s)));
                wanted.extend(
                    listed
                        .iter()
                        .map(|&s| chunked::chunk_key(&keys.shard(s), 0)),
                );
                let refs: Vec<&[u8]> = wanted.iter().map(Vec::as_slice).collect();
                let mut got = txn.get_many(&refs)?.into_iter();
                let (reservation, replaced) = (got.next().flatten(), got.next().flatten());
                let slists: Vec<Option<Vec<u8>>> = got.by_ref().take(listed.len()).collect();
                let first_chunks: Vec<Option<Vec<u8>>> = got.collect();
                debug_assert_eq!(first_chunks.len(), listed.len());
                pending_in(db, txid, generation, reservation.as_deref())?;
                let prefix = keys.delta_part(txid, part);
                let chunks = |len: usize| len.div_ceil(txn.limits().max_value_size) as u64;
                let mut stored = blob::stored_bytes(prefix.len(), chunks(ltx.len()), ltx.len());
                for (shard, shard_ltx) in &encoded_shards {
                    stored += blob::stored_bytes(
                        keys.shard(*shard).len(),
                        chunks(shard_ltx.len()),
                        shard_ltx.len(),
                    );
                }
                // Parts of unfinished commits count too, or a writer that
                // never finishes could store without bound. They are summed
                // on a snapshot so concurrent parts do not conflict; finish
                // checks the exact total.
                let used = meta.used_bytes().saturating_add(parked);
                check_quota(db, &meta, pending.new_size > meta.size_pages, used, stored)?;
                let replaced = match replaced {
                    Some(v) => Some(decode_part(db, txid, part, &v)?),
                    None => None,
                };
                // A shard stored in place must be one no commit has made:
                // one that exists means the database changed since the
                // reservation (so this commit can never finish), and it
                // must not be overwritten.
                if let Some((s, _)) = listed.iter().zip(&slists).find(|(_, v)| v.is_some()) {
                    return Err(invalid(
                        InvalidKind::LargeCommit,
                        format!(
                            "large commit {txid}: shard {s} of {db:?} exists; the database \
                             changed since the commit was reserved"
                        ),
                    ));
                }
                // A shard holds one part's pages: chunks already stored for
                // one this part did not store before are another part's
                // (two parts writing the same key conflict, so one of them
                // sees the other's). Refused, so a shard is named by one
                // part record at most, and a part sent again clears only
                // its own.
                let ours = |s: u32| {
                    replaced
                        .as_ref()
                        .is_some_and(|r| r.shards.iter().any(|(o, _)| *o == s))
                };
                if let Some((&s, _)) = listed
                    .iter()
                    .zip(&first_chunks)
                    .find(|(s, stored)| stored.is_some() && !ours(**s))
                {
                    return Err(invalid(
                        InvalidKind::DuplicatePage,
                        format!(
                            "pages {}-{} (shard {s}) sent in two parts",
                            s * SHARD_PAGES,
                            s * SHARD_PAGES + SHARD_PAGES - 1
                        ),
                    ));
                }
                // A part sent again replaces its shards too.
                if let Some(old) = replaced {
                    let dropped: Vec<u32> = old
                        .shards
                        .iter()
                        .map(|(s, _)| *s)
                        .filter(|s| !listed.contains(s))
                        .collect();
                    clear_shards_in_place(txn, &keys, &dropped)?;
                }
                let bytes = blob::store(txn, &prefix, &ltx)?;
                let mut in_place = Vec::with_capacity(encoded_shards.len());
                for (shard, shard_ltx) in &encoded_shards {
                    in_place.push((*shard, blob::store(txn, &keys.shard(*shard), shard_ltx)?));
                }
                let record = Part {
                    bytes,
                    pgnos: pgnos.clone(),
                    shards: in_place,
                };
                txn.set(&record_key, &record.encode())?;
                Ok::<_, Fail>(())
            })
            .map_err(Error::from)
            .inspect_err(|e| {
                if matches!(e, Error::QuotaExceeded { .. }) {
                    self.metrics.quota_rejections.inc();
                    // The commit cannot finish: drop what it stored so far
                    // rather than leave it for the next takeover.
                    if let Err(cleanup) = self.abort_large(db, generation, txid) {
                        tracing::warn!(db, txid, %cleanup, "could not remove parts of a rejected commit");
                    }
                }
            })
    }

    /// Make large commit `txid` (parts `0..parts`) the new head.
    pub fn commit_finish(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
    ) -> kvlite_api::Result<CommitResult> {
        let r = self.commit_finish_unobserved(
            db,
            generation,
            expected_head,
            txid,
            parts,
            commit_id,
            None,
        );
        self.observe_write(r)
    }

    /// A migration's last commit: as [`Engine::commit_finish`], and in the
    /// same transaction the database becomes migrated and the lease of
    /// `holder` (which must still be its) is released.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit_finish_migrated(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
        holder: u128,
    ) -> kvlite_api::Result<CommitResult> {
        let r = self.commit_finish_unobserved(
            db,
            generation,
            expected_head,
            txid,
            parts,
            commit_id,
            Some(holder),
        );
        self.observe_write(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_finish_unobserved(
        &self,
        db: &str,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
        migration: Option<u128>,
    ) -> kvlite_api::Result<CommitResult> {
        let started = Instant::now();
        validate_name(db)?;
        let outcome = self.kv.transact(|txn| {
            self.finish_txn(
                txn,
                db,
                generation,
                expected_head,
                txid,
                parts,
                commit_id,
                migration,
            )
        });
        let outcome = match outcome {
            Err(Fail::Api(e @ Error::QuotaExceeded { .. })) => {
                self.metrics.quota_rejections.inc();
                // The commit changes nothing: drop its parts now rather than
                // leave them for the next takeover.
                if let Err(cleanup) = self.abort_large(db, generation, txid) {
                    tracing::warn!(db, txid, %cleanup, "could not remove parts of a rejected commit");
                }
                return Err(e);
            }
            other => other?,
        };
        if let Outcome::Committed(_, applied) = &outcome {
            let pages = applied.entries.len();
            self.metrics.commit_pages.observe(pages as f64);
            self.metrics
                .commit_bytes
                .observe((pages * PAGE_SIZE) as f64);
        }
        let result = self.finish_commit(db, outcome);
        self.metrics
            .commit_seconds
            .get_or_create(&PathLabel {
                path: CommitPath::Large,
            })
            .observe(started.elapsed().as_secs_f64());
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_txn(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        generation: u64,
        expected_head: u64,
        txid: u64,
        parts: u32,
        commit_id: u64,
        migration: Option<u128>,
    ) -> Result<Outcome> {
        let (_, keys, meta) = self.resolve(txn, db)?;
        if let Some(c) = meta
            .find_commit(commit_id)
            .filter(|c| c.is(commit_id, generation))
        {
            return Ok(Outcome::AlreadyLanded(CommitResult {
                txid: c.txid,
                size_pages: c.size_pages,
            }));
        }
        self.fence_head(db, &meta, generation, expected_head)?;
        let switch_origin = match migration {
            None => None,
            Some(holder) => {
                crate::v1::check_migrating(txn, db, &meta, holder)?;
                Some(Origin::MigratedFromV1)
            }
        };
        if txid <= meta.head_txid {
            return Err(invalid(
                InvalidKind::LargeCommit,
                format!("large commit {txid} is not above head {}", meta.head_txid),
            ));
        }
        let pending = pending_of(txn, db, &keys, txid, generation)?;
        let (start, end) = keys.pending_parts(txid);
        let stored = txn.scan(&start, &end, ScanOptions::ALL)?;
        if stored.len() != parts as usize {
            return Err(invalid(
                InvalidKind::LargeCommit,
                format!(
                    "large commit {txid}: {} of {parts} parts arrived",
                    stored.len()
                ),
            ));
        }
        let mut entries: Vec<(u32, Loc)> = Vec::new();
        let mut in_place: Vec<(u32, u64)> = Vec::new();
        let mut delta_bytes = 0u64;
        for (expected, (k, v)) in stored.iter().enumerate() {
            let part = DbKeys::pending_part_number(k)
                .ok_or_else(|| corrupt(db, CorruptionKind::Record, "malformed part key"))?;
            if part as usize != expected {
                return Err(invalid(
                    InvalidKind::LargeCommit,
                    format!("large commit {txid}: part {expected} missing"),
                ));
            }
            let p = decode_part(db, txid, part, v)?;
            // Checked when the part was stored; a record that disagrees now
            // is damaged, and its pages must not reach the page index.
            if let Some(bad) = p
                .pgnos
                .iter()
                .find(|&&pgno| pgno == 0 || pgno > pending.new_size || pgno == LOCK_PAGE)
            {
                return Err(corrupt(
                    db,
                    CorruptionKind::Record,
                    format!("part record {part} of large commit {txid} names page {bad}"),
                ));
            }
            if let Some((bad, _)) = p
                .shards
                .iter()
                .find(|&&(s, _)| !pending.direct || shard_page_count(s, pending.new_size) == 0)
            {
                return Err(corrupt(
                    db,
                    CorruptionKind::Record,
                    format!("part record {part} of large commit {txid} names shard {bad}"),
                ));
            }
            delta_bytes = delta_bytes
                .checked_add(p.bytes)
                .ok_or_else(|| corrupt(db, CorruptionKind::Counters, "part sizes overflow"))?;
            entries.extend(p.pgnos.into_iter().map(|pgno| (pgno, Loc { txid, part })));
            in_place.extend(p.shards);
        }
        entries.sort_unstable_by_key(|e| e.0);
        in_place.sort_unstable_by_key(|e| e.0);
        // Every page the commit wrote, ascending: the page index's and the
        // shards' (each in one place only).
        let mut written: Vec<u32> = entries.iter().map(|e| e.0).collect();
        written.extend(
            in_place
                .iter()
                .flat_map(|&(s, _)| shard_pages(s, pending.new_size)),
        );
        written.sort_unstable();
        if let Some(dup) = written.windows(2).find_map(|w| match w {
            [a, b] if a == b => Some(*a),
            _ => None,
        }) {
            return Err(invalid(
                InvalidKind::DuplicatePage,
                format!("page {dup} sent in two parts"),
            ));
        }
        if !in_place.is_empty() {
            // Nothing can land on a blank database while its direct commit
            // is reserved (a commit that did would have moved the head past
            // this one), so its shards are still none of the database's.
            debug_assert!(
                meta.is_blank(),
                "a direct commit finishes on a blank database"
            );
            if let Some(s) = existing_shards(
                txn,
                &keys,
                &in_place.iter().map(|e| e.0).collect::<Vec<_>>(),
            )?
            .first()
            {
                return Err(invalid(
                    InvalidKind::LargeCommit,
                    format!("large commit {txid}: shard {s} of {db:?} exists"),
                ));
            }
        }
        // A growing commit stores the pages it does not write as zeros, in
        // one more part. Count before listing: the new size comes from the
        // client, and a huge growth must be refused without allocating its
        // fill list.
        let total = written.len() as u64
            + growth_fill_count(meta.size_pages, pending.new_size, written.iter().copied());
        if total > self.max_commit_pages() {
            return Err(too_large(
                TooLargeKind::Commit,
                format!(
                    "a commit of {total} pages exceeds the {} page limit",
                    self.max_commit_pages()
                ),
            ));
        }
        let fill = growth_fill(meta.size_pages, pending.new_size, &written);
        let mut part_count = parts;
        if !fill.is_empty() {
            let ltx = blob::encode(
                txid,
                pending.new_size,
                fill.iter().map(|&p| (p, &ZERO_PAGE[..])),
            )?;
            delta_bytes += blob::store(txn, &keys.delta_part(txid, parts), &ltx)?;
            entries.extend(fill.iter().map(|&pgno| (pgno, Loc { txid, part: parts })));
            entries.sort_unstable_by_key(|e| e.0);
            written.extend_from_slice(&fill);
            written.sort_unstable();
            part_count += 1;
        }
        txn.clear(&keys.pending(txid))?;
        txn.clear_range(&start, &end)?;
        let (result, applied) = self.apply_commit(
            txn,
            db,
            &keys,
            &meta,
            CommitPlan {
                txid,
                new_size: pending.new_size,
                commit_id,
                delta: DeltaInfo::new(
                    delta_bytes,
                    part_count,
                    pending.new_size,
                    self.now_ms(),
                    &written,
                ),
                entries,
                shards: in_place,
                switch_origin,
            },
        )?;
        Ok(Outcome::Committed(result, Box::new(applied)))
    }

    /// Drop every part of an unfinished large commit.
    fn abort_large(&self, db: &str, generation: u64, txid: u64) -> Result<()> {
        self.kv.transact(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            self.fence(db, &meta, generation)?;
            if txid <= meta.head_txid {
                return Ok(());
            }
            let (ds, de) = keys.delta_txids(txid, txid.saturating_add(1));
            txn.clear_range(&ds, &de)?;
            let (ps, pe) = keys.pending_parts(txid);
            for (_, v) in txn.scan(&ps, &pe, ScanOptions::ALL)? {
                if let Some(record) = Part::decode(&v) {
                    let shards: Vec<u32> = record.shards.iter().map(|(s, _)| *s).collect();
                    clear_shards_in_place(txn, &keys, &shards)?;
                }
            }
            txn.clear_range(&ps, &pe)?;
            txn.clear(&keys.pending(txid))?;
            Ok(())
        })
    }
}

/// The whole shards among a direct commit's `pages` (ascending, inside
/// `new_size`, no lock page): every page a shard holds at that size, each
/// shard's pages apart; and the pages left over.
#[allow(clippy::type_complexity)]
fn whole_shards<'a>(
    pages: &[PageRef<'a>],
    new_size: u32,
) -> (Vec<(u32, Vec<PageRef<'a>>)>, Vec<PageRef<'a>>) {
    let mut shards = Vec::new();
    let mut rest = Vec::new();
    for group in pages.chunk_by(|a, b| a.0 / SHARD_PAGES == b.0 / SHARD_PAGES) {
        let Some(&(first, _)) = group.first() else {
            continue;
        };
        let shard = first / SHARD_PAGES;
        if group.len() as u32 == shard_page_count(shard, new_size) {
            shards.push((shard, group.to_vec()));
        } else {
            rest.extend_from_slice(group);
        }
    }
    (shards, rest)
}

/// The pages shard `shard` holds in a database of `size` pages: from page
/// 1, to the size, never the lock page.
pub(crate) fn shard_pages(shard: u32, size: u32) -> impl Iterator<Item = u32> {
    let first = shard.saturating_mul(SHARD_PAGES);
    let last = first.saturating_add(SHARD_PAGES - 1).min(size);
    (first.max(1)..=last).filter(|&p| p != LOCK_PAGE)
}

fn shard_page_count(shard: u32, size: u32) -> u32 {
    shard_pages(shard, size).count() as u32
}

/// Which of `shards` have a record: a shard of the database, not one a
/// direct commit stored in place.
fn existing_shards(txn: &mut impl KvRead, keys: &DbKeys, shards: &[u32]) -> Result<Vec<u32>> {
    let ks: Vec<Vec<u8>> = shards.iter().map(|&s| keys.slist(s)).collect();
    let refs: Vec<&[u8]> = ks.iter().map(Vec::as_slice).collect();
    Ok(shards
        .iter()
        .zip(txn.get_many(&refs)?)
        .filter(|(_, v)| v.is_some())
        .map(|(s, _)| *s)
        .collect())
}

/// Remove shards a direct commit stored in place that did not land: those
/// without a record (one with a record is the database's, whatever wrote
/// its chunks).
fn clear_shards_in_place(txn: &mut WriteTxn<'_>, keys: &DbKeys, shards: &[u32]) -> Result<()> {
    let existing = existing_shards(txn, keys, shards)?;
    for &s in shards.iter().filter(|s| !existing.contains(s)) {
        chunked::clear(txn, &keys.shard(s))?;
    }
    Ok(())
}

fn decode_part(db: &str, txid: u64, part: u32, v: &[u8]) -> Result<Part> {
    Part::decode(v).ok_or_else(|| {
        corrupt(
            db,
            CorruptionKind::Record,
            format!("malformed part record {part} of large commit {txid}"),
        )
    })
}

fn pending_of(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    txid: u64,
    generation: u64,
) -> Result<Pending> {
    let record = txn.get(&keys.pending(txid))?;
    pending_in(db, txid, generation, record.as_deref())
}

/// Reservation `txid`'s record, `record` as stored, checked to belong to
/// `generation`.
fn pending_in(db: &str, txid: u64, generation: u64, record: Option<&[u8]>) -> Result<Pending> {
    let Some(v) = record else {
        return Err(invalid(
            InvalidKind::LargeCommit,
            format!("no large commit {txid} in progress"),
        ));
    };
    let pending = Pending::decode(v).ok_or_else(|| {
        corrupt(
            db,
            CorruptionKind::Record,
            format!("malformed PENDING {txid}"),
        )
    })?;
    if pending.generation != generation {
        return Err(invalid(
            InvalidKind::LargeCommit,
            format!(
                "large commit {txid} belongs to generation {}",
                pending.generation
            ),
        ));
    }
    Ok(pending)
}

/// What unfinished large commits have parked, except part `skip` (which a
/// re-sent part replaces).
#[derive(Default)]
struct Parked {
    /// Bytes stored by all of them.
    bytes: u64,
    /// Pages stored by parts of `skip`'s commit.
    pages_of_commit: u64,
}

/// Reservation `txid` (checked to belong to `generation`) and what every
/// unfinished large commit has parked but its part `part` (which a re-sent
/// part replaces): one scan, the reservation's record being among them.
fn pending_and_parked(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    (txid, part): (u64, u32),
    generation: u64,
) -> Result<(Pending, Parked)> {
    let (start, end) = keys.pending_all();
    let records = txn.scan(&start, &end, ScanOptions::ALL)?;
    let own = keys.pending(txid);
    let record = records.iter().find(|(k, _)| *k == own);
    let pending = pending_in(db, txid, generation, record.map(|(_, v)| v.as_slice()))?;
    let mut out = Parked::default();
    for (k, v) in &records {
        let (Some(t), Some(p)) = (DbKeys::pending_txid(k), DbKeys::pending_part_number(k)) else {
            continue;
        };
        if (t, p) == (txid, part) {
            continue;
        }
        // A damaged record counts as nothing here; finish reports it.
        let Some(p) = Part::decode(v) else { continue };
        out.bytes = out.bytes.saturating_add(p.stored_bytes());
        if t == txid {
            let in_shards = p
                .shards
                .iter()
                .map(|&(s, _)| u64::from(shard_page_count(s, pending.new_size)));
            out.pages_of_commit += p.pgnos.len() as u64 + in_shards.sum::<u64>();
        }
    }
    Ok((pending, out))
}

/// Remove up to [`CLEANUP_BUDGET`] bytes of unfinished large commits.
/// Returns true when none remain.
/// Records of unfinished large commits one cleaning pass looks at.
const ORPHAN_RECORDS: usize = 1024;

pub(crate) fn clean_some_orphans(
    txn: &mut WriteTxn<'_>,
    keys: &DbKeys,
    meta: &Meta,
) -> Result<bool> {
    let (start, end) = keys.pending_all();
    let records = txn.scan(&start, &end, ScanOptions::limit(ORPHAN_RECORDS))?;
    if records.is_empty() {
        // Nothing tracked: anything above the head is garbage from a bug or a
        // foreign writer; a range clear costs nothing when it is empty.
        let (ds, de) = keys.delta_txids(meta.head_txid.saturating_add(1), meta.next_txid);
        txn.clear_range(&ds, &de)?;
        // Likewise shard chunks in a blank database (a direct commit's,
        // abandoned and cleaned by an engine that did not know shards in
        // place).
        if meta.is_blank() {
            let (ss, se) = keys.shards_all();
            txn.clear_range(&ss, &se)?;
        }
        return Ok(true);
    }
    let mut budget = CLEANUP_BUDGET;
    for (k, v) in &records {
        if let (Some(txid), Some(part)) = (DbKeys::pending_txid(k), DbKeys::pending_part_number(k))
        {
            let record = Part::decode(v);
            let bytes = record.as_ref().map_or(0, Part::stored_bytes);
            // A reservation's txid is never any commit's (txids are handed
            // out once), even when the head has moved past it.
            chunked::clear(txn, &keys.delta_part(txid, part))?;
            if let Some(record) = record {
                let shards: Vec<u32> = record.shards.iter().map(|(s, _)| *s).collect();
                clear_shards_in_place(txn, keys, &shards)?;
            }
            txn.clear(k)?;
            budget = budget.saturating_sub(bytes.max(1));
            if budget == 0 {
                return Ok(false);
            }
        }
    }
    // Reservations go once all their parts are gone (then every chunk of the
    // txid goes too, including a part whose record never landed).
    let mut left = false;
    for (k, _) in &records {
        let (Some(txid), None) = (DbKeys::pending_txid(k), DbKeys::pending_part_number(k)) else {
            continue;
        };
        let (ps, pe) = keys.pending_parts(txid);
        if txn.scan(&ps, &pe, ScanOptions::limit(1))?.is_empty() {
            let (ds, de) = keys.delta_txids(txid, txid.saturating_add(1));
            txn.clear_range(&ds, &de)?;
            txn.clear(k)?;
        } else {
            left = true;
        }
    }
    Ok(records.len() < ORPHAN_RECORDS && !left)
}
