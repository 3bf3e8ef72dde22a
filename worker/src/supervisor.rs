//! The decisions the worker takes on its own: swap a tenant out when it has been idle for its
//! timeout or when the host runs short of memory, and wake it when a connection arrives.
//!
//! Every decision is logged with the tenant, its reason and its timings, so that an operator can
//! tell why a tenant slept, why it woke and how long its client waited. Swaps run at most
//! `max_concurrent_swaps` at a time; swap-ins go first (the worker starts no swap-out of its own
//! while one waits), and a swap-in first makes room for the tenant's last RSS above the memory
//! floor by swapping out the least recently active tenants.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, info_span, warn, Instrument};

use crate::error::Result;
use crate::host::{lock_std, TenantSlot, Worker};
use crate::host_memory;
use crate::tenant::TenantState;

/// Why a tenant is swapped in or out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// An operator asked (`pico tenant swap-out` / `swap-in`).
    Command,
    /// A connection arrived for a sleeping tenant.
    Connection,
    /// No byte crossed its connections for its idle timeout.
    Idle,
    /// The host's available memory fell under the floor (or pressure rose).
    MemoryPressure,
    /// Room for a tenant being woken.
    RoomForWakeUp,
    /// The worker is stopping (`on_stop = "swap-out"`).
    WorkerStopping,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Command => "command",
            Reason::Connection => "connection",
            Reason::Idle => "idle",
            Reason::MemoryPressure => "memory-pressure",
            Reason::RoomForWakeUp => "room-for-wake-up",
            Reason::WorkerStopping => "worker-stopping",
        }
    }
}

/// How often idleness and memory are checked.
const TICK: Duration = Duration::from_millis(500);

/// A tenant active this recently is not evicted for memory.
const MIN_RESIDENCY_MS: u64 = 2_000;

/// Every how many ticks freed heap is handed back to the host (see [`host_memory::give_back`]).
const GIVE_BACK_EVERY: u64 = 4;

/// Every how many ticks the store's memory tier drops the pages nobody read for its `ttl_ms`
/// (one pass over it under its lock), just before a give-back.
const DROP_UNREAD_EVERY: u64 = 8;

/// Under memory pressure, the memory tier's pages unread this long go before any tenant.
const PRESSURE_KEEPS_READ_WITHIN: Duration = Duration::from_secs(2);

/// A swap-in waiting for a swap slot, counted in `swap_ins_waiting` while it lives: the
/// supervisor starts no swap-out of its own meanwhile. A wait given up (dropped) counts no more.
struct WaitingSwapIn<'w>(&'w std::sync::atomic::AtomicUsize);

impl<'w> WaitingSwapIn<'w> {
    fn new(waiting: &'w std::sync::atomic::AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        WaitingSwapIn(waiting)
    }
}

impl Drop for WaitingSwapIn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One of `slots` for a swap-in, counted in `waiting` until it has it (or gives up).
async fn slot_for_swap_in<'s>(
    slots: &'s tokio::sync::Semaphore,
    waiting: &std::sync::atomic::AtomicUsize,
) -> Option<tokio::sync::SemaphorePermit<'s>> {
    let _waiting = WaitingSwapIn::new(waiting);
    slots.acquire().await.ok()
}

