//! Shared test helpers, in one place: temporary `pico` homes, a worker daemon that cleans up
//! after itself, free loopback ports, tiny HTTP and redis clients, synthetic image directories,
//! hosts in network namespaces and a guide's shell steps run on them (`netlab`, `guide`),
//! systemd's side of a unit (`systemd`) and the Debian package (`package`). Tests that need root
//! or real tools say so loudly; none skips silently.
#![allow(clippy::unwrap_used)]

pub mod browser;
pub mod fixture;
pub mod garage;
pub mod guide;
pub mod image;
pub mod manifest;
pub mod nbd;
pub mod net;
pub mod netlab;
pub mod package;
pub mod pico;
pub mod process;
pub mod synth;
pub mod systemd;
pub mod tls;

/// Panics with a clear message unless running as root (CRIU, FUSE and mounts need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (CRIU, FUSE); run it as root, e.g. via deploy/test.sh"
    );
}

/// The repository root (for deploy/apps and scripts).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Serialises tests that drive CRIU inside one test binary (CRIU's network lock and pid
/// restoration are machine-wide). nextest runs the e2e binary in its own serial group too.
pub fn criu_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
