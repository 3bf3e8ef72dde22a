//! The worker's side of a cluster (`[worker.hub]`): every `heartbeat_ms` it tells the hub who it
//! is (its name, its API, the address its tenants are reached on), what room it has (memory,
//! load) and what it hosts (each tenant's state, port, generation, memory), and takes the lease
//! the hub answers with. The hub names tenants in DNS, wakes them and places them by these
//! reports (`hub_wire` is what both sides say; `cluster` what the worker keeps of the link).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::auth::ApiToken;
use crate::api::client::Transport;
use crate::cluster::HubAddress;
use crate::config::HubLinkConfig;
use crate::error::{Error, Result};
use crate::host::Worker;
use crate::hub_wire::{Heartbeat, HostedTenant, Lease};
use crate::tenant::TenantState;

/// Where this worker reports: the hub's address and token, and what it calls itself there.
struct Link {
    hub: SocketAddr,
    transport: Transport,
    token: String,
    name: String,
    api: SocketAddr,
    public_addr: IpAddr,
    every: Duration,
}

impl Link {
    /// The link `config` describes, for a worker whose TCP API is `api`. Fails when the hub could
    /// not reach the worker (no TCP API) or answer with its address (no public address). An API
    /// on every address (`0.0.0.0:PORT`) is reported at the public address.
    fn new(config: &HubLinkConfig, api: Option<SocketAddr>, listen: IpAddr) -> Result<Link> {
        let mut api = api.ok_or(Error::HubNeedsApi)?;
        let public_addr = config.public_addr.unwrap_or(listen);
        if public_addr.is_unspecified() {
            return Err(Error::HubNeedsPublicAddr);
        }
        if api.ip().is_unspecified() {
            api.set_ip(public_addr);
        }
        let token = ApiToken::cluster(config.token_file.as_deref())?
            .text()
            .to_string();
        let name = match &config.name {
            Some(name) => name.clone(),
            None => host_name()?,
        };
        let transport = Transport::trusting(config.ca_file.as_deref())?;
        Ok(Link {
            hub: config.addr,
            transport,
            token,
            name,
            api,
            public_addr,
            every: Duration::from_millis(config.heartbeat_ms.max(50)),
        })
    }
}

/// Whether `config` describes a link a worker whose TCP API is `api` can report through (the
/// rules of [`Link::new`]).
pub(crate) fn check(config: &HubLinkConfig, api: Option<SocketAddr>, listen: IpAddr) -> Result<()> {
    Link::new(config, api, listen).map(drop)
}

/// Starts reporting to the hub, if one is configured; checks the configuration first.
pub(crate) fn start(
    worker: &Arc<Worker>,
    api: Option<SocketAddr>,
) -> Result<Option<JoinHandle<()>>> {
    let Some(config) = &worker.config.hub else {
        return Ok(None);
    };
    let link = Link::new(config, api, worker.config.listen_addr)?;
    let _ = worker.hub.set(HubAddress {
        addr: link.hub,
        transport: link.transport.clone(),
        token: link.token.clone(),
        worker: link.name.clone(),
    });
    info!(hub = %link.hub, tls = link.transport.is_tls(), worker = %link.name, public_addr = %link.public_addr, "reporting to the hub");
    let worker = worker.clone();
    Ok(Some(tokio::spawn(
        async move { report(&worker, link).await },
    )))
}

/// Sends a heartbeat every `link.every`, saying once when the hub stops answering and once when
/// it answers again; gives up the tenants the hub says are elsewhere; pauses every tenant when
/// the lease runs out and resumes them when the hub answers again.
async fn report(worker: &Arc<Worker>, link: Link) {
    let mut ticks = tokio::time::interval(link.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reachable = true;
    // A starting worker gets the grace of one lease (its first heartbeat goes out at once).
    let mut lease_until = Instant::now() + link.every * 2;
    loop {
        ticks.tick().await;
        let sent = Instant::now();
        let beat = heartbeat(worker, &link);
        match send(&link, &beat).await {
            Ok(lease) => {
                if !reachable {
                    info!(hub = %link.hub, "the hub answers again");
                }
                reachable = true;
                lease_until = sent + Duration::from_millis(lease.lease_ms);
                for name in &lease.release {
                    if let Err(e) = worker.release(name).await {
                        warn!(tenant = %name, error = %e, "could not give up a tenant the hub placed elsewhere");
                    }
                }
                if worker.fence.is_up() {
                    worker.fence.set(false);
                    let resumed = signal_running(worker, nix::sys::signal::Signal::SIGCONT).await;
                    info!(resumed, "lease renewed: tenants resumed");
                }
            }
            Err(e) => {
                if reachable {
                    warn!(hub = %link.hub, error = %e, "the hub does not answer; retrying every heartbeat");
                }
                reachable = false;
                if Instant::now() >= lease_until && !worker.fence.is_up() {
                    worker.fence.set(true);
                    let paused = signal_running(worker, nix::sys::signal::Signal::SIGSTOP).await;
                    warn!(paused, "lease ran out: tenants paused, no swap until the hub answers (it may place them elsewhere)");
                }
            }
        }
    }
}

/// Sends `signal` to every process of every running tenant; how many tenants.
async fn signal_running(worker: &Worker, signal: nix::sys::signal::Signal) -> usize {
    let mut tenants = 0;
    for slot in worker.tenants.slots() {
        let rt = slot.runtime.lock().await;
        let (TenantState::Running, Some(pid)) = (rt.info.state, rt.info.pid) else {
            continue;
        };
        for p in crate::process::process_tree(pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), signal);
        }
        tenants += 1;
    }
    tenants
}

