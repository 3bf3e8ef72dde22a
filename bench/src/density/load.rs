//! Driving the population: its registration at a steady rate, and wake-ups by real requests at
//! open-loop rates (Poisson arrivals: each request is sent at its time whether or not earlier
//! ones were answered, as independent users would; a closed loop would slow down with the host
//! and hide its queueing).
//!
//! The benchmark knows each tenant's state from the worker's own listing (`tenant ls`, polled
//! every [`POLL`]): a wake-up goes to a random tenant that the last listing showed swapped out
//! and that no request touched since that listing began. When no tenant is asleep, it goes to a
//! random running one and is counted apart (`found_running`), outside the wake-up latencies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tracing::{info, warn};
use worker::protocol::{Client, Request};

use super::population::{Kind, Tenant};
use crate::error::{Error, Result};

/// How often the tenants' states are listed.
pub const POLL: Duration = Duration::from_secs(1);

/// One tenant and what the benchmark knows of it.
struct Slot {
    tenant: Tenant,
    /// Its state in the last listing (`""` before it was added).
    state: String,
    /// Added and given its state.
    registered: bool,
    /// Seen swapped out after its registration: it counts.
    counted: bool,
    /// A request of ours is under way.
    in_flight: bool,
    /// When a request of ours last ended (or began).
    touched: Option<Instant>,
    /// When the listing that last showed it swapped out began.
    seen_asleep: Option<Instant>,
}

impl Slot {
    fn asleep(&self) -> bool {
        self.registered
            && !self.in_flight
            && self.state == "swapped-out"
            && match (self.seen_asleep, self.touched) {
                (Some(seen), Some(touched)) => seen > touched,
                (Some(_), None) => true,
                _ => false,
            }
    }

    fn awake(&self) -> bool {
        self.registered && self.state != "swapped-out"
    }
}

/// The population, shared by the registration, the poller and the wake-ups.
#[derive(Clone)]
pub struct Population {
    slots: Arc<Mutex<Vec<Slot>>>,
    index: Arc<HashMap<String, usize>>,
}

/// Counts of the population by what the benchmark knows.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Census {
    pub registered: usize,
    pub counted: usize,
    pub asleep: usize,
    pub awake: usize,
}

