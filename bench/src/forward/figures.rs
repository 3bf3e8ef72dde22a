//! The figures of `pico bench forward`: latency percentiles and throughput per side, and each
//! worker's forwarding against the direct runs, from what the rounds measured ([`Samples`]).

use std::time::Duration;

use serde::Serialize;

use crate::restore::{median, percentile, percentile_of};

/// Latency percentiles, µs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
}

impl Percentiles {
    pub(super) fn of(samples: &[Duration]) -> Percentiles {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        Percentiles {
            p50_us: percentile(&us, 50.0),
            p95_us: percentile(&us, 95.0),
            p99_us: percentile(&us, 99.0),
        }
    }

    /// Each percentile's median over `rounds`.
    fn median_of(rounds: &[Percentiles]) -> Percentiles {
        let pick = |f: fn(&Percentiles) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        Percentiles {
            p50_us: pick(|p| p.p50_us),
            p95_us: pick(|p| p.p95_us),
            p99_us: pick(|p| p.p99_us),
        }
    }

    fn minus(&self, other: &Percentiles) -> Percentiles {
        Percentiles {
            p50_us: self.p50_us - other.p50_us,
            p95_us: self.p95_us - other.p95_us,
            p99_us: self.p99_us - other.p99_us,
        }
    }
}

/// One kind of small request, direct against forwarded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyComparison {
    /// Medians over the rounds.
    pub direct: Percentiles,
    pub forwarded: Percentiles,
    /// forwarded − direct, the median of the rounds' differences.
    pub difference: Percentiles,
    pub rounds_direct: Vec<Percentiles>,
    pub rounds_forwarded: Vec<Percentiles>,
}

impl LatencyComparison {
    fn of(direct: Vec<Percentiles>, forwarded: Vec<Percentiles>) -> LatencyComparison {
        let differences: Vec<Percentiles> = forwarded
            .iter()
            .zip(&direct)
            .map(|(f, d)| f.minus(d))
            .collect();
        LatencyComparison {
            direct: Percentiles::median_of(&direct),
            forwarded: Percentiles::median_of(&forwarded),
            difference: Percentiles::median_of(&differences),
            rounds_direct: direct,
            rounds_forwarded: forwarded,
        }
    }
}

/// The large transfer, direct against forwarded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThroughputComparison {
    pub bytes: u64,
    /// Medians over the transfers, MB/s (10^6 bytes).
    pub direct_mb_s: f64,
    pub forwarded_mb_s: f64,
    /// forwarded / direct, the median of the ratios of transfers made one after the other.
    pub ratio: f64,
    /// Each side at its best: the 90th percentile of its transfers, MB/s. On this VM a direct
    /// transfer over the loopback falls to 2-4 GB/s (against 6-7) in about a quarter of the
    /// runs, far more often than a forwarded one, which lifts the median ratio above what
    /// forwarding costs when both sides run at full speed.
    pub direct_best_mb_s: f64,
    pub forwarded_best_mb_s: f64,
    /// forwarded_best_mb_s / direct_best_mb_s.
    pub best_ratio: f64,
    /// Every transfer, in the order made (`transfers` per round).
    pub rounds_direct_mb_s: Vec<f64>,
    pub rounds_forwarded_mb_s: Vec<f64>,
}

/// One worker's forwarding against the direct runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Forwarding {
    /// Kept-alive connection, one request at a time.
    pub keep_alive: LatencyComparison,
    /// A new connection per request (connect to last byte).
    pub per_connection: LatencyComparison,
    pub throughput: ThroughputComparison,
}

/// What the rounds measured, per side: direct, forwarded, the compared build's forwarding.
pub(super) struct Samples {
    pub(super) keep_alive: Vec<Vec<Percentiles>>,
    pub(super) per_connection: Vec<Vec<Percentiles>>,
    pub(super) transfer_s: Vec<Vec<f64>>,
}

impl Samples {
    pub(super) fn new(sides: usize) -> Samples {
        Samples {
            keep_alive: vec![Vec::new(); sides],
            per_connection: vec![Vec::new(); sides],
            transfer_s: vec![Vec::new(); sides],
        }
    }

    /// Side `side` against the direct one.
    pub(super) fn against_direct(&self, side: usize, large_bytes: u64) -> Forwarding {
        let mb_s = |runs: &[f64]| -> Vec<f64> {
            runs.iter()
                .map(|s| large_bytes as f64 / s.max(1e-9) / 1e6)
                .collect()
        };
        let (direct, forwarded) = (mb_s(&self.transfer_s[0]), mb_s(&self.transfer_s[side]));
        let ratios: Vec<f64> = forwarded
            .iter()
            .zip(&direct)
            .map(|(f, d)| f / d.max(1e-9))
            .collect();
        let (direct_best, forwarded_best) = (
            percentile_of(&direct, 90.0),
            percentile_of(&forwarded, 90.0),
        );
        Forwarding {
            keep_alive: LatencyComparison::of(
                self.keep_alive[0].clone(),
                self.keep_alive[side].clone(),
            ),
            per_connection: LatencyComparison::of(
                self.per_connection[0].clone(),
                self.per_connection[side].clone(),
            ),
            throughput: ThroughputComparison {
                bytes: large_bytes,
                direct_mb_s: median(&direct),
                forwarded_mb_s: median(&forwarded),
                ratio: median(&ratios),
                direct_best_mb_s: direct_best,
                forwarded_best_mb_s: forwarded_best,
                best_ratio: forwarded_best / direct_best.max(1e-9),
                rounds_direct_mb_s: direct,
                rounds_forwarded_mb_s: forwarded,
            },
        }
    }
}
