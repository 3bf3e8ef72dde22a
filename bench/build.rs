//! Stamps the commit this binary was built from into the bench crate (`PICO_BUILD_COMMIT`), so a
//! result names the code that made it, not whatever checkout the bench was started from (a
//! saved release build run from a newer checkout was recorded under the newer commit).
//!
//! `-dirty` when tracked files differ from that commit. The script runs again when the commit
//! moves or a file of the checkout changes; "unknown" outside a git checkout (a source tarball).

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
    // Every top-level entry of the checkout but git's and a build's own: what the binary is
    // built from, whatever crates the workspace gains.
    if let Some(root) = git(&["rev-parse", "--show-toplevel"]) {
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with('.') && name != "target" {
                println!("cargo:rerun-if-changed={}", entry.path().display());
            }
        }
    }
}
