//! `kvlite`: run SQL against kvlite databases, import and export SQLite
//! files, inspect and list databases.
//!
//! Every subcommand reaches the storage engine through the
//! `Arc<dyn Transport>` of a [`store::Store`] built by [`store::open_store`]
//! from the global options, so another way of reaching an engine (a server)
//! only changes that function.

#![forbid(unsafe_code)]

mod admin;
mod bench;
mod copy;
mod doctor;
mod dump;
mod history;
mod migrate;
mod output;
mod placement;
mod progress;
mod serve;
mod shell;
mod sql;
mod store;

use std::io;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use store::GlobalOpts;

const AFTER_HELP: &str = "\
Databases live in the data directory (--data, default ./kvlite-data), which one
process at a time may open; --postgres URL keeps them in PostgreSQL instead, and
--server URL [--token T] uses a running `kvlite serve`. Log messages go to
stderr (--log-format json: one JSON object per line); RUST_LOG sets the level
(default: warn; `kvlite serve` also logs what it serves at info).

Examples:
  kvlite serve                                   # on ./kvlite-data, ws://127.0.0.1:7435
  kvlite sql --server ws://127.0.0.1:7435 app \"CREATE TABLE t(a, b); INSERT INTO t VALUES (1, 'x')\"
  kvlite sql app \"SELECT * FROM t\" --json
  kvlite import app ./app.sqlite
  kvlite export app ./backup.sqlite
  kvlite dump app > app.sql                      # SQL text, like sqlite3's .dump
  kvlite inspect app
  kvlite doctor app                              # checksums, replay vs read path, integrity_check
  kvlite import --layout v1 old ./old.sqlite && kvlite migrate old
  kvlite bench --quick";

#[derive(Parser)]
#[command(
    name = "kvlite",
    version,
    about = "kvlite: many SQLite databases on shared, durable storage",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Sql(sql::SqlArgs),
    Import(copy::ImportArgs),
    Export(copy::ExportArgs),
    Dump(dump::DumpArgs),
    Inspect(admin::InspectArgs),
    Doctor(doctor::DoctorArgs),
    Ls(admin::LsArgs),
    Rm(admin::RmArgs),
    Compact(admin::CompactArgs),
    Vacuum(admin::VacuumArgs),
    Quota(admin::QuotaArgs),
    History(history::HistoryArgs),
    Fork(history::ForkArgs),
    Restore(history::RestoreArgs),
    Retention(history::RetentionArgs),
    Migrate(migrate::MigrateArgs),
    Move(placement::MoveArgs),
    Serve(serve::ServeArgs),
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_tracing(cli.global.log_format);
    let typed = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let checked = unused_options(&cli, typed("token"), typed("busy_timeout"));
    match checked.and_then(|()| run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`kvlite sql ... | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// A global option the command has no use for is a mistake to report, not
/// to ignore (`token` and `busy_timeout`: whether they were typed, since an
/// environment variable or the default sets them too).
fn unused_options(cli: &Cli, token: bool, busy_timeout: bool) -> anyhow::Result<()> {
    let g = &cli.global;
    let (name, store) = match &cli.command {
        // Benchmarks make their own stores (PostgreSQL's from --postgres).
        Command::Bench(_) => ("bench", false),
        _ => ("", true),
    };
    if !store && (g.data.is_some() || g.server.is_some()) {
        anyhow::bail!(
            "kvlite {name} makes its own stores: it does not use --data or --server (--postgres adds PostgreSQL runs)"
        );
    }
    if token && g.server.is_none() {
        anyhow::bail!("--token is for --server; this command uses a local store");
    }
    if busy_timeout && (g.server.is_some() || !g.postgres.is_empty() || !store) {
        anyhow::bail!(
            "--busy-timeout is for the embedded store (--data); this command does not open one"
        );
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Sql(args) => sql::run(g, args),
        Command::Import(args) => copy::import(g, args),
        Command::Export(args) => copy::export(g, args),
        Command::Dump(args) => dump::run(g, args),
        Command::Inspect(args) => admin::inspect(g, args),
        Command::Doctor(args) => doctor::run(g, args),
        Command::Ls(args) => admin::ls(g, args),
        Command::Rm(args) => admin::rm(g, args),
        Command::Compact(args) => admin::compact(g, args),
        Command::Vacuum(args) => admin::vacuum(g, args),
        Command::Quota(args) => admin::quota(g, args),
        Command::History(args) => history::history(g, args),
        Command::Fork(args) => history::fork(g, args),
        Command::Restore(args) => history::restore(g, args),
        Command::Retention(args) => history::retention(g, args),
        Command::Migrate(args) => migrate::run(g, args),
        Command::Move(args) => placement::run(g, args),
        Command::Serve(args) => serve::run(g, args),
        Command::Bench(args) => bench::run(g, args),
    }
}

fn init_tracing(format: store::LogFormat) {
    // A failed migration is reported as the command's error: its log line
    // (a warning, for servers) would say it twice.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,kvlite_engine::v1=error"));
    // Colour only for a person at a terminal, never into a log file.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format {
        store::LogFormat::Json => logs.json().init(),
        store::LogFormat::Text => logs
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .init(),
    }
}

/// The error and its causes, `: `-separated, without repeats: a cause
/// whose text its parent already shows is left out, and a SQLite error's
/// own cause (its message again, with the result code) too.
pub(crate) fn message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        if cause.is::<rusqlite::Error>() {
            break;
        }
    }
    parts.join(": ")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
