//! The hub under test: a real `pico hub run` whose record names N tenants on one worker that is
//! never started. The record is written into a fresh cold directory before the hub starts, as a
//! hub restarted over an existing cluster would find it; the worker counts as alive for the whole
//! run (`dead_after_ms` of a day, heard from at the hub's start) and no tenant has a reported
//! state, so every query is answered at once from the registry: no wake-up, no placement. What
//! is measured is the hub's DNS path alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hub::durable::DurableState;
use hub::registry::{HubRecord, TenantRecord, WorkerRecord};
use pagestore::cold::ColdTier;
use pagestore::config::ColdConfig;

use super::wire;
use crate::error::{Error, Result};
use crate::net::free_port;

/// The zone the tenants' names are in.
pub const ZONE: &str = "bench.test.";
/// The one (never started) worker's name in the record.
const WORKER: &str = "bench-worker";
/// The first tenant's port (each tenant has its own, as in a cluster).
const FIRST_PORT: u16 = 20_000;
/// Most tenants: their ports must stay below 65536.
pub const MAX_NAMES: usize = (u16::MAX - FIRST_PORT) as usize;
/// How long the hub may take to answer its first query.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long one readiness query waits for its answer.
const PROBE_WAIT: Duration = Duration::from_millis(200);

/// Tenant `i`'s name.
pub fn tenant(i: usize) -> String {
    format!("t{i}")
}

/// Tenant `i`'s DNS name.
pub fn fqdn(i: usize) -> String {
    format!("{}.{ZONE}", tenant(i))
}

/// The record of a cluster of one worker holding `names` tenants, `t0`..`tN-1`.
pub fn record(names: usize) -> HubRecord {
    let mut r = HubRecord::default();
    r.workers.insert(
        WORKER.into(),
        WorkerRecord {
            // Never called: no tenant needs waking.
            api: ([127, 0, 0, 1], 9).into(),
            public_addr: [127, 0, 0, 1].into(),
            draining: false,
        },
    );
    for i in 0..names {
        r.tenants.insert(
            tenant(i),
            TenantRecord {
                worker: WORKER.into(),
                port: FIRST_PORT + i as u16,
                checkpoint: None,
                generation: None,
                placed_because: "bench".into(),
            },
        );
    }
    r
}

/// Writes `record` as the newest hub record into the cold directory `cold`.
async fn write_record(cold: &Path, record: &HubRecord) -> Result<()> {
    let tier = ColdTier::open(&ColdConfig::Dir {
        path: cold.to_path_buf(),
    })?;
    let failed = |e: hub::HubError| Error::Step("writing the hub's record".into(), e.to_string());
    let (mut state, _) = DurableState::load(tier).await.map_err(failed)?;
    state.save(record).await.map_err(failed)
}

/// `pico.toml` of the hub: the `[hub]` section and the cold directory.
fn config(dns_port: u16, api_port: u16, token: &Path, cold: &Path) -> Result<String> {
    let path = |p: &Path| -> Result<String> {
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| Error::BadOptions(format!("{} is not UTF-8", p.display())))
    };
    let mut hub = toml::Table::new();
    hub.insert("zone".into(), ZONE.into());
    hub.insert("dns_listen".into(), format!("127.0.0.1:{dns_port}").into());
    hub.insert("api_listen".into(), format!("127.0.0.1:{api_port}").into());
    hub.insert("token_file".into(), path(token)?.into());
    // The recorded worker stays alive for the whole run without a heartbeat.
    hub.insert("dead_after_ms".into(), 86_400_000.into());
    hub.insert("lease_ms".into(), 3_600_000.into());
    let mut cold_section = toml::Table::new();
    cold_section.insert("kind".into(), "dir".into());
    cold_section.insert("path".into(), path(cold)?.into());
    let mut top = toml::Table::new();
    top.insert("hub".into(), hub.into());
    top.insert("cold".into(), cold_section.into());
    toml::to_string(&top)
        .map_err(|e| Error::Step("writing the hub's pico.toml".into(), e.to_string()))
}

