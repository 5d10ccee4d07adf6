//! A transaction's pending mutations, kept client-side until commit (as
//! FoundationDB does), so every backend gets read-your-writes the same way and
//! a commit ships as one batch.
//!
//! Invariant: a point entry always takes precedence over the cleared ranges,
//! because clearing a range removes the points inside it and a later set adds a
//! point back. A backend therefore applies a `WriteSet` as: delete every cleared
//! range, then apply every point — order inside each group does not matter.

use std::collections::BTreeMap;
use std::ops::Bound;

/// What the write set knows about one key.
pub(crate) enum Known<'a> {
    Value(&'a [u8]),
    Absent,
    /// Not touched by this transaction: ask the backend.
    Unknown,
}

#[derive(Default, Debug, Clone)]
pub struct WriteSet {
    /// Sorted, disjoint, non-adjacent `[start, end)` ranges.
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    /// `Some` = set, `None` = cleared key.
    points: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.cleared.is_empty() && self.points.is_empty()
    }

    /// Cleared `[start, end)` ranges, sorted and disjoint.
    pub fn cleared_ranges(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.cleared
    }

    /// Point mutations in key order: `Some(value)` to store, `None` to delete.
    pub fn points(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.points
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        self.points.insert(key.to_vec(), Some(value.to_vec()));
    }

    pub(crate) fn clear(&mut self, key: &[u8]) {
        self.points.insert(key.to_vec(), None);
    }

    pub(crate) fn clear_range(&mut self, start: &[u8], end: &[u8]) {
        if start >= end {
            return;
        }
        let doomed: Vec<Vec<u8>> = self
            .points
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.points.remove(&k);
        }
        // Merge with every range that overlaps or touches [start, end).
        let mut new_start = start.to_vec();
        let mut new_end = end.to_vec();
        self.cleared.retain(|(s, e)| {
            let touches = s.as_slice() <= end && start <= e.as_slice();
            if touches {
                if *s < new_start {
                    new_start = s.clone();
                }
                if *e > new_end {
                    new_end = e.clone();
                }
            }
            !touches
        });
        let at = self.cleared.partition_point(|(s, _)| *s < new_start);
        self.cleared.insert(at, (new_start, new_end));
    }

    pub(crate) fn lookup(&self, key: &[u8]) -> Known<'_> {
        match self.points.get(key) {
            Some(Some(v)) => Known::Value(v),
            Some(None) => Known::Absent,
            None if self.in_cleared_range(key) => Known::Absent,
            None => Known::Unknown,
        }
    }

    /// True if a backend entry with this key is hidden by this transaction
    /// (overwritten, deleted or inside a cleared range).
    pub(crate) fn shadows(&self, key: &[u8]) -> bool {
        self.points.contains_key(key) || self.in_cleared_range(key)
    }

    fn in_cleared_range(&self, key: &[u8]) -> bool {
        let i = self.cleared.partition_point(|(s, _)| s.as_slice() <= key);
        i.checked_sub(1)
            .and_then(|last| self.cleared.get(last))
            .is_some_and(|(_, end)| key < end.as_slice())
    }

    /// Values set in `[lo, hi)` (or `[lo, ∞)` when `hi` is `None`), ascending.
    pub(crate) fn sets_in<'a>(
        &'a self,
        lo: &[u8],
        hi: Option<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a {
        let upper = match hi {
            Some(h) => Bound::Excluded(h.to_vec()),
            None => Bound::Unbounded,
        };
        self.points
            .range((Bound::Included(lo.to_vec()), upper))
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_range_merges_and_drops_points() {
        let mut w = WriteSet::default();
        w.set(b"b", b"1");
        w.set(b"d", b"2");
        w.set(b"z", b"3");
        w.clear_range(b"a", b"c");
        w.clear_range(b"c", b"e");
        assert_eq!(
            w.cleared_ranges(),
            &[(b"a".to_vec(), b"e".to_vec())],
            "touching ranges merge"
        );
        assert!(matches!(w.lookup(b"b"), Known::Absent));
        assert!(matches!(w.lookup(b"d"), Known::Absent));
        assert!(matches!(w.lookup(b"z"), Known::Value(b"3")));
        assert!(matches!(w.lookup(b"e"), Known::Unknown));
        w.set(b"b", b"again");
        assert!(matches!(w.lookup(b"b"), Known::Value(b"again")));
        w.clear_range(b"0", b"1");
        assert_eq!(w.cleared_ranges().len(), 2);
        assert_eq!(w.cleared_ranges()[0].0, b"0".to_vec());
        w.clear_range(b"x", b"x");
        assert_eq!(w.cleared_ranges().len(), 2, "empty range is a no-op");
    }
}
