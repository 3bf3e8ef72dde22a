//! `pico pager ...`: serve a stored checkpoint to other programs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use pagestore::PageStore;

use super::{store, Context};

#[derive(Debug, Subcommand)]
pub enum PagerCommand {
    /// Mounts a checkpoint as a lazy, read-only CRIU image directory until interrupted.
    Mount { id: String, mountpoint: PathBuf },
    /// Serves stored page files as NBD exports named `ID/FILE` until interrupted.
    Nbd {
        /// Address to listen on; loopback only unless TLS is configured.
        #[arg(long, default_value = "127.0.0.1:10809")]
        listen: std::net::SocketAddr,
        /// PEM certificate chain: clients must then start TLS (NBD_OPT_STARTTLS).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Accept writes into a copy-on-write overlay; each FLUSH commits a new generation.
        #[arg(long)]
        writable: bool,
        /// Memory for decoded pages shared by all exports (the page store's memory tier, in
        /// place of `[hot] max_bytes`), in MiB.
        #[arg(long, default_value_t = 512)]
        cache_mib: u64,
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
            tls_cert,
            tls_key,
            writable,
            cache_mib,
            warm,
            exports,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(pager::nbd::tls::acceptor(&cert, &key)?),
                _ => {
                    pager::nbd::check_listen_addr(listen)?;
                    None
                }
            };
            let mut config = ctx.config.store.clone();
            config.hot.max_bytes = cache_mib << 20;
            let store = Arc::new(PageStore::open(&config).await.with_context(|| {
                format!("cannot open the page store under {}", ctx.home.display())
            })?);
            let options = pager::nbd::ExportOptions { writable };
            let table = pager::nbd::ExportTable::open(store, &exports, &options).await?;
            if warm {
                let pages = table.warm().await?;
                eprintln!("{pages} pages read into memory");
            }
            let table = Arc::new(table);
            let with_tls = tls.is_some();
            let server = match tls {
                Some(tls) => pager::nbd::NbdServer::bind_tls(listen, table, tls).await?,
                None => pager::nbd::NbdServer::bind(listen, table).await?,
            };
            let addr = server.local_addr()?;
            let scheme = if with_tls { "nbds" } else { "nbd" };
            for name in server.exports().names() {
                eprintln!("export {scheme}://{addr}/{name}");
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
