//! `kvlite bench`: how fast kvlite is next to plain SQLite.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kvlite_bench::sqlite::{self, BenchConfig, Workload};

use crate::store::GlobalOpts;

/// Benchmark kvlite against plain SQLite on a local file (or the engine alone)
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// `sqlite` (SQLite workloads, side by side with plain SQLite),
    /// `engine` (the storage engine alone on the embedded store), `rtt`
    /// (tiny requests in process and through a loopback server),
    /// `compaction` (a steady update load with and without compaction),
    /// `migration` (a v1 database migrated, next to importing it as v2) or
    /// `many` (1, 8 and 64 writers on as many databases at once: commits
    /// per second, and how they scale) or `scale` (10,000 databases on one
    /// `kvlite serve`, a few commits a minute each: server memory, commit
    /// latency against an idle server's, compaction backlog) or `history`
    /// (forks and restores of an empty and a 1 GiB database: their time
    /// must not grow with the size)
    #[arg(default_value = "sqlite")]
    suite: String,
    /// A small version that finishes in about a minute
    #[arg(long)]
    quick: bool,
    /// Print one JSON object per line
    #[arg(long)]
    json: bool,
    /// Write a Markdown report (and an SVG chart beside it)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Overwrite the --out report if it exists
    #[arg(long, requires = "out")]
    force: bool,
    /// Add N ms of one-way delay to the network transport, both directions
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    latency_ms: u64,
    /// Only these workloads (comma-separated ids)
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Runs per workload and system
    #[arg(long)]
    runs: Option<usize>,
    /// Run the whole suite N times (fresh stores each pass): each row then
    /// shows the median of the passes' medians and their spread
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    repeat: u64,
    /// Scratch directory (default: a new directory under the temp dir)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Toy sizes that finish in seconds: for testing the harness, not for
    /// numbers
    #[arg(long, hide = true)]
    tiny: bool,
}

pub fn run(opts: &GlobalOpts, args: BenchArgs) -> Result<()> {
    if ![
        "sqlite",
        "engine",
        "rtt",
        "compaction",
        "migration",
        "many",
        "scale",
        "history",
    ]
    .contains(&args.suite.as_str())
    {
        bail!(
            "unknown suite {:?}: sqlite, engine, rtt, compaction, migration, many, scale or history",
            args.suite
        );
    }
    let workloads = if args.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workloads
            .iter()
            .map(|w| Workload::parse(w).ok_or_else(|| anyhow!("unknown workload {w:?}")))
            .collect::<Result<_>>()?
    };
    if args.suite != "sqlite"
        && (args.json || args.out.is_some() || !args.workloads.is_empty() || args.repeat > 1)
    {
        bail!("--json, --out, --workloads and --repeat apply to the sqlite suite only");
    }
    if let Some(out) = &args.out
        && out.exists()
        && !args.force
    {
        bail!(
            "{} already exists; use --force to overwrite it",
            out.display()
        );
    }
    let dir = args.dir.clone().unwrap_or_else(sqlite::default_dir);
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("scratch directory {} is not empty", dir.display());
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; benchmark with `cargo run --release -p kvlite-cli -- bench`"
        );
    }
    let result = match args.suite.as_str() {
        "sqlite" => run_sqlite(opts, &args, workloads, &dir),
        "engine" => {
            std::fs::create_dir_all(&dir)?;
            let rows = kvlite_bench::engine::run(&dir, args.quick).map_err(|e| anyhow!("{e}"))?;
            print!("{}", kvlite_bench::engine::render(&rows));
            Ok(())
        }
        "rtt" => {
            std::fs::create_dir_all(&dir)?;
            let rows =
                kvlite_bench::rtt::run(&dir, args.quick, Duration::from_millis(args.latency_ms))
                    .map_err(|e| anyhow!("{e}"))?;
            print!("{}", kvlite_bench::rtt::render(&rows));
            Ok(())
        }
        "compaction" => {
            std::fs::create_dir_all(&dir)?;
            let phases =
                kvlite_bench::compaction::run(&dir, args.quick).map_err(|e| anyhow!("{e}"))?;
            print!("{}", kvlite_bench::compaction::render(&phases));
            Ok(())
        }
        "many" => {
            std::fs::create_dir_all(&dir)?;
            let rows = kvlite_bench::many::run(
                &dir,
                opts.postgres.first().map(String::as_str),
                args.quick,
            )
            .map_err(|e| anyhow!("{e}"))?;
            print!("{}", kvlite_bench::many::render(&rows));
            Ok(())
        }
        "scale" => {
            std::fs::create_dir_all(&dir)?;
            let reports = kvlite_bench::scale::run(
                &dir,
                opts.postgres.first().map(String::as_str),
                args.quick,
            )
            .map_err(|e| anyhow!("{e}"))?;
            print!("{}", kvlite_bench::scale::render(&reports));
            Ok(())
        }
        "history" => {
            std::fs::create_dir_all(&dir)?;
            let rows = kvlite_bench::history::run(
                &dir,
                opts.postgres.first().map(String::as_str),
                args.quick,
            )
            .map_err(|e| anyhow!("{e}"))?;
            print!("{}", kvlite_bench::history::render(&rows));
            Ok(())
        }
        "migration" => {
            std::fs::create_dir_all(&dir)?;
            let steps =
                kvlite_bench::migration::run(&dir, args.quick).map_err(|e| anyhow!("{e}"))?;
            print!("{}", kvlite_bench::migration::render(&steps));
            Ok(())
        }
        other => Err(anyhow!("unknown suite {other:?}")),
    };
    sqlite::cleanup(&dir);
    result
}

