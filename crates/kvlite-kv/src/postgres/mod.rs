//! The PostgreSQL backend: one table `(k bytea PRIMARY KEY, v bytea)`.
//!
//! Write transactions run at SERIALIZABLE, so PostgreSQL's SSI gives the same
//! guarantee as the other backends; its serialization failures (SQLSTATE
//! 40001, and deadlocks 40P01) surface as the retryable [`KvError::Conflict`].
//! Read-only transactions use a REPEATABLE READ snapshot. Writes are buffered
//! by [`crate::WriteTxn`] and sent at commit as a few set-based statements
//! pipelined with the COMMIT, and a transaction's BEGIN goes out with its
//! first statement ([`conn`]): a commit costs one round trip for its reads
//! (each) and one for its writes, whatever their size.

mod conn;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use postgres::error::SqlState;
use tokio_postgres::Statement;

use crate::backend::{Backend, BackendTxn, Expected, KeyValue, check_expected};
use crate::{KvError, Result, WriteSet};
use conn::{ConnectError, Manager, PgConn};

type Pool = r2d2::Pool<Manager>;
type Conn = r2d2::PooledConnection<Manager>;

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Table holding the key space; created if absent. Letters, digits and
    /// `_` only.
    pub table: String,
    pub pool_size: u32,
    pub connect_timeout: Duration,
}

