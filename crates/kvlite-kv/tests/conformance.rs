//! One conformance suite, run identically against every backend.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kvlite_kv::{
    Joined, Kv, KvError, KvRead, MAX_KEY_SIZE, MAX_TXN_BYTES, MAX_VALUE_SIZE, ScanOptions, chunked,
    prefix_end,
};
use proptest::prelude::*;

/// A store under test plus whatever keeps it alive.
trait Fixture: Send + Sync {
    fn kv(&self) -> &Kv;
    /// Drop the handle and open the same store again (a restart).
    fn reopen(&mut self);
}

struct Memory(Kv);
impl Fixture for Memory {
    fn kv(&self) -> &Kv {
        &self.0
    }
    fn reopen(&mut self) {}
}

struct Embedded {
    kv: Option<Kv>,
    dir: tempfile::TempDir,
    open: fn(&std::path::Path) -> Kv,
}
impl Fixture for Embedded {
    fn kv(&self) -> &Kv {
        self.kv.as_ref().expect("open")
    }
    fn reopen(&mut self) {
        self.kv = None;
        self.kv = Some((self.open)(self.dir.path()));
    }
}

struct Postgres {
    kv: Kv,
    url: String,
    table: String,
}
impl Fixture for Postgres {
    fn kv(&self) -> &Kv {
        &self.kv
    }
    fn reopen(&mut self) {
        self.kv.close();
        self.kv = Kv::connect_postgres(&self.url, &self.table).expect("reconnect");
    }
}

fn memory() -> Memory {
    Memory(Kv::memory())
}

/// The embedded store a new data directory gets (SQLite).
fn embedded() -> Embedded {
    embedded_on(|dir| Kv::open_embedded(dir).expect("open embedded"))
}

/// The redb store of data directories made before SQLite.
fn redb() -> Embedded {
    embedded_on(|dir| {
        Kv::new(std::sync::Arc::new(
            kvlite_kv::embedded::EmbeddedBackend::open(dir, Default::default()).expect("open redb"),
        ))
    })
}

fn embedded_on(open: fn(&std::path::Path) -> Kv) -> Embedded {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = open(dir.path());
    Embedded {
        kv: Some(kv),
        dir,
        open,
    }
}

