//! Hot pages: what a cold open sends beside page 1, so the first query
//! after it needs no round trip for the upper levels of the b-trees.
//!
//! The engine notes which b-tree interior pages (SQLite's page-type byte
//! 0x02 or 0x05) the writer reads through `get_pages`, up to
//! [`MAX_HOT_PAGES`], and stores the list (the HOT key): in the writer's
//! next commit's own transaction when it grew, in a small transaction of
//! its own when it doubled (a writer that only reads), and at the next
//! takeover through this engine when it changed. Every open preloads what
//! is stored, within the preload budget. Interior pages are few (a 100 MiB
//! table of 4 KiB rows has about 50) and change rarely; leaves are not
//! noted (random keys would only churn the list). A stale list costs
//! bytes, never correctness: the pages are read at the open's head.

use kvlite_api::PAGE_SIZE;

/// Interior pages noted (and stored) at most: the default preload budget.
pub const MAX_HOT_PAGES: usize = (1 << 20) / PAGE_SIZE;

/// The interior pages one writer read, in the order first read.
#[derive(Debug, Default, Clone)]
pub struct HotPages {
    pages: Vec<u32>,
    seen: std::collections::HashSet<u32>,
    /// How many of `pages` a commit has stored.
    stored: usize,
}

impl HotPages {
    /// Note the pages just read (only b-tree interior ones count).
    pub fn note<'a>(&mut self, pages: impl IntoIterator<Item = (u32, &'a [u8])>) {
        for (pgno, data) in pages {
            if self.pages.len() >= MAX_HOT_PAGES {
                return;
            }
            if is_interior(pgno, data) && self.seen.insert(pgno) {
                self.pages.push(pgno);
            }
        }
    }

    /// What was noted, leaving nothing.
    pub fn take(&mut self) -> Vec<u32> {
        self.seen.clear();
        self.stored = 0;
        std::mem::take(&mut self.pages)
    }

    /// The list to store, if it grew since a commit last stored it (the
    /// writer's next commit stores it in its own transaction).
    pub fn unstored(&self) -> Option<Vec<u32>> {
        (self.pages.len() > self.stored).then(|| self.pages.clone())
    }

    /// The list to store outside a commit: when it at least doubled since
    /// last stored (so a session that reads and never commits stores it a
    /// few times at most).
    pub fn worth_storing_now(&self) -> Option<Vec<u32>> {
        (self.pages.len() > self.stored && self.pages.len() >= 2 * self.stored)
            .then(|| self.pages.clone())
    }

    /// Start from the stored list (a takeover read it): only pages beyond
    /// it are news.
    pub fn reset_to(&mut self, stored: &[u32]) {
        self.pages = stored.iter().copied().take(MAX_HOT_PAGES).collect();
        self.seen = self.pages.iter().copied().collect();
        self.stored = self.pages.len();
    }

    /// A commit stored the first `n` pages.
    pub fn stored(&mut self, n: usize) {
        self.stored = self.stored.max(n);
    }
}

/// Whether `data` is a b-tree interior page (the header follows the file
/// header on page 1).
pub fn is_interior(pgno: u32, data: &[u8]) -> bool {
    let at = if pgno == 1 { 100 } else { 0 };
    matches!(data.get(at), Some(0x02 | 0x05))
}

pub fn encode(pages: &[u32]) -> Vec<u8> {
    pages.iter().flat_map(|p| p.to_be_bytes()).collect()
}

/// `None` for bytes that are not a list of at most [`MAX_HOT_PAGES`] page
/// numbers.
pub fn decode(v: &[u8]) -> Option<Vec<u32>> {
    if !v.len().is_multiple_of(4) || v.len() / 4 > MAX_HOT_PAGES {
        return None;
    }
    Some(
        v.chunks_exact(4)
            .filter_map(|c| <[u8; 4]>::try_from(c).ok())
            .map(u32::from_be_bytes)
            .collect(),
    )
}
