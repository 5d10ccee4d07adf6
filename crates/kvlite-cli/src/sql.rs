//! `kvlite sql`: run SQL and `sqlite3`-style dot commands against one
//! database, from the command line, a script on stdin, or typed at a
//! terminal (the interactive shell).

use std::io::{self, IsTerminal, Read};

use anyhow::{Context, Result, anyhow};

use crate::output::{Format, Mode};
use crate::shell::{Settings, Shell};
use crate::store::{self, Access, GlobalOpts};

const SQL_HELP: &str = "\
At a terminal with no SQL given, `kvlite sql DB` is an interactive shell, like
sqlite3: each statement runs when its ';' is typed; line editing and history
(~/.kvlite_history, or $KVLITE_HISTORY); dot commands (.help lists them: .tables,
.schema, .indexes, .dump, .import, .mode, .headers, .nullvalue, .read, .output,
.timer, .changes, .quit ...). Scripts (the SQL argument or stdin) take the same
dot commands, each on its own line.

Reading never takes the database over: a script whose statements are all
read-only (what SQLite itself calls read-only: SELECT, EXPLAIN, ...; .import and
.read count as writing) runs on a read-only connection, so an application writing
to the database goes on undisturbed, and each transaction sees one committed
state. Any other script takes the database over (the previous writer is fenced).
In the shell the connection becomes the writer at the first statement that writes
or opens a transaction. --read-only refuses writes outright.

