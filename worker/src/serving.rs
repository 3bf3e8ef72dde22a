//! Each tenant's public port: the worker listens on it and forwards every connection to the
//! tenant, which listens on the same port inside its own network namespace.
//!
//! A connection to a sleeping tenant is accepted and held while the tenant is woken, then
//! forwarded: its client sees a slower first answer, never a refusal. A connection that arrives
//! during a swap-out waits for it and for the swap-in that follows (the tenant's gate, see
//! [`TenantSlot::gate`]). Every byte forwarded counts as activity for the idle rule
//! ([`crate::activity`]). Forwarding splices each direction through a pipe (a copy through
//! memory when no pipe can be had).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::RwLockReadGuard;
use tracing::{debug, info, warn};

use crate::activity::Activity;
use crate::error::{Error, Result};
use crate::host::{lock_std, TenantSlot, Worker};
use crate::metrics::Metrics;
use crate::supervisor::Reason;
use crate::tenant::{ClientAddress, TenantState};

/// Listens on `addr:port` for a tenant (non-blocking, `SO_REUSEADDR`, a deep backlog for a
/// burst of connections to a sleeping tenant).
pub(crate) fn bind_public(addr: IpAddr, port: u16) -> std::io::Result<std::net::TcpListener> {
    let addr = SocketAddr::new(addr, port);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Copy buffer per direction of a connection.
const COPY_BUFFER: usize = 64 * 1024;

impl Worker {
    /// Serves the tenant's public port on `listener` until the tenant is removed.
    pub(crate) fn serve(self: &Arc<Self>, slot: &Arc<TenantSlot>, listener: std::net::TcpListener) {
        match listener.try_clone() {
            Ok(kept) => *lock_std(&slot.listening) = Some(kept),
            Err(e) => warn!(tenant = %slot.name, error = %e, "cannot keep the port for a re-exec"),
        }
        let task = tokio::spawn(accept_loop(self.clone(), slot.clone(), listener));
        if let Some(old) = lock_std(&slot.serving).replace(task) {
            old.abort();
        }
    }

    /// A shared lease on a running tenant: wakes it first if it sleeps (retrying a failed
    /// restore until the tenant is `failed`). True with it when this call woke it.
    pub(crate) async fn running_lease<'s>(
        self: &Arc<Self>,
        slot: &'s Arc<TenantSlot>,
    ) -> Result<(RwLockReadGuard<'s, ()>, bool)> {
        let mut woke = false;
        let mut held = None;
        loop {
            let lease = match slot.gate.try_read() {
                Ok(lease) => lease,
                Err(_) => {
                    // A swap is under way: the connection is held until it ends.
                    held.get_or_insert_with(|| Held::new(&self.metrics));
                    slot.gate.read().await
                }
            };
            let (state, failures) = {
                let rt = slot.runtime.lock().await;
                (rt.info.state, rt.info.restore_failures)
            };
            match state {
                TenantState::Running => return Ok((lease, woke)),
                TenantState::SwappedOut => {
                    drop(lease);
                    held.get_or_insert_with(|| Held::new(&self.metrics));
                    match self.wake(slot, Reason::Connection).await {
                        Ok(()) => woke = true,
                        Err(e) if failures + 1 < self.config.max_restore_failures => {
                            warn!(tenant = %slot.name, error = %e, "wake-up failed; trying again");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                state => {
                    return Err(Error::NotRunning {
                        name: slot.name.clone(),
                        state: state.to_string(),
                    })
                }
            }
        }
    }

    /// A connection to the tenant's port inside its namespace, tried again while `deadline`
    /// allows. Held connections are let go together when a tenant wakes: more than its listen
    /// backlog holds (5 for Python's `http.server`) and the kernel drops the extra SYNs, which
    /// the client side would send again only after 1 s, 3 s, 7 s... So an attempt that gets no
    /// answer within [`CONNECT_PATIENCE`] is given up for a fresh one, and a refusal is retried
    /// too (a tenant that is still starting to listen).
    async fn connect_tenant(
        &self,
        slot: &TenantSlot,
        deadline: Instant,
    ) -> std::io::Result<TcpStream> {
        let mut patience = Duration::from_millis(20);
        loop {
            let attempt = tokio::time::timeout(patience, self.connect_tenant_once(slot)).await;
            let error = match attempt {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => e,
                Err(_) => std::io::Error::from(std::io::ErrorKind::TimedOut),
            };
            if Instant::now() + patience >= deadline {
                return Err(error);
            }
            if error.kind() != std::io::ErrorKind::TimedOut {
                tokio::time::sleep(patience).await;
            }
            patience = (patience * 2).min(CONNECT_PATIENCE);
        }
    }

    async fn connect_tenant_once(&self, slot: &TenantSlot) -> std::io::Result<TcpStream> {
        let target = SocketAddr::from(([127, 0, 0, 1], slot.port));
        let Some(ns) = &slot.netns_file else {
            return TcpStream::connect(target).await;
        };
        let fd = self.host_netns.socket_in(ns)?;
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        if slot.client_address == ClientAddress::Link {
            bind_to_link(&socket, slot.port)?;
        }
        socket.connect(target).await
    }
}

/// Binds a socket made in a tenant's namespace to the tenant's end of its link, so that a
/// tenant seeing its clients at its link's addresses (`ClientAddress::Link`) does not see the
/// relay's connections come from its loopback. Without a link (none made yet, or none at all)
/// the address is not there, and the socket stays unbound: from the loopback.
fn bind_to_link(socket: &tokio::net::TcpSocket, port: u16) -> std::io::Result<()> {
    let own_end = crate::kernel_forward::rules::LinkAddrs::of_port(port).tenant;
    match socket.bind(SocketAddr::from((own_end, 0))) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Ok(()),
        bound => bound,
    }
}

/// The longest a connection attempt to a tenant waits for its answer before a fresh one.
const CONNECT_PATIENCE: Duration = Duration::from_millis(100);

/// A client connection held while its tenant is swapped (counted in the metrics while it lives).
struct Held<'m>(&'m Metrics);

impl<'m> Held<'m> {
    fn new(metrics: &'m Metrics) -> Self {
        metrics.held_inc();
        Held(metrics)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held_dec();
    }
}

/// Accepts connections on the tenant's public port, each forwarded on a task of its own.
async fn accept_loop(worker: Arc<Worker>, slot: Arc<TenantSlot>, listener: std::net::TcpListener) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(tenant = %slot.name, error = %e, "cannot serve the public port");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(forward(worker.clone(), slot.clone(), client, peer));
            }
            Err(e) => {
                // Out of descriptors, most likely: the backlog holds the rest meanwhile.
                warn!(tenant = %slot.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Forwards one client connection to the tenant, holding it while the tenant wakes (at most
/// `hold_timeout_ms`), until either side closes or a swap-out closes it.
async fn forward(worker: Arc<Worker>, slot: Arc<TenantSlot>, client: TcpStream, peer: SocketAddr) {
    let accepted = Instant::now();
    let _ = client.set_nodelay(true);
    let (_open, mut closing) = slot.activity.open();
    let hold = Duration::from_millis(worker.config.hold_timeout_ms);
    let (_lease, woke) = match tokio::time::timeout(hold, worker.running_lease(&slot)).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(e)) => {
            warn!(tenant = %slot.name, %peer, error = %e, "connection closed: the tenant cannot serve it");
            return;
        }
        Err(_) => {
            warn!(tenant = %slot.name, %peer, held_ms = hold.as_millis() as u64, "connection closed: held too long");
            return;
        }
    };
    let upstream = match worker.connect_tenant(&slot, accepted + hold).await {
        Ok(s) => s,
        Err(e) => {
            warn!(tenant = %slot.name, %peer, error = %e, "the tenant refused the connection");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if slot.proxy_protocol {
        if let Err(e) = send_proxy_header(&client, &upstream, peer).await {
            warn!(tenant = %slot.name, %peer, error = %e, "connection closed: no PROXY header sent");
            return;
        }
    }
    let first_answer = woke.then_some(accepted);
    tokio::select! {
        _ = pump(client, upstream, first_answer, &worker, &slot) => {}
        _ = closing.changed() => debug!(tenant = %slot.name, %peer, "connection closed for a swap-out"),
    }
}

/// Writes the PROXY protocol v2 header of the connection from `peer` to `client`'s public
/// address on `upstream`, before any byte of the client's.
async fn send_proxy_header(
    client: &TcpStream,
    upstream: &TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    let header = crate::proxy_header::encode(peer, client.local_addr()?);
    let mut written = 0;
    while written < header.len() {
        upstream.writable().await?;
        match upstream.try_write(&header[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies both ways until both directions have ended, touching the tenant's activity at every
/// read. The first bytes of the tenant's answer are told to the slot (a swap-in's fill waits for
/// them); with `woken_at`, they are also reported as the wake-up's latency.
async fn pump(
    client: TcpStream,
    upstream: TcpStream,
    woken_at: Option<Instant>,
    worker: &Worker,
    slot: &TenantSlot,
) {
    let (activity, tenant) = (&slot.activity, slot.name.as_str());
    let mut first = woken_at;
    let mut told = false;
    let answered = move || {
        if !told {
            told = true;
            slot.answered();
        }
        if let Some(at) = first.take() {
            let waited = at.elapsed();
            worker.metrics.wake_observed(waited);
            info!(
                tenant,
                waited_ms = waited.as_millis() as u64,
                "woken tenant answered its client"
            );
        }
    };
    match (Pipe::new(), Pipe::new()) {
        (Ok(up), Ok(down)) => {
            let to_tenant = async {
                let _ = splice_copy(&client, &upstream, &up, activity, || {}).await;
                let _ = socket2::SockRef::from(&upstream).shutdown(std::net::Shutdown::Write);
            };
            let to_client = async {
                let _ = splice_copy(&upstream, &client, &down, activity, answered).await;
                let _ = socket2::SockRef::from(&client).shutdown(std::net::Shutdown::Write);
            };
            tokio::join!(to_tenant, to_client);
        }
        (Err(e), _) | (_, Err(e)) => {
            // Out of descriptors, most likely: a copy through memory still works.
            debug!(tenant, error = %e, "no pipe for splice; copying");
            let (mut client_read, mut client_write) = client.into_split();
            let (mut tenant_read, mut tenant_write) = upstream.into_split();
            let to_tenant = async {
                copy(&mut client_read, &mut tenant_write, activity, || {}).await;
                let _ = tenant_write.shutdown().await;
            };
            let to_client = async {
                copy(&mut tenant_read, &mut client_write, activity, answered).await;
                let _ = client_write.shutdown().await;
            };
            tokio::join!(to_tenant, to_client);
        }
    }
}

/// Capacity asked of each splice pipe (`F_SETPIPE_SZ`; the default is 64 KiB): one call moves
/// up to this much.
const PIPE_SIZE: usize = 256 * 1024;

/// A pipe for splice(2), both ends non-blocking.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let mut fds: [libc::c_int; 2] = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created, and are owned here only.
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        // Best effort: a pipe of the default size works, moving less per call.
        // SAFETY: fcntl on a descriptor we own, with an integer argument.
        unsafe {
            libc::fcntl(
                pipe.write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        Ok(pipe)
    }
}

/// splice(2) of up to `len` bytes from `from` to `to`, without blocking on either.
fn splice(from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
    // SAFETY: splice between two open descriptors, without offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

/// Moves `from` to `to` through `pipe` until EOF or an error, the bytes never copied into the
/// worker (a copy loop read each into a buffer and wrote it out again); `on_data` runs before
/// each write. The pipe is empty between rounds, so a would-block on filling it means `from`
/// has nothing, and one on draining it means `to` is full.
async fn splice_copy(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    activity: &Activity,
    mut on_data: impl FnMut(),
) -> std::io::Result<()> {
    let (pipe_in, pipe_out) = (pipe.write.as_raw_fd(), pipe.read.as_raw_fd());
    loop {
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe_in, PIPE_SIZE)
            })
            .await?;
        if n == 0 {
            return Ok(());
        }
        activity.touch();
        on_data();
        let mut left = n;
        while left > 0 {
            left -= to
                .async_io(Interest::WRITABLE, || {
                    splice(pipe_out, to.as_raw_fd(), left)
                })
                .await?;
        }
    }
}

/// Copies `from` to `to` until EOF or an error; `on_data` runs before each write.
async fn copy(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    activity: &Activity,
    mut on_data: impl FnMut(),
) {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        activity.touch();
        on_data();
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
