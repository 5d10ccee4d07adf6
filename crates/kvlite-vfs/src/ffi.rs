//! The SQLite C ABI: a `sqlite3_vfs` and `sqlite3_io_methods` whose entry
//! points forward to [`DbFile`] and [`MemFile`]. Every entry point catches
//! panics (unwinding into C is undefined) and turns them into error codes.

use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::{Arc, Mutex, PoisonError};

use libsqlite3_sys as ffi;

use crate::file::{CommitPoint, DbFile};
use crate::memfile::{MemFile, Read};
use crate::sys::{self, guard, name_of};
use crate::{Shared, Source};

/// What SQLite allocates per open file (`szOsFile` bytes): the base struct
/// SQLite reads `pMethods` from, then our boxed file.
#[repr(C)]
struct Handle {
    base: ffi::sqlite3_file,
    file: *mut Kind,
}

// A main database file is the common case; boxing it would add an
// indirection on every I/O call for no saving that matters.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Db(DbFile),
    Mem(MemFile),
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
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
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// Names already registered, so a second registration is refused instead of
/// silently replacing a VFS that open connections still use.
static REGISTERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A registered VFS. Dropping it unregisters the VFS and releases the
/// transport; the small `sqlite3_vfs` struct itself stays allocated because
/// SQLite may still hold pointers to it (opens through it then fail cleanly),
/// and files already open keep their own reference to the transport.
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

/// Register a VFS.
pub(crate) fn register(name: CString, shared: Arc<Shared>) -> Result<Registration, ()> {
    let mut registered = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
    let key = name.to_string_lossy().into_owned();
    if registered.contains(&key) {
        return Err(());
    }
    let data: *const VfsData = Box::into_raw(Box::new(VfsData {
        shared: Mutex::new(Some(shared)),
    }));
    let vfs = Box::new(sys::vfs_struct(
        name.into_raw(),
        std::mem::size_of::<Handle>(),
        data as *mut c_void,
        x_open,
        x_delete,
        x_access,
    ));
    let vfs = Box::into_raw(vfs);
    // SAFETY: the struct is fully initialised and leaked, so it outlives
    // every use SQLite makes of it.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc != ffi::SQLITE_OK {
        return Err(());
    }
    registered.push(key.clone());
    Ok(Registration {
        vfs,
        data,
        name: key,
    })
}

struct VfsData {
    /// None once unregistered.
    shared: Mutex<Option<Arc<Shared>>>,
}

