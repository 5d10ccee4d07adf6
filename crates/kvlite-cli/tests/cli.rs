//! End-to-end tests of the `kvlite` binary: each runs the built executable
//! on its own temporary data directory.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use serde_json::json;

mod common;

use common::{Env, check_ok};

#[test]
fn sql_prints_rows_like_sqlite3() {
    let env = Env::new();
    let out = env.ok(&[
        "sql",
        "app",
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT); \
         INSERT INTO t VALUES (1, 'a'), (2, NULL), (3, 'c|d'); \
         SELECT * FROM t ORDER BY a; SELECT count(*) FROM t",
    ]);
    assert_eq!(out, "1|a\n2|\n3|c|d\n3\n");
    // Values of every type, formatted as SQLite converts them to text.
    let out = env.ok(&[
        "sql",
        "app",
        "SELECT NULL, 42, -7, 1.5, 2.0, 100.0, -0.25, 1e20, 1e-7, 'text', x'6869'",
    ]);
    assert_eq!(out, "|42|-7|1.5|2.0|100.0|-0.25|1.0e+20|1.0e-07|text|hi\n");
    // Statements without results print nothing.
    assert_eq!(
        env.ok(&["sql", "app", "UPDATE t SET b = 'x' WHERE a = 2"]),
        ""
    );
}

