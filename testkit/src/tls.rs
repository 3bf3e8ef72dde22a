//! Certificates for tests of TLS, made with the real `openssl` (Debian's): a CA and a server
//! certificate it signed, for 127.0.0.1, as an operator would set up the hub's API.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::nbd::run_ok;

/// Files of a CA and a certificate it signed for 127.0.0.1 and the addresses 10.77.0.0/24
/// hosts of `netlab` use.
pub struct Pki {
    /// The CA's certificate: what clients trust.
    pub ca: PathBuf,
    /// The server's certificate and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA and a server certificate it signs, under `dir` (named `name`-*.pem).
pub fn ca_signed(dir: &Path, name: &str) -> Pki {
    let file = |what: &str| dir.join(format!("{name}-{what}.pem"));
    let (ca, ca_key, csr) = (file("ca"), file("ca-key"), file("csr"));
    let (cert, key) = (file("cert"), file("key"));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} CA"),
            ])
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    );
    run_ok(
        Command::new("openssl")
            .args(["req", "-subj", &format!("/CN={name}")])
            .args(ec)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    let ext = file("ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,IP:10.77.0.2\n",
    )
    .expect("write the extensions file");
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-CAcreateserial", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
    );
    Pki { ca, cert, key }
}
