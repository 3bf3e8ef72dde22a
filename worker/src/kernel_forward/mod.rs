//! While a tenant runs, the kernel forwards its public port, not the worker.
//!
//! The worker's relay (`serving`) costs every connection an accept, a second TCP connection into
//! the tenant's namespace and a copy each way: +146 µs a new connection and 0.59x the throughput of
//! a direct one on this 2-core host (bench/results/forward). So each tenant gets a link, a veth
//! pair from the host into its namespace ([`link`]), and while it runs the kernel sends its port
//! into the link: by the worker's nftables table mapping the port to the link (DNAT into it, and in
//! the tenant's namespace to its loopback: the NAT path, the default; [`rules`], its elements
//! changed over [`netlink`]), or by a routing rule for the port, no address rewritten ([`routing`],
//! for a loopback listen address, where the configuration asks). The tenant sees its clients at the
//! link's host end, or at 127.0.0.1 if its spec asks (`tenant::ClientAddress`). The worker's
//! listener keeps the port and gets what the kernel does not take: every connection while the
//! tenant sleeps, is being swapped or is still being filled in after a lazy restore, which it
//! holds, wakes the tenant for and relays as before.
//!
//! What the worker gives up is seeing the bytes: a tenant's activity is read off its link's packet
//! counters at each supervisor tick instead ([`reconcile`]), and a swap-out takes the port back
//! before it closes the connections the kernel forwarded ([`closing`]). Tenants with the PROXY
//! protocol stay relayed (the worker writes the header), and so does everything when the listen
//! address is IPv6, the table cannot be made (no `nft`), or `kernel_forwarding = false`.

mod closing;
mod link;
pub mod netlink;
mod routing;
pub mod rules;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::{ForwardPath, WorkerConfig};
use crate::error::{Error, Result};
use crate::host::{lock_std, TenantSlot, Worker};
use crate::tenant::TenantState;
use routing::Routing;
use rules::LinkAddrs;

/// The worker's nftables table, made at its start.
pub(crate) struct KernelForward {
    table: String,
    /// Admissions and withdrawals the ticks started, a few at once: after a restart every
    /// running tenant is admitted again, and a thousand links made at once (`ip` and `nft`
    /// processes) would stall the host.
    changes: tokio::sync::Semaphore,
    /// The routed path, when the worker takes it (else admission is an element of the table's
    /// port map: the NAT path).
    routing: Option<Routing>,
}

/// Admissions and withdrawals at once (one that makes a link runs `ip` and `nft`, ~10 ms of CPU).
const CHANGES_AT_ONCE: usize = 4;

