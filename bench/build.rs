//! Stamps the commit this binary was built from into the bench crate (`PICO_BUILD_COMMIT`), so a
//! result names the code that made it, not whatever checkout the bench was started from (a
//! saved release build run from a newer checkout was recorded under the newer commit).
//!
//! `-dirty` when tracked files differ from that commit. The script runs again when the commit
//! moves or a source of the binary changes; "unknown" outside a git checkout (a source tarball).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            }
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=PICO_BUILD_COMMIT={commit}");
    // A new commit or checkout moves the worktree's HEAD log; an edit moves a source's mtime.
    if let Some(log) = git(&["rev-parse", "--git-path", "logs/HEAD"]) {
        println!("cargo:rerun-if-changed={log}");
    }
    if let Some(root) = git(&["rev-parse", "--show-toplevel"]) {
        let root = Path::new(&root);
        for source in [
            "Cargo.toml",
            "Cargo.lock",
            "src",
            "pagestore/src",
            "criu-image/src",
            "pager/src",
            "worker/src",
            "hub/src",
            "bench/src",
            "charts/src",
        ] {
            println!("cargo:rerun-if-changed={}", root.join(source).display());
        }
    }
}
