//! The real binary as a server and as its client.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, serve_on};

fn kvlite() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvlite"))
}

/// Start `kvlite serve` and wait for its "serving" line.
fn serve(dir: &std::path::Path, port: u16, extra: &[&str]) -> Child {
    // These tests stop their servers themselves (SIGTERM) or reap them.
    serve_on(&["--data", dir.to_str().expect("path")], port, extra).into_child()
}

fn run(args: &[&str]) -> Output {
    kvlite().args(args).output().expect("run kvlite")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    // SIGTERM, as a service manager would send.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_command_works_through_a_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = serve(&dir.path().join("data"), port, &[]);
    let url = format!("ws://127.0.0.1:{port}");
    let s = ["--server", url.as_str()];
    stdout(&run(&[
        &s[..],
        &[
            "sql",
            "app",
            "CREATE TABLE t(a, b); INSERT INTO t VALUES (1, 'x'), (2, NULL);",
        ],
    ]
    .concat()));
    assert_eq!(
        stdout(&run(&[
            &s[..],
            &["sql", "app", "SELECT * FROM t ORDER BY a"]
        ]
        .concat())),
        "1|x\n2|\n"
    );
    assert_eq!(stdout(&run(&[&s[..], &["ls"]].concat())), "app\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&run(
            &[&s[..], &["inspect", "app", "--json"]].concat()
        )))
        .expect("json");
    assert_eq!(inspect["size_pages"], 2);
    assert!(stdout(&run(&[&s[..], &["compact", "app"]].concat())).contains("compacted app"));
    assert!(stdout(&run(&[&s[..], &["quota", "app", "1G"]].concat())).contains("1073741824"));
    // export and import through the server.
    let file = dir.path().join("app.sqlite");
    stdout(&run(&[
        &s[..],
        &["export", "app", file.to_str().expect("path")],
    ]
    .concat()));
    stdout(&run(&[
        &s[..],
        &["import", "copy", file.to_str().expect("path")],
    ]
    .concat()));
    assert_eq!(
        stdout(&run(
            &[&s[..], &["sql", "copy", "SELECT count(*) FROM t"]].concat()
        )),
        "2\n"
    );
    stdout(&run(&[&s[..], &["rm", "copy"]].concat()));
    // A file of several parts: they go up over one connection at once.
    let parts = dir.path().join("parts.sqlite");
    let conn = rusqlite::Connection::open(&parts).expect("source");
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT i, randomblob(4000) FROM n;",
    )
    .expect("fill");
    let sum: i64 = conn
        .query_row("SELECT sum(length(b) * id) FROM t", [], |r| r.get(0))
        .expect("sum");
    drop(conn);
    stdout(&run(&[
        &s[..],
        &["import", "parts", parts.to_str().expect("path")],
    ]
    .concat()));
    assert_eq!(
        stdout(&run(&[
            &s[..],
            &["sql", "parts", "SELECT sum(length(b) * id) FROM t"]
        ]
        .concat())),
        format!("{sum}\n")
    );
    stdout(&run(&[&s[..], &["rm", "parts"]].concat()));
    // doctor through the server: the engine's checks there, integrity_check here.
    let doctor = stdout(&run(&[&s[..], &["doctor", "app"]].concat()));
    assert!(doctor.ends_with("verdict    healthy\n"), "{doctor}");
    let remote_inspect = stdout(&run(&[&s[..], &["inspect", "app", "--json"]].concat()));
    // The data directory belongs to the server while it runs.
    let busy = run(&[
        "--busy-timeout",
        "0",
        "--data",
        dir.path().join("data").to_str().expect("path"),
        "ls",
    ]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use by `kvlite serve`"));
    let status = terminate(server);
    assert!(
        status.success(),
        "graceful shutdown exits cleanly: {status:?}"
    );
    // After shutdown the same data is there, read without a server.
    let local = run(&[
        "--data",
        dir.path().join("data").to_str().expect("path"),
        "sql",
        "app",
        "SELECT count(*) FROM t",
    ]);
    assert_eq!(stdout(&local), "2\n");
    // inspect shows the same fields, with the same values, both ways.
    let data = dir.path().join("data");
    let local_inspect = stdout(&run(&[
        "--data",
        data.to_str().expect("path"),
        "inspect",
        "app",
        "--json",
    ]));
    let remote: serde_json::Value = serde_json::from_str(&remote_inspect).expect("json");
    let local: serde_json::Value = serde_json::from_str(&local_inspect).expect("json");
    assert_eq!(remote, local);
    assert_ne!(local["id"], 0);
    assert_ne!(local["fast_path_limit"], 0);
    let local_doctor = stdout(&run(&[
        "--data",
        data.to_str().expect("path"),
        "doctor",
        "app",
    ]));
    assert_eq!(local_doctor, doctor);
}

