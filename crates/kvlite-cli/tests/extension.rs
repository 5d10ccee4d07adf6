//! kvlite from outside Rust: the loadable extension (`extension/`, built by
//! this test into `target/extension` when needed) loaded into Debian's
//! `sqlite3` shell, its system Python's `sqlite3` module and `apsw`, on the
//! embedded store and through `kvlite serve`. `.ci/run` installs the hosts
//! (`sqlite3`, `python3-apsw`) and `libclang-dev` for the build.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SQLITE3: &str = "/usr/bin/sqlite3";
/// Debian's Python: the one built with extension loading.
const PYTHON: &str = "/usr/bin/python3";

/// The built extension, without its `.so` suffix (as `.load` takes it).
fn extension() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exists = |p: &'static str| move || Path::new(p).exists();
        let sqlite3 = exists(SQLITE3);
        let header = exists("/usr/include/sqlite3.h");
        let apsw = || {
            Command::new(PYTHON)
                .args(["-c", "import apsw"])
                .status()
                .is_ok_and(|s| s.success())
        };
        let libclang = || {
            std::fs::read_dir("/usr/lib")
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().join("lib/libclang.so").exists())
        };
        let python_module = |m: &'static str| {
            move || {
                Command::new(PYTHON)
                    .args(["-c", &format!("import {m}")])
                    .status()
                    .is_ok_and(|s| s.success())
            }
        };
        let (pip, venv) = (python_module("pip"), python_module("ensurepip"));
        kvlite_testkit::ensure_packages(&[
            ("python3-pip", &pip),
            ("python3-venv", &venv),
            ("sqlite3", &sqlite3),
            ("libsqlite3-dev", &header),
            ("python3-apsw", &apsw),
            ("libclang-dev", &libclang),
        ])
        .expect("the extension's build tools and hosts");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = root.join("target/extension");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(root.join("extension/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo build for the extension");
        assert!(
            status.success(),
            "building the extension failed (it needs libclang-dev; .ci/run installs it)"
        );
        let lib = target.join("release/libkvlite");
        assert!(lib.with_extension("so").exists());
        lib
    })
}

fn host(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's sqlite3 and python3-apsw (.ci/run does)"
    );
}

fn run_with_stdin(program: &str, args: &[&str], stdin: &str, dir: &Path) -> Output {
    host(program);
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("KVLITE_SERVER")
        .env_remove("KVLITE_DATA");
    kvlite_testkit::output_with_stdin(&mut command, stdin.as_bytes()).expect("run")
}

