//! `kvlite inspect`, `kvlite ls`, `kvlite rm`: administration through the
//! transport, without SQLite.

use std::io::{self, BufWriter, Write};

use anyhow::{Result, anyhow, bail};
use kvlite_api::DbStat;
use kvlite_engine::Origin;
use serde_json::json;

use crate::store::{self, Access, GlobalOpts};

/// Databases listed per request.
const LIST_PAGE: usize = 1000;

/// Show a database's storage state (size, deltas, shards, quota, ...)
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Database name
    db: String,
    /// Print one JSON object instead of a table
    #[arg(long)]
    json: bool,
}

/// List databases, in byte order of their names
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only names starting with this prefix
    prefix: Option<String>,
    /// Print a JSON array of names instead of one name per line
    #[arg(long)]
    json: bool,
    /// Also show each database's layout (v1, migrating, v2): name, a tab,
    /// the layout; with --json, objects {"name", "layout"}
    #[arg(short, long)]
    long: bool,
}

/// Delete a database and all its data
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Database name
    db: String,
}

pub fn inspect(opts: &GlobalOpts, args: InspectArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Read)?;
    let stat = store
        .transport
        .stat(&args.db)
        .map_err(|e| store::client_error(&args.db, e))?;
    let text = if args.json {
        stat_json(&stat).to_string() + "\n"
    } else {
        stat_table(&stat)
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn size_bytes(s: &DbStat) -> u64 {
    u64::from(s.size_pages) * u64::from(s.page_size)
}

fn used_percent(s: &DbStat) -> Option<f64> {
    (s.quota_bytes > 0).then(|| s.used_bytes as f64 * 100.0 / s.quota_bytes as f64)
}

fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Native => "native",
        Origin::MigratingFromV1 => "migrating-from-v1",
        Origin::MigratedFromV1 => "migrated-from-v1",
    }
}

fn stat_json(s: &DbStat) -> serde_json::Value {
    json!({
        "name": s.name,
        "id": s.id,
        "origin": origin_name(s.origin),
        "generation": s.generation,
        "head_txid": s.head_txid,
        "next_txid": s.next_txid,
        "materialized_txid": s.materialized_txid,
        "size_pages": s.size_pages,
        "size_bytes": size_bytes(s),
        "page_size": s.page_size,
        "shard_pages": s.shard_pages,
        "page_index_entries": s.page_index_entries,
        "deltas": s.deltas,
        "delta_bytes": s.delta_bytes,
        "shards": s.shards,
        "shard_bytes": s.shard_bytes,
        "used_bytes": s.used_bytes,
        "quota_bytes": s.quota_bytes,
        "used_percent": used_percent(s),
        "fast_path_limit": s.fast_path_limit,
        "pending_commits": s.pending_commits,
        "created_ms": s.created_ms,
        "created": rfc3339_utc(s.created_ms),
        "history_floor": s.history_floor,
        "retention_ms": s.retention_ms,
        "history_bytes": s.history_bytes,
        "kept_versions": s.kept_versions,
        "pins": s.pins,
        "forked_from": s.forked_from.as_ref().map(|o| json!({
            "name": o.name, "id": o.id, "txid": o.txid, "size_pages": o.size_pages,
        })),
    })
}