impl Worker {
    /// A swap slot for a swap-in: while it waits, the worker's own swap-outs wait for it.
    pub(crate) async fn swap_in_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        slot_for_swap_in(&self.swap_slots, &self.swap_ins_waiting).await
    }

    /// Wakes a sleeping tenant (a swap-in that takes precedence over swap-outs), first making
    /// room for it above the memory floor. Nothing happens if it is running by then.
    ///
    /// On a task of its own: the connection that asked may be given up meanwhile (its hold
    /// timeout, its client gone), and dropping a swap-in half done would leave the tenant
    /// `swapping-in`; the wake-up finishes for the connections that come next.
    pub(crate) async fn wake(
        self: &Arc<Self>,
        slot: &Arc<TenantSlot>,
        reason: Reason,
    ) -> Result<()> {
        let span = info_span!("tenant", tenant = %slot.name);
        let (worker, slot) = (Arc::clone(self), Arc::clone(slot));
        tokio::spawn(async move { worker.wake_now(&slot, reason).await }.instrument(span))
            .await
            .map_err(|source| crate::error::Error::TaskFailed {
                task: "wake-up",
                source,
            })?
    }

    async fn wake_now(self: &Arc<Self>, slot: &Arc<TenantSlot>, reason: Reason) -> Result<()> {
        let _permit = self.swap_in_slot().await;
        let _gate = slot.gate.write().await;
        let (state, rss) = {
            let rt = slot.runtime.lock().await;
            (rt.info.state, rt.info.rss_bytes.unwrap_or(0))
        };
        if state != TenantState::SwappedOut {
            return Ok(());
        }
        let started = Instant::now();
        let evicted = self.make_room(slot, rss).await;
        // Boxed: the swap-in pipeline is a deep future.
        let report = Box::pin(self.swap_in_now(&slot.name, true, None)).await?;
        slot.activity.touch();
        info!(
            tenant = %slot.name,
            reason = reason.as_str(),
            swap_in_ms = report.total_ms,
            room_made_for = evicted,
            total_ms = started.elapsed().as_millis() as u64,
            "woke tenant"
        );
        Ok(())
    }

    /// Swaps a running tenant out for `reason`: its connections are closed first (cleanly),
    /// then it is dumped while no new one is forwarded. In the tenant's span, whoever asked.
    pub(crate) async fn swap_out_because(
        self: &Arc<Self>,
        slot: &Arc<TenantSlot>,
        reason: Reason,
        take_slot: bool,
    ) -> Result<crate::tenant::SwapOutReport> {
        let span = info_span!("tenant", tenant = %slot.name);
        Box::pin(self.close_and_swap_out(slot, reason, take_slot))
            .instrument(span)
            .await
    }

    async fn close_and_swap_out(
        self: &Arc<Self>,
        slot: &Arc<TenantSlot>,
        reason: Reason,
        take_slot: bool,
    ) -> Result<crate::tenant::SwapOutReport> {
        // Cut off from the hub, the tenant may be another worker's by now: no checkpoint.
        self.fence.check()?;
        let _permit = if take_slot {
            self.swap_slots.acquire().await.ok()
        } else {
            None
        };
        let started = Instant::now();
        slot.activity.close_all();
        let _gate = slot.gate.write().await;
        let idle_for_ms = pagestore::clock::now_ms().saturating_sub(slot.activity.last_ms());
        let swapped = async {
            // Its next connections wait at the worker's listener; those the kernel forwarded
            // are closed as the relayed ones were.
            let closed = self.take_port_back(slot).await?;
            crate::quiesce::settle(slot, closed > 0).await;
            Box::pin(self.swap_out_now(&slot.name)).await
        };
        let report = match swapped.await {
            Ok(report) => {
                lock_std(&slot.swap_out_backoff).succeeded();
                report
            }
            Err(e) => {
                let retry_in = lock_std(&slot.swap_out_backoff).failed(pagestore::clock::now_ms());
                warn!(
                    tenant = %slot.name,
                    reason = reason.as_str(),
                    error = %e,
                    retry_in_s = retry_in.as_secs(),
                    "swap-out failed; the tenant keeps running"
                );
                return Err(e);
            }
        };
        let _ = tokio::task::spawn_blocking(host_memory::give_back).await;
        info!(
            tenant = %slot.name,
            reason = reason.as_str(),
            idle_for_ms,
            dump_ms = report.dump_ms,
            ingest_ms = report.ingest_ms,
            total_ms = started.elapsed().as_millis() as u64,
            freed_bytes = report.rss_bytes,
            "swapped tenant out"
        );
        Ok(report)
    }

    /// Swaps out the least recently active running tenants (never `waking`) until the memory
    /// above the floor covers `need` bytes, or none is left; how many went.
    async fn make_room(self: &Arc<Self>, waking: &Arc<TenantSlot>, need: u64) -> usize {
        let floor = self.config.memory_floor_mib << 20;
        if floor == 0 {
            return 0;
        }
        let mut evicted = 0;
        while host_memory::available().is_some_and(|avail| avail < floor.saturating_add(need)) {
            let Some(victim) = self.least_recently_active(Some(waking)).await else {
                break;
            };
            match Box::pin(self.swap_out_because(&victim, Reason::RoomForWakeUp, false)).await {
                Ok(_) => evicted += 1,
                Err(e) => {
                    warn!(tenant = %victim.name, error = %e, "could not make room");
                    break;
                }
            }
        }
        evicted
    }

    /// The running tenant whose last byte is oldest, other than `except` and other than one
    /// active within [`MIN_RESIDENCY_MS`] (just woken, or serving: under a floor that cannot be
    /// met it would be swapped out as soon as it answered); tenants busy with a swap are passed
    /// over.
    async fn least_recently_active(
        &self,
        except: Option<&Arc<TenantSlot>>,
    ) -> Option<Arc<TenantSlot>> {
        let now = pagestore::clock::now_ms();
        let mut candidates = Vec::new();
        for slot in self.tenants.all() {
            if except.is_some_and(|e| Arc::ptr_eq(e, &slot)) || slot.netns.is_none() {
                continue;
            }
            let Ok(rt) = slot.runtime.try_lock() else {
                continue;
            };
            let last = slot.activity.last_ms();
            if rt.info.state == TenantState::Running && now.saturating_sub(last) >= MIN_RESIDENCY_MS
            {
                let failing = lock_std(&slot.swap_out_backoff).failing();
                candidates.push(((failing, last), slot.clone()));
            }
        }
        // Tenants whose swap-outs commit go first: one that failed lately (its store
        // unreachable, say) would likely fail again and free nothing.
        candidates.sort_by_key(|(key, _)| *key);
        candidates.into_iter().next().map(|(_, slot)| slot)
    }
}