#[test]
fn sql_json_rows() {
    let env = Env::new();
    env.ok(&[
        "sql",
        "app",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB); \
         INSERT INTO t VALUES (1, 'one', 1.5, x'00ff10'), (2, NULL, 2.0, NULL)",
    ]);
    let out = env.ok(&[
        "sql",
        "app",
        "SELECT * FROM t ORDER BY id; SELECT 'q\"' AS quote",
        "--jsonl",
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "name": "one", "score": 1.5, "data": "00ff10"}),
            json!({"id": 2, "name": null, "score": 2.0, "data": null}),
            json!({"quote": "q\""}),
        ]
    );
    // Keys keep column order.
    assert!(out.starts_with(r#"{"id":1,"name":"one","score":1.5,"data":"00ff10"}"#));
}

#[test]
fn sql_from_stdin() {
    let env = Env::new();
    let out = env.run_stdin(
        &["sql", "app"],
        "CREATE TABLE t(x);\nINSERT INTO t VALUES (1), (2);\n-- a comment\nSELECT sum(x) FROM t;\n",
    );
    assert_eq!(check_ok(&["sql", "app"], out), "3\n");
    let out = env.run_stdin(&["sql", "app", "-"], "SELECT count(*) FROM t");
    assert_eq!(check_ok(&["sql", "app", "-"], out), "2\n");
}

#[test]
fn sql_errors_change_nothing() {
    let env = Env::new();
    env.ok(&[
        "sql",
        "app",
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b')",
    ]);
    let before = env.ok(&["sql", "app", "SELECT * FROM t ORDER BY a"]);

    let err = env.fail(&["sql", "app", "INSERT INTO t VALUES (3, 'c',)"]);
    assert!(err.contains("syntax error"), "{err}");
    let err = env.fail(&["sql", "app", "SELEC * FROM t"]);
    assert!(err.contains("syntax error"), "{err}");
    // A failing statement changes nothing, even when part of it ran.
    let err = env.fail(&["sql", "app", "INSERT INTO t VALUES (4, 'd'), (1, 'dup')"]);
    assert!(err.contains("UNIQUE constraint failed"), "{err}");
    // An explicit transaction cut short by an error is rolled back.
    let err = env.fail(&[
        "sql",
        "app",
        "BEGIN; INSERT INTO t VALUES (5, 'e'); INSERT INTO t VALUES (6, 'f'); \
         INSERT INTO nope VALUES (1); COMMIT",
    ]);
    assert!(err.contains("no such table: nope"), "{err}");
    let err = env.fail(&["sql", "app", "SELECT * FROM missing"]);
    assert!(err.contains("no such table"), "{err}");

    assert_eq!(
        env.ok(&["sql", "app", "SELECT * FROM t ORDER BY a"]),
        before
    );
    assert_eq!(
        env.ok(&["sql", "app", "PRAGMA integrity_check"]),
        "ok\n",
        "database still healthy"
    );
}

#[test]
fn data_persists_across_processes() {
    let env = Env::new();
    env.ok(&["sql", "app", "CREATE TABLE t(x)"]);
    for i in 0..5 {
        env.ok(&["sql", "app", &format!("INSERT INTO t VALUES ({i})")]);
    }
    env.ok(&[
        "sql",
        "other",
        "CREATE TABLE u(y); INSERT INTO u VALUES ('u')",
    ]);
    assert_eq!(
        env.ok(&["sql", "app", "SELECT group_concat(x) FROM t"]),
        "0,1,2,3,4\n"
    );
    assert_eq!(env.ok(&["sql", "other", "SELECT * FROM u"]), "u\n");
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A database with several tables (one WITHOUT ROWID, one AUTOINCREMENT),
/// an index, a view, a trigger, NULLs and blobs from empty to overflow
/// chains. `rows` = 2500 makes about 5 MB.
fn build_source(path: &Path, page_size: Option<u32>, wal: bool, rows: i64) -> Connection {
    let conn = Connection::open(path).expect("open source");
    if let Some(ps) = page_size {
        conn.execute_batch(&format!("PRAGMA page_size = {ps}"))
            .expect("page size");
    }
    if wal {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
            .expect("no checkpoints");
    }
    conn.execute_batch(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, data BLOB, note TEXT);
         CREATE INDEX items_name ON items(name);
         CREATE TABLE tags(item INTEGER, tag TEXT, PRIMARY KEY(item, tag)) WITHOUT ROWID;
         CREATE TABLE log(seq INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER, what TEXT);
         CREATE TRIGGER items_log AFTER INSERT ON items BEGIN
             INSERT INTO log(item, what) VALUES (new.id, 'insert');
         END;
         CREATE VIEW heavy AS SELECT id, name, length(data) AS len FROM items WHERE length(data) > 2000;",
    )
    .expect("schema");
    conn.execute_batch("BEGIN").expect("begin");
    {
        let mut item = conn
            .prepare("INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5)")
            .expect("prepare");
        let mut tag = conn
            .prepare("INSERT INTO tags VALUES (?1, ?2)")
            .expect("prepare");
        for i in 1..=rows {
            let score = (i % 5 != 0).then_some(i as f64 * 0.5 + 0.25);
            let data = match i {
                _ if i % 11 == 0 => None,
                _ if i % 500 == 0 => Some(bytes(i as u64, 20_000)),
                _ if i % 13 == 0 => Some(Vec::new()),
                _ => Some(bytes(i as u64, (i * 7919 % 4000) as usize)),
            };
            let note = (i % 3 != 0).then(|| format!("note {i} ünïcödé"));
            item.execute(rusqlite::params![
                i,
                format!("item-{i:05}"),
                score,
                data,
                note
            ])
            .expect("insert item");
            if i % 4 == 0 {
                for t in ["red", "blue"] {
                    tag.execute(rusqlite::params![i, t]).expect("insert tag");
                }
            }
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
    conn
}

type Dump = (Vec<Vec<Value>>, Vec<(String, Vec<Vec<Value>>)>);

/// The schema and every table's rows, in a stable order.
fn dump(path: &Path) -> Dump {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open for dump");
    let all = |sql: &str| -> rusqlite::Result<Vec<Vec<Value>>> {
        let mut stmt = conn.prepare(sql)?;
        let n = stmt.column_count();
        let rows = stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?;
        rows.collect()
    };
    let schema =
        all("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").expect("schema");
    let mut tables = Vec::new();
    for row in &schema {
        let (Value::Text(kind), Value::Text(name)) = (&row[0], &row[1]) else {
            panic!("schema row {row:?}");
        };
        if kind != "table" {
            continue;
        }
        let rows = all(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .or_else(|_| all(&format!("SELECT * FROM \"{name}\" ORDER BY 1, 2")))
            .expect("table rows");
        tables.push((name.clone(), rows));
    }
    (schema, tables)
}

fn assert_integrity(path: &Path) {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "delete");
}

#[test]
fn import_export_round_trip() {
    let env = Env::new();
    let src = env.path("source.sqlite");
    drop(build_source(&src, None, false, 2500));
    let size = std::fs::metadata(&src).expect("source").len();
    assert!(size > 4 << 20, "source is {size} bytes");
    let original = dump(&src);
    let src_bytes = std::fs::read(&src).expect("read source");

    let out = env.ok(&["import", "app", "source.sqlite"]);
    assert!(
        out.starts_with("imported source.sqlite into app: "),
        "{out}"
    );
    assert!(out.contains(&format!("{size} bytes")), "{out}");
    assert_eq!(
        std::fs::read(&src).expect("read"),
        src_bytes,
        "source untouched"
    );

    // Embedded, the CLI compacts: the import's one large delta is folded
    // (and kept, with its record, for reads in the past inside the window).
    let stat: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "app", "--json"])).expect("JSON");
    assert_eq!(stat["size_bytes"], size);
    assert!(stat["deltas"].as_u64().expect("deltas") <= 1, "{stat}");
    assert_eq!(stat["page_index_entries"], 0, "{stat}");
    assert!(stat["shards"].as_u64().expect("shards") > 0, "{stat}");

    // The data is usable through SQL, triggers included.
    assert_eq!(
        env.ok(&[
            "sql",
            "app",
            "SELECT count(*) FROM items; SELECT count(*) FROM log"
        ]),
        "2500\n2500\n"
    );
    assert_eq!(
        env.ok(&["sql", "app", "SELECT count(*) FROM heavy"]),
        env.ok(&[
            "sql",
            "app",
            "SELECT count(*) FROM items WHERE length(data) > 2000"
        ])
    );

    let out = env.ok(&["export", "app", "copy.sqlite"]);
    assert!(out.starts_with("exported app to copy.sqlite: "), "{out}");
    let copy = env.path("copy.sqlite");
    assert_integrity(&copy);
    assert_eq!(dump(&copy), original);
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp") || n.ends_with("-journal"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// An import killed (`kill -9`) while its parts land leaves a blank
/// database with an unfinished large commit whose whole shards were stored
/// in place; the next import takes it over, removes them with the parts
/// and lands the copy, and the store holds nothing else (the audit counts
/// every shard chunk against its record).
#[test]
fn an_import_killed_midway_is_cleaned_up_by_the_next() {
    let mut caught = false;
    for _ in 0..3 {
        let env = Env::new();
        let src = env.path("source.sqlite");
        drop(build_source(&src, None, false, 20_000));
        let mut child = env
            .command(&["import", "app", "source.sqlite"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the import");
        let wal = env.data().join("kvlite.sqlite3-wal");
        let started = std::time::Instant::now();
        while std::fs::metadata(&wal).map_or(0, |m| m.len()) < 8 << 20
            && started.elapsed() < std::time::Duration::from_secs(60)
            && child.try_wait().expect("wait").is_none()
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let stat: serde_json::Value =
            serde_json::from_str(&env.ok(&["inspect", "app", "--json"])).expect("JSON");
        if stat["pending_commits"] != 1 {
            continue; // killed before its reservation or after its finish
        }
        caught = true;
        assert_eq!(stat["size_bytes"], 0, "{stat}");
        // A smaller file this time: shards the killed import stored past
        // its end would stay if the takeover did not remove them.
        let small = env.path("small.sqlite");
        drop(build_source(&small, None, false, 2_500));
        let original = dump(&small);
        let out = env.ok(&["import", "app", "small.sqlite"]);
        assert!(out.starts_with("imported small.sqlite into app: "), "{out}");
        let stat: serde_json::Value =
            serde_json::from_str(&env.ok(&["inspect", "app", "--json"])).expect("JSON");
        assert_eq!(stat["pending_commits"], 0, "{stat}");
        common::assert_doctor_healthy(&["--data", env.data().to_str().expect("utf-8")], "app");
        env.ok(&["export", "app", "copy.sqlite"]);
        assert_eq!(dump(&env.path("copy.sqlite")), original);
        break;
    }
    assert!(caught, "no import was killed while its parts landed");
}

/// Bytes past a file's last page (a partial page, space SQLite
/// preallocated) are not the database's: the import copies its pages and
/// its check compares those.
#[test]
fn import_ignores_bytes_past_the_last_page() {
    let env = Env::new();
    let src = env.path("tail.sqlite");
    drop(build_source(&src, None, false, 300));
    let original = dump(&src);
    let pages = std::fs::metadata(&src).expect("source").len() / 4096;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&src)
        .expect("open");
    std::io::Write::write_all(&mut f, &[0xAB; 1000]).expect("append");
    drop(f);
    let out = env.ok(&["import", "app", "tail.sqlite"]);
    assert!(out.contains(&format!("{pages} pages")), "{out}");
    assert_eq!(env.ok(&["sql", "app", "PRAGMA integrity_check"]), "ok\n");
    env.ok(&["export", "app", "copy.sqlite"]);
    assert_eq!(dump(&env.path("copy.sqlite")), original);
}

#[test]
fn import_converts_8k_pages() {
    let env = Env::new();
    let src = env.path("big-pages.sqlite");
    drop(build_source(&src, Some(8192), false, 400));
    let original = dump(&src);
    env.ok(&["import", "app", "big-pages.sqlite"]);
    assert_eq!(env.ok(&["sql", "app", "PRAGMA page_size"]), "4096\n");
    assert_eq!(env.ok(&["sql", "app", "PRAGMA integrity_check"]), "ok\n");
    env.ok(&["export", "app", "copy.sqlite"]);
    assert_integrity(&env.path("copy.sqlite"));
    assert_eq!(dump(&env.path("copy.sqlite")), original);
}

#[test]
fn import_wal_source_with_live_writer() {
    let env = Env::new();
    let src = env.path("wal.sqlite");
    // The writer stays open with every change still in the -wal file.
    let writer = build_source(&src, None, true, 300);
    assert!(env.path("wal.sqlite-wal").exists());
    let original = dump(&src);
    env.ok(&["import", "app", "wal.sqlite"]);
    assert_eq!(env.ok(&["sql", "app", "PRAGMA journal_mode"]), "memory\n");
    env.ok(&["export", "app", "copy.sqlite"]);
    assert_integrity(&env.path("copy.sqlite"));
    assert_eq!(dump(&env.path("copy.sqlite")), original);
    drop(writer);

    // A closed WAL database (no -wal file): imported, and no side files left.
    assert!(!env.path("wal.sqlite-wal").exists());
    env.ok(&["import", "again", "wal.sqlite"]);
    assert_eq!(
        env.ok(&["sql", "again", "SELECT count(*) FROM items"]),
        "300\n"
    );
    assert!(!env.path("wal.sqlite-wal").exists());
    assert!(!env.path("wal.sqlite-shm").exists());
}

#[test]
fn import_rejects_bad_files() {
    let env = Env::new();
    let real = env.path("real.sqlite");
    drop(build_source(&real, None, false, 200));
    let real_bytes = std::fs::read(&real).expect("read");

    std::fs::write(env.path("notes.txt"), "just some text\n").expect("write");
    std::fs::write(env.path("truncated.sqlite"), &real_bytes[..1000]).expect("write");
    std::fs::write(env.path("empty.sqlite"), b"").expect("write");
    // Right header and length, garbage pages.
    let mut corrupt = real_bytes.clone();
    for (i, b) in corrupt[4096..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    std::fs::write(env.path("corrupt.sqlite"), &corrupt).expect("write");
    // Longer than one commit can hold (sparse: nothing is written).
    std::fs::copy(&real, env.path("huge.sqlite")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(env.path("huge.sqlite"))
        .and_then(|f| f.set_len(1_200 << 20))
        .expect("extend");

    let cases = [
        ("huge.sqlite", "one kvlite commit holds at most"),
        ("notes.txt", "not a SQLite database"),
        ("truncated.sqlite", "truncated"),
        ("empty.sqlite", "empty"),
        ("corrupt.sqlite", "not a valid SQLite database"),
        ("missing.sqlite", "cannot open missing.sqlite"),
        (".", "not a regular file"),
    ];
    for (file, expected) in cases {
        let err = env.fail(&["import", "app", file]);
        assert!(err.contains(expected), "{file}: {err}");
        assert_eq!(
            env.ls(),
            Vec::<String>::new(),
            "{file}: no database created"
        );
    }
}

#[test]
fn import_needs_force_to_replace() {
    let env = Env::new();
    let src = env.path("source.sqlite");
    drop(build_source(&src, None, false, 100));
    env.ok(&[
        "sql",
        "app",
        "CREATE TABLE old(x); INSERT INTO old VALUES (1)",
    ]);
    let err = env.fail(&["import", "app", "source.sqlite"]);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(env.ok(&["sql", "app", "SELECT * FROM old"]), "1\n");

    env.ok(&["import", "app", "source.sqlite", "--force"]);
    assert_eq!(
        env.ok(&[
            "sql",
            "app",
            "SELECT name FROM sqlite_master WHERE name = 'old'"
        ]),
        ""
    );
    assert_eq!(
        env.ok(&["sql", "app", "SELECT count(*) FROM items"]),
        "100\n"
    );

    // Replacing with a smaller database shrinks it.
    let tiny = Connection::open(env.path("tiny.sqlite")).expect("open");
    tiny.execute_batch("CREATE TABLE only(x); INSERT INTO only VALUES ('small')")
        .expect("tiny");
    drop(tiny);
    env.ok(&["import", "app", "tiny.sqlite", "--force"]);
    assert_eq!(
        env.ok(&[
            "sql",
            "app",
            "SELECT * FROM only; PRAGMA page_count; PRAGMA integrity_check"
        ]),
        "small\n2\nok\n"
    );
    let stat: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "app", "--json"])).expect("JSON");
    assert_eq!(stat["size_pages"], 2);
}

#[test]
fn export_refuses_to_overwrite() {
    let env = Env::new();
    env.ok(&["sql", "app", "CREATE TABLE t(x); INSERT INTO t VALUES (42)"]);
    std::fs::write(env.path("taken.sqlite"), "keep me").expect("write");
    let err = env.fail(&["export", "app", "taken.sqlite"]);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(env.path("taken.sqlite")).expect("read"),
        "keep me"
    );

    env.ok(&["export", "app", "taken.sqlite", "--force"]);
    assert_integrity(&env.path("taken.sqlite"));
    let conn = Connection::open(env.path("taken.sqlite")).expect("open");
    let x: i64 = conn
        .query_row("SELECT x FROM t", [], |r| r.get(0))
        .expect("row");
    assert_eq!(x, 42);

    let err = env.fail(&["export", "nope", "other.sqlite"]);
    assert!(err.contains("not found"), "{err}");
    assert!(!env.path("other.sqlite").exists());
}

