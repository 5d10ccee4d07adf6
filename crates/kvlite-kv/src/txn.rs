use std::time::Instant;

use crate::backend::{BackendTxn, Joined, KeyValue};
use crate::writeset::Known;
use crate::{KvError, Limits, Result, WriteSet};

/// How to scan a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// At most this many entries (`usize::MAX` = all).
    pub limit: usize,
    /// Descending key order.
    pub reverse: bool,
}

impl ScanOptions {
    pub const ALL: ScanOptions = ScanOptions {
        limit: usize::MAX,
        reverse: false,
    };

    pub fn limit(limit: usize) -> Self {
        ScanOptions {
            limit,
            reverse: false,
        }
    }

    pub fn reversed(self) -> Self {
        ScanOptions {
            reverse: true,
            ..self
        }
    }
}

/// The read operations both transaction kinds offer, so helpers can take
/// either.
pub trait KvRead {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Values for `keys`, in the same order.
    fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>>;
    /// Entries with `start <= key < end`.
    fn scan(&mut self, start: &[u8], end: &[u8], opts: ScanOptions) -> Result<Vec<KeyValue>>;
    /// Every entry of each range, ascending, one list per range: on a
    /// networked backend, one round trip for all of them.
    fn scan_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Vec<KeyValue>>> {
        ranges
            .iter()
            .map(|(start, end)| self.scan(start, end, ScanOptions::ALL))
            .collect()
    }
    /// [`KvRead::scan_many`], each range's values joined in key order (a
    /// chunked value read whole; see [`BackendTxn::scan_joined_many`]).
    fn scan_joined_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Joined>> {
        Ok(Joined::each(self.scan_many(ranges)?))
    }
    /// The last entry of each range (`None` for an empty one), one per
    /// range: on a networked backend, one round trip for all of them.
    fn last_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Option<KeyValue>>> {
        ranges
            .iter()
            .map(|(start, end)| {
                Ok(self
                    .scan(start, end, ScanOptions::limit(1).reversed())?
                    .pop())
            })
            .collect()
    }
}

struct Clock {
    started: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            started: Instant::now(),
        }
    }

    fn check(&self, limits: &Limits) -> Result<()> {
        let elapsed = self.started.elapsed();
        if elapsed > limits.max_txn_duration {
            return Err(KvError::TransactionTooOld {
                elapsed_ms: elapsed.as_millis(),
                limit_ms: limits.max_txn_duration.as_millis(),
            });
        }
        Ok(())
    }
}

fn check_key(key: &[u8], limits: &Limits) -> Result<()> {
    if key.len() > limits.max_key_size {
        return Err(KvError::KeyTooLarge {
            len: key.len(),
            limit: limits.max_key_size,
        });
    }
    Ok(())
}

/// A read-only snapshot transaction.
pub struct ReadTxn<'a> {
    inner: Box<dyn BackendTxn + 'a>,
    limits: Limits,
    clock: Clock,
}

impl<'a> ReadTxn<'a> {
    pub(crate) fn new(inner: Box<dyn BackendTxn + 'a>, limits: Limits) -> Self {
        ReadTxn {
            inner,
            limits,
            clock: Clock::new(),
        }
    }
}

impl KvRead for ReadTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key, &self.limits)?;
        self.clock.check(&self.limits)?;
        self.inner.get(key)
    }

    fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        for k in keys {
            check_key(k, &self.limits)?;
        }
        self.clock.check(&self.limits)?;
        self.inner.get_many(keys)
    }

    fn scan(&mut self, start: &[u8], end: &[u8], opts: ScanOptions) -> Result<Vec<KeyValue>> {
        check_key(start, &self.limits)?;
        check_key(end, &self.limits)?;
        self.clock.check(&self.limits)?;
        if start >= end || opts.limit == 0 {
            return Ok(Vec::new());
        }
        self.inner.scan(start, end, opts.limit, opts.reverse)
    }

    fn scan_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Vec<KeyValue>>> {
        let asked = ranges_to_ask(ranges, &self.limits, &self.clock)?;
        let answers = self.inner.scan_many(&asked)?;
        per_range(ranges, answers, |_, _, found| found)
    }

    fn scan_joined_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Joined>> {
        let asked = ranges_to_ask(ranges, &self.limits, &self.clock)?;
        let answers = self.inner.scan_joined_many(&asked)?;
        per_range(ranges, answers, |_, _, found| found)
    }

    fn last_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Option<KeyValue>>> {
        for (start, end) in ranges {
            check_key(start, &self.limits)?;
            check_key(end, &self.limits)?;
        }
        self.clock.check(&self.limits)?;
        let asked: Vec<(&[u8], &[u8])> = ranges.iter().copied().filter(|(s, e)| s < e).collect();
        let mut answers = self.inner.last_many(&asked)?.into_iter();
        ranges
            .iter()
            .map(|(s, e)| {
                if s < e {
                    answers.next().ok_or_else(|| {
                        KvError::backend(std::io::Error::other("last_many lost a range"))
                    })
                } else {
                    Ok(None)
                }
            })
            .collect()
    }
}

