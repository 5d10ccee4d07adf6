//! Engine metrics, registered in a caller-supplied Prometheus registry.
//! Buckets fit each quantity: latencies from 20 µs to ~20 s, page counts from
//! 1 to 1M, byte sizes from 4 KiB to 4 GiB.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum CommitPath {
    Fast,
    Large,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum CommitPhase {
    /// Reading META and checking generation, head and the commit id.
    Fence,
    /// LTX encoding of the dirty pages.
    Encode,
    /// Staging page-index entries (and checking which are new).
    PageIndex,
    /// The KV commit itself (write + fsync / round trip).
    KvWrite,
}

/// The steps of a v1 → v2 migration, for counting where one failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum MigrationPhase {
    /// Taking (or waiting for) the durable lease.
    Lease,
    /// Reading the v1 file records.
    Read,
    /// Rolling back a hot journal, checkpointing a WAL.
    Recover,
    /// Header and integrity checks of the recovered image.
    Verify,
    /// Rewriting a database of another page size with 4 KiB pages.
    Convert,
    /// Writing the pages as v2 (large commits).
    Copy,
    /// The commit that publishes the v2 head and switches the origin.
    Switch,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
}

/// Label values in Prometheus style (snake case), not Rust's.
macro_rules! label_values {
    ($($ty:ident { $($variant:ident => $text:literal),* })*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                use std::fmt::Write;
                encoder.write_str(match self { $($ty::$variant => $text),* })
            }
        }
    )*};
}

label_values! {
    CommitPath { Fast => "fast", Large => "large" }
    CommitPhase { Fence => "fence", Encode => "encode", PageIndex => "page_index", KvWrite => "kv_write" }
    CacheResult { Hit => "hit", Miss => "miss" }
    MigrationPhase {
        Lease => "lease", Read => "read", Recover => "recover", Verify => "verify",
        Convert => "convert", Copy => "copy", Switch => "switch"
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MigrationPhaseLabel {
    pub phase: MigrationPhase,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: CommitPath,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: CommitPhase,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    pub result: CacheResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(20e-6, 2.0, 20))
}

fn pages() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 21))
}

fn bytes() -> Histogram {
    Histogram::new(exponential_buckets(4096.0, 2.0, 21))
}

#[derive(Clone)]
pub struct EngineMetrics {
    pub commit_seconds: Family<PathLabel, Histogram>,
    pub commit_phase_seconds: Family<PhaseLabel, Histogram>,
    pub commit_pages: Histogram,
    pub commit_bytes: Histogram,
    pub get_pages_seconds: Histogram,
    pub get_pages_pages: Histogram,
    /// Distinct blobs (delta parts, shards) fetched and decoded for reads.
    pub blobs_fetched: Counter,
    pub page_index_cache: Family<CacheLabel, Counter>,
    pub takeovers: Counter,
    pub fence_rejections: Counter,
    pub quota_rejections: Counter,
    pub compaction_passes: Family<ResultLabel, Counter>,
    pub compaction_seconds: Histogram,
    pub pages_folded: Counter,
    pub deltas_deleted: Counter,
    pub shards_written: Counter,
    /// Deltas a database had when a pass started.
    pub backlog_deltas: Histogram,
    /// head txid - materialized txid when a pass started.
    pub lag_txids: Histogram,
    /// Databases waiting for or running a background pass.
    pub compaction_queue: prometheus_client::metrics::gauge::Gauge,
    pub migration: MigrationMetrics,
}

/// v1 → v2 migrations.
#[derive(Clone)]
pub struct MigrationMetrics {
    /// Jobs started (each holding the lease).
    pub attempts: Counter,
    pub successes: Counter,
    pub failures: Family<MigrationPhaseLabel, Counter>,
    /// Duration of a successful job.
    pub seconds: Histogram,
    /// 4 KiB pages a successful job wrote.
    pub pages: Histogram,
    /// Pages written so far by all jobs (progress while one runs).
    pub pages_copied: Counter,
    pub journals_recovered: Counter,
    pub wals_checkpointed: Counter,
    /// Jobs running in this process.
    pub running: prometheus_client::metrics::gauge::Gauge,
}

impl MigrationMetrics {
    fn new() -> Self {
        MigrationMetrics {
            // 10 ms to ~3 hours.
            seconds: Histogram::new(exponential_buckets(0.01, 2.0, 21)),
            // 1 page to 16M pages (64 GiB).
            pages: Histogram::new(exponential_buckets(1.0, 4.0, 13)),
            attempts: Counter::default(),
            successes: Counter::default(),
            failures: Family::default(),
            pages_copied: Counter::default(),
            journals_recovered: Counter::default(),
            wals_checkpointed: Counter::default(),
            running: Default::default(),
        }
    }

    pub fn failure(&self, phase: MigrationPhase) {
        self.failures
            .get_or_create(&MigrationPhaseLabel { phase })
            .inc();
    }

    pub fn failures_in(&self, phase: MigrationPhase) -> u64 {
        self.failures
            .get_or_create(&MigrationPhaseLabel { phase })
            .get()
    }
}

