//! `kvlite history`, `kvlite fork`, `kvlite restore`, `kvlite retention`,
//! and the points in time `--at` names.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use kvlite_api::{HistoryPage, ReadPoint};
use serde_json::json;

use crate::admin::rfc3339_utc;
use crate::store::{self, Access, GlobalOpts};

pub(crate) const POINT_HELP: &str = "\
A point in a database's history is a commit number (`kvlite history` lists
them), a time (2026-12-07T10:30:00Z, or 2026-12-07 10:30:00, UTC), or a time
ago (-10m, -1h30m, -2d): the state after the newest commit at or before it.
Every commit inside the database's retention window (24 hours unless set
otherwise; `kvlite retention`) can be named.";

/// Parse a point in a database's history (see [`POINT_HELP`]).
pub fn parse_point(s: &str) -> Result<ReadPoint, String> {
    let s = s.trim();
    if let Ok(txid) = s.parse::<u64>() {
        return Ok(ReadPoint::Txid(txid));
    }
    let bad = |why: String| {
        format!(
            "{s:?} is not a point in history ({why}): use a commit number, a time like 2026-12-07T10:30:00Z, or a time ago like -10m"
        )
    };
    let time = match s.strip_prefix('-') {
        Some(ago) => {
            let ago = humantime::parse_duration(ago.trim()).map_err(|e| bad(e.to_string()))?;
            SystemTime::now()
                .checked_sub(ago)
                .ok_or_else(|| bad("before the epoch".into()))?
        }
        None => humantime::parse_rfc3339_weak(s).map_err(|e| bad(e.to_string()))?,
    };
    let ms = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad("before 1970".into()))?
        .as_millis();
    Ok(ReadPoint::TimeMs(
        u64::try_from(ms).map_err(|_| bad("too far".into()))?,
    ))
}

fn point_words(p: ReadPoint) -> String {
    match p {
        ReadPoint::Txid(t) => format!("commit {t}"),
        ReadPoint::TimeMs(ms) => rfc3339_utc(ms),
    }
}

/// List a database's commits, newest first (what `--at`, `restore` and
/// `fork` can name)
#[derive(clap::Args, Debug)]
#[command(after_help = POINT_HELP)]
pub struct HistoryArgs {
    /// Database name
    db: String,
    /// Commits listed at most
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    limit: u64,
    /// Only commits before this one (to page back)
    #[arg(long, value_name = "TXID")]
    before: Option<u64>,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

pub fn history(opts: &GlobalOpts, args: HistoryArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Read)?;
    let h = store
        .transport
        .history(&args.db, args.before, args.limit as usize)
        .map_err(|e| store::client_error(&args.db, e))?;
    let text = if args.json {
        history_json(&h).to_string() + "\n"
    } else {
        history_table(&args.db, &h)
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn history_json(h: &HistoryPage) -> serde_json::Value {
    json!({
        "head_txid": h.head_txid,
        "floor_txid": h.floor_txid,
        "retention_ms": h.retention_ms,
        "retention_set": h.retention_set,
        "forked_from": h.forked_from.as_ref().map(|o| json!({
            "name": o.name, "id": o.id, "txid": o.txid, "size_pages": o.size_pages,
        })),
        "commits": h.commits.iter().map(|c| json!({
            "txid": c.txid,
            "time_ms": c.time_ms,
            "time": rfc3339_utc(c.time_ms),
            "size_pages": c.size_pages,
            "pages": c.pages,
            "bytes": c.bytes,
            "starts_as": c.origin.as_ref().map(|o| json!({
                "name": o.name, "id": o.id, "txid": o.txid, "size_pages": o.size_pages,
            })),
        })).collect::<Vec<_>>(),
    })
}

fn history_table(db: &str, h: &HistoryPage) -> String {
    let mut out = format!(
        "{db}: head {}, commits from {} on are kept ({} retention{})\n",
        h.head_txid,
        h.floor_txid,
        humantime::format_duration(Duration::from_millis(h.retention_ms)),
        if h.retention_set { "" } else { ", the default" },
    );
    if let Some(o) = &h.forked_from {
        out.push_str(&format!(
            "starts as {} at commit {} ({} pages)\n",
            o.name
                .as_deref()
                .map_or("a deleted database".to_string(), |n| format!("{n:?}")),
            o.txid,
            o.size_pages
        ));
    }
    out.push_str(&format!(
        "{:>10}  {:<24}  {:>10}  {:>8}  {:>10}\n",
        "txid", "time (UTC)", "size", "written", "bytes"
    ));
    for c in &h.commits {
        let time = if c.time_ms == 0 {
            "-".to_string()
        } else {
            rfc3339_utc(c.time_ms)
        };
        let (written, bytes) = match &c.origin {
            // A fork's or restore's creation writes no pages of its own.
            Some(_) => ("-".to_string(), "-".to_string()),
            None => (c.pages.to_string(), c.bytes.to_string()),
        };
        out.push_str(&format!(
            "{:>10}  {:<24}  {:>10}  {:>8}  {:>10}",
            c.txid,
            time,
            format!("{}p", c.size_pages),
            written,
            bytes
        ));
        if let Some(o) = &c.origin {
            out.push_str(&format!(
                "  starts as {} at commit {}",
                o.name
                    .as_deref()
                    .map_or("a deleted database".to_string(), |n| format!("{n:?}")),
                o.txid
            ));
        }
        out.push('\n');
    }
    out
}

/// Create a database that starts as another one was (at its head, or at
/// --at): copy-on-write, nothing copied, instant whatever the size
#[derive(clap::Args, Debug)]
#[command(after_help = POINT_HELP)]
pub struct ForkArgs {
    /// The database forked
    src: String,
    /// The new database's name
    dst: String,
    /// Fork the state at this point instead of the head
    #[arg(long, value_name = "POINT", value_parser = parse_point, allow_hyphen_values = true)]
    at: Option<ReadPoint>,
}

pub fn fork(opts: &GlobalOpts, args: ForkArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Existing)?;
    let f = store
        .transport
        .fork(&args.src, &args.dst, args.at)
        .map_err(|e| store::client_error(&args.src, e))?;
    println!(
        "forked {:?} at commit {} into {:?} ({} pages, nothing copied)",
        args.src, f.source_txid, args.dst, f.size_pages
    );
    Ok(())
}

/// Make a database's state what it was at a point in its history: instant,
/// and undoable (restore again to the commit before the restore) — its
/// state before stays in its history and as a database of its own. Its
/// writer is fenced
#[derive(clap::Args, Debug)]
#[command(after_help = POINT_HELP)]
pub struct RestoreArgs {
    /// Database name
    db: String,
    /// The point restored to
    #[arg(long, value_name = "POINT", value_parser = parse_point, allow_hyphen_values = true)]
    at: ReadPoint,
}

pub fn restore(opts: &GlobalOpts, args: RestoreArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Existing)?;
    let before = store
        .transport
        .stat(&args.db)
        .map_err(|e| store::client_error(&args.db, e))?;
    let r = store
        .transport
        .restore(&args.db, args.at)
        .map_err(|e| store::client_error(&args.db, e))?;
    println!(
        "restored {:?} to its state at commit {} ({}; {} pages); its writer is fenced",
        args.db,
        r.source_txid,
        point_words(args.at),
        r.size_pages
    );
    println!(
        "undo: kvlite restore {} --at {} (its state before, also kept as {:?})",
        args.db, before.head_txid, r.backup
    );
    Ok(())
}

