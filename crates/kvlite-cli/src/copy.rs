//! `kvlite import` and `kvlite export`: a local SQLite database file into
//! a kvlite database and back, streamed page by page (memory stays bounded
//! by one part per upload thread, whatever the file's size).
//!
//! Import holds a read transaction on the source (so no writer changes the
//! file meanwhile) and sends its pages as the parts of one large commit;
//! export pins one commit as a reader and writes its pages out in order.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use kvlite_api::{LOCK_PAGE, PAGE_SIZE, PageRef, Preload, ReadAt, Transport};
use rusqlite::{Connection, OpenFlags};

use crate::progress::{self, Spinner};
use crate::store::{self, Access, GlobalOpts, Store};

const IMPORT_HELP: &str = "\
The file must be a SQLite database that passes PRAGMA quick_check; it is read
through a read-only connection and never modified. kvlite stores 4096-byte pages
in rollback-journal mode: a file with another page size, or in WAL mode, is
first rewritten with VACUUM INTO to a temporary file (in $TMPDIR) and that copy
is imported.

The copy is streamed, 4 MiB at a time, as one atomic commit: a failed import
changes nothing, and a database it created is removed again; memory stays
bounded whatever the file's size. Afterwards the database is compacted
(embedded store), every page is read back through kvlite and compared with the
file (the copy must be exact), and a one-line summary (pages, bytes, time) is
printed.

--layout v1 stores the file's bytes unchanged as a legacy v1 database (raw 4 KiB
chunks; any page size, journal mode or size), for making v1 data to migrate or
to test with; the first open as v2 (or `kvlite migrate`) migrates it.";

const EXPORT_HELP: &str = "\
The file is written under a temporary name in the same directory and renamed
into place at the end, so a failure never leaves a partial file. It is a plain
SQLite database (journal_mode DELETE, 4096-byte pages) that passed PRAGMA
integrity_check before the rename.";

/// Copy a local SQLite database file into a kvlite database
#[derive(clap::Args, Debug)]
#[command(after_help = IMPORT_HELP)]
pub struct ImportArgs {
    /// Name of the kvlite database to create (or replace, with --force)
    db: String,
    /// SQLite database file to read
    file: PathBuf,
    /// Replace the database if it already holds data
    #[arg(long)]
    force: bool,
    /// Store the file as a legacy v1 database (local stores only)
    #[arg(long, value_enum, default_value_t)]
    layout: store::Layout,
}

/// Write a kvlite database to a local SQLite database file
#[derive(clap::Args, Debug)]
#[command(after_help = EXPORT_HELP)]
pub struct ExportArgs {
    /// Name of the kvlite database to read
    db: String,
    /// SQLite database file to write
    file: PathBuf,
    /// Overwrite the file if it exists
    #[arg(long)]
    force: bool,
}