/// Run a `sqlite3` shell script with the extension loaded; returns stdout
/// and stderr.
fn shell(dir: &Path, script: &str) -> (String, String) {
    let script = format!(".load {}\n{script}", extension().display());
    let out = run_with_stdin(SQLITE3, &["-batch"], &script, dir);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run a Python script (`EXT` is the extension's path); returns stdout,
/// requiring success.
fn python(dir: &Path, script: &str) -> String {
    let out = run_with_stdin(
        PYTHON,
        &["-"],
        &format!("EXT = {:?}\n{script}", extension().display().to_string()),
        dir,
    );
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn commits(metrics_json: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(metrics_json.trim()).expect("metrics JSON");
    v["commits"].as_u64().expect("commits")
}

/// A `kvlite serve` on a data directory, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvlite"))
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("server output").expect("line");
        if line.contains("kvlite serving") {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        url: format!("ws://127.0.0.1:{port}"),
    }
}

fn kvlite_sql(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvlite"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kvlite {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `sqlite3` shell writes, closes, reopens and reads a database through
/// the extension, at `uri`; every transaction is exactly one engine commit
/// (stock SQLite never batches: the sync path).
fn shell_round_trip(dir: &Path, uri: &str) {
    let (out, err) = shell(
        dir,
        &format!(
            ".open {uri}\n\
             CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\n\
             INSERT INTO t(v) VALUES ('a');\n\
             BEGIN; INSERT INTO t(v) VALUES ('b'); INSERT INTO t(v) SELECT v || v FROM t; COMMIT;\n\
             SELECT kvlite_metrics();\n\
             PRAGMA journal_mode;\n"
        ),
    );
    assert_eq!(err, "", "{out}");
    let mut lines = out.lines();
    assert_eq!(
        commits(lines.next().unwrap()),
        3,
        "three transactions, three commits"
    );
    // The host's defaults hold: a rollback journal (kept in memory).
    assert_eq!(lines.next(), Some("delete"));
    let (out, err) = shell(
        dir,
        &format!(
            ".open {uri}\n\
             SELECT group_concat(v, ',') FROM (SELECT v FROM t ORDER BY id);\n\
             PRAGMA integrity_check;\n\
             PRAGMA journal_mode = WAL;\n"
        ),
    );
    assert_eq!(out, "a,b,aa,bb\nok\n");
    assert!(err.contains("not WAL"), "{err}");
}

/// A cold scan through the extension fetches its next windows ahead, on
/// threads inside the host process, and reads every row.
#[test]
fn a_scan_through_the_extension_fetches_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!(
        "file:scan?vfs=kvlite&data={}",
        dir.path().join("data").display()
    );
    let (_, err) = shell(
        dir.path(),
        &format!(
            ".open {uri}\n\
             CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);\n\
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
             INSERT INTO t SELECT i, randomblob(4000) FROM n;\n"
        ),
    );
    assert_eq!(err, "");
    let (out, err) = shell(
        dir.path(),
        &format!(
            ".open {uri}\n\
             SELECT count(*), sum(length(b)) FROM t;\n\
             SELECT kvlite_metrics();\n"
        ),
    );
    assert_eq!(err, "", "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("3000|12000000"));
    let m: serde_json::Value = serde_json::from_str(lines.next().unwrap()).expect("metrics");
    assert!(m["prefetches_used"].as_u64().unwrap() > 0, "{m}");
}

#[test]
fn the_sqlite3_shell_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let uri = format!("file:app?vfs=kvlite&data={}", data.display());
    shell_round_trip(dir.path(), &uri);
    // The same store, read by the kvlite CLI.
    assert_eq!(
        kvlite_sql(&[
            "--data",
            data.to_str().unwrap(),
            "sql",
            "app",
            "SELECT count(*) FROM t"
        ]),
        "4\n"
    );
    // Parameters that cannot work fail the open and say why.
    let (_, err) = shell(
        dir.path(),
        &format!(
            ".open file:x?vfs=kvlite&data={}&server=ws://h:1\n",
            data.display()
        ),
    );
    assert!(err.contains("unable to open database"), "{err}");
    assert!(
        err.contains("give one of server=, data= and postgres="),
        "{err}"
    );
    let (_, err) = shell(dir.path(), ".open file:x?vfs=kvlite&server=http://h\n");
    assert!(err.contains("ws://"), "{err}");
}

#[test]
fn the_sqlite3_shell_through_kvlite_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data);
    let uri = format!("file:remote?vfs=kvlite&server={}", server.url);
    shell_round_trip(dir.path(), &uri);
    assert_eq!(
        kvlite_sql(&[
            "--server",
            &server.url,
            "sql",
            "remote",
            "SELECT count(*) FROM t"
        ]),
        "4\n"
    );
}

/// Python's `sqlite3` (and `apsw`): the extension loads into the
/// interpreter's SQLite and every later connection can use it.
fn python_round_trip(dir: &Path, uri: &str) {
    let out = python(
        dir,
        &format!(
            r#"
import json, sqlite3
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(EXT)
db = sqlite3.connect({uri:?}, uri=True)
db.execute("CREATE TABLE t(x)")
with db:
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
print(json.loads(db.execute("SELECT kvlite_metrics()").fetchone()[0])["commits"])
db.close()
db = sqlite3.connect({uri:?}, uri=True)
print(db.execute("SELECT count(*), sum(x) FROM t").fetchone())
import apsw
flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
a = apsw.Connection({uri:?}, flags=flags)
print(list(a.execute("SELECT count(*) FROM t")))
a.execute("CREATE TABLE u(y); INSERT INTO u VALUES (1), (2)")
a.close()
a = apsw.Connection({uri:?}, flags=flags)
print(list(a.execute("SELECT sum(y) FROM u")))
"#
        ),
    );
    assert_eq!(out, "2\n(100, 4950)\n[(100,)]\n[(3,)]\n");
}

