//! What a mode's measured swap-ins add up to: each one's time to the first answer, the cold-tier
//! traffic before that answer (bytes, sequential round trips) and what the worker's swap-in
//! report says, summed into a [`ModeResult`]. One place, so that every lazy mode, repeated or
//! first, counts the same way.

use worker::protocol::{Client, Request};

use super::{call, summarize, ModeResult};
use crate::Error;

/// The worker's cold-tier counters at one moment (`Request::Counters`, `pico store counters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ColdMark {
    /// Bytes read from the cold tier so far.
    pub get_bytes: u64,
    /// Waves of cold reads so far: sequential round trips (`pagestore::cold::ReadWaves`).
    pub waves: u64,
    /// Waves of the restores' and faults' waits on them so far: round trips waited for one
    /// after another (`pagestore::cold::ColdWaits`).
    pub waits: u64,
    /// The store's background recompression was running (its reads count in the above).
    pub recompressing: bool,
    /// Pages were still queued for the worker's local tier.
    pub caching_locally: bool,
}

impl ColdMark {
    pub(super) async fn read(client: &Client) -> Result<ColdMark, Error> {
        let c = call(client, &Request::Counters).await?;
        let number = |key: &str| {
            c[key].as_u64().ok_or_else(|| {
                Error::Step(
                    "pico worker counters".into(),
                    format!("no {key} in its answer {c}"),
                )
            })
        };
        Ok(ColdMark {
            get_bytes: number("cold_get_bytes")?,
            waves: number("cold_waves")?,
            waits: number("cold_waits")?,
            recompressing: c["recompressing"].as_bool().unwrap_or(false),
            caching_locally: c["caching_locally"].as_bool().unwrap_or(false),
        })
    }

    /// Bytes read since `earlier`.
    pub(super) fn bytes_since(self, earlier: ColdMark) -> u64 {
        self.get_bytes.saturating_sub(earlier.get_bytes)
    }
}

/// One measured swap-in.
#[derive(Debug)]
pub(super) struct Sample {
    /// To the first correct answer.
    pub ms: f64,
    /// From the start of its checkpoint to the start of the swap-in.
    pub idle_ms: f64,
    /// The counters when the swap-in started and at its first answer.
    pub started: ColdMark,
    pub answered: ColdMark,
    /// The worker's report of the swap-in.
    pub report: serde_json::Value,
    /// The tenant's `last_fill_wait` read after its first answer: when the fill of the rest of
    /// the image waited for that answer, the worker's own count of the cold reads before it
    /// (the marks above may also catch the fill's first reads, sent as the answer left).
    pub fill_wait: serde_json::Value,
    /// A request made while the restore's background copy still ran, and one after it (ms);
    /// `None` when the copy was over before the first one answered, or not measured.
    pub copy_requests: Option<(f64, f64)>,
}

/// The sums of a mode's measured swap-ins.
#[derive(Debug, Default)]
pub(super) struct Tally {
    samples_ms: Vec<f64>,
    idle_ms: f64,
    first_bytes: u64,
    /// Round trips before each first answer.
    waves: Vec<u64>,
    /// Round trips waited for by the restore and the tenant's faults before each first answer.
    waits: Vec<u64>,
    /// Bytes over whole restores, background copy included, and how many restores they cover.
    total_bytes: u64,
    totals: u64,
    eager_pages: f64,
    set_gets: f64,
    prefetched: f64,
    whole: f64,
    /// Samples during which the background recompression ran (at their start or first answer).
    recompressing: u64,
    /// Requests during the background copy and after it (ms).
    during_copy_ms: Vec<f64>,
    after_copy_ms: Vec<f64>,
}

impl Tally {
    /// One measured swap-in.
    pub(super) fn add(&mut self, sample: &Sample) {
        let Sample {
            ms,
            idle_ms,
            started,
            answered,
            report,
            fill_wait,
            copy_requests,
        } = sample;
        if let Some((during, after)) = copy_requests {
            self.during_copy_ms.push(*during);
            self.after_copy_ms.push(*after);
        }
        let (started, answered) = (*started, *answered);
        self.samples_ms.push(*ms);
        self.idle_ms += idle_ms;
        let counted = |key: &str| fill_wait[key].as_u64();
        match (
            fill_wait["released_by"].as_str(),
            counted("cold_bytes"),
            counted("cold_waves"),
        ) {
            (Some("answer"), Some(bytes), Some(waves)) => {
                self.first_bytes += bytes;
                self.waves.push(waves);
            }
            _ => {
                self.first_bytes += answered.bytes_since(started);
                self.waves
                    .push(answered.waves.saturating_sub(started.waves));
            }
        }
        self.waits
            .push(answered.waits.saturating_sub(started.waits));
        self.eager_pages += report["eager_pages"].as_f64().unwrap_or(0.0);
        self.set_gets += report["prefetch"]["cold_gets"].as_f64().unwrap_or(0.0);
        self.prefetched += report["prefetched_pages"].as_f64().unwrap_or(0.0);
        self.whole += f64::from(u8::from(report["whole"].as_bool().unwrap_or(false)));
        self.recompressing += u64::from(started.recompressing || answered.recompressing);
    }

