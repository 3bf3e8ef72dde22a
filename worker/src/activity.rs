//! A tenant's traffic as its idle rule sees it: how many connections are open, when a byte
//! last crossed one, and a signal that closes them all before a dump.
//!
//! Idle means no byte in either direction for the tenant's idle timeout; an open connection that
//! carries nothing (an idle keep-alive) does not keep a tenant awake, and is closed cleanly by
//! the worker before the dump (CRIU would otherwise have to dump it, and the client's next
//! request would find a tenant that is gone).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::watch;

/// The connections of one tenant.
pub(crate) struct Activity {
    open: AtomicUsize,
    last_ms: AtomicU64,
    /// Bumped to close every connection forwarded so far.
    closing: watch::Sender<u64>,
}

impl Activity {
    /// No connection, last active at `last_ms` (Unix ms).
    pub(crate) fn new(last_ms: u64) -> Activity {
        Activity {
            open: AtomicUsize::new(0),
            last_ms: AtomicU64::new(last_ms),
            closing: watch::Sender::new(0),
        }
    }

    /// A byte crossed (or a connection opened or closed) now.
    pub(crate) fn touch(&self) {
        self.last_ms
            .store(pagestore::clock::now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    /// Connections being forwarded now.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Idle for `timeout_ms` at `now_ms`: nothing crossed since.
    pub(crate) fn idle_at(&self, now_ms: u64, timeout_ms: u64) -> bool {
        timeout_ms > 0 && now_ms.saturating_sub(self.last_ms()) >= timeout_ms
    }

    /// Counts a connection open until the guard drops; its receiver fires when [`close_all`]
    /// is called.
    ///
    /// [`close_all`]: Activity::close_all
    pub(crate) fn open(&self) -> (OpenConnection<'_>, watch::Receiver<u64>) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.touch();
        (OpenConnection(self), self.closing.subscribe())
    }

    /// Asks every connection forwarded so far to close.
    pub(crate) fn close_all(&self) {
        self.closing.send_modify(|n| *n += 1);
    }
}

/// One open connection of a tenant.
pub(crate) struct OpenConnection<'a>(&'a Activity);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_counts_from_the_last_byte_and_connections_are_counted() {
        let a = Activity::new(1_000);
        assert!(!a.idle_at(1_500, 1_000));
        assert!(a.idle_at(2_000, 1_000));
        assert!(!a.idle_at(10_000, 0), "0 is never");
        let (conn, closed) = a.open();
        assert_eq!(a.open_connections(), 1);
        assert!(a.last_ms() > 2_000, "opening touches");
        a.close_all();
        assert!(closed.has_changed().unwrap());
        drop(conn);
        assert_eq!(a.open_connections(), 0);
    }
}