fn postgres() -> Postgres {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let cluster = kvlite_testkit::PgCluster::shared().expect("PostgreSQL test cluster");
    let url = cluster.url();
    let table = format!("conformance_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let kv = Kv::connect_postgres(&url, &table).expect("connect");
    Postgres { kv, url, table }
}

fn put(kv: &Kv, pairs: &[(&[u8], &[u8])]) {
    kv.transact(|t| {
        for (k, v) in pairs {
            t.set(k, v)?;
        }
        Ok::<_, KvError>(())
    })
    .expect("put");
}

fn get(kv: &Kv, key: &[u8]) -> Option<Vec<u8>> {
    kv.read(|t| t.get(key)).expect("get")
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    entries.iter().map(|(k, _)| k.clone()).collect()
}

fn crud(f: &dyn Fixture) {
    let kv = f.kv();
    assert_eq!(get(kv, b"a"), None);
    put(kv, &[(b"a", b"1"), (b"b", b""), (b"c", b"3")]);
    assert_eq!(get(kv, b"a"), Some(b"1".to_vec()));
    assert_eq!(get(kv, b"b"), Some(Vec::new()), "empty value is not absent");
    put(kv, &[(b"a", b"one")]);
    assert_eq!(get(kv, b"a"), Some(b"one".to_vec()), "overwrite");
    let many = kv
        .read(|t| t.get_many(&[b"c".as_slice(), b"missing", b"a", b"c"]))
        .expect("get_many");
    assert_eq!(
        many,
        vec![
            Some(b"3".to_vec()),
            None,
            Some(b"one".to_vec()),
            Some(b"3".to_vec())
        ]
    );
    kv.transact(|t| t.clear(b"a")).expect("clear");
    assert_eq!(get(kv, b"a"), None);
    kv.transact(|t| t.clear(b"never-existed"))
        .expect("clear absent key");
    // get_for_update reads like get (committed values and this
    // transaction's own writes).
    let mut t = kv.begin_write().expect("begin");
    assert_eq!(
        t.get_for_update(b"c").expect("locked read"),
        Some(b"3".to_vec())
    );
    assert_eq!(t.get_for_update(b"none").expect("locked read"), None);
    t.set(b"c", b"33").expect("set");
    assert_eq!(
        t.get_for_update(b"c").expect("own write"),
        Some(b"33".to_vec())
    );
    t.commit().expect("commit");
    assert_eq!(get(kv, b"c"), Some(b"33".to_vec()));
    let binary: Vec<u8> = (0..=255u8).collect();
    put(kv, &[(&binary, &binary)]);
    assert_eq!(
        get(kv, &binary),
        Some(binary.clone()),
        "arbitrary bytes round-trip"
    );
}

fn scan_boundaries(f: &dyn Fixture) {
    let kv = f.kv();
    let all: Vec<Vec<u8>> = vec![
        vec![1],
        vec![1, 0],
        vec![1, 0, 0],
        vec![1, 1],
        vec![1, 0xff],
        vec![1, 0xff, 0xff],
        vec![2],
        vec![0xff],
        vec![0xff, 0xff],
    ];
    kv.transact(|t| {
        for k in &all {
            t.set(k, k)?;
        }
        Ok::<_, KvError>(())
    })
    .expect("load");
    let scan = |s: &[u8], e: &[u8], o: ScanOptions| kv.read(|t| t.scan(s, e, o)).expect("scan");
    assert_eq!(
        keys(&scan(&[1], &[2], ScanOptions::ALL)),
        all[..6].to_vec(),
        "start inclusive, end exclusive"
    );
    assert_eq!(
        keys(&scan(&[1, 0], &[1, 1], ScanOptions::ALL)),
        all[1..3].to_vec()
    );
    assert_eq!(
        keys(&scan(&[1], &[2], ScanOptions::limit(2))),
        all[..2].to_vec()
    );
    assert_eq!(
        keys(&scan(&[1], &[2], ScanOptions::limit(2).reversed())),
        vec![vec![1, 0xff, 0xff], vec![1, 0xff]],
        "reverse starts from the end"
    );
    assert_eq!(
        keys(&scan(&[1], &[2], ScanOptions::ALL.reversed())).len(),
        6
    );
    assert!(
        scan(&[2], &[1], ScanOptions::ALL).is_empty(),
        "inverted range is empty"
    );
    assert!(scan(&[1], &[1], ScanOptions::ALL).is_empty(), "empty range");
    assert!(
        scan(&[1], &[2], ScanOptions::limit(0)).is_empty(),
        "limit 0"
    );
    let prefix_1 = prefix_end(&[1]).expect("end");
    assert_eq!(
        scan(&[1], &prefix_1, ScanOptions::ALL).len(),
        6,
        "prefix range"
    );
    assert_eq!(
        keys(&scan(&[0xff], &[0xff, 0xff, 0xff], ScanOptions::ALL)),
        vec![vec![0xff], vec![0xff, 0xff]],
        "keys at the top of the key space"
    );
    let values_ok = scan(&[0], &[0xff, 0xff, 0xff], ScanOptions::ALL)
        .iter()
        .all(|(k, v)| k == v);
    assert!(values_ok, "values come back with their keys");
}

/// Many ranges in one call answer exactly as one scan per range would, in
/// a snapshot and in a write transaction (its own writes included).
fn batched_scans(f: &dyn Fixture) {
    let kv = f.kv();
    kv.transact(|t| {
        for i in 0..200u32 {
            t.set(
                &[b"k".as_slice(), &i.to_be_bytes()].concat(),
                &i.to_le_bytes(),
            )?;
        }
        Ok::<_, KvError>(())
    })
    .expect("load");
    let key = |i: u32| [b"k".as_slice(), &i.to_be_bytes()].concat();
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (key(10), key(20)),
        (key(15), key(16)),             // overlaps the first
        (key(50), key(50)),             // empty
        (key(90), key(80)),             // inverted: empty
        (key(199), b"l".to_vec()),      // the last key
        (key(10), key(20)),             // repeated
        (b"a".to_vec(), b"b".to_vec()), // nothing there
        (key(0), key(1)),
    ];
    let borrowed: Vec<(&[u8], &[u8])> = ranges
        .iter()
        .map(|(s, e)| (s.as_slice(), e.as_slice()))
        .collect();
    let batched = kv.read(|t| t.scan_many(&borrowed)).expect("scan_many");
    let expected: Vec<_> = borrowed
        .iter()
        .map(|(s, e)| kv.read(|t| t.scan(s, e, ScanOptions::ALL)).expect("scan"))
        .collect();
    assert_eq!(batched, expected);
    assert_eq!(
        batched.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![10, 1, 0, 0, 1, 10, 0, 1]
    );
    assert!(kv.read(|t| t.scan_many(&[])).expect("none").is_empty());

    // Each range's values joined in key order (the SQLite file reads them
    // through incremental blob I/O): the same entries.
    let joined = kv
        .read(|t| t.scan_joined_many(&borrowed))
        .expect("scan_joined_many");
    let expected_joined = Joined::each(expected.clone());
    assert_eq!(joined, expected_joined);
    assert_eq!(joined[0].value.len(), 40, "ten 4-byte values");
    assert_eq!(joined[7].value, 0u32.to_le_bytes());

    // The last entry of each range, in one call, equals a reverse scan of one.
    let lasts = kv.read(|t| t.last_many(&borrowed)).expect("last_many");
    let expected_lasts: Vec<_> = expected.iter().map(|r| r.last().cloned()).collect();
    assert_eq!(lasts, expected_lasts);
    assert_eq!(
        lasts
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>(),
        vec![key(19), key(15), key(199), key(19), key(0)]
    );
    assert!(kv.read(|t| t.last_many(&[])).expect("none").is_empty());

    // In a write transaction the batch sees the transaction's own writes.
    let mut t = kv.begin_write().expect("begin");
    t.clear_range(&key(12), &key(14)).expect("clear");
    t.set(&key(500), b"new").expect("set");
    let got = t
        .scan_many(&[
            (key(10).as_slice(), key(20).as_slice()),
            (key(199).as_slice(), b"l"),
        ])
        .expect("scan_many in a write");
    assert_eq!(got[0].len(), 8);
    assert_eq!(keys(&got[1]), vec![key(199), key(500)]);
    let joined = t
        .scan_joined_many(&[(key(199).as_slice(), b"l")])
        .expect("scan_joined_many in a write");
    assert_eq!(joined[0].keys, vec![key(199), key(500)]);
    assert_eq!(
        joined[0].value,
        [199u32.to_le_bytes().as_slice(), b"new"].concat(),
        "the write's own sets count"
    );
    let lasts = t
        .last_many(&[
            (key(10).as_slice(), key(14).as_slice()),
            (key(199).as_slice(), b"l"),
            (key(12).as_slice(), key(14).as_slice()),
        ])
        .expect("last_many in a write");
    assert_eq!(
        lasts
            .into_iter()
            .map(|e| e.map(|(k, _)| k))
            .collect::<Vec<_>>(),
        vec![Some(key(11)), Some(key(500)), None],
        "the write's own sets and clears count"
    );
    drop(t);

    // Chunked values by the batch: present, absent and empty.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    kv.transact(|t| {
        chunked::write(t, b"v/big/", &big)?;
        chunked::write(t, b"v/empty/", b"")
    })
    .expect("write");
    let values = kv
        .read(|t| chunked::read_many(t, &[b"v/big/", b"v/none/", b"v/empty/", b"v/big/"]))
        .expect("read_many");
    assert_eq!(
        values,
        vec![Some(big.clone()), None, Some(Vec::new()), Some(big)]
    );
}

fn limits(f: &dyn Fixture) {
    let kv = f.kv();
    let big_key = vec![7u8; MAX_KEY_SIZE];
    put(kv, &[(&big_key, b"k")]);
    assert_eq!(get(kv, &big_key), Some(b"k".to_vec()), "key at the limit");
    let too_big_key = vec![7u8; MAX_KEY_SIZE + 1];
    let err = kv.transact(|t| t.set(&too_big_key, b"x")).unwrap_err();
    assert!(
        matches!(err, KvError::KeyTooLarge { len, .. } if len == MAX_KEY_SIZE + 1),
        "{err}"
    );
    let err = kv.read(|t| t.get(&too_big_key)).unwrap_err();
    assert!(matches!(err, KvError::KeyTooLarge { .. }), "{err}");

    let value = vec![1u8; MAX_VALUE_SIZE];
    put(kv, &[(b"v", &value)]);
    assert_eq!(
        get(kv, b"v").map(|v| v.len()),
        Some(MAX_VALUE_SIZE),
        "value at the limit"
    );
    let err = kv
        .transact(|t| t.set(b"v2", &vec![1u8; MAX_VALUE_SIZE + 1]))
        .unwrap_err();
    assert!(matches!(err, KvError::ValueTooLarge { .. }), "{err}");
    assert_eq!(get(kv, b"v2"), None);

    // Exactly MAX_TXN_BYTES of mutations commits...
    let key_len = 8;
    let per = MAX_VALUE_SIZE;
    let full = MAX_TXN_BYTES / (per + key_len);
    let rest = MAX_TXN_BYTES - full * (per + key_len) - key_len;
    kv.transact(|t| {
        for i in 0..full as u64 {
            t.set(&i.to_be_bytes(), &vec![2u8; per])?;
        }
        t.set(&(full as u64).to_be_bytes(), &vec![2u8; rest])?;
        assert_eq!(t.bytes_written(), MAX_TXN_BYTES);
        Ok::<_, KvError>(())
    })
    .expect("exactly at the transaction limit");
    assert_eq!(
        get(kv, &(full as u64).to_be_bytes()).map(|v| v.len()),
        Some(rest)
    );

    // ...one byte more fails at the write that crosses it, and commit refuses.
    let mut t = kv.begin_write().expect("begin");
    for i in 0..full as u64 {
        t.set(&(i + 1000).to_be_bytes(), &vec![3u8; per])
            .expect("set");
    }
    let err = t
        .set(&u64::MAX.to_be_bytes(), &vec![3u8; rest + 1])
        .unwrap_err();
    assert!(matches!(err, KvError::TransactionTooLarge { .. }), "{err}");
    let err = t.commit().unwrap_err();
    assert!(matches!(err, KvError::TransactionTooLarge { .. }), "{err}");
    assert_eq!(
        get(kv, &1000u64.to_be_bytes()),
        None,
        "nothing of it landed"
    );
}

