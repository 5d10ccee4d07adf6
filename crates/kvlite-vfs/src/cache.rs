//! A bounded LRU of committed pages.

use std::num::NonZeroUsize;

use kvlite_api::PAGE_SIZE;
use lru::LruCache;

/// A committed page: shared with the engine's blob cache when the engine
/// runs in this process.
pub(crate) type Page = kvlite_api::PageData;

pub(crate) struct PageCache {
    pages: LruCache<u32, Page>,
}

impl PageCache {
    pub fn new(bytes: usize) -> Self {
        let capacity = NonZeroUsize::new((bytes / PAGE_SIZE).max(16)).unwrap_or(NonZeroUsize::MIN);
        PageCache {
            pages: LruCache::new(capacity),
        }
    }

    pub fn get(&mut self, pgno: u32) -> Option<&Page> {
        self.pages.get(&pgno)
    }

    pub fn contains(&self, pgno: u32) -> bool {
        self.pages.contains(&pgno)
    }

    pub fn insert(&mut self, pgno: u32, page: Page) {
        self.pages.put(pgno, page);
    }

    /// Drop pages past a new end of the database.
    pub fn truncate(&mut self, size: u32) {
        let doomed: Vec<u32> = self
            .pages
            .iter()
            .map(|(p, _)| *p)
            .filter(|&p| p > size)
            .collect();
        for p in doomed {
            self.pages.pop(&p);
        }
    }

    pub fn remove(&mut self, pgno: u32) {
        self.pages.pop(&pgno);
    }

    pub fn clear(&mut self) {
        self.pages.clear();
    }

    /// Pages one request may bring, and windows fetched ahead may hold in
    /// all: half the cache, so a batch cannot evict itself.
    pub fn batch_pages(&self) -> usize {
        (self.capacity() / 2).max(1)
    }

    pub fn capacity(&self) -> usize {
        self.pages.cap().get()
    }
}