#[test]
fn python_on_the_embedded_store_and_through_kvlite_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    python_round_trip(
        dir.path(),
        &format!("file:py?vfs=kvlite&data={}", data.display()),
    );
    let server_data = dir.path().join("server-data");
    let server = serve(&server_data);
    python_round_trip(
        dir.path(),
        &format!("file:py?vfs=kvlite&server={}", server.url),
    );
}

/// Two connections of one process to one database: the second open takes
/// the database over, and the first one's next write fails as read-only,
/// naming why (documented in the extension's docs).
#[test]
fn a_second_connection_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!(
        "file:two?vfs=kvlite&data={}",
        dir.path().join("d").display()
    );
    let out = python(
        dir.path(),
        &format!(
            r#"
import sqlite3
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(EXT)
first = sqlite3.connect({uri:?}, uri=True, isolation_level=None)
first.execute("CREATE TABLE t(x)")
second = sqlite3.connect({uri:?}, uri=True, isolation_level=None)
second.execute("INSERT INTO t VALUES (2)")
try:
    first.execute("INSERT INTO t VALUES (1)")
    print("first wrote")
except sqlite3.Error as e:
    print("first refused:", e)
print(second.execute("SELECT group_concat(x) FROM t").fetchone()[0])
"#
        ),
    );
    assert_eq!(
        out, "first refused: attempt to write a readonly database\n2\n",
        "{out}"
    );
}

/// `mode=ro` opens a reader: it never fences the writer, each query sees
/// the newest commit, and it cannot write.
#[test]
fn a_read_only_connection_never_fences_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file:ro?vfs=kvlite&data={}", dir.path().join("d").display());
    let out = python(
        dir.path(),
        &format!(
            r#"
import sqlite3
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(EXT)
w = sqlite3.connect({uri:?}, uri=True, isolation_level=None)
w.execute("CREATE TABLE t(x)")
w.execute("INSERT INTO t VALUES (1)")
r = sqlite3.connect({uri:?} + "&mode=ro", uri=True, isolation_level=None)
print(r.execute("SELECT count(*) FROM t").fetchone()[0])
w.execute("INSERT INTO t VALUES (2)")
print(r.execute("SELECT count(*) FROM t").fetchone()[0])
try:
    r.execute("INSERT INTO t VALUES (3)")
    print("reader wrote")
except sqlite3.Error as e:
    print("reader refused:", e)
w.execute("INSERT INTO t VALUES (4)")
print(w.execute("SELECT group_concat(x) FROM t").fetchone()[0])
"#
        ),
    );
    assert_eq!(
        out, "1\n2\nreader refused: attempt to write a readonly database\n1,2,4\n",
        "{out}"
    );
}

/// A Python writer killed with `kill -9` in the middle of its transactions:
/// every transaction is there whole or not at all.
#[test]
fn a_python_writer_killed_mid_transaction_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let uri = format!("file:k?vfs=kvlite&data={}", data.display());
    host(PYTHON);
    let script = format!(
        r#"
import sqlite3, sys
EXT = {ext:?}
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(EXT)
db = sqlite3.connect({uri:?}, uri=True)
db.execute("CREATE TABLE t(batch, i, pad)")
db.commit()
batch = 0
while True:
    batch += 1
    for i in range(50):
        db.execute("INSERT INTO t VALUES (?, ?, randomblob(3000))", (batch, i))
    db.commit()
    print("COMMITTED", batch, flush=True)
"#,
        ext = extension().display().to_string()
    );
    let mut child = Command::new(PYTHON)
        .args(["-c", &script])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let target = 3 + fastrand::u64(0..5);
    let mut acked = 0;
    for line in lines.by_ref() {
        acked = line
            .unwrap()
            .strip_prefix("COMMITTED ")
            .unwrap()
            .parse()
            .unwrap();
        if acked >= target {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(fastrand::u64(0..40)));
    child.kill().unwrap();
    child.wait().unwrap();
    for line in lines.map_while(Result::ok) {
        if let Some(v) = line.strip_prefix("COMMITTED ") {
            acked = v.parse().unwrap();
        }
    }
    let out = python(
        dir.path(),
        &format!(
            r#"
import sqlite3
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(EXT)
db = sqlite3.connect({uri:?}, uri=True)
print(db.execute("SELECT count(*), max(batch), count(DISTINCT batch) FROM t").fetchone())
print(db.execute("PRAGMA integrity_check").fetchone()[0])
"#
        ),
    );
    let mut lines = out.lines();
    let counts = lines.next().unwrap();
    let nums: Vec<u64> = counts
        .trim_matches(|c| c == '(' || c == ')')
        .split(", ")
        .map(|n| n.parse().unwrap())
        .collect();
    let (rows, max_batch, batches) = (nums[0], nums[1], nums[2]);
    assert_eq!(rows, 50 * batches, "a torn transaction: {counts}");
    assert_eq!(max_batch, batches, "{counts}");
    assert!(
        batches == acked || batches == acked + 1,
        "{batches} batches, {acked} acknowledged"
    );
    assert_eq!(lines.next(), Some("ok"));
}