fn chunked_values(f: &dyn Fixture) {
    let kv = f.kv();
    let big: Vec<u8> = (0..2_345_678u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let n = kv
        .transact(|t| chunked::write(t, b"blob/", &big))
        .expect("write");
    assert_eq!(n as usize, big.len().div_ceil(MAX_VALUE_SIZE));
    assert_eq!(
        kv.read(|t| chunked::read(t, b"blob/")).expect("read"),
        Some(big.clone())
    );

    let small = b"tiny".to_vec();
    kv.transact(|t| chunked::write(t, b"blob/", &small))
        .expect("overwrite");
    assert_eq!(
        kv.read(|t| chunked::read(t, b"blob/")).expect("read"),
        Some(small)
    );
    let (s, e) = chunked::chunk_range(b"blob/");
    let left = kv.read(|t| t.scan(&s, &e, ScanOptions::ALL)).expect("scan");
    assert_eq!(left.len(), 1, "a shorter value leaves no stale chunks");

    kv.transact(|t| chunked::write(t, b"empty/", b""))
        .expect("empty");
    assert_eq!(
        kv.read(|t| chunked::read(t, b"empty/")).expect("read"),
        Some(Vec::new())
    );
    assert_eq!(
        kv.read(|t| chunked::read(t, b"absent/")).expect("read"),
        None
    );

    // A value with a missing middle chunk is an error, not a shorter value.
    kv.transact(|t| chunked::write(t, b"holey/", &big))
        .expect("write");
    kv.transact(|t| t.clear(&chunked::chunk_key(b"holey/", 1)))
        .expect("clear chunk");
    let err = kv.read(|t| chunked::read(t, b"holey/")).unwrap_err();
    assert!(matches!(err, KvError::BrokenChunks { .. }), "{err}");

    // A stray key under a value's prefix is reported, not silently merged.
    kv.transact(|t| chunked::write(t, b"strict/", b"value"))
        .expect("write");
    kv.transact(|t| t.set(b"strict/xx", b"stray"))
        .expect("stray key");
    let err = kv.read(|t| chunked::read(t, b"strict/")).unwrap_err();
    assert!(matches!(err, KvError::BrokenChunks { .. }), "{err}");
    kv.transact(|t| chunked::clear(t, b"strict/"))
        .expect("clear");
    assert_eq!(
        kv.read(|t| chunked::read(t, b"strict/")).expect("read"),
        None
    );
}

/// Scans inside a write transaction page through stored data in windows;
/// check windows with pending sets, clears and range clears against a model.
fn large_merged_scans(f: &dyn Fixture) {
    let kv = f.kv();
    let k = |i: u32| {
        let mut key = b"m/".to_vec();
        key.extend_from_slice(&i.to_be_bytes());
        key
    };
    kv.transact(|t| {
        for i in (0..3000).step_by(2) {
            t.set(&k(i), &i.to_be_bytes())?;
        }
        Ok::<_, KvError>(())
    })
    .expect("load");
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = (0..3000)
        .step_by(2)
        .map(|i| (k(i), i.to_be_bytes().to_vec()))
        .collect();
    let mut t = kv.begin_write().expect("begin");
    for i in (1..3000).step_by(7) {
        t.set(&k(i), b"new").expect("set");
        model.insert(k(i), b"new".to_vec());
    }
    for i in (0..3000).step_by(6) {
        t.clear(&k(i)).expect("clear");
        model.remove(&k(i));
    }
    t.clear_range(&k(1000), &k(1400)).expect("clear_range");
    model.retain(|key, _| !(key >= &k(1000) && key < &k(1400)));
    t.set(&k(1200), b"inside").expect("set");
    model.insert(k(1200), b"inside".to_vec());
    for limit in [1, 2, 127, 128, 129, 500, 1000, usize::MAX] {
        for reverse in [false, true] {
            for (a, b) in [(0, 3000), (999, 1401), (1500, 2900), (5, 6)] {
                let mut opts = ScanOptions::limit(limit);
                opts.reverse = reverse;
                let got = t.scan(&k(a), &k(b), opts).expect("scan");
                let range = model.range(k(a)..k(b)).map(|(k, v)| (k.clone(), v.clone()));
                let want: Vec<_> = if reverse {
                    range.rev().take(limit).collect()
                } else {
                    range.take(limit).collect()
                };
                assert_eq!(got, want, "limit {limit} reverse {reverse} range {a}..{b}");
            }
        }
    }
}

#[derive(Debug)]
struct Abort;
impl From<KvError> for Abort {
    fn from(_: KvError) -> Self {
        Abort
    }
}
impl kvlite_kv::Retryable for Abort {
    fn is_retryable(&self) -> bool {
        false
    }
}

fn atomicity(f: &dyn Fixture) {
    let kv = f.kv();
    put(kv, &[(b"keep", b"old")]);
    let result = kv.transact(|t| {
        t.set(b"keep", b"new").map_err(Abort::from)?;
        t.set(b"added", b"x").map_err(Abort::from)?;
        t.clear_range(b"a", b"z").map_err(Abort::from)?;
        Err::<(), _>(Abort)
    });
    assert!(result.is_err());
    assert_eq!(
        get(kv, b"keep"),
        Some(b"old".to_vec()),
        "aborted transaction left no trace"
    );
    assert_eq!(get(kv, b"added"), None);

    {
        let mut t = kv.begin_write().expect("begin");
        t.set(b"keep", b"dropped").expect("set");
        // Dropped without commit.
    }
    assert_eq!(
        get(kv, b"keep"),
        Some(b"old".to_vec()),
        "dropped transaction left no trace"
    );

    // A commit applies range clears and sets together.
    put(kv, &[(b"r1", b"1"), (b"r2", b"2"), (b"r3", b"3")]);
    kv.transact(|t| {
        t.clear_range(b"r", b"s")?;
        t.set(b"r2", b"back")?;
        Ok::<_, KvError>(())
    })
    .expect("commit");
    let got = kv
        .read(|t| t.scan(b"r", b"s", ScanOptions::ALL))
        .expect("scan");
    assert_eq!(got, vec![(b"r2".to_vec(), b"back".to_vec())]);
}

/// `expect`: the commit applies only if each expected key holds its value
/// in the store (before the transaction's own writes), else `Conflict` and
/// nothing applied — with and without reads first, with sets only (the
/// one-round-trip path on PostgreSQL) and with deletes and clears.
fn conditional_commits(f: &dyn Fixture) {
    let kv = f.kv();
    put(kv, &[(b"guard", b"v1"), (b"other", b"o")]);
    let commit = |expected: &[u8], read_first: bool, clear: bool| {
        let mut t = kv.begin_write().expect("begin");
        if read_first {
            assert_eq!(t.get(b"other").expect("read"), Some(b"o".to_vec()));
        }
        t.expect(b"guard", expected).expect("expect");
        t.set(b"guard", b"v2").expect("set");
        t.set(b"written", expected).expect("set");
        if clear {
            t.clear(b"nothing-here").expect("clear");
            t.clear_range(b"x0", b"x9").expect("clear range");
        }
        t.commit()
    };
    for read_first in [false, true] {
        for clear in [false, true] {
            let case = format!("read first: {read_first}, clears: {clear}");
            put(kv, &[(b"guard", b"v1")]);
            kv.transact(|t| t.clear(b"written")).expect("reset");
            let refused = commit(b"stale", read_first, clear);
            assert!(
                matches!(refused, Err(KvError::Conflict)),
                "{case}: an unmet expectation is a conflict: {refused:?}"
            );
            assert_eq!(get(kv, b"guard"), Some(b"v1".to_vec()), "{case}");
            assert_eq!(get(kv, b"written"), None, "{case}: nothing applied");
            commit(b"v1", read_first, clear).expect(&case);
            assert_eq!(get(kv, b"guard"), Some(b"v2".to_vec()), "{case}");
            assert_eq!(get(kv, b"written"), Some(b"v1".to_vec()), "{case}");
        }
    }
    // An absent key never holds a value.
    let mut t = kv.begin_write().expect("begin");
    t.expect(b"absent", b"").expect("expect");
    t.set(b"written", b"no").expect("set");
    assert!(matches!(t.commit(), Err(KvError::Conflict)));
    assert_eq!(get(kv, b"written"), Some(b"v1".to_vec()));
    // Several expectations: all must hold.
    let mut t = kv.begin_write().expect("begin");
    t.expect(b"guard", b"v2").expect("expect");
    t.expect(b"other", b"changed").expect("expect");
    t.set(b"written", b"no").expect("set");
    assert!(matches!(t.commit(), Err(KvError::Conflict)));
    assert_eq!(get(kv, b"written"), Some(b"v1".to_vec()));
    // A retried transaction that re-reads gets through.
    let mut tries = 0;
    kv.transact(|t| {
        tries += 1;
        let seen = if tries == 1 {
            b"stale".to_vec()
        } else {
            t.get(b"guard")?.unwrap_or_default()
        };
        t.expect(b"guard", &seen)?;
        t.set(b"guard", b"v3")
    })
    .expect("retried");
    assert_eq!(tries, 2);
    assert_eq!(get(kv, b"guard"), Some(b"v3".to_vec()));
}

fn snapshot_reads(f: &dyn Fixture) {
    let kv = f.kv();
    put(kv, &[(b"snap", b"before")]);
    let mut reader = kv.begin_read().expect("read");
    assert_eq!(reader.get(b"snap").expect("get"), Some(b"before".to_vec()));
    put(kv, &[(b"snap", b"after"), (b"snap2", b"new")]);
    assert_eq!(
        reader.get(b"snap").expect("get"),
        Some(b"before".to_vec()),
        "snapshot is stable"
    );
    assert_eq!(reader.get(b"snap2").expect("get"), None);
    drop(reader);
    assert_eq!(get(kv, b"snap"), Some(b"after".to_vec()));
}

fn contended_increments(f: &dyn Fixture, threads: usize, increments: usize) {
    let kv = f.kv().clone();
    let attempts = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let kv = kv.clone();
            let attempts = attempts.clone();
            s.spawn(move || {
                for _ in 0..increments {
                    kv.transact(|t| {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let n = t
                            .get(b"counter")?
                            .map(|v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8])))
                            .unwrap_or(0);
                        t.set(b"counter", &(n + 1).to_be_bytes())
                    })
                    .expect("increment");
                }
            });
        }
    });
    let total = get(&kv, b"counter").map(|v| u64::from_be_bytes(v.try_into().expect("8 bytes")));
    assert_eq!(total, Some((threads * increments) as u64), "no lost update");
    assert!(attempts.load(Ordering::Relaxed) >= threads * increments);
}