/// Show or set how long a database's commits stay readable (for --at,
/// restore and fork)
#[derive(clap::Args, Debug)]
pub struct RetentionArgs {
    /// Database name
    db: String,
    /// The new retention (e.g. 7d, 12h, 0 for none), or `default` for the
    /// server's (or this process's) default; shows the current one when
    /// omitted
    retention: Option<String>,
}

pub fn retention(opts: &GlobalOpts, args: RetentionArgs) -> Result<()> {
    let Some(text) = args.retention.as_deref() else {
        let store = store::open_store(opts, Access::Read)?;
        let h = store
            .transport
            .history(&args.db, None, 1)
            .map_err(|e| store::client_error(&args.db, e))?;
        println!(
            "{}{}",
            humantime::format_duration(Duration::from_millis(h.retention_ms)),
            if h.retention_set {
                ""
            } else {
                " (the default)"
            }
        );
        return Ok(());
    };
    let ms = match text.trim() {
        "default" => None,
        "0" => Some(0),
        t => match humantime::parse_duration(t) {
            Ok(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1)),
            Err(e) => {
                bail!("invalid retention {t:?} ({e}): a duration like 7d or 12h, 0, or default")
            }
        },
    };
    let store = store::open_store(opts, Access::Existing)?;
    store
        .transport
        .set_retention(&args.db, ms)
        .map_err(|e| store::client_error(&args.db, e))?;
    match ms {
        None => println!("{:?} keeps commits for the default retention", args.db),
        Some(0) => println!(
            "{:?} keeps no history (from its next compaction on)",
            args.db
        ),
        Some(ms) => println!(
            "{:?} keeps commits for {}",
            args.db,
            humantime::format_duration(Duration::from_millis(ms))
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse() {
        assert_eq!(parse_point("42"), Ok(ReadPoint::Txid(42)));
        assert_eq!(
            parse_point("2024-05-01T12:00:00.250Z"),
            Ok(ReadPoint::TimeMs(1_714_564_800_250))
        );
        assert_eq!(
            parse_point("2024-05-01 12:00:00"),
            Ok(ReadPoint::TimeMs(1_714_564_800_000))
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        match parse_point("-10m") {
            Ok(ReadPoint::TimeMs(ms)) => {
                assert!(ms <= now - 600_000 + 5_000 && ms + 5_000 >= now - 600_000)
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "yesterday",
            "-",
            "-10 parsecs",
            "2024-13-01T00:00:00Z",
            "4x",
        ] {
            assert!(parse_point(bad).is_err(), "{bad:?}");
        }
    }
}
