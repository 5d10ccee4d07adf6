//! `doctor`: check one database's stored form end to end.
//!
//! Every blob (delta part, shard) is read from the store, not the cache,
//! and its checksum verified; the database is rebuilt by replaying the
//! deltas after the materialized txid, in order, over the shards (a
//! truncating commit drops the pages past its size), and the rebuilt pages
//! are compared with what the normal read path — page index, caches —
//! returns, page by page; then the audit of the page index and the usage
//! counters runs. All of it at one commit, held by a reader pin, so a
//! writer committing meanwhile changes nothing the check sees (compaction
//! folding during the check makes it start again).
//!
//! Memory stays bounded by the page count: the replay keeps one 64-bit
//! hash per page, not the pages.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};

use kvlite_api::{DamagedBlob, DoctorReport, Error, LOCK_PAGE, PageData, ReadAt, Result};
use kvlite_kv::{KvRead, ScanOptions, chunked};
use kvlite_ltx::LtxFile;

use crate::blob::{self, BlobRef};
use crate::error::Fail;
use crate::keys::DbKeys;
use crate::records::{DeltaInfo, ShardInfo};
use crate::{Engine, validate_name};

/// Pages the read path is asked for at a time.
const READ_BATCH: usize = 256;

/// Checks that find the database changed under them start again this often.
const ATTEMPTS: usize = 3;

/// What one snapshot says the database holds.
struct Listing {
    keys: DbKeys,
    parent: Option<crate::meta::Parent>,
    /// Stored history bases: shard and commit.
    bases: Vec<(u32, u64)>,
    head_txid: u64,
    materialized_txid: u64,
    shard_epoch: u64,
    deltas: Vec<(u64, DeltaInfo)>,
    shards: Vec<u32>,
}

/// A page's content as a hash; an all-zero page and an absent one alike
/// are `None` (SQLite reads both as zeros).
fn page_hash(data: &[u8]) -> Option<u64> {
    if data.iter().all(|&b| b == 0) {
        return None;
    }
    let mut h = DefaultHasher::new();
    h.write(data);
    Some(h.finish())
}

fn push_capped<T>(list: &mut Vec<T>, count: &mut u64, item: T) {
    *count += 1;
    if list.len() < DoctorReport::MAX_LISTED {
        list.push(item);
    }
}

impl Engine {
    /// Check database `db` (see the module documentation). Damage is
    /// reported in the result, not as an error; errors are for a check that
    /// could not run (the database does not exist, the store is down).
    pub fn doctor(&self, db: &str) -> Result<DoctorReport> {
        validate_name(db)?;
        for _ in 0..ATTEMPTS {
            let reader = fastrand::u64(..);
            let state = self.begin_read(db, reader, 0)?;
            let checked = self.doctor_at(db, reader, state.at());
            self.end_read(db, reader);
            if let Some(report) = checked? {
                return Ok(report);
            }
        }
        Err(Error::Unavailable(format!(
            "{db:?} kept being compacted during the check; run it again"
        )))
    }

    /// The check at commit `at`; `None` when compaction changed the stored
    /// form while it ran.
    fn doctor_at(&self, db: &str, reader: u64, at: ReadAt) -> Result<Option<DoctorReport>> {
        let listing = self.list_blobs(db)?;
        if listing.head_txid != at.txid || listing.keys.id != at.incarnation {
            // A commit landed between the pin and the listing: start again.
            return Ok(None);
        }
        let mut report = DoctorReport {
            head_txid: at.txid,
            size_pages: at.size_pages,
            ..DoctorReport::default()
        };
        let mut replay: BTreeMap<u32, Option<u64>> = BTreeMap::new();
        // A fork starts from its parent's pages at the fork point (the
        // parent's own check verifies how those are stored).
        if let Some(parent) = listing.parent {
            let pgnos: Vec<u32> = (1..=parent.size_pages)
                .filter(|&p| p != LOCK_PAGE)
                .collect();
            for batch in pgnos.chunks(READ_BATCH) {
                let read = self
                    .kv
                    .read(|txn| self.parent_pages(txn, db, parent, batch));
                if let Ok(pages) = read {
                    for (&pgno, page) in batch.iter().zip(pages) {
                        replay.insert(pgno, page.as_deref().and_then(page_hash));
                    }
                }
            }
        }
        // Kept history: verified, not replayed (reads in the past use it).
        for &(shard, as_of) in &listing.bases {
            self.check_blob(
                db,
                &listing.keys,
                BlobRef::Base { shard, as_of },
                &mut report,
                |_| {},
            )?;
        }
        for &shard in &listing.shards {
            self.check_blob(db, &listing.keys, BlobRef::Shard(shard), &mut report, |p| {
                for (pgno, data) in p.iter() {
                    replay.insert(pgno, page_hash(data));
                }
            })?;
        }
        for (txid, info) in &listing.deltas {
            // Folded deltas kept for readers: verified, not replayed.
            let replayed = *txid > listing.materialized_txid;
            let mut size = info.size_pages;
            for part in 0..info.parts {
                let blob = BlobRef::Delta { txid: *txid, part };
                let header_size = self.check_blob(db, &listing.keys, blob, &mut report, |p| {
                    if replayed {
                        for (pgno, data) in p.iter() {
                            replay.insert(pgno, page_hash(data));
                        }
                    }
                })?;
                size = size.or(header_size);
            }
            if let (true, Some(size)) = (replayed, size) {
                replay.retain(|&pgno, _| pgno <= size);
            }
        }
        if self.list_blobs(db)?.shard_epoch != listing.shard_epoch {
            return Ok(None);
        }
        self.compare_read_path(db, reader, at, &replay, &mut report)?;
        let audit = self.audit(db)?;
        let mut problems = audit.problems.clone();
        for (what, stored, scanned) in [
            (
                "used bytes",
                audit.meta_used_bytes,
                audit.scanned_used_bytes,
            ),
            (
                "page-index entries",
                audit.meta_page_index_entries,
                audit.scanned_page_index_entries,
            ),
            ("deltas", audit.meta_deltas, audit.scanned_deltas),
            ("shards", audit.meta_shards, audit.scanned_shards),
        ] {
            if stored != scanned {
                problems.push(format!(
                    "{what}: the database record says {stored}, the store holds {scanned}"
                ));
            }
        }
        problems.truncate(DoctorReport::MAX_LISTED);
        report.audit_problems = problems;
        Ok(Some(report))
    }