fn durability(f: &mut dyn Fixture) {
    put(f.kv(), &[(b"durable", b"yes")]);
    f.kv()
        .transact(|t| chunked::write(t, b"dblob/", &vec![9u8; 300_000]))
        .expect("blob");
    f.reopen();
    assert_eq!(get(f.kv(), b"durable"), Some(b"yes".to_vec()));
    assert_eq!(
        f.kv()
            .read(|t| chunked::read(t, b"dblob/"))
            .expect("read")
            .map(|v| v.len()),
        Some(300_000)
    );
}

fn closed(f: &dyn Fixture) {
    f.kv().close();
    assert!(matches!(f.kv().begin_write(), Err(KvError::Closed)));
    assert!(matches!(f.kv().begin_read(), Err(KvError::Closed)));
}

/// One random operation inside a write transaction.
#[derive(Debug, Clone)]
enum Op {
    Set(u8, u8),
    Clear(u8),
    ClearRange(u8, u8),
    Get(u8),
    GetMany(Vec<u8>),
    Scan(u8, u8, usize, bool),
    ScanMany(Vec<(u8, u8)>),
}

fn key(k: u8) -> Vec<u8> {
    // Short keys with shared prefixes exercise ordering at prefix boundaries.
    let mut key = b"p/".to_vec();
    key.extend(std::iter::repeat_n(b'k', (k % 3) as usize));
    key.push(k / 3);
    key
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Set(k % 60, v)),
        1 => any::<u8>().prop_map(|k| Op::Clear(k % 60)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::ClearRange(a % 60, b % 60)),
        2 => any::<u8>().prop_map(|k| Op::Get(k % 60)),
        1 => proptest::collection::vec(any::<u8>().prop_map(|k| k % 60), 0..5).prop_map(Op::GetMany),
        3 => (any::<u8>(), any::<u8>(), 0usize..8, any::<bool>())
            .prop_map(|(a, b, l, r)| Op::Scan(a % 60, b % 60, l, r)),
        1 => proptest::collection::vec((any::<u8>(), any::<u8>()).prop_map(|(a, b)| (a % 60, b % 60)), 0..4)
            .prop_map(Op::ScanMany),
    ]
}

