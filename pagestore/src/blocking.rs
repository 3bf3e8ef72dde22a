//! Running blocking file I/O and CPU-bound work off the async runtime, with the task's panic
//! or cancellation turned into this crate's error; and background work at the lowest CPU
//! priority, so that it never slows what a tenant waits for.

use crate::error::{Error, Result};

/// Runs `f` on tokio's blocking pool and returns its result.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::io("<blocking task>", std::io::Error::other(e))))
}

/// Runs `f` on a thread of its own at the lowest CPU priority (nice 19) and returns its result:
/// for background work (recompression) that may take the machine's idle cycles only.
pub(crate) async fn idle_priority<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pico-background".into())
        .spawn(move || {
            lowest_priority();
            let _ = tx.send(f());
        })
        .map_err(|e| Error::io("<background thread>", e))?;
    rx.await.unwrap_or_else(|_| {
        Err(Error::io(
            "<background thread>",
            std::io::Error::other("it died"),
        ))
    })
}

/// Lowers the calling thread to nice 19 (the default scheduler's lowest priority).
pub(crate) fn lowest_priority() {
    // SAFETY: gettid and setpriority take and return plain integers and touch no memory.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "background thread keeps its priority");
    }
}
