//! A private, throwaway PostgreSQL server for integration tests.
//!
//! ```no_run
//! let pg = kvlite_testkit::PgCluster::shared()?; // one server per test process
//! let url = pg.fresh_database()?;                // postgresql://postgres@127.0.0.1:PORT/test_0
//! // connect to `url` with any client; trust auth, no password
//! # Ok::<(), kvlite_testkit::PgError>(())
//! ```
//!
//! [`PgCluster::start`] runs `initdb` in a fresh directory under the temp dir and starts
//! `postgres` as a direct child process on a free loopback port, with durability turned off
//! (`fsync=off`, `synchronous_commit=off`, `full_page_writes=off`). When the tests run as
//! root the server runs as the `postgres` OS user. The server is tied to this process with
//! `PR_SET_PDEATHSIG`, so it goes away even if the test process is killed.
//!
//! Binaries are looked up in `$KVLITE_PG_BINDIR`, then the highest
//! `/usr/lib/postgresql/<version>/bin`, then `pg_config --bindir`, then `PATH`. If none is
//! found and we are root on a machine with `apt-get`, the `postgresql` package is installed
//! (once, under a file lock) unless `KVLITE_PG_NO_INSTALL` is set.
#![cfg(unix)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod bins;
mod cluster;
mod error;
mod keeper;
mod proxy;
pub mod sql;
mod tmpfs;
mod util;

pub use bins::{BINDIR_ENV, NO_INSTALL_ENV, ensure_packages};
pub use cluster::{PgCluster, TMPDIR_ENV, remove_stale_dirs};
pub use error::{PgError, Result};
pub use proxy::{Cut, CutProxy};
pub use tmpfs::Tmpfs;
pub use util::{KillOnDrop, is_root, output_with_stdin};

/// Shorthand for [`PgCluster::shared`].
pub fn shared() -> Result<&'static PgCluster> {
    PgCluster::shared()
}
