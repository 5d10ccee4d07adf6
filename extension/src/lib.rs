//! kvlite as a SQLite loadable extension. Loading `libkvlite.so` into any
//! SQLite (the `sqlite3` shell, Python's `sqlite3`, `apsw`) registers a VFS
//! named `kvlite`; a database opened on it lives where its URI says:
//!
//! ```text
//! file:NAME?vfs=kvlite&server=ws://HOST:PORT[&token=T]   a kvlite server
//! file:NAME?vfs=kvlite&data=DIR                          the embedded store, in this process
//! file:NAME?vfs=kvlite&postgres=URL                      PostgreSQL, engine in this process
//! ```
//!
//! Without one of those, `KVLITE_SERVER` (with `KVLITE_TOKEN`), then
//! `KVLITE_DATA`, then `./kvlite-data`. Each place is opened once per
//! process and shared by every connection naming it (one engine with its
//! background compactor, or one server connection).
//!
//! The host SQLite has no batch atomic writes: every transaction commits at
//! the database file's sync, still as one engine commit; journals stay in
//! memory. Opening a database takes it over (as every kvlite open does): a
//! second connection to the same database, in this process or another,
//! fences the first, whose next write fails as read-only.
//!
//! SQL functions on the loading connection: `kvlite_stat(NAME)` (the
//! engine's state of a database this process opened, as JSON) and
//! `kvlite_metrics()` (the VFS's counters, as JSON).

use std::collections::HashMap;
use std::ffi::{c_char, c_int};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use kvlite_api::Transport;
use kvlite_client::{RemoteOptions, RemoteTransport};
use kvlite_engine::{Compactor, Engine, EngineConfig, LocalTransport};
use kvlite_kv::Kv;
use kvlite_vfs::{Router, Vfs, VfsConfig};
use libsqlite3_sys as ffi;

/// The PostgreSQL table kvlite keeps its key space in (as the CLI's).
const POSTGRES_TABLE: &str = "kvlite";

/// Where a database lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Place {
    Server { url: String, token: Option<String> },
    Data(PathBuf),
    Postgres(String),
}

/// An opened place: its transport, and the engine when it runs here.
struct Store {
    transport: Arc<dyn Transport>,
    _compactor: Option<Compactor>,
}

