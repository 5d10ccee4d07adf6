//! The v1 VFS's C ABI: a `sqlite3_vfs` and `sqlite3_io_methods` (version 2,
//! with the WAL index) whose entry points forward to [`V1Files`] for the
//! main database, its journal and its WAL, and to [`MemFile`] for temporary
//! files. Every entry point catches panics.

use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::{Arc, Mutex, PoisonError};

use kvlite_api::{Error, InvalidKind, V1File};
use libsqlite3_sys as ffi;

use super::locks::{self, ShmHold};
use super::{DbShared, V1Shared, parse_name};
use crate::memfile::{MemFile, Read};
use crate::sys::{self, guard, name_of};

#[repr(C)]
struct Handle {
    base: ffi::sqlite3_file,
    file: *mut Kind,
}

enum Kind {
    Store(StoreFile),
    Mem(MemFile),
}

/// A main database, journal or WAL file kept by the [`V1Files`] store.
struct StoreFile {
    shared: Arc<V1Shared>,
    db: String,
    file: V1File,
    /// Lock and WAL-index state of the database (main files only).
    locks: Option<Arc<DbShared>>,
    id: u64,
    level: c_int,
    shm: ShmHold,
}

impl Drop for StoreFile {
    fn drop(&mut self) {
        if let Some(l) = self.locks.take() {
            l.file_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unlock(self.id, self.level, locks::NONE);
            l.shm
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unmap(self.id, &mut self.shm);
            self.shared.release(&self.db, l);
        }
    }
}

impl StoreFile {
    /// Report a store error to SQLite as `code`, keeping the detail.
    fn fail(&self, what: &str, e: Error, code: c_int) -> c_int {
        let code = match &e {
            Error::StoreFull(_) => ffi::SQLITE_FULL,
            Error::InvalidRequest(i) if i.kind == InvalidKind::V1ReadOnly => ffi::SQLITE_READONLY,
            _ => code,
        };
        self.shared.set_last_error(
            &self.db,
            format!("{what} of the v1 {} file: {e}", self.file.as_str()),
        );
        code
    }
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

static REGISTERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A registered v1 VFS; see `crate::ffi::Registration` for its lifetime.
pub(crate) struct Registration {
    vfs: *mut ffi::sqlite3_vfs,
    data: *const VfsData,
    name: String,
}

// SAFETY: the pointers are to leaked, never-freed structs; all mutation goes
// through SQLite's own locking or the Mutex inside VfsData.
unsafe impl Send for Registration {}
// SAFETY: as for Send: shared access only reads the leaked structs.
unsafe impl Sync for Registration {}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: vfs was registered by `register` and is never freed.
        unsafe { ffi::sqlite3_vfs_unregister(self.vfs) };
        // SAFETY: data points at the leaked VfsData.
        let data = unsafe { &*self.data };
        data.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        REGISTERED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|n| *n != self.name);
    }
}

struct VfsData {
    shared: Mutex<Option<Arc<V1Shared>>>,
}

pub(crate) fn register(name: CString, shared: Arc<V1Shared>) -> Result<Registration, ()> {
    let mut registered = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
    let key = name.to_string_lossy().into_owned();
    if registered.contains(&key) {
        return Err(());
    }
    let data: *const VfsData = Box::into_raw(Box::new(VfsData {
        shared: Mutex::new(Some(shared)),
    }));
    let vfs = Box::into_raw(Box::new(sys::vfs_struct(
        name.into_raw(),
        std::mem::size_of::<Handle>(),
        data as *mut c_void,
        x_open,
        x_delete,
        x_access,
    )));
    // SAFETY: the struct is fully initialised and leaked, so it outlives
    // every use SQLite makes of it.
    if unsafe { ffi::sqlite3_vfs_register(vfs, 0) } != ffi::SQLITE_OK {
        return Err(());
    }
    registered.push(key.clone());
    Ok(Registration {
        vfs,
        data,
        name: key,
    })
}

