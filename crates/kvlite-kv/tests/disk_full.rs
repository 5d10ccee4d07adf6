//! The embedded store on a full disk: a clear error for the writer, reads
//! that keep working, and recovery by itself once space is back.

// Tests may unwrap, expect, panic and index: a failure here is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kvlite_kv::{Kv, KvError, KvRead};

#[test]
fn a_full_disk_fails_writes_clearly_keeps_reads_and_recovers() {
    let fs = kvlite_testkit::Tmpfs::mount(24 << 20).expect("a tmpfs (tests run as root)");
    let dir = fs.path().join("store");
    let kv = Kv::open_embedded(&dir).expect("open");
    // Space that can be given back later.
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 6 << 20]).expect("ballast");
    let value = vec![7u8; 90_000];
    let mut written = 0u64;
    let err = loop {
        let key = written.to_be_bytes();
        match kv.transact(|t| t.set(&key, &value)) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 10_000, "the disk never filled");
    };
    assert!(matches!(err, KvError::StoreFull(_)), "{err}");
    assert!(written > 10, "only {written} values fit");
    // Reads keep working on a full disk, and see every acknowledged write.
    for i in [0, written / 2, written - 1] {
        let got = kv
            .read(|t| t.get(&i.to_be_bytes()))
            .expect("read on a full disk");
        assert_eq!(got.as_deref(), Some(&value[..]), "key {i}");
    }
    // Still full: writes keep failing the same clear way.
    let err = kv.transact(|t| t.set(b"more", &value)).unwrap_err();
    assert!(matches!(err, KvError::StoreFull(_)), "{err}");
    // Space comes back: the store writes again, no restart needed.
    std::fs::remove_file(&ballast).expect("free space");
    kv.transact(|t| t.set(b"after", &value))
        .expect("a write once space is back");
    let n = kv
        .read(|t| t.scan(&[0], &[0xff], kvlite_kv::ScanOptions::ALL))
        .expect("scan")
        .len() as u64;
    assert_eq!(n, written + 1);
    drop(kv);
    // And it reopens clean.
    let kv = Kv::open_embedded(&dir).expect("reopen");
    assert!(kv.read(|t| t.get(b"after")).expect("read").is_some());
}
