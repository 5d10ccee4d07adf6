//! One PostgreSQL connection, driven on the calling thread, that sends
//! several statements before waiting for any answer (pipelining).
//!
//! The synchronous `postgres` client waits for each statement's answer
//! before sending the next, so a transaction cost a round trip per
//! statement plus two (BEGIN, COMMIT). Here a transaction's BEGIN goes out
//! with its first statement, its writes go out with its COMMIT, and a read
//! transaction's end is sent without waiting: a small commit is two round
//! trips, a one-statement read one. Statements are prepared once per
//! connection, so PostgreSQL parses and plans none of them per call.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Error, NoTls, Row, Statement};

/// Every statement the backend runs, prepared on each connection.
pub(super) struct Prepared {
    pub get: Statement,
    pub get_for_update: Statement,
    pub get_many: Statement,
    pub scan_forward: Statement,
    pub scan_reverse: Statement,
    pub scan_many: Statement,
    pub last_many: Statement,
    pub delete_ranges: Statement,
    pub delete_keys: Statement,
    pub upsert: Statement,
    pub guarded_upsert: Statement,
}

type Driver = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;
type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(super) struct PgConn {
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// Reads and writes the socket; `None` once it ended (the session is
    /// gone, and every request fails as closed).
    driver: Option<Driver>,
    pub prepared: Prepared,
    /// Waits for PostgreSQL's answers in transactions (not in making the
    /// connection), shared by the pool's connections.
    round_trips: Arc<AtomicU64>,
}

/// A statement and its parameters, to be sent in a pipeline.
pub(super) type Call<'a> = (&'a Statement, &'a [&'a (dyn ToSql + Sync)]);

