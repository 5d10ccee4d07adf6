//! Compaction under a steady write load: random single-row updates of a
//! ~50 MiB table through the VFS on the embedded store, first with no
//! compaction, then one full pass, then with the background compactor on —
//! all without history (retention zero: what compaction itself reclaims) —
//! and then the same background-compacted load on a second store keeping a
//! 24 h history window, which the whole run fits in: its storage beyond the
//! run without history is what each update costs in history, and what a full
//! window of this load would hold. Reports commit latency, read
//! amplification (blobs fetched per page read by a cold full scan) and
//! storage used against the live data size.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvlite_engine::LocalTransport;
use kvlite_engine::{Engine, EngineConfig};
use kvlite_kv::Kv;
use kvlite_vfs::{Vfs, VfsConfig};
use prometheus_client::registry::Registry;

use crate::BenchError;
use crate::stats::{Summary, ms};

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    /// Per-update commit latency (None for a phase without updates).
    pub commits: Option<Summary>,
    pub duration: Duration,
    pub deltas: u64,
    pub page_index_entries: u64,
    pub used_bytes: u64,
    pub live_bytes: u64,
    /// Blobs fetched per page by a cold full scan.
    pub blobs_per_page: f64,
    pub passes: u64,
    /// Bytes kept only for reads in the past (kept versions, bases, pins;
    /// the deltas they name are in `used_bytes`).
    pub history_bytes: u64,
    /// Updates the phase made.
    pub updates: u64,
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Other(e.to_string())
}

/// Run it in `dir`. `quick` uses 10,000 updates per phase instead of 100,000.
pub fn run(dir: &Path, quick: bool) -> Result<Vec<Phase>, BenchError> {
    let started = Instant::now();
    let log = |what: &str| eprintln!("[{:>7.1}s] {what}", started.elapsed().as_secs_f64());
    let updates = if quick { 10_000 } else { 100_000 };
    let mut phases = Vec::new();
    {
        let load = Load::new(dir, Duration::ZERO)?;
        phases.push(load.measure("start (compacted)", None, Duration::ZERO, 0)?);
        log("measured the start");
        let (s, d) = load.update(updates)?;
        phases.push(load.measure(
            &format!("{updates} updates, no compaction"),
            Some(s),
            d,
            updates as u64,
        )?);
        let t = Instant::now();
        load.engine.compact(DB)?;
        phases.push(load.measure("one full pass", None, t.elapsed(), 0)?);
        let compactor = load.engine.start_compactor();
        let (s, d) = load.update(updates)?;
        compactor.stop();
        phases.push(load.measure(
            &format!("{updates} updates, background compaction"),
            Some(s),
            d,
            updates as u64,
        )?);
    }
    log("measured without history");
    let history = dir.join("with-history");
    std::fs::create_dir_all(&history)?;
    let load = Load::new(&history, kvlite_engine::DEFAULT_RETENTION)?;
    let compactor = load.engine.start_compactor();
    let (s, d) = load.update(updates)?;
    compactor.stop();
    phases.push(load.measure(
        &format!("{updates} updates, bg compaction, 24 h history"),
        Some(s),
        d,
        updates as u64,
    )?);
    log("measured with history");
    Ok(phases)
}

const DB: &str = "steady";
const ROWS: i64 = 100_000;

/// A ~50 MiB table on its own embedded store and engine, updated one
/// random row per commit.
struct Load {
    engine: Arc<Engine>,
    _vfs: Vfs,
    conn: rusqlite::Connection,
    rng: std::cell::RefCell<fastrand::Rng>,
}