#[test]
fn tokens_are_required_and_confine_namespaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "alpha alpha-secret-0123456789\nbeta beta-secret-0123456789\nops ops-secret-0123456789 admin\n",
    )
    .expect("tokens");
    let port = free_port();
    let server = serve(
        &dir.path().join("data"),
        port,
        &["--tokens", tokens.to_str().expect("path")],
    );
    let url = format!("ws://127.0.0.1:{port}");
    let no_token = run(&["--server", &url, "ls"]);
    assert!(!no_token.status.success());
    assert!(
        String::from_utf8_lossy(&no_token.stderr).contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&no_token.stderr)
    );
    let alpha = [
        "--server",
        url.as_str(),
        "--token",
        "alpha-secret-0123456789",
    ];
    let beta = [
        "--server",
        url.as_str(),
        "--token",
        "beta-secret-0123456789",
    ];
    stdout(&run(&[
        &alpha[..],
        &[
            "sql",
            "db",
            "CREATE TABLE t(x); INSERT INTO t VALUES ('alpha only')",
        ],
    ]
    .concat()));
    assert_eq!(stdout(&run(&[&beta[..], &["ls"]].concat())), "");
    let miss = run(&[&beta[..], &["inspect", "db"]].concat());
    assert!(!miss.status.success());
    assert_eq!(
        stdout(&run(
            &[&alpha[..], &["sql", "db", "SELECT x FROM t"]].concat()
        )),
        "alpha only\n"
    );
    // A tenant's token cannot lift the tenant's quota.
    let lift = run(&[&alpha[..], &["quota", "db", "1T"]].concat());
    assert!(!lift.status.success());
    assert!(
        String::from_utf8_lossy(&lift.stderr).contains("admin token"),
        "{}",
        String::from_utf8_lossy(&lift.stderr)
    );
    // Nor run doctor (it reads every blob): an administrator's call.
    let doctor = run(&[&alpha[..], &["doctor", "db"]].concat());
    assert!(!doctor.status.success());
    assert!(
        String::from_utf8_lossy(&doctor.stderr).contains("doctor needs an admin token"),
        "{}",
        String::from_utf8_lossy(&doctor.stderr)
    );
    // Nor name another tenant's database.
    let cross = run(&[&beta[..], &["sql", "alpha:db", "SELECT x FROM t"]].concat());
    assert!(!cross.status.success());
    // An administrator names any tenant's database as namespace:name, as
    // an embedded user does, and manages its quota.
    let ops = ["--server", url.as_str(), "--token", "ops-secret-0123456789"];
    let checked = stdout(&run(&[&ops[..], &["doctor", "alpha:db"]].concat()));
    assert!(checked.ends_with("verdict    healthy\n"), "{checked}");
    stdout(&run(&[&ops[..], &["quota", "alpha:db", "1G"]].concat()));
    assert_eq!(
        stdout(&run(
            &[&ops[..], &["sql", "alpha:db", "SELECT x FROM t"]].concat()
        )),
        "alpha only\n"
    );
    let inspected = stdout(&run(&[&alpha[..], &["inspect", "db"]].concat()));
    assert!(
        inspected.contains("1073741824")
            || inspected.contains("1.0 GiB")
            || inspected.contains("1 GiB"),
        "{inspected}"
    );
    terminate(server);
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&[
        "serve",
        "--data",
        dir.path().to_str().expect("path"),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without tokens"));
}