/// Why a pooled connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("{}", super::cause(.0))]
    Postgres(#[from] Error),
    #[error("cannot start the PostgreSQL client's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl PgConn {
    /// A connection with every statement prepared (in one round trip),
    /// after running `ddl` (creating the table) if given.
    pub fn connect(
        config: &tokio_postgres::Config,
        sql: &super::Statements,
        ddl: Option<&str>,
        round_trips: Arc<AtomicU64>,
    ) -> Result<PgConn, ConnectError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (client, connection) = runtime.block_on(config.connect(NoTls))?;
        let mut driver: Option<Driver> = Some(Box::pin(connection));
        // No JIT: once the table is large, the generic plans' estimated
        // costs pass jit_above_cost and every execution of a one-row
        // statement compiles itself first (measured: 26 ms instead of
        // 0.02 ms; a cold scan of 100 MiB 6.4 s instead of 0.25 s). A
        // server without the setting (before PostgreSQL 11) has no JIT.
        if let Err(e) = drive(&runtime, &mut driver, client.batch_execute("SET jit = off")) {
            tracing::debug!(error = %e, "cannot turn JIT off");
        }
        // Generic plans only: once autovacuum has analyzed the table, the
        // planner judges custom plans cheaper for statements on arrays of
        // keys and plans every execution again (decompressing the key
        // column's statistics each time): a one-row commit cost PostgreSQL
        // twice the CPU, and `small_txns` ran 1.5x slower from the first
        // ANALYZE on. Every statement here is an index lookup or range
        // scan whose plan does not depend on the values (PostgreSQL 12+).
        if let Err(e) = drive(
            &runtime,
            &mut driver,
            client.batch_execute("SET plan_cache_mode = force_generic_plan"),
        ) {
            tracing::debug!(error = %e, "cannot force generic plans");
        }
        if let Some(ddl) = ddl {
            match drive(&runtime, &mut driver, client.batch_execute(ddl)) {
                Ok(()) => {}
                // Two processes creating the table at once: one loses the
                // race on the catalog's unique index; it exists either way.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    drive(&runtime, &mut driver, client.batch_execute(ddl))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        use Type as T;
        let texts: [(&str, &[Type]); 11] = [
            (&sql.get, &[T::BYTEA]),
            (&sql.get_for_update, &[T::BYTEA]),
            (&sql.get_many, &[T::BYTEA_ARRAY]),
            (&sql.scan_forward, &[T::BYTEA, T::BYTEA, T::INT8]),
            (&sql.scan_reverse, &[T::BYTEA, T::BYTEA, T::INT8]),
            (&sql.scan_many, &[T::BYTEA_ARRAY, T::BYTEA_ARRAY]),
            (&sql.last_many, &[T::BYTEA_ARRAY, T::BYTEA_ARRAY]),
            (&sql.delete_ranges, &[T::BYTEA_ARRAY, T::BYTEA_ARRAY]),
            (&sql.delete_keys, &[T::BYTEA_ARRAY]),
            (&sql.upsert, &[T::BYTEA_ARRAY, T::BYTEA_ARRAY]),
            (
                &sql.guarded_upsert,
                &[
                    T::BYTEA_ARRAY,
                    T::BYTEA_ARRAY,
                    T::BYTEA_ARRAY,
                    T::BYTEA_ARRAY,
                ],
            ),
        ];
        let preparing: Vec<Pending<'_, Result<Statement, Error>>> = texts
            .iter()
            .map(|(text, types)| {
                Box::pin(client.prepare_typed(text, types)) as Pending<'_, Result<Statement, Error>>
            })
            .collect();
        let mut prepared = drive(&runtime, &mut driver, in_order(preparing))
            .into_iter()
            .collect::<Result<Vec<Statement>, Error>>()?
            .into_iter();
        let mut next = || {
            prepared.next().ok_or_else(|| {
                ConnectError::Runtime(std::io::Error::other("a prepared statement is missing"))
            })
        };
        let prepared = Prepared {
            get: next()?,
            get_for_update: next()?,
            get_many: next()?,
            scan_forward: next()?,
            scan_reverse: next()?,
            scan_many: next()?,
            last_many: next()?,
            delete_ranges: next()?,
            delete_keys: next()?,
            upsert: next()?,
            guarded_upsert: next()?,
        };
        Ok(PgConn {
            runtime,
            client,
            driver,
            prepared,
            round_trips,
        })
    }

    /// Whether the session is gone (the pool then drops the connection).
    pub fn is_broken(&self) -> bool {
        self.driver.is_none() || self.client.is_closed()
    }

    /// A setting of this session (`SHOW`).
    pub fn setting(&mut self, name: &str) -> Result<String, Error> {
        let client = &self.client;
        let rows = drive(
            &self.runtime,
            &mut self.driver,
            client.query("SELECT current_setting($1)", &[&name]),
        )?;
        Ok(rows
            .first()
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .unwrap_or_default())
    }

    /// How often this session's prepared statements were planned for their
    /// parameters (custom plans) and generically (`pg_prepared_statements`,
    /// PostgreSQL 14+).
    pub fn plan_counts(&mut self) -> Result<(i64, i64), Error> {
        let client = &self.client;
        let rows = drive(
            &self.runtime,
            &mut self.driver,
            client.query(
                "SELECT coalesce(sum(custom_plans), 0)::int8, \
                 coalesce(sum(generic_plans), 0)::int8 FROM pg_prepared_statements",
                &[],
            ),
        )?;
        let row = rows.first();
        let get = |i: usize| row.and_then(|r| r.try_get::<_, i64>(i).ok()).unwrap_or(0);
        Ok((get(0), get(1)))
    }

    /// The plan `sql` runs with when prepared on this session and executed
    /// with these `bytea[]` arguments (`PREPARE`, `EXPLAIN EXECUTE`): it
    /// follows the session's `plan_cache_mode`, where a plain `EXPLAIN`
    /// with parameters would show a plan made for the values. One line per
    /// row.
    pub fn explain_prepared(&mut self, sql: &str, args: &[&[&[u8]]]) -> Result<Vec<String>, Error> {
        let types = vec!["bytea[]"; args.len()].join(", ");
        let literals: Vec<String> = args
            .iter()
            .map(|values| {
                let items: Vec<String> = values
                    .iter()
                    .map(|v| {
                        let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
                        format!("'\\x{hex}'::bytea")
                    })
                    .collect();
                format!("ARRAY[{}]::bytea[]", items.join(", "))
            })
            .collect();
        let client = &self.client;
        drive(
            &self.runtime,
            &mut self.driver,
            client.batch_execute(&format!("PREPARE kvlite_explain({types}) AS {sql}")),
        )?;
        let explained = drive(
            &self.runtime,
            &mut self.driver,
            client.simple_query(&format!(
                "EXPLAIN EXECUTE kvlite_explain({})",
                literals.join(", ")
            )),
        );
        let deallocated = drive(
            &self.runtime,
            &mut self.driver,
            client.batch_execute("DEALLOCATE kvlite_explain"),
        );
        let lines = explained?
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect();
        deallocated?;
        Ok(lines)
    }

    /// Run `sql` (simple protocol, no parameters) and wait for it.
    pub fn execute_simple(&mut self, sql: &str) -> Result<(), Error> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        drive(
            &self.runtime,
            &mut self.driver,
            self.client.batch_execute(sql),
        )
    }

    /// Send `sql` without waiting for its answer (which the connection
    /// reads and drops before the next one it waits for). For ending a
    /// read: nothing depends on how it went, and a broken session shows at
    /// the connection's next use.
    pub fn send_simple(&mut self, sql: &str) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let mut request = pin!(self.client.batch_execute(sql));
        let ended = self.runtime.block_on(poll_fn(|cx| {
            // The first poll queues the request; the driver's writes it.
            let _ = request.as_mut().poll(cx);
            Poll::Ready(driver.as_mut().poll(cx).is_ready())
        }));
        if ended {
            self.driver = None;
        }
    }

    /// `begin` (if any) then one statement, in one round trip.
    pub fn query(
        &mut self,
        begin: Option<&str>,
        (statement, params): Call<'_>,
    ) -> Result<Vec<Row>, Failure> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let client = &self.client;
        let Some(begin) = begin else {
            return drive(
                &self.runtime,
                &mut self.driver,
                client.query(statement, params),
            )
            .map_err(Failure::NotApplied);
        };
        let (began, answered) = drive(
            &self.runtime,
            &mut self.driver,
            both_in_order(client.batch_execute(begin), client.query(statement, params)),
        );
        match (began, answered) {
            (Ok(()), Ok(rows)) => Ok(rows),
            (Err(error), _) => Err(Failure::Begin(error)),
            (Ok(()), Err(error)) => Err(Failure::NotApplied(error)),
        }
    }

    /// The write statements then COMMIT, in one round trip, in a
    /// transaction already begun. PostgreSQL refuses every statement after
    /// a failed one in a transaction and answers its COMMIT by rolling
    /// back; a statement that fails before it is sent (encoding) sends
    /// nothing after it, and the transaction is rolled back here.
    pub fn write_and_commit(&mut self, calls: &[Call<'_>]) -> Result<(), Failure> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let client = &self.client;
        let mut steps: Vec<Pending<'_, Result<(), Error>>> = Vec::with_capacity(calls.len() + 1);
        for &(statement, params) in calls {
            steps.push(Box::pin(async move {
                client.execute(statement, params).await.map(|_| ())
            }));
        }
        steps.push(Box::pin(client.batch_execute("COMMIT")));
        let commit = steps.len() - 1;
        let (answers, refused) = drive(
            &self.runtime,
            &mut self.driver,
            in_order_until_refused(steps),
        );
        let Some((i, error)) = answers
            .into_iter()
            .enumerate()
            .find_map(|(i, answer)| answer.err().map(|e| (i, e)))
        else {
            return Ok(());
        };
        if refused {
            // COMMIT never left: end the transaction (if this fails the
            // session is broken, which ends it too).
            let _ = self.execute_simple("ROLLBACK");
            return Err(Failure::NotApplied(error));
        }
        // The server's answer to a statement before COMMIT means the
        // transaction was aborted there (or the session ended there):
        // COMMIT rolled back or never ran. An answered COMMIT failed. A
        // lost session, or a fatal error at COMMIT, says nothing.
        let answered = error
            .as_db_error()
            .is_some_and(|db| i < commit || !ends_session(db));
        Err(if answered {
            Failure::NotApplied(error)
        } else {
            Failure::Unknown(error)
        })
    }

    /// `begin`, one guarded write (the guarded upsert: it writes only
    /// inside a SERIALIZABLE transaction, every row or none) and COMMIT, in
    /// one round trip. `Ok(true)`: committed with its `rows` written;
    /// `Ok(false)`: its guard did not hold and nothing was written.
    pub fn guarded_commit(
        &mut self,
        begin: &'static str,
        (statement, params): Call<'_>,
        rows: u64,
    ) -> Result<bool, Failure> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let client = &self.client;
        let steps: Vec<Pending<'_, Result<u64, Error>>> = vec![
            Box::pin(async move { client.batch_execute(begin).await.map(|()| 0) }),
            Box::pin(async move { client.execute(statement, params).await }),
            Box::pin(async move { client.batch_execute("COMMIT").await.map(|()| 0) }),
        ];
        let (answers, refused) = drive(
            &self.runtime,
            &mut self.driver,
            in_order_until_refused(steps),
        );
        let mut answers = answers.into_iter();
        let (began, wrote, committed) = (answers.next(), answers.next(), answers.next());
        let in_transaction = matches!(began, Some(Ok(_)));
        // An answer from the server (not a lost session): the statement
        // ended there, as it says.
        let answered = |e: &Error| e.as_db_error().is_some_and(|db| !ends_session(db));
        let written = |n: u64| {
            debug_assert!(
                n == 0 || n == rows,
                "a guarded upsert writes every row or none"
            );
            n == rows && rows > 0
        };
        match (wrote, committed) {
            // BEGIN failed: the upsert ran alone, a transaction of its own.
            (Some(Ok(n)), _) if !in_transaction => Ok(written(n)),
            (Some(Ok(n)), Some(Ok(_))) => Ok(written(n)),
            // A step refused before it was sent (nothing after it left):
            // end the transaction.
            (wrote, committed) if refused => {
                if in_transaction {
                    let _ = self.execute_simple("ROLLBACK");
                }
                match committed.or(wrote).or(began) {
                    Some(Err(e)) => Err(Failure::NotApplied(e)),
                    _ => Err(Failure::NotSent),
                }
            }
            // The guard did not hold: nothing was written, however the
            // COMMIT of the empty transaction ended.
            (Some(Ok(0)), Some(Err(_))) => Ok(false),
            // A failed upsert aborts the transaction (COMMIT rolls back);
            // an answered COMMIT error is a rollback.
            (Some(Err(e)), _) | (_, Some(Err(e))) if answered(&e) => Err(Failure::NotApplied(e)),
            // A lost session: COMMIT may have run.
            (Some(Err(e)), _) | (_, Some(Err(e))) => Err(Failure::Unknown(e)),
            (None, _) | (Some(Ok(_)), None) => Err(Failure::NotSent),
        }
    }
}

