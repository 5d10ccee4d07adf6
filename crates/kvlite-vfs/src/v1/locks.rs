//! SQLite's locks for v1 databases, between the connections of this process
//! (the v1 layout has no cross-process locking: one process serves a v1
//! database at a time). File locks follow the unix VFS's state machine
//! (SHARED, RESERVED, PENDING, EXCLUSIVE); the WAL index's eight lock slots
//! take shared or exclusive holds. Pure state, so it is tested on its own.

use std::ffi::c_int;
use std::sync::atomic::AtomicU64;

use libsqlite3_sys as ffi;

pub(crate) const NONE: c_int = ffi::SQLITE_LOCK_NONE;
pub(crate) const SHARED: c_int = ffi::SQLITE_LOCK_SHARED;
pub(crate) const RESERVED: c_int = ffi::SQLITE_LOCK_RESERVED;
pub(crate) const PENDING: c_int = ffi::SQLITE_LOCK_PENDING;
pub(crate) const EXCLUSIVE: c_int = ffi::SQLITE_LOCK_EXCLUSIVE;

/// Another connection holds a conflicting lock.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy;

/// One database file's lock, held by connection ids.
#[derive(Debug, Default)]
pub(crate) struct FileLock {
    shared: u32,
    reserved: Option<u64>,
    pending: Option<u64>,
    exclusive: Option<u64>,
}

impl FileLock {
    /// Raise connection `id` from `have` to `want`. On `Busy` the level the
    /// connection now holds is in the error's companion: a failed EXCLUSIVE
    /// still holds PENDING (new readers are kept out until it gets it).
    pub fn lock(&mut self, id: u64, have: c_int, want: c_int) -> (c_int, Result<(), Busy>) {
        if have >= want {
            return (have, Ok(()));
        }
        let other = |h: Option<u64>| h.is_some_and(|h| h != id);
        match want {
            SHARED => {
                if self.pending.is_some() || self.exclusive.is_some() {
                    return (have, Err(Busy));
                }
                self.shared += 1;
                (SHARED, Ok(()))
            }
            RESERVED => {
                debug_assert!(have >= SHARED, "RESERVED without SHARED");
                if other(self.reserved) || other(self.pending) || other(self.exclusive) {
                    return (have, Err(Busy));
                }
                self.reserved = Some(id);
                (RESERVED, Ok(()))
            }
            _ => {
                debug_assert!(have >= SHARED, "EXCLUSIVE without SHARED");
                if other(self.exclusive) || other(self.pending) || other(self.reserved) {
                    return (have, Err(Busy));
                }
                self.pending = Some(id);
                if self.shared > 1 {
                    return (PENDING, Err(Busy));
                }
                self.pending = None;
                self.exclusive = Some(id);
                (EXCLUSIVE, Ok(()))
            }
        }
    }

    /// Lower connection `id` from `have` to `want` (SHARED or NONE).
    pub fn unlock(&mut self, id: u64, have: c_int, want: c_int) -> c_int {
        if want >= have {
            return have;
        }
        for holder in [&mut self.reserved, &mut self.pending, &mut self.exclusive] {
            if *holder == Some(id) {
                *holder = None;
            }
        }
        if want == NONE && have >= SHARED {
            debug_assert!(self.shared > 0, "a SHARED hold nobody counted");
            self.shared = self.shared.saturating_sub(1);
        }
        want
    }

    /// Whether any connection holds RESERVED or more (a writer is active).
    pub fn reserved(&self) -> bool {
        self.reserved.is_some() || self.pending.is_some() || self.exclusive.is_some()
    }
}

/// Slots of the WAL index's locks.
pub(crate) const SHM_SLOTS: usize = ffi::SQLITE_SHM_NLOCK as usize;

/// A database's shared-memory WAL index: regions SQLite maps, and its
/// lock slots.
#[derive(Debug, Default)]
pub(crate) struct Shm {
    /// Atomics, so SQLite's concurrent access through the pointers it was
    /// given never aliases a Rust `&mut`.
    regions: Vec<Box<[AtomicU64]>>,
    region_bytes: usize,
    shared: [u32; SHM_SLOTS],
    exclusive: [Option<u64>; SHM_SLOTS],
    /// Connections that have mapped regions.
    mappers: u32,
}

/// What one connection holds of a database's WAL index.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ShmHold {
    shared: u8,
    exclusive: u8,
    mapped: bool,
}

impl Shm {
    /// The address of region `index` (allocating up to it if `extend`), or
    /// null if it does not exist and `extend` is false.
    pub fn map(
        &mut self,
        hold: &mut ShmHold,
        index: usize,
        bytes: usize,
        extend: bool,
    ) -> Result<*mut std::ffi::c_void, ()> {
        if bytes == 0
            || !bytes.is_multiple_of(8)
            || (self.region_bytes != 0 && self.region_bytes != bytes)
        {
            return Err(());
        }
        self.region_bytes = bytes;
        if !hold.mapped {
            hold.mapped = true;
            self.mappers += 1;
        }
        while self.regions.len() <= index {
            if !extend {
                return Ok(std::ptr::null_mut());
            }
            self.regions
                .push((0..bytes / 8).map(|_| AtomicU64::new(0)).collect());
        }
        match self.regions.get(index) {
            Some(r) => Ok(r.as_ptr() as *mut std::ffi::c_void),
            None => Err(()),
        }
    }

