//! `pico store ...`: the page store from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use pagestore::PageStore;

use super::progress::TermProgress;
use super::{print_json, Context};
use pagestore::progress::Reporter;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Stores a directory as the next checkpoint of a tenant; prints its id on the last line.
    Ingest {
        #[arg(long)]
        tenant: String,
        dir: PathBuf,
    },
    /// Writes a checkpoint's files into DIR, byte-identical to what was ingested.
    Materialize { id: String, dir: PathBuf },
    /// Lists checkpoints.
    Ls,
    /// Totals: logical bytes, pages, unique pages, stored bytes.
    Stats,
    /// Reads every object in every tier and checks every page; fails if anything is wrong.
    Verify,
    /// Deletes every checkpoint of a tenant (its pages go at the next gc).
    Forget {
        #[arg(long)]
        tenant: String,
    },
    /// Deletes pages no checkpoint references; rewrites mostly-dead packs, and recompresses the
    /// packs ingest wrote fast (lz4) into dense zstd frames, so `store stats` after it shows the
    /// settled bytes.
    Gc,
    /// The running worker's cold-tier requests and bytes since it started (GETs, PUTs, local
    /// hits): what a swap-in cost, read before and after it.
    Counters,
    /// Empties a tier (for cold-start measurements). The hot tier lives in the memory of each
    /// process, so evicting it here only matters to a store this command opens; a running worker
    /// keeps its own.
    Evict {
        #[arg(long, value_parser = ["hot", "local"])]
        tier: String,
    },
}

pub async fn open(ctx: &Context) -> anyhow::Result<PageStore> {
    PageStore::open(&ctx.config.store)
        .await
        .with_context(|| format!("cannot open the page store under {}", ctx.home.display()))
}

