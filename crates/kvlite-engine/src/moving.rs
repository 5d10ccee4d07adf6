//! The engine's part in moving a database to another cluster of a
//! multi-cluster deployment (the whole move is `kvlite-placement`'s):
//!
//! 1. the target builds the copy under [`keys::staging_name`]
//!    ([`Engine::move_in_open`], then ordinary commits), invisible to
//!    clients;
//! 2. the source hands the database off ([`Engine::hand_off`]): in one
//!    transaction, fenced on the mover's generation and head (so no commit
//!    made after the copy began is lost), the name goes (as a delete: forks
//!    still reading it keep it as a ghost) and a MOVED marker names the
//!    target — every later request for the name here answers
//!    `FenceReason::Moved`, and nothing re-creates it here;
//! 3. the target adopts the copy ([`Engine::adopt`]): the staging name
//!    becomes the name. Idempotent, so whoever finds the hand-off done and
//!    the adoption not (a router, a re-run move) finishes it.

use kvlite_api::{Error, InvalidKind, OpenResponse, Preload, Result, validate_name};
use kvlite_kv::KvRead;

use crate::error::Fail;
use crate::keys::{self, DbKeys};
use crate::{Engine, decode_id};

impl Engine {
    /// Open (creating it if needed) the staging copy of `db`, which is
    /// moving in; an existing copy is taken over as it is.
    pub fn move_in_open(&self, db: &str) -> Result<OpenResponse> {
        validate_name(db)?;
        self.open_as(&staging(db)?, &Preload::default(), true)
    }

    /// Drop the staging copy of `db` (a move starting over or given up).
    pub fn move_in_abort(&self, db: &str) -> Result<bool> {
        validate_name(db)?;
        self.delete(&staging(db)?)
    }

    /// Whether a staging copy of `db` is here.
    pub fn has_move_in(&self, db: &str) -> Result<bool> {
        validate_name(db)?;
        let key = keys::dir(&staging(db)?);
        Ok(self
            .kv
            .read(|txn| txn.get(&key).map(|v| v.is_some()))
            .map_err(Fail::from)?)
    }

    /// Whether a database named `db` is here (v2, or v1 not migrated).
    pub fn exists(&self, db: &str) -> Result<bool> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| {
            Ok::<_, Fail>(txn.get(&keys::dir(db))?.is_some() || crate::v1::has_v1_data(txn, db)?)
        })?)
    }

    /// The cluster `db` moved to from here, if it did.
    pub fn moved_to(&self, db: &str) -> Result<Option<u32>> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| crate::moved_marker(txn, db))?)
    }

    /// `db` now lives in cluster `to`: remove it here, fenced on the
    /// mover's `generation` and the `head` it copied, and leave the MOVED
    /// marker. A retry after an unknown outcome that landed finds the
    /// marker and succeeds.
    pub fn hand_off(&self, db: &str, generation: u64, head: u64, to: u32) -> Result<()> {
        validate_name(db)?;
        let sweep = self.kv.transact(|txn| {
            if txn.get(&keys::dir(db))?.is_none() && crate::moved_marker(txn, db)? == Some(to) {
                return Ok::<_, Fail>(Vec::new());
            }
            let (_, dbkeys, meta) = self.resolve(txn, db)?;
            self.fence_head(db, &meta, generation, head)?;
            let sweep = self.unname_in(txn, db, dbkeys.id, Some(meta))?;
            txn.set(&keys::moved(db), &to.to_be_bytes())?;
            Ok(sweep)
        })?;
        self.states.remove(db);
        for id in sweep {
            self.sweep(id)?;
        }
        Ok(())
    }

    /// Make the staging copy of `db` the database `db`. `Ok(false)` when it
    /// already is (adopted before); fails if neither is here, or if another
    /// database holds the name.
    pub fn adopt(&self, db: &str) -> Result<bool> {
        validate_name(db)?;
        let staging = staging(db)?;
        let adopted = self.kv.transact(|txn| {
            let copy = txn.get(&keys::dir(&staging))?;
            let named = txn.get(&keys::dir(db))?;
            match (copy, named) {
                (None, Some(_)) => Ok::<_, Fail>(false),
                (None, None) => Err(Fail::Api(Error::NotFound(db.to_string()))),
                (Some(_), Some(_)) => Err(Fail::Api(Error::invalid(
                    InvalidKind::NameTaken,
                    format!("{db:?} already names a database in the cluster it moves to"),
                ))),
                (Some(v), None) => {
                    let id = decode_id(db, &v)?;
                    debug_assert!(txn.get(&DbKeys { id }.meta())?.is_some());
                    txn.set(&keys::dir(db), &id.to_be_bytes())?;
                    txn.clear(&keys::dir(&staging))?;
                    txn.clear(&keys::moved(db))?;
                    Ok(true)
                }
            }
        })?;
        self.states.remove(&staging);
        self.states.remove(db);
        Ok(adopted)
    }
}

fn staging(db: &str) -> Result<String> {
    let name = keys::staging_name(db);
    validate_name(&name).map_err(|_| {
        Error::invalid(
            InvalidKind::Name,
            format!("{db:?} is too long to move (a name moving in takes one more byte)"),
        )
    })?;
    Ok(name)
}

/// Where a database of a multi-cluster deployment lives, as the home
/// cluster records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementRecord {
    pub cluster: u32,
    /// A move to this cluster began and has not finished.
    pub moving_to: Option<u32>,
}