/// Whether the server ended the session with this error (FATAL, PANIC).
pub(super) fn ends_session(db: &tokio_postgres::error::DbError) -> bool {
    matches!(db.severity(), "FATAL" | "PANIC")
}

/// How a pipeline failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// BEGIN failed: the statement sent with it ran outside any transaction,
    /// so the transaction must not go on (its reads would not share a
    /// snapshot, its writes would not be atomic).
    Begin(Error),
    /// Nothing of the transaction was applied.
    NotApplied(Error),
    /// COMMIT was sent, and no answer says how it ended.
    Unknown(Error),
    /// Stopped before anything of the transaction was sent.
    NotSent,
}

/// Run `work` on this thread, driving the connection's socket meanwhile.
fn drive<T>(
    runtime: &tokio::runtime::Runtime,
    driver: &mut Option<Driver>,
    work: impl Future<Output = T>,
) -> T {
    let mut work = pin!(work);
    let mut waiting = Waiting::start();
    runtime.block_on(poll_fn(|cx| {
        // Polled first so its requests are queued before the driver writes.
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if let Some(d) = driver.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            // The session ended: dropping the driver fails every request
            // still waiting as closed, so `work` finishes now.
            *driver = None;
            return work.as_mut().poll(cx);
        }
        if waiting.stay_awake() {
            // Polled again once the runtime has looked at the socket,
            // without sleeping in between; the core goes first to any
            // thread that wants it (PostgreSQL's own, on a small machine).
            std::thread::yield_now();
            let yielded = pin!(tokio::task::yield_now());
            let _ = yielded.poll(cx);
        }
        Poll::Pending
    }))
}