fn run_sqlite(
    opts: &GlobalOpts,
    args: &BenchArgs,
    workloads: Vec<Workload>,
    dir: &std::path::Path,
) -> Result<()> {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut passes = Vec::new();
    for pass in 0..args.repeat {
        let config = BenchConfig {
            dir: if args.repeat > 1 {
                dir.join(format!("pass-{pass}"))
            } else {
                dir.to_path_buf()
            },
            quick: args.quick,
            workloads: workloads.clone(),
            postgres_url: opts.postgres.first().cloned(),
            latency: Duration::from_millis(args.latency_ms),
            runs: args.runs,
            tiny: args.tiny,
        };
        let label = if args.repeat > 1 {
            format!("pass {}/{}: ", pass + 1, args.repeat)
        } else {
            String::new()
        };
        // Off a terminal the bar is hidden: say each step on a line instead.
        let lines = !std::io::IsTerminal::is_terminal(&std::io::stderr());
        let last = std::cell::RefCell::new(String::new());
        let rows = sqlite::run(&config, &|done, total, what| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("{label}{what}"));
            // One line per workload (its first word), not per run.
            let step = what.split(' ').next().unwrap_or(what);
            if lines && *last.borrow() != step {
                eprintln!("[{done}/{total}] {label}{what}");
                step.clone_into(&mut last.borrow_mut());
            }
        })
        .map_err(|e| anyhow!("{e}"));
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
        sqlite::cleanup(&config.dir);
        passes.push(rows);
    }
    bar.finish_and_clear();
    let rows = sqlite::merge_passes(&passes);
    if args.json {
        print!("{}", sqlite::render_json(&rows));
    } else {
        print!("{}", sqlite::render_table(&rows));
    }
    for warning in sqlite::spread_warnings(&rows) {
        eprintln!("warning: {warning}");
    }
    if let Some(out) = &args.out {
        let notes = format!(
            "Release build: {}. Scratch directory: {}. Injected latency: {} ms one way. {} mode. {} pass(es) of the whole suite{}. Bytes written: what this process sent to storage per run (`/proc/self/io`).",
            !cfg!(debug_assertions),
            dir.display(),
            args.latency_ms,
            if args.quick { "Quick" } else { "Full" },
            args.repeat,
            if args.repeat > 1 {
                " (median, min and max over the passes' medians)"
            } else {
                ""
            }
        );
        kvlite_bench::report::write(&rows, out, &notes).map_err(|e| anyhow!("{e}"))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}