Statements run one after another, each committed on its own (SQLite's autocommit)
unless grouped with BEGIN ... COMMIT. A script stops at the first error: that
statement changes nothing, statements before it stay committed, and an open
transaction is rolled back; the exit code is then 1. In the shell an error is
shown and the session goes on.

Output modes print exactly as sqlite3 3.40 prints them: list (the default: values
separated by '|'; NULL as nothing, reals as SQLite converts them to text, e.g. 1.5,
2.0, 1.0e+20, text and blobs as their bytes up to the first NUL), csv, tabs, line,
column, box, table, markdown, quote (SQL literals, blobs as X'..'), json (a JSON
array per statement, as sqlite3 writes it). One more for programs, jsonl: one
valid JSON object per row (keys are the column names, in column order; NULL ->
null, integers and reals -> numbers, text -> string, blob -> string of lowercase
hex digits, infinite reals -> \"Inf\", \"-Inf\").";

/// Run SQL statements against a database (created if absent); without
/// SQL at a terminal, an interactive shell
#[derive(clap::Args, Debug)]
#[command(after_help = SQL_HELP)]
pub struct SqlArgs {
    /// Database name
    db: String,
    /// Statements separated by ';' (and dot commands, one per line). Read
    /// from stdin when '-', or when omitted and stdin is not a terminal
    /// (may start with a `--` comment)
    #[arg(allow_hyphen_values = true)]
    sql: Option<String>,
    /// Output mode (as .mode)
    #[arg(long, value_enum, group = "output_mode")]
    mode: Option<Mode>,
    /// Output mode list (the default)
    #[arg(long, group = "output_mode")]
    list: bool,
    /// Output mode csv
    #[arg(long, group = "output_mode")]
    csv: bool,
    /// Output mode tabs
    #[arg(long, group = "output_mode")]
    tabs: bool,
    /// Output mode line
    #[arg(long, group = "output_mode")]
    line: bool,
    /// Output mode column
    #[arg(long, group = "output_mode")]
    column: bool,
    /// Output mode box
    #[arg(long = "box", group = "output_mode")]
    box_: bool,
    /// Output mode table
    #[arg(long, group = "output_mode")]
    table: bool,
    /// Output mode markdown
    #[arg(long, group = "output_mode")]
    markdown: bool,
    /// Output mode quote
    #[arg(long, group = "output_mode")]
    quote: bool,
    /// Output mode json (sqlite3's: an array per statement)
    #[arg(long, group = "output_mode")]
    json: bool,
    /// Output mode jsonl (one valid JSON object per row)
    #[arg(long, group = "output_mode")]
    jsonl: bool,
    /// Show column names (as .headers on)
    #[arg(long, visible_alias = "headers", conflicts_with = "noheader")]
    header: bool,
    /// Hide column names (as .headers off)
    #[arg(long)]
    noheader: bool,
    /// How NULL prints (as .nullvalue)
    #[arg(long, value_name = "TEXT")]
    nullvalue: Option<String>,
    /// Column separator for list mode (as .separator)
    #[arg(long, value_name = "SEP")]
    separator: Option<String>,
    /// Open read-only (never take the database over; writes fail). Scripts
    /// of read-only statements open this way by themselves
    #[arg(long)]
    read_only: bool,
    /// Read the database as it was at POINT: a commit number, a time
    /// (2026-12-07T10:30:00Z) or a time ago (-10m); read-only
    #[arg(long, value_name = "POINT", value_parser = crate::history::parse_point, conflicts_with = "layout", allow_hyphen_values = true)]
    at: Option<kvlite_api::ReadPoint>,
    /// Run on the database's legacy v1 data (local stores only) instead
    /// of opening it as v2 (which migrates v1 data first)
    #[arg(long, value_enum, default_value_t)]
    layout: store::Layout,
}

impl SqlArgs {
    fn format(&self) -> Format {
        let flags = [
            (self.list, Mode::List),
            (self.csv, Mode::Csv),
            (self.tabs, Mode::Tabs),
            (self.line, Mode::Line),
            (self.column, Mode::Column),
            (self.box_, Mode::Box),
            (self.table, Mode::Table),
            (self.markdown, Mode::Markdown),
            (self.quote, Mode::Quote),
            (self.json, Mode::Json),
            (self.jsonl, Mode::Jsonl),
        ];
        let mut format = Format::default();
        if self.header || self.noheader {
            format.set_headers(self.header);
        }
        let flag = flags.iter().find(|(on, _)| *on).map(|&(_, m)| m);
        match self.mode {
            Some(mode) => format.set_mode(mode),
            // As sqlite3's -column: a mode flag leaves the headers alone.
            None => {
                if let Some(mode) = flag {
                    let headers = (format.headers, format.headers_set);
                    format.set_mode(mode);
                    (format.headers, format.headers_set) = headers;
                    // sqlite3's -csv ends rows with "\n" (.mode csv: "\r\n"),
                    // and its -box, -table ... do not wrap (.mode box: 60).
                    format.row_separator = "\n".into();
                    format.wrap = 0;
                }
            }
        }
        if let Some(text) = &self.nullvalue {
            format.null_value = text.clone();
        }
        if let Some(sep) = &self.separator {
            format.column_separator = sep.clone();
        }
        format
    }
}

pub fn run(opts: &GlobalOpts, args: SqlArgs) -> Result<()> {
    let script = match args.sql.as_deref() {
        Some("-") => Some(read_stdin()?),
        Some(s) => Some(s.to_string()),
        None if io::stdin().is_terminal() => None,
        None => Some(read_stdin()?),
    };
    let store = store::open_store(
        opts,
        if args.at.is_some() {
            Access::Read
        } else {
            Access::Create
        },
    )?;
    let db = args.db.as_str();
    let existed = args.layout == store::Layout::V1 || store.size_if_exists(db)?.is_some();
    let sqlite = store.sqlite(args.layout)?;
    // Look first without taking over: what only reads runs on a reader.
    // A store this process may only read runs every session as a reader.
    let read_only = args.read_only || args.at.is_some() || store.is_read_only();
    let reader = read_only || (existed && args.layout == store::Layout::V2);
    let conn = match args.at {
        Some(point) => sqlite.open_at(db, point)?,
        None if reader => sqlite.open_readonly(db)?,
        None => sqlite.open(db)?,
    };
    let settings = Settings {
        format: args.format(),
        read_only,
    };
    let mut shell = Shell::new(sqlite, db, conn, !reader, settings);
    let result = match &script {
        Some(script) => {
            let mut ran = Ok(());
            if !read_only && shell.script_writes(script) {
                ran = shell.become_writer();
            }
            ran.and_then(|()| shell.run_script(script, "").map(drop))
        }
        None => shell.interactive(),
    };
    // Rows printed before an error still go out.
    let flushed = shell.flush();
    // A session that never became the writer kept its read-only connection.
    let reader_only = !shell.is_writer();
    // Closing the connection rolls back a transaction the SQL left open.
    let open_transaction = !shell.connection().is_autocommit();
    drop(shell.into_connection());
    let nothing_kept = result.is_err() || script.is_none();
    if nothing_kept && !existed && store.size_if_exists(db).ok() == Some(Some(0)) {
        // Nothing was committed to a database this command created.
        if let Err(e) = store.transport.delete(db) {
            tracing::warn!(db, error = %e, "cannot remove the empty database");
        }
    }
    match result {
        Err(e) if args.at.is_some() => Err(anyhow!(
            "{e:#} (read as it was at --at: the past is read-only)"
        )),
        Err(e) if reader_only && args.read_only => Err(anyhow!("{e:#} (opened with --read-only)")),
        Err(e) if reader_only && read_only => Err(anyhow!(
            "{e:#} (the data directory {} is opened read-only: this process cannot write to it)",
            opts.data_dir().display()
        )),
        Err(e) if open_transaction => {
            Err(anyhow!("{e:#}; the open transaction has been rolled back"))
        }
        Err(e) => Err(e),
        Ok(()) => {
            if open_transaction {
                eprintln!(
                    "warning: a transaction was left open (no COMMIT); it has been rolled back"
                );
            }
            flushed?;
            // Maintenance: the changes are committed whatever happens here.
            if args.layout == store::Layout::V1 || reader_only {
                return Ok(());
            }
            if let Err(e) = store.compact_if_due(db) {
                eprintln!("warning: {e:#}");
            }
            Ok(())
        }
    }
}

fn read_stdin() -> Result<String> {
    let mut stdin = io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading SQL from stdin; end with Ctrl-D");
    }
    let mut buf = Vec::new();
    stdin
        .read_to_end(&mut buf)
        .context("cannot read SQL from stdin")?;
    String::from_utf8(buf).map_err(|e| anyhow!("SQL on stdin is not valid UTF-8: {e}"))
}
