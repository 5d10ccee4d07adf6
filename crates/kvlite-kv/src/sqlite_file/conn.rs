//! A SQLite connection to the store file, driven through the C API: the
//! same code runs on the bundled SQLite and, inside the loadable extension,
//! on the host's (whose version rusqlite may not support).

use std::ffi::{CStr, CString, c_int};
use std::path::Path;
use std::ptr;

use libsqlite3_sys as ffi;

use crate::{Joined, KeyValue};

/// A failed SQLite call: its extended result code and message.
#[derive(Debug, thiserror::Error)]
#[error("sqlite error {code}: {message}")]
pub(crate) struct SqliteError {
    pub code: c_int,
    pub message: String,
}

impl SqliteError {
    /// The primary result code (`SQLITE_FULL`, `SQLITE_BUSY`, ...).
    pub fn primary(&self) -> c_int {
        self.code & 0xff
    }
}

type SqlResult<T> = std::result::Result<T, SqliteError>;

/// The statements a transaction runs, prepared once per connection.
#[derive(Clone, Copy)]
enum Sql {
    Begin,
    BeginImmediate,
    Commit,
    Rollback,
    Get,
    ScanAscending,
    ScanDescending,
    ScanSizes,
    Put,
    Delete,
    DeleteRange,
}

impl Sql {
    const ALL: [Sql; 11] = [
        Sql::Begin,
        Sql::BeginImmediate,
        Sql::Commit,
        Sql::Rollback,
        Sql::Get,
        Sql::ScanAscending,
        Sql::ScanDescending,
        Sql::ScanSizes,
        Sql::Put,
        Sql::Delete,
        Sql::DeleteRange,
    ];

    fn text(self) -> &'static CStr {
        match self {
            Sql::Begin => c"BEGIN",
            Sql::BeginImmediate => c"BEGIN IMMEDIATE",
            Sql::Commit => c"COMMIT",
            Sql::Rollback => c"ROLLBACK",
            Sql::Get => c"SELECT v FROM kv WHERE k = ?1",
            Sql::ScanAscending => {
                c"SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3"
            }
            Sql::ScanDescending => {
                c"SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k DESC LIMIT ?3"
            }
            // `length` of a blob reads its size from the record header,
            // not its (overflow) pages.
            Sql::ScanSizes => {
                c"SELECT k, rowid, length(v) FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k"
            }
            // An update keeps the row (and its rowid) in place.
            Sql::Put => {
                c"INSERT INTO kv(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v"
            }
            Sql::Delete => c"DELETE FROM kv WHERE k = ?1",
            Sql::DeleteRange => c"DELETE FROM kv WHERE k >= ?1 AND k < ?2",
        }
    }
}

/// The schema: one table of byte keys, ordered by the key's index. Not
/// `WITHOUT ROWID`: there a lookup that passes a cell whose value spilled
/// to overflow pages reads the whole value to compare keys (100 KB per
/// step for a delta chunk); here the index holds only keys and rowids.
pub(crate) const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL)";

/// `PRAGMA user_version` of a store in this format.
pub(crate) const FORMAT: i64 = 1;

/// Told the WAL's size in frames after each commit.
pub(crate) type WalHook = Box<dyn Fn(u32) + Send>;

pub(crate) struct Connection {
    db: *mut ffi::sqlite3,
    statements: Vec<*mut ffi::sqlite3_stmt>,
    /// The hook SQLite calls (boxed twice: SQLite holds a thin pointer);
    /// freed after the connection closes.
    wal_hook: Option<Box<WalHook>>,
}

// SAFETY: a connection is used by one thread at a time (the backend keeps
// each behind a mutex or hands it to one transaction), and SQLite's
// connections may move between threads in its default (serialized or
// multi-thread) modes.
unsafe impl Send for Connection {}

/// The most a joined read reserves before reading (see `scan_joined`).
const JOINED_RESERVE: usize = 64 << 20;

