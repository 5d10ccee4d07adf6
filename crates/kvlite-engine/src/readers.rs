//! Readers' pins: the commit each live reader reads at, so compaction folds
//! no version a reader may still need.
//!
//! A reader pins the commit its read transaction sees (`begin_read`) and
//! refreshes the pin with every read. Compaction folds only up to the
//! oldest live pin. A pin not refreshed for [`READER_LEASE`] is dead: a
//! reader that crashed or went idle does not hold history back for ever.
//! A read after its pin died still never returns a wrong page: the read
//! path refuses a shard folded past the read's commit, and the reader's
//! next transaction forgets its whole cache (the changes since its last
//! commit may have been folded away).
//!
//! Pins live in this engine's memory: readers and compaction of a database
//! meet in the engine that serves them (one process on the embedded store,
//! one server per database with PostgreSQL).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvlite_api::Error;

use crate::cache::lock;

/// How long a pin lives without a read refreshing it.
pub const READER_LEASE: Duration = Duration::from_secs(60);
/// Pins held at most (all databases): each costs a little memory, and a
/// client can open readers at will.
pub const MAX_PINS: usize = 1 << 17;

struct Pin {
    txid: u64,
    touched: Instant,
    /// A reader of the newest commit holds compaction's fold point back
    /// (its pages stay in the page index, the fast path); a reader of a
    /// past commit only keeps its commit readable.
    holds_fold: bool,
}

#[derive(Default)]
pub(crate) struct ReaderPins {
    inner: Mutex<Pins>,
}

#[derive(Default)]
struct Pins {
    dbs: HashMap<String, HashMap<u64, Pin>>,
    count: usize,
}

impl Pins {
    fn remove(&mut self, db: &str, reader: u64) {
        if let Some(pins) = self.dbs.get_mut(db) {
            if pins.remove(&reader).is_some() {
                self.count -= 1;
            }
            if pins.is_empty() {
                self.dbs.remove(db);
            }
        }
    }

    fn prune(&mut self, db: &str) {
        if let Some(pins) = self.dbs.get_mut(db) {
            let before = pins.len();
            pins.retain(|_, p| p.touched.elapsed() < READER_LEASE);
            self.count -= before - pins.len();
            if pins.is_empty() {
                self.dbs.remove(db);
            }
        }
    }
}

impl ReaderPins {
    /// The live pin of `reader` on `db`, if it has one; refreshed.
    pub fn live(&self, db: &str, reader: u64) -> Option<u64> {
        let mut p = lock(&self.inner);
        let pin = p.dbs.get_mut(db)?.get_mut(&reader)?;
        if pin.touched.elapsed() < READER_LEASE {
            pin.touched = Instant::now();
            return Some(pin.txid);
        }
        // A dead pin never comes back: compaction may have passed it.
        p.remove(db, reader);
        None
    }

    /// Pin `reader` at `txid` (replacing its pin), holding the fold point.
    pub fn pin(&self, db: &str, reader: u64, txid: u64) -> Result<(), Error> {
        self.pin_as(db, reader, txid, true)
    }

    /// Pin a reader of a past commit: its commit stays readable, folding
    /// goes on.
    pub fn pin_history(&self, db: &str, reader: u64, txid: u64) -> Result<(), Error> {
        self.pin_as(db, reader, txid, false)
    }

    fn pin_as(&self, db: &str, reader: u64, txid: u64, holds_fold: bool) -> Result<(), Error> {
        let mut p = lock(&self.inner);
        let known = p.dbs.get(db).is_some_and(|d| d.contains_key(&reader));
        if !known && p.count >= MAX_PINS {
            let names: Vec<String> = p.dbs.keys().cloned().collect();
            for name in names {
                p.prune(&name);
            }
            if p.count >= MAX_PINS {
                return Err(Error::Unavailable(format!(
                    "{MAX_PINS} readers are open; try again when some finish"
                )));
            }
        }
        let previous = p.dbs.entry(db.to_string()).or_default().insert(
            reader,
            Pin {
                txid,
                touched: Instant::now(),
                holds_fold,
            },
        );
        if previous.is_none() {
            p.count += 1;
        }
        Ok(())
    }

    pub fn release(&self, db: &str, reader: u64) {
        lock(&self.inner).remove(db, reader);
    }

    /// The oldest commit a live reader of `db` holding the fold point
    /// reads at, and the oldest any live reader reads at.
    pub fn oldest_pins(&self, db: &str) -> (Option<u64>, Option<u64>) {
        let mut p = lock(&self.inner);
        p.prune(db);
        let Some(pins) = p.dbs.get(db) else {
            return (None, None);
        };
        (
            pins.values().filter(|p| p.holds_fold).map(|p| p.txid).min(),
            pins.values().map(|p| p.txid).min(),
        )
    }
}
