//! When the worker tries again what failed and will likely work later: a tenant's swap-out that
//! could not commit (a cold tier down, a full disk), a tenant's link that could not be made.
//! Kept per tenant, consulted by the supervisor before it tries on its own.

use std::time::Duration;

/// When a failed attempt is tried again: after a first wait (5 s by default, the swap-out's),
/// then twice as long each time, at most 5 minutes; forgotten at the first that succeeds.
#[derive(Debug)]
pub(crate) struct Backoff {
    first_ms: u64,
    failures: u32,
    retry_at_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::first_after(Duration::from_millis(Self::SWAP_OUT_FIRST_MS))
    }
}

impl Backoff {
    const SWAP_OUT_FIRST_MS: u64 = 5_000;
    const MOST_MS: u64 = 300_000;

    /// A backoff whose first wait is `first`.
    pub(crate) fn first_after(first: Duration) -> Backoff {
        Backoff {
            first_ms: first.as_millis() as u64,
            failures: 0,
            retry_at_ms: 0,
        }
    }

    /// An attempt failed at `now_ms`: how long until the next try.
    pub(crate) fn failed(&mut self, now_ms: u64) -> Duration {
        let wait = self
            .first_ms
            .saturating_mul(1u64 << self.failures.min(16))
            .min(Self::MOST_MS);
        self.failures = self.failures.saturating_add(1);
        self.retry_at_ms = now_ms + wait;
        Duration::from_millis(wait)
    }

    pub(crate) fn succeeded(&mut self) {
        *self = Backoff::first_after(Duration::from_millis(self.first_ms));
    }

    /// Whether the worker may try again at `now_ms`.
    pub(crate) fn ready(&self, now_ms: u64) -> bool {
        now_ms >= self.retry_at_ms
    }

    /// Whether the last attempt failed.
    pub(crate) fn failing(&self) -> bool {
        self.failures > 0
    }

    /// Attempts that failed in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
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

    #[test]
    fn a_backoff_may_start_sooner_and_still_stops_at_five_minutes() {
        let mut b = Backoff::first_after(std::time::Duration::from_secs(1));
        let waits: Vec<u64> = (0..12).map(|_| b.failed(0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(b.failures(), 12);
        for _ in 0..100 {
            b.failed(0);
        }
        assert_eq!(b.failed(0).as_secs(), 300, "no overflow");
        b.succeeded();
        assert_eq!(b.failed(0).as_secs(), 1, "starts over at its first wait");
    }
}
