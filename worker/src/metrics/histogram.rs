//! A latency histogram on atomics: recorded from any task without a lock, read at scrape time.
//! The buckets cover what a worker measures, from a whole restore of a few milliseconds to a
//! swap-out of a large tenant over a slow cold tier.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 1 ms to 30 s, about three per decade.
pub(crate) const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Observations of one duration, by bucket (not cumulative: the exposition adds them up).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// One counter per bound of [`BUCKETS`], then one for what is above the last.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A histogram as read at one moment, cumulative as Prometheus wants it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)` for every bound of [`BUCKETS`].
    pub cumulative: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub(crate) fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now. Observations recorded meanwhile may show in one figure and not yet in
    /// another: a scrape is not a transaction, and Prometheus tolerates that.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, n)| {
                total += n.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative[0], (0.001, 2));
        assert_eq!(s.cumulative[4], (0.025, 2));
        assert_eq!(s.cumulative[5], (0.05, 3));
        // The 60 s observation is above every bound: only +Inf (the count) holds it.
        assert_eq!(s.cumulative.last(), Some(&(30.0, 3)));
        assert!((s.sum_seconds - 60.0315).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