impl Load {
    fn new(dir: &Path, retention: Duration) -> Result<Load, BenchError> {
        let kv = Kv::open_embedded(dir)?;
        let mut registry = Registry::default();
        let config = EngineConfig {
            history_retention: retention,
            ..EngineConfig::default()
        };
        let engine = Engine::new(kv, config, &mut registry);
        let vfs = Vfs::register(
            &format!(
                "kvlite-bench-compaction-{}-{}",
                std::process::id(),
                retention.as_secs()
            ),
            Arc::new(LocalTransport::new(engine.clone())),
            VfsConfig::default(),
        )
        .map_err(err)?;
        let conn = vfs.open(DB).map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO t SELECT i, randomblob(500) FROM n;",
        )
        .map_err(err)?;
        engine.compact(DB)?;
        Ok(Load {
            engine,
            _vfs: vfs,
            conn,
            rng: std::cell::RefCell::new(fastrand::Rng::with_seed(11)),
        })
    }

    fn update(&self, n: usize) -> Result<(Summary, Duration), BenchError> {
        let mut stmt = self
            .conn
            .prepare("UPDATE t SET v = randomblob(500) WHERE id = ?")
            .map_err(err)?;
        let mut samples = Vec::with_capacity(n);
        let started = Instant::now();
        let mut rng = self.rng.borrow_mut();
        for _ in 0..n {
            let id = rng.i64(1..=ROWS);
            let t = Instant::now();
            stmt.execute([id]).map_err(err)?;
            samples.push(t.elapsed());
        }
        Ok((Summary::of(&samples), started.elapsed()))
    }

    fn measure(
        &self,
        name: &str,
        commits: Option<Summary>,
        duration: Duration,
        updates: u64,
    ) -> Result<Phase, BenchError> {
        let engine = &self.engine;
        let stat = engine.stat(DB)?;
        // A cold scan: a second engine on the same store (no decoded-delta
        // cache, no page-index memo) behind a fresh VFS (empty page cache).
        // It reads only: it never takes the database over.
        let cold = Engine::new(
            engine.kv().clone(),
            EngineConfig::default(),
            &mut Registry::default(),
        );
        // Requests aligned to shards, so no shard is fetched twice.
        for start in (0..=stat.size_pages).step_by(1024) {
            let chunk: Vec<u32> = (start.max(1)..=(start + 1023).min(stat.size_pages)).collect();
            if !chunk.is_empty() {
                cold.get_pages(DB, stat.generation, &chunk)?;
            }
        }
        let pages = stat.size_pages.max(1) as u64;
        let blobs = cold.metrics().blobs_fetched.get();
        Ok(Phase {
            name: name.to_string(),
            commits,
            duration,
            deltas: stat.deltas,
            page_index_entries: stat.page_index_entries,
            used_bytes: stat.used_bytes,
            live_bytes: stat.size_pages as u64 * 4096,
            blobs_per_page: blobs as f64 / pages as f64,
            passes: engine
                .metrics()
                .compaction_passes
                .get_or_create(&kvlite_engine::metrics::ResultLabel {
                    result: "ok".into(),
                })
                .get(),
            history_bytes: stat.history_bytes,
            updates,
        })
    }
}

/// What the history run's storage says a full window of this load holds:
/// bytes per update beyond the same load without history, and that times a
/// day of updates at the run's rate.
pub fn history_cost(phases: &[Phase]) -> Option<(f64, f64, f64)> {
    let without = phases
        .iter()
        .find(|p| p.name.ends_with("background compaction"))?;
    let with = phases.iter().find(|p| p.name.ends_with("24 h history"))?;
    let updates = with.updates.max(1) as f64;
    // Both runs start from the same compacted table; the no-history run
    // also carries the first phase's updates, folded away.
    let per_update = (with.used_bytes as f64 - without.used_bytes as f64).max(0.0) / updates;
    let rate = updates / with.duration.as_secs_f64().max(1e-9);
    Some((per_update, rate, per_update * rate * 86_400.0))
}

pub fn render(phases: &[Phase]) -> String {
    let mut out = format!(
        "{:<40} {:>10} {:>10} {:>10} {:>8} {:>9} {:>10} {:>9} {:>12} {:>6}\n",
        "compaction (embedded store)",
        "p50 ms",
        "p99 ms",
        "total s",
        "deltas",
        "pidx",
        "used MiB",
        "used/live",
        "blobs/page",
        "passes"
    );
    for p in phases {
        let (p50, p99) = p.commits.map_or(("-".into(), "-".into()), |s| {
            (format!("{:.3}", ms(s.median)), format!("{:.3}", ms(s.p99)))
        });
        out.push_str(&format!(
            "{:<40} {:>10} {:>10} {:>10.1} {:>8} {:>9} {:>10.1} {:>9.2} {:>12.4} {:>6}\n",
            p.name,
            p50,
            p99,
            p.duration.as_secs_f64(),
            p.deltas,
            p.page_index_entries,
            p.used_bytes as f64 / (1 << 20) as f64,
            p.used_bytes as f64 / p.live_bytes.max(1) as f64,
            p.blobs_per_page,
            p.passes,
        ));
    }
    if let Some((per_update, rate, day)) = history_cost(phases) {
        out.push_str(&format!(
            "history: {:.0} bytes per update beyond the run without history; a 24 h window of this load \
             ({rate:.0} updates/s) holds about {:.1} GiB, of 1 update/s {:.2} GiB\n",
            per_update,
            day / (1u64 << 30) as f64,
            per_update * 86_400.0 / (1u64 << 30) as f64,
        ));
    }
    out
}
