//! The `kvlite sql` shell against the `sqlite3` shell: the same script
//! (every output mode, every dot command) on the same database must print
//! the same bytes; and the interactive shell driven through a
//! pseudo-terminal, as a person types at it.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const SQLITE3: &str = "/usr/bin/sqlite3";

fn sqlite3() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let present = || Path::new(SQLITE3).exists();
        kvlite_testkit::ensure_packages(&[("sqlite3", &present)]).expect("Debian's sqlite3");
    });
    SQLITE3
}

mod common;

use common::Env;

/// A database made by sqlite3 from `sql`, at `file`, and the same one
/// imported into kvlite as `name`.
fn both(env: &Env, name: &str, sql: &str) -> PathBuf {
    let file = env.path(&format!("{name}.sqlite"));
    let out = with_stdin(Command::new(sqlite3()).arg(&file), sql);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["import", name, file.to_str().expect("utf-8 path")]);
    file
}

fn with_stdin(command: &mut Command, input: &str) -> Output {
    kvlite_testkit::output_with_stdin(command, input.as_bytes()).expect("run")
}

/// Run `script` through `sqlite3 FILE` and `kvlite sql NAME`; their
/// stdout must be the same bytes.
fn same_output(env: &Env, file: &Path, name: &str, script: &str) -> String {
    let theirs = with_stdin(Command::new(sqlite3()).arg(file), script);
    let ours = with_stdin(env.command(&[]).args(["sql", name]), script);
    assert!(
        theirs.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    assert!(
        ours.status.success(),
        "kvlite: {}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let (a, b) = (
        String::from_utf8_lossy(&theirs.stdout),
        String::from_utf8_lossy(&ours.stdout),
    );
    if a != b {
        let version = Command::new(sqlite3())
            .arg("--version")
            .output()
            .expect("version");
        let first = a
            .lines()
            .zip(b.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(a.lines().count().min(b.lines().count()));
        let around = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            lines[first.saturating_sub(3)..(first + 4).min(lines.len())].join("\n")
        };
        panic!(
            "output differs from sqlite3 {} at line {}:\n--- sqlite3\n{}\n--- kvlite\n{}\n--- script\n{script}",
            String::from_utf8_lossy(&version.stdout).trim(),
            first + 1,
            around(&a),
            around(&b)
        );
    }
    b.into_owned()
}

/// Values that show every rule of every mode: NULL, integers, reals
/// (exact in binary, so every SQLite prints them alike), text with
/// commas, quotes, newlines, CRLF, tabs, control characters, non-ASCII,
/// blobs with and without NUL, empty strings and blobs, long text that
/// wraps, and names that need quoting.
const DATA: &str = "
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, note);
INSERT INTO t VALUES
  (1, 'hello', 1.5, x'00ff41', NULL),
  (22, 'wörld, \"q\"', 2.0, x'', ''),
  (-3, 'two
lines', 1e20, x'4142', 'a	tab'),
  (4, 'it''s', -0.25, x'41ff42', 'cr' || char(13, 10) || 'lf'),
  (5, '日本語', 100.0, NULL, 'a' || char(1) || 'b'),
  (6, 'word word word word word word word word word word word word word word', 0.5, x'7f', ' lead');
CREATE TABLE \"odd name\"(\"the key\" TEXT, \"order\" INT);
INSERT INTO \"odd name\" VALUES ('k', 1), (NULL, 2);
CREATE TABLE empty(x);
CREATE INDEX t_name ON t(name);
CREATE UNIQUE INDEX odd_key ON \"odd name\"(\"the key\");
CREATE VIEW scores AS SELECT name, score * 2 AS \"double score\" FROM t;
CREATE TRIGGER t_note AFTER UPDATE ON t BEGIN SELECT 1; END;
CREATE TABLE seq(a INTEGER PRIMARY KEY AUTOINCREMENT, b);
INSERT INTO seq(b) VALUES ('x'), ('y');
";

#[test]
fn every_output_mode_prints_what_sqlite3_prints() {
    let env = Env::new();
    let file = both(&env, "app", DATA);
    let queries = "SELECT * FROM t ORDER BY id;\nSELECT * FROM \"odd name\";\nSELECT * FROM empty;\nSELECT 1 AS a, NULL AS b;\n";
    let mut script = String::new();
    for mode in [
        "list", "csv", "tabs", "line", "column", "box", "table", "markdown", "quote", "json",
    ] {
        script.push_str(&format!(".mode {mode}\n.mode\n{queries}"));
        script.push_str(&format!(".headers on\n{queries}.headers off\n{queries}"));
        script.push_str(&format!(".nullvalue NULL\n{queries}.nullvalue ''\n"));
    }
    // Wrapping in columnar modes, hard and at words.
    script.push_str(".mode box --wrap 10\nSELECT name, note FROM t;\n");
    script.push_str(".mode column --wrap 12 --wordwrap on\nSELECT name FROM t;\n");
    script.push_str(".mode table --wrap 0\nSELECT name FROM t;\n");
    // List mode with other separators.
    script.push_str(".mode list\n.separator ;\nSELECT id, name FROM t;\n.separator \"\\t\" \"\\n--\\n\"\nSELECT id, name FROM t;\n");
    let out = same_output(&env, &file, "app", &script);
    // The comparison saw real output: boxes, CSV quoting, JSON arrays.
    for piece in [
        "┌",
        "\"wörld, \"\"q\"\"\"",
        "[{\"id\":-3",
        "X'00ff41'",
        "   id = 1",
    ] {
        assert!(out.contains(piece), "{piece:?} missing from:\n{out}");
    }
}

#[test]
fn dot_commands_print_what_sqlite3_prints() {
    let env = Env::new();
    let file = both(&env, "app", DATA);
    let csv = env.path("rows.csv");
    std::fs::write(&csv, "a,b\n1,\"x,y\"\n2,\"multi\nline\"\n3,4\n").expect("write csv");
    let csv = csv.to_str().expect("utf-8");
    let read = env.path("more.sql");
    std::fs::write(
        &read,
        ".mode csv\nSELECT id, name FROM t WHERE id < 3;\n.mode list\n",
    )
    .expect("write script");
    let script = format!(
        ".tables\n.tables %o%\n.indexes\n.indexes t\n.schema\n.schema T\n.schema odd%\n\
         .dump\n.dump t\n.dump %name\n\
         .import --csv {csv} imported\n.schema imported\nSELECT *, typeof(a) FROM imported;\n\
         .import --csv {csv} empty\nSELECT * FROM empty;\n\
         .changes on\nUPDATE t SET note = 'x' WHERE id > 4;\nSELECT 1;\n.changes off\n\
         .print hello   world\n.read {}\n.headers on\n.mode line\nSELECT count(*) AS n FROM t;\n",
        read.display()
    );
    let out = same_output(&env, &file, "app", &script);
    for piece in [
        "CREATE TABLE IF NOT EXISTS \"odd name\"",
        "/* scores(name,\"double score\") */",
        "INSERT INTO sqlite_sequence VALUES('seq',2);",
        "changes: 3   total_changes: ",
        "multi\nline|text",
    ] {
        assert!(out.contains(piece), "{piece:?} missing from:\n{out}");
    }
    // The import landed: kvlite's database has the rows sqlite3's has.
    assert_eq!(
        env.ok(&["sql", "app", "SELECT count(*) FROM imported"]),
        "3\n"
    );
}

#[test]
fn mode_flags_are_sqlite3s_flags() {
    let env = Env::new();
    let file = both(&env, "app", DATA);
    let file = file.to_str().expect("utf-8");
    let query = "SELECT id, name, data FROM t ORDER BY id";
    for flags in [
        &["--csv", "--header"][..],
        &["--box"],
        &["--table"],
        &["--line"],
        &["--quote", "--header"],
        &["--json"],
        &["--markdown"],
        &["--column", "--header"],
        &["--tabs", "--nullvalue", "NULL"],
        &["--list", "--separator", ","],
    ] {
        // sqlite3 spells them with one dash.
        let theirs: Vec<String> = flags
            .iter()
            .map(|f| f.strip_prefix('-').unwrap_or(f).to_string())
            .collect();
        let theirs = Command::new(sqlite3())
            .args(&theirs)
            .arg(file)
            .arg(query)
            .output()
            .expect("sqlite3");
        let ours = env.ok(&[&["sql", "app", query][..], flags].concat());
        assert_eq!(
            ours,
            String::from_utf8_lossy(&theirs.stdout),
            "flags {flags:?}"
        );
    }
    // Two modes at once is a mistake to report.
    let out = env
        .command(&[])
        .args(["sql", "app", "SELECT 1", "--csv", "--box"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn jsonl_is_valid_json_one_row_per_line() {
    let env = Env::new();
    both(&env, "app", DATA);
    let out = env.ok(&[
        "sql",
        "app",
        "SELECT id, data, score FROM t WHERE id IN (1, 5) ORDER BY id; SELECT 1e999 AS inf",
        "--jsonl",
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect();
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"id": 1, "data": "00ff41", "score": 1.5}),
            serde_json::json!({"id": 5, "data": null, "score": 100.0}),
            serde_json::json!({"inf": "Inf"}),
        ]
    );
}

#[test]
fn dot_command_mistakes_are_reported_with_their_line() {
    let env = Env::new();
    both(&env, "app", DATA);
    let cases = [
        (".mode sideways\n", "line 1: unknown mode \"sideways\""),
        ("SELECT 1;\n.bogus\n", "line 2: unknown command \".bogus\""),
        (".headers maybe\n", "not a boolean value: \"maybe\""),
        (
            ".read /nonexistent/x.sql\n",
            "cannot read /nonexistent/x.sql",
        ),
        (
            ".import --csv /nonexistent/x.csv t\n",
            "cannot open /nonexistent/x.csv",
        ),
        (".tables a b\n", "wrong arguments for .tables"),
        (".mode list\nSELECT 1;\n\nSELEC 2;\n", "line 4, column 1"),
    ];
    for (script, want) in cases {
        let out = with_stdin(env.command(&[]).args(["sql", "app"]), script);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script:?}: {err}");
        assert!(err.contains(want), "{script:?}: {err}");
    }
    // A script stops at its first error: nothing after it ran.
    let out = with_stdin(
        env.command(&[]).args(["sql", "app"]),
        "INSERT INTO empty VALUES (1);\n.bogus\nINSERT INTO empty VALUES (2);\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.ok(&["sql", "app", "SELECT count(*) FROM empty"]), "1\n");
}

/// The generation of `db`: a writer's turn, bumped by every takeover.
fn generation(env: &Env, db: &str) -> u64 {
    let stat: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", db, "--json"])).expect("inspect JSON");
    stat["generation"].as_u64().expect("generation")
}

#[test]
fn the_shell_runs_each_statement_as_it_is_typed() {
    let env = Env::new();
    env.ok(&[
        "sql",
        "app",
        "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)",
    ]);
    let before = generation(&env, "app");
    let history = env.path("history");
    let mut command = env.command(&[]);
    command.args(["sql", "app"]).env("KVLITE_HISTORY", &history);
    let mut p = rexpect::session::spawn_command(command, Some(20_000)).expect("spawn in a pty");
    p.exp_string("Enter \".help\"").expect("banner");
    p.exp_string("kvlite> ").expect("prompt");
    // A statement runs when its `;` is typed, not at the end of input.
    p.send_line("SELECT sum(x) FROM t;").expect("send");
    p.exp_string("3").expect("the sum, at once");
    p.exp_string("kvlite> ").expect("prompt");
    // An unfinished statement asks for more.
    p.send_line("SELECT x").expect("send");
    p.exp_string("...> ").expect("continuation prompt");
    p.send_line("FROM t ORDER BY x DESC;").expect("send");
    p.exp_string("2").expect("rows");
    p.exp_string("kvlite> ").expect("prompt");
    // Dot commands and modes.
    p.send_line(".mode table").expect("send");
    p.exp_string("kvlite> ").expect("prompt");
    p.send_line("SELECT x AS val FROM t WHERE x = 1;")
        .expect("send");
    p.exp_string("| val |").expect("a table");
    p.exp_string("kvlite> ").expect("prompt");
    // An error is shown and the session goes on.
    p.send_line("SELEC 1;").expect("send");
    p.exp_string("Error: ").expect("the error");
    p.exp_string("syntax error").expect("its cause");
    p.exp_string("kvlite> ").expect("prompt");
    // The shell is live, holding the embedded store.
    assert!(store_is_held(&env));
    // Line editing: the up arrow brings back the last line.
    p.send_line(".mode list").expect("send");
    p.exp_string("kvlite> ").expect("prompt");
    p.send_line("SELECT 40 + 2;").expect("send");
    p.exp_string("42").expect("result");
    p.exp_string("kvlite> ").expect("prompt");
    p.send("\x1b[A").expect("up arrow");
    p.send_line("").expect("enter");
    p.exp_string("42").expect("the recalled line ran again");
    p.exp_string("kvlite> ").expect("prompt");
    // Ctrl-C drops a half-typed statement.
    p.send_line("SELECT 'never'").expect("send");
    p.exp_string("...> ").expect("continuation");
    p.send_control('c').expect("ctrl-c");
    p.exp_string("kvlite> ").expect("a fresh prompt");
    // A write makes the session the writer.
    p.send_line("INSERT INTO t VALUES (3);").expect("send");
    p.exp_string("kvlite> ").expect("prompt");
    p.send_line(".quit").expect("send");
    p.exp_eof().expect("the shell ends");
    assert_eq!(env.ok(&["sql", "app", "SELECT sum(x) FROM t"]), "6\n");
    assert_eq!(
        generation(&env, "app"),
        before + 1,
        "one takeover: the write"
    );
    let saved = std::fs::read_to_string(&history).expect("history saved");
    assert!(saved.contains("SELECT 40 + 2;"), "{saved}");
}

/// Whether another process holds the embedded store (one process at a
/// time): the shell, while it runs.
fn store_is_held(env: &Env) -> bool {
    let out = env
        .command(&[])
        .args(["--busy-timeout", "0s", "ls"])
        .output()
        .expect("run");
    !out.status.success()
}

#[test]
fn a_shell_that_only_reads_never_takes_the_database_over() {
    let env = Env::new();
    env.ok(&["sql", "app", "CREATE TABLE t(x); INSERT INTO t VALUES (1)"]);
    let before = generation(&env, "app");
    let mut command = env.command(&[]);
    command
        .args(["sql", "app"])
        .env("KVLITE_HISTORY", env.path("h"));
    let mut p = rexpect::session::spawn_command(command, Some(20_000)).expect("spawn in a pty");
    p.exp_string("kvlite> ").expect("prompt");
    for line in [".tables", ".schema", "SELECT count(*) FROM t;", ".dump"] {
        p.send_line(line).expect("send");
        p.exp_string("kvlite> ").expect("prompt");
    }
    p.send_control('d').expect("ctrl-d");
    p.exp_eof().expect("the shell ends at end of input");
    assert_eq!(generation(&env, "app"), before);
    // And a shell on a database that did not exist leaves none behind.
    let mut command = env.command(&[]);
    command
        .args(["sql", "nothing"])
        .env("KVLITE_HISTORY", env.path("h"));
    let mut p = rexpect::session::spawn_command(command, Some(20_000)).expect("spawn in a pty");
    p.exp_string("kvlite> ").expect("prompt");
    p.send_line("SELECT 1;").expect("send");
    p.exp_string("kvlite> ").expect("prompt");
    p.send_line(".quit").expect("send");
    p.exp_eof().expect("end");
    assert!(!env.ok(&["ls"]).contains("nothing"));
}

/// `.timer on` prints sqlite3's "Run Time" line after each statement, with
/// the CPU the statement used; off, nothing.
#[test]
fn the_timer_reports_each_statements_time() {
    let env = Env::new();
    let script = "CREATE TABLE t(x);\n.timer on\n\
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) \
        SELECT count(*) FROM n WHERE randomblob(64) > x'00';\n.timer off\nSELECT 1;\n";
    let out = with_stdin(env.command(&[]).args(["sql", "timed"]), script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "300000");
    let words: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&words[..3], ["Run", "Time:", "real"], "{text}");
    let cpu: f64 = words[5].parse::<f64>().unwrap() + words[7].parse::<f64>().unwrap();
    assert!(cpu > 0.0, "the statement's CPU time is counted: {text}");
    assert_eq!(lines[2], "1");
}
