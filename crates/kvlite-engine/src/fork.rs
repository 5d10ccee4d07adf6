//! Reads in the past, the history list, forks and restores.
//!
//! A fork is a new database whose creation (commit 1) is its source as of
//! one commit: its META names the parent (id, commit, size there), and a
//! PIN key under the parent keeps that commit readable (compaction keeps
//! what reads there need, whatever the parent's retention). Nothing is
//! copied: a page the fork never wrote is read from its parent (see
//! `read.rs`), and a fork's compaction folds parent pages into the fork's
//! own shards only for shards the fork wrote. Forks of forks chain up to
//! [`MAX_FORK_DEPTH`] levels.
//!
//! A restore points a database's name at a fork of the chosen commit (a
//! new incarnation) and gives the incarnation it replaces a new name, so
//! the state before the restore stays a database of its own: metadata only,
//! and undone by restoring from that backup. The old writer is fenced: its
//! name now resolves to an incarnation whose generation it does not hold.
//!
//! A deleted database that forks still read becomes a ghost: its name goes,
//! its keys stay (marked by a GHOST key), until the last fork reading it is
//! deleted.

use kvlite_kv::{KvRead, ScanOptions, WriteTxn};

use kvlite_api::{
    CommitInfo, CorruptionKind, Error, ForkOrigin, Forked, HistoryPage, InvalidKind,
    MAX_FORK_DEPTH, Origin, ReadAt, ReadPoint, ReadState, Restored, Result, TooLargeKind,
    validate_name, validate_new_name,
};

use crate::error::{Fail, corrupt, invalid, too_large};
use crate::history;
use crate::keys::{self, DbKeys};
use crate::meta::{Meta, Parent};
use crate::records::{DeltaInfo, encode_u32};
use crate::{Engine, decode_id};

fn unavailable(detail: String) -> Fail {
    Fail::Api(Error::invalid(InvalidKind::HistoryUnavailable, detail))
}

fn decode_dlist(db: &str, k: &[u8], v: &[u8]) -> crate::error::Result<DeltaInfo> {
    DeltaInfo::decode(v)
        .ok_or_else(|| corrupt(db, CorruptionKind::Record, format!("malformed DLIST {k:?}")))
}

/// Append one incarnation's commits before `until`, newest first, down to
/// its floor, until `out` holds `limit`.
fn own_commits(
    txn: &mut impl KvRead,
    db: &str,
    keys: &DbKeys,
    meta: &Meta,
    until: u64,
    limit: usize,
    out: &mut Vec<CommitInfo>,
) -> crate::error::Result<()> {
    let room = limit.saturating_sub(out.len());
    let (start, end) = keys.dlist_range(meta.history_floor, until);
    for (k, v) in txn.scan(&start, &end, ScanOptions::limit(room).reversed())? {
        let info = decode_dlist(db, &k, &v)?;
        out.push(CommitInfo {
            txid: DbKeys::dlist_txid(&k).unwrap_or(0),
            time_ms: info.time_ms,
            size_pages: info.size_pages.unwrap_or(0),
            pages: info.pages,
            bytes: info.bytes + DeltaInfo::stored_entry_bytes(&v),
            origin: None,
        });
    }
    // The floor's own record may be gone (no history kept, or a window the
    // head outlived): META says what it was. A creation is no commit.
    let floor = meta.history_floor;
    let listed = out.last().is_some_and(|c| c.txid == floor)
        || out.len() >= limit
        || floor >= until
        || floor <= meta.created_txid
        || meta.history_floor_size == u32::MAX;
    if !listed && txn.get(&keys.dlist(floor))?.is_none() {
        out.push(CommitInfo {
            txid: floor,
            time_ms: meta.history_floor_time_ms,
            size_pages: meta.history_floor_size,
            pages: 0,
            bytes: 0,
            origin: None,
        });
    }
    // A fork's or restore's creation: what it started as.
    if let Some(parent) = meta.parent
        && meta.created_txid < until
        && out.len() < limit
    {
        out.push(CommitInfo {
            txid: meta.created_txid,
            time_ms: meta.created_ms,
            size_pages: parent.size_pages,
            pages: 0,
            bytes: 0,
            origin: Some(ForkOrigin {
                name: name_of(txn, parent.id)?,
                id: parent.id,
                txid: parent.txid,
                size_pages: parent.size_pages,
            }),
        });
    }
    Ok(())
}

