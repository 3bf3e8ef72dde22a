//! A tenant's first wake-up, as it happens (`lazy-local-first`, `lazy-cold-first`): a tenant
//! that was never restored lazily, so no ActiveSet yet and learning on, woken from the local
//! tier or, its caches emptied, from the cold tier. The repeated modes time a tenant that has
//! learned its ActiveSet in their warm-up; a real tenant's first wake-up has nothing learned,
//! and it counts as much as any other (issue #17: every wake-up, the first one included).
//!
//! So each sample is a fresh tenant, named for its mode and run: added, given its state,
//! swapped out, (caches emptied), left idle as in the other modes, swapped in and timed to its
//! first correct answer, then left to finish its restore (the background copy, for the bytes of
//! the whole restore) and removed with its checkpoints, which a `pico store gc` then collects.
//! A small image held locally is restored whole, as the worker chooses for any tenant
//! (reported as `whole_share`).

use std::path::Path;
use std::time::{Duration, Instant};

use worker::protocol::Request;

use super::lazy::{add_tenant, idle};
use super::tally::{ColdMark, Sample, Tally};
use super::{first_answer, App, Mode, ModeResult, RestoreOptions, WorkerProc};
use crate::Error;

/// How long a restore may take to copy its last page after the first answer (the large heap
/// from the cold tier took ~5-11 s).
const RESTORE_DONE_WITHIN: Duration = Duration::from_secs(300);

/// How many times a gc that failed (busy: the background recompression holds the ingest lock)
/// is tried, and the pause between tries.
const GC_TRIES: u32 = 5;
const GC_PAUSE: Duration = Duration::from_secs(2);

/// `runs` first wake-ups of fresh tenants of `app` (after one unmeasured, as every mode has),
/// their files under `home`.
pub(super) async fn first_mode(
    opts: &RestoreOptions,
    worker: &WorkerProc,
    app: App,
    home: &Path,
    mode: Mode,
) -> Result<ModeResult, Error> {
    let tier = if mode.cold() { "cold" } else { "local" };
    let mut tally = Tally::default();
    let bar = crate::progress::runs(
        opts.runs as u64 + 1,
        &format!("{} {}", app.name(), mode.name()),
    );
    for run in 0..=opts.runs {
        bar.at(run as u64);
        let name = format!("{}-first-{tier}-{run}", app.name());
        let dir = home.join(&name);
        let sample = wake_fresh_tenant(opts, worker, app, &name, &dir, mode).await;
        // Whatever happened, the tenant goes, its checkpoints with it.
        let removed = worker.call(&Request::Rm { name: name.clone() }).await;
        let _ = std::fs::remove_dir_all(&dir);
        let (sample, total_bytes) = sample?;
        removed?;
        collect_garbage(opts, home).await;
        if run > 0 {
            tally.add(&sample);
            tally.add_total_bytes(total_bytes);
        }
    }
    Ok(tally.finish(None))
}

/// `pico store gc` on the worker's home, so that the packs only the removed tenant used go:
/// every sample stores a new image (the large heap's ~270 MB of random bytes each time: 2
/// modes of 51 samples would take more than this machine's free disk). The worker runs
/// meanwhile, as the store allows (the gc reads without the local tier the worker holds). A gc
/// that still fails is logged; the next one collects what it left.
async fn collect_garbage(opts: &RestoreOptions, home: &Path) {
    for attempt in 1..=GC_TRIES {
        let output = tokio::process::Command::new(&opts.pico)
            .arg("--home")
            .arg(home)
            .args(["store", "gc"])
            .output()
            .await;
        let why = match output {
            Ok(o) if o.status.success() => {
                let said = String::from_utf8_lossy(&o.stdout);
                tracing::info!(gc = %said.trim(), "store collected");
                return;
            }
            Ok(o) => format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => e.to_string(),
        };
        if attempt < GC_TRIES {
            tracing::debug!(attempt, error = %why, "pico store gc failed; trying again");
            tokio::time::sleep(GC_PAUSE).await;
        } else {
            tracing::warn!(
                home = %home.display(),
                error = %why,
                "pico store gc failed; the next sample's gc collects what it left"
            );
        }
    }
}

/// One sample of [`first_mode`]: the tenant `name` made, checkpointed and woken for the first
/// time (it is left running); with the cold bytes of its whole restore, background copy
/// included.
async fn wake_fresh_tenant(
    opts: &RestoreOptions,
    worker: &WorkerProc,
    app: App,
    name: &str,
    dir: &Path,
    mode: Mode,
) -> Result<(Sample, u64), Error> {
    let port = add_tenant(worker, opts, app, name, dir).await?;
    let checkpointed = Instant::now();
    worker
        .call(&Request::SwapOut {
            name: name.to_string(),
        })
        .await?;
    if mode.cold() {
        worker.call(&Request::Evict { tier: None }).await?;
    }
    let (started_mark, idle_ms) = idle(opts, worker, checkpointed).await?;
    let started = Instant::now();
    let report = worker
        .call(&Request::SwapIn {
            name: name.to_string(),
            no_activeset: false,
            install: None,
        })
        .await?;
    let ms = first_answer(app, port, started)?;
    let answered = ColdMark::read(&worker.client).await?;
    let fill_wait = worker.status(name).await?["last_fill_wait"].clone();
    // A request while the background copy still runs, and one after it (issue #17: the copy
    // yields to faults, so the first within 1.5x of the second). The first counts only when
    // the copy outlasted it.
    let during = timed_request(app, port)?;
    let copying = copy_pending(worker, name).await?;
    restore_done(worker, name).await?;
    let after = timed_request(app, port)?;
    let total_bytes = ColdMark::read(&worker.client)
        .await?
        .bytes_since(started_mark);
    let sample = Sample {
        ms,
        idle_ms,
        started: started_mark,
        answered,
        report,
        fill_wait,
        copy_requests: copying.then_some((during, after)),
    };
    Ok((sample, total_bytes))
}

/// One request to the app, timed to its correct answer (ms).
fn timed_request(app: App, port: u16) -> Result<f64, Error> {
    let started = Instant::now();
    if !app.probe(port)? {
        return Err(Error::Step(app.name().into(), "a wrong answer".into()));
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Whether the tenant's restore is still copying pages in (`pages_pending`).
async fn copy_pending(worker: &WorkerProc, name: &str) -> Result<bool, Error> {
    let status = worker.status(name).await?;
    Ok(status["pages_pending"].as_bool().unwrap_or(false))
}

/// Waits until the tenant's restore has copied its last page (`pages_pending` false).
async fn restore_done(worker: &WorkerProc, name: &str) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        if !copy_pending(worker, name).await? {
            return Ok(());
        }
        if started.elapsed() > RESTORE_DONE_WITHIN {
            return Err(Error::Step(
                name.to_string(),
                format!("restore still copying pages after {RESTORE_DONE_WITHIN:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