impl EngineMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = EngineMetrics {
            commit_seconds: Family::new_with_constructor(latency),
            commit_phase_seconds: Family::new_with_constructor(latency),
            commit_pages: pages(),
            commit_bytes: bytes(),
            get_pages_seconds: latency(),
            get_pages_pages: pages(),
            blobs_fetched: Counter::default(),
            page_index_cache: Family::default(),
            takeovers: Counter::default(),
            fence_rejections: Counter::default(),
            quota_rejections: Counter::default(),
            compaction_passes: Family::default(),
            compaction_seconds: Histogram::new(exponential_buckets(1e-3, 2.0, 18)),
            pages_folded: Counter::default(),
            deltas_deleted: Counter::default(),
            shards_written: Counter::default(),
            backlog_deltas: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            lag_txids: Histogram::new(exponential_buckets(1.0, 2.0, 20)),
            compaction_queue: Default::default(),
            migration: MigrationMetrics::new(),
        };
        let r = registry.sub_registry_with_prefix("kvlite_engine");
        r.register(
            "commit_seconds",
            "Commit latency by path",
            m.commit_seconds.clone(),
        );
        r.register(
            "commit_phase_seconds",
            "Time in each phase of a fast-path commit",
            m.commit_phase_seconds.clone(),
        );
        r.register(
            "commit_pages",
            "Dirty pages per commit",
            m.commit_pages.clone(),
        );
        r.register(
            "commit_bytes",
            "Raw dirty bytes per commit",
            m.commit_bytes.clone(),
        );
        r.register(
            "get_pages_seconds",
            "get_pages latency",
            m.get_pages_seconds.clone(),
        );
        r.register(
            "get_pages_pages",
            "Pages per get_pages request",
            m.get_pages_pages.clone(),
        );
        r.register(
            "page_index_cache",
            "Page-index cache lookups by result",
            m.page_index_cache.clone(),
        );
        r.register(
            "takeovers",
            "Database takeovers (opens)",
            m.takeovers.clone(),
        );
        r.register(
            "fence_rejections",
            "Requests rejected by the generation/head fence",
            m.fence_rejections.clone(),
        );
        r.register(
            "quota_rejections",
            "Commits rejected for exceeding the quota",
            m.quota_rejections.clone(),
        );
        r.register(
            "compaction_passes",
            "Compaction passes by result",
            m.compaction_passes.clone(),
        );
        r.register(
            "compaction_seconds",
            "Compaction pass duration",
            m.compaction_seconds.clone(),
        );
        r.register(
            "compaction_pages_folded",
            "Pages folded into shards",
            m.pages_folded.clone(),
        );
        r.register(
            "compaction_deltas_deleted",
            "Deltas deleted by compaction",
            m.deltas_deleted.clone(),
        );
        r.register(
            "compaction_shards_written",
            "Shards written by compaction",
            m.shards_written.clone(),
        );
        r.register(
            "compaction_backlog_deltas",
            "Deltas of a database when a compaction pass starts",
            m.backlog_deltas.clone(),
        );
        r.register(
            "compaction_lag_txids",
            "Transactions not yet folded when a compaction pass starts",
            m.lag_txids.clone(),
        );
        r.register(
            "compaction_queue",
            "Databases waiting for or running a background compaction",
            m.compaction_queue.clone(),
        );
        let mg = &m.migration;
        r.register(
            "migration_attempts",
            "v1 to v2 migration jobs started",
            mg.attempts.clone(),
        );
        r.register(
            "migration_successes",
            "v1 to v2 migrations finished",
            mg.successes.clone(),
        );
        r.register(
            "migration_failures",
            "v1 to v2 migrations failed, by the phase that failed",
            mg.failures.clone(),
        );
        r.register(
            "migration_seconds",
            "Duration of a successful v1 to v2 migration",
            mg.seconds.clone(),
        );
        r.register(
            "migration_pages",
            "4 KiB pages written by a successful v1 to v2 migration",
            mg.pages.clone(),
        );
        r.register(
            "migration_pages_copied",
            "4 KiB pages written by v1 to v2 migrations so far",
            mg.pages_copied.clone(),
        );
        r.register(
            "migration_journals_recovered",
            "Hot rollback journals rolled back by migrations",
            mg.journals_recovered.clone(),
        );
        r.register(
            "migration_wals_checkpointed",
            "WAL files checkpointed into the database by migrations",
            mg.wals_checkpointed.clone(),
        );
        r.register(
            "migrations_running",
            "v1 to v2 migrations running in this process",
            mg.running.clone(),
        );
        m
    }

    pub fn compaction(&self, result: &str, d: Duration) {
        self.compaction_passes
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
        self.compaction_seconds.observe(d.as_secs_f64());
    }

    pub fn phase(&self, phase: CommitPhase, d: Duration) {
        self.commit_phase_seconds
            .get_or_create(&PhaseLabel { phase })
            .observe(d.as_secs_f64());
    }

    pub fn cache(&self, result: CacheResult) {
        self.page_index_cache
            .get_or_create(&CacheLabel { result })
            .inc();
    }
}