impl PostgresOptions {
    pub fn new(table: &str) -> Self {
        PostgresOptions {
            table: table.to_string(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// SQL text for one table, built once.
struct Statements {
    get: String,
    get_for_update: String,
    get_many: String,
    scan_forward: String,
    scan_reverse: String,
    scan_many: String,
    last_many: String,
    delete_ranges: String,
    delete_keys: String,
    upsert: String,
    guarded_upsert: String,
}

impl Statements {
    fn new(t: &str) -> Self {
        Statements {
            get: format!("SELECT v FROM {t} WHERE k = $1"),
            get_for_update: format!("SELECT v FROM {t} WHERE k = $1 FOR UPDATE"),
            get_many: format!("SELECT k, v FROM {t} WHERE k = ANY($1)"),
            scan_forward: format!(
                "SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"
            ),
            scan_reverse: format!(
                "SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3"
            ),
            // Each range is its own index scan (a LATERAL subquery with
            // ORDER BY is not flattened into a join), and nothing is sorted
            // as a whole: the client puts rows in order per range. As a
            // plain join, a large table's statistics could make the planner
            // read the whole table and sort the answer — 160 ms a statement
            // on a 430 MB table, for a 2 MB answer.
            scan_many: format!(
                "SELECT r.i, x.k, x.v \
                 FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS r(s, e, i) \
                 CROSS JOIN LATERAL (SELECT k, v FROM {t} WHERE k >= r.s AND k < r.e \
                 ORDER BY k) AS x"
            ),
            last_many: format!(
                "SELECT r.i, x.k, x.v \
                 FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS r(s, e, i) \
                 CROSS JOIN LATERAL (SELECT k, v FROM {t} WHERE k >= r.s AND k < r.e \
                 ORDER BY k DESC LIMIT 1) AS x"
            ),
            delete_ranges: format!(
                "DELETE FROM {t} USING unnest($1::bytea[], $2::bytea[]) AS r(s, e) \
                 WHERE {t}.k >= r.s AND {t}.k < r.e"
            ),
            delete_keys: format!("DELETE FROM {t} WHERE k = ANY($1)"),
            upsert: format!(
                "INSERT INTO {t} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            // The upsert of a conditional blind commit, sent with its BEGIN
            // and COMMIT in one round trip: it writes only if every key of
            // ($3, $4) holds its value, and only inside a SERIALIZABLE
            // transaction — should the BEGIN before it fail, it runs alone
            // and writes nothing (unless the server's default isolation is
            // SERIALIZABLE: then it is a whole transaction by itself).
            guarded_upsert: format!(
                "INSERT INTO {t} (k, v) SELECT w.k, w.v \
                 FROM unnest($1::bytea[], $2::bytea[]) AS w(k, v) \
                 WHERE current_setting('transaction_isolation') = 'serializable' \
                 AND NOT EXISTS (SELECT 1 FROM unnest($3::bytea[], $4::bytea[]) AS g(k, v) \
                 WHERE NOT EXISTS (SELECT 1 FROM {t} AS c WHERE c.k = g.k AND c.v = g.v)) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
        }
    }
}

pub struct PostgresBackend {
    /// Always `Some` until dropped (see `Drop`).
    pool: Option<Pool>,
    closed: AtomicBool,
    /// Times a transaction waited for PostgreSQL's answer.
    round_trips: Arc<AtomicU64>,
    /// For connections of their own: announcing and listening.
    config: postgres::Config,
    /// The NOTIFY channel of this store: its table's name.
    channel: String,
    /// The announcing thread's queue, started at the first announcement.
    announcer: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<String>>>,
    sql: Arc<Statements>,
}

fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Classify a PostgreSQL error. `in_commit`: the error came from COMMIT, where
/// a lost connection leaves the outcome unknown.
fn classify(e: postgres::Error, in_commit: bool) -> KvError {
    // The session is gone (terminated, the server restarting or failing
    // over, the network cut): nothing of an open transaction survives, but
    // a COMMIT may have landed before the end.
    let lost = |e: postgres::Error| {
        let text = describe(&e);
        if in_commit {
            KvError::CommitUnknown(text)
        } else {
            KvError::Unavailable(text)
        }
    };
    // A FATAL error ends the session whatever its code (an idle timeout,
    // 25P03 or 57P05, included).
    if e.as_db_error().is_some_and(conn::ends_session) {
        return lost(e);
    }
    if let Some(code) = e.code() {
        let class = code.code().get(..2);
        return match code {
            c if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                KvError::Conflict
            }
            // admin_shutdown (pg_terminate_backend), crash_shutdown,
            // cannot_connect_now (starting up, or a standby).
            c if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW =>
            {
                lost(e)
            }
            _ if class == Some("08") => lost(e),
            // The server answered: the transaction (COMMIT included) failed
            // and changed nothing.
            c if *c == SqlState::DISK_FULL => KvError::StoreFull(describe(&e)),
            c if *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::OUT_OF_MEMORY
                || *c == SqlState::QUERY_CANCELED
                || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
            {
                KvError::Unavailable(describe(&e))
            }
            _ => KvError::backend(e),
        };
    }
    if e.is_closed() || e.as_db_error().is_none() {
        return lost(e);
    }
    KvError::backend(e)
}

/// r2d2's connection errors, at debug level (callers get them as errors).
#[derive(Debug)]
struct QuietPoolErrors;

impl r2d2::HandleError<ConnectError> for QuietPoolErrors {
    fn handle_error(&self, error: ConnectError) {
        tracing::debug!(%error, "PostgreSQL pool connection attempt failed");
    }
}

/// A client error and its innermost cause (the client's own Display says
/// only "error connecting to server").
fn cause(e: &postgres::Error) -> String {
    let mut text = describe(e);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// The error with PostgreSQL's own message (the client's Display says only
/// "db error" for a server-sent one).
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", e, db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl PostgresBackend {
    pub fn connect(url: &str, options: PostgresOptions) -> Result<Self> {
        if !valid_table_name(&options.table) {
            return Err(KvError::backend(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid table name {:?}", options.table),
            )));
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(KvError::backend)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        let sql = Arc::new(Statements::new(&options.table));
        let round_trips = Arc::new(AtomicU64::new(0));
        // One connection first, outside the pool: it creates the table, and
        // an unreachable server is then one error with its real cause
        // (refused, no such host, bad password), at once, instead of the
        // pool's retries until its timeout and "timed out waiting for
        // connection".
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {t} (k bytea PRIMARY KEY, v bytea NOT NULL);
             ALTER TABLE {t} ALTER COLUMN v SET STORAGE EXTERNAL;",
            t = options.table
        );
        let first = PgConn::connect(&config, &sql, Some(&ddl), round_trips.clone()).map_err(
            |e| match e {
                ConnectError::Postgres(e) if e.code().is_some() => classify(e, false),
                e => KvError::Unavailable(e.to_string()),
            },
        )?;
        drop(first);
        let manager = Manager {
            config: config.clone(),
            sql: sql.clone(),
            round_trips: round_trips.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            // Failed connection attempts reach callers as errors; the pool's
            // own log line for each (at ERROR, through `log`) would repeat them.
            .error_handler(Box::new(QuietPoolErrors))
            // A pooled connection that broke reports is_closed(); skipping the
            // check-out ping saves a round trip per transaction.
            .test_on_check_out(false)
            .build(manager)
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        Ok(PostgresBackend {
            pool: Some(pool),
            closed: AtomicBool::new(false),
            round_trips,
            config: config.into(),
            channel: options.table.clone(),
            announcer: std::sync::Mutex::new(None),
            sql,
        })
    }

    /// A setting as the store's sessions have it (`current_setting`), for
    /// diagnostics: what kvlite sets per session (e.g. `jit` off) shows here.
    pub fn session_setting(&self, name: &str) -> Result<String> {
        self.conn()?.setting(name).map_err(|e| classify(e, false))
    }

    /// Custom and generic plans made for one pooled session's prepared
    /// statements so far, for diagnostics: kvlite's statements are planned
    /// once per session, never per execution.
    pub fn plan_counts(&self) -> Result<(i64, i64)> {
        self.conn()?.plan_counts().map_err(|e| classify(e, false))
    }

    /// The plan a `scan_many` of `ranges` runs with on the store's sessions
    /// (`EXPLAIN EXECUTE` of the statement prepared as kvlite prepares it,
    /// one line per node), for diagnostics: each range should be one index
    /// scan, and nothing sorted as a whole.
    pub fn scan_many_plan(&self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<String>> {
        let (starts, ends): (Vec<&[u8]>, Vec<&[u8]>) = ranges.iter().copied().unzip();
        self.conn()?
            .explain_prepared(&self.sql.scan_many, &[&starts, &ends])
            .map_err(|e| classify(e, false))
    }

    fn conn(&self) -> Result<Conn> {
        if self.closed.load(Ordering::Acquire) {
            return Err(KvError::Closed);
        }
        self.pool
            .as_ref()
            .ok_or(KvError::Closed)?
            .get()
            .map_err(|e| KvError::Unavailable(e.to_string()))
    }

    fn begin(&self, begin: &'static str, write: bool) -> Result<Box<dyn BackendTxn + '_>> {
        Ok(Box::new(PgTxn {
            conn: self.conn()?,
            begin,
            write,
            state: TxnState::NotBegun,
        }))
    }
}

impl Drop for PostgresBackend {
    /// Each connection owns a runtime, and dropping a runtime panics on a
    /// thread that drives an async one (the server's, at shutdown). Drop the
    /// pool on a plain thread instead.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let dropper = std::thread::Builder::new()
                .name("kvlite-pg-close".into())
                .spawn(move || drop(pool));
            match dropper {
                Ok(t) => {
                    let _ = t.join();
                }
                Err(e) => tracing::warn!(error = %e, "cannot close PostgreSQL connections"),
            }
        }
    }
}

impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn begin_read(&self) -> Result<Box<dyn BackendTxn + '_>> {
        self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", false)
    }

    fn begin_write(&self) -> Result<Box<dyn BackendTxn + '_>> {
        self.begin("BEGIN ISOLATION LEVEL SERIALIZABLE", true)
    }

    /// `NOTIFY` on the store's channel, from a thread with a connection of
    /// its own: the caller never waits for it.
    fn announce(&self, message: &str) {
        let mut announcer = self
            .announcer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if announcer.is_none() {
            *announcer = start_announcer(self.config.clone(), self.channel.clone());
        }
        if let Some(queue) = announcer.as_ref()
            && let Err(std::sync::mpsc::TrySendError::Disconnected(_)) =
                queue.try_send(message.to_string())
        {
            *announcer = None;
        }
    }

    /// `LISTEN` on the store's channel from a thread with a connection of
    /// its own, reconnecting when it breaks (what is announced meanwhile
    /// is missed: announcements are hints).
    fn watch(&self) -> Option<crate::Watch> {
        let (queue, messages) = std::sync::mpsc::sync_channel(crate::Watch::CAPACITY);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (config, channel, stopped) = (self.config.clone(), self.channel.clone(), stop.clone());
        let listener = std::thread::Builder::new()
            .name("kvlite-pg-watch".into())
            .spawn(move || listen(&config, &channel, &queue, &stopped));
        match listener {
            Ok(_) => Some(crate::Watch::new(messages, stop)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start listening for announcements");
                None
            }
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn round_trips(&self) -> Option<u64> {
        Some(self.round_trips.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnState {
    /// Nothing sent yet: BEGIN goes out with the first statement.
    NotBegun,
    /// BEGIN was sent: the transaction must be ended before the connection
    /// goes back to the pool.
    Open,
    /// BEGIN failed: nothing more may run in this transaction.
    BeginFailed,
    Ended,
}

struct PgTxn {
    conn: Conn,
    begin: &'static str,
    write: bool,
    state: TxnState,
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        if self.state != TxnState::Open {
            return;
        }
        if self.write {
            // Waited for, so its row locks are gone before the connection
            // is reused or sits idle; a failure breaks the session, which
            // the pool sees and drops.
            let _ = self.conn.execute_simple("ROLLBACK");
        } else {
            // A snapshot holds nothing another transaction waits for.
            self.conn.send_simple("ROLLBACK");
        }
    }
}

/// A pipeline's failure as the KV contract's error.
fn failure(f: conn::Failure) -> KvError {
    match f {
        conn::Failure::Begin(e) | conn::Failure::NotApplied(e) => classify(e, false),
        conn::Failure::Unknown(e) => classify(e, true),
        conn::Failure::NotSent => {
            KvError::Unavailable("the transaction could not be sent to PostgreSQL".into())
        }
    }
}

/// What a transaction whose BEGIN failed answers from then on.
fn begin_failed() -> KvError {
    KvError::Unavailable("this transaction could not begin; start another".into())
}

/// A row's column, or a typed error.
fn column<'r, T: postgres::types::FromSql<'r>>(
    row: &'r tokio_postgres::Row,
    i: usize,
) -> Result<T> {
    row.try_get(i).map_err(KvError::backend)
}

impl PgTxn {
    /// One statement, with the BEGIN in front of the transaction's first.
    fn query(
        &mut self,
        statement: fn(&conn::Prepared) -> &Statement,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let begin = match self.state {
            TxnState::NotBegun => Some(self.begin),
            TxnState::Open => None,
            TxnState::BeginFailed | TxnState::Ended => return Err(begin_failed()),
        };
        // Even if this fails, the BEGIN may have run.
        self.state = TxnState::Open;
        let conn = &mut *self.conn;
        let statement = statement(&conn.prepared).clone();
        conn.query(begin, (&statement, params)).map_err(|f| {
            if matches!(f, conn::Failure::Begin(_)) {
                self.state = TxnState::BeginFailed;
            }
            failure(f)
        })
    }

    /// Rows `(ordinal, k, v)` of a many-range query, by range.
    fn by_range(rows: Vec<tokio_postgres::Row>, ranges: usize) -> Result<Vec<Vec<KeyValue>>> {
        let mut out: Vec<Vec<KeyValue>> = vec![Vec::new(); ranges];
        for row in rows {
            let i: i64 = column(&row, 0)?;
            let slot = i
                .checked_sub(1)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| {
                    KvError::backend(std::io::Error::other(format!("range ordinal {i}")))
                })?;
            slot.push((column(&row, 1)?, column(&row, 2)?));
        }
        // Rows come range by range, in key order, from the plan the
        // statements force; ordered here so no plan can reorder them.
        for slot in &mut out {
            if !slot.is_sorted_by(|a, b| a.0 < b.0) {
                slot.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
        }
        Ok(out)
    }
}

impl BackendTxn for PgTxn {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let rows = self.query(|p| &p.get, &[&key])?;
        rows.first().map(|row| column(row, 0)).transpose()
    }

    fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // A row lock: a concurrent writer of this row blocks until this
        // transaction ends, then fails with a serialization error (and
        // retries) instead of this transaction failing.
        let rows = self.query(|p| &p.get_for_update, &[&key])?;
        rows.first().map(|row| column(row, 0)).transpose()
    }

    fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<&[u8]> = keys.to_vec();
        let rows = self.query(|p| &p.get_many, &[&list])?;
        let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::with_capacity(rows.len());
        for row in rows {
            found.insert(column(&row, 0)?, column(&row, 1)?);
        }
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>> {
        // LIMIT NULL means no limit.
        let limit: Option<i64> = i64::try_from(limit).ok();
        let statement: fn(&conn::Prepared) -> &Statement = if reverse {
            |p| &p.scan_reverse
        } else {
            |p| &p.scan_forward
        };
        let rows = self.query(statement, &[&start, &end, &limit])?;
        rows.iter()
            .map(|row| Ok((column(row, 0)?, column(row, 1)?)))
            .collect()
    }

    fn scan_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Vec<KeyValue>>> {
        if let [(start, end)] = ranges {
            return Ok(vec![self.scan(start, end, usize::MAX, false)?]);
        }
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let (starts, ends): (Vec<&[u8]>, Vec<&[u8]>) = ranges.iter().copied().unzip();
        let rows = self.query(|p| &p.scan_many, &[&starts, &ends])?;
        Self::by_range(rows, ranges.len())
    }

    fn last_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Option<KeyValue>>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let (starts, ends): (Vec<&[u8]>, Vec<&[u8]>) = ranges.iter().copied().unzip();
        let rows = self.query(|p| &p.last_many, &[&starts, &ends])?;
        // At most one row per range.
        Ok(Self::by_range(rows, ranges.len())?
            .into_iter()
            .map(|mut found| found.pop())
            .collect())
    }

    fn commit(mut self: Box<Self>, writes: WriteSet) -> Result<()> {
        let began = self.state;
        self.state = TxnState::Ended;
        if began == TxnState::BeginFailed {
            return Err(begin_failed());
        }
        if !self.write || writes.is_empty() {
            match began {
                // Nothing was read: there is nothing to end.
                TxnState::NotBegun | TxnState::Ended | TxnState::BeginFailed => {}
                // A read-only snapshot has nothing to commit or check.
                TxnState::Open if !self.write => self.conn.send_simple("COMMIT"),
                // SERIALIZABLE checks its reads at COMMIT, even without
                // writes.
                TxnState::Open => self
                    .conn
                    .execute_simple("COMMIT")
                    .map_err(|e| classify(e, true))?,
            }
            return Ok(());
        }
        if began == TxnState::NotBegun {
            // Blind writes: BEGIN is waited for (one more round trip, on a
            // path the engine does not take), so that writes never run
            // outside a transaction whose BEGIN failed.
            self.conn
                .execute_simple(self.begin)
                .map_err(|e| classify(e, false))?;
        }
        // Every cleared range in one statement, every deleted key in
        // another, every written key in a third, and the COMMIT: sent
        // together, one round trip however large the write set.
        let (starts, ends): (Vec<&[u8]>, Vec<&[u8]>) = writes
            .cleared_ranges()
            .iter()
            .map(|(s, e)| (s.as_slice(), e.as_slice()))
            .unzip();
        let mut deletes: Vec<&[u8]> = Vec::new();
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut values: Vec<&[u8]> = Vec::new();
        for (k, v) in writes.points() {
            match v {
                Some(v) => {
                    keys.push(k);
                    values.push(v);
                }
                None => deletes.push(k),
            }
        }
        let conn = &mut *self.conn;
        let p = &conn.prepared;
        let (delete_ranges, delete_keys, upsert) = (
            p.delete_ranges.clone(),
            p.delete_keys.clone(),
            p.upsert.clone(),
        );
        let range_params: [&(dyn postgres::types::ToSql + Sync); 2] = [&starts, &ends];
        let delete_params: [&(dyn postgres::types::ToSql + Sync); 1] = [&deletes];
        let upsert_params: [&(dyn postgres::types::ToSql + Sync); 2] = [&keys, &values];
        let mut calls: Vec<conn::Call<'_>> = Vec::with_capacity(3);
        if !starts.is_empty() {
            calls.push((&delete_ranges, &range_params));
        }
        if !deletes.is_empty() {
            calls.push((&delete_keys, &delete_params));
        }
        if !keys.is_empty() {
            calls.push((&upsert, &upsert_params));
        }
        conn.write_and_commit(&calls).map_err(failure)
    }

    fn commit_if(mut self: Box<Self>, expected: &[Expected], writes: WriteSet) -> Result<()> {
        let only_sets =
            writes.cleared_ranges().is_empty() && writes.points().all(|(_, v)| v.is_some());
        if self.state != TxnState::NotBegun || !self.write || writes.is_empty() || !only_sets {
            check_expected(&mut *self, expected)?;
            return self.commit(writes);
        }
        // Nothing read yet: BEGIN, the guarded upsert and COMMIT in one
        // round trip.
        self.state = TxnState::Ended;
        let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = writes
            .points()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .unzip();
        let (guard_keys, guard_values): (Vec<&[u8]>, Vec<&[u8]>) = expected
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .unzip();
        let conn = &mut *self.conn;
        let statement = conn.prepared.guarded_upsert.clone();
        let params: [&(dyn postgres::types::ToSql + Sync); 4] =
            [&keys, &values, &guard_keys, &guard_values];
        match conn.guarded_commit(self.begin, (&statement, &params), keys.len() as u64) {
            Ok(true) => Ok(()),
            Ok(false) => Err(KvError::Conflict),
            Err(f) => Err(failure(f)),
        }
    }
}

fn start_announcer(
    config: postgres::Config,
    channel: String,
) -> Option<std::sync::mpsc::SyncSender<String>> {
    let (queue, messages) = std::sync::mpsc::sync_channel::<String>(crate::Watch::CAPACITY);
    let announcer = std::thread::Builder::new()
        .name("kvlite-pg-announce".into())
        .spawn(move || {
            let mut client: Option<postgres::Client> = None;
            // Ends when the backend (the queue's sender) goes.
            while let Ok(message) = messages.recv() {
                for _ in 0..2 {
                    if client.as_ref().is_none_or(postgres::Client::is_closed) {
                        client = config.connect(postgres::NoTls).ok();
                    }
                    let Some(c) = client.as_mut() else { break };
                    match c.execute("SELECT pg_notify($1, $2)", &[&channel, &message]) {
                        Ok(_) => break,
                        Err(_) => client = None,
                    }
                }
            }
        });
    match announcer {
        Ok(_) => Some(queue),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start announcing");
            None
        }
    }
}

fn listen(
    config: &postgres::Config,
    channel: &str,
    queue: &std::sync::mpsc::SyncSender<String>,
    stop: &AtomicBool,
) {
    use postgres::fallible_iterator::FallibleIterator;
    // The channel is the table's name: a valid identifier, quoted as one.
    let sql = format!("LISTEN \"{channel}\"");
    while !stop.load(Ordering::Acquire) {
        let mut client = match config.connect(postgres::NoTls) {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if client.batch_execute(&sql).is_err() {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        'connected: while !stop.load(Ordering::Acquire) && !client.is_closed() {
            let mut notifications = client.notifications();
            let mut heard = notifications.timeout_iter(Duration::from_millis(250));
            loop {
                match heard.next() {
                    // (Full: the hint is dropped.)
                    Ok(Some(n)) => {
                        if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) =
                            queue.try_send(n.payload().to_string())
                        {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'connected,
                }
            }
        }
    }
}
