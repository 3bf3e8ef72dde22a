//! `pico pager nbd` as an operator runs it: ingest with `pico store ingest`, serve, list with
//! nbdinfo; non-loopback addresses are refused with a message that says why.
// Fixtures and helpers outside #[test] functions may panic on setup failures too.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use testkit::nbd::{has_tool, make_image_dir, run_ok, PicoNbd};

const PICO: &str = env!("CARGO_BIN_EXE_pico");

fn ingest(home: &Path, dir: &Path) -> String {
    let out = run_ok(
        Command::new(PICO)
            .arg("--home")
            .arg(home)
            .args(["store", "ingest", "--tenant", "web"])
            .arg(dir),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("ingest prints the id")
        .trim()
        .to_string()
}

#[test]
fn pico_pager_nbd_serves_every_page_file() {
    if !has_tool("nbdinfo") {
        eprintln!("SKIPPED: nbdinfo not installed (apt-get install libnbd-bin)");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("img");
    make_image_dir(&src, 40);
    let id = ingest(home.path(), &src);
    let server = PicoNbd::start(Path::new(PICO), home.path(), &[&id[..8]]);
    assert_eq!(
        server.exports,
        vec![format!("{id}/pages-1.img"), format!("{id}/pages-2.img")]
    );
    let out = run_ok(Command::new("nbdinfo").arg("--list").arg(server.uri("")));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&format!("{id}/pages-2.img")), "{listing}");
    assert!(listing.contains("is_read_only: true"), "{listing}");

    // One file only, by name.
    let one = PicoNbd::start(
        Path::new(PICO),
        home.path(),
        &[&format!("{id}:pages-2.img")],
    );
    assert_eq!(one.exports, vec![format!("{id}/pages-2.img")]);
    // The default (empty) export name means the only export.
    let out = run_ok(Command::new("nbdinfo").arg("--size").arg(one.uri("")));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12288");
}

#[test]
fn non_loopback_listen_addresses_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(PICO)
        .arg("--home")
        .arg(home.path())
        .args(["pager", "nbd", "--listen", "0.0.0.0:10809", "abcdef"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("TLS"),
        "{err}"
    );
}