/// Watches idleness and memory until the worker stops.
pub(crate) fn start(worker: Arc<Worker>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for ticks in 0u64.. {
            tick.tick().await;
            crate::kernel_forward::reconcile(&worker);
            sweep_idle(&worker).await;
            sweep_checkpoints(&worker).await;
            relieve_pressure(&worker).await;
            if ticks % DROP_UNREAD_EVERY == DROP_UNREAD_EVERY - 1 {
                drop_unread_pages(&worker).await;
                release_unused_staging(&worker).await;
            }
            if ticks % GIVE_BACK_EVERY == 0 {
                // What background work (recompression, fills) freed since.
                let _ = tokio::task::spawn_blocking(host_memory::give_back).await;
            }
        }
    })
}

/// Starts a swap-out of every running tenant idle for its timeout (none while a swap-in
/// waits).
async fn sweep_idle(worker: &Arc<Worker>) {
    let now = pagestore::clock::now_ms();
    let idle = |slot: &TenantSlot, info: &crate::tenant::TenantInfo| {
        lock_std(&slot.swap_out_backoff).ready(now)
            && slot.activity.idle_at(now, info.idle_timeout_ms)
    };
    for slot in claim_due(worker, idle) {
        let worker = worker.clone();
        tokio::spawn(async move {
            // A failure is logged, and backed off, by `swap_out_because`.
            let _ = worker.swap_out_because(&slot, Reason::Idle, true).await;
            slot.auto_swap.store(false, Ordering::SeqCst);
        });
    }
}

/// Starts a checkpoint of every running tenant whose `checkpoint_every` is due (none while a
/// swap-in waits; one at a time per tenant, never beside its idle swap-out).
async fn sweep_checkpoints(worker: &Arc<Worker>) {
    let now = pagestore::clock::now_ms();
    let due = |slot: &TenantSlot, info: &crate::tenant::TenantInfo| {
        crate::checkpoint::due(
            info.checkpoint_every_ms,
            slot.checkpointed_at.load(Ordering::SeqCst),
            slot.activity.last_ms(),
            now,
        )
    };
    for slot in claim_due(worker, due) {
        let worker = worker.clone();
        tokio::spawn(async move {
            if let Err(e) = worker.checkpoint_running(&slot).await {
                warn!(tenant = %slot.name, error = %e, "checkpoint of a running tenant failed; trying again at its next interval");
                slot.checkpointed_at
                    .store(pagestore::clock::now_ms(), Ordering::SeqCst);
            }
            slot.auto_swap.store(false, Ordering::SeqCst);
        });
    }
}

