//! Commits. The fast path is one KV transaction: read META, check the fence
//! and the commit id, write one LTX delta, its page-index entries and the
//! new META. Everything after the fence is shared with large commits
//! ([`Engine::apply_commit`]).

use std::time::{Duration, Instant};

use kvlite_kv::WriteTxn;

use kvlite_api::{
    CorruptionKind, Error, InvalidKind, Origin, TooLargeKind, growth_fill, growth_fill_count,
};

use crate::blob;
use crate::cache::{Loc, lock};
use crate::compactor::Cause;
use crate::error::{Fail, Result, corrupt, invalid, too_large};
use crate::keys::DbKeys;
use crate::meta::{Meta, RecentCommit};
use crate::metrics::{CommitPath, CommitPhase, PathLabel};
use crate::records::{DeltaInfo, SLIST_ENTRY_BYTES, ShardInfo, encode_pidx};
use crate::{
    CommitRequest, CommitResult, CommitStatus, Engine, LOCK_PAGE, MAX_PAGES, PAGE_SIZE, PageRef,
    ZERO_PAGE, validate_name,
};

/// A database size a client sent (a commit's, a reader's): at most [`MAX_PAGES`].
pub(crate) fn check_size(size: u32) -> Result<()> {
    if size > MAX_PAGES {
        return Err(invalid(
            InvalidKind::Size,
            format!("size {size} pages exceeds the maximum of {MAX_PAGES}"),
        ));
    }
    Ok(())
}

/// Check a page list from a client and return it sorted. Rejects page 0,
/// pages past `new_size`, wrong lengths and duplicates; drops SQLite's lock
/// page if it is all zeros (it is never stored).
pub(crate) fn validate_pages<'a>(pages: &[PageRef<'a>], new_size: u32) -> Result<Vec<PageRef<'a>>> {
    check_size(new_size)?;
    let mut sorted = Vec::with_capacity(pages.len());
    for &(pgno, data) in pages {
        if pgno == 0 {
            return Err(invalid(InvalidKind::PageNumber, "page numbers start at 1"));
        }
        if data.len() != PAGE_SIZE {
            return Err(invalid(
                InvalidKind::PageLength,
                format!("page {pgno} is {} bytes; pages are {PAGE_SIZE}", data.len()),
            ));
        }
        if pgno > new_size {
            return Err(invalid(
                InvalidKind::PagePastSize,
                format!("page {pgno} is past the new size of {new_size} pages"),
            ));
        }
        if pgno == LOCK_PAGE {
            if data.iter().any(|&b| b != 0) {
                return Err(invalid(
                    InvalidKind::LockPage,
                    format!("page {pgno} is SQLite's lock page"),
                ));
            }
            continue;
        }
        sorted.push((pgno, data));
    }
    sorted.sort_unstable_by_key(|&(p, _)| p);
    if let Some(dup) = sorted.windows(2).find_map(|w| match w {
        [a, b] if a.0 == b.0 => Some(a.0),
        _ => None,
    }) {
        return Err(invalid(
            InvalidKind::DuplicatePage,
            format!("page {dup} appears twice"),
        ));
    }
    Ok(sorted)
}

/// Subtract `amount` from a usage counter kept in META; going below zero
/// means META disagrees with the keys it counts, which is corruption, not a
/// reason to wrap around.
pub(crate) fn debit(db: &str, counter: &mut u64, amount: u64, what: &str) -> Result<()> {
    *counter = counter.checked_sub(amount).ok_or_else(|| {
        corrupt(
            db,
            CorruptionKind::Counters,
            format!("META {what} would go below zero"),
        )
    })?;
    Ok(())
}

/// Add `amount` to a usage counter kept in META; overflowing means META is
/// corrupt (no real database comes near `u64::MAX` bytes).
pub(crate) fn credit(db: &str, counter: &mut u64, amount: u64, what: &str) -> Result<()> {
    *counter = counter.checked_add(amount).ok_or_else(|| {
        corrupt(
            db,
            CorruptionKind::Counters,
            format!("META {what} would overflow"),
        )
    })?;
    Ok(())
}