/// Every place this process opened, and which place each database is on.
#[derive(Default)]
struct Places {
    stores: Mutex<HashMap<Place, Arc<Store>>>,
    databases: Mutex<HashMap<String, Arc<Store>>>,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl Places {
    fn place(param: &dyn Fn(&str) -> Option<String>) -> Result<Place, String> {
        let server = param("server");
        let data = param("data");
        let postgres = param("postgres");
        let given = [&server, &data, &postgres]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if given > 1 {
            return Err("give one of server=, data= and postgres=, not several".into());
        }
        if param("token").is_some() && server.is_none() && env("KVLITE_SERVER").is_none() {
            return Err("token= is for a server (server=ws://HOST:PORT)".into());
        }
        let token = param("token").or_else(|| env("KVLITE_TOKEN"));
        Ok(match (server, data, postgres) {
            (Some(url), _, _) => Place::Server { url, token },
            (_, Some(dir), _) => Place::Data(PathBuf::from(dir)),
            (_, _, Some(url)) => Place::Postgres(url),
            _ => match (env("KVLITE_SERVER"), env("KVLITE_DATA")) {
                (Some(url), _) => Place::Server { url, token },
                (None, Some(dir)) => Place::Data(PathBuf::from(dir)),
                (None, None) => Place::Data(PathBuf::from("kvlite-data")),
            },
        })
    }

    fn open(place: &Place) -> Result<Store, String> {
        let engine_on = |kv: Kv| {
            let engine = Engine::new(
                kv,
                EngineConfig::default(),
                &mut prometheus_client::registry::Registry::default(),
            );
            let compactor = engine.start_compactor();
            Store {
                transport: Arc::new(LocalTransport::new(engine)),
                _compactor: Some(compactor),
            }
        };
        match place {
            Place::Server { url, token } => {
                let t = RemoteTransport::connect(url, token.as_deref(), RemoteOptions::default())
                    .map_err(|e| format!("cannot use server {url}: {e}"))?;
                Ok(Store {
                    transport: Arc::new(t),
                    _compactor: None,
                })
            }
            Place::Data(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
                let kv = Kv::open_embedded(dir)
                    .map_err(|e| format!("cannot open data directory {}: {e}", dir.display()))?;
                Ok(engine_on(kv))
            }
            Place::Postgres(url) => {
                let kv = Kv::connect_postgres(url, POSTGRES_TABLE)
                    .map_err(|e| format!("cannot use PostgreSQL: {e}"))?;
                Ok(engine_on(kv))
            }
        }
    }

    fn store_for(&self, place: Place) -> Result<Arc<Store>, String> {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = stores.get(&place) {
            return Ok(s.clone());
        }
        let store = Arc::new(Self::open(&place)?);
        stores.insert(place, store.clone());
        Ok(store)
    }
}

impl Router for Places {
    fn route(
        &self,
        db: &str,
        param: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Arc<dyn Transport>, String> {
        let result = Self::place(param).and_then(|place| self.store_for(place));
        match result {
            Ok(store) => {
                self.databases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(db.to_string(), store.clone());
                Ok(store.transport.clone())
            }
            Err(reason) => {
                // SQLite reports only "unable to open database file": say
                // why where a shell or a script's user sees it.
                let message = format!("kvlite: cannot open {db:?}: {reason}");
                eprintln!("{message}");
                log(ffi::SQLITE_CANTOPEN, &message);
                Err(reason)
            }
        }
    }
}

fn log(code: c_int, message: &str) {
    if let Ok(m) = std::ffi::CString::new(message) {
        // SAFETY: a "%s" format with one NUL-terminated string argument.
        unsafe { ffi::sqlite3_log(code, c"%s".as_ptr(), m.as_ptr()) };
    }
}

struct Registered {
    places: Arc<Places>,
    vfs: Vfs,
}

static REGISTERED: OnceLock<Result<Registered, String>> = OnceLock::new();

fn register() -> Result<&'static Registered, String> {
    REGISTERED
        .get_or_init(|| {
            let places = Arc::new(Places::default());
            let vfs = Vfs::register_routed("kvlite", places.clone(), VfsConfig::default())
                .map_err(|e| format!("cannot register the kvlite VFS: {e}"))?;
            Ok(Registered { places, vfs })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Set a function's result to `text` (copied by SQLite).
///
/// # Safety
/// `ctx` is the context SQLite passed to the function.
unsafe fn result_text(ctx: *mut ffi::sqlite3_context, text: &str) {
    let len = c_int::try_from(text.len()).unwrap_or(c_int::MAX);
    // SAFETY: `text` is valid for `len` bytes; SQLITE_TRANSIENT makes
    // SQLite copy it before returning.
    unsafe {
        ffi::sqlite3_result_text(ctx, text.as_ptr().cast(), len, ffi::SQLITE_TRANSIENT());
    }
}

/// Fail a function with `message`.
///
/// # Safety
/// As [`result_text`].
unsafe fn result_error(ctx: *mut ffi::sqlite3_context, message: &str) {
    let len = c_int::try_from(message.len()).unwrap_or(c_int::MAX);
    // SAFETY: `message` is valid for `len` bytes; SQLite copies it.
    unsafe { ffi::sqlite3_result_error(ctx, message.as_ptr().cast(), len) };
}

fn stat_json(db: &str) -> Result<String, String> {
    let registered = register()?;
    let store = registered
        .places
        .databases
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(db)
        .cloned()
        .ok_or_else(|| format!("{db:?} has not been opened on kvlite in this process"))?;
    let s = store.transport.stat(db).map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "name": s.name,
        "id": s.id,
        "origin": s.origin.as_str(),
        "generation": s.generation,
        "head_txid": s.head_txid,
        "size_pages": s.size_pages,
        "page_size": s.page_size,
        "deltas": s.deltas,
        "shards": s.shards,
        "used_bytes": s.used_bytes,
        "quota_bytes": s.quota_bytes,
    })
    .to_string())
}

fn metrics_json() -> Result<String, String> {
    let m = register()?.vfs.metrics();
    Ok(serde_json::json!({
        "commits": m.commits,
        "batch_commits": m.batch_commits,
        "sync_commits": m.sync_commits,
        "large_commits": m.large_commits,
        "empty_commits": m.empty_commits,
        "failed_commits": m.failed_commits,
        "pages_committed": m.pages_committed,
        "bytes_sent": m.bytes_sent,
        "cache_hits": m.cache_hits,
        "cache_misses": m.cache_misses,
        "page_requests": m.page_requests,
        "pages_fetched": m.pages_fetched,
        "prefetches": m.prefetches,
        "prefetches_used": m.prefetches_used,
        "poisonings": m.poisonings,
    })
    .to_string())
}

/// Run `f` as a SQL function's body: its text or its error is the result.
fn sql_function(ctx: *mut ffi::sqlite3_context, f: impl FnOnce() -> Result<String, String>) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("kvlite: internal error".to_string()));
    // SAFETY: the context SQLite passed to the function calling this.
    unsafe {
        match outcome {
            Ok(text) => result_text(ctx, &text),
            Err(e) => result_error(ctx, &e),
        }
    }
}

unsafe extern "C" fn kvlite_stat(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    sql_function(ctx, || {
        if argc != 1 || argv.is_null() {
            return Err("kvlite_stat(NAME) takes one argument".into());
        }
        // SAFETY: SQLite passes `argc` (1) valid values.
        let text = unsafe { ffi::sqlite3_value_text(*argv) };
        if text.is_null() {
            return Err("kvlite_stat(NAME): NAME is NULL".into());
        }
        // SAFETY: SQLite's text values are NUL-terminated.
        let db = unsafe { std::ffi::CStr::from_ptr(text.cast()) }.to_string_lossy();
        stat_json(&db)
    });
}

