//! The worker's Prometheus metrics, served as `GET /metrics` by the API ([`crate::api`]).
//!
//! Flows record into one [`Metrics`] the [`crate::Worker`] holds, on atomics, never waiting for
//! a lock: swaps (count, failures, duration), wake-ups (to the first byte of the answer),
//! connections held for a sleeping tenant and memory freed. What the worker already knows is
//! read at scrape time instead (`scrape`): its tenants by state and its store's counters. The
//! text format is written by hand (`exposition`); a few families need no client library.

mod exposition;
mod histogram;
mod scrape;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) use exposition::CONTENT_TYPE;
pub(crate) use scrape::render;

use exposition::{Exposition, Kind};
use histogram::Histogram;

/// A swap's direction, as the `op` label of `pico_swap_failures_total` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapOp {
    Out,
    In,
}

impl SwapOp {
    fn label(self) -> &'static str {
        match self {
            SwapOp::Out => "swap-out",
            SwapOp::In => "swap-in",
        }
    }
}

/// What the worker's flows record, since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    swap_outs: AtomicU64,
    swap_ins: AtomicU64,
    swap_out_failures: AtomicU64,
    swap_in_failures: AtomicU64,
    swap_out_seconds: Histogram,
    swap_in_seconds: Histogram,
    wake_seconds: Histogram,
    held_connections: AtomicI64,
    memory_freed_bytes: AtomicU64,
    gc_runs: AtomicU64,
    gc_failures: AtomicU64,
    gc_last_ms: AtomicU64,
    gc_last_freed_bytes: AtomicU64,
    store_last_gc_ms: AtomicU64,
}

