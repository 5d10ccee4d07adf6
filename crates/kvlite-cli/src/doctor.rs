//! `kvlite doctor`: is this database healthy, and if not, what is damaged.
//!
//! The engine checks the stored form (blob checksums, a replay of the
//! deltas compared page by page with the read path, the audit); this
//! command adds SQLite's own `integrity_check` through the VFS and, with
//! `--salvage`, writes out every page the read path can still return.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use kvlite_api::{DoctorReport, PAGE_SIZE, Transport};
use serde_json::json;

use crate::admin::bytes;
use crate::copy::{Unreadable, write_pages};
use crate::store::{self, Access, GlobalOpts};

/// Check a database end to end: every blob's checksum, a replay of its
/// deltas compared page by page with the normal read path, SQLite's
/// integrity_check and the page-index and usage audit. Exits non-zero when
/// anything is damaged
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Database name
    db: String,
    /// Also write every page the read path can return to FILE, a SQLite
    /// database file (pages that cannot be read are zero-filled and listed)
    #[arg(long, value_name = "FILE")]
    salvage: Option<PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

/// Rows of integrity_check shown at most.
const INTEGRITY_ROWS: usize = 100;

pub fn run(opts: &GlobalOpts, args: DoctorArgs) -> Result<()> {
    let db = args.db.as_str();
    if let Some(path) = &args.salvage
        && fs::symlink_metadata(path).is_ok()
    {
        bail!(
            "{} already exists; choose a new file for --salvage",
            path.display()
        );
    }
    let store = store::open_store(opts, Access::Read)?;
    let report = store
        .transport
        .doctor(db)
        .map_err(|e| store::client_error(db, e))?;
    let integrity = integrity_check(&store, db);
    let healthy = report.is_healthy() && integrity.as_deref().is_ok_and(|r| r == ["ok"]);
    let salvaged = match &args.salvage {
        Some(path) => Some(salvage(store.transport.as_ref(), db, path)?),
        None => None,
    };
    let text = if args.json {
        let integrity = match &integrity {
            Ok(rows) => json!(rows),
            Err(e) => json!([format!("integrity_check could not run: {e}")]),
        };
        let mut v = json!({
            "db": db,
            "healthy": healthy,
            "head_txid": report.head_txid,
            "size_pages": report.size_pages,
            "blobs_checked": report.blobs_checked,
            "blob_bytes": report.blob_bytes,
            "damaged_blob_count": report.damaged_blob_count,
            "damaged_blobs": report.damaged_blobs.iter().map(|b| json!({
                "blob": b.blob, "key": b.key, "error": b.error,
            })).collect::<Vec<_>>(),
            "pages_compared": report.pages_compared,
            "mismatched_page_count": report.mismatched_page_count,
            "mismatched_pages": report.mismatched_pages,
            "unreadable_page_count": report.unreadable_page_count,
            "unreadable_pages": report.unreadable_pages,
            "integrity_check": integrity,
            "audit_problems": report.audit_problems,
        });
        if let (Some(s), Some(path), Some(fields)) = (&salvaged, &args.salvage, v.as_object_mut()) {
            fields.insert(
                "salvage".into(),
                json!({
                    "file": path.display().to_string(),
                    "pages": s.pages,
                    "zero_filled": s.zero_filled,
                }),
            );
        }
        v.to_string() + "\n"
    } else {
        describe(db, &report, &integrity, healthy, salvaged.as_ref(), &args)
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    if !healthy {
        bail!("database {db:?} is damaged (see the report above)");
    }
    Ok(())
}

/// `PRAGMA integrity_check` on a read-only connection (no takeover).
fn integrity_check(store: &store::Store, db: &str) -> Result<Vec<String>> {
    let vfs = store.vfs()?;
    let conn = store::open_readonly(&vfs, db)?;
    let run = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("PRAGMA integrity_check({INTEGRITY_ROWS})"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    run().map_err(|e| store::sql_error(&vfs, db, e))
}

fn list(pages: &[u32], count: u64) -> String {
    const SHOWN: usize = 100;
    let shown: Vec<String> = pages.iter().take(SHOWN).map(u32::to_string).collect();
    let more = count.saturating_sub(shown.len() as u64);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn describe(
    db: &str,
    r: &DoctorReport,
    integrity: &Result<Vec<String>>,
    healthy: bool,
    salvaged: Option<&Salvaged>,
    args: &DoctorArgs,
) -> String {
    let mut out = format!(
        "database {db:?} at commit {}: {} pages ({})\n",
        r.head_txid,
        r.size_pages,
        bytes(u64::from(r.size_pages) * PAGE_SIZE as u64)
    );
    out += &format!(
        "blobs      {} read from the store and checksum-verified ({}), {} damaged\n",
        r.blobs_checked,
        bytes(r.blob_bytes),
        r.damaged_blob_count
    );
    for b in &r.damaged_blobs {
        out += &format!("  damaged  {} (key {}): {}\n", b.blob, b.key, b.error);
    }
    out += &format!(
        "replay     {} pages rebuilt from the deltas and compared with the read path: {} differ, {} unreadable\n",
        r.pages_compared, r.mismatched_page_count, r.unreadable_page_count
    );
    if r.mismatched_page_count > 0 {
        out += &format!(
            "  differ     pages {}\n",
            list(&r.mismatched_pages, r.mismatched_page_count)
        );
    }
    if r.unreadable_page_count > 0 {
        out += &format!(
            "  unreadable pages {}\n",
            list(&r.unreadable_pages, r.unreadable_page_count)
        );
    }
    match integrity {
        Ok(rows) if rows == &["ok"] => out += "integrity  ok (SQLite's integrity_check)\n",
        Ok(rows) => {
            out += "integrity  SQLite's integrity_check found problems:\n";
            for row in rows {
                out += &format!("  {row}\n");
            }
        }
        Err(e) => out += &format!("integrity  SQLite's integrity_check could not run: {e:#}\n"),
    }
    if r.audit_problems.is_empty() {
        out += "audit      clean (page index, deltas, shards and usage counters agree)\n";
    } else {
        out += "audit      problems:\n";
        for p in &r.audit_problems {
            out += &format!("  {p}\n");
        }
    }
    if let (Some(s), Some(path)) = (salvaged, &args.salvage) {
        out += &format!("salvage    {} pages written to {}", s.pages, path.display());
        if s.zero_filled.is_empty() {
            out += " (every page was readable)\n";
        } else {
            out += &format!(
                "; {} unreadable, zero-filled: pages {}\n",
                s.zero_filled.len(),
                list(&s.zero_filled, s.zero_filled.len() as u64)
            );
        }
    }
    out += if healthy {
        "verdict    healthy\n"
    } else {
        "verdict    DAMAGED\n"
    };
    out
}

struct Salvaged {
    pages: u32,
    zero_filled: Vec<u32>,
}

/// Write every page the read path returns to `path`, zeros for the rest.
fn salvage(transport: &dyn Transport, db: &str, path: &PathBuf) -> Result<Salvaged> {
    let reader = fastrand::u64(..);
    let state = transport
        .begin_read(db, reader, 0)
        .map_err(|e| store::client_error(db, e))?;
    let written = (|| -> Result<Salvaged> {
        let file =
            File::create_new(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::new(file);
        let zero_filled = write_pages(
            transport,
            db,
            reader,
            state.at(),
            &mut out,
            Unreadable::ZeroFill,
            None,
        )?;
        let file = out.into_inner().map_err(|e| anyhow!("{}", e.error()))?;
        file.sync_all()?;
        Ok(Salvaged {
            pages: state.size_pages,
            zero_filled,
        })
    })();
    let _ = transport.end_read(db, reader);
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written.with_context(|| format!("cannot salvage {db:?} to {}", path.display()))
}