/// The running, served tenants for which `due` holds (asked without waiting for a record a
/// flow holds), each marked as taken by the supervisor (`auto_swap`, which the job clears when
/// it ends): none while a swap-in waits for a slot.
fn claim_due(
    worker: &Worker,
    due: impl Fn(&TenantSlot, &crate::tenant::TenantInfo) -> bool,
) -> Vec<Arc<TenantSlot>> {
    if worker.swap_ins_waiting.load(Ordering::SeqCst) > 0 {
        return Vec::new();
    }
    let mut claimed = Vec::new();
    for slot in worker.tenants.all() {
        if slot.netns.is_none() || slot.auto_swap.load(Ordering::SeqCst) {
            continue;
        }
        let is_due = match slot.runtime.try_lock() {
            Ok(rt) => rt.info.state == TenantState::Running && due(&slot, &rt.info),
            Err(_) => false,
        };
        if is_due {
            slot.auto_swap.store(true, Ordering::SeqCst);
            claimed.push(slot);
        }
    }
    claimed
}

/// Unmounts the whole restores' kept tmpfs beside the first that none used for a while (see
/// `whole_staging`): memory held for concurrent wake-ups goes back once they are over.
async fn release_unused_staging(worker: &Arc<Worker>) {
    let w = worker.clone();
    let unused = crate::whole_staging::EXTRA_KEPT_FOR;
    if let Ok(released @ 1..) =
        tokio::task::spawn_blocking(move || w.whole_staging.release_unused(unused)).await
    {
        debug!(released, "staging tmpfs beside the first unmounted, unused");
    }
}

/// Drops the store's memory-tier pages nobody read for `[hot] ttl_ms`: on a host whose tenants
/// all sleep, a full tier is memory held against idle tenants.
async fn drop_unread_pages(worker: &Arc<Worker>) {
    let store = worker.store.clone();
    if let Ok(dropped @ 1..) = tokio::task::spawn_blocking(move || store.drop_unread_hot()).await {
        debug!(
            pages = dropped,
            ttl_ms = worker.store.config().hot.ttl_ms,
            "memory tier: dropped pages nobody read"
        );
    }
}

/// Under the memory floor (or above the pressure threshold), drops the memory tier's pages
/// nobody read for [`PRESSURE_KEEPS_READ_WITHIN`] (a cache goes before a tenant), then swaps out
/// the least recently active running tenants, one at a time, until the host is back above it.
async fn relieve_pressure(worker: &Arc<Worker>) {
    let floor = worker.config.memory_floor_mib << 20;
    let mut cache_dropped = false;
    loop {
        let short = floor > 0 && host_memory::available().is_some_and(|a| a < floor);
        let pressed = worker
            .config
            .memory_pressure_psi
            .is_some_and(|limit| host_memory::pressure_some_avg10().is_some_and(|p| p > limit));
        if !short && !pressed {
            return;
        }
        if !cache_dropped && !worker.store.hot().is_empty() {
            cache_dropped = true;
            let store = worker.store.clone();
            let dropped = tokio::task::spawn_blocking(move || {
                let dropped = store.hot().drop_unread(PRESSURE_KEEPS_READ_WITHIN);
                host_memory::give_back();
                dropped
            })
            .await
            .unwrap_or(0);
            if dropped > 0 {
                info!(
                    pages = dropped,
                    "memory short: dropped the memory tier's pages nobody read lately"
                );
                continue;
            }
        }
        let Some(victim) = worker.least_recently_active(None).await else {
            return;
        };
        let available_mib = host_memory::available().unwrap_or(0) >> 20;
        info!(tenant = %victim.name, available_mib, floor_mib = worker.config.memory_floor_mib, "memory short: evicting the least recently active tenant");
        if let Err(e) = worker
            .swap_out_because(&victim, Reason::MemoryPressure, true)
            .await
        {
            warn!(tenant = %victim.name, error = %e, "eviction failed");
            return;
        }
        if pressed && !short {
            // PSI averages over 10 s: one eviction per tick.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_swap_in_given_up_while_it_waits_for_a_slot_counts_no_more() {
        let (slots, waiting) = (tokio::sync::Semaphore::new(0), AtomicUsize::new(0));
        let given_up = tokio::time::timeout(
            Duration::from_millis(20),
            slot_for_swap_in(&slots, &waiting),
        )
        .await;
        assert!(given_up.is_err(), "no slot was free");
        assert_eq!(waiting.load(Ordering::SeqCst), 0, "the wait was dropped");
        slots.add_permits(1);
        assert!(slot_for_swap_in(&slots, &waiting).await.is_some());
        assert_eq!(waiting.load(Ordering::SeqCst), 0);
    }
}