async fn send(link: &Link, beat: &Heartbeat) -> Result<Lease> {
    let body = serde_json::to_value(beat).map_err(Error::RequestUnencodable)?;
    let answer = crate::api::client::call_json(
        "the hub",
        link.hub,
        &link.transport,
        &link.token,
        axum::http::Method::POST,
        "/v1/heartbeat",
        Some(&body),
    )
    .await?;
    serde_json::from_value(answer).map_err(|source| Error::BadAnswer {
        peer: format!("the hub on {}", link.hub),
        source,
    })
}

/// This worker's report now. Never waits: a tenant whose record a flow holds is reported
/// without a state.
fn heartbeat(worker: &Worker, link: &Link) -> Heartbeat {
    let tenants = worker
        .tenants
        .slots()
        .into_iter()
        .map(|slot| {
            let rt = slot.runtime.try_lock().ok();
            let info = rt.as_ref().map(|rt| &rt.info);
            HostedTenant {
                name: slot.name.clone(),
                port: slot.port,
                state: info.map(|i| i.state),
                checkpoint: info.and_then(|i| i.checkpoint.clone()),
                generation: info.and_then(|i| i.generation),
                rss_bytes: info.and_then(|i| i.rss_bytes),
            }
        })
        .collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name| crate::host_memory::meminfo_field(&meminfo, name).unwrap_or(0);
    Heartbeat {
        worker: link.name.clone(),
        api: link.api,
        public_addr: link.public_addr,
        memory_total_bytes: field("MemTotal:"),
        memory_available_bytes: field("MemAvailable:"),
        load: load_per_core(),
        tenants,
    }
}

/// The 1-minute load average of `/proc/loadavg` over the cores (0 if unreadable).
fn load_per_core() -> f64 {
    let one_minute = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    one_minute / cores as f64
}

/// The machine's host name.
fn host_name() -> Result<String> {
    const PATH: &str = "/proc/sys/kernel/hostname";
    let name = std::fs::read_to_string(PATH).map_err(|e| Error::io(PATH, e))?;
    match name.trim() {
        "" => Err(Error::HubNeedsName),
        name => Ok(name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(public_addr: Option<IpAddr>) -> (tempfile::TempDir, HubLinkConfig) {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "s3cret\n").unwrap();
        let config = HubLinkConfig {
            addr: "127.0.0.1:7071".parse().unwrap(),
            token_file: Some(token_file),
            name: Some("w1".into()),
            public_addr,
            heartbeat_ms: 1000,
            ca_file: None,
        };
        (dir, config)
    }

    #[test]
    fn a_link_needs_the_tcp_api_and_an_address_clients_reach() {
        let api = Some("127.0.0.1:7070".parse().unwrap());
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let (_dir, c) = config(None);
        assert!(matches!(Link::new(&c, None, any), Err(Error::HubNeedsApi)));
        assert!(matches!(
            Link::new(&c, api, any),
            Err(Error::HubNeedsPublicAddr)
        ));
        let link = Link::new(&c, api, "127.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            (link.public_addr, link.token.as_str(), link.name.as_str()),
            ("127.0.0.2".parse().unwrap(), "s3cret", "w1")
        );
        let (_dir, c) = config(Some("10.0.0.5".parse().unwrap()));
        let link = Link::new(&c, api, any).unwrap();
        assert_eq!(link.public_addr, "10.0.0.5".parse::<IpAddr>().unwrap());
        // An API on every address is reached at the public one.
        let everywhere = Some("0.0.0.0:7070".parse().unwrap());
        let link = Link::new(&c, everywhere, any).unwrap();
        assert_eq!(link.api, "10.0.0.5:7070".parse().unwrap());
    }
}
