//! Sequential round trips to the cold tier, counted as *waves* of reads.
//!
//! What a wake-up from the cold tier waits for is not how many requests it sends but how many
//! round trips it makes one after another: 30 ranged GETs in flight together cost about one
//! round trip, three GETs each sent when the last one answered cost three (through the bench's
//! latency proxy, ~50 ms each). A wave begins when the number of cold reads in flight (GET,
//! ranged GET, LIST) goes from none to one; reads that overlap it, however many, belong to it.
//! So the waves between two moments are the sequential round trips made between them, as long
//! as nothing else reads the cold tier meanwhile. Counted per call of [`super::ColdTier`]: a LIST
//! of more than one page (S3 answers 1000 keys at a time) or a request retried after a failure is
//! one wave, though it took several round trips.
//!
//! Two atomics per read, no lock: cheap enough to count every read.

use std::sync::atomic::{AtomicU64, Ordering};

/// Cold reads in flight now, and the waves since the store opened.
#[derive(Debug, Default)]
pub struct ReadWaves {
    in_flight: AtomicU64,
    waves: AtomicU64,
}

impl ReadWaves {
    /// A read starts; it counts as in flight until the returned guard is dropped (the read
    /// answered, failed or was cancelled).
    pub fn start(&self) -> ReadInFlight<'_> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.waves.fetch_add(1, Ordering::Relaxed);
        }
        ReadInFlight(self)
    }

    /// Reads under way right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Times the reads in flight went from none to one.
    pub fn waves(&self) -> u64 {
        self.waves.load(Ordering::Relaxed)
    }
}

/// One cold read under way (see [`ReadWaves::start`]).
#[must_use = "the read counts as in flight only while this guard lives"]
pub struct ReadInFlight<'a>(&'a ReadWaves);

impl Drop for ReadInFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_reads_are_one_wave() {
        let w = ReadWaves::default();
        let a = w.start();
        let b = w.start();
        assert_eq!(w.in_flight(), 2);
        drop(a);
        // A third that starts while the second is still out joins the same wave.
        let c = w.start();
        drop(b);
        drop(c);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.waves(), 1);
    }

    #[test]
    fn sequential_reads_are_one_wave_each() {
        let w = ReadWaves::default();
        drop(w.start());
        assert_eq!(w.in_flight(), 0);
        drop(w.start());
        assert_eq!(w.waves(), 2);
    }
}