/// # Safety
/// `vfs` must be a VFS registered by [`register`].
unsafe fn shared_of(vfs: *mut ffi::sqlite3_vfs) -> Option<Arc<V1Shared>> {
    // SAFETY: pAppData was set to a leaked Box<VfsData> at registration.
    let data = unsafe { &*((*vfs).pAppData as *const VfsData) };
    data.shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// # Safety
/// `file` must be a handle opened by [`x_open`] and not yet closed.
unsafe fn kind<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut Kind> {
    // SAFETY: SQLite passes back the handle it allocated with szOsFile bytes;
    // x_open stored a leaked Box<Kind> in it. SQLite serialises calls on one
    // file, so the exclusive reference is unique.
    unsafe { (*(file as *mut Handle)).file.as_mut() }
}

/// # Safety
/// As for [`kind`].
unsafe fn store<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut StoreFile> {
    // SAFETY: forwarded from the caller.
    match unsafe { kind(file) } {
        Some(Kind::Store(s)) => Some(s),
        _ => None,
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        let handle = file as *mut Handle;
        // SAFETY: SQLite allocated szOsFile bytes for the handle and hands
        // it to us uninitialised: both fields are ours to write first.
        unsafe {
            (*handle).base.pMethods = ptr::null();
            (*handle).file = ptr::null_mut();
        }
        // SAFETY: vfs is ours.
        let Some(shared) = (unsafe { shared_of(vfs) }) else {
            return ffi::SQLITE_CANTOPEN;
        };
        let name = name_of(z_name);
        let stored = [
            (ffi::SQLITE_OPEN_MAIN_DB, V1File::Main),
            (ffi::SQLITE_OPEN_MAIN_JOURNAL, V1File::Journal),
            (ffi::SQLITE_OPEN_WAL, V1File::Wal),
        ]
        .into_iter()
        .find(|(flag, _)| flags & flag != 0)
        .map(|(_, f)| f);
        let kind = match (stored, &name) {
            (Some(which), Some(name)) => {
                let db = match which {
                    V1File::Main => name.as_str(),
                    _ => match name.strip_suffix(which.suffix()) {
                        Some(db) => db,
                        None => return ffi::SQLITE_CANTOPEN,
                    },
                };
                let exists = match shared.files.size(db, which) {
                    Ok(size) => size.is_some(),
                    Err(e) => {
                        shared.set_last_error(
                            db,
                            format!("open of the v1 {} file: {e}", which.as_str()),
                        );
                        return ffi::SQLITE_CANTOPEN;
                    }
                };
                if !exists {
                    if flags & ffi::SQLITE_OPEN_CREATE == 0 {
                        return ffi::SQLITE_CANTOPEN;
                    }
                    if let Err(e) = shared.files.create(db, which) {
                        shared.set_last_error(
                            db,
                            format!("creating the v1 {} file: {e}", which.as_str()),
                        );
                        return match e {
                            Error::InvalidRequest(i) if i.kind == InvalidKind::V1ReadOnly => {
                                ffi::SQLITE_READONLY
                            }
                            _ => ffi::SQLITE_CANTOPEN,
                        };
                    }
                }
                let locks = (which == V1File::Main).then(|| shared.db_shared(db));
                let id = shared
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Kind::Store(StoreFile {
                    db: db.to_string(),
                    shared: shared.clone(),
                    file: which,
                    locks,
                    id,
                    level: locks::NONE,
                    shm: ShmHold::default(),
                })
            }
            (Some(_), None) => return ffi::SQLITE_CANTOPEN,
            (None, _) => {
                let mut files = shared
                    .memfiles
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let delete_on_close = flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0;
                let data = match &name {
                    Some(n) => files.entry(n.clone()).or_default().clone(),
                    None => Default::default(),
                };
                Kind::Mem(MemFile {
                    data,
                    delete_on_close: match name {
                        Some(n) if delete_on_close => Some((n, shared.memfiles.clone())),
                        _ => None,
                    },
                })
            }
        };
        // SAFETY: as above; the Box is reclaimed in x_close.
        unsafe {
            (*handle).file = Box::into_raw(Box::new(kind));
            (*handle).base.pMethods = &IO_METHODS;
            if !out_flags.is_null() {
                *out_flags = flags;
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    _sync: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_DELETE, || {
        // SAFETY: vfs is ours.
        let (Some(name), Some(shared)) = (name_of(z_name), unsafe { shared_of(vfs) }) else {
            return ffi::SQLITE_IOERR_DELETE;
        };
        if shared
            .memfiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name)
            .is_some()
        {
            return ffi::SQLITE_OK;
        }
        let (db, file) = parse_name(&name);
        if file == V1File::Main {
            return ffi::SQLITE_OK; // SQLite never deletes a main database
        }
        match shared.files.delete(db, file) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                shared.set_last_error(db, format!("deleting the v1 {} file: {e}", file.as_str()));
                match e {
                    Error::InvalidRequest(i) if i.kind == InvalidKind::V1ReadOnly => {
                        ffi::SQLITE_READONLY
                    }
                    _ => ffi::SQLITE_IOERR_DELETE,
                }
            }
        }
    })
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: vfs is ours.
        let (Some(name), Some(shared)) = (name_of(z_name), unsafe { shared_of(vfs) }) else {
            return ffi::SQLITE_IOERR_ACCESS;
        };
        let in_memory = shared
            .memfiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&name);
        let exists = if in_memory {
            true
        } else {
            let (db, file) = parse_name(&name);
            match shared.files.size(db, file) {
                Ok(size) => size.is_some(),
                Err(e) => {
                    shared
                        .set_last_error(db, format!("checking the v1 {} file: {e}", file.as_str()));
                    return ffi::SQLITE_IOERR_ACCESS;
                }
            }
        };
        // SAFETY: SQLite passes a valid pointer to an int for the answer.
        unsafe { *out = c_int::from(exists) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    guard(ffi::SQLITE_IOERR_CLOSE, || {
        let handle = file as *mut Handle;
        // SAFETY: the handle was initialised by x_open; SQLite never uses it
        // after xClose.
        unsafe { sys::free_boxed(&raw mut (*handle).file) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: a handle from x_open.
        let Some(kind) = (unsafe { kind(file) }) else {
            return ffi::SQLITE_IOERR_READ;
        };
        // SAFETY: SQLite passes a buffer of `amt` bytes that nothing else
        // touches during the call.
        let Some((buf, offset)) = (unsafe { sys::read_args(buf, amt, offset) }) else {
            return ffi::SQLITE_IOERR_READ;
        };
        let amt = buf.len();
        let full = match kind {
            Kind::Store(f) => match f.shared.files.read(&f.db, f.file, offset, buf) {
                Ok(n) => n == amt,
                Err(e) => return f.fail("read", e, ffi::SQLITE_IOERR_READ),
            },
            Kind::Mem(m) => matches!(m.read(buf, offset), Read::Full),
        };
        if full {
            ffi::SQLITE_OK
        } else {
            ffi::SQLITE_IOERR_SHORT_READ
        }
    })
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    offset: i64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_WRITE, || {
        // SAFETY: a handle from x_open.
        let Some(kind) = (unsafe { kind(file) }) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        // SAFETY: SQLite passes a buffer of `amt` bytes that nothing else
        // touches during the call.
        let Some((buf, offset)) = (unsafe { sys::write_args(buf, amt, offset) }) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        match kind {
            Kind::Store(f) => match f.shared.files.write(&f.db, f.file, offset, buf) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => f.fail("write", e, ffi::SQLITE_IOERR_WRITE),
            },
            Kind::Mem(m) => match m.write(buf, offset) {
                Ok(()) => ffi::SQLITE_OK,
                Err(()) => ffi::SQLITE_IOERR_WRITE,
            },
        }
    })
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guard(ffi::SQLITE_IOERR_TRUNCATE, || {
        // SAFETY: a handle from x_open.
        let Some(kind) = (unsafe { kind(file) }) else {
            return ffi::SQLITE_IOERR_TRUNCATE;
        };
        let Ok(size) = u64::try_from(size) else {
            return ffi::SQLITE_IOERR_TRUNCATE;
        };
        match kind {
            Kind::Store(f) => match f.shared.files.truncate(&f.db, f.file, size) {
                Ok(()) => ffi::SQLITE_OK,
                Err(e) => f.fail("truncate", e, ffi::SQLITE_IOERR_TRUNCATE),
            },
            Kind::Mem(m) => {
                m.truncate(size);
                ffi::SQLITE_OK
            }
        }
    })
}

