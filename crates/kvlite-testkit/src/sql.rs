//! SQL workloads shared by the VFS and server tests: SQLite's sqllogictest
//! corpus, a differential workload against plain SQLite, and a logical dump.
//! Failures panic with a message naming the seed and step (test support).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};

/// Every `*.test` file of the corpus: the repository's copy in
/// `testdata/sqllogictest/` plus `$KVLITE_SLT_DIR` when set.
pub fn corpus_files() -> Vec<PathBuf> {
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

struct SltDb {
    conn: Connection,
}

impl sqllogictest::DB for SltDb {
    type Error = rusqlite::Error;
    type ColumnType = sqllogictest::DefaultColumnType;

    fn run(
        &mut self,
        sql: &str,
    ) -> Result<sqllogictest::DBOutput<Self::ColumnType>, rusqlite::Error> {
        let mut stmt = self.conn.prepare(sql)?;
        let columns = stmt.column_count();
        if columns == 0 {
            let changed = stmt.execute([])?;
            return Ok(sqllogictest::DBOutput::StatementComplete(changed as u64));
        }
        let mut rows = Vec::new();
        let mut cursor = stmt.query([])?;
        while let Some(row) = cursor.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                // The classic corpus formatting.
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => "NULL".to_string(),
                    ValueRef::Integer(v) => v.to_string(),
                    ValueRef::Real(v) => format!("{v:.3}"),
                    ValueRef::Text(b"") => "(empty)".to_string(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
                });
            }
            rows.push(values);
        }
        Ok(sqllogictest::DBOutput::Rows {
            types: vec![sqllogictest::DefaultColumnType::Any; columns],
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

/// Run one sqllogictest file on connections made by `open`; `Err` holds the
/// runner's report.
pub fn run_sqllogictest<F>(path: &Path, open: F) -> Result<(), String>
where
    F: Fn() -> Result<Connection, String> + Send + 'static,
{
    let mut runner = sqllogictest::Runner::new(move || {
        let opened = open().map(|conn| SltDb { conn }).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(e),
            )
        });
        async move { opened }
    });
    runner.add_label("sqlite");
    runner.with_hash_threshold(8);
    let script = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name: Arc<str> = Arc::from(
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("script"),
    );
    runner
        .run_script_with_name(&adapt(&script), name)
        .map_err(|e| e.display(false).to_string())
}

