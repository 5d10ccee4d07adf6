//! The crate graph is layered: each kvlite crate depends only on the crates
//! below it, as ARCHITECTURE.md draws them. A new crate or edge must be
//! added to the table here on purpose.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Each kvlite crate and the kvlite crates its library and binaries may use
/// (dev-dependencies of tests are free).
const ALLOWED: &[(&str, &[&str])] = &[
    ("kvlite-api", &[]),
    ("kvlite-ltx", &[]),
    ("kvlite-kv", &[]),
    ("kvlite-testkit", &[]),
    ("kvlite-proto", &["kvlite-api"]),
    ("kvlite-client", &["kvlite-api", "kvlite-proto"]),
    ("kvlite-vfs", &["kvlite-api"]),
    // The v1 migration recovers v1 databases with SQLite on the VFS
    // crate's v1 file type; the VFS itself knows only the API's seams.
    (
        "kvlite-engine",
        &["kvlite-api", "kvlite-kv", "kvlite-ltx", "kvlite-vfs"],
    ),
    // Several stores as one deployment: routes engine calls.
    ("kvlite-placement", &["kvlite-api", "kvlite-engine"]),
    (
        "kvlite-server",
        &[
            "kvlite-api",
            "kvlite-engine",
            "kvlite-placement",
            "kvlite-proto",
        ],
    ),
    (
        "kvlite-bench",
        &[
            "kvlite-api",
            "kvlite-client",
            "kvlite-engine",
            "kvlite-kv",
            "kvlite-server",
            "kvlite-vfs",
        ],
    ),
    (
        "kvlite-cli",
        &[
            "kvlite-api",
            "kvlite-bench",
            "kvlite-client",
            "kvlite-engine",
            "kvlite-kv",
            "kvlite-placement",
            "kvlite-server",
            "kvlite-vfs",
        ],
    ),
];

/// Normal (non-dev, non-build) kvlite dependencies of every workspace crate.
fn kvlite_edges() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut edges = BTreeMap::new();
    for pkg in meta["packages"].as_array().expect("packages") {
        let name = pkg["name"].as_str().expect("name").to_string();
        let deps = pkg["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("kvlite-"))
            .map(str::to_string)
            .collect();
        edges.insert(name, deps);
    }
    edges
}

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    let edges = kvlite_edges();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(c, deps)| (*c, deps.iter().copied().collect()))
        .collect();
    let crates: BTreeSet<&str> = edges.keys().map(String::as_str).collect();
    let listed: BTreeSet<&str> = allowed.keys().copied().collect();
    assert_eq!(crates, listed, "every workspace crate has a row in ALLOWED");
    for (krate, deps) in &edges {
        for dep in deps {
            assert!(
                allowed[krate.as_str()].contains(dep.as_str()),
                "{krate} depends on {dep}, which is not below it"
            );
        }
    }
}

#[test]
fn clients_never_carry_the_storage_stack() {
    let edges = kvlite_edges();
    let closure = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_string()];
        while let Some(c) = todo.pop() {
            for d in edges.get(&c).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    for client in ["kvlite-client", "kvlite-vfs", "kvlite-proto", "kvlite-api"] {
        let reach = closure(client);
        for storage in ["kvlite-engine", "kvlite-kv", "kvlite-ltx"] {
            assert!(
                !reach.contains(storage),
                "{client} reaches {storage}: {reach:?}"
            );
        }
    }
}
