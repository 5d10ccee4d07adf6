//! What the binary's tests share: a temporary directory with a data
//! directory in it, and the `kvlite` binary run there.

#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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
