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
    /// Serves stored page files as NBD exports named `ID/FILE` until interrupted.
    Nbd {
        /// Address to listen on; loopback only (there is no TLS).
        #[arg(long, default_value = "127.0.0.1:10809")]
        listen: std::net::SocketAddr,
        /// Accept writes into a copy-on-write overlay; each FLUSH commits a new generation.
        #[arg(long)]
        writable: bool,
        /// Memory for decoded pages shared by all exports, in MiB.
        #[arg(long, default_value_t = 512)]
        cache_mib: usize,
        /// Read every stored page into memory before accepting clients.
        #[arg(long)]
        warm: bool,
        /// Checkpoints to export: `ID` (each of its page files) or `ID:FILE`.
        #[arg(required = true)]
        exports: Vec<pager::nbd::ExportSpec>,
    },
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
        PagerCommand::Nbd {
            listen,
            writable,
            cache_mib,
            warm,
            exports,
        } => {
            pager::nbd::check_listen_addr(listen)?;
            let store = Arc::new(store::open(ctx).await?);
            let options = pager::nbd::ExportOptions {
                writable,
                cache_pages: cache_mib * 256,
            };
            let table = pager::nbd::ExportTable::open(store, &exports, &options).await?;
            if warm {
                let pages = table.warm().await?;
                eprintln!("{pages} pages read into memory");
            }
            let server = pager::nbd::NbdServer::bind(listen, Arc::new(table)).await?;
            let addr = server.local_addr()?;
            for name in server.exports().names() {
                eprintln!("export nbd://{addr}/{name}");
            }
            eprintln!(
                "serving {} export(s) on {addr}{}; Ctrl-C (or SIGTERM) stops",
                server.exports().len(),
                if writable {
                    " (writable)"
                } else {
                    " (read-only)"
                }
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = server.run() => r?,
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
