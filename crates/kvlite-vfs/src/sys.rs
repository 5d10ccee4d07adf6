//! Pieces of the SQLite C ABI both of kvlite's VFSes share: panic guards,
//! name conversion, and the entry points they delegate to the operating
//! system's VFS (randomness, sleep, time, path names).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// Largest path name either VFS accepts.
pub(crate) const MAX_PATHNAME: c_int = 1024;

/// Run `f`, mapping a panic to `on_panic` (unwinding into C is undefined).
pub(crate) fn guard(on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// xClose of a file whose state is a `Box` that x_open leaked into `*slot`:
/// freed once, the slot cleared first so a second close frees nothing.
///
/// # Safety
/// `slot` points at the field of a handle x_open initialised, which SQLite
/// does not use after xClose.
pub(crate) unsafe fn free_boxed<T>(slot: *mut *mut T) {
    // SAFETY: per the contract, `slot` is valid.
    let boxed = unsafe { *slot };
    if boxed.is_null() {
        return;
    }
    // SAFETY: as above.
    unsafe { *slot = ptr::null_mut() };
    // SAFETY: `boxed` came from Box::into_raw in x_open and is freed once.
    drop(unsafe { Box::from_raw(boxed) });
}

/// xRead's buffer and offset, or `None` for a negative size or offset.
///
/// # Safety
/// `buf` is a writable buffer of `amt` bytes nothing else touches during
/// the call (as SQLite passes it).
pub(crate) unsafe fn read_args<'a>(
    buf: *mut c_void,
    amt: c_int,
    offset: i64,
) -> Option<(&'a mut [u8], u64)> {
    let (amt, offset) = (usize::try_from(amt).ok()?, u64::try_from(offset).ok()?);
    // SAFETY: per the contract.
    Some((
        unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, amt) },
        offset,
    ))
}

/// xWrite's data and offset, or `None` for a negative size or offset.
///
/// # Safety
/// `buf` is a readable buffer of `amt` bytes (as SQLite passes it).
pub(crate) unsafe fn write_args<'a>(
    buf: *const c_void,
    amt: c_int,
    offset: i64,
) -> Option<(&'a [u8], u64)> {
    let (amt, offset) = (usize::try_from(amt).ok()?, u64::try_from(offset).ok()?);
    // SAFETY: per the contract.
    Some((
        unsafe { std::slice::from_raw_parts(buf as *const u8, amt) },
        offset,
    ))
}

pub(crate) fn name_of(z: *const c_char) -> Option<String> {
    if z.is_null() {
        return None;
    }
    // SAFETY: SQLite passes NUL-terminated names.
    Some(unsafe { CStr::from_ptr(z) }.to_string_lossy().into_owned())
}

/// The operating system's VFS, found once, before any kvlite VFS could
/// have been made the default (delegating to ourselves would recurse).
fn os_vfs() -> *mut ffi::sqlite3_vfs {
    static OS: OnceLock<usize> = OnceLock::new();
    *OS.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find only reads its NUL-terminated argument;
        // the VFSes it returns live for the process.
        let unix = unsafe { ffi::sqlite3_vfs_find(c"unix".as_ptr()) };
        if unix.is_null() {
            // SAFETY: as above; NULL asks for the default.
            (unsafe { ffi::sqlite3_vfs_find(ptr::null()) }) as usize
        } else {
            unix as usize
        }
    }) as *mut ffi::sqlite3_vfs
}

/// Find the OS VFS now, while the default is still SQLite's own.
pub(crate) fn init_os_vfs() {
    os_vfs();
}

pub(crate) unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    n_out: c_int,
    z_out: *mut c_char,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        if z_name.is_null() || z_out.is_null() {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: z_name is NUL-terminated; z_out has n_out bytes.
        let bytes = unsafe { CStr::from_ptr(z_name) }.to_bytes_with_nul();
        if bytes.len() > n_out.max(0) as usize {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: z_out has n_out >= bytes.len() bytes (checked above) and
        // does not overlap the name SQLite passed in.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, z_out, bytes.len()) };
        ffi::SQLITE_OK
    })
}

pub(crate) unsafe extern "C" fn x_randomness(
    _vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: the OS VFS lives for the process; SQLite's arguments pass through.
    unsafe {
        let d = os_vfs();
        match d.as_ref().and_then(|d| d.xRandomness) {
            Some(f) => f(d, n, out),
            None => 0,
        }
    }
}

pub(crate) unsafe extern "C" fn x_sleep(_vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: as for x_randomness.
    unsafe {
        let d = os_vfs();
        match d.as_ref().and_then(|d| d.xSleep) {
            Some(f) => f(d, micros),
            None => 0,
        }
    }
}

pub(crate) unsafe extern "C" fn x_current_time(
    _vfs: *mut ffi::sqlite3_vfs,
    out: *mut f64,
) -> c_int {
    // SAFETY: as for x_randomness.
    unsafe {
        let d = os_vfs();
        match d.as_ref().and_then(|d| d.xCurrentTime) {
            Some(f) => f(d, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}

pub(crate) unsafe extern "C" fn x_current_time_int64(
    _vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: as for x_randomness.
    unsafe {
        let d = os_vfs();
        match d.as_ref().and_then(|d| d.xCurrentTimeInt64) {
            Some(f) => f(d, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}

pub(crate) unsafe extern "C" fn x_get_last_error(
    _vfs: *mut ffi::sqlite3_vfs,
    _n: c_int,
    _out: *mut c_char,
) -> c_int {
    0
}

/// A `sqlite3_vfs` with the shared entry points filled in and `x_open`,
/// `x_delete`, `x_access` and the app data of the caller's.
pub(crate) fn vfs_struct(
    name: *const c_char,
    sz_os_file: usize,
    app_data: *mut std::ffi::c_void,
    x_open: unsafe extern "C" fn(
        *mut ffi::sqlite3_vfs,
        ffi::sqlite3_filename,
        *mut ffi::sqlite3_file,
        c_int,
        *mut c_int,
    ) -> c_int,
    x_delete: unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *const c_char, c_int) -> c_int,
    x_access: unsafe extern "C" fn(
        *mut ffi::sqlite3_vfs,
        *const c_char,
        c_int,
        *mut c_int,
    ) -> c_int,
) -> ffi::sqlite3_vfs {
    init_os_vfs();
    ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: sz_os_file as c_int,
        mxPathname: MAX_PATHNAME,
        pNext: ptr::null_mut(),
        zName: name,
        pAppData: app_data,
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: None,
        xDlError: None,
        xDlSym: None,
        xDlClose: None,
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }
}

/// Hand SQLite an error message for a `SQLITE_FCNTL_PRAGMA` result slot
/// (SQLite frees it with `sqlite3_free`, so it must come from
/// `sqlite3_malloc`).
///
/// # Safety
/// `slot` must be the result slot of a `SQLITE_FCNTL_PRAGMA` call.
pub(crate) unsafe fn set_pragma_message(slot: *mut *mut c_char, msg: &CStr) {
    let bytes = msg.to_bytes_with_nul();
    // SAFETY: the allocation is bytes.len() long and the copy fills it; the
    // caller promised slot is a valid result slot.
    unsafe {
        let out = ffi::sqlite3_malloc(bytes.len() as c_int) as *mut u8;
        if !out.is_null() {
            ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len());
            *slot = out as *mut c_char;
        }
    }
}
