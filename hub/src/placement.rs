//! Where to restore a tenant: prefer the worker whose local tier already holds most of the
//! tenant's pages (they need no fetch from the cold tier), among workers alive, not draining and
//! with room.

/// What the hub knows of one worker when placing one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub worker: String,
    /// Whether its last heartbeat is recent enough.
    pub alive: bool,
    /// Drained by an operator: it takes no tenant.
    pub draining: bool,
    /// Memory it can still give tenants, in bytes.
    pub free_bytes: u64,
    /// Bytes of this tenant's checkpoint already in its local tier.
    pub resident_bytes: u64,
    /// Its load average per core.
    pub load: f64,
}

impl Candidate {
    /// `worker` as its last heartbeat shows it, holding `held_pages` of the tenant's pages.
    pub fn of(worker: &crate::registry::WorkerView, held_pages: u64) -> Candidate {
        Candidate {
            worker: worker.name.clone(),
            alive: worker.alive,
            draining: worker.draining,
            free_bytes: worker.memory_available_bytes,
            resident_bytes: held_pages * pagestore::PAGE_SIZE as u64,
            load: worker.load,
        }
    }
}

/// Picks the worker for a tenant whose checkpoint holds `tenant_bytes` of memory.
///
/// Workers that are down, draining or lack room are never chosen. Among the rest, the one holding most of
/// the tenant's pages locally wins (fewest cold fetches, fastest restore); ties go to the one with
/// most free memory, then to the least loaded, then to the name, so the choice is deterministic.
pub fn choose(candidates: &[Candidate], tenant_bytes: u64) -> Option<&Candidate> {
    candidates
        .iter()
        .filter(|c| c.alive && !c.draining && c.free_bytes >= tenant_bytes)
        .max_by(|a, b| {
            (a.resident_bytes, a.free_bytes)
                .cmp(&(b.resident_bytes, b.free_bytes))
                .then_with(|| b.load.total_cmp(&a.load))
                .then_with(|| b.worker.cmp(&a.worker))
        })
}

/// Why `chosen` won among `among` candidates, for the logs and `pico hub ls tenants`.
pub fn reason(chosen: &Candidate, among: usize) -> String {
    if chosen.resident_bytes > 0 {
        format!(
            "{} holds {} of its pages locally (the most of {among} workers)",
            chosen.worker,
            chosen.resident_bytes / pagestore::PAGE_SIZE as u64
        )
    } else {
        format!(
            "{} has the most free memory ({} MiB) of {among} workers holding none of its pages",
            chosen.worker,
            chosen.free_bytes >> 20
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(worker: &str, alive: bool, free: u64, resident: u64) -> Candidate {
        Candidate {
            worker: worker.into(),
            alive,
            draining: false,
            free_bytes: free,
            resident_bytes: resident,
            load: 0.5,
        }
    }

    #[test]
    fn prefers_the_worker_that_already_has_the_pages() {
        let cs = [
            c("a", true, 1000, 10),
            c("b", true, 500, 90),
            c("c", true, 2000, 0),
        ];
        assert_eq!(choose(&cs, 100).unwrap().worker, "b");
    }

    #[test]
    fn never_picks_a_dead_or_full_worker() {
        let cs = [
            c("a", false, 1000, 100),
            c("b", true, 50, 100),
            c("c", true, 1000, 0),
        ];
        assert_eq!(choose(&cs, 100).unwrap().worker, "c");
        assert!(choose(&cs[..2], 100).is_none());
    }

    #[test]
    fn never_picks_a_draining_worker_however_much_it_holds() {
        let mut drained = c("a", true, 1000, 100);
        drained.draining = true;
        let cs = [drained, c("b", true, 1000, 0)];
        assert_eq!(choose(&cs, 1).unwrap().worker, "b");
        assert!(choose(&cs[..1], 1).is_none());
    }

    #[test]
    fn equal_memory_goes_to_the_least_loaded() {
        let mut busy = c("a", true, 1000, 0);
        busy.load = 1.5;
        let cs = [busy, c("b", true, 1000, 0)];
        assert_eq!(choose(&cs, 1).unwrap().worker, "b");
    }

    #[test]
    fn ties_break_on_free_memory_then_name() {
        let cs = [
            c("b", true, 1000, 0),
            c("a", true, 1000, 0),
            c("c", true, 999, 0),
        ];
        assert_eq!(choose(&cs, 1).unwrap().worker, "a");
    }
}
