//! What the binary's tests share: a temporary directory with a data
//! directory in it, and the `kvlite` binary run there.

#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvlite"));
        // `bench` makes its own stores and refuses --data.
        if args.first() != Some(&"bench") {
            c.arg("--data").arg(self.data());
        }
        c.args(args)
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run kvlite")
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        kvlite_testkit::output_with_stdin(&mut self.command(args), input.as_bytes())
            .expect("run kvlite")
    }

    /// Run, require success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        check_ok(args, self.run(args))
    }

    /// Run, require failure (exit 1, a message), return stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "kvlite {args:?} should fail; stdout: {}; stderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.starts_with("error: "), "stderr: {stderr}");
        stderr
    }

    pub fn ls(&self) -> Vec<String> {
        if !self.data().exists() {
            return Vec::new();
        }
        self.ok(&["ls"]).lines().map(String::from).collect()
    }
}

pub fn check_ok(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kvlite {args:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Lossy: some tests compare raw bytes sqlite3 prints (invalid UTF-8 included).
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

static NEXT_VFS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh client of the server on `port` as a VFS of its own (an actor
/// starting somewhere), or `None` when nothing listens there now.
pub fn remote_vfs(port: u16, request_timeout: Duration) -> Option<kvlite_vfs::Vfs> {
    let transport = kvlite_client::RemoteTransport::connect(
        &format!("ws://127.0.0.1:{port}"),
        None,
        kvlite_client::RemoteOptions {
            request_timeout,
            ..Default::default()
        },
    )
    .ok()?;
    let n = NEXT_VFS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let vfs = kvlite_vfs::Vfs::register(
        &format!("remote-{n}"),
        std::sync::Arc::new(transport),
        kvlite_vfs::VfsConfig::default(),
    )
    .expect("register the VFS");
    Some(vfs)
}

/// `kvlite STORE... doctor DB` must call the database healthy.
pub fn assert_doctor_healthy(store: &[&str], db: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvlite"))
        .args(store)
        .args(["doctor", db])
        .output()
        .expect("run kvlite doctor");
    assert!(
        out.status.success(),
        "{db}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start `kvlite serve` on the store `store` names (`--data DIR` or
/// `--postgres URL`) at 127.0.0.1:`port` and wait for its "serving" line;
/// the rest of its stderr is drained.
pub fn serve_on(store: &[&str], port: u16, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvlite"))
        .arg("serve")
        .args(store)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("server output").expect("line");
        if line.contains("kvlite serving") {
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
    }
    std::thread::spawn(move || for _ in lines {});
    Server(Some(child))
}

/// A `kvlite serve` child that is killed when dropped — when its test ends,
/// passing or failing: a server left behind would hold the test's output
/// open and hang the whole run.
pub struct Server(Option<Child>);

impl Server {
    /// The child itself, no longer killed on drop (its owner reaps it).
    pub fn into_child(mut self) -> Child {
        self.0.take().expect("a server child")
    }
}

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a server child")
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a server child")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