/// SQLite's sqllogictest corpus (and `$KVLITE_SLT_DIR`) through Python's
/// `sqlite3` and the extension, on the embedded store
/// (`extension/tests/sqllogictest.py`, the classic formatting rules).
#[test]
fn the_sqllogictest_corpus_through_python_and_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let files = kvlite_testkit::sql::corpus_files();
    assert!(files.len() >= 17, "{} files", files.len());
    let runner =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../extension/tests/sqllogictest.py");
    host(PYTHON);
    let prefix = format!(
        "file:slt-{{n}}?vfs=kvlite&data={}",
        dir.path().join("data").display()
    );
    let out = Command::new(PYTHON)
        .arg(&runner)
        .arg(extension())
        .arg(&prefix)
        .args(&files)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = report.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(passed, files.len(), "{report}");
}

/// The differential workload through Python and the extension: kvlite and
/// a plain SQLite file agree after every step (fresh seed each run,
/// printed; `extension/tests/differential.py`).
#[test]
fn the_differential_workload_through_python_and_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let seed = fastrand::u64(..1 << 40);
    println!("seed {seed}");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../extension/tests/differential.py");
    host(PYTHON);
    let out = Command::new(PYTHON)
        .arg(&script)
        .arg(extension())
        .arg(format!(
            "file:diff?vfs=kvlite&data={}",
            dir.path().join("data").display()
        ))
        .arg(dir.path().join("plain.db"))
        .arg(seed.to_string())
        .arg("600")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "seed {seed}: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report.trim(), "ok", "seed {seed}");
}

/// The Python package: a wheel built from `python/` (bundling the
/// extension) installs with pip into a virtual environment, and
/// `kvlite.connect` / `kvlite.connect_apsw` reach the embedded store and a
/// server; on a Python whose sqlite3 cannot load extensions it says what
/// to do instead.
#[test]
fn the_python_package_installs_and_connects() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    extension(); // the build tools and hosts, and a built extension to reuse
    let dist = dir.path().join("dist");
    let wheel = Command::new(PYTHON)
        .args([
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
        ])
        .arg(&dist)
        .arg(root.join("python"))
        .env("CARGO", env!("CARGO"))
        .env("KVLITE_EXTENSION_TARGET_DIR", root.join("target/extension"))
        .output()
        .unwrap();
    assert!(
        wheel.status.success(),
        "pip wheel: {}",
        String::from_utf8_lossy(&wheel.stderr)
    );
    let built: Vec<PathBuf> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(built.len(), 1, "{built:?}");
    assert!(
        built[0].to_string_lossy().ends_with("linux_x86_64.whl"),
        "{built:?}"
    );
    let venv = dir.path().join("venv");
    let made = Command::new(PYTHON)
        .args(["-m", "venv", "--system-site-packages"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--no-deps", "--no-index"])
        .arg(&built[0])
        .status()
        .unwrap();
    assert!(installed.success());
    let server = serve(&dir.path().join("server-data"));
    let data = dir.path().join("data");
    let script = format!(
        r#"
import kvlite, sqlite3
for where in ({{"data": {data:?}}}, {{"server": {url:?}}}):
    db = kvlite.connect("app", **where)
    assert isinstance(db, sqlite3.Connection)
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS t(x)")
        db.execute("INSERT INTO t VALUES (7)")
    db.close()
    a = kvlite.connect_apsw("app", **where)
    print(list(a.execute("SELECT count(*), sum(x) FROM t")))
class NoLoading:
    def close(self):
        pass
kvlite._loaded.clear()
kvlite.sqlite3 = type("Sqlite3WithoutLoading", (), {{"connect": staticmethod(lambda *a, **k: NoLoading())}})
try:
    kvlite.connect("x", data={data:?})
except kvlite.KvliteError as e:
    print(e)
"#,
        data = data.display().to_string(),
        url = server.url,
    );
    let out = run_with_stdin(
        venv.join("bin/python").to_str().unwrap(),
        &["-"],
        &script,
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..2], ["[(1, 7)]", "[(1, 7)]"], "{stdout}");
    assert!(
        lines[2].contains("cannot load SQLite extensions") && lines[2].contains("pip install apsw"),
        "{stdout}"
    );
}

