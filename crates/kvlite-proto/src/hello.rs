//! The version-independent handshake.
//!
//! Its layout never changes, whatever versions come later: it is how two
//! peers agree on a version in the first place. Integers are big-endian.
//!
//! ```text
//! Hello      = "KVLT" count:u8 version:u16 × count
//! HelloReply = "KVLT" 0:u8 version:u16                                   (accepted)
//!            | "KVLT" 1:u8 count:u8 version:u16 × count len:u16 utf8 × len (unsupported)
//! ```

use crate::{ProtoError, SUPPORTED_VERSIONS};

/// The first four bytes of both handshake messages.
pub const HELLO_MAGIC: [u8; 4] = *b"KVLT";

const STATUS_OK: u8 = 0;
const STATUS_UNSUPPORTED: u8 = 1;

/// The server's answer to a `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloReply {
    /// Both sides speak `version` from now on.
    Accepted { version: u16 },
    /// No common version: what the server speaks, and why, for people.
    Unsupported {
        supported: Vec<u16>,
        message: String,
    },
}

/// Encode the client's `Hello` listing the versions it speaks (at most 255).
pub fn encode_hello(versions: &[u16]) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::with_capacity(versions.len().saturating_mul(2).saturating_add(5));
    out.extend_from_slice(&HELLO_MAGIC);
    put_versions(&mut out, versions)?;
    Ok(out)
}

/// Decode a `Hello` into the versions the client speaks.
pub fn decode_hello(bytes: &[u8]) -> Result<Vec<u16>, ProtoError> {
    let mut r = Reader::new(bytes, "hello");
    r.magic()?;
    let versions = r.versions()?;
    r.finish()?;
    Ok(versions)
}

/// Encode the server's answer (a message is cut to 65,535 bytes at a
/// character boundary; more than 255 versions is an error).
pub fn encode_hello_reply(reply: &HelloReply) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&HELLO_MAGIC);
    match reply {
        HelloReply::Accepted { version } => {
            out.push(STATUS_OK);
            out.extend_from_slice(&version.to_be_bytes());
        }
        HelloReply::Unsupported { supported, message } => {
            out.push(STATUS_UNSUPPORTED);
            put_versions(&mut out, supported)?;
            let mut end = message.len().min(u16::MAX as usize);
            while !message.is_char_boundary(end) {
                end = end.saturating_sub(1);
            }
            let text = message.get(..end).unwrap_or_default().as_bytes();
            let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(text);
        }
    }
    Ok(out)
}

/// Decode the server's answer to a `Hello`.
pub fn decode_hello_reply(bytes: &[u8]) -> Result<HelloReply, ProtoError> {
    let mut r = Reader::new(bytes, "hello reply");
    r.magic()?;
    let reply = match r.u8()? {
        STATUS_OK => HelloReply::Accepted { version: r.u16()? },
        STATUS_UNSUPPORTED => {
            let supported = r.versions()?;
            let len = usize::from(r.u16()?);
            let text = r.take(len)?;
            let message = std::str::from_utf8(text)
                .map_err(|_| r.malformed("message is not UTF-8"))?
                .to_owned();
            HelloReply::Unsupported { supported, message }
        }
        other => return Err(r.malformed(&format!("unknown status {other}"))),
    };
    r.finish()?;
    Ok(reply)
}

/// The highest version both lists contain.
pub fn negotiate(client_versions: &[u16], server_versions: &[u16]) -> Option<u16> {
    client_versions
        .iter()
        .copied()
        .filter(|v| server_versions.contains(v))
        .max()
}

/// What a server speaking [`SUPPORTED_VERSIONS`] answers a client speaking
/// `client_versions`.
pub fn reply_to_hello(client_versions: &[u16]) -> HelloReply {
    match negotiate(client_versions, SUPPORTED_VERSIONS) {
        Some(version) => HelloReply::Accepted { version },
        None => HelloReply::Unsupported {
            supported: SUPPORTED_VERSIONS.to_vec(),
            message: format!(
                "no common protocol version: client speaks {client_versions:?}, \
                 server speaks {SUPPORTED_VERSIONS:?}"
            ),
        },
    }
}

fn put_versions(out: &mut Vec<u8>, versions: &[u16]) -> Result<(), ProtoError> {
    let count = u8::try_from(versions.len()).map_err(|_| ProtoError::TooLarge {
        len: versions.len(),
        max: u8::MAX as usize,
    })?;
    out.push(count);
    for v in versions {
        out.extend_from_slice(&v.to_be_bytes());
    }
    Ok(())
}

/// A bounds-checked cursor over handshake bytes.
struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { rest: bytes, what }
    }

    fn malformed(&self, why: &str) -> ProtoError {
        ProtoError::Malformed(format!("{}: {why}", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if n > self.rest.len() {
            return Err(self.malformed("truncated"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        match self.take(1)? {
            [b] => Ok(*b),
            _ => Err(self.malformed("truncated")),
        }
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        match self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(self.malformed("truncated")),
        }
    }

    fn magic(&mut self) -> Result<(), ProtoError> {
        if self.rest.get(..HELLO_MAGIC.len()) != Some(&HELLO_MAGIC[..]) {
            return Err(self.malformed("bad magic (not a kvlite peer)"));
        }
        self.take(HELLO_MAGIC.len()).map(|_| ())
    }

    fn versions(&mut self) -> Result<Vec<u16>, ProtoError> {
        let count = self.u8()?;
        (0..count).map(|_| self.u16()).collect()
    }

    fn finish(&self) -> Result<(), ProtoError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(&format!("{} trailing bytes", self.rest.len())))
        }
    }
}
