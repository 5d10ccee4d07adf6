//! The legacy v1 layout and the migration from it.
//!
//! v1 kept each SQLite file of a database as raw 4 KiB chunks ([`keys`],
//! [`store`]); SQLite ran its own rollback journal or WAL on top. The
//! migration ([`migrate`]) turns such a database into a v2 one:
//!
//! 1. take the durable lease ([`lease`]) — one job per database across
//!    every process sharing the store, renewed by a heartbeat;
//! 2. read the file records; check the header, page size and file size;
//! 3. recover with SQLite itself, over an in-memory [`overlay`]: a hot
//!    journal is rolled back, a WAL checkpointed, the stored v1 data never
//!    written and nothing written to local disk;
//! 4. verify (`PRAGMA integrity_check`), convert another page size to 4 KiB;
//! 5. create the v2 database with origin `MigratingFromV1` (clients that
//!    open it wait for the migration), copy the pages through large commits,
//!    streaming a bounded part at a time;
//! 6. the last commit publishes the head, sets origin `MigratedFromV1` and
//!    releases the lease, in one transaction.
//!
//! Invariants: a database is usable as v2 exactly when its origin is not
//! `MigratingFromV1`; v1 data is never written once a lease or a v2 head
//! exists; a failed job leaves no v2 keys and no lease.

pub(crate) mod keys;
pub(crate) mod lease;
mod migrate;
// Without SQLite to recover with, nothing uses the overlay.
#[cfg_attr(not(feature = "v1-migration"), allow(dead_code, unused_imports))]
pub(crate) mod overlay;
#[cfg(feature = "v1-migration")]
mod recover;
pub(crate) mod store;

use kvlite_api::{Error, Origin, V1File};
use kvlite_kv::KvRead;

pub use migrate::{
    MigrateOptions, MigrationConfig, MigrationOutcome, MigrationReport, MigrationStep,
};
pub use store::{V1Inventory, V1Store};

use crate::error::{Fail, Result, invalid};
use crate::meta::Meta;

/// Whether `db` has a v1 main file.
pub(crate) fn has_v1_data(txn: &mut impl KvRead, db: &str) -> Result<bool> {
    Ok(txn.get(&keys::file(db, V1File::Main))?.is_some())
}

/// The check of a migration's writes that change the database's state
/// beyond its pages: it must still be migrating, under `holder`'s lease.
pub(crate) fn check_migrating(
    txn: &mut impl KvRead,
    db: &str,
    meta: &Meta,
    holder: u128,
) -> Result<()> {
    if meta.origin != Origin::MigratingFromV1 {
        return Err(invalid(
            kvlite_api::InvalidKind::Layout,
            format!("database {db:?} is not being migrated"),
        ));
    }
    if !lease::holds(txn, db, holder)? {
        return Err(Fail::Api(Error::Unavailable(format!(
            "the migration of {db:?} lost its lease to another job"
        ))));
    }
    Ok(())
}