    fn list_blobs(&self, db: &str) -> Result<Listing> {
        Ok(self.kv.read(|txn| {
            let (_, keys, meta) = self.resolve(txn, db)?;
            let (start, end) = keys.dlist_all();
            let mut deltas = Vec::new();
            for (k, v) in txn.scan(&start, &end, ScanOptions::ALL)? {
                // A malformed entry is the audit's to report.
                if let (Some(txid), Some(info)) = (DbKeys::dlist_txid(&k), DeltaInfo::decode(&v)) {
                    deltas.push((txid, info));
                }
            }
            let (start, end) = keys.slist_from(0);
            let shards = txn
                .scan(&start, &end, ScanOptions::ALL)?
                .iter()
                .filter(|(_, v)| ShardInfo::decode(v).is_some())
                .filter_map(|(k, _)| DbKeys::slist_shard(k))
                .collect();
            let bases = crate::history::all_bases(txn, db, &keys)?
                .into_iter()
                .filter(|(_, b)| b.stored.is_some())
                .map(|(s, b)| (s, b.as_of))
                .collect();
            Ok::<_, Fail>(Listing {
                parent: meta.parent,
                bases,
                keys,
                head_txid: meta.head_txid,
                materialized_txid: meta.materialized_txid,
                shard_epoch: meta.shard_epoch,
                deltas,
                shards,
            })
        })?)
    }

    /// Read one blob from the store (one transaction each, so a large
    /// database never makes one long transaction), verify it, and hand its
    /// pages to `use_pages`; damage goes in the report. Returns the database
    /// size its LTX header records (for a delta whose record predates
    /// sizes), when the blob is there and its header parses.
    fn check_blob(
        &self,
        db: &str,
        keys: &DbKeys,
        blob: BlobRef,
        report: &mut DoctorReport,
        use_pages: impl FnOnce(&crate::blob::Decoded),
    ) -> Result<Option<u32>> {
        let prefix = blob.prefix(keys);
        let read = self.kv.read(|txn| chunked::read(txn, &prefix));
        let what = match blob {
            BlobRef::Delta { txid, part } => format!("delta {txid} part {part}"),
            BlobRef::Shard(shard) => format!("shard {shard}"),
            BlobRef::Base { shard, as_of } => {
                format!("history base of shard {shard} (commit {as_of})")
            }
        };
        let mut damaged = |error: String| {
            push_capped(
                &mut report.damaged_blobs,
                &mut report.damaged_blob_count,
                DamagedBlob {
                    blob: what.clone(),
                    key: blob::hex(&prefix),
                    error,
                },
            )
        };
        let bytes = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                damaged("missing from the store".into());
                return Ok(None);
            }
            Err(e @ kvlite_kv::KvError::BrokenChunks { .. }) => {
                damaged(e.to_string());
                return Ok(None);
            }
            Err(e) => return Err(Fail::Kv(e).into()),
        };
        report.blobs_checked += 1;
        report.blob_bytes += bytes.len() as u64;
        let commit_size = LtxFile::parse(&bytes).ok().map(|f| f.header().commit);
        match blob::decode(db, keys, blob, &bytes) {
            Ok(pages) => use_pages(&pages),
            Err(Fail::Api(Error::Corruption { what, .. })) => damaged(what),
            Err(e) => return Err(e.into()),
        }
        Ok(commit_size)
    }

    fn compare_read_path(
        &self,
        db: &str,
        reader: u64,
        at: ReadAt,
        replay: &BTreeMap<u32, Option<u64>>,
        report: &mut DoctorReport,
    ) -> Result<()> {
        let pgnos: Vec<u32> = (1..=at.size_pages).filter(|&p| p != LOCK_PAGE).collect();
        for batch in pgnos.chunks(READ_BATCH) {
            let pages: Vec<Result<Option<PageData>>> =
                match self.get_pages_at(db, reader, at, batch) {
                    Ok(pages) => pages.into_iter().map(Ok).collect(),
                    // Find which pages fail, one at a time.
                    Err(Error::Corruption { .. }) => batch
                        .iter()
                        .map(|&p| {
                            self.get_pages_at(db, reader, at, &[p])
                                .map(|mut one| one.pop().flatten())
                        })
                        .collect(),
                    Err(e) => return Err(e),
                };
            for (&pgno, page) in batch.iter().zip(pages) {
                let page = match page {
                    Ok(page) => page,
                    Err(Error::Corruption { .. }) => {
                        push_capped(
                            &mut report.unreadable_pages,
                            &mut report.unreadable_page_count,
                            pgno,
                        );
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                report.pages_compared += 1;
                let read = page.as_deref().and_then(page_hash);
                let rebuilt = replay.get(&pgno).copied().flatten();
                if read != rebuilt {
                    push_capped(
                        &mut report.mismatched_pages,
                        &mut report.mismatched_page_count,
                        pgno,
                    );
                }
            }
        }
        Ok(())
    }
}
