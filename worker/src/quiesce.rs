//! Before a dump: the tenant's side of the connections the worker just closed must be gone too.
//!
//! The worker closes its forwarded connections first (an active close: its own sockets end in
//! `TIME_WAIT`, which belongs to no process). The tenant then sees EOF and closes its end. Until
//! it has, its socket is in `CLOSE_WAIT` and CRIU would have to dump a half-closed connection, or
//! refuse; so a swap-out waits, briefly, until the tenant's namespace holds nothing but
//! listeners and `TIME_WAIT`.
//!
//! **Only after recent connections.** Each look reads `/proc/PID/net/tcp` and `tcp6`, and the
//! kernel walks its whole established hash for each (shared by every namespace: 262144 buckets
//! on this 24 GiB host, ~3.7 ms of CPU per table, ~12 ms per swap-out measured under `perf`, a
//! tenth of a swap-out's CPU). An idle swap-out (the common one) follows the tenant's last
//! connection by its idle timeout: when no connection is open and the last closed longer ago
//! than the wait this module would allow, the tenant has had that wait already, and the tables
//! are not read.

use std::time::{Duration, Instant};

use crate::host::TenantSlot;

/// How long a swap-out waits for the tenant to close its side.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// Waits until no TCP socket in the tenant's namespace is in a state other than listening or
/// `TIME_WAIT`/`CLOSE`, at most [`SETTLE_LIMIT`] (then the dump goes ahead and CRIU judges).
/// `closed_now`: connections the worker closed itself just before (the kernel forwarded them, so
/// the activity does not show them).
pub(crate) async fn settle(slot: &TenantSlot, closed_now: bool) {
    let activity = &slot.activity;
    let (open, now_ms) = (activity.open_connections(), pagestore::clock::now_ms());
    if !closed_now && settled_long_ago(open, activity.last_ms(), now_ms) {
        return;
    }
    let Some(pid) = slot.runtime.lock().await.info.pid else {
        return;
    };
    let started = Instant::now();
    while started.elapsed() < SETTLE_LIMIT {
        if !has_live_connections(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::warn!(tenant = %slot.name, "the tenant kept connections open; dumping them");
}

/// Whether a tenant with `open` connections forwarded, the last byte or close at `last_ms`, has
/// had [`SETTLE_LIMIT`] since (nothing to wait for that [`settle`] would wait for).
fn settled_long_ago(open: usize, last_ms: u64, now_ms: u64) -> bool {
    open == 0 && now_ms.saturating_sub(last_ms) >= SETTLE_LIMIT.as_millis() as u64
}

/// Whether the network namespace of `pid` holds a TCP socket that is neither listening nor
/// closed.
fn has_live_connections(pid: u32) -> bool {
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .map(|text| live_in(&text))
            .unwrap_or(false)
    })
}

/// Whether a `/proc/net/tcp` table lists a connection in a live state (its 4th column: `0A`
/// listen, `06` time-wait and `07` close are not).
fn live_in(table: &str) -> bool {
    table.lines().skip(1).any(|line| {
        line.split_whitespace()
            .nth(3)
            .is_some_and(|st| !matches!(st, "0A" | "06" | "07"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listeners_and_time_wait_are_settled() {
        let head = "  sl  local_address rem_address   st tx_queue rx_queue\n";
        let listen = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n";
        let time_wait = "   1: 0100007F:1F90 0100007F:D431 06 00000000:00000000\n";
        let close_wait = "   2: 0100007F:1F90 0100007F:D432 08 00000000:00000000\n";
        assert!(!live_in(&format!("{head}{listen}{time_wait}")));
        assert!(live_in(&format!("{head}{listen}{close_wait}")));
        assert!(!has_live_connections(u32::MAX));
    }

    #[test]
    fn the_tables_are_read_only_after_a_connection_open_or_closed_within_the_wait() {
        let limit = SETTLE_LIMIT.as_millis() as u64;
        let now = 100 * limit;
        assert!(settled_long_ago(0, now - limit, now), "idle for the wait");
        assert!(settled_long_ago(0, 0, now));
        assert!(
            !settled_long_ago(0, now - limit + 1, now),
            "closed within the wait"
        );
        assert!(!settled_long_ago(1, 0, now), "one still open");
        assert!(!settled_long_ago(0, now + 5, now), "a clock step back");
    }
}
