//! One kvlite deployment over several stores — in practice several
//! PostgreSQL clusters (`kvlite serve --postgres URL1 --postgres URL2`).
//!
//! Each database lives entirely in one cluster, so every transaction stays
//! in one store. Which one is a placement record kept by the home cluster
//! (cluster 0): written when the database is created (on the cluster
//! holding the fewest, so a cluster added later takes new databases) and
//! changed by a move. A deployment of one cluster keeps no records at all.
//!
//! Routing is cached per name and never trusted blindly: a database that
//! moved away leaves a MOVED marker where it was, so a router with a stale
//! route is told where it went (`FenceReason::Moved`) and follows. Names
//! with no record (made before the deployment had several clusters) are
//! found by asking every cluster, then recorded.
//!
//! A move ([`Placement::move_db`]) is fenced, resumable and verified:
//! the record says a move is under way; the mover takes the database over
//! (fencing its writer), copies its pages as of that head into the target
//! under a staging name, compares every page, then hands the database off in
//! the source (one transaction, fenced on the mover's generation and head:
//! a writer that came back meanwhile makes the move start over, so no
//! commit is lost), adopts the copy in the target and updates the record.
//! Interrupted anywhere, running it again finishes it; a router that finds
//! the hand-off done and the adoption not finishes that step itself.
//! History (commits before the move) stays behind: a moved database's
//! history starts at the move.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kvlite_api::{
    CommitRequest, Error, FenceReason, Forked, InvalidKind, Preload, ReadPoint, Restored, Result,
};
use kvlite_engine::{Engine, PlacementRecord};

/// Routes cached at most (names); past it the cache starts over.
const MAX_ROUTES: usize = 1 << 20;
/// Pages per copy commit and per verification read of a move.
const MOVE_BATCH_PAGES: usize = 256;
/// A move starts over at most this many times when writers keep coming
/// back during the copy.
const MOVE_ATTEMPTS: usize = 3;
/// Moves followed for one request before giving up (a move in flight).
const MAX_HOPS: usize = 4;

/// The clusters of a deployment and where each database lives.
pub struct Placement {
    /// Cluster 0, which keeps the placement records.
    home: Arc<Engine>,
    engines: Vec<Arc<Engine>>,
    routes: Mutex<HashMap<String, u32>>,
}

/// The points a move passes (where tests interrupt it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveStep {
    /// The home record says the move is under way.
    Marked,
    /// The copy is complete and verified (once per attempt), not yet
    /// handed off.
    Copied,
    /// The copy is verified and the source handed the database off.
    HandedOff,
    /// The target renamed the copy to the database's name.
    Adopted,
}

/// What a move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MoveReport {
    pub from: u32,
    pub to: u32,
    /// Pages copied (and compared).
    pub pages: u64,
    /// The head the copy was made at (the source's commit number).
    pub head_txid: u64,
    /// Times the copy started over because a writer came back.
    pub restarts: u32,
    /// Nothing to do: the database was already there.
    pub already_there: bool,
}

impl Placement {
    /// A deployment over `engines` (cluster `i` is `engines[i]`; cluster 0
    /// is the home one). At least one. With several, each store records
    /// which cluster of which deployment it is the first time, and a list
    /// in another order (or a store of another deployment) is refused.
    pub fn new(engines: Vec<Arc<Engine>>) -> Result<Self> {
        let home = match engines.first() {
            Some(e) if engines.len() <= u32::MAX as usize => e.clone(),
            _ => {
                return Err(Error::invalid(
                    InvalidKind::Config,
                    "a deployment has at least one cluster",
                ));
            }
        };
        if engines.len() > 1 {
            let (deployment, at) = home.claim_cluster(fastrand::u128(..), 0)?;
            if at != 0 {
                return Err(misplaced(0, at));
            }
            for (i, engine) in engines.iter().enumerate().skip(1) {
                let (theirs, at) = engine.claim_cluster(deployment, i as u32)?;
                if theirs != deployment {
                    return Err(Error::invalid(
                        InvalidKind::Config,
                        format!("the store given as cluster {i} belongs to another deployment"),
                    ));
                }
                if at != i as u32 {
                    return Err(misplaced(i as u32, at));
                }
            }
        }
        Ok(Placement {
            home,
            engines,
            routes: Mutex::default(),
        })
    }

