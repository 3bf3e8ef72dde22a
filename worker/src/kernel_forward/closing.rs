//! Before a dump: the connections the kernel forwarded to the tenant are closed as the worker
//! closes the ones it relays, with a FIN each way, never a reset. The worker holds no end of
//! them, so it borrows the tenant's own (`pidfd_getfd`: a second descriptor of the socket, as
//! root may take of any process) and shuts it down: the client reads the end of its connection,
//! the tenant too, and closes its side; `quiesce` then waits for that as it does after a relay.
//!
//! Which: every TCP connection the tenant accepted on its port from its loopback or from either
//! end of its link (where the kernel's and the relay's come from, as `tenant::ClientAddress`
//! says; the relay's are being closed by the worker anyway). Its own connections to other
//! ports, and any from other addresses, are left to CRIU.

use std::collections::HashSet;
use std::os::fd::RawFd;

use super::rules::LinkAddrs;
use crate::process::{pidfd_getfd, pidfd_open};

/// Shuts down every TCP connection of the process tree rooted at `root` accepted on the port of
/// `link` from the loopback or the link; how many. Blocking. Best effort: a process that ends meanwhile or a descriptor
/// closed meanwhile is passed over (a connection left open is dumped by CRIU).
pub fn close_forwarded(root: u32, link: &LinkAddrs) -> usize {
    let port = link.port;
    let from_client = |ip: std::net::IpAddr| {
        ip.is_loopback()
            || ip == std::net::IpAddr::V4(link.host)
            || ip == std::net::IpAddr::V4(link.tenant)
    };
    let mut seen = HashSet::new();
    let mut closed = 0;
    for pid in crate::process::descendants(root) {
        let Ok(pidfd) = pidfd_open(pid) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in fds.flatten() {
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
            let fd = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok());
            let (true, Some(fd)) = (is_socket, fd) else {
                continue;
            };
            let Ok(socket) = pidfd_getfd(&pidfd, fd) else {
                continue;
            };
            let sock = socket2::SockRef::from(&socket);
            let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
            let forwarded = sock.r#type().is_ok_and(|t| t == socket2::Type::STREAM)
                && addr(sock.local_addr()).is_some_and(|a| a.port() == port)
                && addr(sock.peer_addr()).is_some_and(|a| from_client(a.ip()));
            let inode = std::fs::metadata(entry.path()).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            });
            if forwarded && inode.is_ok_and(|i| seen.insert(i)) {
                let _ = sock.shutdown(std::net::Shutdown::Both);
                closed += 1;
            }
        }
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn only_connections_accepted_on_the_port_are_closed_and_cleanly() {
        // Our own process stands for the tenant: a connection accepted on its port, and one
        // accepted on another port.
        let served = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = served.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(served.local_addr().unwrap()).unwrap();
        let (_accepted, _) = served.accept().unwrap();
        let elsewhere = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let (_accepted_elsewhere, _) = other.accept().unwrap();

        assert_eq!(
            close_forwarded(std::process::id(), &LinkAddrs::of_port(port)),
            1
        );
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).unwrap(), 0, "a FIN, not a reset");
        elsewhere.set_nonblocking(true).unwrap();
        assert_eq!(
            (&elsewhere).read(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the other connection stays open"
        );
    }
}