unsafe extern "C" fn kvlite_metrics(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    _argv: *mut *mut ffi::sqlite3_value,
) {
    sql_function(ctx, metrics_json);
}

type SqlFunction =
    unsafe extern "C" fn(*mut ffi::sqlite3_context, c_int, *mut *mut ffi::sqlite3_value);

/// Register the VFS (once per process) and the SQL functions on `db`,
/// and have SQLite add them to every connection opened after it.
///
/// # Safety
/// `db` is the connection loading the extension; the API table is set.
unsafe fn init(db: *mut ffi::sqlite3) -> Result<(), String> {
    register()?;
    // SAFETY: as above.
    unsafe { add_functions(db)? };
    type Entry = unsafe extern "C" fn(
        *mut ffi::sqlite3,
        *mut *mut c_char,
        *const ffi::sqlite3_api_routines,
    ) -> c_int;
    // SAFETY: SQLite calls an auto-extension with exactly these three
    // arguments; its declared type is the generic `void(*)(void)`.
    let entry =
        unsafe { std::mem::transmute::<Entry, unsafe extern "C" fn()>(auto_extension as Entry) };
    // SAFETY: a function that stays mapped (the library is loaded
    // permanently); registering it twice is a no-op.
    let rc = unsafe { ffi::sqlite3_auto_extension(Some(entry)) };
    if rc != ffi::SQLITE_OK {
        return Err(format!(
            "cannot register kvlite's SQL functions: error {rc}"
        ));
    }
    Ok(())
}

/// Each new connection gets the SQL functions.
unsafe extern "C" fn auto_extension(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: a connection SQLite is opening; the API table was set when
    // the extension loaded.
    match std::panic::catch_unwind(|| unsafe { add_functions(db) }) {
        Ok(Ok(())) => ffi::SQLITE_OK,
        Ok(Err(message)) => {
            // SAFETY: SQLite's out-pointer.
            unsafe { set_error(pz_err_msg, &message) };
            ffi::SQLITE_ERROR
        }
        Err(_) => ffi::SQLITE_ERROR,
    }
}

/// `kvlite_stat` and `kvlite_metrics` on `db`.
///
/// # Safety
/// `db` is a live connection; the API table is set.
unsafe fn add_functions(db: *mut ffi::sqlite3) -> Result<(), String> {
    let functions: [(&std::ffi::CStr, c_int, SqlFunction); 2] = [
        (c"kvlite_stat", 1, kvlite_stat),
        (c"kvlite_metrics", 0, kvlite_metrics),
    ];
    for (name, args, f) in functions {
        // SAFETY: a live connection, a NUL-terminated name, a function
        // with SQLite's signature and no user data.
        let rc = unsafe {
            ffi::sqlite3_create_function_v2(
                db,
                name.as_ptr(),
                args,
                ffi::SQLITE_UTF8,
                std::ptr::null_mut(),
                Some(f),
                None,
                None,
                None,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(format!(
                "cannot create {}: error {rc}",
                name.to_string_lossy()
            ));
        }
    }
    Ok(())
}

/// Hand `message` back to the loader (it frees it with sqlite3_free).
///
/// # Safety
/// `pz_err_msg` is the loader's (possibly null) out-pointer.
unsafe fn set_error(pz_err_msg: *mut *mut c_char, message: &str) {
    if pz_err_msg.is_null() {
        return;
    }
    let Ok(m) = std::ffi::CString::new(message) else {
        return;
    };
    // SAFETY: a NUL-terminated string of m's length plus one byte.
    unsafe {
        let len = m.as_bytes_with_nul().len();
        let out = ffi::sqlite3_malloc(c_int::try_from(len).unwrap_or(c_int::MAX)) as *mut c_char;
        if !out.is_null() {
            std::ptr::copy_nonoverlapping(m.as_ptr(), out, len);
            *pz_err_msg = out;
        }
    }
}

/// The entry point SQLite derives from the file name `libkvlite.so`.
///
/// # Safety
/// Called by SQLite's extension loader with its own arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sqlite3_kvlite_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: the loader's API table, set before any other call.
        if let Err(e) = unsafe { ffi::rusqlite_extension_init2(p_api) } {
            return Err(format!("kvlite: this SQLite cannot load it: {e}"));
        }
        // SAFETY: the loading connection, after the API table is set.
        unsafe { init(db) }
    });
    match outcome {
        // Stay loaded after this connection closes: the VFS outlives it.
        Ok(Ok(())) => ffi::SQLITE_OK_LOAD_PERMANENTLY,
        Ok(Err(message)) => {
            // SAFETY: the loader's out-pointer.
            unsafe { set_error(pz_err_msg, &message) };
            ffi::SQLITE_ERROR
        }
        Err(_) => ffi::SQLITE_ERROR,
    }
}