/// SIGTERM while a client streams commits: the server finishes what it
/// received and exits cleanly; every acknowledged commit is there after it,
/// and at most the one commit in flight landed without its answer.
#[test]
fn sigterm_during_a_commit_stream_keeps_every_acknowledged_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    sigterm_during_a_commit_stream(&["--data", data.to_str().expect("path")]);
}

/// The same with PostgreSQL as the store (regression: the server aborted on
/// SIGTERM, exit 134, dropping its PostgreSQL connections inside the async
/// runtime).
#[test]
fn sigterm_on_postgres_exits_cleanly_and_keeps_every_acknowledged_commit() {
    let cluster = kvlite_testkit::PgCluster::shared().expect("PostgreSQL test cluster");
    let url = cluster.fresh_database().expect("database");
    sigterm_during_a_commit_stream(&["--postgres", &url]);
}

fn sigterm_during_a_commit_stream(store: &[&str]) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let port = free_port();
    let server = serve_on(store, port, &[]).into_child();
    let transport = Arc::new(
        kvlite_client::RemoteTransport::connect(
            &format!("ws://127.0.0.1:{port}"),
            None,
            kvlite_client::RemoteOptions {
                request_timeout: Duration::from_secs(3),
                ..Default::default()
            },
        )
        .expect("connect"),
    );
    let vfs = kvlite_vfs::Vfs::register(&format!("shutdown-{port}"), transport, Default::default())
        .expect("register");
    let conn = vfs.open("stream").expect("open");
    conn.execute_batch("CREATE TABLE log(i INTEGER PRIMARY KEY, payload BLOB)")
        .expect("create");
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for i in 1.. {
                let r = conn.execute("INSERT INTO log VALUES (?1, randomblob(30000))", [i as i64]);
                if r.is_err() {
                    return i;
                }
                acked.store(i, Ordering::SeqCst);
            }
            unreachable!()
        })
    };
    while acked.load(Ordering::SeqCst) < 50 {
        assert!(!writer.is_finished(), "the writer failed before shutdown");
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = terminate(server);
    assert!(
        status.success(),
        "graceful shutdown exits cleanly: {status:?}"
    );
    let failed_at = writer.join().expect("writer");
    let acked = acked.load(Ordering::SeqCst);
    assert_eq!(
        failed_at,
        acked + 1,
        "the writer stops at its first failure"
    );
    drop(vfs);

    // Read back without a server.
    let mut args = store.to_vec();
    args.extend([
        "sql",
        "stream",
        "SELECT count(*), max(i), min(length(payload)) FROM log; PRAGMA integrity_check",
    ]);
    let out = run(&args);
    let text = stdout(&out);
    let mut lines = text.lines();
    let row: Vec<u64> = lines
        .next()
        .expect("a row")
        .split('|')
        .map(|v| v.parse().expect("number"))
        .collect();
    assert_eq!(row[0], row[1], "rows 1..=n with no gaps");
    assert!(
        row[0] == acked || row[0] == acked + 1,
        "{} rows after {acked} acknowledged commits",
        row[0]
    );
    assert_eq!(row[2], 30000);
    assert_eq!(lines.next(), Some("ok"));
}

