//! `kvlite doctor` on a healthy and a deliberately damaged database, and
//! reading commands on a data directory this process may only read.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Env, check_ok};
use kvlite_engine::keys::DbKeys;
use kvlite_engine::{Engine, EngineConfig};
use kvlite_kv::{Kv, KvRead, ScanOptions, prefix_end};
use serde_json::Value;

const PAGE: usize = 4096;

fn make_app(env: &Env) {
    env.ok(&[
        "sql",
        "app",
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400)
         INSERT INTO t SELECT x, randomblob(300) FROM c;",
    ]);
    env.ok(&["compact", "app"]);
    env.ok(&[
        "sql",
        "app",
        "WITH RECURSIVE c(x) AS (SELECT 401 UNION ALL SELECT x + 1 FROM c WHERE x < 600)
         INSERT INTO t SELECT x, randomblob(300) FROM c;",
    ]);
}

/// Flip a byte in the middle of the newest delta of `db` (the store must
/// not be open elsewhere); returns that delta's txid.
fn damage_newest_delta(data: &Path, db: &str) -> u64 {
    let kv = Kv::open_embedded(data).unwrap();
    let engine = Engine::new(
        kv.clone(),
        EngineConfig::default(),
        &mut prometheus_client::registry::Registry::default(),
    );
    let stat = engine.stat(db).unwrap();
    let prefix = DbKeys { id: stat.id }.delta_part(stat.head_txid, 0);
    kv.transact(|t| {
        let end = prefix_end(&prefix).unwrap();
        let (k, mut v) = t.scan(&prefix, &end, ScanOptions::ALL)?.remove(0);
        let mid = v.len() / 2;
        v[mid] ^= 0x5a;
        t.set(&k, &v)
    })
    .unwrap();
    stat.head_txid
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn doctor_reports_a_damaged_blob_and_salvages_the_rest() {
    let env = Env::new();
    make_app(&env);
    let good = env.path("good.sqlite");
    env.ok(&["export", "app", good.to_str().unwrap()]);

    let out = env.ok(&["doctor", "app"]);
    assert!(out.contains("0 damaged"), "{out}");
    assert!(out.contains("integrity  ok"), "{out}");
    assert!(out.ends_with("verdict    healthy\n"), "{out}");
    let report = json(&env.ok(&["doctor", "--json", "app"]));
    assert_eq!(report["healthy"], true);
    let size = report["size_pages"].as_u64().unwrap();
    assert_eq!(size * PAGE as u64, std::fs::metadata(&good).unwrap().len());
    assert_eq!(report["pages_compared"], size);

    let txid = damage_newest_delta(&env.data(), "app");
    let out = env.run(&["doctor", "app"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "error: database \"app\" is damaged (see the report above)\n"
    );
    assert!(
        stdout.contains(&format!("damaged  delta {txid} part 0 (key ")),
        "{stdout}"
    );
    assert!(stdout.contains("unreadable pages "), "{stdout}");
    assert!(stdout.ends_with("verdict    DAMAGED\n"), "{stdout}");

    let salvaged = env.path("salvaged.sqlite");
    let out = env.run(&[
        "doctor",
        "--json",
        "--salvage",
        salvaged.to_str().unwrap(),
        "app",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["healthy"], false);
    assert_eq!(report["damaged_blob_count"], 1);
    assert_eq!(
        report["damaged_blobs"][0]["blob"],
        format!("delta {txid} part 0")
    );
    let unreadable: Vec<u64> = report["unreadable_pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(!unreadable.is_empty());
    assert_eq!(report["salvage"]["zero_filled"], report["unreadable_pages"]);
    // Every page but the unreadable ones is the healthy database's; those are zeros.
    let good = std::fs::read(&good).unwrap();
    let salvaged = std::fs::read(&salvaged).unwrap();
    assert_eq!(salvaged.len(), good.len());
    for (i, (s, g)) in salvaged.chunks(PAGE).zip(good.chunks(PAGE)).enumerate() {
        let pgno = i as u64 + 1;
        if unreadable.contains(&pgno) {
            assert!(s.iter().all(|&b| b == 0), "page {pgno}");
        } else {
            assert_eq!(s, g, "page {pgno}");
        }
    }
    // An existing file is never overwritten.
    let err = env.fail(&["doctor", "--salvage", "good.sqlite", "app"]);
    assert!(err.contains("already exists"), "{err}");
}

const STORE: &str = kvlite_kv::sqlite_file::FILE_NAME;

/// The store file's bytes and its WAL's, to show a command left them
/// untouched.
fn store_bytes(env: &Env) -> (Vec<u8>, Option<Vec<u8>>) {
    let data = env.data();
    (
        std::fs::read(data.join(STORE)).unwrap(),
        std::fs::read(data.join(format!("{STORE}-wal"))).ok(),
    )
}

/// Run `kvlite ARGS` as someone who may read the data directory but not
/// write it: as root, the user `nobody`; otherwise this user, with the
/// directory's write permission taken away for the run.
fn as_reader(env: &Env, args: &[&str]) -> Output {
    let data = env.data();
    let mut c = if kvlite_testkit::is_root() {
        for dir in [env.dir.path(), data.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"])
            .arg(env!("CARGO_BIN_EXE_kvlite"));
        c
    } else {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(data.join(STORE), std::fs::Permissions::from_mode(0o444)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_kvlite"))
    };
    let out = c
        .arg("--data")
        .arg(&data)
        .args(args)
        .current_dir(env.dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !kvlite_testkit::is_root() {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(data.join(STORE), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    out
}

#[test]
fn reading_commands_never_write_the_store() {
    let env = Env::new();
    make_app(&env);
    let before = store_bytes(&env);
    let out = env.path("copy.sqlite");
    env.ok(&["ls"]);
    env.ok(&["inspect", "app"]);
    env.ok(&["dump", "app"]);
    env.ok(&["doctor", "app"]);
    env.ok(&["export", "app", out.to_str().unwrap()]);
    assert!(
        store_bytes(&env) == before,
        "a reading command wrote the store"
    );

    // Without write permission: reads work, writes say why they cannot.
    let ok = |args: &[&str]| check_ok(args, as_reader(&env, args));
    assert_eq!(ok(&["ls"]), "app\n");
    assert!(ok(&["inspect", "app"]).contains("head txid"));
    assert_eq!(ok(&["sql", "app", "SELECT count(*) FROM t"]), "600\n");
    assert!(ok(&["dump", "app"]).contains("CREATE TABLE t"));
    assert!(ok(&["doctor", "app"]).ends_with("verdict    healthy\n"));
    // The export goes where the reader may write.
    let outdir = env.path("out");
    std::fs::create_dir(&outdir).unwrap();
    std::fs::set_permissions(&outdir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let exported = outdir.join("exported.sqlite");
    ok(&["export", "app", exported.to_str().unwrap()]);
    assert!(std::fs::read(&exported).unwrap() == std::fs::read(&out).unwrap());
    let denied = as_reader(&env, &["sql", "app", "INSERT INTO t(b) VALUES (1)"]);
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert_eq!(denied.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("readonly") && stderr.contains("opened read-only"),
        "{stderr}"
    );
    let denied = as_reader(&env, &["sql", "new", "CREATE TABLE x(a)"]);
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert_eq!(denied.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
    assert!(
        store_bytes(&env) == before,
        "a read-only run wrote the store"
    );
    assert_eq!(env.ok(&["sql", "app", "SELECT count(*) FROM t"]), "600\n");
}

#[test]
fn a_copy_of_a_live_store_is_repaired_or_explained() {
    let env = Env::new();
    make_app(&env);
    let data = env.data();
    let data = data.to_str().unwrap();
    let port = common::free_port();
    let mut server = common::serve_on(&["--data", data], port, &[]);
    let url = format!("ws://127.0.0.1:{port}");
    let args = [
        "--server",
        &url,
        "sql",
        "app",
        "INSERT INTO t(b) VALUES (1)",
    ];
    let written = Command::new(env!("CARGO_BIN_EXE_kvlite"))
        .args(args)
        .output()
        .unwrap();
    check_ok(&args, written);
    // A copy taken while the server holds the store (its WAL with it):
    // not closed cleanly.
    let copy = env.path("copy");
    std::fs::create_dir(&copy).unwrap();
    for file in [STORE.to_string(), format!("{STORE}-wal")] {
        std::fs::copy(env.data().join(&file), copy.join(&file)).unwrap();
    }
    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::remove_dir_all(env.data()).unwrap();
    std::fs::rename(&copy, env.data()).unwrap();

    // Without write access the repair cannot happen: said so, plainly.
    let out = as_reader(&env, &["ls"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was not closed cleanly and needs a repair"),
        "{stderr}"
    );
    // With it, a reading command repairs it once and reads.
    assert_eq!(env.ok(&["ls"]), "app\n");
    assert_eq!(env.ok(&["sql", "app", "SELECT count(*) FROM t"]), "601\n");
    assert_eq!(check_ok(&["ls"], as_reader(&env, &["ls"])), "app\n");
}
