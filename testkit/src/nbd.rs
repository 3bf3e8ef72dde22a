//! Helpers for NBD tests: a synthetic CRIU-like image directory with runs of zero and data pages,
//! ingesting it, starting `pico pager nbd` on a free loopback port, and running Debian's NBD
//! clients (nbdinfo, nbdcopy, nbdsh, qemu-img, qemu-io).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use pagestore::PAGE_SIZE;

/// Whether page `i` of a synthetic page file is all zeros: runs of data and zero pages of varied
/// lengths, like the stacks and heaps of a real dump.
pub fn is_zero_page(i: usize) -> bool {
    matches!(i % 16, 3 | 4 | 5 | 9) || (i / 64) % 4 == 3
}

/// The bytes of data page `i` (pseudo-random, and some repeat to exercise dedup).
pub fn data_page(i: usize) -> Vec<u8> {
    let seed = if i.is_multiple_of(13) {
        1
    } else {
        i as u64 + 1
    };
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut page = vec![0u8; PAGE_SIZE];
    for chunk in page.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    // Mostly-text tail, compressible like real heap data.
    page[2048..3072].fill(b'a' + (i % 26) as u8);
    page
}

/// A synthetic page file of `pages` pages.
pub fn page_file(pages: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages * PAGE_SIZE);
    for i in 0..pages {
        if is_zero_page(i) {
            out.extend_from_slice(&[0u8; PAGE_SIZE]);
        } else {
            out.extend_from_slice(&data_page(i));
        }
    }
    out
}

/// Writes a CRIU-like image directory: `pages-1.img` of `pages` pages, a small `pages-2.img`,
/// and small inline files. Returns the bytes of `pages-1.img`.
pub fn make_image_dir(dir: &Path, pages: usize) -> Vec<u8> {
    std::fs::create_dir_all(dir).expect("create image dir");
    let data = page_file(pages);
    std::fs::write(dir.join("pages-1.img"), &data).expect("write pages-1.img");
    std::fs::write(dir.join("pages-2.img"), page_file(3)).expect("write pages-2.img");
    std::fs::write(dir.join("pagemap-1.img"), b"\x19\x43\x56\x54pagemap").expect("write pagemap");
    std::fs::write(dir.join("core-1.img"), b"core").expect("write core");
    data
}

/// A running `pico pager nbd`; killed on drop.
pub struct PicoNbd {
    child: Child,
    pub addr: SocketAddr,
    /// Export names as the server printed them.
    pub exports: Vec<String>,
}

impl PicoNbd {
    /// Starts `pico --home HOME pager nbd --listen 127.0.0.1:0 ARGS...` and waits until it listens.
    pub fn start(pico: &Path, home: &Path, args: &[&str]) -> PicoNbd {
        let mut child = Command::new(pico)
            .arg("--home")
            .arg(home)
            .args(["pager", "nbd", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pico pager nbd");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut exports = Vec::new();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("read pico stderr");
            eprintln!("pico: {line}");
            if let Some(rest) = line.strip_prefix("export nbd://") {
                let (a, name) = rest.split_once('/').expect("export line has a name");
                addr = Some(a.parse().expect("export line has an address"));
                exports.push(name.to_string());
            }
            if line.starts_with("serving ") {
                break;
            }
        }
        let addr = addr.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("pico pager nbd did not start (see its output above)")
        });
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("pico: {line}");
            }
        });
        PicoNbd {
            child,
            addr,
            exports,
        }
    }

    pub fn uri(&self, export: &str) -> String {
        uri(self.addr, export)
    }
}

impl Drop for PicoNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The NBD URI of an export (libnbd and qemu both take `nbd://HOST:PORT/NAME`).
pub fn uri(addr: SocketAddr, export: &str) -> String {
    format!("nbd://{addr}/{export}")
}

/// Whether a client program is installed (tests that need it are skipped, loudly, otherwise).
pub fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a command and returns its output, panicking with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