/// How long an answer is waited for awake (the socket polled without
/// sleeping) before the thread sleeps: on a machine whose idle cores halt
/// (a VM), waking a sleeping thread costs tens of microseconds a round trip
/// (PostgreSQL small_txns, alternated pairs: medians 4.8-7.2 s -> 4.4-6.2 s;
/// point_reads_uncached 16.3-17.0 s -> 6.6-9.8 s).
const AWAKE_WAIT: std::time::Duration = std::time::Duration::from_micros(200);

/// Threads of this process waiting for PostgreSQL's answer now.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// A thread waiting for an answer. It stays awake only while it is the
/// only one waiting (with several, the cores are better left to them and to
/// PostgreSQL: 8 and 64 writers committed 5-8% less when one polled) and
/// for [`AWAKE_WAIT`] at most.
struct Waiting {
    awake_until: Option<std::time::Instant>,
}

impl Waiting {
    fn start() -> Waiting {
        let others = WAITING.fetch_add(1, Ordering::AcqRel);
        Waiting {
            awake_until: (others == 0).then(|| std::time::Instant::now() + AWAKE_WAIT),
        }
    }

    fn stay_awake(&mut self) -> bool {
        let awake = self
            .awake_until
            .is_some_and(|until| std::time::Instant::now() < until)
            && WAITING.load(Ordering::Acquire) == 1;
        if !awake {
            self.awake_until = None;
        }
        awake
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every future's output, each polled in list order, so that the requests
/// they send on their first poll reach the connection in that order.
fn in_order<'a, T: 'a>(mut steps: Vec<Pending<'a, T>>) -> impl Future<Output = Vec<T>> + 'a {
    let mut done: Vec<Option<T>> = steps.iter().map(|_| None).collect();
    poll_fn(move |cx| {
        let mut waiting = false;
        for (step, out) in steps.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match step.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(done.iter_mut().filter_map(Option::take).collect())
        }
    })
}

/// Both outputs, `first` polled before `second` (so its request is sent
/// first).
async fn both_in_order<A: Future, B: Future>(first: A, second: B) -> (A::Output, B::Output) {
    let (mut first, mut second) = (pin!(first), pin!(second));
    let (mut a, mut b) = (None, None);
    poll_fn(move |cx| {
        if a.is_none()
            && let Poll::Ready(v) = first.as_mut().poll(cx)
        {
            a = Some(v);
        }
        if b.is_none()
            && let Poll::Ready(v) = second.as_mut().poll(cx)
        {
            b = Some(v);
        }
        match (a.take(), b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (a, b) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

/// Like [`in_order`], but a step that fails on its first poll (so before
/// its request was sent: encoding) stops the steps after it from being
/// started: the answers of the steps started, in order, and whether one
/// was refused so.
fn in_order_until_refused<'a, T: 'a>(
    mut steps: Vec<Pending<'a, Result<T, Error>>>,
) -> impl Future<Output = (Vec<Result<T, Error>>, bool)> + 'a {
    let mut done: Vec<Option<Result<T, Error>>> = steps.iter().map(|_| None).collect();
    let (mut started, mut refused) = (0, false);
    poll_fn(move |cx| {
        for (i, (step, out)) in steps.iter_mut().zip(done.iter_mut()).enumerate() {
            if out.is_some() {
                continue;
            }
            if i >= started {
                if refused {
                    break;
                }
                started = i + 1;
                if let Poll::Ready(v) = step.as_mut().poll(cx) {
                    refused = v.is_err();
                    *out = Some(v);
                }
            } else if let Poll::Ready(v) = step.as_mut().poll(cx) {
                *out = Some(v);
            }
        }
        if done.iter().take(started).any(Option::is_none) {
            return Poll::Pending;
        }
        let answers = done
            .iter_mut()
            .take(started)
            .filter_map(Option::take)
            .collect();
        Poll::Ready((answers, refused))
    })
}

/// Makes the pool's connections.
pub(super) struct Manager {
    pub config: tokio_postgres::Config,
    pub sql: Arc<super::Statements>,
    pub round_trips: Arc<AtomicU64>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<PgConn, ConnectError> {
        PgConn::connect(&self.config, &self.sql, None, self.round_trips.clone())
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectError> {
        Ok(conn.execute_simple("")?)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_waits_awake_only_alone_and_only_for_a_while() {
        let mut first = Waiting::start();
        assert!(first.stay_awake(), "alone");
        let mut second = Waiting::start();
        assert!(!second.stay_awake(), "not alone when it started");
        assert!(!first.stay_awake(), "not alone any more");
        drop((first, second));
        let mut alone = Waiting::start();
        assert!(alone.stay_awake());
        std::thread::sleep(AWAKE_WAIT * 2);
        assert!(!alone.stay_awake(), "only for a while");
    }
}
