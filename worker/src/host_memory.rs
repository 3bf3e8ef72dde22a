//! The host's memory as the pressure rule reads it (`MemAvailable` and PSI), and what the worker
//! gives back to it.

/// `MemAvailable` of `/proc/meminfo`, bytes.
pub(crate) fn available() -> Option<u64> {
    meminfo_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

/// `some avg10` of `/proc/pressure/memory` (percent of the last 10 s in which some task waited
/// for memory); `None` where the kernel has no PSI.
pub(crate) fn pressure_some_avg10() -> Option<f64> {
    psi_some_avg10(&std::fs::read_to_string("/proc/pressure/memory").ok()?)
}

/// Hands the worker's freed heap back to the host. A swap-out's ingest frees its buffers, but
/// glibc keeps freed memory in its arenas (once a large block was freed, its mmap threshold
/// rises and later large blocks come from the arenas too): measured here, a 200 MiB swap-out
/// left the worker 200 MiB larger, 85 MiB after a trim. Blocking; takes milliseconds.
pub(crate) fn give_back() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a pad size and touches only the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's malloc arenas at one per core (at least 2; glibc's default is 8 per core): each
/// thread that allocates may get an arena of its own, and what an arena keeps after its blocks
/// are freed stays with the worker. Measured here, a worker after one 200 MiB swap-out: 80-106
/// MiB of heap with the default, 52 MiB with 2 arenas. Call before the threads that allocate
/// the most (ingest, recompression) start.
pub(crate) fn fewer_arenas() {
    #[cfg(target_env = "gnu")]
    {
        let cores = std::thread::available_parallelism()
            .map_or(2, usize::from)
            .max(2);
        // SAFETY: mallopt takes two integers and changes only the allocator's settings.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores as libc::c_int);
        }
    }
}

/// A `kB` field of meminfo text, in bytes.
pub(crate) fn meminfo_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib << 10)
}

fn psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// Resident memory of process `pid` (`VmRSS`), bytes.
pub(crate) fn rss(pid: u32) -> Option<u64> {
    meminfo_field(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_psi_are_read() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:    1000 kB\n";
        assert_eq!(meminfo_field(text, "MemAvailable:"), Some(1000 << 10));
        assert_eq!(meminfo_field(text, "Nope:"), None);
        let psi = "some avg10=1.50 avg60=0.20 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(psi_some_avg10(psi), Some(1.5));
        assert!(available().is_some_and(|a| a > 0));
        assert!(rss(std::process::id()).is_some_and(|r| r > 0));
    }
}
