//! Arbitrary bytes into every decoder entry point: must never panic, and
//! must never allocate more than a bounded multiple of the input.
#![no_main]

use kvlite_ltx::LtxFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = LtxFile::parse(data) else {
        return;
    };
    let mut buf = vec![0u8; file.page_size()];
    for pgno in file.pgnos().collect::<Vec<_>>() {
        let _ = file.page(pgno);
        let _ = file.read_page_into(pgno, &mut buf);
    }
    let verified = file.verify_checksum();
    let decoded = file.decode_all();
    assert_eq!(verified.is_ok(), decoded.is_ok());
    assert_eq!(verified.is_ok(), file.decode_each().is_ok());
});