/// An incremental-blob handle, closed when dropped.
struct Blob {
    handle: *mut ffi::sqlite3_blob,
}

impl Drop for Blob {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: `handle` is an open blob, closed once.
            unsafe {
                ffi::sqlite3_blob_close(self.handle);
            }
        }
    }
}

/// Runs `Drop` on the statement's bindings and cursor when a step ends.
struct Active<'a> {
    stmt: *mut ffi::sqlite3_stmt,
    _conn: &'a Connection,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        // SAFETY: `stmt` is a live statement of the borrowed connection.
        unsafe {
            ffi::sqlite3_reset(self.stmt);
            ffi::sqlite3_clear_bindings(self.stmt);
        }
    }
}

impl Connection {
    /// Open `path` read-write, creating it, with the "unix" VFS (whatever
    /// VFS the process registered as its default: the group commit's
    /// fsync of the WAL relies on SQLite's own files).
    pub fn open(path: &Path) -> SqlResult<Connection> {
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
        Self::open_with(path.as_os_str().as_encoded_bytes().to_vec(), flags)
    }

    /// Open `path` to read a file nobody writes while it is open (the
    /// caller holds the data directory's shared lock, and no WAL is left):
    /// `immutable=1`, so SQLite creates nothing beside it and takes no locks.
    pub fn open_immutable(path: &Path) -> SqlResult<Connection> {
        let mut uri = b"file:".to_vec();
        for &b in path.as_os_str().as_encoded_bytes() {
            match b {
                b'%' | b'?' | b'#' => uri.extend(format!("%{b:02X}").bytes()),
                _ => uri.push(b),
            }
        }
        uri.extend(b"?immutable=1");
        Self::open_with(uri, ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_URI)
    }