pub fn import(opts: &GlobalOpts, args: ImportArgs) -> Result<()> {
    let started = Instant::now();
    let file = args.file.as_path();
    let db = args.db.as_str();
    let header = read_header(file)?;
    if args.layout == store::Layout::V1 {
        return import_v1(opts, &args, started);
    }
    // One import is one commit: refuse what cannot fit before copying it.
    let limit = kvlite_engine::max_commit_pages(kvlite_kv::MAX_TXN_BYTES);
    if header.bytes.div_ceil(PAGE_SIZE as u64) > limit {
        bail!(
            "{} is {} bytes; one kvlite commit holds at most {limit} pages ({} bytes), \
             and an import is one commit",
            file.display(),
            header.bytes,
            limit * PAGE_SIZE as u64
        );
    }

    let store = store::open_store(opts, Access::Create)?;
    let existing = store.size_if_exists(db)?;
    if let Some(pages) = existing
        && pages > 0
        && !args.force
    {
        bail!("database {db:?} already exists ({pages} pages); use --force to replace it");
    }

    // Opening a WAL database, even read-only, creates its -wal and -shm files.
    let side_files = [wal_side_file(file, "-wal"), wal_side_file(file, "-shm")];
    let had_side_files = side_files.iter().any(|p| p.exists());
    let result = import_from(&store, file, &header, db);
    if header.wal && !had_side_files {
        tidy_wal(file);
    }
    let pages = match result {
        Ok(pages) => pages,
        Err(e) => {
            if existing.is_none() {
                // Best effort: do not leave behind a database this import created.
                if let Err(del) = store.transport.delete(db) {
                    tracing::warn!(db, error = %del, "cannot remove the database of a failed import");
                }
            }
            return Err(e);
        }
    };
    println!(
        "imported {} into {db}: {pages} pages, {} bytes in {:.2}s",
        file.display(),
        pages * PAGE_SIZE as u64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `import --layout v1`: the file's bytes as the database's v1 main file.
fn import_v1(opts: &GlobalOpts, args: &ImportArgs, started: Instant) -> Result<()> {
    let (file, db) = (args.file.as_path(), args.db.as_str());
    let store = store::open_store(opts, Access::Create)?;
    let engine = store.local_engine("import --layout v1")?;
    if engine
        .layout(db)
        .map_err(|e| store::client_error(db, e))?
        .is_some()
    {
        if !args.force {
            bail!("database {db:?} already exists; use --force to replace it");
        }
        engine.delete(db).map_err(|e| store::client_error(db, e))?;
    }
    let mut f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let bytes = engine
        .v1_files()
        .import(db, &mut f)
        .map_err(|e| anyhow!("cannot import {} as v1: {e}", file.display()))?;
    println!(
        "imported {} into {db} as v1: {bytes} bytes in {:.2}s",
        file.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `export DB -`: the database file on stdout (written to a temporary file
/// first, so what goes out passed integrity_check whole).
fn export_to_stdout(opts: &GlobalOpts, db: &str) -> Result<()> {
    let store = store::open_store(opts, Access::Read)?;
    if store.size_if_exists(db)?.is_none() {
        bail!("database {db:?} not found");
    }
    let tmp = tempfile::Builder::new()
        .prefix(".kvlite-export-")
        .suffix(".tmp")
        .tempfile()
        .context("cannot create a temporary file")?;
    write_file(&store, db, tmp.path()).with_context(|| format!("cannot export {db:?}"))?;
    let mut file = File::open(tmp.path()).context("cannot read the export back")?;
    let mut out = io::stdout().lock();
    io::copy(&mut file, &mut out).context("cannot write the export to stdout")?;
    io::Write::flush(&mut out).context("cannot write the export to stdout")?;
    Ok(())
}

/// Validate, convert if needed, and copy `file` into `db`. Every connection
/// to the source is closed on return.
fn import_from(store: &Store, file: &Path, header: &Header, db: &str) -> Result<u64> {
    // Holds the converted copy; declared first, so dropped after `source`.
    let mut _converted = None;
    let mut source = open_source(file)?;
    let mut path = file.to_path_buf();
    if header.page_size != PAGE_SIZE as u32 || header.wal {
        let (dir, conn) = convert(&source, file, header)?;
        source = conn;
        path = dir.path().join(CONVERTED);
        _converted = Some(dir);
    }
    stream_in(store, &source, &path, db, &format!("importing {db}"))
}

/// The converted copy's name in its temporary directory.
const CONVERTED: &str = "converted.sqlite";

fn wal_side_file(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Remove the -wal and -shm files our read-only open of a WAL database
/// created, the way SQLite does: the last read-write connection to close
/// deletes them, and only if no other connection uses them. Best effort.
fn tidy_wal(file: &Path) {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let Ok(conn) = Connection::open_with_flags(file, flags) else {
        return;
    };
    // The WAL is opened on first read.
    let read = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    });
    let closed = conn.close();
    if read.is_err() || closed.is_err() {
        tracing::debug!(file = %file.display(), "could not remove the WAL side files");
    }
}

/// What the 100-byte database header says.
#[derive(Debug)]
struct Header {
    page_size: u32,
    /// Read/write versions 2: the database is in WAL mode.
    wal: bool,
    /// Length of the file.
    bytes: u64,
}

fn read_header(path: &Path) -> Result<Header> {
    let name = path.display();
    let f = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let meta = f
        .metadata()
        .with_context(|| format!("cannot read {name}"))?;
    if !meta.is_file() {
        bail!("{name} is not a regular file");
    }
    let mut h = Vec::with_capacity(100);
    f.take(100)
        .read_to_end(&mut h)
        .with_context(|| format!("cannot read {name}"))?;
    if !h.starts_with(b"SQLite format 3\0") {
        if h.is_empty() {
            bail!("{name} is empty, not a SQLite database");
        }
        bail!("{name} is not a SQLite database (it does not start with the SQLite header)");
    }
    let Some(h) = h.first_chunk::<100>() else {
        bail!("{name} is truncated: shorter than the 100-byte SQLite header");
    };
    let be32 = |at: usize| {
        h.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes)
    };
    let raw = u16::from_be_bytes([h[16], h[17]]);
    let page_size = if raw == 1 { 65536 } else { u32::from(raw) };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        bail!("{name} has a corrupt header (page size field {raw})");
    }
    let wal = h[18] == 2 || h[19] == 2;
    // The in-header size is authoritative when it is valid for the current
    // change counter; a rollback-mode file shorter than that lost its tail.
    let (change_counter, size_pages, valid_for) = (be32(24), be32(28), be32(92));
    let expected = u64::from(size_pages) * u64::from(page_size);
    if !wal && size_pages > 0 && valid_for == change_counter && meta.len() < expected {
        bail!(
            "{name} is truncated: its header says {size_pages} pages of {page_size} bytes \
             ({expected} bytes) but the file holds {} bytes",
            meta.len()
        );
    }
    Ok(Header {
        page_size,
        wal,
        bytes: meta.len(),
    })
}

fn open_source(path: &Path) -> Result<Connection> {
    let name = path.display();
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).with_context(|| format!("cannot open {name}"))?;
    check(&conn, "quick_check")
        .with_context(|| format!("{name} is not a valid SQLite database"))?;
    Ok(conn)
}

/// Rewrite `source` with 4096-byte pages and rollback journaling into a
/// temporary file, and open that read-only.
fn convert(
    source: &Connection,
    file: &Path,
    header: &Header,
) -> Result<(tempfile::TempDir, Connection)> {
    let why = if header.wal {
        "in WAL mode".to_string()
    } else {
        format!("{}-byte pages", header.page_size)
    };
    let context = || format!("cannot convert {} ({why}) for import", file.display());
    let dir = tempfile::Builder::new()
        .prefix("kvlite-import-")
        .tempdir()
        .context("cannot create a temporary directory")
        .with_context(context)?;
    let path = dir.path().join(CONVERTED);
    let path_str = path
        .to_str()
        .ok_or_else(|| anyhow!("temporary path {} is not UTF-8", path.display()))
        .with_context(context)?;
    tracing::info!(file = %file.display(), tmp = %path.display(), "converting with VACUUM INTO");
    // On an existing database this only sets the page size VACUUM uses.
    source
        .execute_batch("PRAGMA page_size = 4096")
        .and_then(|()| source.execute("VACUUM INTO ?1", [path_str]))
        .with_context(context)?;
    {
        let tmp = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(context)?;
        let mode: String = tmp
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .with_context(context)?;
        let page_size: u32 = tmp
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .with_context(context)?;
        if page_size != PAGE_SIZE as u32 || !mode.eq_ignore_ascii_case("delete") {
            return Err(anyhow!(
                "the rewritten copy has page size {page_size} and journal mode {mode}"
            ))
            .with_context(context);
        }
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(context)?;
    Ok((dir, conn))
}

/// Pages per part of an import's commit: 4 MiB, under the fast-path limit,
/// so each part is one message; each upload thread holds one.
const PART_PAGES: usize = 1024;
const _: () = assert!(PART_PAGES.is_multiple_of(kvlite_api::SHARD_PAGES as usize));

/// Stream the pages of `path` (a 4096-byte-page, rollback-journal SQLite
/// file, open as `source`) into kvlite database `db` as one commit, and
/// check the result.
fn stream_in(
    store: &Store,
    source: &Connection,
    path: &Path,
    db: &str,
    label: &str,
) -> Result<u64> {
    let name = path.display();
    // The read transaction's shared lock keeps writers out until COMMIT.
    let pages: u32 = source
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .and_then(|()| source.query_row("PRAGMA page_count", [], |r| r.get(0)))
        .with_context(|| format!("cannot read {name}"))?;
    let started = Instant::now();
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let t = store.transport.as_ref();
    let opened = t
        .open(db, &Preload::default())
        .map_err(|e| store::client_error(db, e))?;
    let (g, head) = (opened.generation, opened.head_txid);
    let txid = t
        .commit_begin(db, g, head, pages)
        .map_err(|e| store::client_error(db, e))?;
    let bar = progress::Pages::start(u64::from(pages), label);
    // Parts go up from a few threads at once: encoding one (LZ4, checksum)
    // overlaps the store's write of another. Parts may arrive in any order;
    // each holds one part's buffer, so memory stays bounded.
    let next = Mutex::new(NextPart {
        file,
        pgno: 1,
        parts: 0,
        failed: false,
    });
    let upload = || -> Result<()> {
        let mut buf = vec![0u8; PART_PAGES * PAGE_SIZE];
        loop {
            let (part, refs) = {
                let mut next = next
                    .lock()
                    .map_err(|_| anyhow!("an import thread failed"))?;
                if next.failed || next.pgno > pages {
                    return Ok(());
                }
                let first = next.pgno;
                // Parts end on shard boundaries: into a blank database, a
                // large commit stores the whole shards of a part in place.
                let to_boundary = PART_PAGES as u32 - first % PART_PAGES as u32;
                let n = (pages - first + 1).min(to_boundary);
                let bytes = buf
                    .get_mut(..n as usize * PAGE_SIZE)
                    .ok_or_else(|| anyhow!("part buffer too small"))?;
                if let Err(e) = next.file.read_exact(bytes) {
                    next.failed = true;
                    return Err(e)
                        .with_context(|| format!("cannot read {name} (page {first} of {pages})"));
                }
                next.pgno += n;
                bar.set(u64::from(next.pgno - 1));
                // SQLite never writes its lock page; kvlite stores none.
                let refs: Vec<PageRef<'_>> = bytes
                    .chunks_exact(PAGE_SIZE)
                    .zip(first..)
                    .filter(|&(_, p)| p != LOCK_PAGE)
                    .map(|(data, p)| (p, data))
                    .collect();
                if refs.is_empty() {
                    continue;
                }
                next.parts += 1;
                (next.parts - 1, refs)
            };
            if let Err(e) = t.commit_chunk(db, g, txid, part, &refs) {
                if let Ok(mut next) = next.lock() {
                    next.failed = true;
                }
                return Err(store::client_error(db, e));
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(upload)).collect();
        let mut result = upload();
        for helper in helpers {
            let theirs = helper
                .join()
                .unwrap_or_else(|_| Err(anyhow!("an import thread failed")));
            result = result.and(theirs);
        }
        result
    })?;
    // The source's file stays open until its read transaction ends: closing
    // any descriptor of it would drop SQLite's lock on it (POSIX locks are
    // per process), and the check below reads it again.
    let NextPart {
        file: mut source_file,
        parts,
        ..
    } = next
        .into_inner()
        .map_err(|_| anyhow!("an import thread failed"))?;
    drop(bar);
    let committed = t
        .commit_finish(db, g, head, txid, parts, fastrand::u64(..))
        .map_err(|e| store::client_error(db, e))?;
    let copied = started.elapsed();
    let pages = u64::from(pages);
    // The copy landed as one large delta; folded into shards, it reads
    // many times faster. An optimisation: a failure only warns.
    let spinner = Spinner::start(&format!("compacting {db}"));
    let compacted = store.compact(db);
    drop(spinner);
    if let Err(e) = compacted {
        eprintln!("warning: {e:#}");
    }
    let folded = started.elapsed();
    // Read every page back through kvlite and compare it with the source:
    // the copy must be exact (the source's validity is its quick_check).
    let reader = fastrand::u64(..);
    let state = t
        .begin_read(db, reader, 0)
        .map_err(|e| store::client_error(db, e))?;
    let verified = (|| -> Result<()> {
        if state.head_txid != committed.txid {
            eprintln!(
                "warning: {db:?} changed after the import (commit {} after {}): \
                 the copy was not compared with {name}",
                state.head_txid, committed.txid
            );
            return Ok(());
        }
        if u64::from(state.size_pages) != pages {
            bail!("it holds {} pages, not {pages}", state.size_pages);
        }
        source_file
            .seek(io::SeekFrom::Start(0))
            .with_context(|| format!("cannot read {name}"))?;
        let mut source = SameAs::new(&mut source_file);
        let label = format!("checking {db} against {name}");
        write_pages(
            t,
            db,
            reader,
            state.at(),
            &mut source,
            Unreadable::Fail,
            Some(&label),
        )?;
        Ok(())
    })();
    let _ = t.end_read(db, reader);
    source
        .execute_batch("COMMIT")
        .with_context(|| format!("cannot finish reading {name}"))?;
    drop(source_file);
    verified.with_context(|| format!("the imported database {db:?} is not a copy of {name}"))?;
    tracing::info!(
        db,
        copy_s = copied.as_secs_f64(),
        compaction_s = (folded - copied).as_secs_f64(),
        verify_s = (started.elapsed() - folded).as_secs_f64(),
        "imported"
    );
    Ok(pages)
}

/// The import's read position in its source, shared by its upload threads.
struct NextPart {
    file: File,
    /// The first page of the next part.
    pgno: u32,
    /// Parts numbered so far.
    parts: u32,
    /// A thread failed: the others stop.
    failed: bool,
}

/// A [`Write`] that reads as many bytes from a file as it is given and fails
/// at the first page that differs (SQLite's lock page, which it never
/// writes, excepted), or when the file holds fewer bytes. What the file
/// holds past them is not the database's (a partial page, space SQLite
/// preallocated).
struct SameAs<'f> {
    file: io::BufReader<&'f mut File>,
    offset: u64,
    expected: Vec<u8>,
}

impl<'f> SameAs<'f> {
    fn new(file: &'f mut File) -> Self {
        SameAs {
            file: io::BufReader::with_capacity(PART_PAGES * PAGE_SIZE, file),
            offset: 0,
            expected: Vec::new(),
        }
    }
}

/// The first page (numbered from 1) where `got` and `expected` (as long as
/// each other), both read from file offset `offset`, differ, ignoring
/// SQLite's lock page.
fn first_different_page(offset: u64, got: &[u8], expected: &[u8]) -> Option<u64> {
    if got == expected {
        return None;
    }
    let page = PAGE_SIZE as u64;
    let lock_page = u64::from(LOCK_PAGE - 1) * page..u64::from(LOCK_PAGE) * page;
    debug_assert_eq!(got.len(), expected.len());
    let (at, _) = got
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(i, pair)| (offset + i as u64, pair))
        .find(|&(at, (a, b))| a != b && !lock_page.contains(&at))?;
    Some(at / page + 1)
}

