//! `pico hub run`: loads the hub's record from the cold tier, answers DNS for the zone and
//! serves the API workers report to, keeps the record durable as it changes, and says when a
//! worker falls silent, until SIGINT or SIGTERM. Under systemd it says when it is ready and
//! pings the watchdog (`worker::sd_notify`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagestore::cold::ColdTier;
use pagestore::config::ColdConfig;
use tokio::net::TcpListener;
use tracing::{info, warn};
use worker::protocol::ApiToken;

use crate::config::HubConfig;
use crate::dns::Zone;
use crate::durable::DurableState;
use crate::error::{HubError, Result};
use crate::hub::Hub;
use crate::registry::Registry;
use crate::wake::HubNames;

/// How often the record is saved when it changed, and silent workers looked for.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// Runs the hub until SIGINT or SIGTERM, its state in `cold`.
pub async fn run(config: HubConfig, cold: &ColdConfig) -> Result<()> {
    let watchdog = worker::sd_notify::spawn_watchdog();
    let Credentials {
        tls,
        token,
        worker_token,
    } = preflight(&config)?;
    let (durable, record) = DurableState::load(ColdTier::open(cold)?).await?;
    info!(
        workers = record.workers.len(),
        tenants = record.tenants.len(),
        cold = %describe(cold),
        "hub state loaded"
    );
    let dead_after = Duration::from_millis(config.dead_after_ms);
    let registry = Registry::from_record(record, dead_after, Instant::now());
    let hub = Arc::new(Hub::new(config.clone(), registry, worker_token));

    let (udp, tcp) = crate::dns::bind(config.dns_listen)
        .await
        .map_err(cannot_listen("DNS", config.dns_listen))?;
    let api = TcpListener::bind(config.api_listen)
        .await
        .map_err(cannot_listen("the hub's API", config.api_listen))?;
    let zone = Zone {
        ttl_s: config.ttl_s,
        ..Zone::new(&config.zone, config.ns_addr())
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let dns = {
        let names = Arc::new(HubNames(hub.clone()));
        let mut stop = stop_rx.clone();
        tokio::spawn(crate::dns::serve(zone, names, udp, tcp, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    let durable = Arc::new(tokio::sync::Mutex::new(durable));
    let housekeeping = tokio::spawn(housekeep(hub.clone(), durable.clone()));
    info!(dns = %config.dns_listen, api = %config.api_listen, tls = tls.is_some(), zone = %config.zone, "hub ready");
    // DNS and the API are bound (they accept from here).
    worker::sd_notify::ready(&format!(
        "DNS on {}, API on {}",
        config.dns_listen, config.api_listen
    ));
    let router = crate::api::router(hub.clone(), token);
    let mut stop = stop_rx;
    let stopped = async move {
        wait_for_stop().await;
        worker::sd_notify::stopping("saving the record");
        let _ = stop_tx.send(true);
        let _ = stop.wait_for(|s| *s).await;
    };
    match tls {
        None => axum::serve(api, router)
            .with_graceful_shutdown(stopped)
            .await
            .map_err(cannot_listen("the hub's API", config.api_listen))?,
        Some(acceptor) => serve_tls(api, acceptor, router, stopped).await,
    }
    match dns.await {
        Ok(Err(e)) => warn!(error = %e, "DNS ended with an error"),
        Err(e) => warn!(error = %e, "DNS task failed"),
        Ok(Ok(())) => {}
    }
    // The last changes, saved before the hub exits.
    housekeeping.abort();
    let _ = housekeeping.await;
    let record = hub.registry().take_record();
    if let Some(record) = record {
        durable.lock().await.save(&record).await?;
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    info!("hub stopped");
    Ok(())
}

/// What the hub serves with: its API's TLS, its token, and the token it presents to workers.
pub struct Credentials {
    tls: Option<tokio_rustls::TlsAcceptor>,
    token: ApiToken,
    worker_token: String,
}

/// The hub's rules for its configuration that serde cannot check, applied first at start (and
/// by `pico config check`): `lease_ms` under `dead_after_ms`, the API's certificate and key
/// (both or neither, and they load), its token (`token_file` or `PICO_TOKEN`) and the workers'
/// (`worker_token_file`).
pub fn preflight(config: &HubConfig) -> Result<Credentials> {
    check(config)?;
    let tls = api_tls(config)?;
    let token = config.token()?;
    let worker_token = match &config.worker_token_file {
        Some(path) => ApiToken::load(path)?.text().to_string(),
        None => token.text().to_string(),
    };
    Ok(Credentials {
        tls,
        token,
        worker_token,
    })
}

/// The error of serving `what` on `addr`.
fn cannot_listen(what: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> HubError {
    move |source| HubError::Listen { what, addr, source }
}

/// The TLS the API is served with: none, or the configured certificate and key (both or
/// neither).
fn api_tls(config: &HubConfig) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    match (&config.tls_cert_file, &config.tls_key_file) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let tls = pager::tls::server_config(cert, key).map_err(HubError::Tls)?;
            Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
        }
        _ => Err(HubError::Tls(
            "[hub] tls_cert_file and tls_key_file go together".into(),
        )),
    }
}

/// Serves `router` over TLS on `listener` until `stop` resolves: each connection's handshake
/// and requests on a task of its own (a slow or bad client holds up nobody else).
async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "the hub's API could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(e) => {
                    warn!(%peer, error = %e, "TLS handshake with a client of the hub's API failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "API connection ended");
            }
        });
    }
}

/// The configuration's rules that serde cannot check.
fn check(config: &HubConfig) -> Result<()> {
    if config.lease_ms >= config.dead_after_ms {
        return Err(HubError::LeaseTooLong {
            lease_ms: config.lease_ms,
            dead_after_ms: config.dead_after_ms,
        });
    }
    Ok(())
}

fn describe(cold: &ColdConfig) -> String {
    match cold {
        ColdConfig::Dir { path } => path.display().to_string(),
        other => format!("{other:?}"),
    }
}

/// Saves the record when it changed (retrying a failed save at the next pass), and logs the
/// workers that fell silent or came back.
async fn housekeep(hub: Arc<Hub>, durable: Arc<tokio::sync::Mutex<DurableState>>) {
    let mut ticks = tokio::time::interval(HOUSEKEEPING);
    let mut alive = BTreeSet::new();
    loop {
        ticks.tick().await;
        let record = hub.registry().take_record();
        if let Some(record) = record {
            if let Err(e) = durable.lock().await.save(&record).await {
                warn!(error = %e, "could not save the hub's state; retrying");
                hub.registry().unsaved();
            }
        }
        let workers = hub.registry().workers(Instant::now());
        for w in workers {
            if w.alive {
                alive.insert(w.name);
            } else if alive.remove(&w.name) {
                warn!(worker = %w.name, silent_ms = w.last_seen_ms, tenants = w.tenants, "worker is dead (no heartbeat)");
            }
        }
    }
}

async fn wait_for_stop() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
