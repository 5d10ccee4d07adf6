//! `many_dbs`: W writers, each on its own database, committing one-row
//! transactions at the same time, in one process. Commits per second as W
//! grows show whether the store shares its fsyncs between databases
//! (group commit) or makes every commit wait for its own.
//!
//! Plain SQLite (one WAL file per database, `synchronous=FULL`) runs beside
//! it as the reference: each file fsyncs on its own.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kvlite_engine::{Engine, EngineConfig, LocalTransport};
use kvlite_kv::Kv;
use kvlite_vfs::{Vfs, VfsConfig};

use crate::stats::{Summary, ms};
use prometheus_client::registry::Registry;
use rusqlite::Connection;

use crate::BenchError;

/// Writer counts measured.
pub const WRITERS: [usize; 3] = [1, 8, 64];

#[derive(Debug, Clone)]
pub struct Row {
    pub system: &'static str,
    pub writers: usize,
    pub commits: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Row {
    pub fn per_second(&self) -> f64 {
        self.commits as f64 / self.seconds.max(1e-9)
    }
}

fn sql(e: rusqlite::Error) -> BenchError {
    BenchError::Other(e.to_string())
}

/// Run `writers` threads, each committing one-row inserts on the connection
/// `open(i)` gives it, for `duration`.
fn measure(
    system: &'static str,
    writers: usize,
    duration: Duration,
    open: &(dyn Fn(usize) -> Result<Connection, BenchError> + Sync),
) -> Result<Row, BenchError> {
    let start = Arc::new(Barrier::new(writers + 1));
    let results: Vec<Result<Vec<Duration>, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let start = start.clone();
                s.spawn(move || {
                    let conn = open(i);
                    let ready = conn.and_then(|c| {
                        c.execute_batch(
                            "CREATE TABLE IF NOT EXISTS t(a INTEGER PRIMARY KEY, b TEXT)",
                        )
                        .map_err(sql)?;
                        Ok(c)
                    });
                    start.wait();
                    let conn = ready?;
                    let mut samples = Vec::new();
                    let deadline = Instant::now() + duration;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        conn.execute("INSERT INTO t(b) VALUES ('one small row')", [])
                            .map_err(sql)?;
                        samples.push(t.elapsed());
                    }
                    Ok(samples)
                })
            })
            .collect();
        start.wait();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BenchError::Other("a writer panicked".into())))
            })
            .collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    let latency = Summary::of(&all);
    Ok(Row {
        system,
        writers,
        commits: all.len() as u64,
        seconds: duration.as_secs_f64(),
        p50_ms: ms(latency.median),
        p99_ms: ms(latency.p99),
    })
}

fn kvlite(kv: Kv) -> Result<Vfs, BenchError> {
    let engine = Engine::new(kv, EngineConfig::default(), &mut Registry::default());
    crate::sqlite::register(
        Arc::new(LocalTransport::new(engine)),
        VfsConfig::default().cache_bytes,
    )
}

/// Run the suite in `dir` (empty, on the disk to measure); PostgreSQL too
/// when `postgres_url` is given.
pub fn run(dir: &Path, postgres_url: Option<&str>, quick: bool) -> Result<Vec<Row>, BenchError> {
    let duration = Duration::from_millis(if quick { 300 } else { 3000 });
    let mut rows = Vec::new();
    for &w in &WRITERS {
        let files = dir.join(format!("sqlite-{w}"));
        std::fs::create_dir_all(&files)?;
        rows.push(measure("sqlite_wal", w, duration, &|i| {
            let c = Connection::open(files.join(format!("db{i}.sqlite"))).map_err(sql)?;
            c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
                .map_err(sql)?;
            Ok(c)
        })?);
    }
    let mut systems = vec![(
        "kvlite_embedded",
        kvlite(Kv::open_embedded(&dir.join("embedded"))?)?,
    )];
    if let Some(url) = postgres_url {
        let table = format!("kvlite_bench_many_{}", std::process::id());
        systems.push((
            "kvlite_postgres",
            kvlite(Kv::connect_postgres(url, &table)?)?,
        ));
    }
    for (system, vfs) in &systems {
        for &w in &WRITERS {
            rows.push(measure(system, w, duration, &|i| {
                vfs.open(&format!("w{w}-{i}"))
                    .map_err(|e| BenchError::Other(e.to_string()))
            })?);
        }
    }
    Ok(rows)
}

pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<18} {:>7} {:>10} {:>12} {:>9} {:>9}\n",
        "system", "writers", "commits/s", "vs 1 writer", "p50 ms", "p99 ms"
    );
    for r in rows {
        let one = rows
            .iter()
            .find(|o| o.system == r.system && o.writers == 1)
            .map_or(1.0, Row::per_second);
        out += &format!(
            "{:<18} {:>7} {:>10.0} {:>11.1}x {:>9.3} {:>9.3}\n",
            r.system,
            r.writers,
            r.per_second(),
            r.per_second() / one.max(1e-9),
            r.p50_ms,
            r.p99_ms
        );
    }
    out
}
