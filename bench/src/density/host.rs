//! What the host pays for the population, read where the kernel and the worker publish it:
//! memory in use (`MemTotal - MemAvailable`, no cache dropped), sampled through every phase for
//! its peak; CPU of the worker and of everything it reaped (CRIU, lazy-pages daemons, tenants:
//! `/proc/PID/stat`), and of the whole host (`/proc/stat`) beside it; the worker's `/metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
}

/// `MemTotal - MemAvailable`, bytes.
pub fn memory_in_use() -> Result<u64> {
    let text =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| Error::io("/proc/meminfo", e))?;
    match (
        kib_field(&text, "MemTotal:"),
        kib_field(&text, "MemAvailable:"),
    ) {
        (Some(total), Some(avail)) => Ok(total.saturating_sub(avail) * 1024),
        _ => Err(Error::Step(
            "reading /proc/meminfo".into(),
            "no MemTotal or MemAvailable".into(),
        )),
    }
}

/// A field of `/proc/meminfo` (`Shmem:`, `SUnreclaim:`), bytes; 0 if unreadable.
pub fn meminfo_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| kib_field(&t, field))
        .map_or(0, |k| k * 1024)
}

/// The median of five samples of [`memory_in_use`], 200 ms apart (other work runs beside).
pub async fn memory_in_use_settled() -> Result<u64> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        samples.push(memory_in_use()?);
    }
    samples.sort_unstable();
    Ok(samples[2])
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), bytes; 0 when the process is gone.
pub fn process_status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| kib_field(&t, field))
        .map_or(0, |k| k * 1024)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU seconds of `pid` and of the children it reaped (`utime + stime + cutime + cstime`):
/// the worker, its CRIU runs and the tenants it reaped once swapped out.
pub fn process_cpu_s(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| Error::Step(format!("reading {path}"), "no command name".into()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14: index 11 here (field 3 is index 0).
    let ticks: u64 = fields
        .get(11..15)
        .ok_or_else(|| Error::Step(format!("reading {path}"), "too few fields".into()))?
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Ok(ticks as f64 / clock_ticks())
}

/// Busy CPU seconds of the whole host (`/proc/stat`: all but idle and iowait).
pub fn host_cpu_busy_s() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/stat").map_err(|e| Error::io("/proc/stat", e))?;
    let line = text
        .lines()
        .next()
        .ok_or_else(|| Error::Step("reading /proc/stat".into(), "empty".into()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Ok(busy as f64 / clock_ticks())
}

/// The host's cores, as `/proc/stat` counts them (one `cpuN` line each).
pub fn cores() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let n = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    n.max(1) as f64
}

/// CPU counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    pub worker_s: f64,
    pub host_s: f64,
}

impl CpuMark {
    pub fn now(worker_pid: u32) -> Result<CpuMark> {
        Ok(CpuMark {
            worker_s: process_cpu_s(worker_pid)?,
            host_s: host_cpu_busy_s()?,
        })
    }
}

/// The worker's `GET /metrics` over its API socket.
pub fn scrape(socket: &Path) -> Result<String> {
    let mut s =
        std::os::unix::net::UnixStream::connect(socket).map_err(|e| Error::io(socket, e))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| Error::io(socket, e))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| Error::io(socket, e))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| Error::io(socket, e))?;
    Ok(out
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string()))
}

/// The sum of a metric family's samples named exactly `name` (any labels).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.split_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Peak memory per phase, from a sampler running through the whole benchmark.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Peak {
    /// Highest `MemTotal - MemAvailable` seen, bytes.
    pub host_in_use_bytes: u64,
    /// Highest resident memory of the worker process seen, bytes.
    pub worker_rss_bytes: u64,
}

#[derive(Default)]
struct SamplerState {
    phase: String,
    peaks: BTreeMap<String, Peak>,
}

/// Samples memory every 500 ms, attributing each sample to the current phase.
#[derive(Clone)]
pub struct Sampler {
    state: Arc<Mutex<SamplerState>>,
}

impl Sampler {
    /// Starts sampling the host and the worker `worker_pid`; stops when the last clone is
    /// dropped.
    pub fn start(worker_pid: u32) -> Sampler {
        let state = Arc::new(Mutex::new(SamplerState::default()));
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(state) = weak.upgrade() else { return };
                let host = memory_in_use().unwrap_or(0);
                let rss = process_status_bytes(worker_pid, "VmRSS:");
                let locked = state.lock();
                if let Ok(mut s) = locked {
                    let phase = s.phase.clone();
                    let p = s.peaks.entry(phase).or_default();
                    p.host_in_use_bytes = p.host_in_use_bytes.max(host);
                    p.worker_rss_bytes = p.worker_rss_bytes.max(rss);
                }
            }
        });
        Sampler { state }
    }

    /// Samples from now on count for `phase`.
    pub fn phase(&self, phase: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.phase = phase.to_string();
        }
    }

    pub fn peaks(&self) -> BTreeMap<String, Peak> {
        self.state
            .lock()
            .map(|s| s.peaks.clone())
            .unwrap_or_default()
    }
}

/// The machine's limits that 1000 tenants could reach: process ids, the ephemeral port range
/// (the tenants' ports are chosen below it), this process's open-files limit.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Limits {
    pub pid_max: u64,
    pub ephemeral_ports: String,
    pub open_files: u64,
}

impl Limits {
    pub fn read() -> Limits {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0;
        Limits {
            pid_max: read("/proc/sys/kernel/pid_max").trim().parse().unwrap_or(0),
            ephemeral_ports: read("/proc/sys/net/ipv4/ip_local_port_range")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join("-"),
            open_files: if ok { rl.rlim_cur } else { 0 },
        }
    }
}

/// Raises this process's open-files limit to its hard limit (its clients hold a connection per
/// wake-up in flight).
pub fn raise_open_files() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}