impl KernelForward {
    /// Makes the worker's table (replacing the one a previous worker of this home left), or
    /// says why the worker relays every connection instead.
    pub(crate) async fn start(config: &WorkerConfig) -> Option<KernelForward> {
        if !config.kernel_forwarding {
            return None;
        }
        let listen = config.listen_addr;
        if listen.is_ipv6() && !listen.is_unspecified() {
            info!(%listen, "an IPv6 listen address: the worker relays every connection");
            return None;
        }
        // Clients of other hosts cross the host's routing into the link: only with forwarding on.
        let remote = !listen.is_loopback() && ipv4_forwarding();
        if !listen.is_loopback() && !remote {
            info!(
                "net.ipv4.ip_forward is off: the kernel forwards this host's own clients, the \
                 worker relays those of other hosts"
            );
        }
        let listen = if listen.is_ipv6() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            listen
        };
        let table = rules::table_name(&config.tenants_dir, listen);
        sweep_stale_tables(&table).await;
        let routing = match config.kernel_forward_path {
            ForwardPath::Routed => start_routing(listen).await,
            ForwardPath::Nat => None,
        };
        match nft(&rules::host_table(
            &table,
            listen,
            remote,
            std::process::id(),
        ))
        .await
        {
            Ok(_) => {
                let path = if routing.is_some() { "routed" } else { "nat" };
                info!(table, path, "the kernel forwards running tenants' ports");
                Some(KernelForward {
                    table,
                    changes: tokio::sync::Semaphore::new(CHANGES_AT_ONCE),
                    routing,
                })
            }
            Err(e) => {
                warn!(error = %e, "no nftables table: the worker relays every connection");
                None
            }
        }
    }

    /// Which path its links are made for.
    fn link_path(&self) -> ForwardPath {
        match self.routing {
            Some(_) => ForwardPath::Routed,
            None => ForwardPath::Nat,
        }
    }

    /// Sends the port of `a` to its link: a rule on the routed path, an element of the map on
    /// the NAT path.
    async fn admit_port(&self, a: LinkAddrs) -> std::io::Result<()> {
        match self.routing {
            Some(routing) => blocking(move || routing.admit(&a)).await,
            None => self.change_map(rules::admit(&a)).await,
        }
    }

    /// Takes `slot`'s port back, if it is admitted: its next connections reach the worker's
    /// listener.
    async fn withdraw(&self, slot: &TenantSlot) -> std::io::Result<()> {
        if slot.kernel.admitted() {
            let a = LinkAddrs::of_port(slot.port);
            match self.routing {
                Some(routing) => blocking(move || routing.withdraw(&a)).await?,
                None => self.change_map(rules::withdraw(&a)).await?,
            }
            slot.kernel.admitted.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Applies `changes` to the table's port map (one transaction, a netlink message: µs).
    async fn change_map(&self, changes: Vec<netlink::port_map::Change>) -> std::io::Result<()> {
        let table = self.table.clone();
        blocking(move || netlink::port_map::apply(&table, rules::PORT_MAP, &changes)).await
    }

    /// Removes the table (the worker stops and no tenant runs: nothing to forward).
    pub(crate) async fn stop(&self) {
        if let Err(e) = nft(&format!("delete table ip {}\n", self.table)).await {
            warn!(table = self.table, error = %e, "could not remove the worker's nftables table");
        }
    }
}

/// A tenant's side of it: whether the kernel forwards its port now, and its link's traffic.
pub(crate) struct TenantPath {
    /// The map sends the tenant's port to its link.
    admitted: AtomicBool,
    /// An admission or withdrawal is under way (one at a time per tenant).
    busy: AtomicBool,
    /// Its link could not be made: the worker relays its connections until a later try makes
    /// it.
    link_retry: std::sync::Mutex<Backoff>,
    /// Packets its link had carried at the last look.
    packets: AtomicU64,
    /// On the routed path, its return rule may be in place (`routing::Routing::closed` not
    /// called since its last admission; at the worker's start, unknown: true).
    returning: AtomicBool,
}

impl Default for TenantPath {
    fn default() -> Self {
        TenantPath {
            admitted: AtomicBool::default(),
            busy: AtomicBool::default(),
            link_retry: std::sync::Mutex::new(Backoff::first_after(LINK_RETRY_FIRST)),
            packets: AtomicU64::default(),
            returning: AtomicBool::new(true),
        }
    }
}

impl TenantPath {
    /// Whether the kernel forwards the tenant's port now.
    pub(crate) fn admitted(&self) -> bool {
        self.admitted.load(Ordering::SeqCst)
    }

    /// Tries to make its link that failed in a row.
    pub(crate) fn link_failures(&self) -> u32 {
        lock_std(&self.link_retry).failures()
    }
}

/// The first wait before a link that could not be made (a device of the same name left by hand,
/// `ip` or `nft` missing or killed for a moment) is tried again; then twice as long each time,
/// at most 5 minutes ([`Backoff`]), rather than leaving the tenant relayed until it is removed.
const LINK_RETRY_FIRST: Duration = Duration::from_secs(1);

impl Worker {
    /// Makes the link of a tenant whose namespace was just made (at its `tenant add`), so that
    /// its first admission does not wait for it; a failure leaves the tenant relayed. Marked
    /// busy meanwhile: a tick that finds the tenant running would otherwise admit it and, its
    /// link not yet leading into its namespace, make the link again at the same time, each
    /// deleting the other's half-made pair (one of them failed with `Cannot find device`, and
    /// the tenant stayed relayed).
    pub(crate) async fn make_link(&self, slot: &TenantSlot) {
        if slot.kernel.busy.swap(true, Ordering::SeqCst) {
            return; // a tick's admission is under way: it makes the link
        }
        self.make_link_now(slot).await;
        slot.kernel.busy.store(false, Ordering::SeqCst);
    }

    /// Makes the link (the caller holds the tenant's `busy` mark); whether it was made.
    async fn make_link_now(&self, slot: &TenantSlot) -> bool {
        let Some(kernel) = &self.kernel_forward else {
            return false;
        };
        if slot.proxy_protocol {
            return false;
        }
        let (Some(pin), addrs) = (slot.netns.clone(), LinkAddrs::of_port(slot.port)) else {
            return false;
        };
        let (clients, path, routing) = (slot.client_address, kernel.link_path(), kernel.routing);
        let made = blocking(move || {
            link::make(&pin, &addrs, clients, path)?;
            routing.map_or(Ok(()), |r| r.forget(&addrs))
        })
        .await;
        let mut retry = lock_std(&slot.kernel.link_retry);
        match made {
            Ok(()) => {
                if retry.failing() {
                    info!(tenant = %slot.name, failures = retry.failures(), "its link is made after all");
                }
                retry.succeeded();
                true
            }
            Err(e) => {
                let wait = retry.failed(pagestore::clock::now_ms());
                warn!(
                    tenant = %slot.name,
                    error = %e,
                    failures = retry.failures(),
                    retry_in_s = wait.as_secs(),
                    "no link: the worker relays its connections until a later try makes it"
                );
                false
            }
        }
    }

    /// Makes the link now if it is missing (the caller holds the tenant's `busy` mark); whether
    /// the tenant has its link.
    async fn link_ready(&self, slot: &TenantSlot) -> bool {
        let Some(kernel) = &self.kernel_forward else {
            return false;
        };
        let a = LinkAddrs::of_port(slot.port);
        let ours = slot
            .netns
            .as_deref()
            .is_some_and(|pin| link::leads_into(pin, &a, kernel.link_path()));
        ours || self.make_link_now(slot).await
    }

    /// Before a swap-out, with the tenant's gate held (no admission can race it): takes its port
    /// back from the kernel, so that its next connections wait at the worker's listener, then
    /// closes the connections the kernel forwarded to it. How many it closed. An error (the
    /// port could not be taken back) fails the swap-out: the tenant keeps running.
    pub(crate) async fn take_port_back(&self, slot: &TenantSlot) -> Result<usize> {
        let Some(kernel) = &self.kernel_forward else {
            return Ok(0);
        };
        // Only a tenant the kernel forwarded to has connections the worker did not relay.
        if !slot.kernel.admitted() {
            return Ok(0);
        }
        kernel
            .withdraw(slot)
            .await
            .map_err(|e| Error::KernelForward {
                port: slot.port,
                what: "taken back",
                reason: e.to_string(),
            })?;
        note_traffic(slot);
        let Some(pid) = slot.runtime.lock().await.info.pid else {
            return Ok(0);
        };
        let addrs = LinkAddrs::of_port(slot.port);
        let closed = tokio::task::spawn_blocking(move || closing::close_forwarded(pid, &addrs))
            .await
            .unwrap_or(0);
        if closed > 0 {
            debug!(tenant = %slot.name, closed, "closed the connections the kernel forwarded");
        }
        Ok(closed)
    }

    /// Before a tenant's namespace goes (`tenant rm`): its port out of the map, and its link
    /// gone now rather than when the kernel frees the namespace (a tenant added next on the same
    /// port must not find it).
    pub(crate) async fn forget_port(&self, slot: &TenantSlot) {
        let Some(kernel) = &self.kernel_forward else {
            return;
        };
        let _ = kernel.withdraw(slot).await;
        let (addrs, routing) = (LinkAddrs::of_port(slot.port), kernel.routing);
        let _ = blocking(move || {
            link::remove(&addrs);
            routing.map_or(Ok(()), |r| r.forget(&addrs))
        })
        .await;
    }

    /// At the worker's start, before any port is served: on the routed path, every tenant's
    /// port taken back from whatever the worker before this one left (killed, its tenants'
    /// rules still in place); the running ones are admitted again at the next ticks. (On the
    /// NAT path the table made at the start is empty.)
    pub(crate) async fn forget_admissions(&self) {
        let Some(routing) = self.kernel_forward.as_ref().and_then(|k| k.routing) else {
            return;
        };
        let links: Vec<LinkAddrs> = self
            .tenants
            .all()
            .iter()
            .filter(|slot| slot.netns_file.is_some())
            .map(|slot| LinkAddrs::of_port(slot.port))
            .collect();
        if let Err(e) = blocking(move || routing.withdraw_all(&links)).await {
            warn!(error = %e, "could not take back the ports a previous worker admitted");
        }
    }
}

/// At each supervisor tick: admits every running tenant not admitted yet (once a lazy restore's
/// fill is done), withdraws one that stopped running on its own (exited, failed), on the routed
/// path deletes the return rule of one whose routed connections are over, and counts the
/// traffic of each admitted one's link as activity for its idle rule.
pub(crate) fn reconcile(worker: &Arc<Worker>) {
    let Some(kernel) = &worker.kernel_forward else {
        return;
    };
    let link_path = kernel.link_path();
    for slot in worker.tenants.all() {
        if slot.netns_file.is_none() || slot.proxy_protocol {
            continue;
        }
        let path = &slot.kernel;
        if path.busy.load(Ordering::SeqCst)
            || !lock_std(&path.link_retry).ready(pagestore::clock::now_ms())
        {
            continue;
        }
        let admitted = path.admitted();
        if let Some(routing) = kernel.routing {
            if !admitted && path.returning.load(Ordering::SeqCst) && connections_over(&slot) {
                if !path.busy.swap(true, Ordering::SeqCst) {
                    tokio::spawn(forget_return(routing, slot.clone()));
                }
                continue;
            }
        }
        // A link gone or replaced under an admitted tenant (deleted by hand, taken over for
        // another namespace): its port is taken back now and its link made again at the next
        // admission, rather than its connections lost in a link that leads nowhere.
        let link_holds = admitted
            && slot.netns.as_deref().is_some_and(|pin| {
                link::leads_into(pin, &LinkAddrs::of_port(slot.port), link_path)
            });
        if link_holds {
            note_traffic(&slot);
        }
        // Undecided while a swap holds the gate or another flow the record.
        let wanted = match slot.gate.try_read() {
            Ok(_lease) => wants_forwarding(&slot),
            Err(_) => None,
        };
        let Some(wanted) = wanted.map(|w| w && (link_holds || !admitted)) else {
            continue;
        };
        if wanted == admitted || path.busy.swap(true, Ordering::SeqCst) {
            continue;
        }
        let worker = worker.clone();
        tokio::spawn(async move {
            let _turn = match &worker.kernel_forward {
                Some(kernel) => kernel.changes.acquire().await.ok(),
                None => None,
            };
            if wanted {
                admit(&worker, &slot).await;
            } else if let Some(kernel) = &worker.kernel_forward {
                if let Err(e) = kernel.withdraw(&slot).await {
                    warn!(tenant = %slot.name, error = %e, "could not take its port back");
                }
            }
            slot.kernel.busy.store(false, Ordering::SeqCst);
        });
    }
}

/// Whether the connections the kernel routed to the tenant are over: it neither runs nor is being
/// swapped out (whose closing needs their way). False while its record is busy.
fn connections_over(slot: &TenantSlot) -> bool {
    slot.runtime.try_lock().is_ok_and(|rt| {
        !matches!(
            rt.info.state,
            TenantState::Running | TenantState::SwappingOut
        )
    })
}

/// Deletes the return rule of a tenant whose routed connections are over (the caller set its
/// `busy` mark, cleared here): a sleeping tenant has no rule in the walk of the host's
/// connections.
async fn forget_return(routing: Routing, slot: Arc<TenantSlot>) {
    let a = LinkAddrs::of_port(slot.port);
    match blocking(move || routing.closed(&a)).await {
        Ok(()) => slot.kernel.returning.store(false, Ordering::SeqCst),
        Err(e) => warn!(tenant = %slot.name, error = %e, "could not delete its return rule"),
    }
    slot.kernel.busy.store(false, Ordering::SeqCst);
}

/// Whether the tenant should be forwarded by the kernel now: running, and not being filled in
/// (a lazy restore's fill waits for the first answer the relay sees). `None`: its record is
/// busy, ask again at the next tick.
fn wants_forwarding(slot: &TenantSlot) -> Option<bool> {
    let rt = slot.runtime.try_lock().ok()?;
    let filling = rt.restoring.as_ref().is_some_and(|r| !r.is_finished());
    Some(rt.info.state == TenantState::Running && !filling)
}

/// Maps the tenant's port to its link (made first if it is missing), under a shared lease of its
/// gate: a swap-out, which takes the gate exclusively, finds it either admitted or not.
async fn admit(worker: &Worker, slot: &Arc<TenantSlot>) {
    let Some(kernel) = &worker.kernel_forward else {
        return;
    };
    let Ok(_lease) = slot.gate.try_read() else {
        return;
    };
    if wants_forwarding(slot) != Some(true) {
        return;
    }
    if !worker.link_ready(slot).await {
        return;
    }
    let addrs = LinkAddrs::of_port(slot.port);
    match kernel.admit_port(addrs).await {
        Ok(_) => {
            // Counted from here: what the link carried before is no activity of now.
            if let Some(packets) = link_packets(&addrs) {
                slot.kernel.packets.store(packets, Ordering::SeqCst);
            }
            slot.kernel.admitted.store(true, Ordering::SeqCst);
            slot.kernel.returning.store(true, Ordering::SeqCst);
            debug!(tenant = %slot.name, "the kernel forwards its port");
        }
        Err(e) => warn!(tenant = %slot.name, error = %e, "its port stays relayed"),
    }
}

/// Counts a change of the tenant's link's packet counters since the last look as activity.
fn note_traffic(slot: &TenantSlot) {
    let Some(packets) = link_packets(&LinkAddrs::of_port(slot.port)) else {
        return;
    };
    if slot.kernel.packets.swap(packets, Ordering::SeqCst) != packets {
        slot.activity.touch();
    }
}

/// Packets the host end of a link received and sent.
fn link_packets(a: &LinkAddrs) -> Option<u64> {
    let dir = std::path::Path::new("/sys/class/net")
        .join(a.host_if())
        .join("statistics");
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(read("rx_packets")? + read("tx_packets")?)
}

/// Deletes the worker tables of this network namespace whose worker is gone (killed, or stopped
/// with its tenants left running and not started again): their maps would send their ports to
/// links that lead nowhere, whatever listens on those ports next. A table of a live worker (its
/// pid a `pico` process) stays, and so does `ours`, which the start replaces.
async fn sweep_stale_tables(ours: &str) {
    let Ok(listing) = nft("list tables ip\n").await else {
        return;
    };
    for table in rules::worker_tables(&listing) {
        if table == ours {
            continue;
        }
        let owner = match nft(&format!("list table ip {table}\n")).await {
            Ok(text) => rules::owner_of(&text),
            Err(_) => continue,
        };
        if owner.is_some_and(is_worker) {
            continue;
        }
        match nft(&format!("delete table ip {table}\n")).await {
            Ok(_) => info!(table, ?owner, "removed the table of a worker that is gone"),
            Err(e) => warn!(table, error = %e, "could not remove a stale worker table"),
        }
    }
}

/// The routed path for `listen`, the host made ready for it; `None` (the NAT path) for a listen
/// address it does not serve or a host that would not take its rules.
async fn start_routing(listen: IpAddr) -> Option<Routing> {
    match blocking(move || Routing::start(listen).transpose()).await {
        Ok(routing) => {
            if routing.is_none() {
                info!(%listen, "not an IPv4 loopback listen address: the kernel forwards over NAT");
            }
            routing
        }
        Err(e) => {
            warn!(error = %e, "the host's routing rules could not be made: the kernel forwards over NAT");
            None
        }
    }
}

/// Runs `f` (a netlink exchange, a few processes) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Whether `pid` is a running `pico` (a worker: its table's owner).
fn is_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .next()
            .and_then(|argv0| std::path::Path::new(std::str::from_utf8(argv0).ok()?).file_name())
            .is_some_and(|name| name.to_string_lossy().starts_with("pico"))
    })
}

/// Whether the host forwards IPv4 (`net.ipv4.ip_forward`).
fn ipv4_forwarding() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1")
}

/// Runs `nft -f -` on `input` (one transaction); what it printed (a listing).
async fn nft(input: &str) -> std::io::Result<String> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(std::io::Error::other(format!(
        "nft: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
