//! Locating (and, on a fresh Debian machine, installing) the PostgreSQL server binaries.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{PgError, Result};
use crate::util::{is_root, output_tail, status_string};

/// Overrides binary discovery: the directory holding `initdb` and `postgres`.
pub const BINDIR_ENV: &str = "KVLITE_PG_BINDIR";
/// If set (to anything but `0`/empty), never try to install PostgreSQL.
pub const NO_INSTALL_ENV: &str = "KVLITE_PG_NO_INSTALL";
/// Lock file serialising automatic installs across concurrently running test processes.
const INSTALL_LOCK: &str = "/tmp/kvlite-pg-install.lock";

/// Paths of the PostgreSQL programs we use.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub bindir: PathBuf,
    pub initdb: PathBuf,
    pub postgres: PathBuf,
    /// `psql`, from the bindir or PATH; only needed for `create_database`.
    pub psql: Option<PathBuf>,
}

impl Binaries {
    fn from_bindir(dir: &Path) -> Option<Binaries> {
        let initdb = dir.join("initdb");
        let postgres = dir.join("postgres");
        if !is_file(&initdb) || !is_file(&postgres) {
            return None;
        }
        let psql = Some(dir.join("psql"))
            .filter(|p| is_file(p))
            .or_else(|| which("psql"));
        Some(Binaries {
            bindir: dir.to_path_buf(),
            initdb,
            postgres,
            psql,
        })
    }
}

/// Finds the binaries, installing PostgreSQL with apt-get when that is possible and allowed.
pub(crate) fn ensure_binaries() -> Result<Binaries> {
    let searched = match find_binaries() {
        Ok(b) => return Ok(b),
        Err(e @ PgError::BinariesNotFound { .. }) if std::env::var_os(BINDIR_ENV).is_some() => {
            // An explicit, wrong override: do not paper over it by installing something.
            return Err(e);
        }
        Err(PgError::BinariesNotFound { searched }) => searched,
        Err(e) => return Err(e),
    };
    let (apt_get, lock) = install_turn(searched.clone())?;
    // Whoever held the lock before us may have installed it already.
    if let Ok(b) = find_binaries() {
        return Ok(b);
    }
    eprintln!("kvlite-testkit: PostgreSQL not found ({searched}); installing it with apt-get");
    run_install_step(&apt_get, &["update"])?;
    run_install_step(&apt_get, &["install", "-y", "postgresql"])?;
    drop(lock);
    find_binaries().map_err(|e| match e {
        PgError::BinariesNotFound { searched } => PgError::BinariesNotFound {
            searched: format!("{searched} (even after `apt-get install -y postgresql` succeeded)"),
        },
        other => other,
    })
}

/// apt-get, and this process's turn to install with it (held until the
/// returned file is dropped): another test process may be installing right
/// now. Refused (`BinariesNotFound { searched }`) without apt-get, as a
/// non-root user, or with installing turned off.
fn install_turn(searched: String) -> Result<(PathBuf, std::fs::File)> {
    let Some(apt_get) = which("apt-get") else {
        return Err(PgError::BinariesNotFound { searched });
    };
    if !is_root() || env_flag(NO_INSTALL_ENV) {
        return Err(PgError::BinariesNotFound { searched });
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(INSTALL_LOCK)
        .map_err(PgError::io(format!("opening {INSTALL_LOCK}")))?;
    // SAFETY: flock on a file descriptor we own; it stays open until `lock` is dropped,
    // which releases the lock.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(PgError::io(format!("locking {INSTALL_LOCK}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok((apt_get, lock))
}

fn run_install_step(apt_get: &Path, args: &[&str]) -> Result<()> {
    let command = format!("apt-get {}", args.join(" "));
    let out: Output = Command::new(apt_get)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(PgError::io(format!("running {command}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PgError::InstallFailed {
            command,
            status: status_string(out.status),
            output: output_tail(&out, 60),
        })
    }
}

/// Discovery order: `$KVLITE_PG_BINDIR`; the highest `/usr/lib/postgresql/<ver>/bin`;
/// `pg_config --bindir`; `initdb` on PATH.
pub(crate) fn find_binaries() -> Result<Binaries> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return Binaries::from_bindir(&dir).ok_or_else(|| PgError::BinariesNotFound {
            searched: format!("{BINDIR_ENV}={} (no initdb/postgres there)", dir.display()),
        });
    }
    let mut searched = Vec::new();

    searched.push("/usr/lib/postgresql/*/bin".to_string());
    for dir in debian_bindirs(Path::new("/usr/lib/postgresql")) {
        if let Some(b) = Binaries::from_bindir(&dir) {
            return Ok(b);
        }
    }

    searched.push("`pg_config --bindir`".to_string());
    if let Some(pg_config) = which("pg_config") {
        let out = Command::new(pg_config)
            .arg("--bindir")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = out
            && out.status.success()
        {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if let Some(b) = Binaries::from_bindir(Path::new(&dir)) {
                return Ok(b);
            }
        }
    }

    searched.push("PATH".to_string());
    if let Some(b) = which("initdb")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .and_then(|d| Binaries::from_bindir(&d))
    {
        return Ok(b);
    }
    Err(PgError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

/// `<root>/<version>/bin` directories, highest version first.
fn debian_bindirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let key = version_key(name.to_str()?)?;
            Some((key, e.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, p)| p).collect()
}

fn version_key(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|p| p.parse().ok()).collect()
}

pub(crate) fn which(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name.as_ref()))
        .find(|p| is_file(p))
}

fn is_file(p: &Path) -> bool {
    fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Make sure Debian packages a test drives from outside Rust are installed
/// (the `sqlite3` shell, `python3-apsw`, `libclang-dev` for the loadable
/// extension): installs the missing ones with apt-get when running as root
/// and allowed, as for PostgreSQL. `present` says whether one is there.
pub fn ensure_packages(packages: &[(&str, &dyn Fn() -> bool)]) -> Result<()> {
    let missing = |packages: &[(&str, &dyn Fn() -> bool)]| -> Vec<String> {
        packages
            .iter()
            .filter(|(_, present)| !present())
            .map(|(name, _)| name.to_string())
            .collect()
    };
    let wanted = missing(packages);
    if wanted.is_empty() {
        return Ok(());
    }
    let (apt_get, lock) = install_turn(format!("Debian packages {}", wanted.join(", ")))?;
    let wanted = missing(packages);
    if wanted.is_empty() {
        return Ok(());
    }
    eprintln!(
        "kvlite-testkit: installing {} with apt-get",
        wanted.join(", ")
    );
    run_install_step(&apt_get, &["update"])?;
    let mut args = vec!["install", "-y"];
    args.extend(wanted.iter().map(String::as_str));
    run_install_step(&apt_get, &args)?;
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["9.6", "15", "10", "notaversion"] {
            fs::create_dir_all(dir.path().join(v).join("bin")).unwrap();
        }
        let got = debian_bindirs(dir.path());
        let names: Vec<_> = got
            .iter()
            .map(|p| p.parent().unwrap().file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["15", "10", "9.6"]);
    }
}