/// Peak resident memory of process `pid`, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// Twenty clients upload 100 MiB each at once through one server: the
/// server's memory stays bounded by its in-flight budget and caches, not
/// by what clients send (regression: every part of every upload was held
/// at once; one 200 MiB import left the server at 1.15 GB).
#[test]
fn twenty_concurrent_100_mib_uploads_keep_the_server_bounded() {
    const CLIENTS: usize = 20;
    const PAGES: u32 = 25_600; // 100 MiB
    // What the server may reach, from its defaults: one namespace's
    // in-flight budget (all clients share it here), redb's page cache, the
    // engine's decoded-blob cache, a part being read per connection, and
    // 128 MiB for the process itself.
    let engine = kvlite_engine::EngineConfig::default();
    let server_config = kvlite_server::ServerConfig::new("127.0.0.1:0".parse().expect("addr"));
    let bound = (server_config.max_in_flight_bytes_per_namespace
        + kvlite_kv::embedded::EmbeddedOptions::default().cache_bytes
        + engine.blob_cache_bytes
        + CLIENTS * (engine.fast_path_limit as usize + (1 << 20))
        + (128 << 20)) as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Reaped(serve(&dir.path().join("data"), port, &[]));
    let pid = server.0.id();
    let baseline = peak_rss(pid);
    let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let page = &page;
            s.spawn(move || {
                use kvlite_api::Transport;
                let remote = kvlite_client::RemoteTransport::connect(
                    &format!("ws://127.0.0.1:{port}"),
                    None,
                    kvlite_client::RemoteOptions {
                        request_timeout: Duration::from_secs(120),
                        ..Default::default()
                    },
                )
                .expect("connect");
                let db = format!("upload{c}");
                let o = remote.open(&db, &Default::default()).expect("open");
                let per_part = (o.fast_path_limit / 4096) as usize;
                let all: Vec<(u32, &[u8])> = (1..=PAGES).map(|p| (p, &page[..])).collect();
                let parts: Vec<&[(u32, &[u8])]> = all.chunks(per_part).collect();
                let r = remote
                    .commit_large(&kvlite_api::LargeCommit {
                        db: &db,
                        generation: o.generation,
                        expected_head: o.head_txid,
                        new_size: PAGES,
                        commit_id: c as u64 + 1,
                        parts: &parts,
                    })
                    .expect("upload");
                assert_eq!(r.size_pages, PAGES);
            });
        }
    });
    let peak = peak_rss(pid);
    eprintln!(
        "server peak RSS {} MiB (baseline {} MiB) for {CLIENTS} x 100 MiB",
        peak >> 20,
        baseline >> 20
    );
    assert!(
        peak <= bound,
        "server peak RSS {} MiB exceeds {} MiB",
        peak >> 20,
        bound >> 20
    );
}

/// A child killed (and reaped) when dropped, also when a test fails: a
/// server left running would keep the test's output pipe open.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--listen localhost:PORT` resolves the name.
#[test]
fn serve_listens_on_a_host_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = kvlite()
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--listen", &format!("localhost:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let server = Reaped(child);
    let mut lines = BufReader::new(stderr).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("kvlite serving"))
        .unwrap_or_else(|| panic!("the server did not start on localhost:{port}"));
    assert!(!started.is_empty());
    std::thread::spawn(move || for _ in lines {});
    let url = format!("ws://127.0.0.1:{port}");
    stdout(&run(&["--server", &url, "sql", "h", "CREATE TABLE t(x)"]));
    assert_eq!(stdout(&run(&["--server", &url, "ls"])), "h\n");
    drop(server);
}

