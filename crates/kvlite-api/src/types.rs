//! Requests and responses of the storage engine's operations.

/// A page in a request: its number (from 1) and [`crate::PAGE_SIZE`] bytes.
pub type PageRef<'a> = (u32, &'a [u8]);

/// One page read: its own allocation, shared by reference count between
/// the engine's blob cache, the VFS's page cache and answers being sent.
pub type PageData = bytes::Bytes;

/// What `open` preloads besides page 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preload {
    pub pages: Vec<u32>,
    /// Inclusive page ranges.
    pub ranges: Vec<(u32, u32)>,
}

/// Pages a [`ReadState`] lists as changed at most; past it a reader is told
/// to forget everything it cached (cheaper than a longer list).
pub const MAX_CHANGED_PAGES: usize = 65_536;

/// A reader's view of a database at the start of one read transaction: the
/// newest commit, which it reads at until its next transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// Which incarnation of the name this is: a database deleted and
    /// created again under the same name has another one, and reads naming
    /// the old one are refused.
    pub incarnation: u64,
    pub head_txid: u64,
    pub size_pages: u32,
    pub page_size: u32,
    /// Pages changed since the commit the reader named, ascending, when the
    /// engine can tell (at most [`MAX_CHANGED_PAGES`]); `None`: forget every
    /// cached page.
    pub changed: Option<Vec<u32>>,
}

/// The committed state a reader reads at: what its [`ReadState`] named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAt {
    pub incarnation: u64,
    pub txid: u64,
    pub size_pages: u32,
}

impl ReadState {
    pub fn at(&self) -> ReadAt {
        ReadAt {
            incarnation: self.incarnation,
            txid: self.head_txid,
            size_pages: self.size_pages,
        }
    }
}

/// A database just taken over by its new writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenResponse {
    pub generation: u64,
    pub head_txid: u64,
    pub size_pages: u32,
    pub page_size: u32,
    pub fast_path_limit: u64,
    pub created: bool,
    /// Preloaded pages that exist, ascending.
    pub pages: Vec<(u32, PageData)>,
}

/// The one-round-trip commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRequest<'a> {
    pub db: &'a str,
    pub generation: u64,
    pub expected_head: u64,
    pub new_size: u32,
    /// Client-chosen id; a retry with a landed id returns the original result.
    pub commit_id: u64,
    pub pages: &'a [PageRef<'a>],
}

/// A commit too large for one message: parts of at most the fast-path
/// limit of pages each.
#[derive(Debug, Clone, Copy)]
pub struct LargeCommit<'a> {
    pub db: &'a str,
    pub generation: u64,
    pub expected_head: u64,
    pub new_size: u32,
    pub commit_id: u64,
    pub parts: &'a [&'a [PageRef<'a>]],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitResult {
    pub txid: u64,
    pub size_pages: u32,
}

/// Whether a commit id landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitStatus {
    Landed(CommitResult),
    /// Not among the recent commits; the database is at this state.
    NotLanded {
        generation: u64,
        head_txid: u64,
    },
}

/// Where a database's data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Native = 0,
    MigratingFromV1 = 1,
    MigratedFromV1 = 2,
}

impl Origin {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Origin::Native),
            1 => Some(Origin::MigratingFromV1),
            2 => Some(Origin::MigratedFromV1),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Native => "native",
            Origin::MigratingFromV1 => "migrating-from-v1",
            Origin::MigratedFromV1 => "migrated-from-v1",
        }
    }
}

/// A database's state, for `kvlite inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbStat {
    pub name: String,
    pub id: u64,
    pub generation: u64,
    pub head_txid: u64,
    pub next_txid: u64,
    pub materialized_txid: u64,
    pub size_pages: u32,
    pub page_size: u32,
    pub shard_pages: u32,
    pub origin: Origin,
    pub created_ms: u64,
    pub page_index_entries: u64,
    pub deltas: u64,
    pub delta_bytes: u64,
    pub shards: u64,
    pub shard_bytes: u64,
    pub used_bytes: u64,
    pub quota_bytes: u64,
    pub fast_path_limit: u64,
    /// Large commits reserved but not finished.
    pub pending_commits: u64,
    /// History: the oldest commit reads may ask for, how long commits stay
    /// readable (ms), the bytes kept only for reads in the past (kept
    /// versions, history bases, pins; the deltas they name count in
    /// `delta_bytes`), and how many forks or restores read this database.
    pub history_floor: u64,
    pub retention_ms: u64,
    pub history_bytes: u64,
    pub kept_versions: u64,
    pub pins: u64,
    /// Set for a fork or a restored database.
    pub forked_from: Option<ForkOrigin>,
}