/// The Python benchmark (`extension/bench.py`) runs every workload on every
/// system and reports a ratio (toy sizes: timings here mean nothing).
#[test]
fn the_python_benchmark_runs() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../extension/bench.py");
    host(PYTHON);
    let server = serve(&dir.path().join("server-data"));
    let out = Command::new(PYTHON)
        .arg(&script)
        .arg(extension())
        .arg(dir.path().join("scratch"))
        .args(["--server", &server.url, "--runs", "1", "--tiny"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = report
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 6 * 4, "{report}");
    for row in &rows {
        let ratio: f64 = row[4].trim_end_matches('x').parse().unwrap();
        assert!(ratio > 0.0, "{report}");
    }
    assert!(
        rows.iter()
            .any(|r| r[0] == "small_txns_2000" && r[1] == "kvlite_server")
    );
}

/// `postgres=URL`: the engine runs in the Python process on PostgreSQL
/// (the URL percent-encoded inside the SQLite URI).
#[test]
fn python_on_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kvlite_testkit::PgCluster::shared().expect("PostgreSQL");
    let url = cluster
        .create_database("kvlite_extension")
        .expect("database");
    let script = format!(
        r#"
import sqlite3, urllib.parse
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(EXT)
uri = "file:pg?vfs=kvlite&postgres=" + urllib.parse.quote({url:?}, safe="")
db = sqlite3.connect(uri, uri=True)
with db:
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (11)")
db.close()
db = sqlite3.connect(uri, uri=True)
print(db.execute("SELECT x FROM t").fetchone()[0])
"#
    );
    assert_eq!(python(dir.path(), &script), "11\n");
}

/// The extension carries no SQLite of its own (only its entry point is
/// defined; every SQLite call goes through the host's API table), and
/// without URI parameters a database goes where `KVLITE_DATA` says.
#[test]
fn the_extension_uses_the_hosts_sqlite_and_the_environment() {
    let lib = extension().with_extension("so");
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm (binutils)");
    let defined = String::from_utf8_lossy(&nm.stdout);
    let sqlite_symbols: Vec<&str> = defined.lines().filter(|l| l.contains(" sqlite3")).collect();
    assert_eq!(sqlite_symbols.len(), 1, "{sqlite_symbols:?}");
    assert!(sqlite_symbols[0].ends_with("sqlite3_kvlite_init"));

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-env");
    host(SQLITE3);
    let mut child = Command::new(SQLITE3)
        .arg("-batch")
        .current_dir(dir.path())
        .env("KVLITE_DATA", &data)
        .env_remove("KVLITE_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                ".load {}\n.open file:envdb?vfs=kvlite\nCREATE TABLE t(x); INSERT INTO t VALUES (9);\n",
                extension().display()
            )
            .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        kvlite_sql(&[
            "--data",
            data.to_str().unwrap(),
            "sql",
            "envdb",
            "SELECT x FROM t"
        ]),
        "9\n"
    );
}
