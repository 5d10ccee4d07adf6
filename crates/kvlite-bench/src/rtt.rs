//! Round trips: the same tiny requests in process and through a loopback
//! `kvlite serve`, so the server and network overhead shows by difference.

use std::path::Path;
use std::time::{Duration, Instant};

use kvlite_api::{CommitRequest, Transport};
use kvlite_client::{RemoteOptions, RemoteTransport};
use kvlite_engine::LocalTransport;
use kvlite_engine::{Engine, EngineConfig, PAGE_SIZE, Preload};
use kvlite_kv::Kv;
use prometheus_client::registry::Registry;

use crate::BenchError;
use crate::stats::{Summary, us};

#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub local: Option<Summary>,
    pub remote: Summary,
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Other(e.to_string())
}

fn time(n: usize, mut f: impl FnMut() -> Result<(), BenchError>) -> Result<Summary, BenchError> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(Summary::of(&samples))
}

/// Measure in `dir` (the embedded store of both the local engine and the
/// server). `latency` is added one way in each direction on the network.
pub fn run(dir: &Path, quick: bool, latency: Duration) -> Result<Vec<Row>, BenchError> {
    let n = if quick { 300 } else { 3000 };
    let local_engine = Engine::new(
        Kv::open_embedded(&dir.join("local"))?,
        EngineConfig::default(),
        &mut Registry::default(),
    );
    // Like the server's: both compact in the background, so the difference
    // is the server and the network, not compaction passes.
    let compactor = local_engine.start_compactor();
    let local = LocalTransport::new(local_engine);
    let (addr, _server, _) = crate::sqlite::start_server(Kv::open_embedded(&dir.join("server"))?)?;
    let remote = RemoteTransport::connect(
        &format!("ws://{addr}"),
        None,
        RemoteOptions {
            added_latency: latency,
            ..RemoteOptions::default()
        },
    )
    .map_err(err)?;
    let page = vec![7u8; PAGE_SIZE];
    let mut rows = Vec::new();
    rows.push(Row {
        name: "ping (no storage work)",
        local: None,
        remote: time(n, || remote.ping().map_err(err))?,
    });
    for (label, t) in [
        ("local", &local as &dyn Transport),
        ("remote", &remote as &dyn Transport),
    ] {
        let o = t.open("rtt", &Preload::default()).map_err(err)?;
        let mut head = o.head_txid;
        // One page written, so reads below hit a cached page index.
        let r = t
            .commit(&CommitRequest {
                db: "rtt",
                generation: o.generation,
                expected_head: head,
                new_size: 1,
                commit_id: fastrand::u64(..),
                pages: &[(1, &page)],
            })
            .map_err(err)?;
        head = r.txid;
        let read = time(n, || {
            t.get_pages("rtt", o.generation, &[1])
                .map(|_| ())
                .map_err(err)
        })?;
        let commit = time(n / 3, || {
            let r = t
                .commit(&CommitRequest {
                    db: "rtt",
                    generation: o.generation,
                    expected_head: head,
                    new_size: 1,
                    commit_id: fastrand::u64(..),
                    pages: &[(1, &page)],
                })
                .map_err(err)?;
            head = r.txid;
            Ok(())
        })?;
        if label == "local" {
            rows.push(Row {
                name: "get_pages, 1 page, cached page index",
                local: Some(read),
                remote: read,
            });
            rows.push(Row {
                name: "commit, 1 page (fsync)",
                local: Some(commit),
                remote: commit,
            });
        } else {
            for row in &mut rows {
                match row.name {
                    "get_pages, 1 page, cached page index" => row.remote = read,
                    "commit, 1 page (fsync)" => row.remote = commit,
                    _ => {}
                }
            }
        }
    }
    compactor.stop();
    Ok(rows)
}

pub fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<40} {:>14} {:>15} {:>14} {:>15}\n",
        "round trip", "in-process µs", "via server µs", "overhead µs", "server p99 µs"
    );
    for r in rows {
        let local = r.local.map(|s| us(s.median));
        out.push_str(&format!(
            "{:<40} {:>14} {:>15.1} {:>14} {:>15.1}\n",
            r.name,
            local.map_or("-".to_string(), |l| format!("{l:.1}")),
            us(r.remote.median),
            local.map_or("-".to_string(), |l| format!(
                "{:.1}",
                us(r.remote.median) - l
            )),
            us(r.remote.p99),
        ));
    }
    out
}
