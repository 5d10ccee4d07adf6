//! Forks and restores against the database's size: an empty database and
//! one of 1 GiB (16 MiB with `--quick`) of incompressible pages, compacted,
//! on the embedded store (and PostgreSQL when given): each forked and
//! restored several times. A fork and a restore are metadata: their time
//! must not grow with the size. Also the first read of a page through a
//! fork (cold caches), which reads through to the source.

use std::path::Path;
use std::time::Instant;

use kvlite_api::{PAGE_SIZE, ReadPoint};
use kvlite_engine::{Engine, EngineConfig};
use kvlite_kv::Kv;
use prometheus_client::registry::Registry;

use crate::BenchError;
use crate::stats::{Summary, ms};

/// One measured operation on one database.
#[derive(Debug, Clone)]
pub struct Row {
    pub system: String,
    pub size_mib: u64,
    pub op: &'static str,
    pub times: Summary,
}

/// Repetitions of each operation.
const RUNS: usize = 7;

/// Pages of deterministic noise (LZ4 cannot shrink them), so the stored
/// database is as large as its pages.
fn noise_page(pgno: u32, seed: u64) -> Vec<u8> {
    let mut x = (u64::from(pgno) << 20) ^ seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut page = vec![0u8; PAGE_SIZE];
    for chunk in page.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (b, v) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *b = v;
        }
    }
    page
}

/// Fill database `db` with `pages` pages in large commits, compact it,
/// and make one more small commit (the point restores go back to).
fn build(engine: &Engine, db: &str, pages: u32) -> Result<u64, BenchError> {
    let o = engine.open(db, &Default::default())?;
    let mut head = o.head_txid;
    const PER_COMMIT: u32 = 32_768; // 128 MiB
    const PER_PART: u32 = 1024; // 4 MiB
    let mut first = 1;
    while first <= pages {
        let last = (first + PER_COMMIT - 1).min(pages);
        let txid = engine.commit_begin(db, o.generation, head, last)?;
        let mut part = 0;
        let mut p = first;
        while p <= last {
            let end = (p + PER_PART - 1).min(last);
            let data: Vec<(u32, Vec<u8>)> = (p..=end).map(|n| (n, noise_page(n, 1))).collect();
            let refs: Vec<(u32, &[u8])> = data.iter().map(|(n, d)| (*n, d.as_slice())).collect();
            engine.commit_chunk(db, o.generation, txid, part, &refs)?;
            part += 1;
            p = end + 1;
        }
        head = engine
            .commit_finish(db, o.generation, head, txid, part, fastrand::u64(..))?
            .txid;
        first = last + 1;
    }
    engine.compact(db)?;
    if pages > 0 {
        let page = noise_page(1, 2);
        head = engine
            .commit(&kvlite_api::CommitRequest {
                db,
                generation: o.generation,
                expected_head: head,
                new_size: pages,
                commit_id: fastrand::u64(..),
                pages: &[(1, page.as_slice())],
            })?
            .txid;
    }
    Ok(head)
}

fn timed(mut op: impl FnMut(usize) -> Result<(), BenchError>) -> Result<Summary, BenchError> {
    let mut samples = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let t = Instant::now();
        op(i)?;
        samples.push(t.elapsed());
    }
    Ok(Summary::of(&samples))
}

fn measure(system: &str, kv: Kv, pages: u32, rows: &mut Vec<Row>) -> Result<(), BenchError> {
    let engine = Engine::new(kv, EngineConfig::default(), &mut Registry::default());
    let db = format!("source-{pages}");
    let head = build(&engine, &db, pages)?;
    let size_mib = (u64::from(pages) * PAGE_SIZE as u64) >> 20;
    let mut row = |op, times| {
        rows.push(Row {
            system: system.to_string(),
            size_mib,
            op,
            times,
        })
    };
    row(
        "fork",
        timed(|i| {
            engine.fork(&db, &format!("{db}-fork-{i}"), None)?;
            Ok(())
        })?,
    );
    if pages > 0 {
        // The first read through a fork, nothing cached: the fork's lookups
        // and then the source's.
        let mut samples = Vec::with_capacity(RUNS);
        for i in 0..RUNS {
            let fork = format!("{db}-fork-{i}");
            let o = engine.open(&fork, &kvlite_api::Preload::default())?;
            engine.clear_caches();
            let t = Instant::now();
            engine.get_pages(&fork, o.generation, &[pages / 2])?;
            samples.push(t.elapsed());
        }
        row("first read via fork", Summary::of(&samples));
    }
    for i in 0..RUNS {
        engine.delete(&format!("{db}-fork-{i}"))?;
    }
    // Restores back to the commit before the last, and back again.
    let before = head.saturating_sub(1).max(1);
    row(
        "restore",
        timed(|i| {
            let point = if i % 2 == 0 { before } else { head };
            engine.restore(&db, ReadPoint::Txid(point))?;
            Ok(())
        })?,
    );
    Ok(())
}

/// Run it in `dir` (embedded) and on PostgreSQL at `postgres` if given.
pub fn run(dir: &Path, postgres: Option<&str>, quick: bool) -> Result<Vec<Row>, BenchError> {
    let big = if quick { 4096 } else { 262_144 }; // 16 MiB or 1 GiB
    let mut rows = Vec::new();
    for pages in [0, big] {
        let sub = dir.join(format!("embedded-{pages}"));
        std::fs::create_dir_all(&sub)?;
        let started = Instant::now();
        measure("embedded", Kv::open_embedded(&sub)?, pages, &mut rows)?;
        eprintln!(
            "[{:>7.1}s] embedded, {} MiB",
            started.elapsed().as_secs_f64(),
            (u64::from(pages) * PAGE_SIZE as u64) >> 20
        );
    }
    if let Some(url) = postgres {
        for pages in [0, big.min(65_536)] {
            let table = format!("bench_history_{}_{pages}", std::process::id());
            measure(
                "postgres",
                Kv::connect_postgres(url, &table)?,
                pages,
                &mut rows,
            )?;
        }
    }
    Ok(rows)
}

pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:>10} {:>10} {:>10} {:>10}\n",
        "history", "system", "size MiB", "median ms", "min ms", "max ms"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:<10} {:>10} {:>10.3} {:>10.3} {:>10.3}\n",
            r.op,
            r.system,
            r.size_mib,
            ms(r.times.median),
            ms(r.times.min),
            ms(r.times.max),
        ));
    }
    out
}