/// The quota rule, in one place. A quota of 0 is no limit. A change that
/// does not grow the database (no page past its current size) is always
/// allowed, even over the quota: it only replaces or drops pages, whose old
/// copies compaction reclaims, so a full database can still DELETE, DROP
/// TABLE and VACUUM its way back under its quota. A growing change must
/// leave the stored bytes (`used` + `needed`) within the quota.
pub(crate) fn check_quota(
    db: &str,
    meta: &Meta,
    grows: bool,
    used: u64,
    needed: u64,
) -> Result<()> {
    let quota = meta.quota_bytes;
    // A migration copies a database that already exists (as v1): refusing
    // it half-way would leave the database unusable in both layouts.
    if meta.origin == Origin::MigratingFromV1
        || quota == 0
        || !grows
        || needed == 0
        || used.saturating_add(needed) <= quota
    {
        return Ok(());
    }
    Err(Fail::Api(Error::QuotaExceeded {
        db: db.to_string(),
        used,
        needed,
        quota,
    }))
}

fn decode_dlist(db: &str, txid: u64, dlist: &[u8]) -> Result<DeltaInfo> {
    DeltaInfo::decode(dlist).ok_or_else(|| {
        corrupt(
            db,
            CorruptionKind::Record,
            format!("malformed DLIST {txid}"),
        )
    })
}

/// Delete delta `txid` (its chunks and its DLIST entry, whose value is
/// `dlist`) and take it out of META's counters.
pub(crate) fn delete_delta(
    txn: &mut WriteTxn<'_>,
    db: &str,
    keys: &DbKeys,
    txid: u64,
    dlist: &[u8],
    meta: &mut Meta,
) -> Result<()> {
    let info = decode_dlist(db, txid, dlist)?;
    let (ds, de) = keys.delta_txids(txid, txid.saturating_add(1));
    txn.clear_range(&ds, &de)?;
    txn.clear(&keys.dlist(txid))?;
    debit(db, &mut meta.delta_count, 1, "delta count")?;
    debit(
        db,
        &mut meta.delta_bytes,
        info.bytes + DeltaInfo::stored_entry_bytes(dlist),
        "delta bytes",
    )
}

/// Drop delta `txid`'s pages (its chunks), keeping its DLIST record (what
/// the commit was, for the history list and reads there), and take them
/// out of META's counters. Returns whether there were pages to drop.
pub(crate) fn drop_delta_pages(
    txn: &mut WriteTxn<'_>,
    db: &str,
    keys: &DbKeys,
    txid: u64,
    dlist: &[u8],
    meta: &mut Meta,
) -> Result<bool> {
    let info = decode_dlist(db, txid, dlist)?;
    if info.parts == 0 {
        return Ok(false);
    }
    let (ds, de) = keys.delta_txids(txid, txid.saturating_add(1));
    txn.clear_range(&ds, &de)?;
    let record = DeltaInfo {
        bytes: 0,
        parts: 0,
        ..info.clone()
    };
    let encoded = record.encode();
    txn.set(&keys.dlist(txid), &encoded)?;
    debit(
        db,
        &mut meta.delta_bytes,
        info.bytes + DeltaInfo::stored_entry_bytes(dlist),
        "delta bytes",
    )?;
    credit(
        db,
        &mut meta.delta_bytes,
        DeltaInfo::stored_entry_bytes(&encoded),
        "delta bytes",
    )?;
    Ok(true)
}

