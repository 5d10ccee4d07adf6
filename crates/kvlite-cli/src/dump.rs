//! `kvlite dump DB`: the database as SQL text, like the `sqlite3` shell's
//! `.dump`: schema and rows in one transaction that rebuilds it anywhere.

use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result};
use rusqlite::Connection;

use crate::store::{self, Access, GlobalOpts};

/// Write a database as SQL text (schema and rows) to stdout
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Database name
    db: String,
}

pub fn run(opts: &GlobalOpts, args: DumpArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Existing)?;
    if store.size_if_exists(&args.db)?.is_none() {
        anyhow::bail!("database {:?} not found", args.db);
    }
    let vfs = store.vfs()?;
    let conn = store::open(&vfs, &args.db)?;
    let mut out = BufWriter::new(io::stdout().lock());
    dump(&conn, &mut out).map_err(|e| match e.downcast::<rusqlite::Error>() {
        Ok(sql) => store::sql_error(&vfs, &args.db, sql),
        Err(other) => other,
    })?;
    out.flush().context("cannot write the dump")?;
    Ok(())
}

/// An identifier as SQL: bare when it is a plain word, else double-quoted.
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The dump of `conn`'s main database.
pub fn dump(conn: &Connection, out: &mut impl Write) -> Result<()> {
    writeln!(out, "PRAGMA foreign_keys=OFF;")?;
    writeln!(out, "BEGIN TRANSACTION;")?;
    let tables: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, sql FROM sqlite_schema
             WHERE type = 'table' AND sql IS NOT NULL AND name NOT LIKE 'sqlite_stat%'
             ORDER BY name = 'sqlite_sequence', rowid",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, sql) in &tables {
        if name == "sqlite_sequence" {
            writeln!(out, "DELETE FROM sqlite_sequence;")?;
        } else {
            writeln!(out, "{sql};")?;
        }
        let columns: Vec<String> = conn
            .prepare(&format!("PRAGMA table_info({})", ident(name)))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<_>>()?;
        if columns.is_empty() {
            continue;
        }
        // quote() renders every value as the SQL literal that reads back
        // the same (reals exactly, blobs as X'..').
        let values = columns
            .iter()
            .map(|c| format!("quote({})", ident(c)))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let mut stmt = conn.prepare(&format!("SELECT {values} FROM {}", ident(name)))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let values: String = row.get(0)?;
            writeln!(out, "INSERT INTO {} VALUES({values});", ident(name))?;
        }
    }
    let others: Vec<String> = conn
        .prepare(
            "SELECT sql FROM sqlite_schema
             WHERE type IN ('index', 'trigger', 'view') AND sql IS NOT NULL
             ORDER BY type = 'trigger', rowid",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for sql in others {
        writeln!(out, "{sql};")?;
    }
    writeln!(out, "COMMIT;")?;
    Ok(())
}