fn stat_table(s: &DbStat) -> String {
    let used = match used_percent(s) {
        Some(p) => format!(
            "{} of {} quota ({p:.2}%)",
            bytes(s.used_bytes),
            bytes(s.quota_bytes)
        ),
        None => format!("{} (no quota)", bytes(s.used_bytes)),
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("name", s.name.clone()),
        ("id", s.id.to_string()),
        ("origin", origin_name(s.origin).to_string()),
        (
            "generation",
            format!(
                "{} (moves each time a writer opens it; an older writer is fenced)",
                s.generation
            ),
        ),
        ("head txid", format!("{} (the newest commit)", s.head_txid)),
        ("next txid", s.next_txid.to_string()),
        (
            "materialized txid",
            format!(
                "{} (commits up to here are folded into shards; {} newer are not yet)",
                s.materialized_txid,
                s.head_txid.saturating_sub(s.materialized_txid)
            ),
        ),
        (
            "size",
            format!("{} pages, {}", s.size_pages, bytes(size_bytes(s))),
        ),
        (
            "page size",
            format!("{} bytes ({} pages per shard)", s.page_size, s.shard_pages),
        ),
        (
            "page index entries",
            format!("{} (page versions not yet folded)", s.page_index_entries),
        ),
        ("deltas", format!("{}, {}", s.deltas, bytes(s.delta_bytes))),
        ("shards", format!("{}, {}", s.shards, bytes(s.shard_bytes))),
        ("used", used),
        (
            "fast path limit",
            format!(
                "{} (larger commits go in several messages)",
                bytes(s.fast_path_limit)
            ),
        ),
        (
            "pending commits",
            format!("{} (large commits begun, not finished)", s.pending_commits),
        ),
        ("created", rfc3339_utc(s.created_ms)),
        (
            "history",
            format!(
                "commits from {} on are readable ({} retention); {} kept for it ({} page versions), plus the deltas they name",
                s.history_floor,
                humantime::format_duration(std::time::Duration::from_millis(s.retention_ms)),
                bytes(s.history_bytes),
                s.kept_versions
            ),
        ),
    ];
    if s.pins > 0 {
        rows.push((
            "pinned",
            format!(
                "{} commits read by forks or restores (kept whatever the retention)",
                s.pins
            ),
        ));
    }
    if let Some(o) = &s.forked_from {
        rows.push((
            "forked from",
            format!(
                "{} at commit {} ({} pages)",
                o.name
                    .as_deref()
                    .map_or("a deleted database".to_string(), |n| format!("{n:?}")),
                o.txid,
                o.size_pages
            ),
        ));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    out
}

/// Exact bytes, with a binary-unit approximation when large.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{n} bytes ({v:.1} {})", UNITS.get(unit).unwrap_or(&"?"))
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC, e.g.
/// `2024-05-01T12:00:00.250Z`.
pub(crate) fn rfc3339_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

pub fn ls(opts: &GlobalOpts, args: LsArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Read)?;
    let prefix = args.prefix.as_deref().unwrap_or("");
    let mut out = BufWriter::new(io::stdout().lock());
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .transport
            .list(prefix, after.as_deref(), LIST_PAGE)
            .map_err(|e| anyhow::anyhow!("cannot list databases: {e}"))?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        if after.as_ref().is_some_and(|a| last <= *a) {
            bail!("the database listing did not advance past {last:?}");
        }
        for name in page {
            let layout = if args.long {
                Some(store.layout_of(&name)?)
            } else {
                None
            };
            match (args.json, layout) {
                (true, Some(layout)) => all.push(json!({ "name": name, "layout": layout })),
                (true, None) => all.push(json!(name)),
                (false, Some(layout)) => writeln!(out, "{name}\t{layout}")?,
                (false, None) => writeln!(out, "{name}")?,
            }
        }
        after = Some(last);
    }
    if args.json {
        serde_json::to_writer(&mut out, &all).map_err(io::Error::from)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

pub fn rm(opts: &GlobalOpts, args: RmArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Existing)?;
    match store.transport.delete(&args.db) {
        Ok(true) => Ok(()),
        Ok(false) => bail!("database {:?} not found", args.db),
        Err(e) => Err(store::client_error(&args.db, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_714_564_800_250), "2024-05-01T12:00:00.250Z");
        assert_eq!(rfc3339_utc(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(100), "100 bytes");
        assert_eq!(bytes(12288), "12288 bytes (12.0 KiB)");
        assert_eq!(bytes(10 << 30), "10737418240 bytes (10.0 GiB)");
    }
}

/// Fold a database's deltas into shards now (reads then need one blob per
/// shard, and overwritten pages stop using storage)
#[derive(clap::Args, Debug)]
pub struct CompactArgs {
    /// Database name
    db: String,
}

pub fn compact(opts: &GlobalOpts, args: CompactArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Existing)?;
    let r = store
        .transport
        .compact(&args.db)
        .map_err(|e| store::client_error(&args.db, e))?;
    println!(
        "compacted {}: {} pages folded, {} deltas deleted, {} shards written",
        args.db, r.pages_folded, r.deltas_deleted, r.shards_written
    );
    Ok(())
}

/// Give the file system back the space the embedded store no longer uses
/// (after rm, compaction, expired history), like SQLite's VACUUM for the
/// whole store
#[derive(clap::Args, Debug)]
pub struct VacuumArgs {}

pub fn vacuum(opts: &GlobalOpts, _args: VacuumArgs) -> Result<()> {
    let store = store::open_store(opts, Access::Existing)?;
    let engine = store.local_engine("vacuum")?;
    // Deleted databases' data goes first, so its space is given back too.
    let swept = engine
        .sweep_deleted()
        .map_err(|e| anyhow!("cannot sweep deleted databases: {e}"))?;
    let Some(r) = engine
        .kv()
        .reclaim_space()
        .map_err(|e| anyhow!("cannot vacuum the store: {e}"))?
    else {
        bail!(
            "this store cannot give space back from kvlite: on PostgreSQL run VACUUM FULL on \
             its table; a data directory from before the SQLite store (kvlite.redb) reuses \
             its free space but keeps its size"
        );
    };
    println!(
        "store on disk: {} -> {}{}",
        bytes(r.bytes_before),
        bytes(r.bytes_after),
        if swept > 0 {
            format!(" ({swept} deleted databases swept first)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Set a database's storage quota. Over its quota a database can still
/// rewrite, delete and shrink (DELETE, DROP, VACUUM); only growth is refused
#[derive(clap::Args, Debug)]
pub struct QuotaArgs {
    /// Database name
    db: String,
    /// Quota in bytes (suffixes K, M, G, T for powers of 1024); 0 removes the limit
    quota: String,
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1u64 << shift)
}

pub fn quota(opts: &GlobalOpts, args: QuotaArgs) -> Result<()> {
    let Some(bytes) = parse_size(&args.quota) else {
        bail!(
            "invalid quota {:?}: a number of bytes, optionally with K, M, G or T",
            args.quota
        );
    };
    let store = store::open_store(opts, Access::Existing)?;
    store
        .transport
        .set_quota(&args.db, bytes)
        .map_err(|e| store::client_error(&args.db, e))?;
    if bytes == 0 {
        println!("quota of {} removed (no limit)", args.db);
    } else {
        println!("quota of {} set to {bytes} bytes", args.db);
    }
    Ok(())
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("5m"), Some(5 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999T"), None, "overflow");
    }
}
