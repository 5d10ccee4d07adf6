//! kvlite's benchmarks. Timings are only meaningful from release builds;
//! each reports medians and spread, and (for SQLite workloads) ratios
//! against plain SQLite measured in the same run.

pub mod compaction;
pub mod engine;
pub mod history;
pub mod many;
pub mod migration;
pub mod report;
pub mod rtt;
pub mod scale;
pub mod sqlite;
pub mod stats;

/// What a benchmark failed on.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("store: {0}")]
    Kv(#[from] kvlite_kv::KvError),
    #[error("engine: {0}")]
    Engine(#[from] kvlite_api::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}
