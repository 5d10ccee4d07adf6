//! Migration throughput: a SQLite file of 100 MiB (16 MiB quick) stored as
//! v1 and migrated to v2, next to importing the same file as v2 (SQLite's
//! backup API into the kvlite VFS, as `kvlite import` does), on the
//! embedded store. Each step reports MB/s of the database's size and the
//! bytes this process wrote to disk meanwhile (`/proc/self/io`: does not
//! swing with the machine's speed).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvlite_engine::{Engine, EngineConfig, LocalTransport, MigrateOptions, MigrationOutcome};
use kvlite_kv::Kv;
use kvlite_vfs::{Vfs, VfsConfig};
use prometheus_client::registry::Registry;
use rusqlite::Connection;

use crate::BenchError;

/// One step's figures.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Bytes this process wrote to storage during the step (0 where
    /// `/proc/self/io` is not readable).
    pub disk_bytes: u64,
}

impl Step {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Other(e.to_string())
}

/// Run it in `dir`.
pub fn run(dir: &Path, quick: bool) -> Result<Vec<Step>, BenchError> {
    let mib: u64 = if quick { 16 } else { 100 };
    let file = dir.join("source.sqlite");
    {
        let conn = Connection::open(&file).map_err(err)?;
        conn.execute_batch(&format!(
            "PRAGMA page_size = 4096;
             CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO t(b) SELECT randomblob(4000) FROM n;",
            (mib << 20) / 4096
        ))
        .map_err(err)?;
    }
    let bytes = std::fs::metadata(&file)?.len();
    let kv = Kv::open_embedded(&dir.join("store"))?;
    let engine = Engine::new(kv, EngineConfig::default(), &mut Registry::default());
    let txns = written_bytes;
    let mut steps = Vec::new();

    // v2 import: SQLite's backup API into the VFS.
    let vfs = Vfs::register(
        &format!("kvlite-bench-migration-{}", std::process::id()),
        Arc::new(LocalTransport::new(engine.clone())),
        VfsConfig::default(),
    )
    .map_err(err)?;
    let (t0, started) = (txns(), Instant::now());
    {
        let source = Connection::open(&file).map_err(err)?;
        let mut dest = vfs.open("imported").map_err(err)?;
        let backup = rusqlite::backup::Backup::new(&source, &mut dest).map_err(err)?;
        // Every page in one step: one commit, as `kvlite import` makes.
        match backup.step(-1).map_err(err)? {
            rusqlite::backup::StepResult::Done => {}
            other => return Err(err(format!("backup stopped: {other:?}"))),
        }
    }
    steps.push(Step {
        name: "import as v2",
        bytes,
        elapsed: started.elapsed(),
        disk_bytes: txns().saturating_sub(t0),
    });

    // v1: the file's bytes as chunks, then the migration.
    let (t0, started) = (txns(), Instant::now());
    let mut f = std::fs::File::open(&file)?;
    engine.v1_files().import("legacy", &mut f)?;
    steps.push(Step {
        name: "import as v1",
        bytes,
        elapsed: started.elapsed(),
        disk_bytes: txns().saturating_sub(t0),
    });
    let (t0, started) = (txns(), Instant::now());
    let report = engine.migrate_v1("legacy", &MigrateOptions::default())?;
    if report.outcome != MigrationOutcome::Migrated {
        return Err(err(format!("migration: {:?}", report.outcome)));
    }
    steps.push(Step {
        name: "migrate v1 to v2",
        bytes,
        elapsed: started.elapsed(),
        disk_bytes: txns().saturating_sub(t0),
    });
    // The result is the same database.
    let check = |db: &str| -> Result<i64, BenchError> {
        vfs.open(db)
            .map_err(err)?
            .query_row("SELECT sum(length(b)) FROM t", [], |r| r.get(0))
            .map_err(err)
    };
    if check("imported")? != check("legacy")? {
        return Err(err("the migrated database differs from the imported one"));
    }
    Ok(steps)
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be sent
/// to storage (counted when pages are dirtied, so it repeats run to run).
pub(crate) fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

pub fn render(steps: &[Step]) -> String {
    let mut s = format!(
        "{:<18} {:>8} {:>9} {:>8} {:>14}\n",
        "step", "MiB", "seconds", "MB/s", "disk MiB"
    );
    for step in steps {
        s.push_str(&format!(
            "{:<18} {:>8.1} {:>9.2} {:>8.1} {:>14.1}\n",
            step.name,
            step.bytes as f64 / (1 << 20) as f64,
            step.elapsed.as_secs_f64(),
            step.mb_per_s(),
            step.disk_bytes as f64 / (1 << 20) as f64
        ));
    }
    s
}
