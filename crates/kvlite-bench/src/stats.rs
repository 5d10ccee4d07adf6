//! Summary statistics of repeated measurements.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
    pub p90: Duration,
    pub p99: Duration,
}

impl Summary {
    /// Summarize samples (which must not be empty).
    pub fn of(samples: &[Duration]) -> Summary {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let at = |q: f64| {
            s.get(((s.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        Summary {
            runs: s.len(),
            median: at(0.5),
            min: s.first().copied().unwrap_or_default(),
            max: s.last().copied().unwrap_or_default(),
            p90: at(0.9),
            p99: at(0.99),
        }
    }

    /// Slowest run over fastest; 1.0 for a single run.
    pub fn spread(&self) -> f64 {
        if self.min.is_zero() {
            return 1.0;
        }
        self.max.as_secs_f64() / self.min.as_secs_f64()
    }

    /// Whether several runs spread wider than [`WIDE_SPREAD`].
    pub fn is_wide(&self) -> bool {
        self.runs >= 3 && self.spread() > WIDE_SPREAD
    }
}

/// Above this max/min ratio a workload's runs disagree too much for its
/// median (and ratios built on it) to mean much.
pub const WIDE_SPREAD: f64 = 1.5;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_flags_runs_that_disagree() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let tight = Summary::of(&ms(&[10, 11, 12]));
        assert!((tight.spread() - 1.2).abs() < 1e-9);
        assert!(!tight.is_wide());
        assert!(Summary::of(&ms(&[10, 11, 16])).is_wide());
        // Two runs are too few to call anything.
        assert!(!Summary::of(&ms(&[10, 30])).is_wide());
    }
}
