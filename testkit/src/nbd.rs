//! Helpers for NBD tests: a synthetic CRIU-like image directory with runs of zero and data pages,
//! ingesting it, starting `pico pager nbd` on a free loopback port, and running Debian's NBD
//! clients (nbdinfo, nbdcopy, nbdsh, qemu-img, qemu-io).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub use bench::synth::{data_page, is_zero_page, zero_run_page_file as page_file};

/// Writes a CRIU-like image directory: `pages-1.img` of `pages` pages, a small `pages-2.img`,
/// and small inline files. Returns the bytes of `pages-1.img`.
pub fn make_image_dir(dir: &Path, pages: usize) -> Vec<u8> {
    bench::synth::zero_run_image_dir(dir, pages).expect("write the image dir")
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
            let export = line
                .strip_prefix("export nbd://")
                .or_else(|| line.strip_prefix("export nbds://"));
            if let Some(rest) = export {
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

/// Makes a self-signed certificate for 127.0.0.1 with openssl in `dir`: returns the paths of
/// the certificate and key; `dir/pki/ca-cert.pem` is the same certificate, laid out the way
/// libnbd's `tls-certificates=DIR` wants it.
pub fn self_signed_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    std::fs::create_dir_all(dir.join("pki")).expect("mkdir pki");
    std::fs::copy(&cert, dir.join("pki/ca-cert.pem")).expect("copy ca-cert.pem");
    (cert, key)
}

/// Whether a client program is installed (tests that need one fail without it: never a skip).
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
