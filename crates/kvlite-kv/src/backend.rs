//! What a storage backend implements. Everything shared — limits, the write
//! overlay, read-your-writes, retries — lives above this seam in [`crate::Kv`],
//! so a backend only needs snapshot reads and an atomic apply of a [`WriteSet`].

use crate::{KvError, Result, WriteSet};

pub type KeyValue = (Vec<u8>, Vec<u8>);

pub trait Backend: Send + Sync {
    /// Short name for logs and metrics ("memory", "embedded", "postgres").
    fn name(&self) -> &'static str;
    /// A read-only transaction: a consistent snapshot.
    fn begin_read(&self) -> Result<Box<dyn BackendTxn + '_>>;
    /// A read-write transaction whose commit is serializable with every other.
    fn begin_write(&self) -> Result<Box<dyn BackendTxn + '_>>;
    /// Refuse new transactions from now on.
    fn close(&self) {}
    /// Whether write transactions are refused (a store opened read-only).
    fn is_read_only(&self) -> bool {
        false
    }
    /// Give the file system back the space the store holds but no longer
    /// uses; `None` where this backend cannot (or has nothing of its own to
    /// give: memory, PostgreSQL, whose own VACUUM does it).
    fn reclaim_space(&self) -> Result<Option<SpaceReclaimed>> {
        Ok(None)
    }
    /// How many times a transaction has waited for the store's answer over
    /// the network, from the start; `None` where the store is in process.
    fn round_trips(&self) -> Option<u64> {
        None
    }
    /// Tell every process using this store `message`, best effort and
    /// after the fact: nothing waits for it and nothing retries it (a hint,
    /// such as "this database was taken over").
    fn announce(&self, _message: &str) {}
    /// What any process announces on this store from now on; `None` where
    /// no other process can use the store (nothing to hear).
    fn watch(&self) -> Option<Watch> {
        None
    }
}

/// What [`Backend::reclaim_space`] did: the store's size on disk before and
/// after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceReclaimed {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Announcements heard on a store ([`Backend::watch`]): bounded (when the
/// reader falls behind, messages are dropped: they are hints); listening
/// stops when this is dropped.
pub struct Watch {
    messages: std::sync::mpsc::Receiver<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Watch {
    /// Messages held at most before new ones are dropped.
    pub const CAPACITY: usize = 4096;

    /// A watch fed through `messages` until `stop` is set (by dropping it).
    pub fn new(
        messages: std::sync::mpsc::Receiver<String>,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Watch { messages, stop }
    }

    /// The next message, waiting up to `timeout`; `Err(Disconnected)` once
    /// the listener is gone for good.
    pub fn next(
        &self,
        timeout: std::time::Duration,
    ) -> Result<String, std::sync::mpsc::RecvTimeoutError> {
        self.messages.recv_timeout(timeout)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The entries of one range read whole: their keys, ascending, and their
/// values joined in that order (a value stored in chunks).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Joined {
    pub keys: Vec<Vec<u8>>,
    pub value: Vec<u8>,
}

impl Joined {
    /// Each range's entries (as `scan_many` answers them) joined.
    pub fn each(ranges: Vec<Vec<KeyValue>>) -> Vec<Joined> {
        ranges.into_iter().map(Joined::of).collect()
    }

    /// Join `entries` (ascending); one entry's value is taken without a copy.
    pub fn of(entries: Vec<KeyValue>) -> Joined {
        match <[KeyValue; 1]>::try_from(entries) {
            Ok([(key, value)]) => Joined {
                keys: vec![key],
                value,
            },
            Err(entries) => {
                let mut value = Vec::with_capacity(entries.iter().map(|(_, v)| v.len()).sum());
                let mut keys = Vec::with_capacity(entries.len());
                for (key, chunk) in entries {
                    value.extend_from_slice(&chunk);
                    keys.push(key);
                }
                Joined { keys, value }
            }
        }
    }
}

/// One backend transaction. Reads see the transaction's snapshot only: the
/// pending writes are overlaid by [`crate::WriteTxn`].
pub trait BackendTxn {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Read a key this transaction will write, claiming it now so that
    /// concurrent writers of it wait for this transaction instead of
    /// winning the race. Backends with one writer at a time need nothing
    /// more than a read.
    fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(key)
    }

    /// Entries in `[start, end)`, ascending (or descending if `reverse`), at
    /// most `limit` of them.
    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KeyValue>>;

    /// Every entry of each range `[start, end)`, ascending, one list per
    /// range. Backends where a query is a network round trip answer all
    /// ranges at once.
    fn scan_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Vec<KeyValue>>> {
        ranges
            .iter()
            .map(|(start, end)| self.scan(start, end, usize::MAX, false))
            .collect()
    }

    /// [`BackendTxn::scan_many`], each range's values joined: a chunked
    /// value read whole. Backends that can read values straight into one
    /// buffer override it (the SQLite file: one copy of each byte, not
    /// three).
    fn scan_joined_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Joined>> {
        Ok(Joined::each(self.scan_many(ranges)?))
    }

    /// The last entry of each range `[start, end)`, one per range (`None`
    /// for an empty one): the newest version of many keys at once, in one
    /// round trip on a networked backend.
    fn last_many(&mut self, ranges: &[(&[u8], &[u8])]) -> Result<Vec<Option<KeyValue>>> {
        ranges
            .iter()
            .map(|(start, end)| Ok(self.scan(start, end, 1, true)?.pop()))
            .collect()
    }

    /// Atomically and durably apply `writes`, or fail having applied nothing.
    /// A read-only transaction is committed with an empty write set.
    fn commit(self: Box<Self>, writes: WriteSet) -> Result<()>;

    /// [`BackendTxn::commit`] if every key of `expected` holds its value in
    /// the store as this transaction reads it; otherwise `Conflict`, having
    /// applied nothing. Backends where a read is a round trip check it in
    /// the commit's own.
    fn commit_if(mut self: Box<Self>, expected: &[Expected], writes: WriteSet) -> Result<()> {
        check_expected(&mut *self, expected)?;
        self.commit(writes)
    }
}

/// A key and the value a conditional commit needs it to hold.
pub type Expected = (Vec<u8>, Vec<u8>);

/// Read each expected key (in one batch): `Conflict` unless all hold.
pub(crate) fn check_expected<T: BackendTxn + ?Sized>(
    txn: &mut T,
    expected: &[Expected],
) -> Result<()> {
    if expected.is_empty() {
        return Ok(());
    }
    let keys: Vec<&[u8]> = expected.iter().map(|(k, _)| k.as_slice()).collect();
    let found = txn.get_many(&keys)?;
    if found
        .iter()
        .zip(expected)
        .all(|(got, (_, want))| got.as_deref() == Some(want.as_slice()))
    {
        Ok(())
    } else {
        Err(KvError::Conflict)
    }
}
