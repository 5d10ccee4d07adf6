//! Which pages to fetch along with a cache miss.
//!
//! Sequential access (each miss just past what the previous request
//! fetched) doubles the window up to a maximum; a constant stride between
//! misses prefetches further along that stride; anything else fetches the
//! missed page alone. A production system of this kind needed 1,249
//! requests to scan 50 MiB without read-ahead and 368 with a fixed 64-page
//! window; doubling to 4 MiB needs a few dozen for 100 MiB.

pub(crate) struct ReadAhead {
    max_window: u32,
    window: u32,
    /// Highest page fetched by the previous request.
    last_end: u32,
    last_miss: u32,
    last_stride: i64,
}

impl ReadAhead {
    pub fn new(max_window: u32) -> Self {
        ReadAhead {
            max_window: max_window.max(1),
            window: 1,
            last_end: 0,
            last_miss: 0,
            last_stride: 0,
        }
    }

    /// Pages to request for a miss on `pgno` in a database of `size` pages,
    /// `pgno` first; `skip` tells which pages need no fetching.
    pub fn plan(&mut self, pgno: u32, size: u32, skip: impl Fn(u32) -> bool) -> Vec<u32> {
        let stride = pgno as i64 - self.last_miss as i64;
        let sequential =
            pgno > self.last_end && pgno - self.last_end <= self.window.div_ceil(4).max(1);
        let mut want = vec![pgno];
        let region_end = if sequential {
            self.window = (self.window * 2).min(self.max_window);
            let end = pgno.saturating_add(self.window - 1).min(size).max(pgno);
            want.extend((pgno + 1..=end).filter(|&p| !skip(p)));
            end
        } else if stride != 0 && stride == self.last_stride && stride.unsigned_abs() > 1 {
            self.window = (self.window * 2).min(self.max_window / 8).max(2);
            let mut p = pgno as i64;
            for _ in 0..self.window {
                p += stride;
                if p < 1 || p > size as i64 {
                    break;
                }
                if !skip(p as u32) {
                    want.push(p as u32);
                }
            }
            pgno
        } else {
            self.window = 1;
            pgno
        };
        self.last_stride = stride;
        self.last_miss = pgno;
        self.last_end = region_end;
        want
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_scans_grow_the_window() {
        let mut ra = ReadAhead::new(1024);
        let size = 25_600;
        let (mut next, mut requests) = (1u32, 0);
        while next <= size {
            let got = ra.plan(next, size, |_| false);
            requests += 1;
            next = got.iter().max().copied().unwrap_or(next) + 1;
        }
        assert!(requests <= 40, "{requests} requests for 100 MiB");
    }

    #[test]
    fn random_access_fetches_one_page() {
        let mut ra = ReadAhead::new(1024);
        for p in [500, 17, 9000, 3, 12_000] {
            assert_eq!(ra.plan(p, 20_000, |_| false), vec![p]);
        }
    }

    #[test]
    fn constant_strides_prefetch_along_the_stride() {
        let mut ra = ReadAhead::new(1024);
        ra.plan(10, 10_000, |_| false);
        ra.plan(20, 10_000, |_| false);
        let got = ra.plan(30, 10_000, |_| false);
        assert_eq!(&got[..3], &[30, 40, 50]);
    }

    #[test]
    fn never_past_the_end_and_skips_cached() {
        let mut ra = ReadAhead::new(1024);
        ra.plan(1, 10, |_| false);
        let got = ra.plan(2, 10, |p| p == 3);
        assert!(got.iter().all(|&p| p <= 10 && p != 3), "{got:?}");
    }
}