/// Mark a new incarnation with the call that made it (as a commit id of its
/// creation), so a retry of that call knows it landed.
fn mark(meta: &mut Meta, nonce: u64) {
    meta.remember_commit(crate::meta::RecentCommit {
        commit_id: nonce,
        generation: meta.generation,
        txid: meta.head_txid,
        size_pages: meta.size_pages,
    });
}

/// A new incarnation (a fork, a restore) starts at the commit after
/// `after` with `size_pages` pages: its creation is its floor.
fn start_after(meta: &mut Meta, after: u64, size_pages: u32) {
    let created = after.saturating_add(1);
    meta.created_txid = created;
    meta.head_txid = created;
    meta.next_txid = created.saturating_add(1);
    meta.materialized_txid = created;
    meta.history_floor = created;
    meta.history_floor_size = size_pages;
    meta.history_floor_time_ms = meta.created_ms;
    meta.size_pages = size_pages;
}

/// The floor commit as a read position (META says its size).
fn floor_at(db: &str, keys: &DbKeys, meta: &Meta) -> crate::error::Result<ReadAt> {
    if meta.history_floor_size == u32::MAX {
        return Err(unavailable(format!(
            "{db:?} keeps no size for commit {} (written by an older build)",
            meta.history_floor
        )));
    }
    Ok(ReadAt {
        incarnation: keys.id,
        txid: meta.history_floor,
        size_pages: meta.history_floor_size,
    })
}