/// Random transactions checked against a BTreeMap model, so read-your-writes
/// (including scans merging pending writes with stored data) is exact.
fn model_check(f: &dyn Fixture, txns: Vec<(Vec<Op>, bool)>) {
    let kv = f.kv();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = kv
        .read(|t| t.scan(b"p/", b"p0", ScanOptions::ALL))
        .expect("scan")
        .into_iter()
        .collect();
    for (ops, commit) in txns {
        let mut txn_model = model.clone();
        let mut t = kv.begin_write().expect("begin");
        for op in ops {
            match op {
                Op::Set(k, v) => {
                    t.set(&key(k), &[v]).expect("set");
                    txn_model.insert(key(k), vec![v]);
                }
                Op::Clear(k) => {
                    t.clear(&key(k)).expect("clear");
                    txn_model.remove(&key(k));
                }
                Op::ClearRange(a, b) => {
                    let (s, e) = (key(a), key(b));
                    t.clear_range(&s, &e).expect("clear_range");
                    if s < e {
                        txn_model.retain(|k, _| !(*k >= s && *k < e));
                    }
                }
                Op::Get(k) => {
                    assert_eq!(
                        t.get(&key(k)).expect("get"),
                        txn_model.get(&key(k)).cloned()
                    );
                }
                Op::GetMany(ks) => {
                    let ks: Vec<Vec<u8>> = ks.into_iter().map(key).collect();
                    let refs: Vec<&[u8]> = ks.iter().map(|k| k.as_slice()).collect();
                    let want: Vec<_> = ks.iter().map(|k| txn_model.get(k).cloned()).collect();
                    assert_eq!(t.get_many(&refs).expect("get_many"), want);
                }
                Op::Scan(a, b, limit, reverse) => {
                    let (s, e) = (key(a), key(b));
                    let limit = if limit == 0 { usize::MAX } else { limit };
                    let mut opts = ScanOptions::limit(limit);
                    opts.reverse = reverse;
                    let got = t.scan(&s, &e, opts).expect("scan");
                    let want: Vec<(Vec<u8>, Vec<u8>)> = if s >= e {
                        Vec::new()
                    } else if reverse {
                        txn_model
                            .range(s..e)
                            .rev()
                            .take(limit)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    } else {
                        txn_model
                            .range(s..e)
                            .take(limit)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    };
                    assert_eq!(got, want, "scan {a}..{b} limit {limit} reverse {reverse}");
                }
                Op::ScanMany(pairs) => {
                    let ranges: Vec<(Vec<u8>, Vec<u8>)> =
                        pairs.iter().map(|&(a, b)| (key(a), key(b))).collect();
                    let refs: Vec<(&[u8], &[u8])> = ranges
                        .iter()
                        .map(|(s, e)| (s.as_slice(), e.as_slice()))
                        .collect();
                    let want: Vec<Vec<(Vec<u8>, Vec<u8>)>> = ranges
                        .iter()
                        .map(|(s, e)| {
                            if s >= e {
                                return Vec::new();
                            }
                            txn_model
                                .range(s.clone()..e.clone())
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        })
                        .collect();
                    assert_eq!(
                        t.scan_many(&refs).expect("scan_many"),
                        want,
                        "scan_many {pairs:?}"
                    );
                }
            }
        }
        if commit {
            t.commit().expect("commit");
            model = txn_model;
        }
        let stored: BTreeMap<Vec<u8>, Vec<u8>> = kv
            .read(|t| t.scan(b"p/", b"p0", ScanOptions::ALL))
            .expect("scan")
            .into_iter()
            .collect();
        assert_eq!(stored, model, "committed state matches the model");
    }
}

fn model_cases(f: &dyn Fixture, cases: u32) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = proptest::collection::vec(
        (proptest::collection::vec(op(), 1..40), any::<bool>()),
        1..6,
    );
    runner
        .run(&strategy, |txns| {
            model_check(f, txns);
            Ok(())
        })
        .expect("model check");
}

macro_rules! conformance {
    ($backend:ident, $make:expr, model_cases = $cases:expr, threads = $threads:expr) => {
        mod $backend {
            use super::*;

            #[test]
            fn crud() {
                super::crud(&$make);
            }
            #[test]
            fn scan_boundaries() {
                super::scan_boundaries(&$make);
            }
            #[test]
            fn limits() {
                super::limits(&$make);
            }
            #[test]
            fn batched_scans() {
                super::batched_scans(&$make);
            }
            #[test]
            fn chunked_values() {
                super::chunked_values(&$make);
            }
            #[test]
            fn atomicity() {
                super::atomicity(&$make);
            }
            #[test]
            fn snapshot_reads() {
                super::snapshot_reads(&$make);
            }
            #[test]
            fn conditional_commits() {
                super::conditional_commits(&$make);
            }
            #[test]
            fn contended_increments() {
                super::contended_increments(&$make, $threads, 50);
            }
            #[test]
            fn durability() {
                super::durability(&mut $make);
            }
            #[test]
            fn closed() {
                super::closed(&$make);
            }
            #[test]
            fn large_merged_scans() {
                super::large_merged_scans(&$make);
            }
            #[test]
            fn read_your_writes_model() {
                super::model_cases(&$make, $cases);
            }
        }
    };
}

conformance!(memory, memory(), model_cases = 300, threads = 8);
conformance!(embedded, embedded(), model_cases = 150, threads = 8);
conformance!(redb, redb(), model_cases = 60, threads = 8);
conformance!(postgres, postgres(), model_cases = 40, threads = 8);

#[test]
fn a_new_data_directory_gets_sqlite_and_an_old_one_keeps_redb() {
    let fresh = tempfile::tempdir().unwrap();
    put(&Kv::open_embedded(fresh.path()).unwrap(), &[(b"k", b"new")]);
    assert!(
        fresh
            .path()
            .join(kvlite_kv::sqlite_file::FILE_NAME)
            .exists()
    );
    assert!(!fresh.path().join(kvlite_kv::embedded::FILE_NAME).exists());

    let old = redb();
    put(old.kv(), &[(b"k", b"old")]);
    let Embedded { kv, dir, .. } = old;
    drop(kv);
    let kv = Kv::open_embedded(dir.path()).unwrap();
    assert_eq!(get(&kv, b"k"), Some(b"old".to_vec()));
    put(&kv, &[(b"k2", b"still redb")]);
    drop(kv);
    assert!(!dir.path().join(kvlite_kv::sqlite_file::FILE_NAME).exists());
    let kv = Kv::new(std::sync::Arc::new(
        kvlite_kv::embedded::EmbeddedBackend::open(dir.path(), Default::default()).unwrap(),
    ));
    assert_eq!(get(&kv, b"k2"), Some(b"still redb".to_vec()));
}

