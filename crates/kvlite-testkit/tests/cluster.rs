// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvlite_testkit::{KillOnDrop, PgCluster, PgError};
use postgres::{Client, NoTls};

/// Makes `child_helper` (normally a no-op) start a cluster; value "own" or "shared".
const CHILD_ENV: &str = "KVLITE_TESTKIT_CHILD_MODE";

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn roundtrip(client: &mut Client, table: &str) {
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (k bigint PRIMARY KEY, v text NOT NULL)"
        ))
        .unwrap();
    for k in 0..50i64 {
        client
            .execute(
                &format!("INSERT INTO {table} (k, v) VALUES ($1, $2)"),
                &[&k, &format!("value-{k}")],
            )
            .unwrap();
    }
    let row = client
        .query_one(&format!("SELECT count(*), max(v) FROM {table}"), &[])
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 50);
    assert_eq!(row.get::<_, String>(1), "value-9");
}

#[test]
fn start_query_create_database_and_drop() {
    let t0 = Instant::now();
    let pg = PgCluster::start().unwrap();
    eprintln!("PgCluster::start took {:?}", t0.elapsed());

    let port = pg.port();
    let dir = pg.socket_dir().to_path_buf();
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(
        pg.url(),
        format!("postgresql://postgres@127.0.0.1:{port}/postgres")
    );
    assert!(dir.join(format!(".s.PGSQL.{port}")).exists());

    let mut client = Client::connect(&pg.url(), NoTls).unwrap();
    roundtrip(&mut client, "t");
    let fsync: String = client.query_one("SHOW fsync", &[]).unwrap().get(0);
    assert_eq!(fsync, "off");
    let max_conn: String = client
        .query_one("SHOW max_connections", &[])
        .unwrap()
        .get(0);
    assert_eq!(max_conn, "200");

    // Over the unix socket too.
    let mut via_socket = postgres::Config::new()
        .host_path(pg.socket_dir())
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect(NoTls)
        .unwrap();
    let one: i32 = via_socket.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);

    let url = pg.create_database("kv_app").unwrap();
    assert_eq!(url, pg.url_for("kv_app"));
    let mut app = Client::connect(&url, NoTls).unwrap();
    let name: String = app
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0);
    assert_eq!(name, "kv_app");
    roundtrip(&mut app, "t");

    assert!(matches!(
        pg.create_database("bad\"name"),
        Err(PgError::InvalidDatabaseName(_))
    ));
    assert!(matches!(
        pg.create_database("kv_app"),
        Err(PgError::SqlFailed { .. })
    ));

    // Open connections must not keep the fast shutdown from finishing.
    let t1 = Instant::now();
    drop(pg);
    eprintln!("drop took {:?}", t1.elapsed());
    assert!(!accepts(port), "port {port} still accepts connections");
    assert!(!dir.exists(), "{} still exists", dir.display());
    drop((client, via_socket, app));
}

#[test]
fn server_outlives_the_thread_that_started_it() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits; starting from a short-lived
    // thread must not kill the server.
    let pg = std::thread::spawn(|| PgCluster::start().unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut client = Client::connect(&pg.url(), NoTls).unwrap();
    roundtrip(&mut client, "t");
}

#[test]
fn wrong_bindir_is_a_clear_error() {
    let (mut child, line) = spawn_child_with("bad_bindir", &[("KVLITE_PG_BINDIR", "/nonexistent")]);
    assert!(child.0.wait().unwrap().success());
    assert!(line.contains("KVLITE_PG_BINDIR=/nonexistent"), "{line}");
    assert!(line.contains("apt-get install"), "{line}");
}

#[test]
fn shared_is_one_cluster() {
    let a = kvlite_testkit::shared().unwrap();
    let b = PgCluster::shared().unwrap();
    assert!(std::ptr::eq(a, b));
    assert!(accepts(a.port()));
}

#[test]
fn shared_concurrent_users_a() {
    let pg = PgCluster::shared().unwrap();
    let mut client = Client::connect(&pg.fresh_database().unwrap(), NoTls).unwrap();
    roundtrip(&mut client, "a");
}

#[test]
fn shared_concurrent_users_b() {
    let pg = PgCluster::shared().unwrap();
    std::thread::scope(|s| {
        for i in 0..4 {
            s.spawn(move || {
                let mut client = Client::connect(&pg.url(), NoTls).unwrap();
                roundtrip(&mut client, &format!("b_{}_{i}", std::process::id()));
            });
        }
    });
}