impl Write for SameAs<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.expected.resize(buf.len(), 0);
        self.file.read_exact(&mut self.expected)?;
        if let Some(pgno) = first_different_page(self.offset, buf, &self.expected) {
            return Err(io::Error::other(format!(
                "page {pgno} differs from the source"
            )));
        }
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn export(opts: &GlobalOpts, args: ExportArgs) -> Result<()> {
    let started = Instant::now();
    let target = args.file.as_path();
    let db = args.db.as_str();
    if target == Path::new("-") {
        return export_to_stdout(opts, db);
    }
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => bail!("{} is a directory", target.display()),
        Ok(_) if !args.force => bail!(
            "{} already exists; use --force to overwrite it",
            target.display()
        ),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot access {}", target.display())),
    }
    let store = store::open_store(opts, Access::Read)?;
    if store.size_if_exists(db)?.is_none() {
        bail!("database {db:?} not found");
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".kvlite-export-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Like any new file: 0666 less the umask (tempfile's default is 0600).
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;

    let pages = write_file(&store, db, tmp.path())
        .with_context(|| format!("cannot export {db:?} to {}", target.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot sync {}", tmp.path().display()))?;
    let persisted = if args.force {
        tmp.persist(target)
    } else {
        tmp.persist_noclobber(target)
    };
    persisted.map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            anyhow!(
                "{} already exists; use --force to overwrite it",
                target.display()
            )
        } else {
            anyhow!(e.error).context(format!("cannot rename the export to {}", target.display()))
        }
    })?;
    // Make the rename durable; a failure here does not undo the export.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the directory");
    }
    println!(
        "exported {db} to {}: {pages} pages, {} bytes in {:.2}s",
        target.display(),
        pages * PAGE_SIZE as u64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Write the pages of `db`'s newest commit into the (empty) file at `path`,
/// as a reader (exporting never fences the database's writer), and check
/// the file.
fn write_file(store: &Store, db: &str, path: &Path) -> Result<u64> {
    let t = store.transport.as_ref();
    let reader = fastrand::u64(..);
    let state = t
        .begin_read(db, reader, 0)
        .map_err(|e| store::client_error(db, e))?;
    let written = (|| -> Result<u64> {
        let file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut out = io::BufWriter::with_capacity(PART_PAGES * PAGE_SIZE, file);
        let label = format!("exporting {db}");
        write_pages(
            t,
            db,
            reader,
            state.at(),
            &mut out,
            Unreadable::Fail,
            Some(&label),
        )?;
        out.into_inner()
            .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error()))?;
        Ok(u64::from(state.size_pages))
    })();
    let _ = t.end_read(db, reader);
    let pages = written?;
    let out = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mode: String = out.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        bail!("cannot set journal_mode DELETE (it is {mode})");
    }
    let spinner = Spinner::start("checking the integrity of the exported file");
    let checked = check(&out, "integrity_check");
    drop(spinner);
    checked.context("the exported copy is damaged")?;
    out.close().map_err(|(_, e)| e)?;
    Ok(pages)
}

