//! The worker's own gc on a schedule (`[gc] every_ms`), beside real swaps of a real tenant:
//! every swap succeeds and the tenant's state survives, the gc runs (its metrics say so), and
//! the store verifies from another process afterwards.

use std::time::{Duration, Instant};

use testkit::net::http_get;

#[test]
fn the_worker_runs_gc_on_its_schedule_beside_swaps() {
    let _serial = testkit::criu_lock();
    let p = super::pico();
    // Every swap-out drops the checkpoint before (retention), so each gc has dead pages to go.
    p.write_config("[gc]\nevery_ms = 1000\n[retention]\nkeep_last = 1\nkeep_daily = 0\n");
    let _worker = p.start_worker();
    let port = super::add_counter(&p, "counter");
    let started = Instant::now();
    let mut n = 0;
    while n < 6 || p.metric("pico_gc_runs_total") < 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no 2 gcs in 2 minutes:\n{}",
            p.worker_log()
        );
        n += 1;
        assert_eq!(http_get(port, "/inc").unwrap(), n.to_string());
        p.ok(&["tenant", "swap-out", "counter"]);
        p.ok(&["tenant", "swap-in", "counter"]);
    }
    assert_eq!(p.metric("pico_gc_failures_total"), 0.0);
    assert_eq!(p.metric("pico_swap_failures_total{op=\"swap-out\"}"), 0.0);
    assert!(p.metric("pico_store_last_gc_timestamp_seconds") > 0.0);
    assert!(
        p.worker_log().contains("scheduled gc done"),
        "{}",
        p.worker_log()
    );
    // From another process, beside the worker: the store is whole.
    let verify = p.run(&["store", "verify"]);
    let (out, err) = (
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr),
    );
    assert!(out.contains("all well"), "{out}");
    // Its stderr is a pipe here: no progress bar is drawn into it.
    assert!(
        !err.contains("packs [") && !err.contains("checkpoints ["),
        "{err}"
    );
    assert_eq!(http_get(port, "/inc").unwrap(), (n + 1).to_string());
}
