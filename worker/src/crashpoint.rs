//! Named points where a test may have the worker killed (`PICO_CRASH_AT=point[,point]`), as a
//! `kill -9` would at that moment: the registry must hold up across each.
//!
//! Points: `swap-out:registry-saved` (before the dump), `swap-out:dumped` (before the ingest),
//! `swap-out:committed` (manifest durable, registry not yet), `swap-out:recorded` (registry
//! saved, staging not yet deleted), `swap-in:registry-saved` (before the restore),
//! `swap-in:restored` (tenant running, registry not yet), `swap-in:recorded`, `swap-in:filling`
//! (a lazy restore's pages still arriving).

use std::sync::OnceLock;

/// Kills this process with SIGKILL if `point` is one of `PICO_CRASH_AT`'s.
pub(crate) fn hit(point: &str) {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    let points = POINTS.get_or_init(|| {
        std::env::var("PICO_CRASH_AT")
            .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default()
    });
    if points.iter().any(|p| p == point) {
        tracing::error!(point, "PICO_CRASH_AT: killing the worker here");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}