/// What [`write_pages`] does with a page the read path cannot return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Fail the copy (export).
    Fail,
    /// Write zeros in its place and list it (`doctor --salvage`): a page
    /// whose blob is damaged, found one page at a time; a missing or
    /// misshapen page is zeros too, unlisted.
    ZeroFill,
}

/// Write pages `1..=at.size_pages` of `db` as reader `reader` sees them at
/// `at` to `out`, in order, [`PART_PAGES`] per request (SQLite's lock page
/// as zeros), with a progress bar under `label`. Returns the pages written
/// as zeros because they could not be read (only with
/// [`Unreadable::ZeroFill`]).
pub(crate) fn write_pages(
    t: &dyn Transport,
    db: &str,
    reader: u64,
    at: ReadAt,
    out: &mut impl Write,
    unreadable: Unreadable,
    label: Option<&str>,
) -> Result<Vec<u32>> {
    let bar = label.map(|l| progress::Pages::start(u64::from(at.size_pages), l));
    let zeros = vec![0u8; PAGE_SIZE];
    let mut zero_filled = Vec::new();
    let all: Vec<u32> = (1..=at.size_pages).collect();
    for batch in all.chunks(PART_PAGES) {
        let wanted: Vec<u32> = batch.iter().copied().filter(|&p| p != LOCK_PAGE).collect();
        // `None`: the page's blob is damaged.
        let pages: Vec<Option<Option<kvlite_api::PageData>>> =
            match t.get_pages_at(db, reader, at, &wanted) {
                Ok(pages) => pages.into_iter().map(Some).collect(),
                Err(kvlite_api::Error::Corruption { .. }) if unreadable == Unreadable::ZeroFill => {
                    wanted
                        .iter()
                        .map(|&p| match t.get_pages_at(db, reader, at, &[p]) {
                            Ok(mut one) => Ok(Some(one.pop().flatten())),
                            Err(kvlite_api::Error::Corruption { .. }) => Ok(None),
                            Err(e) => Err(e),
                        })
                        .collect::<Result<_, kvlite_api::Error>>()
                        .map_err(|e| store::client_error(db, e))?
                }
                Err(e) => return Err(store::client_error(db, e)),
            };
        let mut pages = pages.into_iter();
        for &pgno in batch {
            if pgno == LOCK_PAGE {
                // SQLite never reads it.
                out.write_all(&zeros)?;
                continue;
            }
            match (pages.next().flatten(), unreadable) {
                (Some(Some(data)), _) if data.len() == PAGE_SIZE => out.write_all(&data)?,
                (Some(_), Unreadable::ZeroFill) => out.write_all(&zeros)?,
                (None, Unreadable::ZeroFill) => {
                    zero_filled.push(pgno);
                    out.write_all(&zeros)?;
                }
                (_, Unreadable::Fail) => {
                    bail!("page {pgno} of {db:?} is missing or not {PAGE_SIZE} bytes")
                }
            }
        }
        if let Some(bar) = &bar {
            bar.set(u64::from(batch.last().copied().unwrap_or(0)));
        }
    }
    Ok(zero_filled)
}