impl Engine {
    /// The committed state `point` names: the newest commit at or before
    /// it, as a read position. Refused (`HistoryUnavailable`) outside what
    /// the database keeps.
    pub(crate) fn resolve_point_in(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        point: ReadPoint,
    ) -> crate::error::Result<ReadAt> {
        let at = |txid: u64, size_pages: u32| ReadAt {
            incarnation: keys.id,
            txid,
            size_pages,
        };
        let floor = meta.history_floor;
        // Before this incarnation existed, the database was its parent.
        let before_creation = match point {
            ReadPoint::Txid(t) => t < meta.created_txid,
            ReadPoint::TimeMs(ts) => ts < meta.created_ms,
        };
        if let (true, Some(parent)) = (before_creation, meta.parent) {
            let pkeys = DbKeys { id: parent.id };
            let pmeta = match txn.get(&pkeys.meta())? {
                Some(v) => crate::decode_meta(db, &v)?,
                None => {
                    return Err(unavailable(format!(
                        "{db:?} no longer keeps its history before commit {}",
                        meta.created_txid
                    )));
                }
            };
            if pmeta.parent.is_some_and(|p| p.depth >= parent.depth) {
                return Err(corrupt(db, CorruptionKind::Record, "fork ancestry loops"));
            }
            let at = self.resolve_point_in(txn, db, &pkeys, &pmeta, point)?;
            if at.txid >= meta.created_txid {
                // A time after the parent's last commit this database saw.
                return self.resolve_point_in(
                    txn,
                    db,
                    &pkeys,
                    &pmeta,
                    ReadPoint::Txid(meta.created_txid - 1),
                );
            }
            // Only commits the parent still allows (the pin, its floor).
            crate::read::check_readable(txn, db, &pkeys, &pmeta, at)?;
            return Ok(at);
        }
        match point {
            ReadPoint::Txid(t) if t > meta.head_txid => Err(unavailable(format!(
                "{db:?} has no commit {t} yet (head {})",
                meta.head_txid
            ))),
            ReadPoint::Txid(t) if t == meta.head_txid => Ok(at(t, meta.size_pages)),
            ReadPoint::Txid(t) => {
                if t < floor {
                    // Below the floor only a pinned commit is readable.
                    return match history::pinned_at(txn, db, keys, t)? {
                        Some(size) => Ok(at(t, size)),
                        None => Err(unavailable(format!(
                            "{db:?} no longer keeps commit {t} (its history starts at commit {floor})"
                        ))),
                    };
                }
                // Every commit after the floor has its record: the newest
                // at or before `t` is it, else the floor (META says what
                // the floor was; its own record may be gone).
                let (start, end) = keys.dlist_range(floor.saturating_add(1), t.saturating_add(1));
                match txn
                    .scan(&start, &end, ScanOptions::limit(1).reversed())?
                    .pop()
                {
                    Some((k, v)) => {
                        let txid = DbKeys::dlist_txid(&k).unwrap_or(0);
                        match decode_dlist(db, &k, &v)?.size_pages {
                            Some(size) => Ok(at(txid, size)),
                            None => Err(unavailable(format!(
                                "{db:?} keeps no size for commit {txid} (written by an older build)"
                            ))),
                        }
                    }
                    None => floor_at(db, keys, meta),
                }
            }
            ReadPoint::TimeMs(ts) => {
                if ts >= self.now_ms() {
                    return Ok(at(meta.head_txid, meta.size_pages));
                }
                // The newest record at or before `ts`, searching forward
                // from the floor (records are in commit order, and so are
                // their times).
                let mut found: Option<ReadAt> = None;
                if meta.history_floor_time_ms <= ts {
                    found = Some(floor_at(db, keys, meta)?);
                }
                let (mut cursor, end) =
                    keys.dlist_range(floor.saturating_add(1), meta.head_txid.saturating_add(1));
                'scan: loop {
                    let piece = txn.scan(&cursor, &end, ScanOptions::limit(1024))?;
                    let Some((last, _)) = piece.last() else { break };
                    cursor = last.clone();
                    cursor.push(0);
                    for (k, v) in &piece {
                        let info = decode_dlist(db, k, v)?;
                        if info.time_ms > ts {
                            break 'scan;
                        }
                        if let (Some(t), Some(size)) = (DbKeys::dlist_txid(k), info.size_pages) {
                            found = Some(at(t, size));
                        }
                    }
                }
                found.ok_or_else(|| {
                    unavailable(format!(
                        "{db:?} keeps no commit as old as {ts} ms (its history starts at commit {floor})"
                    ))
                })
            }
        }
    }

    /// Start a read transaction at a past commit (`kvlite sql --at`,
    /// `Vfs::open_at`): pinned for `reader` like [`Engine::begin_read`],
    /// so the commit stays readable while the reader reads, but it never
    /// moves and it does not hold compaction back.
    pub fn begin_read_at(&self, db: &str, reader: u64, point: ReadPoint) -> Result<ReadState> {
        validate_name(db)?;
        // The name is held while resolving, so no pass raises the floor
        // past what the resolution finds before the pin is in.
        self.readers.starting(db);
        let r = self.kv.read(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            let at = self.resolve_point_in(txn, db, &keys, &meta, point)?;
            Ok::<_, Fail>(ReadState {
                incarnation: at.incarnation,
                head_txid: at.txid,
                size_pages: at.size_pages,
                page_size: meta.page_size,
                changed: None,
            })
        });
        let pinned = match r {
            Ok(state) => self
                .readers
                .pin(
                    db,
                    reader,
                    state.incarnation,
                    state.head_txid,
                    false,
                    self.now_ms(),
                )
                .map(|()| state),
            Err(e) => {
                self.readers.release(db, reader);
                Err(e.into())
            }
        };
        self.readers.started(db);
        pinned
    }

    /// The database's commits, newest first, from before `before` (the
    /// head when `None`) down to its floor, at most `limit` — continuing,
    /// for a fork or a restored database, with its parent's commits before
    /// it began (the database's history before it was this incarnation).
    pub fn history(&self, db: &str, before: Option<u64>, limit: usize) -> Result<HistoryPage> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            let mut until = before
                .unwrap_or(u64::MAX)
                .min(meta.head_txid.saturating_add(1));
            let mut commits = Vec::new();
            let (mut k, mut m) = (keys, meta.clone());
            loop {
                own_commits(txn, db, &k, &m, until, limit, &mut commits)?;
                let Some(p) = m.parent else { break };
                if commits.len() >= limit {
                    break;
                }
                let pkeys = DbKeys { id: p.id };
                let Some(v) = txn.get(&pkeys.meta())? else {
                    break;
                };
                let pmeta = crate::decode_meta(db, &v)?;
                if pmeta.parent.is_some_and(|q| q.depth >= p.depth) {
                    break;
                }
                until = until.min(m.created_txid);
                (k, m) = (pkeys, pmeta);
            }
            let origin = match meta.parent {
                Some(p) => Some(self.origin_of(txn, p)?),
                None => None,
            };
            Ok::<_, Fail>(HistoryPage {
                incarnation: keys.id,
                head_txid: meta.head_txid,
                floor_txid: meta.history_floor,
                retention_ms: history::retention_of(&meta, self.config.history_retention),
                retention_set: meta.retention_ms.is_some(),
                commits,
                forked_from: origin,
            })
        })?)
    }

    /// A parent as the API describes it, with its name when it has one.
    pub(crate) fn origin_of(
        &self,
        txn: &mut impl KvRead,
        parent: Parent,
    ) -> crate::error::Result<ForkOrigin> {
        Ok(ForkOrigin {
            name: name_of(txn, parent.id)?,
            id: parent.id,
            txid: parent.txid,
            size_pages: parent.size_pages,
        })
    }

    /// Set how long `db`'s commits stay readable (`None`: the engine's
    /// default). A shorter window takes effect at the next compaction pass;
    /// a longer one keeps commits from now on (what is gone stays gone).
    pub fn set_retention(&self, db: &str, retention_ms: Option<u64>) -> Result<()> {
        validate_name(db)?;
        let meta = self.kv.transact(|txn| {
            let (_, keys, mut meta) = self.resolve(txn, db)?;
            meta.retention_ms = retention_ms.filter(|&ms| ms != u64::MAX);
            txn.set(&keys.meta(), &meta.encode())?;
            Ok::<_, Fail>(meta)
        })?;
        if let Some(state) = self.states.get(db) {
            crate::cache::lock(&state).meta = Some(meta.clone());
        }
        self.maybe_signal_compaction(db, &meta, crate::compactor::Cause::Other);
        Ok(())
    }

    /// Create `dst` as a fork of `src` at `point` (its head when `None`):
    /// O(1) whatever the size, nothing copied; writes to either never show
    /// in the other.
    pub fn fork(&self, src: &str, dst: &str, point: Option<ReadPoint>) -> Result<Forked> {
        validate_name(src)?;
        validate_name(dst)?;
        validate_new_name(dst)?;
        // This call's mark in the fork it makes: a retry after a lost
        // outcome recognises its own fork by it (and only its own).
        let nonce = fastrand::u64(..);
        let forked = self.kv.transact(|txn| {
            let (_, skeys, smeta) = self.resolve(txn, src)?;
            if let Some(v) = txn.get(&keys::dir(dst))? {
                let id = decode_id(dst, &v)?;
                let meta = self.meta_in(txn, dst, &DbKeys { id })?;
                if let (Some(_), Some(p)) = (meta.find_commit(nonce), meta.parent) {
                    return Ok(Forked {
                        id,
                        source_txid: p.txid,
                        size_pages: p.size_pages,
                    });
                }
            }
            let at = self.point_or_head(txn, src, &skeys, &smeta, point)?;
            // A point from before the source's current incarnation forks
            // the incarnation that had it.
            let (skeys, smeta) = if at.incarnation == skeys.id {
                (skeys, smeta)
            } else {
                self.ancestor(txn, src, &smeta, at.incarnation)?
            };
            let parent = parent_at(src, &skeys, &smeta, at)?;
            self.refuse_taken(txn, dst)?;
            let (id, mut meta) = self.create_in(txn, dst, Origin::Native)?;
            meta.parent = Some(parent);
            start_after(&mut meta, parent.txid, parent.size_pages);
            mark(&mut meta, nonce);
            txn.set(&DbKeys { id }.meta(), &meta.encode())?;
            pin(txn, &skeys, smeta, parent, id)?;
            Ok::<_, Fail>(Forked {
                id,
                source_txid: parent.txid,
                size_pages: parent.size_pages,
            })
        })?;
        self.states.remove(dst);
        self.states.remove(src);
        Ok(forked)
    }

    /// Make `db`'s state the one it had at `point`: `db` names a new
    /// incarnation whose commits continue after the old head and whose
    /// pages are the old incarnation's at `point`; the old incarnation is
    /// kept as the returned backup name, and reads of `db` before the
    /// restore read it. Fences `db`'s writer. Metadata only; undone by
    /// restoring to the commit before the restore.
    pub fn restore(&self, db: &str, point: ReadPoint) -> Result<Restored> {
        validate_name(db)?;
        let now = self.now_ms();
        // This call's mark in the incarnation it makes: a retry after a
        // lost outcome recognises its own restore by it (and only its own).
        let nonce = fastrand::u64(..);
        let mut created: Option<(u64, Meta)> = None;
        let restored = self.kv.transact(|txn| {
            created = None;
            let (_, keys, meta) = self.resolve(txn, db)?;
            if let (Some(_), Some(p)) = (meta.find_commit(nonce), meta.parent) {
                return Ok(Restored {
                    backup: name_of(txn, p.id)?.unwrap_or_default(),
                    source_txid: p.txid,
                    size_pages: p.size_pages,
                });
            }
            if meta.origin == Origin::MigratingFromV1 {
                return Err(Fail::Api(Error::Unavailable(format!(
                    "{db:?} is being migrated from the v1 layout"
                ))));
            }
            // The point may be in the database's history before this
            // incarnation: restore from the incarnation that had it.
            let at = self.resolve_point_in(txn, db, &keys, &meta, point)?;
            let (skeys, smeta) = if at.incarnation == keys.id {
                (keys, meta.clone())
            } else {
                self.ancestor(txn, db, &meta, at.incarnation)?
            };
            let parent = parent_at(db, &skeys, &smeta, at)?;
            let backup = self.backup_name(txn, db, meta.head_txid)?;
            let (id, mut next) = self.create_in(txn, db, Origin::Native)?;
            next.parent = Some(parent);
            start_after(&mut next, meta.head_txid, parent.size_pages);
            next.quota_bytes = meta.quota_bytes;
            next.retention_ms = meta.retention_ms;
            // The restored incarnation starts taken over: the old writer's
            // generation is not its, and its fence message says when.
            next.generation += 1;
            next.taken_over_ms = now;
            mark(&mut next, nonce);
            txn.set(&DbKeys { id }.meta(), &next.encode())?;
            txn.set(&keys::dir(&backup), &keys.id.to_be_bytes())?;
            created = Some((id, next.clone()));
            // The source's META as this transaction left it.
            let smeta = self.meta_in(txn, db, &skeys)?;
            pin(txn, &skeys, smeta, parent, id)?;
            Ok::<_, Fail>(Restored {
                backup,
                source_txid: parent.txid,
                size_pages: parent.size_pages,
            })
        })?;
        self.states.remove(db);
        self.states.remove(&restored.backup);
        // The name's state holds the new incarnation's generation: a writer
        // of the old one in this process learns of its fence at once.
        if let Some((id, meta)) = created {
            self.announce_takeover(db, meta.generation, meta.taken_over_ms);
            let state = self.states.get_or_insert(db, id);
            crate::cache::lock(&state).meta = Some(meta);
        }
        Ok(restored)
    }

    fn point_or_head(
        &self,
        txn: &mut impl KvRead,
        db: &str,
        keys: &DbKeys,
        meta: &Meta,
        point: Option<ReadPoint>,
    ) -> crate::error::Result<ReadAt> {
        match point {
            Some(p) => self.resolve_point_in(txn, db, keys, meta, p),
            None => Ok(ReadAt {
                incarnation: keys.id,
                txid: meta.head_txid,
                size_pages: meta.size_pages,
            }),
        }
    }

    /// The name the incarnation a restore replaces keeps: `DB@before-restore-H`
    /// after the head `H` it had (a restore moves the head on, so the next
    /// one gets another), with a counter if a name is taken.
    fn backup_name(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        head: u64,
    ) -> crate::error::Result<String> {
        let base = format!("{db}@before-restore-{head}");
        for n in 1..=16u32 {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            validate_new_name(&name)?;
            if txn.get(&keys::dir(&name))?.is_none() && !crate::v1::has_v1_data(txn, &name)? {
                return Ok(name);
            }
        }
        Err(invalid(
            InvalidKind::NameTaken,
            format!("the names {base:?} and .2 to .16 are all taken"),
        ))
    }

    /// A name a new database may not take: one in use, or with v1 data.
    fn refuse_taken(&self, txn: &mut WriteTxn<'_>, name: &str) -> crate::error::Result<()> {
        if txn.get(&keys::dir(name))?.is_some() || crate::v1::has_v1_data(txn, name)? {
            return Err(invalid(
                InvalidKind::NameTaken,
                format!("a database named {name:?} already exists"),
            ));
        }
        Ok(())
    }

    /// The transaction of a delete that removes `id` (named `db`, with
    /// META `meta`): a database forks still read becomes a ghost (nameless,
    /// kept); any other is tombstoned, and its hold on its parent goes —
    /// which may release a ghost parent too. Returns the ids to sweep.
    pub(crate) fn unname_in(
        &self,
        txn: &mut WriteTxn<'_>,
        db: &str,
        id: u64,
        meta: Option<Meta>,
    ) -> crate::error::Result<Vec<u64>> {
        let keys = DbKeys { id };
        txn.clear(&keys::dir(db))?;
        match meta {
            Some(mut meta) if meta.pin_count > 0 => {
                meta.ghost = true;
                meta.version += 1;
                txn.set(&keys.meta(), &meta.encode())?;
                txn.set(&keys::ghost(id), db.as_bytes())?;
                Ok(Vec::new())
            }
            meta => {
                txn.clear(&keys.meta())?;
                txn.set(&keys::tombstone(id), db.as_bytes())?;
                let mut swept = vec![id];
                let mut child = id;
                let mut parent = meta.and_then(|m| m.parent);
                // Release the hold on the parent; a ghost left with no
                // fork goes too, and so on up the chain.
                while let Some(p) = parent.take() {
                    let pkeys = DbKeys { id: p.id };
                    let Some(v) = txn.get(&pkeys.meta())? else {
                        break;
                    };
                    let mut pmeta = crate::decode_meta(db, &v)?;
                    if txn.get(&pkeys.pin(p.txid, child))?.is_some() {
                        txn.clear(&pkeys.pin(p.txid, child))?;
                        pmeta.pin_count = pmeta.pin_count.saturating_sub(1);
                    }
                    if pmeta.ghost && pmeta.pin_count == 0 {
                        let name = txn.get(&keys::ghost(p.id))?.unwrap_or_default();
                        txn.clear(&keys::ghost(p.id))?;
                        txn.clear(&pkeys.meta())?;
                        txn.set(&keys::tombstone(p.id), &name)?;
                        swept.push(p.id);
                        child = p.id;
                        parent = pmeta.parent;
                    } else {
                        txn.set(&pkeys.meta(), &pmeta.encode())?;
                    }
                }
                Ok(swept)
            }
        }
    }
}

