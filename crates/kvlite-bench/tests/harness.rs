//! The benchmark harness runs every workload on every system and reports
//! in every format (at a tiny scale: timings here mean nothing).

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kvlite_bench::sqlite::{BenchConfig, SystemId, Workload, render_json, render_table, run};

#[test]
fn every_workload_runs_on_every_system_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = BenchConfig {
        dir: dir.path().join("scratch"),
        quick: true,
        workloads: Workload::ALL.to_vec(),
        postgres_url: Some(kvlite_testkit::PgCluster::shared().expect("cluster").url()),
        latency: std::time::Duration::from_millis(1),
        runs: None,
        tiny: true,
    };
    let rows = run(&config, &|_, _, _| {}).expect("bench");
    let on_v1 = Workload::ALL.iter().filter(|w| w.runs_on_v1()).count();
    assert_eq!(on_v1, 5);
    assert_eq!(
        rows.len(),
        Workload::ALL.len() * 5 + on_v1,
        "11 workloads x 5 systems, and the transaction workloads on v1"
    );
    for m in rows.iter().filter(|m| m.system == SystemId::KvliteV1) {
        assert!(m.workload.runs_on_v1(), "{m:?}");
        assert!(m.ratio_v1_to_v2.is_some_and(|r| r > 0.0), "{m:?}");
    }
    // One small commit: one engine round trip on v2, a KV transaction per
    // journal and file operation on v1.
    let v1_rtt = rows
        .iter()
        .find(|m| m.workload == Workload::EmptyRtt && m.system == SystemId::KvliteV1)
        .expect("v1 row");
    assert!(v1_rtt.round_trips.is_some_and(|t| t >= 4), "{v1_rtt:?}");
    for m in &rows {
        assert!(m.ratio_to_best_sqlite.is_some_and(|r| r > 0.0), "{m:?}");
        assert_eq!(m.round_trips.is_none(), m.system.is_sqlite(), "{m:?}");
    }
    // A one-row commit through the server is one round trip.
    let rtt = rows
        .iter()
        .find(|m| m.workload == Workload::EmptyRtt && m.system == SystemId::KvliteServer)
        .expect("row");
    assert_eq!(rtt.round_trips, Some(1));
    let best: Vec<_> = rows
        .iter()
        .filter(|m| m.system.is_sqlite() && m.ratio_to_best_sqlite == Some(1.0))
        .collect();
    assert_eq!(
        best.len(),
        Workload::ALL.len(),
        "one best SQLite mode per workload"
    );
    let table = render_table(&rows);
    assert!(table.contains("txn_256mib") && table.contains("kvlite_postgres"));
    for line in render_json(&rows).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        for key in [
            "workload",
            "system",
            "runs",
            "median_ms",
            "min_ms",
            "max_ms",
            "ratio_to_best_sqlite",
            "round_trips",
            "ratio_v1_to_v2",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let report = dir.path().join("report.md");
    kvlite_bench::report::write(&rows, &report, "test run").expect("report");
    let md = std::fs::read_to_string(&report).expect("md");
    assert!(md.contains("| txn_5mib | kvlite_embedded |") && md.contains("report.svg"));
    let svg = std::fs::read_to_string(dir.path().join("report.svg")).expect("svg");
    assert!(
        svg.contains("<svg") && svg.contains("kvlite_server"),
        "{}",
        &svg[..svg.len().min(300)]
    );
}
