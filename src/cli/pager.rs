//! `pico pager ...`: serve a stored checkpoint to other programs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use super::{store, Context};

#[derive(Debug, Subcommand)]
pub enum PagerCommand {
    /// Mounts a checkpoint as a lazy, read-only CRIU image directory until interrupted.
    Mount { id: String, mountpoint: PathBuf },
}

pub async fn run(ctx: &Context, cmd: PagerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PagerCommand::Mount { id, mountpoint } => {
            let store = Arc::new(store::open(ctx).await?);
            let checkpoint = store.resolve(&id).await?;
            let manifest = store.manifest(&checkpoint).await?;
            let mount = pager::ImageMount::mount(
                store,
                manifest,
                &mountpoint,
                tokio::runtime::Handle::current(),
            )?;
            eprintln!(
                "checkpoint {} of {} mounted at {}; Ctrl-C (or SIGTERM) unmounts",
                checkpoint.id,
                checkpoint.tenant,
                mountpoint.display()
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let reads = mount.access_log().len();
            tokio::task::spawn_blocking(move || mount.unmount()).await??;
            eprintln!("unmounted; {reads} page reads served");
        }
    }
    Ok(ExitCode::SUCCESS)
}