#[test]
fn inspect_reports_size() {
    let env = Env::new();
    env.ok(&[
        "sql",
        "app",
        "CREATE TABLE t(x); \
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200) \
         INSERT INTO t SELECT randomblob(1000) FROM c",
    ]);
    let page_count: u64 = env
        .ok(&["sql", "app", "PRAGMA page_count"])
        .trim()
        .parse()
        .expect("page count");
    assert!(page_count > 40, "{page_count}");

    let stat: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "app", "--json"])).expect("JSON");
    assert_eq!(stat["name"], "app");
    assert_eq!(stat["size_pages"], page_count);
    assert_eq!(stat["page_size"], 4096);
    assert_eq!(stat["size_bytes"], page_count * 4096);
    assert!(stat["used_bytes"].as_u64().expect("used") > 0);
    assert!(
        stat["created"]
            .as_str()
            .is_some_and(|c| c.ends_with('Z') && c.contains('T')),
        "{stat}"
    );

    let table = env.ok(&["inspect", "app"]);
    assert!(
        table.contains(&format!("{page_count} pages, {} bytes", page_count * 4096)),
        "{table}"
    );
    for label in [
        "generation",
        "head txid",
        "deltas",
        "shards",
        "used",
        "created",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(label)),
            "{label}: {table}"
        );
    }

    // In plain words: what a generation, the materialized txid and the
    // fast path are.
    for words in ["writer is fenced", "folded into shards", "several messages"] {
        assert!(table.contains(words), "{words}: {table}");
    }

    let err = env.fail(&["inspect", "nope"]);
    assert!(err.contains("\"nope\" not found"), "{err}");
    let err = env.fail(&["inspect", "nope", "--json"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn ls_and_rm() {
    let env = Env::new();
    let err = env.fail(&["ls"]);
    assert!(err.contains("does not exist"), "{err}");
    for db in ["beta", "alpha", "alphabet", "gamma"] {
        env.ok(&["sql", db, "CREATE TABLE t(x)"]);
    }
    assert_eq!(env.ok(&["ls"]), "alpha\nalphabet\nbeta\ngamma\n");
    assert_eq!(env.ok(&["ls", "alp"]), "alpha\nalphabet\n");
    assert_eq!(env.ok(&["ls", "zzz"]), "");
    let names: Vec<String> = serde_json::from_str(&env.ok(&["ls", "--json"])).expect("JSON array");
    assert_eq!(names, ["alpha", "alphabet", "beta", "gamma"]);
    assert_eq!(env.ok(&["ls", "zzz", "--json"]).trim(), "[]");

    assert_eq!(env.ok(&["rm", "beta"]), "");
    assert_eq!(env.ok(&["ls"]), "alpha\nalphabet\ngamma\n");
    let err = env.fail(&["rm", "beta"]);
    assert!(err.contains("\"beta\" not found"), "{err}");
    let err = env.fail(&["inspect", "beta"]);
    assert!(err.contains("not found"), "{err}");
    // A removed name starts over empty.
    assert_eq!(
        env.ok(&["sql", "beta", "SELECT count(*) FROM sqlite_master"]),
        "0\n"
    );
}

#[test]
fn many_databases_list_across_pages() {
    let env = Env::new();
    env.ok(&["sql", "seed", "SELECT 1"]);
    {
        // Create names directly through the engine: 2500 `kvlite sql` runs
        // would be slow.
        let kv = kvlite_kv::Kv::open_embedded(&env.data()).expect("open store");
        let engine = kvlite_engine::Engine::new(
            kv,
            kvlite_engine::EngineConfig::default(),
            &mut prometheus_client::registry::Registry::default(),
        );
        for i in 0..2500 {
            engine
                .open(&format!("db-{i:04}"), &kvlite_engine::Preload::default())
                .expect("create");
        }
    }
    let out = env.ok(&["ls", "db-"]);
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 2500);
    assert_eq!(names[0], "db-0000");
    assert_eq!(names[2499], "db-2499");
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(env.ok(&["ls"]).lines().count(), 2501);
}

#[test]
fn second_process_is_told_the_store_is_in_use() {
    let env = Env::new();
    env.ok(&["sql", "app", "CREATE TABLE t(x)"]);
    let _held = kvlite_kv::Kv::open_embedded(&env.data()).expect("hold the store");
    let data = env.data().display().to_string();
    for args in [
        &["sql", "app", "SELECT 1"][..],
        &["ls"][..],
        &["inspect", "app"][..],
    ] {
        let err = env.fail(&[&["--busy-timeout", "0"][..], args].concat());
        assert!(
            err.contains(&format!(
                "data directory {data} is in use by another process"
            )),
            "{err}"
        );
        assert!(err.contains("--server"), "{err}");
    }
}

#[test]
fn help_and_version() {
    let env = Env::new();
    let help = env.ok(&["--help"]);
    for cmd in ["sql", "import", "export", "inspect", "ls", "rm", "--data"] {
        assert!(help.contains(cmd), "{cmd}: {help}");
    }
    for cmd in ["sql", "import", "export", "inspect", "ls", "rm"] {
        let help = env.ok(&[cmd, "--help"]);
        assert!(help.contains("Usage: kvlite"), "{help}");
    }
    assert!(env.ok(&["--version"]).starts_with("kvlite "));
    // Usage errors come from clap: exit code 2.
    let out = env.run(&["sql"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_repeats_the_whole_suite() {
    let env = Env::new();
    let scratch = env.path("scratch");
    let out = env.ok(&[
        "bench",
        "--tiny",
        "--workloads",
        "txn_1mib_tiny",
        "--runs",
        "1",
        "--repeat",
        "3",
        "--json",
        "--dir",
        scratch.to_str().expect("path"),
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(rows.len() >= 4, "{out}");
    for row in &rows {
        // One run per pass, three passes: one row per system.
        assert_eq!(row["runs"].as_u64(), Some(3), "{row}");
        let (min, median, max) = (
            row["min_ms"].as_f64().expect("min"),
            row["median_ms"].as_f64().expect("median"),
            row["max_ms"].as_f64().expect("max"),
        );
        assert!(min <= median && median <= max, "{row}");
    }
    let e = env.fail(&["bench", "engine", "--repeat", "2"]);
    assert!(e.contains("sqlite suite only"), "{e}");
    let refused = env.run(&["bench", "--repeat", "0"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("repeat"));
}

#[test]
fn bench_reports_json_and_markdown() {
    let env = Env::new();
    let scratch = env.path("scratch");
    let report = env.path("report.md");
    let out = env.ok(&[
        "bench",
        "--tiny",
        "--workloads",
        "empty_rtt,txn_1mib_tiny",
        "--runs",
        "1",
        "--json",
        "--dir",
        scratch.to_str().expect("path"),
        "--out",
        report.to_str().expect("path"),
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let mut keys: Vec<&str> = vec![
        "bytes_written",
        "max_ms",
        "median_ms",
        "min_ms",
        "ratio_to_best_sqlite",
        "ratio_v1_to_v2",
        "round_trips",
        "runs",
        "store_round_trips",
        "system",
        "workload",
    ];
    keys.sort_unstable();
    let mut seen = Vec::new();
    for row in &rows {
        let obj = row.as_object().expect("object");
        let mut got: Vec<&str> = obj.keys().map(String::as_str).collect();
        got.sort_unstable();
        assert_eq!(got, keys, "{row}");
        let system = row["system"].as_str().expect("system");
        let workload = row["workload"].as_str().expect("workload");
        // An empty round trip is short, so it runs many times per run.
        let runs = row["runs"].as_u64().expect("runs");
        assert!(
            if workload == "empty_rtt" {
                runs >= 1
            } else {
                runs == 1
            },
            "{row}"
        );
        assert!(row["median_ms"].as_f64().expect("median") > 0.0);
        assert!(row["ratio_to_best_sqlite"].as_f64().expect("ratio") > 0.0);
        if system.starts_with("sqlite_") {
            assert!(row["round_trips"].is_null(), "{row}");
        } else {
            assert!(
                row["round_trips"].as_u64().expect("round trips") >= 1,
                "{row}"
            );
        }
        // Round trips to the store: none is a network away here.
        assert!(row["store_round_trips"].is_null(), "{row}");
        // Bytes written repeat run to run where times do not: every
        // system that writes from this process reports them.
        assert!(row["bytes_written"].as_u64().is_some(), "{row}");
        seen.push((workload.to_string(), system.to_string()));
    }
    for w in ["empty_rtt", "txn_1mib_tiny"] {
        for s in [
            "sqlite_wal",
            "sqlite_delete",
            "kvlite_embedded",
            "kvlite_server",
        ] {
            assert!(
                seen.contains(&(w.to_string(), s.to_string())),
                "{w} on {s} missing: {seen:?}"
            );
        }
    }
    let md = std::fs::read_to_string(&report).expect("report");
    assert!(
        md.contains("empty_rtt") && md.contains("txn_1mib_tiny") && md.contains(".svg"),
        "{md}"
    );
    let svg = std::fs::read_dir(env.dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "svg"))
        .expect("an SVG chart beside the report");
    assert!(
        std::fs::read_to_string(svg.path())
            .expect("svg")
            .contains("<svg")
    );

    // An existing report is kept unless --force says otherwise.
    let again = [
        "bench",
        "--tiny",
        "--workloads",
        "empty_rtt",
        "--runs",
        "1",
        "--dir",
        scratch.to_str().expect("path"),
        "--out",
        report.to_str().expect("path"),
    ];
    let e = env.fail(&again);
    assert!(e.contains("already exists; use --force"), "{e}");
    assert_eq!(std::fs::read_to_string(&report).expect("report"), md);
    let mut forced = again.to_vec();
    forced.push("--force");
    env.ok(&forced);
    let md = std::fs::read_to_string(&report).expect("report");
    assert!(
        md.contains("empty_rtt") && !md.contains("txn_1mib_tiny"),
        "{md}"
    );

    // Bad arguments are refused before any work.
    let refused = env.run(&["bench", "--latency-ms", "99999999999"]);
    assert!(!refused.status.success());
    env.fail(&[
        "bench",
        "nonsense",
        "--dir",
        scratch.to_str().expect("path"),
    ]);
    env.fail(&[
        "bench",
        "--workloads",
        "nope",
        "--dir",
        scratch.to_str().expect("path"),
    ]);
    env.fail(&["bench", "engine", "--json"]);
}

/// The engine, round-trip and compaction suites run and report what they
/// measure (quick sizes; the numbers themselves are not asserted).
#[test]
fn bench_suites_run() {
    let env = Env::new();
    let run = |suite: &str| -> Vec<Vec<String>> {
        let scratch = env.path(&format!("scratch-{suite}"));
        let out = env.ok(&[
            "bench",
            suite,
            "--quick",
            "--dir",
            scratch.to_str().expect("path"),
        ]);
        assert!(!scratch.exists(), "{suite}: scratch directory left behind");
        out.lines()
            .skip(1)
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect()
            })
            .collect()
    };
    let rtt = run("rtt");
    assert_eq!(rtt.len(), 3, "{rtt:?}");
    assert!(rtt.iter().all(|r| r.len() == 5), "{rtt:?}");

    let engine = run("engine");
    assert_eq!(engine.len(), 9, "{engine:?}");
    for row in &engine {
        let median: f64 = row[2].parse().expect("median ms");
        assert!(median > 0.0, "{row:?}");
    }

    let compaction = run("compaction");
    let full = compaction
        .iter()
        .find(|r| r[0] == "one full pass")
        .expect("a full pass row");
    // Columns: what, p50, p99, total s, deltas, pidx, used MiB, used/live, ...
    assert_eq!((full[4].as_str(), full[5].as_str()), ("0", "0"), "{full:?}");
    let used_over_live: f64 = full[7].parse().expect("used/live");
    assert!(used_over_live < 1.2, "{full:?}");

    let many = run("many");
    // Columns: system, writers, commits/s, vs 1 writer, p50, p99.
    let rows: Vec<(&str, &str)> = many
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("sqlite_wal", "1"),
            ("sqlite_wal", "8"),
            ("sqlite_wal", "64"),
            ("kvlite_embedded", "1"),
            ("kvlite_embedded", "8"),
            ("kvlite_embedded", "64"),
        ],
        "{many:?}"
    );
    for row in &many {
        assert!(row[2].parse::<f64>().expect("commits/s") > 0.0, "{row:?}");
    }

    let scale = run("scale");
    // Columns: store, databases, commits, idle p50/p99, load p50/p99, RSS,
    // peak RSS, max deltas.
    assert_eq!(scale.len(), 1, "{scale:?}");
    let row: Vec<&str> = scale[0].iter().flat_map(|c| c.split_whitespace()).collect();
    assert_eq!((row[0], row[1]), ("embedded", "500"), "{row:?}");
    assert!(row[2].parse::<u64>().expect("commits") > 0, "{row:?}");
    assert!(row[7].parse::<f64>().expect("RSS MiB") > 0.0, "{row:?}");

    let migration = run("migration");
    let steps: Vec<&str> = migration.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        steps,
        ["import as v2", "import as v1", "migrate v1 to v2"],
        "{migration:?}"
    );
    for row in &migration {
        // Columns: step, MiB, seconds, MB/s, disk MiB.
        let mib: f64 = row[1].parse().expect("MiB");
        assert!((15.0..17.0).contains(&mib), "{row:?}");
        assert!(row[3].parse::<f64>().expect("MB/s") > 0.0, "{row:?}");
    }
}

/// The v1 workflow from the command line: store a SQLite file as v1, read
/// and write it as v1, see its layout, dry-run and run the migration (or
/// let an open do it), purge the v1 data, and the errors on the way.
#[test]
fn v1_databases_from_the_command_line() {
    let env = Env::new();
    let file = env.path("legacy.db");
    {
        let c = Connection::open(&file).unwrap();
        c.execute_batch(
            "PRAGMA page_size = 1024; CREATE TABLE t(a, b); CREATE INDEX tb ON t(b);
             WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 300)
             INSERT INTO t SELECT n, hex(randomblob(100)) FROM s;",
        )
        .unwrap();
    }
    let f = file.to_str().unwrap();
    let out = env.ok(&["import", "--layout", "v1", "old", f]);
    assert!(out.contains("as v1"), "{out}");
    env.ok(&["import", "--layout", "v1", "other", f]);
    env.ok(&["sql", "native", "CREATE TABLE n(x)"]);
    assert_eq!(
        env.ok(&["ls", "--long"]),
        "native\tv2\nold\tv1\nother\tv1\n"
    );
    let listed: serde_json::Value = serde_json::from_str(&env.ok(&["ls", "-l", "--json"])).unwrap();
    assert_eq!(listed[1], json!({"name": "old", "layout": "v1"}));
    // SQLite directly on the v1 data.
    env.ok(&[
        "sql",
        "--layout",
        "v1",
        "old",
        "INSERT INTO t VALUES (301, 'x')",
    ]);
    assert_eq!(
        env.ok(&["sql", "--layout", "v1", "old", "SELECT count(*) FROM t"]),
        "301\n"
    );
    let err = env.fail(&["import", "--layout", "v1", "old", f]);
    assert!(err.contains("already exists"), "{err}");
    // A dry run reports and changes nothing.
    let out = env.ok(&["migrate", "old", "--dry-run"]);
    assert!(out.starts_with("would migrate old:"), "{out}");
    assert!(out.contains("page size 1024 converted"), "{out}");
    assert!(env.ok(&["ls", "-l"]).contains("old\tv1\n"));
    let out = env.ok(&["migrate", "old"]);
    assert!(out.starts_with("migrated old:"), "{out}");
    assert!(env.ok(&["ls", "-l"]).contains("old\tv2\n"));
    assert_eq!(env.ok(&["sql", "old", "SELECT count(*) FROM t"]), "301\n");
    let inspect = env.ok(&["inspect", "old"]);
    assert!(inspect.contains("migrated-from-v1"), "{inspect}");
    // Migrated v1 data is read-only.
    let err = env.fail(&[
        "sql",
        "--layout",
        "v1",
        "old",
        "INSERT INTO t VALUES (0, 0)",
    ]);
    assert!(
        err.contains("read-only") || err.contains("readonly"),
        "{err}"
    );
    // Opening as v2 migrates too.
    assert_eq!(env.ok(&["sql", "other", "SELECT count(*) FROM t"]), "300\n");
    assert!(env.ok(&["migrate", "other"]).contains("already v2"));
    // Purge: every migrated database's v1 data goes; the v2 data stays.
    let out = env.ok(&["migrate", "--all", "--purge-v1"]);
    assert_eq!(out.matches("v1 data removed").count(), 2, "{out}");
    assert_eq!(env.ok(&["sql", "old", "SELECT count(*) FROM t"]), "301\n");
    assert_eq!(env.ok(&["migrate", "--all"]), "");
    // Errors.
    let junk = env.path("junk.db");
    std::fs::write(&junk, b"not a database at all").unwrap();
    let err = env.fail(&["import", "--layout", "v1", "junk", junk.to_str().unwrap()]);
    assert!(err.contains("not a SQLite database"), "{err}");
    let err = env.fail(&["migrate", "nothing"]);
    assert!(err.contains("not found"), "{err}");
    let err = env.fail(&["migrate", "native", "--purge-v1"]);
    assert!(err.contains("not been migrated"), "{err}");
}

/// A v1 database whose data is damaged: the migration names the database
/// and the reason, exits 1, and the v1 data stays as it was.
#[test]
fn a_damaged_v1_database_is_reported_and_kept() {
    let env = Env::new();
    let file = env.path("d.db");
    {
        let c = Connection::open(&file).unwrap();
        c.execute_batch(
            "CREATE TABLE t(x);
             WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 200)
             INSERT INTO t SELECT randomblob(500) FROM s;",
        )
        .unwrap();
    }
    // A b-tree page turned to noise before the import.
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[4096 * 2 + 100..4096 * 3] {
        *b = 0x5A;
    }
    std::fs::write(&file, &bytes).unwrap();
    env.ok(&["import", "--layout", "v1", "bad", file.to_str().unwrap()]);
    env.ok(&[
        "import",
        "--layout",
        "v1",
        "good",
        env_file(&env).to_str().unwrap(),
    ]);
    let err = env.fail(&["migrate", "--all"]);
    assert!(err.contains("bad") && err.contains("integrity"), "{err}");
    assert!(err.contains("1 of 2 databases failed"), "{err}");
    assert_eq!(env.ok(&["ls", "-l"]), "bad\tv1\ngood\tv2\n");
    let err = env.fail(&["sql", "bad", "SELECT 1"]);
    assert!(err.contains("integrity"), "{err}");
    // The v1 data is untouched: exported through the v1 file type, the
    // damaged bytes are still there.
    let v1 = env.ok(&["sql", "--layout", "v1", "bad", "PRAGMA page_count"]);
    assert_eq!(v1.trim().parse::<usize>().unwrap(), bytes.len() / 4096);
}

fn env_file(env: &Env) -> PathBuf {
    let p = env.path("good.db");
    let c = Connection::open(&p).unwrap();
    c.execute_batch("CREATE TABLE g(x); INSERT INTO g VALUES (1);")
        .unwrap();
    p
}

/// A SQL error names its line and column in the script and quotes that
/// statement alone; SQL may start with a comment; a failed statement on a
/// database that did not exist leaves no database behind.
#[test]
fn sql_errors_say_where_and_leave_nothing_behind() {
    let env = Env::new();
    let mut script = String::from("CREATE TABLE t(x UNIQUE);\nINSERT INTO t VALUES (1;\n");
    for i in 0..2000 {
        script.push_str(&format!("INSERT INTO t VALUES ({i});\n"));
    }
    let err = env.fail(&["sql", "typo", &script]);
    assert!(err.contains("line 2, column 24"), "{err}");
    assert!(err.contains("INSERT INTO t VALUES (1;"), "{err}");
    assert!(err.len() < 400, "{} bytes: {err}", err.len());
    // Line 1 committed: that database stays. One where nothing committed
    // is gone again.
    assert!(env.ls().contains(&"typo".to_string()), "{:?}", env.ls());
    let err = env.fail(&["sql", "never", "SELEC 1"]);
    assert!(err.contains("line 1, column 1"), "{err}");
    assert!(!env.ls().contains(&"never".to_string()), "{:?}", env.ls());
    let err = env.fail(&[
        "sql",
        "dup",
        "CREATE TABLE t(x UNIQUE);\nINSERT INTO t VALUES (1);\n  INSERT INTO t VALUES (1);\nSELECT 1;",
    ]);
    assert!(err.contains("line 3, column 3"), "{err}");
    assert!(err.contains("UNIQUE constraint failed"), "{err}");
    assert!(err.contains("INSERT INTO t VALUES (1)"), "{err}");
    // The statements before the failure stay committed.
    assert_eq!(env.ok(&["sql", "dup", "SELECT count(*) FROM t"]), "1\n");
    assert_eq!(env.ok(&["sql", "c", "-- a comment\nSELECT 42"]), "42\n");
}

/// `export DB -` writes the database file to stdout.
#[test]
fn export_to_stdout() {
    let env = Env::new();
    env.ok(&["sql", "e", "CREATE TABLE t(x); INSERT INTO t VALUES ('hi')"]);
    let out = env.run(&["export", "e", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"SQLite format 3\0"));
    assert!(!env.path("-").exists());
    let file = env.path("e.sqlite");
    std::fs::write(&file, &out.stdout).unwrap();
    let c = Connection::open(&file).unwrap();
    let v: String = c.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, "hi");
}

