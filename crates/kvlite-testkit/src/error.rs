use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong while providing a PostgreSQL server to a test.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No usable `initdb`/`postgres` binaries were found (and none could be installed).
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found; searched: {searched}. \
         Install them with `sudo apt-get install -y postgresql` (Debian/Ubuntu), \
         `brew install postgresql` (macOS) or your distribution's package, or set \
         KVLITE_PG_BINDIR to the directory that contains initdb and postgres"
    )]
    BinariesNotFound {
        /// Human-readable list of the places that were looked at.
        searched: String,
    },

    /// Installing PostgreSQL with apt-get failed.
    #[error("installing PostgreSQL with `{command}` failed ({status}); output tail:\n{output}")]
    InstallFailed {
        /// The command that failed.
        command: String,
        /// Its exit status.
        status: String,
        /// Tail of its combined output.
        output: String,
    },

    /// Running as root, but the OS user the server must run as does not exist.
    #[error(
        "running as root, but the OS user `{user}` does not exist; PostgreSQL refuses to run \
         as root. Install the `postgresql` package (it creates the user) or create the user"
    )]
    UserNotFound {
        /// The user name that was looked up.
        user: String,
    },

    /// `initdb` exited unsuccessfully.
    #[error("initdb failed ({status}); output:\n{output}")]
    InitdbFailed {
        /// Its exit status.
        status: String,
        /// Its combined output.
        output: String,
    },

    /// The server process exited (or could not bind a port) while starting.
    #[error("PostgreSQL server failed to start: {reason}; server log tail:\n{log_tail}")]
    StartFailed {
        /// What went wrong.
        reason: String,
        /// Last lines of the server log.
        log_tail: String,
    },

    /// The server did not accept connections before the deadline.
    #[error(
        "PostgreSQL server did not accept connections within {timeout:?}; server log tail:\n{log_tail}"
    )]
    StartTimeout {
        /// How long we waited.
        timeout: Duration,
        /// Last lines of the server log.
        log_tail: String,
    },

    /// A database name that we refuse to use (see [`crate::PgCluster::create_database`]).
    #[error(
        "invalid database name {0:?}: use 1-63 characters from [A-Za-z0-9_], not starting with a digit"
    )]
    InvalidDatabaseName(String),

    /// `psql` failed to run a statement.
    #[error("psql failed to run `{sql}` ({status}); output:\n{output}")]
    SqlFailed {
        /// The statement.
        sql: String,
        /// Exit status of psql.
        status: String,
        /// Its combined output.
        output: String,
    },

    /// The process-wide shared cluster failed to start earlier; this is that error.
    #[error("the shared PostgreSQL cluster failed to start: {0}")]
    SharedStartFailed(#[source] Arc<PgError>),

    /// An I/O error, with what we were doing at the time.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl PgError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> PgError {
        let context = context.into();
        move |source| PgError::Io { context, source }
    }
}

/// Result alias for this crate.
pub type Result<T, E = PgError> = std::result::Result<T, E>;