impl Population {
    pub fn new(tenants: Vec<Tenant>) -> Population {
        let index = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let slots = tenants
            .into_iter()
            .map(|tenant| Slot {
                tenant,
                state: String::new(),
                registered: false,
                counted: false,
                in_flight: false,
                touched: None,
                seen_asleep: None,
            })
            .collect();
        Population {
            slots: Arc::new(Mutex::new(slots)),
            index: Arc::new(index),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Slot>) -> T) -> T {
        // A panic elsewhere while holding the lock leaves consistent enough data to go on.
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut slots)
    }

    pub fn census(&self) -> Census {
        self.with(|slots| Census {
            registered: slots.iter().filter(|s| s.registered).count(),
            counted: slots.iter().filter(|s| s.counted).count(),
            asleep: slots.iter().filter(|s| s.asleep()).count(),
            awake: slots.iter().filter(|s| s.awake()).count(),
        })
    }

    /// States of the registered tenants that are neither asleep nor running (`exited`,
    /// `failed`): each is a lost tenant.
    pub fn lost(&self) -> Vec<(String, String)> {
        self.with(|slots| {
            slots
                .iter()
                .filter(|s| s.registered && (s.state == "exited" || s.state == "failed"))
                .map(|s| (s.tenant.name.clone(), s.state.clone()))
                .collect()
        })
    }

    /// Lists the tenants every [`POLL`] until the population is dropped; the time each listing
    /// took goes to the log at debug level.
    pub fn poll(&self, socket: &Path) {
        let weak = Arc::downgrade(&self.slots);
        let index = self.index.clone();
        let client = Client::new(socket);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                let began = Instant::now();
                let listing = match client.call(&Request::Ls).await {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "listing the tenants failed");
                        continue;
                    }
                };
                tracing::debug!(ms = began.elapsed().as_millis() as u64, "tenants listed");
                let Some(slots) = weak.upgrade() else { return };
                let mut slots = match slots.lock() {
                    Ok(s) => s,
                    Err(p) => p.into_inner(),
                };
                for t in listing.as_array().into_iter().flatten() {
                    let (Some(name), Some(state)) = (t["name"].as_str(), t["state"].as_str())
                    else {
                        continue;
                    };
                    let Some(&i) = index.get(name) else { continue };
                    let slot = &mut slots[i];
                    slot.state = state.to_string();
                    if state == "swapped-out" {
                        slot.seen_asleep = Some(began);
                        if slot.registered {
                            slot.counted = true;
                        }
                    }
                }
            }
        });
    }

    /// Takes a random tenant for a wake-up: a sleeping one if any (`true`), else a running
    /// one (`false`); marks it in flight.
    fn take(&self, rng: &mut Rng) -> Option<(usize, Tenant, bool)> {
        self.with(|slots| {
            let asleep: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].asleep()).collect();
            let (pool, from_sleep) = if asleep.is_empty() {
                let idle: Vec<usize> = (0..slots.len())
                    .filter(|&i| slots[i].registered && !slots[i].in_flight)
                    .collect();
                (idle, false)
            } else {
                (asleep, true)
            };
            if pool.is_empty() {
                return None;
            }
            let i = pool[rng.below(pool.len())];
            slots[i].in_flight = true;
            slots[i].touched = Some(Instant::now());
            Some((i, slots[i].tenant.clone(), from_sleep))
        })
    }

    /// The end of a wake-up of tenant `i`: its next expected state if the answer was right.
    fn done(&self, i: usize, right: bool) {
        self.with(|slots| {
            let s = &mut slots[i];
            s.in_flight = false;
            s.touched = Some(Instant::now());
            if right {
                s.tenant.advance();
            }
        })
    }

    fn registered(&self, i: usize, tenant: Tenant) {
        self.with(|slots| {
            let s = &mut slots[i];
            s.tenant = tenant;
            s.registered = true;
            s.touched = Some(Instant::now());
        })
    }

    fn tenant(&self, i: usize) -> Tenant {
        self.with(|slots| slots[i].tenant.clone())
    }

    pub fn name(&self, i: usize) -> String {
        self.with(|slots| slots[i].tenant.name.clone())
    }

    pub fn len(&self) -> usize {
        self.with(|slots| slots.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `done(census)` holds (checked every [`POLL`]), at most `limit`; whether
    /// it did.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&Census) -> bool) -> bool {
        let started = Instant::now();
        loop {
            if done(&self.census()) {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A small deterministic generator (xorshift64*): the same seed, the same choices and
/// arrivals.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// The wait before the next arrival of a Poisson process of `rate` per second.
    pub fn exponential(&mut self, rate: f64) -> Duration {
        Duration::from_secs_f64(-self.unit().ln() / rate)
    }
}

/// What registering the population took.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Registration {
    pub asked_rate_per_s: f64,
    /// Tenants added and given their state.
    pub registered: usize,
    pub failed: usize,
    /// The first failures, with why.
    pub failures: Vec<String>,
    /// From the first add to the last tenant given its state.
    pub seconds: f64,
    /// registered / seconds.
    pub achieved_rate_per_s: f64,
    /// Time of one add (the tenant started and listening), p50 and p95, ms.
    pub add_p50_ms: f64,
    pub add_p95_ms: f64,
}

/// What a registration needs to add a tenant.
pub struct Adder {
    pub socket: PathBuf,
    pub repo: PathBuf,
    pub apps: PathBuf,
    pub idle_ms: u64,
    pub redis_keys: usize,
    /// Adds under way at most (the worker starts tenants concurrently).
    pub concurrency: usize,
}

/// Adds every tenant of `pop`, one every 1/`rate` s (later when `concurrency` adds are still
/// under way), and gives each its state.
pub async fn register(pop: &Population, adder: Adder, rate: f64) -> Result<Registration> {
    let adder = Arc::new(adder);
    let client = Arc::new(Client::new(&adder.socket));
    let limit = Arc::new(tokio::sync::Semaphore::new(adder.concurrency.max(1)));
    let n = pop.len();
    let bar = crate::progress::bar(n as u64, "register");
    bar.set_message("tenants added and given their state");
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut results = Vec::new();
    for i in 0..n {
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Client(e.to_string()))?;
        let (pop, adder, client) = (pop.clone(), adder.clone(), client.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let mut tenant = pop.tenant(i);
            let began = Instant::now();
            let spec = tenant.spec(&adder.repo, &adder.apps, adder.idle_ms)?;
            client
                .call(&Request::Add(spec))
                .await
                .map_err(|e| Error::Step(format!("adding {}", tenant.name), e.to_string()))?;
            let add = began.elapsed();
            tenant.write_state(i, adder.redis_keys).await?;
            pop.registered(i, tenant);
            Ok::<Duration, Error>(add)
        });
        while let Some(r) = tasks.try_join_next() {
            bar.inc(1);
            results.push(joined(r)?);
        }
    }
    while let Some(r) = tasks.join_next().await {
        bar.inc(1);
        results.push(joined(r)?);
    }
    bar.finish_and_clear();
    let mut out = Registration {
        asked_rate_per_s: rate,
        seconds: started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let mut adds = Vec::new();
    for r in results {
        match r {
            Ok(d) => adds.push(d.as_secs_f64() * 1000.0),
            Err(e) => {
                warn!(error = %e, "a tenant could not be registered");
                if out.failures.len() < 10 {
                    out.failures.push(e.to_string());
                }
            }
        }
    }
    out.registered = pop.census().registered;
    out.failed = n - out.registered;
    out.achieved_rate_per_s = out.registered as f64 / out.seconds.max(1e-9);
    adds.sort_by(f64::total_cmp);
    out.add_p50_ms = crate::restore::percentile(&adds, 50.0);
    out.add_p95_ms = crate::restore::percentile(&adds, 95.0);
    info!(
        registered = out.registered,
        failed = out.failed,
        seconds = out.seconds,
        "population registered"
    );
    Ok(out)
}

/// A registration task's outcome; a panic is an error of the benchmark.
fn joined(
    r: std::result::Result<Result<Duration>, tokio::task::JoinError>,
) -> Result<Result<Duration>> {
    r.map_err(|e| Error::Client(format!("a registration task: {e}")))
}

/// One wake-up request as measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WakeSample {
    pub tenant: String,
    pub kind: Kind,
    /// Sent at, seconds from the phase's start.
    pub at_s: f64,
    /// Connect to first byte of the answer, ms (none: no answer).
    pub first_byte_ms: Option<f64>,
    /// The tenant was asleep when the request was sent.
    pub from_sleep: bool,
    /// The answer carried its own state.
    pub right: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sends wake-ups at Poisson arrivals of `rate` per second for `duration`, each to a random
/// sleeping tenant; every sample once all are answered.
pub async fn wake_phase(
    pop: &Population,
    rate: f64,
    duration: Duration,
    rng: &mut Rng,
    label: &str,
) -> Result<Vec<WakeSample>> {
    let started = Instant::now();
    let mut next = started;
    let mut tasks = JoinSet::new();
    let bar = crate::progress::bar(duration.as_secs(), label);
    bar.set_message(format!("wake-ups at {rate}/s"));
    loop {
        next += rng.exponential(rate);
        if next.duration_since(started) >= duration {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        bar.set_position(started.elapsed().as_secs());
        let Some((i, tenant, from_sleep)) = pop.take(rng) else {
            warn!("no tenant to wake: every one has a request under way");
            continue;
        };
        let at_s = next.duration_since(started).as_secs_f64();
        let pop = pop.clone();
        tasks.spawn(async move {
            let (first_byte_ms, right, error) = match tenant.wake().await {
                Ok(w) => (
                    Some(w.first_byte.as_secs_f64() * 1000.0),
                    w.right,
                    (!w.right).then_some(w.answer),
                ),
                Err(e) => (None, false, Some(e.to_string())),
            };
            pop.done(i, right);
            WakeSample {
                tenant: tenant.name,
                kind: tenant.kind,
                at_s,
                first_byte_ms,
                from_sleep,
                right,
                error,
            }
        });
    }
    bar.set_message(format!(
        "wake-ups at {rate}/s: waiting for the last answers"
    ));
    let mut samples = Vec::new();
    while let Some(r) = tasks.join_next().await {
        samples.push(r.map_err(|e| Error::Client(format!("a wake-up task: {e}")))?);
    }
    bar.finish_and_clear();
    samples.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(samples)
}
