//! `kvlite sql`: run statements, print rows like the `sqlite3` shell's list
//! mode or as JSON lines.

use std::io::{self, BufWriter, IsTerminal, Read, Write};

use anyhow::{Context, Result, anyhow};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Connection, Statement};

use crate::store::{self, Access, GlobalOpts};

const SQL_HELP: &str = "\
A script whose statements are all read-only (SELECT, EXPLAIN, ...: what SQLite
itself calls read-only) runs on a read-only connection: it never takes the database
over, so an application writing to it goes on undisturbed, and each transaction sees
one committed state. Any other script takes the database over (the previous writer is
fenced). --read-only refuses writes outright.

Statements run one after another, each committed on its own (SQLite's autocommit)
unless grouped with BEGIN ... COMMIT. Execution stops at the first error: that
statement changes nothing, statements before it stay committed, and an open
transaction is rolled back. The exit code is then 1.

Output (default, like the sqlite3 shell's list mode): one line per row, columns
separated by '|'; NULL prints as nothing, integers in decimal, reals as SQLite
converts them to text (e.g. 1.5, 2.0, 1.0e+20), text and blobs as their raw bytes.

--json: one JSON object per row (keys are the column names, in column order);
NULL -> null, integers and reals -> numbers, text -> string, blob -> string of
lowercase hex digits. Infinite reals print as strings (\"Inf\", \"-Inf\").";

/// Run SQL statements against a database (created if absent)
#[derive(clap::Args, Debug)]
#[command(after_help = SQL_HELP)]
pub struct SqlArgs {
    /// Database name
    db: String,
    /// Statements separated by ';'. Read from stdin when omitted or '-'
    /// (may start with a `--` comment)
    #[arg(allow_hyphen_values = true)]
    sql: Option<String>,
    /// Print each result row as a JSON object on its own line
    #[arg(long)]
    json: bool,
    /// Open read-only (never take the database over; writes fail). Scripts
    /// of read-only statements open this way by themselves
    #[arg(long)]
    read_only: bool,
    /// Run on the database's legacy v1 data (local stores only) instead
    /// of opening it as v2 (which migrates v1 data first)
    #[arg(long, value_enum, default_value_t)]
    layout: store::Layout,
}

pub fn run(opts: &GlobalOpts, args: SqlArgs) -> Result<()> {
    let sql = match args.sql.as_deref() {
        Some("-") | None => read_stdin()?,
        Some(s) => s.to_string(),
    };
    let store = store::open_store(opts, Access::Create)?;
    let db = args.db.as_str();
    let existed = args.layout == store::Layout::V1 || store.size_if_exists(db)?.is_some();
    let vfs = store.sqlite(args.layout)?;
    let conn = if args.read_only {
        vfs.open_readonly(db)?
    } else if existed && args.layout == store::Layout::V2 {
        // Look first without taking over: a script that only reads runs on
        // this connection.
        let reader = vfs.open_readonly(db)?;
        if only_reads(&reader, &sql) {
            reader
        } else {
            drop(reader);
            vfs.open(db)?
        }
    } else {
        vfs.open(db)?
    };
    let read_only = conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false);

    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut reals = RealFormatter::default();
    let result = execute(&conn, &sql, args.json, &mut out, &mut reals).map_err(|e| match e {
        ExecError::Sql(e) => vfs.error(db, e),
        ExecError::At {
            line,
            column,
            statement,
            source,
        } => anyhow!(
            "line {line}, column {column}: {}\n  {statement}",
            vfs.error(db, source)
        ),
        ExecError::Other(e) => e,
    });
    // Rows printed before an error still go out.
    let flushed = out.flush();
    // Closing the connection rolls back a transaction the SQL left open.
    let open_transaction = !conn.is_autocommit();
    drop(conn);
    if result.is_err() && !existed && store.size_if_exists(db).ok() == Some(Some(0)) {
        // Nothing was committed to a database this command created.
        if let Err(e) = store.transport.delete(db) {
            tracing::warn!(db, error = %e, "cannot remove the empty database");
        }
    }
    match result {
        Err(e) if read_only && args.read_only => Err(anyhow!("{e} (opened with --read-only)")),
        Err(e) if open_transaction => {
            Err(anyhow!("{e}; the open transaction has been rolled back"))
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
            if args.layout == store::Layout::V1 || read_only {
                return Ok(());
            }
            if let Err(e) = store.compact_if_due(db) {
                eprintln!("warning: {e:#}");
            }
            Ok(())
        }
    }
}

/// Whether every statement of `sql` is read-only, as SQLite judges
/// (`sqlite3_stmt_readonly`). Each is only prepared, never run; one that
/// does not prepare (a typo, a missing table) counts as read-only, so the
/// error comes from a connection that took nothing over.
fn only_reads(conn: &Connection, sql: &str) -> bool {
    let mut batch = Batch::new(conn, sql);
    loop {
        match batch.next() {
            Ok(Some(stmt)) if stmt.readonly() => {}
            Ok(Some(_)) => return false,
            Ok(None) | Err(_) => return true,
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

enum ExecError {
    /// From SQLite: reported with the VFS's detailed reason.
    Sql(rusqlite::Error),
    /// A statement of the script failed: where (1-based, in the script) and
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

fn execute(
    conn: &Connection,
    sql: &str,
    json: bool,
    out: &mut impl Write,
    reals: &mut RealFormatter,
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
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(at)? {
            if json {
                out.write_all(b"{")?;
                for (i, name) in columns.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    let value = json_value(row.get_ref(i)?, reals)?;
                    serde_json::to_writer(&mut *out, name).map_err(io::Error::from)?;
                    out.write_all(b":")?;
                    serde_json::to_writer(&mut *out, &value).map_err(io::Error::from)?;
                }
                out.write_all(b"}\n")?;
            } else {
                for i in 0..columns.len() {
                    if i > 0 {
                        out.write_all(b"|")?;
                    }
                    match row.get_ref(i)? {
                        ValueRef::Null => {}
                        ValueRef::Integer(v) => write!(out, "{v}")?,
                        ValueRef::Real(v) => out.write_all(reals.format(v)?.as_bytes())?,
                        ValueRef::Text(b) | ValueRef::Blob(b) => out.write_all(b)?,
                    }
                }
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}

/// A statement that did not compile: located in the script, quoted alone
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

fn json_value(v: ValueRef<'_>, reals: &mut RealFormatter) -> Result<serde_json::Value, ExecError> {
    use serde_json::Value;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None => Value::String(reals.format(f)?),
        },
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(hex(b)),
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// REAL to text exactly as SQLite converts it (what `sqlite3` prints), by
/// asking SQLite: `CAST(x AS TEXT)` on a private in-memory connection, so
/// the kvlite connection is not involved. The connection is leaked (one per
/// process) so its prepared statement can be kept.
#[derive(Default)]
struct RealFormatter {
    stmt: Option<Statement<'static>>,
}

impl RealFormatter {
    fn format(&mut self, v: f64) -> rusqlite::Result<String> {
        let stmt = match &mut self.stmt {
            Some(s) => s,
            None => {
                let conn: &'static Connection = Box::leak(Box::new(Connection::open_in_memory()?));
                self.stmt.insert(conn.prepare("SELECT CAST(?1 AS TEXT)")?)
            }
        };
        stmt.query_row([v], |r| r.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reals_format_like_sqlite() {
        let mut f = RealFormatter::default();
        let cases = [
            (1.5, "1.5"),
            (2.0, "2.0"),
            (-0.25, "-0.25"),
            (100.0, "100.0"),
            (1e20, "1.0e+20"),
            (1e-7, "1.0e-07"),
            (f64::INFINITY, "Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(f.format(v).ok().as_deref(), Some(want), "{v}");
        }
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
