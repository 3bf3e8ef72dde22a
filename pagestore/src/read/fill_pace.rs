//! The pace of a fill's cold reads: how many bytes the GETs that fill an image in behind a
//! restore keep in flight, and in ranges of what size.
//!
//! A fill reads the rest of a tenant's image (the large heap's 272 MB) while the restored tenant
//! runs and faults. Unpaced, its batches put some 32 GETs of 4 MiB (128 MiB) in flight at once;
//! they shared the cold tier's bandwidth, each took ~600 ms to arrive, and a fault whose page
//! one of them carried waited for all of it: without an ActiveSet, the large heap's first
//! answer came after 80-113 MB had been fetched (p50 735-738 ms in two runs of 10). Paced, the
//! fill keeps at most [`FILL_BYTES_IN_FLIGHT`] in flight in ranges of at most [`FILL_RANGE`], so
//! a GET a fault joins arrives within about a round trip and a GET of its own is not queued
//! behind 128 MiB (44-45 MB before the first answer, p50 514-587 ms; node walking a Map, whose
//! answer needs most of its 11 MB rest, 477-471 against 541-643; the Python dict 735-761
//! against 628-742, within its runs' spread). A fill GET waiting for the budget is not in
//! flight: a fault on one of its pages sends its own. The budget is a round trip's worth of
//! what this VM's Garage serves (~120-190 MB/s in all through the latency proxy); more (16 MiB)
//! left the large heap at 627-643 ms, less (2-4 MiB) did not answer it sooner.
//!
//! Measured with `pico bench restore --apps large-heap,py-dict,node-map --modes lazy-cold
//! --runs 10 --settle`, paced and unpaced alternated (bench/results/restore-fill-pace).

use tokio::sync::{Semaphore, SemaphorePermit};

/// The most bytes a fill's GETs keep in flight, over all fills of the store.
pub const FILL_BYTES_IN_FLIGHT: u64 = 8 << 20;
/// The largest range a fill's GET asks for: one block of Garage, which reads and checks a whole
/// block for any range of it (bench/results/restore-locality-ranges).
pub const FILL_RANGE: u64 = 1 << 20;

/// The budget is counted in KiB, so that it fits a semaphore's `u32` permits.
const UNIT: u64 = 1 << 10;

/// The fills' budget of bytes in flight.
pub(crate) struct FillPace {
    budget: Semaphore,
    units: u32,
}

impl Default for FillPace {
    fn default() -> FillPace {
        let units = u32::try_from(FILL_BYTES_IN_FLIGHT.div_ceil(UNIT)).unwrap_or(u32::MAX);
        FillPace {
            budget: Semaphore::new(units as usize),
            units,
        }
    }
}

impl FillPace {
    /// Waits until a GET of `bytes` fits the budget (one larger than the whole budget waits for
    /// all of it); the bytes count as in flight while the permit lives.
    pub(crate) async fn admit(&self, bytes: u64) -> Option<SemaphorePermit<'_>> {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.units);
        // Never closed: `None` only if it were, and then the GET goes unpaced.
        self.budget.acquire_many(units).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gets_wait_while_the_budget_is_spent_and_go_when_it_is_back() {
        let pace = FillPace::default();
        let first = pace.admit(FILL_BYTES_IN_FLIGHT - FILL_RANGE).await;
        let second = pace.admit(FILL_RANGE).await;
        assert!(first.is_some() && second.is_some());
        // The budget is spent: a third waits.
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), pace.admit(1));
        assert!(third.await.is_err());
        drop(second);
        let third = tokio::time::timeout(std::time::Duration::from_secs(5), pace.admit(1)).await;
        assert!(matches!(third, Ok(Some(_))));
        // A GET larger than the whole budget waits for all of it (the third holds a KiB of it),
        // and is not refused.
        drop(first);
        let huge = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            pace.admit(2 * FILL_BYTES_IN_FLIGHT),
        );
        assert!(huge.await.is_err());
        drop(third);
        assert!(pace.admit(2 * FILL_BYTES_IN_FLIGHT).await.is_some());
    }
}
