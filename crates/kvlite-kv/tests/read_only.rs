//! The embedded store opened read-only: reads see the data, writes are
//! refused with `ReadOnly`, the file is never changed, and a writer and a
//! read-only opener exclude each other.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kvlite_kv::{Kv, KvError, KvRead, ScanOptions};

#[test]
fn a_read_only_store_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(matches!(
        Kv::open_embedded_read_only(&data),
        Err(KvError::NotAStore(_))
    ));
    {
        let kv = Kv::open_embedded(&data).unwrap();
        kv.transact(|t| t.set(b"k", b"v")).unwrap();
        assert!(!kv.is_read_only());
        // A writer holds the file: a read-only open is refused, not torn.
        assert!(matches!(
            Kv::open_embedded_read_only(&data),
            Err(KvError::InUse(_))
        ));
    }
    let file = data.join(kvlite_kv::sqlite_file::FILE_NAME);
    let before = std::fs::read(&file).unwrap();
    let kv = Kv::open_embedded_read_only(&data).unwrap();
    assert!(kv.is_read_only());
    assert_eq!(kv.read(|t| t.get(b"k")).unwrap(), Some(b"v".to_vec()));
    let all = kv
        .read(|t| t.scan(&[0], &[0xff], ScanOptions::ALL))
        .unwrap();
    assert_eq!(all.len(), 1);
    let err = kv.transact(|t| t.set(b"k", b"w")).unwrap_err();
    assert!(matches!(err, KvError::ReadOnly(_)), "{err}");
    // Two read-only openers share the file; a writer waits for both.
    let second = Kv::open_embedded_read_only(&data).unwrap();
    assert!(matches!(Kv::open_embedded(&data), Err(KvError::InUse(_))));
    drop((kv, second));
    assert!(std::fs::read(&file).unwrap() == before, "the file changed");
    let kv = Kv::open_embedded(&data).unwrap();
    assert_eq!(kv.read(|t| t.get(b"k")).unwrap(), Some(b"v".to_vec()));
}