    /// Release everything `hold` has; the regions go with the last mapper.
    pub fn unmap(&mut self, id: u64, hold: &mut ShmHold) {
        self.release(id, hold, 0, SHM_SLOTS);
        if hold.mapped {
            hold.mapped = false;
            self.mappers = self.mappers.saturating_sub(1);
            if self.mappers == 0 {
                self.regions.clear();
                self.region_bytes = 0;
            }
        }
    }

    fn release(&mut self, id: u64, hold: &mut ShmHold, from: usize, n: usize) {
        for slot in from..(from + n).min(SHM_SLOTS) {
            let bit = 1u8 << slot;
            if hold.shared & bit != 0 {
                hold.shared &= !bit;
                if let Some(c) = self.shared.get_mut(slot) {
                    *c = c.saturating_sub(1);
                }
            }
            if hold.exclusive & bit != 0 {
                hold.exclusive &= !bit;
                if let Some(e) = self.exclusive.get_mut(slot) {
                    debug_assert_eq!(*e, Some(id));
                    *e = None;
                }
            }
        }
    }

    /// `xShmLock`: take or release slots `[from, from+n)`.
    pub fn lock(
        &mut self,
        id: u64,
        hold: &mut ShmHold,
        from: usize,
        n: usize,
        flags: c_int,
    ) -> Result<(), Busy> {
        let end = from.saturating_add(n).min(SHM_SLOTS);
        if flags & ffi::SQLITE_SHM_UNLOCK != 0 {
            self.release(id, hold, from, n);
            return Ok(());
        }
        let exclusive = flags & ffi::SQLITE_SHM_EXCLUSIVE != 0;
        for slot in from..end {
            let bit = 1u8 << slot;
            let holder = self.exclusive.get(slot).copied().flatten();
            if holder.is_some_and(|h| h != id) {
                return Err(Busy);
            }
            if exclusive {
                let mine = u32::from(hold.shared & bit != 0);
                if self.shared.get(slot).copied().unwrap_or(0) > mine {
                    return Err(Busy);
                }
            }
        }
        for slot in from..end {
            let bit = 1u8 << slot;
            if exclusive {
                if let Some(e) = self.exclusive.get_mut(slot) {
                    *e = Some(id);
                }
                hold.exclusive |= bit;
            } else if hold.shared & bit == 0 {
                if let Some(c) = self.shared.get_mut(slot) {
                    *c += 1;
                }
                hold.shared |= bit;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_waits_for_readers_and_keeps_new_ones_out() {
        let mut l = FileLock::default();
        assert_eq!(l.lock(1, NONE, SHARED), (SHARED, Ok(())));
        assert_eq!(l.lock(2, NONE, SHARED), (SHARED, Ok(())));
        assert_eq!(l.lock(1, SHARED, RESERVED), (RESERVED, Ok(())));
        assert!(l.reserved());
        // A second writer cannot reserve.
        assert_eq!(l.lock(2, SHARED, RESERVED), (SHARED, Err(Busy)));
        // The writer cannot go exclusive while 2 reads, but holds PENDING...
        assert_eq!(l.lock(1, RESERVED, EXCLUSIVE), (PENDING, Err(Busy)));
        // ...which keeps a new reader out.
        assert_eq!(l.lock(3, NONE, SHARED), (NONE, Err(Busy)));
        assert_eq!(l.unlock(2, SHARED, NONE), NONE);
        assert_eq!(l.lock(1, PENDING, EXCLUSIVE), (EXCLUSIVE, Ok(())));
        assert_eq!(l.unlock(1, EXCLUSIVE, SHARED), SHARED);
        assert!(!l.reserved());
        assert_eq!(l.lock(3, NONE, SHARED), (SHARED, Ok(())));
    }

    #[test]
    fn wal_index_slots_exclude_as_sqlite_expects() {
        let mut shm = Shm::default();
        let (mut a, mut b) = (ShmHold::default(), ShmHold::default());
        let lock = ffi::SQLITE_SHM_LOCK;
        let (sh, ex, un) = (
            ffi::SQLITE_SHM_SHARED,
            ffi::SQLITE_SHM_EXCLUSIVE,
            ffi::SQLITE_SHM_UNLOCK,
        );
        assert!(shm.lock(1, &mut a, 3, 1, lock | sh).is_ok());
        assert!(shm.lock(2, &mut b, 3, 1, lock | sh).is_ok());
        assert_eq!(shm.lock(2, &mut b, 3, 1, lock | ex), Err(Busy));
        assert!(shm.lock(1, &mut a, 3, 1, un | sh).is_ok());
        // Upgrading its own shared hold is allowed once it is the only one.
        assert!(shm.lock(2, &mut b, 3, 1, lock | ex).is_ok());
        assert_eq!(shm.lock(1, &mut a, 3, 1, lock | sh), Err(Busy));
        let p = shm.map(&mut a, 0, 32768, true).unwrap();
        assert!(!p.is_null());
        assert!(shm.map(&mut b, 1, 32768, false).unwrap().is_null());
        assert_eq!(shm.map(&mut b, 0, 32768, false).unwrap(), p);
        shm.unmap(1, &mut a);
        assert_eq!(shm.regions.len(), 1, "b still maps it");
        shm.unmap(2, &mut b);
        assert!(shm.regions.is_empty());
        assert!(
            shm.lock(1, &mut a, 3, 1, lock | ex).is_ok(),
            "b's holds went with it"
        );
    }
}