pub async fn run(ctx: &Context, cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    let store = open(ctx).await?;
    match cmd {
        StoreCommand::Ingest { tenant, dir } => {
            // The directory is a CRIU image: its page files are paged whatever their size.
            let progress = TermProgress::new(ctx.json);
            let options = pagestore::ingest::IngestOptions {
                progress: Reporter::new(progress.clone()),
                ..criu_image::ingest_options()
            };
            let report = store.ingest_with(&tenant, &dir, &options).await;
            progress.finish();
            let report = report?;
            // Committed; the new pages go on into the local tier behind it. This process holds
            // the local tier, so it finishes that before it exits.
            store.local_settled().await?;
            if ctx.json {
                print_json(&report)?;
            } else {
                print_ingest(&report);
            }
        }
        StoreCommand::Materialize { id, dir } => {
            let checkpoint = store.resolve(&id).await?;
            let manifest = store.materialize(&checkpoint, &dir).await?;
            if !ctx.json {
                println!(
                    "materialized {} ({} files) into {}",
                    checkpoint.id,
                    manifest.files.len(),
                    dir.display()
                );
            } else {
                // The checkpoint, and what reading it cost in this process.
                let s = store.stats_counters();
                print_json(&serde_json::json!({
                    "tenant": checkpoint.tenant,
                    "generation": checkpoint.generation,
                    "id": checkpoint.id,
                    "hot": s.hot,
                    "local": s.local,
                    "cold": s.cold,
                }))?;
            }
        }
        StoreCommand::Ls => {
            let list = store.checkpoints().await?;
            if ctx.json {
                print_json(&list)?;
            } else {
                println!(
                    "{:<32}  {:<20}  {:>10}",
                    "CHECKPOINT", "TENANT", "GENERATION"
                );
                for c in list {
                    println!("{:<32}  {:<20}  {:>10}", c.id, c.tenant, c.generation);
                }
            }
        }
        StoreCommand::Stats => {
            let s = store.stats().await?;
            if ctx.json {
                print_json(&s)?;
            } else {
                print_stats(&s);
            }
        }
        StoreCommand::Verify => {
            let progress = TermProgress::new(ctx.json);
            let r = store.verify_with(progress.as_ref()).await;
            progress.finish();
            let r = r?;
            if ctx.json {
                print_json(&r)?;
            } else {
                print_verify(&r);
            }
            if !r.ok() {
                return Ok(ExitCode::FAILURE);
            }
        }
        StoreCommand::Forget { tenant } => {
            let gone = store.forget(&tenant).await?;
            if ctx.json {
                print_json(&gone)?;
            } else {
                println!("forgot {} checkpoints of {tenant}", gone.len());
            }
        }
        StoreCommand::Gc => {
            let progress = TermProgress::new(ctx.json);
            let run = pagestore::gc::GcRun {
                progress: progress.as_ref(),
                ..Default::default()
            };
            let r = store.gc_with(&run).await;
            progress.finish();
            let r = r?;
            if ctx.json {
                print_json(&r)?;
            } else {
                print_gc(&r);
            }
        }
        StoreCommand::Counters => {
            let counters = worker::protocol::Client::new(&ctx.config.worker.socket)
                .call(&worker::protocol::Request::Counters)
                .await?;
            if ctx.json {
                print_json(&counters)?;
            } else {
                let get = |k: &str| counters.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                println!(
                    "cold: {} GETs ({} bytes), {} read waves ({} waited for), {} PUTs ({} \
                     bytes); local: {} hits, {} misses",
                    get("cold_gets"),
                    get("cold_get_bytes"),
                    get("cold_waves"),
                    get("cold_waits"),
                    get("cold_puts"),
                    get("cold_put_bytes"),
                    get("local_hits"),
                    get("local_misses")
                );
            }
        }
        StoreCommand::Evict { tier } => {
            match worker::protocol::Client::new(&ctx.config.worker.socket)
                .call(&worker::protocol::Request::Evict {
                    tier: Some(tier.clone()),
                })
                .await
            {
                // A running worker holds the tiers (the hot one is its memory): it evicts.
                Ok(_) => println!("evicted the {tier} tier of the running worker"),
                Err(worker::Error::WorkerNotRunning { .. }) => {
                    if tier == "hot" {
                        store.evict_hot();
                    } else {
                        store.evict_local()?;
                    }
                    println!("evicted the {tier} tier");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text of `pico store ingest`: what was stored, then the checkpoint id alone.
fn print_ingest(report: &pagestore::ingest::IngestReport) {
    println!(
        "tenant {} generation {}: {} files, {} pages ({} zero, {} already stored, {} new), \
         {} bytes uploaded in {} packs, {} ms",
        report.checkpoint.tenant,
        report.checkpoint.generation,
        report.files,
        report.pages_total,
        report.pages_zero,
        report.pages_known,
        report.pages_new,
        report.bytes_uploaded,
        report.packs_written,
        report.elapsed_ms
    );
    println!("{}", report.checkpoint.id);
}

/// The text of `pico store stats`: one line per figure.
fn print_stats(s: &pagestore::StoreStats) {
    println!(
        "checkpoints      {} of {} tenants",
        s.checkpoints, s.tenants
    );
    println!("logical bytes    {}", s.logical_bytes);
    println!(
        "pages            {} ({} zero, {} unique non-zero stored)",
        s.pages_total, s.pages_zero, s.pages_unique
    );
    println!(
        "stored bytes     {} ({} in {} packs, {} in manifests)",
        s.stored_bytes, s.pack_bytes, s.packs, s.manifest_bytes
    );
    println!(
        "pending          {} packs, {} bytes still in ingest's fast encoding (gc recompresses them)",
        s.packs_pending, s.pending_bytes
    );
    println!(
        "locality packs   {} ({} bytes: extra copies of restore sets, in stored bytes)",
        s.locality_packs, s.locality_bytes
    );
    println!("reduction        {:.2}x (logical / stored)", s.reduction);
    println!(
        "hot tier         {} pages, {} of {} bytes; {} hits, {} misses, {} evictions, {} dropped unread",
        s.hot.pages,
        s.hot.bytes,
        s.hot.max_bytes,
        s.hot.hits,
        s.hot.misses,
        s.hot.evictions,
        s.hot.dropped_unread
    );
    if let Some(l) = &s.local {
        println!(
            "local tier       {} pages, {} of {} bytes; {} hits, {} misses, {} evictions",
            l.pages, l.bytes, l.max_bytes, l.hits, l.misses, l.evictions
        );
    }
    println!(
        "cold tier        {} ({}): {} GETs ({} bytes), {} PUTs ({} bytes), {} retries",
        s.cold.kind,
        s.cold.location,
        s.cold.gets,
        s.cold.get_bytes,
        s.cold.puts,
        s.cold.put_bytes,
        s.cold.retries
    );
}

/// The text of `pico store verify`: each problem, then the summary.
fn print_verify(r: &pagestore::verify::VerifyReport) {
    for p in &r.problems {
        println!("PROBLEM: {p}");
    }
    println!(
        "verified {} packs ({} pages), {} manifests, {} local pages: {}",
        r.packs,
        r.pages,
        r.manifests,
        r.local_pages,
        if r.ok() { "all well" } else { "PROBLEMS FOUND" }
    );
}

/// The text of `pico store gc`.
fn print_gc(r: &pagestore::gc::GcReport) {
    println!(
        "gc: {} manifests, {} live pages; {} of {} packs deleted ({} recompressed and {} \
         repacked into {}), {} page copies dropped; pack bytes {} -> {}; {} ms ({} of them waiting \
         for ingests in flight)",
        r.manifests,
        r.live_pages,
        r.packs_deleted,
        r.packs_before,
        r.packs_recompressed,
        r.packs_repacked,
        r.packs_written,
        r.pages_dropped,
        r.pack_bytes_before,
        r.pack_bytes_after,
        r.elapsed_ms,
        r.waited_ms
    );
}