/// A read-write transaction. Writes are buffered here and sent to the
/// backend in one batch at [`WriteTxn::commit`]; reads see them.
pub struct WriteTxn<'a> {
    inner: Box<dyn BackendTxn + 'a>,
    writes: WriteSet,
    bytes_written: usize,
    limits: Limits,
    clock: Clock,
    /// Set once the size limit was hit: such a transaction can never commit.
    too_large: bool,
    /// What the store must hold for the commit to apply ([`WriteTxn::expect`]).
    expected: Vec<crate::backend::Expected>,
}

impl<'a> WriteTxn<'a> {
    pub(crate) fn new(inner: Box<dyn BackendTxn + 'a>, limits: Limits) -> Self {
        WriteTxn {
            inner,
            writes: WriteSet::default(),
            bytes_written: 0,
            limits,
            clock: Clock::new(),
            too_large: false,
            expected: Vec::new(),
        }
    }

    /// Bytes of mutations so far, counted as FoundationDB does (key + value of
    /// every set, key of every clear, both bounds of every range clear).
    pub fn bytes_written(&self) -> usize {
        self.bytes_written
    }

    /// Bytes still allowed before the transaction size limit.
    pub fn bytes_remaining(&self) -> usize {
        self.limits.max_txn_bytes.saturating_sub(self.bytes_written)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn account(&mut self, bytes: usize) -> Result<()> {
        let total = self.bytes_written.saturating_add(bytes);
        if total > self.limits.max_txn_bytes {
            self.too_large = true;
            return Err(KvError::TransactionTooLarge {
                bytes: total,
                limit: self.limits.max_txn_bytes,
            });
        }
        self.bytes_written = total;
        Ok(())
    }

    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key, &self.limits)?;
        if value.len() > self.limits.max_value_size {
            return Err(KvError::ValueTooLarge {
                len: value.len(),
                limit: self.limits.max_value_size,
            });
        }
        self.account(key.len() + value.len())?;
        self.writes.set(key, value);
        Ok(())
    }

    pub fn clear(&mut self, key: &[u8]) -> Result<()> {
        check_key(key, &self.limits)?;
        self.account(key.len())?;
        self.writes.clear(key);
        Ok(())
    }

    /// Remove every key in `[start, end)`.
    pub fn clear_range(&mut self, start: &[u8], end: &[u8]) -> Result<()> {
        check_key(start, &self.limits)?;
        check_key(end, &self.limits)?;
        self.account(start.len() + end.len())?;
        self.writes.clear_range(start, end);
        Ok(())
    }

    /// Read `key`, claiming it for this transaction's write: a concurrent
    /// transaction writing it waits, then retries, instead of making this
    /// one fail. For a transaction that must not starve behind a stream of
    /// short writers of the same key.
    pub fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key, &self.limits)?;
        self.clock.check(&self.limits)?;
        match self.writes.lookup(key) {
            Known::Value(v) => Ok(Some(v.to_vec())),
            Known::Absent => Ok(None),
            Known::Unknown => self.inner.get_for_update(key),
        }
    }

    /// Commit only if the store holds `value` under `key` — as a read in
    /// this transaction, before its own writes, would find it — else the
    /// commit fails with [`KvError::Conflict`] and applies nothing. What a
    /// transaction would otherwise read just to compare, without the read:
    /// on PostgreSQL the check travels with the commit (no round trip of
    /// its own).
    pub fn expect(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key, &self.limits)?;
        self.clock.check(&self.limits)?;
        self.expected.push((key.to_vec(), value.to_vec()));
        Ok(())
    }

    /// Apply every write atomically. Fails, having changed nothing, on a
    /// conflict (an expectation unmet included), a limit, or a backend
    /// error.
    pub fn commit(self) -> Result<()> {
        if self.too_large {
            return Err(KvError::TransactionTooLarge {
                bytes: self.bytes_written,
                limit: self.limits.max_txn_bytes,
            });
        }
        self.clock.check(&self.limits)?;
        if self.expected.is_empty() {
            self.inner.commit(self.writes)
        } else {
            self.inner.commit_if(&self.expected, self.writes)
        }
    }

    /// Backend entries of one scan window merged with this transaction's
    /// writes; `lo..hi` bounds the window in key order.
    fn merge_window(
        &self,
        backend: Vec<KeyValue>,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        out: &mut Vec<KeyValue>,
        limit: usize,
    ) {
        let mut from_backend = backend
            .into_iter()
            .filter(|(k, _)| !self.writes.shadows(k))
            .peekable();
        let sets = self.writes.sets_in(lo, hi);
        let mut from_writes: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> = if reverse {
            Box::new(sets.rev())
        } else {
            Box::new(sets)
        };
        let mut next_write = from_writes.next();
        while out.len() < limit {
            let take_write = match (from_backend.peek(), next_write) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((bk, _)), Some((wk, _))) => (wk < bk) != reverse,
            };
            if take_write {
                if let Some((k, v)) = next_write {
                    out.push((k.clone(), v.clone()));
                }
                next_write = from_writes.next();
            } else if let Some(entry) = from_backend.next() {
                out.push(entry);
            }
        }
    }
}