impl Metrics {
    /// Starts timing a swap; it counts as failed unless [`SwapTimer::succeeded`] is called.
    pub fn swap_started(&self, op: SwapOp) -> SwapTimer<'_> {
        SwapTimer {
            metrics: self,
            op,
            started: Instant::now(),
            succeeded: false,
        }
    }

    /// A wake-up of a sleeping tenant, from the connection that woke it to the first byte of
    /// its answer forwarded to the client.
    pub fn wake_observed(&self, took: Duration) {
        self.wake_seconds.observe(took);
    }

    /// A client connection is now held for a tenant that is not running yet.
    pub fn held_inc(&self) {
        self.held_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A held connection was handed to its tenant or closed.
    pub fn held_dec(&self) {
        self.held_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// `bytes` of memory given back to the machine (a tenant swapped out).
    pub fn memory_freed(&self, bytes: u64) {
        self.memory_freed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A gc this worker ran ended: `report` when it succeeded.
    pub fn gc_ended(&self, report: Option<&pagestore::gc::GcReport>) {
        let Some(r) = report else {
            self.gc_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.gc_runs.fetch_add(1, Ordering::Relaxed);
        self.gc_last_ms.store(r.elapsed_ms, Ordering::Relaxed);
        self.gc_last_freed_bytes
            .store(r.freed_bytes(), Ordering::Relaxed);
    }

    /// When the store's last gc (by any process) ended, as last read (ms since the epoch).
    pub fn store_gc_seen(&self, finished_ms: u64) {
        self.store_last_gc_ms.store(finished_ms, Ordering::Relaxed);
    }

    fn failures(&self, op: SwapOp) -> &AtomicU64 {
        match op {
            SwapOp::Out => &self.swap_out_failures,
            SwapOp::In => &self.swap_in_failures,
        }
    }

    /// The recorded families, in the exposition format.
    fn write(&self, out: &mut Exposition) {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        out.single(
            "pico_swap_outs_total",
            Kind::Counter,
            "Swap-outs that committed a checkpoint.",
            load(&self.swap_outs),
        );
        out.single(
            "pico_swap_ins_total",
            Kind::Counter,
            "Swap-ins that left the tenant running.",
            load(&self.swap_ins),
        );
        out.by_label(
            "pico_swap_failures_total",
            Kind::Counter,
            "Swaps that failed once begun (a request the tenant's state refused is not counted).",
            "op",
            [SwapOp::Out, SwapOp::In].map(|op| (op.label().to_string(), load(self.failures(op)))),
        );
        out.histogram(
            "pico_swap_out_seconds",
            "Duration of successful swap-outs: dump, ingest and commit.",
            &self.swap_out_seconds.snapshot(),
        );
        out.histogram(
            "pico_swap_in_seconds",
            "Duration of successful swap-ins, until the tenant runs again.",
            &self.swap_in_seconds.snapshot(),
        );
        out.histogram(
            "pico_wake_seconds",
            "Wake-ups of a sleeping tenant by a connection, to the first byte of its answer.",
            &self.wake_seconds.snapshot(),
        );
        out.single(
            "pico_held_connections",
            Kind::Gauge,
            "Client connections held until their tenant runs again.",
            self.held_connections.load(Ordering::Relaxed),
        );
        out.single(
            "pico_memory_freed_bytes_total",
            Kind::Counter,
            "Bytes of memory given back to the machine by swapped-out tenants.",
            load(&self.memory_freed_bytes),
        );
        out.single(
            "pico_gc_runs_total",
            Kind::Counter,
            "Scheduled gcs this worker ran to the end ([gc] every_ms).",
            load(&self.gc_runs),
        );
        out.single(
            "pico_gc_failures_total",
            Kind::Counter,
            "Scheduled gcs this worker began that failed (another gc running is not counted).",
            load(&self.gc_failures),
        );
        out.single(
            "pico_gc_last_seconds",
            Kind::Gauge,
            "Duration of this worker's last successful gc.",
            load(&self.gc_last_ms) as f64 / 1000.0,
        );
        out.single(
            "pico_gc_last_freed_bytes",
            Kind::Gauge,
            "Pack bytes this worker's last successful gc took out of the cold tier.",
            load(&self.gc_last_freed_bytes),
        );
        out.single(
            "pico_store_last_gc_timestamp_seconds",
            Kind::Gauge,
            "When the store's last gc, by any process, ended (as last read; 0: none yet).",
            load(&self.store_last_gc_ms) / 1000,
        );
    }
}

/// One swap being timed (see [`Metrics::swap_started`]); dropped without success, it counts a
/// failure.
#[must_use = "a swap timer dropped at once counts a failure"]
pub struct SwapTimer<'a> {
    metrics: &'a Metrics,
    op: SwapOp,
    started: Instant,
    succeeded: bool,
}

impl SwapTimer<'_> {
    /// The swap is done: counted, with its duration.
    pub fn succeeded(mut self) {
        self.succeeded = true;
        let (count, seconds) = match self.op {
            SwapOp::Out => (&self.metrics.swap_outs, &self.metrics.swap_out_seconds),
            SwapOp::In => (&self.metrics.swap_ins, &self.metrics.swap_in_seconds),
        };
        count.fetch_add(1, Ordering::Relaxed);
        seconds.observe(self.started.elapsed());
    }
}

impl Drop for SwapTimer<'_> {
    fn drop(&mut self) {
        if !self.succeeded {
            self.metrics
                .failures(self.op)
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut out = Exposition::default();
        m.write(&mut out);
        out.into_text()
    }

    #[test]
    fn swaps_count_successes_failures_and_durations() {
        let m = Metrics::default();
        m.swap_started(SwapOp::Out).succeeded();
        m.swap_started(SwapOp::Out).succeeded();
        m.swap_started(SwapOp::In).succeeded();
        drop(m.swap_started(SwapOp::In));
        let t = text(&m);
        assert!(t.contains("\npico_swap_outs_total 2\n"), "{t}");
        assert!(t.contains("\npico_swap_ins_total 1\n"), "{t}");
        assert!(
            t.contains("\npico_swap_failures_total{op=\"swap-in\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("\npico_swap_failures_total{op=\"swap-out\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("\npico_swap_out_seconds_count 2\n"), "{t}");
        assert!(t.contains("\npico_swap_in_seconds_count 1\n"), "{t}");
    }

    #[test]
    fn held_connections_wakes_and_freed_memory() {
        let m = Metrics::default();
        m.held_inc();
        m.held_inc();
        m.held_dec();
        m.wake_observed(Duration::from_millis(40));
        m.memory_freed(4096);
        let t = text(&m);
        assert!(t.contains("\npico_held_connections 1\n"), "{t}");
        assert!(
            t.contains("\npico_wake_seconds_bucket{le=\"0.05\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("\npico_wake_seconds_bucket{le=\"0.025\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("\npico_memory_freed_bytes_total 4096\n"), "{t}");
    }

    #[test]
    fn gcs_count_and_their_last_figures() {
        let m = Metrics::default();
        m.gc_ended(None);
        m.gc_ended(Some(&pagestore::gc::GcReport {
            elapsed_ms: 1500,
            pack_bytes_before: 10_000,
            pack_bytes_after: 4_000,
            ..Default::default()
        }));
        m.store_gc_seen(1_700_000_000_123);
        let t = text(&m);
        assert!(t.contains("\npico_gc_runs_total 1\n"), "{t}");
        assert!(t.contains("\npico_gc_failures_total 1\n"), "{t}");
        assert!(t.contains("\npico_gc_last_seconds 1.5\n"), "{t}");
        assert!(t.contains("\npico_gc_last_freed_bytes 6000\n"), "{t}");
        assert!(
            t.contains("\npico_store_last_gc_timestamp_seconds 1700000000\n"),
            "{t}"
        );
    }

    #[test]
    fn every_family_is_typed_once() {
        let t = text(&Metrics::default());
        for family in [
            "pico_swap_outs_total counter",
            "pico_swap_failures_total counter",
            "pico_swap_in_seconds histogram",
            "pico_wake_seconds histogram",
            "pico_held_connections gauge",
            "pico_gc_runs_total counter",
            "pico_store_last_gc_timestamp_seconds gauge",
        ] {
            assert_eq!(t.matches(&format!("# TYPE {family}\n")).count(), 1, "{t}");
        }
    }
}