/// Rows of `table` in the SQLite store of `dir` (closed).
fn rows(dir: &std::path::Path, table: &str) -> i64 {
    let file = dir.join(kvlite_kv::sqlite_file::FILE_NAME);
    let conn = rusqlite::Connection::open(file).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_sqlite_file_kvlite_did_not_make_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(kvlite_kv::sqlite_file::FILE_NAME);
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("CREATE TABLE mine(x); INSERT INTO mine VALUES (1)")
        .unwrap();
    assert!(matches!(
        Kv::open_embedded(dir.path()),
        Err(KvError::NotAStore(_))
    ));
    assert!(matches!(
        Kv::open_embedded_read_only(dir.path()),
        Err(KvError::NotAStore(_))
    ));
    // Untouched: still only its own table.
    assert_eq!(rows(dir.path(), "mine"), 1);
    std::fs::write(&file, b"not a database at all, just text").unwrap();
    assert!(matches!(
        Kv::open_embedded(dir.path()),
        Err(KvError::NotAStore(_))
    ));
}

#[test]
fn memory_retries_injected_conflicts() {
    let backend = Arc::new(kvlite_kv::memory::MemoryBackend::new());
    backend.inject_conflicts(0.5, 7);
    let kv = Kv::new(backend);
    let runs = AtomicUsize::new(0);
    for i in 0..50u64 {
        kv.transact(|t| {
            runs.fetch_add(1, Ordering::Relaxed);
            t.set(&i.to_be_bytes(), b"v")
        })
        .expect("retried to success");
    }
    assert!(
        runs.load(Ordering::Relaxed) > 50,
        "conflicts forced re-runs"
    );
    let n = kv
        .read(|t| t.scan(&[0], &[0xff], ScanOptions::ALL))
        .expect("scan")
        .len();
    assert_eq!(n, 50, "each transaction applied exactly once");
}

/// A transaction that ran over its time fails at once: running it again
/// would take as long (regression: it was retried sixty times).
#[test]
fn a_transaction_over_its_time_is_not_retried() {
    let kv = Kv::memory().with_limits(kvlite_kv::Limits {
        max_txn_duration: std::time::Duration::from_millis(20),
        ..kvlite_kv::Limits::default()
    });
    let runs = AtomicUsize::new(0);
    let r = kv.transact(|t| {
        runs.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(30));
        t.set(b"slow", b"v")
    });
    assert!(matches!(r, Err(KvError::TransactionTooOld { .. })), "{r:?}");
    assert_eq!(runs.load(Ordering::Relaxed), 1);
    assert_eq!(get(&kv, b"slow"), None);
}

/// Through injected faults of every kind, idempotent transactions each land
/// (the retry loop runs them again on conflicts, lost stores and unknown
/// outcomes) and reads see exactly what landed.
#[test]
fn idempotent_transactions_get_through_injected_faults() {
    use kvlite_kv::faults::{FaultRates, FaultyBackend};
    let inner = Arc::new(kvlite_kv::memory::MemoryBackend::new());
    let faulty = Arc::new(FaultyBackend::new(
        inner.clone(),
        FaultRates::mixed(0.1),
        42,
    ));
    let kv = Kv::new(faulty.clone());
    for i in 0..300u64 {
        kv.transact(|t| {
            // Idempotent: read what the transaction depends on, then write.
            let seen = t.get(&i.to_be_bytes())?;
            if seen.is_none() {
                t.set(&i.to_be_bytes(), &i.to_le_bytes())?;
            }
            Ok::<_, KvError>(())
        })
        .expect("through the faults");
    }
    let c = faulty.counts();
    assert!(
        c.read_unavailable > 0
            && c.commit_unavailable > 0
            && c.commit_conflict > 0
            && c.unknown_applied > 0
            && c.unknown_not_applied > 0,
        "every fault struck: {c:?}"
    );
    faulty.set_enabled(false);
    let all = Kv::new(inner)
        .read(|t| t.scan(&[0], &[0xff], ScanOptions::ALL))
        .expect("scan");
    assert_eq!(all.len(), 300);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (k, v))| k == &(i as u64).to_be_bytes() && v == &(i as u64).to_le_bytes())
    );
}

#[test]
fn an_unknown_commit_outcome_is_not_hidden_by_later_failures() {
    let backend = Arc::new(kvlite_kv::memory::MemoryBackend::new());
    let kv = Kv::new(backend.clone()).with_retry_policy(kvlite_kv::RetryPolicy {
        max_attempts: 4,
        first_backoff: std::time::Duration::from_micros(10),
        max_backoff: std::time::Duration::from_micros(100),
    });
    backend.lose_next_commit_reply();
    let r = kv.transact(|t| t.set(b"k", b"v"));
    // The retries only saw an unreachable store; the caller must still hear
    // that the first attempt may have landed (it did).
    assert!(matches!(r, Err(KvError::CommitUnknown(_))), "{r:?}");
    backend.heal();
    assert_eq!(get(&kv, b"k"), Some(b"v".to_vec()));
    // Without an unknown outcome, a transient failure stays what it was.
    let r = kv.transact(|t| {
        t.set(b"k2", b"v")?;
        Err::<(), _>(KvError::Unavailable("flaky".into()))
    });
    assert!(matches!(r, Err(KvError::Unavailable(_))), "{r:?}");
}

#[test]
fn embedded_store_refuses_a_second_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Kv::open_embedded(dir.path()).expect("open");
    match Kv::open_embedded(dir.path()) {
        Err(KvError::InUse(path)) => assert!(path.starts_with(dir.path())),
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("a second opener must be refused"),
    }
}

#[test]
fn postgres_bad_table_name_is_rejected() {
    let cluster = kvlite_testkit::PgCluster::shared().expect("cluster");
    let err = Kv::connect_postgres(&cluster.url(), "kv; DROP TABLE x")
        .err()
        .expect("rejected");
    assert!(err.to_string().contains("invalid table name"), "{err}");
}

#[test]
fn unreachable_postgres_is_unavailable() {
    let backend = kvlite_kv::postgres::PostgresBackend::connect(
        "postgresql://postgres@127.0.0.1:1/postgres",
        kvlite_kv::postgres::PostgresOptions {
            connect_timeout: std::time::Duration::from_millis(500),
            ..kvlite_kv::postgres::PostgresOptions::new("kv")
        },
    );
    assert!(matches!(backend, Err(KvError::Unavailable(_))));
}

