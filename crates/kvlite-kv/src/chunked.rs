//! Logical values of any size, stored as chunks of at most the value limit
//! under `prefix ++ chunk index (u32 big-endian)`. An empty value is one empty
//! chunk, so "empty" and "absent" stay distinct.
//!
//! Prefixes must be prefix-free: no key other than this value's chunks may
//! start with `prefix` (kvlite's keys are fixed-width, so this holds). A
//! stray key under the prefix makes [`read`] fail rather than guess.

use crate::{KeyValue, KvError, KvRead, Result, WriteTxn, prefix_end};

/// The key of chunk `index` of the value under `prefix`.
pub fn chunk_key(prefix: &[u8], index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 4);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The `[start, end)` key range holding every chunk under `prefix`.
pub fn chunk_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = chunk_key(prefix, 0);
    let end = prefix_end(prefix).unwrap_or_else(|| {
        // An all-0xff prefix: chunk keys are exactly 4 bytes longer.
        let mut e = prefix.to_vec();
        e.extend_from_slice(&[0xff; 5]);
        e
    });
    (start, end)
}

/// Store `value` under `prefix`, replacing any previous value. Returns the
/// number of chunks written.
pub fn write(txn: &mut WriteTxn<'_>, prefix: &[u8], value: &[u8]) -> Result<u32> {
    let (start, end) = chunk_range(prefix);
    txn.clear_range(&start, &end)?;
    write_new(txn, prefix, value)
}

/// [`write`] under a prefix that has never held a value (a key made
/// from an id that is never reused): nothing to clear first, which saves
/// a range delete per write (a statement on PostgreSQL). A stray chunk
/// left under it would make [`read`] fail, never return a wrong value.
pub fn write_new(txn: &mut WriteTxn<'_>, prefix: &[u8], value: &[u8]) -> Result<u32> {
    let size = txn.limits().max_value_size.max(1);
    let mut count = 0u32;
    if value.is_empty() {
        txn.set(&chunk_key(prefix, 0), &[])?;
        return Ok(1);
    }
    for piece in value.chunks(size) {
        txn.set(&chunk_key(prefix, count), piece)?;
        count = count.checked_add(1).ok_or_else(|| KvError::BrokenChunks {
            prefix: prefix.to_vec(),
            reason: "more than 2^32 chunks".into(),
        })?;
    }
    Ok(count)
}

/// Read the value under `prefix`, or `None` if there is none.
pub fn read(txn: &mut impl KvRead, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(read_many(txn, &[prefix])?.pop().flatten())
}

/// The values under each of `prefixes`, in one batched read.
pub fn read_many(txn: &mut impl KvRead, prefixes: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = prefixes.iter().map(|p| chunk_range(p)).collect();
    let borrowed: Vec<(&[u8], &[u8])> = ranges
        .iter()
        .map(|(s, e)| (s.as_slice(), e.as_slice()))
        .collect();
    let answers = txn.scan_joined_many(&borrowed)?;
    prefixes
        .iter()
        .zip(answers)
        .map(|(prefix, joined)| {
            if joined.keys.is_empty() {
                return Ok(None);
            }
            check_chunk_keys(prefix, &joined.keys)?;
            Ok(Some(joined.value))
        })
        .collect()
}

/// That `keys` (ascending) are exactly chunks `0..n` of `prefix`.
fn check_chunk_keys<'k>(prefix: &[u8], keys: impl IntoIterator<Item = &'k Vec<u8>>) -> Result<()> {
    let broken = |reason: String| KvError::BrokenChunks {
        prefix: prefix.to_vec(),
        reason,
    };
    for (expected, key) in keys.into_iter().enumerate() {
        let index = key
            .strip_prefix(prefix)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| broken(format!("unexpected key {key:?}")))?;
        if index as usize != expected {
            return Err(broken(format!("chunk {expected} missing (found {index})")));
        }
    }
    Ok(())
}

/// Remove the value under `prefix`.
pub fn clear(txn: &mut WriteTxn<'_>, prefix: &[u8]) -> Result<()> {
    let (start, end) = chunk_range(prefix);
    txn.clear_range(&start, &end)
}

/// Join scanned chunk entries (ascending) into the logical value, checking
/// that they are exactly chunks `0..n` of `prefix`.
pub fn assemble(prefix: &[u8], entries: Vec<KeyValue>) -> Result<Option<Vec<u8>>> {
    if entries.is_empty() {
        return Ok(None);
    }
    check_chunk_keys(prefix, entries.iter().map(|(k, _)| k))?;
    // One chunk is the value, without a copy.
    Ok(Some(crate::Joined::of(entries).value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(prefix: &[u8], index: u32, value: &[u8]) -> KeyValue {
        let mut key = prefix.to_vec();
        key.extend_from_slice(&index.to_be_bytes());
        (key, value.to_vec())
    }

    #[test]
    fn assemble_joins_chunks_in_order_and_refuses_gaps_and_strangers() {
        let p = b"blob/";
        assert_eq!(assemble(p, Vec::new()).unwrap(), None);
        assert_eq!(
            assemble(p, vec![chunk(p, 0, b"one")]).unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(
            assemble(
                p,
                vec![chunk(p, 0, b"ab"), chunk(p, 1, b"cd"), chunk(p, 2, b"e")]
            )
            .unwrap(),
            Some(b"abcde".to_vec())
        );
        for broken in [
            vec![chunk(p, 1, b"x")],
            vec![chunk(p, 0, b"a"), chunk(p, 2, b"c")],
            vec![chunk(b"other/", 0, b"a")],
            vec![(b"blob/0".to_vec(), b"a".to_vec())],
        ] {
            assert!(
                matches!(assemble(p, broken), Err(KvError::BrokenChunks { .. })),
                "a broken value is an error"
            );
        }
    }
}
