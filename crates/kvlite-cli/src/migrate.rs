//! `kvlite migrate`: move databases from the legacy v1 layout to v2 now
//! (opening one does it too), report what a migration would do, and purge
//! v1 data kept as a safety net.

use std::io::{self, Write};

use anyhow::{Result, bail};
use kvlite_engine::{Engine, Layout, MigrateOptions, MigrationOutcome, MigrationReport};

use crate::store::{self, Access, GlobalOpts};

const MIGRATE_HELP: &str = "\
A migration takes a lease on the database (one job at a time, across every
process sharing the store), recovers the v1 files with SQLite in memory (a hot
rollback journal is rolled back, a WAL checkpointed), checks them (header, page
size, PRAGMA integrity_check), converts another page size to 4096, and copies
the pages as v2 in bounded commits; the last commit makes the database v2.
A failure is reported with its reason, leaves the v1 data as it was and nothing
of v2 behind. The v1 data is kept after a migration (read-only, outside the
quota) until --purge-v1 removes it, which it does only for databases whose v2
copy passes its audit.

Exit code 1 if any database failed; the others are still done.";

/// Migrate databases from the legacy v1 layout to v2
#[derive(clap::Args, Debug)]
#[command(after_help = MIGRATE_HELP)]
pub struct MigrateArgs {
    /// Database name
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    db: Option<String>,
    /// Every database with v1 data
    #[arg(long)]
    all: bool,
    /// Recover and check in memory, report, change nothing
    #[arg(long, conflicts_with = "purge_v1")]
    dry_run: bool,
    /// Remove the v1 data of migrated databases (migrating them first)
    #[arg(long)]
    purge_v1: bool,
}

pub fn run(opts: &GlobalOpts, args: MigrateArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Existing)?;
    let engine = store.local_engine("kvlite migrate")?;
    let names = match &args.db {
        Some(db) => vec![db.clone()],
        None => candidates(engine, args.purge_v1)?,
    };
    let mut out = io::stdout().lock();
    let mut failed = 0;
    for db in &names {
        match one(engine, db, &args) {
            Ok(line) => writeln!(out, "{line}")?,
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        bail!("{failed} of {} databases failed", names.len());
    }
    Ok(())
}

/// Databases `--all` works on: those with v1 data (any layout when
/// purging: migrated ones keep theirs).
fn candidates(engine: &Engine, purging: bool) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = engine
            .v1_files()
            .list("", after.as_deref(), 1000)
            .map_err(|e| anyhow::anyhow!("cannot list v1 databases: {e}"))?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        for db in page {
            let layout = engine
                .layout(&db)
                .map_err(|e| store::client_error(&db, e))?;
            if purging || layout != Some(Layout::V2) {
                names.push(db);
            }
        }
        after = Some(last);
    }
    Ok(names)
}

fn one(engine: &Engine, db: &str, args: &MigrateArgs) -> Result<String> {
    let options = MigrateOptions {
        dry_run: args.dry_run,
    };
    let report = engine
        .migrate_v1(db, &options)
        .map_err(|e| store::client_error(db, e))?;
    let mut line = describe(&report);
    if args.purge_v1 {
        let bytes = engine
            .purge_v1(db)
            .map_err(|e| store::client_error(db, e))?;
        line.push_str(&format!("; v1 data removed ({bytes} bytes)"));
    }
    Ok(line)
}

fn describe(r: &MigrationReport) -> String {
    let f = &r.files;
    let size = |s: Option<u64>| s.map_or("-".to_string(), |b| b.to_string());
    let files = format!(
        "v1 main {} bytes, journal {}, wal {}",
        size(f.main),
        size(f.journal),
        size(f.wal)
    );
    let mut notes = Vec::new();
    if r.page_size != 4096 {
        notes.push(format!("page size {} converted to 4096", r.page_size));
    }
    if r.journal_recovered {
        notes.push("hot journal rolled back".to_string());
    }
    if r.wal_checkpointed {
        notes.push("WAL checkpointed".to_string());
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(", {}", notes.join(", "))
    };
    match r.outcome {
        MigrationOutcome::Migrated => format!(
            "migrated {}: {} pages in {:.2}s ({files}{notes})",
            r.db,
            r.pages,
            r.elapsed.as_secs_f64()
        ),
        MigrationOutcome::WouldMigrate => {
            format!("would migrate {}: {} pages ({files}{notes})", r.db, r.pages)
        }
        MigrationOutcome::AlreadyMigrated => {
            format!("{} is already v2 ({} pages; {files})", r.db, r.pages)
        }
    }
}
