//! The storage engine alone on the embedded store: fast-path commit latency
//! by size, one large commit, and page reads with a cached and an uncached
//! page index.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kvlite_engine::{CommitRequest, Engine, EngineConfig, PAGE_SIZE, Preload};
use kvlite_kv::Kv;
use prometheus_client::registry::Registry;

use crate::BenchError;
use crate::stats::Summary;

#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub summary: Summary,
    /// Payload per operation, for throughput.
    pub bytes: u64,
}

/// SQLite-like page contents: a header, varied records, free space.
fn page(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_SIZE];
    let used = rng.usize(1000..PAGE_SIZE);
    for b in p.iter_mut().take(used) {
        *b = if rng.u8(..) < 96 {
            rng.u8(..)
        } else {
            b'a' + rng.u8(..8)
        };
    }
    p
}

fn engine(dir: &Path) -> Result<Arc<Engine>, BenchError> {
    let kv = Kv::open_embedded(dir)?;
    Ok(Engine::new(
        kv,
        EngineConfig::default(),
        &mut Registry::default(),
    ))
}

/// Run the engine benchmark in `dir` (an empty directory on the disk to
/// measure). `quick` cuts repetitions for a smoke run.
pub fn run(dir: &Path, quick: bool) -> Result<Vec<Row>, BenchError> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut rows = Vec::new();
    let e = engine(dir)?;
    let db = "bench";
    let o = e.open(db, &Preload::default())?;
    let (g, mut head, mut size) = (o.generation, o.head_txid, 0u32);
    let scale = if quick { 10 } else { 1 };
    for (pages, n) in [(1usize, 300), (16, 200), (256, 60), (1280, 20)] {
        let n = (n / scale).max(3);
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = rng.u32(1..=size.max(1));
            let data: Vec<(u32, Vec<u8>)> = (0..pages as u32)
                .map(|i| (start + i, page(&mut rng)))
                .collect();
            let refs: Vec<(u32, &[u8])> = data.iter().map(|(p, d)| (*p, d.as_slice())).collect();
            let new_size = size.max(start + pages as u32 - 1);
            let t = Instant::now();
            let r = e.commit(&CommitRequest {
                db,
                generation: g,
                expected_head: head,
                new_size,
                commit_id: rng.u64(..),
                pages: &refs,
            })?;
            samples.push(t.elapsed());
            (head, size) = (r.txid, new_size);
        }
        rows.push(Row {
            name: format!("fast commit, {pages} pages"),
            summary: Summary::of(&samples),
            bytes: (pages * PAGE_SIZE) as u64,
        });
    }

    // One large commit of 64 MiB (16384 pages in 8 MiB parts).
    let mut samples = Vec::new();
    for _ in 0..(if quick { 1 } else { 3 }) {
        let data: Vec<(u32, Vec<u8>)> = (1..=16_384u32).map(|p| (p, page(&mut rng))).collect();
        let refs: Vec<(u32, &[u8])> = data.iter().map(|(p, d)| (*p, d.as_slice())).collect();
        let new_size = size.max(16_384);
        let t = Instant::now();
        let txid = e.commit_begin(db, g, head, new_size)?;
        let per_part = e.config().fast_path_limit as usize / PAGE_SIZE;
        let mut parts = 0;
        for part in refs.chunks(per_part) {
            e.commit_chunk(db, g, txid, parts, part)?;
            parts += 1;
        }
        let r = e.commit_finish(db, g, head, txid, parts, rng.u64(..))?;
        samples.push(t.elapsed());
        (head, size) = (r.txid, new_size);
    }
    rows.push(Row {
        name: "large commit, 64 MiB".into(),
        summary: Summary::of(&samples),
        bytes: 64 << 20,
    });

    // Reads: cached page index (warm engine), uncached (fresh engine each time).
    for (label, batch) in [("1 page", 1u32), ("64 pages", 64)] {
        let n = (2000 / scale / batch as usize).max(20);
        let mut warm = Vec::with_capacity(n);
        for _ in 0..n {
            let first = rng.u32(1..=size - batch);
            let pgnos: Vec<u32> = (first..first + batch).collect();
            let t = Instant::now();
            let got = e.get_pages(db, g, &pgnos)?;
            warm.push(t.elapsed());
            if got.iter().any(Option::is_none) {
                return Err(BenchError::Other("missing page".into()));
            }
        }
        rows.push(Row {
            name: format!("get_pages {label}, cached page index"),
            summary: Summary::of(&warm),
            bytes: batch as u64 * PAGE_SIZE as u64,
        });
    }
    drop(e);
    for (label, batch) in [("1 page", 1u32), ("64 pages", 64)] {
        let mut cold = Vec::new();
        for _ in 0..(if quick { 3 } else { 10 }) {
            let fresh = engine(dir)?;
            let first = rng.u32(1..=size - batch);
            let pgnos: Vec<u32> = (first..first + batch).collect();
            let t = Instant::now();
            fresh.get_pages(db, g, &pgnos)?;
            cold.push(t.elapsed());
        }
        rows.push(Row {
            name: format!("get_pages {label}, uncached page index"),
            summary: Summary::of(&cold),
            bytes: batch as u64 * PAGE_SIZE as u64,
        });
    }
    Ok(rows)
}

/// A readable table of the rows.
pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<42} {:>6} {:>11} {:>11} {:>11} {:>10}\n",
        "engine (embedded store)", "runs", "median ms", "p90 ms", "max ms", "MB/s"
    );
    for r in rows {
        let s = &r.summary;
        let mbps = r.bytes as f64 / s.median.as_secs_f64().max(1e-9) / 1e6;
        out.push_str(&format!(
            "{:<42} {:>6} {:>11.3} {:>11.3} {:>11.3} {:>10.0}\n",
            r.name,
            s.runs,
            crate::stats::ms(s.median),
            crate::stats::ms(s.p90),
            crate::stats::ms(s.max),
            mbps
        ));
    }
    out
}
