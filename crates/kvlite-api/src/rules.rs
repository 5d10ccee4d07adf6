//! Rules both sides of the seam must apply identically: if the VFS and the
//! engine disagreed on them, every commit near a limit would fail.

use crate::{Error, InvalidKind, LOCK_PAGE, MAX_NAME_LEN};

/// Check a database name: 1..=[`MAX_NAME_LEN`] bytes, no NUL.
pub fn validate_name(db: &str) -> Result<(), Error> {
    if db.is_empty() || db.len() > MAX_NAME_LEN || db.contains('\0') {
        return Err(Error::invalid(
            InvalidKind::Name,
            format!("database names are 1..={MAX_NAME_LEN} bytes without NUL"),
        ));
    }
    Ok(())
}

/// Whether `ns` can name a namespace: 1-64 of `[A-Za-z0-9_-]`.
pub fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 64
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Check the name of a database about to be created: [`validate_name`], no
/// control characters, no leading or trailing whitespace (names like these
/// cannot be told apart in a listing), and a `:` only as `namespace:name`,
/// which is the database `name` of tenant `namespace` — the same whether
/// the engine is reached in process or through a server. Existing
/// databases are reached by whatever name they have.
pub fn validate_new_name(db: &str) -> Result<(), Error> {
    validate_name(db)?;
    let bad = |why: &str| {
        Err(Error::invalid(
            InvalidKind::Name,
            format!("database name {db:?} {why}"),
        ))
    };
    if db.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if db.trim() != db {
        return bad("starts or ends with whitespace");
    }
    if let Some((ns, name)) = db.split_once(':') {
        if !valid_namespace(ns) {
            return bad("has a namespace (before ':') that is not 1-64 of [A-Za-z0-9_-]");
        }
        if name.is_empty() || name.contains(':') || name.trim() != name {
            return bad("must be namespace:name, with one ':' and a name after it");
        }
    }
    Ok(())
}

/// How many pages a commit growing the database from `old` to `new` pages
/// adds as zeros: those in `(old, new]` it does not write, except SQLite's
/// lock page (never stored). Counts without listing, so a client-sent size
/// can be checked before anything is allocated for it.
pub fn growth_fill_count(old: u32, new: u32, written: impl IntoIterator<Item = u32>) -> u64 {
    if new <= old {
        return 0;
    }
    let in_range = written.into_iter().filter(|&p| p > old && p <= new).count() as u64;
    let lock = u64::from(old < LOCK_PAGE && LOCK_PAGE <= new);
    u64::from(new - old) - in_range - lock
}

/// The pages [`growth_fill_count`] counts, ascending. `written` is sorted.
pub fn growth_fill(old: u32, new: u32, written: &[u32]) -> Vec<u32> {
    if new <= old {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut w = written.iter().peekable();
    for p in old + 1..=new {
        while w.next_if(|&&x| x < p).is_some() {}
        if w.peek() == Some(&&p) || p == LOCK_PAGE {
            continue;
        }
        out.push(p);
    }
    debug_assert_eq!(
        out.len() as u64,
        growth_fill_count(old, new, written.iter().copied())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_skips_written_pages_and_the_lock_page() {
        assert_eq!(growth_fill(2, 6, &[3, 5]), vec![4, 6]);
        assert_eq!(growth_fill_count(2, 6, [3, 5]), 2);
        assert_eq!(growth_fill(6, 2, &[]), Vec::<u32>::new());
        assert_eq!(growth_fill_count(6, 2, []), 0);
        let around = growth_fill(LOCK_PAGE - 2, LOCK_PAGE + 1, &[]);
        assert_eq!(around, vec![LOCK_PAGE - 1, LOCK_PAGE + 1]);
        assert_eq!(growth_fill_count(LOCK_PAGE - 2, LOCK_PAGE + 1, []), 2);
        // Pages outside the growth do not reduce the count.
        assert_eq!(growth_fill_count(2, 4, [1, 2, 9]), 2);
    }

    #[test]
    fn new_names() {
        for good in ["a", "app db", "alice:x", "ns_1-b:y z", "ünïcode"] {
            assert!(validate_new_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "a\nb",
            "tab\there",
            "\u{7f}",
            " lead",
            "trail ",
            ":x",
            "alice:",
            "a:b:c",
            "bad ns:x",
            "alice: x",
            "",
        ] {
            let e = validate_new_name(bad).err();
            assert!(
                matches!(&e, Some(Error::InvalidRequest(i)) if i.kind == InvalidKind::Name),
                "{bad:?}: {e:?}"
            );
        }
        assert!(valid_namespace("a-b_9") && !valid_namespace("a:b") && !valid_namespace(""));
    }

    #[test]
    fn names() {
        assert!(validate_name("a").is_ok());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        for bad in ["", "a\0b", &"x".repeat(MAX_NAME_LEN + 1)] {
            let e = validate_name(bad).err();
            assert!(
                matches!(&e, Some(Error::InvalidRequest(i)) if i.kind == InvalidKind::Name),
                "{bad:?}: {e:?}"
            );
        }
    }
}
