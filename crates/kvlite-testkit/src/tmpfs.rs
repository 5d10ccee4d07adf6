//! A small tmpfs of its own, for tests of a full disk (root only).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a fresh directory; unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `bytes` (rounded to pages by the kernel). Needs
    /// root; the error says so otherwise.
    pub fn mount(bytes: u64) -> std::io::Result<Tmpfs> {
        if !crate::util::is_root() {
            return Err(std::io::Error::other(
                "mounting a tmpfs needs root (run the tests as root, as CI does)",
            ));
        }
        let dir = tempfile::tempdir()?;
        let mount = dir.path().join("fs");
        std::fs::create_dir(&mount)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&mount)
            .output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Tmpfs { dir, mount })
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, so a file still open elsewhere cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = &self.dir;
    }
}