/// Announcements reach every process on the same PostgreSQL store (and
/// only that store); a store no other process can use has nothing to
/// watch.
#[test]
fn postgres_announcements_reach_other_processes_on_the_store() {
    let one = postgres();
    let other = Kv::connect_postgres(&one.url, &one.table).expect("a second process");
    let elsewhere = postgres();
    let watch = other.watch().expect("PostgreSQL can be watched");
    let unrelated = elsewhere.kv.watch().expect("watch");
    // LISTEN takes effect on its own connection soon after: announce until
    // heard (each announcement is a separate hint).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let heard = loop {
        one.kv.announce("takeover of x");
        match watch.next(std::time::Duration::from_millis(200)) {
            Ok(m) => break m,
            Err(_) => assert!(std::time::Instant::now() < deadline, "nothing heard"),
        }
    };
    assert_eq!(heard, "takeover of x");
    assert!(
        unrelated
            .next(std::time::Duration::from_millis(300))
            .is_err(),
        "another store's channel hears nothing"
    );
    assert!(memory().0.watch().is_none());
    assert!(embedded().kv().watch().is_none());
}

/// A store on a fresh PostgreSQL database, reached through a [`CutProxy`].
///
/// [`CutProxy`]: kvlite_testkit::CutProxy
fn postgres_through_a_proxy(
    options: kvlite_kv::postgres::PostgresOptions,
) -> (Kv, kvlite_testkit::CutProxy) {
    let cluster = kvlite_testkit::PgCluster::shared().expect("PostgreSQL test cluster");
    let url = cluster.fresh_database().expect("database");
    let dbname = url.rsplit('/').next().expect("db name").to_string();
    let proxy = kvlite_testkit::CutProxy::start(&format!("{}:{}", cluster.host(), cluster.port()))
        .expect("proxy");
    let via = format!(
        "postgresql://{}@127.0.0.1:{}/{dbname}",
        cluster.user(),
        proxy.port()
    );
    let kv = Kv::new(std::sync::Arc::new(
        kvlite_kv::postgres::PostgresBackend::connect(&via, options).expect("connect"),
    ));
    (kv, proxy)
}

/// A transaction that only read ends with a COMMIT of its own, sent alone;
/// a write's COMMIT goes out with its writes. The proxy armed for a COMMIT
/// after writes lets the first through and cuts the second (the fault tests
/// that cut a commit rely on it: a background read's COMMIT must not take
/// the cut meant for a write).
#[test]
fn postgres_a_reads_commit_goes_alone_and_a_writes_with_its_writes() {
    let (kv, proxy) = postgres_through_a_proxy(kvlite_kv::postgres::PostgresOptions::new("alone"));
    put(&kv, &[(b"k", b"1"), (b"l", b"2")]);
    proxy.arm_after_writes(kvlite_testkit::Cut::AfterCommit, std::time::Duration::ZERO);
    for _ in 0..3 {
        // A serializable transaction that only read: its COMMIT (which
        // checks the reads) goes alone.
        let got = kv
            .transact(|t| Ok::<_, kvlite_kv::KvError>((t.get(b"k")?, t.get(b"l")?)))
            .expect("read");
        assert_eq!(got, (Some(b"1".to_vec()), Some(b"2".to_vec())));
    }
    assert_eq!(proxy.cuts(), 0, "a read's COMMIT is not cut");
    let cut = kv.transact(|t| {
        t.get(b"k")?;
        t.set(b"k", b"2")?;
        Ok::<_, kvlite_kv::KvError>(())
    });
    assert_eq!(proxy.cuts(), 1, "the write's COMMIT is: {cut:?}");
}

/// On PostgreSQL a transaction waits once per read (its BEGIN rides with
/// the first) and once for its writes and COMMIT together, whatever their
/// number; a read-only one ends without waiting. Counted twice: by the
/// backend (its waits) and by a proxy on the wire (the client's sends that
/// follow an answer), so pipelining lost anywhere shows.
#[test]
fn postgres_transactions_wait_once_per_read_and_once_to_commit() {
    // One connection: a pool growing in the background would add its own
    // exchanges.
    let (kv, proxy) = postgres_through_a_proxy(kvlite_kv::postgres::PostgresOptions {
        pool_size: 1,
        ..kvlite_kv::postgres::PostgresOptions::new("trips")
    });
    let kv = &kv;
    put(
        kv,
        &[(b"a", b"1"), (b"gone", b"x"), (b"r1", b"y"), (b"r2", b"z")],
    );
    // The proxy counts on its own threads, and an answer not waited for
    // may still be on its way: let the wire go quiet before reading.
    let quiet = || std::thread::sleep(std::time::Duration::from_millis(100));
    let count = |what: &str, waits: u64, exchanges: u64, f: &dyn Fn()| {
        quiet();
        let (w, x) = (kv.round_trips().expect("counted"), proxy.exchanges());
        f();
        quiet();
        let (w, x) = (
            kv.round_trips().expect("counted") - w,
            proxy.exchanges() - x,
        );
        assert_eq!(
            (w, x),
            (waits, exchanges),
            "{what}: (waits, exchanges on the wire)"
        );
    };

    count("read, then write three ways", 2, 2, &|| {
        kv.transact(|t| {
            let a = t.get(b"a")?.unwrap_or_default();
            t.set(b"b", &a)?;
            t.clear(b"gone")?;
            t.clear_range(b"r", b"s")?;
            Ok::<_, KvError>(())
        })
        .expect("commit");
    });
    // The end of a snapshot is sent without a wait: an exchange, no wait.
    count("a one-read snapshot", 1, 2, &|| {
        assert_eq!(get(kv, b"b"), Some(b"1".to_vec()));
    });
    count("a two-read snapshot", 2, 3, &|| {
        let both = kv
            .read(|t| Ok::<_, KvError>((t.get(b"a")?, t.get(b"b")?)))
            .expect("two reads");
        assert_eq!(both, (Some(b"1".to_vec()), Some(b"1".to_vec())));
    });
    count(
        "a serializable read that wrote nothing still waits for its COMMIT",
        2,
        2,
        &|| kv.transact(|t| t.get(b"a").map(drop)).expect("read"),
    );
    // BEGIN is waited for before blind writes: they must never run outside
    // a transaction.
    count("a write without reads", 2, 2, &|| {
        put(kv, &[(b"w", b"blind write")]);
    });
    // A blind write with expectations: BEGIN, the guarded upsert and
    // COMMIT in one round trip (the upsert writes nothing outside a
    // serializable transaction).
    count("a write without reads, with an expectation", 1, 1, &|| {
        kv.transact(|t| {
            t.expect(b"a", b"1")?;
            t.set(b"w", b"guarded write")
        })
        .expect("guarded");
    });
    count("an expectation that does not hold", 1, 1, &|| {
        let mut t = kv.begin_write().expect("begin");
        t.expect(b"a", b"stale").expect("expect");
        t.set(b"w", b"not written").expect("set");
        assert!(matches!(t.commit(), Err(KvError::Conflict)));
    });
    assert_eq!(get(kv, b"w"), Some(b"guarded write".to_vec()));
    count("nothing read or written", 0, 0, &|| {
        kv.transact(|_| Ok::<_, KvError>(())).expect("nothing");
    });
    assert_eq!(get(kv, b"gone"), None);
    assert_eq!(get(kv, b"r1"), None);
}

