//! What crosses kvlite's layers, defined once: the limits of the layout,
//! the requests and responses of the storage engine, the error taxonomy, and
//! the [`Transport`] seam a client (the VFS, the CLI) uses to reach an engine,
//! in this process or over the network.
//!
//! The engine implements these operations, the wire protocol carries them,
//! the server dispatches them and the VFS calls them; none of those crates
//! redefines a type that lives here.

mod error;
mod rules;
mod transport;
mod types;
mod v1;

pub use error::{
    CorruptionKind, Error, FenceReason, Invalid, InvalidKind, Result, TooLarge, TooLargeKind,
};
pub use rules::{
    growth_fill, growth_fill_count, valid_namespace, validate_name, validate_new_name,
};
pub use transport::Transport;
pub use types::{
    CommitInfo, CommitRequest, CommitResult, CommitStatus, CompactionReport, DamagedBlob, DbStat,
    DoctorReport, ForkOrigin, Forked, HistoryPage, LargeCommit, MAX_CHANGED_PAGES, MAX_FORK_DEPTH,
    OpenResponse, Origin, PageData, PageRef, Preload, ReadAt, ReadPoint, ReadState, Restored,
};
pub use v1::{V1_CHUNK_SIZE, V1_FORMAT_VERSION, V1File, V1Files};

/// Bytes per page. kvlite's layout stores 4 KiB pages only.
pub const PAGE_SIZE: usize = 4096;
/// Pages per shard.
pub const SHARD_PAGES: u32 = 64;
/// SQLite's lock page for 4 KiB pages: never written, reads as zeros.
pub const LOCK_PAGE: u32 = (0x4000_0000 / PAGE_SIZE as u32) + 1;
/// Largest database, in pages, and largest page number (SQLite's default
/// `max_page_count`).
pub const MAX_PAGES: u32 = 0x3fff_ffff;
/// Longest database name, in bytes.
pub const MAX_NAME_LEN: usize = 512;
