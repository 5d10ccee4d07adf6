//! The one error taxonomy of kvlite's operations. The engine returns it, the
//! protocol carries it (`kvlite_proto::convert` maps it to and from each
//! wire version, one function per direction), clients match on it. Callers
//! classify by variant and kind, never by message text.

use std::fmt;

/// Why a request was fenced out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// Another opener took the database over; `head` is the current head,
    /// `since_ms` when the takeover happened (ms since the epoch; 0 when
    /// unknown: a record or a protocol version that does not carry it).
    StaleGeneration {
        current: u64,
        yours: u64,
        head: u64,
        since_ms: u64,
    },
    /// The database's head moved since the caller last saw it (under the
    /// caller's own `generation`).
    HeadMismatch {
        generation: u64,
        current: u64,
        expected: u64,
    },
    /// The database moved to another cluster of a multi-cluster deployment
    /// (`cluster`, its index): its writers reopen it there. A router sees
    /// this and follows the move; a client sees it only as a stale
    /// generation (older protocol versions have no such reason).
    Moved { cluster: u32 },
}

impl fmt::Display for FenceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceReason::StaleGeneration {
                current,
                yours,
                since_ms,
                ..
            } => {
                f.write_str("another writer opened it")?;
                if *since_ms > 0 {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(*since_ms);
                    write!(f, " at {}", humantime::format_rfc3339_seconds(at))?;
                }
                write!(f, " (generation {yours} is stale, current {current})")
            }
            FenceReason::HeadMismatch {
                current, expected, ..
            } => {
                write!(f, "expected head txid {expected}, actual {current}")
            }
            FenceReason::Moved { cluster } => {
                write!(f, "it moved to cluster {cluster}; reopen it")
            }
        }
    }
}

