//! kvlite's versioned binary wire protocol, spoken between the kvlite VFS
//! client and `kvlite serve` as WebSocket binary messages.
//!
//! # Conversation
//!
//! 1. The client sends a [`hello`](encode_hello): magic `KVLT`, then the
//!    versions it speaks. This handshake has a fixed, version-independent
//!    layout (see [`hello`](mod@hello)).
//! 2. The server answers with a [`HelloReply`]: the chosen version (the
//!    highest both speak, [`negotiate`]) or the versions it does speak.
//! 3. From then on every WebSocket message is one BARE value of the chosen
//!    version: a `ClientMessage { request_id: u64, request }` from the client,
//!    a `ServerMessage { request_id: u64, response }` from the server.
//!    Requests may be pipelined; responses come in any order and carry the id
//!    of their request.
//!
//! Code works with the current types in [`msg`]; [`encode_request`],
//! [`decode_request`], [`encode_response`] and [`decode_response`] convert
//! them to and from the negotiated version.
//!
//! # Version discipline
//!
//! - [`v1`] holds version 1's types. It is published and frozen: never edited
//!   again (`tests/golden_v1.rs` pins the bytes of every message).
//! - A new version is a new module ([`v2`]) beside the old ones. It reuses the
//!   old types that did not change and only ever appends members at the end
//!   of a union, so an old message keeps its bytes in the new version.
//! - [`msg`] equals the newest version or is a superset. Downgrades
//!   (`msg -> vN`, in [`convert`]) fail with [`ProtoError::NotInVersion`] for
//!   anything the older version cannot carry: nothing is dropped silently.
//!   Upgrades (`vN -> msg`) always succeed.
//! - Every version's `ClientMessage` and `ServerMessage` begin with the
//!   request id as 8 little-endian bytes, so [`peek_request_id`] works on any
//!   version's bytes, even ones that fail to decode.
//!
//! # Encoding
//!
//! BARE (<https://baremessages.org>) through `serde_bare` 0.5 and serde
//! derive. serde_bare maps a Rust enum to a BARE union (the variant index as
//! the `uint` tag, then the variant's fields as a struct; a unit variant is
//! `void`), a struct to a BARE struct, `Option` to `optional`, `String` to
//! `str` and `Vec` to a list. Page data uses [`codec::Data`], which goes
//! through serde's byte-buffer path (BARE `data`; the same bytes `[]u8` would
//! give, without serde's per-byte visiting).
//!
//! serde_bare alone is lenient; this crate tightens it:
//!
//! - **Size first.** Input over [`MAX_MESSAGE_BYTES`] is refused before it is
//!   looked at, and encoding refuses to build such a message.
//! - **No allocation from an unchecked length.** serde_bare reads strings and
//!   `data` from a slice only after checking the declared length against the
//!   bytes that remain, and gives serde no size hint for lists, so nothing is
//!   preallocated from a length prefix. Every list is a [`codec::Bounded`]
//!   with a per-version cap (e.g. [`v1::MAX_LIST_PAGES`]): decoding fails at
//!   item cap + 1, so memory stays proportional to the input and to the caps,
//!   whatever a length prefix claims (no list item encodes to zero bytes).
//! - **One byte form per message.** After decoding, the value is re-encoded
//!   against the input (comparing, not allocating). Trailing bytes, bools or
//!   optional tags other than 0 and 1, and over-long uints are rejected
//!   ([`ProtoError::Malformed`]).
//!
//! # Limits
//!
//! [`MAX_PAGES_PER_REQUEST`] pages make the largest legitimate message: a
//! `Commit`, `CommitChunk`, `Opened` or `Pages` of 8192 × 4 KiB = 32 MiB of
//! page data plus at most 7 bytes per page (page number, length, tag), about
//! 32.06 MiB. A fast-path commit or a large commit's part carries at most the
//! server's fast-path limit (8 MiB by default), so [`MAX_MESSAGE_BYTES`] =
//! 64 MiB leaves 2× headroom over the largest message the caps allow and 8×
//! over a default commit. [`msg::Request::validate`] checks the protocol-level
//! rules the server must enforce on every request.

