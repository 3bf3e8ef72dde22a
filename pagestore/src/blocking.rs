//! Running blocking file I/O and CPU-bound work off the async runtime, with the task's panic
//! or cancellation turned into this crate's error.

use crate::error::{Error, Result};

/// Runs `f` on tokio's blocking pool and returns its result.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::io("<blocking task>", std::io::Error::other(e))))
}
