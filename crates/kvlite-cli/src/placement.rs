//! `kvlite move`: move a database between the PostgreSQL clusters of a
//! deployment (`--postgres URL0 --postgres URL1 ...`, in the order the
//! servers are given them).

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use kvlite_engine::{Engine, EngineConfig};
use kvlite_placement::Placement;
use prometheus_client::registry::Registry;

use crate::store::{self, GlobalOpts};

/// Move a database to another PostgreSQL cluster of the deployment (give
/// every cluster with --postgres, in the servers' order): its writer is
/// fenced and reopens it there; the copy is verified page by page; run it
/// again to finish a move that was interrupted
#[derive(clap::Args, Debug)]
pub struct MoveArgs {
    /// Database name
    db: String,
    /// The cluster to move it to: its position among the --postgres URLs,
    /// from 0
    #[arg(long, value_name = "N")]
    to: u32,
}

pub fn run(opts: &GlobalOpts, args: MoveArgs) -> Result<()> {
    if opts.server.is_some() || opts.data.is_some() {
        bail!("move works on the PostgreSQL clusters themselves: give each with --postgres");
    }
    if opts.postgres.len() < 2 {
        bail!(
            "move needs the deployment's clusters: --postgres URL0 --postgres URL1 ... (got {})",
            opts.postgres.len()
        );
    }
    if args.to as usize >= opts.postgres.len() {
        bail!(
            "--to {}: the deployment has clusters 0..={}",
            args.to,
            opts.postgres.len() - 1
        );
    }
    let engines: Vec<Arc<Engine>> = store::open_clusters(opts)?
        .into_iter()
        .map(|kv| Engine::new(kv, EngineConfig::default(), &mut Registry::default()))
        .collect();
    let placement = Placement::new(engines).map_err(|e| anyhow!("{e}"))?;
    let report = placement
        .move_db(&args.db, args.to)
        .map_err(|e| store::client_error(&args.db, e))?;
    if report.already_there {
        println!("{} is on cluster {} already", args.db, report.to);
    } else {
        println!(
            "moved {} from cluster {} to cluster {}: {} pages as of commit {}, verified{}",
            args.db,
            report.from,
            report.to,
            report.pages,
            report.head_txid,
            if report.restarts > 0 {
                format!(
                    " (started over {} times: it was being written)",
                    report.restarts
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