pub mod codec;
pub mod convert;
pub mod hello;
pub mod msg;
pub mod v1;
pub mod v2;
pub mod v3;
pub mod v4;
pub mod v5;
pub mod v6;
mod variants;

pub use hello::{
    HELLO_MAGIC, HelloReply, decode_hello, decode_hello_reply, encode_hello, encode_hello_reply,
    negotiate, reply_to_hello,
};

/// Each supported version, its module, and the module whose client
/// message it uses: the one table a new version is added to.
macro_rules! versions {
    ($($n:literal => $v:ident, requests $req:ident;)*) => {
        /// Protocol versions this build speaks, oldest first.
        pub const SUPPORTED_VERSIONS: &[u16] = &[$($n),*];

        /// Encode a client message for a peer speaking `version`.
        pub fn encode_request(version: u16, m: &msg::ClientMessage) -> Result<Vec<u8>, ProtoError> {
            match version {
                // A version shares an older one's requests: name the
                // version asked for in what it cannot carry.
                $($n => codec::encode(
                    &$req::ClientMessage::try_from(m).map_err(|e| e.in_version($n))?,
                ),)*
                v => Err(ProtoError::UnsupportedVersion(v)),
            }
        }

        /// Decode a client message sent in `version`.
        pub fn decode_request(version: u16, bytes: &[u8]) -> Result<msg::ClientMessage, ProtoError> {
            match version {
                $($n => codec::decode::<$req::ClientMessage<'static>>(bytes).map(Into::into),)*
                v => Err(ProtoError::UnsupportedVersion(v)),
            }
        }

        /// Encode a server message for a peer speaking `version`.
        pub fn encode_response(version: u16, m: &msg::ServerMessage) -> Result<Vec<u8>, ProtoError> {
            match version {
                $($n => codec::encode(&$v::ServerMessage::try_from(m)?),)*
                v => Err(ProtoError::UnsupportedVersion(v)),
            }
        }

        /// Decode a server message sent in `version`.
        pub fn decode_response(version: u16, bytes: &[u8]) -> Result<msg::ServerMessage, ProtoError> {
            match version {
                $($n => codec::decode::<$v::ServerMessage<'static>>(bytes).map(Into::into),)*
                v => Err(ProtoError::UnsupportedVersion(v)),
            }
        }

        /// Names of the request union's members in `version`, in tag order
        /// (derived from the version's own type).
        pub fn request_variants(version: u16) -> Option<&'static [&'static str]> {
            match version {
                $($n => Some(variants::of::<$req::Request<'static>>()),)*
                _ => None,
            }
        }

        /// Names of the response union's members in `version`, in tag order.
        pub fn response_variants(version: u16) -> Option<&'static [&'static str]> {
            match version {
                $($n => Some(variants::of::<$v::Response<'static>>()),)*
                _ => None,
            }
        }
    };
}

versions! {
    1 => v1, requests v1;
    2 => v2, requests v2;
    3 => v3, requests v2;
    4 => v4, requests v4;
    5 => v5, requests v5;
    6 => v6, requests v6;
}

/// The newest version this build speaks.
pub const LATEST_VERSION: u16 = 6;

/// The request id of a message the server sends on its own (a takeover
/// notice): no request of a client's ever has it.
pub const PUSH_REQUEST_ID: u64 = u64::MAX;

/// Bytes per page.
pub const PAGE_SIZE: usize = kvlite_api::PAGE_SIZE;
/// Largest message in either direction, handshake aside (see the crate docs).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Most pages (or page numbers, or preload ranges) in one request's list, and
/// most pages in one response.
pub const MAX_PAGES_PER_REQUEST: usize = 8192;
/// The largest page number (and size in pages) of a database.
pub const MAX_PAGE_NUMBER: u32 = kvlite_api::MAX_PAGES;
/// Longest database name (and `List` prefix), in bytes.
pub const MAX_DB_NAME_BYTES: usize = kvlite_api::MAX_NAME_LEN;
/// Largest `List` limit.
pub const MAX_LIST_LIMIT: usize = 10_000;

// The current limits must fit every supported version's caps and the message size.
const _: () = assert!(MAX_PAGES_PER_REQUEST <= v1::MAX_LIST_PAGES);
const _: () = assert!(MAX_PAGES_PER_REQUEST <= v2::MAX_LIST_PAGES);
const _: () = assert!(MAX_PAGES_PER_REQUEST <= v3::MAX_LIST_PAGES);
const _: () = assert!(MAX_PAGES_PER_REQUEST <= v4::MAX_LIST_PAGES);
const _: () = assert!(MAX_PAGES_PER_REQUEST <= v5::MAX_LIST_PAGES);
const _: () = assert!(MAX_PAGES_PER_REQUEST <= v6::MAX_LIST_PAGES);
const _: () = assert!(kvlite_api::DoctorReport::MAX_LISTED <= v5::MAX_REPORT_ITEMS);
const _: () = assert!(kvlite_api::MAX_CHANGED_PAGES <= v4::MAX_CHANGED_PAGES);
const _: () = assert!(v4::MAX_CHANGED_PAGES * 5 + (1 << 16) <= MAX_MESSAGE_BYTES);
const _: () = assert!(MAX_LIST_LIMIT <= v1::MAX_LIST_NAMES);
const _: () = assert!(v1::MAX_LIST_PAGES * (PAGE_SIZE + 16) + (1 << 16) <= MAX_MESSAGE_BYTES);
const _: () = assert!(v1::MAX_LIST_NAMES * (MAX_DB_NAME_BYTES + 8) <= MAX_MESSAGE_BYTES);
const _: () = assert!(matches!(SUPPORTED_VERSIONS.last(), Some(&LATEST_VERSION)));

/// Everything that goes wrong turning bytes into messages and back.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Not a valid message: bad BARE, trailing bytes, bad magic, …
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message (or one of its lists) over its limit.
    #[error("too large: {len} exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The message has something the negotiated (older) version cannot carry.
    #[error("{what} does not exist in protocol version {version}")]
    NotInVersion { version: u16, what: &'static str },
}

impl ProtoError {
    /// The same error, naming `version` if it is about what a version lacks.
    fn in_version(self, version: u16) -> Self {
        match self {
            ProtoError::NotInVersion { what, .. } => ProtoError::NotInVersion { version, what },
            other => other,
        }
    }

    /// The error a server sends back for a request that failed this way.
    pub fn to_error(&self) -> kvlite_api::Error {
        use kvlite_api::{Error, InvalidKind, TooLargeKind};
        match self {
            ProtoError::TooLarge { .. } => {
                Error::too_large(TooLargeKind::Message, self.to_string())
            }
            ProtoError::UnsupportedVersion(_) => Error::UnsupportedVersion {
                supported: SUPPORTED_VERSIONS.to_vec(),
            },
            ProtoError::Malformed(_) | ProtoError::NotInVersion { .. } => {
                Error::invalid(InvalidKind::Protocol, self.to_string())
            }
        }
    }
}

/// The request id at the start of a client (or server) message of any
/// version, read without decoding the rest: lets the server answer a request
/// that fails to decode with a typed error on its id. `None` if the message is
/// shorter than 8 bytes.
pub fn peek_request_id(bytes: &[u8]) -> Option<u64> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// Whether a message has a request id followed by a valid request tag for
/// `version`. A message that does not is not a request at all (the server
/// closes the connection); one that does but fails to decode gets a typed
/// error on its id.
pub fn has_request_tag(version: u16, bytes: &[u8]) -> bool {
    // The tag is a BARE uint right after the 8-byte request id; every valid
    // tag fits in its first byte.
    match (request_variants(version), bytes.get(8)) {
        (Some(names), Some(&tag)) => usize::from(tag) < names.len(),
        _ => false,
    }
}