/// Run `PRAGMA quick_check` or `integrity_check`; fail unless it says "ok".
fn check(conn: &Connection, pragma: &str) -> Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}"))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if rows.len() == 1 && rows.first().is_some_and(|r| r == "ok") {
        return Ok(());
    }
    let shown: Vec<&str> = rows.iter().take(5).map(String::as_str).collect();
    let more = rows.len().saturating_sub(shown.len());
    let mut msg = format!("PRAGMA {pragma} failed: {}", shown.join("; "));
    if more > 0 {
        msg.push_str(&format!(" (and {more} more)"));
    }
    Err(anyhow!(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(n: usize, fill: u8) -> Vec<u8> {
        vec![fill; n * PAGE_SIZE]
    }

    #[test]
    fn same_as_accepts_an_exact_copy_and_names_the_first_page_that_differs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source");
        let source = pages(3, 7);
        fs::write(&path, &source).unwrap();

        let mut file = File::open(&path).unwrap();
        let mut same = SameAs::new(&mut file);
        for page in source.chunks(PAGE_SIZE) {
            same.write_all(page).unwrap();
        }

        let mut copy = source.clone();
        copy[2 * PAGE_SIZE + 100] ^= 1;
        let mut file = File::open(&path).unwrap();
        let err = SameAs::new(&mut file).write_all(&copy).unwrap_err();
        assert!(err.to_string().contains("page 3 differs"), "{err}");

        // The source holds fewer bytes than the copy: not the same.
        let mut file = File::open(&path).unwrap();
        assert!(SameAs::new(&mut file).write_all(&pages(4, 7)).is_err());
    }

    #[test]
    fn only_the_lock_page_may_differ() {
        let lock = u64::from(LOCK_PAGE - 1) * PAGE_SIZE as u64;
        let (zeros, mut source) = (pages(3, 0), pages(3, 0));
        // The copy's pages LOCK_PAGE-1 ..= LOCK_PAGE+1; the lock page differs.
        source[PAGE_SIZE + 9] = 1;
        let from = lock - PAGE_SIZE as u64;
        assert_eq!(first_different_page(from, &zeros, &source), None);
        source[2 * PAGE_SIZE] = 1;
        assert_eq!(
            first_different_page(from, &zeros, &source),
            Some(u64::from(LOCK_PAGE) + 1)
        );
        source[PAGE_SIZE - 1] = 1;
        assert_eq!(
            first_different_page(from, &zeros, &source),
            Some(u64::from(LOCK_PAGE) - 1)
        );
    }
}
