//! What a scrape reads from the worker itself, beside what flows recorded: its tenants by state
//! and its page store's counters. Nothing here waits: a tenant whose record a flow holds (a
//! swap in progress) is counted as busy, and the store is read from its counters and the sizes
//! its tiers keep, never by listing the cold tier.

use std::collections::BTreeMap;

use pagestore::stats::LiveCounters;

use crate::host::Worker;
use crate::metrics::exposition::{Exposition, Kind};

/// The whole scrape of `worker`, in the exposition format.
pub(crate) fn render(worker: &Worker) -> String {
    let mut out = Exposition::default();
    worker.metrics.write(&mut out);
    let states = worker.tenants.slots().into_iter().map(|slot| {
        slot.runtime
            .try_lock()
            .ok()
            .map(|rt| rt.info.state.to_string())
    });
    write_tenants(&mut out, states);
    let store = &worker.store;
    let held = StoreHeld {
        hot_bytes: (store.hot().len() * pagestore::PAGE_SIZE) as u64,
        local_bytes: store
            .local()
            .and_then(|local| local.usage().ok())
            .map(|(_, bytes)| bytes),
    };
    write_store(&mut out, &store.live_counters(), &held);
    out.into_text()
}

/// Tenants by state (`None`: busy, its record held by a flow).
fn write_tenants(out: &mut Exposition, states: impl Iterator<Item = Option<String>>) {
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    let mut busy = 0u64;
    for state in states {
        match state {
            Some(state) => *by_state.entry(state).or_default() += 1,
            None => busy += 1,
        }
    }
    out.by_label(
        "pico_tenants",
        Kind::Gauge,
        "Tenants by state (only states some tenant is in; busy ones are in pico_tenants_busy).",
        "state",
        by_state,
    );
    out.single(
        "pico_tenants_busy",
        Kind::Gauge,
        "Tenants a flow (a swap, a start, a status read) holds at scrape time: their state is \
         counted once it ends.",
        busy,
    );
}

/// The bytes the worker's store keeps on this machine.
struct StoreHeld {
    hot_bytes: u64,
    /// `None` without a local tier.
    local_bytes: Option<u64>,
}

fn write_store(out: &mut Exposition, c: &LiveCounters, held: &StoreHeld) {
    let counters = [
        (
            "pico_store_cold_gets_total",
            "GETs sent to the cold tier.",
            c.cold_gets,
        ),
        (
            "pico_store_cold_get_bytes_total",
            "Bytes read from the cold tier.",
            c.cold_get_bytes,
        ),
        (
            "pico_store_cold_waves_total",
            "Waves of cold-tier reads: sequential round trips (overlapping reads are one).",
            c.cold_waves,
        ),
        (
            "pico_store_cold_waits_total",
            "Waves of restores' and faults' waits on the cold tier: round trips waited for one after another.",
            c.cold_waits,
        ),
        (
            "pico_store_cold_pages_total",
            "Pages fetched from the cold tier.",
            c.cold_pages,
        ),
        (
            "pico_store_cold_puts_total",
            "PUTs sent to the cold tier.",
            c.cold_puts,
        ),
        (
            "pico_store_cold_put_bytes_total",
            "Bytes written to the cold tier.",
            c.cold_put_bytes,
        ),
        (
            "pico_store_local_hits_total",
            "Pages read from the local tier.",
            c.local_hits,
        ),
        (
            "pico_store_local_misses_total",
            "Pages the local tier did not hold.",
            c.local_misses,
        ),
    ];
    for (name, help, value) in counters {
        out.single(name, Kind::Counter, help, value);
    }
    let tiers = [("hot", Some(held.hot_bytes)), ("local", held.local_bytes)];
    out.by_label(
        "pico_store_held_bytes",
        Kind::Gauge,
        "Bytes of pages the store keeps on this machine, by tier (memory decoded, local encoded).",
        "tier",
        tiers
            .into_iter()
            .filter_map(|(tier, bytes)| Some((tier.to_string(), bytes?))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_counted_by_state_and_busy_apart() {
        let mut out = Exposition::default();
        let states = ["running", "swapped-out", "running"]
            .map(|s| Some(s.to_string()))
            .into_iter()
            .chain([None]);
        write_tenants(&mut out, states);
        let t = out.into_text();
        assert!(t.contains("\npico_tenants{state=\"running\"} 2\n"), "{t}");
        assert!(
            t.contains("\npico_tenants{state=\"swapped-out\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("\npico_tenants_busy 1\n"), "{t}");
    }

    #[test]
    fn store_counters_and_held_bytes() {
        let mut out = Exposition::default();
        let c = LiveCounters {
            cold_gets: 3,
            cold_get_bytes: 12288,
            cold_waves: 2,
            cold_waits: 4,
            ..LiveCounters::default()
        };
        let held = StoreHeld {
            hot_bytes: 8192,
            local_bytes: None,
        };
        write_store(&mut out, &c, &held);
        let t = out.into_text();
        assert!(t.contains("\npico_store_cold_gets_total 3\n"), "{t}");
        assert!(
            t.contains("\npico_store_cold_get_bytes_total 12288\n"),
            "{t}"
        );
        assert!(t.contains("\npico_store_cold_waves_total 2\n"), "{t}");
        assert!(t.contains("\npico_store_cold_waits_total 4\n"), "{t}");
        assert!(
            t.contains("\npico_store_held_bytes{tier=\"hot\"} 8192\n"),
            "{t}"
        );
        assert!(
            !t.contains("tier=\"local\""),
            "no local tier, no sample: {t}"
        );
    }
}