impl PlacementRecord {
    fn encode(self) -> Vec<u8> {
        let mut v = self.cluster.to_be_bytes().to_vec();
        if let Some(to) = self.moving_to {
            v.extend_from_slice(&to.to_be_bytes());
        }
        v
    }

    fn decode(db: &str, v: &[u8]) -> crate::error::Result<Self> {
        let word = |i: usize| {
            v.get(i..i + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
        };
        match (v.len(), word(0), word(4)) {
            (4, Some(cluster), _) => Ok(PlacementRecord {
                cluster,
                moving_to: None,
            }),
            (8, Some(cluster), Some(to)) => Ok(PlacementRecord {
                cluster,
                moving_to: Some(to),
            }),
            _ => Err(crate::error::corrupt(
                db,
                kvlite_api::CorruptionKind::Record,
                "malformed placement record",
            )),
        }
    }
}

/// The placement records: kept in the home cluster's engine (this one).
impl Engine {
    /// Where `db` is placed, if it is.
    pub fn placement_of(&self, db: &str) -> Result<Option<PlacementRecord>> {
        validate_name(db)?;
        Ok(self.kv.read(|txn| match txn.get(&keys::placement(db))? {
            Some(v) => PlacementRecord::decode(db, &v).map(Some),
            None => Ok::<_, Fail>(None),
        })?)
    }

    /// Place `db` unless it is placed: on `found` (where it already is),
    /// else on the one of `clusters` that holds the fewest databases.
    /// Returns the record that stands.
    pub fn place(&self, db: &str, clusters: u32, found: Option<u32>) -> Result<PlacementRecord> {
        validate_name(db)?;
        Ok(self.kv.transact(|txn| {
            if let Some(v) = txn.get(&keys::placement(db))? {
                return PlacementRecord::decode(db, &v);
            }
            let counts = placed_counts(txn, clusters)?;
            let cluster = found.unwrap_or_else(|| {
                (0..clusters)
                    .zip(&counts)
                    .min_by_key(|&(i, n)| (*n, i))
                    .map_or(0, |(i, _)| i)
            });
            let record = PlacementRecord {
                cluster,
                moving_to: None,
            };
            txn.set(&keys::placement(db), &record.encode())?;
            let n = counts.get(cluster as usize).copied().unwrap_or(0);
            txn.set(&keys::placed_count(cluster), &(n + 1).to_be_bytes())?;
            Ok::<_, Fail>(record)
        })?)
    }

    /// Replace `db`'s record, if it is still `expected` (a move's steps;
    /// counts follow the cluster). Returns the record that stands.
    pub fn replace_placement(
        &self,
        db: &str,
        expected: PlacementRecord,
        record: PlacementRecord,
    ) -> Result<PlacementRecord> {
        validate_name(db)?;
        Ok(self.kv.transact(|txn| {
            let now = match txn.get(&keys::placement(db))? {
                Some(v) => PlacementRecord::decode(db, &v)?,
                None => return Err(Fail::Api(Error::NotFound(db.to_string()))),
            };
            if now != expected {
                return Ok::<_, Fail>(now);
            }
            if record.cluster != now.cluster {
                let mut bump = |cluster: u32, up: bool| -> crate::error::Result<()> {
                    let key = keys::placed_count(cluster);
                    let n = read_count(txn, &key)?;
                    let n = if up { n + 1 } else { n.saturating_sub(1) };
                    txn.set(&key, &n.to_be_bytes())?;
                    Ok(())
                };
                bump(now.cluster, false)?;
                bump(record.cluster, true)?;
            }
            txn.set(&keys::placement(db), &record.encode())?;
            Ok(record)
        })?)
    }

    /// How many databases are placed on each of `clusters`.
    pub fn placed_counts(&self, clusters: u32) -> Result<Vec<u64>> {
        Ok(self.kv.read(|txn| placed_counts(txn, clusters))?)
    }
}

fn read_count(txn: &mut impl KvRead, key: &[u8]) -> crate::error::Result<u64> {
    Ok(match txn.get(key)? {
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| {
                crate::error::corrupt("", kvlite_api::CorruptionKind::Record, "placement count")
            })?,
        None => 0,
    })
}

fn placed_counts(txn: &mut impl KvRead, clusters: u32) -> crate::error::Result<Vec<u64>> {
    (0..clusters)
        .map(|c| read_count(txn, &keys::placed_count(c)))
        .collect()
}

impl Engine {
    /// This store as cluster `index` of deployment `deployment`, unless it
    /// already is a cluster of one: returns what stands, so a caller given
    /// the clusters in another order (or another deployment's) finds out
    /// before it routes anything.
    pub fn claim_cluster(&self, deployment: u128, index: u32) -> Result<(u128, u32)> {
        Ok(self.kv.transact(|txn| {
            if let Some(v) = txn.get(keys::CLUSTER_IDENTITY)? {
                let id = v
                    .get(..16)
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .map(u128::from_be_bytes);
                let at = v
                    .get(16..20)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes);
                return match (id, at, v.len()) {
                    (Some(id), Some(at), 20) => Ok((id, at)),
                    _ => Err(crate::error::corrupt(
                        "",
                        kvlite_api::CorruptionKind::Record,
                        "malformed cluster identity",
                    )),
                };
            }
            let mut v = deployment.to_be_bytes().to_vec();
            v.extend_from_slice(&index.to_be_bytes());
            txn.set(keys::CLUSTER_IDENTITY, &v)?;
            Ok::<_, Fail>((deployment, index))
        })?)
    }
}
