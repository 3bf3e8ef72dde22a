//! The worker's side of a cluster (`[worker.hub]`): every `heartbeat_ms` it tells the hub who it
//! is (its name, its API, the address its tenants are reached on), what room it has (memory,
//! load) and what it hosts (each tenant's state, port, generation, memory), and takes the lease
//! the hub answers with. The hub names tenants in DNS, wakes them and places them by these
//! reports. The types here are the wire format of both sides (`POST /v1/heartbeat` of the hub).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::auth::ApiToken;
use crate::config::HubLinkConfig;
use crate::error::{Error, Result};
use crate::host::Worker;
use crate::tenant::TenantState;

/// What a worker reports to its hub.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its name in the cluster.
    pub worker: String,
    /// Its TCP API (`api_listen`), through which the hub wakes its tenants.
    pub api: SocketAddr,
    /// Where clients reach its tenants' ports.
    pub public_addr: IpAddr,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// Load average over the last minute, per core.
    pub load: f64,
    pub tenants: Vec<HostedTenant>,
}

/// One tenant a worker hosts, as its heartbeat reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostedTenant {
    pub name: String,
    pub port: u16,
    /// `None` while a swap of it is under way (its record is held): the hub keeps what it knew.
    pub state: Option<TenantState>,
    /// Its newest committed checkpoint (what another worker would restore) and its generation.
    #[serde(default)]
    pub checkpoint: Option<String>,
    pub generation: Option<u64>,
    /// Its memory in use (running) or at its last swap-out (asleep).
    pub rss_bytes: Option<u64>,
}

/// The hub's answer to a heartbeat: the worker may run its tenants for `lease_ms` from when it
/// sent the heartbeat (unless a later one is answered), except those in `release`, which the
/// hub has placed on another worker meanwhile: the worker gives them up at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub lease_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<String>,
}

/// What a worker asks of the hub before it adds a tenant (`POST /v1/claims`): the name and port
/// are its in the cluster, or the hub says why not (409).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub worker: String,
    pub name: String,
    pub port: u16,
}

/// Where this worker's hub is, for the calls other than heartbeats (claims).
#[derive(Clone, Debug)]
pub(crate) struct HubAddress {
    addr: SocketAddr,
    token: String,
    worker: String,
}

impl HubAddress {
    /// Claims `name` and `port` for a new tenant of this worker; fails with the hub's reason
    /// when another tenant holds the port or the name lives on another worker.
    pub(crate) async fn claim(&self, name: &str, port: u16) -> Result<()> {
        let claim = Claim {
            worker: self.worker.clone(),
            name: name.to_string(),
            port,
        };
        let body = serde_json::to_value(&claim).map_err(Error::RequestUnencodable)?;
        crate::api::client::call_json(
            "the hub",
            self.addr,
            &self.token,
            axum::http::Method::POST,
            "/v1/claims",
            Some(&body),
        )
        .await
        .map(|_| ())
    }
}

/// Whether this worker may change its tenants: not once its lease ran out, until the hub
/// answers again. The hub may then have declared it dead and placed its tenants elsewhere, so a
/// worker without a lease runs nothing (its tenants are paused) and writes no checkpoint (a
/// swap-out would race the other worker's generations of the same tenant).
#[derive(Debug, Default)]
pub(crate) struct Fence {
    fenced: std::sync::atomic::AtomicBool,
}

impl Fence {
    /// Fails while the lease has run out.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_up() {
            return Err(Error::NoLease);
        }
        Ok(())
    }

    fn is_up(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self, up: bool) {
        self.fenced.store(up, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Where this worker reports: the hub's address and token, and what it calls itself there.
struct Link {
    hub: SocketAddr,
    token: String,
    name: String,
    api: SocketAddr,
    public_addr: IpAddr,
    every: Duration,
}

impl Link {
    /// The link `config` describes, for a worker whose TCP API is `api`. Fails when the hub could
    /// not reach the worker (no TCP API) or answer with its address (no public address).
    fn new(config: &HubLinkConfig, api: Option<SocketAddr>, listen: IpAddr) -> Result<Link> {
        let api = api.ok_or(Error::HubNeedsApi)?;
        let public_addr = config.public_addr.unwrap_or(listen);
        if public_addr.is_unspecified() {
            return Err(Error::HubNeedsPublicAddr);
        }
        let token = ApiToken::cluster(config.token_file.as_deref())?
            .text()
            .to_string();
        let name = match &config.name {
            Some(name) => name.clone(),
            None => host_name()?,
        };
        Ok(Link {
            hub: config.addr,
            token,
            name,
            api,
            public_addr,
            every: Duration::from_millis(config.heartbeat_ms.max(50)),
        })
    }
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
        token: link.token.clone(),
        worker: link.name.clone(),
    });
    info!(hub = %link.hub, worker = %link.name, public_addr = %link.public_addr, "reporting to the hub");
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
    }

    #[test]
    fn a_heartbeat_reads_back_as_sent() {
        let beat = Heartbeat {
            worker: "w1".into(),
            api: "127.0.0.1:7070".parse().unwrap(),
            public_addr: "127.0.0.1".parse().unwrap(),
            memory_total_bytes: 8 << 30,
            memory_available_bytes: 4 << 30,
            load: 0.25,
            tenants: vec![HostedTenant {
                name: "web".into(),
                port: 8080,
                state: Some(TenantState::SwappedOut),
                checkpoint: Some("web-3".into()),
                generation: Some(3),
                rss_bytes: Some(20 << 20),
            }],
        };
        let text = serde_json::to_string(&beat).unwrap();
        assert!(text.contains(r#""state":"swapped-out""#), "{text}");
        assert_eq!(serde_json::from_str::<Heartbeat>(&text).unwrap(), beat);
    }
}
