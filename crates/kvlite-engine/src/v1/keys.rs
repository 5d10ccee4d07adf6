//! The v1 layout's keys, under a prefix of their own (`02`) beside every v2
//! key (`00`, `01`), so the layouts coexist and "does this database have v1
//! data" is one point read. Names end with a NUL (names never hold one), so
//! one database's keys are one contiguous range and listing databases is a
//! scan of the small file records.
//!
//! ```text
//! 02 'f' <name> 00 <tag u8>                 -> file record: version u16 LE, size u64 LE
//! 02 'c' <name> 00 <tag u8> <chunk u32 BE>  -> bytes [chunk*4096, +4096) of the file
//! 02 'l' <name>                             -> migration lease
//! ```

use kvlite_api::V1File;
use kvlite_kv::prefix_end;

const V1: u8 = 0x02;
const FILE: u8 = b'f';
const CHUNK: u8 = b'c';
const LEASE: u8 = b'l';

fn named(kind: u8, db: &str, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + db.len() + extra);
    k.push(V1);
    k.push(kind);
    k.extend_from_slice(db.as_bytes());
    k.push(0);
    k
}

/// A file's record (format version and size).
pub fn file(db: &str, file: V1File) -> Vec<u8> {
    let mut k = named(FILE, db, 1);
    k.push(file.tag());
    k
}

/// Every file record of `db`.
pub fn files_of(db: &str) -> (Vec<u8>, Vec<u8>) {
    let start = named(FILE, db, 0);
    let end = prefix_end(&start).unwrap_or_default();
    (start, end)
}

/// Every file record of every v1 database.
pub fn all_files() -> (Vec<u8>, Vec<u8>) {
    (vec![V1, FILE], vec![V1, FILE + 1])
}

/// The database and file a file record's key names.
pub fn parse_file(key: &[u8]) -> Option<(&str, Option<V1File>)> {
    let rest = key.strip_prefix(&[V1, FILE])?;
    let (tag, name) = rest.split_last()?;
    let name = name.strip_suffix(&[0])?;
    Some((std::str::from_utf8(name).ok()?, V1File::from_tag(*tag)))
}

/// The first file-record key after every one of `db`'s.
pub fn after_files_of(db: &str) -> Vec<u8> {
    files_of(db).1
}

pub fn chunk(db: &str, file: V1File, index: u32) -> Vec<u8> {
    let mut k = named(CHUNK, db, 5);
    k.push(file.tag());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Chunks `[from, ..)` of one file.
pub fn chunks_from(db: &str, file: V1File, from: u32) -> (Vec<u8>, Vec<u8>) {
    let start = chunk(db, file, from);
    let mut end = named(CHUNK, db, 1);
    end.push(file.tag() + 1);
    (start, end)
}

/// Every chunk of every file of `db`.
pub fn chunks_of(db: &str) -> (Vec<u8>, Vec<u8>) {
    let start = named(CHUNK, db, 0);
    let end = prefix_end(&start).unwrap_or_default();
    (start, end)
}

pub fn lease(db: &str) -> Vec<u8> {
    let mut k = vec![V1, LEASE];
    k.extend_from_slice(db.as_bytes());
    k
}

/// Every migration lease.
pub fn all_leases() -> (Vec<u8>, Vec<u8>) {
    (vec![V1, LEASE], vec![V1, LEASE + 1])
}

pub fn lease_name(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(&[V1, LEASE])?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_one_range_apart_from_every_other() {
        let (s, e) = chunks_of("a");
        for (db, f, i) in [("a", V1File::Main, 0), ("a", V1File::Wal, u32::MAX)] {
            let k = chunk(db, f, i);
            assert!(s <= k && k < e);
        }
        for other in ["a\u{1}", "ab", "b"] {
            let k = chunk(other, V1File::Main, 0);
            assert!(!(s <= k && k < e), "{other}");
        }
        let (s, e) = chunks_from("a", V1File::Journal, 3);
        assert!(chunk("a", V1File::Journal, 2) < s);
        assert!(chunk("a", V1File::Journal, 3) >= s && chunk("a", V1File::Journal, 3) < e);
        assert!(chunk("a", V1File::Wal, 0) >= e);
        assert_eq!(
            parse_file(&file("x y", V1File::Wal)),
            Some(("x y", Some(V1File::Wal)))
        );
        assert!(chunk("a", V1File::Main, 77).ends_with(&77u32.to_be_bytes()));
        assert_eq!(lease_name(&lease("q")), Some("q"));
        // Never inside the v2 key space.
        assert!(crate::keys::all_databases().1 <= all_files().0);
    }
}