    /// The only cluster of a one-cluster deployment.
    pub fn single(engine: Arc<Engine>) -> Self {
        Placement {
            home: engine.clone(),
            engines: vec![engine],
            routes: Mutex::default(),
        }
    }

    pub fn clusters(&self) -> usize {
        self.engines.len()
    }

    pub fn engines(&self) -> &[Arc<Engine>] {
        &self.engines
    }

    /// The home cluster's engine (cluster 0).
    pub fn home(&self) -> &Arc<Engine> {
        &self.home
    }

    fn engine(&self, cluster: u32) -> Result<&Arc<Engine>> {
        self.engines.get(cluster as usize).ok_or_else(|| {
            Error::invalid(
                InvalidKind::Config,
                format!(
                    "cluster {cluster} is not one of this deployment's {} (is a --postgres URL missing?)",
                    self.engines.len()
                ),
            )
        })
    }

    fn cached(&self, db: &str) -> Option<u32> {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(db)
            .copied()
    }

    fn remember(&self, db: &str, cluster: u32) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        routes.insert(db.to_string(), cluster);
    }

    /// The cluster holding `db`, if any does.
    pub fn locate(&self, db: &str) -> Result<Option<u32>> {
        if self.engines.len() == 1 {
            return Ok(Some(0));
        }
        if let Some(c) = self.cached(db) {
            return Ok(Some(c));
        }
        if let Some(record) = self.home().placement_of(db)? {
            self.remember(db, record.cluster);
            return Ok(Some(record.cluster));
        }
        // Made before the deployment had several clusters (or its record
        // was lost): ask each, then record where it is.
        let mut found = Vec::new();
        for (i, engine) in self.engines.iter().enumerate() {
            if engine.exists(db)? {
                found.push(i as u32);
            }
        }
        match found.as_slice() {
            [] => Ok(None),
            [one] => {
                let record = self.home().place(db, self.n(), Some(*one))?;
                self.remember(db, record.cluster);
                Ok(Some(record.cluster))
            }
            many => Err(Error::corrupt(
                db,
                kvlite_api::CorruptionKind::Record,
                format!(
                    "no placement record, and clusters {many:?} each hold a database of this name"
                ),
            )),
        }
    }

    fn n(&self) -> u32 {
        self.engines.len() as u32
    }

    /// The cluster for `db`, placing it (on the least-used cluster) if it
    /// is nowhere yet.
    pub fn place(&self, db: &str) -> Result<u32> {
        if let Some(c) = self.locate(db)? {
            return Ok(c);
        }
        let record = self.home().place(db, self.n(), None)?;
        self.remember(db, record.cluster);
        Ok(record.cluster)
    }

    /// Run `op` on the engine holding `db` (placing it first when
    /// `create`), following a move that a stale route missed. Without
    /// `create`, a name no cluster holds is `NotFound`.
    pub fn route<T>(&self, db: &str, create: bool, op: impl Fn(&Engine) -> Result<T>) -> Result<T> {
        let mut cluster = if create {
            self.place(db)?
        } else {
            match self.locate(db)? {
                Some(c) => c,
                None => return Err(Error::NotFound(db.to_string())),
            }
        };
        for _ in 0..MAX_HOPS {
            match op(self.engine(cluster)?) {
                Err(Error::Fenced {
                    reason: FenceReason::Moved { cluster: to },
                    ..
                }) => {
                    let target = self.engine(to)?;
                    // The move handed off and stopped before adopting: the
                    // copy there is complete and verified; adopt it.
                    if target.has_move_in(db)? {
                        target.adopt(db)?;
                    }
                    self.remember(db, to);
                    cluster = to;
                }
                r => return r,
            }
        }
        Err(Error::Unavailable(format!(
            "database {db:?} is moving between clusters; try again"
        )))
    }

    /// Fork `src` as `dst`: in `src`'s cluster (forks share its pages).
    pub fn fork(&self, src: &str, dst: &str, point: Option<ReadPoint>) -> Result<Forked> {
        let Some(cluster) = self.locate(src)? else {
            return Err(Error::NotFound(src.to_string()));
        };
        if self.engines.len() > 1 {
            kvlite_api::validate_name(dst)?;
            let placed = self.home.place(dst, self.n(), Some(cluster))?;
            if placed.cluster != cluster {
                return Err(Error::invalid(
                    InvalidKind::NameTaken,
                    format!(
                        "{dst:?} is placed on cluster {}, {src:?} on {cluster}: a fork lives with its source",
                        placed.cluster
                    ),
                ));
            }
        }
        self.route(src, false, |e| e.fork(src, dst, point))
    }

    /// Restore `db` to `point`; the backup name it leaves stays in its
    /// cluster.
    pub fn restore(&self, db: &str, point: ReadPoint) -> Result<Restored> {
        let restored = self.route(db, false, |e| e.restore(db, point))?;
        if self.engines.len() > 1
            && let Some(cluster) = self.locate(db)?
        {
            self.home.place(&restored.backup, self.n(), Some(cluster))?;
        }
        Ok(restored)
    }

    /// Names of databases in every cluster, as `Engine::list` for one.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for engine in &self.engines {
            names.extend(engine.list(prefix, after, limit)?);
        }
        names.sort_unstable();
        names.dedup();
        names.truncate(limit);
        Ok(names)
    }

    /// Move `db` to cluster `to`: see the crate documentation. Its writer
    /// is fenced and reopens it there. Running it again after an
    /// interruption finishes the move begun.
    pub fn move_db(&self, db: &str, to: u32) -> Result<MoveReport> {
        self.move_db_hooked(db, to, &|_| Ok(()))
    }

    /// [`Placement::move_db`] calling `hook` after each step: an error
    /// stops the move there (as if the mover died); the hook may also act
    /// meanwhile (a writer coming back). Tests of interrupted moves.
    #[cfg(feature = "test-hooks")]
    pub fn move_db_with(
        &self,
        db: &str,
        to: u32,
        hook: &dyn Fn(MoveStep) -> Result<()>,
    ) -> Result<MoveReport> {
        self.move_db_hooked(db, to, hook)
    }

    fn move_db_hooked(
        &self,
        db: &str,
        to: u32,
        interrupted: &dyn Fn(MoveStep) -> Result<()>,
    ) -> Result<MoveReport> {
        kvlite_api::validate_name(db)?;
        let target = self.engine(to)?;
        let Some(from) = self.locate(db)? else {
            return Err(Error::NotFound(db.to_string()));
        };
        // Where the home record stands (placing a database found by
        // asking); a move under way to another cluster is finished first.
        let record = self.home().place(db, self.n(), Some(from))?;
        if let Some(pending) = record.moving_to
            && pending != to
        {
            return Err(Error::invalid(
                InvalidKind::Config,
                format!(
                    "{db:?} is being moved to cluster {pending}: run that move again to finish it first"
                ),
            ));
        }
        let from = record.cluster;
        let source = self.engine(from)?;
        let mut report = MoveReport {
            from,
            to,
            ..MoveReport::default()
        };
        if from == to {
            report.already_there = true;
            return Ok(report);
        }
        let moving = PlacementRecord {
            cluster: from,
            moving_to: Some(to),
        };
        let now = self.home().replace_placement(db, record, moving)?;
        if now != moving {
            return Err(Error::Unavailable(format!(
                "{db:?}'s placement changed while the move began; try again"
            )));
        }
        interrupted(MoveStep::Marked)?;
        if source.moved_to(db)? != Some(to) {
            self.copy_and_hand_off(db, source, target, to, &mut report, interrupted)?;
        }
        interrupted(MoveStep::HandedOff)?;
        target.adopt(db)?;
        interrupted(MoveStep::Adopted)?;
        let done = PlacementRecord {
            cluster: to,
            moving_to: None,
        };
        self.home().replace_placement(db, moving, done)?;
        self.remember(db, to);
        tracing::info!(db, from, to, pages = report.pages, "database moved");
        Ok(report)
    }

    /// The fenced copy: take over, copy at that head, verify, hand off.
    fn copy_and_hand_off(
        &self,
        db: &str,
        source: &Engine,
        target: &Engine,
        to: u32,
        report: &mut MoveReport,
        interrupted: &dyn Fn(MoveStep) -> Result<()>,
    ) -> Result<()> {
        for attempt in 0..MOVE_ATTEMPTS {
            report.restarts = attempt as u32;
            target.move_in_abort(db)?;
            let taken = source.open(db, &Preload::default())?;
            let reader = fastrand::u64(..);
            let copied = copy(db, source, target, reader, taken.head_txid);
            source.end_read(db, reader);
            let (head, pages) = match copied {
                Ok(Some(c)) => c,
                // A writer committed before the copy began: start over.
                Ok(None) => continue,
                Err(e) => return Err(e),
            };
            // Settings travel with the database.
            let stat = source.stat(db)?;
            let staging = kvlite_engine::keys::staging_name(db);
            target.set_quota(&staging, stat.quota_bytes)?;
            target.set_retention(&staging, Some(stat.retention_ms))?;
            interrupted(MoveStep::Copied)?;
            match source.hand_off(db, taken.generation, head, to) {
                Ok(()) => {
                    report.pages = pages;
                    report.head_txid = head;
                    return Ok(());
                }
                // A writer took it back during the copy: start over.
                Err(Error::Fenced {
                    reason: FenceReason::StaleGeneration { .. } | FenceReason::HeadMismatch { .. },
                    ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "{db:?} kept being written during the move ({MOVE_ATTEMPTS} attempts); try again when it is quieter"
        )))
    }
}

