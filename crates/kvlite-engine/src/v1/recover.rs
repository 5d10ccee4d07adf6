//! Steps 2–4 of a migration: check, recover and verify a v1 database in an
//! in-memory overlay, with SQLite itself (the bundled one: the feature
//! `v1-migration`).

use std::sync::Arc;

use kvlite_api::{CorruptionKind, Error, MAX_PAGES, PAGE_SIZE, V1File, V1Files};
use rusqlite::OpenFlags;

use super::migrate::{JobError, JobResult, Recovered, at};
use super::overlay::{Overlay, migration_vfs};
use super::store::V1Inventory;
use crate::Engine;
use crate::metrics::MigrationPhase as Phase;

/// The job's overlay is reachable by the migration VFS while it lives.
struct Routed<'a> {
    router: &'a super::overlay::Router,
    name: String,
}

impl Drop for Routed<'_> {
    fn drop(&mut self) {
        self.router.remove(&self.name);
    }
}

impl Engine {
    /// Steps 2–4: check, recover and verify `db` in an overlay, with SQLite.
    pub(super) fn recover(&self, db: &str, job: &str, files: &V1Inventory) -> JobResult<Recovered> {
        let overlay = Arc::new(Overlay::new(self.v1_files(), db, files));
        let main_size = files.main.unwrap_or(0);
        let page_size = if main_size == 0 {
            PAGE_SIZE as u32
        } else {
            check_header(db, &overlay, main_size)?
        };
        let (vfs, router) = migration_vfs().map_err(at(Phase::Recover))?;
        router.insert(job, overlay.clone());
        let _routed = Routed {
            router,
            name: job.to_string(),
        };
        let fail = |phase: Phase, code: CorruptionKind| {
            let overlay = overlay.clone();
            move |e: rusqlite::Error| {
                JobError::Failed(
                    phase,
                    sqlite_failure(db, &overlay, code, &e.to_string(), &e),
                )
            }
        };
        let conn = vfs
            .open_with_flags(
                job,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| {
                JobError::Failed(
                    Phase::Recover,
                    match e {
                        kvlite_vfs::VfsError::Sqlite { message, source } => sqlite_failure(
                            db,
                            &overlay,
                            CorruptionKind::V1Integrity,
                            &message,
                            &source,
                        ),
                        e => Error::Internal(e.to_string()),
                    },
                )
            })?;
        // The first read takes SQLite's shared lock: a hot journal is rolled
        // back here, a WAL's index is built.
        let recover = Phase::Recover;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(fail(recover, CorruptionKind::V1Integrity))?;
        // A hot journal is rolled back (or, cut before it named any page,
        // discarded) by SQLite: either way SQLite changed the files.
        let journal_recovered = files.journal.is_some_and(|s| s > 0)
            && (overlay.touched(V1File::Main) || overlay.touched(V1File::Journal));
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(fail(recover, CorruptionKind::V1Integrity))?;
        let mut wal_checkpointed = false;
        if mode.eq_ignore_ascii_case("wal") {
            // A truncating checkpoint reports the emptied log, so the
            // frames are counted by a passive one first.
            let checkpoint = |mode: &str| {
                let (busy, frames): (i64, i64) = conn
                    .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(fail(recover, CorruptionKind::V1Integrity))?;
                if busy != 0 {
                    return Err(JobError::Failed(
                        recover,
                        Error::Internal(format!("checkpointing the WAL of {db:?} was blocked")),
                    ));
                }
                Ok(frames)
            };
            wal_checkpointed = checkpoint("PASSIVE")? > 0;
            checkpoint("TRUNCATE")?;
            let mode: String = conn
                .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
                .map_err(fail(recover, CorruptionKind::V1Integrity))?;
            if !mode.eq_ignore_ascii_case("delete") {
                return Err(JobError::Failed(
                    recover,
                    Error::Internal(format!("{db:?} stayed in journal mode {mode}")),
                ));
            }
        }
        integrity_check(db, &conn, &overlay, Phase::Verify)?;
        if page_size != PAGE_SIZE as u32 {
            // Rewritten in the overlay (its memory holds the whole image:
            // only databases of another page size pay that).
            conn.execute_batch("PRAGMA page_size=4096; VACUUM;")
                .map_err(fail(Phase::Convert, CorruptionKind::V1Integrity))?;
            let now: i64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(fail(Phase::Convert, CorruptionKind::V1Integrity))?;
            if now != PAGE_SIZE as i64 {
                return Err(JobError::Failed(
                    Phase::Convert,
                    Error::Internal(format!("{db:?} kept page size {now} after VACUUM")),
                ));
            }
            integrity_check(db, &conn, &overlay, Phase::Convert)?;
        }
        drop(conn);
        if let Some(e) = overlay.first_error() {
            return Err(JobError::Failed(Phase::Recover, e));
        }
        let size = overlay
            .size(db, V1File::Main)
            .map_err(at(Phase::Verify))?
            .unwrap_or(0);
        if !size.is_multiple_of(PAGE_SIZE as u64) {
            return Err(JobError::Failed(
                Phase::Verify,
                Error::corrupt(
                    db,
                    CorruptionKind::V1Size,
                    format!("recovered size {size} is not a multiple of 4096"),
                ),
            ));
        }
        let pages = size / PAGE_SIZE as u64;
        if pages > u64::from(MAX_PAGES) {
            return Err(JobError::Failed(
                Phase::Verify,
                Error::invalid(
                    kvlite_api::InvalidKind::Size,
                    format!("{pages} pages exceed the {MAX_PAGES}-page limit of a database"),
                ),
            ));
        }
        Ok(Recovered {
            overlay,
            page_size,
            pages,
            journal_recovered,
            wal_checkpointed,
        })
    }
}