/// Clients that come and go (each `kvlite sql` call a process that exits)
/// are ordinary: the server logs no warning for them.
#[test]
fn ordinary_disconnects_log_no_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = kvlite()
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let server = Reaped(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server output");
        if line.contains("kvlite serving") {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
    }
    let url = format!("ws://127.0.0.1:{port}");
    for i in 0..5 {
        stdout(&run(&[
            "--server",
            &url,
            "sql",
            "d",
            &format!("SELECT {i}"),
        ]));
    }
    // Give the server time to notice the last client left.
    std::thread::sleep(Duration::from_millis(300));
    drop(server);
    let lines: Vec<String> = rx.try_iter().collect();
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// An application writes through the server while someone runs ad-hoc
/// queries with `kvlite sql` in another terminal: the queries open
/// read-only by themselves and never fence the application.
#[test]
fn ad_hoc_queries_never_fence_the_application() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Reaped(serve(dir.path(), port, &[]));
    let url = format!("ws://127.0.0.1:{port}");
    stdout(&run(&["--server", &url, "sql", "app", "CREATE TABLE t(x)"]));
    let inserts = 2000;
    let script: String = (1..=inserts)
        .map(|i| format!("INSERT INTO t VALUES ({i});\n"))
        .collect();
    let mut app = kvlite()
        .args(["--server", &url, "sql", "app", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the application");
    std::io::Write::write_all(&mut app.stdin.take().expect("stdin"), script.as_bytes())
        .expect("script");
    let mut seen_mid_stream = 0;
    let mut queries = 0;
    while app.try_wait().expect("wait").is_none() {
        let o = run(&["--server", &url, "sql", "app", "SELECT count(*) FROM t"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let n: i64 = stdout(&o).trim().parse().expect("a count");
        if n > 0 && n < inserts {
            seen_mid_stream += 1;
        }
        queries += 1;
    }
    let out = app.wait_with_output().expect("application");
    assert!(
        out.status.success(),
        "the application failed after {queries} queries: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen_mid_stream > 0,
        "no query ran while the application wrote"
    );
    assert_eq!(
        stdout(&run(&[
            "--server",
            &url,
            "sql",
            "app",
            "SELECT count(*) FROM t"
        ]))
        .trim(),
        inserts.to_string()
    );
    // --read-only refuses a write, and says why.
    let o = run(&[
        "--server",
        &url,
        "sql",
        "--read-only",
        "app",
        "INSERT INTO t VALUES (0)",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("read-only") || err.contains("readonly"),
        "{err}"
    );
    drop(server);
}

/// `--log-format json`: every line the server writes to stderr is one JSON
/// object, its own announcements included, and warnings carry their fields.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = kvlite()
        .args(["--log-format", "json", "serve", "--data"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server output");
        let done = line.contains("kvlite serving");
        lines.push(line);
        if done {
            break;
        }
    }
    let url = format!("ws://127.0.0.1:{port}");
    stdout(&run(&["--server", &url, "sql", "j", "CREATE TABLE t(x)"]));
    // A clean stop announces itself too.
    assert!(terminate(child).success());
    lines.extend(rx.iter());
    assert!(lines.len() >= 2, "{lines:#?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("kvlite serving"))
            && lines.iter().any(|l| l.contains("kvlite stopped"))
            // a tracing event (RUST_LOG=info), not one of serve's own lines
            && lines.iter().any(|l| l.contains("shutting down")),
        "{lines:#?}"
    );
}

/// A data directory a server holds: a local command waits up to
/// `--busy-timeout`, then says which process holds it and how to reach it;
/// one that frees up within the wait is simply used.
#[test]
fn a_held_data_directory_names_its_holder_and_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = serve(dir.path(), port, &[]);
    let pid = server.id();
    let data = dir.path().to_str().expect("path");
    let started = Instant::now();
    let o = run(&["--data", data, "--busy-timeout", "300ms", "ls"]);
    assert!(!o.status.success());
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("process {pid}"))
            && err.contains(&format!("--server ws://127.0.0.1:{port}")),
        "{err}"
    );
    // Freed within the wait: used.
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        terminate(server)
    });
    let o = run(&[
        "--data",
        data,
        "--busy-timeout",
        "30s",
        "sql",
        "x",
        "SELECT 1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stopper.join().expect("stopper").success());
}

/// A server that shuts down says so (close 1001): its clients reconnect to
/// a restart, and fail soon, naming the shutdown, when none comes, instead
/// of waiting out their request timeout.
#[test]
fn a_stopped_server_is_reported_soon_and_a_restart_is_ridden_through() {
    use kvlite_api::Transport;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let transport = || {
        kvlite_client::RemoteTransport::connect(
            &url,
            None,
            kvlite_client::RemoteOptions {
                request_timeout: Duration::from_secs(120),
                restart_wait: Duration::from_secs(10),
                ..Default::default()
            },
        )
        .expect("connect")
    };
    let server = serve(&data, port, &[]);
    let client = transport();
    client.open("db", &Default::default()).expect("open");
    // Restarted within the wait: the next call just works.
    assert!(terminate(server).success());
    let server = serve(&data, port, &[]);
    assert_eq!(client.list("", None, 10).expect("list"), vec!["db"]);
    // Stopped for good: the call fails once the wait is over, not at 120 s.
    assert!(terminate(server).success());
    let started = Instant::now();
    let e = client.list("", None, 10).unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(&e, kvlite_api::Error::Unavailable(m) if m.contains("shut down (server shutting down)")),
        "{e}"
    );
    assert!(waited < Duration::from_secs(60), "waited {waited:?}");
}
