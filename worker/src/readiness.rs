//! When a tenant counts as started: something listens on its port. The probe is careful not to
//! leave a connection behind, since CRIU refuses to dump a tenant with one in its listen queue.

use std::time::Duration;

/// True when something listens on loopback `port`. The probe's connection is then half-closed
/// and read until the tenant closes it too (at most `linger`): a connection left unaccepted in
/// the tenant's listen queue would make CRIU refuse the next dump ("In-flight connection (l)"),
/// and tests and the bench dump right after a tenant starts. Blocking.
pub fn listens(port: u16, linger: Duration) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(linger));
    let mut buf = [0u8; 512];
    // Until EOF (closed: it was accepted), an error or the timeout; a banner is read past.
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    true
}

/// Whether a tenant listens on `port` (see [`listens`]: the probe leaves no connection in its
/// listen queue).
pub(crate) async fn probe_port(port: u16) -> bool {
    tokio::task::spawn_blocking(move || listens(port, PROBE_LINGER))
        .await
        .unwrap_or(false)
}

/// [`listens`] for a tenant in the network namespace `ns`: the probe's socket is made inside
/// it and connects to its loopback. Blocking.
pub(crate) fn listens_in(
    host: &crate::netns::HostNetns,
    ns: &std::fs::File,
    port: u16,
    linger: Duration,
) -> bool {
    use std::io::Read;
    let Ok(fd) = host.socket_in(ns) else {
        return false;
    };
    let socket = socket2::Socket::from(fd);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    if socket.set_nonblocking(false).is_err() || socket.connect(&addr.into()).is_err() {
        return false;
    }
    let mut stream = std::net::TcpStream::from(socket);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(linger));
    let mut buf = [0u8; 512];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    true
}

/// Whether the tenant of `slot` listens on its port, inside its namespace (on the host for a
/// tenant without one).
pub(crate) async fn probe_tenant(
    worker: &std::sync::Arc<crate::host::Worker>,
    slot: &std::sync::Arc<crate::host::TenantSlot>,
) -> bool {
    if slot.netns_file.is_none() {
        return probe_port(slot.port).await;
    }
    let (worker, slot) = (worker.clone(), slot.clone());
    tokio::task::spawn_blocking(move || match &slot.netns_file {
        Some(ns) => listens_in(&worker.host_netns, ns, slot.port, PROBE_LINGER),
        None => false,
    })
    .await
    .unwrap_or(false)
}

/// How long a readiness probe waits for the tenant to close its connection.
const PROBE_LINGER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_waits_until_the_tenant_has_taken_its_connection() {
        use std::time::{Duration, Instant};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Before the server's sleep begins, so that a test thread slow to run after the spawn
        // (a loaded machine) cannot make the wait look shorter than the sleep.
        let started = Instant::now();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let (conn, _) = listener.accept().unwrap();
            drop(conn);
            listener
        });
        assert!(listens(port, Duration::from_secs(5)));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_secs(5),
            "returned after {waited:?}: before the accept, or only at the limit"
        );
        // Nothing of the probe is left in the listen queue.
        let listener = server.join().unwrap();
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err());
        drop(listener);
        assert!(
            !listens(port, Duration::from_secs(1)),
            "nobody listens any more"
        );
    }
}