    fn open_with(name: Vec<u8>, flags: c_int) -> SqlResult<Connection> {
        let name = CString::new(name).map_err(|_| SqliteError {
            code: ffi::SQLITE_CANTOPEN,
            message: "the store's path contains a NUL byte".into(),
        })?;
        let flags = flags | ffi::SQLITE_OPEN_NOMUTEX | ffi::SQLITE_OPEN_EXRESCODE;
        let mut db = ptr::null_mut();
        // SAFETY: `name` and `c"unix"` are NUL-terminated; `db` receives the
        // handle, which `conn` closes on failure.
        let rc = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, flags, c"unix".as_ptr()) };
        let conn = Connection {
            db,
            statements: Vec::new(),
            wal_hook: None,
        };
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(rc));
        }
        Ok(conn)
    }

    /// Prepare the statements transactions use (after the schema exists).
    pub fn prepare(&mut self) -> SqlResult<()> {
        for sql in Sql::ALL {
            let mut stmt = ptr::null_mut();
            // SAFETY: `db` is open; the text is NUL-terminated (-1 length).
            let rc = unsafe {
                ffi::sqlite3_prepare_v2(
                    self.db,
                    sql.text().as_ptr(),
                    -1,
                    &mut stmt,
                    ptr::null_mut(),
                )
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.error(rc));
            }
            self.statements.push(stmt);
        }
        Ok(())
    }

    fn error(&self, rc: c_int) -> SqliteError {
        let message = if self.db.is_null() {
            "out of memory".to_string()
        } else {
            // SAFETY: `db` is a connection handle; errmsg returns a
            // NUL-terminated string valid until the next call.
            unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db)) }
                .to_string_lossy()
                .into_owned()
        };
        let code = if self.db.is_null() {
            rc
        } else {
            // SAFETY: as above.
            unsafe { ffi::sqlite3_extended_errcode(self.db) }
        };
        SqliteError { code, message }
    }

    /// Run `sql` (any statements, no results).
    pub fn execute(&self, sql: &str) -> SqlResult<()> {
        let text = CString::new(sql).map_err(|_| SqliteError {
            code: ffi::SQLITE_MISUSE,
            message: "a NUL byte in SQL".into(),
        })?;
        // SAFETY: `db` is open and `text` NUL-terminated; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db,
                text.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        Ok(())
    }

    /// Call `hook` with the WAL's length in frames after each commit.
    pub fn set_wal_hook(&mut self, hook: WalHook) {
        unsafe extern "C" fn call(
            arg: *mut std::ffi::c_void,
            _db: *mut ffi::sqlite3,
            _name: *const std::ffi::c_char,
            frames: c_int,
        ) -> c_int {
            // SAFETY: `arg` is the `Box<WalHook>` this connection owns, alive
            // until after the connection closes.
            let hook = unsafe { &*arg.cast::<WalHook>() };
            // Unwinding into SQLite would be undefined: contain it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                hook(u32::try_from(frames).unwrap_or(0))
            }));
            ffi::SQLITE_OK
        }
        let mut boxed = Box::new(hook);
        let arg: *mut WalHook = &mut *boxed;
        // SAFETY: `db` is open; `arg` stays valid while registered (the box
        // is kept in `self` and dropped after `sqlite3_close`).
        unsafe { ffi::sqlite3_wal_hook(self.db, Some(call), arg.cast()) };
        self.wal_hook = Some(boxed);
    }

    /// Copy the whole WAL back into the file and truncate the WAL to zero:
    /// `false` when another checkpoint or a reader's snapshot was in the way.
    pub fn checkpoint_truncate(&self) -> SqlResult<bool> {
        let (mut log, mut copied) = (0, 0);
        // SAFETY: `db` is open; NULL names every attached database.
        let rc = unsafe {
            ffi::sqlite3_wal_checkpoint_v2(
                self.db,
                ptr::null(),
                ffi::SQLITE_CHECKPOINT_TRUNCATE,
                &mut log,
                &mut copied,
            )
        };
        match rc {
            ffi::SQLITE_OK => Ok(true),
            ffi::SQLITE_BUSY => Ok(false),
            rc => Err(self.error(rc)),
        }
    }

    /// Whether a transaction is open on this connection.
    pub fn in_transaction(&self) -> bool {
        // SAFETY: `db` is open.
        unsafe { ffi::sqlite3_get_autocommit(self.db) == 0 }
    }

    fn statement(&self, sql: Sql) -> SqlResult<Active<'_>> {
        let stmt = self
            .statements
            .get(sql as usize)
            .copied()
            .ok_or_else(|| SqliteError {
                code: ffi::SQLITE_MISUSE,
                message: "statements not prepared".into(),
            })?;
        Ok(Active { stmt, _conn: self })
    }

    fn bind_blob(&self, active: &Active<'_>, index: c_int, bytes: &[u8]) -> SqlResult<()> {
        let len = c_int::try_from(bytes.len()).map_err(|_| SqliteError {
            code: ffi::SQLITE_TOOBIG,
            message: "a value over 2 GiB".into(),
        })?;
        // SAFETY: `bytes` outlives the step: `Active` resets the statement
        // and clears its bindings before the borrow ends (SQLITE_STATIC).
        // An empty slice's pointer is non-null, so it binds an empty blob.
        let rc = unsafe {
            ffi::sqlite3_bind_blob(
                active.stmt,
                index,
                bytes.as_ptr().cast(),
                len,
                ffi::SQLITE_STATIC(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        Ok(())
    }

    fn bind_int(&self, active: &Active<'_>, index: c_int, value: i64) -> SqlResult<()> {
        // SAFETY: `active.stmt` is a live statement.
        let rc = unsafe { ffi::sqlite3_bind_int64(active.stmt, index, value) };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        Ok(())
    }

    /// Step `active` to its next row (`true`) or its end (`false`).
    fn step(&self, active: &Active<'_>) -> SqlResult<bool> {
        // SAFETY: `active.stmt` is a live statement with its parameters bound.
        match unsafe { ffi::sqlite3_step(active.stmt) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(self.error(rc)),
        }
    }

    fn column(&self, active: &Active<'_>, index: c_int) -> Vec<u8> {
        // SAFETY: the statement is on a row; the blob pointer is valid for
        // `bytes` bytes until the next step/reset, and is copied out now.
        unsafe {
            let data = ffi::sqlite3_column_blob(active.stmt, index);
            let len = usize::try_from(ffi::sqlite3_column_bytes(active.stmt, index)).unwrap_or(0);
            if data.is_null() || len == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data.cast::<u8>(), len).to_vec()
            }
        }
    }

    /// Run `sql` to its end with `blobs` bound to ?1, ?2, ...
    fn run(&self, sql: Sql, blobs: &[&[u8]]) -> SqlResult<()> {
        let active = self.statement(sql)?;
        for (index, blob) in (1..).zip(blobs) {
            self.bind_blob(&active, index, blob)?;
        }
        while self.step(&active)? {}
        Ok(())
    }

    pub fn begin(&self) -> SqlResult<()> {
        self.run(Sql::Begin, &[])
    }

    pub fn begin_immediate(&self) -> SqlResult<()> {
        self.run(Sql::BeginImmediate, &[])
    }

    pub fn commit(&self) -> SqlResult<()> {
        self.run(Sql::Commit, &[])
    }

    /// End the open transaction, if any, discarding its writes.
    pub fn rollback(&self) {
        if self.in_transaction() {
            // A failed rollback leaves SQLite rolling back on its own.
            let _ = self.run(Sql::Rollback, &[]);
        }
    }

    pub fn get(&self, key: &[u8]) -> SqlResult<Option<Vec<u8>>> {
        let active = self.statement(Sql::Get)?;
        self.bind_blob(&active, 1, key)?;
        Ok(if self.step(&active)? {
            Some(self.column(&active, 0))
        } else {
            None
        })
    }

    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> SqlResult<Vec<KeyValue>> {
        let active = self.statement(if reverse {
            Sql::ScanDescending
        } else {
            Sql::ScanAscending
        })?;
        self.bind_blob(&active, 1, start)?;
        self.bind_blob(&active, 2, end)?;
        self.bind_int(&active, 3, i64::try_from(limit).unwrap_or(i64::MAX))?;
        let mut out = Vec::new();
        while self.step(&active)? {
            out.push((self.column(&active, 0), self.column(&active, 1)));
        }
        Ok(out)
    }

    /// The entries of each range `[start, end)`, ascending: their keys, and
    /// their values read straight into one buffer per range in key order
    /// (incremental blob I/O copies each byte once, from SQLite's pages into
    /// the buffer; a column is first assembled by SQLite, then copied out).
    pub fn scan_joined_many(&self, ranges: &[(&[u8], &[u8])]) -> SqlResult<Vec<Joined>> {
        let mut blob = Blob {
            handle: ptr::null_mut(),
        };
        ranges
            .iter()
            .map(|(start, end)| self.scan_joined(&mut blob, start, end))
            .collect()
    }

    fn scan_joined(&self, blob: &mut Blob, start: &[u8], end: &[u8]) -> SqlResult<Joined> {
        let mut rows: Vec<(Vec<u8>, i64, usize)> = Vec::new();
        {
            let active = self.statement(Sql::ScanSizes)?;
            self.bind_blob(&active, 1, start)?;
            self.bind_blob(&active, 2, end)?;
            while self.step(&active)? {
                // SAFETY: the statement is on a row.
                let (rowid, len) = unsafe {
                    (
                        ffi::sqlite3_column_int64(active.stmt, 1),
                        ffi::sqlite3_column_int64(active.stmt, 2),
                    )
                };
                let len = usize::try_from(len).map_err(|_| self.corrupt("a negative length"))?;
                rows.push((self.column(&active, 0), rowid, len));
            }
        }
        // Lengths come from the records' headers, before any value is read:
        // a damaged header may not size the buffer beyond what reading it
        // proves (past the first 64 MiB it grows as values are read).
        let claimed = rows
            .iter()
            .fold(0usize, |sum, (_, _, len)| sum.saturating_add(*len));
        let mut value: Vec<u8> = Vec::with_capacity(claimed.min(JOINED_RESERVE));
        let mut keys = Vec::with_capacity(rows.len());
        for (key, rowid, len) in rows {
            if len > 0 {
                self.read_blob_into(blob, rowid, len, &mut value)?;
            }
            keys.push(key);
        }
        Ok(Joined { keys, value })
    }

    /// Append the `len` bytes of row `rowid`'s value to `out` (whose spare
    /// capacity holds them), through `blob` (opened on the first row,
    /// moved to each next one).
    fn read_blob_into(
        &self,
        blob: &mut Blob,
        rowid: i64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> SqlResult<()> {
        // SAFETY: `db` is open; the names are NUL-terminated; `handle` is
        // null or a blob of this connection, closed by `Blob`'s drop.
        let rc = unsafe {
            if blob.handle.is_null() {
                ffi::sqlite3_blob_open(
                    self.db,
                    c"main".as_ptr(),
                    c"kv".as_ptr(),
                    c"v".as_ptr(),
                    rowid,
                    0,
                    &mut blob.handle,
                )
            } else {
                ffi::sqlite3_blob_reopen(blob.handle, rowid)
            }
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        // SAFETY: `handle` is an open blob.
        let size = unsafe { ffi::sqlite3_blob_bytes(blob.handle) };
        let n = c_int::try_from(len).map_err(|_| self.corrupt("a value over 2 GiB"))?;
        if size != n {
            return Err(self.corrupt("a value's length differs from its record's"));
        }
        out.reserve(len);
        // SAFETY: the spare capacity holds `len` bytes (reserved above);
        // SQLite writes all `n` of them on success, after which they are
        // initialized and the length may grow over them.
        unsafe {
            let dst = out.as_mut_ptr().add(out.len());
            let rc = ffi::sqlite3_blob_read(blob.handle, dst.cast(), n, 0);
            if rc != ffi::SQLITE_OK {
                return Err(self.error(rc));
            }
            out.set_len(out.len() + len);
        }
        Ok(())
    }

    /// An inconsistency in what SQLite answered.
    fn corrupt(&self, what: &str) -> SqliteError {
        SqliteError {
            code: ffi::SQLITE_CORRUPT,
            message: what.to_string(),
        }
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> SqlResult<()> {
        self.run(Sql::Put, &[key, value])
    }

    /// The first column of the one row `sql` returns, as an integer.
    pub fn query_int(&self, sql: &CStr) -> SqlResult<i64> {
        let mut stmt = ptr::null_mut();
        // SAFETY: `db` is open; the text is NUL-terminated.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(self.db, sql.as_ptr(), -1, &mut stmt, ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        // SAFETY: `stmt` was just prepared and is finalized before return.
        unsafe {
            let rc = ffi::sqlite3_step(stmt);
            let value = (rc == ffi::SQLITE_ROW).then(|| ffi::sqlite3_column_int64(stmt, 0));
            ffi::sqlite3_finalize(stmt);
            value.ok_or_else(|| self.error(rc))
        }
    }

    pub fn delete(&self, key: &[u8]) -> SqlResult<()> {
        self.run(Sql::Delete, &[key])
    }

    pub fn delete_range(&self, start: &[u8], end: &[u8]) -> SqlResult<()> {
        self.run(Sql::DeleteRange, &[start, end])
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: every statement belongs to `db` and is finalized once,
        // before the connection closes.
        unsafe {
            for stmt in self.statements.drain(..) {
                ffi::sqlite3_finalize(stmt);
            }
            ffi::sqlite3_close(self.db);
        }
        self.wal_hook = None;
    }
}
