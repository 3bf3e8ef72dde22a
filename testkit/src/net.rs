//! Loopback helpers: free ports, waiting for a listener, and minimal HTTP and redis clients.
//! The port and the HTTP client are the benchmarks' (`bench::net`); `curl` is the real one, for
//! what those lack (headers, unix sockets, any status).

use std::net::TcpStream;
use std::time::{Duration, Instant};

pub use bench::net::http_get;

/// A port nobody listens on right now (`bench::net::free_port`; panics if there is none).
pub fn free_port() -> u16 {
    bench::net::free_port().expect("a free loopback port")
}

pub fn is_listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Whether a socket listens on TCP `port` of IPv4 loopback or any address, from
/// `/proc/net/tcp`: without connecting to it (a connection would start a socket-activated
/// service).
pub fn bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let (addr, state) = (fields.nth(1), fields.nth(1));
        state == Some("0A") && addr.is_some_and(|a| local.iter().any(|l| l == a))
    })
}

/// Waits until [`bound`] says `port` listens, at most `limit`.
pub fn wait_bound(port: u16, limit: Duration) -> bool {
    let started = Instant::now();
    while !bound(port) {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn wait_port(port: u16, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if is_listening(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `GET path` of `HTTP/1.0` on the loopback `port`, as [`http_get`], also returning the
/// client's own address (what a server behind a proxy should learn); `None` on any failure.
pub fn http_get_from(port: u16, path: &str) -> Option<(std::net::SocketAddr, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let local = s.local_addr().ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| (local, body.to_string()))
}

/// Runs `redis-cli -p PORT ARGS...` and returns its trimmed stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli (Debian redis-tools) must be installed: run deploy/setup.sh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `curl -sS ARGS...` and returns the answer's status and body (curl must be installed;
/// a status of 0 means no answer at all).
pub fn curl(args: &[&str]) -> (u16, String) {
    curl_run(&mut curl_command(args))
}

/// `curl -sS -w '\n%{http_code}' ARGS...`, not run.
pub(crate) fn curl_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("curl");
    command.args(["-sS", "-w", "\n%{http_code}"]).args(args);
    command
}

/// Runs a [`curl_command`] (or one that runs it): the answer's status and body.
pub(crate) fn curl_run(command: &mut std::process::Command) -> (u16, String) {
    let out = command
        .output()
        .expect("curl must be installed: run deploy/setup.sh");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// Runs `dig @127.0.0.1 -p PORT +norec ARGS...` (bind9-dnsutils, from deploy/setup.sh) and
/// returns its whole output.
pub fn dig(port: u16, args: &[&str]) -> String {
    dig_run(&mut dig_command([127, 0, 0, 1].into(), port, args))
}

/// `dig @SERVER -p PORT +norec +time=5 +tries=1 ARGS...`, not run.
pub(crate) fn dig_command(
    server: std::net::IpAddr,
    port: u16,
    args: &[&str],
) -> std::process::Command {
    let mut command = std::process::Command::new("dig");
    command
        .arg(format!("@{server}"))
        .args(["-p", &port.to_string(), "+norec", "+time=5", "+tries=1"])
        .args(args);
    command
}

/// Runs a [`dig_command`] (or one that runs it): its whole output.
pub(crate) fn dig_run(command: &mut std::process::Command) -> String {
    let out = command
        .output()
        .expect("dig (Debian bind9-dnsutils) must be installed: run deploy/setup.sh");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `nft -f -` on `script` (one nftables transaction; Debian's `nftables`, which
/// `deploy/setup.sh` installs) and returns what it printed; panics with its error if it fails.
pub fn nft(script: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft (Debian nftables) must be installed: run deploy/setup.sh");
    child
        .stdin
        .take()
        .expect("nft's stdin")
        .write_all(script.as_bytes())
        .expect("nft reads its script");
    let out = child.wait_with_output().expect("nft ran");
    assert!(
        out.status.success(),
        "nft -f - failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_bound_without_a_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(bound(port));
        drop(listener);
        assert!(!bound(port));
    }
}
