//! The `kvlite sql` shell: statements and `sqlite3`-style dot commands,
//! from a script or typed at a terminal (line editing, history), on one
//! database.
//!
//! The connection starts read-only when the database exists, so looking
//! never takes the database over (an application writing to it goes on
//! undisturbed); it becomes the writer at the first statement that writes
//! (or, typed at the terminal, opens a transaction), unless `--read-only`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kvlite_vfs::sql_text;
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::{Batch, Connection};

use crate::dump;
use crate::output::{Format, Mode, Printer, Values};
use crate::store::Sqlite;

/// `.read` files may read others, this deep.
const MAX_READ_DEPTH: usize = 16;

const DOT_HELP: &str = "\
.changes on|off          Show rows changed by each statement
.dump ?PATTERN ...?      The database (or matching objects) as SQL text
.exit, .quit             Leave the shell
.headers on|off          Show column names
.help                    This text
.import ?--csv? ?--skip N? FILE TABLE
                         Rows of FILE into TABLE (created from the first row
                         when absent)
.indexes ?TABLE?         Names of indexes (of tables LIKE TABLE)
.mode ?MODE? ?--wrap N? ?--wordwrap on|off?
                         Output mode: list csv tabs line column box table
                         markdown quote json jsonl
.nullvalue TEXT          How NULL prints
.output ?FILE?           Send output to FILE (no FILE: back to stdout)
.print TEXT ...          Print the words
.read FILE               Run the statements and commands in FILE
.schema ?PATTERN?        CREATE statements (of tables LIKE PATTERN)
.separator COL ?ROW?     Separators for list mode (and .import)
.tables ?PATTERN?        Names of tables and views (LIKE PATTERN)
.timer on|off            Show how long each statement took
";

/// Where the shell's results go.
enum Output {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<File>),
}

impl Output {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(w) => w,
            Output::File(w) => w,
        }
    }
}

/// What a dot command asks of the input loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// A piece of input: a dot command line or SQL text ending in a complete
/// statement (or the input's end), with the line it starts on (1-based).
#[derive(Debug, PartialEq, Eq)]
enum Unit<'a> {
    Dot(usize, &'a str),
    Sql(usize, String),
}

/// Gathers input lines into units as `sqlite3` does: a line that starts
/// with `.` while no SQL is pending is a dot command; other lines gather
/// until SQLite calls the text complete. Blank and comment-only lines
/// between statements are skipped. Scripts and the terminal both feed it.
#[derive(Default)]
struct Gatherer {
    pending: String,
    /// The line the pending SQL starts on, and lines taken so far.
    start: usize,
    lines: usize,
}

impl Gatherer {
    fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn clear(&mut self) {
        self.pending.clear();
    }

    /// Take one line (with its line end, if it has one); the unit it
    /// completes, if any.
    fn line<'a>(&mut self, line: &'a str) -> Option<Unit<'a>> {
        self.lines += 1;
        if self.pending.is_empty() {
            let trimmed = line.trim();
            if trimmed.starts_with('.') {
                return Some(Unit::Dot(self.lines, trimmed));
            }
            if trimmed.is_empty() || trimmed.starts_with("--") {
                return None;
            }
            self.start = self.lines;
        }
        self.pending.push_str(line);
        sql_text::is_complete(&self.pending)
            .then(|| Unit::Sql(self.start, std::mem::take(&mut self.pending)))
    }

    /// At the end of input: SQL still gathered (its last statement
    /// without a `;`).
    fn finish(self) -> Option<Unit<'static>> {
        (!self.pending.trim().is_empty()).then_some(Unit::Sql(self.start, self.pending))
    }
}

/// A whole script's units.
fn units(text: &str) -> Vec<Unit<'_>> {
    let mut gatherer = Gatherer::default();
    let mut units: Vec<Unit<'_>> = text
        .split_inclusive('\n')
        .filter_map(|line| gatherer.line(line))
        .collect();
    units.extend(gatherer.finish());
    units
}

/// Options that shape a session.
pub struct Settings {
    pub format: Format,
    /// `--read-only`: never become the writer.
    pub read_only: bool,
}

