//! Authoritative DNS for the tenant zone.
//!
//! Clients reach a tenant by name (`web.pico.test`) and must land on whichever
//! worker hosts it right now; a sleeping tenant has to be woken before the
//! client connects. Answering DNS ourselves lets the hub do both at resolution
//! time: the lookup may wait for the wake-up, and tiny TTLs keep resolvers from
//! caching a placement that changes when tenants move or sleep.
//!
//! The module only speaks DNS: what a name resolves to comes from [`Names`],
//! which the hub implements from its registry.

mod handler;
mod records;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_server::net::NetError;
use hickory_server::proto::ProtoError;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tracing::info;

use handler::ZoneHandler;
use records::ZoneData;

/// What the zone's names resolve to; the hub implements it from its registry.
pub trait Names: Send + Sync + 'static {
    /// `label` is the tenant name: the lowercased first label of NAME.ZONE
    /// (only names exactly one label below the zone apex are tenants).
    /// May wait (the hub wakes a sleeping tenant and answers once it is
    /// reachable, or after a bound).
    fn resolve(&self, label: &str) -> impl Future<Output = Resolution> + Send;
}

/// The outcome of looking up a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The tenant exists and is reachable at this address.
    Address(IpAddr),
    /// No tenant has this name.
    Unknown,
}

/// The zone this server is authoritative for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Zone apex, e.g. `pico.test.` (a missing trailing dot is added).
    pub origin: String,
    /// This server's own name, the target of the apex NS record.
    pub ns_name: String,
    /// What `ns_name` resolves to (A or AAAA by family).
    pub ns_address: IpAddr,
    /// SOA RNAME, the zone's contact mailbox in name form.
    pub hostmaster: String,
    /// TTL of tenant answers; keep it to a few seconds since placements move.
    pub ttl_s: u32,
}

impl Zone {
    /// A zone with the default `ns.<origin>`, `hostmaster.<origin>` and a 1 s TTL.
    pub fn new(origin: &str, ns_address: IpAddr) -> Self {
        let origin = with_trailing_dot(origin);
        Self {
            ns_name: format!("ns.{origin}"),
            hostmaster: format!("hostmaster.{origin}"),
            origin,
            ns_address,
            ttl_s: DEFAULT_TENANT_TTL_S,
        }
    }
}

/// Why the DNS server could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid domain name {name:?} in the zone configuration")]
    InvalidName {
        name: String,
        #[source]
        source: ProtoError,
    },
    #[error("DNS server stopped: {0}")]
    Server(#[from] NetError),
}

const DEFAULT_TENANT_TTL_S: u32 = 1;
/// Idle TCP connections are closed after this long. hickory starts the clock
/// at each request, so it must exceed the hub's bound on waking a tenant.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Tries at finding a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: u32 = 8;

/// Binds UDP and TCP on the same address; with port 0, on the same free port.
pub async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((udp_socket(addr)?, TcpListener::bind(addr).await?));
    }
    let mut attempt = 1;
    loop {
        let udp = udp_socket(addr)?;
        // The kernel picked a UDP port; its TCP twin may belong to someone else.
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => {
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The UDP socket of the server, with a receive buffer of [`UDP_RECEIVE_BUFFER`]: the kernel's
/// default (~208 KiB) holds a few hundred queries, which a burst fills while the hub waits a few
/// milliseconds for a core (`pico bench dns` lost 3.6% of a paced load so, the hub at 0.65
/// cores). The kernel caps it at `net.core.rmem_max`.
fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Bytes of queries the UDP socket may hold unread.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Answers queries for `zone` on both sockets until `shutdown` completes.
pub async fn serve(
    zone: Zone,
    names: Arc<impl Names>,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DnsError> {
    let zone_data = ZoneData::new(&zone, serial_now())?;
    info!(
        zone = %zone_data.origin,
        udp = ?udp.local_addr().ok(),
        tcp = ?tcp.local_addr().ok(),
        "serving DNS"
    );
    let mut server = Server::new(ZoneHandler::new(zone_data, names));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    tokio::select! {
        stopped = server.block_until_done() => return stopped.map_err(DnsError::from),
        () = shutdown => {}
    }
    server.shutdown_gracefully().await?;
    Ok(())
}

/// SOA serial: the start time, so a restarted hub never goes backwards (in
/// RFC 1982 serial arithmetic, where wrapping at 2^32 is expected).
fn serial_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |since_epoch| since_epoch.as_secs() as u32)
}

fn with_trailing_dot(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}
