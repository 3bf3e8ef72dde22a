//! Headless Chromium (Debian `chromium`) for tests of HTML output: the DOM as the browser parsed
//! it, and screenshots. A fresh profile per call, no network features, so runs are independent.

use std::path::Path;
use std::process::Command;

fn chromium(args: &[&str]) -> std::process::Output {
    let profile = tempfile::Builder::new()
        .prefix("chromium-profile-")
        .tempdir()
        .unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("chromium (Debian package `chromium`) must be installed: run deploy/setup.sh");
    assert!(
        out.status.success(),
        "chromium {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The document at `file` after Chromium parsed it (`--dump-dom`).
pub fn dump_dom(file: &Path) -> String {
    let url = format!("file://{}", file.display());
    String::from_utf8_lossy(&chromium(&["--dump-dom", &url]).stdout).to_string()
}

/// A PNG screenshot of `file` into `png`.
pub fn screenshot(file: &Path, png: &Path, width: u32, height: u32) {
    let url = format!("file://{}", file.display());
    chromium(&[
        &format!("--screenshot={}", png.display()),
        &format!("--window-size={width},{height}"),
        &url,
    ]);
}

/// The text of the first element after `from` carrying `data-field="field"`.
pub fn field<'a>(from: &'a str, field: &str) -> Option<&'a str> {
    let marker = format!("data-field=\"{field}\"");
    let at = from.find(&marker)?;
    let rest = &from[at + marker.len()..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    Some(rest[start..end].trim())
}