fn misplaced(given: u32, is: u32) -> Error {
    Error::invalid(
        InvalidKind::Config,
        format!(
            "the store given as cluster {given} is cluster {is} of this deployment: \
             give the clusters in the same order everywhere (new ones at the end)"
        ),
    )
}

/// Copy `db` as of `head` into `target`'s staging copy and compare every
/// page; `None` when the head moved before the copy began.
fn copy(
    db: &str,
    source: &Engine,
    target: &Engine,
    reader: u64,
    head: u64,
) -> Result<Option<(u64, u64)>> {
    let state = source.begin_read(db, reader, 0)?;
    if state.head_txid != head {
        return Ok(None);
    }
    let at = state.at();
    let size = state.size_pages;
    let staging = kvlite_engine::keys::staging_name(db);
    let open = target.move_in_open(db)?;
    let mut copy_head = open.head_txid;
    let pgnos: Vec<u32> = (1..=size).collect();
    for batch in pgnos.chunks(MOVE_BATCH_PAGES) {
        let pages = source.get_pages_at(db, reader, at, batch)?;
        let refs: Vec<(u32, &[u8])> = batch
            .iter()
            .zip(&pages)
            .filter_map(|(&p, d)| d.as_deref().map(|d| (p, d)))
            .collect();
        copy_head = target
            .commit(&CommitRequest {
                db: &staging,
                generation: open.generation,
                expected_head: copy_head,
                new_size: size,
                commit_id: fastrand::u64(..),
                pages: &refs,
            })?
            .txid;
        // Verified as it goes: the batch read back is the source's (later
        // batches write other pages), so the source is read once.
        if target.get_pages(&staging, open.generation, batch)? != pages {
            return Err(Error::Internal(format!(
                "the copy of {db:?} differs from the source in pages {}..={}",
                batch.first().copied().unwrap_or(0),
                batch.last().copied().unwrap_or(0)
            )));
        }
    }
    let copy_size = target.stat(&staging)?.size_pages;
    if copy_size != size {
        return Err(Error::Internal(format!(
            "the copy of {db:?} has {copy_size} pages, the source {size}"
        )));
    }
    Ok(Some((head, u64::from(size))))
}