/// The ranges of a `scan_many` the backend is asked for, once the limits
/// and the transaction's age are checked: empty ranges answer empty
/// without asking.
fn ranges_to_ask<'r>(
    ranges: &[(&'r [u8], &'r [u8])],
    limits: &Limits,
    clock: &Clock,
) -> Result<Vec<(&'r [u8], &'r [u8])>> {
    for (start, end) in ranges {
        check_key(start, limits)?;
        check_key(end, limits)?;
    }
    clock.check(limits)?;
    Ok(ranges.iter().copied().filter(|(s, e)| s < e).collect())
}

/// One answer per range of a `scan_many` (or `scan_joined_many`): empty for
/// an empty range, else the backend's next answer (those of
/// [`ranges_to_ask`], in order) as `each` makes it.
fn per_range<T: Default>(
    ranges: &[(&[u8], &[u8])],
    answers: Vec<T>,
    mut each: impl FnMut(&[u8], &[u8], T) -> T,
) -> Result<Vec<T>> {
    let mut answers = answers.into_iter();
    ranges
        .iter()
        .map(|&(start, end)| {
            if start >= end {
                return Ok(T::default());
            }
            let found = answers
                .next()
                .ok_or_else(|| KvError::backend(std::io::Error::other("scan_many lost a range")))?;
            Ok(each(start, end, found))
        })
        .collect()
}

/// The key right after `key` in byte order.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

impl KvRead for WriteTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key, &self.limits)?;
        self.clock.check(&self.limits)?;
        match self.writes.lookup(key) {
            Known::Value(v) => Ok(Some(v.to_vec())),
            Known::Absent => Ok(None),
            Known::Unknown => self.inner.get(key),
        }
    }

    fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        for k in keys {
            check_key(k, &self.limits)?;
        }
        self.clock.check(&self.limits)?;
        let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(keys.len());
        let mut ask = Vec::new();
        let mut ask_at = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match self.writes.lookup(k) {
                Known::Value(v) => out.push(Some(v.to_vec())),
                Known::Absent => out.push(None),
                Known::Unknown => {
                    out.push(None);
                    ask.push(*k);
                    ask_at.push(i);
                }
            }
        }
        if !ask.is_empty() {
            let got = self.inner.get_many(&ask)?;
            for (i, v) in ask_at.into_iter().zip(got) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = v;
                }
            }
        }
        Ok(out)
    }

    fn scan(&mut self, start: &[u8], end: &[u8], opts: ScanOptions) -> Result<Vec<KeyValue>> {
        check_key(start, &self.limits)?;
        check_key(end, &self.limits)?;
        self.clock.check(&self.limits)?;
        if start >= end || opts.limit == 0 {
            return Ok(Vec::new());
        }
        if self.writes.is_empty() {
            return self.inner.scan(start, end, opts.limit, opts.reverse);
        }
        // Page through the backend; each page covers a key window that is
        // merged with the pending writes in that same window.
        let page = if opts.limit == usize::MAX {
            usize::MAX
        } else {
            opts.limit.max(128)
        };
        let mut out = Vec::new();
        let (mut lo, mut hi) = (start.to_vec(), end.to_vec());
        loop {
            let batch = self.inner.scan(&lo, &hi, page, opts.reverse)?;
            let exhausted = batch.len() < page;
            if opts.reverse {
                // Window [window_lo, hi): everything from the smallest key seen up.
                let window_lo = match (exhausted, batch.last()) {
                    (false, Some((k, _))) => k.clone(),
                    _ => lo.clone(),
                };
                self.merge_window(batch, &window_lo, Some(&hi), true, &mut out, opts.limit);
                hi = window_lo;
            } else {
                // Window [lo, window_hi): up to just past the largest key seen.
                let window_hi = match (exhausted, batch.last()) {
                    (false, Some((k, _))) => successor(k),
                    _ => hi.clone(),
                };
                self.merge_window(batch, &lo, Some(&window_hi), false, &mut out, opts.limit);
                lo = window_hi;
            }
            if exhausted || out.len() >= opts.limit {
                return Ok(out);
            }
        }
    }

    /// One batched read of every range (one round trip on a networked
    /// store), each merged with this transaction's writes in its range.
    fn scan_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Vec<KeyValue>>> {
        let asked = ranges_to_ask(ranges, &self.limits, &self.clock)?;
        let answers = self.inner.scan_many(&asked)?;
        per_range(ranges, answers, |start, end, found| {
            // A whole range: one window.
            let mut out = Vec::new();
            self.merge_window(found, start, Some(end), false, &mut out, usize::MAX);
            out
        })
    }
}