/// Not a test on its own: with `CHILD_ENV` set, the re-executed test binary starts a
/// cluster, reports it on stdout and then waits to be killed ("own") or exits ("shared").
/// The child process of the cluster tests (run by them with `--ignored`).
#[test]
#[ignore = "the child process of the cluster tests"]
fn child_helper() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        panic!("run by the cluster tests, with {CHILD_ENV} set");
    };
    let pg: &PgCluster = match mode.as_str() {
        "bad_bindir" => {
            let err = PgCluster::start().unwrap_err();
            assert!(matches!(err, PgError::BinariesNotFound { .. }), "{err:?}");
            println!("KVLITE_CHILD {err}");
            return;
        }
        "own" => Box::leak(Box::new(PgCluster::start().unwrap())),
        "shared" => PgCluster::shared().unwrap(),
        other => panic!("unknown {CHILD_ENV}={other}"),
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "KVLITE_CHILD {} {}",
        pg.port(),
        pg.socket_dir().display()
    )
    .unwrap();
    out.flush().unwrap();
    drop(out);
    if mode == "shared" {
        std::process::exit(0);
    }
    // Wait to be SIGKILLed; give up eventually so a broken parent leaks nothing forever.
    std::thread::sleep(Duration::from_secs(120));
    std::process::exit(3);
}

/// Re-executes this test binary running only `child_helper` in `mode`; returns the child
/// and what it reported on its `KVLITE_CHILD` line.
fn spawn_child_with(mode: &str, env: &[(&str, &str)]) -> (KillOnDrop, String) {
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                "--exact",
                "child_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, mode)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        // libtest prints "test child_helper ... " without a newline before our line.
        if let Some((_, rest)) = line.split_once("KVLITE_CHILD ") {
            // Keep draining so the child never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, rest.to_string());
        }
    }
    panic!("child exited without reporting");
}

fn spawn_child(mode: &str) -> (KillOnDrop, u16, PathBuf) {
    let (child, line) = spawn_child_with(mode, &[]);
    let (port, dir) = line.split_once(' ').unwrap();
    (child, port.parse().unwrap(), PathBuf::from(dir))
}

#[test]
fn server_dies_when_owning_process_is_killed() {
    let (mut child, port, dir) = spawn_child("own");
    assert!(accepts(port));
    assert!(dir.exists());

    child.0.kill().unwrap(); // SIGKILL: no destructor, no atexit
    child.0.wait().unwrap();
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || !accepts(port)),
        "server on port {port} outlived its owner"
    );
    eprintln!("server gone {:?} after owner was killed", t0.elapsed());

    // The directory is left behind; the stale-directory sweep removes it once the server
    // has fully exited.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let _ = kvlite_testkit::remove_stale_dirs();
            !dir.exists()
        }),
        "{} was not cleaned up",
        dir.display()
    );
}

#[test]
fn shared_cluster_stops_and_is_removed_at_exit() {
    let (mut child, port, dir) = spawn_child("shared");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    // The atexit hook shuts the server down and deletes the directory before exiting.
    assert!(
        !accepts(port),
        "shared server on port {port} outlived the process"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// The proxy's cut after COMMIT: the client hears nothing, the commit lands.
#[test]
fn the_cut_proxy_cuts_a_commit() {
    let cluster = kvlite_testkit::PgCluster::shared().expect("cluster");
    let proxy =
        kvlite_testkit::CutProxy::start(&format!("{}:{}", cluster.host(), cluster.port())).unwrap();
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", proxy.port());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("CREATE TABLE IF NOT EXISTS cutproxy (k int)")
        .unwrap();
    let mut t = c.transaction().unwrap();
    t.execute("INSERT INTO cutproxy VALUES (1)", &[]).unwrap();
    proxy.arm(kvlite_testkit::Cut::AfterCommit, std::time::Duration::ZERO);
    let r = t.commit();
    assert!(r.is_err(), "the client saw its session end");
    assert_eq!(proxy.cuts(), 1);
    let mut direct = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
    let n: i64 = direct
        .query_one("SELECT count(*) FROM cutproxy WHERE k = 1", &[])
        .unwrap()
        .get(0);
    assert!(n >= 1, "the commit landed");
}
