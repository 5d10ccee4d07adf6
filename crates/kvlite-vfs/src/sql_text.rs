//! SQLite's own answers about SQL text, for programs that read SQL from a
//! person (the `kvlite` shell): whether a statement is complete, and which
//! words are keywords.

use std::ffi::{CString, c_int};

/// Whether `sql` ends with a complete statement: a `;` outside strings,
/// identifiers and comments, and not inside a `CREATE TRIGGER` body
/// (`sqlite3_complete`). A shell runs the text it has gathered when this
/// turns true.
pub fn is_complete(sql: &str) -> bool {
    // A NUL cannot end a statement: the text before it decides.
    let text = sql.split('\0').next().unwrap_or_default();
    let Ok(text) = CString::new(text) else {
        return false;
    };
    // SAFETY: `text` is a valid NUL-terminated string that outlives the call.
    unsafe { libsqlite3_sys::sqlite3_complete(text.as_ptr()) != 0 }
}

/// Whether `word` is an SQL keyword to this SQLite (`sqlite3_keyword_check`),
/// so an identifier spelled like it must be quoted.
pub fn is_keyword(word: &str) -> bool {
    let Ok(len) = c_int::try_from(word.len()) else {
        return false;
    };
    // SAFETY: the pointer and length describe `word`'s bytes, which
    // outlive the call; SQLite only reads them.
    unsafe { libsqlite3_sys::sqlite3_keyword_check(word.as_ptr().cast(), len) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completeness_follows_sqlite() {
        assert!(is_complete("select 1;"));
        assert!(is_complete("select 1; -- done\n"));
        assert!(!is_complete("select 1"));
        assert!(!is_complete("select ';"));
        assert!(!is_complete("select 1 /* ; */"));
        assert!(!is_complete(
            "create trigger t after insert on x begin select 1;"
        ));
        assert!(is_complete(
            "create trigger t after insert on x begin select 1; end;"
        ));
    }

    #[test]
    fn keywords_are_known() {
        assert!(is_keyword("select"));
        assert!(is_keyword("ORDER"));
        assert!(!is_keyword("alpha"));
    }
}
