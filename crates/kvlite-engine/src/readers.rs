//! Readers' pins: the commit each live reader reads at, so compaction
//! keeps what the reader may still need.
//!
//! A reader pins the commit its read transaction sees (`begin_read`,
//! `begin_read_at`) and refreshes the pin with every read. A pin belongs to
//! the incarnation (database id) the reader reads, not to the name: a
//! restore gives that incarnation another name, and the reader goes on
//! reading it. Passes keep every pinned commit readable (the floor goes no
//! further), and a reader of the newest commit also holds the fold point
//! back, so its pages stay on the fast path. While a reader is starting
//! (before it knows which commit it reads) the name itself is held: a pass
//! on it then changes nothing.
//!
//! A pin not refreshed for [`READER_LEASE`] is dead: a reader that crashed
//! or went idle does not hold history back for ever. A read after its pin
//! died still never returns a wrong page: the read path refuses a commit
//! below the floor, and the reader's next transaction forgets its whole
//! cache (the changes since its last commit may have been folded away).
//!
//! Pins live in this engine's memory: readers and compaction of a database
//! meet in the engine that serves them (one process on the embedded store,
//! one server per database with PostgreSQL); elsewhere the retention window
//! is what keeps a reader's commit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kvlite_api::Error;

use crate::cache::lock;

/// How long a pin lives without a read refreshing it.
pub const READER_LEASE: Duration = Duration::from_secs(60);
/// Pins held at most (all databases): each costs a little memory, and a
/// client can open readers at will.
pub const MAX_PINS: usize = 1 << 17;

struct Pin {
    /// The incarnation read.
    id: u64,
    txid: u64,
    /// The engine's clock (ms) at the last read: tests move it.
    touched_ms: u64,
    /// A reader of the newest commit holds compaction's fold point back
    /// (its pages stay in the page index, the fast path); a reader of a
    /// past commit only keeps its commit readable.
    holds_fold: bool,
}

impl Pin {
    fn live(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.touched_ms) < READER_LEASE.as_millis() as u64
    }
}

#[derive(Default)]
pub(crate) struct ReaderPins {
    inner: Mutex<Pins>,
}

#[derive(Default)]
struct Pins {
    /// By the name the reader reads through, then the reader.
    readers: HashMap<String, HashMap<u64, Pin>>,
    count: usize,
    /// Names with a reader starting (how many).
    starting: HashMap<String, usize>,
}

impl Pins {
    fn remove(&mut self, db: &str, reader: u64) {
        if let Some(pins) = self.readers.get_mut(db) {
            if pins.remove(&reader).is_some() {
                self.count -= 1;
            }
            if pins.is_empty() {
                self.readers.remove(db);
            }
        }
    }

    fn prune_all(&mut self, now_ms: u64) {
        let mut removed = 0;
        self.readers.retain(|_, pins| {
            let before = pins.len();
            pins.retain(|_, p| p.live(now_ms));
            removed += before - pins.len();
            !pins.is_empty()
        });
        self.count -= removed;
    }
}

impl ReaderPins {
    /// The live pin of `reader` on `db` (the incarnation and commit), if
    /// it has one; refreshed.
    pub fn live(&self, db: &str, reader: u64, now_ms: u64) -> Option<(u64, u64)> {
        let mut p = lock(&self.inner);
        let pin = p.readers.get_mut(db)?.get_mut(&reader)?;
        if pin.live(now_ms) {
            pin.touched_ms = now_ms;
            return Some((pin.id, pin.txid));
        }
        // A dead pin never comes back: compaction may have passed it.
        p.remove(db, reader);
        None
    }

    /// A reader of `db` is starting: until [`ReaderPins::started`], passes
    /// on `db` change nothing.
    pub fn starting(&self, db: &str) {
        *lock(&self.inner)
            .starting
            .entry(db.to_string())
            .or_default() += 1;
    }

    /// The reader that called [`ReaderPins::starting`] is pinned (or gave
    /// up).
    pub fn started(&self, db: &str) {
        let mut p = lock(&self.inner);
        if let Some(n) = p.starting.get_mut(db) {
            *n -= 1;
            if *n == 0 {
                p.starting.remove(db);
            }
        }
    }

    /// Pin `reader` of `db` at commit `txid` of incarnation `id` (replacing
    /// its pin); `holds_fold` for a reader of the newest commit.
    pub fn pin(
        &self,
        db: &str,
        reader: u64,
        id: u64,
        txid: u64,
        holds_fold: bool,
        now_ms: u64,
    ) -> Result<(), Error> {
        let mut p = lock(&self.inner);
        let known = p.readers.get(db).is_some_and(|d| d.contains_key(&reader));
        if !known && p.count >= MAX_PINS {
            p.prune_all(now_ms);
            if p.count >= MAX_PINS {
                return Err(Error::Unavailable(format!(
                    "{MAX_PINS} readers are open; try again when some finish"
                )));
            }
        }
        let previous = p.readers.entry(db.to_string()).or_default().insert(
            reader,
            Pin {
                id,
                txid,
                touched_ms: now_ms,
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

    /// For a pass on database `id` named `db`: the oldest commit a live
    /// reader holding the fold point reads at, and the oldest any live
    /// reader reads at (0 for both while a reader of `db` is starting).
    pub fn oldest_pins(&self, db: &str, id: u64, now_ms: u64) -> (Option<u64>, Option<u64>) {
        let mut p = lock(&self.inner);
        if p.starting.contains_key(db) {
            return (Some(0), Some(0));
        }
        let (mut fold, mut any): (Option<u64>, Option<u64>) = (None, None);
        let mut dead = false;
        for pin in p.readers.values().flat_map(HashMap::values) {
            if pin.id != id {
                continue;
            }
            if !pin.live(now_ms) {
                dead = true;
                continue;
            }
            any = Some(any.map_or(pin.txid, |a| a.min(pin.txid)));
            if pin.holds_fold {
                fold = Some(fold.map_or(pin.txid, |f| f.min(pin.txid)));
            }
        }
        if dead {
            p.prune_all(now_ms);
        }
        (fold, any)
    }
}