/// `kvlite dump DB`: SQL text that rebuilds the database in plain SQLite
/// (tables, rows of every type, indexes, views, triggers, AUTOINCREMENT).
#[test]
fn dump_rebuilds_the_database_anywhere() {
    let env = Env::new();
    env.ok(&[
        "sql",
        "d",
        "CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, s TEXT, r REAL, b BLOB, n);
         CREATE TABLE \"odd name\"(\"a\"\"b\" INT);
         INSERT INTO t(s, r, b, n) VALUES ('it''s', 0.1, x'00ff10', NULL), ('', 1e300, zeroblob(3), 7);
         INSERT INTO t(s, r, b, n) SELECT s || id, r / 3, b, id FROM t;
         INSERT INTO \"odd name\" VALUES (1), (2);
         CREATE INDEX ts ON t(s);
         CREATE VIEW v AS SELECT s FROM t WHERE n IS NOT NULL;
         CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;
         DELETE FROM t WHERE id = 4;",
    ]);
    let text = env.ok(&["dump", "d"]);
    assert!(
        text.starts_with("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"),
        "{text}"
    );
    assert!(text.ends_with("COMMIT;\n"), "{text}");
    let rebuilt = Connection::open_in_memory().unwrap();
    rebuilt.execute_batch(&text).unwrap();
    let original = env.path("orig.sqlite");
    env.ok(&["export", "d", original.to_str().unwrap()]);
    let original = Connection::open(&original).unwrap();
    for sql in [
        "SELECT id, s, r, hex(b), n FROM t ORDER BY id",
        "SELECT * FROM \"odd name\"",
        "SELECT * FROM v",
        "SELECT name, seq FROM sqlite_sequence",
        "SELECT type, name, sql FROM sqlite_schema ORDER BY name",
    ] {
        let rows = |c: &Connection| -> Vec<String> {
            let mut stmt = c.prepare(sql).unwrap();
            let n = stmt.column_count();
            stmt.query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        };
        assert_eq!(rows(&rebuilt), rows(&original), "{sql}");
    }
    let err = env.fail(&["dump", "missing"]);
    assert!(err.contains("not found"), "{err}");
}

