//! Progress of long commands (`store ingest`, `store gc`, `store verify`) on a terminal: one bar
//! on stderr while the work goes on, cleared at the end. Nothing at all when stderr is not a
//! terminal, with `--json`, or under CI, so that logs (tracing, unchanged) and JSON output stay
//! clean. The crates tell it what happens through `pagestore::progress::Progress` and never
//! print themselves.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pagestore::progress::Progress;

/// A bar on stderr, or nothing.
pub struct TermProgress {
    bar: ProgressBar,
    /// Bytes through in the current stage, and when it began: the rate.
    bytes: AtomicU64,
    total_bytes: AtomicU64,
    since: std::sync::Mutex<Instant>,
}

/// Whether progress is drawn: on a terminal, without `--json`, not under CI.
fn wanted(json: bool, terminal: bool, ci: bool) -> bool {
    terminal && !json && !ci
}

impl TermProgress {
    /// Drawn when [`wanted`] for this process's stderr.
    pub fn new(json: bool) -> Arc<TermProgress> {
        Arc::new(TermProgress::when(wanted(
            json,
            std::io::stderr().is_terminal(),
            std::env::var_os("CI").is_some(),
        )))
    }

    /// On stderr if `drawn`, else hidden.
    fn when(drawn: bool) -> TermProgress {
        TermProgress::to(if drawn {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        })
    }

    fn to(target: ProgressDrawTarget) -> TermProgress {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>11} [{bar:30}] {pos}/{len} {msg} {elapsed_precise}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        TermProgress {
            bar,
            bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            since: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Whether nothing is drawn.
    #[cfg(test)]
    fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Takes the bar off the terminal (before the command prints its result).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for TermProgress {
    fn stage(&self, name: &str, total: u64, bytes: u64) {
        self.bar.set_prefix(name.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message("");
        self.bytes.store(0, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
        if let Ok(mut since) = self.since.lock() {
            *since = Instant::now();
        }
    }

    fn advance(&self, steps: u64, bytes: u64) {
        self.bar.inc(steps);
        if bytes == 0 || self.bar.is_hidden() {
            return;
        }
        let done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let secs = self
            .since
            .lock()
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let rate = if secs > 0.0 { mib(done) / secs } else { 0.0 };
        self.bar.set_message(format!(
            "{:.1}/{:.1} MiB, {rate:.0} MiB/s",
            mib(done),
            mib(self.total_bytes.load(Ordering::Relaxed))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_on_a_terminal_only_and_never_with_json_or_under_ci() {
        assert!(wanted(false, true, false));
        assert!(!wanted(true, true, false));
        assert!(!wanted(false, false, false));
        assert!(!wanted(false, true, true));
    }

    #[test]
    fn without_a_terminal_nothing_is_drawn() {
        let p = TermProgress::when(wanted(false, false, false));
        assert!(p.is_hidden());
        p.stage("ingest", 10, 40_960);
        p.advance(10, 40_960);
        p.finish();
        assert!(p.is_hidden());
    }

    #[test]
    fn a_bar_counts_the_steps_of_each_stage() {
        let p = TermProgress::to(ProgressDrawTarget::hidden());
        p.stage("packs", 3, 0);
        p.advance(2, 0);
        assert_eq!((p.bar.position(), p.bar.length()), (2, Some(3)));
        p.stage("checkpoints", 5, 0);
        assert_eq!((p.bar.position(), p.bar.length()), (0, Some(5)));
    }
}
