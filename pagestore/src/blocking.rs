//! Running blocking file I/O and CPU-bound work off the async runtime, with the task's panic
//! or cancellation turned into this crate's error; and background work at the lowest CPU
//! priority, so that it never slows what a tenant waits for.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Runs `f` on tokio's blocking pool and returns its result.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::io("<blocking task>", std::io::Error::other(e))))
}

/// The most threads of the background pool. Each range a read has in flight holds one while its
/// pages are decoded, and the read sends its next GET only when a range is done: a pool of one
/// thread per core held a large heap's fill back (its GETs went out later, and the faults that
/// found their pages not yet asked for paid round trips of their own). At nice 19 (weight 15
/// against 1024) these threads together weigh less than half of one thread at normal priority.
const BACKGROUND_THREADS: usize = 32;

/// The threads of background work (see [`background`]), each at the lowest CPU priority. `None`
/// if they could not be started.
static BACKGROUND_POOL: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// Runs `f` on the background pool, whose threads run at the lowest CPU priority (nice 19), and
/// returns its result: for CPU-bound work that may take the machine's idle cycles only and must
/// not take the cores from a restore, its faults and a tenant's first answer: pages fetched
/// ahead of need (a restore's fill, a fault's read-ahead) and recompression. Measured: decoding
/// and checking redis's 28k pages fetched beside its first cold restore took ~130 ms of CPU on
/// two cores while it ran, and each fault the tenant made meanwhile waited its turn
/// (bench/results/restore-background). Without the pool (threads could not start) it runs as
/// [`blocking`] does.
pub(crate) async fn background<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let pool = BACKGROUND_POOL.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(BACKGROUND_THREADS)
            .thread_name("pico-background")
            .on_thread_start(lowest_priority)
            .build()
            .inspect_err(|e| tracing::warn!(error = %e, "no background pool"))
            .ok()
    });
    let Some(pool) = pool else {
        return blocking(f).await;
    };
    pool.spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::io("<background task>", std::io::Error::other(e))))
}

/// Lowers the calling thread to nice 19 (the default scheduler's lowest priority).
pub(crate) fn lowest_priority() {
    // SAFETY: gettid and setpriority take and return plain integers and touch no memory.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "background thread keeps its priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value.
    fn own_nice() -> i32 {
        // SAFETY: getpriority of the calling thread takes and returns plain integers.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[tokio::test]
    async fn work_ahead_of_need_runs_at_the_lowest_priority_and_hands_back_its_result() {
        let here = own_nice();
        let (nice, answer) = background(|| Ok((own_nice(), 42))).await.unwrap();
        assert_eq!((nice, answer), (19, 42));
        assert_eq!(own_nice(), here, "the caller keeps its priority");
        let failed = background(|| -> Result<()> { Err(Error::PageMissing(crate::PageId::ZERO)) })
            .await
            .unwrap_err();
        assert!(matches!(failed, Error::PageMissing(_)), "{failed}");
    }
}
