//! The BARE building blocks the versioned schemas use, and the one encode and
//! decode path every version goes through.
//!
//! [`Data`] and [`Bounded`] are part of the wire contract of every published
//! version (their encodings are pinned by the golden tests): change neither.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer, ser};

use crate::{MAX_MESSAGE_BYTES, ProtoError};

/// BARE `data`: a uint length, then that many bytes.
///
/// Borrowed when a message is encoded (page data is not copied on its way to
/// the encoder), owned when decoded. A plain `Vec<u8>` would encode to the
/// same bytes (BARE `[]u8` and `data` coincide) but serde would move it one
/// byte at a time.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Data<'a>(pub Cow<'a, [u8]>);

impl Data<'_> {
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_owned()
    }
}

impl<'a> From<&'a [u8]> for Data<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Data(Cow::Borrowed(bytes))
    }
}

impl From<Vec<u8>> for Data<'_> {
    fn from(bytes: Vec<u8>) -> Self {
        Data(Cow::Owned(bytes))
    }
}

impl fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Data({} bytes)", self.0.len())
    }
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Data<'_> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DataVisitor;

        impl<'de> Visitor<'de> for DataVisitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("BARE data")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }

        deserializer
            .deserialize_byte_buf(DataVisitor)
            .map(|v| Data(Cow::Owned(v)))
    }
}

/// BARE `[]T` holding at most `MAX` items.
///
/// Decoding fails as soon as item `MAX + 1` appears, so a list's declared
/// length never decides how much is allocated: at most `MAX` items are ever
/// held, each decoded from real input bytes. Encoding a longer list fails too.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bounded<T, const MAX: usize>(pub Vec<T>);

impl<T: Serialize, const MAX: usize> Serialize for Bounded<T, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.len() > MAX {
            return Err(ser::Error::custom(format!(
                "list of {} items exceeds the maximum of {MAX}",
                self.0.len()
            )));
        }
        serializer.collect_seq(&self.0)
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for Bounded<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<T, const MAX: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MAX> {
            type Value = Vec<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a BARE list of at most {MAX} items")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                // A size hint comes from the input: trust it only up to a small cap.
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX.min(1024)));
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX {
                        return Err(de::Error::custom(format!(
                            "list exceeds the maximum of {MAX} items"
                        )));
                    }
                    items.push(item);
                }
                Ok(items)
            }
        }

        deserializer
            .deserialize_seq(BoundedVisitor::<T, MAX>(PhantomData))
            .map(Bounded)
    }
}

/// Encode one message value, refusing anything over [`MAX_MESSAGE_BYTES`].
///
/// The size is measured first (no copying), so an oversize message is refused
/// before its buffer is allocated, and the buffer is allocated once.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtoError> {
    let mut counter = Counter(0);
    serde_bare::to_writer(&mut counter, value).map_err(encode_error)?;
    if counter.0 > MAX_MESSAGE_BYTES {
        return Err(ProtoError::TooLarge {
            len: counter.0,
            max: MAX_MESSAGE_BYTES,
        });
    }
    let mut out = Vec::with_capacity(counter.0);
    serde_bare::to_writer(&mut out, value).map_err(encode_error)?;
    Ok(out)
}

fn encode_error(e: serde_bare::error::Error) -> ProtoError {
    ProtoError::Malformed(format!("cannot encode: {e}"))
}

/// Decode one message value: exactly one canonical BARE encoding of `T`.
///
/// Refuses input over [`MAX_MESSAGE_BYTES`] before looking at it. Then, after
/// decoding, re-encodes the value while comparing it with the input (no
/// allocation): any difference means the input was not the canonical encoding
/// (a bool or optional tag other than 0 or 1, an over-long uint) and input left
/// over means trailing bytes. Both are rejected, so every accepted message has
/// exactly one byte form.
pub(crate) fn decode<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, ProtoError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtoError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let value: T =
        serde_bare::from_slice(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let mut check = Canonical { rest: bytes };
    if serde_bare::to_writer(&mut check, &value).is_err() {
        return Err(ProtoError::Malformed(
            "not the canonical BARE encoding (a bool or optional tag other than 0 or 1, \
             or an over-long uint)"
                .into(),
        ));
    }
    if !check.rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after the message",
            check.rest.len()
        )));
    }
    Ok(value)
}

/// A writer that only counts.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that checks what is written against the input it was decoded from.
struct Canonical<'a> {
    rest: &'a [u8],
}

impl io::Write for Canonical<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.rest.strip_prefix(buf) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(io::Error::other("differs from the input")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