/// Merge written pages and zero-filled pages (both sorted) into one sorted stream.
pub(crate) fn with_fill<'a>(
    pages: &'a [PageRef<'a>],
    fill: &'a [u32],
) -> impl Iterator<Item = PageRef<'a>> + 'a {
    let mut a = pages.iter().copied().peekable();
    let mut b = fill.iter().map(|&p| (p, &ZERO_PAGE[..])).peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.0 < x.0 => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// A commit's effect, for updating the in-memory state afterwards.
pub(crate) struct Applied {
    pub old_version: u64,
    pub meta: Meta,
    pub truncated_from: Option<u32>,
    pub entries: Vec<(u32, Loc)>,
}

pub(crate) enum Outcome {
    Committed(CommitResult, Box<Applied>),
    /// The commit id had already landed; nothing was written.
    AlreadyLanded(CommitResult),
}

impl Engine {
    /// The one-round-trip commit.
    pub fn commit(&self, req: &CommitRequest<'_>) -> kvlite_api::Result<CommitResult> {
        let r = self.fast_commit(req);
        if matches!(r, Err(Error::StoreFull(_))) {
            // Folding overwritten versions is what frees space: a full
            // store is a reason to compact (the compactor backs off while
            // its own writes fail).
            if let Some(meta) = self.states.get(req.db).and_then(|s| lock(&s).meta.clone()) {
                self.maybe_signal_compaction(req.db, &meta, Cause::Urgent);
            }
        }
        self.observe_write(r)
    }

    fn fast_commit(&self, req: &CommitRequest<'_>) -> kvlite_api::Result<CommitResult> {
        let started = Instant::now();
        validate_name(req.db)?;
        let pages = validate_pages(req.pages, req.new_size)?;
        let written: Vec<u32> = pages.iter().map(|p| p.0).collect();
        self.metrics.commit_pages.observe(pages.len() as f64);
        self.metrics
            .commit_bytes
            .observe((pages.len() * PAGE_SIZE) as f64);

        // Encode before taking the write transaction when this engine knows
        // the next txid (it does for the database's own writer); re-encoded
        // inside only if the guess was wrong.
        let mut encoded: Option<(u64, u32, Vec<u8>)> = None;
        let hint = self.states.get(req.db).and_then(|s| lock(&s).meta.clone());
        if let Some(m) = hint.filter(|m| m.head_txid == req.expected_head) {
            let count = pages.len() as u64
                + growth_fill_count(m.size_pages, req.new_size, written.iter().copied());
            if count * PAGE_SIZE as u64 <= m.fast_path_limit {
                let fill = growth_fill(m.size_pages, req.new_size, &written);
                let t = Instant::now();
                encoded = Some((
                    m.next_txid,
                    m.size_pages,
                    blob::encode(m.next_txid, req.new_size, with_fill(&pages, &fill))?,
                ));
                self.metrics.phase(CommitPhase::Encode, t.elapsed());
            }
        }

        // The writer's own view of META, trusted by the first attempt if it
        // matches the request (the commit then checks it holds, instead of
        // reading it); a retry reads.
        let mut view = self.guarded_view(req);

        // The KV write phase is the transaction minus its body: the backend's
        // commit (fsync, network) plus any conflict retries.
        let mut in_body = Duration::ZERO;
        let transact_started = Instant::now();
        let outcome = self.kv.transact(|txn| {
            let t = Instant::now();
            let r = self.fast_commit_txn(txn, req, view.take(), &pages, &written, &mut encoded);
            in_body = t.elapsed();
            r
        });
        let transact_time = transact_started.elapsed();
        let outcome = match outcome {
            Err(Fail::Api(e @ Error::QuotaExceeded { .. })) => {
                self.metrics.quota_rejections.inc();
                return Err(e);
            }
            other => other?,
        };
        self.metrics
            .phase(CommitPhase::KvWrite, transact_time.saturating_sub(in_body));
        let result = self.finish_commit(req.db, outcome);
        self.metrics
            .commit_seconds
            .get_or_create(&PathLabel {
                path: CommitPath::Fast,
            })
            .observe(started.elapsed().as_secs_f64());
        Ok(result)
    }

    /// This engine's view of the database (its id and META) if commits may
    /// trust it (`EngineConfig::guarded_commits`) and it is the request's
    /// writer at the request's head, with the commit not known to have
    /// landed (which only a read of META may say).
    fn guarded_view(&self, req: &CommitRequest<'_>) -> Option<(DbKeys, Meta)> {
        if !self.saves_round_trips(self.config.guarded_commits) {
            return None;
        }
        let state = self.states.get(req.db)?;
        let s = lock(&state);
        let meta = s.meta.as_ref().filter(|m| {
            m.generation == req.generation
                && m.head_txid == req.expected_head
                && m.find_commit(req.commit_id).is_none()
        })?;
        Some((DbKeys { id: s.id }, meta.clone()))
    }

    fn fast_commit_txn(
        &self,
        txn: &mut WriteTxn<'_>,
        req: &CommitRequest<'_>,
        view: Option<(DbKeys, Meta)>,
        pages: &[PageRef<'_>],
        written: &[u32],
        encoded: &mut Option<(u64, u32, Vec<u8>)>,
    ) -> Result<Outcome> {
        let t = Instant::now();
        let (keys, meta) = match view {
            Some((keys, meta)) => {
                // The commit applies only if the store still holds exactly
                // this view (a changed META is a conflict: retried, reading).
                let encoded_meta = meta.encode();
                debug_assert_eq!(
                    crate::decode_meta(req.db, &encoded_meta).ok().as_ref(),
                    Some(&meta),
                    "META encodes to what it decodes from"
                );
                txn.expect(&crate::keys::dir(req.db), &keys.id.to_be_bytes())?;
                txn.expect(&keys.meta(), &encoded_meta)?;
                (keys, meta)
            }
            None => {
                let (_, keys, meta) = self.resolve(txn, req.db)?;
                (keys, meta)
            }
        };
        if let Some(c) = meta
            .find_commit(req.commit_id)
            .filter(|c| c.is(req.commit_id, req.generation))
        {
            return Ok(Outcome::AlreadyLanded(CommitResult {
                txid: c.txid,
                size_pages: c.size_pages,
            }));
        }
        self.fence_head(req.db, &meta, req.generation, req.expected_head)?;
        self.metrics.phase(CommitPhase::Fence, t.elapsed());

        let fill_count = growth_fill_count(meta.size_pages, req.new_size, written.iter().copied());
        let raw = (pages.len() as u64 + fill_count) * PAGE_SIZE as u64;
        if raw > meta.fast_path_limit {
            return Err(too_large(
                TooLargeKind::FastPath,
                format!(
                    "{raw} bytes of pages exceed the one-round-trip limit of {} bytes; use a large commit",
                    meta.fast_path_limit
                ),
            ));
        }
        let txid = meta.next_txid;
        let fill = growth_fill(meta.size_pages, req.new_size, written);
        if !matches!(encoded, Some((t, s, _)) if *t == txid && *s == meta.size_pages) {
            let t = Instant::now();
            *encoded = Some((
                txid,
                meta.size_pages,
                blob::encode(txid, req.new_size, with_fill(pages, &fill))?,
            ));
            self.metrics.phase(CommitPhase::Encode, t.elapsed());
        }
        let Some((_, _, ltx)) = encoded else {
            return Err(Fail::Api(Error::Internal("commit encoding lost".into())));
        };
        // `txid` is META's next: no commit has stored under it.
        let delta_bytes = blob::store_new(txn, &keys.delta_part(txid, 0), ltx)?;
        let entries: Vec<u32> = with_fill(pages, &fill).map(|p| p.0).collect();
        let (result, applied) = self.apply_commit(
            txn,
            req.db,
            &keys,
            &meta,
            CommitPlan {
                txid,
                new_size: req.new_size,
                commit_id: req.commit_id,
                delta: DeltaInfo::new(delta_bytes, 1, req.new_size, self.now_ms(), &entries),
                entries: entries
                    .into_iter()
                    .map(|p| (p, Loc { txid, part: 0 }))
                    .collect(),
                shards: Vec::new(),
                switch_origin: None,
            },
        )?;
        Ok(Outcome::Committed(result, Box::new(applied)))
    }

    /// Record a landed commit in the in-memory state (page-index memo only if
    /// it was current before the commit).
    pub(crate) fn finish_commit(&self, db: &str, outcome: Outcome) -> CommitResult {
        match outcome {
            Outcome::AlreadyLanded(r) => r,
            Outcome::Committed(result, applied) => {
                self.maybe_signal_compaction(db, &applied.meta, Cause::Commit);
                if let Some(state) = self.states.get(db) {
                    let mut s = lock(&state);
                    if let Some(mut pidx) = s.pidx.take() {
                        if pidx.version == applied.old_version {
                            let before = pidx.entries.len();
                            if let Some(from) = applied.truncated_from {
                                pidx.entries.split_off(&from);
                            }
                            pidx.entries.extend(applied.entries.iter().copied());
                            pidx.version = applied.meta.version;
                            self.states.adjust(before, pidx.entries.len());
                            s.pidx = Some(pidx);
                        } else {
                            self.states.adjust(pidx.entries.len(), 0);
                        }
                    }
                    s.meta = Some(applied.meta);
                }
                result
            }
        }
    }

    /// Whether a commit id landed (for a client that lost its connection
    /// mid-commit), or the database's current state if it did not.
    pub fn commit_status(&self, db: &str, commit_id: u64) -> kvlite_api::Result<CommitStatus> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| {
            let (_, _, meta) = self.resolve(txn, db)?;
            Ok::<_, crate::error::Fail>(match meta.find_commit(commit_id) {
                Some(c) => CommitStatus::Landed(CommitResult {
                    txid: c.txid,
                    size_pages: c.size_pages,
                }),
                None => CommitStatus::NotLanded {
                    generation: meta.generation,
                    head_txid: meta.head_txid,
                },
            })
        })?)
    }

    /// Everything a commit does once its delta is stored: truncation,
    /// page-index entries, DLIST, quota and META. Reads the page index (if it
    /// must) before writing any of it, so what it caches is the snapshot's.
    pub(crate) fn apply_commit(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        plan: CommitPlan,
    ) -> Result<(CommitResult, Applied)> {
        let t = Instant::now();
        let mut next = meta.clone();
        // A shrinking commit only records the new size: the versions past
        // the end stay for readers of earlier commits until compaction folds
        // past this one (and a page past the end is never read at a commit
        // that ends before it; growing again rewrites every page it adds).
        let truncated_from = (plan.new_size < meta.size_pages).then_some(plan.new_size + 1);
        // Every version is a new key: nothing this commit writes replaces
        // an entry, so it reads none.
        for (pgno, loc) in &plan.entries {
            txn.set(&keys.pidx(*pgno, loc.txid), &encode_pidx(loc.part))?;
        }
        self.metrics.phase(CommitPhase::PageIndex, t.elapsed());
        txn.set(&keys.dlist(plan.txid), &plan.delta.encode())?;
        // Shards a direct large commit stored in place become the
        // database's, as of this commit.
        for &(shard, bytes) in &plan.shards {
            txn.set(
                &keys.slist(shard),
                &ShardInfo {
                    bytes,
                    txid: plan.txid,
                }
                .encode(),
            )?;
            credit(db, &mut next.shard_count, 1, "shard count")?;
            credit(
                db,
                &mut next.shard_bytes,
                bytes + SLIST_ENTRY_BYTES,
                "shard bytes",
            )?;
        }
        if !plan.shards.is_empty() {
            next.shard_epoch += 1;
            // The database was blank: everything before this commit is
            // folded, and the commit too when all its pages are in shards.
            // So the doctor replays only its indexed pages over the shards,
            // and no pass can fold to a point before the shards' commit.
            let folded = if plan.entries.is_empty() {
                plan.txid
            } else {
                plan.txid.saturating_sub(1)
            };
            next.materialized_txid = next.materialized_txid.max(folded);
        }

        credit(
            db,
            &mut next.pidx_count,
            plan.entries.len() as u64,
            "page-index count",
        )?;
        credit(db, &mut next.delta_count, 1, "delta count")?;
        credit(
            db,
            &mut next.delta_bytes,
            plan.delta.bytes + plan.delta.entry_bytes(),
            "delta bytes",
        )?;
        debug_assert!(plan.txid > meta.head_txid && plan.txid < meta.next_txid.max(plan.txid + 1));
        debug_assert!(
            plan.entries
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.0 < b.0)),
            "page-index entries of a commit are ascending and unique"
        );
        debug_assert!(
            plan.entries
                .iter()
                .all(|(p, l)| l.txid == plan.txid && *p >= 1 && *p <= plan.new_size),
            "a commit's entries name its own delta and pages inside the database"
        );
        next.head_txid = plan.txid;
        // A large commit reserved before another one may finish first: the
        // later reservation's txid must never be handed out again.
        next.next_txid = meta.next_txid.max(plan.txid + 1);
        next.size_pages = plan.new_size;
        next.version += 1;
        let result = CommitResult {
            txid: plan.txid,
            size_pages: plan.new_size,
        };
        next.remember_commit(RecentCommit {
            commit_id: plan.commit_id,
            generation: meta.generation,
            txid: plan.txid,
            size_pages: plan.new_size,
        });
        let meta_key = keys.meta();
        let (used_before, used_after) = (meta.used_bytes(), next.used_bytes());
        if let Some(origin) = plan.switch_origin {
            // The migration's last commit: the head it publishes and the
            // origin that lets clients open the database land together.
            debug_assert_eq!(meta.origin, Origin::MigratingFromV1);
            next.origin = origin;
            txn.clear(&crate::v1::keys::lease(db))?;
        }
        check_quota(
            db,
            meta,
            plan.new_size > meta.size_pages,
            used_before,
            used_after.saturating_sub(used_before),
        )?;
        // The page index and the head change in this one transaction.
        debug_assert!(next.head_txid == plan.txid && next.version > meta.version);
        txn.set(&meta_key, &next.encode())?;
        Ok((
            result,
            Applied {
                old_version: meta.version,
                meta: next,
                truncated_from,
                entries: plan.entries,
            },
        ))
    }
}

/// What a commit writes once its fence has passed.
pub(crate) struct CommitPlan {
    pub txid: u64,
    pub new_size: u32,
    pub commit_id: u64,
    pub delta: DeltaInfo,
    /// Every page the delta holds, ascending, with where it lives.
    pub entries: Vec<(u32, Loc)>,
    /// Whole shards stored in place (a direct large commit's), with their
    /// stored bytes: the commit's other pages.
    pub shards: Vec<(u32, u64)>,
    /// Set by a migration's last commit: the origin the database takes.
    pub switch_origin: Option<Origin>,
}
