//! `kvlite dump DB` and the shell's `.dump`: the database as SQL text,
//! written as the `sqlite3` shell (3.40) writes it, so the two can be
//! compared line by line and either rebuilds the database anywhere.

use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result};
use kvlite_vfs::sql_text;
use rusqlite::Connection;

use crate::output::{Printer, Values};
use crate::store::{self, Access, GlobalOpts};

/// Write a database as SQL text (schema and rows) to stdout
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Database name
    db: String,
    /// Only tables, views, indexes and triggers whose name matches these
    /// LIKE patterns
    tables: Vec<String>,
}

pub fn run(opts: &GlobalOpts, args: DumpArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Read)?;
    if store.size_if_exists(&args.db)?.is_none() {
        anyhow::bail!("database {:?} not found", args.db);
    }
    let sqlite = store.sqlite(store::Layout::V2)?;
    // A dump only reads: it never takes the database over.
    let conn = sqlite.open_readonly(&args.db)?;
    let mut out = BufWriter::new(io::stdout().lock());
    dump(&conn, &args.tables, &mut out).map_err(|e| match e.downcast::<rusqlite::Error>() {
        Ok(sql) => sqlite.error(&args.db, sql),
        Err(other) => other,
    })?;
    out.flush().context("cannot write the dump")?;
    Ok(())
}

/// An identifier as SQL: bare when it is a plain word and no keyword,
/// else double-quoted (as `sqlite3` decides).
pub fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !sql_text::is_keyword(name);
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A schema statement as `sqlite3` prints it: a table whose name is
/// quoted is created `IF NOT EXISTS`.
pub fn schema_line(sql: &str) -> String {
    let quoted_table = ["CREATE TABLE '", "CREATE TABLE \""].iter().any(|p| {
        sql.get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    });
    match sql.get(13..) {
        Some(rest) if quoted_table => format!("CREATE TABLE IF NOT EXISTS {rest}"),
        _ => sql.to_string(),
    }
}

/// The dump of `conn`'s main database; only objects whose name is LIKE
/// one of `patterns` when there are any.
pub fn dump(conn: &Connection, patterns: &[String], out: &mut dyn Write) -> Result<()> {
    let filter = if patterns.is_empty() {
        "1".to_string()
    } else {
        patterns
            .iter()
            .map(|p| format!("name LIKE '{}' ESCAPE '\\'", p.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    writeln!(out, "PRAGMA foreign_keys=OFF;")?;
    writeln!(out, "BEGIN TRANSACTION;")?;
    let tables: Vec<(String, String)> = conn
        .prepare(&format!(
            "SELECT name, sql FROM sqlite_schema
             WHERE ({filter}) AND type = 'table' AND sql IS NOT NULL
             ORDER BY tbl_name = 'sqlite_sequence', rowid"
        ))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut printer = Printer::new();
    let mut writable_schema = false;
    for (name, sql) in &tables {
        if name == "sqlite_sequence" {
            writeln!(out, "DELETE FROM sqlite_sequence;")?;
        } else if name.starts_with("sqlite_stat") {
            writeln!(out, "ANALYZE sqlite_schema;")?;
        } else if name.starts_with("sqlite_") {
            continue;
        } else if sql
            .get(..20)
            .is_some_and(|p| p.eq_ignore_ascii_case("CREATE VIRTUAL TABLE"))
        {
            // Its rows belong to its module (and its shadow tables).
            if !writable_schema {
                writeln!(out, "PRAGMA writable_schema=ON;")?;
                writable_schema = true;
            }
            let q = |s: &str| s.replace('\'', "''");
            writeln!(
                out,
                "INSERT INTO sqlite_schema(type,name,tbl_name,rootpage,sql)VALUES('table','{}','{}',0,'{}');",
                q(name),
                q(name),
                q(sql)
            )?;
            continue;
        } else {
            writeln!(out, "{};", schema_line(sql))?;
        }
        let columns: Vec<String> = conn
            .prepare(&format!("PRAGMA table_info({})", ident(name)))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<_>>()?;
        if columns.is_empty() {
            continue;
        }
        let select = columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(",");
        let mut stmt = conn.prepare(&format!("SELECT {select} FROM {}", ident(name)))?;
        let mut rows = stmt.query([])?;
        let table = ident(name);
        while let Some(row) = rows.next()? {
            let values = Values::of(row, columns.len())?;
            write!(out, "INSERT INTO {table} VALUES(")?;
            for (i, v) in values.0.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(&printer.sql_literal(v, true)?)?;
            }
            writeln!(out, ");")?;
        }
    }
    let others: Vec<String> = conn
        .prepare(&format!(
            "SELECT sql FROM sqlite_schema
             WHERE ({filter}) AND sql IS NOT NULL AND type IN ('index', 'trigger', 'view')
             ORDER BY rowid"
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for sql in others {
        writeln!(out, "{};", schema_line(&sql))?;
    }
    if writable_schema {
        writeln!(out, "PRAGMA writable_schema=OFF;")?;
    }
    writeln!(out, "COMMIT;")?;
    Ok(())
}
