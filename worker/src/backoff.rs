//! When the worker tries again a tenant's swap-out that could not commit (a cold tier down, a
//! full disk): kept per tenant, consulted by the supervisor before a swap-out of its own.

use std::time::Duration;

/// When a tenant's swap-outs that failed (they could not commit) are tried again: after 5 s,
/// then twice as long each time, at most 5 minutes; forgotten at the first that commits.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
    retry_at_ms: u64,
}

impl Backoff {
    const FIRST_MS: u64 = 5_000;
    const MOST_MS: u64 = 300_000;

    /// A swap-out failed at `now_ms`: how long until the next try.
    pub(crate) fn failed(&mut self, now_ms: u64) -> Duration {
        let wait = Self::FIRST_MS
            .saturating_mul(1u64 << self.failures.min(16))
            .min(Self::MOST_MS);
        self.failures += 1;
        self.retry_at_ms = now_ms + wait;
        Duration::from_millis(wait)
    }

    pub(crate) fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// Whether the worker may try a swap-out of its own at `now_ms`.
    pub(crate) fn ready(&self, now_ms: u64) -> bool {
        now_ms >= self.retry_at_ms
    }

    /// Whether the last swap-out failed.
    pub(crate) fn failing(&self) -> bool {
        self.failures > 0
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    #[test]
    fn failed_swap_outs_back_off_doubling_to_five_minutes() {
        let mut b = Backoff::default();
        assert!(b.ready(0) && !b.failing());
        let waits: Vec<u64> = (0..10).map(|_| b.failed(1_000).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
        assert!(!b.ready(1_000 + 299_999) && b.ready(1_000 + 300_000));
        assert!(b.failing());
        b.succeeded();
        assert!(b.ready(0) && !b.failing());
    }
}