    /// The cold bytes of one whole restore (background copy included).
    pub(super) fn add_total_bytes(&mut self, bytes: u64) {
        self.total_bytes += bytes;
        self.totals += 1;
    }

    /// The mode's result; `activeset`: the ActiveSet's hit rate when the mode uses one (its
    /// figures are then reported), `None` when it restores without.
    pub(super) fn finish(self, activeset: Option<f64>) -> ModeResult {
        let n = self.samples_ms.len().max(1) as f64;
        let mean = |sum: f64| sum / n;
        let waves_sum: u64 = self.waves.iter().sum();
        let mut r = summarize(self.samples_ms);
        r.cold_bytes_first_answer = self.first_bytes / n as u64;
        r.cold_bytes = self.total_bytes / self.totals.max(1);
        r.cold_round_trips = mean(waves_sum as f64);
        r.cold_round_trips_max = self.waves.iter().copied().max().unwrap_or(0);
        r.cold_waits = mean(self.waits.iter().sum::<u64>() as f64);
        r.cold_waits_max = self.waits.iter().copied().max().unwrap_or(0);
        r.restore_set_cold_gets = mean(self.set_gets);
        if let Some(hit) = activeset {
            r.activeset_hit_rate = Some(hit);
            r.eager_pages = Some(mean(self.eager_pages));
            r.prefetched_pages = Some(mean(self.prefetched));
        }
        r.whole_share = Some(mean(self.whole));
        r.recompressing_share = mean(self.recompressing as f64);
        r.idle_ms = mean(self.idle_ms);
        r.requests_during_copy = self.during_copy_ms.len();
        r.request_during_copy_p50_ms = median(self.during_copy_ms);
        r.request_after_copy_p50_ms = median(self.after_copy_ms);
        r
    }
}

/// The median of `samples`, if any.
fn median(mut samples: Vec<f64>) -> Option<f64> {
    samples.sort_by(|a, b| a.total_cmp(b));
    (!samples.is_empty()).then(|| super::percentile(&samples, 50.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(get_bytes: u64, waves: u64) -> ColdMark {
        ColdMark {
            get_bytes,
            waves,
            waits: waves,
            recompressing: false,
            caching_locally: false,
        }
    }

    #[test]
    fn round_trips_are_the_waves_and_the_waits_before_each_first_answer_mean_and_max() {
        let mut t = Tally::default();
        let sample = |ms, started, answered| Sample {
            ms,
            idle_ms: 1000.0,
            started,
            answered,
            report: serde_json::json!({"whole": false, "prefetch": {"cold_gets": 2}}),
            fill_wait: serde_json::Value::Null,
            copy_requests: None,
        };
        // The first one's faults waited five times while the reads' waves merged into three.
        let waited = |m: ColdMark, waits| ColdMark { waits, ..m };
        t.add(&sample(10.0, mark(100, 5), waited(mark(1100, 8), 10)));
        t.add(&sample(20.0, mark(1100, 8), mark(1200, 9)));
        t.add_total_bytes(5000);
        let r = t.finish(None);
        assert_eq!(r.runs, 2);
        assert_eq!(r.cold_round_trips, 2.0);
        assert_eq!(r.cold_round_trips_max, 3);
        assert_eq!(r.cold_waits, 3.0);
        assert_eq!(r.cold_waits_max, 5);
        assert_eq!(r.cold_bytes_first_answer, 550);
        assert_eq!(r.cold_bytes, 5000);
        assert_eq!(r.restore_set_cold_gets, 2.0);
        assert_eq!(r.whole_share, Some(0.0));
        assert_eq!(r.activeset_hit_rate, None);
        assert_eq!(r.idle_ms, 1000.0);
    }

    #[test]
    fn a_fill_that_waited_for_the_answer_gives_the_workers_count_before_it() {
        let mut t = Tally::default();
        let sample = |answered, fill_wait| Sample {
            ms: 10.0,
            idle_ms: 1000.0,
            started: mark(100, 5),
            answered,
            report: serde_json::json!({"whole": false}),
            fill_wait,
            copy_requests: Some((30.0, 20.0)),
        };
        // The marks caught the fill's first wave; the worker counted 1 wave, 400 bytes.
        t.add(&sample(
            mark(1100, 7),
            serde_json::json!({"released_by": "answer", "cold_bytes": 400, "cold_waves": 1}),
        ));
        // A fill that did not wait: the marks.
        t.add(&sample(
            mark(700, 6),
            serde_json::json!({"released_by": "nothing", "cold_bytes": 50, "cold_waves": 0}),
        ));
        let r = t.finish(None);
        assert_eq!(r.cold_bytes_first_answer, (400 + 600) / 2);
        assert_eq!(r.cold_round_trips, 1.0);
        assert_eq!(r.cold_round_trips_max, 1);
        assert_eq!(r.requests_during_copy, 2);
        assert_eq!(r.request_during_copy_p50_ms, Some(30.0));
        assert_eq!(r.request_after_copy_p50_ms, Some(20.0));
    }
}