impl VfsData {
    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// # Safety
/// `vfs` must be a VFS registered by [`register`].
unsafe fn data<'a>(vfs: *mut ffi::sqlite3_vfs) -> &'a VfsData {
    // SAFETY: pAppData was set to a leaked Box<VfsData> at registration.
    unsafe { &*((*vfs).pAppData as *const VfsData) }
}

/// # Safety
/// `file` must be a handle opened by [`x_open`] and not yet closed.
unsafe fn kind<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut Kind> {
    // SAFETY: SQLite passes back the handle it allocated with szOsFile bytes;
    // x_open stored a leaked Box<Kind> in it. SQLite serialises calls on one
    // file, so the exclusive reference is unique.
    unsafe { (*(file as *mut Handle)).file.as_mut() }
}

/// A URI parameter of the file SQLite opens.
///
/// # Safety
/// `z_name` is a name SQLite passed to xOpen for a main database.
unsafe fn uri_parameter(z_name: ffi::sqlite3_filename, key: &str) -> Option<String> {
    let key = std::ffi::CString::new(key).ok()?;
    // SAFETY: per the contract; the key is NUL-terminated.
    let value = unsafe { ffi::sqlite3_uri_parameter(z_name, key.as_ptr()) };
    name_of(value)
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: vfs is ours; file points at szOsFile bytes owned by SQLite.
        let data = unsafe { data(vfs) };
        let handle = file as *mut Handle;
        let Some(shared) = data.shared() else {
            return ffi::SQLITE_CANTOPEN;
        };
        // SAFETY: SQLite allocated szOsFile bytes for the handle and hands
        // it to us uninitialised: both fields are ours to write first.
        unsafe {
            (*handle).base.pMethods = ptr::null();
            (*handle).file = ptr::null_mut();
        }
        let name = name_of(z_name);
        let kind = if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            let Some(name) = name else {
                return ffi::SQLITE_CANTOPEN;
            };
            let transport = match &shared.source {
                Source::Fixed(t) => t.clone(),
                Source::Routed(router) => {
                    // SAFETY: SQLite passes the main database's name as
                    // opened, which carries its URI parameters.
                    let param = |key: &str| unsafe { uri_parameter(z_name, key) };
                    match router.route(&name, &param) {
                        Ok(t) => t,
                        Err(reason) => {
                            shared.set_last_error(&name, format!("open: {reason}"));
                            return ffi::SQLITE_CANTOPEN;
                        }
                    }
                }
            };
            // SAFETY: as above, the main database's name as opened.
            let at = unsafe { uri_parameter(z_name, "at") };
            let opened = match at.as_deref().map(crate::parse_point) {
                Some(Ok(point)) => DbFile::open_reader_at(&name, shared.clone(), transport, point),
                Some(Err(reason)) => {
                    shared.set_last_error(&name, format!("open: {reason}"));
                    return ffi::SQLITE_CANTOPEN;
                }
                None if flags & ffi::SQLITE_OPEN_READONLY != 0 => {
                    DbFile::open_reader(&name, shared.clone(), transport)
                }
                None => DbFile::open(&name, shared.clone(), transport),
            };
            match opened {
                Ok(f) => Kind::Db(f),
                Err(e) => {
                    shared.set_last_error(&name, format!("open: {e}"));
                    return ffi::SQLITE_CANTOPEN;
                }
            }
        } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
            // WAL would keep committed data in a file kvlite does not store.
            return ffi::SQLITE_CANTOPEN;
        } else {
            let mut files = shared
                .memfiles
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let delete_on_close = flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0;
            let file_data = match &name {
                Some(n) => files.entry(n.clone()).or_default().clone(),
                None => Default::default(),
            };
            Kind::Mem(MemFile {
                data: file_data,
                delete_on_close: match name {
                    Some(n) if delete_on_close => Some((n, shared.memfiles.clone())),
                    _ => None,
                },
            })
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
        let data = unsafe { data(vfs) };
        if let (Some(name), Some(shared)) = (name_of(z_name), data.shared()) {
            shared
                .memfiles
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: vfs is ours; out is a valid int pointer.
        let data = unsafe { data(vfs) };
        let shared = data.shared();
        let exists = name_of(z_name).is_some_and(|n| {
            shared.as_ref().is_some_and(|s| {
                s.memfiles
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains_key(&n)
            })
        });
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
        // SAFETY: SQLite passes a buffer of `amt` bytes.
        let Some(kind) = (unsafe { kind(file) }) else {
            return ffi::SQLITE_IOERR_READ;
        };
        // SAFETY: SQLite passes a buffer of `amt` bytes that nothing else
        // touches during the call.
        let Some((buf, offset)) = (unsafe { sys::read_args(buf, amt, offset) }) else {
            return ffi::SQLITE_IOERR_READ;
        };
        let full = match kind {
            Kind::Db(db) => match db.read(buf, offset) {
                Ok(full) => full,
                Err(code) => return code,
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
        // SAFETY: SQLite passes a buffer of `amt` bytes.
        let Some(kind) = (unsafe { kind(file) }) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        // SAFETY: SQLite passes a buffer of `amt` bytes that nothing else
        // touches during the call.
        let Some((buf, offset)) = (unsafe { sys::write_args(buf, amt, offset) }) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        match kind {
            Kind::Db(db) => db.write(buf, offset).err().unwrap_or(ffi::SQLITE_OK),
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
            Kind::Db(db) => db.truncate(size).err().unwrap_or(ffi::SQLITE_OK),
            Kind::Mem(m) => {
                m.truncate(size);
                ffi::SQLITE_OK
            }
        }
    })
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_FSYNC, || {
        // SAFETY: a handle from x_open.
        match unsafe { kind(file) } {
            Some(Kind::Db(db)) => db.commit(CommitPoint::Sync).err().unwrap_or(ffi::SQLITE_OK),
            _ => ffi::SQLITE_OK,
        }
    })
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: a handle from x_open; out is a valid pointer.
        let size = match unsafe { kind(file) } {
            Some(Kind::Db(db)) => db.file_size(),
            Some(Kind::Mem(m)) => m.size(),
            None => return ffi::SQLITE_IOERR_FSTAT,
        };
        // SAFETY: SQLite passes a valid pointer for the size.
        unsafe { *out = size as ffi::sqlite3_int64 };
        ffi::SQLITE_OK
    })
}

