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
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
