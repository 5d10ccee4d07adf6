//! The legacy v1 layout's files: each SQLite file of a database (main,
//! rollback journal, WAL, shared-memory index) stored as raw chunks of at
//! most [`V1_CHUNK_SIZE`] bytes. [`V1Files`] is the seam between the VFS's
//! v1 file type, which runs SQLite directly on those files, and whatever
//! keeps them: the engine's KV store, or a migration's in-memory overlay.

use crate::Result;

/// Bytes per v1 chunk: chunk `i` of a file holds bytes `[i*4096, i*4096+4096)`.
pub const V1_CHUNK_SIZE: usize = 4096;
/// The format version every v1 file's metadata record carries.
pub const V1_FORMAT_VERSION: u16 = 1;

/// The files of one v1 database, by their tag in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum V1File {
    Main = 0,
    Journal = 1,
    Wal = 2,
    /// SQLite's shared-memory WAL index. The VFS keeps it in process memory
    /// (it is rebuilt from the WAL by the first opener); the tag exists so
    /// data written by other v1 implementations is recognised.
    Shm = 3,
}

impl V1File {
    pub const ALL: [V1File; 4] = [V1File::Main, V1File::Journal, V1File::Wal, V1File::Shm];

    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn from_tag(tag: u8) -> Option<V1File> {
        V1File::ALL.into_iter().find(|f| f.tag() == tag)
    }

    /// What SQLite appends to the database's name to name this file.
    pub fn suffix(self) -> &'static str {
        match self {
            V1File::Main => "",
            V1File::Journal => "-journal",
            V1File::Wal => "-wal",
            V1File::Shm => "-shm",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            V1File::Main => "main",
            V1File::Journal => "journal",
            V1File::Wal => "wal",
            V1File::Shm => "shm",
        }
    }
}

/// The files of v1 databases, addressed by database name and file. Every
/// call is atomic on its own (one KV transaction for the engine's store):
/// that is the v1 layout's contract, and why it is slow.
pub trait V1Files: Send + Sync {
    /// Copy the file's bytes at `offset` into `buf`; returns how many were
    /// there (the rest of `buf` is zero-filled). A missing file reads as
    /// empty.
    fn read(&self, db: &str, file: V1File, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// Write `data` at `offset`, creating the file and growing it (with
    /// zeros before `offset`) as needed.
    fn write(&self, db: &str, file: V1File, offset: u64, data: &[u8]) -> Result<()>;
    /// Set the file's size, dropping or zero-filling its tail.
    fn truncate(&self, db: &str, file: V1File, size: u64) -> Result<()>;
    /// The file's size, or `None` if it does not exist.
    fn size(&self, db: &str, file: V1File) -> Result<Option<u64>>;
    /// Create the file, empty, if it does not exist.
    fn create(&self, db: &str, file: V1File) -> Result<()>;
    /// Remove the file; removing a missing file is not an error.
    fn delete(&self, db: &str, file: V1File) -> Result<()>;
}
