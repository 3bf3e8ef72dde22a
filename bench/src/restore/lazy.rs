//! The worker's modes of `pico bench restore`: one `pico worker run` per app, whose swap-ins
//! are timed to the tenant's first correct answer. The repeated modes swap one tenant out and in
//! again and again (it learns its ActiveSet in the warm-up); the first-wake-up modes make a
//! fresh tenant per sample ([`super::first`]).

use std::path::Path;
use std::time::{Duration, Instant};

use worker::protocol::Request;
use worker::tenant::TenantSpec;

use super::tally::{ColdMark, Sample, Tally};
use super::{first, first_answer, worker_toml, App, Mode, ModeResult, RestoreOptions, WorkerProc};
use crate::net::free_port;
use crate::Error;

/// The spec of a bench tenant: no sandbox, never swapped out on its own (the bench swaps it).
fn tenant_spec(name: &str, port: u16, cmd: Vec<String>, deterministic: bool) -> TenantSpec {
    TenantSpec {
        deterministic,
        idle_timeout_ms: Some(0),
        ..TenantSpec::new(name, port, cmd)
    }
}

/// Adds the tenant `name` of `app` (its files under `dir`) on a free port and gives it its
/// state; its port.
pub(super) async fn add_tenant(
    worker: &WorkerProc,
    opts: &RestoreOptions,
    app: App,
    name: &str,
    dir: &Path,
) -> Result<u16, Error> {
    let port = free_port()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cmd = app.command(port, dir, &opts.repo)?;
    worker
        .call(&Request::Add(tenant_spec(
            name,
            port,
            cmd,
            opts.deterministic,
        )))
        .await?;
    app.prepare(port, opts.heap_mb)?;
    Ok(port)
}

/// How long a background recompression (and the local tier's caching) may take to end, with
/// `settle`.
const SETTLE_WITHIN: Duration = Duration::from_secs(120);

/// Waits out the idle time from `checkpointed` and, with `settle`, the end of the worker's
/// background recompression and of its caching of the checkpoint's pages in the local tier;
/// then, right before the swap-in, the counters and the idle time it had, ms.
pub(super) async fn idle(
    opts: &RestoreOptions,
    worker: &WorkerProc,
    checkpointed: Instant,
) -> Result<(ColdMark, f64), Error> {
    tokio::time::sleep(opts.idle.saturating_sub(checkpointed.elapsed())).await;
    let mut mark = ColdMark::read(&worker.client).await?;
    let settling = Instant::now();
    while opts.settle && (mark.recompressing || mark.caching_locally) {
        if settling.elapsed() > SETTLE_WITHIN {
            return Err(Error::Step(
                "settle".into(),
                format!(
                    "the background recompression or the local tier's caching still ran after \
                     {SETTLE_WITHIN:?}"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        mark = ColdMark::read(&worker.client).await?;
    }
    Ok((mark, checkpointed.elapsed().as_secs_f64() * 1000.0))
}

/// Every mode of `modes` but `criu-eager`, for `app`, on a worker of its own; results in the
/// order of `modes`.
pub(super) async fn lazy_modes(
    opts: &RestoreOptions,
    app: App,
    modes: &[Mode],
) -> Result<Vec<(Mode, ModeResult)>, Error> {
    let home = opts.work.join(format!("home-{}", app.name()));
    let mut toml = worker_toml(opts);
    if modes.iter().any(|m| m.cold()) {
        let cold = opts.cold_toml.as_deref().ok_or_else(|| {
            Error::Step(
                "lazy-cold modes".into(),
                "need a cold tier ([cold] section)".into(),
            )
        })?;
        toml = format!("{toml}\n{cold}");
    }
    let worker = WorkerProc::start(&opts.pico, &home, &toml).await?;
    let mut out = Vec::new();
    let repeated: Vec<Mode> = modes.iter().copied().filter(|m| !m.first()).collect();
    if !repeated.is_empty() {
        let name = app.name().to_string();
        let port = add_tenant(&worker, opts, app, &name, &home.join("app")).await?;
        let measured = async {
            let mut measured = Vec::new();
            for &mode in &repeated {
                tracing::info!(app = app.name(), mode = mode.name(), "measuring");
                measured.push((
                    mode,
                    repeated_mode(opts, &worker, app, &name, port, mode).await?,
                ));
            }
            Ok::<_, Error>(measured)
        }
        .await;
        // Whatever happened, the tenant goes: a worker stopped with it asleep would leave its
        // network namespace pinned in the work directory.
        let _ = worker.call(&Request::Rm { name }).await;
        out.extend(measured?);
    }
    for &mode in modes.iter().filter(|m| m.first()) {
        tracing::info!(app = app.name(), mode = mode.name(), "measuring");
        out.push((
            mode,
            first::first_mode(opts, &worker, app, &home, mode).await?,
        ));
    }
    // In the order asked for.
    out.sort_by_key(|(m, _)| modes.iter().position(|a| a == m));
    Ok(out)
}

/// One repeated mode: the tenant `name` swapped out and in `runs` times after a warm-up.
async fn repeated_mode(
    opts: &RestoreOptions,
    worker: &WorkerProc,
    app: App,
    name: &str,
    port: u16,
    mode: Mode,
) -> Result<ModeResult, Error> {
    let name = name.to_string();
    let mut tally = Tally::default();
    let mut last_start: Option<ColdMark> = None;
    // Run N of M (the first a warm-up) on a terminal.
    let bar = crate::progress::runs(
        opts.runs as u64 + 1,
        &format!("{} {}", app.name(), mode.name()),
    );
    for run in 0..=opts.runs {
        bar.at(run as u64);
        let checkpointed = Instant::now();
        worker
            .call(&Request::SwapOut { name: name.clone() })
            .await?;
        // The swap-out waited for the last restore's background copy: its whole cost is in.
        let now = ColdMark::read(&worker.client).await?;
        if let (Some(b), true) = (last_start, run > 1) {
            tally.add_total_bytes(now.bytes_since(b));
        }
        if mode.cold() {
            worker.call(&Request::Evict { tier: None }).await?;
        }
        let (before, idle_ms) = idle(opts, worker, checkpointed).await?;
        let started = Instant::now();
        let report = worker
            .call(&Request::SwapIn {
                name: name.clone(),
                no_activeset: mode == Mode::LazyCold,
                install: mode.install(),
            })
            .await?;
        let ms = first_answer(app, port, started)?;
        let after = ColdMark::read(&worker.client).await?;
        let fill_wait = worker.status(&name).await?["last_fill_wait"].clone();
        last_start = Some(before);
        if run > 0 {
            tally.add(&Sample {
                ms,
                idle_ms,
                started: before,
                answered: after,
                report,
                fill_wait,
                copy_requests: None,
            });
        }
    }
    // Let the last restore finish (background copy) and count it.
    worker
        .call(&Request::SwapOut { name: name.clone() })
        .await?;
    if let Some(b) = last_start {
        tally.add_total_bytes(ColdMark::read(&worker.client).await?.bytes_since(b));
    }
    worker
        .call(&Request::SwapIn {
            name: name.clone(),
            no_activeset: true,
            install: None,
        })
        .await?;
    let hit = if mode == Mode::LazyCold {
        None
    } else {
        let set = worker.call(&Request::ActiveSet { name }).await?;
        Some(set["last"]["hit_rate"].as_f64().unwrap_or(0.0))
    };
    Ok(tally.finish(hit))
}