/// Writes a token only the owner may read (the hub warns otherwise).
fn write_token(path: &Path) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let mut rng = crate::synth::Rng::new(seed);
    let token = format!("{:016x}{:016x}\n", rng.next_u64(), rng.next_u64());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(token.as_bytes())
        .map_err(|e| Error::io(path, e))
}

/// A running `pico hub run`, stopped (SIGTERM) when dropped.
pub struct HubProc {
    child: Child,
    /// Where it answers DNS (UDP and TCP).
    pub dns_port: u16,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

impl HubProc {
    /// Writes the record of `names` tenants into `work/cold`, the hub's home into `work/home`,
    /// starts `pico hub run` there and waits until its DNS answers for `t0`.
    pub async fn start(pico: &Path, work: &Path, names: usize) -> Result<HubProc> {
        let home = work.join("home");
        let cold = work.join("cold");
        for dir in [&home, &cold] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        write_record(&cold, &record(names)).await?;
        let token = home.join("token");
        write_token(&token)?;
        let dns_port = free_port()?;
        let api_port = free_port()?;
        let toml_path = home.join("pico.toml");
        let toml = config(dns_port, api_port, &token, &cold)?;
        std::fs::write(&toml_path, toml).map_err(|e| Error::io(&toml_path, e))?;

        let log = work.join("hub.log");
        let out = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
        let err = out.try_clone().map_err(|e| Error::io(&log, e))?;
        let child = Command::new(pico)
            .arg("--home")
            .arg(&home)
            .args(["hub", "run"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Step("pico hub run".into(), e.to_string()))?;
        let mut hub = HubProc {
            child,
            dns_port,
            log,
        };
        hub.wait_ready().await?;
        Ok(hub)
    }

    /// Asks for `t0` until it is answered with an address.
    async fn wait_ready(&mut self) -> Result<()> {
        let not_ready = |why: String| Error::Step("pico hub run".into(), why);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("127.0.0.1:0", e))?;
        socket
            .connect(("127.0.0.1", self.dns_port))
            .await
            .map_err(|e| Error::io(format!("127.0.0.1:{}", self.dns_port), e))?;
        let query = wire::query(&fqdn(0)).map_err(Error::BadOptions)?;
        let started = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(not_ready(format!(
                    "exited ({status}); its log: {}",
                    self.log.display()
                )));
            }
            if started.elapsed() > START_LIMIT {
                return Err(not_ready(format!(
                    "its DNS did not answer within {START_LIMIT:?}; its log: {}",
                    self.log.display()
                )));
            }
            // Refused while the port is not bound yet: try again.
            if socket.send(&query).await.is_ok() {
                if let Ok(Ok(n)) = tokio::time::timeout(PROBE_WAIT, socket.recv(&mut buf)).await {
                    return match wire::verdict(&buf[..n]) {
                        wire::Verdict::Address(_) => Ok(()),
                        wire::Verdict::Wrong(why) => Err(not_ready(format!(
                            "its answer for {}: {why}; its log: {}",
                            fqdn(0),
                            self.log.display()
                        ))),
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The hub's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HubProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_has_one_worker_and_every_tenant_on_its_own_port() {
        let r = record(3);
        assert_eq!(r.workers.len(), 1);
        let ports: Vec<u16> = r.tenants.values().map(|t| t.port).collect();
        assert_eq!(ports, vec![FIRST_PORT, FIRST_PORT + 1, FIRST_PORT + 2]);
        assert!(r.tenants.contains_key("t2"));
        assert!(r.tenants.values().all(|t| t.worker == WORKER));
        assert_eq!(fqdn(2), "t2.bench.test.");
    }

    #[test]
    fn the_config_is_the_hub_section_and_the_cold_dir() {
        let text = config(5300, 7100, Path::new("/h/token"), Path::new("/w/cold")).unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["hub"]["dns_listen"].as_str(), Some("127.0.0.1:5300"));
        assert_eq!(t["hub"]["dead_after_ms"].as_integer(), Some(86_400_000));
        assert_eq!(t["cold"]["kind"].as_str(), Some("dir"));
        assert_eq!(t["cold"]["path"].as_str(), Some("/w/cold"));
    }
}