/// What a check of one database's stored form found (`kvlite doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DoctorReport {
    /// The commit checked (the head when the check began).
    pub head_txid: u64,
    pub size_pages: u32,
    /// Blobs (delta parts and shards) read and checksum-verified.
    pub blobs_checked: u64,
    pub blob_bytes: u64,
    /// Blobs that are missing or fail their checksum (at most
    /// [`DoctorReport::MAX_LISTED`]; `damaged_blob_count` counts them all).
    pub damaged_blobs: Vec<DamagedBlob>,
    pub damaged_blob_count: u64,
    /// Pages compared between the replay of the stored deltas over the
    /// shards and what the normal read path returns.
    pub pages_compared: u64,
    /// Pages the read path returns but the replay disagrees with (at most
    /// [`DoctorReport::MAX_LISTED`]; the count counts them all).
    pub mismatched_pages: Vec<u32>,
    pub mismatched_page_count: u64,
    /// Pages the read path cannot return (their blob is damaged or missing).
    pub unreadable_pages: Vec<u32>,
    pub unreadable_page_count: u64,
    /// What the audit of the page index and usage counters found.
    pub audit_problems: Vec<String>,
}

impl DoctorReport {
    /// Entries each list holds at most (a report stays small whatever the
    /// damage).
    pub const MAX_LISTED: usize = 1000;

    /// Nothing found wrong.
    pub fn is_healthy(&self) -> bool {
        self.damaged_blob_count == 0
            && self.mismatched_page_count == 0
            && self.unreadable_page_count == 0
            && self.audit_problems.is_empty()
    }
}

/// One damaged blob in a [`DoctorReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedBlob {
    /// Which blob, in words ("delta 12 part 0", "shard 3").
    pub blob: String,
    /// Its key prefix in the KV store, hex.
    pub key: String,
    /// What is wrong with it.
    pub error: String,
}

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub pages_folded: u64,
    pub deltas_deleted: u64,
    pub shards_written: u64,
    pub transactions: u64,
    /// The pass stopped because the database was taken over meanwhile.
    pub stale: bool,
}

/// Fork chains are at most this deep (each level is one more lookup on a
/// read of a page the fork never wrote).
pub const MAX_FORK_DEPTH: u8 = 16;

/// A committed state of a database, named by its commit or by a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPoint {
    /// The newest commit at or before this txid.
    Txid(u64),
    /// The newest commit at or before this time (ms since the epoch).
    TimeMs(u64),
}

/// One commit in a database's history (`kvlite history`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub txid: u64,
    /// When it landed (ms since the epoch; 0 when not recorded).
    pub time_ms: u64,
    /// The database size after it.
    pub size_pages: u32,
    /// Pages it wrote.
    pub pages: u32,
    /// Bytes its delta occupies.
    pub bytes: u64,
    /// Set for the creation of a fork or of a restored database: what it
    /// started as (it wrote no pages of its own).
    pub origin: Option<ForkOrigin>,
}

/// Where a fork (or a restored database) came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkOrigin {
    /// The source's name, if it still has one (a deleted source is kept,
    /// nameless, while forks read it).
    pub name: Option<String>,
    pub id: u64,
    pub txid: u64,
    pub size_pages: u32,
}

/// A page of a database's history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub incarnation: u64,
    pub head_txid: u64,
    /// The oldest commit reads may still ask for.
    pub floor_txid: u64,
    /// How long commits stay readable (the database's own setting, else
    /// the engine's default), in ms.
    pub retention_ms: u64,
    /// Whether the retention is the database's own setting.
    pub retention_set: bool,
    pub commits: Vec<CommitInfo>,
    /// Set for a fork or a restored database.
    pub forked_from: Option<ForkOrigin>,
}

/// A fork just made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forked {
    pub id: u64,
    /// The source commit it shares.
    pub source_txid: u64,
    pub size_pages: u32,
}

/// A restore just made: the database's name now names the restored state;
/// its state before is kept as `backup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub backup: String,
    pub source_txid: u64,
    pub size_pages: u32,
}