/// Every write is its own durable store transaction already.
unsafe extern "C" fn x_sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: a handle from x_open.
        let size = match unsafe { kind(file) } {
            Some(Kind::Store(f)) => match f.shared.files.size(&f.db, f.file) {
                Ok(size) => size.unwrap_or(0),
                Err(e) => return f.fail("size", e, ffi::SQLITE_IOERR_FSTAT),
            },
            Some(Kind::Mem(m)) => m.size(),
            None => return ffi::SQLITE_IOERR_FSTAT,
        };
        let Ok(size) = ffi::sqlite3_int64::try_from(size) else {
            return ffi::SQLITE_IOERR_FSTAT;
        };
        // SAFETY: SQLite passes a valid pointer for the size.
        unsafe { *out = size };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: a handle from x_open.
        let Some(f) = (unsafe { store(file) }) else {
            return ffi::SQLITE_OK; // temporary files need no lock
        };
        let Some(l) = &f.locks else {
            return ffi::SQLITE_OK;
        };
        let (now, r) = l
            .file_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lock(f.id, f.level, level);
        f.level = now;
        match r {
            Ok(()) => ffi::SQLITE_OK,
            Err(locks::Busy) => ffi::SQLITE_BUSY,
        }
    })
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_UNLOCK, || {
        // SAFETY: a handle from x_open.
        let Some(f) = (unsafe { store(file) }) else {
            return ffi::SQLITE_OK;
        };
        let Some(l) = &f.locks else {
            return ffi::SQLITE_OK;
        };
        f.level = l
            .file_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unlock(f.id, f.level, level);
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        // SAFETY: a handle from x_open.
        let reserved = match unsafe { store(file) }.and_then(|f| f.locks.as_ref()) {
            Some(l) => l
                .file_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reserved(),
            None => false,
        };
        // SAFETY: out is a valid pointer.
        unsafe { *out = c_int::from(reserved) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(ffi::SQLITE_IOERR, || {
        // SAFETY: a handle from x_open.
        if unsafe { store(file) }.is_none() {
            return ffi::SQLITE_NOTFOUND;
        }
        match op {
            ffi::SQLITE_FCNTL_HAS_MOVED if !arg.is_null() => {
                // SAFETY: SQLite passes an int pointer for this opcode.
                unsafe { *(arg as *mut c_int) = 0 };
                ffi::SQLITE_OK
            }
            _ => ffi::SQLITE_NOTFOUND,
        }
    })
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    kvlite_api::V1_CHUNK_SIZE as c_int
}

/// What the unix VFS reports on a modern file system: overwriting a sector
/// never damages its neighbours, nothing stronger (so SQLite journals
/// exactly as it did over v1).
unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: a handle from x_open.
        let Some(f) = (unsafe { store(file) }) else {
            return ffi::SQLITE_IOERR_SHMMAP;
        };
        let (Some(l), Ok(region), Ok(size)) =
            (&f.locks, usize::try_from(region), usize::try_from(size))
        else {
            return ffi::SQLITE_IOERR_SHMMAP;
        };
        let mapped = l.shm.lock().unwrap_or_else(PoisonError::into_inner).map(
            &mut f.shm,
            region,
            size,
            extend != 0,
        );
        match mapped {
            Ok(p) => {
                // SAFETY: SQLite passes a valid pointer for the address.
                unsafe { *out = p };
                ffi::SQLITE_OK
            }
            Err(()) => ffi::SQLITE_IOERR_SHMMAP,
        }
    })
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMLOCK, || {
        // SAFETY: a handle from x_open.
        let Some(f) = (unsafe { store(file) }) else {
            return ffi::SQLITE_IOERR_SHMLOCK;
        };
        let (Some(l), Ok(offset), Ok(n)) = (&f.locks, usize::try_from(offset), usize::try_from(n))
        else {
            return ffi::SQLITE_IOERR_SHMLOCK;
        };
        if offset + n > locks::SHM_SLOTS {
            return ffi::SQLITE_IOERR_SHMLOCK;
        }
        let r = l
            .shm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lock(f.id, &mut f.shm, offset, n, flags);
        match r {
            Ok(()) => ffi::SQLITE_OK,
            Err(locks::Busy) => ffi::SQLITE_BUSY,
        }
    })
}

unsafe extern "C" fn x_shm_barrier(_file: *mut ffi::sqlite3_file) {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, _delete: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR, || {
        // SAFETY: a handle from x_open.
        if let Some(f) = unsafe { store(file) }
            && let Some(l) = &f.locks
        {
            l.shm
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unmap(f.id, &mut f.shm);
        }
        ffi::SQLITE_OK
    })
}
