//! The migration lease: a record in the KV store naming the job that
//! migrates a database and until when. A job renews it with a heartbeat
//! while it works, so a slow job on a big database keeps it however long
//! the copy takes, and a job that died loses it one lease period after its
//! last beat. The lease keeps work from being done twice; safety does not
//! rest on clocks: a job that takes over bumps the v2 generation, which
//! fences every write of the job it replaced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kvlite_api::{CorruptionKind, Origin};
use kvlite_kv::{Kv, KvRead};

use super::keys;
use crate::blob::now_ms;
use crate::cache::lock;
use crate::error::{Fail, Result, corrupt};
use crate::keys::DbKeys;
use crate::{decode_id, decode_meta};

const ENCODING: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub holder: u128,
    pub expires_ms: u64,
}

impl Lease {
    const LEN: usize = 1 + 16 + 8;

    pub fn encode(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.push(ENCODING);
        v.extend_from_slice(&self.holder.to_be_bytes());
        v.extend_from_slice(&self.expires_ms.to_be_bytes());
        v
    }

    pub fn decode(db: &str, v: &[u8]) -> Result<Lease> {
        let bad = || corrupt(db, CorruptionKind::Record, "malformed migration lease");
        if v.len() != Self::LEN || v.first() != Some(&ENCODING) {
            return Err(bad());
        }
        let holder = v
            .get(1..17)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let expires = v
            .get(17..25)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(Lease {
            holder: u128::from_be_bytes(holder),
            expires_ms: u64::from_be_bytes(expires),
        })
    }
}

/// What an attempt to take the lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Ours until `expires_ms`.
    Taken,
    /// A live job holds it.
    Held(Lease),
    /// The database has a finished v2 head: nothing to migrate.
    Done,
    /// The database has no v1 data (and no unfinished migration).
    NotV1,
}

/// The v2 state of `db` as the migration sees it: `None` without a v2
/// directory entry, else its origin.
pub(crate) fn v2_origin(txn: &mut impl KvRead, db: &str) -> Result<Option<Origin>> {
    let Some(v) = txn.get(&crate::keys::dir(db))? else {
        return Ok(None);
    };
    let keys = DbKeys {
        id: decode_id(db, &v)?,
    };
    match txn.get(&keys.meta())? {
        Some(m) => Ok(Some(decode_meta(db, &m)?.origin)),
        None => Err(corrupt(
            db,
            CorruptionKind::MissingData,
            "directory entry without META",
        )),
    }
}

pub(crate) fn take(kv: &Kv, db: &str, holder: u128, period: Duration) -> Result<Take> {
    kv.transact(|txn| {
        match v2_origin(txn, db)? {
            Some(Origin::MigratingFromV1) => {}
            Some(_) => return Ok(Take::Done),
            None if txn
                .get(&keys::file(db, kvlite_api::V1File::Main))?
                .is_none() =>
            {
                return Ok(Take::NotV1);
            }
            None => {}
        }
        let now = now_ms();
        if let Some(v) = txn.get_for_update(&keys::lease(db))? {
            let lease = Lease::decode(db, &v)?;
            if lease.holder != holder && lease.expires_ms > now {
                return Ok(Take::Held(lease));
            }
        }
        let lease = Lease {
            holder,
            expires_ms: now.saturating_add(period.as_millis() as u64),
        };
        txn.set(&keys::lease(db), &lease.encode())?;
        Ok::<_, Fail>(Take::Taken)
    })
}

/// Extend `holder`'s lease; false if it is no longer the holder's.
pub(crate) fn renew(kv: &Kv, db: &str, holder: u128, period: Duration) -> Result<bool> {
    kv.transact(|txn| {
        let Some(v) = txn.get_for_update(&keys::lease(db))? else {
            return Ok(false);
        };
        if Lease::decode(db, &v)?.holder != holder {
            return Ok(false);
        }
        let lease = Lease {
            holder,
            expires_ms: now_ms().saturating_add(period.as_millis() as u64),
        };
        txn.set(&keys::lease(db), &lease.encode())?;
        Ok::<_, Fail>(true)
    })
}

/// Whether `holder` holds `db`'s lease, read in `txn`.
pub(crate) fn holds(txn: &mut impl KvRead, db: &str, holder: u128) -> Result<bool> {
    Ok(match txn.get(&keys::lease(db))? {
        Some(v) => Lease::decode(db, &v)?.holder == holder,
        None => false,
    })
}

/// Renews a lease every quarter period on a thread of its own until
/// dropped; [`Heartbeat::lost`] turns true once a renewal finds the lease
/// taken by another job (or one could not be renewed before it expired).
pub(crate) struct Heartbeat {
    lost: Arc<AtomicBool>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(kv: Kv, db: &str, holder: u128, period: Duration) -> Heartbeat {
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (l, s, db) = (lost.clone(), stop.clone(), db.to_string());
        let thread = std::thread::Builder::new()
            .name("kvlite-migration-lease".into())
            .spawn(move || {
                let beat = period / 4;
                let mut renewed_at = std::time::Instant::now();
                loop {
                    {
                        let (m, cv) = &*s;
                        let stopped = lock(m);
                        let (stopped, _) = cv
                            .wait_timeout_while(stopped, beat, |stopped| !*stopped)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if *stopped {
                            return;
                        }
                    }
                    match renew(&kv, &db, holder, period) {
                        Ok(true) => renewed_at = std::time::Instant::now(),
                        Ok(false) => {
                            tracing::warn!(db, "migration lease taken by another job");
                            l.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(db, error = %e, "could not renew the migration lease");
                            if renewed_at.elapsed() >= period {
                                l.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                }
            })
            .ok();
        if thread.is_none() {
            // Without a heartbeat the lease would lapse under a long job.
            lost.store(true, Ordering::SeqCst);
        }
        Heartbeat { lost, stop, thread }
    }

    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let (m, cv) = &*self.stop;
        *lock(m) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