fn render(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => format!("i{i}"),
        ValueRef::Real(r) => format!("r{r:?}"),
        ValueRef::Text(t) => format!("t{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("b{}:{:016x}", b.len(), fnv(b)),
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Rows of a query, each value rendered with its type.
pub fn query(conn: &Connection, sql: &str) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| Ok(render(r.get_ref(i)?))).collect())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A logical dump: the schema, then every table's rows in rowid order.
pub fn dump(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    let schema = query(
        conn,
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
    );
    for row in &schema {
        out.push(row.join(" "));
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("tables");
    for t in tables {
        for row in query(
            conn,
            &format!("SELECT rowid, * FROM \"{t}\" ORDER BY rowid"),
        ) {
            out.push(format!("{t}: {}", row.join(",")));
        }
    }
    out
}

fn execute(conn: &Connection, sql: &str, params: &[Value]) -> Result<usize, String> {
    conn.execute(sql, rusqlite::params_from_iter(params.iter()))
        .map_err(|e| e.to_string())
}

/// Run a random workload on kvlite and on plain SQLite (a local file) side
/// by side — inserts, updates, deletes, indexes, large blobs, explicit
/// transactions with commits and rollbacks, VACUUM, reopening kvlite — and
/// require identical results after every step and `integrity_check` = ok.
pub fn differential(seed: u64, steps: usize, mut open_kvlite: impl FnMut() -> Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = Connection::open(dir.path().join("reference.db")).expect("reference db");
    let mut kv = open_kvlite();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tables = 0u32;
    let mut in_txn = false;
    for step in 0..steps {
        let ctx = format!("differential seed {seed} step {step}");
        let both = |kv: &Connection, sql: &str, params: &[Value]| {
            let a = execute(&reference, sql, params);
            let b = execute(kv, sql, params);
            assert_eq!(
                a.is_ok(),
                b.is_ok(),
                "{ctx}: {sql}: reference {a:?}, kvlite {b:?}"
            );
            // sqlite3_changes() only means something after DML.
            let dml = ["INSERT", "UPDATE", "DELETE"]
                .iter()
                .any(|k| sql.starts_with(k));
            if let (Ok(x), Ok(y), true) = (&a, &b, dml) {
                assert_eq!(x, y, "{ctx}: {sql}: rows changed");
            }
        };
        let table = if tables == 0 { 0 } else { rng.u32(0..tables) };
        match rng.u32(0..100) {
            _ if tables == 0 => {
                both(
                    &kv,
                    "CREATE TABLE t0(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c BLOB)",
                    &[],
                );
                tables = 1;
            }
            0..=3 if tables < 4 && !in_txn => {
                both(
                    &kv,
                    &format!(
                        "CREATE TABLE t{tables}(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c BLOB)"
                    ),
                    &[],
                );
                tables += 1;
            }
            4..=34 => {
                for _ in 0..rng.usize(1..30) {
                    let size = match rng.u32(0..100) {
                        0..=69 => rng.usize(0..300),
                        70..=96 => rng.usize(1000..20_000),
                        _ => rng.usize(100_000..300_000),
                    };
                    let blob: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
                    let a = if rng.u8(..) < 20 {
                        Value::Null
                    } else {
                        Value::Integer(rng.i64(-1000..1000))
                    };
                    let text = Value::Text(format!("row-{}", rng.u32(..)).repeat(rng.usize(0..4)));
                    both(
                        &kv,
                        &format!("INSERT INTO t{table}(a, b, c) VALUES (?, ?, ?)"),
                        &[a, text, Value::Blob(blob)],
                    );
                }
            }
            35..=46 => {
                let m = rng.i64(2..7);
                both(
                    &kv,
                    &format!(
                        "UPDATE t{table} SET a = coalesce(a, 0) + ?, b = b || ? WHERE id % ? = ?"
                    ),
                    &[
                        Value::Integer(rng.i64(-5..5)),
                        Value::Text("u".into()),
                        Value::Integer(m),
                        Value::Integer(rng.i64(0..m)),
                    ],
                );
            }
            47..=54 => {
                let m = rng.i64(2..9);
                both(
                    &kv,
                    &format!("DELETE FROM t{table} WHERE id % ? = ?"),
                    &[Value::Integer(m), Value::Integer(rng.i64(0..m))],
                );
            }
            55..=59 => {
                if rng.bool() {
                    both(
                        &kv,
                        &format!("CREATE INDEX IF NOT EXISTS i{table}a ON t{table}(a, b)"),
                        &[],
                    );
                } else {
                    both(&kv, &format!("DROP INDEX IF EXISTS i{table}a"), &[]);
                }
            }
            60..=69 => {
                if in_txn {
                    let end = if rng.u8(..) < 70 {
                        "COMMIT"
                    } else {
                        "ROLLBACK"
                    };
                    both(&kv, end, &[]);
                    in_txn = false;
                } else {
                    both(&kv, "BEGIN", &[]);
                    in_txn = true;
                }
            }
            70..=72 if !in_txn => both(&kv, "VACUUM", &[]),
            73..=75 if !in_txn => {
                drop(kv);
                kv = open_kvlite();
            }
            _ => {
                let probe =
                    format!("SELECT count(*), sum(a), max(length(c)) FROM t{table} WHERE a > ?");
                let v = rng.i64(-1000..1000);
                let r = query(&reference, &probe.replace('?', &v.to_string()));
                let k = query(&kv, &probe.replace('?', &v.to_string()));
                assert_eq!(r, k, "{ctx}: {probe}");
            }
        }
        assert_eq!(dump(&reference), dump(&kv), "{ctx}: contents differ");
        if step % 25 == 24 {
            assert_eq!(
                query(&kv, "PRAGMA integrity_check"),
                vec![vec!["t\"ok\"".to_string()]],
                "{ctx}"
            );
        }
    }
    if in_txn {
        execute(&reference, "COMMIT", &[]).expect("commit");
        execute(&kv, "COMMIT", &[]).expect("commit");
    }
    drop(kv);
    let kv = open_kvlite();
    assert_eq!(
        dump(&reference),
        dump(&kv),
        "seed {seed}: contents differ after reopening"
    );
    assert_eq!(
        query(&kv, "PRAGMA integrity_check"),
        vec![vec!["t\"ok\"".to_string()]]
    );
}

/// A workload whose every committed state is recognisable, for readers
/// running beside a writer: after commit `n`, table `t` holds rows `1..=n`
/// (row `k` has `v = 7k` and a 1,500-byte blob spreading rows over many
/// pages) and `counter.n = n`.
pub mod states {
    use rusqlite::Connection;

    pub fn create(conn: &Connection) {
        conn.execute_batch(
            "CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER, pad BLOB);
             CREATE TABLE counter(n INTEGER);
             INSERT INTO counter VALUES (0);",
        )
        .expect("create");
    }

    /// Commit state `n` (from state `n - 1`).
    pub fn commit(conn: &Connection, n: i64) {
        conn.execute_batch(&format!(
            "BEGIN;
             INSERT INTO t VALUES ({n}, {n} * 7, randomblob(1500));
             UPDATE t SET v = v + 0 WHERE k = {n} / 2;
             UPDATE counter SET n = {n};
             COMMIT;"
        ))
        .expect("writer commit");
    }

    pub fn counter(conn: &Connection) -> Result<i64, String> {
        conn.query_row("SELECT n FROM counter", [], |r| r.get(0))
            .map_err(|e| e.to_string())
    }

    /// One read transaction: the counter, a full scan, the counter again —
    /// all of it must describe one state. Returns that state's `n`.
    pub fn read_transaction(conn: &Connection) -> Result<i64, String> {
        conn.execute_batch("BEGIN").map_err(|e| e.to_string())?;
        let n = counter(conn)?;
        let (rows, sum, max): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), coalesce(sum(v), 0), coalesce(max(k), 0) FROM t",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| e.to_string())?;
        let again = counter(conn)?;
        conn.execute_batch("COMMIT").map_err(|e| e.to_string())?;
        let want_sum = 7 * n * (n + 1) / 2;
        if (rows, sum, max, again) != (n, want_sum, n, n) {
            return Err(format!(
                "state at counter {n}: {rows} rows, sum {sum} (want {want_sum}), max {max}, counter then {again}"
            ));
        }
        Ok(n)
    }
}