/// Conflicting store options are an error, not silently ignored.
#[test]
fn conflicting_store_options_are_refused() {
    let env = Env::new();
    for other in [
        &["--server", "ws://127.0.0.1:1"][..],
        &["--postgres", "postgresql://x/y"][..],
    ] {
        let mut args = vec!["ls"];
        args.extend_from_slice(other);
        // Env::run passes --data.
        let err = env.fail(&args);
        assert!(err.contains("cannot be used together"), "{err}");
    }
}

#[test]
fn options_a_command_does_not_use_are_refused() {
    let env = Env::new();
    env.ok(&["sql", "app", "CREATE TABLE t(a)"]);
    let kvlite = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvlite"));
        c.current_dir(env.dir.path()).env_remove("KVLITE_TOKEN");
        c
    };
    let refused = |args: &[&str], says: &str| {
        let out = kvlite().args(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    };
    // Before and after the subcommand alike.
    refused(
        &["--token", "0123456789abcdef", "ls"],
        "--token is for --server",
    );
    refused(
        &["ls", "--token", "0123456789abcdef"],
        "--token is for --server",
    );
    refused(
        &[
            "--postgres",
            "postgresql://127.0.0.1:1/x",
            "--busy-timeout",
            "1s",
            "ls",
        ],
        "--busy-timeout is for the embedded store",
    );
    refused(
        &["ls", "--server", "ws://127.0.0.1:1", "--busy-timeout", "1s"],
        "--busy-timeout is for the embedded store",
    );
    refused(
        &["bench", "--quick", "--data", "d"],
        "does not use --data or --server",
    );
    refused(
        &["serve", "--server", "ws://127.0.0.1:1"],
        "not on another server",
    );
    // Set by the environment, a token is not a mistake of this command.
    let out = kvlite()
        .args(["ls"])
        .env("KVLITE_TOKEN", "0123456789abcdef")
        .arg("--data")
        .arg(env.data())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app\n");
}