/// The header of a stored main file: SQLite's magic, a valid page size,
/// and a size that is a whole number of pages. Returns the page size.
fn check_header(db: &str, overlay: &Overlay, size: u64) -> JobResult<u32> {
    let bad = |kind, what: String| JobError::Failed(Phase::Verify, Error::corrupt(db, kind, what));
    let mut header = [0u8; 100];
    overlay
        .read(db, V1File::Main, 0, &mut header)
        .map_err(at(Phase::Read))?;
    if header.get(..16) != Some(&b"SQLite format 3\0"[..]) {
        return Err(bad(
            CorruptionKind::V1Header,
            "the v1 main file is not a SQLite database (bad magic)".into(),
        ));
    }
    let raw = u32::from(u16::from_be_bytes([header[16], header[17]]));
    let page_size = if raw == 1 { 65536 } else { raw };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(bad(
            CorruptionKind::V1Header,
            format!("the v1 header names page size {raw}"),
        ));
    }
    if !size.is_multiple_of(u64::from(page_size)) {
        return Err(bad(
            CorruptionKind::V1Size,
            format!(
                "the v1 main file's {size} bytes are not a multiple of its page size {page_size}"
            ),
        ));
    }
    Ok(page_size)
}

fn integrity_check(
    db: &str,
    conn: &rusqlite::Connection,
    overlay: &Overlay,
    phase: Phase,
) -> JobResult<()> {
    let rows: rusqlite::Result<Vec<String>> = conn
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    let rows = rows.map_err(|e| {
        JobError::Failed(
            phase,
            sqlite_failure(db, overlay, CorruptionKind::V1Integrity, &e.to_string(), &e),
        )
    })?;
    if rows != ["ok"] {
        if let Some(e) = overlay.first_error() {
            // SQLite could not read what the store could not give it.
            return Err(JobError::Failed(phase, e));
        }
        return Err(JobError::Failed(
            phase,
            Error::corrupt(
                db,
                CorruptionKind::V1Integrity,
                format!("integrity check after recovery: {}", rows.join("; ")),
            ),
        ));
    }
    Ok(())
}

/// A SQLite failure during recovery: the store's own typed error if it
/// caused it (SQLite only saw an I/O error), corruption if SQLite found the
/// data damaged, else internal.
fn sqlite_failure(
    db: &str,
    overlay: &Overlay,
    kind: CorruptionKind,
    message: &str,
    e: &rusqlite::Error,
) -> Error {
    if let Some(e) = overlay.first_error() {
        return e;
    }
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => Error::corrupt(db, kind, message),
        Some(rusqlite::ErrorCode::NotADatabase) => {
            Error::corrupt(db, CorruptionKind::V1Header, message)
        }
        _ => Error::Internal(format!("SQLite recovering {db:?}: {message}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::EngineConfig;
    use crate::error::Fail;
    use crate::v1::keys;
    use crate::{MigrateOptions, MigrationOutcome};
    use kvlite_kv::Kv;

    /// The migration VFS routes only to running jobs: after migrations that
    /// succeed and ones that fail after recovery started, its table is empty
    /// (no other test in this crate's unit tests migrates).
    #[test]
    fn the_router_holds_only_running_jobs() {
        let engine = Engine::new(
            Kv::memory(),
            EngineConfig::default(),
            &mut prometheus_client::registry::Registry::default(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(9000));")
            .unwrap();
        drop(conn);
        let bytes = std::fs::read(&path).unwrap();
        for db in ["good", "broken"] {
            engine.v1_files().import(db, &mut bytes.as_slice()).unwrap();
        }
        // Page 2 (the table's root) turned to noise: integrity fails.
        engine
            .kv
            .transact(|txn| {
                txn.set(&keys::chunk("broken", V1File::Main, 1), &[0x0D; 4096])?;
                Ok::<_, Fail>(())
            })
            .unwrap();
        let ok = engine
            .migrate_v1("good", &MigrateOptions::default())
            .unwrap();
        assert_eq!(ok.outcome, MigrationOutcome::Migrated);
        let bad = engine.migrate_v1("broken", &MigrateOptions::default());
        assert!(matches!(bad, Err(Error::Corruption { .. })), "{bad:?}");
        let dry = engine.migrate_v1("broken", &MigrateOptions { dry_run: true });
        assert!(matches!(dry, Err(Error::Corruption { .. })), "{dry:?}");
        let (_, router) = migration_vfs().unwrap();
        assert_eq!(router.len(), 0);
        assert_eq!(engine.migrations_in_process(), 0);
    }
}