/// The writes go out with the COMMIT: when one of them fails, PostgreSQL
/// refuses the rest and answers the COMMIT by rolling back, so none of
/// the transaction lands, the earlier statements included.
#[test]
fn postgres_a_failed_write_in_the_pipeline_applies_nothing() {
    let pg = postgres();
    let kv = &pg.kv;
    put(kv, &[(b"kept", b"1"), (b"other", b"2")]);
    // Incompressible, above btree's 2,704-byte index entry: PostgreSQL
    // refuses the upsert after the point delete and range clear ran.
    let mut refused = vec![0u8; 9_000];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in refused.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let err = kv
        .transact(|t| {
            t.clear(b"kept")?;
            t.clear_range(b"o", b"p")?;
            t.set(&refused, b"v")?;
            Ok::<_, KvError>(())
        })
        .expect_err("PostgreSQL refuses the key");
    assert!(!matches!(err, KvError::CommitUnknown(_)), "{err}");
    assert_eq!(get(kv, b"kept"), Some(b"1".to_vec()));
    assert_eq!(get(kv, b"other"), Some(b"2".to_vec()));
    // The connection is still good for the next transaction.
    put(kv, &[(b"after", b"3")]);
    assert_eq!(get(kv, b"after"), Some(b"3".to_vec()));
}

/// kvlite's sessions run without JIT: with a large table the generic plans'
/// estimated costs pass `jit_above_cost`, and each one-row statement would
/// compile itself first (26 ms instead of 0.02 ms, measured).
#[test]
fn postgres_sessions_run_without_jit() {
    let pg = postgres();
    let backend = kvlite_kv::postgres::PostgresBackend::connect(
        &pg.url,
        kvlite_kv::postgres::PostgresOptions::new(&pg.table),
    )
    .expect("connect");
    assert_eq!(backend.session_setting("jit").expect("jit"), "off");
}

/// 20,000 keys (big-endian `u32` 0..20,000, each holding 100 bytes of 7s)
/// and fresh statistics: a table the planner knows. The value written.
fn fill_and_analyze(pg: &Postgres) -> [u8; 100] {
    let value = [7u8; 100];
    for batch in 0..10u32 {
        pg.kv
            .transact(|t| {
                for i in 0..2_000u32 {
                    t.set(&(batch * 2_000 + i).to_be_bytes(), &value)?;
                }
                Ok::<_, KvError>(())
            })
            .expect("fill");
    }
    let cluster = kvlite_testkit::PgCluster::shared().expect("cluster");
    cluster
        .query(&format!("ANALYZE {}", pg.table))
        .expect("analyze");
    value
}

/// kvlite's statements are planned once per session, never per execution.
/// With PostgreSQL's default plan cache mode (which also plans the first
/// five executions of every statement for their values), once autovacuum
/// had analyzed the table the planner judged custom plans cheaper for the
/// guarded commit and planned every commit again: PostgreSQL spent twice
/// the CPU per one-row commit and `small_txns` ran 1.5x slower from then
/// on. The table is filled and analyzed as it was then.
#[test]
fn postgres_statements_keep_generic_plans_after_analyze() {
    let pg = postgres();
    let value = fill_and_analyze(&pg);
    let mut options = kvlite_kv::postgres::PostgresOptions::new(&pg.table);
    options.pool_size = 1;
    let backend =
        Arc::new(kvlite_kv::postgres::PostgresBackend::connect(&pg.url, options).expect("connect"));
    assert_eq!(
        backend.session_setting("plan_cache_mode").expect("setting"),
        "force_generic_plan"
    );
    let kv = Kv::new(backend.clone());
    for i in 0..20u32 {
        // A guarded commit (no reads: BEGIN, guarded upsert, COMMIT), as
        // the engine's commits are, and a read of many keys.
        kv.transact(|t| {
            t.expect(&0u32.to_be_bytes(), &value)?;
            t.set(&(100_000 + i).to_be_bytes(), &value)
        })
        .expect("commit");
        let found = kv
            .read(|t| t.get_many(&[&1u32.to_be_bytes()[..], &(100_000 + i).to_be_bytes()[..]]))
            .expect("get_many");
        assert!(found.iter().all(Option::is_some));
    }
    let version: u32 = backend
        .session_setting("server_version_num")
        .expect("version")
        .parse()
        .expect("a number");
    if version < 140_000 {
        return; // pg_prepared_statements counts plans from PostgreSQL 14 on
    }
    let (custom, generic) = backend.plan_counts().expect("plan counts");
    assert_eq!(
        custom, 0,
        "statements planned per execution ({generic} generic)"
    );
    assert!(generic >= 2, "{generic} generic plans");
}

/// `scan_many` reads each range with an index scan and leaves the answer
/// unsorted (the client orders it per range). As a join sorted as a whole,
/// a large table's statistics made PostgreSQL scan the whole table for a
/// read ahead of 18 small ranges: 160-430 ms a statement instead of 0.3 ms.
#[test]
fn postgres_scan_many_is_an_index_scan_per_range() {
    let pg = postgres();
    fill_and_analyze(&pg);
    let backend = kvlite_kv::postgres::PostgresBackend::connect(
        &pg.url,
        kvlite_kv::postgres::PostgresOptions::new(&pg.table),
    )
    .expect("connect");
    let bounds: Vec<([u8; 4], [u8; 4])> = (0..18u32)
        .map(|i| ((i * 1_000).to_be_bytes(), (i * 1_000 + 3).to_be_bytes()))
        .collect();
    let ranges: Vec<(&[u8], &[u8])> = bounds.iter().map(|(s, e)| (&s[..], &e[..])).collect();
    let plan = backend.scan_many_plan(&ranges).expect("explain").join("\n");
    assert!(plan.contains("Index Scan"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    // And the answer is per range, in key order.
    let got = pg.kv.read(|t| t.scan_many(&ranges)).expect("scan_many");
    assert_eq!(got.len(), 18);
    for (i, found) in got.iter().enumerate() {
        let want: Vec<Vec<u8>> = (0..3u32)
            .map(|j| (i as u32 * 1_000 + j).to_be_bytes().to_vec())
            .collect();
        let keys: Vec<Vec<u8>> = found.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, want, "range {i}");
    }
}
