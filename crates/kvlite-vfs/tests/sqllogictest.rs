//! SQLite's sqllogictest scripts, each on a fresh database on the kvlite VFS
//! (embedded store), with SQLite's expected results.
//!
//! Runs every `*.test` in `testdata/sqllogictest/` (a copy of the project's
//! `shared/sqllogictest/`) and in `$KVLITE_SLT_DIR` when set.

mod common;

use std::path::{Path, PathBuf};

use common::{Backend, setup};
use rusqlite::types::ValueRef;
use sqllogictest::{DBOutput, DefaultColumnType};

struct KvliteDb {
    conn: rusqlite::Connection,
}

impl sqllogictest::DB for KvliteDb {
    type Error = rusqlite::Error;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, rusqlite::Error> {
        let mut stmt = self.conn.prepare(sql)?;
        let columns = stmt.column_count();
        if columns == 0 {
            let changed = stmt.execute([])?;
            return Ok(DBOutput::StatementComplete(changed as u64));
        }
        let mut rows = Vec::new();
        let mut cursor = stmt.query([])?;
        while let Some(row) = cursor.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => "NULL".to_string(),
                    ValueRef::Integer(v) => v.to_string(),
                    ValueRef::Real(v) => format!("{v:.3}"),
                    ValueRef::Text(t) if t.is_empty() => "(empty)".to_string(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
                });
            }
            rows.push(values);
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows,
        })
    }

    fn engine_name(&self) -> &str {
        "sqlite"
    }
}

/// The classic corpus lists one value per line and puts comments after
/// `skipif`/`onlyif` conditions, which the parser rejects.
fn adapt(script: &str) -> String {
    let mut out = String::from("control resultmode valuewise\n");
    for line in script.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("skipif") || trimmed.starts_with("onlyif") {
            out.push_str(line.split('#').next().unwrap_or(line).trim_end());
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn test_files() -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sqllogictest")];
    if let Ok(extra) = std::env::var("KVLITE_SLT_DIR") {
        dirs.push(PathBuf::from(extra));
    }
    let mut files = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|x| x == "test") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn sqllogictest_corpus_on_kvlite() {
    let files = test_files();
    assert!(
        files.len() >= 17,
        "expected the 17-file corpus, found {}",
        files.len()
    );
    let s = setup(Backend::Embedded);
    let mut failures = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let vfs = s.vfs.clone();
        let db = format!("slt-{i}");
        let mut runner = sqllogictest::Runner::new(move || {
            let opened = vfs.open(&db).map(|conn| KvliteDb { conn }).map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(e.to_string()),
                )
            });
            async move { opened }
        });
        runner.add_label("sqlite");
        runner.with_hash_threshold(8);
        let script = std::fs::read_to_string(path).expect("read script");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("script")
            .to_string();
        if let Err(e) =
            runner.run_script_with_name(&adapt(&script), std::sync::Arc::from(name.as_str()))
        {
            failures.push(format!("{name}: {}", e.display(false)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