/// A writer needs no locks: one writer per database is enforced by the
/// engine's generation fence, and writers run in exclusive mode. A reader's
/// shared lock starts its read transaction at the newest commit.
unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: a handle from x_open.
        match unsafe { kind(file) } {
            Some(Kind::Db(db)) => db.lock(level).err().unwrap_or(ffi::SQLITE_OK),
            _ => ffi::SQLITE_OK,
        }
    })
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_UNLOCK, || {
        // SAFETY: a handle from x_open.
        if let Some(Kind::Db(db)) = unsafe { kind(file) } {
            db.unlock(level);
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_check_reserved_lock(
    _file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    // SAFETY: out is a valid pointer.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(ffi::SQLITE_IOERR, || {
        // SAFETY: a handle from x_open.
        let Some(Kind::Db(db)) = (unsafe { kind(file) }) else {
            return ffi::SQLITE_NOTFOUND;
        };
        match op {
            ffi::SQLITE_FCNTL_BEGIN_ATOMIC_WRITE => {
                db.begin_batch().err().unwrap_or(ffi::SQLITE_OK)
            }
            ffi::SQLITE_FCNTL_COMMIT_ATOMIC_WRITE => db
                .commit(CommitPoint::Batch)
                .err()
                .unwrap_or(ffi::SQLITE_OK),
            ffi::SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE => {
                db.rollback_batch();
                ffi::SQLITE_OK
            }
            ffi::SQLITE_FCNTL_PRAGMA => pragma(arg),
            ffi::SQLITE_FCNTL_SYNC => db.commit(CommitPoint::Sync).err().unwrap_or(ffi::SQLITE_OK),
            ffi::SQLITE_FCNTL_COMMIT_PHASETWO => db
                .commit(CommitPoint::PhaseTwo)
                .err()
                .unwrap_or(ffi::SQLITE_OK),
            ffi::SQLITE_FCNTL_HAS_MOVED => {
                if !arg.is_null() {
                    // SAFETY: SQLite passes an int pointer for this opcode.
                    unsafe { *(arg as *mut c_int) = 0 };
                }
                ffi::SQLITE_OK
            }
            _ => ffi::SQLITE_NOTFOUND,
        }
    })
}

/// Refuse journal modes kvlite cannot honour: WAL keeps committed data in a
/// file kvlite does not store, and OFF leaves ROLLBACK undefined.
fn pragma(arg: *mut c_void) -> c_int {
    if arg.is_null() {
        return ffi::SQLITE_NOTFOUND;
    }
    let args = arg as *mut *mut c_char;
    // SAFETY: for SQLITE_FCNTL_PRAGMA, arg is a char*[3]: result slot, pragma
    // name, argument (or NULL); name_of accepts NULL.
    let (name, value) = unsafe { (name_of(*args.add(1)), name_of(*args.add(2))) };
    let refused = name.is_some_and(|n| n.eq_ignore_ascii_case("journal_mode"))
        && value.is_some_and(|v| v.eq_ignore_ascii_case("wal") || v.eq_ignore_ascii_case("off"));
    if !refused {
        return ffi::SQLITE_NOTFOUND;
    }
    // SAFETY: args is the FCNTL_PRAGMA argument array; slot 0 is the result.
    unsafe {
        sys::set_pragma_message(
            args,
            c"kvlite supports rollback journal modes only (MEMORY, DELETE, TRUNCATE, PERSIST), not WAL or OFF",
        )
    };
    ffi::SQLITE_ERROR
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    kvlite_api::PAGE_SIZE as c_int
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: a handle from x_open.
    match unsafe { kind(file) } {
        Some(Kind::Db(_)) => ffi::SQLITE_IOCAP_BATCH_ATOMIC | ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE,
        _ => {
            ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
                | ffi::SQLITE_IOCAP_SAFE_APPEND
                | ffi::SQLITE_IOCAP_SEQUENTIAL
        }
    }
}