pub struct Shell {
    sqlite: Sqlite,
    db: String,
    conn: Connection,
    writer: bool,
    may_write: bool,
    /// Typed at a terminal: opening a transaction makes the writer too
    /// (what follows is unknown).
    interactive: bool,
    format: Format,
    printer: Printer,
    out: Output,
    timer: bool,
    changes: bool,
    depth: usize,
}

impl Shell {
    /// A session on `conn`; `writer` says whether it already is the writer.
    pub fn new(
        sqlite: Sqlite,
        db: &str,
        conn: Connection,
        writer: bool,
        settings: Settings,
    ) -> Shell {
        Shell {
            sqlite,
            db: db.to_string(),
            conn,
            writer,
            may_write: !settings.read_only,
            interactive: false,
            format: settings.format,
            printer: Printer::new(),
            out: Output::Stdout(BufWriter::new(io::stdout())),
            timer: false,
            changes: false,
            depth: 0,
        }
    }

    /// Whether the session wrote (took the database over).
    pub fn is_writer(&self) -> bool {
        self.writer
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn into_connection(self) -> Connection {
        self.conn
    }

    /// Whether a script must run as the writer: a statement that writes,
    /// or a command that may (`.import`, `.read`). Decided before it runs,
    /// so a read-only script (transactions included) never takes over.
    pub fn script_writes(&self, script: &str) -> bool {
        units(script).iter().any(|u| match u {
            Unit::Dot(_, line) => {
                let name = line.split_whitespace().next().unwrap_or_default();
                matches!(name, ".import" | ".read")
            }
            Unit::Sql(_, sql) => !only_reads(&self.conn, sql),
        })
    }

    /// Become the writer now (the script writes).
    pub fn become_writer(&mut self) -> Result<()> {
        if !self.writer && self.may_write {
            self.conn = self.sqlite.open(&self.db)?;
            self.writer = true;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.writer().flush().context("cannot write the output")
    }

    /// Run a script: its statements and dot commands in order, stopping at
    /// the first error. `source` names it in errors (empty: the command
    /// line or stdin).
    pub fn run_script(&mut self, text: &str, source: &str) -> Result<Flow> {
        for unit in units(text) {
            let flow = match unit {
                Unit::Dot(line, command) => self
                    .dot(command)
                    .map_err(|e| e.context(where_(source, line, None))),
                Unit::Sql(line, sql) => self.sql(&sql, source, line).map(|()| Flow::Continue),
            }?;
            if flow == Flow::Quit {
                return Ok(Flow::Quit);
            }
        }
        Ok(Flow::Continue)
    }

    /// Statements at a terminal until `.quit` or end of input: each runs
    /// when its `;` is typed; errors are shown and the session goes on.
    pub fn interactive(&mut self) -> Result<()> {
        use rustyline::error::ReadlineError;
        self.interactive = true;
        let mut editor = rustyline::DefaultEditor::new().context("cannot start line editing")?;
        let history = history_file();
        if let Some(path) = &history {
            // A missing history file is the first session.
            let _ = editor.load_history(path);
        }
        println!(
            "kvlite {} (SQLite {}), database {:?}{}\nEnter \".help\" for usage hints.",
            env!("CARGO_PKG_VERSION"),
            rusqlite::version(),
            self.db,
            if self.may_write { "" } else { " (read-only)" }
        );
        let mut gatherer = Gatherer::default();
        loop {
            let prompt = if gatherer.is_pending() {
                "   ...> "
            } else {
                "kvlite> "
            };
            let line = match editor.readline(prompt) {
                Ok(line) => line,
                // Ctrl-C drops what was typed, as in sqlite3.
                Err(ReadlineError::Interrupted) => {
                    gatherer.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(anyhow!("cannot read the terminal: {e}")),
            };
            if !line.trim().is_empty() {
                let _ = editor.add_history_entry(line.as_str());
            }
            let text = format!("{line}\n");
            let result = match gatherer.line(&text) {
                None => continue,
                Some(Unit::Dot(_, command)) => self.dot(command),
                // Errors locate within the statement typed, not the session.
                Some(Unit::Sql(_, sql)) => self.sql(&sql, "", 1).map(|()| Flow::Continue),
            };
            let flushed = self.flush();
            match result.and_then(|flow| flushed.map(|()| flow)) {
                Ok(Flow::Quit) => break,
                Ok(Flow::Continue) => {}
                Err(e) => eprintln!("Error: {}", crate::message(&e)),
            }
        }
        if let Some(path) = &history
            && let Err(e) = editor.save_history(path)
        {
            tracing::debug!(error = %e, "cannot save the shell history");
        }
        Ok(())
    }

    /// Run SQL text (one or more statements) that starts on `line` of
    /// `source`.
    fn sql(&mut self, sql: &str, source: &str, line: usize) -> Result<()> {
        self.choose_connection(sql)?;
        let started = Instant::now();
        // Only `.timer on` shows it: reading /proc costs seven system calls.
        let cpu = self.timer.then(cpu_time).flatten();
        let result = execute(
            &self.conn,
            sql,
            &self.format,
            &mut self.printer,
            self.out.writer(),
        );
        let result = result.map_err(|e| match e {
            ExecError::At {
                line: l,
                column,
                statement,
                source: e,
            } => anyhow!(
                "{}: {}\n  {statement}",
                where_(source, line + l - 1, Some(column)),
                self.sqlite.error(&self.db, e)
            ),
            ExecError::Sql(e) => self.sqlite.error(&self.db, e),
            ExecError::Other(e) => e,
        });
        if self.changes {
            writeln!(
                self.out.writer(),
                "changes: {}   total_changes: {}",
                self.conn.changes(),
                self.conn.total_changes()
            )?;
        }
        if self.timer {
            let (user, sys) = match (cpu, cpu_time()) {
                (Some(a), Some(b)) => (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)),
                _ => (Duration::ZERO, Duration::ZERO),
            };
            writeln!(
                self.out.writer(),
                "Run Time: real {:.3} user {:.6} sys {:.6}",
                started.elapsed().as_secs_f64(),
                user.as_secs_f64(),
                sys.as_secs_f64()
            )?;
        }
        result
    }

    /// Become the writer before SQL that writes (outside a transaction:
    /// one begun read-only cannot turn into a write).
    fn choose_connection(&mut self, sql: &str) -> Result<()> {
        if self.writer {
            return Ok(());
        }
        let writes = !only_reads(&self.conn, sql);
        let begins = self.interactive && opens_transaction(&self.conn, sql);
        if writes || begins {
            self.need_writer()?;
        }
        Ok(())
    }

    /// Become the writer unless `--read-only` (then writes fail as SQLite
    /// fails them on a read-only database).
    fn need_writer(&mut self) -> Result<()> {
        if self.writer || !self.may_write {
            return Ok(());
        }
        if !self.conn.is_autocommit() {
            bail!(
                "this transaction began read-only and cannot write; end it (COMMIT or ROLLBACK) and write in a new one"
            );
        }
        self.become_writer()
    }

    fn write_rows(&mut self, names: &[String]) -> Result<()> {
        let out = self.out.writer();
        // Widths in bytes, as sqlite3 pads them.
        let widest = names.iter().map(String::len).max().unwrap_or(0);
        let columns = (80 / (widest + 2)).max(1);
        let rows = names.len().div_ceil(columns);
        for i in 0..rows {
            let mut line = String::new();
            for (k, name) in names.iter().enumerate().skip(i).step_by(rows) {
                if k >= rows {
                    line.push_str("  ");
                }
                line.push_str(name);
                line.push_str(&" ".repeat(widest - name.len()));
            }
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    /// One dot command line.
    pub fn dot(&mut self, line: &str) -> Result<Flow> {
        let args = split_args(line)?;
        let Some((name, args)) = args.split_first() else {
            return Ok(Flow::Continue);
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match (name.as_str(), args.as_slice()) {
            (".quit" | ".exit", []) => return Ok(Flow::Quit),
            (".help", _) => self.out.writer().write_all(DOT_HELP.as_bytes())?,
            (".tables", pattern @ ([] | [_])) => {
                let names = self.names(
                    "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view')
                     AND name NOT LIKE 'sqlite_%' AND name LIKE ?1 ORDER BY 1",
                    pattern.first().copied().unwrap_or("%"),
                )?;
                self.write_rows(&names)?;
            }
            (".indexes" | ".indices", table @ ([] | [_])) => {
                let names = self.names(
                    "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name LIKE ?1
                     ORDER BY 1",
                    table.first().copied().unwrap_or("%"),
                )?;
                self.write_rows(&names)?;
            }
            (".schema", pattern @ ([] | [_])) => self.schema(pattern.first().copied())?,
            (".dump", patterns) => {
                let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
                dump::dump(&self.conn, &patterns, self.out.writer())
                    .map_err(|e| self.sql_error(e))?;
            }
            (".import", args) => self.import(args)?,
            (".mode", []) => {
                let text = self.format.describe();
                if self.format.mode == Mode::Tabs {
                    // As sqlite3 3.40 does: asking turns tabs into list.
                    self.format.set_mode(Mode::List);
                }
                writeln!(self.out.writer(), "current output mode: {text}")?;
            }
            (".mode", [mode, options @ ..]) => self.mode(mode, options)?,
            (".headers" | ".header", [on]) => self.format.set_headers(boolean(on)?),
            (".nullvalue", [text]) => self.format.null_value = text.to_string(),
            (".separator", [column, row @ ..]) if row.len() <= 1 => {
                self.format.column_separator = column.to_string();
                if let Some(row) = row.first() {
                    self.format.row_separator = row.to_string();
                }
            }
            (".timer", [on]) => self.timer = boolean(on)?,
            (".changes", [on]) => self.changes = boolean(on)?,
            (".print", words) => writeln!(self.out.writer(), "{}", words.join(" "))?,
            (".output", []) | (".output", ["stdout"]) => {
                self.flush()?;
                self.out = Output::Stdout(BufWriter::new(io::stdout()));
            }
            (".output", [path]) => {
                self.flush()?;
                let file = File::create(path).with_context(|| format!("cannot write {path}"))?;
                self.out = Output::File(BufWriter::new(file));
            }
            (".read", [path]) => {
                if self.depth >= MAX_READ_DEPTH {
                    bail!(".read nests deeper than {MAX_READ_DEPTH} files");
                }
                let text = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
                let text =
                    String::from_utf8(text).map_err(|_| anyhow!("{path} is not UTF-8 text"))?;
                self.depth += 1;
                let flow = self.run_script(&text, path);
                self.depth -= 1;
                return flow;
            }
            (
                ".quit" | ".exit" | ".tables" | ".indexes" | ".indices" | ".schema" | ".headers"
                | ".header" | ".nullvalue" | ".separator" | ".timer" | ".changes" | ".output"
                | ".read",
                _,
            ) => bail!("wrong arguments for {name}; see .help"),
            _ => bail!("unknown command {name:?}; enter \".help\" for the list"),
        }
        Ok(Flow::Continue)
    }

    fn sql_error(&self, e: anyhow::Error) -> anyhow::Error {
        match e.downcast::<rusqlite::Error>() {
            Ok(sql) => self.sqlite.error(&self.db, sql),
            Err(other) => other,
        }
    }

    fn names(&self, sql: &str, pattern: &str) -> Result<Vec<String>> {
        let names = self
            .conn
            .prepare(sql)
            .and_then(|mut s| {
                s.query_map([pattern], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.sqlite.error(&self.db, e))?;
        Ok(names)
    }

    fn schema(&mut self, pattern: Option<&str>) -> Result<()> {
        let rows: Vec<(String, String, String)> = self
            .conn
            .prepare(
                "SELECT sql, type, name FROM sqlite_schema WHERE sql IS NOT NULL
                 AND (?1 IS NULL OR lower(tbl_name) LIKE lower(?1) ESCAPE '\\')
                 ORDER BY rowid",
            )
            .and_then(|mut s| {
                s.query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.sqlite.error(&self.db, e))?;
        for (sql, kind, name) in rows {
            let mut text = dump::schema_line(&sql);
            if kind == "view" {
                // As sqlite3 does: the view's columns, in a comment.
                let columns: Vec<String> = self
                    .conn
                    .prepare(&format!("PRAGMA table_info({})", dump::ident(&name)))
                    .and_then(|mut s| {
                        s.query_map([], |r| r.get::<_, String>(1))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(|e| self.sqlite.error(&self.db, e))?;
                let columns: Vec<String> = columns.iter().map(|c| dump::ident(c)).collect();
                text.push_str(&format!(
                    "\n/* {}({}) */",
                    dump::ident(&name),
                    columns.join(",")
                ));
            }
            writeln!(self.out.writer(), "{text};")?;
        }
        Ok(())
    }

    fn mode(&mut self, name: &str, options: &[&str]) -> Result<()> {
        let mode = Mode::parse(name).ok_or_else(|| {
            let all: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
            anyhow!("unknown mode {name:?}; modes: {}", all.join(" "))
        })?;
        self.format.set_mode(mode);
        let mut options = options.iter();
        while let Some(&option) = options.next() {
            match option {
                "--wrap" => {
                    let n = options
                        .next()
                        .ok_or_else(|| anyhow!("--wrap needs a number"))?;
                    self.format.wrap = n
                        .parse()
                        .map_err(|_| anyhow!("--wrap {n:?}: not a number of characters"))?;
                }
                "--wordwrap" => {
                    let on = options
                        .next()
                        .ok_or_else(|| anyhow!("--wordwrap needs on or off"))?;
                    self.format.word_wrap = boolean(on)?;
                }
                "--ww" => self.format.word_wrap = true,
                "--noquote" => {}
                other => bail!("unknown option {other:?} for .mode"),
            }
        }
        Ok(())
    }

    /// `.import [--csv] [--skip N] FILE TABLE`, as sqlite3 does it: a
    /// missing table is created from the first row (columns of TEXT);
    /// short rows are filled with NULL and long ones cut, with a warning.
    /// One transaction for the whole file; rows stream from the file.
    fn import(&mut self, args: &[&str]) -> Result<()> {
        let mut csv_mode = self.format.mode == Mode::Csv;
        let mut skip = 0u64;
        let mut positional = Vec::new();
        let mut args = args.iter();
        while let Some(&arg) = args.next() {
            match arg {
                "--csv" => csv_mode = true,
                "--skip" => {
                    let n = args
                        .next()
                        .ok_or_else(|| anyhow!("--skip needs a number"))?;
                    skip = n
                        .parse()
                        .map_err(|_| anyhow!("--skip {n:?}: not a number"))?;
                }
                a if a.starts_with("--") => bail!("unknown option {a:?} for .import"),
                a => positional.push(a),
            }
        }
        let [path, table] = positional[..] else {
            bail!("usage: .import ?--csv? ?--skip N? FILE TABLE");
        };
        let delimiter = match self.format.column_separator.as_bytes() {
            _ if csv_mode => b',',
            [one] => *one,
            _ => bail!(".import needs a one-character separator (see .separator), or --csv"),
        };
        let file = File::open(path).with_context(|| format!("cannot open {path}"))?;
        self.need_writer()?;
        if !self.writer {
            bail!("cannot import: the database is open read-only");
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .quoting(csv_mode)
            .delimiter(delimiter)
            .from_reader(io::BufReader::new(file));
        let quoted = dump::ident(table);
        let exists: bool = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?1",
                [table],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| self.sqlite.error(&self.db, e))?
            > 0;
        let own_transaction = self.conn.is_autocommit();
        let mut run = |conn: &Connection| -> Result<()> {
            let mut records = reader.byte_records();
            for _ in 0..skip {
                if records.next().is_none() {
                    break;
                }
            }
            if !exists {
                let header = match records.next() {
                    Some(r) => r.with_context(|| format!("cannot read {path}"))?,
                    None => bail!("{path} is empty: no row names the columns"),
                };
                let columns: Vec<String> = header
                    .iter()
                    .map(|c| {
                        format!(
                            "\"{}\" TEXT",
                            String::from_utf8_lossy(c).replace('"', "\"\"")
                        )
                    })
                    .collect();
                conn.execute_batch(&format!(
                    "CREATE TABLE \"{}\"(\n{})",
                    table.replace('"', "\"\""),
                    columns.join(", ")
                ))?;
            }
            let mut insert = conn.prepare(&format!("SELECT * FROM {quoted}"))?;
            let width = insert.column_count();
            let marks = vec!["?"; width].join(",");
            insert = conn.prepare(&format!("INSERT INTO {quoted} VALUES({marks})"))?;
            for record in records {
                let record = record.with_context(|| format!("cannot read {path}"))?;
                let line = record.position().map_or(0, |p| p.line());
                if record.len() < width {
                    eprintln!(
                        "{path}:{line}: expected {width} columns but found {} - filling the rest with NULL",
                        record.len()
                    );
                } else if record.len() > width {
                    eprintln!(
                        "{path}:{line}: expected {width} columns but found {} - extras ignored",
                        record.len()
                    );
                }
                let values: Vec<Option<String>> = (0..width)
                    .map(|i| {
                        record
                            .get(i)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                    .collect();
                insert.execute(rusqlite::params_from_iter(values))?;
            }
            Ok(())
        };
        if own_transaction {
            self.conn.execute_batch("BEGIN")?;
        }
        let result = run(&self.conn);
        if own_transaction {
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            let ended = self.conn.execute_batch(end);
            if result.is_ok() {
                ended.map_err(|e| self.sqlite.error(&self.db, e))?;
            }
        }
        result.map_err(|e| self.sql_error(e))
    }
}

/// Where in a script something happened, for errors.
fn where_(source: &str, line: usize, column: Option<usize>) -> String {
    let file = if source.is_empty() {
        String::new()
    } else {
        format!("{source} ")
    };
    match column {
        Some(c) => format!("{file}line {line}, column {c}"),
        None => format!("{file}line {line}"),
    }
}

/// `on`/`off` and the other spellings sqlite3 accepts.
fn boolean(word: &str) -> Result<bool> {
    match word.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => bail!("not a boolean value: {word:?} (use on or off)"),
    }
}

/// A dot command's words: split at spaces; "double quotes" (with
/// backslash escapes) and 'single quotes' keep spaces.
fn split_args(line: &str) -> Result<Vec<String>> {
    let mut args = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(args);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    None => bail!("unterminated quote in: {line}"),
                    Some(c) if c == first => break,
                    Some('\\') if first == '"' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some('r') => word.push('\r'),
                        Some(c) => word.push(c),
                        None => bail!("unterminated quote in: {line}"),
                    },
                    Some(c) => word.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some('r') => word.push('\r'),
                        Some(c) => word.push(c),
                        None => word.push('\\'),
                    }
                } else {
                    word.push(c);
                }
            }
        }
        args.push(word);
    }
}

/// Whether every statement of `sql` is read-only, as SQLite judges
/// (`sqlite3_stmt_readonly`). Each is only prepared, never run; one that
/// does not prepare (a typo, a missing table) counts as read-only, so the
/// error comes from a connection that took nothing over.
pub fn only_reads(conn: &Connection, sql: &str) -> bool {
    let mut batch = Batch::new(conn, sql);
    loop {
        match batch.next() {
            Ok(Some(stmt)) if stmt.readonly() => {}
            Ok(Some(_)) => return false,
            Ok(None) | Err(_) => return true,
        }
    }
}

/// Whether a statement of `sql` opens a transaction (BEGIN, SAVEPOINT).
fn opens_transaction(conn: &Connection, sql: &str) -> bool {
    let mut batch = Batch::new(conn, sql);
    while let Ok(Some(stmt)) = batch.next() {
        let text = stmt.expanded_sql().unwrap_or_default();
        let word = text.split_whitespace().next().unwrap_or_default();
        if word.eq_ignore_ascii_case("begin") || word.eq_ignore_ascii_case("savepoint") {
            return true;
        }
    }
    false
}

fn history_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KVLITE_HISTORY") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kvlite_history"))
}

/// User and system CPU time of this process so far (Linux).
fn cpu_time() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let tick = Duration::from_millis(10);
    Some((tick * ticks(11)? as u32, tick * ticks(12)? as u32))
}

pub enum ExecError {
    /// From SQLite: reported with the VFS's detailed reason.
    Sql(rusqlite::Error),
    /// A statement of the text failed: where (1-based, in the text) and
    /// the statement alone.
    At {
        line: usize,
        column: usize,
        statement: String,
        source: rusqlite::Error,
    },
    Other(anyhow::Error),
}

impl From<rusqlite::Error> for ExecError {
    fn from(e: rusqlite::Error) -> Self {
        ExecError::Sql(e)
    }
}

impl From<io::Error> for ExecError {
    fn from(e: io::Error) -> Self {
        ExecError::Other(e.into())
    }
}

/// Run the statements of `sql` one after another, printing their rows.
fn execute(
    conn: &Connection,
    sql: &str,
    format: &Format,
    printer: &mut Printer,
    out: &mut dyn Write,
) -> Result<(), ExecError> {
    let mut batch = Batch::new(conn, sql);
    // Where the statement just prepared starts: searched from the end of
    // the previous one.
    let mut pos = 0;
    loop {
        let mut stmt = match batch.next() {
            Ok(Some(stmt)) => stmt,
            Ok(None) => break,
            Err(e) => return Err(prepare_error(sql, e)),
        };
        let text = stmt.expanded_sql().unwrap_or_default();
        let start = sql
            .get(pos..)
            .and_then(|rest| rest.find(text.as_str()))
            .map_or(pos, |i| pos + i);
        pos = start + text.len();
        // SQLite keeps what preceded the statement (a newline, spaces).
        let start = start + (text.len() - text.trim_start().len());
        let at = |source: rusqlite::Error| {
            let (line, column) = line_column(sql, start);
            ExecError::At {
                line,
                column,
                statement: quote(&text),
                source,
            }
        };
        let columns: Vec<String> = stmt.column_names().map(String::from).collect();
        let count = columns.len();
        let mut rows = stmt.raw_query();
        printer.statement::<ExecError>(format, &columns, out, || {
            match rows.next().map_err(at)? {
                Some(row) => Ok(Some(Values::of(row, count)?)),
                None => Ok(None),
            }
        })?;
    }
    Ok(())
}

/// A statement that did not compile: located in the text, quoted alone
/// (rusqlite's message would carry the whole rest of the script).
fn prepare_error(script: &str, e: rusqlite::Error) -> ExecError {
    let rusqlite::Error::SqlInputError {
        error,
        msg,
        sql: rest,
        offset,
    } = e
    else {
        return ExecError::Sql(e);
    };
    let start = script.len().saturating_sub(rest.len());
    let token = start + usize::try_from(offset).unwrap_or(0).min(rest.len());
    // From the statement's first token to the end of its line or its `;`.
    let skipped = rest.len() - rest.trim_start().len();
    let statement = rest.get(skipped..).unwrap_or_default();
    let end = statement.find(';').map_or(statement.len(), |i| i + 1);
    let (line, column) = line_column(script, token);
    ExecError::At {
        line,
        column,
        statement: quote(statement.get(..end).unwrap_or(statement)),
        source: rusqlite::Error::SqliteFailure(error, Some(msg)),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A statement as an error shows it: one line, at most 200 characters.
fn quote(statement: &str) -> String {
    let one_line: String = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}...", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_splits_into_commands_and_statements() {
        let text = "-- a comment\n.mode csv\nselect 1;\nselect\n  2; select 3;\n.tables\nselect 'a;\nb';\nselect 4";
        assert_eq!(
            units(text),
            vec![
                Unit::Dot(2, ".mode csv"),
                Unit::Sql(3, "select 1;\n".into()),
                Unit::Sql(4, "select\n  2; select 3;\n".into()),
                Unit::Dot(6, ".tables"),
                Unit::Sql(7, "select 'a;\nb';\n".into()),
                Unit::Sql(9, "select 4".into()),
            ]
        );
    }

    #[test]
    fn arguments_split_like_sqlite() {
        let args = split_args(r#".import "my file.csv" 't x' plain\tx"#).ok();
        assert_eq!(
            args,
            Some(vec![
                ".import".to_string(),
                "my file.csv".into(),
                "t x".into(),
                "plain\tx".into()
            ])
        );
        assert!(split_args(".print \"open").is_err());
    }

    #[test]
    fn booleans() {
        assert!(boolean("ON").is_ok_and(|b| b));
        assert!(boolean("0").is_ok_and(|b| !b));
        assert!(boolean("maybe").is_err());
    }
}