/// The parent record a fork of `src` at `at` gets, refused past the
/// deepest fork chain.
fn parent_at(src: &str, keys: &DbKeys, meta: &Meta, at: ReadAt) -> crate::error::Result<Parent> {
    if meta.origin == Origin::MigratingFromV1 {
        return Err(Fail::Api(Error::Unavailable(format!(
            "{src:?} is being migrated from the v1 layout"
        ))));
    }
    let depth = meta.parent.map_or(0, |p| p.depth).saturating_add(1);
    if depth > MAX_FORK_DEPTH {
        return Err(too_large(
            TooLargeKind::ForkDepth,
            format!(
                "{src:?} is a fork {} levels deep; forks go {MAX_FORK_DEPTH} deep at most",
                depth - 1
            ),
        ));
    }
    debug_assert_eq!(at.incarnation, keys.id);
    Ok(Parent {
        id: keys.id,
        txid: at.txid,
        size_pages: at.size_pages,
        depth,
    })
}

/// Pin `parent`'s commit for database `child` on the source (`meta` is the
/// source's current META).
fn pin(
    txn: &mut WriteTxn<'_>,
    skeys: &DbKeys,
    mut meta: Meta,
    parent: Parent,
    child: u64,
) -> crate::error::Result<()> {
    txn.set(
        &skeys.pin(parent.txid, child),
        &encode_u32(parent.size_pages),
    )?;
    meta.pin_count += 1;
    txn.set(&skeys.meta(), &meta.encode())?;
    Ok(())
}

/// The name database `id` has (a live one, found by a scan of the
/// directory) or had (a ghost); `None` when it has none.
fn name_of(txn: &mut impl KvRead, id: u64) -> crate::error::Result<Option<String>> {
    if txn.get(&keys::ghost(id))?.is_some() {
        return Ok(None);
    }
    let (mut cursor, end) = keys::dir_range();
    loop {
        let page = txn.scan(&cursor, &end, ScanOptions::limit(1024))?;
        let Some((last, _)) = page.last() else {
            return Ok(None);
        };
        cursor = last.clone();
        cursor.push(0);
        for (k, v) in &page {
            if let Some(name) = keys::dir_name(k)
                && decode_id(name, v)? == id
            {
                return Ok(Some(name.to_string()));
            }
        }
    }
}