/// Log lines written to a pipe (not a terminal) carry no ANSI colour codes.
#[test]
fn logs_into_a_pipe_have_no_colour_codes() {
    let env = Env::new();
    let file = env.path("l.db");
    Connection::open(&file)
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    env.ok(&["import", "--layout", "v1", "l", file.to_str().unwrap()]);
    let out = env
        .command(&["migrate", "l"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("migrating from the v1 layout"), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
}

/// Names a listing could not show apart are refused when a database would
/// be created under them, with a message that says why; nothing is created.
/// `namespace:name` is a tenant's database, embedded as through a server.
#[test]
fn bad_database_names_are_refused() {
    let env = Env::new();
    for (name, why) in [
        ("two\nlines", "control character"),
        ("tab\there", "control character"),
        (" lead", "whitespace"),
        ("trail ", "whitespace"),
        ("a:b:c", "namespace:name"),
        ("bad ns:x", "namespace"),
    ] {
        let err = env.fail(&["sql", name, "CREATE TABLE t(x)"]);
        assert!(err.contains(why), "{name:?}: {err}");
    }
    assert!(env.ls().is_empty(), "{:?}", env.ls());
    env.ok(&["sql", "alice:x", "CREATE TABLE t(x)"]);
    assert_eq!(env.ls(), ["alice:x"]);
}

/// An unreachable PostgreSQL is one line with the real cause, at once (no
/// pool retries until a timeout, no log lines of the pool's own).
#[test]
fn an_unreachable_postgres_is_one_line_at_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kvlite"))
        .args([
            "--postgres",
            &format!("postgresql://kv:secret@127.0.0.1:{port}/x"),
            "ls",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run kvlite");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot use PostgreSQL: ") && err.contains("Connection refused"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the password stays out: {err}");
}

/// The embedded store's size on disk: its file and its WAL.
fn store_on_disk(env: &Env) -> u64 {
    let file = kvlite_kv::sqlite_file::FILE_NAME;
    [file.to_string(), format!("{file}-wal")]
        .iter()
        .filter_map(|f| std::fs::metadata(env.data().join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn vacuum_gives_the_space_of_removed_databases_back() {
    let env = Env::new();
    // Two databases of 4 MiB of incompressible rows each.
    let fill = "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1024)
         INSERT INTO t SELECT x, randomblob(4000) FROM c;";
    for db in ["keep", "drop"] {
        env.ok(&["sql", db, fill]);
        // No history kept: what compaction folds is freed.
        env.ok(&["retention", db, "0"]);
        env.ok(&["compact", db]);
    }
    let live = 1024 * 4096;
    env.ok(&["rm", "drop"]);
    let before = store_on_disk(&env);
    assert!(before > 2 * live, "both databases were stored: {before}");
    let out = env.ok(&["vacuum"]);
    let after = store_on_disk(&env);
    assert!(
        out.starts_with(&format!("store on disk: {before} bytes"))
            && out.contains(&format!("-> {after} bytes")),
        "{out} (before {before}, after {after})"
    );
    assert!(
        after * 2 <= live * 3,
        "after vacuum the store takes {after} bytes for {live} live"
    );
    // Nothing the kept database holds went with it.
    assert_eq!(
        env.ok(&["sql", "keep", "SELECT count(*), sum(length(b)) FROM t"]),
        "1024|4096000\n"
    );
    assert!(
        env.fail(&["sql", "drop", "SELECT 1 FROM t"])
            .contains("no such table")
    );
}
