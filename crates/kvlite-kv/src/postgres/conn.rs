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
use std::sync::atomic::{AtomicU64, Ordering};
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
        let texts: [(&str, &[Type]); 10] = [
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
    ) -> Result<Vec<Row>, Error> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let client = &self.client;
        match begin {
            None => drive(
                &self.runtime,
                &mut self.driver,
                client.query(statement, params),
            ),
            Some(begin) => {
                let steps: Vec<Pending<'_, Result<Vec<Row>, Error>>> = vec![
                    Box::pin(async move { client.batch_execute(begin).await.map(|()| Vec::new()) }),
                    Box::pin(client.query(statement, params)),
                ];
                first_error(drive(&self.runtime, &mut self.driver, in_order(steps)))
                    .map(|mut answers| answers.pop().unwrap_or_default())
            }
        }
    }

    /// `begin` (if any), the statements, then `end` (COMMIT), in one round
    /// trip. The first failure is returned: PostgreSQL refuses every
    /// statement after a failed one in the transaction and answers its
    /// COMMIT by rolling back, so nothing after it applied.
    pub fn execute_then(
        &mut self,
        begin: Option<&str>,
        calls: &[Call<'_>],
        end: &str,
    ) -> Result<(), Error> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let client = &self.client;
        let mut steps: Vec<Pending<'_, Result<(), Error>>> = Vec::with_capacity(calls.len() + 2);
        if let Some(begin) = begin {
            steps.push(Box::pin(client.batch_execute(begin)));
        }
        for &(statement, params) in calls {
            steps.push(Box::pin(async move {
                client.execute(statement, params).await.map(|_| ())
            }));
        }
        steps.push(Box::pin(client.batch_execute(end)));
        first_error(drive(&self.runtime, &mut self.driver, in_order(steps))).map(|_| ())
    }
}

/// The answers, or the first failure among them.
fn first_error<T>(answers: Vec<Result<T, Error>>) -> Result<Vec<T>, Error> {
    answers.into_iter().collect()
}

/// Run `work` on this thread, driving the connection's socket meanwhile.
fn drive<T>(
    runtime: &tokio::runtime::Runtime,
    driver: &mut Option<Driver>,
    work: impl Future<Output = T>,
) -> T {
    let mut work = pin!(work);
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
        Poll::Pending
    }))
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