/// Declares a kind enum with a stable numeric code per kind (the wire
/// carries codes, so a kind added later reaches an older peer as
/// `Unknown(code)`, and back again unchanged).
macro_rules! kinds {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $code:literal,)* }) => {
        $(#[$m])*
        #[non_exhaustive]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
            /// A kind this build does not know, by its code (sent by a newer
            /// peer; 0 when an older one sent no kind at all).
            Unknown(u16),
        }

        impl $name {
            /// The stable code of this kind on the wire.
            pub fn code(self) -> u16 {
                match self {
                    $($name::$variant => $code,)*
                    $name::Unknown(code) => code,
                }
            }

            /// The kind with this code.
            pub fn from_code(code: u16) -> Self {
                match code {
                    $($code => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }

            /// Every kind this build knows.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
        }
    };
}

kinds! {
    /// What is wrong with an invalid request.
    InvalidKind {
        /// A database name that is empty, too long or has a NUL.
        Name = 1,
        /// Page 0, or a page number beyond the largest one.
        PageNumber = 2,
        /// A page that is not exactly one page long.
        PageLength = 3,
        /// A page listed twice in one commit.
        DuplicatePage = 4,
        /// A page past the commit's new size.
        PagePastSize = 5,
        /// Non-zero data for SQLite's lock page.
        LockPage = 6,
        /// A database size beyond the largest one.
        Size = 7,
        /// A large commit that does not exist, belongs to another writer, or
        /// is missing parts.
        LargeCommit = 8,
        /// A large-commit part without pages.
        EmptyPart = 9,
        /// A malformed preload range.
        Range = 10,
        /// A list limit beyond the maximum.
        ListLimit = 11,
        /// A message that is malformed or not part of the connection's
        /// protocol version.
        Protocol = 12,
        /// The peer speaks no protocol version this build speaks.
        UnsupportedVersion = 13,
        /// Settings or an address the client was given are unusable.
        Config = 14,
        /// A page size kvlite does not store.
        PageSize = 15,
        /// A write to v1 data of a database that is migrating or has
        /// migrated to the v2 layout (the v1 data is then read-only).
        V1ReadOnly = 16,
        /// An operation on a layout the database does not have (v1 data
        /// asked of a v2-only database, or the reverse).
        Layout = 17,
        /// A read at a commit the database no longer keeps: outside its
        /// history, or folded into shards while its reader was idle past
        /// the reader lease.
        HistoryUnavailable = 18,
        /// A write to a store this process opened read-only (a read-only
        /// data directory or a backup copy).
        ReadOnlyStore = 19,
        /// A database created under a name that is already taken (a fork's
        /// or a restore's target).
        NameTaken = 20,
    }
}

kinds! {
    /// What a too-large request exceeds.
    TooLargeKind {
        /// More page bytes than the one-round-trip commit accepts.
        FastPath = 1,
        /// More pages than one commit may hold.
        Commit = 2,
        /// A large-commit part over the part limit.
        Part = 3,
        /// A protocol message over the message limit.
        Message = 4,
        /// More than one KV transaction may write.
        Transaction = 5,
        /// No database ids left.
        DatabaseIds = 6,
        /// A fork of a fork chain already as deep as forks may go.
        ForkDepth = 7,
    }
}

kinds! {
    /// What is corrupt.
    CorruptionKind {
        /// A blob (delta or shard) that fails to parse or to verify.
        Blob = 1,
        /// A stored record (META, page index, lists) that does not decode.
        Record = 2,
        /// A page the index promises but no blob holds.
        MissingPage = 3,
        /// A record that names data which is not there.
        MissingData = 4,
        /// Usage counters that disagree with what they count.
        Counters = 5,
        /// A v1 file whose metadata has a format version this build does
        /// not know.
        V1Version = 6,
        /// A v1 file with a missing, short or oversized chunk.
        V1Chunks = 7,
        /// A v1 database file whose size is not a whole number of pages.
        V1Size = 8,
        /// A v1 database that is not a SQLite database (bad magic, page
        /// size, header), or whose journal or WAL SQLite cannot recover.
        V1Header = 9,
        /// A v1 database that fails SQLite's integrity check once
        /// recovered.
        V1Integrity = 10,
    }
}

/// An invalid request: its kind and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub kind: InvalidKind,
    pub detail: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A request over a limit: which limit and by how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub kind: TooLargeKind,
    pub detail: String,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Every way a kvlite operation fails.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Another writer took the database over, or its head moved.
    #[error("database {db:?} fenced: {reason}")]
    Fenced { db: String, reason: FenceReason },
    #[error("database {0:?} not found")]
    NotFound(String),
    #[error("invalid request: {0}")]
    InvalidRequest(Invalid),
    #[error("too large: {0}")]
    TooLarge(TooLarge),
    #[error("database {db:?} over quota: {used} bytes used + {needed} needed > {quota} quota")]
    QuotaExceeded {
        db: String,
        used: u64,
        needed: u64,
        quota: u64,
    },
    #[error("database {db:?} corrupt: {what}")]
    Corruption {
        db: String,
        kind: CorruptionKind,
        what: String,
    },
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The peer speaks none of this build's protocol versions.
    #[error("unsupported protocol version; the server speaks {supported:?}")]
    UnsupportedVersion { supported: Vec<u16> },
    /// The store or the server is unreachable for now; nothing was changed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The store has no space left; nothing was changed. Reads still work,
    /// and writes that free space do.
    #[error("store full: {0}")]
    StoreFull(String),
    /// A commit was sent but whether it landed could not be learned.
    #[error("commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(kind: InvalidKind, detail: impl Into<String>) -> Self {
        Error::InvalidRequest(Invalid {
            kind,
            detail: detail.into(),
        })
    }

    pub fn too_large(kind: TooLargeKind, detail: impl Into<String>) -> Self {
        Error::TooLarge(TooLarge {
            kind,
            detail: detail.into(),
        })
    }

    pub fn corrupt(db: &str, kind: CorruptionKind, what: impl Into<String>) -> Self {
        Error::Corruption {
            db: db.to_string(),
            kind,
            what: what.into(),
        }
    }

    /// Fenced or of unknown outcome: the connection must stop writing (and,
    /// after an unknown outcome, stop trusting what it cached).
    pub fn poisons(&self) -> bool {
        matches!(self, Error::Fenced { .. } | Error::OutcomeUnknown(_))
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// The kind of an invalid request, if this is one.
    pub fn invalid_kind(&self) -> Option<InvalidKind> {
        match self {
            Error::InvalidRequest(i) => Some(i.kind),
            _ => None,
        }
    }

    /// Fill in what an older wire version does not carry (the database and
    /// the caller's own generation and head) from the request that failed.
    /// Only empty or zero fields are filled.
    pub fn with_request_context(mut self, db: &str, generation: u64, expected_head: u64) -> Self {
        match &mut self {
            Error::Fenced { db: d, reason } => {
                if d.is_empty() {
                    *d = db.to_string();
                }
                match reason {
                    FenceReason::StaleGeneration { yours, .. } if *yours == 0 => {
                        *yours = generation
                    }
                    FenceReason::HeadMismatch { expected, .. } if *expected == 0 => {
                        *expected = expected_head
                    }
                    _ => {}
                }
            }
            Error::QuotaExceeded { db: d, .. }
            | Error::Corruption { db: d, .. }
            | Error::NotFound(d)
                if d.is_empty() =>
            {
                *d = db.to_string()
            }
            _ => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_are_unique_and_round_trip() {
        fn check<K: Copy + Eq + std::fmt::Debug>(
            all: &[K],
            code: fn(K) -> u16,
            from: fn(u16) -> K,
        ) {
            let mut seen = std::collections::HashSet::new();
            for &k in all {
                assert_ne!(code(k), 0, "{k:?}: 0 means no kind");
                assert!(seen.insert(code(k)), "{k:?}: code used twice");
                assert_eq!(from(code(k)), k);
            }
        }
        check(InvalidKind::ALL, InvalidKind::code, InvalidKind::from_code);
        check(
            TooLargeKind::ALL,
            TooLargeKind::code,
            TooLargeKind::from_code,
        );
        check(
            CorruptionKind::ALL,
            CorruptionKind::code,
            CorruptionKind::from_code,
        );
        assert_eq!(InvalidKind::from_code(9999), InvalidKind::Unknown(9999));
        assert_eq!(InvalidKind::Unknown(9999).code(), 9999);
    }

    #[test]
    fn context_fills_only_what_is_missing() {
        let e = Error::Fenced {
            db: String::new(),
            reason: FenceReason::StaleGeneration {
                current: 9,
                yours: 0,
                head: 4,
                since_ms: 1_796_184_000_000,
            },
        }
        .with_request_context("app", 7, 3);
        assert_eq!(
            e.to_string(),
            "database \"app\" fenced: another writer opened it at 2026-12-02T04:00:00Z \
             (generation 7 is stale, current 9)"
        );
        assert_eq!(
            e,
            Error::Fenced {
                db: "app".into(),
                reason: FenceReason::StaleGeneration {
                    current: 9,
                    yours: 7,
                    head: 4,
                    since_ms: 1_796_184_000_000,
                }
            }
        );
        let known = Error::NotFound("other".into()).with_request_context("app", 1, 1);
        assert_eq!(known, Error::NotFound("other".into()));
        assert!(e.poisons() && !e.is_retryable());
        assert!(Error::Unavailable("x".into()).is_retryable());
    }
}
